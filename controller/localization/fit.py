"""Localization of 0, 1 or 2 sources: grid, local fits, model selection, uncertainty.

Steps (one batch; :mod:`controller.localization.incremental` reuses them with warm starts):

1. Rows far from every elevated interval are dropped (they only inform the background).
2. Background-only fit (H0): one rate per detector channel and pass, with its prior.
3. Grid over the candidate volume, scored by the profile likelihood (:mod:`.search`); the best
   point of each of the ``n_starts`` best columns (or free-space basins) seeds a full fit of
   position, strengths, backgrounds and cargo attenuation (:mod:`.optimizer`).
4. No-source test: ``T1 = 2 (NLL_0 - NLL_1) / phi`` against ``detect_threshold``; phi =
   max(1, deviance/dof) of the largest model fitted is the overdispersion (a quasi-likelihood
   F-type correction, McCullagh & Nelder 1989 sec. 4.5: model mismatch must not pass for a
   source).  A second background-only model may vary smoothly along each pass
   (Gaussian bumps every ``background_bump_spacing_m``, amplitude prior ``background_bump_sigma``):
   the result says so (``smooth_background_explains``, and in the reason) when such a smooth
   change explains the excess nearly as well as a source: a +25 % NORM patch on a lane passes the
   test as a source (gross counts cannot tell them apart), but is flagged.  It only flags, and the
   fits with sources keep a constant background per pass: used as the test's null model, the
   bumps ate weak sources' peaks (detection 0.92 -> 0.79 on the tuning seeds) and hid second sources.
5. Second source: seeded from the grid rescored on top of the one-source fit; accepted when
   ``T2 = 2 (NLL_1 - NLL_2) / phi_2`` exceeds ``second_source_threshold`` and the two are more
   than ``min_source_separation_m`` apart.  Thresholds set by simulation (docs/localization.md):
   the LR of a source with free position does not follow chi^2 (its position is not defined under
   the null; Davies 1987, Biometrika 74:33), so Wilks' theorem gives no threshold.
6. Uncertainty: inverse expected Fisher information at the estimate (the Cramer-Rao bound
   there), times phi, plus the GNSS error propagated per unit and pass: a pass whose positions
   are all off by delta moves the estimate by ``A delta`` with ``A = I^-1 I_u[:, xy]`` (the
   linear response of the ML estimate to a shift of that pass), so its covariance adds
   ``sigma_u^2 A A^T`` - counted only for rows whose positions have GNSS error.

Literature: Poisson ML localization from mobile detectors - Gunatilaka, Ristic & Gailis, IDC 2007;
Morelande, Ristic & Gunatilaka, FUSION 2007 (multiple sources, model order); Howse et al. and
Hellfeld et al. (gamma-ray point-source localization with attenuation in known geometry,
e.g. Hellfeld et al., IEEE TNS 66(11), 2019); the CRLB for this problem as in Morelande & Ristic,
IEEE TSP 57(12), 2009.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import special  # chi-square via the incomplete gamma function: scipy.stats costs the controller 45 MB, 3 s

from controller.localization.height import HeightProfile, informative_rows, profile_height, single_height
from controller.localization.measurements import MeasurementSet
from controller.localization.model import (
    LOG_B_MAX,
    LOG_B_MIN,
    LOG_S_MAX,
    LOG_S_MIN,
    MU_MAX_PER_M,
    Layout,
    Model,
    ModelConfig,
)
from controller.localization.optimizer import FitOutcome, fisher_scoring
from controller.localization.params import LocalizationParams
from controller.localization.result import Candidate, LocalizationResult, SourceEstimate
from controller.localization.search import Candidates, candidate_points, hot_rows, profile_gain

__all__ = ["FitContext", "build_context", "locate", "localize"]


@dataclass
class FitContext:
    """A model of the (selected) data with its candidate volume; shared by batch and incremental fits."""

    model: Model
    params: LocalizationParams
    cands: Candidates
    hot: np.ndarray
    col_labels: tuple[str, ...]
    rows: np.ndarray  # indices into the caller's MeasurementSet


def _site_boxes(params: LocalizationParams, ms: MeasurementSet, radius_m: float
                ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray] | None, int, tuple[str, ...]]:
    """Cargo boxes near the data, their fit-local cargo group index, and the groups' names."""
    site = params.site
    if site is None or not site.columns:
        return None, 0, ()
    lo, hi = site.lo_hi()
    grp = site.group_index()
    pts = np.vstack([ms.start_xyz_m, ms.end_xyz_m])[:, :2]
    bx0, by0 = pts.min(axis=0) - radius_m
    bx1, by1 = pts.max(axis=0) + radius_m
    near = (lo[:, 0] <= bx1) & (hi[:, 0] >= bx0) & (lo[:, 1] <= by1) & (hi[:, 1] >= by0)
    used = sorted(set(grp[near].tolist()))
    local = np.array([used.index(g) for g in grp[near]], dtype=np.int64)
    return (lo[near], hi[near], local), len(used), tuple(site.groups[g] for g in used)


