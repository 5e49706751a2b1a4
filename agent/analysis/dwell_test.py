"""Handheld confirm/clear test: is the dwell spectrum more than a scaled natural background?

Why a shape test and not only a gross-count excess: natural radioactivity changes by tens of
percent over metres (granite, fertiliser, ceramic tiles, concrete), so a handheld standing on a
NORM patch sees a large gross excess over its background taken elsewhere.  What a man-made source
adds is *shape*: counts in a few energy windows (its lines and their Compton continua) that a
scaled background cannot explain.  This is the "scaled background" hypothesis test behind
energy-windowed alarm algorithms such as NSCRAD (Pfund et al., IEEE TNS 54 (2007) 1232) and the
spectral-shape check in ANSI N42.33/N42.48 practice:

    H0: dwell_i ~ Poisson(k * t_d * b_i / t_b) in each energy window i, with one free scale k.

The windows are logarithmic in energy (resolution grows ~ sqrt(E)) and merged until each holds
enough background counts for the chi-square approximation.  The statistic uses the variance of
both the dwell count and the background estimate, and the p-value is turned into sigmas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True, slots=True)
class DwellVerdict:
    gross_sigma: float  # excess of the total count over the background rate (sigma)
    shape_sigma: float  # departure from a scaled background shape (sigma)
    scale: float  # best-fit background scale k (NORM patches give k != 1 with shape_sigma ~ 0)
    n_windows: int
    confirmed: bool
    reason: str


def _windows(energy_kev: np.ndarray, bg_counts: np.ndarray, lo_kev: float, hi_kev: float, n: int,
             min_bg_counts: float) -> list[np.ndarray]:
    """Channel index groups: log-spaced energy windows, merged until each has min_bg_counts."""
    edges = np.geomspace(lo_kev, hi_kev, n + 1)
    groups: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        idx = np.nonzero((energy_kev >= a) & (energy_kev < b))[0]
        if idx.size == 0:
            continue
        pending.append(idx)
        cat = np.concatenate(pending)
        if bg_counts[cat].sum() >= min_bg_counts:
            groups.append(cat)
            pending = []
    if pending and groups:
        groups[-1] = np.concatenate([groups[-1], *pending])
    return groups


def dwell_test(dwell_counts: np.ndarray, dwell_live_s: float, bg_counts: np.ndarray, bg_live_s: float,
               energy_kev: np.ndarray, confirm_sigma: float = 5.0, lo_kev: float = 40.0,
               hi_kev: float = 3000.0, n_windows: int = 24, min_bg_counts: float = 25.0) -> DwellVerdict:
    """Confirm when the dwell spectrum departs from a scaled background by >= confirm_sigma."""
    d = np.asarray(dwell_counts, dtype=float)
    b = np.asarray(bg_counts, dtype=float)
    if d.shape != b.shape or d.shape != np.asarray(energy_kev).shape:
        raise ValueError("dwell, background and energy arrays must have the same shape")
    if dwell_live_s <= 0 or bg_live_s <= 0:
        raise ValueError("live times must be positive")
    r = dwell_live_s / bg_live_s
    # gross excess, with the background estimate's own variance
    mu_tot = b.sum() * r
    gross = (d.sum() - mu_tot) / math.sqrt(max(mu_tot + mu_tot * r, 1e-9))
    groups = _windows(np.asarray(energy_kev, float), b, lo_kev, hi_kev, n_windows, min_bg_counts)
    if len(groups) < 3:
        return DwellVerdict(gross, 0.0, float("nan"), len(groups), gross >= confirm_sigma,
                        "too few background counts for a shape test; gross count only")
    dw = np.array([d[g].sum() for g in groups])
    bw = np.array([b[g].sum() for g in groups])
    k = dw.sum() / max(bw.sum() * r, 1e-9)  # ML scale under H0 (Poisson, one free factor)
    mu = k * r * bw
    var = mu + (k * r) ** 2 * bw  # dwell Poisson + background-estimate variance
    chi2 = float(np.sum((dw - mu) ** 2 / np.maximum(var, 1e-9)))
    dof = len(groups) - 1
    p = float(stats.chi2.sf(chi2, dof))
    if p < 1e-300:  # underflow: Wilson-Hilferty cube-root normal approximation of chi^2
        shape = ((chi2 / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    else:
        shape = float(stats.norm.isf(p)) if p < 0.5 else 0.0
    if shape >= confirm_sigma:
        verdict, reason = True, f"spectral shape differs from background ({shape:.1f} sigma)"
    elif gross >= confirm_sigma:
        verdict, reason = False, f"elevated but background-shaped (x{k:.2f}): natural radioactivity"
    else:
        verdict, reason = False, "no excess over background"
    return DwellVerdict(float(gross), shape, float(k), len(groups), verdict, reason)
