"""Fit a detector's spectrum-to-dose G(E) to measured sensitivities (counts per second per uSv/h).

Why: the G(E) of :mod:`agent.spectral.dose` is fitted to the *simulator's* monoenergetic responses of
a crystal. A real unit differs (housing, crystal, electronics, the way its dose rate was defined), and a
dose-rate meter is calibrated the way a technician does it: a source of known dose rate D at the
detector, measured spectrum n_ch over live time t. Its sensitivity is S = sum(n)/t / D (cps per uSv/h)
and the condition on G is that the spectrum gives back D:

    sum_ch shape_ch * S * G(E_ch) = 1 uSv/h   (shape = net counts normalised to sum 1)

A handful of sources cannot fix the 7 coefficients of G, so G is the base crystal's G0 times a smooth
correction ``exp(c0 + c1 L + c2 L^2)``, L = ln(E / 662 keV) (held at its end values outside the energies
the sources' counts cover), found by weighted least squares on ln(predicted / true) with a ridge term on
c1, c2 (pulls toward the base G0's *shape*; the overall scale c0 is free). One source fixes the scale
only, two a slope, three or more the curvature as far as the ridge lets them. The product is refitted to
the polynomial form of :class:`agent.spectral.dose.DoseWeighting` (relative least squares on a log-energy
grid) so it is stored and used like any other G(E).

On-device code: no simulator import (``cedge spectrum fit-detector --dose-rate`` uses it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.dose import DoseWeighting

E_REF_KEV = 662.0
DEFAULT_RIDGE = 0.3  # on (c1, c2), in units of ln(ratio)^2 per source weight
DEFAULT_ROBUST_SCALE = 0.15  # Cauchy scale on ln(read / true): sources off by >> 15 % lose their pull


@dataclass(frozen=True, eq=False)
class DoseSource:
    """One dose calibration measurement: net counts per channel (any normalisation) and S."""

    name: str
    counts: np.ndarray  # background-subtracted counts (negatives are clipped to 0)
    calibration: EnergyCalibration
    sensitivity_cps_per_usv_h: float
    weight: float = 1.0

    @property
    def shape(self) -> np.ndarray:
        c = np.clip(np.asarray(self.counts, dtype=float), 0.0, None)
        total = c.sum()
        if total <= 0:
            raise ValueError(f"{self.name}: no net counts")
        return c / total

    def energies_kev(self) -> np.ndarray:
        return self.calibration.energy_kev(np.arange(np.asarray(self.counts).size, dtype=float))


def dose_ratio(weighting: DoseWeighting, source: DoseSource) -> float:
    """Dose the weighting reads from the source's spectrum / the true dose (1 = right)."""
    return float(source.shape * source.sensitivity_cps_per_usv_h @ weighting.g(source.energies_kev()))


def sensitivity_from_counts(counts: np.ndarray, live_time_s: float, dose_rate_usv_h: float) -> float:
    """S = net count rate / net dose rate (cps per uSv/h)."""
    if live_time_s <= 0 or dose_rate_usv_h <= 0:
        raise ValueError("live time and dose rate must be > 0")
    net = float(np.clip(np.asarray(counts, dtype=float), 0.0, None).sum())
    return net / live_time_s / dose_rate_usv_h


@dataclass
class DoseFit:
    weighting: DoseWeighting
    correction: tuple[float, float, float]  # c0, c1, c2 of exp(c0 + c1 L + c2 L^2)
    l_range: tuple[float, float]  # L outside this is clipped
    ratio_before: dict[str, float]  # dose read / true dose with the base G(E)
    ratio_after: dict[str, float]  # same with the fitted (polynomial) G(E)
    projection_error: float  # worst relative error of the polynomial against G0 * correction
    robust_weights: dict[str, float]  # final weight / given weight (<< 1: inconsistent with the others)

    def row(self) -> dict[str, float | str]:
        """A dose_weighting.csv row (without max_rel_error)."""
        w = self.weighting
        out: dict[str, float | str] = {"detector": w.model, "e_min_keV": w.e_min_kev, "e_max_keV": w.e_max_kev}
        out.update({f"a{k}": float(c) for k, c in enumerate(w.coefficients)})
        return out


def _log_e(e: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(e, 1e-3) / E_REF_KEV)


def _correction(c: np.ndarray, lg: np.ndarray, l_range: tuple[float, float]) -> np.ndarray:
    x = np.clip(lg, *l_range)
    return np.exp(c[0] + c[1] * x + c[2] * x * x)


