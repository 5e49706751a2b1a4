"""Agent runtime: sensor failure degrades gracefully, SIGTERM shuts down cleanly, systemd watchdog.

The runtime runs the shipped code with simulated devices at 50x real time and no reachable
broker, so everything it publishes stays in its durable outbox, where the test reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from agent.config import profile_from_dict
from agent.runtime.watchdog import Watchdog
from cedge.broker import free_port
from hal_sim.scenario import packaged_scenario_path

SCENARIO = str(packaged_scenario_path("demo_yard"))


def _profile(unit_id: str, rate: float, gamma_params: dict | None = None) -> dict:
    sim = {"scenario": SCENARIO}
    return {
        "schema": 1, "unit_id": unit_id, "unit_type": "mobile",
        "site": {"name": "demo-yard", "origin_lat_deg": 51.95, "origin_lon_deg": 4.05, "origin_alt_m": 5.0},
        "clock": {"driver": "sim", "params": {"start_utc": "2026-11-27T08:00:00Z", "rate": rate}},
        "devices": {"gamma": {"driver": "sim", "params": {**sim, **(gamma_params or {})}},
                    "gnss": {"driver": "sim", "params": sim}},
        # nobody listens on this port: every message stays in the outbox
        "broker": {"host": "127.0.0.1", "port": free_port(), "reconnect_max_s": 1.0},
        "health": {"interval_s": 5.0},
        "acquisition": {"detector_height_m": 1.5},
    }


def _outbox(state_dir: Path) -> list[dict]:
    con = sqlite3.connect(f"file:{state_dir / 'outbox.sqlite'}?mode=ro", uri=True)
    try:
        return [json.loads(p) for (p,) in con.execute("SELECT payload FROM outbox ORDER BY id")]
    finally:
        con.close()


@pytest.mark.timeout(300)
def test_failed_spectrometer_is_reported_and_the_rest_keeps_running(tmp_path: Path) -> None:
    from agent.runtime.unit import AgentRuntime

    # 10x real time: a stall of the loop (first identification at a new gain, a loaded machine) of a few
    # wall seconds must stay well inside the detector's 60 s (simulated) silent window.
    prof = profile_from_dict(_profile("mob-1", 10.0))
    rt = AgentRuntime(prof, tmp_path)
    # The simulated clock runs from construction on and the analysis warm-up takes 2-15 s of wall time:
    # warm up, let the loop run its first spectra (the first identification builds its templates), and
    # only then place the silent window after the present, so the test does not depend on speed.
    rt.role.warm_up()
    gamma = rt.devices["gamma"]
    gamma.fail_after_s = gamma.fail_until_s = float("inf")
    th = threading.Thread(target=rt.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 240
        start_s = rt.clock.elapsed_s()
        while time.monotonic() < deadline and rt.clock.elapsed_s() < start_s + 30.0:
            time.sleep(0.1)
        now_s = rt.clock.elapsed_s()
        gamma.fail_after_s, gamma.fail_until_s = now_s + 20.0, now_s + 80.0
        while time.monotonic() < deadline and rt.clock.elapsed_s() < now_s + 150.0:
            time.sleep(0.2)
    finally:
        rt.stop()
        th.join(timeout=20)
    assert not th.is_alive()
    msgs = _outbox(tmp_path)
    health = [m for m in msgs if m["kind"] == "health"]
    states = [h["body"]["sensors"]["gamma"]["state"] for h in health]
    assert "failed" in states or "degraded" in states, states
    assert states[-1] == "ok", "the spectrometer should recover after the fault window"
    assert all(h["body"]["sensors"]["gnss"]["state"] == "ok" for h in health[1:])
    meas = [m for m in msgs if m["kind"] == "measurement"]
    t = sorted(m["t_mono_s"] for m in meas)
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
    assert max(gaps) > 25, "no spectra while the detector was silent"
    assert len(meas) > 50, "spectra before and after the fault"
    seqs = [m["seq"] for m in msgs]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.timeout(120)
def test_sigterm_exits_cleanly_keeping_unsent_messages(tmp_path: Path) -> None:
    prof_path = tmp_path / "unit.yaml"
    prof_path.write_text(yaml.safe_dump(_profile("mob-2", 20.0)))
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "cedge", "agent", "run", "--profile", str(prof_path),
                             "--state-dir", str(state)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:  # the outbox is locked while the agent runs; its status file says how many it holds
                if json.loads((state / "status.json").read_text())["link"]["sequenced_sent"] > 20:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()[-2000:]
    status = json.loads((state / "status.json").read_text())
    kept = _outbox(state)
    assert len(kept) == status["link"]["sequenced_sent"] > 20  # nothing acknowledged, nothing lost
    res = subprocess.run([sys.executable, "-m", "cedge", "agent", "status", "--state-dir", str(state), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and json.loads(res.stdout)["unit_id"] == "mob-2"


def test_watchdog_speaks_sd_notify_only_while_kicked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock_path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(sock_path)
    srv.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    wd = Watchdog(timeout_s=0.6, exit_on_hang=False)
    wd.start()
    got: list[str] = []

    def drain(seconds: float) -> list[tuple[float, str]]:
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                out.append((time.monotonic(), srv.recv(256).decode()))
        return out

    try:
        for _ in range(6):
            wd.kick()
            got += [m for _, m in drain(0.2)]
        assert "READY=1" in got and got.count("WATCHDOG=1") >= 3
        hang_start = time.monotonic()  # no more kicks: the main loop "hangs"
        late = [t for t, m in drain(2.0) if m == "WATCHDOG=1" and t > hang_start + wd.timeout_s + 0.3]
        assert late == [], "WATCHDOG=1 must stop once the main loop is silent beyond the limit"
    finally:
        wd.stop()
        srv.close()
        os.environ.pop("NOTIFY_SOCKET", None)


def test_analysis_is_warmed_up_before_acquisition_and_watchdog(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold numba compile at the first spectrum (or the first alarm) could stall the main loop past
    the watchdog on a fresh install: the role compiles its analysis before anything starts."""
    from agent.runtime.roles import MobileRole
    from agent.runtime.unit import AgentRuntime

    seen: dict[str, object] = {}

    def record(role: MobileRole) -> None:
        seen["threads"] = {t.name for t in threading.enumerate()}
        seen["spectral"] = role.spectral is not None

    monkeypatch.setattr(MobileRole, "warm_up", record)
    prof = profile_from_dict({**_profile("mob-3", 10.0), "detector": {"kind": "spectral"}})
    rt = AgentRuntime(prof, tmp_path)
    try:
        rt.start()
        assert seen["spectral"] is True
        started = {t.name for t in threading.enumerate()} - seen["threads"]  # type: ignore[operator]
        assert "watchdog" in started, started
        assert not any(n == "watchdog" or n.startswith("acq") for n in seen["threads"]), seen["threads"]
    finally:
        rt.stop()
        rt.shutdown()


def test_mobile_warm_up_runs_the_alarm_path() -> None:
    """The warm-up must reach identification of an alarm episode (the costliest compile), not only
    the per-second analysis."""
    from agent.spectral import warmup

    alarms = warmup.synthetic_pass()
    assert len(alarms) == 1 and alarms[0].identification.top == "Cs-137"
    assert warmup.warm_up_dwell() > 0.0
