"""Alarm episodes of a moving detector, and where along the track the source was passed.

Why shared: every search detector (gross-count, spectral) answers "is this second anomalous";
an operator needs one alarm per pass, reported where the vehicle passed the source.  An episode
starts at the first anomalous interval, ends after ``quiet_intervals`` normal ones (or at
``max_duration_s``), and is located at the count-rate maximum along the track, refined by a
parabola through the peak interval and its neighbours (a pass-by profile ~ d0^2/(d0^2 + v^2 t^2)
is locally parabolic at its top).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Interval:
    """One acquisition interval as a detector sees it (position at the middle of the interval)."""

    t_mono_s: float  # end of the interval
    t_utc: str
    live_time_s: float
    gross_counts: int
    x_m: float | None = None
    y_m: float | None = None
    z_m: float | None = None


@dataclass(frozen=True, slots=True)
class TrackPeak:
    t_mono_s: float
    t_utc: str
    peak_cps: float
    x_m: float | None
    y_m: float | None
    z_m: float | None


def track_peak(intervals: list[Interval], interval_s: float) -> TrackPeak:
    """Count-rate maximum of an episode, refined between intervals by a parabola."""
    cps = [i.gross_counts / i.live_time_s if i.live_time_s > 0 else 0.0 for i in intervals]
    j = max(range(len(cps)), key=cps.__getitem__)
    frac = 0.0  # in units of intervals
    if 0 < j < len(cps) - 1:
        den = cps[j - 1] - 2 * cps[j] + cps[j + 1]
        if den < 0:
            frac = max(-0.5, min(0.5, 0.5 * (cps[j - 1] - cps[j + 1]) / den))
    peak = intervals[j]
    other = intervals[j + 1] if frac > 0 else intervals[j - 1] if frac < 0 else peak
    w = abs(frac)

    def lerp(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a + (b - a) * w

    return TrackPeak(t_mono_s=peak.t_mono_s + frac * interval_s, t_utc=peak.t_utc, peak_cps=cps[j],
                     x_m=lerp(peak.x_m, other.x_m), y_m=lerp(peak.y_m, other.y_m), z_m=lerp(peak.z_m, other.z_m))


@dataclass
class Episode:
    intervals: list[Interval] = field(default_factory=list)
    payload: list[Any] = field(default_factory=list)  # per-interval data a detector keeps (spectra)
    max_score: float = 0.0
    quiet: int = 0


class EpisodeTracker:
    """Turns per-interval verdicts into one episode per pass."""

    def __init__(self, quiet_intervals: int = 2, max_duration_s: float = 60.0, holdoff_s: float = 10.0) -> None:
        self.quiet_intervals = quiet_intervals
        self.max_duration_s = max_duration_s
        self.holdoff_s = holdoff_s
        self.current: Episode | None = None
        self._holdoff_until = float("-inf")

    @property
    def active(self) -> bool:
        return self.current is not None

    def update(self, iv: Interval, anomalous: bool, score: float, payload: Any = None,
               lead_in: list[tuple[Interval, Any]] | None = None) -> Episode | None:
        """Feed one interval; returns the finished episode when one has just ended."""
        if self.current is None:
            if anomalous and iv.t_mono_s >= self._holdoff_until:
                ep = Episode(max_score=score)
                for liv, lp in lead_in or []:
                    ep.intervals.append(liv)
                    ep.payload.append(lp)
                ep.intervals.append(iv)
                ep.payload.append(payload)
                self.current = ep
            return None
        ep = self.current
        ep.intervals.append(iv)
        ep.payload.append(payload)
        ep.max_score = max(ep.max_score, score)
        ep.quiet = 0 if anomalous else ep.quiet + 1
        if ep.quiet >= self.quiet_intervals or iv.t_mono_s - ep.intervals[0].t_mono_s >= self.max_duration_s:
            return self._close(iv.t_mono_s)
        return None

    def flush(self) -> Episode | None:
        if self.current is None:
            return None
        return self._close(self.current.intervals[-1].t_mono_s)

    def _close(self, t_mono_s: float) -> Episode:
        ep, self.current = self.current, None
        self._holdoff_until = t_mono_s + self.holdoff_s
        assert ep is not None
        return ep
