"""An Open Gamma Detector that speaks the real firmware's serial protocol on a pseudo-terminal.

Why a pty and the real text protocol: :mod:`drivers.open_gamma_detector` then runs exactly as on a
unit - pyserial opens a tty path, a reader thread receives 20 kB histogram lines in arbitrary
chunks, commands go the other way - and every fault of a USB-CDC / UART link can be injected at
the byte level: line noise, lines cut short, silence, a device reboot, a port that vanishes.

Protocol source: the OGD firmware, ``OpenGammaProject/Open-Gamma-Detector``,
``software/ogd_pico/ogd_pico.ino`` (firmware 4.2.0) and ``software/ogd_pico/Helper.cpp``; command
list and output formats also in ``software/README.md`` ("Serial Interface", "Data Output").
What this emulator reproduces from those files:

* 12-bit ADC, ``ADC_BINS = 4096`` channels; output every ``OUT_REFRESH = 1000`` ms (``dataOutput``).
* ``set out spectrum``: the *cumulative* histogram, ``"<n0>;<n1>;...;<n4095>;"`` + CRLF, every
  period (the per-period reset is commented out in the firmware: ``//spectrum[index] = 0``).
* ``set out events``: the ADC values of the pulses since the last output, ``"<adc>;...;"`` + CRLF;
  no line at all in a period without pulses (``event_position > 0``); the event buffer is cleared
  every period even when nothing could be printed, and wraps at ``EVENT_BUFFER = 50000``.
* ``set out off``: nothing is printed *and nothing is histogrammed* (``eventInt`` only records when
  ``ser_output || enable_display || isRecording``; display and recording are off here).
* Energy mode drops pulses whose baseline-subtracted ADC value is 0 (``mean != 0`` unless
  ``cps_correction``); geiger mode records every pulse in channel 0.
* Replies: ``println`` prefixes ``"[#] "`` (``"[!] "`` for errors) and ends lines with CRLF
  (Arduino ``Print::println``); the exact texts of ``set out``, ``set mode``, ``reset spectrum``,
  ``reboot``, the boot banner and the ``read info`` block (tab-separated, ``"µs"`` and ``"°C"`` as
  UTF-8) are copied from the sketch.  Settings changed by ``set`` commands persist across a reboot
  (``saveSettings()`` writes them to flash); ``reset settings`` restores the defaults
  (``ser_output = true, print_spectrum = false``, i.e. events mode).
* Serial speed 2 000 000 baud (``Shell.begin(2000000)``, ``Serial2.begin(2000000)``); a pty ignores it.

Assumed, not in those files: the wording of the SimpleShell library's reply to an unknown command
(the emulator prints its own ``[!]`` line; the driver does not depend on it), and the dead time per
pulse, a constructor parameter (the firmware measures it as the interrupt-routine duration and
reports the median in ``read info``).

Physics: a spectrum source ``t_s -> expected counts per second in each of the 4096 ADC channels``
drives the counts; each period is Poisson-sampled (seeded) and thinned for a non-paralysable dead
time, m = n / (1 + n tau) (Knoll, *Radiation Detection and Measurement*, 4th ed., sec. 4.VII).
Every period's recorded counts are kept as ground truth (:meth:`OgdEmulator.emitted`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hal_sim.pty_port import PtyEmulator, serve_until_stopped

log = logging.getLogger(__name__)

ADC_BINS = 4096  # ogd_pico.ino: ADC_RES = 12, ADC_BINS = 1 << ADC_RES
EVENT_BUFFER = 50000  # ogd_pico.ino: events buffered between two outputs
FW_VERSION = "4.2.0"  # ogd_pico.ino: FW_VERSION of the sketch the replies are copied from
OUT_REFRESH_S = 1.0  # ogd_pico.ino: OUT_REFRESH = 1000 ms
BAUDRATE = 2_000_000  # ogd_pico.ino: Shell.begin(2000000)
CRLF = "\r\n"

SpectrumSource = Callable[[float], np.ndarray]  # t_s -> expected counts/s per ADC channel (4096,)


# --------------------------------------------------------------------------- spectrum sources
def synthetic_source(
    continuum_cps: float = 120.0, peak_channel: float = 883.0, peak_fwhm_ch: float = 60.0,
    peak_cps: float = 25.0, pass_period_s: float | None = None, closest_m: float = 5.0,
    speed_m_s: float = 8.0,
) -> SpectrumSource:
    """A plain test field: an exponential continuum plus one Gaussian line (default where a Cs-137
    662 keV peak falls at the nominal 0.75 keV per ADC channel).

    With ``pass_period_s`` the line comes from a source driven past every ``pass_period_s``
    seconds at ``speed_m_s`` with closest approach ``closest_m``: rate ~ d0^2 / (d0^2 + v^2 t^2)
    (inverse square; air attenuation over these distances is < 10 %, ignored).
    """
    ch = np.arange(ADC_BINS, dtype=float)
    cont = np.exp(-ch / 600.0)
    cont[0] = 0.0
    cont *= continuum_cps / cont.sum()
    sigma = peak_fwhm_ch / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    peak = np.exp(-0.5 * ((ch - peak_channel) / sigma) ** 2)
    peak *= peak_cps / peak.sum()

    def source(t_s: float) -> np.ndarray:
        if pass_period_s is None:
            return cont + peak
        tau = (t_s % pass_period_s) - 0.5 * pass_period_s
        return cont + peak * closest_m**2 / (closest_m**2 + (speed_m_s * tau) ** 2)

    return source


# --------------------------------------------------------------------------- ground truth
@dataclass(frozen=True, slots=True)
class EmittedPeriod:
    """One output period of the emulated firmware: what it counted and what it printed."""

    index: int
    t_s: float  # end of the period, seconds since start
    kind: str  # "spectrum", "events", "none" (no pulses / output off), "silent" (output blocked)
    increment: np.ndarray  # int64 (4096,): pulses histogrammed in this period
    cumulative: np.ndarray  # int64 (4096,): the on-board histogram after this period
    damaged: bool = False  # the printed line was truncated by fault injection


@dataclass
class OgdConfig:
    """The firmware's ``struct Config`` fields the protocol exposes (defaults as in the sketch)."""

    ser_output: bool = True
    geiger_mode: bool = False
    print_spectrum: bool = False
    meas_avg: int = 2
    enable_trng: bool = False
    subtract_baseline: bool = True
    cps_correction: bool = False
    enable_ticker: bool = False
    tick_rate: int = 20
    enable_display: bool = False


