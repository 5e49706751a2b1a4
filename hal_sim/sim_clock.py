"""Simulated time: one time line shared by every process of a simulation, running ``rate`` x real time.

Why anchored to the wall clock's epoch seconds: the demo runs each unit's agent and the
controller as separate processes; if each counted its own start, their simulated clocks would
disagree by the start-up skew.  With ``wall_start_s`` passed to all of them (epoch seconds,
``time.time()`` at the launcher), simulated UTC = scenario start + (now - wall_start) x rate is
the same in every process to within the hosts' clock sync.

:class:`ManualClock` is for tests: ``sleep`` advances time instantly, so a 1 s spectrum costs no
wall time and runs are exactly reproducible.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from agent.hal.interfaces import Clock
from hal_sim.scenario import parse_utc

MONOTONIC_OFFSET_S = 1000.0  # so monotonic time is never 0 (0 is often "unset" in the agent)


class SimClock(Clock):
    """Simulated clock: ``utc_now() = start_utc + (time.time() - wall_start_s) * rate``.

    ``monotonic_s()`` is simulated seconds since the start plus 1000, and never goes backwards
    even if the host clock is stepped (it holds until the host clock catches up).
    """

    def __init__(self, start_utc: str, rate: float = 1.0, wall_start_s: float | None = None) -> None:
        if not rate > 0:
            raise ValueError(f"SimClock rate must be > 0, got {rate}")
        self._start = parse_utc(start_utc)
        self._rate = float(rate)
        self._wall_start = time.time() if wall_start_s is None else float(wall_start_s)
        self._last = -float("inf")
        self._lock = threading.Lock()

    @property
    def start_utc(self) -> datetime:
        return self._start

    @property
    def wall_start_s(self) -> float:
        return self._wall_start

    def elapsed_s(self) -> float:
        """Simulated seconds since the scenario start (monotonic)."""
        e = (time.time() - self._wall_start) * self._rate
        with self._lock:
            if e < self._last:
                return self._last
            self._last = e
            return e

    def monotonic_s(self) -> float:
        return self.elapsed_s() + MONOTONIC_OFFSET_S

    def utc_now(self) -> datetime:
        return self._start + timedelta(seconds=self.elapsed_s())

    def sleep(self, duration_s: float) -> None:
        if duration_s > 0:
            time.sleep(duration_s / self._rate)

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def utc_valid(self) -> bool:
        return True


class ManualClock(Clock):
    """A clock that moves only when slept on or advanced: for deterministic tests.

    With several threads sleeping on it, every sleep advances the one shared time line, so
    time runs faster than any single thread expects; use it from one thread.  ``rate`` stays the
    base class's 1.0 so wall-time guards derived from it (watchdogs) keep sane values.
    """

    def __init__(self, start_utc: str, elapsed_s: float = 0.0) -> None:
        self._start = parse_utc(start_utc)
        self._elapsed = float(elapsed_s)
        self._lock = threading.Lock()

    @property
    def start_utc(self) -> datetime:
        return self._start

    def elapsed_s(self) -> float:
        return self._elapsed

    def advance(self, duration_s: float) -> None:
        if duration_s > 0:
            with self._lock:
                self._elapsed += float(duration_s)

    def monotonic_s(self) -> float:
        return self._elapsed + MONOTONIC_OFFSET_S

    def utc_now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def sleep(self, duration_s: float) -> None:
        self.advance(duration_s)
