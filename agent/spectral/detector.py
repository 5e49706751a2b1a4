"""Detector models: energy resolution FWHM(E) per model, looked up by the name the HAL reports.

Why a resolution model and not a per-spectrum width fit: 1 s vehicle spectra hold a few hundred
counts, far too few to fit widths; every analysis step (peak search kernels, analysis binning,
templates) takes its widths from the model instead. The functional form is the GADRAS "GAD"
resolution function (Sandia GADRAS / InterSpec ``DetectorPeakResponse::peakResolutionFWHM``), with the
per-model parameters in ``data/detector_resolution.csv``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from agent.spectral.library import LibraryError, read_data_csv

# Names devices and files use for the same detector classes (RadiaCode, Open Gamma Detector, N42 files).
_ALIASES = {
    "radiacode-101": "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)",
    "radiacode-102": "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)",
    "radiacode-103": "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)",
    "radiacode 102": "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)",
    "radiacode": "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)",
    "nai 2x2": "NaI 2x2 in",
    "nai 3x3": "NaI 3x3 in",
    "nai 1x1": "NaI 1x1 in",
    "nai 2x4x16": "NaI 2x4x16 in log",
}

DEFAULT_MODEL = "NaI 2x2 in"


@dataclass(frozen=True, slots=True)
class DetectorModel:
    """Resolution of one detector class; FWHM in keV from the GAD form (a, b, c)."""

    name: str
    offset_a_kev: float
    fwhm_pct_661: float
    power_c: float

    def fwhm_kev(self, energy_kev: np.ndarray | float) -> np.ndarray:
        """GADRAS GAD resolution function (InterSpec DetectorPeakResponse, kGadrasResolutionFcn)."""
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
            b_eff = np.sqrt((6.61 * b) ** 2 - a * a) / 6.61
            low = np.sqrt(a * a + (6.61 * b_eff * (e / 661.0) ** c) ** 2)
        return np.where(e >= 661.0, high, low)

    def sigma_kev(self, energy_kev: np.ndarray | float) -> np.ndarray:
        return self.fwhm_kev(energy_kev) / 2.354820045


@functools.cache
def detector_models() -> dict[str, DetectorModel]:
    models = {}
    for row in read_data_csv("detector_resolution.csv"):
        a = float(row["offset_a_keV"]) if row["offset_a_keV"].strip() else 0.0
        c = float(row["power_c"]) if row["power_c"].strip() else 0.5
        models[row["detector"]] = DetectorModel(row["detector"], a, float(row["fwhm_pct_at_661keV"]), c)
    return models


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().lower())


def detector_model(name: str | None, fallback: str | None = DEFAULT_MODEL) -> DetectorModel:
    """Look a detector model up by exact name, alias or prefix; ``fallback`` for unknown names.

    ``fallback=None`` makes an unknown name an error (used where a wrong guess would mislead).
    """
    models = detector_models()
    if name:
        if name in models:
            return models[name]
        key = _norm(name)
        for model_name in models:
            if _norm(model_name) == key:
                return models[model_name]
        for alias, target in _ALIASES.items():
            if key.startswith(alias):
                return models[target]
    if fallback is None:
        raise LibraryError(f"unknown detector model {name!r} (known: {', '.join(models)})")
    return models[fallback]