def build_context(ms: MeasurementSet, params: LocalizationParams) -> FitContext:
    """Select the rows, build the model and the candidate grid."""
    p = params
    site = p.site
    cfg = ModelConfig(
        mu_air_per_m=p.mu_air_per_m, near_field_m=p.near_field_m, subsample_spacing_m=p.subsample_spacing_m,
        max_subsamples=p.max_subsamples, min_subsamples=max(1, p.subsamples),
        background_prior_rel=p.background_prior_rel, background_prior_rel_estimated=p.background_prior_rel_estimated,
        mu_prior_mean_per_m=site.mu_prior_mean_per_m if site else 1.0,
        mu_prior_sigma_per_m=site.mu_prior_sigma_per_m if site else 1.5,
        xy_prior_sigma_m=None if site else p.xy_prior_sigma_m,
        background_bump_spacing_m=p.background_bump_spacing_m, background_bump_sigma=p.background_bump_sigma,
    )
    if p.position_sigma_m is not None:
        ms = ms.subset(np.arange(len(ms)))
        ms.position_sigma_m = np.full(len(ms), float(p.position_sigma_m))
    rows = np.arange(len(ms))
    # a first model only to find the elevated rows; rows far from them are dropped
    probe = Model(ms, cfg, None, 0)
    hot = hot_rows(probe, p.hot_sigma)
    mid = ms.mid_xyz_m[:, :2]
    hot_xy = mid[hot]
    d2 = np.full(len(ms), np.inf)
    for a in range(0, len(hot_xy), 256):
        d2 = np.minimum(d2, ((mid[:, None, :] - hot_xy[None, a:a + 256, :]) ** 2).sum(axis=2).min(axis=1))
    keep = d2 <= p.fit_radius_m**2
    if keep.sum() < len(ms):
        rows = np.flatnonzero(keep)
        ms = ms.subset(rows)
    boxes, n_mu, mu_names = _site_boxes(p, ms, p.candidate_radius_m + 10.0)
    model = Model(ms, cfg, boxes, n_mu, mu_names)
    hot = hot_rows(model, p.hot_sigma)
    z_max = p.z_max_m
    cands = candidate_points(model, hot, p.candidate_radius_m, p.grid_step_m, site, p.z_min_m, z_max)
    labels = tuple(c.label for c in site.columns) if site else ()
    return FitContext(model, p, cands, hot, labels, rows)


