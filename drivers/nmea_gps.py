"""NMEA 0183 GNSS receiver over a serial port (USB-UART, RS-232, pseudo-terminal).

Why this shape: a GPS puck on a vehicle streams text sentences whether anyone listens or not, over
a link that drops bytes, glitches and occasionally vanishes (USB re-enumeration).  The pure
parsing layers live in :mod:`drivers.nmea_parse` (line splitter resynchronising on ``$``,
checksummed GGA/RMC parser, GGA+RMC fix assembler) and are re-exported here; this module adds the
one reader thread:

* :class:`NmeaGpsReceiver` - the HAL device: port life cycle, reader thread, health state
  (stale data -> DEGRADED, port lost -> FAILED and periodic reopen), counters.

Sentence layouts follow NMEA 0183 v4.11 as documented by receiver vendors (u-blox M8 Receiver
Description, UBX-13003221, sec. 31.2 "NMEA Messages").
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import replace
from typing import Any

import serial

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
from drivers.nmea_parse import (
    KNOT_M_S,
    MAX_LINE_BYTES,
    GgaReport,
    NmeaError,
    NmeaFixAssembler,
    NmeaLineSplitter,
    RmcReport,
    nmea_checksum,
    parse_sentence,
)

__all__ = [
    "KNOT_M_S",
    "MAX_LINE_BYTES",
    "GgaReport",
    "NmeaError",
    "NmeaFixAssembler",
    "NmeaGpsReceiver",
    "NmeaLineSplitter",
    "RmcReport",
    "nmea_checksum",
    "parse_sentence",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- logging helper
class _RateLimitedLog:
    """At most one log line per reason per ``interval_s``; the next one says how many were hidden.

    A receiver spewing garbage at 9600 baud would otherwise write thousands of lines a minute to
    the unit's journal and wear its SD card.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 30.0) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, level: int, reason: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        hidden = self._suppressed.pop(reason, 0)
        self._last[reason] = now
        if hidden:
            msg += f" ({hidden} similar messages suppressed)"
        self._log.log(level, msg, *args)


