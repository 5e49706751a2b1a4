"""The Poisson model of moving-detector counts from 0, 1 or 2 point sources in a yard.

Per measurement interval i (live time t_i, detector path sampled at K points P_ik)::

    lambda_i = t_i * ( b_p(i) + sum_k S_{k, g(i)} * <T(sum_c mu_c L_c) exp(-mu_air r) / r^2>_i )

* ``b_p``: background rate of *segment* p = one detector channel during one pass.  It is a fitted
  parameter with a Gaussian prior on ln b centred on what the unit reported (sigma
  ``background_prior_rel``) or, when nothing was reported, on a robust estimate from the channel's
  own counts (sigma ``background_prior_rel_estimated``).  Why fitted and not plugged in: on a short
  pass a plug-in background is either the unit's running value (good) or an estimate from the
  very counts that hold the source (biased); fitting it lets the data decide on long passes and
  the prior decide, with its width counted in the covariance, on short ones.
* ``S_{k,g}``: apparent strength of source k for detector model g (counts/s at 1 m, unshielded).
* ``r = sqrt(|P - s|^2 + r0^2)`` (near-field floor), ``mu_air`` the air attenuation coefficient.
* ``L_c``: path length through the cargo of container column c; ``mu_c`` the cargo's effective
  linear attenuation coefficient (per cargo group, fitted, Gaussian prior truncated at 0); T the
  gross-count transmission with build-up (see :mod:`controller.localization.kernels`).
* ``<.>_i``: mean over K points evenly spaced along the interval's path (midpoint rule): at
  10 m/s a 1-s interval is a 10-m segment.

Optimiser coordinates: source positions (m), ln S, ln b, mu.  The objective is the Poisson
negative log-likelihood ``sum(lambda - c ln lambda)`` (Cash 1979, ApJ 228:939) plus the priors;
its gradient and expected Fisher information ``J^T diag(1/lambda) J`` (+ prior precisions) come
from the analytic Jacobian J of lambda.

Products use ``np.einsum``/explicit loops rather than BLAS ``@`` on the thin (N x P) matrices: a
multi-threaded BLAS wakes its threads for each tiny product, several times slower on a loaded
2-core box (measured in the first version of this module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controller.localization.kernels import lam_jac_kernel, source_terms
from controller.localization.measurements import MeasurementSet

__all__ = ["Layout", "Model", "ModelConfig"]

LOG_S_MIN, LOG_S_MAX = math.log(1e-3), math.log(1e10)
LOG_B_MIN, LOG_B_MAX = math.log(1e-3), math.log(1e8)
MU_MAX_PER_M = 40.0


@dataclass(frozen=True)
class ModelConfig:
    mu_air_per_m: float = 0.0093
    near_field_m: float = 0.3
    subsample_spacing_m: float = 1.0  # path sub-sample spacing along an interval
    max_subsamples: int = 10
    min_subsamples: int = 1
    background_prior_rel: float = 0.05  # ln-b prior sigma around a reported background
    background_prior_rel_estimated: float = 0.15  # ... around one estimated from the counts
    max_gap_intervals: float = 3.0  # a longer gap in a channel's times starts a new pass
    mu_prior_mean_per_m: float = 1.0
    mu_prior_sigma_per_m: float = 1.5
    xy_prior_sigma_m: float | None = None  # free-space fits only: weak prior towards the data's centre
    background_bump_spacing_m: float | None = 15.0  # None: constant background per pass
    background_bump_sigma: float = 0.1  # prior sigma of each bump's ln-amplitude


@dataclass(frozen=True)
class Layout:
    """Where each parameter sits in the optimiser vector for ``n_src`` sources."""

    n_src: int
    n_groups: int
    n_bg: int
    n_mu: int
    n_off: int = 0  # passes with a fitted GNSS offset (2 parameters each: east, north)
    n_spl: int = 0  # smooth background variation along the passes (bump coefficients)

    @property
    def size(self) -> int:
        return 3 * self.n_src + self.n_src * self.n_groups + self.n_bg + self.n_mu + 2 * self.n_off + self.n_spl

    def pos(self, k: int) -> slice:
        return slice(3 * k, 3 * k + 3)

    def log_s(self, k: int) -> slice:
        a = 3 * self.n_src + k * self.n_groups
        return slice(a, a + self.n_groups)

    @property
    def log_b(self) -> slice:
        a = 3 * self.n_src + self.n_src * self.n_groups
        return slice(a, a + self.n_bg)

    @property
    def mu(self) -> slice:
        a = 3 * self.n_src + self.n_src * self.n_groups + self.n_bg
        return slice(a, a + self.n_mu)

    @property
    def off(self) -> slice:
        a = 3 * self.n_src + self.n_src * self.n_groups + self.n_bg + self.n_mu
        return slice(a, a + 2 * self.n_off)

    @property
    def spl(self) -> slice:
        a = 3 * self.n_src + self.n_src * self.n_groups + self.n_bg + self.n_mu + 2 * self.n_off
        return slice(a, a + self.n_spl)

    def names(self, group_names: tuple[str, ...], mu_names: tuple[str, ...]) -> list[str]:
        out: list[str] = []
        for k in range(self.n_src):
            out += [f"x_m[{k}]", f"y_m[{k}]", f"z_m[{k}]"]
        for k in range(self.n_src):
            out += [f"ln_strength[{k}][{g}]" for g in group_names]
        out += [f"ln_background[{p}]" for p in range(self.n_bg)]
        out += [f"mu_cargo_per_m[{m}]" for m in mu_names]
        out += [f"gnss_offset_m[{p}][{a}]" for p in range(self.n_off) for a in "xy"]
        out += [f"background_bump[{q}]" for q in range(self.n_spl)]
        return out


def unit_passes(ms: MeasurementSet, max_gap: float) -> list[np.ndarray]:
    """Row indices of each unit's passes: its rows (all its detectors) split where the times jump."""
    assert ms.t_s is not None
    out: list[np.ndarray] = []
    for u in np.unique(ms.unit):
        idx = np.flatnonzero(ms.unit == u)
        t = ms.t_s[idx]
        if not np.all(np.isfinite(t)):
            out.append(idx)
            continue
        order = np.argsort(t, kind="stable")
        brk = np.flatnonzero(np.diff(t[order]) > max_gap * np.maximum(ms.live_time_s[idx][order][1:], 1.0)) + 1
        out.extend(np.split(idx[order], brk))
    return out


