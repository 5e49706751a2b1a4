"""GPS week-number rollover guard: move receiver dates that are 1024 weeks (or a multiple) too old.

Why: GPS broadcasts the week number modulo 1024 (10 bits, IS-GPS-200 sec. 20.3.3.3.1.1).  A
receiver resolves it against an epoch baked into its firmware; once the real date passes that
epoch + 1024 weeks (19.6 years) it reports dates exactly 1024 weeks in the past.  The classic
symptoms are fixes dated 1999-08-22 (the 2019-04-06 rollover seen by receivers assuming the
1999 epoch) or 2019-04-07 on receivers of the next generation.  Time of day and position are
still right, only the date is off by a multiple of 7168 days - so the correction is exact.

A date can only be recognised as too old against something known to be newer:

* the build date of this software (``build_date``, configurable): live data cannot predate the
  program receiving it - the rule gpsd applies (timebase.c, gpsd_utc_resolve(), which checks
  against its build-time leap-second date);
* the system clock, when it is set (later than the build date, i.e. not a Raspberry Pi without
  RTC booting at 1970): a live receiver's true date is within seconds of it, a rolled-over one
  about 1024 weeks behind.  The floor is 1024 weeks minus one year before the clock, so a clock
  that is up to a year off still tells a rolled-over date from a true one.

Dates are moved forward by whole 1024-week steps until they are no longer below the floor.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

__all__ = ["GPS_WEEK_ROLLOVER", "WeekRolloverGuard"]

GPS_WEEK_ROLLOVER = timedelta(weeks=1024)  # 7168 days
CLOCK_MARGIN = timedelta(weeks=52)  # system clock error tolerated before a true date looks rolled over
_MAX_STEPS = 8  # 160 years: beyond that the date is garbage, not a rollover


class WeekRolloverGuard:
    """Correct receiver dates against the build date and, when it is set, the system clock."""

    def __init__(self, build_date: date | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.build_date = build_date
        self._clock = clock
        self.corrections = 0  # dates moved forward since construction

    def floor(self) -> datetime | None:
        """Earliest plausible receiver time, or None when nothing is known (no guard)."""
        floors: list[datetime] = []
        built = None if self.build_date is None else datetime.combine(self.build_date, time(), tzinfo=UTC)
        if built is not None:
            floors.append(built)
        if self._clock is not None:
            now = self._clock()
            if now.tzinfo is None:
                now = now.replace(tzinfo=UTC)
            clock_set = now.year >= 2000 if built is None else now >= built
            if clock_set:
                floors.append(now - GPS_WEEK_ROLLOVER + CLOCK_MARGIN)
        return max(floors) if floors else None

    def correct(self, t_utc: datetime) -> datetime:
        """``t_utc`` moved forward by whole 1024-week steps until it is not below :meth:`floor`."""
        lo = self.floor()
        if lo is None or t_utc >= lo:
            return t_utc
        steps = -((t_utc - lo) // GPS_WEEK_ROLLOVER)  # ceil((lo - t) / 1024 weeks)
        if steps > _MAX_STEPS:
            return t_utc
        self.corrections += 1
        return t_utc + steps * GPS_WEEK_ROLLOVER
