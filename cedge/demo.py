"""`cedge demo`: the whole customs workflow on one machine, on embedded defaults.

Broker (a private Mosquitto), fleet controller, two mobile units, two handhelds and a camera box
run as separate processes on a simulated yard with a hidden source, on the secure setup a site
gets from `cedge site init`: TLS with a client certificate per process, the broker ACL, enrolled
units only and signed commands.  The demo watches the
controller's database, shows progress, and ends when the follow-up task has a final state, with a
summary (``--json``: one JSON object) and a picture of the yard.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cedge.fleet import Fleet
from cedge.fleet_view import FleetView

FINAL_TASK_STATES = {"confirmed", "cleared", "timed_out", "cancelled", "failed"}

#: With a camera box in the fleet the demo runs at least this long (wall time; the camera box runs in
#: real time).  Its heart rate needs a 20 s window and two agreeing updates, and on the checkpoint
#: scene (moving heads, specular skin, MJPG q90) the pulse clears the quality threshold ~22 s into
#: the track; the yard's task alone is often decided in less, which left the box's last message
#: before its first valid heart rate.
CAMERA_WATCH_S = 40.0


def _source_truth(fleet: Fleet) -> list[dict[str, Any]]:
    from hal_sim.world import SimWorld

    world = SimWorld(fleet.scenario, check_materials=False)
    return [{"id": s.source_id, "nuclide": s.nuclide, "activity_mbq": s.activity_bq / 1e6,
             "container": s.container, "x_m": round(s.position_m[0], 3), "y_m": round(s.position_m[1], 3),
             "z_m": round(s.position_m[2], 3)} for s in world.sources]


def _handheld_distance(summary: dict[str, Any], truth: dict[str, Any] | None) -> float | None:
    """Horizontal distance from the handheld's position when it closed its task (confirmed or
    cleared) to the true source: how close the follow-up got (the simulation knows the truth)."""
    if truth is None:
        return None
    for t in summary.get("tasks") or []:
        for h in reversed(t.get("history") or []):
            if h.get("state") in ("confirmed", "cleared") and h.get("position"):
                x, y = h["position"][:2]
                return round(math.hypot(x - truth["x_m"], y - truth["y_m"]), 2)
    return None


DEMO_OPERATOR = "demo-operator"


def _console_user(db_path: Path) -> dict[str, str]:
    """A console operator for this run, with a fresh random password (printed, and in ``--json``)."""
    import secrets

    from controller.web.db import connect
    from controller.web.users import add_user

    password = secrets.token_urlsafe(12)
    conn = connect(db_path)
    try:
        add_user(conn, DEMO_OPERATOR, "operator", password, replace=True)
    finally:
        conn.close()
    return {"user": DEMO_OPERATOR, "password": password, "role": "operator"}


def _console_url(db_path: Path, timeout_s: float = 10.0) -> str | None:
    """The address the controller's console bound (it writes ``<db>.console.json`` once serving)."""
    import json

    url_file = Path(f"{db_path}.console.json")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return str(json.loads(url_file.read_text())["url"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    return None


def run_demo(scenario_path: Path, work_dir: Path | None = None, rate: float | None = None,
             timeout_s: float = 240.0, console: Console | None = None, quiet: bool = False,
             broker_host: str | None = None, broker_port: int | None = None,
             site_dir: Path | None = None, hold_s: float = 0.0) -> dict[str, Any]:
    """Run the fleet on the secure setup of a site: ``site_dir`` (needed with an external broker), or
    a site made in the work directory (``<work>/site``: CA, certificates, ACL, command key).

    The controller serves the operator console while the demo runs (its address and a demo
    operator's credentials are printed and go into the summary); ``hold_s`` keeps the controller,
    and so the console, up that many seconds after the scenario ends."""
    console = console or Console(stderr=True)
    keep = work_dir is not None
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="cedge-demo-"))
    if keep and (work / "controller.sqlite").exists():
        shutil.rmtree(work / "units", ignore_errors=True)
        for f in work.glob("controller.sqlite*"):
            f.unlink()
    fleet = Fleet(scenario_path, work, rate=rate, broker_host=broker_host, broker_port=broker_port,
                  site_dir=site_dir, localization_site=True)
    try:
        console_login: dict[str, str] | None = _console_user(fleet.db_path)
    except Exception as err:  # the console is optional: no web extra, no console, the demo still runs
        console_login = None
        console.print(f"operator console off: {err}")
    console_url: str | None = None
    view = FleetView(fleet.db_path)
    duration = fleet.scenario.time.duration_s
    t_wall0 = time.monotonic()
    min_wall_s = CAMERA_WATCH_S if any(u.type == "camerabox" for u in fleet.units) else 0.0
    ended = "timeout"
    final_seen_at: float | None = None
    try:
        fleet.start()
        console_url = _console_url(fleet.db_path) if console_login else None
        if console_url and not quiet:
            console.print(f"operator console: {console_url}  (user {console_login['user']}, "
                          f"password {console_login['password']})")
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                      TimeElapsedColumn(), console=console, disable=quiet, transient=False) as progress:
            bar = progress.add_task("simulated yard", total=duration, status="starting processes")
            while True:
                time.sleep(0.5)
                sim_s = max(0.0, fleet.sim_seconds())
                snap = view.snapshot()
                progress.update(bar, completed=min(sim_s, duration), status=(
                    f"t={sim_s:5.0f} s  units {snap['units_online']}/{len(fleet.units)}  "
                    f"msgs {snap['messages_stored']}  alarms {snap['alarms']}  tasks {snap['task_states']}"))
                dead = [n for n in fleet.procs if not fleet.alive(n)]
                if dead:
                    ended = f"process exited: {', '.join(dead)}"
                    break
                tasks = snap["task_states"]
                if tasks and all(s in FINAL_TASK_STATES for s in tasks.split(",")):
                    final_seen_at = final_seen_at or time.monotonic()
                    if (time.monotonic() - final_seen_at > 3.0  # let the last messages land
                            and time.monotonic() - t_wall0 >= min_wall_s):
                        ended = "task finished"
                        break
                if sim_s >= duration:
                    ended = "scenario time over"
                    break
                if time.monotonic() - t_wall0 > timeout_s:
                    ended = "wall-clock time-out"
                    break
        if not quiet:
            console.print(f"stopping fleet ({ended})")
        fleet.stop_agents()
        fleet.wait_drained(timeout_s=90.0)
        if hold_s > 0 and console_url:
            if not quiet:
                console.print(f"console kept up for {hold_s:.0f} s at {console_url} (Ctrl-C ends it)")
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the hold, the summary still comes
                time.sleep(hold_s)
    finally:
        fleet.stop()
    summary = view.summary()
    truth = _source_truth(fleet)
    summary["source_truth"] = truth[0] if truth else None
    est = summary.get("source_estimate")
    if truth and est:
        t = truth[0]
        summary["location_error_m"] = round(math.dist((t["x_m"], t["y_m"], t["z_m"]),
                                                      (est["x_m"], est["y_m"], est["z_m"])), 2)
        summary["location_error_horizontal_m"] = round(math.hypot(t["x_m"] - est["x_m"], t["y_m"] - est["y_m"]), 2)
    else:
        summary["location_error_m"] = None
    summary["handheld_distance_to_source_m"] = _handheld_distance(summary, truth[0] if truth else None)
    summary["messages_sent"] = sum(fleet.produced_by_final_boots().values())
    summary["ended"] = ended
    summary["wall_time_s"] = round(time.monotonic() - t_wall0, 1)
    summary["sim_time_s"] = round(fleet.sim_seconds(), 1)
    summary["console_url"] = console_url
    summary["console_login"] = console_login
    summary["work_dir"] = str(work)
    summary["site_dir"] = str(fleet.site_dir)
    try:
        from cedge.yard_map import draw_demo_map

        png = work / "demo_yard.png"
        draw_demo_map(fleet, view, summary, png)
        summary["picture"] = str(png)
    except Exception as err:  # the picture must never cost the summary
        summary["picture"] = None
        summary["picture_error"] = f"{type(err).__name__}: {err}"
    return summary


