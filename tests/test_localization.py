"""Poisson ML source localization on synthetic drive-by data (same physics model, seeded noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.localization import LocalizationParams, MeasurementSet, localize

MU = 0.0093
SOURCE = np.array([50.0, 4.0, 1.0])
STRENGTH_CPS_M2 = 6000.0  # net cps at 1 m: a shielded ~100 MBq Cs-137 seen by a 2x4x16 NaI log
BACKGROUND_CPS = 1500.0


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
) -> dict[str, np.ndarray]:
    """One straight pass at constant speed; 1-s intervals; position reported at interval end.

    Counts integrate the true rate over the path with 40 sub-steps (finer than the fit's
    path average), with 3 % dead time and background fluctuating +-3 % between intervals.
    """
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
    bkg = np.full(n, BACKGROUND_CPS)
    counts = rng.poisson(live * (bkg + strength * g))
    z = np.full(n, height_m)
    return {
        "end": np.column_stack([end, np.full(n, y_lane), z]),
        "start": np.column_stack([start, np.full(n, y_lane), z]),
        "live": live,
        "counts": counts.astype(float),
        "bkg": bkg,
        "unit": np.full(n, unit),
        "group": np.zeros(n, dtype=int),
    }


def merge(*passes: dict[str, np.ndarray]) -> MeasurementSet:
    cat = {k: np.concatenate([p[k] for p in passes]) for k in passes[0]}
    n_units = int(cat["unit"].max()) + 1
    return MeasurementSet(
        cat["end"],
        cat["start"],
        cat["live"],
        cat["counts"],
        cat["bkg"],
        cat["group"],
        cat["unit"],
        ("NaI 2x4x16",),
        tuple(f"u{i}" for i in range(n_units)),
    )


def xy_error(est, source: np.ndarray = SOURCE) -> float:
    return math.hypot(est.x_m - source[0], est.y_m - source[1])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_lanes_either_side_localize_within_a_metre(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ms = merge(drive(rng, y_lane=0.0, unit=0), drive(rng, y_lane=10.0, unit=1, direction=-1))
    est = localize(ms, LocalizationParams(position_sigma_m=0.0, mu_air_per_m=MU, z_min_m=0.0, z_max_m=3.0))
    assert est is not None and est.converged
    assert xy_error(est) < 1.0
    assert not est.ambiguous
    assert est.sigma_xy_m < 1.0
    assert est.n_measurements == len(ms) and est.n_units == 2
    # the strength is recovered within its own statistical error (x4 for safety)
    sigma_s = math.sqrt(est.cov[3, 3])
    assert abs(est.strength - STRENGTH_CPS_M2) < 4 * sigma_s + 0.15 * STRENGTH_CPS_M2
    assert est.cov.shape == (4, 4)
    # the model fits: deviance per degree of freedom near 1
    assert 0.5 < est.deviance / est.dof < 1.6
    assert est.p_value > 1e-4


def test_estimated_error_is_calibrated_over_repeats() -> None:
    """The Cramer-Rao sigma matches the scatter of repeated estimates (within a factor ~2)."""
    errs, sig = [], []
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        ms = merge(drive(rng, y_lane=0.0, unit=0), drive(rng, y_lane=10.0, unit=1))
        est = localize(ms, LocalizationParams(position_sigma_m=0.0, mu_air_per_m=MU, z_min_m=0.5, z_max_m=1.5))
        assert est is not None
        errs.append((est.x_m - SOURCE[0], est.y_m - SOURCE[1]))
        sig.append((est.sigma_x_m, est.sigma_y_m))
    rms = np.sqrt(np.mean(np.square(errs), axis=0))
    mean_sigma = np.mean(sig, axis=0)
    assert np.all(rms < 2.5 * mean_sigma)
    assert np.all(rms > 0.3 * mean_sigma)


def test_one_lane_reports_left_right_ambiguity() -> None:
    """A single pass: the mirror source across the lane fits equally well; both are returned."""
    rng = np.random.default_rng(7)
    ms = merge(drive(rng, y_lane=0.0, unit=0))
    # z prior pinned near the detector height so the only degeneracy is left/right
    est = localize(ms, LocalizationParams(position_sigma_m=0.0, mu_air_per_m=MU, z_min_m=0.9, z_max_m=1.1))
    assert est is not None
    assert est.ambiguous
    ys = sorted(c.y_m for c in est.candidates if abs(c.x_m - SOURCE[0]) < 3.0)
    assert ys[0] < -2.0 and ys[-1] > 2.0  # one candidate on each side of the lane
    # each candidate is the true source or its mirror image, within a couple of metres
    best_truth = min(math.hypot(c.x_m - SOURCE[0], c.y_m - SOURCE[1]) for c in est.candidates)
    best_mirror = min(math.hypot(c.x_m - SOURCE[0], c.y_m + SOURCE[1]) for c in est.candidates)
    assert best_truth < 2.0 and best_mirror < 2.0


def test_one_lane_with_free_height_has_large_cross_track_uncertainty() -> None:
    """With a wide z prior the source can sit anywhere on a circle around the track line."""
    rng = np.random.default_rng(8)
    ms = merge(drive(rng, y_lane=0.0, unit=0))
    est = localize(ms, LocalizationParams(position_sigma_m=0.0, mu_air_per_m=MU, z_min_m=0.0, z_max_m=6.0))
    two = localize(
        merge(drive(np.random.default_rng(8), 0.0, 0), drive(np.random.default_rng(9), 10.0, 1)),
        LocalizationParams(position_sigma_m=0.0, mu_air_per_m=MU, z_min_m=0.0, z_max_m=6.0),
    )
    assert est is not None and two is not None
    assert est.ambiguous or est.sigma_y_m > 1.0
    assert est.sigma_x_m < 1.0  # along-track position is still well determined
    assert abs(est.x_m - SOURCE[0]) < 1.0
    # the distance from the track line is determined even though the direction is not
    rho = math.hypot(est.y_m - 0.0, est.z_m - 1.5)
    assert abs(rho - math.hypot(SOURCE[1], SOURCE[2] - 1.5)) < 1.0
    assert two.sigma_xy_m < est.sigma_xy_m


def test_fusion_of_two_detector_models_fits_separate_strengths() -> None:
    """Different detector models get their own strength (efficiency); the position is shared."""
    rng = np.random.default_rng(11)
    a = drive(rng, y_lane=0.0, unit=0)
    # a handheld-class detector (1/5 of the efficiency) walked past at 1.5 m from the source
    b = drive(rng, y_lane=5.5, unit=1, strength=STRENGTH_CPS_M2 / 5, speed_m_s=1.4, x_from=40.0, x_to=60.0)
    b["group"] = np.ones_like(b["group"])
    cat = {k: np.concatenate([a[k], b[k]]) for k in a}
    ms = MeasurementSet(
        cat["end"],
        cat["start"],
        cat["live"],
        cat["counts"],
        cat["bkg"],
        cat["group"],
        cat["unit"],
        ("big", "small"),
        ("u0", "u1"),
    )
    est = localize(ms, LocalizationParams(position_sigma_m=0.0, mu_air_per_m=MU, z_min_m=0.0, z_max_m=3.0))
    assert est is not None
    assert est.cov.shape == (5, 5)
    assert xy_error(est) < 1.5
    ratio = est.strengths["big"] / est.strengths["small"]
    assert 3.0 < ratio < 8.0


def test_too_few_measurements_returns_none() -> None:
    rng = np.random.default_rng(3)
    full = drive(rng, y_lane=0.0, unit=0)
    few = {k: v[:3] for k, v in full.items()}
    assert localize(merge(few)) is None


def test_from_rows_builds_path_segments_and_fills_background() -> None:
    rows = [
        {
            "unit_id": "m1",
            "boot_id": "b" * 8,
            "seq": s,
            "t_epoch_s": 1000.0 + (s if s < 5 else 20.0),  # seq 5 comes after a 17 s gap
            "x_m": 5.0 * s,
            "y_m": 0.0,
            "z_m": 1.5,
            "live_time_s": 1.0,
            "gross_counts": 1000 + s,
            "gross_cps": 1000.0 + s,
            "background_cps": None if s == 3 else 990.0,
            "detector_model": "NaI",
        }
        for s in (1, 2, 3, 5)
    ]
    ms = MeasurementSet.from_rows(rows)
    assert len(ms) == 4
    # positions are interval midpoints: seq 2's path runs between its midpoints with seq 1 and seq 3
    assert ms.start_xyz_m[1, 0] == 7.5 and ms.end_xyz_m[1, 0] == 12.5
    assert ms.start_xyz_m[0, 0] == 2.5 and ms.end_xyz_m[0, 0] == 7.5  # run start: extended symmetrically
    assert ms.start_xyz_m[3, 0] == ms.end_xyz_m[3, 0]  # isolated after a gap: point interval
    assert 990.0 < ms.background_cps[2] < 1006.0
    with pytest.raises(ValueError, match="shape"):
        MeasurementSet(np.zeros((2, 3)), np.zeros((3, 3)), np.ones(2), np.ones(2), np.ones(2), np.zeros(2), np.zeros(2))


def test_gnss_position_error_widens_the_uncertainty() -> None:
    """The per-pass GNSS offset does not average out: it is added as sigma^2 / n_units."""
    rng = np.random.default_rng(11)
    ms = merge(drive(rng, y_lane=0.0, unit=0), drive(rng, y_lane=10.0, unit=1, direction=-1))
    exact = localize(ms, LocalizationParams(position_sigma_m=0.0, mu_air_per_m=MU, z_min_m=0.0, z_max_m=3.0))
    gnss = localize(ms, LocalizationParams(position_sigma_m=1.5, mu_air_per_m=MU, z_min_m=0.0, z_max_m=3.0))
    assert exact is not None and gnss is not None
    assert gnss.sigma_x_m**2 == pytest.approx(exact.sigma_x_m**2 + 1.5**2 / 2, rel=1e-3)



def test_height_without_vertical_lever_arm_is_fixed_and_reported_as_unknown() -> None:
    """All passes at 1.5 m: z is not observable, so it is not fitted and sigma_z is the prior's."""
    rng = np.random.default_rng(4)
    ms = merge(drive(rng, y_lane=0.0, unit=0), drive(rng, y_lane=10.0, unit=1, direction=-1))
    params = LocalizationParams(position_sigma_m=0.0, mu_air_per_m=MU, z_min_m=0.0, z_max_m=6.0)
    est = localize(ms, params)
    assert est is not None and xy_error(est) < 1.0
    assert est.z_m == pytest.approx(1.5, abs=1e-3)
    assert est.sigma_z_m == pytest.approx(6.0 / math.sqrt(12.0), rel=1e-6)
