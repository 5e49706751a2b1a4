"""Mobile search with the spectral pipeline: anomaly detection, identification and dose per pass.

Why this replaces the gross-count alarm on vehicles: the gross count swings by tens of percent
with the ground under the vehicle, so a gross threshold low enough to see a shielded source alarms
on every granite kerb; the spectral detector (agent.spectral.anomaly: NMF background subspace plus
source templates, explicit false-alarm rate) only alarms on counts natural background cannot
explain, and identification names what it saw.

On start the unit learns its own background: the first ``training_s`` seconds of spectra train the
NMF basis (as a real unit does after power-up on a known-clean route).  Until then the gross-count
detector, which needs only a minute of background, stands in, so a unit is never blind.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import numpy as np

from agent.analysis.episode import EpisodeTracker, Interval, track_peak
from agent.hal.interfaces import SpectrumReading
from agent.spectral.anomaly import AnomalyDetector, detector_from_background
from agent.spectral.identify import NORM_SOURCES, IdentificationResult
from agent.spectral.pipeline import SpectrumAnalysis, SpectrumPipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpectralAlarm:
    alarm_id: str
    statistic: float  # max likelihood-ratio statistic q over the episode
    significance_sigma: float  # sqrt(q): the signed-root equivalent for one extra parameter
    peak_cps: float
    background_cps: float
    t_peak_mono_s: float
    t_peak_utc: str
    x_m: float | None
    y_m: float | None
    z_m: float | None
    threshold: float
    false_alarm_rate_per_h: float
    identification: IdentificationResult
    dose_rate_usv_h: float | None  # peak spectral H*(10) during the pass
    n_intervals: int


class SpectralSearch:
    """Feed 1 s spectra with their track positions; returns a SpectralAlarm at the end of a pass."""

    def __init__(self, far_per_hour: float = 0.125, training_s: float = 120.0, holdoff_s: float = 10.0,
                 interval_s: float = 1.0) -> None:
        self.far_per_hour = far_per_hour
        self.training_s = training_s
        self.interval_s = interval_s
        self.pipeline = SpectrumPipeline()
        self.detector: AnomalyDetector | None = None
        self._training: list[np.ndarray] = []
        self._training_live_s = 0.0
        self.episodes = EpisodeTracker(quiet_intervals=2, max_duration_s=60.0, holdoff_s=holdoff_s)
        self._recent: list[tuple[Interval, SpectrumReading]] = []
        self.last: SpectrumAnalysis | None = None

    @property
    def trained(self) -> bool:
        return self.detector is not None

    def _train(self, reading: SpectrumReading) -> None:
        self._training.append(np.asarray(reading.counts, dtype=float))
        self._training_live_s += reading.live_time_s
        if self._training_live_s < self.training_s:
            return
        spectra = np.array(self._training)
        self.detector = detector_from_background(reading.detector_model, reading.calibration, spectra,
                                                 far_per_hour=self.far_per_hour)
        self.pipeline.anomaly = self.detector
        self._training = []
        log.info("spectral anomaly detector trained on %.0f s of background (FAR %.3f/h)",
                 self._training_live_s, self.far_per_hour)

    def update(self, reading: SpectrumReading, iv: Interval,
               suspect: bool = False) -> tuple[SpectrumAnalysis, SpectralAlarm | None]:
        """``suspect``: another detector sees an excess now; such spectra never train the background."""
        analysis = self.pipeline.analyze(reading)
        self.last = analysis
        if self.detector is None:
            if not suspect:
                self._train(reading)
            return analysis, None
        an = analysis.anomaly
        assert an is not None
        lead = self._recent[-(an.window_s - 1):] if an.window_s > 1 else []
        ep = self.episodes.update(iv, an.alarm, an.statistic, reading, lead_in=lead)
        self._recent = [*self._recent[-8:], (iv, reading)]
        if ep is None:
            return analysis, None
        return analysis, self._alarm(ep)

    def flush(self) -> SpectralAlarm | None:
        ep = self.episodes.flush()
        return self._alarm(ep) if ep is not None else None

    def _alarm(self, ep) -> SpectralAlarm:  # noqa: ANN001 - agent.analysis.episode.Episode
        peak = track_peak(ep.intervals, self.interval_s)
        readings: list[SpectrumReading] = ep.payload
        # Identify what the pass added: the summed spectrum of the intervals around the peak,
        # against the unit's learnt background (NORM is part of it, so it is not reported).
        counts = np.sum([r.counts for r in readings], axis=0)
        live = float(sum(r.live_time_s for r in readings))
        ident = self.pipeline.identify_sum(counts, live, readings[-1])
        bg = self.pipeline.background_cps(readings[-1])
        bg_cps = float(np.sum(bg)) if bg is not None else 0.0
        doses = [self.pipeline.dose_rate_usv_h(r) for r in readings]
        doses = [d for d in doses if d is not None]
        thr = float(np.max(self.detector.threshold)) if self.detector is not None else float("nan")
        return SpectralAlarm(
            alarm_id=uuid.uuid4().hex[:16], statistic=round(float(ep.max_score), 2),
            significance_sigma=round(float(np.sqrt(max(ep.max_score, 0.0))), 2), peak_cps=peak.peak_cps,
            background_cps=bg_cps, t_peak_mono_s=peak.t_mono_s, t_peak_utc=peak.t_utc,
            x_m=peak.x_m, y_m=peak.y_m, z_m=peak.z_m, threshold=thr, false_alarm_rate_per_h=self.far_per_hour,
            identification=ident, dose_rate_usv_h=max(doses) if doses else None, n_intervals=len(readings),
        )


def man_made(ident: IdentificationResult) -> list[tuple[str, float]]:
    """Identified sources that are not natural background, with confidence."""
    return [(n.name, n.confidence) for n in ident.nuclides if n.name not in NORM_SOURCES]
