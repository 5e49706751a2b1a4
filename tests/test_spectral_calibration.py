"""Calibration fitting and gain-drift tracking from natural background lines."""

from __future__ import annotations

import numpy as np
import pytest

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.calibration import (
    GainTracker,
    apply_gain,
    energy_to_channel,
    estimate_gain,
    fit_calibration,
)
from agent.spectral.detector import detector_model

NAI = detector_model("NaI 2x2 in")
NOMINAL = EnergyCalibration((0.0, 2.9, 4e-5))
LINES = [(1460.8, 1.0), (2614.5, 0.25), (609.3, 0.6), (351.9, 0.4), (238.6, 0.5), (911.2, 0.25)]


def _background(gain: float, counts_scale: float, rng: np.random.Generator) -> np.ndarray:
    """Background-like spectrum whose pulse heights are ``gain`` times nominal."""
    ch = np.arange(1024, dtype=float)
    e_true = NOMINAL.energy_kev(ch / gain)  # energy deposited that lands in each channel
    de = np.gradient(e_true)
    expected = counts_scale * (30.0 * np.exp(-e_true / 250.0) + 0.5) * de / 2.9
    for e, a in LINES:
        sig = float(NAI.sigma_kev(e))
        expected += counts_scale * 40 * a * np.exp(-0.5 * ((e_true - e) / sig) ** 2) * de / (np.sqrt(2 * np.pi) * sig)
    return rng.poisson(expected)


def test_apply_gain_moves_lines_by_the_gain() -> None:
    cal = apply_gain(NOMINAL, 1.05)
    c_nom = float(energy_to_channel(NOMINAL, 1460.8, 1024))
    c_new = float(energy_to_channel(cal, 1460.8, 1024))
    assert c_new == pytest.approx(1.05 * c_nom, rel=1e-6)
    with pytest.raises(ValueError, match="positive"):
        apply_gain(NOMINAL, 0.0)


@pytest.mark.parametrize("gain", [0.94, 0.985, 1.0, 1.03, 1.06])
def test_estimate_gain_from_background_lines(gain: float) -> None:
    counts = _background(gain, 20.0, np.random.default_rng(int(gain * 1000)))
    est = estimate_gain(counts, NOMINAL, NAI)
    assert est is not None
    assert est.gain == pytest.approx(gain, abs=0.004)
    assert 1460.75 in est.lines_kev and est.uncertainty < 0.01


def test_no_estimate_without_lines() -> None:
    flat = np.random.default_rng(1).poisson(2.0, 1024)
    assert estimate_gain(flat, NOMINAL, NAI, min_snr=8.0) is None


def test_tracker_accumulates_then_corrects() -> None:
    rng = np.random.default_rng(3)
    tracker = GainTracker(NOMINAL, NAI, 1024, accumulate_s=300.0)
    est = None
    for _ in range(4):  # 4 x 100 s: the estimate comes once 300 s are in
        est = tracker.update(_background(1.04, 5.0, rng), 100.0) or est
    assert est is not None and tracker.gain == pytest.approx(1.04, abs=0.005)
    c = float(energy_to_channel(tracker.calibration, 1460.8, 1024))
    assert c == pytest.approx(1.04 * float(energy_to_channel(NOMINAL, 1460.8, 1024)), rel=0.005)


def test_fit_calibration_recovers_polynomial() -> None:
    ch = np.array([50.0, 220.0, 500.0, 900.0])
    e = 1.5 + 2.8 * ch + 3e-5 * ch**2
    cal = fit_calibration(ch, e, degree=2)
    assert cal.coefficients_kev == pytest.approx((1.5, 2.8, 3e-5), rel=1e-6)
    with pytest.raises(ValueError, match="need >= 3"):
        fit_calibration(ch[:2], e[:2], degree=2)