# --------------------------------------------------------------------------- helpers
def _bounds(ctx: FitContext, lay: Layout, cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
    lb = np.empty(lay.size)
    ub = np.empty(lay.size)
    for k, c in enumerate(cols):
        lb[lay.pos(k)] = ctx.cands.lo[c]
        ub[lay.pos(k)] = ctx.cands.hi[c]
        lb[lay.log_s(k)] = LOG_S_MIN
        ub[lay.log_s(k)] = LOG_S_MAX
    lb[lay.log_b] = LOG_B_MIN
    ub[lay.log_b] = LOG_B_MAX
    if lay.n_mu:
        lb[lay.mu] = 0.0
        ub[lay.mu] = MU_MAX_PER_M
    if lay.n_off:
        so = np.repeat(ctx.model.off_sigma, 2)
        lb[lay.off] = -5.0 * so
        ub[lay.off] = 5.0 * so
    if lay.n_spl:
        lb[lay.spl] = -1.0
        ub[lay.spl] = 1.0
    return lb, ub


def _fit_background(ctx: FitContext, bumps: bool = False) -> FitOutcome:
    m = ctx.model
    lay = m.layout(0, bumps)
    phi0 = np.concatenate([m.log_b0, np.zeros(lay.n_spl)])
    lb, ub = _bounds(ctx, lay, [])
    return fisher_scoring(m, lay, phi0, lb, ub)


def _start_phi(ctx: FitContext, lay: Layout, positions: list[np.ndarray], log_b: np.ndarray,
               mu: np.ndarray | None = None, spl: np.ndarray | None = None) -> np.ndarray:
    m = ctx.model
    phi = np.empty(lay.size)
    mu0 = np.full(lay.n_mu, m.cfg.mu_prior_mean_per_m) if mu is None else mu
    if lay.n_mu:
        phi[lay.mu] = mu0
    phi[lay.log_b] = log_b
    if lay.n_off:
        phi[lay.off] = 0.0
    if lay.n_spl:
        phi[lay.spl] = 0.0 if spl is None else spl
    for k, s in enumerate(positions):
        phi[lay.pos(k)] = s
        phi[lay.log_s(k)] = m.initial_log_strength(s, log_b, mu0 if lay.n_mu else None)
    if lay.n_src > 1:  # the total excess is shared, not counted once per source
        for k in range(lay.n_src):
            phi[lay.log_s(k)] -= math.log(lay.n_src)
    return phi


def _starts(ctx: FitContext, gains: np.ndarray, n: int, exclude: list[tuple[np.ndarray, float]] = ()
            ) -> list[tuple[np.ndarray, int]]:
    """Best grid point per column (or per free-space basin), best first, up to ``n``."""
    cands = ctx.cands
    order = np.argsort(-gains)
    out: list[tuple[np.ndarray, int]] = []
    seen_cols: set[int] = set()
    for i in order:
        pt = cands.pts[i]
        col = int(cands.column[i])
        if any(np.linalg.norm(pt - e) < r for e, r in exclude):
            continue
        if ctx.params.site is not None:
            if col in seen_cols:
                continue
            seen_cols.add(col)
        elif any(np.linalg.norm(pt - q) < 3.0 for q, _ in out):
            continue
        out.append((pt.copy(), col))
        if len(out) >= n:
            break
    return out


def _overdispersion(model: Model, lam: np.ndarray, n_par: int) -> tuple[float, float, int]:
    """(phi, deviance, dof): phi = deviance/dof when the deviance is significantly (5 %) above
    chi^2_dof, else 1 - on a short pass (dof ~ 8) deviance/dof scatters by +-50 % by chance alone,
    and dividing a likelihood ratio by that noise would hide weak sources."""
    dev = model.deviance(lam)
    dof = max(len(model.c) - n_par, 1)
    if dev <= 2.0 * float(special.gammaincinv(dof / 2.0, 0.95)):
        return 1.0, dev, dof
    return max(1.0, dev / dof), dev, dof


def _single_height_z_error(ms: MeasurementSet, s: np.ndarray, p: LocalizationParams,
                           rows: np.ndarray | None = None) -> float:
    """Model error of the height when every detector that sees the source is at one height h.

    Then the height comes from the width of the count-rate profile alone, i.e. from the distance
    r = sqrt(d^2 + (z - h)^2) to the track (d horizontal), and a relative error eps of the model's
    distance scale (cargo build-up and walls bend the profile; ``model_distance_rel_error``) moves
    z by eps r^2 / |z - h|: unbounded near the detector plane.  On the tuning seeds single-height
    fits put sources 0.5 m below the detectors 1.4-3 m too high with a counting sigma of 0.4 m;
    with a second detector height the ratio between detectors carries the height instead.
    ``rows``: the rows that carry the source's signal (:func:`.height.informative_rows`); a far
    detector at another height that does not see the source must not count as a second height.
    Used for two-source fits; one-source heights come from the profile (:mod:`.height`).
    """
    sel = np.ones(len(ms), dtype=bool) if rows is None or not np.any(rows) else rows
    h = single_height(ms, sel)
    if h is None:
        return 0.0
    d2 = float(np.min(np.sum((ms.mid_xyz_m[sel, :2] - s[:2]) ** 2, axis=1)))
    dz = float(s[2]) - h
    return min(p.model_distance_rel_error * (d2 + dz * dz) / max(abs(dz), 0.1), 100.0)


def _inverse(fisher: np.ndarray) -> np.ndarray:
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(fisher)
    return 0.5 * (cov + cov.T)


def _estimate(ctx: FitContext, fit: FitOutcome, lay: Layout, k: int, cols: list[int], phi_od: float,
              dev: float, dof: int, candidates: tuple[Candidate, ...], ambiguous: bool,
              height: HeightProfile | None = None) -> SourceEstimate:
    """The reported estimate of source ``k`` of ``fit``.  ``height``: the one-source height profile
    (:mod:`.height`); with it z, its sigma and 95 % interval are the profile's posterior, x and y
    its posterior means, and the Fisher information is used with z held (conditioned on)."""
    m = ctx.model
    p = ctx.params
    ms = m.ms
    fisher = fit.fisher
    # A source coordinate held at its bound (a container wall, the ground, a narrow height range)
    # with the likelihood pushing outwards: the Fisher information treats it as free, and along a
    # degenerate direction (a rotation about the track line) that gives a huge sigma.  It is
    # conditioned on instead, and given the variance of a uniform over its allowed range.
    lb, ub = _bounds(ctx, lay, cols)
    span = np.maximum(ub - lb, 1e-9)
    held = np.zeros(lay.size, dtype=bool)
    for q in range(lay.n_src):
        sl = lay.pos(q)
        g = fit.grad[sl]
        held[sl] = ((fit.phi[sl] <= lb[sl] + 1e-6 * span[sl]) & (g > 0)) | \
                   ((fit.phi[sl] >= ub[sl] - 1e-6 * span[sl]) & (g < 0))
    if height is not None:  # z comes from the profile: x, y and the rest are conditioned on it
        held[lay.pos(k).start + 2] = True
    free = ~held
    cov_u = np.zeros_like(fisher)
    cov_u[np.ix_(free, free)] = _inverse(fisher[np.ix_(free, free)])
    cov_u[held, held] = span[held] ** 2 / 12.0
    if lay.n_off:  # the bound with the GNSS offsets known: the counts' own information
        keep = free.copy()
        keep[lay.off] = False
        cov_known = np.zeros_like(cov_u)
        cov_known[np.ix_(keep, keep)] = _inverse(fisher[np.ix_(keep, keep)])
        cov_known[held, held] = cov_u[held, held]
    else:
        cov_known = cov_u
    # counting statistics scaled by the overdispersion; the GNSS share (a prior, not the counts) not
    cov_full = cov_known * phi_od + (cov_u - cov_known)
    cov_full[held, held] = cov_u[held, held]  # a range, not a statistical error: not scaled
    pos = list(range(lay.pos(k).start, lay.pos(k).stop))
    ls = list(range(lay.log_s(k).start, lay.log_s(k).stop))
    strengths = np.exp(fit.phi[ls])
    # covariance of (x, y, z, S_g): ln S -> S by the delta method
    idx = pos + ls
    cov = cov_full[np.ix_(idx, idx)].copy()
    jd = np.ones(len(idx))
    jd[3:] = strengths
    cov = cov * np.outer(jd, jd)
    # model error: hal_sim's transport (walls, build-up spectrum, detector response) differs from the
    # model's; at high counts that, not counting statistics, sets the error (tuning seeds: ~0.1-0.3 m)
    cov[0, 0] += p.model_error_sigma_m**2
    cov[1, 1] += p.model_error_sigma_m**2
    x, y, z = (float(v) for v in fit.phi[pos])
    if height is None:
        rows = informative_rows(m, fit, lay, k)
        cov[2, 2] += p.model_error_sigma_z_m**2 + _single_height_z_error(ms, fit.phi[lay.pos(k)], p, rows) ** 2
    else:
        # the spread of (x(z), y(z), z) over the height posterior; z's variance is the posterior's
        # (it holds the model error already); x, y keep their conditional Fisher part on top
        cov[:3, 2] = 0.0
        cov[2, :3] = 0.0
        cov[:3, :3] += height.cov_xyz_profile
        x, y = (float(v) for v in height.xy_mean_m)
        z = height.z_mean_m
    var = np.clip(np.diag(cov), 0.0, None)
    evals, evecs = np.linalg.eigh(cov[:2, :2])
    evals = np.clip(evals, 0.0, None)
    major = evecs[:, 1]
    sigma_z = math.sqrt(var[2])
    col = cols[k]
    z_lo_bound, z_hi_bound = float(ctx.cands.lo[col][2]), float(ctx.cands.hi[col][2])
    resolved = sigma_z <= p.height_resolved_sigma_m
    if resolved and height is not None:
        z_int = height.z_interval_95_m
        note = f"height {z:.1f} m, 95 % interval {z_int[0]:.1f}-{z_int[1]:.1f} m"
    elif resolved:
        z_int = (max(z - 1.96 * sigma_z, z_lo_bound), min(z + 1.96 * sigma_z, z_hi_bound))
        note = f"height {z:.1f} m, 95 % interval {z_int[0]:.1f}-{z_int[1]:.1f} m"
    elif height is not None:  # the interval stays the allowed range; the note adds the posterior's
        z_int = (z_lo_bound, z_hi_bound)
        lo95, hi95 = height.z_interval_95_m
        note = (f"height not resolved (sigma_z {sigma_z:.1f} m > {p.height_resolved_sigma_m:.1f} m): "
                f"anywhere in {z_lo_bound:.1f}-{z_hi_bound:.1f} m, most likely {lo95:.1f}-{hi95:.1f} m (95 %)")
    else:
        z_int = (z_lo_bound, z_hi_bound)
        note = (f"height not resolved (sigma_z {sigma_z:.1f} m > {p.height_resolved_sigma_m:.1f} m): "
                f"anywhere in {z_lo_bound:.1f}-{z_hi_bound:.1f} m")
    main = int(np.argmax(np.bincount(ms.group, minlength=len(ms.group_names))))
    crlb_xy = math.sqrt(max(cov_known[pos[0], pos[0]] + cov_known[pos[1], pos[1]], 0.0))
    tr_full = cov_u[pos[0], pos[0]] + cov_u[pos[1], pos[1]]
    gnss_xy = math.sqrt(max(tr_full - crlb_xy**2, 0.0))
    mu = {name: float(v) for name, v in zip(m.mu_names, fit.phi[lay.mu], strict=True)} if lay.n_mu else {}
    site = p.site
    return SourceEstimate(
        x_m=x, y_m=y, z_m=z,
        strength=float(strengths[main]),
        cov=cov,
        sigma_x_m=math.sqrt(var[0]), sigma_y_m=math.sqrt(var[1]), sigma_z_m=sigma_z,
        sigma_xy_m=math.sqrt(var[0] + var[1]),
        ellipse_major_m=math.sqrt(evals[1]), ellipse_minor_m=math.sqrt(evals[0]),
        ellipse_angle_deg=math.degrees(math.atan2(major[1], major[0])) % 180.0,
        n_measurements=len(ms),
        n_units=len(np.unique(ms.unit)),
        converged=fit.converged,
        deviance=dev, dof=dof, p_value=float(special.gammaincc(dof / 2.0, dev / 2.0)),
        ambiguous=ambiguous, candidates=candidates,
        strengths={name: float(strengths[g]) for g, name in enumerate(ms.group_names)},
        param_names=("x_m", "y_m", "z_m", *(f"strength[{n}]" for n in ms.group_names)),
        z_resolved=resolved, z_interval_m=z_int, height_note=note,
        column=ctx.col_labels[col] if site is not None and ctx.col_labels else None,
        overdispersion=phi_od,
        crlb_sigma_xy_m=crlb_xy, crlb_sigma_z_m=math.sqrt(max(cov_known[pos[2], pos[2]], 0.0)),
        gnss_sigma_xy_m=gnss_xy,
        mu_cargo_per_m=mu,
    )


# --------------------------------------------------------------------------- fits
@dataclass
class SingleFit:
    fit: FitOutcome
    col: int


def fit_single(ctx: FitContext, h0: FitOutcome, starts: list[tuple[np.ndarray, int]],
               warm: list[tuple[np.ndarray, int]] = ()) -> list[SingleFit]:
    """Full one-source fits from grid starts (and warm parameter vectors), best first."""
    m = ctx.model
    lay = m.layout(1)
    out: list[SingleFit] = []
    for phi0, col in warm:
        lb, ub = _bounds(ctx, lay, [col])
        out.append(SingleFit(fisher_scoring(m, lay, phi0, lb, ub), col))
    for pt, col in starts:
        lb, ub = _bounds(ctx, lay, [col])
        lay0 = m.layout(0)
        phi0 = _start_phi(ctx, lay, [pt], h0.phi[lay0.log_b], spl=h0.phi[lay0.spl])
        # nuisance first (strength, backgrounds, cargo) at the grid point, then everything: moving
        # the source while the cargo attenuation is still at its prior mean drives it against
        # the wall nearest the lane, a corner the bounded iteration does not leave
        nuis = np.ones(lay.size, dtype=bool)
        nuis[lay.pos(0)] = False
        pre = fisher_scoring(m, lay, phi0, lb, ub, free=nuis, max_iter=15, tol=1e-3)
        out.append(SingleFit(fisher_scoring(m, lay, pre.phi, lb, ub), col))
    out.sort(key=lambda f: f.fit.value)
    return out


def _column_of(ctx: FitContext, pt: np.ndarray) -> int | None:
    """Column (candidate box) holding a point, or None."""
    inside = np.all((ctx.cands.lo <= pt) & (pt <= ctx.cands.hi), axis=1)
    idx = np.flatnonzero(inside)
    return int(idx[0]) if idx.size else None


def _split_starts(ctx: FitContext, s1: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """Pairs either side of the one-source position: two sources a few metres apart along a row
    fit as one between them, and the grid rescored on top of that fit does not separate them."""
    out = []
    axes = [np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])]
    col = _column_of(ctx, s1)
    if ctx.params.site is not None and col is not None:
        ext = ctx.cands.hi[col] - ctx.cands.lo[col]
        axes = [axes[int(np.argmax(ext[:2]))]]  # along the row
    for e in axes:
        for d in (3.0, 6.0):
            a, b = s1 - d * e, s1 + d * e
            ca, cb = _column_of(ctx, a), _column_of(ctx, b)
            if ca is not None and cb is not None:
                out.append((a, b, ca, cb))
    return out


