"""Lines the fitted model does not explain: the evidence behind "unknown" and behind naming SNM.

Why: a full-spectrum fit always returns *some* best model. When the source is not in the library
its best substitute leaves a line (or several) unexplained; when a library source is present but
its template is imperfect, the residual is a broad ripple. An identifier that knows when it does
not know must tell these apart (ANSI N42.34 expects "unidentified" rather than a wrong name). The
same test, applied to the model *without* a nuclide, asks whether that nuclide's own lines stand
out as net peaks: the evidence required before special nuclear material is named.

The statistic is a zero-area "top-hat" filter on the residual r = n - mu in the identifier's
resolution-matched bins (each half a FWHM wide): the sum over 3 bins (1.5 FWHM, ~87 % of a
Gaussian line) minus half the sum over the 3 bins on each side. A zero-area kernel ignores a
residual that is constant or linear across 4.5 FWHM (a continuum misfit), like the second-
difference filters of peak searches (Mariscotti, NIM 50 (1967) 309). Its variance counts Poisson
noise plus a relative model uncertainty f (variance mu + (f mu)^2): a template that is right to
within f never looks like a line, whatever the count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CENTRE = 1  # bins each side of the centre in the line window
_SIDE = 3  # bins in each side band


@dataclass(frozen=True, slots=True)
class ResidualLine:
    energy_kev: float
    z: float  # significance of the unexplained excess (filter output / its sigma)
    net_counts: float  # excess counts in the 3-bin window above the side bands


def line_statistic(counts: np.ndarray, mu: np.ndarray, rel_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Filter output (net excess counts) and its z per bin; bins too near the edges get z = 0."""
    n = np.asarray(counts, dtype=float)
    m = np.maximum(np.asarray(mu, dtype=float), 1e-9)
    r = n - m
    var = m + (rel_sigma * m) ** 2
    k = np.concatenate([np.full(_SIDE, -0.5 * (2 * _CENTRE + 1) / _SIDE),
                        np.ones(2 * _CENTRE + 1), np.full(_SIDE, -0.5 * (2 * _CENTRE + 1) / _SIDE)])
    s = np.correlate(r, k, mode="same")
    v = np.correlate(var, k * k, mode="same")
    z = s / np.sqrt(np.maximum(v, 1e-12))
    half = _CENTRE + _SIDE
    z[:half] = 0.0
    z[-half:] = 0.0
    return s, z


def strongest_unexplained(counts: np.ndarray, mu: np.ndarray, centers_kev: np.ndarray,
                          rel_sigma: float) -> ResidualLine:
    """The most significant unexplained line-like excess of the spectrum."""
    s, z = line_statistic(counts, mu, rel_sigma)
    i = int(np.argmax(z))
    return ResidualLine(float(centers_kev[i]), float(z[i]), float(s[i]))


def line_z_at(counts: np.ndarray, mu: np.ndarray, centers_kev: np.ndarray, rel_sigma: float,
              energies_kev: np.ndarray) -> np.ndarray:
    """Best z within +-1 bin of each energy (a line centred on a bin edge straddles two bins)."""
    _, z = line_statistic(counts, mu, rel_sigma)
    idx = np.clip(np.searchsorted(centers_kev, np.asarray(energies_kev, dtype=float)), 0, z.size - 1)
    out = np.empty(idx.size)
    for j, i in enumerate(idx):
        out[j] = z[max(i - 1, 0): i + 2].max()
    return out
