"""Bounded Fisher scoring with Levenberg-Marquardt damping: the local optimiser of every fit.

Why not scipy.optimize: Fisher scoring uses the model's own curvature, the expected information
``J^T diag(1/lambda) J`` that we need for the covariance anyway, so one model evaluation per
iteration suffices and it converges in 5-15 iterations from a grid start; SLSQP and L-BFGS-B
rebuild a curvature estimate from gradients and needed 3-10x more evaluations on these problems,
and L-BFGS-B's threaded BLAS made it 40x slower on a loaded 2-core box.  Fisher scoring for
Poisson ML is the classic GLM iteration (McCullagh & Nelder 1989, sec. 2.5); the damping and the
trust in the step follow Marquardt (1963, J. SIAM 11:431).

Bounds are handled by an active set: a parameter at a bound whose gradient pushes outwards is
held there for the step; the step is then projected into the box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.localization.model import Layout, Model

__all__ = ["FitOutcome", "fisher_scoring"]


@dataclass
class FitOutcome:
    phi: np.ndarray
    value: float  # NLL + prior
    grad: np.ndarray
    fisher: np.ndarray
    lam: np.ndarray
    converged: bool
    iterations: int


def fisher_scoring(model: Model, lay: Layout, phi0: np.ndarray, lb: np.ndarray, ub: np.ndarray,
                   free: np.ndarray | None = None, max_iter: int = 60, tol: float = 1e-5) -> FitOutcome:
    """Minimise NLL + prior within [lb, ub]; ``free`` masks the parameters that may move."""
    phi = np.clip(np.asarray(phi0, dtype=float), lb, ub)
    free_mask = np.ones(lay.size, dtype=bool) if free is None else np.asarray(free, dtype=bool)
    f, g, h, lam = model.objective(phi, lay)
    assert g is not None and h is not None
    damp = 1e-3
    converged = False
    it = 0
    span = np.maximum(ub - lb, 1e-9)
    for it in range(1, max_iter + 1):  # noqa: B007  (it is reported after the loop)
        at_lo = (phi <= lb + 1e-10 * span) & (g > 0)
        at_hi = (phi >= ub - 1e-10 * span) & (g < 0)
        act = free_mask & ~at_lo & ~at_hi
        if not act.any():
            converged = True
            break
        ha = h[np.ix_(act, act)]
        ga = g[act]
        dg = np.maximum(np.diag(ha).copy(), 1e-12)
        accepted = False
        for _ in range(12):
            a = ha + damp * np.diag(dg)
            try:
                step = np.linalg.solve(a, -ga)
            except np.linalg.LinAlgError:
                damp *= 10.0
                continue
            trial = phi.copy()
            trial[act] += step
            trial = np.clip(trial, lb, ub)
            f_new, g_new, h_new, lam_new = model.objective(trial, lay)
            if np.isfinite(f_new) and f_new <= f:
                accepted = True
                decrease = f - f_new
                predicted = float(-(ga @ step)) * 0.5
                phi, f, g, h, lam = trial, f_new, g_new, h_new, lam_new
                assert g is not None and h is not None
                damp = max(damp / 5.0, 1e-9)
                break
            damp *= 8.0
        if not accepted:
            converged = True  # no descent direction left within the bounds: a (bounded) minimum
            break
        if decrease < tol and abs(predicted) < 10 * tol:
            converged = True
            break
    return FitOutcome(phi, f, g, h, lam, converged, it)
