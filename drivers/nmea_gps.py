"""NMEA 0183 GNSS receiver over a serial port (USB-UART, RS-232, pseudo-terminal).

Why this shape: a GPS puck on a vehicle streams text sentences whether anyone listens or not, over
a link that drops bytes, glitches and occasionally vanishes (USB re-enumeration).  The pure
parsing layers live in :mod:`drivers.nmea_parse` (line splitter resynchronising on ``$``,
checksummed GGA/RMC parser, GGA+RMC fix assembler) and are re-exported here; the port life cycle,
reader thread and reopen-with-back-off are :class:`drivers.serial_line_device.SerialLineDevice`'s.
This module adds:

* :class:`NmeaGpsReceiver` - the HAL device: sentences -> fixes, health state (stale data ->
  DEGRADED; port lost -> FAILED and periodic reopen, in the base class), counters.

Sentence layouts follow NMEA 0183 v4.11 as documented by receiver vendors (u-blox M8 Receiver
Description, UBX-13003221, sec. 31.2 "NMEA Messages").
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from typing import Any

from agent.hal.interfaces import (
    DeviceContext,
    DeviceError,
    DeviceTimeout,
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
from drivers.serial_line_device import SerialLineDevice

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


# --------------------------------------------------------------------------- the device
class NmeaGpsReceiver(SerialLineDevice, GnssReceiver):
    """NMEA 0183 GNSS receiver on a serial port, pty or any pyserial URL (``loop://``, ``rfc2217://``).

    ``port`` may be a stable udev symlink (``/dev/gps0``): when the port vanishes (USB unplug) the
    reader thread closes it, reports FAILED and reopens the same path every ``reopen_interval_s``
    until the device is back (:class:`drivers.serial_line_device.SerialLineDevice`).
    """

    thread_prefix = "nmea"
    read_timeout_s = 0.2

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
        super().__init__(
            port, baudrate, name=name, context=context, reopen_interval_s=reopen_interval_s,
            exclusive=exclusive, counters=(
                "bytes_read", "sentences_ok", "sentences_ignored", "checksum_errors", "missing_checksum",
                "parse_errors", "non_ascii_lines", "fixes_valid", "fixes_invalid", "stale_events",
                "serial_errors", "reopen_attempts", "reopens",
            ),
        )
        if stale_after_s <= 0 or reopen_interval_s <= 0:
            raise ValueError("stale_after_s and reopen_interval_s must be > 0")
        self.stale_after_s = float(stale_after_s)
        self._splitter = NmeaLineSplitter()
        self._assembler = NmeaFixAssembler()
        self._fix: GnssFix | None = None
        self._last_rx_mono_s: float | None = None  # last good sentence (any type)

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

    # -- SerialLineDevice hooks
    def _after_port_open(self) -> None:
        self._splitter.reset()
        super()._after_port_open()

    def _housekeeping(self, now: float) -> None:
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