def robust_background_cps(counts: np.ndarray, live_s: np.ndarray) -> tuple[float, float]:
    """Background rate of a channel from its own counts: the mean of the intervals that are not
    elevated, found by iterated clipping at +2.5 Poisson sigma (one-sided: a source only adds).
    Returns (rate, relative statistical error)."""
    rate = counts / live_s
    keep = np.ones(len(rate), dtype=bool)
    m = float(np.median(rate))
    for _ in range(4):
        sig = np.sqrt(np.maximum(m, 1e-9) / live_s)
        keep = rate < m + 2.5 * sig
        if keep.sum() < max(3, len(rate) // 4):  # mostly source: keep the lowest quarter
            keep = rate <= np.quantile(rate, 0.25)
        m = float(counts[keep].sum() / live_s[keep].sum())
    return max(m, 1e-3), 1.0 / math.sqrt(max(float(counts[keep].sum()), 1.0))


class Model:
    """Geometry and data of one fit, evaluated for any number of sources."""

    def __init__(self, ms: MeasurementSet, cfg: ModelConfig, boxes: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                 n_mu: int, mu_names: tuple[str, ...] = ()) -> None:
        assert ms.detector is not None and ms.t_s is not None
        self.ms = ms
        self.cfg = cfg
        n = len(ms)
        seg = ms.end_xyz_m - ms.start_xyz_m
        seg_len = float(np.max(np.linalg.norm(seg, axis=1))) if n else 0.0
        k = int(np.clip(math.ceil(seg_len / cfg.subsample_spacing_m), cfg.min_subsamples, cfg.max_subsamples))
        self.k_sub = k
        u = (np.arange(k) + 0.5) / k
        self.pts = (ms.start_xyz_m[:, None, :] + seg[:, None, :] * u[None, :, None]).reshape(n * k, 3)
        self.t = ms.live_time_s
        self.c = ms.counts
        self.group = ms.group
        self.n_groups = len(ms.group_names)
        if boxes is None:
            self.lo = np.zeros((0, 3))
            self.hi = np.zeros((0, 3))
            self.box_grp = np.zeros(0, dtype=np.int64)
        else:
            self.lo, self.hi, self.box_grp = boxes
        self.n_mu = int(n_mu)
        self.mu_names = mu_names
        self.mu_air = cfg.mu_air_per_m
        self.r0sq = cfg.near_field_m**2
        # ---- background segments: (channel, pass)
        self.seg = np.zeros(n, dtype=np.int64)
        b0: list[float] = []
        sb: list[float] = []
        self.seg_channel: list[int] = []
        self.seg_unit: list[int] = []
        self.seg_key: list[tuple[int, float]] = []  # (channel, first time): matches segments across updates
        chan_est: dict[int, tuple[float, float]] = {}
        p = 0
        for d in np.unique(ms.detector):
            idx = np.flatnonzero(ms.detector == d)
            t = ms.t_s[idx]
            if np.all(np.isfinite(t)):
                order = np.argsort(t, kind="stable")
                idx = idx[order]
                gap = cfg.max_gap_intervals * np.maximum(self.t[idx[1:]], 1.0)
                breaks = np.flatnonzero(np.diff(t[order]) > gap) + 1
                runs = np.split(idx, breaks)
            else:
                runs = [idx]
            for run in runs:
                self.seg[run] = p
                rep = ms.background_cps[run]
                rep = rep[np.isfinite(rep)]
                if rep.size:
                    b0.append(float(np.median(rep)))
                    sb.append(cfg.background_prior_rel)
                else:
                    if int(d) not in chan_est:
                        chan_est[int(d)] = robust_background_cps(self.c[ms.detector == d], self.t[ms.detector == d])
                    est, rel = chan_est[int(d)]
                    b0.append(est)
                    sb.append(math.hypot(cfg.background_prior_rel_estimated, rel))
                self.seg_channel.append(int(d))
                self.seg_unit.append(int(ms.unit[run[0]]))
                t_first = float(ms.t_s[run].min()) if np.all(np.isfinite(ms.t_s[run])) else float("-inf")
                self.seg_key.append((int(d), round(t_first, 3)))
                p += 1
        self.n_bg = p
        self.log_b0 = np.log(np.maximum(np.array(b0, dtype=float), 1e-3))
        self.sigma_log_b = np.array(sb, dtype=float)
        self.onehot_g = np.zeros((n, self.n_groups))
        self.onehot_g[np.arange(n), self.group] = 1.0
        self.centre_xy = ms.mid_xyz_m[:, :2].mean(axis=0) if n else np.zeros(2)
        # ---- GNSS: one horizontal offset per unit and pass whose positions carry GNSS error, fitted
        # with a Gaussian prior of that error (a receiver's error is nearly constant over a pass:
        # correlation times of minutes, so it shifts a pass as a whole and does not average out)
        self.pass_idx = np.full(n, -1, dtype=np.int64)
        sig_list: list[float] = []
        self.off_key: list[tuple[int, float]] = []  # (unit, first time): matches passes across updates
        assert ms.position_sigma_m is not None
        for run in unit_passes(ms, cfg.max_gap_intervals):
            sig = float(np.median(ms.position_sigma_m[run]))
            if sig > 0:
                self.pass_idx[run] = len(sig_list)
                sig_list.append(sig)
                t_first = float(ms.t_s[run].min()) if np.all(np.isfinite(ms.t_s[run])) else float("-inf")
                self.off_key.append((int(ms.unit[run[0]]), round(t_first, 3)))
        self.off_sigma = np.array(sig_list, dtype=float)
        self.n_off = len(sig_list)
        self._no_pass = np.full(n, -1, dtype=np.int64)
        self._row_index = np.arange(n, dtype=np.int64)
        self.spl_basis = self._bump_basis(ms) if cfg.background_bump_spacing_m else np.zeros((n, 0))
        self.n_spl = int(self.spl_basis.shape[1])

    def _bump_basis(self, ms: MeasurementSet) -> np.ndarray:
        """Gaussian bumps along each background segment's track (arc length), spaced
        ``background_bump_spacing_m`` with that width as sigma: the background may vary smoothly
        along a pass (NORM in the ground, buildings), which a constant per pass would hand to a source."""
        cfg = self.cfg
        w = float(cfg.background_bump_spacing_m or 0.0)
        cols: list[np.ndarray] = []
        mid = ms.mid_xyz_m
        assert ms.t_s is not None
        for p in range(self.n_bg):
            run = np.flatnonzero(self.seg == p)
            order = run[np.argsort(ms.t_s[run], kind="stable")] if np.all(np.isfinite(ms.t_s[run])) else run
            step = np.linalg.norm(np.diff(mid[order, :2], axis=0), axis=1)
            arc = np.concatenate([[0.0], np.cumsum(step)])
            length = float(arc[-1])
            if length < 2.0 * w:
                continue  # a short pass: its constant background is all it can carry
            n_c = int(np.floor(length / w)) + 1
            centres = np.linspace(0.0, length, n_c)
            for c in centres:
                col = np.zeros(len(self.t))
                col[order] = np.exp(-0.5 * ((arc - c) / w) ** 2)
                cols.append(col)
        return np.column_stack(cols) if cols else np.zeros((len(self.t), 0))

    # ------------------------------------------------------------------ layout helpers
    def layout(self, n_src: int, bumps: bool = False) -> Layout:
        """Parameter layout for ``n_src`` sources; ``bumps``: with the smooth background variation
        (used by the no-source test's background-only model, see controller.localization.fit)."""
        return Layout(n_src, self.n_groups, self.n_bg, self.n_mu if n_src > 0 else 0, self.n_off if n_src > 0 else 0,
                      self.n_spl if bumps else 0)

    def background_rates(self, phi: np.ndarray, lay: Layout) -> np.ndarray:
        return np.exp(phi[lay.log_b])[self.seg]

    def mu_values(self, phi: np.ndarray, lay: Layout) -> np.ndarray:
        return phi[lay.mu] if lay.n_mu else np.zeros(0)

    # ------------------------------------------------------------------ evaluation
    def geometry(self, s: np.ndarray, mu: np.ndarray, want_grad: bool
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Path-averaged g (N,), dg/ds (N, 3), dg/dmu (N, n_mu) for a source at s."""
        n, k = len(self.t), self.k_sub
        mu_full = mu if mu.shape[0] == self.n_mu else np.zeros(self.n_mu)
        term, dts, dtm = source_terms(self.pts, s, self.lo, self.hi, self.box_grp, mu_full, self.mu_air,
                                      self.r0sq, want_grad)
        g = term.reshape(n, k).mean(axis=1)
        if not want_grad:
            return g, None, None
        return g, dts.reshape(n, k, 3).mean(axis=1), dtm.reshape(n, k, -1).mean(axis=1)

    def lam_jac(self, phi: np.ndarray, lay: Layout, want_jac: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """lambda (N,) and d lambda / d phi (N, P), in one numba pass (kernels.lam_jac_kernel)."""
        n = len(self.t)
        k = lay.n_src
        src = np.empty((k, 3))
        strength = np.empty((k, self.n_groups))
        for q in range(k):
            src[q] = phi[lay.pos(q)]
            strength[q] = np.exp(phi[lay.log_s(q)])
        mu = np.ascontiguousarray(phi[lay.mu]) if lay.n_mu else np.zeros(self.n_mu)
        lam = np.empty(n)
        jac = np.zeros((n, lay.size)) if want_jac else np.zeros((1, 1))
        pos_off = np.array([lay.pos(q).start for q in range(k)], dtype=np.int64)
        logs_off = np.array([lay.log_s(q).start for q in range(k)], dtype=np.int64)
        mu_off = lay.mu.start if lay.n_mu else 0
        if lay.n_off:
            offsets = np.ascontiguousarray(phi[lay.off].reshape(lay.n_off, 2))
            pass_idx = self.pass_idx
        else:
            offsets = np.zeros((1, 2))
            pass_idx = self._no_pass
        b_row = np.exp(phi[lay.log_b])[self.seg]
        if lay.n_spl:
            b_row = b_row * np.exp(self.spl_basis @ phi[lay.spl])
        lam_jac_kernel(self.pts, self.k_sub, self.t, self.group, self._row_index, b_row, src, strength,
                       self.lo, self.hi, self.box_grp, mu, self.mu_air, self.r0sq, want_jac and k > 0,
                       pos_off, logs_off, -1, mu_off, pass_idx, offsets,
                       lay.off.start if lay.n_off else 0, lam, jac)
        if want_jac:
            tb = self.t * b_row
            jac[np.arange(n), lay.log_b.start + self.seg] = tb
            if lay.n_spl:
                jac[:, lay.spl] = tb[:, None] * self.spl_basis
        return lam, (jac if want_jac else None)

    def prior(self, phi: np.ndarray, lay: Layout) -> tuple[float, np.ndarray, np.ndarray]:
        """Prior penalty, its gradient and its (diagonal) Hessian."""
        val = 0.0
        grad = np.zeros(lay.size)
        hess = np.zeros(lay.size)
        zb = (phi[lay.log_b] - self.log_b0) / self.sigma_log_b
        val += 0.5 * float(zb @ zb)
        grad[lay.log_b] = zb / self.sigma_log_b
        hess[lay.log_b] = 1.0 / self.sigma_log_b**2
        if lay.n_mu:
            m0, sm = self.cfg.mu_prior_mean_per_m, self.cfg.mu_prior_sigma_per_m
            zm = (phi[lay.mu] - m0) / sm
            val += 0.5 * float(zm @ zm)
            grad[lay.mu] = zm / sm
            hess[lay.mu] = 1.0 / sm**2
        if lay.n_spl:
            sq = self.cfg.background_bump_sigma
            za = phi[lay.spl] / sq
            val += 0.5 * float(za @ za)
            grad[lay.spl] = za / sq
            hess[lay.spl] = 1.0 / sq**2
        if lay.n_off:
            so = np.repeat(self.off_sigma, 2)
            zo = phi[lay.off] / so
            val += 0.5 * float(zo @ zo)
            grad[lay.off] = zo / so
            hess[lay.off] = 1.0 / so**2
        if self.cfg.xy_prior_sigma_m:
            sx = self.cfg.xy_prior_sigma_m
            for k in range(lay.n_src):
                sl = lay.pos(k)
                dxy = phi[sl][:2] - self.centre_xy
                val += 0.5 * float(dxy @ dxy) / sx**2
                grad[sl.start:sl.start + 2] = dxy / sx**2
                hess[sl.start:sl.start + 2] = 1.0 / sx**2
        return val, grad, hess

    def objective(self, phi: np.ndarray, lay: Layout, want_hess: bool = True
                  ) -> tuple[float, np.ndarray | None, np.ndarray | None, np.ndarray]:
        """(NLL + prior, gradient, expected Fisher + prior Hessian, lambda)."""
        lam, jac = self.lam_jac(phi, lay, want_hess)
        lam = np.maximum(lam, 1e-300)
        nll = float(np.sum(lam - self.c * np.log(lam)))
        pv, pg, ph = self.prior(phi, lay)
        if jac is None:
            return nll + pv, None, None, lam
        w = 1.0 - self.c / lam
        grad = np.einsum("n,np->p", w, jac) + pg
        fisher = np.einsum("np,nq->pq", jac, jac / lam[:, None]) + np.diag(ph)
        return nll + pv, grad, fisher, lam

    def data_nll(self, lam: np.ndarray) -> float:
        return float(np.sum(lam - self.c * np.log(np.maximum(lam, 1e-300))))

    def deviance(self, lam: np.ndarray) -> float:
        c = self.c
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(c > 0, c * np.log(c / lam), 0.0)
        return float(2.0 * np.sum(term - (c - lam)))

    def initial_log_strength(self, s: np.ndarray, log_b: np.ndarray, mu: np.ndarray | None = None) -> np.ndarray:
        g, _, _ = self.geometry(s, np.zeros(self.n_mu) if mu is None else mu, False)
        excess = np.maximum(self.c - self.t * np.exp(log_b)[self.seg], 0.0)
        num = np.einsum("n,ng->g", excess, self.onehot_g)
        den = np.einsum("n,ng->g", self.t * g, self.onehot_g)
        est = np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)
        return np.clip(np.log(np.maximum(est, 1e-2)), LOG_S_MIN + 1, LOG_S_MAX - 1)
