"""Open Gamma Detector (Open Gamma Project, Raspberry Pi Pico MCA) over USB-CDC or UART.

Protocol source (read, not guessed): ``OpenGammaProject/Open-Gamma-Detector``,
``software/ogd_pico/ogd_pico.ino`` (firmware 4.2.0), ``software/ogd_pico/Helper.cpp`` and
``software/README.md`` ("Serial Interface", "Data Output"):

* a text shell: one command per line (``set out spectrum|events|off``, ``set mode energy|geiger``,
  ``read info``, ``reset spectrum``, ``reboot`` ...); replies start with ``"[#] "`` (``"[!] "``
  for errors) and end with CRLF; 2 000 000 baud (``Shell.begin(2000000)``; USB-CDC ignores it);
* a 12-bit ADC histogram, ``ADC_BINS = 4096`` channels, printed every ``OUT_REFRESH = 1000`` ms:
  in ``spectrum`` mode the *cumulative* histogram ``"n0;n1;...;n4095;"``, in ``events`` mode the
  ADC values of the pulses since the last output (no line when there were none);
* ``read info`` reports "Average Dead Time" (median duration of the pulse interrupt, in us) and
  the RP2040 die temperature; settings persist in flash across reboots.

Why spectrum mode by default: the histogram is cumulative, so a line lost to line noise, a USB
hiccup or a slow host costs *no counts* - the next good line's difference covers both periods (its
real time says so).  In events mode a lost line is lost counts; the driver then reports a
:class:`DeviceDataError` for that interval instead of a silently short spectrum.

Validation without a checksum (the protocol has none): a spectrum line must hold exactly 4096
decimal fields; no channel of a cumulative histogram may decrease.  A lower *total* means the
device reset its histogram (``reset spectrum``, reboot, watchdog) at an unknown moment of the
period: that line becomes the new baseline and the counts of the partial period are dropped, so
every reading's counts match its real time (resets are counted in ``stats()``).  Single channels
going down while the total rises mean a damaged line (a dropped digit): the line is dropped; three
such lines in a row mean the baseline itself was damaged and it is re-taken.  After a reboot
banner or a port re-open, a disagreeing line is taken as a reset at once.

Rebinning: 4096 ADC channels are summed in groups to ``n_channels`` (default 1024, what the analysis
chain uses; four times the counts per channel).  Counts are conserved exactly.  Rebinning softens
but does not remove the RP2040 ADC's differential non-linearity (datasheet appendix B errata, the
reason the firmware drops raw codes 511/1535/2559/3583); that is a calibration matter, not fixed
here.  Energy calibration ``calibration_kev`` is a polynomial on the *ADC channel* scale (what
Gamma MCA shows); it is composed with the rebinning so that ``E(j) = P(f j + (f-1)/2)`` at output
channel centre ``j``.  Without one, a nominal 0.75 keV per
ADC channel (3 MeV full scale) is used and ``describe()`` says ``calibration: nominal``.

Live time = real time - pulses x firmware dead time per pulse (non-paralysable; Knoll, *Radiation
Detection and Measurement*, 4th ed., sec. 4.VII).  The firmware's figure is the interrupt-routine
time only; shaping-amplifier pile-up is not in it.  Real time is the host-clock spacing of the
lines (the firmware sends no time stamps; USB-CDC latency is ~1 ms).

Assumed, not in the sources: that the shell accepts LF-terminated commands (the line-ending
handling lives in the SimpleShell library, not in the sketch).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import serial

from agent.hal.interfaces import (
    DeviceContext,
    DeviceDataError,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    EnergyCalibration,
    GammaSpectrometer,
    SensorState,
    SpectrumReading,
)
from drivers.serial_line_device import SerialLineDevice

log = logging.getLogger(__name__)

ADC_BINS = 4096  # ogd_pico.ino: ADC_RES = 12
DEFAULT_BAUDRATE = 2_000_000  # ogd_pico.ino: Shell.begin(2000000), Serial2.begin(2000000)
DEVICE_PERIOD_S = 1.0  # ogd_pico.ino: OUT_REFRESH = 1000 ms
NOMINAL_KEV_PER_ADC_CH = 0.75  # placeholder until a measured calibration is configured
# 4096 fields of up to 10 digits + ';' and CRLF; anything longer without a newline is noise.
MAX_LINE_BYTES = ADC_BINS * 11 + 64
OUTPUT_MODES = ("spectrum", "events")

_DATA_RE = re.compile(rb"^(?:\d{1,10};)+$")
_DEAD_TIME_RE = re.compile(r"Average Dead Time:\s*(n/a|[\d.]+)")
_TEMP_RE = re.compile(r"Temperature:\s*(-?[\d.]+)")
_FW_RE = re.compile(r"Firmware Version:?\s*([\w.\-]+)")
_BANNER = "Welcome to the Open Gamma Detector!"


# --------------------------------------------------------------------------- errors
class OgdError(DeviceDataError):
    """One line was rejected; ``kind`` names the counter (garbage, truncated, corrupt, overlong)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- pure layers
