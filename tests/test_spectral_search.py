"""Mobile spectral search and the handheld verdict, on spectra from the detector simulator."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from agent.analysis.episode import Interval
from agent.analysis.handheld_verdict import judge_dwell
from agent.analysis.spectral_search import SpectralSearch
from agent.hal.interfaces import SpectrumReading

gamma = pytest.importorskip("hal_sim.gamma")
LOG = "NaI 2x4x16 in log"
NAI2 = "NaI 2x2 in"


def _reading(resp, counts: np.ndarray, live: float, model: str, t: float) -> SpectrumReading:  # noqa: ANN001
    return SpectrumReading(counts=counts, live_time_s=live, real_time_s=1.0, calibration=resp.calibration,
                           t_utc=datetime.now(UTC), t_mono_s=t, detector_model=model)


def test_pass_by_gives_one_alarm_at_closest_approach_naming_the_nuclide() -> None:
    resp = gamma.DetectorResponse.for_model(LOG)
    rng = np.random.default_rng(3)
    search = SpectralSearch(far_per_hour=0.125, training_s=120.0)
    v, x_src, d0 = 5.0, 1000.0, 6.0  # passed at k = 200, after training
    alarms = []
    for k in range(240):
        # NORM varies along the road by +-15 %
        bg = resp.background_rate_spectrum(0.08 * (1.0 + 0.15 * np.sin(k / 17.0)))
        xs = v * (k - 1 + np.linspace(0, 1, 5))
        rate = bg.copy()
        if k > 150:  # after training: a 20 MBq Cs-137 behind 5 g/cm2 of steel, passed at 6 m
            for x in xs:
                dist = float(np.hypot(x - x_src, d0))
                rate += resp.source_rate_spectrum("Cs-137", 2e7, dist, [("iron", 5.0)]) / len(xs)
        counts, live = resp.sample(rate, 1.0, rng)
        r = _reading(resp, counts, live, LOG, float(k))
        iv = Interval(t_mono_s=float(k), t_utc="2026-01-01T00:00:00Z", live_time_s=live,
                      gross_counts=int(counts.sum()), x_m=v * (k - 0.5), y_m=0.0, z_m=1.5)
        _, alarm = search.update(r, iv)
        if alarm:
            alarms.append(alarm)
    assert search.trained
    assert len(alarms) == 1
    a = alarms[0]
    assert abs(a.x_m - x_src) < 5.0
    assert a.identification.top == "Cs-137"
    assert a.dose_rate_usv_h is not None and a.dose_rate_usv_h > 0.08


@pytest.fixture(scope="module")
def nai2():  # noqa: ANN201
    return gamma.DetectorResponse.for_model(NAI2)


def test_handheld_confirms_cs137_with_activity_lower_bound(nai2) -> None:  # noqa: ANN001
    rng = np.random.default_rng(1)
    bg_rate = nai2.background_rate_spectrum(0.08)
    bg, bg_live = nai2.sample(bg_rate * 120.0, 120.0, rng)
    activity_mbq, distance = 20.0, 2.0
    src = nai2.source_rate_spectrum("Cs-137", activity_mbq * 1e6, distance, [("iron", 5.0)])
    dw, dw_live = nai2.sample((bg_rate + src) * 60.0, 60.0, rng)
    v = judge_dwell(dw, dw_live, bg, bg_live, nai2.calibration, NAI2, distance)
    assert v.confirmed and v.nuclides[0][0] == "Cs-137"
    assert v.activity_mbq is not None and 0.3 * activity_mbq < v.activity_mbq <= 1.1 * activity_mbq


def test_handheld_clears_potassium_rich_ground(nai2) -> None:  # noqa: ANN001
    """A fertiliser store: twice the K-40 of the operator's post. Elevated, shaped differently, natural."""
    rng = np.random.default_rng(2)
    bg_rate = nai2.background_rate_spectrum(0.08)
    bg, bg_live = nai2.sample(bg_rate * 120.0, 120.0, rng)
    k_rich = nai2.background_rate_spectrum(0.12, k40_bq_kg=1500.0)
    dw, dw_live = nai2.sample(k_rich * 60.0, 60.0, rng)
    v = judge_dwell(dw, dw_live, bg, bg_live, nai2.calibration, NAI2, 2.0)
    assert v.gross_sigma > 5
    assert not v.confirmed
    assert "natural" in v.reason or "background-shaped" in v.reason
