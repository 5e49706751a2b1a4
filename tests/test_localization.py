"""Poisson ML source localization on synthetic drive-by data (seeded noise).

The free-space drives are generated independently of the localizer (a 40-step path integral of
1/r^2 with air attenuation, dead time and a fluctuating background); the site drives use the
localizer's own transport kernel with a known cargo attenuation, to test that the site model's
unknowns (position in a column, cargo mu, background) are identified.  Accuracy against an
independent simulator is measured by ``cedge bench localize``, not here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.localization import (
    IncrementalLocalizer,
    LocalizationParams,
    MeasurementSet,
    crlb_position,
    localize,
    locate,
    site_from_dict,
)
from controller.localization.kernels import source_terms

MU = 0.0093
SOURCE = np.array([50.0, 4.0, 1.0])
STRENGTH_CPS_M2 = 12000.0  # net cps at 1 m: a shielded ~200 MBq Cs-137 seen by a 2x4x16 NaI log
BACKGROUND_CPS = 1500.0
FREE = dict(position_sigma_m=0.0, mu_air_per_m=MU, model_error_sigma_m=0.0, model_error_sigma_z_m=0.0)


def drive(
    rng: np.random.Generator,
    y_lane: float,
    unit: int,
    x_from: float = 10.0,
    x_to: float = 90.0,
    speed_m_s: float = 5.0,
    height_m: float = 1.5,
    source: np.ndarray = SOURCE,
    strength: float = STRENGTH_CPS_M2,
    direction: int = 1,
    t0: float = 0.0,
    background: float = BACKGROUND_CPS,
) -> dict[str, np.ndarray]:
    """One straight pass at constant speed; 1-s intervals; the interval mid-point and mid time."""
    n = int((x_to - x_from) / speed_m_s)
    xs = x_from + speed_m_s * np.arange(n + 1)
    if direction < 0:
        xs = xs[::-1]
    start, end = xs[:-1], xs[1:]
    u = (np.arange(40) + 0.5) / 40
    px = start[:, None] + (end - start)[:, None] * u[None, :]
    r = np.sqrt((px - source[0]) ** 2 + (y_lane - source[1]) ** 2 + (height_m - source[2]) ** 2 + 0.09)
    g = (np.exp(-MU * r) / r**2).mean(axis=1)
    live = np.full(n, 0.97)
    bkg = np.full(n, background)
    counts = rng.poisson(live * (bkg * rng.normal(1.0, 0.01, n) + strength * g))
    mid = 0.5 * (start + end)
    return {
        "t": t0 + np.arange(n) + 0.5,
        "xyz": np.column_stack([mid, np.full(n, y_lane), np.full(n, height_m)]),
        "live": live,
        "counts": counts.astype(float),
        "bkg": bkg,
        "unit": [f"u{unit}"] * n,
        "det": ["d0"] * n,
    }


def merge(*passes: dict, background_known: bool = True, sigma: float = 0.0) -> MeasurementSet:
    cat = {k: np.concatenate([np.asarray(p[k]) for p in passes]) for k in passes[0]}
    channel = [(str(u), str(d), "NaI 2x4x16") for u, d in zip(cat["unit"], cat["det"], strict=True)]
    return MeasurementSet.from_track(cat["t"], cat["xyz"], cat["live"], cat["counts"], channel,
                                     background_cps=cat["bkg"] if background_known else None,
                                     position_sigma_m=sigma)


def xy_error(est, source: np.ndarray = SOURCE) -> float:
    return math.hypot(est.x_m - source[0], est.y_m - source[1])


# --------------------------------------------------------------------------- free space
@pytest.mark.parametrize("seed", [1, 2])
def test_two_lanes_either_side_localize_within_a_metre(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ms = merge(drive(rng, 0.0, 0), drive(rng, 10.0, 1, direction=-1, t0=100.0))
    res = locate(ms, LocalizationParams(**FREE, z_max_m=3.0))
    assert res.n_sources == 1 and "one source" in res.reason
    est = res.sources[0]
    assert est.converged and xy_error(est) < 1.0
    assert not est.ambiguous
    assert est.n_measurements == len(ms) and est.n_units == 2
    assert est.cov.shape == (4, 4)  # x, y, z, strength
    sigma_s = math.sqrt(est.cov[3, 3])
    assert abs(est.strength - STRENGTH_CPS_M2) < 4 * sigma_s + 0.15 * STRENGTH_CPS_M2
    assert 0.5 < est.deviance / est.dof < 2.0


def test_estimated_error_is_calibrated_over_repeats() -> None:
    """The reported sigma matches the scatter of repeated estimates (within a factor ~2)."""
    errs, sig = [], []
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        ms = merge(drive(rng, 0.0, 0), drive(rng, 10.0, 1, t0=100.0))
        est = locate(ms, LocalizationParams(**FREE, z_min_m=0.5, z_max_m=1.5)).best_single
        assert est is not None
        errs.append((est.x_m - SOURCE[0], est.y_m - SOURCE[1]))
        sig.append((est.sigma_x_m, est.sigma_y_m))
    rms = np.sqrt(np.mean(np.square(errs), axis=0))
    mean_sigma = np.mean(sig, axis=0)
    assert np.all(rms < 2.5 * mean_sigma)
    assert np.all(rms > 0.3 * mean_sigma)


def test_one_lane_reports_left_right_ambiguity() -> None:
    """A single pass in free space: the mirror source across the lane fits equally well."""
    rng = np.random.default_rng(7)
    ms = merge(drive(rng, 0.0, 0))
    est = localize(ms, LocalizationParams(**FREE, z_min_m=0.9, z_max_m=1.1))
    assert est is not None and est.ambiguous
    ys = sorted(c.y_m for c in est.candidates if abs(c.x_m - SOURCE[0]) < 3.0)
    assert ys[0] < -2.0 and ys[-1] > 2.0
    best_truth = min(math.hypot(c.x_m - SOURCE[0], c.y_m - SOURCE[1]) for c in est.candidates)
    best_mirror = min(math.hypot(c.x_m - SOURCE[0], c.y_m + SOURCE[1]) for c in est.candidates)
    assert best_truth < 2.0 and best_mirror < 2.0


def test_height_is_fitted_from_two_lanes_at_one_detector_height() -> None:
    """No pinning: two lanes at 1.5 m locate a source 6 m up (its mirror would be underground),
    and the height is reported as resolved with an interval holding the truth."""
    source = np.array([50.0, 4.0, 6.0])
    rng = np.random.default_rng(4)
    ms = merge(drive(rng, 0.0, 0, source=source, strength=150000.0),
               drive(rng, 10.0, 1, direction=-1, source=source, strength=150000.0, t0=100.0))
    est = locate(ms, LocalizationParams(**FREE, z_max_m=10.5)).sources[0]
    assert xy_error(est, source) < 1.0
    assert abs(est.z_m - 6.0) < 1.0
    assert est.z_resolved and est.z_interval_m[0] <= 6.0 <= est.z_interval_m[1]
    assert "95 %" in est.height_note


def test_height_at_the_detector_plane_is_reported_unresolved() -> None:
    """Source 0.5 m below the detectors of both lanes: z and its mirror above fit alike."""
    rng = np.random.default_rng(5)
    ms = merge(drive(rng, 0.0, 0), drive(rng, 10.0, 1, direction=-1, t0=100.0))
    est = locate(ms, LocalizationParams(**FREE, z_max_m=10.5)).sources[0]
    assert not est.z_resolved and "not resolved" in est.height_note
    assert est.z_interval_m == (0.0, 10.5)


def test_mast_with_two_detectors_is_one_unit_and_resolves_height_from_one_lane() -> None:
    """A vehicle with detectors at 1.0 and 3.5 m: one unit, two channels (paths not mixed)."""
    source = np.array([50.0, 4.0, 3.0])
    rng = np.random.default_rng(6)
    low = drive(rng, -2.0, 0, height_m=1.0, source=source, strength=150000.0)
    high = drive(rng, -2.0, 0, height_m=3.5, source=source, strength=150000.0)
    high["det"] = ["d1"] * len(high["t"])
    ms = merge(low, high)
    assert len(ms.unit_names) == 1 and len(ms.detector_names) == 2
    # each channel's path stays at its own height
    assert np.all(ms.start_xyz_m[:, 2] == ms.end_xyz_m[:, 2])
    params = LocalizationParams(**FREE, z_max_m=10.5)
    site = site_from_dict({"schema": 1, "container": {"length_m": 12.19, "width_m": 2.44, "height_m": 2.59},
                           "rows": [{"id": "B", "x0_m": 44.0, "y0_m": 2.8, "n_bays": 1, "stack": 3}]})
    est = locate(ms, LocalizationParams(**{**FREE, "site": site})).sources[0]
    assert est.column == "B-1"
    assert est.z_resolved and abs(est.z_m - 3.0) < 0.7
    del params


def test_fusion_of_two_detector_models_fits_separate_strengths() -> None:
    rng = np.random.default_rng(11)
    a = drive(rng, 0.0, 0)
    b = drive(rng, 5.5, 1, strength=STRENGTH_CPS_M2 / 5, speed_m_s=1.4, x_from=40.0, x_to=60.0, t0=200.0)
    cat = {k: np.concatenate([np.asarray(a[k]), np.asarray(b[k])]) for k in a}
    models = ["big"] * len(a["t"]) + ["small"] * len(b["t"])
    channel = [(str(u), str(d), m) for u, d, m in zip(cat["unit"], cat["det"], models, strict=True)]
    ms = MeasurementSet.from_track(cat["t"], cat["xyz"], cat["live"], cat["counts"], channel, cat["bkg"])
    est = locate(ms, LocalizationParams(**FREE, z_max_m=3.0)).sources[0]
    assert est.cov.shape == (5, 5)
    assert xy_error(est) < 1.5
    assert 3.0 < est.strengths["big"] / est.strengths["small"] < 8.0


# --------------------------------------------------------------------------- the no-source test, two sources
def test_background_only_has_no_source_and_a_source_is_detected() -> None:
    rng = np.random.default_rng(21)
    empty = merge(drive(rng, 0.0, 0, strength=0.0), drive(rng, 10.0, 1, strength=0.0, t0=100.0),
                  background_known=False)
    res = locate(empty, LocalizationParams(**FREE))
    assert res.n_sources == 0 and res.reason.startswith("no source")
    assert res.statistic_1 < res.threshold_1
    full = merge(drive(rng, 0.0, 0), drive(rng, 10.0, 1, t0=100.0), background_known=False)
    assert locate(full, LocalizationParams(**FREE)).n_sources == 1


def test_two_sources_far_apart_are_both_reported() -> None:
    s2 = np.array([80.0, 3.0, 1.0])
    rng = np.random.default_rng(22)
    passes = []
    for k, (y, t0) in enumerate(((0.0, 0.0), (10.0, 100.0))):
        a = drive(rng, y, k, x_to=110.0, t0=t0, strength=STRENGTH_CPS_M2)
        b = drive(rng, y, k, x_to=110.0, t0=t0, source=s2, strength=STRENGTH_CPS_M2, background=0.0)
        a["counts"] = a["counts"] + b["counts"]
        passes.append(a)
    res = locate(merge(*passes), LocalizationParams(**FREE, z_max_m=3.0))
    assert res.n_sources == 2, res.reason
    found = sorted((e.x_m, e.y_m) for e in res.sources)
    assert math.hypot(found[0][0] - 50.0, found[0][1] - 4.0) < 1.5
    assert math.hypot(found[1][0] - 80.0, found[1][1] - 3.0) < 1.5


# --------------------------------------------------------------------------- inputs
def _rows(times: list[float | None]) -> list[dict]:
    return [{"unit_id": "m1", "boot_id": "b" * 8, "seq": s, "t_epoch_s": t, "x_m": 5.0 * s, "y_m": 0.0,
             "z_m": 1.5, "live_time_s": 1.0, "gross_counts": 1000 + s, "background_cps": 990.0,
             "detector_model": "NaI"} for s, t in enumerate(times, start=1)]


def test_rows_without_time_are_an_error_not_a_joined_segment() -> None:
    with pytest.raises(ValueError, match="t_epoch_s"):
        MeasurementSet.from_rows(_rows([1001.0, 1002.0, None, 1004.0]))


def test_from_rows_builds_mid_point_paths_and_leaves_unknown_background_to_the_fit() -> None:
    rows = _rows([1001.0, 1002.0, 1003.0, 1020.0])  # the 4th comes after a 17 s gap
    rows[2]["background_cps"] = None
    ms = MeasurementSet.from_rows(rows)
    assert len(ms) == 4
    # positions are interval mid-points: interval 2 runs between its mid-points with 1 and 3
    assert ms.start_xyz_m[1, 0] == 7.5 and ms.end_xyz_m[1, 0] == 12.5
    assert ms.start_xyz_m[0, 0] == 2.5 and ms.end_xyz_m[0, 0] == 7.5  # run start: extended symmetrically
    assert ms.start_xyz_m[3, 0] == ms.end_xyz_m[3, 0]  # isolated after a gap: a point
    assert np.isnan(ms.background_cps[2])  # not filled with a percentile: the fit estimates it
    assert ms.t_s is not None and ms.t_s[0] == pytest.approx(1000.5)  # t_epoch_s is the interval's end


def test_positions_tagged_at_the_interval_end_are_moved_to_the_middle() -> None:
    t = np.arange(6, dtype=float) + 1.0  # interval ends
    xyz = np.column_stack([5.0 * np.arange(1, 7), np.zeros(6), np.full(6, 1.5)])  # positions at the ends
    ms = MeasurementSet.from_track(t, xyz, np.ones(6), np.full(6, 100.0), [("u", "d", "m")] * 6,
                                   position_at="end")
    assert np.allclose(ms.mid_xyz_m[:, 0], 5.0 * np.arange(1, 7) - 2.5)
    assert ms.t_s is not None and np.allclose(ms.t_s, t - 0.5)


def test_two_detectors_of_one_unit_keep_their_own_paths() -> None:
    rows = _rows([1001.0, 1002.0, 1003.0]) + _rows([1001.0, 1002.0, 1003.0])
    for r in rows[3:]:
        r.update(z_m=3.5, detector="top")
    for r in rows[:3]:
        r["detector"] = "bottom"
    ms = MeasurementSet.from_rows(rows)
    assert len(ms.unit_names) == 1 and len(ms.detector_names) == 2
    assert set(np.round(ms.start_xyz_m[:, 2], 6)) == {1.5, 3.5}
    assert np.all(ms.start_xyz_m[:, 2] == ms.end_xyz_m[:, 2])


def test_short_pass_is_fitted_or_says_why() -> None:
    """12 m/s: 5 intervals near the source still give an estimate; 2 give a reason."""
    rng = np.random.default_rng(3)
    five = merge(drive(rng, 0.0, 0, x_from=26.0, x_to=86.0, speed_m_s=12.0),
                 drive(rng, 10.0, 1, x_from=26.0, x_to=86.0, speed_m_s=12.0, direction=-1, t0=50.0))
    res = locate(five, LocalizationParams(**FREE, z_max_m=3.0))
    assert len(five) == 10 and res.best_single is not None
    assert xy_error(res.best_single) < 3.0
    two = merge({k: np.asarray(v)[:2] for k, v in drive(rng, 0.0, 0).items()})
    res2 = locate(two, LocalizationParams(**FREE))
    assert res2.best_single is None and "too few measurements" in res2.reason
    with pytest.raises(ValueError, match="shape"):
        MeasurementSet(np.zeros((2, 3)), np.zeros((3, 3)), np.ones(2), np.ones(2), np.ones(2), np.zeros(2),
                       np.zeros(2))


def test_gnss_error_widens_the_region_only_where_it_exists() -> None:
    rng = np.random.default_rng(11)
    passes = (drive(rng, 0.0, 0), drive(rng, 10.0, 1, direction=-1, t0=100.0))
    exact = locate(merge(*passes), LocalizationParams(**FREE)).sources[0]
    gnss = locate(merge(*passes, sigma=1.5), LocalizationParams(**{**FREE, "position_sigma_m": None})).sources[0]
    assert exact.gnss_sigma_xy_m == 0.0
    assert gnss.gnss_sigma_xy_m > 0.5
    # two independent passes: roughly sigma^2 / 2 per axis added
    assert gnss.sigma_x_m**2 - exact.sigma_x_m**2 == pytest.approx(1.5**2 / 2, rel=0.5)


# --------------------------------------------------------------------------- the site model
SITE = {
    "schema": 1, "name": "t",
    "container": {"length_m": 12.19, "width_m": 2.44, "height_m": 2.59, "wall_m": 0.002},
    "rows": [{"id": "A", "x0_m": 10.0, "y0_m": 0.0, "n_bays": 4, "stack": 2},
             {"id": "B", "x0_m": 10.0, "y0_m": 12.0, "n_bays": 4, "stack": 3}],
}


def site_drive(rng: np.random.Generator, source: np.ndarray, mu: float, lanes: tuple[float, ...],
               strength: float = 3e5, heights: tuple[float, ...] = (1.5,)) -> MeasurementSet:
    """Counts from the localizer's own kernel (cargo mu known to the generator, not to the fit)."""
    site = site_from_dict(SITE)
    lo, hi = site.lo_hi()
    rows: dict[str, list] = {k: [] for k in ("t", "xyz", "live", "counts", "chan")}
    t0 = 0.0
    for k, y in enumerate(lanes):
        for j, h in enumerate(heights):
            xs = np.arange(-10.0, 70.0, 5.0) + 2.5
            sub = np.stack([np.column_stack([xs - 2.5 + 5.0 * (q + 0.5) / 10, np.full(len(xs), y), np.full(len(xs), h)])
                            for q in range(10)], axis=1).reshape(-1, 3)
            term, _, _ = source_terms(sub, source, lo, hi, site.group_index(), np.full(len(site.groups), mu), MU,
                                      0.09, False)
            g = term.reshape(len(xs), 10).mean(axis=1)
            rows["counts"] += list(rng.poisson(0.97 * (1500.0 + strength * g)))
            rows["t"] += list(t0 + np.arange(len(xs)) + 0.5)
            rows["xyz"] += [(x, y, h) for x in xs]
            rows["live"] += [0.97] * len(xs)
            rows["chan"] += [(f"v{k}", f"d{j}", "NaI")] * len(xs)
        t0 += 100.0
    return MeasurementSet.from_track(np.array(rows["t"]), np.array(rows["xyz"]), np.array(rows["live"]),
                                     np.array(rows["counts"], dtype=float), rows["chan"])


