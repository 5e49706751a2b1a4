"""NMEA 0183 GNSS receiver over a serial port (USB-UART, RS-232, pseudo-terminal).

Why this shape: a GPS puck on a vehicle streams text sentences whether anyone listens or not, over
a link that drops bytes, glitches and occasionally vanishes (USB re-enumeration).  The pure layers
are separate modules, re-exported here: :mod:`drivers.nmea_parse` (line splitter resynchronising
on ``$``, counting decoder), :mod:`drivers.nmea_sentences` (GGA, RMC, GNS, GLL, ZDA from any
talker), :mod:`drivers.nmea_epoch` (one fix per epoch, merged the way gpsd does) and
:mod:`drivers.gps_week_rollover`.  The port life cycle, reader thread and reopen-with-back-off are
:class:`drivers.serial_line_device.SerialLineDevice`'s.  This module adds:

* :class:`NmeaGpsReceiver` - the HAL device: bytes -> sentences -> epochs -> fixes, health state
  (stale data or no fix -> DEGRADED, saying why: no fix, simulator, estimated; port lost ->
  FAILED and periodic reopen, in the base class), counters for every line not used.

Error behaviour: a bad line never raises out of the reader thread; it is counted under its reason
(``stats()["rejected_lines"]``) and logged at most every 30 s per reason.  Proprietary and
unknown sentences are normal traffic: counted (``stats()["ignored_sentences"]``), never logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime
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
from drivers.gps_week_rollover import WeekRolloverGuard
from drivers.nmea_epoch import NmeaEpochAssembler
from drivers.nmea_parse import (
    KNOT_M_S,
    MAX_LINE_BYTES,
    REJECT_REASONS,
    GgaReport,
    GllReport,
    GnsReport,
    Ignored,
    NmeaDecoder,
    NmeaError,
    NmeaLineSplitter,
    NmeaReport,
    RmcReport,
    ZdaReport,
    nmea_checksum,
    parse_line,
    parse_sentence,
)
from drivers.serial_line_device import SerialLineDevice

__all__ = [
    "KNOT_M_S",
    "MAX_LINE_BYTES",
    "REJECT_REASONS",
    "GgaReport",
    "GllReport",
    "GnsReport",
    "Ignored",
    "NmeaDecoder",
    "NmeaEpochAssembler",
    "NmeaError",
    "NmeaGpsReceiver",
    "NmeaLineSplitter",
    "NmeaReport",
    "RmcReport",
    "WeekRolloverGuard",
    "ZdaReport",
    "nmea_checksum",
    "parse_line",
    "parse_sentence",
]

log = logging.getLogger(__name__)


# what a not-valid fix quality means, for the state detail
_WHY_NO_FIX = {
    FixQuality.INVALID: "no fix",
    FixQuality.ESTIMATED: "estimated (dead reckoning) mode",
    FixQuality.MANUAL: "manual input mode",
    FixQuality.SIMULATION: "simulator mode",
}
# reject reason -> the legacy counter it also increments
_REJECT_COUNTER = {"checksum": "checksum_errors", "missing_checksum": "checksum_errors",
                   "non_ascii": "non_ascii_lines"}


# --------------------------------------------------------------------------- the device
class NmeaGpsReceiver(SerialLineDevice, GnssReceiver):
    """NMEA 0183 GNSS receiver on a serial port, pty or any pyserial URL (``loop://``, ``rfc2217://``).

    ``port`` may be a stable udev symlink (``/dev/gps0``): when the port vanishes (USB unplug) the
    reader thread closes it, reports FAILED and reopens the same path every ``reopen_interval_s``
    until the device is back (:class:`drivers.serial_line_device.SerialLineDevice`).

    ``build_date`` (ISO date, optional) is the earliest date live data can have: receiver dates
    before it, or more than 1024 weeks minus a year before the system clock, are GPS week
    rollovers and are moved forward (:class:`drivers.gps_week_rollover.WeekRolloverGuard`).
    ``epoch_flush_s``: an epoch whose sentences stopped coming this long ago is reported even
    before its end is recognised (first epoch after start, receivers with irregular cycles).
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
        build_date: str | date | None = None,
        epoch_flush_s: float = 0.5,
    ) -> None:
        super().__init__(
            port, baudrate, name=name, context=context, reopen_interval_s=reopen_interval_s,
            exclusive=exclusive, counters=(
                "bytes_read", "sentences_ok", "sentences_ignored", "checksum_errors", "missing_checksum",
                "parse_errors", "non_ascii_lines", "fixes_valid", "fixes_invalid", "stale_events",
                "serial_errors", "reopen_attempts", "reopens",
            ),
        )
        if stale_after_s <= 0 or reopen_interval_s <= 0 or epoch_flush_s <= 0:
            raise ValueError("stale_after_s, reopen_interval_s and epoch_flush_s must be > 0")
        if isinstance(build_date, str):
            try:
                build_date = date.fromisoformat(build_date)
            except ValueError as err:
                raise ValueError(f"build_date {build_date!r} is not an ISO date (YYYY-MM-DD)") from err
        self.stale_after_s = float(stale_after_s)
        self.epoch_flush_s = float(epoch_flush_s)
        self._splitter = NmeaLineSplitter()
        self._decoder = NmeaDecoder()
        self._rollover = WeekRolloverGuard(build_date, clock=self._utc_now)
        self._assembler = NmeaEpochAssembler(self._rollover)
        self._fix: GnssFix | None = None
        self._last_rx_mono_s: float | None = None  # last good sentence (any type)
        self._last_report_mono_s = 0.0  # last sentence that went into an epoch
        self._listeners: list[Callable[[GnssFix], None]] = []

    # -- public
    def add_fix_listener(self, callback: Callable[[GnssFix], None]) -> None:
        """Call ``callback(fix)`` from the reader thread for every fix, in order (replay, logging).

        ``read_fix`` only returns the newest fix; a listener sees each epoch's fix.  It must be
        quick and must not raise (an exception is logged and the listener kept).
        """
        with self._cond:
            self._listeners.append(callback)

    def stats(self) -> dict[str, Any]:
        """Counters since construction; cheap, safe from any thread."""
        with self._cond:
            out: dict[str, Any] = dict(self._counts)
            out["garbage_bytes"] = self._splitter.garbage_bytes
            out["truncated_sentences"] = self._splitter.truncated
            out["overlong_lines"] = self._splitter.overlong_lines
            dec = self._decoder.counts()
            out["rejected_lines"] = dec["rejected_lines"]
            out["ignored_sentences"] = dec["ignored_sentences"]
            out["field_errors"] = dec["field_errors"]
            out["unchecked_sentences"] = dec["unchecked_sentences"]
            out["epochs"] = self._assembler.epochs
            out["epoch_pending"] = self._assembler.pending
            out["cycle_enders"] = sorted(self._assembler.cycle_enders)
            out["rollover_corrections"] = self._rollover.corrections
            last = self._last_rx_mono_s
        out["last_sentence_age_s"] = None if last is None else round(self._now() - last, 3)
        return out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            port=self.port,
            baudrate=self.baudrate,
            protocol="NMEA 0183 (GGA, RMC, GNS, GLL, ZDA; epochs merged)",
            stale_after_s=self.stale_after_s,
            build_date=None if self._rollover.build_date is None else self._rollover.build_date.isoformat(),
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
                        f"gnss {self.name}: no fix from {self.port} within {timeout_s:g} s "
                        f"({self._counts['sentences_ok']} good sentences, "
                        f"{self._splitter.garbage_bytes} garbage bytes, state {self._state.value})"
                    )
                self._cond.wait(remaining)
            fix = self._fix
        now = self._now()
        if now - fix.t_mono_s > self.stale_after_s:
            # Newest fix too old: the receiver went quiet, or talks but sends no usable sentence.
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
        with self._cond:
            if self._assembler.pending and now - self._last_report_mono_s > self.epoch_flush_s:
                fix = self._assembler.flush(now)
                if fix is not None:
                    self._publish(fix)
        self._check_stale(now)

    def _process(self, data: bytes, now: float) -> None:
        with self._cond:
            self._counts["bytes_read"] += len(data)
            lines = self._splitter.feed(data)
        for line in lines:
            with self._cond:
                report, err = self._decoder.classify(line)
                if err is not None:
                    self._counts[_REJECT_COUNTER.get(err.kind, "parse_errors")] += 1
                    if err.kind == "missing_checksum":
                        self._counts["missing_checksum"] += 1
                else:
                    self._counts["sentences_ok"] += 1
                    self._last_rx_mono_s = now
                    if report is None:
                        self._counts["sentences_ignored"] += 1
                    else:
                        self._last_report_mono_s = now
                        for fix in self._assembler.feed(report, now):
                            self._publish(fix)
            if err is not None:
                self._ratelog(logging.WARNING, err.kind, "gnss %s: dropped sentence (%s): %s",
                              self.name, err.kind, err)

    def _publish(self, fix: GnssFix) -> None:
        """A new fix: newest for read_fix, counters, state, listeners (caller holds the lock)."""
        self._fix = fix
        self._counts["fixes_valid" if fix.valid else "fixes_invalid"] += 1
        # state follows the fix atomically: a reader never sees an invalid fix with state OK
        self._update_state_from_fix(fix)
        self._cond.notify_all()
        for callback in self._listeners:
            try:
                callback(fix)
            except Exception:  # a listener's bug must not stop the receiver
                self._log.exception("gnss %s: fix listener failed", self.name)

    def _update_state_from_fix(self, fix: GnssFix) -> None:
        with self._cond:  # state changes from the reader thread and read_fix() are serialised
            if self._stop.is_set() or self._state == SensorState.FAILED:
                return
            if fix.valid:
                self.set_state(SensorState.OK)
                return
            detail = f"no GNSS fix ({_WHY_NO_FIX.get(fix.quality, 'no fix')})"
            if self._state != SensorState.DEGRADED or self._state_detail != detail:
                self.set_state(SensorState.DEGRADED, detail)

    def _utc_now(self) -> datetime:
        clock = self.context.clock if self.context is not None else None
        return clock.utc_now() if clock is not None else datetime.now(UTC)

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
            self._mark_stale("no fix sentence", fixless_s)

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
