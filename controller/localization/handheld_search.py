"""Guiding the dispatched handheld to the source: an information-driven search along container walls.

Why a search and not a walk to the point: the fused estimate of the mobile passes has a 95 %
region of ~1-3 m (more where the height is not resolved), and a handheld against the wrong wall
of a dense-cargo container sees a fraction of the rate it would see a metre away.  So the
controller keeps a posterior over where the source is and picks the handheld's next measurement
where it tells the most per second of the operator's time, updating with every dwell.

* **Posterior**: a grid of hypotheses (position on a 0.25 m grid inside the cargo of the columns
  the fused 95 % region reaches, x a few cargo attenuation values around the fused one), with the
  fused estimate's Gaussian (covariance inflated x2, plus a 10 % uniform floor: the fused region
  must not be able to exclude the truth) as prior.  The handheld's own strength (its detector is
  not the vehicle's) is a log-uniform grid, marginalised.  Each dwell at a point P for t seconds
  with N counts multiplies the weights by p(N | t (b + A g(P, s, mu))), with g the same
  transport term the fit uses (:func:`controller.localization.kernels.source_terms`: 1/r^2, air,
  cargo path length with build-up) and p a Gaussian of variance lambda + (0.2 (lambda - t b))^2:
  Poisson noise plus a 20 % model error of the source term.  Bayesian grid (point-mass) filtering: Bucy & Senne 1971;
  for radiation search, Ristic, Morelande & Gunatilaka, "Information driven search for point
  sources of gamma radiation", Signal Processing 90(4), 2010.
* **Where next (information-driven)**: candidate stand points every metre along the accessible
  container faces near the posterior (``standoff_m`` from the wall, not in the gaps between
  containers), each measured at two heights.  The expected information of a dwell is approximated
  by the Gaussian-channel mutual information 1/2 ln(1 + Var[lambda] / E[noise]) over the
  posterior (Var[lambda] the spread of the predicted counts across hypotheses, E[noise] the
  Poisson plus model-error variance), summed over the two heights, and divided by the time it costs: walking the
  shortest path around the containers (a 0.5 m grid with the footprints as obstacles, Dijkstra)
  plus the dwells.  A point already measured is not chosen again.
* **Fallback: count-rate gradient**.  When the hypotheses cannot explain the handheld's counts
  (chi^2 per dwell of the best hypothesis above ``misfit_per_dwell``: a source outside the
  searched region, a second source, transport the model lacks), the posterior is not trusted:
  the handheld steps along the wall (``gradient_step_m``) from its highest-rate point towards the
  higher of its neighbours until the rate falls on both sides, and the source is placed behind
  the wall at the maximum.
* **Stop**: when 95 % of the posterior lies within ``stop_radius_m`` of its mean, or after
  ``max_points`` stand points.  The final measurement is the stand point nearest the estimate at
  the height nearest it, for the nuclide (a longer dwell, judged on the handheld as before).

The display shows a bearing (degrees clockwise from north) and a walking distance to the next
stand point (:func:`guidance`), computed along the same obstacle-aware path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller.localization.kernels import source_terms
from controller.localization.result import SourceEstimate
from controller.localization.site import Site

__all__ = ["Guidance", "HandheldSearch", "SearchConfig", "StandPoint", "guidance", "walk_grid"]

CHI2_95_3D = 7.815


@dataclass(frozen=True)
class SearchConfig:
    grid_step_m: float = 0.25  # hypothesis spacing, horizontal
    grid_step_z_m: float = 0.3
    region_sigma: float = 3.0  # hypotheses within this many fused sigma (per axis) of the estimate
    region_min_half_m: float = 2.0  # ... and at least this far either side
    prior_inflation: float = 2.0  # fused covariance x this (the fused region is ~1-sigma honest at best)
    prior_floor: float = 0.10  # share of prior mass spread uniformly over the region
    mu_factors: tuple[float, ...] = (0.5, 1.0, 2.0)  # cargo attenuation hypotheses x the fused value
    n_strength: int = 48  # handheld strength grid (counts/s at 1 m), log-uniform
    strength_range: tuple[float, float] = (1.0, 1e9)
    standoff_m: float = 0.5  # handheld held this far from the wall
    heights_m: tuple[float, ...] = (0.5, 1.8)  # two heights at each stand point
    face_step_m: float = 1.0  # stand points along a face
    candidate_reach_m: float = 4.0  # faces of columns within this of the posterior's 95 % box
    dwell_s: float = 10.0  # per height at a search stand point
    final_dwell_s: float = 60.0  # at the final point: the spectrum for the nuclide
    walk_speed_m_s: float = 1.2
    max_points: int = 12
    stop_radius_m: float = 0.6
    # Relative model error of a predicted count: the transport here (point kernel, one build-up
    # form, one attenuation per cargo group) is not the yard's; without it the posterior collapsed
    # to one 0.25-m cell after two stand points, 1.5 m from the truth, on the tuning seeds.
    model_rel_error: float = 0.2
    # chi^2 per dwell of the best hypothesis above this: the model is not trusted.  Tuning seeds:
    # 0.07-2.5 where the source was in the searched region; 4.7-5 with a source outside it
    # (synthetic, tests/test_localization_handheld.py).
    misfit_per_dwell: float = 4.0
    # The fused fit's other basins (candidates) get hypotheses too, with their likelihood-ratio
    # share, floored: a mirror container across the lane (11 m off) is then checked, not missed.
    max_candidates: int = 3
    candidate_max_distance_m: float = 30.0
    candidate_floor: float = 0.05
    gradient_step_m: float = 1.5
    walk_cell_m: float = 0.5
    mu_air_per_m: float = 0.0093
    near_field_m: float = 0.3
    min_weight: float = 1e-12  # relative; hypotheses below this are pruned (bounded memory and time)
    plan_samples: int = 2000


@dataclass(frozen=True)
class StandPoint:
    x_m: float
    y_m: float
    column: int  # the column whose wall it faces
    face: str  # "S", "N", "W", "E"


@dataclass
class Dwell:
    x_m: float
    y_m: float
    z_m: float
    live_time_s: float
    counts: float
    stand: int | None = None  # index into the stand points (None: not a planned point)


@dataclass(frozen=True)
class Guidance:
    """What the handheld's display shows: where to go next and why."""

    x_m: float
    y_m: float
    heights_m: tuple[float, ...]
    bearing_deg: float  # clockwise from north, towards the first leg of the walking path
    walk_m: float  # along the path around the containers
    mode: str  # "information", "gradient", "final", "done"
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"x_m": self.x_m, "y_m": self.y_m, "heights_m": list(self.heights_m),
                "bearing_deg": self.bearing_deg, "walk_m": self.walk_m, "mode": self.mode, "note": self.note}


