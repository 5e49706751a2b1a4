"""sd_notify(3) over a real AF_UNIX datagram socket, as systemd's service manager receives it."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from agent.runtime.sd_notify import SystemdNotifier, watchdog_interval_s
from agent.runtime.watchdog import Watchdog


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10.0)
    return sock


def _messages_until(sock: socket.socket, wanted: str, deadline_s: float = 20.0) -> list[str]:
    got: list[str] = []
    end = time.monotonic() + deadline_s
    while wanted not in got and time.monotonic() < end:
        got.append(sock.recv(4096).decode())
    return got


def test_path_and_abstract_addresses(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _receiver(path) as rx:
        n = SystemdNotifier(path)
        assert n.enabled and n.notify("READY=1")
        assert rx.recv(4096) == b"READY=1"
        n.close()
    name = f"cedge-test-{os.getpid()}-{time.monotonic_ns()}"
    with _receiver(b"\0" + name.encode()) as rx:
        n = SystemdNotifier("@" + name)
        assert n.notify("STATUS=hello")
        assert rx.recv(4096) == b"STATUS=hello"
        n.close()


def test_without_systemd_it_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = SystemdNotifier()
    assert not n.enabled and n.notify("READY=1") is False


def test_a_send_that_fails_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = SystemdNotifier(str(tmp_path / "nobody-listens"))
    assert n.notify("WATCHDOG=1") is False and n.notify("WATCHDOG=1") is False
    warnings = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert len(warnings) == 1 and "WATCHDOG" in warnings[0].getMessage()


def test_watchdog_interval_is_ours_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    # a child of the service inherits the variables but must not ping for it (sd_watchdog_enabled(3))
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({}) is None and watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None


def test_watchdog_sends_ready_then_pings_only_while_kicked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # WatchdogSec=0.4: ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with _receiver(path) as rx:
        wd = Watchdog(timeout_s=2.0, exit_on_hang=False)
        assert wd.under_systemd and wd.systemd_interval_s == pytest.approx(0.2)
        wd.start()
        try:
            assert rx.recv(4096) == b"READY=1"
            assert "WATCHDOG=1" in _messages_until(rx, "WATCHDOG=1")
            # the main loop stops kicking: once it is silent for longer than timeout_s the pings stop,
            # so systemd (not a free-running timer) decides the process is hung
            rx.settimeout(1.0)
            end = time.monotonic() + 30.0
            last_ping = time.monotonic()
            while time.monotonic() < end:
                try:
                    if rx.recv(4096) == b"WATCHDOG=1":
                        last_ping = time.monotonic()
                except TimeoutError:
                    if time.monotonic() - last_ping > 1.0 and wd.seconds_since_kick > wd.timeout_s:
                        break
            else:
                pytest.fail("watchdog kept pinging systemd although the main loop stopped kicking")
            assert wd.seconds_since_kick > wd.timeout_s
        finally:
            wd.stop()