# --------------------------------------------------------------------------- the device
class NmeaGpsReceiver(GnssReceiver):
    """NMEA 0183 GNSS receiver on a serial port, pty or any pyserial URL (``loop://``, ``rfc2217://``).

    ``port`` may be a stable udev symlink (``/dev/gps0``): when the port vanishes (USB unplug) the
    reader thread closes it, reports FAILED and reopens the same path every ``reopen_interval_s``
    until the device is back.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        context: DeviceContext | None = None,
        name: str = "gps",
        stale_after_s: float = 3.0,
        reopen_interval_s: float = 1.0,
        exclusive: bool = True,
    ) -> None:
        super().__init__(name=name, context=context)
        if stale_after_s <= 0 or reopen_interval_s <= 0:
            raise ValueError("stale_after_s and reopen_interval_s must be > 0")
        self.port = port
        self.baudrate = int(baudrate)
        self.stale_after_s = float(stale_after_s)
        self.reopen_interval_s = float(reopen_interval_s)
        self.exclusive = exclusive
        self._serial: serial.SerialBase | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition(threading.RLock())  # re-entrant: state updates nest
        self._splitter = NmeaLineSplitter()
        self._assembler = NmeaFixAssembler()
        self._fix: GnssFix | None = None
        self._last_rx_mono_s: float | None = None  # last good sentence (any type)
        self._opened_mono_s = 0.0
        self._ratelog = _RateLimitedLog(log)
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "bytes_read", "sentences_ok", "sentences_ignored", "checksum_errors", "missing_checksum",
                "parse_errors", "non_ascii_lines", "fixes_valid", "fixes_invalid", "stale_events",
                "serial_errors", "reopen_attempts", "reopens",
            ),
            0,
        )

    # -- time
    def _now(self) -> float:
        clock = self.context.clock if self.context is not None else None
        return clock.monotonic_s() if clock is not None else time.monotonic()

    def _wall_s(self, clock_s: float) -> float:
        """Clock seconds -> wall seconds for waits (a simulation clock may run faster)."""
        clock = self.context.clock if self.context is not None else None
        rate = clock.rate if clock is not None else 1.0
        return clock_s / rate if rate > 0 else clock_s

    # -- public
    def stats(self) -> dict[str, Any]:
        """Counters since construction; cheap, safe from any thread."""
        with self._cond:
            out: dict[str, Any] = dict(self._counts)
            out["garbage_bytes"] = self._splitter.garbage_bytes
            out["truncated_sentences"] = self._splitter.truncated
            out["overlong_lines"] = self._splitter.overlong_lines
            last = self._last_rx_mono_s
        out["last_sentence_age_s"] = None if last is None else round(self._now() - last, 3)
        return out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            port=self.port,
            baudrate=self.baudrate,
            protocol="NMEA 0183 (GGA, RMC)",
            stale_after_s=self.stale_after_s,
            stats=self.stats(),
        )
        return info

    def read_fix(self, timeout_s: float) -> GnssFix:
        if self._state in (SensorState.NOT_OPENED, SensorState.CLOSED):
            raise DeviceError(f"gnss {self.name}: read_fix on a device that is {self._state.value}")
        deadline = time.monotonic() + self._wall_s(max(0.0, timeout_s))
        with self._cond:
            while self._fix is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceTimeout(
                        f"gnss {self.name}: no GGA/RMC fix from {self.port} within {timeout_s:g} s "
                        f"({self._counts['sentences_ok']} good sentences, "
                        f"{self._splitter.garbage_bytes} garbage bytes, state {self._state.value})"
                    )
                self._cond.wait(remaining)
            fix = self._fix
        now = self._now()
        if now - fix.t_mono_s > self.stale_after_s:
            # Newest fix too old: the receiver went quiet, or talks but sends no GGA/RMC any more.
            self._check_stale(now)
            return replace(
                fix, t_utc=None, t_mono_s=now, quality=FixQuality.INVALID, num_satellites=0, hdop=None,
                speed_m_s=None, course_deg=None,
            )
        return fix

    # -- life cycle hooks
    def _open(self) -> None:
        self._stop_thread()
        self._serial = self._open_port()
        self._splitter.reset()
        self._opened_mono_s = self._now()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"nmea-{self.name}", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        self._stop_thread()

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.error("gnss %s: reader thread did not stop within 5 s", self.name)
        self._thread = None
        self._close_port()

    def _open_port(self) -> serial.SerialBase:
        try:
            return serial.serial_for_url(
                self.port, baudrate=self.baudrate, timeout=0.2, exclusive=self.exclusive
            )
        except (serial.SerialException, OSError, ValueError) as err:
            raise DeviceUnavailable(f"gnss {self.name}: cannot open {self.port}: {err}") from err

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as err:  # a vanished port may fail to close
                log.debug("gnss %s: close of %s failed: %s", self.name, self.port, err)

    # -- reader thread
    def _run(self) -> None:
        while not self._stop.is_set():
            port = self._serial
            if port is None:
                self._try_reopen()
                continue
            try:
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as err:
                # TypeError/AttributeError: pyserial after its fd was closed under it
                if self._stop.is_set():
                    break
                self._on_port_lost(err)
                continue
            now = self._now()
            if data:
                self._process(data, now)
            self._check_stale(now)

    def _process(self, data: bytes, now: float) -> None:
        with self._cond:
            self._counts["bytes_read"] += len(data)
            lines = self._splitter.feed(data)
        for line in lines:
            try:
                report = parse_sentence(line)
            except NmeaError as err:
                with self._cond:
                    if err.kind == "missing_checksum":
                        self._counts["missing_checksum"] += 1
                        self._counts["checksum_errors"] += 1
                    elif err.kind == "checksum":
                        self._counts["checksum_errors"] += 1
                    elif err.kind == "non_ascii":
                        self._counts["non_ascii_lines"] += 1
                    else:
                        self._counts["parse_errors"] += 1
                self._ratelog(logging.WARNING, err.kind, "gnss %s: dropped sentence (%s): %s",
                              self.name, err.kind, err)
                continue
            with self._cond:
                self._counts["sentences_ok"] += 1
                self._last_rx_mono_s = now
                if report is None:
                    self._counts["sentences_ignored"] += 1
                    continue
                fix = self._assembler.update(report, now)
                self._fix = fix
                self._counts["fixes_valid" if fix.valid else "fixes_invalid"] += 1
                # state follows the fix atomically: a reader never sees an invalid fix with state OK
                self._update_state_from_fix(fix, report)
                self._cond.notify_all()

    def _update_state_from_fix(self, fix: GnssFix, report: GgaReport | RmcReport) -> None:
        with self._cond:  # state changes from the reader thread and read_fix() are serialised
            if self._stop.is_set() or self._state == SensorState.FAILED:
                return
            if fix.valid:
                self.set_state(SensorState.OK)
            elif self._state != SensorState.DEGRADED or not self._state_detail.startswith("no GNSS fix"):
                why = "GGA quality 0" if isinstance(report, GgaReport) else "RMC status V"
                self.set_state(SensorState.DEGRADED, f"no GNSS fix ({why})")

    def _check_stale(self, now: float) -> None:
        """DEGRADED when nothing (or nothing usable) arrived for ``stale_after_s``.

        Ages count from the later of the last arrival and the last (re)open, so a freshly opened
        port gets ``stale_after_s`` to deliver before it is called silent.
        """
        with self._cond:
            last_rx = self._last_rx_mono_s if self._last_rx_mono_s is not None else -math.inf
            last_fix = self._fix.t_mono_s if self._fix is not None else -math.inf
            opened = self._opened_mono_s
        silent_s = now - max(last_rx, opened)
        fixless_s = now - max(last_fix, opened)
        if silent_s > self.stale_after_s:
            self._mark_stale("no NMEA data", silent_s)
        elif fixless_s > self.stale_after_s:
            self._mark_stale("no GGA/RMC sentence", fixless_s)

    def _mark_stale(self, what: str, age_s: float) -> None:
        with self._cond:
            if self._stop.is_set() or self._state in (SensorState.FAILED, SensorState.CLOSED):
                return
            if self._state == SensorState.DEGRADED and self._state_detail.startswith(what):
                return  # already reported; the live age is in stats()["last_sentence_age_s"]
            self._counts["stale_events"] += 1
            self.set_state(SensorState.DEGRADED, f"{what} for {age_s:.1f} s")
        self._ratelog(logging.WARNING, "stale", "gnss %s: %s from %s for %.1f s",
                      self.name, what, self.port, age_s)

    def _on_port_lost(self, err: BaseException) -> None:
        with self._cond:
            self._counts["serial_errors"] += 1
        self._ratelog(logging.ERROR, "serial",
                      "gnss %s: serial port %s failed (%s: %s); reopening every %g s",
                      self.name, self.port, type(err).__name__, err, self.reopen_interval_s)
        self._close_port()
        self.set_state(SensorState.FAILED, f"serial port {self.port} lost: {err}")

    def _try_reopen(self) -> None:
        if self._stop.wait(self._wall_s(self.reopen_interval_s)):
            return
        with self._cond:
            self._counts["reopen_attempts"] += 1
        try:
            port = self._open_port()
        except DeviceUnavailable as err:
            self._ratelog(logging.WARNING, "reopen", "%s", err)
            return
        if self._stop.is_set():
            port.close()
            return
        self._serial = port
        self._splitter.reset()
        self._opened_mono_s = self._now()
        with self._cond:
            self._counts["reopens"] += 1
        log.info("gnss %s: reopened %s", self.name, self.port)
        self.set_state(SensorState.OK, f"port {self.port} reopened")
