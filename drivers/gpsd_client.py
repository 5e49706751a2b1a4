"""GNSS from a local gpsd: its JSON protocol over TCP (gpsd_json(5)), as a HAL receiver.

Why: many Linux units already run gpsd (shared with chrony/ntpsec for time, with a map display),
and then the serial port is gpsd's - a second reader would steal bytes.  gpsd also speaks every
binary receiver protocol (UBX, SiRF, TSIP ...) the NMEA driver does not.  This driver is a gpsd
client like ``gpspipe -w``:

* connect to ``host:port`` (default 127.0.0.1:2947), read gpsd's ``VERSION`` banner, send
  ``?WATCH={"enable":true,"json":true}`` (plus ``"device"`` when one device of several is
  wanted); gpsd then streams one JSON object per line: ``TPV`` (time-position-velocity), ``SKY``
  (satellites, DOPs), ``DEVICES``, ``WATCH``, ``ERROR`` ...
* TPV -> :class:`~agent.hal.interfaces.GnssFix`: ``mode`` 2/3 is a fix, 0/1 none; ``status``
  (gpsd sends it from 2 up) gives DGPS/RTK and the modes that are not fixes - 5 dead reckoning,
  7 time only (surveyed position), 8 simulator.  ``altMSL`` (or ``alt`` from older gpsd) is the
  altitude, ``speed`` m/s, ``track`` degrees true; the satellites used and HDOP come from the
  newest SKY.  The horizontal error estimate (``eph``, else the larger of ``epx``/``epy``, in
  metres at 95 %) is kept in :meth:`GpsdReceiver.stats`.
* gpsd restarts (package upgrade, USB replug handled by gpsd's hotplug) close the socket: the
  reader marks the device FAILED and reconnects with exponential back-off (``reconnect_min_s``
  doubling to ``reconnect_max_s``), back to OK on the first report.
* Nothing gpsd sends is trusted blindly: lines are bounded (``max_line_bytes``; gpsd's own
  reports stay below 10 kB), JSON that does not parse, reports with non-finite or out-of-range
  numbers are counted per reason and dropped, never raised out of the reader thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from agent.hal.interfaces import (
    DeviceContext,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    FixQuality,
    GnssFix,
    GnssReceiver,
    SensorState,
)
from drivers.serial_line_device import RateLimitedLog

__all__ = ["DEFAULT_PORT", "GpsdReceiver", "tpv_quality"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 2947  # IANA-assigned gpsd port
MAX_LINE_BYTES = 16384
WATCH_TEMPLATE = '?WATCH={"enable":true,"json":true%s}\n'

# gpsd TPV "status" (gps.h STATUS_*) -> fix quality; absent with mode 2/3 means a plain GPS fix.
_STATUS_QUALITY = {
    0: FixQuality.INVALID,
    1: FixQuality.GPS,
    2: FixQuality.DGPS,
    3: FixQuality.RTK,
    4: FixQuality.FLOAT_RTK,
    5: FixQuality.ESTIMATED,  # dead reckoning only
    6: FixQuality.GPS,  # GNSS + dead reckoning: a GNSS fix, aided
    7: FixQuality.MANUAL,  # time only: surveyed-in / fixed position, not measured now
    8: FixQuality.SIMULATION,
    9: FixQuality.PPS,
}


def tpv_quality(tpv: dict[str, Any]) -> FixQuality:
    """gpsd TPV ``mode`` + ``status`` -> :class:`FixQuality` (INVALID without a 2D/3D fix)."""
    mode = tpv.get("mode")
    if not isinstance(mode, int) or mode < 2:
        return FixQuality.INVALID
    status = tpv.get("status", 1)
    return _STATUS_QUALITY.get(status, FixQuality.INVALID) if isinstance(status, int) else FixQuality.INVALID


def _number(obj: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    """A finite number in [lo, hi], None when absent; ValueError when present but not one."""
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{key}={v!r}")
    return float(v)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo is not None else t.replace(tzinfo=UTC)


class GpsdReceiver(GnssReceiver):
    """A gpsd client that turns TPV reports into fixes.  See the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        context: DeviceContext | None = None,
        name: str = "gps",
        device: str | None = None,
        stale_after_s: float = 3.0,
        connect_timeout_s: float = 3.0,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        super().__init__(name=name, context=context)
        if not 0 < int(port) < 65536:
            raise ValueError(f"port {port} is not a TCP port")
        if min(stale_after_s, connect_timeout_s, reconnect_min_s) <= 0 or reconnect_max_s < reconnect_min_s:
            raise ValueError("timeouts must be > 0 and reconnect_max_s >= reconnect_min_s")
        if max_line_bytes < 1024:
            raise ValueError("max_line_bytes must be >= 1024 (gpsd reports are up to ~10 kB)")
        self.host = host
        self.port = int(port)
        self.device = device
        self.stale_after_s = float(stale_after_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.reconnect_min_s = float(reconnect_min_s)
        self.reconnect_max_s = float(reconnect_max_s)
        self.max_line_bytes = int(max_line_bytes)
        self._cond = threading.Condition(threading.RLock())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._fix: GnssFix | None = None
        self._sky: tuple[int, float | None] | None = None  # satellites used, hdop
        self._lat = math.nan
        self._lon = math.nan
        self._alt = 0.0  # until gpsd gives one (see drivers.nmea_epoch for why 0, not NaN)
        self._error_m: float | None = None
        self._gpsd_release: str | None = None
        self._connected_mono_s = 0.0
        self._last_tpv_mono_s: float | None = None
        self._ratelog = RateLimitedLog(log, 30.0)
        self._counts: dict[str, Any] = {
            "connects": 0, "connect_failures": 0, "disconnects": 0, "lines": 0, "tpv": 0, "sky": 0,
            "fixes_valid": 0, "fixes_invalid": 0, "other_device": 0, "gpsd_errors": 0, "stale_events": 0,
            "rejected": {},
        }

    # -- public
    def stats(self) -> dict[str, Any]:
        with self._cond:
            out = dict(self._counts)
            out["rejected"] = dict(self._counts["rejected"])
            out["gpsd_release"] = self._gpsd_release
            out["horizontal_error_m"] = self._error_m
            last = self._last_tpv_mono_s
        out["last_tpv_age_s"] = None if last is None else round(self._now() - last, 3)
        return out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(host=self.host, port=self.port, device=self.device, protocol="gpsd JSON (gpsd_json(5))",
                    stale_after_s=self.stale_after_s, stats=self.stats())
        return info

    def read_fix(self, timeout_s: float) -> GnssFix:
        if self._state in (SensorState.NOT_OPENED, SensorState.CLOSED):
            raise DeviceError(f"gnss {self.name}: read_fix on a device that is {self._state.value}")
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while self._fix is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceTimeout(
                        f"gnss {self.name}: no TPV from gpsd at {self.host}:{self.port} within {timeout_s:g} s "
                        f"(state {self._state.value}: {self._state_detail})"
                    )
                self._cond.wait(remaining)
            fix = self._fix
        now = self._now()
        if now - fix.t_mono_s > self.stale_after_s:
            self._check_stale(now)
            return replace(fix, t_utc=None, t_mono_s=now, quality=FixQuality.INVALID, num_satellites=0,
                           hdop=None, speed_m_s=None, course_deg=None)
        return fix

    # -- life cycle
    def _open(self) -> None:
        """Connect once synchronously so a wrong address fails loudly at start; later losses
        are the reader thread's to repair."""
        self._stop.clear()
        try:
            self._connect()
        except OSError as err:
            raise DeviceUnavailable(f"gnss {self.name}: cannot reach gpsd at {self.host}:{self.port}: {err}") from err
        self._thread = threading.Thread(target=self._run, name=f"gpsd-{self.name}", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        self._stop.set()
        self._drop_socket()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None

    # -- connection
    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        sock.settimeout(0.5)  # reader wakes up for staleness checks and stop requests
        extra = "" if self.device is None else ',"device":' + json.dumps(self.device)
        sock.sendall((WATCH_TEMPLATE % extra).encode("ascii"))
        with self._cond:
            self._sock = sock
            self._counts["connects"] += 1
            self._connected_mono_s = self._now()

    def _drop_socket(self) -> None:
        with self._cond:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv
            with contextlib.suppress(OSError):
                sock.close()

    def _run(self) -> None:
        backoff = self.reconnect_min_s
        while not self._stop.is_set():
            sock = self._sock
            if sock is None:
                if self._stop.wait(backoff):
                    break
                try:
                    self._connect()
                except OSError as err:
                    with self._cond:
                        self._counts["connect_failures"] += 1
                    backoff = min(backoff * 2.0, self.reconnect_max_s)
                    self._ratelog(logging.WARNING, "connect", "gnss %s: gpsd at %s:%d unreachable (%s); retrying, "
                                  "next in %.1f s", self.name, self.host, self.port, err, backoff)
                    continue
                log.info("gnss %s: reconnected to gpsd at %s:%d", self.name, self.host, self.port)
                self.set_state(SensorState.DEGRADED, "reconnected to gpsd, no TPV yet")
                backoff = self.reconnect_min_s
                continue
            try:
                self._read_lines(sock)
            except OSError as err:
                if self._stop.is_set():
                    break
                self._lost(f"{type(err).__name__}: {err}")
            self._check_stale(self._now())

    def _lost(self, why: str) -> None:
        self._drop_socket()
        with self._cond:
            self._counts["disconnects"] += 1
        self._ratelog(logging.WARNING, "lost", "gnss %s: connection to gpsd at %s:%d lost (%s); reconnecting",
                      self.name, self.host, self.port, why)
        self.set_state(SensorState.FAILED, f"gpsd at {self.host}:{self.port} lost: {why}")

    def _read_lines(self, sock: socket.socket) -> None:
        """Read until the socket times out (then return for housekeeping) or closes (raise)."""
        buf = bytearray()
        discarding = False
        while not self._stop.is_set():
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                self._check_stale(self._now())
                continue
            if not chunk:
                raise ConnectionResetError("gpsd closed the connection")
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > self.max_line_bytes:
                        self._reject("overlong")
                        buf.clear()
                        discarding = True
                    break
                line = bytes(buf[:nl])
                del buf[: nl + 1]
                if discarding:  # the tail of an overlong line
                    discarding = False
                    continue
                if len(line) > self.max_line_bytes:
                    self._reject("overlong")
                    continue
                self._handle_line(line)
            self._check_stale(self._now())

    # -- reports
    def _reject(self, reason: str) -> None:
        with self._cond:
            rej = self._counts["rejected"]
            rej[reason] = rej.get(reason, 0) + 1
        self._ratelog(logging.WARNING, reason, "gnss %s: dropped a gpsd report (%s)", self.name, reason)

    def _handle_line(self, line: bytes) -> None:
        with self._cond:
            self._counts["lines"] += 1
        text = line.strip()
        if not text:
            return
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            self._reject("bad_json")
            return
        if not isinstance(obj, dict):
            self._reject("not_an_object")
            return
        cls = obj.get("class")
        if cls == "TPV":
            self._on_tpv(obj)
        elif cls == "SKY":
            self._on_sky(obj)
        elif cls == "VERSION":
            with self._cond:
                self._gpsd_release = str(obj.get("release", ""))[:40] or None
        elif cls == "ERROR":
            with self._cond:
                self._counts["gpsd_errors"] += 1
            self._ratelog(logging.WARNING, "gpsd_error", "gnss %s: gpsd says: %s", self.name,
                          str(obj.get("message", ""))[:200])
        # DEVICES, WATCH, DEVICE, PPS, TOFF, ... : nothing a fix needs

    def _wrong_device(self, obj: dict[str, Any]) -> bool:
        if self.device is None or obj.get("device") in (None, self.device):
            return False
        with self._cond:
            self._counts["other_device"] += 1
        return True

    def _on_sky(self, obj: dict[str, Any]) -> None:
        if self._wrong_device(obj):
            return
        used = obj.get("uSat")
        sats = obj.get("satellites")
        if not isinstance(used, int) and isinstance(sats, list):
            used = sum(1 for s in sats[:512] if isinstance(s, dict) and s.get("used") is True)
        try:
            hdop = _number(obj, "hdop", 0.0, 1e4)
        except ValueError:
            self._reject("bad_sky")
            return
        with self._cond:
            self._counts["sky"] += 1
            self._sky = (used if isinstance(used, int) and 0 <= used < 1000 else 0, hdop)

    def _on_tpv(self, obj: dict[str, Any]) -> None:
        if self._wrong_device(obj):
            return
        quality = tpv_quality(obj)
        try:
            lat = _number(obj, "lat", -90.0, 90.0)
            lon = _number(obj, "lon", -180.0, 180.0)
            alt = _number(obj, "altMSL", -1e5, 1e6)
            if alt is None:
                alt = _number(obj, "alt", -1e5, 1e6)  # gpsd before 3.20: alt is MSL
            speed = _number(obj, "speed", 0.0, 1e5)
            track = _number(obj, "track", -360.0, 720.0)
            errs = [e for e in (_number(obj, k, 0.0, 1e7) for k in ("eph", "epx", "epy")) if e is not None]
        except ValueError as err:
            self._reject("bad_tpv")
            log.debug("gnss %s: TPV with %s", self.name, err)
            return
        if quality != FixQuality.INVALID and (lat is None or lon is None):
            quality = FixQuality.INVALID  # a fix without a position is not a fix
        now = self._now()
        with self._cond:
            self._counts["tpv"] += 1
            self._last_tpv_mono_s = now
            if lat is not None and lon is not None and quality != FixQuality.INVALID:
                self._lat, self._lon = lat, lon
            if alt is not None and quality != FixQuality.INVALID:
                self._alt = alt
            if errs:
                self._error_m = obj["eph"] if isinstance(obj.get("eph"), int | float) else max(errs)
            sats, hdop = self._sky if self._sky is not None else (0, None)
            fix = GnssFix(
                t_utc=_parse_time(obj.get("time")),
                t_mono_s=now,
                lat_deg=self._lat,
                lon_deg=self._lon,
                alt_m=self._alt,
                quality=quality,
                num_satellites=sats,
                hdop=hdop if quality != FixQuality.INVALID else None,
                speed_m_s=speed if quality != FixQuality.INVALID else None,
                course_deg=None if track is None or quality == FixQuality.INVALID else track % 360.0,
            )
            self._fix = fix
            self._counts["fixes_valid" if fix.valid else "fixes_invalid"] += 1
            if not self._stop.is_set():
                if fix.valid:
                    self.set_state(SensorState.OK)
                else:
                    why = {FixQuality.SIMULATION: "simulator", FixQuality.ESTIMATED: "dead reckoning",
                           FixQuality.MANUAL: "time only"}.get(fix.quality, "no fix")
                    detail = f"no GNSS fix ({why}, gpsd mode {obj.get('mode')})"
                    if self._state != SensorState.DEGRADED or self._state_detail != detail:
                        self.set_state(SensorState.DEGRADED, detail)
            self._cond.notify_all()

    # -- health
    def _now(self) -> float:
        clock = self.context.clock if self.context is not None else None
        return clock.monotonic_s() if clock is not None else time.monotonic()

    def _check_stale(self, now: float) -> None:
        with self._cond:
            if self._stop.is_set() or self._sock is None or self._state in (SensorState.FAILED, SensorState.CLOSED):
                return
            last = self._last_tpv_mono_s if self._last_tpv_mono_s is not None else -math.inf
            age = now - max(last, self._connected_mono_s)
            if age <= self.stale_after_s:
                return
            detail = "no TPV from gpsd"
            if self._state == SensorState.DEGRADED and self._state_detail.startswith(detail):
                return  # already reported; the live age is in stats()["last_tpv_age_s"]
            self._counts["stale_events"] += 1
            self.set_state(SensorState.DEGRADED, f"{detail} for {age:.1f} s")