def fit_double(ctx: FitContext, single: SingleFit, n_starts: int, others: list[SingleFit] = ()
               ) -> tuple[FitOutcome, list[int]] | None:
    """Two-source fit.  Starts: source 1 at the one-source fit and source 2 at the best grid
    points rescored on top of it (one per column); pairs split either side of the one-source
    position; and pairs of the other one-source minima (``others``, distinct columns): with two
    sources the best single fit may sit between them, in neither's basin.  Each start is first
    fitted in its nuisance parameters, then in everything."""
    m = ctx.model
    lay1 = m.layout(1)
    lay2 = m.layout(2)
    if len(ctx.cands.pts) == 0:
        return None
    gains, _ = profile_gain(m, ctx.cands.pts, single.fit.lam)
    s1 = single.fit.phi[lay1.pos(0)]
    starts = [(s1, pt, single.col, col) for pt, col in
              _starts(ctx, gains, n_starts, exclude=[(s1, ctx.params.min_source_separation_m)])]
    starts += _split_starts(ctx, s1)
    distinct: list[SingleFit] = []
    for f in others:
        pos = f.fit.phi[lay1.pos(0)]
        if all(np.linalg.norm(pos - g.fit.phi[lay1.pos(0)]) >= ctx.params.min_source_separation_m for g in distinct):
            distinct.append(f)
    distinct = distinct[:4]
    for i in range(len(distinct)):
        for j in range(i + 1, len(distinct)):
            fa, fb = distinct[i], distinct[j]
            starts.append((fa.fit.phi[lay1.pos(0)], fb.fit.phi[lay1.pos(0)], fa.col, fb.col))
    best: tuple[FitOutcome, list[int]] | None = None
    for pa, pb, ca, cb in starts:
        cols = [ca, cb]
        lb, ub = _bounds(ctx, lay2, cols)
        phi0 = _start_phi(ctx, lay2, [pa, pb], single.fit.phi[lay1.log_b],
                          single.fit.phi[lay1.mu] if lay1.n_mu else None, single.fit.phi[lay1.spl])
        if pa is s1:  # source 1 keeps its fitted strength; source 2 starts at its profiled strength
            phi0[lay2.log_s(0)] = single.fit.phi[lay1.log_s(0)]
        if lay2.n_off:
            phi0[lay2.off] = single.fit.phi[lay1.off]
        nuis = np.ones(lay2.size, dtype=bool)
        nuis[lay2.pos(0)] = False
        nuis[lay2.pos(1)] = False
        pre = fisher_scoring(m, lay2, phi0, lb, ub, free=nuis, max_iter=15, tol=1e-3)
        f = fisher_scoring(m, lay2, pre.phi, lb, ub)
        if best is None or f.value < best[0].value:
            best = (f, cols)
    if best is not None:
        best = _refine_pair(ctx, best, n_starts)
    return best


