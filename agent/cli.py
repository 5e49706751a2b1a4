"""Technician CLI on a unit: `cedge agent run|status|check-config|devices`."""

from __future__ import annotations

import calendar
import faulthandler
import json
import os
import signal
import sys
import time
from pathlib import Path

import typer
from rich.table import Table

from agent.cli_output import console as make_console
from agent.cli_output import fail, safe
from agent.config import ConfigError, UnitProfile, load_profile
from agent.exit_codes import EXIT_DEVICE_IO, EXIT_MISSING_EXTRA, EXIT_USAGE

app = typer.Typer(help="Run and inspect the agent on this unit.", no_args_is_help=True)
console = make_console()


def default_state_dir(unit_id: str) -> Path:
    base = os.environ.get("CEDGE_STATE_DIR")
    if base:
        return Path(base) / unit_id
    system = Path("/var/lib/cedge")
    if os.access(system if system.exists() else system.parent, os.W_OK):
        return system / unit_id
    return Path.home() / ".local" / "state" / "cedge" / unit_id


def _load(profile: Path):  # noqa: ANN202
    try:
        return load_profile(profile)
    except ConfigError as err:
        fail(f"configuration error in {profile}\n{err}", EXIT_USAGE)


def _check_installed(prof: UnitProfile, profile: Path) -> None:
    """Fail before anything starts if this installation cannot run the profile: its role's analysis
    or a driver needs an extra that is not installed (EXIT_MISSING_EXTRA, naming the extra), or a
    driver or clock name is unknown (EXIT_USAGE).  Imports the driver modules; opens no device."""
    from agent.hal.interfaces import DeviceUnavailable
    from agent.hal.registry import CLOCK_TABLE, device_class
    from agent.optional_deps import MissingExtra, explain, require_role

    try:
        require_role(prof.unit_type)
    except MissingExtra as err:
        fail(err, EXIT_MISSING_EXTRA)
    for kind, dc in prof.devices.items():
        try:
            device_class(kind, dc.driver)
        except DeviceUnavailable as err:
            cause = err.__cause__
            missing = explain(cause, f"{kind} driver '{dc.driver}'") if isinstance(cause, ImportError) else None
            if missing is not None:
                fail(missing, EXIT_MISSING_EXTRA)
            fail(f"{profile}: devices.{kind}: {err}", EXIT_USAGE)
    if prof.clock.driver not in CLOCK_TABLE:
        fail(f"{profile}: clock: no driver '{prof.clock.driver}' (known: {', '.join(CLOCK_TABLE)})", EXIT_USAGE)


@app.command()
def run(
    profile: Path = typer.Option(..., "--profile", "-p", help="Unit profile YAML (configs/units/*.yaml)."),
    state_dir: Path | None = typer.Option(None, help="Where the outbox and status file live."),
    broker_host: str | None = typer.Option(None, help="Override broker.host."),
    broker_port: int | None = typer.Option(None, help="Override broker.port."),
) -> None:
    """Run the unit's firmware loop until SIGTERM."""
    from agent.logging_setup import setup_logging
    from agent.runtime.unit import AgentRuntime

    prof = _load(profile)
    _check_installed(prof, profile)
    if broker_host:
        prof.broker.host = broker_host
    if broker_port:
        prof.broker.port = broker_port
    setup_logging(prof.log_level, f"[{prof.unit_id}] ")
    # `kill -USR1 <pid>` prints every thread's stack to the log: the first tool for a unit that hangs
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    from agent.link.outbox import OutboxError

    where = state_dir or default_state_dir(prof.unit_id)
    try:
        runtime = AgentRuntime(prof, where)
    except (OSError, OutboxError) as err:
        fail(f"cannot start {prof.unit_id}: state directory {where}: {err}", EXIT_DEVICE_IO)
    except ConfigError as err:  # what the profile names cannot be used (e.g. a CCTV calibration file)
        fail(f"cannot start {prof.unit_id}: {err}", 2)
    raise typer.Exit(runtime.run())


@app.command()
def status(
    profile: Path | None = typer.Option(None, "--profile", "-p", help="Unit profile (to find the state dir)."),
    state_dir: Path | None = typer.Option(None, help="State dir of the agent."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the running agent's status (sensors, link, outbox, queues)."""
    if state_dir is None:
        if profile is None:
            fail("give --profile or --state-dir", 2)
        state_dir = default_state_dir(_load(profile).unit_id)
    path = state_dir / "status.json"
    try:
        st = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        fail(f"no readable status at {path}: {err} (is the agent running?)", 1)
    if as_json:
        print(json.dumps(st, indent=2))
        return
    # timegm, not mktime: the status time is UTC and the technician's time zone must not matter
    age = time.time() - calendar.timegm(time.strptime(st["written_utc"], "%Y-%m-%dT%H:%M:%SZ"))
    console.print(f"[bold]{safe(st['unit_id'])}[/bold] ({safe(st['unit_type'])}) boot {safe(st['boot_id'][:8])} "
                  f"pid {st['pid']} uptime {st['uptime_s']} s, status written {age:.0f} s ago")
    t = Table("sensor", "state", "detail")
    for name, s in st["sensors"].items():
        colour = {"ok": "green", "degraded": "yellow"}.get(s["state"], "red")
        t.add_row(safe(name), f"[{colour}]{safe(s['state'])}[/{colour}]", safe(s["detail"]))
    for name, err in st.get("device_errors", {}).items():
        t.add_row(safe(name), "[red]failed[/red]", safe(err))
    console.print(t)
    link = st["link"]
    console.print(safe(f"link: connected={link.get('connected')} pending={link.get('pending')} "
                       f"published={link.get('published')} acked={link.get('acked')} "
                       f"reconnects={link.get('reconnects')}"))
    console.print(safe(f"queues: {st['queues']}"))
    console.print(safe(f"role: {st['role']}"))


@app.command("check-config")
def check_config(profile: Path) -> None:
    """Validate a unit profile and print it with defaults filled in.

    Also checks that this installation has what the profile needs (the extra of its role, its
    drivers) without opening any device.  Exit 0 valid, 2 invalid, 4 an extra is missing."""
    prof = _load(profile)
    _check_installed(prof, profile)
    print(prof.model_dump_json(indent=2, by_alias=True))


@app.command()
def devices() -> None:
    """List the device drivers this build knows, and whether each can be loaded here."""
    from agent.hal.interfaces import DeviceUnavailable
    from agent.hal.registry import DEVICE_TABLE, device_class

    t = Table("kind", "driver", "class", "loadable")
    for kind, drivers in DEVICE_TABLE.items():
        for name, spec in drivers.items():
            try:
                device_class(kind, name)
                ok = "[green]yes[/green]"
            except DeviceUnavailable as err:
                ok = f"[red]no[/red] {safe(err)}"
            t.add_row(kind, name, spec, ok)
    console.print(t)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