def print_summary(summary: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    console.print(f"[bold]demo ended:[/bold] {summary['ended']} after {summary['wall_time_s']} s "
                  f"(simulated {summary['sim_time_s']} s)")
    t = Table("alarm", "unit", "sigma", "x_m", "y_m", title="alarms")
    for a in summary["alarms"]:
        t.add_row(a["alarm_id"], a["unit_id"], f"{a['significance_sigma']:.1f}",
                  f"{a['x_m']:.1f}" if a.get("x_m") is not None else "-",
                  f"{a['y_m']:.1f}" if a.get("y_m") is not None else "-")
    console.print(t)
    t = Table("task", "state", "handheld", "result", title="follow-up tasks")
    for task in summary["tasks"]:
        res = task.get("result") or {}
        t.add_row(task["task_id"], task["state"], task.get("unit_id") or "-",
                  f"{res.get('significance_sigma', '-')} sigma, {res.get('dose_rate_usv_h') or 0:.3f} uSv/h"
                  if res else "-")
    console.print(t)
    st, est = summary.get("source_truth"), summary.get("source_estimate")
    if st:
        console.print(f"source truth:    {st['nuclide']} {st['activity_mbq']} MBq at "
                      f"({st['x_m']:.1f}, {st['y_m']:.1f}, {st['z_m']:.1f}) m")
    if est:
        console.print(f"source estimate: ({est['x_m']:.1f}, {est['y_m']:.1f}, {est['z_m']:.1f}) m "
                      f"+- {est.get('sigma_xy_m', float('nan')):.1f} m; error {summary['location_error_m']} m")
    if summary.get("vitals"):
        t = Table("camera", "track", "heart rate", "quality", "breathing", "blinks", "abnormal",
                  title=f"camera-box vitals, newest per track ({summary.get('vitals_messages', 0)} messages)")

        def fmt(v: Any, spec: str, unit: str = "") -> str:
            return "-" if v is None else f"{v:{spec}}{unit}"

        for v in summary["vitals"]:
            t.add_row(v["unit_id"], v["track_id"], fmt(v["heart_rate_bpm"], ".0f", " bpm"),
                      fmt(v["hr_quality"], ".2f"), fmt(v["respiration_rate_bpm"], ".0f", " /min"),
                      fmt(v["blink_rate_per_min"], ".0f", " /min"),
                      fmt(v["abnormal_score"], ".2f") + (" ALERT" if v.get("alert") else ""))
        console.print(t)
    console.print(f"messages sent {summary['messages_sent']}, stored {summary['messages_stored']}, "
                  f"rejected {summary.get('messages_rejected', 0)}")
    if summary.get("picture"):
        console.print(f"picture: {summary['picture']}")
