"""The gpsd client driver against a fake gpsd speaking gpsd's JSON protocol (gpsd_json(5)), and
against the real gpsd (Debian package ``gpsd``) reading the NMEA emulator's pseudo-terminal.

The fake server does what gpsd does on a connection: a ``VERSION`` banner, then on ``?WATCH=``
a ``DEVICES`` and a ``WATCH`` reply, then the reports a test pushes.  It can be stopped and
restarted on the same port, which is how a gpsd restart looks to a client.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from agent.hal.interfaces import DeviceContext, DeviceUnavailable, FixQuality, SensorState
from agent.hal.registry import create_device
from drivers.gpsd_client import GpsdReceiver, tpv_quality
from hal_sim.nmea_emulator import NmeaEmulator, stationary

VERSION = {"class": "VERSION", "release": "3.22", "rev": "3.22", "proto_major": 3, "proto_minor": 14}
DEVICES = {"class": "DEVICES", "devices": [{"class": "DEVICE", "path": "/dev/ttyUSB0", "driver": "NMEA0183",
                                            "activated": "2024-05-01T08:00:00.000Z", "flags": 1, "native": 0,
                                            "bps": 9600, "parity": "N", "stopbits": 1, "cycle": 1.00}]}
WATCH_REPLY = {"class": "WATCH", "enable": True, "json": True, "nmea": False, "raw": 0, "scaled": False,
               "timing": False, "split24": False, "pps": False}


def wait_for(pred: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def tpv(**fields: object) -> dict[str, object]:
    out: dict[str, object] = {"class": "TPV", "device": "/dev/ttyUSB0"}
    out.update(fields)
    return out


class FakeGpsd:
    """A gpsd stand-in on 127.0.0.1: banner, WATCH handshake, then whatever :meth:`send` is given."""

    def __init__(self, port: int = 0) -> None:
        self._listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.port = self._listener.getsockname()[1]
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self.commands: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="fake-gpsd", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.sendall((json.dumps(VERSION) + "\r\n").encode())
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        buf = b""
        try:
            while b"\n" not in buf:
                chunk = conn.recv(1024)
                if not chunk:
                    return
                buf += chunk
        except OSError:
            return
        command = buf.split(b"\n", 1)[0].decode().strip()
        with self._lock:
            self.commands.append(command)
        if command.startswith("?WATCH="):
            json.loads(command[len("?WATCH="):].rstrip(";"))  # a client must send valid JSON
            conn.sendall((json.dumps(DEVICES) + "\r\n" + json.dumps(WATCH_REPLY) + "\r\n").encode())
            with self._lock:
                self._clients.append(conn)

    @property
    def watchers(self) -> int:
        with self._lock:
            return len(self._clients)

    def send(self, *reports: dict[str, object] | bytes) -> None:
        data = b"".join(r if isinstance(r, bytes) else (json.dumps(r) + "\r\n").encode() for r in reports)
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            with contextlib.suppress(OSError):
                c.sendall(data)

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            c.close()
        self._thread.join(timeout=2.0)


@pytest.fixture
def server() -> Iterator[FakeGpsd]:
    srv = FakeGpsd()
    yield srv
    srv.stop()


@pytest.fixture
def gps(server: FakeGpsd) -> Iterator[GpsdReceiver]:
    dev = GpsdReceiver(port=server.port, stale_after_s=30.0, reconnect_min_s=0.05, reconnect_max_s=0.4)
    with dev:
        wait_for(lambda: server.watchers == 1, "the WATCH handshake")
        yield dev


def test_tpv_reports_become_fixes(server: FakeGpsd, gps: GpsdReceiver) -> None:
    assert server.commands == ['?WATCH={"enable":true,"json":true}']
    server.send({"class": "SKY", "device": "/dev/ttyUSB0", "hdop": 0.8, "satellites": [
        {"PRN": 5, "el": 40.0, "az": 80.0, "ss": 41.0, "used": True},
        {"PRN": 7, "el": 10.0, "az": 200.0, "ss": 20.0, "used": False},
        {"PRN": 9, "el": 60.0, "az": 300.0, "ss": 45.0, "used": True}]})
    server.send(tpv(status=2, mode=3, time="2024-05-01T08:00:01.250Z", ept=0.005, lat=51.9225, lon=4.4792,
                    altHAE=45.1, altMSL=-2.5, alt=-2.5, epx=3.1, epy=4.2, eph=6.0, track=87.5, speed=12.25))
    wait_for(lambda: gps.stats()["tpv"] == 1, "the TPV")
    fix = gps.read_fix(1.0)
    assert fix.valid and fix.quality == FixQuality.DGPS
    assert fix.t_utc == datetime(2024, 5, 1, 8, 0, 1, 250000, tzinfo=UTC)
    assert (fix.lat_deg, fix.lon_deg, fix.alt_m) == (51.9225, 4.4792, -2.5)
    assert (fix.speed_m_s, fix.course_deg, fix.num_satellites, fix.hdop) == (12.25, 87.5, 2, 0.8)
    stats = gps.stats()
    assert stats["horizontal_error_m"] == 6.0 and stats["gpsd_release"] == "3.22"
    assert gps.state == SensorState.OK
    assert gps.describe()["protocol"].startswith("gpsd JSON")


@pytest.mark.parametrize(
    "report,quality,why",
    [
        ({"mode": 1, "time": "2024-05-01T08:00:02.000Z"}, FixQuality.INVALID, "no fix"),
        ({"mode": 3, "status": 8, "lat": 40.39, "lon": -3.65}, FixQuality.SIMULATION, "simulator"),
        ({"mode": 2, "status": 5, "lat": 40.39, "lon": -3.65}, FixQuality.ESTIMATED, "dead reckoning"),
        ({"mode": 3}, FixQuality.INVALID, "no fix"),  # mode 3 without a position
    ],
)
def test_no_fix_simulator_and_dead_reckoning_are_not_fixes(server: FakeGpsd, gps: GpsdReceiver,
                                                           report: dict[str, object], quality: FixQuality,
                                                           why: str) -> None:
    server.send(tpv(**report))
    wait_for(lambda: gps.stats()["tpv"] == 1, "the TPV")
    fix = gps.read_fix(1.0)
    assert not fix.valid and fix.quality == quality and fix.speed_m_s is None
    assert gps.state == SensorState.DEGRADED and why in gps.state_detail


def test_tpv_quality_table() -> None:
    assert [tpv_quality({"mode": m, **({"status": s} if s is not None else {})}) for m, s in
            [(3, None), (2, 2), (3, 3), (3, 4), (3, 6), (3, 9), (3, 7), (0, None), (3, 42)]] == [
        FixQuality.GPS, FixQuality.DGPS, FixQuality.RTK, FixQuality.FLOAT_RTK, FixQuality.GPS, FixQuality.PPS,
        FixQuality.MANUAL, FixQuality.INVALID, FixQuality.INVALID]


def test_bad_reports_are_counted_and_the_stream_goes_on(server: FakeGpsd, gps: GpsdReceiver) -> None:
    server.send(b"not json at all\r\n", b"[1, 2, 3]\r\n", b'{"class":"TPV","mode":3,"lat":999,"lon":4}\r\n',
                b'{"class":"TPV","mode":3,"lat":51.0,"lon":4.0,"speed":"fast"}\r\n',
                b'{"class":"TPV","mode":3,"lat":NaN,"lon":4.0}\r\n',
                b'{"class":"' + b"X" * 20000 + b'"}\r\n',  # longer than any gpsd report
                b'{"class":"ERROR","message":"Unrecognized request"}\r\n',
                b'{"class":"PPS","device":"/dev/ttyUSB0","real_sec":1}\r\n')
    server.send(tpv(mode=2, lat=51.5, lon=4.25, time="2024-05-01T08:00:03.000Z"))
    wait_for(lambda: gps.stats()["tpv"] == 1, "the good TPV after the bad lines")
    stats = gps.stats()
    assert stats["rejected"] == {"bad_json": 1, "not_an_object": 1, "bad_tpv": 3, "overlong": 1}  # NaN: bad_tpv
    assert stats["gpsd_errors"] == 1
    fix = gps.read_fix(1.0)
    assert fix.valid and (fix.lat_deg, fix.lon_deg) == (51.5, 4.25) and fix.alt_m == 0.0


def test_gpsd_restart_is_survived_with_back_off(server: FakeGpsd) -> None:
    port = server.port
    with GpsdReceiver(port=port, stale_after_s=30.0, reconnect_min_s=0.05, reconnect_max_s=0.4) as dev:
        assert isinstance(dev, GpsdReceiver)
        wait_for(lambda: server.watchers == 1, "the first WATCH")
        server.send(tpv(mode=3, lat=52.0, lon=5.0, time="2024-05-01T08:00:04.000Z"))
        wait_for(lambda: dev.stats()["tpv"] == 1, "a fix before the restart")
        server.stop()  # gpsd goes away (upgrade, crash)
        wait_for(lambda: dev.state == SensorState.FAILED, "FAILED while gpsd is down")
        assert "lost" in dev.state_detail
        wait_for(lambda: dev.stats()["connect_failures"] >= 3, "reconnect attempts while down")
        again = FakeGpsd(port)  # gpsd is back on its port
        try:
            wait_for(lambda: again.watchers == 1, "the WATCH after the restart")
            again.send(tpv(mode=3, lat=52.1, lon=5.1, time="2024-05-01T08:00:09.000Z"))
            wait_for(lambda: dev.state == SensorState.OK and dev.read_fix(1.0).lat_deg == 52.1, "fixes again")
            stats = dev.stats()
            assert stats["connects"] >= 2 and stats["disconnects"] == stats["connects"] - 1
        finally:
            again.stop()


def test_device_filter_and_staleness(server: FakeGpsd) -> None:
    with GpsdReceiver(port=server.port, device="/dev/gps1", stale_after_s=0.3) as dev:
        assert isinstance(dev, GpsdReceiver)
        wait_for(lambda: server.watchers == 1, "the WATCH")
        assert server.commands == ['?WATCH={"enable":true,"json":true,"device":"/dev/gps1"}']
        server.send(tpv(mode=3, lat=1.0, lon=2.0), {**tpv(mode=3, lat=3.0, lon=4.0), "device": "/dev/gps1"})
        wait_for(lambda: dev.stats()["tpv"] == 1, "the TPV of the chosen device")
        assert dev.stats()["other_device"] == 1 and dev.read_fix(1.0).lat_deg == 3.0
        wait_for(lambda: dev.state == SensorState.DEGRADED, "DEGRADED when TPVs stop")
        assert "no TPV" in dev.state_detail and not dev.read_fix(0.1).valid


def test_unreachable_gpsd_fails_at_open_and_registry_builds_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    dev = create_device("gnss", "gpsd", {"host": "127.0.0.1", "port": free, "connect_timeout_s": 1.0},
                        DeviceContext(unit_id="veh-01"))
    assert isinstance(dev, GpsdReceiver)
    with pytest.raises(DeviceUnavailable, match="cannot reach gpsd"):
        dev.open()
    assert dev.state == SensorState.FAILED
    with pytest.raises(ValueError):
        GpsdReceiver(port=70000)


@pytest.mark.skipif(shutil.which("gpsd") is None, reason="gpsd not installed (apt-get install gpsd)")
def test_real_gpsd_reading_the_emulator_pty() -> None:
    """The real gpsd decodes the NMEA emulator's pty; the driver's fixes are the emulated truth;
    killing and restarting gpsd is survived."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def start_gpsd(path: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["gpsd", "-N", "-n", "-b", "-S", str(port), path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    with NmeaEmulator(stationary(lat_deg=-33.8688197, lon_deg=151.2092955, alt_m=58.0), rate_hz=5.0) as emu:
        proc = start_gpsd(emu.port)
        try:
            wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, "gpsd listening", 20.0)
            with GpsdReceiver(port=port, stale_after_s=30.0, reconnect_min_s=0.1, reconnect_max_s=0.5) as dev:
                assert isinstance(dev, GpsdReceiver)
                wait_for(lambda: dev.stats()["fixes_valid"] >= 3, "fixes through the real gpsd", 20.0)
                fix = dev.read_fix(1.0)
                assert fix.t_utc is not None
                truth = emu.truth_at(fix.t_utc)
                assert truth is not None
                assert abs(fix.lat_deg - truth.lat_deg) < 1e-6 and abs(fix.lon_deg - truth.lon_deg) < 1e-6
                assert fix.alt_m == pytest.approx(truth.alt_m, abs=0.05) and fix.quality == FixQuality.GPS
                assert dev.stats()["gpsd_release"]  # the VERSION banner was read
                proc.terminate()
                proc.wait(timeout=10)
                wait_for(lambda: dev.state == SensorState.FAILED, "FAILED after gpsd stopped")
                proc = start_gpsd(emu.port)
                before = dev.stats()["fixes_valid"]
                wait_for(lambda: dev.stats()["fixes_valid"] > before and dev.state == SensorState.OK,
                         "fixes after gpsd restarted", 30.0)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
