"""Source height (controller.localization.height): profile likelihood over the column's height range.

Counts come from the localizer's own transport kernel (cargo mu known to the generator, not to the
fit), so these tests check the method's logic - bounds, the mirror about the detector plane, which
rows count as seeing the source, the position-error term - not accuracy against hal_sim (that is
``cedge bench localize`` and the demo replay in docs/localization.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from controller.localization import LocalizationParams, MeasurementSet, locate, site_from_dict
from controller.localization.kernels import source_terms

MU_AIR = 0.0093
SITE = {
    "schema": 1, "name": "height-test",
    "container": {"length_m": 12.19, "width_m": 2.44, "height_m": 2.59, "wall_m": 0.002},
    "rows": [{"id": "A", "x0_m": 10.0, "y0_m": 0.0, "n_bays": 4, "stack": 2},
             {"id": "B", "x0_m": 10.0, "y0_m": 12.0, "n_bays": 4, "stack": 2}],
}
SOURCE = np.array([30.0, 12.4, 1.0])  # bottom tier of B-2, 0.5 m below the detectors
STACK_TOP_M = 2 * 2.59


def _pass(rng: np.random.Generator, y: float, h: float, unit: str, t0: float, strength: float,
          xs: np.ndarray, model: str = "NaI 2x4x16") -> dict[str, list]:
    site = site_from_dict(SITE)
    lo, hi = site.lo_hi()
    sub = np.stack([np.column_stack([xs - 2.5 + 5.0 * (q + 0.5) / 10, np.full(len(xs), y), np.full(len(xs), h)])
                    for q in range(10)], axis=1).reshape(-1, 3)
    term, _, _ = source_terms(sub, SOURCE, lo, hi, site.group_index(), np.full(len(site.groups), 1.0), MU_AIR,
                              0.09, False)
    g = term.reshape(len(xs), 10).mean(axis=1)
    return {"t": list(t0 + np.arange(len(xs)) + 0.5), "xyz": [(x, y, h) for x in xs], "live": [0.97] * len(xs),
            "counts": list(rng.poisson(0.97 * (1500.0 + strength * g)).astype(float)),
            "chan": [(unit, "d0", model)] * len(xs)}


def _ms(passes: list[dict[str, list]], position_sigma_m: float = 0.0) -> MeasurementSet:
    cat = {k: sum((p[k] for p in passes), []) for k in passes[0]}
    return MeasurementSet.from_track(np.array(cat["t"]), np.array(cat["xyz"], dtype=float), np.array(cat["live"]),
                                     np.array(cat["counts"]), cat["chan"], position_sigma_m=position_sigma_m)


def _two_lanes(seed: int) -> list[dict[str, list]]:
    rng = np.random.default_rng(seed)
    xs = np.arange(-5.0, 65.0, 5.0) + 2.5
    return [_pass(rng, 7.2, 1.5, "v1", 0.0, 2e5, xs), _pass(rng, 19.2, 1.5, "v2", 100.0, 2e5, xs[::-1])]


def _params(**kw: object) -> LocalizationParams:
    return LocalizationParams(site=site_from_dict(SITE), position_sigma_m=None, max_sources=1, **kw)  # type: ignore[arg-type]


def test_height_stays_in_the_column_and_its_sigma_covers_the_truth() -> None:
    est = locate(_ms(_two_lanes(1)), _params()).sources[0]
    assert est.column == "B-2"
    assert 0.0 <= est.z_m <= STACK_TOP_M
    assert 0.0 <= est.z_interval_m[0] <= est.z_interval_m[1] <= STACK_TOP_M
    assert abs(est.z_m - SOURCE[2]) <= 1.96 * est.sigma_z_m
    assert est.cov[2, 2] == pytest.approx(est.sigma_z_m**2)
    assert np.all(np.linalg.eigvalsh(est.cov[:3, :3]) >= -1e-9)  # a covariance, with the xy-z coupling


def test_height_sigma_is_bounded_by_the_column_where_the_fisher_value_is_not() -> None:
    """At 0.5 m below the detector plane dr/dz ~ 0: the Fisher height sigma was 80-4500 m on these
    seeds.  The profile's posterior over the column (uniform prior) cannot be wider than a uniform
    over the column, and still holds the truth."""
    for seed in (5, 6):
        ms = _ms(_two_lanes(seed), 1.0)
        est = locate(ms, _params()).sources[0]
        assert 0.3 <= est.sigma_z_m <= STACK_TOP_M / np.sqrt(12.0) + 1e-6
        assert abs(est.z_m - SOURCE[2]) <= 1.96 * est.sigma_z_m
        assert not est.z_resolved and "not resolved" in est.height_note
        fisher = locate(ms, _params(profile_height=False)).sources[0]  # the old path, kept for comparison
        assert fisher.sigma_z_m > STACK_TOP_M / np.sqrt(12.0)  # wider than knowing nothing but the column


def test_a_far_detector_at_another_height_does_not_make_the_height_resolved() -> None:
    """A handheld (1.0 m) 38 m away in the same fusion: it does not see the source, so the geometry
    is still single-height and the height error keeps its single-height terms."""
    rng = np.random.default_rng(3)
    lanes = _two_lanes(3)
    far = _pass(rng, -25.0, 1.0, "hh", 300.0, 0.0, np.full(40, -8.0), model="NaI 2x2")
    alone = locate(_ms(lanes, 1.0), _params()).sources[0]
    mixed = locate(_ms([*lanes, far], 1.0), _params()).sources[0]
    assert mixed.sigma_z_m >= 0.8 * alone.sigma_z_m


def test_position_error_widens_the_height_interval() -> None:
    """A track known to 1 m (GNSS, fix quality 1) smears the count profile: the height interval
    must be wider than with exact positions."""
    lanes = _two_lanes(4)
    exact = locate(_ms(lanes, 0.0), _params()).sources[0]
    gnss = locate(_ms(lanes, 1.0), _params()).sources[0]
    assert gnss.sigma_z_m > exact.sigma_z_m
