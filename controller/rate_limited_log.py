"""Log lines and tracebacks that a flood of bad input cannot multiply.

Why: one malformed message per millisecond must cost one log line per interval, not one line
(or a 15-line traceback) per message (issue 14, row 11). The first occurrence of a key is logged
at once, with its traceback if it has one; repeats within ``interval_s`` are only counted, and the
next line that gets through says how many were suppressed, so nothing is hidden, only summarised.
"""

from __future__ import annotations

import logging
from collections import Counter

from agent.hal.interfaces import Clock

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """At most one log line per key per interval; the next one says how many were suppressed."""

    def __init__(self, clock: Clock, interval_s: float, logger: logging.Logger | None = None):
        self._clock = clock
        self._interval_s = interval_s
        self._log = logger or logging.getLogger(__name__)
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    @property
    def suppressed(self) -> dict[str, int]:
        """Lines held back per key since that key was last logged."""
        return dict(self._suppressed)

    def _due(self, key: str) -> int | None:
        """Suppressed count to report if ``key`` may log now, else None (and the repeat is counted)."""
        now = self._clock.monotonic_s()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] += 1
            return None
        if len(self._last) > 10_000:  # keys come from reason codes and ids; never let them grow unbounded
            self._last.clear()
        self._last[key] = now
        return self._suppressed.pop(key, 0)

    def _emit(self, level: int, key: str, msg: str, args: tuple[object, ...], exc_info: bool) -> None:
        n = self._due(key)
        if n is None:
            return
        self._log.log(level, msg + (f" (+{n} similar suppressed)" if n else ""), *args, exc_info=exc_info)

    def warning(self, key: str, msg: str, *args: object) -> None:
        self._emit(logging.WARNING, key, msg, args, False)

    def error(self, key: str, msg: str, *args: object) -> None:
        self._emit(logging.ERROR, key, msg, args, False)

    def exception(self, key: str, msg: str, *args: object) -> None:
        """ERROR with the current traceback, at most once per interval per key."""
        self._emit(logging.ERROR, key, msg, args, True)
