"""What a localization returns: per source an estimate with its uncertainty, and the decision."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CHI2_95_2D", "CHI2_95_3D", "Candidate", "LocalizationResult", "SourceEstimate"]

CHI2_95_2D = 5.991464547107979  # chi^2 quantile 0.95, 2 degrees of freedom
CHI2_95_3D = 7.814727903251178  # 3 degrees of freedom


@dataclass(frozen=True)
class Candidate:
    x_m: float
    y_m: float
    z_m: float
    strength: float
    nll: float


@dataclass(frozen=True)
class SourceEstimate:
    """One source.  ``cov`` is over ``param_names`` (x_m, y_m, z_m, then one strength per
    detector group); it includes the overdispersion scaling and the GNSS term.  The horizontal 95 %
    region is the ellipse ``region_95`` (semi-axes, angle counter-clockwise from east); height is
    reported with its 95 % interval only when ``z_resolved`` (see ``height_note``)."""

    x_m: float
    y_m: float
    z_m: float
    strength: float  # counts/s at 1 m, unshielded, for the main detector group (most measurements)
    cov: np.ndarray
    sigma_x_m: float
    sigma_y_m: float
    sigma_z_m: float
    sigma_xy_m: float
    ellipse_major_m: float  # 1-sigma
    ellipse_minor_m: float
    ellipse_angle_deg: float
    n_measurements: int
    n_units: int
    converged: bool
    deviance: float
    dof: int
    p_value: float
    ambiguous: bool
    candidates: tuple[Candidate, ...]
    strengths: dict[str, float] = field(default_factory=dict)
    param_names: tuple[str, ...] = ()
    z_resolved: bool = False
    z_interval_m: tuple[float, float] = (0.0, 0.0)
    height_note: str = ""
    column: str | None = None
    overdispersion: float = 1.0
    crlb_sigma_xy_m: float = float("nan")  # the Cramer-Rao bound at the estimate (no scaling, no GNSS)
    crlb_sigma_z_m: float = float("nan")
    gnss_sigma_xy_m: float = 0.0  # GNSS share of sigma_xy_m
    mu_cargo_per_m: dict[str, float] = field(default_factory=dict)

    @property
    def region_95(self) -> dict[str, float]:
        k = math.sqrt(CHI2_95_2D)
        return {"major_m": k * self.ellipse_major_m, "minor_m": k * self.ellipse_minor_m,
                "angle_deg": self.ellipse_angle_deg}

    def covers(self, truth_xyz: tuple[float, float, float] | np.ndarray, three_d: bool = False) -> bool:
        """Whether a point lies inside the 95 % region (horizontal ellipse; ellipsoid if ``three_d``)."""
        t = np.asarray(truth_xyz, dtype=float)
        n = 3 if three_d else 2
        d = t[:n] - np.array([self.x_m, self.y_m, self.z_m])[:n]
        c = self.cov[:n, :n]
        try:
            q = float(d @ np.linalg.solve(c, d))
        except np.linalg.LinAlgError:
            return False
        return q <= (CHI2_95_3D if three_d else CHI2_95_2D)

    def to_dict(self) -> dict[str, Any]:
        return {
            "x_m": self.x_m,
            "y_m": self.y_m,
            "z_m": self.z_m,
            "z_resolved": self.z_resolved,
            "z_interval_m": list(self.z_interval_m),
            "height_note": self.height_note,
            "column": self.column,
            "strength": self.strength,
            "cov": self.cov.tolist(),
            "param_names": list(self.param_names),
            "sigma_x_m": self.sigma_x_m,
            "sigma_y_m": self.sigma_y_m,
            "sigma_z_m": self.sigma_z_m,
            "sigma_xy_m": self.sigma_xy_m,
            "ellipse_major_m": self.ellipse_major_m,
            "ellipse_minor_m": self.ellipse_minor_m,
            "ellipse_angle_deg": self.ellipse_angle_deg,
            "region_95": self.region_95,
            "crlb_sigma_xy_m": self.crlb_sigma_xy_m,
            "crlb_sigma_z_m": self.crlb_sigma_z_m,
            "gnss_sigma_xy_m": self.gnss_sigma_xy_m,
            "overdispersion": self.overdispersion,
            "mu_cargo_per_m": self.mu_cargo_per_m,
            "n_measurements": self.n_measurements,
            "n_units": self.n_units,
            "converged": self.converged,
            "deviance": self.deviance,
            "dof": self.dof,
            "p_value": self.p_value,
            "ambiguous": self.ambiguous,
            "strengths": self.strengths,
            "candidates": [c.__dict__ for c in self.candidates],
        }


@dataclass(frozen=True)
class LocalizationResult:
    """The decision (how many sources) and the estimates.

    ``best_single`` is the one-source fit whether or not it passed the no-source test (for
    diagnostics and the legacy :func:`controller.localization.localize`); ``sources`` holds the
    accepted sources, brightest first.
    """

    sources: tuple[SourceEstimate, ...]
    best_single: SourceEstimate | None
    statistic_1: float  # 2 (NLL_0 - NLL_1) / overdispersion
    threshold_1: float
    statistic_2: float | None
    threshold_2: float
    n_measurements: int
    reason: str
    elapsed_ms: float = 0.0
    site: str | None = None
    statistic_smooth: float | None = None  # T1 against a background that varies smoothly along the passes
    smooth_background_explains: bool = False  # ... and that background explains the excess nearly as well

    @property
    def n_sources(self) -> int:
        return len(self.sources)

    @property
    def detected(self) -> bool:
        return bool(self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_sources": self.n_sources,
            "sources": [s.to_dict() for s in self.sources],
            "statistic_1": self.statistic_1,
            "threshold_1": self.threshold_1,
            "statistic_2": self.statistic_2,
            "threshold_2": self.threshold_2,
            "n_measurements": self.n_measurements,
            "reason": self.reason,
            "elapsed_ms": self.elapsed_ms,
            "site": self.site,
            "statistic_smooth": self.statistic_smooth,
            "smooth_background_explains": self.smooth_background_explains,
        }
