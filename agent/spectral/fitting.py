"""Poisson maximum-likelihood fits of non-negative spectral mixtures (numba kernels).

Why Poisson and not least squares: 1 s spectra have a handful of counts per bin, where chi-square
fits are biased (Baker & Cousins, NIM 221 (1984) 437); the Poisson log-likelihood
``sum n log mu - mu`` is exact at any count. Amplitudes are constrained >= 0 (a source cannot emit
negative photons), which makes the likelihood-ratio statistic a 50:50 mixture of 0 and chi2(1) under
the null (Chernoff 1954) — the basis of the identifier's thresholds.

The solver is a projected Newton method: Newton steps on the free parameters, clamped at zero,
with backtracking so that the likelihood never decreases. With 5-8 parameters and ~260 bins an
iteration costs ~1-2 us.

Speed (issue 13): the per-bin work is written as separate passes over contiguous rows — residuals and
weights first, then one dot product per gradient entry and per Hessian entry — compiled with
``error_model="numpy"`` (no per-division zero checks) and floating-point reassociation allowed in those
sums, so LLVM vectorises them (SIMD). The earlier bin-outer loop with branches ran ~3x slower for the
same arithmetic; results agree to ~1e-9 in log-likelihood (summation order only).
"""

from __future__ import annotations

import numba
import numpy as np

_EPS = 1e-9
# reassociation lets LLVM vectorise the reductions (sums in a different order: rounding-level changes);
# no 'nnan'/'ninf'/'afn': logarithms and non-finite checks stay exact
_FAST = {"reassoc", "contract", "nsz", "arcp"}


@numba.njit(cache=True, error_model="numpy")
def poisson_loglik(n: np.ndarray, mu: np.ndarray) -> float:  # pragma: no cover
    total = 0.0
    for i in range(n.shape[0]):
        m = mu[i] if mu[i] > _EPS else _EPS
        total += (n[i] * np.log(m) if n[i] > 0 else 0.0) - m
    return total


@numba.njit(cache=True, error_model="numpy")
def _solve_spd(a: np.ndarray, b: np.ndarray, n: int, out: np.ndarray) -> None:  # pragma: no cover
    """Solve a x = b for the leading n x n block of a symmetric positive definite ``a`` (Cholesky, in place)."""
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= a[j, k] * a[j, k]
        d = np.sqrt(s) if s > 1e-300 else 1e-150
        a[j, j] = d
        for i in range(j + 1, n):
            s = a[i, j]
            for k in range(j):
                s -= a[i, k] * a[j, k]
            a[i, j] = s / d
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= a[i, k] * out[k]
        out[i] = s / a[i, i]
    for i in range(n - 1, -1, -1):
        s = out[i]
        for k in range(i + 1, n):
            s -= a[k, i] * out[k]
        out[i] = s / a[i, i]


@numba.njit(cache=True, error_model="numpy", fastmath=_FAST)
def _model(design: np.ndarray, x: np.ndarray, offset: np.ndarray, mu: np.ndarray) -> None:  # pragma: no cover
    """mu = offset + design.T @ x, one contiguous row at a time (vectorised)."""
    p, m = design.shape
    for i in range(m):
        mu[i] = offset[i]
    for j in range(p):
        xj = x[j]
        if xj != 0.0:
            for i in range(m):
                mu[i] += design[j, i] * xj


@numba.njit(cache=True, error_model="numpy", fastmath=_FAST)
def _grad_hess(n, mu, design, r, w, wd, g, h) -> None:  # pragma: no cover
    """Gradient g and (full, symmetric) negative Hessian h of the Poisson log-likelihood at mu."""
    p, m = design.shape
    for i in range(m):
        mi = mu[i] if mu[i] > _EPS else _EPS
        q = n[i] / mi
        r[i] = q - 1.0
        w[i] = q / mi
    for j in range(p):
        s = 0.0
        for i in range(m):
            s += r[i] * design[j, i]
            wd[i] = w[i] * design[j, i]
        g[j] = s
        for k in range(j, p):
            t = 0.0
            for i in range(m):
                t += wd[i] * design[k, i]
            h[j, k] = t
            h[k, j] = t