def _one_of(lay2: Layout, lay1: Layout, phi2: np.ndarray, k: int) -> np.ndarray:
    """The one-source parameter vector of source k of a two-source vector (shared nuisances kept)."""
    phi = np.empty(lay1.size)
    phi[lay1.pos(0)] = phi2[lay2.pos(k)]
    phi[lay1.log_s(0)] = phi2[lay2.log_s(k)]
    phi[lay1.log_b] = phi2[lay2.log_b]
    if lay1.n_mu:
        phi[lay1.mu] = phi2[lay2.mu]
    if lay1.n_off:
        phi[lay1.off] = phi2[lay2.off]
    return phi


def _refine_pair(ctx: FitContext, best: tuple[FitOutcome, list[int]], n_starts: int
                 ) -> tuple[FitOutcome, list[int]]:
    """One round of conditional re-search: hold one source, rescore the grid for the other on top
    of it, refit from the best new spots.  A pair started from a one-source fit that sat between
    two sources keeps one of them in a wrong basin; this moves it out."""
    m = ctx.model
    lay1 = m.layout(1)
    lay2 = m.layout(2)
    for keep in (0, 1):
        f2, cols = best
        other = 1 - keep
        lam_keep, _ = m.lam_jac(_one_of(lay2, lay1, f2.phi, keep), lay1, False)
        gains, _ = profile_gain(m, ctx.cands.pts, lam_keep)
        s_keep = f2.phi[lay2.pos(keep)]
        for pt, col in _starts(ctx, gains, max(2, n_starts // 2),
                               exclude=[(s_keep, ctx.params.min_source_separation_m)]):
            if np.linalg.norm(pt - f2.phi[lay2.pos(other)]) < 1.0:
                continue
            phi0 = f2.phi.copy()
            phi0[lay2.pos(other)] = pt
            new_cols = list(cols)
            new_cols[other] = col
            lb, ub = _bounds(ctx, lay2, new_cols)
            nuis = np.ones(lay2.size, dtype=bool)
            nuis[lay2.pos(0)] = False
            nuis[lay2.pos(1)] = False
            pre = fisher_scoring(m, lay2, np.clip(phi0, lb, ub), lb, ub, free=nuis, max_iter=15, tol=1e-3)
            f = fisher_scoring(m, lay2, pre.phi, lb, ub)
            if f.value < best[0].value:
                best = (f, new_cols)
    return best


def _candidates_list(ctx: FitContext, fits: list[SingleFit]) -> tuple[tuple[Candidate, ...], bool, float]:
    m = ctx.model
    lay = m.layout(1)
    main = int(np.argmax(np.bincount(m.group, minlength=m.n_groups)))
    best = fits[0].fit
    out: list[Candidate] = []
    for f in fits:
        if f.fit.value - best.value > ctx.params.ambiguity_dnll:
            break
        s = f.fit.phi[lay.pos(0)]
        if all(math.dist(s, (c.x_m, c.y_m, c.z_m)) > 1.0 for c in out):
            out.append(Candidate(float(s[0]), float(s[1]), float(s[2]),
                                 float(np.exp(f.fit.phi[lay.log_s(0)][main])), float(f.fit.value)))
    return tuple(out), False, 0.0


def _profile_of(ctx: FitContext, fit: FitOutcome, lay: Layout, cols: list[int], k: int, phi_od: float
                ) -> HeightProfile | None:
    """The height profile of source ``k`` of ``fit`` (:mod:`.height`), None when switched off."""
    p = ctx.params
    if not p.profile_height:
        return None
    m = ctx.model
    lb, ub = _bounds(ctx, lay, cols)
    rows = informative_rows(m, fit, lay, k)
    h = single_height(m.ms, rows)
    sig = m.ms.position_sigma_m
    pos_sigma = float(np.median(sig[rows])) if sig is not None and rows.any() else 0.0
    return profile_height(m, fit, lay, lb, ub, phi_od, h, p.model_distance_rel_error, p.model_error_sigma_z_m,
                          k=k, position_sigma_m=pos_sigma)


def _profiled(ctx: FitContext, best: SingleFit, phi_od: float) -> tuple[SingleFit, HeightProfile | None]:
    """The height profile of the best one-source fit (:mod:`.height`).  When a profile step finds a
    lower minimum than the local fit (the mirror of the height about the detector plane, or a basin
    the fit did not reach), the fit is redone from there and profiled again."""
    p = ctx.params
    if not p.profile_height:
        return best, None
    m = ctx.model
    lay = m.layout(1)
    lb, ub = _bounds(ctx, lay, [best.col])
    for _ in range(2):
        prof = _profile_of(ctx, best.fit, lay, [best.col], 0, phi_od)
        assert prof is not None
        f_grid = prof.fits[prof.best_index]
        if f_grid.value >= best.fit.value - 1e-3:
            return best, prof
        refit = fisher_scoring(m, lay, f_grid.phi, lb, ub)
        best = SingleFit(refit if refit.value <= f_grid.value else f_grid, best.col)
    return best, prof


def evaluate(ctx: FitContext, h0: FitOutcome, fits: list[SingleFit], double: tuple[FitOutcome, list[int]] | None,
             t0: float, h0_test: FitOutcome | None = None) -> LocalizationResult:
    """Model selection and the reported estimates from finished fits."""
    m = ctx.model
    p = ctx.params
    lay1 = m.layout(1)
    best = fits[0]
    phi1, dev1, dof1 = _overdispersion(m, best.fit.lam, lay1.size)
    nll0 = h0.value
    t1 = 2.0 * (nll0 - best.fit.value) / phi1
    candidates, _, _ = _candidates_list(ctx, fits)
    single_tmp = None
    sigma_guess = None
    # ambiguity: a distinct minimum within ambiguity_dnll, far from the best in the ground plane
    best, height = _profiled(ctx, best, phi1)
    single_tmp = _estimate(ctx, best.fit, lay1, 0, [best.col], phi1, dev1, dof1, candidates, False, height)
    sigma_guess = single_tmp.sigma_xy_m
    ambiguous = any(math.hypot(c.x_m - single_tmp.x_m, c.y_m - single_tmp.y_m) > 2.0 * sigma_guess + 1.0
                    for c in candidates)
    single = _estimate(ctx, best.fit, lay1, 0, [best.col], phi1, dev1, dof1, candidates, ambiguous, height) \
        if ambiguous else single_tmp
    t2 = None
    sources: tuple[SourceEstimate, ...] = ()
    l1 = 2.0 * (nll0 - best.fit.value)
    two: list[SourceEstimate] | None = None
    note2 = ""
    if double is not None:
        # The dispersion of the largest model fitted scales every comparison (quasi-likelihood
        # practice): a second source left out inflates phi_1 and must not hide the first.
        lay2 = m.layout(2)
        f2, cols2 = double
        phi2, dev2, dof2 = _overdispersion(m, f2.lam, lay2.size)
        l2 = 2.0 * (best.fit.value - f2.value)
        t1 = l1 / phi2
        t2 = l2 / phi2
        sep = float(np.linalg.norm(f2.phi[lay2.pos(0)] - f2.phi[lay2.pos(1)]))
        if t2 < p.second_source_threshold:
            note2 = f"; second source rejected (ratio {t2:.1f} < {p.second_source_threshold:.0f})"
        elif sep < p.min_source_separation_m:
            note2 = f"; second source rejected ({sep:.1f} m from the first, < {p.min_source_separation_m:.0f} m)"
        elif l2 < p.second_source_min_share * l1:
            note2 = (f"; second source rejected (it explains {l2 / max(l1, 1e-9):.0%} of what the first does, "
                     f"< {p.second_source_min_share:.0%}: within the model error of the first)")
        else:
            two = [_estimate(ctx, f2, lay2, k, cols2, phi2, dev2, dof2, (), False,
                             _profile_of(ctx, f2, lay2, cols2, k, phi2)) for k in range(2)]
            two.sort(key=lambda e: -e.strength)
            note2 = (f"two sources: likelihood ratio 2 vs 1 {t2:.1f} >= {p.second_source_threshold:.0f}, "
                     f"{sep:.1f} m apart")
    t_smooth = None
    if h0_test is not None and h0_test is not h0:  # against the model chosen below (1 or 2 sources)
        nll_model = double[0].value if two is not None and double is not None else best.fit.value
        t_smooth = 2.0 * (h0_test.value - nll_model) / (phi1 if double is None else phi2)
    smooth = t_smooth is not None and t_smooth < p.detect_threshold <= t1
    flag = (f"; but a smooth background change along the passes explains the excess nearly as well "
            f"(ratio {t_smooth:.1f}): NORM? check the spectrum") if smooth and t_smooth is not None else ""
    if t1 < p.detect_threshold:
        reason = (f"no source: likelihood ratio {t1:.1f} below the no-source threshold {p.detect_threshold:.0f} "
                  f"(overdispersion {phi1:.2f})")
    elif two is not None:
        sources = tuple(two)
        reason = note2 + flag
    else:
        sources = (single,)
        reason = f"one source: likelihood ratio {t1:.1f} >= {p.detect_threshold:.0f}" + note2 + flag
    return LocalizationResult(
        sources=sources, best_single=single, statistic_1=float(t1), threshold_1=p.detect_threshold,
        statistic_2=None if t2 is None else float(t2), threshold_2=p.second_source_threshold,
        n_measurements=len(m.c), reason=reason, elapsed_ms=1000.0 * (time.perf_counter() - t0),
        site=p.site.name if p.site else None, statistic_smooth=t_smooth, smooth_background_explains=smooth,
    )


def _empty(ms: MeasurementSet, p: LocalizationParams, reason: str, t0: float) -> LocalizationResult:
    return LocalizationResult((), None, 0.0, p.detect_threshold, None, p.second_source_threshold, len(ms), reason,
                              1000.0 * (time.perf_counter() - t0), p.site.name if p.site else None)


def locate(ms: MeasurementSet, params: LocalizationParams | None = None,
           seeds_xy: tuple[tuple[float, float], ...] | list[tuple[float, float]] = ()) -> LocalizationResult:
    """Decide how many sources (0, 1, 2) the data hold and where.  ``seeds_xy``: extra grid
    centres (alarm positions) in the local frame."""
    t0 = time.perf_counter()
    p = params or LocalizationParams()
    if len(ms) < p.min_measurements:
        return _empty(ms, p, f"too few measurements: {len(ms)} < {p.min_measurements}", t0)
    ctx = build_context(ms, p)
    if len(ctx.model.c) < p.min_measurements:
        return _empty(ms, p, f"too few measurements near the elevated intervals: {len(ctx.model.c)}", t0)
    if len(ctx.cands.pts) == 0:
        return _empty(ms, p, "no container of the site lies within "
                      f"{p.candidate_radius_m:.0f} m of the elevated intervals", t0)
    del seeds_xy  # the grid covers the volume around every elevated interval
    h0 = _fit_background(ctx)
    h0_test = _fit_background(ctx, bumps=True) if ctx.model.n_spl else h0
    gains, _ = profile_gain(ctx.model, ctx.cands.pts, h0.lam)
    starts = _starts(ctx, gains, p.n_starts)
    fits = fit_single(ctx, h0, starts)
    double = None
    if p.max_sources >= 2:
        best = fits[0]
        phi1, _, _ = _overdispersion(ctx.model, best.fit.lam, ctx.model.layout(1).size)
        nll0 = h0.value
        if 2.0 * (nll0 - best.fit.value) >= p.detect_threshold:  # raw ratio: phi_1 may hold a second source
            double = fit_double(ctx, best, max(2, p.n_starts - 2), fits)
    return evaluate(ctx, h0, fits, double, t0, h0_test)


def localize(ms: MeasurementSet, params: LocalizationParams | None = None,
             seeds_xy: tuple[tuple[float, float], ...] | list[tuple[float, float]] = ()) -> SourceEstimate | None:
    """The best one-source fit, whether or not it passes the no-source test (see :func:`locate`
    for the decision); None when there are too few measurements to try."""
    return locate(ms, params, seeds_xy).best_single
