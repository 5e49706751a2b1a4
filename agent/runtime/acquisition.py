"""Acquisition threads: read one device at its own rate into a bounded queue.

Why a thread per device: a spectrometer blocks for its 1 s accumulation, a GNSS receiver
delivers at 1-10 Hz and a camera at 30 fps; none may stall the others or the analysis loop.
The queue is bounded (a unit that falls behind drops the *oldest* readings and counts the drops,
rather than growing until it is killed for memory), and device errors degrade the sensor's
state instead of stopping the agent: after repeated failures the device is closed and re-opened
with exponential back-off.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from agent.hal.interfaces import Clock, Device, DeviceError, SensorState

log = logging.getLogger(__name__)


class BoundedQueue:
    """A FIFO that drops the oldest item when full, counting the drops."""

    def __init__(self, maxsize: int) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.dropped = 0

    def put(self, item: Any) -> None:
        while True:
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout_s: float) -> Any:
        return self._q.get(timeout=timeout_s)

    def get_nowait(self) -> Any:
        return self._q.get_nowait()

    def qsize(self) -> int:
        return self._q.qsize()


class AcquisitionThread(threading.Thread):
    """Calls ``read()`` on a device in a loop and queues the readings."""

    def __init__(self, device: Device, read: Callable[[], Any], out: BoundedQueue, clock: Clock,
                 stop: threading.Event, failures_before_reopen: int = 3, max_backoff_s: float = 30.0) -> None:
        super().__init__(name=f"acq-{device.kind}", daemon=True)
        self.device = device
        self._read = read
        self.out = out
        self.clock = clock
        self._stop_event = stop
        self.failures_before_reopen = failures_before_reopen
        self.max_backoff_s = max_backoff_s
        self.errors = 0
        self.readings = 0
        self.last_reading_mono_s: float | None = None

    def run(self) -> None:
        consecutive = 0
        backoff_s = 1.0
        while not self._stop_event.is_set():
            if self.device.state in (SensorState.NOT_OPENED, SensorState.CLOSED, SensorState.FAILED):
                try:
                    self.device.open()
                    backoff_s = 1.0
                    consecutive = 0
                except DeviceError as err:
                    log.error("%s %s unavailable: %s (retry in %.0f s)", self.device.kind,
                              self.device.name, err, backoff_s)
                    self._stop_event.wait(backoff_s / max(self.clock.rate, 1.0))
                    backoff_s = min(backoff_s * 2, self.max_backoff_s)
                    continue
            try:
                item = self._read()
            except DeviceError as err:
                self.errors += 1
                consecutive += 1
                log.warning("%s %s read failed (%d in a row): %s", self.device.kind, self.device.name,
                            consecutive, err)
                if consecutive >= self.failures_before_reopen:
                    self.device.set_state(SensorState.FAILED, str(err))
                    self.device.close()
                    self.device.set_state(SensorState.FAILED, str(err))
                else:
                    self.device.set_state(SensorState.DEGRADED, str(err))
                continue
            except Exception as err:  # a driver bug must not kill the unit
                self.errors += 1
                consecutive += 1
                log.exception("%s %s: unexpected error in read", self.device.kind, self.device.name)
                self.device.set_state(SensorState.DEGRADED, f"{type(err).__name__}: {err}")
                self._stop_event.wait(0.5)
                continue
            consecutive = 0
            if self.device.state == SensorState.DEGRADED and getattr(item, "valid", True):
                self.device.set_state(SensorState.OK)
            self.readings += 1
            self.last_reading_mono_s = self.clock.monotonic_s()
            self.out.put(item)