@numba.njit(cache=True)
def fit_nonneg(n: np.ndarray, design: np.ndarray, x0: np.ndarray, offset: np.ndarray,
               max_iter: int):  # pragma: no cover
    """Maximise sum n log(mu) - mu, mu = offset + design.T @ x, x >= 0. Returns (x, loglik, iters)."""
    p = design.shape[0]
    return fit_nonneg_prior(n, design, x0, offset, np.zeros(p), np.zeros(p), max_iter)


@numba.njit(cache=True, error_model="numpy")
def _objective(n, mu, x, prior_mean, prior_prec):  # pragma: no cover
    total = poisson_loglik(n, mu)
    for j in range(x.shape[0]):
        if prior_prec[j] > 0:
            d = x[j] - prior_mean[j]
            total -= 0.5 * prior_prec[j] * d * d
    return total


@numba.njit(cache=True, error_model="numpy")
def fit_nonneg_prior(n, design, x0, offset, prior_mean, prior_prec, max_iter):  # pragma: no cover
    """As :func:`fit_nonneg`, plus independent Gaussian priors N(prior_mean, 1/prior_prec) on the
    coefficients (precision 0 = flat); returns the log-posterior (up to a constant) as ``loglik``.

    Stops when the Newton decrement promises less than 1e-4 in log-likelihood (far below the
    differences of ~1 that model selection looks at).

    Bounds are handled as in Bertsekas' projected Newton method (SIAM J. Control Optim. 20 (1982)
    221): a coefficient at zero whose gradient points outward stays fixed, and one the Newton step
    would push below zero while its own gradient also points down is sent to zero directly and left
    out of the Newton system. Without that rule a coefficient near zero kept the clamped step tiny
    and the fit stalled short of the optimum (up to ~4 in log-likelihood on RASE pair fits, issue 13).
    A full Newton step is taken without evaluating the likelihood only when it clamps nothing (then
    the quadratic model holds); otherwise, and far from the optimum, it backtracks.
    """
    p, m = design.shape
    design = np.ascontiguousarray(design)
    x = np.empty(p)
    for j in range(p):
        x[j] = x0[j] if x0[j] > 0 else 0.0
    mu = np.empty(m)
    mu_new = np.empty(m)
    x_new = np.empty(p)
    r = np.empty(m)
    w = np.empty(m)
    wd = np.empty(m)
    g = np.empty(p)
    h = np.empty((p, p))
    hf = np.empty((p, p))
    gf = np.empty(p)
    step = np.empty(p)
    d = np.empty(p)
    idx = np.empty(p, dtype=np.int64)
    to_zero = np.zeros(p, dtype=np.bool_)
    _model(design, x, offset, mu)
    ll = _objective(n, mu, x, prior_mean, prior_prec)
    stale = False  # ll not yet evaluated at x (after an unevaluated Newton step)
    it = 0
    for it in range(max_iter):  # noqa: B007 - the count is returned
        _grad_hess(n, mu, design, r, w, wd, g, h)
        for j in range(p):
            if prior_prec[j] > 0:
                g[j] -= prior_prec[j] * (x[j] - prior_mean[j])
                h[j, j] += prior_prec[j]
            to_zero[j] = False
        nf = 0
        for _ in range(p):
            nf = 0
            for j in range(p):
                if (x[j] > 0.0 or g[j] > 0.0) and not to_zero[j]:
                    idx[nf] = j
                    nf += 1
            if nf == 0:
                break
            for a in range(nf):
                ja = idx[a]
                gf[a] = g[ja]
                for b in range(nf):
                    hf[a, b] = h[ja, idx[b]]
                hf[a, a] += 1e-9 * (1.0 + hf[a, a]) + 1e-12
            _solve_spd(hf, gf, nf, step)
            more = False
            for a in range(nf):
                j = idx[a]
                if x[j] + step[a] < 0.0 and g[j] <= 0.0:
                    to_zero[j] = True
                    more = True
            if not more:
                break
        decrement = 0.0
        clamps = False
        for j in range(p):
            d[j] = 0.0
            if to_zero[j]:
                d[j] = -x[j]
                decrement -= g[j] * x[j]
                clamps = True
        for a in range(nf):
            d[idx[a]] = step[a]
            decrement += gf[a] * step[a]
            if x[idx[a]] + step[a] <= 0.0:
                clamps = True
        if decrement < 2e-4:
            break
        if decrement < 1.0 and not clamps:
            # near the optimum the (concave) log-likelihood is close to quadratic: take the
            # Newton step without evaluating it (saves m logarithms per iteration)
            for j in range(p):
                x[j] += d[j]
            _model(design, x, offset, mu)
            stale = True
            continue
        if stale:
            ll = _objective(n, mu, x, prior_mean, prior_prec)
            stale = False
        t = 1.0
        improved = False
        ll_new = ll
        for _ in range(30):
            for j in range(p):
                v = x[j] + t * d[j]
                x_new[j] = v if v > 0.0 else 0.0
            _model(design, x_new, offset, mu_new)
            ll_new = _objective(n, mu_new, x_new, prior_mean, prior_prec)
            if ll_new >= ll - 1e-9:
                improved = True
                break
            t *= 0.5
        if not improved:
            break
        for j in range(p):
            x[j] = x_new[j]
        for i in range(m):
            mu[i] = mu_new[i]
        ll = ll_new
    if stale:
        ll = _objective(n, mu, x, prior_mean, prior_prec)
    return x, ll, it + 1


