"""A device on a serial port, read by one background thread, reopened when the port vanishes.

Why one module: a GPS puck and a USB-CDC spectrometer fail the same way - the link drops bytes,
goes quiet, or vanishes (USB re-enumeration) and comes back under the same udev path - and the
answer is the same: one reader thread that owns the port, turns a read error into state FAILED,
closes the port and tries the same path again every ``reopen_interval_s`` until the device is
back, then reports OK.  What the bytes mean stays in each driver (:mod:`drivers.nmea_gps`,
:mod:`drivers.open_gamma_detector`): a subclass implements :meth:`SerialLineDevice._process`
(bytes just read) and :meth:`SerialLineDevice._housekeeping` (called after every read, data or
timeout: staleness, periodic commands), and may extend :meth:`SerialLineDevice._after_port_open`
(fresh stream after open and every reopen) and :meth:`SerialLineDevice._identify_port` (first
open only).

Ports are opened with :func:`serial.serial_for_url`, so a tty path, a pty, ``loop://`` or
``rfc2217://`` all work.  Counters live in ``self._counts`` under ``self._cond`` (a re-entrant
condition: state updates nest); the port machinery keeps :data:`SERIAL_COUNTERS`.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Iterable
from typing import ClassVar

import serial

from agent.hal.interfaces import Device, DeviceContext, DeviceUnavailable, SensorState

# counters the port machinery itself keeps; a subclass names these among its own
SERIAL_COUNTERS = ("bytes_read", "serial_errors", "reopen_attempts", "reopens")


class RateLimitedLog:
    """At most one log line per reason per ``interval_s``; the next one says how many were hidden.

    A receiver spewing garbage at 9600 baud would otherwise write thousands of lines a minute to
    the unit's journal and wear its SD card.  ``interval_s = 0`` logs every line.
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


class SerialLineDevice(Device):
    """Port life cycle, reader thread and reopen-with-back-off of a serial device.

    Combine with the HAL interface the device implements, this class first:
    ``class MyGps(SerialLineDevice, GnssReceiver)``.  Log lines go to the subclass's module
    logger and start with ``"<kind> <name>:"``.  Port errors and failed reopens go through a
    :class:`RateLimitedLog` of ``error_log_interval_s``.
    """

    thread_prefix: ClassVar[str] = "serial"  # reader thread name: "<prefix>-<name>"
    read_timeout_s: ClassVar[float] = 0.2  # pyserial read timeout: how often _housekeeping runs when quiet
    port_label: ClassVar[str] = ""  # what the port is, in "cannot open <label> <port>"
    reopen_failure_log_level: ClassVar[int] = logging.WARNING

    def __init__(
        self,
        port: str,
        baudrate: int,
        *,
        name: str,
        context: DeviceContext | None,
        reopen_interval_s: float,
        exclusive: bool,
        counters: Iterable[str],
        error_log_interval_s: float = 30.0,
    ) -> None:
        super().__init__(name=name, context=context)
        self.port = port
        self.baudrate = int(baudrate)
        self.reopen_interval_s = float(reopen_interval_s)
        self.exclusive = exclusive
        self._serial: serial.SerialBase | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition(threading.RLock())  # re-entrant: state updates nest
        self._opened_mono_s = 0.0  # clock time of the last (re)open: staleness counts from here
        self._log = logging.getLogger(type(self).__module__)
        self._ratelog = RateLimitedLog(self._log, error_log_interval_s)
        self._counts: dict[str, int] = dict.fromkeys(counters, 0)
        for key in SERIAL_COUNTERS:
            self._counts.setdefault(key, 0)

    # -- subclass hooks
    @abc.abstractmethod
    def _process(self, data: bytes, now: float) -> None:
        """Bytes just read (any chunking), stamped with clock time ``now``."""

    @abc.abstractmethod
    def _housekeeping(self, now: float) -> None:
        """After every read, with or without data: staleness, periodic commands."""

    def _after_port_open(self) -> None:
        """A fresh stream (first open and every reopen): reset parsers, re-send set-up."""
        self._opened_mono_s = self._now()

    def _identify_port(self) -> None:  # noqa: B027 - optional hook
        """First open only: learn what is behind the port (USB serial number ...)."""

    # -- time
    def _now(self) -> float:
        clock = self.context.clock if self.context is not None else None
        return clock.monotonic_s() if clock is not None else time.monotonic()

    def _wall_s(self, clock_s: float) -> float:
        """Clock seconds -> wall seconds for waits (a simulation clock may run faster)."""
        clock = self.context.clock if self.context is not None else None
        rate = clock.rate if clock is not None else 1.0
        return clock_s / rate if rate > 0 else clock_s

    def _reopen_wait_s(self) -> float:
        """Wall seconds between reopen attempts."""
        return self._wall_s(self.reopen_interval_s)

    # -- life cycle hooks of Device
    def _open(self) -> None:
        self._stop_thread()
        self._serial = self._open_port()
        self._identify_port()
        self._after_port_open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.thread_prefix}-{self.name}", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        self._stop_thread()

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                self._log.error("%s %s: reader thread did not stop within 5 s", self.kind, self.name)
        self._thread = None
        self._close_port()

    def _open_port(self) -> serial.SerialBase:
        try:
            return serial.serial_for_url(
                self.port, baudrate=self.baudrate, timeout=self.read_timeout_s, exclusive=self.exclusive
            )
        except (serial.SerialException, OSError, ValueError) as err:
            what = f"{self.port_label} {self.port}" if self.port_label else self.port
            raise DeviceUnavailable(f"{self.kind} {self.name}: cannot open {what}: {err}") from err

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as err:  # a vanished port may fail to close
                self._log.debug("%s %s: close of %s failed: %s", self.kind, self.name, self.port, err)

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
            self._housekeeping(now)

    def _on_port_lost(self, err: BaseException) -> None:
        with self._cond:
            self._counts["serial_errors"] += 1
        self._ratelog(logging.ERROR, "serial", "%s %s: serial port %s failed (%s: %s); reopening every %g s",
                      self.kind, self.name, self.port, type(err).__name__, err, self.reopen_interval_s)
        self._close_port()
        self.set_state(SensorState.FAILED, f"serial port {self.port} lost: {err}")

    def _try_reopen(self) -> None:
        if self._stop.wait(self._reopen_wait_s()):
            return
        with self._cond:
            self._counts["reopen_attempts"] += 1
        try:
            port = self._open_port()
        except DeviceUnavailable as err:
            self._ratelog(self.reopen_failure_log_level, "reopen", "%s", err)
            return
        if self._stop.is_set():
            port.close()
            return
        self._serial = port
        with self._cond:
            self._counts["reopens"] += 1
        self._log.info("%s %s: reopened %s", self.kind, self.name, self.port)
        self._after_port_open()
        self.set_state(SensorState.OK, f"port {self.port} reopened")
