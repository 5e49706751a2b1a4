"""Point-source localization by Poisson maximum likelihood over moving-detector count data.

Model (per measurement interval i of length live time t_i, detector path from P_i0 to P_i1)::

    lambda_i = t_i * ( b_i + S_g(i) * <exp(-mu r) / r^2>_i ),    r = sqrt(|P - s|^2 + r0^2)

``b_i`` is the background rate the unit reported for that interval, ``s = (x, y, z)`` the source
position, ``S_g`` the apparent source strength for detector group ``g`` (counts/s a bare detector
of that model would register at 1 m, unshielded air path), ``mu`` the linear attenuation
coefficient of air and ``r0`` a near-field floor (finite detector size; keeps the model finite when
the track passes over the source).  ``<.>_i`` averages the geometric factor over the path the
detector covered during the interval (midpoint rule with ``subsamples`` points): at 5 m/s a 1-s
interval is a 5-m segment, and treating it as a point at the interval's end would bias the
along-track coordinate by half a segment.

The estimate minimises the Poisson negative log-likelihood ``sum(lambda - c ln lambda)``
(Cash 1979, ApJ 228:939) with bounded SLSQP and an analytic gradient (SLSQP rather than L-BFGS-B:
with 4-6 parameters its dense updates are cheap, while scipy's L-BFGS-B calls a threaded BLAS
whose wake-ups made it 40x slower on a loaded 2-core box).  Why multi-start: one straight
pass cannot tell a source left of the track from its mirror image on the right (and a source
below detector height from its mirror above), so the likelihood has several equal minima; starts
are placed on both sides of each unit's track near its count-rate peak, distinct minima within
``ambiguity_dnll`` of the best are returned as candidates and ``ambiguous`` is set when they
disagree in the ground plane.  Fusing passes of several units (different lanes) breaks the
ambiguity, which is why the dispatcher holds an incident open for more passes.

Uncertainty: inverse of the expected Fisher information ``I = J^T diag(1/lambda) J`` (Cramer-Rao
bound), with weak Gaussian priors equal to the z prior range (variance range^2/12) and the search
radius on x/y, so that a degenerate geometry (one lane: the source can be anywhere on a circle
around the track line) yields a large but finite sigma rather than a singular matrix; scaled by
the overdispersion deviance/dof when the model does not fit the data (see the code).  Goodness of
fit: Poisson deviance ``2 sum(c ln(c/lambda) - (c - lambda))`` against chi^2 with N - p degrees
of freedom (Baker & Cousins 1984, NIM 221:437).

Literature: the same ML point-source model is used for mobile-detector search in e.g.
Gunatilaka, Ristic & Gailis, "On localisation of a radiological point source", IDC 2007, and
Morelande, Ristic & Gunatilaka, "Detection and parameter estimation of multiple radioactive
sources", FUSION 2007.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

__all__ = ["Candidate", "LocalizationParams", "MeasurementSet", "SourceEstimate", "localize"]

_LOG_S_MIN, _LOG_S_MAX = math.log(1e-3), math.log(1e10)


@dataclass(frozen=True)
class LocalizationParams:
    mu_air_per_m: float = 0.0093  # 662 keV in dry air at 20 C (NIST XCOM: 0.0775 cm2/g)
    z_min_m: float = 0.0
    z_max_m: float = 6.0
    near_field_m: float = 0.3
    subsamples: int = 5
    ambiguity_dnll: float = 2.0
    xy_prior_sigma_m: float = 40.0
    min_measurements: int = 8
    offsets_m: tuple[float, ...] = (1.5, 4.0, 9.0)  # start distances either side of a track peak
    # Horizontal GNSS error of the reporting units (1-sigma per axis).  It is nearly constant over
    # one pass (correlation times of minutes), so it shifts a pass as a whole and does not average
    # out over its measurements: it adds ~sigma^2 / n_units to the location variance.
    position_sigma_m: float = 1.0
    # Height needs a vertical lever arm: detectors at several heights.  With every measurement
    # within this spread of one height (vehicles of one type), z is not observable - model
    # mismatch such as cargo shielding one lane more than the other then drives it to a bound - so
    # it is fixed at the detector height and reported with the prior's uncertainty instead.
    min_height_spread_m: float = 1.0


@dataclass
class MeasurementSet:
    """Count data of one or several units, as flat arrays (one row per acquisition interval).

    ``start_xyz_m`` is where the detector was when the interval began (the previous interval's
    position of the same unit); equal to ``end_xyz_m`` when unknown.  ``group`` indexes the
    detector model (each has its own efficiency, hence its own strength parameter); ``unit`` indexes
    the unit (used to place multi-start seeds along each unit's own track).
    """

    end_xyz_m: np.ndarray  # (N, 3)
    start_xyz_m: np.ndarray  # (N, 3)
    live_time_s: np.ndarray  # (N,)
    counts: np.ndarray  # (N,)
    background_cps: np.ndarray  # (N,)
    group: np.ndarray  # (N,) int
    unit: np.ndarray  # (N,) int
    group_names: tuple[str, ...] = ("detector",)
    unit_names: tuple[str, ...] = ("unit",)

    def __post_init__(self) -> None:
        n = len(self.counts)
        for name in ("end_xyz_m", "start_xyz_m"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.shape != (n, 3):
                raise ValueError(f"{name} must have shape ({n}, 3), not {arr.shape}")
            setattr(self, name, arr)
        for name, dtype in (
            ("live_time_s", float),
            ("counts", float),
            ("background_cps", float),
            ("group", np.int64),
            ("unit", np.int64),
        ):
            arr = np.asarray(getattr(self, name), dtype=dtype)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), not {arr.shape}")
            setattr(self, name, arr)
        if n and (np.any(self.live_time_s < 0) or np.any(self.counts < 0) or np.any(self.background_cps < 0)):
            raise ValueError("live_time_s, counts and background_cps must be >= 0")

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]],
                  strength_per: Literal["unit", "detector_model"] = "detector_model") -> MeasurementSet:
        """Build from store rows (``controller.store.Store.measurements_near``).

        Rows need ``unit_id, boot_id, seq, x_m, y_m, z_m, live_time_s, gross_counts``; optional
        ``background_cps`` (missing: the unit's 20th percentile gross rate in the set, a robust floor
        of a mostly-background window) and ``detector_model``.  The agent reports the detector
        position at the *middle* of each accumulation interval (agent.runtime.track), so the path
        of interval i runs from the midpoint with its previous measurement to the midpoint with
        its next one (same unit and boot, in seq order, at most 3 intervals apart); at the ends
        of a run it is extended symmetrically.  ``interval_s`` (default: live time) sets the gap test.
        """
        rows = [r for r in rows if r.get("x_m") is not None and r.get("live_time_s")]
        units = sorted({r["unit_id"] for r in rows})
        # One strength parameter per group.  Per detector model (default): intensity ratios between
        # lanes carry distance information.  Per unit: each unit sees the source through its own
        # slice of cargo, and a strength per unit absorbs one-sided shielding, but the geometry then
        # rests on profile shapes alone and a mirror solution outside the lanes can win (seen in a
        # synthetic two-lane test); a hierarchical prior tying the strengths would get both.
        def group_of(r: Mapping[str, Any]) -> str:
            return str(r["unit_id"] if strength_per == "unit" else r.get("detector_model") or "unknown")

        groups = sorted({group_of(r) for r in rows})
        n = len(rows)
        end = np.empty((n, 3))
        start = np.empty((n, 3))
        live = np.empty(n)
        counts = np.empty(n)
        bkg = np.full(n, np.nan)
        grp = np.empty(n, dtype=np.int64)
        unit = np.empty(n, dtype=np.int64)
        mid = np.array([(r["x_m"], r["y_m"], r["z_m"] or 0.0) for r in rows], dtype=float).reshape(-1, 3)
        t_end = np.array([float(r.get("t_epoch_s") or 0.0) for r in rows], dtype=float)
        runs: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(rows):
            runs.setdefault((r["unit_id"], r["boot_id"]), []).append(i)
        for idx in runs.values():
            idx.sort(key=lambda i: int(rows[i]["seq"]))
            for k, i in enumerate(idx):
                dt_max = 3.0 * float(rows[i].get("interval_s") or rows[i]["live_time_s"] or 1.0)
                p = idx[k - 1] if k > 0 and abs(t_end[i] - t_end[idx[k - 1]]) <= dt_max else None
                q = idx[k + 1] if k + 1 < len(idx) and abs(t_end[idx[k + 1]] - t_end[i]) <= dt_max else None
                a = (mid[i] + mid[p]) / 2 if p is not None else None
                b = (mid[i] + mid[q]) / 2 if q is not None else None
                if a is None and b is None:
                    a = b = mid[i]
                elif a is None:
                    a = 2 * mid[i] - b
                elif b is None:
                    b = 2 * mid[i] - a
                start[i], end[i] = a, b
        for i, r in enumerate(rows):
            live[i] = r["live_time_s"]
            counts[i] = r["gross_counts"] if r.get("gross_counts") is not None else r["gross_cps"] * live[i]
            if r.get("background_cps") is not None:
                bkg[i] = r["background_cps"]
            grp[i] = groups.index(group_of(r))
            unit[i] = units.index(r["unit_id"])
        for u in range(len(units)):
            sel = (unit == u) & np.isnan(bkg)
            if sel.any():
                rates = counts[unit == u] / np.maximum(live[unit == u], 1e-9)
                bkg[sel] = float(np.percentile(rates, 20))
        return cls(end, start, live, counts, bkg, grp, unit, tuple(groups), tuple(units))


@dataclass(frozen=True)
class Candidate:
    x_m: float
    y_m: float
    z_m: float
    strength: float
    nll: float


@dataclass(frozen=True)
class SourceEstimate:
    """Best-fit source. ``cov`` is over ``param_names`` (x_m, y_m, z_m, then one strength per
    detector group: 4x4 for a single detector model).  ``sigma_xy_m`` is the radial 1-sigma error
    ``sqrt(var x + var y)``; the 1-sigma error ellipse is ``ellipse_major_m``, ``ellipse_minor_m``
    with the major axis at ``ellipse_angle_deg`` counter-clockwise from east."""

    x_m: float
    y_m: float
    z_m: float
    strength: float  # counts/s at 1 m for the main detector group (most measurements)
    cov: np.ndarray
    sigma_x_m: float
    sigma_y_m: float
    sigma_z_m: float
    sigma_xy_m: float
    ellipse_major_m: float
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "x_m": self.x_m,
            "y_m": self.y_m,
            "z_m": self.z_m,
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


# --------------------------------------------------------------------------- the model
class _Model:
    """Precomputed geometry for vectorised likelihood evaluation.

    Products use ``np.einsum`` rather than ``@``: the matrices are tiny (N x 4), and handing them
    to a multi-threaded BLAS costs more in thread wake-ups than the arithmetic - several times
    slower on a loaded 2-core box (measured: 23 s vs 3.5 s for the localization tests).
    """

    def __init__(self, ms: MeasurementSet, p: LocalizationParams):
        k = p.subsamples
        u = (np.arange(k) + 0.5) / k
        seg = ms.end_xyz_m - ms.start_xyz_m
        self.pts = ms.start_xyz_m[:, None, :] + seg[:, None, :] * u[None, :, None]  # (N, K, 3)
        self.t = ms.live_time_s
        self.c = ms.counts
        self.tb = ms.live_time_s * ms.background_cps
        self.group = ms.group
        self.n_groups = len(ms.group_names)
        self.onehot = np.zeros((len(ms), self.n_groups))
        self.onehot[np.arange(len(ms)), ms.group] = 1.0
        self.mu = p.mu_air_per_m
        self.r0sq = p.near_field_m**2

    def geometry(self, s: np.ndarray, want_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Path-averaged g = <exp(-mu r)/r^2> and dg/ds (N, 3)."""
        d = s[None, None, :] - self.pts  # (N, K, 3)
        r = np.sqrt(np.einsum("nkj,nkj->nk", d, d) + self.r0sq)
        gk = np.exp(-self.mu * r) / (r * r)
        g = gk.mean(axis=1)
        if not want_grad:
            return g, None
        coef = gk * (-self.mu - 2.0 / r) / r  # dg/dr * dr/ds / |s-P| factor
        dg = np.einsum("nk,nkj->nj", coef, d) / gk.shape[1]
        return g, dg

    def lam_and_jac(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """lambda (N,) and d lambda / d (x, y, z, S_1..S_G) (N, 3+G) at natural parameters."""
        s, strengths = theta[:3], theta[3:]
        g, dg = self.geometry(s, want_grad=True)
        assert dg is not None
        s_i = strengths[self.group]
        lam = self.tb + self.t * s_i * g
        jac = np.empty((len(lam), 3 + self.n_groups))
        jac[:, :3] = (self.t * s_i)[:, None] * dg
        jac[:, 3:] = (self.t * g)[:, None] * self.onehot
        return lam, jac

    def nll_grad(self, phi: np.ndarray) -> tuple[float, np.ndarray]:
        """NLL and gradient in optimiser coordinates (x, y, z, log S_g)."""
        theta = np.concatenate([phi[:3], np.exp(phi[3:])])
        lam, jac = self.lam_and_jac(theta)
        lam = np.maximum(lam, 1e-300)
        nll = float(np.sum(lam - self.c * np.log(lam)))
        w = 1.0 - self.c / lam
        grad = np.einsum("n,np->p", w, jac)  # einsum, not BLAS: see _Model docstring
        grad[3:] *= theta[3:]  # chain rule for log S
        return nll, grad

    def initial_log_strength(self, s: np.ndarray) -> np.ndarray:
        g, _ = self.geometry(s, want_grad=False)
        excess = np.maximum(self.c - self.tb, 0.0)
        num = np.einsum("n,ng->g", excess, self.onehot)
        den = np.einsum("n,ng->g", self.t * g, self.onehot)
        est = np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)
        return np.clip(np.log(np.maximum(est, 1e-2)), _LOG_S_MIN + 1, _LOG_S_MAX - 1)


# --------------------------------------------------------------------------- multi-start seeds
def _track_seeds(
    ms: MeasurementSet, p: LocalizationParams, extra_xy: Sequence[tuple[float, float]]
) -> list[np.ndarray]:
    """Start points either side of each unit's count-rate peak, perpendicular to its local track."""
    rate = (ms.counts - ms.live_time_s * ms.background_cps) / np.maximum(ms.live_time_s, 1e-9)
    z_mid = 0.5 * (p.z_min_m + p.z_max_m)
    z_starts = (p.z_min_m + 0.25 * (p.z_max_m - p.z_min_m), p.z_max_m - 0.25 * (p.z_max_m - p.z_min_m))
    peaks: list[tuple[np.ndarray, np.ndarray]] = []
    for u in np.unique(ms.unit):
        idx = np.flatnonzero(ms.unit == u)
        peak = ms.end_xyz_m[idx[np.argmax(rate[idx])]]
        near = idx[np.hypot(*(ms.end_xyz_m[idx, :2] - peak[:2]).T) < 20.0]
        xy = np.vstack([ms.end_xyz_m[near, :2], ms.start_xyz_m[near, :2]])
        direction = np.array([1.0, 0.0])
        if len(xy) >= 2 and np.ptp(xy, axis=0).max() > 0.5:
            _, _, vt = np.linalg.svd(xy - xy.mean(axis=0), full_matrices=False)
            direction = vt[0]
        peaks.append((peak[:2], np.array([-direction[1], direction[0]])))
    for x, y in extra_xy:
        # an alarm position: use the nearest peak's track normal
        normal = min(peaks, key=lambda pk: float(np.hypot(*(pk[0] - (x, y)))))[1] if peaks else np.array([0.0, 1.0])
        peaks.append((np.array([x, y], dtype=float), normal))
    seeds: list[np.ndarray] = []
    for xy0, normal in peaks:
        for d in p.offsets_m:
            for sign in (1.0, -1.0):
                for z in z_starts:
                    seeds.append(np.array([*(xy0 + sign * d * normal), z]))
        seeds.append(np.array([*xy0, z_mid]))
    return seeds


# --------------------------------------------------------------------------- public entry point
def localize(
    ms: MeasurementSet, params: LocalizationParams | None = None, seeds_xy: Sequence[tuple[float, float]] = ()
) -> SourceEstimate | None:
    """Fit one point source to ``ms``; None when there are too few measurements to try.

    ``seeds_xy``: extra start positions (alarm peak positions) in the local frame.
    """
    p = params or LocalizationParams()
    if len(ms) < p.min_measurements:
        return None
    model = _Model(ms, p)
    centre = ms.end_xyz_m[:, :2].mean(axis=0)
    span = float(np.ptp(ms.end_xyz_m[:, :2], axis=0).max()) + 2 * p.xy_prior_sigma_m
    heights = np.concatenate([ms.start_xyz_m[:, 2], ms.end_xyz_m[:, 2]])
    z_fixed = None
    if float(np.ptp(heights)) < p.min_height_spread_m:
        z_fixed = float(np.clip(np.median(heights), p.z_min_m, p.z_max_m))
    z_bounds = (z_fixed - 1e-6, z_fixed + 1e-6) if z_fixed is not None else (p.z_min_m, p.z_max_m)
    bounds = [
        (centre[0] - span, centre[0] + span),
        (centre[1] - span, centre[1] + span),
        z_bounds,
    ] + [(_LOG_S_MIN, _LOG_S_MAX)] * model.n_groups

    results: list[tuple[float, np.ndarray, bool]] = []
    for s0 in _track_seeds(ms, p, seeds_xy):
        s0 = s0.copy()
        s0[2] = z_fixed if z_fixed is not None else min(max(s0[2], p.z_min_m), p.z_max_m)
        phi0 = np.concatenate([s0, model.initial_log_strength(s0)])
        res = optimize.minimize(
            model.nll_grad,
            phi0,
            jac=True,
            method="SLSQP",
            bounds=bounds,
            options={"maxiter": 300, "ftol": 1e-9},
        )
        results.append((float(res.fun), res.x, bool(res.success)))
    results.sort(key=lambda r: r[0])
    best_nll, best_phi, best_ok = results[0]

    candidates: list[Candidate] = []
    for nll, phi, _ok in results:
        if nll - best_nll > p.ambiguity_dnll:
            break
        if all(math.dist(phi[:3], (c.x_m, c.y_m, c.z_m)) > 1.0 for c in candidates):
            candidates.append(
                Candidate(float(phi[0]), float(phi[1]), float(phi[2]), float(np.exp(phi[3 + _main_group(ms)])), nll)
            )

    theta = np.concatenate([best_phi[:3], np.exp(best_phi[3:])])
    lam, jac = model.lam_and_jac(theta)
    lam = np.maximum(lam, 1e-300)
    fisher = np.einsum("np,nq->pq", jac, jac / lam[:, None])
    prior = np.zeros(len(theta))
    prior[:2] = 1.0 / p.xy_prior_sigma_m**2
    prior[2] = 12.0 / (p.z_max_m - p.z_min_m) ** 2
    fisher += np.diag(prior)
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(fisher)
    cov = 0.5 * (cov + cov.T)

    c = ms.counts
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(c > 0, c * np.log(c / lam), 0.0)
    deviance = float(2.0 * np.sum(term - (c - lam)))
    dof = max(len(ms) - len(theta), 1)
    # Model mismatch (anisotropic cargo shielding, background changing along the track, an extended
    # source) shows up as deviance/dof >> 1; the Cramer-Rao bound is then far too small (a strong
    # source gives sub-centimetre sigmas while the fit is metres off).  Scale the covariance by the
    # overdispersion factor, the usual quasi-likelihood correction (McCullagh & Nelder 1989, 4.5).
    cov = cov * max(1.0, deviance / dof)
    if z_fixed is not None:  # z was not fitted: its uncertainty is the prior's, uncorrelated
        cov[2, :] = 0.0
        cov[:, 2] = 0.0
        cov[2, 2] = (p.z_max_m - p.z_min_m) ** 2 / 12.0
    n_units = len(set(ms.unit.tolist())) or 1
    cov[0, 0] += p.position_sigma_m**2 / n_units
    cov[1, 1] += p.position_sigma_m**2 / n_units
    var = np.clip(np.diag(cov), 0.0, None)
    evals, evecs = np.linalg.eigh(cov[:2, :2])
    evals = np.clip(evals, 0.0, None)
    major = evecs[:, 1]
    sigma_xy = math.sqrt(var[0] + var[1])
    ambiguous = any(math.hypot(k.x_m - theta[0], k.y_m - theta[1]) > 2.0 * sigma_xy + 1.0 for k in candidates)
    main = _main_group(ms)
    return SourceEstimate(
        x_m=float(theta[0]),
        y_m=float(theta[1]),
        z_m=float(theta[2]),
        strength=float(theta[3 + main]),
        cov=cov,
        sigma_x_m=math.sqrt(var[0]),
        sigma_y_m=math.sqrt(var[1]),
        sigma_z_m=math.sqrt(var[2]),
        sigma_xy_m=sigma_xy,
        ellipse_major_m=math.sqrt(evals[1]),
        ellipse_minor_m=math.sqrt(evals[0]),
        ellipse_angle_deg=math.degrees(math.atan2(major[1], major[0])) % 180.0,
        n_measurements=len(ms),
        n_units=len(np.unique(ms.unit)),
        converged=best_ok,
        deviance=deviance,
        dof=dof,
        p_value=float(stats.chi2.sf(deviance, dof)),
        ambiguous=ambiguous,
        candidates=tuple(candidates),
        strengths={name: float(theta[3 + g]) for g, name in enumerate(ms.group_names)},
        param_names=("x_m", "y_m", "z_m", *(f"strength[{n}]" for n in ms.group_names)),
    )


def _main_group(ms: MeasurementSet) -> int:
    return int(np.argmax(np.bincount(ms.group, minlength=len(ms.group_names))))
