"""One call per spectrum: gain tracking, identification, dose rate, peaks, background upkeep.

Why a stateful pipeline: the quality of every result depends on two slowly changing things the
unit must learn from its own data — the current gain (temperature) and the current background.
``SpectrumPipeline.analyze`` uses both and, when a spectrum shows nothing but background, feeds it
back into them (exponentially weighted, time constant ``background_tau_s``), so a unit that has been
on for a few minutes identifies against its own background and calibration. Spectra with an
identified source are kept out of both, so a source cannot teach the unit that it is background.

The per-spectrum cost (1024 channels, 1 s) is dominated by the identifier's fits; caches keep the
calibration-dependent set-up (analysis bins, binned templates, dose weights, peak kernels) out of
the hot path.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

from agent.hal.interfaces import EnergyCalibration, SpectrumReading
from agent.spectral.anomaly import AnomalyDetector, AnomalyResult
from agent.spectral.calibration import GainTracker
from agent.spectral.detector import DetectorModel, detector_model
from agent.spectral.dose import DoseWeighting, dose_weighting
from agent.spectral.identify import IdentificationResult, Identifier, IdentifierSettings
from agent.spectral.library import LibraryError
from agent.spectral.peaks import Peak, peak_search_for
from agent.spectral_files.model import AlarmResult, AnalysisRecord, NuclideResult


@dataclass(frozen=True, slots=True)
class SpectrumAnalysis:
    detector_model: str
    live_time_s: float
    gross_cps: float
    dose_rate_usv_h: float | None  # H*(10) from the spectrum (G(E)); None if the model has no G(E)
    dose_rate_sigma_usv_h: float | None
    background_dose_rate_usv_h: float | None  # same weighting applied to the background estimate
    identification: IdentificationResult
    peaks: tuple[Peak, ...]
    gain: float  # tracked gain relative to the reading's calibration
    calibration: EnergyCalibration  # calibration the analysis used
    background_live_s: float  # live time behind the background estimate (0: none, NORM modelled)
    elapsed_ms: float
    anomaly: AnomalyResult | None = None  # moving-detector anomaly statistic, when the pipeline has one

    @property
    def nuclides(self) -> list[str]:
        return self.identification.names()

    @property
    def net_dose_rate_usv_h(self) -> float | None:
        if self.dose_rate_usv_h is None:
            return None
        return self.dose_rate_usv_h - (self.background_dose_rate_usv_h or 0.0)

    def to_dict(self) -> dict:
        return {
            "detector_model": self.detector_model,
            "live_time_s": self.live_time_s,
            "gross_cps": self.gross_cps,
            "dose_rate_usv_h": self.dose_rate_usv_h,
            "dose_rate_sigma_usv_h": self.dose_rate_sigma_usv_h,
            "background_dose_rate_usv_h": self.background_dose_rate_usv_h,
            "background_only": self.identification.background_only,
            "unknown": self.identification.unknown,  # "unknown / unidentified lines"
            "unidentified_kev": list(self.identification.unidentified_kev),
            "snm_rejected": list(self.identification.snm_rejected),
            "nuclides": [
                {
                    "name": n.name,
                    "label": n.label,
                    "category": n.category,
                    "confidence": round(n.confidence, 4),
                    "net_counts": round(n.counts, 1),
                    "shielding": n.shielding,
                    "significance_sigma": round(n.significance, 2),
                }
                for n in self.identification.nuclides
            ],
            "reduced_chi2": round(self.identification.reduced_chi2, 3),
            "peaks_kev": [round(p.energy_kev, 1) for p in self.peaks],
            "gain": self.gain,
            "background_live_s": self.background_live_s,
            "anomaly": None if self.anomaly is None else {
                "alarm": self.anomaly.alarm, "statistic": round(self.anomaly.statistic, 2),
                "window_s": self.anomaly.window_s, "gross_z": round(self.anomaly.gross_z, 2),
                "gross_alarm": self.anomaly.gross_alarm,
            },
        }


def to_analysis_record(analysis: SpectrumAnalysis, t_utc=None) -> AnalysisRecord:
    """N42 AnalysisResults content for a pipeline result (nuclides, isotope alarms, dose)."""
    ident = analysis.identification
    nuclides = tuple(
        NuclideResult(n.label if n.label != n.name else n.name, round(100 * n.confidence, 2), n.category)
        for n in ident.nuclides
    )
    alarms = tuple(AlarmResult("Isotope", f"{n.label} ({n.category})", t_utc) for n in ident.nuclides)
    return AnalysisRecord(
        start_utc=t_utc,
        description="background only" if ident.background_only else ", ".join(n.label for n in ident.nuclides),
        nuclides=nuclides,
        alarms=alarms,
        dose_rate_usv_h=analysis.dose_rate_usv_h,
        dose_rate_uncertainty_usv_h=analysis.dose_rate_sigma_usv_h,
        background_dose_rate_usv_h=analysis.background_dose_rate_usv_h,
        reduced_chi_square=ident.reduced_chi2,
    )


class _Background:
    """Exponentially weighted background counts and live time (counts / live = cps per channel)."""

    def __init__(self, n_channels: int, tau_s: float) -> None:
        self.counts = np.zeros(n_channels)
        self.live_s = 0.0
        self.tau_s = tau_s

    def add(self, counts: np.ndarray, live_s: float) -> None:
        decay = float(np.exp(-live_s / self.tau_s))
        self.counts = self.counts * decay + counts
        self.live_s = self.live_s * decay + live_s

    def set(self, counts: np.ndarray, live_s: float) -> None:
        self.counts = np.asarray(counts, dtype=float).copy()
        self.live_s = float(live_s)

    def cps(self) -> np.ndarray:
        return self.counts / self.live_s


class SpectrumPipeline:
    """Stateful analysis of one detector's spectra (see module docstring)."""

    def __init__(
        self,
        settings: IdentifierSettings | None = None,
        background_tau_s: float = 600.0,
        min_background_s: float = 60.0,
        gain_accumulate_s: float = 300.0,
        find_peaks: bool | str = "auto",
        peak_min_snr: float = 5.0,
        anomaly: AnomalyDetector | None = None,
        library_exclude: tuple[str, ...] = (),
        learn: bool = True,
    ) -> None:
        self.settings = settings or IdentifierSettings()
        self.library_exclude = tuple(library_exclude)  # sources treated as absent from the library
        self.learn = learn  # False: spectra never update background or gain (benchmarks, re-analysis)
        self.background_tau_s = background_tau_s
        self.min_background_s = min_background_s
        self.gain_accumulate_s = gain_accumulate_s
        self.find_peaks = find_peaks
        self.peak_min_snr = peak_min_snr
        self.anomaly = anomaly
        self._key: tuple | None = None
        self._tracker: GainTracker | None = None
        self._background: _Background | None = None

    def _state_for(self, reading: SpectrumReading, model: DetectorModel) -> None:
        key = (model.name, reading.calibration, reading.n_channels)
        if key != self._key:
            self._key = key
            self._tracker = GainTracker(reading.calibration, model, reading.n_channels, self.gain_accumulate_s)
            self._background = _Background(reading.n_channels, self.background_tau_s)

    def set_background(self, background: SpectrumReading) -> None:
        """Replace the background estimate by a measured background (and re-measure the gain on it)."""
        model = detector_model(background.detector_model)
        self._state_for(background, model)
        assert self._background is not None and self._tracker is not None
        self._background.set(background.counts, background.live_time_s)
        if background.live_time_s >= 30.0:
            self._tracker._sum[:] = np.asarray(background.counts, dtype=float)
            self._tracker._live_s = background.live_time_s
            self._tracker.calibrate_now()

    def background_cps(self, reading: SpectrumReading) -> np.ndarray | None:
        """The learnt background (counts/s per channel) for ``reading``'s detector, once long enough."""
        self._state_for(reading, detector_model(reading.detector_model))
        bkg = self._background
        return bkg.cps() if bkg is not None and bkg.live_s >= self.min_background_s else None

    def identify_sum(self, counts: np.ndarray, live_time_s: float, like: SpectrumReading) -> IdentificationResult:
        """Identify a summed spectrum (an alarm episode, a handheld dwell) against the learnt
        background and tracked gain, without feeding it back into either."""
        model = detector_model(like.detector_model)
        self._state_for(like, model)
        assert self._tracker is not None
        ident = _identifier(model, self._tracker.calibration, like.n_channels, self.settings)
        return ident.identify(np.asarray(counts), live_time_s, self.background_cps(like))

    def dose_rate_usv_h(self, reading: SpectrumReading) -> float | None:
        """H*(10) rate from one spectrum (G(E) weighting at the tracked gain), no state change."""
        model = detector_model(reading.detector_model)
        weighting = _weighting(model)
        if weighting is None:
            return None
        self._state_for(reading, model)
        assert self._tracker is not None
        dose, _ = weighting.dose_rate_usv_h(np.asarray(reading.counts), reading.live_time_s,
                                            self._tracker.calibration)
        return float(dose)

    def analyze(self, reading: SpectrumReading, background: SpectrumReading | None = None) -> SpectrumAnalysis:
        """Analyse one spectrum (``background``: a measured background to use from now on)."""
        t0 = time.perf_counter()
        counts = np.asarray(reading.counts)
        if counts.ndim != 1 or counts.size < 16:
            raise ValueError(f"spectrum must be 1-D with >= 16 channels, got shape {counts.shape}")
        if not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise ValueError("spectrum counts must be finite and >= 0")
        if reading.live_time_s <= 0:
            raise ValueError(f"live time must be > 0 s, got {reading.live_time_s}")
        model = detector_model(reading.detector_model)
        if background is not None:
            if background.n_channels != reading.n_channels:
                raise ValueError(
                    f"background has {background.n_channels} channels, spectrum {reading.n_channels}"
                )
            self.set_background(background)
        self._state_for(reading, model)
        tracker, bkg = self._tracker, self._background
        assert tracker is not None and bkg is not None
        calibration = tracker.calibration
        ident = _identifier(model, calibration, reading.n_channels, self.settings)
        bg_cps = bkg.cps() if bkg.live_s >= self.min_background_s else None
        result = ident.identify(counts, reading.live_time_s, bg_cps, self.library_exclude)

        dose = dose_sd = dose_bg = None
        weighting = _weighting(model)
        if weighting is not None:
            dose, dose_sd = weighting.dose_rate_usv_h(counts, reading.live_time_s, calibration)
            if bg_cps is not None:
                dose_bg = float(bg_cps @ weighting.channel_weights(calibration, reading.n_channels))
        peaks: tuple[Peak, ...] = ()
        # "auto": peaks are worth their ~0.1 ms when there is something to show, or a long spectrum
        want_peaks = self.find_peaks is True or (
            self.find_peaks == "auto" and (not result.background_only or reading.live_time_s >= 10.0)
        )
        if want_peaks:
            peaks = tuple(peak_search_for(calibration, model, reading.n_channels).find(counts, self.peak_min_snr))

        anomaly = self.anomaly.update(counts) if self.anomaly is not None else None
        if self.learn and result.background_only and not (anomaly is not None and anomaly.alarm):
            bkg.add(counts, reading.live_time_s)
            tracker.update(counts, reading.live_time_s)
        return SpectrumAnalysis(
            detector_model=model.name,
            live_time_s=reading.live_time_s,
            gross_cps=reading.gross_cps,
            dose_rate_usv_h=dose,
            dose_rate_sigma_usv_h=dose_sd,
            background_dose_rate_usv_h=dose_bg,
            identification=result,
            peaks=peaks,
            gain=tracker.gain,
            calibration=calibration,
            background_live_s=bkg.live_s if bg_cps is not None else 0.0,
            elapsed_ms=(time.perf_counter() - t0) * 1e3,
            anomaly=anomaly,
        )


@functools.lru_cache(maxsize=16)
def _identifier(model: DetectorModel, calibration: EnergyCalibration, n_channels: int,
                settings: IdentifierSettings) -> Identifier:
    return Identifier(model, calibration, n_channels, settings=settings)


@functools.cache
def _weighting(model: DetectorModel) -> DoseWeighting | None:
    try:
        return dose_weighting(model)
    except LibraryError:
        return None


def analyze(reading: SpectrumReading, background: SpectrumReading | None = None) -> SpectrumAnalysis:
    """Analyse one spectrum on its own (a fresh pipeline: no learnt background unless given)."""
    return SpectrumPipeline().analyze(reading, background)
