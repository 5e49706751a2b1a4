"""The estimate, updated as samples arrive.

Why not re-run the batch fit on every sample: its grid search and multi-start cost a few hundred
milliseconds, and a 10-minute drive at 1 Hz delivers 600 samples.  Between full searches the
previous optimum moves little when one interval is added, so the update is a *warm start*: the
previous parameter vector (mapped onto the new layout: a new pass brings a new background
parameter, a new cargo group a new attenuation) is refined by a few Fisher-scoring iterations,
together with the runner-up minimum so that a switch between basins is still seen.  A full
search runs when the set of elevated intervals first appears, every ``research_every`` samples,
and when the warm fit has moved more than ``research_move_m``.  Before any interval is elevated
there is nothing to fit and the update costs only the model set-up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from controller.localization.fit import (
    FitContext,
    SingleFit,
    _empty,
    _fit_background,
    _starts,
    build_context,
    evaluate,
    fit_double,
    fit_single,
)
from controller.localization.measurements import MeasurementSet
from controller.localization.model import Layout
from controller.localization.params import LocalizationParams
from controller.localization.result import LocalizationResult
from controller.localization.search import profile_gain

__all__ = ["IncrementalLocalizer"]


@dataclass
class _Warm:
    """A fitted one-source parameter vector in named form, portable across layouts."""

    pos: np.ndarray
    log_s: dict[str, float]
    log_b: dict[tuple[int, float], float]
    mu: dict[str, float]
    off: dict[tuple[int, float], tuple[float, float]]
    col: int


@dataclass
class _Rows:
    t: list[float] = field(default_factory=list)
    xyz: list[tuple[float, float, float]] = field(default_factory=list)
    live: list[float] = field(default_factory=list)
    real: list[float] = field(default_factory=list)
    counts: list[float] = field(default_factory=list)
    bkg: list[float] = field(default_factory=list)
    channel: list[tuple[str, str, str]] = field(default_factory=list)
    sigma: list[float] = field(default_factory=list)


class IncrementalLocalizer:
    """Feed samples with :meth:`add`; :meth:`update` returns the current :class:`LocalizationResult`."""

    def __init__(self, params: LocalizationParams | None = None, research_every: int = 30,
                 research_move_m: float = 3.0) -> None:
        self.params = params or LocalizationParams()
        self.research_every = research_every
        self.research_move_m = research_move_m
        self._rows = _Rows()
        self._warm: list[_Warm] = []
        self._since_search = 0
        self._double_ok = False
        self.updates = 0
        self.full_searches = 0
        self.last: LocalizationResult | None = None

    def __len__(self) -> int:
        return len(self._rows.t)

    def add(self, t_mid_s: float, xyz_mid_m: tuple[float, float, float], live_time_s: float, counts: float,
            unit_id: str = "unit", detector_id: str = "det", detector_model: str = "detector",
            background_cps: float | None = None, interval_s: float | None = None,
            position_sigma_m: float = 0.0) -> None:
        """One interval: its mid time (epoch s) and the detector position at that time."""
        if not math.isfinite(t_mid_s):
            raise ValueError("every sample needs its time")
        r = self._rows
        r.t.append(float(t_mid_s))
        r.xyz.append((float(xyz_mid_m[0]), float(xyz_mid_m[1]), float(xyz_mid_m[2])))
        r.live.append(float(live_time_s))
        r.real.append(float(interval_s if interval_s is not None else live_time_s))
        r.counts.append(float(counts))
        r.bkg.append(float("nan") if background_cps is None else float(background_cps))
        r.channel.append((unit_id, detector_id, detector_model))
        r.sigma.append(float(position_sigma_m))

    def measurement_set(self) -> MeasurementSet:
        r = self._rows
        return MeasurementSet.from_track(np.array(r.t), np.array(r.xyz), np.array(r.live), np.array(r.counts),
                                         r.channel, np.array(r.bkg), np.array(r.real), "mid", np.array(r.sigma))

    def update(self) -> LocalizationResult:
        t0 = time.perf_counter()
        self.updates += 1
        self._since_search += 1
        p = self.params
        ms = self.measurement_set()
        if len(ms) < p.min_measurements:
            self.last = _empty(ms, p, f"too few measurements: {len(ms)} < {p.min_measurements}", t0)
            return self.last
        ctx = build_context(ms, p)
        m = ctx.model
        b = np.exp(m.log_b0)[m.seg] * m.t
        zmax = float(np.max((m.c - b) / np.sqrt(np.maximum(b, 1e-9))))
        if zmax < p.hot_sigma or len(ctx.cands.pts) == 0:
            self._warm = []
            self.last = _empty(ms, p, f"no source: no interval above {p.hot_sigma:.0f} sigma", t0)
            return self.last
        h0 = _fit_background(ctx)
        h0_test = h0  # the smooth-background flag is a batch diagnostic (its bumps grow with the drive)
        full = not self._warm or self._since_search >= self.research_every
        warm = [] if full else [(self._to_phi(ctx, w), w.col) for w in self._warm]
        if full:
            gains, _ = profile_gain(m, ctx.cands.pts, h0.lam)
            fits = fit_single(ctx, h0, _starts(ctx, gains, p.n_starts), warm=[(self._to_phi(ctx, w), w.col)
                                                                                for w in self._warm])
        else:
            fits = fit_single(ctx, h0, [], warm=warm)
            moved = float(np.linalg.norm(fits[0].fit.phi[:3] - self._warm[0].pos))
            if moved > self.research_move_m:
                gains, _ = profile_gain(m, ctx.cands.pts, h0.lam)
                fits = sorted(fits + fit_single(ctx, h0, _starts(ctx, gains, p.n_starts)), key=lambda f: f.fit.value)
                full = True
        if full:
            self._since_search = 0
            self.full_searches += 1
        lay1 = m.layout(1)
        self._warm = [self._from_fit(ctx, f, lay1) for f in self._distinct(fits)[:2]]
        double = None
        if (p.max_sources >= 2 and (full or self._double_ok)
                and 2.0 * (h0.value - fits[0].fit.value) >= p.detect_threshold):
            double = fit_double(ctx, fits[0], max(2, p.n_starts - 2), fits)
        result = evaluate(ctx, h0, fits, double, t0, h0_test)
        if full or self._double_ok:
            self._double_ok = result.n_sources == 2
        self.last = result
        return result

    # ------------------------------------------------------------------ warm-start mapping
    @staticmethod
    def _distinct(fits: list[SingleFit]) -> list[SingleFit]:
        out: list[SingleFit] = []
        for f in fits:
            if all(np.linalg.norm(f.fit.phi[:3] - g.fit.phi[:3]) > 1.0 for g in out):
                out.append(f)
        return out

    @staticmethod
    def _from_fit(ctx: FitContext, f: SingleFit, lay: Layout) -> _Warm:
        m = ctx.model
        return _Warm(
            pos=f.fit.phi[lay.pos(0)].copy(),
            log_s={name: float(v) for name, v in zip(m.ms.group_names, f.fit.phi[lay.log_s(0)], strict=True)},
            log_b={key: float(v) for key, v in zip(m.seg_key, f.fit.phi[lay.log_b], strict=True)},
            mu={name: float(v) for name, v in zip(m.mu_names, f.fit.phi[lay.mu], strict=True)} if lay.n_mu else {},
            off={key: (float(f.fit.phi[lay.off][2 * i]), float(f.fit.phi[lay.off][2 * i + 1]))
                 for i, key in enumerate(m.off_key)} if lay.n_off else {},
            col=f.col,
        )

    @staticmethod
    def _to_phi(ctx: FitContext, w: _Warm) -> np.ndarray:
        m = ctx.model
        lay = m.layout(1)
        phi = np.empty(lay.size)
        phi[lay.pos(0)] = w.pos
        ls = m.initial_log_strength(w.pos, m.log_b0)
        phi[lay.log_s(0)] = [w.log_s.get(name, ls[g]) for g, name in enumerate(m.ms.group_names)]
        phi[lay.log_b] = [w.log_b.get(key, m.log_b0[i]) for i, key in enumerate(m.seg_key)]
        if lay.n_mu:
            phi[lay.mu] = [w.mu.get(name, m.cfg.mu_prior_mean_per_m) for name in m.mu_names]
        if lay.n_off:
            phi[lay.off] = [v for key in m.off_key for v in w.off.get(key, (0.0, 0.0))]
        return phi