@numba.njit(cache=True, error_model="numpy")
def fit_many(
    n: np.ndarray,
    base: np.ndarray,
    templates: np.ndarray,
    template_weight: np.ndarray,
    x_base: np.ndarray,
    combos: np.ndarray,
    amp0: np.ndarray,
    max_iter: int,
    base_prior_mean: np.ndarray,
    base_prior_prec: np.ndarray,
    starts: np.ndarray,
):  # pragma: no cover
    """Fit ``base`` rows plus the 1-2 templates of each row of ``combos`` (-1 = unused) jointly.

    Template rows enter multiplied by ``template_weight`` (per bin), so the caller need not build a
    weighted copy of the whole template matrix per spectrum. Start values (issue 13: warm starts cut
    the Newton iterations ~2x; the likelihood is concave, so the optimum does not depend on them):
    row ``c`` of ``starts`` (n_combo, n_base + 2) when ``starts[c, 0] >= 0``; otherwise a two-template
    combination starts from the best-fitting earlier single-template combination of this call that
    holds one of its templates (its solution, the other template at 1 count), and anything else from
    ``x_base`` and ``amp0`` (at least 1 count).

    Returns (loglik per combo, coefficients per combo as (n_combos, n_base + 2), zero-padded).
    One numba call for all hypotheses keeps the per-spectrum cost in microseconds.
    """
    n_base, m = base.shape
    n_combo = combos.shape[0]
    lls = np.empty(n_combo)
    xs = np.zeros((n_combo, n_base + 2))
    zero = np.zeros(m)
    use_starts = starts.shape[0] == n_combo
    for c in range(n_combo):
        k = 0
        for j in range(2):
            if combos[c, j] >= 0:
                k += 1
        design = np.empty((n_base + k, m))
        x0 = np.empty(n_base + k)
        pm = np.zeros(n_base + k)
        pp = np.zeros(n_base + k)
        for j in range(n_base):
            design[j] = base[j]
            x0[j] = x_base[j]
            pm[j] = base_prior_mean[j]
            pp[j] = base_prior_prec[j]
        r = n_base
        for j in range(2):
            t = combos[c, j]
            if t >= 0:
                for i in range(m):
                    design[r, i] = templates[t, i] * template_weight[i]
                x0[r] = amp0[t] if amp0[t] > 1.0 else 1.0
                r += 1
        if use_starts and starts[c, 0] >= 0.0:
            for j in range(n_base + k):
                x0[j] = starts[c, j]
        elif k == 2:
            parent = -1
            for c2 in range(c):
                nested = combos[c2, 1] < 0 and (combos[c2, 0] == combos[c, 0] or combos[c2, 0] == combos[c, 1])
                if nested and (parent < 0 or lls[c2] > lls[parent]):
                    parent = c2
            if parent >= 0:
                for j in range(n_base):
                    x0[j] = xs[parent, j]
                own = 0 if combos[c, 0] == combos[parent, 0] else 1
                x0[n_base + own] = xs[parent, n_base]
                x0[n_base + 1 - own] = 1.0
        x, ll, _ = fit_nonneg_prior(n, design, x0, zero, pm, pp, max_iter)
        lls[c] = ll
        for j in range(n_base):
            xs[c, j] = x[j]
        r = n_base
        for j in range(2):
            if combos[c, j] >= 0:
                xs[c, n_base + j] = x[r]
                r += 1
    return lls, xs


