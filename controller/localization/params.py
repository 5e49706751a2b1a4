"""Settings of the localizer, with the reasons for their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from controller.localization.site import Site

__all__ = ["LocalizationParams"]


@dataclass(frozen=True)
class LocalizationParams:
    mu_air_per_m: float = 0.0093  # 662 keV in dry air at 20 C (NIST XCOM: 0.0775 cm2/g)
    # Height range of a source without a site model; with a site the range is each column's own
    # (ground to the top of its stack), so a third-tier container (7.8 m) is reachable.
    z_min_m: float = 0.0
    z_max_m: float = 10.5  # four 2.59-m tiers
    near_field_m: float = 0.3
    subsamples: int = 1  # minimum path sub-samples per interval (more by subsample_spacing_m)
    subsample_spacing_m: float = 1.0
    max_subsamples: int = 10
    ambiguity_dnll: float = 2.0
    xy_prior_sigma_m: float = 40.0  # free space only: keeps a one-lane geometry finite
    # Fewer intervals than this: no fit, and the result says why.  Three is the least that can
    # say anything once background and strength are free (the priors carry the rest, and the
    # covariance shows it), so a 12 m/s pass with 5 intervals near the source is still fitted.
    min_measurements: int = 3
    # Horizontal GNSS 1-sigma applied to every row; None: each row's own (MeasurementSet
    # .position_sigma_m, from its fix quality).  0 where positions are exact (surveyed, simulated).
    position_sigma_m: float | None = None
    site: Site | None = None
    # Model selection (0/1/2 sources): likelihood ratio 2 (NLL_k-1 - NLL_k), divided by the
    # overdispersion of the largest model fitted, against a threshold.  The no-source threshold
    # was set on 300 background-only drives of the tuning geometry (two lanes along a three-row
    # yard, site model, flat background): median 4.2, 99th percentile 11.8, maximum 17.1; an
    # exponential fit to the upper tenth puts P(T1 > 20) at ~2e-4 per incident.
    detect_threshold: float = 20.0
    second_source_threshold: float = 200.0
    max_sources: int = 2
    # Two sources closer than this are one incident for the handheld, and a second source that
    # close mostly absorbs model error (tuning seeds): reported as one.
    min_source_separation_m: float = 5.0
    # A second source must also add at least this share of the first's likelihood ratio: the
    # model error of a strong source grows with its signal.
    second_source_min_share: float = 0.005
    # Height is reported (with its 95 % interval) only when its 1-sigma is below this: then the
    # interval (+-1.5 m) tells the tiers of a 2.59-m stack apart.
    height_resolved_sigma_m: float = 0.75
    # Model error added to the reported covariance (per horizontal axis, and in height): the
    # transport of a real yard (walls, build-up spectrum, detector response) differs from the
    # model's; on the tuning seeds it, not counting statistics, set the error at high counts.
    model_error_sigma_m: float = 0.15
    model_error_sigma_z_m: float = 0.3
    # Relative error of the model's distance scale (the profile width): sets the height error of
    # single-height geometries (see fit._single_height_z_error).
    model_distance_rel_error: float = 0.05
    # One-source heights from the profile likelihood over the column's height range (fit/height.py):
    # False only to compare with the Fisher-information height (cedge bench, the offline replay).
    profile_height: bool = True
    background_prior_rel: float = 0.05
    # No-source test: its background-only model may vary smoothly along each pass (NORM in the
    # ground and the cargo, buildings): Gaussian bumps of this spacing (and width) along each pass,
    # ln-amplitude prior sigma below.  Without them a +25 % NORM patch on a lane passed the test in
    # half the background-only tuning drives.  None: a constant background per pass.
    background_bump_spacing_m: float | None = 15.0
    background_bump_sigma: float = 0.1
    background_prior_rel_estimated: float = 0.15
    candidate_radius_m: float = 35.0  # sources farther than this from every elevated interval: not searched
    fit_radius_m: float = 80.0  # rows farther than this from every elevated interval: not fitted
    grid_step_m: float = 1.5
    n_starts: int = 6
    hot_sigma: float = 3.0  # an interval is "elevated" above this many Poisson sigma over the background
