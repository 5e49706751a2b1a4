"""Where to start the local fits: a coarse grid scored by the profile likelihood.

Why a grid and not starts beside the count-rate peak only: the likelihood has several minima -
one straight pass cannot tell a source left of the track from its mirror on the right, nor one
below detector height from its mirror above - and with cargo in the model a third kind appears
(the near, lightly shielded side against the far, heavily shielded one).  A grid over the
candidate volume (the container columns near the elevated intervals, or free space around them)
scored by the likelihood with the strength profiled out finds every basin for the price of a
few matrix products; the best point of each column then seeds a full fit.  The grid uses the
interval mid-points and no cargo (cheap); the full fits add both.
"""

from __future__ import annotations

import numpy as np

from controller.localization.model import Model
from controller.localization.site import Site

__all__ = ["Candidates", "candidate_points", "hot_rows", "profile_gain"]


class Candidates:
    """Grid points with the column each lies in (-1: free space) and per-column bounds."""

    def __init__(self, pts: np.ndarray, column: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        self.pts = pts  # (M, 3)
        self.column = column  # (M,) index into lo/hi rows (-1 free)
        self.lo = lo  # (C, 3) position bounds per column (or one row for free space)
        self.hi = hi


def hot_rows(model: Model, sigma: float) -> np.ndarray:
    """Indices of intervals above ``sigma`` Poisson sigma over the background prior centre; the
    five most elevated when none is."""
    b = np.exp(model.log_b0)[model.seg] * model.t
    z = (model.c - b) / np.sqrt(np.maximum(b, 1e-9))
    hot = np.flatnonzero(z > sigma)
    if hot.size == 0:
        hot = np.argsort(z)[-min(5, len(z)):]
    return hot


def candidate_points(model: Model, hot: np.ndarray, radius_m: float, step_m: float, site: Site | None,
                     z_min_m: float, z_max_m: float) -> Candidates:
    mid = model.ms.mid_xyz_m
    hot_xy = mid[hot, :2]
    if site is not None and site.columns:
        lo_all, hi_all = site.lo_hi()
        # distance from each column footprint to the nearest elevated interval
        dx = np.maximum(np.maximum(lo_all[None, :, 0] - hot_xy[:, None, 0], hot_xy[:, None, 0] - hi_all[None, :, 0]), 0)
        dy = np.maximum(np.maximum(lo_all[None, :, 1] - hot_xy[:, None, 1], hot_xy[:, None, 1] - hi_all[None, :, 1]), 0)
        near = np.flatnonzero(np.hypot(dx, dy).min(axis=0) <= radius_m)
        pts: list[np.ndarray] = []
        col: list[np.ndarray] = []
        for c in near:
            lo, hi = lo_all[c], hi_all[c]
            axes = []
            for a in range(3):
                length = hi[a] - lo[a]
                n = max(2, int(np.ceil(length / step_m)))
                axes.append(lo[a] + (np.arange(n) + 0.5) / n * length)
            g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
            pts.append(g)
            col.append(np.full(len(g), c, dtype=np.int64))
        if pts:
            return Candidates(np.vstack(pts), np.concatenate(col), lo_all, hi_all)
        return Candidates(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), lo_all, hi_all)
    x0, y0 = hot_xy.min(axis=0) - radius_m
    x1, y1 = hot_xy.max(axis=0) + radius_m
    xs = np.arange(x0, x1 + 1e-9, step_m)
    ys = np.arange(y0, y1 + 1e-9, step_m)
    nz = max(2, int(np.ceil((z_max_m - z_min_m) / max(step_m, 1.0))))
    zs = z_min_m + (np.arange(nz) + 0.5) / nz * (z_max_m - z_min_m)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    xy = np.column_stack([gx.ravel(), gy.ravel()])
    # keep points within the radius of some elevated interval (chunked: bounded memory)
    keep = np.zeros(len(xy), dtype=bool)
    for a in range(0, len(hot_xy), 256):
        d2 = ((xy[:, None, :] - hot_xy[None, a:a + 256, :]) ** 2).sum(axis=2)
        keep |= d2.min(axis=1) <= radius_m**2
    xy = xy[keep]
    pts_free = np.column_stack([np.repeat(xy, len(zs), axis=0), np.tile(zs, len(xy))])
    lo = np.array([[x0 - 5.0, y0 - 5.0, z_min_m]])
    hi = np.array([[x1 + 5.0, y1 + 5.0, z_max_m]])
    return Candidates(pts_free, np.zeros(len(pts_free), dtype=np.int64), lo, hi)


def profile_gain(model: Model, pts: np.ndarray, base_rate: np.ndarray, chunk: int = 512
                 ) -> tuple[np.ndarray, np.ndarray]:
    """For each grid point: the drop in NLL when a source of the best strength (>= 0, one per
    detector group) is added to ``base_rate`` (expected counts without it, (N,)), and that strength
    of the main group.  Mid-point geometry with air attenuation, no cargo.  Newton on S."""
    mid = model.ms.mid_xyz_m
    t, c = model.t, model.c
    n_groups = model.n_groups
    gains = np.zeros(len(pts))
    best_s = np.zeros(len(pts))
    main = int(np.argmax(np.bincount(model.group, minlength=n_groups)))
    for a in range(0, len(pts), chunk):
        p = pts[a:a + chunk]
        d2 = ((p[:, None, :] - mid[None, :, :]) ** 2).sum(axis=2) + model.r0sq
        r = np.sqrt(d2)
        tg = t[None, :] * np.exp(-model.mu_air * r) / d2  # (M, N): counts per unit strength
        total = np.zeros(len(p))
        for g in range(n_groups):
            sel = model.group == g
            if not sel.any():
                continue
            x = tg[:, sel]
            base = base_rate[sel][None, :]
            cc = c[sel][None, :]
            s = np.maximum((cc - base).sum(axis=1), 0.0) / np.maximum(x.sum(axis=1), 1e-300)
            for _ in range(8):
                lam = base + s[:, None] * x
                d1 = (x * (1.0 - cc / lam)).sum(axis=1)
                h = (cc * (x / lam) ** 2).sum(axis=1)
                s = np.maximum(s - d1 / np.maximum(h, 1e-300), 0.0)
            lam = base + s[:, None] * x
            gain = (cc * np.log(lam / base) - s[:, None] * x).sum(axis=1)
            total += gain
            if g == main:
                best_s[a:a + chunk] = s
        gains[a:a + chunk] = total
    return gains, best_s
