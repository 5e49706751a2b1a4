"""Two controller processes on one PostgreSQL behind an MQTT 5 shared subscription (issue 20):
both ingest, exactly one leads (dispatch and liveness), and when the leader is killed the other
takes over; every message is stored exactly once, including those the dead one had not acknowledged
(its persistent session hands them back when it restarts).

Real parts: a private Mosquitto (tests/broker_fixture.py), a private PostgreSQL (tests/pg_fixture.py),
``cedge controller run`` processes, and a unit's real link (agent.link.MqttLink with its outbox).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from broker_fixture import Mosquitto
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures

from agent import wire_schema as ws
from agent.hal.system_clock import SystemClock
from agent.link import MqttLink, Outbox
from controller.store import Store

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]
LEADS = "leader: this controller now runs dispatch and liveness"
DEADLINE_S = 90.0


def _controller(tmp_path: Path, broker: Mosquitto, name: str, url: str,
                extra: dict | None = None) -> subprocess.Popen:
    """``cedge controller run`` on the store ``url`` behind the shared subscription "ctl"; ``extra``:
    more top-level config sections (site, dispatch, ...)."""
    cfg = {"schema": 1, "store": url, "db_path": str(tmp_path / "unused.sqlite"), "web": {"enabled": False},
           "tick_s": 0.5, "broker": {"host": broker.host, "port": broker.port, "client_id": name,
                                     "shared_subscription_group": "ctl", "reconnect_max_s": 1.0},
           **(extra or {})}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process below
    proc = subprocess.Popen([sys.executable, "-m", "cedge", "controller", "run", "--config", str(path)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _log(tmp_path: Path, name: str) -> str:
    p = tmp_path / f"{name}.log"
    return p.read_text(errors="replace") if p.exists() else ""


def _wait(cond, what: str, deadline_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    p.log.close()


def test_leader_killed_another_takes_over_and_nothing_is_lost_or_doubled(
        tmp_path: Path, mosquitto: Mosquitto, pg_url: str) -> None:  # noqa: F811
    Store(pg_url).close()
    names = ["ctl-a", "ctl-b"]
    procs = {n: _controller(tmp_path, mosquitto, n, pg_url) for n in names}
    outbox = link = None
    try:
        for n in names:
            _wait(lambda n=n: "subscribing" in _log(tmp_path, n), f"{n} to subscribe")
        _wait(lambda: sum(LEADS in _log(tmp_path, n) for n in names) == 1, "one leader")
        time.sleep(2.0)  # several ticks: still exactly one leader
        leaders = [n for n in names if LEADS in _log(tmp_path, n)]
        assert len(leaders) == 1
        leader, follower = leaders[0], next(n for n in names if n != leaders[0])

        outbox = Outbox(tmp_path / "outbox.sqlite", 100_000)
        link = MqttLink("mob-7", mosquitto.broker_config(), outbox, SystemClock(),
                        birth=lambda: ws.Birth(unit_type="mobile", profile="t", software_version="0", site="s",
                                               sensors={}),
                        on_command=lambda cmd: None)
        link.start()

        def send(n: int) -> None:
            for i in range(n):
                link.send("measurement", ws.Measurement(interval_s=1.0, live_time_s=0.99, gross_counts=1000 + i,
                                                        gross_cps=1010.0 + i, detector_model="NaI 2x4x16"))

        send(100)
        procs[leader].send_signal(signal.SIGKILL)  # mid-stream: some of its messages are not acknowledged
        procs[leader].wait(timeout=30)
        send(100)
        _wait(lambda: LEADS in _log(tmp_path, follower), f"{follower} to take over")
        # the killed controller comes back with its persistent session: the broker re-sends what it had
        # not acknowledged; the store keeps one copy of each
        procs[leader].log.close()
        procs[leader] = _controller(tmp_path, mosquitto, leader, pg_url)
        with Store(pg_url, create=False) as store:
            _wait(lambda: store.count("received") >= 200, "all 200 messages stored")
            time.sleep(1.0)
            assert store.count("received") == 200 and store.count("measurements") == 200
            assert store.gaps() == []
            dup = store.query("SELECT COUNT(*) AS n FROM (SELECT seq FROM measurements GROUP BY unit_id, boot_id, "
                              "seq HAVING COUNT(*) > 1) d")[0]["n"]
            assert dup == 0
            assert store.get_unit("mob-7")["messages"] == 200
        # the restarted one does not lead while the follower does
        time.sleep(2.0)
        assert _log(tmp_path, leader).count(LEADS) == 1  # only its first run led
    finally:
        if link is not None:
            link.stop(timeout_s=5)
        if outbox is not None:
            outbox.close()
        for p in procs.values():
            _stop(p)