@numba.njit(cache=True, error_model="numpy", fastmath=_FAST)
def _row_dot(a: np.ndarray, t: int, b: np.ndarray) -> float:  # pragma: no cover
    s = 0.0
    for i in range(b.shape[0]):
        s += a[t, i] * b[i]
    return s


@numba.njit(cache=True, error_model="numpy", fastmath=_FAST)
def score_test(n, mu0, base, templates, template_weight, prior_prec):  # pragma: no cover
    """Rao score test of every template against a fit ``mu0`` of the ``base`` rows (profiled out).

    Returns (first-step amplitude, score statistic) per template; the statistics are documented at
    ``agent.spectral.identify.Identifier._screen``. Template rows enter times ``template_weight``.
    One pass over the template matrix, each row's sums while it sits in L1 cache (three BLAS passes,
    a 4x4 ``numpy.linalg.inv`` and an einsum cost ~3x more at 185 x 260, issue 13).
    """
    n_base, m = base.shape
    n_t = templates.shape[0]
    a = np.empty(m)  # gradient weights
    b = np.empty(m)  # information weights of a template with itself
    c = np.empty((n_base, m))  # ... with each base row
    wgt = np.empty(m)
    for i in range(m):
        mi = mu0[i] if mu0[i] > 1e-9 else 1e-9
        wgt[i] = n[i] / (mi * mi)
        a[i] = template_weight[i] * (n[i] / mi - 1.0)
        b[i] = template_weight[i] * template_weight[i] * wgt[i]
    for k in range(n_base):
        for i in range(m):
            c[k, i] = base[k, i] * template_weight[i] * wgt[i]
    # inverse of the base rows' information (Cholesky, column by column)
    inv = np.zeros((n_base, n_base))
    if n_base > 0:
        i_bb = np.empty((n_base, n_base))
        work = np.empty((n_base, n_base))
        e = np.zeros(n_base)
        col = np.empty(n_base)
        for j in range(n_base):
            for k in range(n_base):
                s = 0.0
                for i in range(m):
                    s += base[j, i] * wgt[i] * base[k, i]
                i_bb[j, k] = s
            i_bb[j, j] += prior_prec[j] + 1e-9
        for j in range(n_base):
            for u in range(n_base):
                for v in range(n_base):
                    work[u, v] = i_bb[u, v]
                e[u] = 0.0
            e[j] = 1.0
            _solve_spd(work, e, n_base, col)
            for u in range(n_base):
                inv[u, j] = col[u]
    amp = np.empty(n_t)
    q = np.empty(n_t)
    tb = np.empty(n_base)
    for t in range(n_t):
        g = _row_dot(templates, t, a)
        i_tt = 0.0
        for i in range(m):
            v = templates[t, i]
            i_tt += v * v * b[i]
        for k in range(n_base):
            s = 0.0
            for i in range(m):
                s += templates[t, i] * c[k, i]
            tb[k] = s
        quad = 0.0
        for u in range(n_base):
            for v in range(n_base):
                quad += tb[u] * inv[u, v] * tb[v]
        i_eff = i_tt - quad
        floor = 1e-12 * (i_tt if i_tt > 1e-300 else 1e-300)
        if i_eff < floor:
            i_eff = floor
        q[t] = g * g / i_eff if g > 0 else 0.0
        amp[t] = g / i_eff if g > 0 else 0.0
    return amp, q
