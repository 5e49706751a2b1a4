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

# Names devices and files use for the same detector classes (RadiaCode, Kromek, FLIR identiFINDER,
# portal/vehicle logs, N42 files), matched as prefixes of the lower-cased name, first match wins.
# Presets (data/detector_presets.yaml, user files) add their own aliases ahead of these.
_RC = "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)"
_ALIASES = {
    "radiacode-101": _RC,
    "radiacode-102": _RC,
    "radiacode-103": _RC,
    "radiacode 102": _RC,
    "radiacode": _RC,
    "kromek d3s": "CsI(Tl) small handheld (D3S class)",
    "d3s": "CsI(Tl) small handheld (D3S class)",
    "kromek gr1": "CZT 1 cm3",
    "gr1": "CZT 1 cm3",
    "gr-1": "CZT 1 cm3",
    "czt": "CZT 1 cm3",
    "labr": "LaBr3",
    "hpge": "HPGe 40%",
    "ge coax": "HPGe 40%",
    "nai 2x2": "NaI 2x2 in",
    "nai 3x3": "NaI 3x3 in",
    "nai 1x1": "NaI 1x1 in",
    "nai 2x4x16": "NaI 2x4x16 in log",
    "2x4x16": "NaI 2x4x16 in log",
    "portal": "NaI 2x4x16 in log",
    "rpm": "NaI 2x4x16 in log",
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
    """Physics models (detector_resolution.csv), then presets (built-in, env, loaded user files)."""
    from agent.spectral.presets import presets

    models = {}
    for row in read_data_csv("detector_resolution.csv"):
        a = float(row["offset_a_keV"]) if row["offset_a_keV"].strip() else 0.0
        c = float(row["power_c"]) if row["power_c"].strip() else 0.5
        models[row["detector"]] = DetectorModel(row["detector"], a, float(row["fwhm_pct_at_661keV"]), c)
    for p in presets().values():
        models[p.name] = DetectorModel(p.name, p.offset_a_kev, p.fwhm_pct_661, p.power_c)
    return models


def aliases() -> dict[str, str]:
    """Alias prefix -> model name: preset aliases (user files last loaded win), then the built-in ones."""
    from agent.spectral.presets import presets

    out: dict[str, str] = {}
    for p in reversed(list(presets().values())):
        for a in p.aliases:
            out.setdefault(_norm(a), p.name)
    for a, target in _ALIASES.items():
        out.setdefault(a, target)
    return out


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
        for alias, target in aliases().items():
            if key.startswith(alias) and target in models:
                return models[target]
    if fallback is None:
        raise LibraryError(f"unknown detector model {name!r} (known: {', '.join(models)})")
    return models[fallback]
