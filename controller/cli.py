"""``cedge controller ...``: run the controller, and read its database.

The read commands open the database read-side only (they never create one) and work while the
controller is running (SQLite WAL: readers do not block the writer).  Every listing prints a rich
table, or JSON with ``--json`` for scripts.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from agent.cli_output import console as make_console
from agent.cli_output import fail, safe
from controller.config import ConfigError, ControllerConfig, load_controller_config
from controller.store import ACTIVE_TASK_STATES, Store, StoreError

app = typer.Typer(
    help="Fleet controller: ingest uplinks, store them, fuse alarms, dispatch handhelds.",
    no_args_is_help=True,
)
_out = make_console()

ConfigOpt = typer.Option(None, "--config", "-c", help="controller YAML (embedded defaults if omitted)")
DbOpt = typer.Option(None, "--db", help="database path (overrides the config's db_path)")
JsonOpt = typer.Option(False, "--json", help="print JSON instead of a table")


def _config(path: Path | None) -> ControllerConfig:
    try:
        return load_controller_config(path)
    except ConfigError as err:
        fail(f"config error: {err}", 2)


def _open_store(config: Path | None, db: Path | None) -> Store:
    path = db or Path(_config(config).db_path)
    try:
        return Store(path, create=False)
    except StoreError as err:
        fail(err, 1)


def _print(rows: list[dict[str, Any]], columns: list[str], title: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, default=str, indent=2))  # plain: scripts parse it, no terminal styling
        return
    table = Table(title=f"{title} ({len(rows)})")
    for c in columns:
        table.add_column(_HEADERS.get(c, c), overflow="fold")
    for r in rows:
        table.add_row(*(safe(_fmt_col(c, r.get(c))) for c in columns))
    _out.print(table)


# Short headers and values so the tables fit an 80-column field terminal; --json has everything.
_HEADERS = {"unit_type": "type", "last_seen_utc": "last seen", "boot_id": "boot", "messages": "msgs",
            "available": "free", "software_version": "sw", "incident_id": "incident", "target_x_m": "x_m",
            "target_y_m": "y_m", "radius_m": "r_m", "attempts": "try", "state_since_utc": "since",
            "deadline_utc": "deadline", "significance_sigma": "sigma", "background_cps": "bg_cps",
            "heart_rate_bpm": "HR bpm", "hr_quality": "q", "respiration_rate_bpm": "RR /min",
            "blink_rate_per_min": "blinks /min", "abnormal_score": "score", "track_id": "track",
            "t_raised_utc": "raised", "t_start_utc": "from", "trajectory_ids": "trajectory"}


def _fmt_col(column: str, v: Any) -> str:
    if isinstance(v, str):
        if column.endswith("_utc") and "T" in v:
            return v.split("T", 1)[1][:8]  # hh:mm:ss (UTC); the date is in --json
        if column in ("boot_id", "incident_id", "task_id", "alarm_id", "cmd_id") and len(v) > 10:
            return v[:10]
    return _fmt(v)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, list | dict):
        return json.dumps(v)[:60]
    return str(v)


def _require_configured_parts(cfg: ControllerConfig) -> None:
    """Refuse to start, in one line naming the extra, when the configuration asks for a part whose
    packages this installation lacks.  Why: a controller started for its console that quietly runs
    without one (the log line scrolls by under systemd) looks to an operator like a dead site."""
    from agent.optional_deps import EXIT_MISSING_EXTRA, MissingExtra, require
    from controller.store.location import is_postgresql

    needs: list[tuple[str, str]] = []
    if cfg.web.enabled:
        needs += [("starlette", "the operator console (web.enabled; --no-web turns it off)"),
                  ("uvicorn", "the operator console (web.enabled; --no-web turns it off)")]
    if is_postgresql(cfg.db_path):
        needs.append(("psycopg", "a postgresql:// store"))
    for module, needed_for in needs:
        try:
            require(module, f"cedge controller run: {needed_for}")
        except MissingExtra as err:
            fail(err, EXIT_MISSING_EXTRA)


@app.command()
def run(
    config: Path | None = ConfigOpt,
    db: Path | None = DbOpt,
    broker_host: str | None = typer.Option(None, "--broker-host", help="MQTT broker host"),
    broker_port: int | None = typer.Option(None, "--broker-port", help="MQTT broker port"),
    log_level: str | None = typer.Option(None, "--log-level", help="DEBUG, INFO, WARNING or ERROR"),
    web: str | None = typer.Option(None, "--web", metavar="HOST:PORT",
                                   help="serve the operator console here (default: the config's web section, "
                                        "127.0.0.1:8470 or a free port)"),
    no_web: bool = typer.Option(False, "--no-web", help="do not serve the operator console"),
) -> None:
    """Run the controller until SIGTERM / Ctrl-C."""
    from agent.logging_setup import setup_logging
    from controller.service import ControllerService, install_signal_handlers

    cfg = _config(config)
    if db is not None:
        cfg.db_path = str(db)
    if broker_host is not None:
        cfg.broker.host = broker_host
    if broker_port is not None:
        cfg.broker.port = broker_port
    if web is not None:
        host, sep, port = web.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            fail(f"--web {web!r}: give HOST:PORT, e.g. 127.0.0.1:8470 (port 0: a free port)", 2)
        cfg.web.host, cfg.web.port, cfg.web.enabled = host.strip("[]"), int(port), True
    if no_web:
        cfg.web.enabled = False
    _require_configured_parts(cfg)
    level = (log_level or cfg.log_level).upper()
    # UTC timestamps on a terminal, <N> syslog priorities under systemd (journalctl -p err)
    setup_logging(level if level in logging.getLevelNamesMapping() else "INFO")
    try:
        service = ControllerService(cfg)
    except (StoreError, ConfigError) as err:
        fail(f"cannot start: {err}", 1)
    service.web_port_given = web is not None
    stop = threading.Event()
    install_signal_handlers(stop)
    service.run(stop)


user_app = typer.Typer(help="Operator console accounts (stored in the controller database).", no_args_is_help=True)
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    name: str = typer.Argument(..., help="login name"),
    role: str = typer.Option(..., "--role", help="viewer, operator or administrator"),
    config: Path | None = ConfigOpt,
    db: Path | None = DbOpt,
    replace: bool = typer.Option(False, "--replace", help="set a new password / role for an existing user"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin (one line)"),
) -> None:
    """Add an operator console user; the password is asked for (or read from stdin), stored as an scrypt hash."""
    import sys

    from controller.web.db import connect
    from controller.web.users import UserError, add_user

    path = str(db) if db is not None else _config(config).store_location  # a SQLite path or a postgresql:// URL
    if password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        conn = connect(path)
    except Exception as err:  # sqlite3.Error, OSError: one line, no traceback
        fail(f"{path}: cannot open database ({err})", 1)
    try:
        add_user(conn, name, role, password, replace=replace)
    except UserError as err:
        fail(err, 2)
    finally:
        conn.close()
    print(f"user {name} ({role}) saved in {path}")


@app.command()
def console(config: Path | None = ConfigOpt, db: Path | None = DbOpt,
            refresh_s: float = typer.Option(1.0, help="seconds between refreshes"),
            once: bool = typer.Option(False, help="print one snapshot and exit")) -> None:
    """Live operator view: units, latest alarms, fused source estimates and tasks."""
    from controller.console import render, run_console

    with _open_store(config, db) as store:
        if once:
            _out.print(render(store))
        else:
            run_console(store, refresh_s)


@app.command()
def vitals(config: Path | None = ConfigOpt, db: Path | None = DbOpt, as_json: bool = JsonOpt,
           history: bool = typer.Option(False, help="every message instead of the newest per track"),
           alerts: bool = typer.Option(False, help="only messages with an abnormal-state alert, and why")) -> None:
    """Camera boxes: vital signs and abnormal-state score per anonymous track (no images)."""
    from controller.console import evidence_summary

    with _open_store(config, db) as store:
        rows = store.list_vitals(latest_per_track=not history, alerts_only=alerts)
    if alerts:
        for r in rows:
            r["why"] = evidence_summary(r.get("evidence"))
        _print(rows, ["unit_id", "track_id", "t_utc", "abnormal_score", "why"], "abnormal-state alerts", as_json)
        return
    _print(rows, ["unit_id", "track_id", "t_utc", "heart_rate_bpm", "hr_quality", "respiration_rate_bpm",
                  "blink_rate_per_min", "abnormal_score", "alert"], "vitals", as_json)


@app.command("cctv-alerts")
def cctv_alerts(config: Path | None = ConfigOpt, db: Path | None = DbOpt, as_json: bool = JsonOpt,
                limit: int = typer.Option(100, "--limit", help="most recent N"),
                rule: str | None = typer.Option(None, "--rule", help="only this rule (e.g. loitering)")) -> None:
    """Hall CCTV behaviour alerts (loitering, long stay, U-turn, ...): when, which rule, where, which
    trajectory.  The evidence (trajectory samples, tracklets, measured values) is in --json."""
    with _open_store(config, db) as store:
        rows = store.list_cctv_alerts(limit=limit, rule=rule)
    if not as_json:
        for r in rows:
            r["zones"] = ",".join(r.get("zones") or []) or "-"
            r["trajectory_ids"] = ",".join(r.get("trajectory_ids") or [])
    _print(rows, ["t_raised_utc", "rule", "zones", "trajectory_ids", "t_start_utc", "alert_id"], "CCTV alerts",
           as_json)


@app.command()
def units(config: Path | None = ConfigOpt, db: Path | None = DbOpt, as_json: bool = JsonOpt) -> None:
    """Units seen, with liveness state, last position and availability."""
    with _open_store(config, db) as store:
        rows = store.list_units()
    _print(
        rows,
        [
            "unit_id",
            "unit_type",
            "state",
            "last_seen_utc",
            "boot_id",
            "messages",
            "x_m",
            "y_m",
            "available",
            "task_id",
            "software_version",
        ],
        "units",
        as_json,
    )


@app.command()
def alarms(
    config: Path | None = ConfigOpt,
    db: Path | None = DbOpt,
    as_json: bool = JsonOpt,
    limit: int = typer.Option(100, "--limit", help="most recent N"),
) -> None:
    """Alarms received, with the incident each was grouped into."""
    with _open_store(config, db) as store:
        rows = store.list_alarms(limit=limit)
    _print(
        rows,
        [
            "alarm_id",
            "unit_id",
            "t_peak_utc",
            "significance_sigma",
            "peak_cps",
            "background_cps",
            "x_m",
            "y_m",
            "delivery",
            "incident_id",
        ],
        "alarms",
        as_json,
    )


@app.command()
def tasks(
    config: Path | None = ConfigOpt,
    db: Path | None = DbOpt,
    as_json: bool = JsonOpt,
    active: bool = typer.Option(False, "--active", help="only tasks still in progress"),
) -> None:
    """Handheld tasks with state, assigned unit, target and attempts."""
    with _open_store(config, db) as store:
        rows = store.list_tasks(ACTIVE_TASK_STATES if active else None)
    _print(
        rows,
        [
            "task_id",
            "incident_id",
            "state",
            "unit_id",
            "target_x_m",
            "target_y_m",
            "radius_m",
            "attempts",
            "state_since_utc",
            "deadline_utc",
        ],
        "tasks",
        as_json,
    )


@app.command()
def incidents(config: Path | None = ConfigOpt, db: Path | None = DbOpt, as_json: bool = JsonOpt) -> None:
    """Incidents (grouped alarms) with the fused source estimate."""
    with _open_store(config, db) as store:
        rows = store.list_incidents()
    _print(
        rows,
        [
            "incident_id",
            "state",
            "passes",
            "units",
            "est_x_m",
            "est_y_m",
            "est_z_m",
            "sigma_xy_m",
            "ambiguous",
            "est_strength",
            "task_id",
        ],
        "incidents",
        as_json,
    )


@app.command("export-incident")
def export_incident_cmd(
    incident_id: str = typer.Argument(..., help="incident id (see `cedge controller incidents`)"),
    out: Path = typer.Option(Path("."), "--out", "-o", help="directory for the N42 files (one per unit)"),
    config: Path | None = ConfigOpt, db: Path | None = DbOpt,
) -> None:
    """Write an incident's count data as N42.42-2012 survey files (for `cedge localize` and reach-back)."""
    from agent.spectral_files.model import SpectrumFileError
    from controller.incident_export import ExportError, export_incident

    cfg = _config(config)
    with _open_store(config, db) as store:
        try:
            paths = export_incident(store, incident_id, out, cfg.localization)
        except (ExportError, SpectrumFileError) as err:
            fail(err, 1)
    for p in paths:
        print(p)


@app.command()
def stats(config: Path | None = ConfigOpt, db: Path | None = DbOpt, as_json: bool = JsonOpt) -> None:
    """Messages per unit and boot, sequence gaps, rejects by reason."""
    with _open_store(config, db) as store:
        counts = store.counts()
    if as_json:
        print(json.dumps(counts, default=str, indent=2))
        return
    _print(
        [{"unit_id": u, "messages": n} for u, n in counts["messages_per_unit"].items()],
        ["unit_id", "messages"],
        "messages stored per unit",
        False,
    )
    _print(
        counts["boots"],
        ["unit_id", "boot_id", "n", "min_seq", "max_seq", "missing", "gaps"],
        "sequences per boot",
        False,
    )
    _print(
        [{"reason": k, "count": v} for k, v in counts["rejects"].items()],
        ["reason", "count"],
        "rejects by reason",
        False,
    )
    _print(counts["counters"], ["name", "unit_id", "value"], "counters", False)