def test_site_one_sided_cargo_is_not_pulled_to_the_thin_side() -> None:
    """Source against B's south wall behind 2 m of cargo to the north lane: the site model fits
    the cargo and finds it (lane-normal error small); the free-space fit is pulled south."""
    source = np.array([30.0, 12.45, 1.2])
    ms = site_drive(np.random.default_rng(31), source, mu=1.5, lanes=(7.2, 19.2))
    site = site_from_dict(SITE)
    est = locate(ms, LocalizationParams(**FREE, site=site)).sources[0]
    assert est.column == "B-2"
    assert abs(est.y_m - source[1]) < 0.3 and xy_error(est, source) < 0.5
    assert 0.8 < est.mu_cargo_per_m["B"] < 2.5
    free = locate(ms, LocalizationParams(**FREE)).sources[0]
    assert free.y_m < est.y_m  # the unshielded model puts it towards the thin (south) side


def test_site_source_in_the_third_tier_is_reachable_and_its_height_found() -> None:
    source = np.array([44.0, 13.2, 6.5])  # tier 2 of a three-high stack (5.18-7.77 m)
    ms = site_drive(np.random.default_rng(32), source, mu=1.0, lanes=(7.2, 19.2), heights=(1.0, 3.5))
    site = site_from_dict(SITE)
    assert site.z_max_m == pytest.approx(3 * 2.59)
    est = locate(ms, LocalizationParams(**FREE, site=site)).sources[0]
    assert est.column == "B-3" and est.z_resolved and abs(est.z_m - 6.5) < 0.7


