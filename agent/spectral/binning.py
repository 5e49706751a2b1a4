"""Resolution-matched analysis bins: groups of whole channels about half an FWHM wide.

Why: a 1024-channel scintillator spectrum over-samples its own resolution (a NaI peak at 1 MeV is
~20 channels wide), so the likelihood fits of identification and anomaly detection work on ~100-150
bins of width ~FWHM(E)/2 instead. This loses no spectral information (the bins still resolve
every peak the detector can resolve), speeds the fits ~8x and makes 1 s spectra less sparse.
Bins are *whole channels*, so a bin's content is a sum of Poisson counts and stays exactly Poisson
(fractional re-binning would not be). The same grouping is applied to templates via the bins'
energy edges, which come from the (gain-tracked) calibration.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.detector import DetectorModel


@dataclass(frozen=True, eq=False)
class AnalysisBins:
    """Channel groups ``[channel_edges[i], channel_edges[i+1])`` and their energy edges (keV)."""

    channel_edges: np.ndarray  # int64, increasing, len n_bins + 1
    energy_edges_kev: np.ndarray  # float, len n_bins + 1
    n_channels: int

    @property
    def n_bins(self) -> int:
        return int(self.channel_edges.size - 1)

    @property
    def centers_kev(self) -> np.ndarray:
        return 0.5 * (self.energy_edges_kev[1:] + self.energy_edges_kev[:-1])

    @property
    def widths_kev(self) -> np.ndarray:
        return np.diff(self.energy_edges_kev)

    def rebin(self, counts: np.ndarray) -> np.ndarray:
        """Sum channels into bins; accepts (n_channels,) or (n_spectra, n_channels)."""
        c = np.asarray(counts)
        if c.shape[-1] != self.n_channels:
            raise ValueError(f"expected {self.n_channels} channels, got {c.shape[-1]}")
        part = c[..., : self.channel_edges[-1]]
        return np.add.reduceat(part, self.channel_edges[:-1], axis=-1)


def make_bins(
    calibration: EnergyCalibration,
    model: DetectorModel,
    n_channels: int,
    min_energy_kev: float,
    max_energy_kev: float,
    fwhm_fraction: float = 0.5,
) -> AnalysisBins:
    """Bins from ``min_energy_kev`` to ``max_energy_kev`` (clipped to the spectrum), ~``fwhm_fraction`` FWHM wide."""
    ch_edges_all = np.arange(n_channels + 1, dtype=float) - 0.5
    e_edges_all = calibration.energy_kev(ch_edges_all)
    if np.any(np.diff(e_edges_all) <= 0):
        raise ValueError(f"calibration {calibration.coefficients_kev} is not increasing over {n_channels} channels")
    lo = max(min_energy_kev, e_edges_all[0])
    hi = min(max_energy_kev, e_edges_all[-1])
    if hi <= lo:
        raise ValueError(f"energy range {min_energy_kev}-{max_energy_kev} keV is outside the spectrum")
    wanted = [lo]
    while wanted[-1] < hi:
        wanted.append(wanted[-1] + fwhm_fraction * float(model.fwhm_kev(wanted[-1])))
    idx = np.searchsorted(e_edges_all, np.asarray(wanted))  # first channel edge at or above each energy
    idx = np.unique(np.clip(idx, 0, n_channels))
    if idx.size < 3:
        raise ValueError("fewer than 2 analysis bins: spectrum too short or calibration wrong")
    return AnalysisBins(idx.astype(np.int64), e_edges_all[idx], n_channels)


@functools.lru_cache(maxsize=32)
def bins_for(
    calibration: EnergyCalibration,
    model: DetectorModel,
    n_channels: int,
    min_energy_kev: float,
    max_energy_kev: float,
    fwhm_fraction: float = 0.5,
) -> AnalysisBins:
    return make_bins(calibration, model, n_channels, min_energy_kev, max_energy_kev, fwhm_fraction)