# =========================================================================== walking around containers
@dataclass
class WalkGrid:
    """A 0.5-m occupancy grid: container footprints (grown by a margin) are obstacles.

    Shortest walks by Dijkstra (scipy.sparse.csgraph) over the 8-neighbour graph of free cells;
    a diagonal step is allowed only when both cells beside it are free (no cutting a corner)."""

    x0: float
    y0: float
    cell: float
    free: np.ndarray  # (ny, nx) bool
    _graph: Any = None
    _memo: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def index(self, x: float, y: float) -> tuple[int, int]:
        ny, nx = self.free.shape
        i = min(max(int(round((y - self.y0) / self.cell)), 0), ny - 1)
        j = min(max(int(round((x - self.x0) / self.cell)), 0), nx - 1)
        return i, j

    def xy(self, i: int, j: int) -> tuple[float, float]:
        return self.x0 + j * self.cell, self.y0 + i * self.cell

    def nearest_free(self, x: float, y: float) -> tuple[int, int]:
        i, j = self.index(x, y)
        if self.free[i, j]:
            return i, j
        ii, jj = np.nonzero(self.free)
        k = int(np.argmin((ii - i) ** 2 + (jj - j) ** 2))
        return int(ii[k]), int(jj[k])

    def _build(self) -> Any:
        from scipy.sparse import coo_matrix

        ny, nx = self.free.shape
        idx = np.arange(ny * nx).reshape(ny, nx)
        rows, cols, w = [], [], []
        for di, dj in ((0, 1), (1, 0), (1, 1), (1, -1)):
            a = self.free[max(0, -di): ny - max(0, di), max(0, -dj): nx - max(0, dj)]
            i0, j0 = max(0, -di), max(0, -dj)
            b = self.free[i0 + di: i0 + di + a.shape[0], j0 + dj: j0 + dj + a.shape[1]]
            ok = a & b
            if di and dj:  # both side cells free
                s1 = self.free[i0 + di: i0 + di + a.shape[0], j0: j0 + a.shape[1]]
                s2 = self.free[i0: i0 + a.shape[0], j0 + dj: j0 + dj + a.shape[1]]
                ok &= s1 & s2
            src = idx[i0: i0 + a.shape[0], j0: j0 + a.shape[1]][ok]
            dst = idx[i0 + di: i0 + di + a.shape[0], j0 + dj: j0 + dj + a.shape[1]][ok]
            rows += [src, dst]
            cols += [dst, src]
            w += [np.full(len(src), self.cell * math.hypot(di, dj))] * 2
        r = np.concatenate(rows)
        c = np.concatenate(cols)
        return coo_matrix((np.concatenate(w), (r, c)), shape=(ny * nx, ny * nx)).tocsr()

    def distances(self, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
        """Walking distance from (x, y) to every cell (inf where unreachable), and predecessors."""
        from scipy.sparse.csgraph import dijkstra

        start = self.nearest_free(x, y)
        hit = self._memo.get(start)
        if hit is not None:
            return hit
        if self._graph is None:
            self._graph = self._build()
        ny, nx = self.free.shape
        d, pred = dijkstra(self._graph, directed=False, indices=start[0] * nx + start[1], return_predecessors=True)
        out = (d.reshape(ny, nx), pred.reshape(ny, nx).astype(np.int64))
        if len(self._memo) > 64:
            self._memo.clear()
        self._memo[start] = out
        return out

    def segment_free(self, p: tuple[float, float], q: tuple[float, float]) -> bool:
        n = max(2, int(math.hypot(q[0] - p[0], q[1] - p[1]) / (0.5 * self.cell)) + 1)
        t = np.linspace(0.0, 1.0, n)
        ny, nx = self.free.shape
        i = np.clip(np.rint((p[1] + t * (q[1] - p[1]) - self.y0) / self.cell).astype(int), 0, ny - 1)
        j = np.clip(np.rint((p[0] + t * (q[0] - p[0]) - self.x0) / self.cell).astype(int), 0, nx - 1)
        return bool(self.free[i, j].all())


def walk_grid(site: Site | None, bbox: tuple[float, float, float, float], cell_m: float = 0.5,
              margin_m: float = 0.3) -> WalkGrid:
    """Occupancy grid over ``bbox`` (x0, y0, x1, y1) with the site's footprints as obstacles."""
    x0, y0, x1, y1 = bbox
    nx = int(math.ceil((x1 - x0) / cell_m)) + 1
    ny = int(math.ceil((y1 - y0) / cell_m)) + 1
    xs = x0 + cell_m * np.arange(nx)
    ys = y0 + cell_m * np.arange(ny)
    free = np.ones((ny, nx), dtype=bool)
    if site is not None:
        for c in site.columns:
            jx = (xs > c.lo[0] - margin_m) & (xs < c.hi[0] + margin_m)
            iy = (ys > c.lo[1] - margin_m) & (ys < c.hi[1] + margin_m)
            free[np.ix_(iy, jx)] = False
    return WalkGrid(x0, y0, cell_m, free)


def guidance(grid: WalkGrid, dist_pred: tuple[np.ndarray, np.ndarray], here: tuple[float, float],
             goal: tuple[float, float]) -> tuple[float, float]:
    """Bearing (deg clockwise from north) of the first straight leg towards ``goal``, and the walking
    distance, along the grid's shortest path from ``here``."""
    dist, pred = dist_pred
    gi, gj = grid.nearest_free(*goal)
    walk = float(dist[gi, gj])
    if not math.isfinite(walk):
        walk = math.hypot(goal[0] - here[0], goal[1] - here[1])
        return _bearing(here, goal), walk
    nx = grid.free.shape[1]
    path = [(gi, gj)]
    k = pred[gi, gj]
    while k >= 0:
        path.append((int(k // nx), int(k % nx)))
        k = pred[path[-1]]
    path.reverse()
    corner = goal
    for i, j in path[1:]:  # the farthest path point still in straight sight: the first leg's end
        p = grid.xy(i, j)
        if grid.segment_free(here, p):
            corner = p
        else:
            break
    if grid.segment_free(here, goal):
        corner = goal
    walk += math.hypot(goal[0] - grid.xy(gi, gj)[0], goal[1] - grid.xy(gi, gj)[1])
    return _bearing(here, corner), walk


def _bearing(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.degrees(math.atan2(b[0] - a[0], b[1] - a[1])) % 360.0


# =========================================================================== the search
@dataclass
class HandheldSearch:
    """Posterior over the source position and the next stand point for the handheld.

    ``estimate`` is the fused estimate (its covariance, column range and cargo attenuation);
    ``background_cps`` the handheld's own background (its idle measurement).
    """

    estimate: SourceEstimate
    site: Site | None
    background_cps: float
    config: SearchConfig = field(default_factory=SearchConfig)
    dwells: list[Dwell] = field(default_factory=list)
    mode: str = "information"

    def __post_init__(self) -> None:
        c = self.config
        e = self.estimate
        self._boxes = self._site_boxes()
        self.hyp, mu_idx = self._hypotheses()
        self._mu_idx = mu_idx
        self._strength = np.geomspace(*c.strength_range, c.n_strength)
        prior = self._prior()
        # log weights over (hypothesis, strength); strength log-uniform
        self._logw = np.log(prior)[:, None] + np.zeros((1, c.n_strength))
        self._g_cache: dict[tuple[float, float, float], np.ndarray] = {}
        self.stands = self._stand_points()
        self.measured: set[int] = set()
        lo = np.min(self.hyp[:, :2], axis=0) - 30.0
        hi = np.max(self.hyp[:, :2], axis=0) + 30.0
        self.grid = walk_grid(self.site, (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), c.walk_cell_m,
                              margin_m=0.5 * c.standoff_m)
        self._fused_xyz = np.array([e.x_m, e.y_m, e.z_m])

    # ------------------------------------------------------------------ set-up
    def _site_boxes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Cargo boxes near the estimate (lo, hi, group) and the fused attenuation per group."""
        e = self.estimate
        if self.site is None or not self.site.columns:
            z = np.zeros((0, 3))
            return z, z.copy(), np.zeros(0, dtype=np.int64), np.zeros(0)
        lo, hi = self.site.lo_hi()
        grp = self.site.group_index()
        near = (np.maximum(lo[:, 0] - e.x_m, 0) + np.maximum(e.x_m - hi[:, 0], 0) < 40.0) & \
               (np.maximum(lo[:, 1] - e.y_m, 0) + np.maximum(e.y_m - hi[:, 1], 0) < 40.0)
        mu = np.array([e.mu_cargo_per_m.get(g, self.site.mu_prior_mean_per_m) for g in self.site.groups])
        return lo[near], hi[near], grp[near], mu

    def _centres(self) -> list[tuple[np.ndarray, float, float, float]]:
        """Where to put hypotheses: the estimate (x, y, half widths) and the fused fit's other
        basins (``candidates``: the mirror container across a lane, typically), each with a prior
        share from its likelihood ratio to the best, floored at ``candidate_floor``."""
        c = self.config
        e = self.estimate
        half_x = max(c.region_sigma * e.sigma_x_m * math.sqrt(c.prior_inflation), c.region_min_half_m)
        half_y = max(c.region_sigma * e.sigma_y_m * math.sqrt(c.prior_inflation), c.region_min_half_m)
        out = [(np.array([e.x_m, e.y_m]), half_x, half_y, 1.0)]
        if e.candidates:
            best = min(cd.nll for cd in e.candidates)
            for cd in sorted(e.candidates, key=lambda cd: cd.nll):
                xy = np.array([cd.x_m, cd.y_m])
                if any(np.all(np.abs(xy - o[0]) <= [o[1], o[2]]) for o in out):
                    continue  # already inside a region
                if len(out) > c.max_candidates or math.hypot(*(xy - out[0][0])) > c.candidate_max_distance_m:
                    continue
                share = max(math.exp(-min(cd.nll - best, 50.0)), c.candidate_floor)
                out.append((xy, c.region_min_half_m, c.region_min_half_m, share))
        return out

    def _hypotheses(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        e = self.estimate
        if e.z_resolved:
            z_lo = max(e.z_m - c.region_sigma * e.sigma_z_m * math.sqrt(c.prior_inflation), 0.0)
            z_hi = e.z_m + c.region_sigma * e.sigma_z_m * math.sqrt(c.prior_inflation)
        else:
            z_lo, z_hi = 0.0, max(e.z_interval_m[1], e.z_m + 1.0)
        if self.site is not None and self.site.columns:
            z_hi = min(z_hi, self.site.z_max_m)
        zs = np.arange(z_lo + 0.5 * c.grid_step_z_m, max(z_hi, z_lo + c.grid_step_z_m), c.grid_step_z_m)
        parts = []
        self._region: list[int] = []
        for k, (xy, hx, hy, _share) in enumerate(self._centres()):
            xs = np.arange(xy[0] - hx, xy[0] + hx + 1e-9, c.grid_step_m)
            ys = np.arange(xy[1] - hy, xy[1] + hy + 1e-9, c.grid_step_m)
            gx, gy, gz = np.meshgrid(xs, ys, zs, indexing="ij")
            pts = np.column_stack([gx.ravel(), gy.ravel(), gz.ravel()])
            if self.site is not None and self.site.columns:
                lo, hi = self.site.lo_hi()
                inside = np.zeros(len(pts), dtype=bool)
                for a, b in zip(lo, hi, strict=True):
                    inside |= np.all((pts >= a) & (pts <= b), axis=1)
                pts = pts[inside]
            if k == 0 and not len(pts):
                pts = np.array([[e.x_m, e.y_m, e.z_m]])
            parts.append(pts)
            self._region += [k] * len(pts)
        pts = np.concatenate(parts)
        region = np.asarray(self._region)
        n_mu = len(c.mu_factors) if len(self._boxes[0]) else 1
        self._region_of = np.repeat(region, n_mu)
        return np.repeat(pts, n_mu, axis=0), np.tile(np.arange(n_mu), len(pts))

    def _prior(self) -> np.ndarray:
        """The fused estimate's Gaussian (inflated) plus a uniform floor over its region; the other
        basins uniform over theirs with their share."""
        c = self.config
        e = self.estimate
        d = self.hyp - np.array([e.x_m, e.y_m, e.z_m])
        n = 3 if e.z_resolved else 2
        cov = np.asarray(e.cov, dtype=float)[:n, :n] * c.prior_inflation
        try:
            q = np.einsum("ij,jk,ik->i", d[:, :n], np.linalg.inv(cov), d[:, :n])
        except np.linalg.LinAlgError:
            q = (d[:, :n] ** 2).sum(axis=1)
        w = np.zeros(len(self.hyp))
        for k, (_xy, _hx, _hy, share) in enumerate(self._centres()):
            sel = self._region_of == k
            if not sel.any():
                continue
            if k == 0:
                gauss = np.exp(-0.5 * (q[sel] - q[sel].min()))
                part = (1.0 - c.prior_floor) * gauss / gauss.sum() + c.prior_floor / sel.sum()
            else:
                part = np.full(sel.sum(), 1.0 / sel.sum())
            w[sel] = share * part
        if len(c.mu_factors) > 1 and len(self._boxes[0]):
            w = w * np.where(self._mu_idx == c.mu_factors.index(1.0), 0.5, 0.25)  # the fused mu favoured
        return w / w.sum()

    def _stand_points(self) -> list[StandPoint]:
        c = self.config
        e = self.estimate
        if self.site is None or not self.site.columns:
            # free space: a ring around the estimate
            return [StandPoint(e.x_m + r * math.cos(a), e.y_m + r * math.sin(a), -1, "-")
                    for r in (1.0, 2.5) for a in np.linspace(0, 2 * math.pi, 8, endpoint=False)]
        hlo = self.hyp[:, :2].min(axis=0) - c.candidate_reach_m
        hhi = self.hyp[:, :2].max(axis=0) + c.candidate_reach_m
        out: list[StandPoint] = []
        so = c.standoff_m
        for k, col in enumerate(self.site.columns):
            if col.hi[0] < hlo[0] or col.lo[0] > hhi[0] or col.hi[1] < hlo[1] or col.lo[1] > hhi[1]:
                continue
            xs = np.arange(col.lo[0] + 0.5 * c.face_step_m, col.hi[0], c.face_step_m)
            ys = np.arange(col.lo[1] + 0.5 * c.face_step_m, col.hi[1], c.face_step_m)
            faces = [(x, col.lo[1] - so, "S") for x in xs] + [(x, col.hi[1] + so, "N") for x in xs]
            faces += [(col.lo[0] - so, y, "W") for y in ys] + [(col.hi[0] + so, y, "E") for y in ys]
            for x, y, f in faces:
                if self._free(x, y):
                    out.append(StandPoint(float(x), float(y), k, f))
        return out

    def _free(self, x: float, y: float) -> bool:
        m = 0.5 * self.config.standoff_m
        assert self.site is not None
        return not any(c.lo[0] - m < x < c.hi[0] + m and c.lo[1] - m < y < c.hi[1] + m for c in self.site.columns)

    # ------------------------------------------------------------------ model
    def _g(self, p: tuple[float, float, float], rows: np.ndarray | None = None) -> np.ndarray:
        """Transport term from the hypotheses (all, or ``rows``) to the point p.  The full vector is
        cached per point (dwells); a planning subset is computed for the rows asked for only."""
        key = (round(p[0], 3), round(p[1], 3), round(p[2], 3))
        g = self._g_cache.get(key)
        if g is not None and len(g) == len(self.hyp):
            return g if rows is None else g[rows]
        lo, hi, grp, mu = self._boxes
        c = self.config
        sel_rows = np.arange(len(self.hyp)) if rows is None else rows
        pts = self.hyp[sel_rows]
        mu_idx = self._mu_idx[sel_rows]
        out = np.empty(len(pts))
        p_arr = np.asarray(p, dtype=float)
        if len(lo):
            for m_i, f in enumerate(c.mu_factors):
                sel = mu_idx == m_i
                if sel.any():
                    out[sel] = source_terms(pts[sel], p_arr, lo, hi, grp, mu * f, c.mu_air_per_m,
                                            c.near_field_m**2, False)[0]
        else:
            out = source_terms(pts, p_arr, lo, hi, grp, mu, c.mu_air_per_m, c.near_field_m**2, False)[0]
        if rows is None:
            self._g_cache[key] = out
        return out

    def _weights(self) -> np.ndarray:
        lw = self._logw - self._logw.max()
        w = np.exp(lw)
        return w / w.sum()

    def posterior(self) -> dict[str, Any]:
        """Posterior mean, 3x3 covariance, and the radius holding 95 % of the mass around the mean."""
        w = self._weights().sum(axis=1)
        mean = w @ self.hyp
        d = self.hyp - mean
        cov = (d * w[:, None]).T @ d
        r = np.linalg.norm(d, axis=1)
        order = np.argsort(r)
        cum = np.cumsum(w[order])
        r95 = float(r[order[min(int(np.searchsorted(cum, 0.95)), len(r) - 1)]])
        return {"x_m": float(mean[0]), "y_m": float(mean[1]), "z_m": float(mean[2]), "cov": cov,
                "radius_95_m": r95, "n_hypotheses": len(self.hyp)}

    # ------------------------------------------------------------------ updates
    def add(self, x_m: float, y_m: float, z_m: float, live_time_s: float, counts: float,
            stand: int | None = None) -> None:
        """Fuse one handheld dwell (counts in live_time_s at (x, y, z))."""
        if not (live_time_s > 0 and counts >= 0 and all(map(math.isfinite, (x_m, y_m, z_m, counts)))):
            raise ValueError(f"handheld dwell: need live_time_s > 0, counts >= 0 and a finite position, got "
                             f"live {live_time_s}, counts {counts}, at ({x_m}, {y_m}, {z_m})")
        self.dwells.append(Dwell(x_m, y_m, z_m, live_time_s, counts, stand))
        if stand is not None:
            self.measured.add(stand)
        g = self._g((x_m, y_m, z_m))
        self._logw += self._loglik(g, live_time_s, counts)
        self._prune()

    def _loglik(self, g: np.ndarray, live_time_s: float, counts: float) -> np.ndarray:
        """ln p(counts | hypothesis, strength): Gaussian with the Poisson variance plus the model
        error (variance lambda + (eps lambda)^2); at the handheld's counts (>= ~500 per dwell) the
        Gaussian form of the Poisson is accurate, and it carries the model error, which a pure
        Poisson likelihood cannot."""
        lam = live_time_s * (self.background_cps + g[:, None] * self._strength[None, :])
        var = lam + (self.config.model_rel_error * (lam - live_time_s * self.background_cps)) ** 2
        return -0.5 * (counts - lam) ** 2 / var - 0.5 * np.log(var)

    def _prune(self) -> None:
        lw = self._logw.max(axis=1)
        keep = lw - lw.max() > math.log(self.config.min_weight)
        if keep.all() or keep.sum() < 10:
            return
        self.hyp = self.hyp[keep]
        self._mu_idx = self._mu_idx[keep]
        self._region_of = self._region_of[keep]
        self._logw = self._logw[keep]
        self._g_cache = {k: v[keep] for k, v in self._g_cache.items() if len(v) == len(keep)}

    def model_misfit(self) -> bool:
        """The hypotheses cannot explain the handheld's counts: the posterior is not trusted."""
        n = len(self.dwells)
        if n < 2:
            return False
        return self.best_chi2() / n > self.config.misfit_per_dwell

    def best_chi2(self) -> float:
        """chi^2 of the best single (hypothesis, strength) over all dwells (model error included)."""
        chi2 = np.zeros_like(self._logw)
        for d in self.dwells:
            g = self._g((d.x_m, d.y_m, d.z_m))
            lam = d.live_time_s * (self.background_cps + g[:, None] * self._strength[None, :])
            var = lam + (self.config.model_rel_error * (lam - d.live_time_s * self.background_cps)) ** 2
            chi2 += (d.counts - lam) ** 2 / var
        return float(chi2.min())

    # ------------------------------------------------------------------ planning
    def done(self) -> bool:
        return (self.posterior()["radius_95_m"] <= self.config.stop_radius_m
                or len(self.measured) >= self.config.max_points)

    def _moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Planning view of the posterior: up to ``plan_samples`` hypotheses drawn by systematic
        resampling of the position weights (equal weight each; Kitagawa 1996), with E[A | h] and
        E[A^2 | h] over the strength grid (A the handheld strength).  Planning scores ~100 stand
        points x 2 heights per step: on all ~10^5 hypotheses of a wide prior that took minutes."""
        w = self._weights()
        wh = w.sum(axis=1)
        n = min(self.config.plan_samples, len(wh))
        u = (np.arange(n) + np.random.default_rng(len(self.dwells)).random()) / n
        rows = np.minimum(np.searchsorted(np.cumsum(wh), u), len(wh) - 1)
        cond = w[rows] / np.maximum(wh[rows], 1e-300)[:, None]
        m1 = (cond * self._strength[None, :]).sum(axis=1)
        m2 = (cond * self._strength[None, :] ** 2).sum(axis=1)
        return rows, np.full(n, 1.0 / n), m1, m2

    def expected_information(self, k: int, moments: tuple[np.ndarray, ...] | None = None) -> float:
        """Gaussian-channel approximation of the mutual information of the dwells at stand point k:
        sum over its heights of 1/2 ln(1 + Var[lambda] / E[noise]), lambda = t (b + g A) over the
        posterior of (position, attenuation, strength)."""
        sp = self.stands[k]
        c = self.config
        keep, wk, m1, m2 = moments if moments is not None else self._moments()
        t = c.dwell_s
        info = 0.0
        for h in c.heights_m:
            g = self._g((sp.x_m, sp.y_m, h), keep)
            e1 = float((g * wk) @ m1)  # E[g A]
            e2 = float((g * g * wk) @ m2)  # E[(g A)^2]
            var = t * t * max(e2 - e1 * e1, 0.0)
            noise = t * (self.background_cps + e1) + (c.model_rel_error * t) ** 2 * e2
            info += 0.5 * math.log1p(var / max(noise, 1e-9))
        return info

    def next_stand(self, here: tuple[float, float]) -> tuple[int | None, str]:
        """Index of the next stand point (None: stop) and the mode that chose it."""
        if self.model_misfit():  # a tight posterior of a model that does not fit means nothing
            self.mode = "gradient"
            return self._gradient_step(), "gradient"
        if self.done():
            return None, "done"
        self.mode = "information"
        dist, _pred = self.grid.distances(*here)
        c = self.config
        best, best_u = None, -math.inf
        moments = self._moments()
        for k, sp in enumerate(self.stands):
            if k in self.measured:
                continue
            i, j = self.grid.nearest_free(sp.x_m, sp.y_m)
            walk = float(dist[i, j]) if math.isfinite(dist[i, j]) else math.hypot(sp.x_m - here[0], sp.y_m - here[1])
            u = self.expected_information(k, moments) / (walk / c.walk_speed_m_s + c.dwell_s * len(c.heights_m))
            if u > best_u:
                best, best_u = k, u
        return best, "information"

    def _gradient_step(self) -> int | None:
        """Along the wall from the highest-rate stand point, towards the higher neighbour."""
        rates: dict[int, float] = {}
        for d in self.dwells:
            if d.stand is not None:
                rates[d.stand] = max(rates.get(d.stand, 0.0), d.counts / d.live_time_s)
        if not rates:
            return None
        top = max(rates, key=lambda k: rates[k])
        sp = self.stands[top]
        same = [k for k, s in enumerate(self.stands) if s.column == sp.column and s.face == sp.face and k != top]
        nb = sorted(same, key=lambda k: math.hypot(self.stands[k].x_m - sp.x_m, self.stands[k].y_m - sp.y_m))
        step = self.config.gradient_step_m
        for k in nb:
            if k not in self.measured and math.hypot(self.stands[k].x_m - sp.x_m,
                                                     self.stands[k].y_m - sp.y_m) <= step + 1e-6:
                return k
        # both neighbours measured and lower: the maximum is bracketed (or the other faces are next)
        others = [k for k, s in enumerate(self.stands) if k not in self.measured and s.column == sp.column]
        if others and len(self.measured) < self.config.max_points:
            return min(others, key=lambda k: math.hypot(self.stands[k].x_m - sp.x_m, self.stands[k].y_m - sp.y_m))
        return None

    def estimate_xyz(self) -> tuple[float, float, float]:
        """Final source estimate: the posterior mean; in gradient mode, behind the hottest wall point."""
        if self.mode == "gradient" and self.dwells:
            top = max(self.dwells, key=lambda d: d.counts / d.live_time_s)
            p = self.posterior()
            if top.stand is not None and self.site is not None:
                sp = self.stands[top.stand]
                col = self.site.columns[sp.column]
                depth = self.config.standoff_m + 0.6
                dx = {"W": depth, "E": -depth}.get(sp.face, 0.0)
                dy = {"S": depth, "N": -depth}.get(sp.face, 0.0)
                z = float(np.clip(p["z_m"], col.lo[2], col.hi[2]))
                return sp.x_m + dx, sp.y_m + dy, z
            return top.x_m, top.y_m, top.z_m
        p = self.posterior()
        return p["x_m"], p["y_m"], p["z_m"]

    def final_point(self) -> tuple[float, float, float]:
        """Where the final (nuclide) dwell is taken: the stand point nearest the estimate, at the
        height nearest it."""
        x, y, z = self.estimate_xyz()
        if not self.stands:
            return x, y, self.config.heights_m[0]
        k = min(range(len(self.stands)), key=lambda k: math.hypot(self.stands[k].x_m - x, self.stands[k].y_m - y))
        h = min(self.config.heights_m, key=lambda h: abs(h - z))
        return self.stands[k].x_m, self.stands[k].y_m, h

    def guide(self, here: tuple[float, float]) -> tuple[Guidance, int | None]:
        """The display's next instruction from the handheld's position ``here``."""
        k, mode = self.next_stand(here)
        c = self.config
        if k is None:
            x, y, h = self.final_point()
            heights: tuple[float, ...] = (h,)
            mode = "final"
            what = f"final dwell {c.final_dwell_s:.0f} s at {h:.1f} m for the nuclide"
        else:
            sp = self.stands[k]
            x, y, heights = sp.x_m, sp.y_m, c.heights_m
            what = (f"measure {c.dwell_s:.0f} s at " + " and ".join(f"{v:.1f}" for v in heights)
                    + f" m against the {sp.face} wall")
        bearing, walk = guidance(self.grid, self.grid.distances(*here), here, (x, y))
        p = self.posterior()
        note = (f"go {walk:.0f} m, bearing {bearing:.0f} deg; {what}; source est. ({p['x_m']:.1f}, {p['y_m']:.1f}, "
                f"{p['z_m']:.1f}) m +-{p['radius_95_m']:.1f} m (95 %), {mode}")
        return Guidance(x, y, heights, bearing, walk, mode, note), k