def covered_l_range(base: DoseWeighting, sources: Sequence[DoseSource], tail: float = 0.005) -> tuple[float, float]:
    """ln(E/662) range holding all but ``tail`` of the weighted dose signal at each end."""
    e_all, w_all = [], []
    for s in sources:
        e = s.energies_kev()
        w = s.shape * base.g(e)
        e_all.append(e)
        w_all.append(w / max(w.sum(), 1e-300) * s.weight)
    e = np.concatenate(e_all)
    w = np.concatenate(w_all)
    order = np.argsort(e)
    cdf = np.cumsum(w[order]) / w.sum()
    lo = e[order][min(np.searchsorted(cdf, tail), e.size - 1)]
    hi = e[order][min(np.searchsorted(cdf, 1.0 - tail), e.size - 1)]
    lo = max(float(lo), base.e_min_kev)
    hi = min(float(hi), base.e_max_kev)
    return float(_log_e(np.array(lo))), float(_log_e(np.array(hi)))


def fit_dose_weighting(base: DoseWeighting, sources: Sequence[DoseSource], name: str,
                       ridge: float = DEFAULT_RIDGE, robust_scale: float | None = DEFAULT_ROBUST_SCALE,
                       degree: int | None = None) -> DoseFit:
    """G(E) = G0(E) * exp(c0 + c1 L + c2 L^2) fitted to the sources' sensitivities (module docstring)."""
    sources = list(sources)
    if not sources:
        raise ValueError("no dose calibration sources")
    for s in sources:
        if not s.sensitivity_cps_per_usv_h > 0:
            raise ValueError(f"{s.name}: sensitivity must be > 0")
    l_range = covered_l_range(base, sources)
    pre = []  # per source: S * shape * G0 per channel, and L per channel (only channels with signal)
    for s in sources:
        e = s.energies_kev()
        v = s.shape * s.sensitivity_cps_per_usv_h * base.g(e)
        keep = v > 0
        if not keep.any():
            raise ValueError(f"{s.name}: no counts where the base G(E) is defined "
                             f"({base.e_min_kev:g}-{base.e_max_kev:g} keV)")
        pre.append((v[keep], _log_e(e[keep])))
    w0 = np.array([s.weight for s in sources], dtype=float)
    n_free = 1 if len(sources) == 1 else 3
    lam = np.sqrt(ridge)

    def ratios(c: np.ndarray) -> np.ndarray:
        return np.array([max(float(v @ _correction(c, lg, l_range)), 1e-300) for v, lg in pre])

    def solve(w: np.ndarray, start: np.ndarray) -> np.ndarray:
        sw = np.sqrt(w)

        def resid(p: np.ndarray) -> np.ndarray:
            c = np.zeros(3)
            c[:n_free] = p
            out = sw * np.log(ratios(c))
            return np.concatenate([out, lam * c[1:]]) if n_free == 3 else out

        return least_squares(resid, start[:n_free], method="lm").x

    # start: the median scale (robust to one bad source), then iteratively re-weighted least squares
    # with Cauchy weights 1 / (1 + (r / robust_scale)^2) on ln(ratio) if ``robust_scale`` is given
    c = np.zeros(3)
    c[0] = -float(np.median(np.log(ratios(c))))
    w = w0.copy()
    for _ in range(30 if robust_scale else 1):
        p = solve(w, c)
        c_new = np.zeros(3)
        c_new[:n_free] = p
        if robust_scale:
            r = np.log(ratios(c_new))
            w = w0 / (1.0 + (r / robust_scale) ** 2)
        done = np.allclose(c_new, c, atol=1e-7)
        c = c_new
        if done:
            break
    robust_weights = {s.name: float(x / max(y, 1e-300)) for s, x, y in zip(sources, w, w0, strict=True)}

    # back to the polynomial form: relative least squares on a log grid
    degree = base.coefficients.size - 1 if degree is None else degree
    grid = np.geomspace(base.e_min_kev, base.e_max_kev, 400)
    target = base.g(grid) * _correction(c, _log_e(grid), l_range)
    x = np.log(grid / 1000.0)
    ok = target > 0
    a = np.array([x[ok] ** k for k in range(degree + 1)]).T / target[ok, None]
    coef, *_ = np.linalg.lstsq(a, np.ones(ok.sum()), rcond=None)
    fitted = DoseWeighting(name, coef, base.e_min_kev, base.e_max_kev)
    proj = float(np.max(np.abs(fitted.g(grid[ok]) / target[ok] - 1.0)))
    return DoseFit(
        weighting=fitted,
        correction=(float(c[0]), float(c[1]), float(c[2])),
        l_range=l_range,
        ratio_before={s.name: dose_ratio(base, s) for s in sources},
        ratio_after={s.name: dose_ratio(fitted, s) for s in sources},
        projection_error=proj,
        robust_weights=robust_weights,
    )