def _fmt_float(value: float, digits: int = 2) -> str:
    """Arduino ``String(float)`` / ``String(float, n)``: fixed point, 2 decimals by default."""
    return f"{value:.{digits}f}"


# --------------------------------------------------------------------------- emulator
class OgdEmulator(PtyEmulator):
    """Simulated Open Gamma Detector on a pty.  ``port`` is the path a driver opens.

    ``period_s`` is the firmware's output period (1 s; tests shorten it).  ``link_path`` makes
    ``port`` a symlink to the current pty, so :meth:`disconnect` / :meth:`reconnect` model a USB
    unplug and replug under a stable udev name (the firmware keeps counting meanwhile).  Writes
    model USB-CDC back-pressure: a line waits up to ``write_timeout_s`` for the reader, then the
    rest is dropped (``stats()['bytes_dropped']``).
    :meth:`pause` is a USB stall: nothing printed, but the histogram keeps counting (as the
    firmware does when ``Serial`` is not ready); events of those periods are lost.
    """

    thread_name = "ogd-emulator"
    log_name = "ogd emulator"

    def __init__(
        self,
        source: SpectrumSource | None = None,
        period_s: float = OUT_REFRESH_S,
        seed: int = 0,
        dead_time_us: float = 24.0,
        link_path: str | Path | None = None,
        temperature_c: float = 27.4,
        write_timeout_s: float = 1.0,
        history: int = 600,
        settings: OgdConfig | None = None,
    ) -> None:
        if not 0.01 <= period_s <= 60.0:
            raise ValueError(f"period_s must be in [0.01, 60], got {period_s}")
        if dead_time_us < 0:
            raise ValueError(f"dead_time_us must be >= 0, got {dead_time_us}")
        super().__init__(link_path, write_timeout_s=write_timeout_s, counters=(
            "periods", "lines", "bytes_written", "bytes_dropped", "commands", "unknown_commands",
            "injected_garbage_bytes", "injected_truncated", "periods_silent", "reboots",
        ))
        self.source = source or synthetic_source()
        self.period_s = float(period_s)
        self.dead_time_us = float(dead_time_us)
        self.temperature_c = float(temperature_c)
        self._rng = np.random.default_rng(seed)
        self._flash = replace(settings) if settings is not None else OgdConfig()  # persisted settings
        self.conf = replace(self._flash)
        self._spectrum = np.zeros(ADC_BINS, dtype=np.int64)
        self._events: list[np.ndarray] = []
        self._n_events = 0
        self._total_events = 0
        self._history: deque[EmittedPeriod] = deque(maxlen=max(int(history), 2))
        self._history_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._rx = bytearray()
        self._t0_mono: float | None = None
        self._boot_mono = time.monotonic()
        self._next_k = 0
        self._truncate_next = 0
        self._truncate_how = "drop"
        self._reboot_at: float | None = None
        self._reboot_disconnect = False
        self._power_cycles = 1
        self.commands_received: list[str] = []
        self._open_pty()

    # -- pty (hal_sim.pty_port does the rest)
    def _on_pty_open(self) -> None:
        self._rx.clear()  # a half-received command does not survive a re-enumeration

    def stats(self) -> dict[str, Any]:
        return dict(super().stats(), total_events=self._total_events)

    # -- ground truth
    def emitted(self) -> list[EmittedPeriod]:
        """Snapshot of the recent periods, oldest first."""
        with self._history_lock:
            return list(self._history)

    # -- fault injection
    def inject_truncated(self, count: int = 1, how: str = "drop") -> None:
        """Damage the next ``count`` data lines: ``"drop"`` loses a chunk from the middle (UART/host
        overrun), ``"cut"`` ends the line after its first half (a reset mid-line)."""
        if how not in ("drop", "cut"):
            raise ValueError(f"how must be 'drop' or 'cut', got {how!r}")
        self._truncate_next += int(count)
        self._truncate_how = how

    def reboot(self, factory_settings: bool = False, disconnect: bool = False) -> None:
        """Watchdog reset / power cycle: histogram cleared, settings re-read from flash (or the
        defaults with ``factory_settings``), banner printed; ``disconnect`` re-enumerates the USB."""
        with self._state_lock:
            if factory_settings:
                self._flash = OgdConfig()
            self._do_reboot()
        if disconnect:
            self._close_pty()
            self.reconnect()
        self._banner()

    def _do_reboot(self) -> None:
        self.conf = replace(self._flash)
        self._spectrum[:] = 0
        self._events.clear()
        self._n_events = 0
        self._total_events = 0
        self._boot_mono = time.monotonic()
        self._power_cycles += 1
        self._counts["reboots"] += 1

    def _banner(self) -> None:
        self._println(["Welcome to the Open Gamma Detector!", f"Firmware Version {FW_VERSION}"])

    # -- output
    def _println(self, lines: list[str], error: bool = False) -> None:
        prefix = "[!] " if error else "[#] "
        self._write("".join(prefix + line + CRLF for line in lines).encode("utf-8"))

    # -- commands (SimpleShell: one command per line, matched by its registered name)
    def _poll_input(self) -> None:
        fd = self._master
        if fd is None:
            return
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        self._rx += data
        while True:
            cut = min((i for i in (self._rx.find(b"\n"), self._rx.find(b"\r")) if i >= 0), default=-1)
            if cut < 0:
                if len(self._rx) > 256:
                    self._rx.clear()
                return
            line = bytes(self._rx[:cut]).decode("ascii", "replace").strip()
            del self._rx[: cut + 1]
            if line:
                self._command(line)

    def _command(self, line: str) -> None:
        self._counts["commands"] += 1
        self.commands_received.append(line)
        with self._state_lock:
            for name, handler in self._handlers():
                if line.startswith(name):
                    handler(line[len(name):].strip())
                    return
        self._counts["unknown_commands"] += 1
        self._println([f"Unknown command '{line}'. Type 'help' for a list of commands."], error=True)

    def _handlers(self) -> list[tuple[str, Callable[[str], None]]]:
        return [
            ("read info", self._cmd_read_info),
            ("read spectrum", self._cmd_read_spectrum),
            ("read settings", self._cmd_read_settings),
            ("set out", self._cmd_set_out),
            ("set mode", self._cmd_set_mode),
            ("set averaging", self._cmd_set_averaging),
            ("set baseline", lambda a: self._toggle(a, "subtract_baseline", "automatic DC bias subtraction")),
            ("set correction", lambda a: self._toggle(a, "cps_correction", "CPS correction")),
            ("set trng", lambda a: self._toggle(a, "enable_trng", "True Random Number Generator output")),
            ("set ticker", lambda a: self._toggle(a, "enable_ticker", "ticker output")),
            ("reset spectrum", self._cmd_reset_spectrum),
            ("reset settings", self._cmd_reset_settings),
            ("reboot", self._cmd_reboot),
        ]

    def _save(self) -> None:
        self._flash = replace(self.conf)

    def _invalid(self, arg: str, must: str) -> None:
        self._println([f"Invalid input '{arg}'.", must], error=True)

    def _cmd_set_out(self, arg: str) -> None:
        if arg == "spectrum":
            self.conf.ser_output, self.conf.print_spectrum = True, True
            self._println(["Set serial output mode to spectrum histogram."])
        elif arg == "events":
            self.conf.ser_output, self.conf.print_spectrum = True, False
            self._println(["Set serial output mode to events."])
        elif arg == "off":
            self.conf.ser_output, self.conf.print_spectrum = False, False
            self._println(["Disabled serial outputs."])
        else:
            self._invalid(arg, "Must be 'spectrum', 'events' or 'off'.")
            return
        self._save()

    def _cmd_set_mode(self, arg: str) -> None:
        if arg == "geiger":
            self.conf.geiger_mode = True
            self._println(["Enabled geiger mode."])
        elif arg == "energy":
            self.conf.geiger_mode = False
            self._println(["Enabled energy measuring mode."])
        else:
            self._invalid(arg, "Must be 'geiger' or 'energy'.")
            return
        self._events.clear()
        self._n_events = 0
        self._save()

    def _cmd_set_averaging(self, arg: str) -> None:
        n = int(arg) if arg.isdigit() else 0
        if n > 0:
            self.conf.meas_avg = n
            self._println([f"Set measurement averaging to {n}."])
            self._save()
        else:
            self._invalid(arg, "Parameter must be a number > 0.")

    def _toggle(self, arg: str, attr: str, what: str) -> None:
        if arg not in ("on", "off"):
            self._invalid(arg, "Must be 'on' or 'off'.")
            return
        setattr(self.conf, attr, arg == "on")
        self._println([f"{'Enabled' if arg == 'on' else 'Disabled'} {what}."])
        self._save()

    def _cmd_reset_spectrum(self, _arg: str) -> None:
        self._println(["Resetting spectrum..."])
        self._spectrum[:] = 0
        self._println(["Successfully reset spectrum!"])

    def _cmd_reset_settings(self, _arg: str) -> None:
        self.conf = OgdConfig()
        self._println(["Applied default settings.",
                       "You might need to reboot for all changes to take effect."])
        self._save()

    def _cmd_reboot(self, _arg: str) -> None:
        self._println(["You might need to reconnect after reboot.", "Rebooting now..."])
        self._reboot_at = time.monotonic() + min(1.0, self.period_s * 2)  # delay(1000) before rp2040.reboot()

    def _cmd_read_settings(self, _arg: str) -> None:
        c = self.conf
        doc = {  # writeSettingsFile() field order; serializeJsonPretty indents by 2
            "ser_output": c.ser_output, "geiger_mode": c.geiger_mode, "print_spectrum": c.print_spectrum,
            "meas_avg": c.meas_avg, "enable_display": c.enable_display, "enable_trng": c.enable_trng,
            "subtract_baseline": c.subtract_baseline, "cps_correction": c.cps_correction,
            "enable_ticker": c.enable_ticker, "tick_rate": c.tick_rate,
        }
        self._write((json.dumps(doc, indent=2).replace("\n", CRLF) + CRLF).encode("ascii"))
        self._println(["Read settings file successfully."])

    def _cmd_read_spectrum(self, _arg: str) -> None:
        body = CRLF + "[#] Pulse height histogram:" + CRLF
        body += "".join(f"{int(v)}{CRLF}" for v in self._spectrum) + CRLF
        body += ("[#] Hint: To import this data into Gamma MCA, you have to replace all the ';' "
                 "with a new line '\\n'.")
        self._write((body + CRLF).encode("ascii"))

    def _cmd_read_info(self, _arg: str) -> None:
        runtime_s = time.monotonic() - self._boot_mono
        dt_text = "n/a" if self._total_events == 0 else str(round(self.dead_time_us))
        frac = self.dead_time_us * self._total_events / 1000.0 / max(runtime_s * 1000.0, 1e-3) * 100.0
        lines = [
            "=========================",
            "-- Open Gamma Detector --",
            "By NuclearPhoenix, Open Gamma Project",
            "2023. https://github.com/OpenGammaProject",
            f"Firmware Version: {FW_VERSION}",
            "=========================",
            f"Runtime: \t\t{_fmt_float(runtime_s)} s",
            f"Average Dead Time: \t{dt_text} µs",
            f"Total Dead Time: \t{_fmt_float(frac)} %",
            f"Total Pulses: \t{self._total_events}",
            "CPU Frequency: \t133.00 MHz",
            "Used Heap Memory: \t12.34 kB / 5%",
            "Free Heap Memory: \t227.66 kB / 95%",
            f"Temperature: \t{_fmt_float(round(self.temperature_c * 10.0) / 10.0, 1)} °C",
            "USB Connection: \t1",
            "Supply Voltage: \t5.0 V",
            f"Power Cycle Count: \t{self._power_cycles}",
            "Power-on hours: \tn/a",
        ]
        self._println(lines)

    # -- counting and periodic output (dataOutput task)
    def _count(self, t_end_s: float) -> np.ndarray:
        """Pulses histogrammed during the period ending at ``t_end_s``."""
        c = self.conf
        if not c.ser_output:  # eventInt records only when output (or display/recording) is on
            return np.zeros(ADC_BINS, dtype=np.int64)
        rate = np.asarray(self.source(t_end_s - 0.5 * self.period_s), dtype=float)
        if rate.shape != (ADC_BINS,):
            raise ValueError(f"spectrum source returned shape {rate.shape}, expected ({ADC_BINS},)")
        rate = np.clip(np.nan_to_num(rate, nan=0.0, posinf=0.0), 0.0, None)
        total = float(rate.sum())
        live = 1.0 / (1.0 + total * self.dead_time_us * 1e-6)  # non-paralysable: m = n / (1 + n tau)
        counts = self._rng.poisson(rate * self.period_s * live).astype(np.int64)
        if c.geiger_mode:
            total_n = int(counts.sum())
            counts[:] = 0
            counts[0] = total_n
        elif not c.cps_correction:
            counts[0] = 0  # mean == 0 after baseline subtraction is discarded in energy mode
        return counts

    def _period(self, k: int, t_end_s: float) -> None:
        with self._state_lock:
            inc = self._count(t_end_s)
            n = int(inc.sum())
            self._spectrum += inc
            self._total_events += n
            if n:
                chans = np.repeat(np.arange(ADC_BINS), inc)
                self._rng.shuffle(chans)  # chronological order of pulses is random
                self._events.append(chans)
                self._n_events += n
            if self._n_events > EVENT_BUFFER:  # ring buffer overwrote the oldest events
                allev = np.concatenate(self._events)
                keep = self._n_events % EVENT_BUFFER
                self._events = [allev[self._n_events - keep:]] if keep else []
                self._n_events = keep
            silent = self._paused()
            kind, line = "none", ""
            if self.conf.ser_output and not silent:
                if self.conf.print_spectrum:
                    kind, line = "spectrum", ";".join(map(str, self._spectrum.tolist())) + ";"
                elif self._n_events > 0:
                    ev = np.concatenate(self._events)
                    kind, line = "events", ";".join(map(str, ev.tolist())) + ";"
            if self.conf.ser_output:
                self._events.clear()
                self._n_events = 0
            if silent:
                kind = "silent"
                self._counts["periods_silent"] += 1
            cumulative = self._spectrum.copy()
        damaged = False
        if line and self._truncate_next > 0:
            self._truncate_next -= 1
            self._counts["injected_truncated"] += 1
            damaged = True
            line = self._damage(line)
        with self._history_lock:  # truth first: a fast reader may act on the line at once
            self._history.append(EmittedPeriod(k, t_end_s, kind, inc, cumulative, damaged))
        self._counts["periods"] += 1
        if line:
            self._write((line + CRLF).encode("ascii"))
            self._counts["lines"] += 1

    def _damage(self, line: str) -> str:
        if self._truncate_how == "cut":
            return line[: max(1, len(line) // 2)]
        a = len(line) // 3
        b = min(len(line) - 1, a + max(8, len(line) // 10))
        return line[:a] + line[b:]

    def _run(self) -> None:
        k = self._next_k
        t0 = self._t0_mono = time.monotonic() - k * self.period_s
        while not self._stop.is_set():
            due = t0 + (k + 1) * self.period_s
            while not self._stop.is_set():
                self._poll_input()
                if self._reboot_at is not None and time.monotonic() >= self._reboot_at:
                    self._reboot_at = None
                    with self._state_lock:
                        self._do_reboot()
                    self._banner()
                remaining = due - time.monotonic()
                if remaining <= 0:
                    break
                fd = self._master
                try:
                    if fd is not None:
                        select.select([fd], [], [], min(remaining, 0.05))
                    else:
                        self._stop.wait(min(remaining, 0.05))
                except (OSError, ValueError):  # fd closed by disconnect() meanwhile
                    self._stop.wait(0.01)
            if self._stop.is_set():
                break
            try:
                self._period(k, (k + 1) * self.period_s)
            except Exception:  # a broken spectrum source must not kill the firmware thread
                log.exception("ogd emulator: period %d failed", k)
            k += 1
            self._next_k = k


def serve_forever(emulator: OgdEmulator, stop: threading.Event | None = None) -> None:
    """Run ``emulator`` until Ctrl-C (or ``stop`` is set), then close it.  For ``cedge sim ogd``."""
    emulator.start()
    log.info("OGD emulator on %s, output every %g s", emulator.port, emulator.period_s)
    serve_until_stopped(emulator, stop)
