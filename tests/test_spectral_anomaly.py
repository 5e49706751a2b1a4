"""Moving-detector anomaly detection: NMF background, Poisson template statistic, thresholds from FAR."""

from __future__ import annotations

import numpy as np
import pytest

from agent.spectral.anomaly import (
    AnomalyDetector,
    count_alarm_events,
    fit_nmf,
    gross_zscores,
    spectral_statistics,
    threshold_from_null_distribution,
    threshold_from_training,
    window_sums,
)

M = 60


def _components() -> np.ndarray:
    x = np.arange(M)
    a = np.exp(-x / 15.0)
    b = np.exp(-0.5 * ((x - 35) / 3.0) ** 2) + 0.2 * np.exp(-x / 30.0)
    c = np.exp(-0.5 * ((x - 12) / 2.0) ** 2) + 0.1
    return np.array([a / a.sum(), b / b.sum(), c / c.sum()])


def _background(n: int, rng: np.random.Generator, scale: float = 300.0) -> np.ndarray:
    w = _components()
    h = scale * rng.uniform(0.3, 1.0, size=(n, 3))
    return rng.poisson(h @ w).astype(float)


def _template() -> np.ndarray:
    t = np.exp(-0.5 * ((np.arange(M) - 24) / 1.5) ** 2) + 0.05 * (np.arange(M) < 20)
    return (t / t.sum())[None, :]


def test_nmf_recovers_the_background_subspace() -> None:
    rng = np.random.default_rng(1)
    train = _background(400, rng, 3000.0)
    basis = fit_nmf(train, n_components=3, seed=0)
    assert basis.shape == (3, M) and np.allclose(basis.sum(axis=1), 1.0) and np.all(basis >= 0)
    # new background spectra are non-negative combinations of the learnt basis (to Poisson noise)
    from scipy.optimize import nnls

    test = _background(50, rng, 3000.0)
    chi2 = []
    for row in test:
        coef, _ = nnls(basis.T / np.sqrt(row + 1)[:, None], row / np.sqrt(row + 1))
        mu = basis.T @ coef
        chi2.append(np.sum((row - mu) ** 2 / np.maximum(mu, 1.0)) / (M - 3))
    assert np.median(chi2) < 1.5


def test_statistic_separates_source_from_background() -> None:
    rng = np.random.default_rng(2)
    basis = _components()
    bg = _background(300, rng)
    q_bg, _ = spectral_statistics(bg, basis, _template(), 30)
    src = bg + rng.poisson(60.0 * _template()[0], size=bg.shape)
    q_src, j = spectral_statistics(src, basis, _template(), 30)
    assert np.median(q_bg) < 2.0 and np.quantile(q_bg, 0.99) < 12.0
    assert np.median(q_src) > 15.0 and np.all(j == 0)


def test_thresholds_from_far() -> None:
    t1 = threshold_from_null_distribution(1.0, 3600.0, 10)
    t2 = threshold_from_null_distribution(0.1, 3600.0, 10)
    assert t2 > t1 > 0
    rng = np.random.default_rng(3)
    null = rng.exponential(2.0, 200_000)
    thr = threshold_from_training(null, far_per_hour=0.5, tests_per_hour=3600.0)
    # exact exponential quantile for p = 0.5 / 3600
    assert thr == pytest.approx(-2.0 * np.log(0.5 / 3600.0), rel=0.05)
    with pytest.raises(ValueError, match=">= 1000"):
        threshold_from_training(null[:10], 1.0, 3600.0)


def test_alarm_events_merge_close_seconds() -> None:
    alarm = np.zeros(100, dtype=bool)
    alarm[[10, 11, 13, 40, 80, 81]] = True
    assert count_alarm_events(alarm, merge_gap_s=5) == 3
    assert count_alarm_events(np.zeros(5, dtype=bool)) == 0


def test_window_sums_and_gross_z() -> None:
    x = np.ones((10, 2))
    assert window_sums(x, 3)[5].tolist() == [3.0, 3.0]
    gross = np.full(100, 1000.0)
    gross[70:72] += 200.0
    z = gross_zscores(gross, 2, background_s=30)
    assert np.isnan(z[10]) and z[71] == pytest.approx(400.0 / np.sqrt(2000.0))


def test_streaming_detector_alarms_on_a_pass_by() -> None:
    rng = np.random.default_rng(4)
    basis = _components()
    det = AnomalyDetector(basis, _template(), threshold=25.0, gross_threshold=8.0, windows_s=(1, 2, 4))
    results = []
    for t in range(80):
        x = _background(1, rng)[0]
        if 50 <= t < 54:  # a source for 4 s
            x = x + rng.poisson(40.0 * _template()[0])
        results.append(det.update(x))
    assert not any(r.alarm for r in results[:50])
    assert any(r.alarm for r in results[50:58])
    with pytest.raises(ValueError, match=f"expected {M} bins"):
        det.update(np.zeros(M + 1))
