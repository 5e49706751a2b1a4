"""An unreachable broker is logged at WARNING at once, then with back-off (1st, 2nd, 4th ... attempt,
at least every max_quiet_s), and the end of the outage once; the real link against a closed port too."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from agent.link.connect_failure_log import ConnectFailureLog


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_backoff_schedule_and_end_of_outage(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = logging.getLogger("test.connect")
    cfl = ConnectFailureLog(log, "link mob-01", max_quiet_s=300.0, monotonic=clock)
    logged = []
    with caplog.at_level(logging.INFO, logger="test.connect"):
        for attempt in range(1, 41):
            if cfl.failed("broker.local:8883", ConnectionRefusedError(111, "Connection refused"), 10.0):
                logged.append(attempt)
            clock.t += 10.0  # paho's back-off has reached reconnect_max_s
        # doubling; after the 32nd only 80 s pass (< max_quiet_s), so nothing more up to the 40th
        assert logged == [1, 2, 4, 8, 16, 32]
        first = caplog.records[0]
        assert first.levelno == logging.WARNING
        assert "broker broker.local:8883 unreachable ([Errno 111] Connection refused): 1 failed attempt(s)" \
            in first.getMessage()
        cfl.connected()
    end = caplog.records[-1]
    assert end.levelno == logging.WARNING
    assert "reachable again after 40 failed attempt(s) over 400 s" in end.getMessage()
    # a new streak starts from the first attempt again
    assert cfl.failed("broker.local:8883", None, 10.0) is True


def test_long_outage_is_logged_at_least_every_max_quiet_s() -> None:
    clock = _Clock()
    cfl = ConnectFailureLog(logging.getLogger("test.connect"), "link x", max_quiet_s=300.0, monotonic=clock)
    logged_at = []
    for _ in range(400):  # 400 attempts, 10 s apart: 4000 s
        if cfl.failed("h:1", "refused", 10.0):
            logged_at.append(clock.t)
        clock.t += 10.0
    gaps = [b - a for a, b in zip(logged_at, logged_at[1:], strict=False)]
    assert max(gaps) <= 300.0 and len(logged_at) < 25  # bounded: not one line per attempt


@pytest.mark.timeout(120)
def test_link_against_a_closed_port_warns_within_seconds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from broker_fixture import free_port

    from agent import wire_schema as ws
    from agent.config import BrokerConfig
    from agent.hal.system_clock import SystemClock
    from agent.link import MqttLink, Outbox

    port = free_port()  # nobody listens here
    outbox = Outbox(tmp_path / "outbox.sqlite", 1000)
    link = MqttLink("mob-01", BrokerConfig(host="127.0.0.1", port=port, reconnect_max_s=1.0), outbox,
                    SystemClock(), lambda: ws.Birth(unit_type="mobile", profile="t", software_version="0",
                                                    site="s", sensors={}, devices=[]), lambda cmd: None)
    with caplog.at_level(logging.WARNING, logger="agent.link.mqtt_link"):
        t0 = time.monotonic()
        link.start()
        try:
            while time.monotonic() - t0 < 60 and not any("unreachable" in r.getMessage() for r in caplog.records):
                time.sleep(0.05)
        finally:
            link.stop(timeout_s=5.0)
            outbox.close()
    warn = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert warn, "no WARNING for a broker nobody listens on"
    assert warn[0].levelno == logging.WARNING and f"127.0.0.1:{port}" in warn[0].getMessage()
    assert "Connection refused" in warn[0].getMessage()
