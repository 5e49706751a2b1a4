"""Source height from the profile likelihood over the column's height range (ground to stack top).

Why not the Fisher information at the ML point, as for x and y: with every detector that sees the
source at one height h (the usual vehicle), the counts fix the height only through the distance
to the track, ``r = sqrt(d^2 + (z - h)^2)``.  Then

* the likelihood is (nearly) mirror-symmetric about the detector plane, z <-> 2h - z, so it has two
  minima and the local fit lands in either (in the demo yard: 1.9, 3.2 or 4.6 m for a source at
  1.0 m, depending on how many passes had arrived);
* dr/dz = 0 at z = h, so the Fisher information in z vanishes there and its inverse is meaningless
  (sigma_z of 10^4 m), while a little further out it is small and over-confident;
* a small relative error of the model's distance scale (the transport of a real yard - steel
  walls, build-up, cargo - differs from the model's; ``model_distance_rel_error``) moves z by
  ``eps r^2 / |z - h|``: metres.  On the demo yard the profile was 10-15 % wider than the model's
  at the true height, and the fit put the source 2-3.6 m too high with sigma_z 0.35 m.

So the height is profiled: z is stepped over the column's own range (the site's ground to the top
of the stack, a hard physical bound), the other parameters refitted at each step (continuation
from the neighbouring step), and the profile deviance ``D(z) = 2 (NLL(z) - NLL_min) / phi`` (phi:
the overdispersion, quasi-likelihood) is combined with the model-error deviance ``M(z)`` of the
distance scale and of ``model_error_sigma_z_m`` as independent Gaussian errors add, i.e.
``C = D M / (D + M)`` (for a Gaussian profile this is exactly ``dz^2 / (sigma_stat^2 +
sigma_model^2)``).  The height reported is the posterior mean under a uniform prior over the
column's height range with the likelihood ``exp(-C/2)``, its sigma the posterior standard
deviation, its 95 % interval the central posterior interval, and x, y follow the profile (their
value at each z weighted the same way, their spread over z added to their covariance).

References: profile likelihood intervals - Venzon & Moolgavkar, Appl. Statist. 37 (1988) 87;
Pawitan, "In All Likelihood" (2001), ch. 3.4 and 10.6; quasi-likelihood scaling - McCullagh &
Nelder (1989) sec. 9.2; bounded parameters and a uniform prior over a physical range - Feldman &
Cousins, PRD 57 (1998) 3873 (the problem), here resolved by the posterior over the allowed range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controller.localization.measurements import MeasurementSet
from controller.localization.model import LOG_S_MIN, Layout, Model
from controller.localization.optimizer import FitOutcome, fisher_scoring

__all__ = ["HeightProfile", "informative_rows", "profile_height", "single_height"]

#: Step of the height grid (m), and the profile fits' iteration limits below: on the demo replay (run 1,
#: every alarm's rows) 0.3 m steps with tol 1e-4 against 0.45 m with tol 1e-3 moved the reported z by
#: 0.02 m and sigma_z by 0.01 m, and the coarser grid costs a third fewer model evaluations (the
#: profile adds ~60 % to a fusion instead of ~110 %).
HEIGHT_STEP_M = 0.45


@dataclass(frozen=True)
class HeightProfile:
    """The height profile of a one-source fit and the posterior summary reported from it."""

    z_m: np.ndarray  # grid (m)
    dev_stat: np.ndarray  # 2 (NLL(z) - min) / phi
    dev_total: np.ndarray  # combined with the model-error deviance
    xy_m: np.ndarray  # (n, 2) x, y refitted at each z
    fits: list[FitOutcome]
    z_mean_m: float
    z_sigma_m: float
    z_interval_95_m: tuple[float, float]
    xy_mean_m: np.ndarray  # posterior mean of (x, y)
    cov_xyz_profile: np.ndarray  # 3x3 spread of (x(z), y(z), z) under the posterior
    best_index: int  # grid point of the lowest NLL
    single_height: bool


def informative_rows(model: Model, fit: FitOutcome, lay: Layout, k: int = 0, n_sigma: float = 1.0,
                     reach: float = 3.0, reach_add_m: float = 10.0) -> np.ndarray:
    """Rows whose expected source counts exceed ``n_sigma`` Poisson sigma of their expected background
    and that pass within ``max(reach * d_min, d_min + reach_add_m)`` of the source (``d_min``: the
    closest approach of any row, horizontally).

    The distance cut: each detector type has its own fitted strength, so a handheld that walked
    through a NORM patch far away gets a strength that "explains" its excess and would count as
    seeing the source; beyond three closest-approach distances the 1/r^2 signal is < 1/9 of the
    closest rows' and carries no height information.

    Why: whether the detectors that see the source are at one height must be decided on those rows
    only.  The fusion of an incident reads every row within its search radius, and in the demo a
    handheld (1.0 m) walking to another alarm 38 m away put a second height into the data; the
    single-height model error was then dropped and sigma_z fell from 2.1 to 0.34 m while the fit
    was 3.6 m off."""
    phi0 = fit.phi.copy()
    phi0[lay.log_s(k)] = LOG_S_MIN
    lam0, _ = model.lam_jac(phi0, lay, False)
    src = np.clip(fit.lam - lam0, 0.0, None)
    d = np.hypot(*(model.ms.mid_xyz_m[:, :2] - fit.phi[lay.pos(k)][:2]).T)
    d_min = float(d.min()) if d.size else 0.0
    near = d <= max(reach * d_min, d_min + reach_add_m)
    return np.asarray((src >= n_sigma * np.sqrt(np.maximum(lam0, 1e-9))) & near)


def single_height(ms: MeasurementSet, rows: np.ndarray, tol_m: float = 0.5) -> float | None:
    """The common detector height of ``rows`` (mask), or None when they span ``tol_m`` or more."""
    if not rows.any():
        return None
    heights = np.concatenate([ms.start_xyz_m[rows, 2], ms.end_xyz_m[rows, 2]])
    if float(np.ptp(heights)) >= tol_m:
        return None
    return float(np.median(heights))


def _fit_at(model: Model, lay: Layout, phi0: np.ndarray, z: float, lb: np.ndarray, ub: np.ndarray,
            iz: int) -> FitOutcome:
    phi = phi0.copy()
    phi[iz] = z
    free = np.ones(lay.size, dtype=bool)
    free[iz] = False
    return fisher_scoring(model, lay, np.clip(phi, lb, ub), lb, ub, free=free, max_iter=20, tol=1e-3)


def _combine(dev: np.ndarray, model_dev: np.ndarray) -> np.ndarray:
    """Statistical and model-error deviances combined as independent Gaussian errors add (variances)."""
    d = np.maximum(dev, 0.0)
    m = np.maximum(model_dev, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where((d > 0) & (m > 0), d * m / (d + m), 0.0)
    return np.where(np.isinf(m), d, c)


def profile_height(model: Model, fit: FitOutcome, lay: Layout, lb: np.ndarray, ub: np.ndarray, phi_od: float,
                   height_m: float | None, eps_rel: float, sigma_z_model_m: float,
                   step_m: float = HEIGHT_STEP_M, k: int = 0, position_sigma_m: float = 0.0) -> HeightProfile:
    """Profile source ``k`` of ``fit`` over its z in [lb_z, ub_z] (its column's range); every other
    parameter (the other source's too) is refitted at each step.

    ``height_m``: the common height of the informative detectors (None: several heights, then only
    ``sigma_z_model_m`` is added as model error); ``eps_rel``: relative error of the model's
    distance scale; ``position_sigma_m``: the horizontal position error of the rows that see the
    source (GNSS, from their fix quality), see below."""
    pos = lay.pos(k)
    iz = pos.start + 2
    z_lo, z_hi = float(lb[iz]), float(ub[iz])
    n = max(2, int(math.ceil((z_hi - z_lo) / step_m)) + 1)
    zs = np.linspace(z_lo, z_hi, n)
    z_hat = float(fit.phi[iz])
    start = int(np.argmin(np.abs(zs - z_hat)))
    fits: list[FitOutcome | None] = [None] * n
    fits[start] = _fit_at(model, lay, fit.phi, zs[start], lb, ub, iz)
    for rng in (range(start + 1, n), range(start - 1, -1, -1)):  # continuation both ways from the ML height
        prev = fits[start]
        for i in rng:
            assert prev is not None
            fits[i] = prev = _fit_at(model, lay, prev.phi, zs[i], lb, ub, iz)
    done = [f for f in fits if f is not None]
    assert len(done) == n
    nll = np.array([f.value for f in done])
    best = int(np.argmin(nll))
    nll_min = min(float(nll[best]), fit.value)
    dev = 2.0 * (nll - nll_min) / max(phi_od, 1.0)
    xy = np.array([f.phi[pos][:2] for f in done])
    # model-error deviance, about the best grid point
    zb = float(zs[best])
    m_z = ((zs - zb) / max(sigma_z_model_m, 1e-6)) ** 2
    if height_m is not None and eps_rel > 0:
        mids = model.ms.mid_xyz_m[:, :2]
        d2 = np.array([float(np.min(np.sum((mids - p) ** 2, axis=1))) for p in xy])
        r = np.sqrt(d2 + (zs - height_m) ** 2)
        r_b = float(r[best])
        # The distance error: the model's scale error, and the position error of the track.  A
        # receiver's error drifts during a pass (Gauss-Markov, tau ~ 1 min: over a 10-s crossing it
        # moves by ~0.55 sigma), which the one-offset-per-pass model does not follow; the count profile
        # is then the true one smeared by that motion, i.e. wider, and a wider profile reads as a
        # larger distance - only ever larger, since r >= d - so z is pushed away from the detector
        # plane.  Demo yard (fix quality 1, sigma 1 m): snapping the stored tracks to the lane
        # centres moved the fit from z 4.0 to 1.8 m (truth 1.0).  The full sigma is used (the
        # receiver's correlation time is not known here): conservative.
        sig_r = math.hypot(eps_rel * r_b, position_sigma_m)
        m_r = ((r - r_b) / max(sig_r, 1e-6)) ** 2
        with np.errstate(divide="ignore"):
            m_model = 1.0 / (1.0 / np.where(m_r > 0, m_r, 1e-300) + 1.0 / np.where(m_z > 0, m_z, 1e-300))
        m_model = np.where((m_r == 0) | (m_z == 0), 0.0, m_model)
    else:
        m_model = m_z
    total = _combine(dev, m_model)
    # posterior under a uniform prior on [z_lo, z_hi]; trapezoid weights on the grid
    w = np.exp(-0.5 * (total - total.min()))
    w[0] *= 0.5
    w[-1] *= 0.5
    w /= w.sum()
    v = np.column_stack([xy, zs])
    mean = w @ v
    cov = (v - mean).T @ ((v - mean) * w[:, None])
    cdf = np.cumsum(w)
    lo95 = float(np.interp(0.025, cdf, zs))
    hi95 = float(np.interp(0.975, cdf, zs))
    return HeightProfile(zs, dev, total, xy, done, float(mean[2]), float(math.sqrt(max(cov[2, 2], 0.0))),
                         (max(lo95, z_lo), min(hi95, z_hi)), mean[:2], cov, best, height_m is not None)
