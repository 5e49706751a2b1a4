"""H*(10) from spectra with the fitted G(E) weighting, checked against ICRP 74 point-source constants."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.detector import detector_model
from agent.spectral.dose import dose_weighting
from agent.spectral.library import LibraryError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"


def _constants() -> dict[str, float]:
    with (SHARED / "dose_rate_constants.csv").open() as fh:
        return {r["source"].split()[0]: float(r["hstar10_rate_constant_uSv_m2_per_MBq_h"]) for r in csv.DictReader(fh)}


def test_weighting_is_positive_and_zero_outside_its_range() -> None:
    w = dose_weighting(detector_model("NaI 2x2 in"))
    e = np.array([5.0, 40.0, 100.0, 662.0, 1500.0, 2900.0, 5000.0])
    g = w.g(e)
    assert g[0] == 0.0 and g[-1] == 0.0
    assert np.all(g[1:-1] > 0)
    # per count, high-energy photons carry more dose (their detection efficiency is lower)
    assert g[4] > g[3] > g[2]
    # weights start at the discriminator: Am-241's 26 keV photons (partly recorded) still count
    assert w.e_min_kev <= 26.0


def test_every_catalogued_model_has_a_weighting() -> None:
    models = ("NaI 2x2 in", "NaI 3x3 in", "NaI 2x4x16 in log", "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)", "LaBr3")
    for name in models:
        assert dose_weighting(detector_model(name)).coefficients.size >= 4
    with pytest.raises(LibraryError, match="no fitted G\\(E\\)"):
        from agent.spectral.detector import DetectorModel

        dose_weighting(DetectorModel("made-up", 0.0, 7.0, 0.5))


@pytest.mark.parametrize("nuclide", ["Cs-137", "Co-60", "Ba-133", "Ir-192", "Eu-152", "Am-241"])
@pytest.mark.parametrize("distance_m", [1.0, 3.0])
def test_point_source_dose_within_15_percent(nuclide: str, distance_m: float) -> None:
    from hal_sim.gamma import DetectorResponse

    sim = DetectorResponse.for_model("NaI 2x2 in")
    w = dose_weighting(detector_model(sim.model))
    k = _constants()[nuclide]
    a_mbq = 20.0
    rng = np.random.default_rng(5)
    counts, live = sim.sample(sim.source_rate_spectrum(nuclide, a_mbq * 1e6, distance_m) * 300.0, 300.0, rng)
    h, sd = w.dose_rate_usv_h(counts, live, sim.calibration)
    ref = k * a_mbq / distance_m**2
    assert h == pytest.approx(ref, rel=0.15)
    assert 0 < sd < 0.05 * h


def test_dose_rate_does_not_depend_on_counting_time() -> None:
    w = dose_weighting(detector_model("NaI 2x2 in"))
    cal = EnergyCalibration((0.0, 2.93, 0.0))
    counts = np.random.default_rng(1).poisson(10.0, 1024)
    h1, _ = w.dose_rate_usv_h(counts, 10.0, cal)
    h2, _ = w.dose_rate_usv_h(counts * 2, 20.0, cal)
    assert h1 == pytest.approx(h2)
    with pytest.raises(ValueError, match="live time"):
        w.dose_rate_usv_h(counts, 0.0, cal)