def test_crlb_falls_with_strength_and_the_fit_is_near_it() -> None:
    site = site_from_dict(SITE)
    source = np.array([30.0, 13.2, 1.2])
    p = LocalizationParams(**FREE, site=site)
    weak = crlb_position(site_drive(np.random.default_rng(1), source, 1.0, (7.2, 19.2), strength=5e4), [source], p)
    strong = crlb_position(site_drive(np.random.default_rng(1), source, 1.0, (7.2, 19.2), strength=5e5), [source], p)
    assert 0 < strong.sigma_xy_m[0] < weak.sigma_xy_m[0]
    assert strong.cov[0].shape == (3, 3)


def test_incremental_updates_reach_the_batch_estimate() -> None:
    rng = np.random.default_rng(41)
    ms = merge(drive(rng, 0.0, 0), drive(rng, 10.0, 1, direction=-1, t0=100.0))
    loc = IncrementalLocalizer(LocalizationParams(**FREE, z_max_m=3.0), research_every=10)
    assert ms.t_s is not None and ms.detector is not None
    results = []
    for i in np.argsort(ms.t_s):
        unit = ms.unit_names[int(ms.unit[i])]
        loc.add(float(ms.t_s[i]), tuple(ms.mid_xyz_m[i]), float(ms.live_time_s[i]), float(ms.counts[i]),
                unit_id=unit, detector_id="d0", detector_model="NaI 2x4x16", background_cps=float(ms.background_cps[i]))
        results.append(loc.update())
    assert results[0].n_sources == 0  # nothing elevated yet
    final = results[-1]
    batch = locate(ms, LocalizationParams(**FREE, z_max_m=3.0))
    assert final.n_sources == 1
    assert math.hypot(final.sources[0].x_m - batch.sources[0].x_m, final.sources[0].y_m - batch.sources[0].y_m) < 0.2
    assert loc.full_searches < loc.updates  # most updates were warm starts


