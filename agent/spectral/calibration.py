"""Energy calibration fitting and gain-drift tracking from natural background lines.

Why tracking: the light output of NaI(Tl) and the gain of its photomultiplier change by roughly
-0.3 %/degC, so a vehicle detector that warms from 5 to 35 degC over a day moves the 662 keV peak by
~60 keV, more than an FWHM. Identification against a fixed calibration then fails. Every outdoor
spectrum contains K-40 (1460.8 keV), Tl-208 (2614.5 keV, Th-232 chain) and Bi-214 (609.3 keV, U-238
chain), so a few minutes of accumulated background are enough to measure the gain continuously,
the "natural-line (K-40) stabilisation" of field spectrometers (ANSI N42.34 asks for stable
identification over its temperature range without a check source).

Gain model: a photomultiplier/light-yield drift scales pulse height, so a line that the nominal
calibration places at channel c appears at ``g * c``; the corrected calibration is
``E(ch) = E_nominal(ch / g)``, i.e. polynomial coefficients ``c_i / g**i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.detector import DetectorModel
from agent.spectral.library import BI214_KEV, K40_KEV, TL208_KEV
from agent.spectral.peaks import PeakSearch

BACKGROUND_LINES_KEV = (K40_KEV, TL208_KEV, BI214_KEV)


def apply_gain(calibration: EnergyCalibration, gain: float) -> EnergyCalibration:
    """Calibration of a detector whose pulse heights are ``gain`` times the nominal ones."""
    if not np.isfinite(gain) or gain <= 0:
        raise ValueError(f"gain must be a positive number, got {gain}")
    return EnergyCalibration(tuple(float(c) / gain**i for i, c in enumerate(calibration.coefficients_kev)))


def energy_to_channel(calibration: EnergyCalibration, energy_kev: np.ndarray | float, n_channels: int) -> np.ndarray:
    """Fractional channel of an energy (inverse of a monotonic calibration, by interpolation)."""
    ch = np.arange(-1, n_channels + 1, dtype=float)
    e = calibration.energy_kev(ch)
    return np.interp(np.asarray(energy_kev, dtype=float), e, ch, left=np.nan, right=np.nan)


def fit_calibration(
    channels: np.ndarray, energies_kev: np.ndarray, degree: int = 1, weights: np.ndarray | None = None
) -> EnergyCalibration:
    """Least-squares polynomial calibration through (channel, energy) pairs of identified peaks."""
    ch = np.asarray(channels, dtype=float)
    e = np.asarray(energies_kev, dtype=float)
    if ch.shape != e.shape or ch.size < degree + 1:
        raise ValueError(f"need >= {degree + 1} matching channel/energy pairs, got {ch.size} and {e.size}")
    coef = np.polynomial.polynomial.polyfit(ch, e, degree, w=weights)
    return EnergyCalibration(tuple(float(c) for c in coef) + (0.0,) * max(0, 2 - degree))


@dataclass(frozen=True, slots=True)
class GainEstimate:
    gain: float  # observed / expected channel of the background lines
    uncertainty: float  # 1-sigma of the gain
    lines_kev: tuple[float, ...]  # lines that contributed
    snr: tuple[float, ...]


def estimate_gain(
    counts: np.ndarray,
    calibration: EnergyCalibration,
    model: DetectorModel,
    lines_kev: tuple[float, ...] = BACKGROUND_LINES_KEV,
    max_step: float = 0.08,
    min_snr: float = 5.0,
) -> GainEstimate | None:
    """Gain of ``counts`` relative to ``calibration`` from the background lines, or None if too weak.

    A comb search first: the gain that maximises the summed filter SNR at all lines' expected
    channels together (one line alone could lock onto a neighbour, e.g. Bi-214 1764 keV next to K-40
    under a large drift). Then each line's centroid refines it; the result is the SNR^2-weighted mean.
    """
    c = np.asarray(counts, dtype=float)
    n = c.size
    search = PeakSearch(calibration, model, n)
    resp, snr = search.filter(c)
    expected = energy_to_channel(calibration, np.asarray(lines_kev), n)
    ok = np.isfinite(expected) & (expected * (1 + max_step) < n - 5) & (expected * (1 - max_step) > 5)
    if not np.any(ok):
        return None
    exp_ok = expected[ok]
    lines_ok = np.asarray(lines_kev)[ok]
    gains = np.arange(1 - max_step, 1 + max_step + 1e-9, 0.001)
    grid_ch = np.arange(n, dtype=float)
    pos = np.clip(snr, 0.0, None)
    score = np.zeros_like(gains)
    for e_ch in exp_ok:
        score += np.interp(gains * e_ch, grid_ch, pos)
    g0 = float(gains[int(np.argmax(score))])
    est_g, est_w, used, used_snr = [], [], [], []
    for e_ch, e_kev in zip(exp_ok, lines_ok, strict=True):
        sigma = float(np.interp(g0 * e_ch, grid_ch, search.sigma_ch))
        lo = int(max(1, np.floor(g0 * e_ch - sigma)))
        hi = int(min(n - 2, np.ceil(g0 * e_ch + sigma)))
        if hi <= lo:
            continue
        i = lo + int(np.argmax(snr[lo : hi + 1]))
        if snr[i] < min_snr:
            continue
        y0, y1, y2 = resp[i - 1], resp[i], resp[i + 1]
        denom = y0 - 2 * y1 + y2
        shift = float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5)) if denom < 0 else 0.0
        g_line = (i + shift) / e_ch
        # centroid precision ~ sigma / SNR (counting statistics of a Gaussian peak)
        sd = max(sigma / snr[i], 0.05) / e_ch
        est_g.append(g_line)
        est_w.append(1.0 / sd**2)
        used.append(float(e_kev))
        used_snr.append(float(snr[i]))
    if not est_g:
        return None
    w = np.asarray(est_w)
    g = float(np.sum(w * np.asarray(est_g)) / w.sum())
    return GainEstimate(g, float(1.0 / np.sqrt(w.sum())), tuple(used), tuple(used_snr))


GAIN_QUANTUM = 0.001


class GainTracker:
    """Keeps a detector's calibration current by re-measuring the gain on accumulated background.

    Feed it every spectrum that is *not* in alarm (sources near the detector would bias it); once
    ``accumulate_s`` of live time are summed it estimates the gain relative to the calibration in
    use and folds it in. ``calibration`` is what analysis should use.
    """

    def __init__(
        self,
        nominal: EnergyCalibration,
        model: DetectorModel,
        n_channels: int,
        accumulate_s: float = 300.0,
        max_step: float = 0.08,
        min_snr: float = 5.0,
    ) -> None:
        self.nominal = nominal
        self.model = model
        self.n_channels = n_channels
        self.accumulate_s = accumulate_s
        self.max_step = max_step
        self.min_snr = min_snr
        self.gain = 1.0
        self.calibration = nominal
        self.last_estimate: GainEstimate | None = None
        self._sum = np.zeros(n_channels)
        self._live_s = 0.0

    def reset(self, nominal: EnergyCalibration | None = None) -> None:
        if nominal is not None:
            self.nominal = nominal
        self.gain = 1.0
        self.calibration = self.nominal
        self._sum[:] = 0
        self._live_s = 0.0

    def update(self, counts: np.ndarray, live_time_s: float) -> GainEstimate | None:
        """Add a background spectrum; returns a new estimate when one was made."""
        c = np.asarray(counts)
        if c.shape != (self.n_channels,):
            raise ValueError(f"expected {self.n_channels} channels, got shape {c.shape}")
        self._sum += c
        self._live_s += live_time_s
        if self._live_s < self.accumulate_s:
            return None
        est = self.calibrate_now()
        return est

    def calibrate_now(self) -> GainEstimate | None:
        """Estimate from what has been accumulated so far and start a new accumulation."""
        est = estimate_gain(self._sum, self.calibration, self.model, max_step=self.max_step, min_snr=self.min_snr)
        self._sum[:] = 0
        self._live_s = 0.0
        if est is None:
            return None
        # kept on a 0.1 % grid: finer than any estimate can tell (its 1-sigma is 0.2-0.5 %, a NaI FWHM
        # 7 %), and analysis set-ups cached per calibration (bins, binned templates: ~0.3 s) are reused
        self.gain = round(self.gain * est.gain / GAIN_QUANTUM) * GAIN_QUANTUM
        self.calibration = apply_gain(self.nominal, self.gain)
        self.last_estimate = est
        return est
