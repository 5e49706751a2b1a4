"""Two controller processes share the uplink through an MQTT 5 shared subscription.

Mosquitto hands each message of `$share/ctl/cedge/v1/up/+/+` to one member of the group; both
write the same SQLite database (WAL), and the (unit, boot, seq) ledger keeps it exactly-once.
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

from agent import wire_schema as ws
from agent.hal.system_clock import SystemClock
from agent.link import MqttLink, Outbox
from controller.store import Store

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


def _controller(tmp_path: Path, broker: Mosquitto, name: str, db: Path, dispatch: bool) -> subprocess.Popen:
    cfg = {"schema": 1, "db_path": str(db), "dispatch": {"enabled": dispatch},
           "broker": {"host": broker.host, "port": broker.port, "client_id": name,
                      "shared_subscription_group": "ctl", "reconnect_max_s": 1.0}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process below
    proc = subprocess.Popen([sys.executable, "-m", "cedge", "controller", "run", "--config", str(path)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _wait_log(path: Path, text: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"'{text}' not in {path}")


def test_two_controllers_split_the_load_exactly_once(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "controller.sqlite"
    Store(db).close()  # create the schema once, before two processes race to
    procs = [_controller(tmp_path, mosquitto, f"ctl-{i}", db, dispatch=(i == 0)) for i in range(2)]
    try:
        for i in range(2):
            _wait_log(tmp_path / f"ctl-{i}.log", "subscribing")
        time.sleep(0.5)
        outbox = Outbox(tmp_path / "outbox.sqlite", 100_000)
        link = MqttLink("mob-9", mosquitto.broker_config(), outbox, SystemClock(),
                        birth=lambda: ws.Birth(unit_type="mobile", profile="t", software_version="0", site="s",
                                               sensors={}),
                        on_command=lambda cmd: None)
        link.start()
        n = 400
        for i in range(n):
            link.send("measurement", ws.Measurement(interval_s=1.0, live_time_s=0.99, gross_counts=1000 + i,
                                                    gross_cps=1010.0 + i, detector_model="NaI 2x4x16 in log"))
        deadline = time.monotonic() + 60
        store = Store(db, create=False)
        while time.monotonic() < deadline and store.count("received") < n:
            time.sleep(0.3)
        link.stop(timeout_s=5)
        outbox.close()
        assert store.count("received") == n
        assert store.gaps() == []
        store.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
            p.log.close()
    # both members of the group took part
    for i in range(2):
        text = (tmp_path / f"ctl-{i}.log").read_text(errors="replace")
        assert "shared" in text or "$share/ctl" in text, f"ctl-{i} did not use the shared subscription"
    stored = [_stored_count(tmp_path / f"ctl-{i}.log") for i in range(2)]
    assert all(s > 0 for s in stored) and sum(stored) >= n, stored


def _stored_count(log_path: Path) -> int:
    """The last 'stored N' a controller logged in its status line (it logs one at shutdown)."""
    import re

    found = re.findall(r"stored (\d+)", log_path.read_text(errors="replace"))
    return int(found[-1]) if found else 0