def test_kernel_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform([-10, -10, 0], [10, 10, 3], (40, 3))
    lo = np.array([[-2, -1, 0], [3, -4, 0.0]])
    hi = np.array([[2, 1, 2.6], [5, 4, 5.0]])
    grp = np.array([0, 1])
    mu = np.array([1.3, 0.7])
    s = np.array([0.5, 0.2, 1.0])
    _, ds, dm = source_terms(pts, s, lo, hi, grp, mu, MU, 0.09, True)
    eps = 1e-6
    for a in range(3):
        e = np.zeros(3)
        e[a] = eps
        num = (source_terms(pts, s + e, lo, hi, grp, mu, MU, 0.09, False)[0]
               - source_terms(pts, s - e, lo, hi, grp, mu, MU, 0.09, False)[0]) / (2 * eps)
        assert np.allclose(num, ds[:, a], rtol=1e-5, atol=1e-12)
    for g in range(2):
        e = np.zeros(2)
        e[g] = eps
        num = (source_terms(pts, s, lo, hi, grp, mu + e, MU, 0.09, False)[0]
               - source_terms(pts, s, lo, hi, grp, mu - e, MU, 0.09, False)[0]) / (2 * eps)
        assert np.allclose(num, dm[:, g], rtol=1e-5, atol=1e-12)
