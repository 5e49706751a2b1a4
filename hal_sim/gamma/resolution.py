"""Energy resolution (peak FWHM versus energy) of the simulated detectors.

The functional form is GADRAS's, as implemented in Sandia InterSpec
(``DetectorPeakResponse::peakResolutionFWHM``, kGadrasResolutionFcn) with parameters (a, b, c) from
``data/detector_resolution.csv`` (InterSpec's generic GADRAS detectors):

* E >= 661 keV or a == 0:  FWHM = 6.61 * b * (E/661)^c         (b = FWHM in % at 661 keV)
* a < 0 (below 661 keV):   FWHM = 6.61 * b * (E/661)^p,  p = c^(1/ln(1-a))
* a > 0 (below 661 keV):   FWHM = sqrt(a^2 + (6.61 * b' * (E/661)^c)^2),
                           b' = sqrt((6.61 b)^2 - a^2) / 6.61  (so FWHM(661) is still 6.61 b)

The RadiaCode-class 1 cm3 CsI row gives only b (9.1 %); there the power is taken as c = 0.5,
the photo-electron-statistics limit (Knoll 4th ed. sec. 10.III.B), which the test against the real
RadiaCode-102 Am-241 spectrum checks at 59.5 keV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hal_sim.gamma._data import read_table


@dataclass(frozen=True)
class GadResolution:
    offset_a_kev: float
    fwhm_pct_661: float
    power_c: float

    def fwhm_kev(self, energy_kev: np.ndarray | float) -> np.ndarray:
        e = np.maximum(np.asarray(energy_kev, dtype=float), 1.0)
        a, b, c = self.offset_a_kev, self.fwhm_pct_661, self.power_c
        high = 6.61 * b * (e / 661.0) ** c
        if abs(a) < 1e-6:
            return high
        if a < 0:
            p = c ** (1.0 / np.log(1.0 - a))
            low = 6.61 * b * (e / 661.0) ** p
        elif a > 6.61 * b:
            low = np.full_like(e, a)
        else:
            b7 = np.sqrt((6.61 * b) ** 2 - a * a) / 6.61
            low = np.sqrt(a * a + (6.61 * b7 * (e / 661.0) ** c) ** 2)
        return np.where(e >= 661.0, high, low)

    def sigma_kev(self, energy_kev: np.ndarray | float) -> np.ndarray:
        return self.fwhm_kev(energy_kev) / 2.3548200450309493


def resolution_table() -> dict[str, GadResolution]:
    """Resolution parameters per detector name in detector_resolution.csv."""
    out = {}
    for r in read_table("detector_resolution.csv"):
        a = float(r["offset_a_keV"]) if r["offset_a_keV"] else 0.0
        c = float(r["power_c"]) if r["power_c"] else 0.5
        out[r["detector"]] = GadResolution(a, float(r["fwhm_pct_at_661keV"]), c)
    return out
