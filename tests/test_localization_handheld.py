"""The handheld's guided search (controller.localization.handheld_search).

Counts here come from the search's own transport term with Poisson noise, so these tests check
the machinery (posterior, planning around walls, fallback, guidance), not the accuracy against
an independent simulator: that is ``cedge bench localize`` (``handheld_success_rate``, hal_sim).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.localization import SourceEstimate, site_from_dict
from controller.localization.handheld_search import HandheldSearch, SearchConfig, walk_grid
from controller.localization.kernels import source_terms

SITE = site_from_dict({
    "schema": 1, "name": "test-yard",
    "container": {"length_m": 12.19, "width_m": 2.44, "height_m": 2.59, "wall_m": 0.002},
    "rows": [{"id": "A", "x0_m": 10.0, "y0_m": 0.0, "n_bays": 3, "gap_m": 0.3, "stack": 2},
             {"id": "B", "x0_m": 10.0, "y0_m": 12.0, "n_bays": 3, "gap_m": 0.3, "stack": 2}],
})
BG_CPS = 60.0


def _estimate(x: float, y: float, z: float, sigma_xy: float = 1.0, z_resolved: bool = False) -> SourceEstimate:
    cov = np.diag([sigma_xy**2, sigma_xy**2, 1.5**2])
    return SourceEstimate(
        x_m=x, y_m=y, z_m=z, strength=1e5, cov=cov, sigma_x_m=sigma_xy, sigma_y_m=sigma_xy, sigma_z_m=1.5,
        sigma_xy_m=sigma_xy * math.sqrt(2), ellipse_major_m=sigma_xy, ellipse_minor_m=sigma_xy,
        ellipse_angle_deg=0.0, n_measurements=100, n_units=1, converged=True, deviance=100.0, dof=95,
        p_value=0.4, ambiguous=False, candidates=(), z_resolved=z_resolved, z_interval_m=(0.0, 5.18),
        mu_cargo_per_m={"A": 1.0, "B": 1.0},
    )


def _counts(truth: np.ndarray, at: tuple[float, float, float], t_s: float, strength: float,
            rng: np.random.Generator) -> float:
    lo, hi = SITE.lo_hi()
    mu = np.ones(len(SITE.groups))
    g = source_terms(truth[None, :], np.asarray(at, dtype=float), lo, hi, SITE.group_index(), mu, 0.0093, 0.09,
                     False)[0][0]
    return float(rng.poisson(t_s * (BG_CPS + strength * g)))


def _run(search: HandheldSearch, truth: np.ndarray, strength: float, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    here = (0.0, -10.0)
    modes = []
    for _ in range(search.config.max_points + 1):
        g, k = search.guide(here)
        modes.append(g.mode)
        if k is None:
            break
        here = (g.x_m, g.y_m)
        for h in g.heights_m:
            search.add(g.x_m, g.y_m, h, search.config.dwell_s,
                       _counts(truth, (g.x_m, g.y_m, h), search.config.dwell_s, strength, rng), stand=k)
    return modes


def test_guided_search_converges_on_the_source_from_an_offset_estimate() -> None:
    truth = np.array([30.0, 13.6, 1.2])  # row B, bay 2, near its south wall
    search = HandheldSearch(_estimate(31.5, 14.6, 2.5), SITE, BG_CPS, SearchConfig())
    prior = search.posterior()
    assert math.dist((prior["x_m"], prior["y_m"]), truth[:2]) > 1.0
    modes = _run(search, truth, strength=2e4)
    post = search.posterior()
    est = np.array(search.estimate_xyz())
    assert np.linalg.norm(est - truth) < 0.6, (est, truth, modes)
    assert post["radius_95_m"] <= search.config.stop_radius_m or len(search.measured) == search.config.max_points
    assert modes[-1] == "done" or modes[-1] == "final" or len(search.measured) == search.config.max_points
    assert "gradient" not in modes  # the model explains its own counts


def test_stand_points_are_in_front_of_walls_and_never_in_a_gap_or_inside() -> None:
    search = HandheldSearch(_estimate(30.0, 13.0, 1.0), SITE, BG_CPS, SearchConfig())
    assert search.stands
    for sp in search.stands:
        assert SITE.column_at(sp.x_m, sp.y_m) is None
        col = SITE.columns[sp.column]
        # at the standoff from the face it belongs to
        d = {"S": col.lo[1] - sp.y_m, "N": sp.y_m - col.hi[1], "W": col.lo[0] - sp.x_m, "E": sp.x_m - col.hi[0]}
        assert d[sp.face] == pytest.approx(search.config.standoff_m)
    # the 0.3 m gap between bays is not a stand point (end faces inside a row are not reachable)
    inner_ends = [sp for sp in search.stands if sp.face in ("W", "E") and 10.5 < sp.x_m < 46.0]
    assert inner_ends == []


def test_walking_distance_goes_around_the_containers_and_bearing_is_from_north() -> None:
    grid = walk_grid(SITE, (-10.0, -15.0, 70.0, 30.0))
    dist, _pred = grid.distances(25.0, -1.0)  # south of row A, mid-row
    i, j = grid.nearest_free(25.0, 3.5)  # north of row A (in the lane between A and B)
    straight = 4.5
    assert dist[i, j] > straight + 10.0  # round the end of the row, not through the containers
    from controller.localization.handheld_search import guidance

    bearing, walk = guidance(grid, grid.distances(0.0, -10.0), (0.0, -10.0), (0.0, -5.0))
    assert bearing == pytest.approx(0.0, abs=1.0) or bearing == pytest.approx(360.0, abs=1.0)
    assert walk == pytest.approx(5.0, abs=0.6)
    bearing, _ = guidance(grid, grid.distances(0.0, -10.0), (0.0, -10.0), (6.0, -10.0))
    assert bearing == pytest.approx(90.0, abs=1.0)


def test_counts_the_hypotheses_cannot_explain_switch_to_the_count_rate_gradient() -> None:
    # the fused estimate points at bay 1 of row B; the source is in the open just west of the row,
    # outside every hypothesis (which are inside cargo): the wall counts do not fit any of them
    truth = np.array([8.0, 13.0, 1.0])
    search = HandheldSearch(_estimate(14.0, 13.5, 1.0, sigma_xy=0.5), SITE, BG_CPS, SearchConfig(max_points=6))
    modes = _run(search, truth, strength=2e6, seed=3)
    assert search.best_chi2() / len(search.dwells) > search.config.misfit_per_dwell
    assert search.model_misfit()
    assert "gradient" in modes
    assert search.mode == "gradient"
    assert len(search.measured) <= search.config.max_points


def test_bad_dwell_is_an_error_and_changes_nothing() -> None:
    search = HandheldSearch(_estimate(30.0, 13.0, 1.0), SITE, BG_CPS)
    before = search.posterior()
    for bad in ((30.0, 11.0, 1.0, 0.0, 100.0), (30.0, 11.0, 1.0, 10.0, -5.0), (math.nan, 11.0, 1.0, 10.0, 100.0)):
        with pytest.raises(ValueError, match="handheld dwell"):
            search.add(*bad)
    assert search.posterior()["x_m"] == before["x_m"]
    assert not search.dwells


def test_guidance_note_names_bearing_distance_and_heights() -> None:
    search = HandheldSearch(_estimate(30.0, 13.0, 1.0), SITE, BG_CPS)
    g, k = search.guide((0.0, -10.0))
    assert k is not None and g.mode == "information"
    assert g.walk_m > math.hypot(g.x_m - 0.0, g.y_m + 10.0) - 0.6
    assert "bearing" in g.note and "0.5 and 1.8 m" in g.note
    assert 0.0 <= g.bearing_deg < 360.0
