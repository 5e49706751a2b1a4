"""The Cramer-Rao bound of the source position for a given geometry, counts and background.

For Poisson counts lambda_i(theta) the Fisher information is ``I = J^T diag(1/lambda) J`` (J the
Jacobian of lambda in theta), and any unbiased estimator has ``cov >= I^-1`` (Cramer 1946, Rao
1945; for this problem e.g. Morelande & Ristic, IEEE TSP 57(12), 2009, and Gunatilaka et al., IDC
2007).  The nuisance parameters (strengths, backgrounds, cargo attenuation) are part of theta, so
the position block of I^-1 is the bound *with* them unknown; their priors enter I as the prior
precision (the Bayesian bound of Van Trees 1968 for those components).

Evaluated at the *true* position with the nuisance parameters set by a fit that holds the
position at the truth: the bound for the same geometry, counts and background as the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controller.localization.fit import _bounds, _fit_background, _start_phi, build_context
from controller.localization.measurements import MeasurementSet
from controller.localization.optimizer import fisher_scoring
from controller.localization.params import LocalizationParams

__all__ = ["PositionBound", "crlb_position"]


@dataclass(frozen=True)
class PositionBound:
    cov: tuple[np.ndarray, ...]  # (3, 3) position covariance bound per source
    sigma_xy_m: tuple[float, ...]
    sigma_z_m: tuple[float, ...]


def crlb_position(ms: MeasurementSet, truth_xyz: Sequence[Sequence[float]],
                  params: LocalizationParams | None = None) -> PositionBound:
    """Position bound(s) for sources at ``truth_xyz`` given the data's geometry, counts and background."""
    p = params or LocalizationParams()
    ctx = build_context(ms, p)
    m = ctx.model
    lay = m.layout(len(truth_xyz))
    cols: list[int] = []
    for t in truth_xyz:
        col = p.site.column_at(float(t[0]), float(t[1])) if p.site is not None else 0
        cols.append(0 if col is None else col)
    h0 = _fit_background(ctx)
    pos = [np.asarray(t, dtype=float) for t in truth_xyz]
    phi0 = _start_phi(ctx, lay, pos, h0.phi[m.layout(0).log_b])
    lb, ub = _bounds(ctx, lay, cols)
    for k in range(lay.n_src):  # the truth may lie on a wall: widen its own bounds to hold it
        lb[lay.pos(k)] = np.minimum(lb[lay.pos(k)], pos[k])
        ub[lay.pos(k)] = np.maximum(ub[lay.pos(k)], pos[k])
    free = np.ones(lay.size, dtype=bool)
    for k in range(lay.n_src):
        free[lay.pos(k)] = False
    fit = fisher_scoring(m, lay, phi0, lb, ub, free=free)
    _, _, fisher, _ = m.objective(fit.phi, lay)
    assert fisher is not None
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(fisher)
    blocks = tuple(cov[lay.pos(k), lay.pos(k)].copy() for k in range(lay.n_src))
    return PositionBound(
        cov=blocks,
        sigma_xy_m=tuple(math.sqrt(max(b[0, 0] + b[1, 1], 0.0)) for b in blocks),
        sigma_z_m=tuple(math.sqrt(max(b[2, 2], 0.0)) for b in blocks),
    )
