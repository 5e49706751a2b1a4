"""The RASE-style benchmark and the identifier's "unknown" and SNM rules on a real NaI instrument's spectra.

The base spectra are the RASE generic-NaI set (LLNL, MIT licence) in ../shared/spectra; the tests
draw a few samples the way the benchmark does and check the rules that matter to an operator:
out-of-library sources are called unknown and never SNM; a known source is named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cedge.bench.rase import (
    DEFAULT_BASE_DIR,
    SNM,
    _Analyser,
    draw,
    load_base_set,
    nuclide_from_name,
    run_grid,
    summarise,
)

MODEL = "NaI generic (RASE)"
pytestmark = pytest.mark.skipif(not DEFAULT_BASE_DIR.is_dir(), reason="shared RASE base spectra not present")


@pytest.fixture(scope="module")
def bases():
    return load_base_set(DEFAULT_BASE_DIR)


def test_file_names_give_nuclides() -> None:
    assert nuclide_from_name("VABCD_M001_Tc99M") == "Tc-99m"
    assert nuclide_from_name("VABCD_M001_Cs137") == "Cs-137"
    assert nuclide_from_name("VABCD_M001_Bgnd") == "background"
    assert nuclide_from_name("notes") is None


def test_base_set_reads_every_rase_file(bases) -> None:
    assert len(bases.sources) == 17 and not bases.skipped
    cs = bases.sources["Cs-137"]
    assert cs.sensitivity_cps_per_usv_h == pytest.approx(1046.05754)
    assert cs.shape.sum() == pytest.approx(1.0) and np.all(cs.shape >= 0)


def test_draw_has_the_rase_expectation(bases) -> None:
    rng = np.random.default_rng(1)
    cs, bg = bases.sources["Cs-137"], bases.background
    n = np.mean([draw(cs, bg, 1.0, 30.0, rng).sum() for _ in range(50)])
    expected = (cs.sensitivity_cps_per_usv_h * 1.0 + bg.sensitivity_cps_per_usv_h * 0.08) * 30.0
    assert n == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("nuclide", ["Cs-137", "Co-60", "Ir-192", "Am-241"])
def test_check_and_industrial_sources_are_named(bases, nuclide: str) -> None:
    rng = np.random.default_rng(11)
    analyse = _Analyser(bases, MODEL, rng, n_backgrounds=1)
    base = bases.sources[nuclide]
    outs = [analyse(draw(base, bases.background, 0.3, 30.0, rng), 30.0, base.calibration) for _ in range(3)]
    assert all(nuclide in o.reported for o in outs), [o.reported for o in outs]
    assert not any(n in SNM for o in outs for n in o.reported)


def test_out_of_library_sources_are_unknown_and_never_snm(bases) -> None:
    """Co-57 without Co-57 in the library: the fit's best stand-in (Tc-99m, 140.5 keV) leaves the 122 keV
    peak unexplained; Ir-192 without Ir-192: Np-237's 312 keV line must not pass for its 316 keV line."""
    rng = np.random.default_rng(5)
    analyse = _Analyser(bases, MODEL, rng, n_backgrounds=1)
    for nuclide in ("Co-57", "Ir-192", "Tl-201"):
        base = bases.sources[nuclide]
        for _ in range(3):
            out = analyse(draw(base, bases.background, 1.0, 120.0, rng), 120.0, base.calibration, exclude=(nuclide,))
            assert out.unknown, (nuclide, out.reported)
            assert not any(n in SNM for n in out.reported), (nuclide, out.reported)


def test_grid_summary_has_the_issue_keys(bases, tmp_path: Path) -> None:
    small = type(bases)({k: bases.sources[k] for k in ("Cs-137", "Co-57")}, bases.background)
    grid = run_grid(small, MODEL, 1, 3, {"Cs-137", "Co-57"}, background_trials=2)
    s = summarise(grid)
    for key in ("pid_by_nuclide", "pid_in_library", "false_id_rate_background", "snm_false_alarm_rate",
                "unknown_rate_out_of_library", "dose_rel_error_p90", "ms_per_spectrum_p50", "confidence_calibration"):
        assert key in s
    assert s["pid_by_nuclide"]["Cs-137"]["all"] == 1.0
    assert s["snm_false_alarms"] == 0