class LineSplitter:
    """Bytes as they arrive -> complete lines (without CR/LF); overlong lines are discarded."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        self._discarding = False
        self.overlong_lines = 0

    def reset(self) -> None:
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        lines: list[bytes] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self.max_line_bytes:
                    self.overlong_lines += 0 if self._discarding else 1
                    self._discarding = True
                    self._buf.clear()
                return lines
            line = bytes(self._buf[:nl]).rstrip(b"\r")
            del self._buf[: nl + 1]
            if self._discarding:  # tail of an overlong line
                self._discarding = False
                continue
            if len(line) > self.max_line_bytes:
                self.overlong_lines += 1
                continue
            lines.append(line)


def parse_data_line(line: bytes, expect_channels: int | None = ADC_BINS) -> np.ndarray:
    """``b"12;0;3;"`` -> int64 array.  ``expect_channels=None`` for events lines (values < 4096)."""
    if not _DATA_RE.match(line):
        snippet = line[:40]
        raise OgdError("garbage", f"not a data line: {snippet!r}{'...' if len(line) > 40 else ''}")
    values = np.array(line[:-1].split(b";"), dtype=np.int64)
    if expect_channels is not None:
        if values.size != expect_channels:
            raise OgdError("truncated", f"spectrum line with {values.size} of {expect_channels} channels")
    elif values.size and int(values.max()) >= ADC_BINS:
        raise OgdError("garbage", f"event ADC value {int(values.max())} >= {ADC_BINS}")
    return values


class CumulativeDifferencer:
    """Cumulative histograms in, per-line increments out; resets and damaged lines handled.

    ``feed`` returns ``(increment, kind)``: kind ``"baseline"`` (first line: no increment),
    ``"ok"``, or ``"reset"`` (the device cleared its histogram at an unknown moment since the
    previous line: the line becomes the new baseline, so a reading's counts always match its real
    time; the counts of that partial period are lost).  A damaged line raises :class:`OgdError`
    ``corrupt`` (line dropped, baseline kept).  After :meth:`expect_discontinuity` (the device
    rebooted or the port was re-opened) a disagreeing line is taken as a reset at once.
    """

    def __init__(self, max_consecutive_corrupt: int = 3) -> None:
        self.max_consecutive_corrupt = max_consecutive_corrupt
        self._prev: np.ndarray | None = None
        self._bad_run = 0
        self._discontinuity = False
        self.resets = 0
        self.rebaselines = 0

    def clear(self) -> None:
        self._prev = None
        self._bad_run = 0

    def expect_discontinuity(self, certain: bool = False) -> None:
        """The next line may not continue the previous one; ``certain`` (a reboot banner was
        seen) makes it the new baseline whatever it holds."""
        if certain and self._prev is not None:
            self._prev = None
            self.resets += 1
        self._discontinuity = True

    @property
    def has_baseline(self) -> bool:
        return self._prev is not None

    def feed(self, cumulative: np.ndarray) -> tuple[np.ndarray | None, str]:
        prev = self._prev
        expected_jump, self._discontinuity = self._discontinuity, False
        if prev is None or prev.shape != cumulative.shape:
            self._prev = cumulative
            return None, "baseline"
        inc = cumulative - prev
        went_down = bool((inc < 0).any())
        if int(inc.sum()) < 0 or (went_down and expected_jump):
            self._prev = cumulative
            self._bad_run = 0
            self.resets += 1
            return None, "reset"
        if went_down:
            self._bad_run += 1
            if self._bad_run >= self.max_consecutive_corrupt:
                self._prev = cumulative  # the baseline itself was the damaged line
                self._bad_run = 0
                self.rebaselines += 1
                raise OgdError("corrupt", f"{self.max_consecutive_corrupt} lines disagree with the "
                                          "baseline: baseline re-taken, counts since the last good line lost")
            bad = int(np.flatnonzero(inc < 0)[0])
            raise OgdError("corrupt", f"cumulative channel {bad} went down {int(prev[bad])} -> "
                                      f"{int(cumulative[bad])}: damaged line dropped")
        self._prev = cumulative
        self._bad_run = 0
        return inc, "ok"


def rebin(counts: np.ndarray, n_out: int) -> np.ndarray:
    """Sum groups of adjacent channels (counts conserved exactly)."""
    n_in = counts.shape[-1]
    if n_out <= 0 or n_in % n_out:
        raise ValueError(f"cannot rebin {n_in} channels to {n_out}")
    return counts.reshape(*counts.shape[:-1], n_out, n_in // n_out).sum(axis=-1)


def calibration_for(adc_coefficients_kev: tuple[float, ...], factor: int) -> EnergyCalibration:
    """ADC-scale polynomial -> output-channel polynomial: E(j) = P(f j + (f - 1) / 2)."""
    p = np.polynomial.Polynomial(np.asarray(adc_coefficients_kev, dtype=float))
    q = p(np.polynomial.Polynomial([(factor - 1) / 2.0, float(factor)]))
    return EnergyCalibration(tuple(float(c) for c in q.coef))


@dataclass
class _Pending:
    counts: np.ndarray
    real_time_s: float = 0.0
    lines: int = 0


_LOST = object()  # queue marker: an events line (and its counts) was lost


# --------------------------------------------------------------------------- the device
class OpenGammaDetector(SerialLineDevice, GammaSpectrometer):
    """Open Gamma Detector on a serial port, pty or any pyserial URL; see the module docstring.

    Port life cycle, reader thread and reopen: :class:`drivers.serial_line_device.SerialLineDevice`.
    """

    thread_prefix = "ogd"
    read_timeout_s = 0.1
    port_label = "Open Gamma Detector port"
    reopen_failure_log_level = logging.DEBUG  # the FAILED state already says the port is gone

    def __init__(
        self,
        port: str,
        baudrate: int = DEFAULT_BAUDRATE,
        context: DeviceContext | None = None,
        name: str = "ogd",
        interval_s: float = 1.0,
        detector_model: str = "NaI 2x2 in",
        calibration_kev: list[float] | None = None,
        n_channels: int = 1024,
        output: str = "spectrum",
        device_period_s: float = DEVICE_PERIOD_S,
        dead_time_us: float | None = None,
        stale_after_s: float | None = None,
        reopen_interval_s: float = 1.0,
        info_interval_s: float = 300.0,
        queue_size: int = 30,
        max_gap_s: float = 60.0,
        exclusive: bool = True,
    ) -> None:
        if output not in OUTPUT_MODES:
            raise DeviceUnavailable(f"gamma {name}: output={output!r} (one of {', '.join(OUTPUT_MODES)})")
        if n_channels <= 0 or ADC_BINS % int(n_channels):
            raise DeviceUnavailable(f"gamma {name}: n_channels={n_channels} must divide {ADC_BINS}")
        if not interval_s > 0 or not device_period_s > 0 or reopen_interval_s <= 0:
            raise DeviceUnavailable(
                f"gamma {name}: interval_s, device_period_s and reopen_interval_s must be > 0")
        if calibration_kev is not None and not (1 <= len(calibration_kev) <= 4
                                                and all(math.isfinite(float(c)) for c in calibration_kev)):
            raise DeviceUnavailable(
                f"gamma {name}: calibration_kev must be 1-4 finite polynomial coefficients "
                f"(keV, ADC-channel scale), got {calibration_kev}")
        super().__init__(
            port, baudrate, name=name, context=context, reopen_interval_s=reopen_interval_s,
            exclusive=exclusive, error_log_interval_s=0.0,  # every port event is logged
            counters=(
                "bytes_read", "lines", "data_lines", "readings", "readings_dropped", "garbage_lines",
                "truncated_lines", "corrupt_lines", "device_messages", "device_errors", "device_resets",
                "device_reboots", "events_lines_lost", "setups_sent", "serial_errors", "reopen_attempts",
                "reopens", "stale_events", "wrong_mode_lines",
            ),
        )
        self.interval_s = float(interval_s)
        self._detector_model = detector_model
        self._n_channels = int(n_channels)
        self._factor = ADC_BINS // self._n_channels
        self.output = output
        self.device_period_s = float(device_period_s)
        self.stale_after_s = float(stale_after_s) if stale_after_s else 3.0 * self.device_period_s + 1.0
        self.reinit_after_s = 2.0 * self.stale_after_s
        self.info_interval_s = float(info_interval_s)
        self.max_gap_s = float(max_gap_s)
        self._configured_dead_time_us = dead_time_us
        self._calibrated = calibration_kev is not None
        adc_cal = (tuple(float(c) for c in calibration_kev) if calibration_kev
                   else (0.0, NOMINAL_KEV_PER_ADC_CH))
        self.adc_calibration_kev = adc_cal
        self.calibration = calibration_for(adc_cal, self._factor)
        self._splitter = LineSplitter()
        self._diff = CumulativeDifferencer()
        self._queue: deque[Any] = deque(maxlen=max(int(queue_size), 1))
        self._pending = _Pending(np.zeros(ADC_BINS, dtype=np.int64))
        self._last_line_mono: float | None = None  # host time of the previous data line
        self._last_rx_mono: float | None = None  # any line
        self._last_data_mono: float | None = None  # data lines only: staleness is about spectra
        self._last_setup_mono = -math.inf
        self._last_info_mono = -math.inf
        self._wrong_mode_run = 0
        self.firmware: str | None = None
        self.dead_time_us: float | None = dead_time_us
        self.temperature_c: float | None = None
        self.usb_serial: str | None = None
        self.usb_id: str | None = None

    # -- properties
    @property
    def n_channels(self) -> int:
        return self._n_channels

    @property
    def detector_model(self) -> str:
        return self._detector_model

    # -- time (an injected clock may run faster than the wall; _now() is SerialLineDevice's)
    def _utc(self) -> datetime:
        clock = self.context.clock if self.context is not None else None
        return clock.utc_now() if clock is not None else datetime.now(UTC)

    # -- public
    def stats(self) -> dict[str, Any]:
        with self._cond:
            out: dict[str, Any] = dict(self._counts)
            out["overlong_lines"] = self._splitter.overlong_lines
            out["histogram_resets"] = self._diff.resets
            out["rebaselines"] = self._diff.rebaselines
            out["queued"] = len(self._queue)
            last = self._last_rx_mono
        out["dead_time_us"] = self.dead_time_us
        out["last_rx_age_s"] = None if last is None else round(self._now() - last, 3)
        return out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            model=self._detector_model,
            device="Open Gamma Detector (Open Gamma Project)",
            serial=self.usb_serial,
            usb_id=self.usb_id,
            firmware=self.firmware,
            port=self.port,
            baudrate=self.baudrate,
            protocol=f"OGD serial shell, 'set out {self.output}'",
            adc_channels=ADC_BINS,
            n_channels=self._n_channels,
            interval_s=self.interval_s,
            calibration="configured" if self._calibrated else "nominal (uncalibrated)",
            calibration_kev=list(self.calibration.coefficients_kev),
            dead_time_us=self.dead_time_us,
            stats=self.stats(),
        )
        return info

    def read_spectrum(self, timeout_s: float) -> SpectrumReading:
        if self._state in (SensorState.NOT_OPENED, SensorState.CLOSED):
            raise DeviceError(f"gamma {self.name}: read_spectrum on a device that is {self._state.value}")
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while not self._queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceTimeout(
                        f"gamma {self.name}: no spectrum from {self.port} within {timeout_s:g} s "
                        f"({self._counts['data_lines']} data lines, {self._counts['garbage_lines']} garbage, "
                        f"{self._counts['truncated_lines']} truncated, state {self._state.value})"
                    )
                self._cond.wait(remaining)
            item = self._queue.popleft()
        if item is _LOST:
            raise DeviceDataError(f"gamma {self.name}: an events line from {self.port} was damaged; "
                                  "its counts are lost")
        return item

    # -- SerialLineDevice hooks
    def _reopen_wait_s(self) -> float:
        return self.reopen_interval_s  # wall seconds, like every other wait of this driver

    def _identify_port(self) -> None:
        """USB serial number of the Pico (its unique flash id) when the port is a real USB device."""
        try:
            from serial.tools import list_ports

            real = os.path.realpath(self.port)
            for p in list_ports.comports():
                if os.path.realpath(p.device) == real and p.vid is not None:
                    self.usb_serial = p.serial_number
                    self.usb_id = f"{p.vid:04x}:{p.pid:04x}"
        except Exception as err:  # identity is a nicety; never fail open() for it
            log.debug("gamma %s: USB identity lookup failed: %s", self.name, err)

    def _after_port_open(self) -> None:
        """Fresh stream: drop stale bytes, (re)send the set-up.  The histogram baseline is kept:
        if the device kept counting through a USB glitch, the next difference is still valid."""
        port = self._serial
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError, AttributeError):
                port.reset_input_buffer()  # bytes queued while nobody listened are stale
        self._splitter.reset()
        super()._after_port_open()
        self._diff.expect_discontinuity()  # a reboot may hide behind a USB re-enumeration
        self._send_setup("port opened")

    def _send_setup(self, why: str) -> None:
        commands = ["set mode energy", f"set out {self.output}", "read info"]
        self._write_commands(commands)
        self._last_setup_mono = self._now()
        self._last_info_mono = self._last_setup_mono
        self._wrong_mode_run = 0
        with self._cond:
            self._counts["setups_sent"] += 1
        log.info("gamma %s: set-up sent to %s (%s)", self.name, self.port, why)

    def _write_commands(self, commands: list[str]) -> None:
        port = self._serial
        if port is None:
            return
        try:
            for cmd in commands:
                port.write(cmd.encode("ascii") + b"\n")
                port.flush()
                self._stop.wait(0.02)  # let the shell digest one command at a time
        except (serial.SerialException, OSError) as err:
            log.warning("gamma %s: writing commands to %s failed: %s", self.name, self.port, err)

    # -- reader thread (SerialLineDevice._run calls _process and _housekeeping)
    def _process(self, data: bytes, now: float) -> None:
        with self._cond:
            self._counts["bytes_read"] += len(data)
        for line in self._splitter.feed(data):
            if not line:
                continue
            with self._cond:
                self._counts["lines"] += 1
            if line.startswith((b"[#]", b"[!]")):
                self._on_message(line, now)
                continue
            try:
                self._on_data(line, now)
            except OgdError as err:
                self._on_bad_line(err, now)

    def _on_message(self, line: bytes, now: float) -> None:
        text = line.decode("utf-8", "replace")
        error = text.startswith("[!]")
        with self._cond:
            self._counts["device_errors" if error else "device_messages"] += 1
            self._last_rx_mono = now
        if error:
            log.warning("gamma %s: device says %s", self.name, text)
        if m := _DEAD_TIME_RE.search(text):
            if self._configured_dead_time_us is None and m.group(1) != "n/a":
                self.dead_time_us = float(m.group(1))
        elif m := _TEMP_RE.search(text):
            self.temperature_c = float(m.group(1))
        elif m := _FW_RE.search(text):
            self.firmware = m.group(1)
        elif _BANNER in text:
            with self._cond:
                self._counts["device_reboots"] += 1
            log.warning("gamma %s: device rebooted; re-sending set-up", self.name)
            self._diff.expect_discontinuity(certain=True)
            self._send_setup("device rebooted")

    def _on_data(self, line: bytes, now: float) -> None:
        if self._last_line_mono is not None and now - self._last_line_mono > self.max_gap_s:
            # long outage: do not hand out one spectrum spanning it; start afresh
            self._diff.clear()
            self._last_line_mono = None
        if self.output == "spectrum":
            try:
                values = parse_data_line(line, ADC_BINS)
            except OgdError as err:
                if err.kind == "truncated":
                    self._note_wrong_mode(now)
                raise
            self._wrong_mode_run = 0
            with self._cond:
                self._counts["data_lines"] += 1
                self._last_rx_mono = self._last_data_mono = now
            inc, kind = self._diff.feed(values)
            if kind == "reset":
                with self._cond:
                    self._counts["device_resets"] += 1
                log.warning("gamma %s: device histogram was reset; counts of that period are lost, "
                            "the line is the new baseline", self.name)
            self._add(inc, now)
        else:
            values = parse_data_line(line, None)
            with self._cond:
                self._counts["data_lines"] += 1
                self._last_rx_mono = self._last_data_mono = now
            self._add(np.bincount(values, minlength=ADC_BINS).astype(np.int64), now)

    def _add(self, inc: np.ndarray | None, now: float) -> None:
        """Accumulate one line's increment; emit a reading once ``interval_s`` is covered."""
        prev_t = self._last_line_mono
        self._last_line_mono = now
        if inc is None:
            return
        if prev_t is None:
            if self.output == "spectrum":
                return  # after a reopen: no time span to attribute the difference to
            prev_t = now - self.device_period_s  # events: the line covers one firmware period
        p = self._pending
        p.counts += inc
        p.real_time_s += now - prev_t
        p.lines += 1
        if p.real_time_s >= self.interval_s - 0.5 * self.device_period_s:
            self._emit(now)

    def _emit(self, now: float) -> None:
        p = self._pending
        self._pending = _Pending(np.zeros(ADC_BINS, dtype=np.int64))
        n = int(p.counts.sum())
        dead_s = 0.0 if self.dead_time_us is None else n * self.dead_time_us * 1e-6
        live = max(p.real_time_s - dead_s, 0.0)
        reading = SpectrumReading(
            counts=rebin(p.counts, self._n_channels),
            live_time_s=live,
            real_time_s=p.real_time_s,
            calibration=self.calibration,
            t_utc=self._utc(),
            t_mono_s=now,
            detector_model=self._detector_model,
            dose_rate_usv_h=None,
            temperature_c=self.temperature_c,
        )
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self._counts["readings_dropped"] += 1
            self._queue.append(reading)
            self._counts["readings"] += 1
            self._cond.notify_all()
        if self._state == SensorState.DEGRADED:
            self.set_state(SensorState.OK, "spectra arriving again")

    def _on_bad_line(self, err: OgdError, now: float) -> None:
        key = {"garbage": "garbage_lines", "truncated": "truncated_lines", "corrupt": "corrupt_lines"}
        with self._cond:
            self._counts[key.get(err.kind, "garbage_lines")] += 1
            if self.output == "events":
                # the counts of that line are gone: say so for this interval, and do not let the
                # next reading's real time include the lost period
                self._counts["events_lines_lost"] += 1
                self._queue.append(_LOST)
                self._last_line_mono = now
                self._cond.notify_all()
        log.warning("gamma %s: dropped line (%s): %s", self.name, err.kind, err)

    def _note_wrong_mode(self, now: float) -> None:
        """Short data lines again and again: the device is printing events (settings reset?)."""
        self._wrong_mode_run += 1
        with self._cond:
            self._counts["wrong_mode_lines"] += 1
        if self._wrong_mode_run >= 3 and now - self._last_setup_mono > 2.0 * self.device_period_s:
            self._send_setup("device is not printing 4096-channel spectra")

    def _housekeeping(self, now: float) -> None:
        last = self._last_data_mono if self._last_data_mono is not None else -math.inf
        silent_s = now - max(last, self._opened_mono_s)
        if silent_s > self.stale_after_s and self._state == SensorState.OK:
            with self._cond:
                self._counts["stale_events"] += 1
            self.set_state(SensorState.DEGRADED, f"no spectra from {self.port} for {silent_s:.1f} s")
        if silent_s > self.reinit_after_s and now - self._last_setup_mono > self.reinit_after_s:
            self._send_setup(f"silent for {silent_s:.1f} s")
        elif now - self._last_info_mono > self._info_due_s():
            self._last_info_mono = now
            self._write_commands(["read info"])  # refresh dead time and temperature

    def _info_due_s(self) -> float:
        """``read info`` refresh period; sooner while the dead time is unknown (the firmware says
        "n/a" until it has seen a pulse)."""
        if self.dead_time_us is None and self._configured_dead_time_us is None:
            return min(self.info_interval_s, 5.0 * self.device_period_s)
        return self.info_interval_s
