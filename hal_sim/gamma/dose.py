"""Ambient dose equivalent H*(10) and air kerma from photon fluence (ICRP Publication 74).

Conversion coefficients h*(10)/Phi and K_air/Phi from ICRP 74 (1996) tables A.21 and A.1, in
``data/icrp74_photon_conversion.csv``, interpolated log-log as ICRP recommends. Below 10 keV the
coefficient is extrapolated log-log (such photons barely reach a detector through air anyway).

For a point source behind shields the true H*(10) is
    H = A / (4 pi r^2) * sum_lines y_l T_l [h(E_l) + scattered part],
with the scattered photons' spectrum from :mod:`hal_sim.gamma.transport` (normalised to the GP
build-up factor), i.e. the uncollided-plus-build-up point-kernel estimate.
"""

from __future__ import annotations

import functools

import numpy as np

from hal_sim.gamma._data import read_table

PSV_PER_S_TO_USV_PER_H = 3600.0 * 1e-6


@functools.cache
def _tab() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = read_table("icrp74_photon_conversion.csv")
    e = np.array([float(r["energy_keV"]) for r in rows])
    h = np.array([float(r["hstar10_per_fluence_pSv_cm2"]) for r in rows])
    k = np.array([float(r["air_kerma_per_fluence_pGy_cm2"]) for r in rows])
    return np.log(e), np.log(h), np.log(k)


def _loglog(energy_kev: np.ndarray, ly: np.ndarray) -> np.ndarray:
    le, _, _ = _tab()
    x = np.log(np.maximum(np.asarray(energy_kev, dtype=float), 1.0))
    y = np.interp(x, le, ly)
    lo = x < le[0]
    if np.any(lo):
        slope = (ly[1] - ly[0]) / (le[1] - le[0])
        y = np.where(lo, ly[0] + slope * (x - le[0]), y)
    return np.exp(y)


def hstar10_per_fluence_psv_cm2(energy_kev: np.ndarray | float) -> np.ndarray:
    return _loglog(np.asarray(energy_kev, dtype=float), _tab()[1])


def air_kerma_per_fluence_pgy_cm2(energy_kev: np.ndarray | float) -> np.ndarray:
    return _loglog(np.asarray(energy_kev, dtype=float), _tab()[2])
