"""Embedded nuclide library, detector resolution models and the detector response tables."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from agent.spectral.detector import detector_model, detector_models
from agent.spectral.library import LibraryError, default_library, parse_half_life_s
from agent.spectral.response import response_table, shield_transmission

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"

ISSUE_LIBRARY = ["Co-60", "Cs-137", "Ir-192", "Se-75", "Am-241", "Ba-133", "Eu-152", "Co-57", "Na-22", "Mn-54",
                 "Cs-134", "I-131", "Tc-99m", "F-18", "Ga-67", "Tl-201", "K-40", "Ra-226", "Th-232", "U-235",
                 "U-238", "Pu-239"]
# ANSI N42.34 identification list (medical, SNM) and every nuclide of the RASE NaI base-spectrum set
N42_34_AND_RASE = ["I-123", "I-125", "In-111", "Xe-133", "Cr-51", "Sm-153", "Pd-103", "U-233", "Np-237",
                   "Eu-154", "Yb-169", "Cf-252", "Cm-244", "Cm-243", "Sr-90"]


def test_library_has_the_n42_34_and_rase_sources_with_labels() -> None:
    lib = default_library()
    assert sorted(lib.names) == sorted(ISSUE_LIBRARY + N42_34_AND_RASE)
    assert lib["HEU"].name == "U-235" and lib["WGPu"].name == "Pu-239"
    assert lib["Cs-137"].category == "industrial" and lib["K-40"].category == "NORM"
    assert {s.name for s in lib.sources if s.category == "SNM"} == {"U-233", "U-235", "Pu-239", "Np-237"}
    assert lib["U-238"].category == "NORM" and lib["Th-232"].category == "NORM"
    assert lib["Yb-169"].energies_kev[np.argmax(lib["Yb-169"].yields)] == pytest.approx(50.74)
    with pytest.raises(LibraryError, match="unknown library source 'Xx-1'"):
        lib["Xx-1"]


def test_embedded_lines_match_the_shared_reference() -> None:
    """The package copy must carry the reference numbers (the product may not read ../shared)."""
    lib = default_library()
    with (SHARED / "gamma_lines.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    cs = [r for r in rows if r["source"].startswith("Cs-137")]
    e = lib["Cs-137"].energies_kev
    y = lib["Cs-137"].yields
    for r in cs:
        i = int(np.argmin(np.abs(e - float(r["energy_keV"]))))
        assert e[i] == pytest.approx(float(r["energy_keV"]))
        assert y[i] == pytest.approx(float(r["photons_per_100_decays"]) / 100)
    assert lib["Cs-137"].half_life_s == pytest.approx(30.17 * 365.25 * 86400)
    assert parse_half_life_s("109.77 min") == pytest.approx(6586.2)
    # Am-241 carries its Np L x-rays (DDEP) besides the 59.5 keV gamma
    assert np.any(np.isclose(lib["Am-241"].energies_kev, 13.9))


def test_resolution_models_reproduce_fwhm_at_662() -> None:
    with (SHARED / "detector_resolution.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        model = detector_models()[r["detector"]]
        assert float(model.fwhm_kev(662.0)) == pytest.approx(float(r["fwhm_662_keV"]), rel=0.035), r["detector"]
    nai = detector_model("NaI 2x2 in")
    f = nai.fwhm_kev(np.array([60.0, 662.0, 2614.0]))
    assert np.all(np.diff(f) > 0) and np.all(f / np.array([60.0, 662.0, 2614.0]) < 0.2)


def test_model_lookup_by_alias_and_unknown() -> None:
    assert detector_model("RadiaCode-102").name.startswith("CsI(Tl) 1 cm3")
    assert detector_model("nai 2x4x16 in log").name == "NaI 2x4x16 in log"
    assert detector_model("mystery", fallback="NaI 3x3 in").name == "NaI 3x3 in"
    with pytest.raises(LibraryError, match="unknown detector model 'mystery'"):
        detector_model("mystery", fallback=None)


def test_fitted_response_tables_are_physical() -> None:
    t = response_table(detector_model("NaI 2x2 in"))
    assert t.model == "NaI 2x2 in"
    peak = t.peaks["peak"]
    # photofraction falls with energy above ~100 keV; everything is a probability per photon
    hi = t.energies_kev > 150
    assert np.all(np.diff(peak[hi]) < 0)
    total = peak + t.continuum.sum(axis=1)
    assert np.all(total < 1.05) and np.all(t.continuum >= 0)
    assert 0.5 < t.peak("peak", 100.0) < 1.0 and 0.1 < t.peak("peak", 1332.0) < 0.4


def test_shield_transmission_matches_nist_iron() -> None:
    # NIST SRD 126 iron at 662 keV: mu/rho ~0.0738 cm2/g (interpolated 600-800 keV)
    t = float(shield_transmission("iron", 10.0, np.array([661.66]))[0])
    assert t == pytest.approx(np.exp(-0.0738 * 10.0), rel=0.02)
    assert shield_transmission("none", 10.0, np.array([100.0]))[0] == 1.0
    with pytest.raises(LibraryError, match="no attenuation data"):
        shield_transmission("unobtainium", 1.0, np.array([100.0]))
