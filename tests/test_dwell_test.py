"""Handheld confirm/clear: a scaled natural background is cleared, a source is confirmed."""

from __future__ import annotations

import numpy as np
import pytest

from agent.analysis.dwell_test import dwell_test

gamma = pytest.importorskip("hal_sim.gamma")


@pytest.fixture(scope="module")
def nai():  # noqa: ANN201
    return gamma.DetectorResponse.for_model("NaI 2x2 in", n_channels=1024)


def _spectra(nai, rng, source_cps_spec=None, norm_factor: float = 1.0):  # noqa: ANN001, ANN202
    bg_rate = nai.background_rate_spectrum(0.08)
    terr = nai.background_rate_spectrum(0.08 * 0.65, cosmic_fraction=0.0)  # soil K/U/Th part only
    dwell_rate = bg_rate + (norm_factor - 1.0) * terr
    if source_cps_spec is not None:
        dwell_rate = dwell_rate + source_cps_spec
    bg, bg_live = nai.sample(bg_rate * 120.0, 120.0, rng)
    dw, dw_live = nai.sample(dwell_rate * 60.0, 60.0, rng)
    energy = nai.calibration.energy_kev(np.arange(nai.n_channels))
    return dw, dw_live, bg, bg_live, energy


@pytest.mark.parametrize("seed", range(5))
def test_plain_background_is_cleared(nai, seed: int) -> None:  # noqa: ANN001
    v = dwell_test(*_spectra(nai, np.random.default_rng(seed)))
    assert not v.confirmed
    assert abs(v.gross_sigma) < 4 and v.shape_sigma < 4


@pytest.mark.parametrize("seed", range(5))
def test_norm_patch_is_elevated_but_cleared(nai, seed: int) -> None:  # noqa: ANN001
    v = dwell_test(*_spectra(nai, np.random.default_rng(100 + seed), norm_factor=1.3))
    assert v.gross_sigma > 5  # a gross-count test alone would confirm this
    assert not v.confirmed and "natural" in v.reason


@pytest.mark.parametrize("seed", range(5))
def test_shielded_cs137_at_4m_is_confirmed(nai, seed: int) -> None:  # noqa: ANN001
    src = nai.source_rate_spectrum("Cs-137", 5e6, 4.0, shielding=[("iron", 6.0)])
    v = dwell_test(*_spectra(nai, np.random.default_rng(200 + seed), source_cps_spec=src))
    assert v.confirmed and v.shape_sigma >= 5


def test_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError):
        dwell_test(np.ones(10), 1.0, np.ones(11), 1.0, np.arange(10.0))
