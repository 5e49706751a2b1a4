"""NMEA reports -> one :class:`~agent.hal.interfaces.GnssFix` per epoch, merged the way gpsd does.

Why epochs: a receiver describes one navigation solution in several sentences (RMC + GGA + GSA
from a u-blox, GPGGA + GLGGA + GNRMC from a SiRFstarV, GNS + GLL + ZDA from a marine receiver,
GGA + ZDA from a timing receiver).  Each carries part of it - GGA the altitude and satellites,
RMC the date and speed, ZDA a four-digit year - and only together do they make a fix.  Taking
each sentence on its own (the previous driver) loses GNS/GLL/ZDA-only receivers entirely and
stamps GGA fixes with no date.

The merging follows gpsd (drivers/driver_nmea0183.c, nmea_parse(): "The end-of-cycle detector",
BSD-2): sentences belong to the same epoch while their UTC time of day agrees to 10 ms; a
timed sentence with a new time of day starts a new epoch, and the sentence type that came last
before it is learned as a *cycle ender*, so from the second epoch on a fix is emitted as soon as
the ender arrives, without waiting for the next epoch.  Sentence types are compared without the
talker (GPGGA and GNGGA are both GGA), as gpsd does.  A caller that stops receiving (silence, end
of a log) calls :meth:`NmeaEpochAssembler.flush`.

Where this driver differs from gpsd, on purpose:

* Validity: the epoch is a fix only if at least one sentence states a fix with a position and no
  sentence of the epoch states otherwise.  Estimated (dead reckoning), manual and simulator
  modes (GGA quality 6/7/8, mode E/M/S) are not fixes (gpsd reports simulated positions with
  status 8 and a mode 2/3).
* Dates: from ZDA (four-digit year) or RMC; a date from an RMC with status V is used only until a
  date from a valid RMC or a ZDA is known (some receivers put garbage dates into void RMCs, as
  gpsd notes for the MTK3301).  Sentences without a date of their own take the last date, across
  midnight when their time of day jumps back by more than 12 h.  A
  :class:`~drivers.gps_week_rollover.WeekRolloverGuard` then repairs rolled-over dates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime

from agent.hal.interfaces import FixQuality, GnssFix
from drivers.gps_week_rollover import WeekRolloverGuard
from drivers.nmea_sentences import GgaReport, GnsReport, NmeaReport, RmcReport, ZdaReport

__all__ = ["EPOCH_TOLERANCE_S", "MIN_FIX_SATELLITES", "NmeaEpochAssembler"]

EPOCH_TOLERANCE_S = 0.01  # gpsd: "0.01 < fabs(delta)" starts a new reporting cycle
MIN_FIX_SATELLITES = 3
_VALID = frozenset({FixQuality.GPS, FixQuality.DGPS, FixQuality.PPS, FixQuality.RTK, FixQuality.FLOAT_RTK})
# why an epoch is not a fix, most telling first
_INVALID_ORDER = (FixQuality.SIMULATION, FixQuality.ESTIMATED, FixQuality.MANUAL, FixQuality.INVALID)


def _seconds_of_day(t: dtime) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def _same_time(a: float, b: float) -> bool:
    d = abs(a - b)
    return min(d, 86400.0 - d) <= EPOCH_TOLERANCE_S


@dataclass
class _Epoch:
    tod_s: float  # seconds of day of the first timed sentence
    time_utc: dtime  # time of day of the latest timed sentence (what gpsd reports)
    reports: list[NmeaReport] = field(default_factory=list)
    dirty: bool = True  # changed since last emitted
    last_formatter: str = ""


class NmeaEpochAssembler:
    """Feed parsed reports in arrival order; get back the fixes they complete.

    Not thread-safe (the driver calls it under its lock).  Memory is bounded: one epoch of
    reports (capped) and a handful of learned sentence types.
    """

    MAX_REPORTS_PER_EPOCH = 64  # a receiver sends ~5-20 timed sentences an epoch; more is a loop

    def __init__(self, rollover: WeekRolloverGuard | None = None) -> None:
        self.rollover = rollover
        self.cycle_enders: set[str] = set()
        self.epochs = 0  # epochs completed
        self._epoch: _Epoch | None = None
        self._date_ref: datetime | None = None  # newest (date + time) seen
        self._date_trusted = False  # _date_ref came from a ZDA or a valid RMC
        self._lat = math.nan  # last known position (a fix-loss fix keeps it)
        self._lon = math.nan
        # Altitude is in GGA/GNS only.  A receiver sending neither gives valid fixes with no height;
        # 0 m keeps ENU conversions finite (horizontal error h * d / R_earth, 1.6 cm per 100 m of
        # height at 1 km from the origin, far below GNSS noise) where NaN would poison them.
        self._alt = 0.0
        self._last_t_mono_s = 0.0

    # -- public
    @property
    def pending(self) -> bool:
        """An epoch has news not yet emitted (the driver flushes it after a quiet spell)."""
        return self._epoch is not None and self._epoch.dirty

    def feed(self, report: NmeaReport, t_mono_s: float) -> list[GnssFix]:
        """Add one report; returns the fixes completed by it (usually zero or one)."""
        self._last_t_mono_s = t_mono_s
        out: list[GnssFix] = []
        if report.time_utc is None:
            # No time of day (a receiver without a fix may leave it empty: "$GPRMC,,V,...").  It
            # belongs to no epoch; end the current one and report what this sentence says.
            self._learn_date(report)
            out.extend(self._finish(t_mono_s))
            fix = self._make_fix([report], None, t_mono_s)
            if fix is not None:
                out.append(fix)
            return out
        tod = _seconds_of_day(report.time_utc)
        ep = self._epoch
        if ep is not None and not _same_time(ep.tod_s, tod):
            # A new time of day: the previous epoch is over and its last sentence type ends cycles.
            if ep.last_formatter:
                self.cycle_enders.add(ep.last_formatter)
            out.extend(self._finish(t_mono_s))
            ep = None
        if ep is None:
            ep = self._epoch = _Epoch(tod_s=tod, time_utc=report.time_utc)
        if len(ep.reports) < self.MAX_REPORTS_PER_EPOCH:
            ep.reports.append(report)
        ep.time_utc = report.time_utc
        ep.last_formatter = report.formatter
        ep.dirty = True
        self._learn_date(report)
        if report.formatter in self.cycle_enders:
            fix = self._emit(ep, t_mono_s)
            if fix is not None:
                out.append(fix)
        return out

    def flush(self, t_mono_s: float | None = None) -> GnssFix | None:
        """End the current epoch now (receiver quiet, end of a log); its fix if it had news."""
        fixes = self._finish(self._last_t_mono_s if t_mono_s is None else t_mono_s)
        return fixes[-1] if fixes else None

    # -- epochs
    def _finish(self, t_mono_s: float) -> list[GnssFix]:
        ep, self._epoch = self._epoch, None
        if ep is None or not ep.dirty:
            return []
        self.epochs += 1
        fix = self._emit(ep, t_mono_s)
        return [] if fix is None else [fix]

    def _emit(self, ep: _Epoch, t_mono_s: float) -> GnssFix | None:
        ep.dirty = False
        return self._make_fix(ep.reports, ep.time_utc, t_mono_s)

    # -- dates
    def _learn_date(self, report: NmeaReport) -> None:
        day: date | None = None
        trusted = False
        if isinstance(report, ZdaReport):
            day, trusted = report.date_utc, True
        elif isinstance(report, RmcReport):
            day, trusted = report.date_utc, report.valid
        if day is None or report.time_utc is None or (self._date_trusted and not trusted):
            return
        self._date_ref = datetime.combine(day, report.time_utc)
        self._date_trusted = trusted

    def _utc(self, reports: list[NmeaReport], tod: dtime | None) -> datetime | None:
        """Date + time of day of an epoch, or None while no date is known."""
        if tod is None:
            return None
        own = [r for r in reports if isinstance(r, ZdaReport | RmcReport) and r.date_utc is not None
               and r.time_utc is not None]
        zda = [r for r in own if isinstance(r, ZdaReport)]
        rmc_valid = [r for r in own if isinstance(r, RmcReport) and r.valid]
        chosen = (zda or rmc_valid or ([] if self._date_trusted else own))
        if chosen:
            r = chosen[-1]
            assert r.date_utc is not None and r.time_utc is not None
            ref = datetime.combine(r.date_utc, r.time_utc)
        elif self._date_ref is not None:
            ref = self._date_ref
        else:
            return None
        t = datetime.combine(ref.date(), tod)
        if t - ref < -timedelta(hours=12):
            t += timedelta(days=1)
        elif t - ref > timedelta(hours=12):
            t -= timedelta(days=1)
        return self.rollover.correct(t) if self.rollover is not None else t

    # -- the fix
    def _make_fix(self, reports: list[NmeaReport], tod: dtime | None, t_mono_s: float) -> GnssFix | None:
        """Merge one epoch's reports.  None when none of them says anything about a fix (ZDA)."""
        fixers = [r for r in reports if not isinstance(r, ZdaReport)]
        if not fixers:
            return None
        valid = [r for r in fixers if r.quality in _VALID and r.lat_deg is not None and r.lon_deg is not None]
        refusing = [r.quality for r in fixers if r.quality not in _VALID]
        # GGA/GNS know DGPS from RTK and carry altitude, satellites and HDOP.
        solution = [r for r in fixers if isinstance(r, GgaReport | GnsReport)]
        rmc = [r for r in fixers if isinstance(r, RmcReport)]
        counted = [r.num_satellites for r in solution if isinstance(r, GgaReport) and r.satellites_given
                   and r.quality in _VALID]
        if counted and max(counted) < MIN_FIX_SATELLITES:
            # GGA says "fix" with fewer than 3 satellites in use (2D needs 3): on its own that is a
            # held position (Hemisphere, quality 1 with "00"), so GGA does not vouch for the fix;
            # another sentence of the epoch still can (a Garmin Foretrex sends DGPS fixes with
            # "00" in GGA and status A in RMC and GLL).  gpsd ends up the same way.  The maximum
            # over the epoch's GGAs, because a SiRFstarV counts per constellation (GPGGA 08 +
            # GLGGA 02).
            valid = [r for r in valid if not isinstance(r, GgaReport)]
            if not valid:
                refusing.append(FixQuality.INVALID)
        if valid and not refusing:
            best = valid[-1]  # the last position stated, as gpsd reports it
            assert best.lat_deg is not None and best.lon_deg is not None
            self._lat, self._lon = best.lat_deg, best.lon_deg
            with_alt = [r for r in solution if r.alt_m is not None and r.quality in _VALID]
            if with_alt:
                self._alt = with_alt[-1].alt_m  # type: ignore[assignment]
            specific = [r.quality for r in solution if r.quality in _VALID] or [r.quality for r in valid]
            quality = specific[-1]
            moving = [r for r in rmc if r.valid]
            speed = moving[-1].speed_m_s if moving else None
            course = moving[-1].course_deg if moving else None
        else:
            quality = next((q for q in _INVALID_ORDER if q in refusing), FixQuality.INVALID)
            speed = course = None
        sats = solution[-1].num_satellites if solution else 0
        hdop = solution[-1].hdop if solution and quality in _VALID else None
        return GnssFix(
            t_utc=self._utc(reports, tod),
            t_mono_s=t_mono_s,
            lat_deg=self._lat,
            lon_deg=self._lon,
            alt_m=self._alt,
            quality=quality,
            num_satellites=sats,
            hdop=hdop,
            speed_m_s=speed,
            course_deg=course,
        )

