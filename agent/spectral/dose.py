"""Ambient dose equivalent rate H*(10) from a spectrum: the spectrum-to-dose G(E) function.

Why G(E): a scintillator's count rate is not proportional to dose (its efficiency falls with
energy while the dose per photon rises), but a weighting of each channel by a function of energy
makes it so: ``H = sum_ch cps_ch * G(E_ch)``. G is found once per detector model by requiring the
weighted response to monoenergetic photons to equal the ICRP 74 fluence-to-H*(10) coefficient at
every energy (Moriuchi & Miyanaga, Health Phys. 12 (1966) 541, the "G(E) function" method; Tsuda &
Saito (2017) derive such spectrum-dose operators for NaI(Tl) and CsI(Tl) survey instruments).
The fit (``cedge/spectral_tools/fit_dose_weighting.py``) writes ``data/dose_weighting.csv``: G(E) = sum_k a_k x^k with
x = ln(E / 1000 keV), valid between e_min (above the discriminator) and e_max.

A real unit's G(E) is fitted to measured sensitivities (cps per uSv/h of check sources of known dose
rate, :mod:`agent.spectral.dose_fit`): the "NaI generic (RASE)" row of the CSV
(``cedge/spectral_tools/fit_dose_rase.py``) and the ``dose_weighting`` of preset files written by
``cedge spectrum fit-detector --dose-rate``; :func:`dose_weighting` prefers those.

Photons below the discriminator (e.g. the 14-21 keV Np L x-rays of Am-241) are not seen and not
counted; above ~30 keV H*(10) is reproduced to within a few per cent.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.detector import DetectorModel
from agent.spectral.library import LibraryError, read_data_csv


@dataclass(frozen=True, eq=False)
class DoseWeighting:
    model: str
    coefficients: np.ndarray  # a_k of G = sum a_k x^k, x = ln(E/1000 keV); G in (uSv/h) per (count/s)
    e_min_kev: float
    e_max_kev: float

    def g(self, energy_kev: np.ndarray) -> np.ndarray:
        e = np.asarray(energy_kev, dtype=float)
        x = np.log(np.clip(e, self.e_min_kev, self.e_max_kev) / 1000.0)
        val = np.polynomial.polynomial.polyval(x, self.coefficients)
        return np.where((e >= self.e_min_kev) & (e <= self.e_max_kev * 1.05), np.maximum(val, 0.0), 0.0)

    def channel_weights(self, calibration: EnergyCalibration, n_channels: int) -> np.ndarray:
        return _channel_weights(self, calibration, n_channels)

    def dose_rate_usv_h(
        self, counts: np.ndarray, live_time_s: float, calibration: EnergyCalibration
    ) -> tuple[float, float]:
        """(H*(10) rate in uSv/h, its 1-sigma counting uncertainty)."""
        if live_time_s <= 0:
            raise ValueError(f"live time must be > 0 s, got {live_time_s}")
        c = np.asarray(counts, dtype=float)
        w = self.channel_weights(calibration, c.size)
        h = float(c @ w) / live_time_s
        sd = float(np.sqrt(c @ (w * w))) / live_time_s
        return h, sd


@functools.lru_cache(maxsize=32)
def _channel_weights(weighting: DoseWeighting, calibration: EnergyCalibration, n_channels: int) -> np.ndarray:
    return weighting.g(calibration.energy_kev(np.arange(n_channels, dtype=float)))


@functools.cache
def dose_weightings() -> dict[str, DoseWeighting]:
    try:
        rows = read_data_csv("dose_weighting.csv")
    except LibraryError:
        return {}
    out = {}
    for r in rows:
        keys = sorted((k for k in r if k.startswith("a") and k[1:].isdigit()), key=lambda k: int(k[1:]))
        coef = np.asarray([float(r[k]) for k in keys])
        out[r["detector"]] = DoseWeighting(r["detector"], coef, float(r["e_min_keV"]), float(r["e_max_keV"]))
    return out


@functools.lru_cache(maxsize=32)
def preset_dose_weighting(name: str, coefficients: tuple[float, ...], e_min_kev: float,
                          e_max_kev: float) -> DoseWeighting:
    """One object per distinct G(E) of a preset file (so the channel-weight cache keeps working)."""
    return DoseWeighting(name, np.asarray(coefficients, dtype=float), e_min_kev, e_max_kev)


def dose_weighting(model: DetectorModel) -> DoseWeighting:
    """The G(E) of ``model``, first found of: the preset's own ``dose_weighting`` (a user file from
    ``cedge spectrum fit-detector --dose-rate``), a dose_weighting.csv row with the model's name (a
    physics model, or a preset fitted to measured sensitivities), the preset's base crystal's row (the
    preset corrections change the peak shapes more than the counts-per-dose); else an error naming the
    fitted models."""
    from agent.spectral.presets import presets

    table = dose_weightings()
    preset = presets().get(model.name)
    if preset is not None and preset.dose_weighting:
        g = preset.dose_weighting
        return preset_dose_weighting(model.name, tuple(float(x) for x in g["coefficients"]),
                                     float(g["e_min_keV"]), float(g["e_max_keV"]))
    if model.name in table:
        return table[model.name]
    if preset is not None and preset.base in table:
        return table[preset.base]
    raise LibraryError(f"no fitted G(E) dose weighting for detector {model.name!r} (have: {', '.join(table)})")
