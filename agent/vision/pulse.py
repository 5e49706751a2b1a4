"""Pulse signal -> heart rate, inter-beat intervals and a signal-quality index.

* **Heart rate**: the pulse's fundamental is the spectral peak of a Hann-windowed, zero-padded
  periodogram whose fundamental + first-harmonic template holds the most power
  (:func:`fundamental_hz`: a real pulse often shows its harmonic above its fundamental), refined
  by Gaussian (log-parabolic) interpolation of the three bins around the maximum -- exact for a
  Gaussian main lobe, well under 0.1 bpm bias for a Hann window (Gasior & Gonzalez, "Improving FFT
  frequency measurement resolution by parabolic and Gaussian interpolation", CERN
  AB-Note-2004-021, 2004).  The reported rate comes from the beat train and a Tukey-windowed
  spectral peak (:func:`estimate_pulse` says how and why).
* **Signal quality** is the spectral SNR of de Haan & Jeanne 2013 (IEEE TBME 60(10):2878, Eq. 11):
  power inside a template around the fundamental *and its first harmonic* over the power in the
  rest of the pulse band (0.7-4 Hz), in dB -- the harmonic counts as signal.  The public toolboxes
  use +-0.1 Hz around the fundamental and +-0.2 Hz around the harmonic (iphys-toolbox ``bvpsnr.m``,
  McDuff & Blackford 2019); here +-0.2 / +-0.3 Hz (:data:`SNR_HALF_WIDTH_HZ`) because heart-rate
  variability within a 20 s window widens the peaks.  The template is centred on the *estimated*
  rate (no reference exists on the box), which biases noise upwards; the decision threshold
  (:data:`SNR_THRESHOLD_ANCHORS_DB`) was therefore set on negative controls (printed photo, mask)
  of a tuning seed set disjoint from the benchmark seeds (``cedge.bench.camera.tune_gate``).
  Below the threshold the estimate is reported as *no valid pulse* instead of a confident number.
* **Inter-beat intervals** come from peak detection on the band-passed pulse with a refractory
  distance derived from the spectral rate, each peak refined to sub-sample time by a parabola.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.signal import find_peaks
from scipy.signal.windows import tukey

from agent.vision.errors import VisionInputError
from agent.vision.rppg import PULSE_BAND_HZ, bandpass

#: Minimum SNR (dB) for a pulse to be reported, by analysis-window length.  The SNR of pure
#: noise is higher in short windows (fewer independent frequency bins for the same template
#: width), so one threshold would be too lax at 6-10 s and too strict at 20 s.  Anchors: the 98th
#: percentile of the SNR of the negative controls' windows (24 tuning clips, printed photos and
#: masks, 576 windows; ``cedge.bench.camera_replay.derive_anchors``): 2.1 dB in 6-14 s windows,
#: 0.63 dB in 15-20 s windows; linear in between.  Re-derived for issue 16 when the fundamental
#: became harmonic-aware (the previous anchors, 2.7 / 1.3 dB, were the 98th percentile / maximum
#: under the highest-peak rule).  Moving both by the same offset trades coverage for false pulses
#: (docs/camera_benchmark.md, the gate-threshold curve): on the tuning clips 0.5 dB lower lets 4 %
#: of control updates through instead of 0.5 %.
SNR_THRESHOLD_ANCHORS_DB = ((10.0, 2.1), (20.0, 0.63))
SNR_THRESHOLD_DB = 0.63  # at the pipeline's full 20 s window

#: Hysteresis: an already accepted pulse whose rate has not jumped is kept down to the threshold
#: minus this margin (see :class:`PulseGate`); set on the tuning seeds.
SNR_HOLD_MARGIN_DB = 1.9

#: ... but only once it has been accepted at the full threshold this many updates in a row.
HOLD_AFTER_VALID = 3

#: Cross-projection agreement: a pulse is accepted only if CHROM (de Haan & Jeanne 2013) puts
#: its spectral peak in the same window within this many bpm of POS's.  Both read the pulse from
#: the same skin colour but weight the red, green and blue noise differently, so a noise peak that
#: one projection makes often lands elsewhere in the other, while a pulse does not.  Set by a
#: sequential replay of the validity path on tuning-seed traces (240 live clips of types I-VI, 70
#: zero-pulse twins of them, 48 photo/mask controls): negative windows reported valid 17 -> 7 of
#: 2,256, type V hard updates more than 3 bpm off 4 -> 1, coverage within 0.04 for every type.
#: 2 bpm rejected more negatives (1) but cut type III hard coverage 0.96 -> 0.81: CHROM's own error
#: on hard clips is often 2-4 bpm where POS is right.  The cost on the tuning-seed benchmark was
#: larger, coverage 0.86 -> 0.83 (still) and 0.48 -> 0.43 (hard): CHROM sometimes peaks at the
#: pulse's second harmonic (docs/camera_benchmark.md).
AGREE_BPM = 4.0


def snr_threshold_db(window_s: float) -> float:
    """Validity threshold for a window of ``window_s`` seconds (see the anchors above)."""
    (l0, t0), (l1, t1) = SNR_THRESHOLD_ANCHORS_DB
    return float(np.interp(window_s, [l0, l1], [t0, t1]))


#: Half widths of the SNR template around the fundamental and the first harmonic (Hz): the
#: main lobe of a Hann window over 10-20 s is +-0.1-0.2 Hz, and heart-rate variability within
#: the window (RSA, Mayer waves) widens the peak further.
SNR_HALF_WIDTH_HZ = (0.2, 0.3)

#: Weight of the first harmonic's template power when the fundamental is chosen
#: (:func:`fundamental_hz`).
HARMONIC_WEIGHT = 1.0

#: A candidate fundamental must hold at least this share of its harmonic's template power
#: (:func:`fundamental_hz`): excludes half-rate candidates.
FUNDAMENTAL_MIN_SHARE = 0.3

#: Agreement of the second projection scales with the width of the pulse's spectral lobe: a pulse
#: whose rate changes from beat to beat spreads its power over a wider lobe, and two projections
#: of it then place their maxima further apart (:func:`projections_agree`): the tolerance is
#: max(:data:`AGREE_BPM`, factor x width).  Tuning clips (24 real-PPG, 24 parametric, 24 controls;
#: replay): 0 -> 0.5 raised real-PPG still coverage 0.52 -> 0.57 at MAE 1.45 -> 1.51 bpm, control
#: updates reported as a pulse 2 -> 3 of 576; 0.75 bought 0.01 more at MAE 1.56.
AGREE_WIDTH_FACTOR = 0.5


@dataclass(frozen=True, slots=True)
class PulseEstimate:
    """Result of one analysis window.  ``hr_bpm`` is None when the pulse is not valid."""

    hr_bpm: float | None
    raw_hr_bpm: float  # spectral peak, reported even when not valid (for diagnostics only)
    snr_db: float
    quality: float  # 0..1, logistic in (snr_db - threshold)
    valid: bool
    beat_times_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    peak_width_bpm: float = 0.0  # half-power width of the fundamental's spectral lobe

    @property
    def ibis_s(self) -> np.ndarray:
        return np.diff(self.beat_times_s)


#: The beat-train rate is averaged with the spectral rate when within this fraction of it ...
RATE_AVERAGE_WITHIN = 0.04
#: ... and replaces it when within this fraction (see :func:`estimate_pulse`).
RATE_AGREE = 0.12

#: Band (x f0) and Butterworth order of the filter the beats are timed on.  A real pulse carries
#: as much power in its second harmonic as in its fundamental; the earlier 0.65-1.5 x f0, 2nd-order
#: band let enough of it through for the inverted camera pulse (more blood = darker skin) to show
#: a second maximum per beat.  On real finger-PPG pulses with noise (20 s windows) the beat-train
#: rate's MAE fell 2.3 -> 1.3 bpm; tuning-clip replay (thresholds of the time): real-PPG MAE
#: 2.26 -> 1.79 bpm at coverage 0.56 -> 0.58 (still), parametric unchanged.
BEAT_BAND = (0.7, 1.3)
BEAT_BAND_ORDER = 3

#: Taper fraction of the Tukey window used for the rate estimate (see :func:`estimate_pulse`).
TUKEY_ALPHA = 0.25


def power_spectrum(x: np.ndarray, fps: float, pad_factor: int = 8,
                   taper: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-sided periodogram of a windowed, mean-removed signal, zero-padded ``pad_factor``x.

    Hann window by default; ``taper`` selects a Tukey window with that tapered fraction instead.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.shape[0] < 8:
        raise VisionInputError(f"power_spectrum: need a 1-D signal of >= 8 samples, got shape {x.shape}")
    n = x.shape[0]
    nfft = int(2 ** np.ceil(np.log2(n * pad_factor)))
    window = np.hanning(n) if taper is None else tukey(n, taper)
    spec = np.fft.rfft((x - x.mean()) * window, n=nfft)
    return np.fft.rfftfreq(nfft, d=1.0 / fps), spec.real ** 2 + spec.imag ** 2


def _interpolate_peak(freqs: np.ndarray, power: np.ndarray, k: int) -> float:
    """Gaussian (log-parabolic) interpolation of the peak at bin ``k`` (Gasior & Gonzalez 2004)."""
    if k <= 0 or k >= len(power) - 1:
        return float(freqs[k])
    lp = np.log(np.maximum(power[k - 1:k + 2], 1e-300))
    denom = lp[0] - 2.0 * lp[1] + lp[2]
    delta = 0.5 * (lp[0] - lp[2]) / denom if denom < 0 else 0.0
    return float(freqs[k] + np.clip(delta, -0.5, 0.5) * (freqs[1] - freqs[0]))


def spectral_peak_hz(freqs: np.ndarray, power: np.ndarray, band_hz: tuple[float, float]) -> float:
    """Frequency of the largest peak inside ``band_hz``, Gaussian-interpolated between bins."""
    idx = np.flatnonzero((freqs >= band_hz[0]) & (freqs <= band_hz[1]))
    if idx.size < 3:
        raise VisionInputError(f"spectral_peak_hz: band {band_hz} Hz holds fewer than 3 bins")
    return _interpolate_peak(freqs, power, int(idx[np.argmax(power[idx])]))


def _template_windows(freqs: np.ndarray, power: np.ndarray, band_hz: tuple[float, float],
                      half_width_hz: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """For every bin ``f``: power within ``+-w1`` of ``f`` and within ``+-w2`` of ``2 f``, counting
    only bins inside ``band_hz``."""
    w1, w2 = half_width_hz or SNR_HALF_WIDTH_HZ
    inside = np.where((freqs >= band_hz[0]) & (freqs <= band_hz[1]), power, 0.0)
    cum = np.concatenate([[0.0], np.cumsum(inside)])

    def window(centre: np.ndarray, hw: float) -> np.ndarray:
        return cum[np.searchsorted(freqs, centre + hw, side="right")] - cum[np.searchsorted(freqs, centre - hw)]

    return window(freqs, w1), window(2.0 * freqs, w2)


def template_energy(freqs: np.ndarray, power: np.ndarray, band_hz: tuple[float, float] = PULSE_BAND_HZ,
                    half_width_hz: tuple[float, float] | None = None,
                    harmonic_weight: float = 1.0) -> np.ndarray:
    """For every bin ``f``: the power within ``+-w1`` of ``f`` plus ``harmonic_weight`` times the power
    within ``+-w2`` of ``2 f``, counting only bins inside ``band_hz`` -- the numerator of the
    de Haan & Jeanne (2013) SNR as a function of the assumed fundamental."""
    e1, e2 = _template_windows(freqs, power, band_hz, half_width_hz)
    return e1 + harmonic_weight * e2


def fundamental_hz(freqs: np.ndarray, power: np.ndarray, band_hz: tuple[float, float] = PULSE_BAND_HZ,
                   half_width_hz: tuple[float, float] | None = None,
                   harmonic_weight: float | None = None, min_share: float | None = None) -> float:
    """The pulse's fundamental: of the spectral peaks inside ``band_hz``, the one whose fundamental
    + first-harmonic template holds the most power, interpolated between bins.

    Why not simply the highest peak: a real blood-volume pulse is not a sinusoid.  Its systolic
    upstroke and dicrotic notch put much of its power in harmonics, and when the rate changes from
    beat to beat the fundamental's power spreads over a wider lobe than the harmonic's peak
    suggests: in the real finger-PPG recordings (hal_sim.face.real_ppg, tuning set) the second
    harmonic is the highest peak of a 20 s window in a fifth of the windows, and the highest-peak
    rule reads twice the heart rate.  Scoring a candidate by its own power *plus* that at its double
    (``harmonic_weight`` x, see :data:`HARMONIC_WEIGHT`) counts the harmonic as evidence for the
    fundamental, as the SNR of de Haan & Jeanne does, while a harmonic candidate gains only the
    (absent) power at four times the rate -- the harmonic-sum pitch estimator (Hermes, J Acoust Soc
    Am 83:257, 1988).  Its known failure is the half-rate candidate, noise at f/2 scored with the
    fundamental as its "harmonic"; a candidate is therefore admissible only if its own template
    holds at least ``min_share`` of its harmonic's (:data:`FUNDAMENTAL_MIN_SHARE`).
    """
    idx = np.flatnonzero((freqs >= band_hz[0]) & (freqs <= band_hz[1]))
    if idx.size < 3:
        raise VisionInputError(f"fundamental_hz: band {band_hz} Hz holds fewer than 3 bins")
    e1, e2 = _template_windows(freqs, power, band_hz, half_width_hz)
    share = FUNDAMENTAL_MIN_SHARE if min_share is None else min_share
    weight = HARMONIC_WEIGHT if harmonic_weight is None else harmonic_weight
    cand = idx[e1[idx] >= share * e2[idx]]
    if cand.size == 0:
        return spectral_peak_hz(freqs, power, band_hz)
    best = freqs[cand[np.argmax(e1[cand] + weight * e2[cand])]]
    # the winning template's own peak: any bin whose window holds that peak scores about the same
    w1 = (half_width_hz or SNR_HALF_WIDTH_HZ)[0]
    near = idx[np.abs(freqs[idx] - best) <= w1]
    return _interpolate_peak(freqs, power, int(near[np.argmax(power[near])]))


def peak_width_hz(freqs: np.ndarray, power: np.ndarray, f0_hz: float,
                  band_hz: tuple[float, float] = PULSE_BAND_HZ) -> float:
    """Spread of the pulse's power around ``f0_hz``: twice the RMS deviation from their centroid of
    the frequencies within 0.7-1.3 x f0, each weighted by its power above the band's median.

    Beat-to-beat changes of the rate (respiratory sinus arrhythmia, Mayer waves) split the
    fundamental into a carrier and sidebands; the half-power width of the highest line misses
    them, the second moment does not (a steady rate gives about the window's main lobe).  The
    agreement rule (:func:`projections_agree`) scales with it.
    """
    in_band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    near = in_band & (freqs >= 0.7 * f0_hz) & (freqs <= 1.3 * f0_hz)
    if near.sum() < 3:
        return 0.0
    q = np.maximum(power[near] - np.median(power[in_band]), 0.0)
    if q.sum() <= 0:
        return 0.0
    f = freqs[near]
    c = float((f * q).sum() / q.sum())
    return float(2.0 * np.sqrt((q * (f - c) ** 2).sum() / q.sum()))


def snr_db(freqs: np.ndarray, power: np.ndarray, f0_hz: float,
           band_hz: tuple[float, float] = PULSE_BAND_HZ,
           half_width_hz: tuple[float, float] | None = None) -> float:
    """de Haan & Jeanne (2013) SNR: template energy (f0 and 2 f0) over the rest of the band."""
    half_width_hz = half_width_hz or SNR_HALF_WIDTH_HZ
    in_band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    template = (np.abs(freqs - f0_hz) <= half_width_hz[0]) | (np.abs(freqs - 2 * f0_hz) <= half_width_hz[1])
    sig = power[in_band & template].sum()
    noise = power[in_band & ~template].sum()
    return float(10.0 * np.log10(max(sig, 1e-300) / max(noise, 1e-300)))


def quality_from_snr(snr: float, threshold_db: float = SNR_THRESHOLD_DB, slope_db: float = 1.5) -> float:
    """Map SNR to 0..1: 0.5 at the threshold, ~0.9 at threshold + 3.3 dB."""
    return float(1.0 / (1.0 + np.exp(-(snr - threshold_db) / slope_db)))


def beat_times(pulse: np.ndarray, fps: float, hr_bpm: float, t0_s: float = 0.0) -> np.ndarray:
    """Beat times (s) as the maxima of the band-passed pulse, parabola-refined.

    The refractory distance is 60 % of the mean beat period so that a beat-to-beat change of up
    to +-40 % (arrhythmia, strong respiratory sinus arrhythmia) is still followed.
    """
    x = np.asarray(pulse, dtype=np.float64)
    if not hr_bpm > 0:
        raise VisionInputError(f"beat_times: hr_bpm must be > 0, got {hr_bpm}")
    period = fps * 60.0 / hr_bpm
    peaks, _ = find_peaks(x, distance=max(1, int(0.6 * period)), prominence=0.3 * x.std())
    peaks = peaks[(peaks > 0) & (peaks < len(x) - 1)]
    if peaks.size == 0:
        return np.zeros(0)
    y0, y1, y2 = x[peaks - 1], x[peaks], x[peaks + 1]
    denom = y0 - 2 * y1 + y2
    safe = np.where(denom < 0, denom, -1.0)
    delta = np.where(denom < 0, 0.5 * (y0 - y2) / safe, 0.0)
    return t0_s + (peaks + np.clip(delta, -0.5, 0.5)) / fps


def beat_rate_bpm(beats_s: np.ndarray) -> float | None:
    """Mean rate of a beat train: 60 / mean inter-beat interval.

    Intervals outside 0.7-1.4 x the median are dropped first -- a spurious beat splits one
    interval into two short ones, a missed beat merges two -- the usual artefact rule for IBI
    series (e.g. the 20-30 % deviation filters of HRV practice, Task Force ESC/NASPE 1996).
    Without it one extra beat in a 20 s window reads as +7 %.  The mean of the remaining
    intervals is the average of the instantaneous rate over the train, which is what a reference
    ECG/PPG rate over the same window means.
    """
    if beats_s.size < 4:
        return None
    ibi = np.diff(beats_s)
    med = float(np.median(ibi))
    if med <= 0:
        return None
    keep = ibi[(ibi > 0.7 * med) & (ibi < 1.4 * med)]
    if keep.size < 3:
        return None
    return 60.0 / float(keep.mean())


def estimate_pulse(pulse: np.ndarray, fps: float, threshold_db: float | None = None,
                   band_hz: tuple[float, float] = PULSE_BAND_HZ, t0_s: float = 0.0,
                   half_width_hz: tuple[float, float] | None = None,
                   harmonic_weight: float | None = None) -> PulseEstimate:
    """Heart rate, SNR-based quality and beat times of one window of pulse signal.

    The Hann spectrum decides *whether* there is a pulse (SNR) and roughly where: the fundamental
    is chosen with its first harmonic counted as evidence (:func:`fundamental_hz`).  The
    reported rate then averages two estimates of the window's mean rate whose errors have different
    sources (tuning clips: MAE 0.48 -> 0.41 bpm against either alone, darkest skin 0.68 -> 0.50):

    * the beat-train rate of the signal band-passed narrowly around f0 (0.65-1.5 x f0), which
      averages the instantaneous rate uniformly over the window but rests on the timing of the
      first and last beats;
    * the peak of a Tukey-windowed spectrum (flat over 75 % of the window): a Hann window weights
      the window's centre and is biased when the rate drifts within the window (Mayer waves, onset
      of stress), a rectangular one leaks broadband noise into the peak.

    Within 4 % of each other (:data:`RATE_AVERAGE_WITHIN`) the two are averaged.  Within 12 %
    (:data:`RATE_AGREE`) the beat train alone is used: a real heart's rate changes from beat to
    beat by 5-10 %, which splits the spectral peak into a carrier and sidebands, and the highest of
    them is not the window's mean rate -- on real finger-PPG pulses (hal_sim.face.real_ppg, tuning
    set) even without noise the spectral peak of a 20 s window missed the mean rate by more than
    3 bpm in half the windows, the beat train in none.  Further apart, a beat was missed or added
    and only the spectral value is used.  (Tuning-clip replay, real-PPG / parametric MAE: averaging
    within 4 % only 2.15 / 0.35 bpm, beat train within 12 % only 1.23 / 0.36, this rule 1.51 / 0.34.)
    """
    x = np.asarray(pulse, dtype=np.float64)
    if x.ndim != 1:
        raise VisionInputError(f"estimate_pulse: pulse must be 1-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise VisionInputError("estimate_pulse: pulse contains NaN or inf")
    min_len = int(2.0 * fps / band_hz[0])
    if x.shape[0] < min_len:
        raise VisionInputError(f"estimate_pulse: need >= {min_len} samples (two periods at "
                               f"{band_hz[0] * 60:.0f} bpm), got {x.shape[0]}")
    if threshold_db is None:
        threshold_db = snr_threshold_db(x.shape[0] / fps)
    freqs, power = power_spectrum(x, fps)
    f0 = fundamental_hz(freqs, power, band_hz, half_width_hz, harmonic_weight)
    snr = snr_db(freqs, power, f0, band_hz, half_width_hz)
    width_bpm = 60.0 * peak_width_hz(freqs, power, f0)
    valid = snr >= threshold_db
    hr = 60.0 * f0
    beats = np.zeros(0)
    if valid:
        hr = 60.0 * spectral_peak_hz(*power_spectrum(x, fps, taper=TUKEY_ALPHA), band_hz=(
            max(band_hz[0], 0.8 * f0), min(band_hz[1], 1.2 * f0)))
        narrow = bandpass(x, fps, (BEAT_BAND[0] * f0, min(BEAT_BAND[1] * f0, band_hz[1])), order=BEAT_BAND_ORDER)
        beats = beat_times(narrow, fps, hr, t0_s)
        # beats within half a period of the window's ends are displaced by the filter's edge
        # transients; the rate uses the interior ones
        half = 0.5 * 60.0 / hr
        t_end = t0_s + (x.shape[0] - 1) / fps
        rate = beat_rate_bpm(beats[(beats > t0_s + half) & (beats < t_end - half)])
        if rate is not None and abs(rate - hr) <= RATE_AVERAGE_WITHIN * hr:
            hr = 0.5 * (rate + hr)
        elif rate is not None and abs(rate - hr) <= RATE_AGREE * hr:
            hr = rate
    return PulseEstimate(hr_bpm=hr if valid else None, raw_hr_bpm=hr, snr_db=snr,
                         quality=quality_from_snr(snr, threshold_db), valid=bool(valid), beat_times_s=beats,
                         peak_width_bpm=width_bpm)


def projections_agree(main: PulseEstimate, other: PulseEstimate | None, agree_bpm: float | None = None,
                      width_factor: float | None = None) -> bool:
    """Does a second rPPG projection of the same window put the pulse where ``main`` does?

    Tolerance: ``agree_bpm`` or ``width_factor`` times the half-power width of ``main``'s spectral
    lobe, whichever is larger (see :data:`AGREE_WIDTH_FACTOR`).
    """
    if other is None:
        return False
    agree_bpm = AGREE_BPM if agree_bpm is None else agree_bpm
    width_factor = AGREE_WIDTH_FACTOR if width_factor is None else width_factor
    tol = max(agree_bpm, width_factor * main.peak_width_bpm)
    return abs(other.raw_hr_bpm - main.raw_hr_bpm) <= tol


@dataclass
class PulseGate:
    """Per-track validity of successive pulse estimates: hysteresis with confirmation.

    A live pulse keeps its rate from one update to the next while noise peaks wander, so a pulse
    that is already established may stay valid at ``hold_margin_db`` below the full threshold as
    long as its rate stays within ``hold_tolerance_bpm`` of the last valid one and no more than
    ``hold_s`` have passed (tuning seeds: hard-clip coverage 0.47 -> 0.56).  "Established" means
    accepted at the full threshold on ``confirm_updates`` consecutive updates -- the M-of-N
    confirmation of track initiation in radar tracking.  Without it one marginal acceptance of an
    artefact was held for six updates 19 bpm off (a benchmark clip, type V, motion + JPEG);
    on 168 tuning clips confirmation costs hard-clip coverage 0.56 -> 0.51 and cuts the darkest
    skin type's MAE from 0.61 to 0.46 bpm, at an unchanged 2.5 % of control windows accepted.

    A pulse that is not held is reported only when the update before was above the full threshold
    too, at a rate within ``hold_tolerance_bpm`` (two of two): an isolated noise or artefact peak
    that crosses the threshold once is not a pulse.  Same tuning clips: control windows accepted
    2.5 -> 1.9 %, live windows more than 5 bpm off 2 -> 0, MAE 0.38 -> 0.35 bpm, at the cost of one
    update of delay and coverage 0.92 -> 0.88 (still) and 0.51 -> 0.44 (hard).
    """

    hold_margin_db: float = SNR_HOLD_MARGIN_DB
    hold_tolerance_bpm: float = 5.0
    hold_s: float = 5.0
    confirm_updates: int = HOLD_AFTER_VALID
    consecutive_s: float = 1.5  # two valid updates at most this far apart are consecutive
    last_hr_bpm: float | None = None
    last_t_s: float = -np.inf
    run: int = 0  # consecutive valid updates up to last_t_s
    prev_full: tuple[float, float] | None = None  # (t_s, rate) of the last update above the full threshold

    def holding(self, t_s: float) -> bool:
        return (self.last_hr_bpm is not None and t_s - self.last_t_s <= self.hold_s
                and self.run >= self.confirm_updates)

    def threshold_db(self, t_s: float, full_threshold_db: float) -> float:
        """The SNR threshold to estimate with at ``t_s``: lowered while a confirmed pulse is held."""
        return full_threshold_db - self.hold_margin_db if self.holding(t_s) else full_threshold_db

    def accept(self, t_s: float, estimate: PulseEstimate, full_threshold_db: float,
               agrees: bool = True) -> PulseEstimate:
        """Final validity of ``estimate`` (made with :meth:`threshold_db`); updates the gate.

        ``agrees=False`` (a second rPPG projection of the same window puts the pulse elsewhere, see
        :data:`AGREE_BPM`) rejects the estimate and does not count it as a full-threshold one.
        """
        pe = estimate
        holding = self.holding(t_s)
        full = pe.snr_db >= full_threshold_db and agrees
        if not agrees and pe.valid:
            pe = replace(pe, hr_bpm=None, valid=False, beat_times_s=np.zeros(0))
        if pe.valid and not full and (
                self.last_hr_bpm is None or abs(pe.raw_hr_bpm - self.last_hr_bpm) > self.hold_tolerance_bpm):
            pe = replace(pe, hr_bpm=None, valid=False, beat_times_s=np.zeros(0))
        if pe.valid and not holding and not (
                self.prev_full is not None and t_s - self.prev_full[0] <= self.consecutive_s
                and abs(pe.raw_hr_bpm - self.prev_full[1]) <= self.hold_tolerance_bpm):
            pe = replace(pe, hr_bpm=None, valid=False, beat_times_s=np.zeros(0))
        self.prev_full = (t_s, estimate.raw_hr_bpm) if full else None
        if pe.valid:
            self.run = self.run + 1 if t_s - self.last_t_s <= self.consecutive_s else 1
            self.last_hr_bpm, self.last_t_s = pe.raw_hr_bpm, t_s
        return pe
