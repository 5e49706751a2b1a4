"""The real unit's clock: CLOCK_MONOTONIC for intervals, the system clock for UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from agent.hal.interfaces import Clock

# Before this date the system clock cannot be right (no RTC battery, no NTP yet).
_EARLIEST_VALID_UTC = datetime(2024, 1, 1, tzinfo=UTC)


class SystemClock(Clock):
    def monotonic_s(self) -> float:
        return time.monotonic()

    def utc_now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, duration_s: float) -> None:
        if duration_s > 0:
            time.sleep(duration_s)

    @property
    def utc_valid(self) -> bool:
        return self.utc_now() >= _EARLIEST_VALID_UTC
