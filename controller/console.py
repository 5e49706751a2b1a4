"""Live operator console: units, recent alarms, incidents and tasks, and the people camera boxes
track, refreshed from the store.

Why read the database rather than subscribe to MQTT: the console then shows exactly what the
controller has committed (and decided), works on a second screen or over SSH with no broker
credentials, and never competes with the controller for messages.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table

from agent.cli_output import safe
from controller.store import Store

_STATE_STYLE = {"online": "green", "stale": "yellow", "offline": "red", "confirmed": "bold red",
                "cleared": "green", "timed_out": "yellow"}


def _t(v: Any) -> str:
    return safe(v.split("T", 1)[1][:8]) if isinstance(v, str) and "T" in v else "-"


def _styled(state: str | None) -> str:
    s = state or "-"
    style = _STATE_STYLE.get(s)
    return f"[{style}]{s}[/{style}]" if style else safe(s)


def evidence_summary(evidence: dict[str, Any] | None, min_z: float = 1.0, most: int = 3) -> str:
    """The cues behind an abnormal-state score, strongest first: "hr_bpm 97 (78, z 6.2); ...".

    The camera box sends each cue's value, the person's own baseline and the z-score; the operator
    needs the few that moved, not all five.
    """
    ev = evidence or {}
    cues = [k[:-2] for k in ev if k.endswith("_z") and k != "fused_z" and ev[k] is not None and ev[k] >= min_z]
    cues.sort(key=lambda k: -ev[f"{k}_z"])
    parts = []
    for k in cues[:most]:
        v, b = ev.get(k), ev.get(f"{k}_baseline")
        val = f"{v:.3g}" if isinstance(v, int | float) else "?"
        base = f"{b:.3g}" if isinstance(b, int | float) else "?"
        parts.append(f"{k} {val} ({base}, z {ev[f'{k}_z']:.1f})")
    return "; ".join(parts) or "-"


def _vitals_table(store: Store) -> Table | None:
    rows = store.list_vitals(latest_per_track=True)
    if not rows:
        return None
    n_alerts = store.query("SELECT COUNT(*) AS n FROM vitals WHERE alert = 1")[0]["n"]
    table = Table(title=f"camera boxes: tracked people (alert messages {n_alerts})", expand=True)
    for c in ("unit", "track", "seen", "HR bpm", "q", "RR /min", "blinks /min", "score", "alert: why"):
        table.add_column(c)

    def f(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, int | float) else "-"

    for v in rows[-12:]:
        why = f"[bold red]{safe(evidence_summary(v.get('evidence')))}[/bold red]" if v.get("alert") else "-"
        table.add_row(safe(v["unit_id"]), safe(v["track_id"]), _t(v.get("t_utc")), f(v.get("heart_rate_bpm"), ".0f"),
                      f(v.get("hr_quality"), ".2f"), f(v.get("respiration_rate_bpm"), ".1f"),
                      f(v.get("blink_rate_per_min"), ".0f"), f(v.get("abnormal_score"), ".2f"), why)
    return table


def render(store: Store, max_alarms: int = 8) -> Group:
    units = Table(title="units", expand=True)
    for c in ("unit", "type", "state", "seen", "x_m", "y_m", "free", "task"):
        units.add_column(c)
    for u in store.list_units():
        units.add_row(safe(u["unit_id"]), safe(u.get("unit_type") or "?"), _styled(u.get("state")),
                      _t(u.get("last_seen_utc")),
                      f"{u['x_m']:.1f}" if u.get("x_m") is not None else "-",
                      f"{u['y_m']:.1f}" if u.get("y_m") is not None else "-",
                      "yes" if u.get("available") else "no", safe((u.get("task_id") or "-")[:10]))
    alarms = Table(title=f"latest alarms (of {store.count('alarms')})", expand=True)
    for c in ("time", "unit", "sigma", "x_m", "y_m", "incident"):
        alarms.add_column(c)
    for a in store.list_alarms(limit=max_alarms)[::-1]:
        alarms.add_row(_t(a.get("t_peak_utc")), safe(a["unit_id"]), f"{a['significance_sigma']:.1f}",
                       f"{a['x_m']:.1f}" if a.get("x_m") is not None else "-",
                       f"{a['y_m']:.1f}" if a.get("y_m") is not None else "-", safe((a.get("incident_id") or "-")[:10]))
    incidents = Table(title="incidents: fused source estimate", expand=True)
    for c in ("incident", "state", "passes", "x_m", "y_m", "z_m", "+-xy m", "task"):
        incidents.add_column(c)
    for i in store.list_incidents():
        est = i.get("estimate") or {}
        incidents.add_row(safe(i["incident_id"][:10]), safe(i.get("state") or "-"), str(i.get("passes") or 0),
                          *(f"{est[k]:.1f}" if est.get(k) is not None else "-" for k in ("x_m", "y_m", "z_m")),
                          f"{est['sigma_xy_m']:.1f}" if est.get("sigma_xy_m") is not None else "-",
                          safe((i.get("task_id") or "-")[:10]))
    tasks = Table(title="follow-up tasks", expand=True)
    for c in ("task", "state", "handheld", "since", "try", "result"):
        tasks.add_column(c)
    for t in store.list_tasks():
        res = t.get("result") or {}
        summary = (f"{res.get('net_cps', 0):.0f} net cps, {res.get('dose_rate_usv_h') or 0:.2f} uSv/h"
                   if res else "-")
        tasks.add_row(safe(t["task_id"][:10]), _styled(t.get("state")), safe(t.get("unit_id") or "-"),
                      _t(t.get("state_since_utc")), str(t.get("attempts") or 0), summary)
    counts = store.counts()
    footer = (f"messages stored {store.count('received')}, rejected {sum(counts['rejects'].values())}, "
              f"sequence gaps {len(counts['gaps'])}")
    vitals = _vitals_table(store)
    parts: list[Any] = [units, alarms, incidents, tasks] + ([vitals] if vitals is not None else []) + [footer]
    return Group(*parts)


def run_console(store: Store, refresh_s: float = 1.0, duration_s: float | None = None) -> None:
    """Refresh until Ctrl-C (or ``duration_s``)."""
    end = None if duration_s is None else time.monotonic() + duration_s
    with Live(render(store), refresh_per_second=4, screen=False) as live:
        try:
            while end is None or time.monotonic() < end:
                time.sleep(refresh_s)
                live.update(render(store))
        except KeyboardInterrupt:
            pass
