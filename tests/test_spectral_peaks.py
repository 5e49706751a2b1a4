"""Matched-filter peak search on synthetic spectra with known peaks and on the real RadiaCode file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.detector import detector_model
from agent.spectral.peaks import PeakSearch, find_peaks
from agent.spectral_files import read_n42

RADIACODE_N42 = Path(__file__).resolve().parents[2] / "shared" / "spectra" / "radiacode102_am241.n42"
CAL = EnergyCalibration((0.0, 3.0, 0.0))
NAI = detector_model("NaI 2x2 in")


def _spectrum(peaks: list[tuple[float, float]], continuum: float, rng: np.random.Generator) -> np.ndarray:
    e = CAL.energy_kev(np.arange(1024))
    expected = continuum * np.exp(-e / 400.0) + 0.5
    for energy, area in peaks:
        sig = float(NAI.sigma_kev(energy)) / 3.0  # channels
        expected += area * np.exp(-0.5 * ((np.arange(1024) - energy / 3.0) / sig) ** 2) / (np.sqrt(2 * np.pi) * sig)
    return rng.poisson(expected)


def test_finds_known_peaks_with_areas() -> None:
    rng = np.random.default_rng(7)
    truth = [(122.0, 4000.0), (661.7, 3000.0), (1173.2, 1500.0), (1332.5, 1500.0), (2614.5, 600.0)]
    counts = _spectrum(truth, 200.0, rng)
    peaks = find_peaks(counts, CAL, NAI, min_snr=5.0)
    for energy, area in truth:
        near = [p for p in peaks if abs(p.energy_kev - energy) < 0.3 * NAI.fwhm_kev(energy)]
        assert near, f"missed {energy} keV"
        assert near[0].area_counts == pytest.approx(area, rel=0.2)
    assert len(peaks) <= len(truth) + 1


def test_no_peaks_on_a_smooth_continuum() -> None:
    rng = np.random.default_rng(8)
    false = sum(len(find_peaks(_spectrum([], 300.0, rng), CAL, NAI, min_snr=5.0)) for _ in range(20))
    assert false <= 2


def test_sparse_one_second_spectrum_gives_finite_snr() -> None:
    counts = np.zeros(1024)
    counts[[100, 400, 401]] = 1
    resp, snr = PeakSearch(CAL, NAI, 1024).filter(counts)
    assert np.all(np.isfinite(snr)) and snr.max() < 5.0


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="expected 1024 channels"):
        PeakSearch(CAL, NAI, 1024).filter(np.zeros(512))


def test_real_radiacode_am241_peak() -> None:
    r = read_n42(RADIACODE_N42).foreground().reading
    peaks = find_peaks(r.counts, r.calibration, detector_model(r.detector_model), min_snr=10.0)
    strongest = max(peaks, key=lambda p: p.snr)
    # the 59.5 keV line; CsI(Tl) non-proportionality (more light per keV at 60 keV than at 662 keV) puts it
    # ~3 keV high on the device's calibration, read as SpecUtils/InterSpec read it (lower channel edges)
    assert 59.5 <= strongest.energy_kev <= 64.0
