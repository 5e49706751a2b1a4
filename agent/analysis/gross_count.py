"""Gross-count k-sigma alarm against a running background estimate.

Why this detector: it is the classic radiation-portal-monitor / mobile-search baseline (ANSI
N42.35 / N42.43 style gross-count alarms): sum the counts of a short sliding window, compare with
the background expected over the same live time, and alarm when the excess is more than k
standard deviations.  It is what spectral methods are measured against, so it must be right:

* the background is an exponentially weighted moving average of the count rate with time
  constant ``background_tau_s``, updated from every interval outside an alarm episode, so a
  source does not raise its own baseline while it alarms;
* the variance of the test statistic includes the uncertainty of the background estimate
  itself: an EWMA over tau seconds of a Poisson rate B has variance ~ B / (2 tau), so the window
  sum N over live time T has var(N - B T) = B T + T^2 B / (2 tau);
* the significance is computed from that Gaussian approximation, which holds at the hundreds to
  thousands of counts per window of a vehicle detector (for a handheld dwell see
  :func:`dwell_significance`, which uses the exact Poisson tail);
* an alarm episode starts when z >= k and ends when z falls below k/2; the alarm is reported at
  the end of the episode, at the count-rate maximum along the track
  (:func:`agent.analysis.episode.track_peak`).

The nominal false-alarm rate is ``P(Z > k)`` times the windows started per hour (one per
interval); because sliding windows overlap and an episode spans several, this is an upper bound.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass, field

from scipy import stats

from agent.analysis.episode import Interval, track_peak


@dataclass(frozen=True, slots=True)
class GrossCountAlarm:
    alarm_id: str
    significance_sigma: float
    peak_cps: float
    background_cps: float
    t_peak_mono_s: float
    t_peak_utc: str
    x_m: float | None
    y_m: float | None
    z_m: float | None
    threshold_sigma: float
    false_alarm_rate_per_h: float
    n_intervals: int


@dataclass
class _Episode:
    intervals: list[Interval] = field(default_factory=list)
    max_z: float = 0.0
    below_count: int = 0


def nominal_false_alarm_rate_per_h(threshold_sigma: float, interval_s: float) -> float:
    return float(stats.norm.sf(threshold_sigma) * 3600.0 / interval_s)


def dwell_significance(counts: float, background_cps: float, live_time_s: float,
                       background_live_time_s: float) -> float:
    """Significance (sigma) of a dwell count against a measured background, exact Poisson tail.

    The background itself was measured for ``background_live_time_s``; its uncertainty is folded
    in by inflating the expected count's variance (Li & Ma 1983 would be the on/off alternative).
    """
    expected = background_cps * live_time_s
    if expected <= 0:
        return 0.0 if counts <= 0 else float("inf")
    var = expected + expected**2 / max(background_cps * background_live_time_s, 1e-9)
    if counts <= expected:
        return (counts - expected) / math.sqrt(var)
    # Poisson tail for the count, then widen by the background-uncertainty factor.
    p = float(stats.poisson.sf(counts - 1, expected))
    if p < 1e-300:  # beyond double precision: the Gaussian limit is accurate out there
        return (counts - expected) / math.sqrt(var)
    z_poisson = float(stats.norm.isf(p))
    return z_poisson * math.sqrt(expected / var)


class GrossCountDetector:
    """Streaming k-sigma detector; feed it one :class:`Interval` at a time."""

    def __init__(self, threshold_sigma: float = 5.0, window_s: int = 2, background_tau_s: float = 60.0,
                 warmup_s: float = 20.0, holdoff_s: float = 10.0, interval_s: float = 1.0,
                 max_episode_s: float = 60.0) -> None:
        if threshold_sigma <= 0 or window_s < 1 or background_tau_s <= 0:
            raise ValueError("threshold_sigma, window_s and background_tau_s must be positive")
        self.threshold_sigma = threshold_sigma
        self.window = window_s
        self.tau_s = background_tau_s
        self.warmup_s = warmup_s
        self.holdoff_s = holdoff_s
        self.interval_s = interval_s
        self.max_episode_s = max_episode_s
        self.background_cps: float | None = None
        self._bg_time_s = 0.0
        self._recent: deque[Interval] = deque(maxlen=window_s + 2)
        self._episode: _Episode | None = None
        self._holdoff_until = -math.inf
        self.last_z = 0.0
        self.far_per_h = nominal_false_alarm_rate_per_h(threshold_sigma, interval_s)

    @property
    def in_alarm(self) -> bool:
        return self._episode is not None

    def _update_background(self, iv: Interval) -> None:
        if iv.live_time_s <= 0:
            return
        rate = iv.gross_counts / iv.live_time_s
        if self.background_cps is None:
            self.background_cps = rate
        else:
            a = 1.0 - math.exp(-iv.live_time_s / self.tau_s)
            self.background_cps += a * (rate - self.background_cps)
        self._bg_time_s += iv.live_time_s

    def _window_z(self) -> float:
        if self.background_cps is None or self.background_cps <= 0:
            return 0.0
        win = list(self._recent)[-self.window:]
        n = sum(i.gross_counts for i in win)
        t = sum(i.live_time_s for i in win)
        if t <= 0:
            return 0.0
        b = self.background_cps
        tau_eff = min(self.tau_s, max(self._bg_time_s, 1e-9))
        var = b * t + t * t * b / (2.0 * tau_eff)
        return (n - b * t) / math.sqrt(var)

    def update(self, iv: Interval) -> GrossCountAlarm | None:
        """Process one interval; return an alarm when an excess episode has just ended."""
        self._recent.append(iv)
        z = self._window_z() if self._bg_time_s >= self.warmup_s else 0.0
        self.last_z = z
        k = self.threshold_sigma
        if self._episode is None:
            if z >= k and iv.t_mono_s >= self._holdoff_until:
                self._episode = _Episode(intervals=list(self._recent)[-self.window - 1:], max_z=z)
                return None
            # Every interval outside an alarm episode feeds the background: excluding the upper
            # tail (a guard below k) biases the estimate low and raises the false-alarm rate
            # (measured: guard at k/2 doubles it); tau >> pass-by time limits contamination.
            self._update_background(iv)
            return None
        ep = self._episode
        ep.intervals.append(iv)
        ep.max_z = max(ep.max_z, z)
        ep.below_count = ep.below_count + 1 if z < k / 2.0 else 0
        duration = ep.intervals[-1].t_mono_s - ep.intervals[0].t_mono_s
        if ep.below_count >= 2 or duration >= self.max_episode_s:
            self._episode = None
            self._holdoff_until = iv.t_mono_s + self.holdoff_s
            return self._make_alarm(ep)
        return None

    def flush(self) -> GrossCountAlarm | None:
        """End an open episode (shutdown, end of run) and report it."""
        if self._episode is None:
            return None
        ep, self._episode = self._episode, None
        return self._make_alarm(ep)

    def _make_alarm(self, ep: _Episode) -> GrossCountAlarm:
        peak = track_peak(ep.intervals, self.interval_s)
        return GrossCountAlarm(
            alarm_id=uuid.uuid4().hex[:16],
            significance_sigma=round(ep.max_z, 2),
            peak_cps=peak.peak_cps,
            background_cps=float(self.background_cps or 0.0),
            t_peak_mono_s=peak.t_mono_s,
            t_peak_utc=peak.t_utc,
            x_m=peak.x_m,
            y_m=peak.y_m,
            z_m=peak.z_m,
            threshold_sigma=self.threshold_sigma,
            false_alarm_rate_per_h=self.far_per_h,
            n_intervals=len(ep.intervals),
        )
