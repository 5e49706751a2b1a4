"""Gross-count k-sigma detector: false alarms on background, detection and position on a pass-by."""

from __future__ import annotations

import numpy as np
import pytest

from agent.analysis.gross_count import (
    GrossCountDetector,
    Interval,
    dwell_significance,
    nominal_false_alarm_rate_per_h,
)


def _iv(t: float, counts: int, x: float | None = None) -> Interval:
    return Interval(t_mono_s=t, t_utc="2026-01-01T00:00:00.000Z", live_time_s=1.0, gross_counts=int(counts),
                    x_m=x, y_m=0.0 if x is not None else None, z_m=1.5 if x is not None else None)


def test_background_only_gives_no_alarm_at_5_sigma() -> None:
    rng = np.random.default_rng(1)
    det = GrossCountDetector(threshold_sigma=5.0, window_s=2, background_tau_s=60, warmup_s=20)
    alarms = [a for t, n in enumerate(rng.poisson(2000, 20_000)) if (a := det.update(_iv(t, n)))]
    assert alarms == []
    assert det.background_cps == pytest.approx(2000, rel=0.02)


def test_false_alarm_rate_near_nominal_at_low_threshold() -> None:
    """At k=3 the episodes per hour must be of the order of the nominal rate (not 10x above it)."""
    rng = np.random.default_rng(2)
    det = GrossCountDetector(threshold_sigma=3.0, window_s=2, background_tau_s=120, warmup_s=30, holdoff_s=0)
    n = 36_000
    alarms = [a for t, c in enumerate(rng.poisson(1500, n)) if (a := det.update(_iv(t, c)))]
    per_h = len(alarms) / (n / 3600)
    nominal = nominal_false_alarm_rate_per_h(3.0, 1.0)  # one window started per 1 s interval
    assert 0.3 * nominal < per_h < 1.5 * nominal


def test_pass_by_alarm_at_closest_approach_and_background_kept() -> None:
    rng = np.random.default_rng(3)
    v, d0, x_src, s_peak = 5.0, 5.0, 300.0, 1500.0
    det = GrossCountDetector(threshold_sigma=5.0, window_s=2, background_tau_s=60, warmup_s=20)
    alarms = []
    for t in range(150):
        # position at the middle of the interval; expected counts integrated over the second
        x_mid = v * (t - 0.5)
        xs = v * (t - 1 + np.linspace(0, 1, 21))
        rate = 2000 + s_peak * np.mean(d0**2 / (d0**2 + (xs - x_src) ** 2))
        a = det.update(_iv(float(t), rng.poisson(rate), x_mid))
        if a:
            alarms.append(a)
    assert len(alarms) == 1
    a = alarms[0]
    assert a.significance_sigma > 10
    assert abs(a.x_m - x_src) < 2.5  # half a 1 s interval at 5 m/s is 2.5 m
    assert a.background_cps == pytest.approx(2000, rel=0.03)


def test_dwell_significance() -> None:
    assert abs(dwell_significance(100 * 60, 100.0, 60.0, 120.0)) < 0.5
    assert dwell_significance(130 * 60, 100.0, 60.0, 120.0) > 10
    assert dwell_significance(80 * 60, 100.0, 60.0, 120.0) < -5


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        GrossCountDetector(threshold_sigma=0)
