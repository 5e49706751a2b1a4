"""Real finger-PPG recordings as the simulated face's blood-volume pulse.

Why: the parametric pulse of :mod:`hal_sim.face.physiology` (two Gaussians per beat, HR from a
smooth model) is what the camera pipeline was tuned on.  A real pulse differs: its waveform has a
dicrotic notch and 20-40 % of its power in harmonics, its amplitude and rate change from beat to
beat, and breathing makes its baseline wander.  Clips whose pulse is a real recording show whether
the pipeline holds on real physiology (issue 16).

Recordings
----------
The three example recordings shipped inside the ``heartpy`` wheel (``heartpy.load_exampledata``;
HeartPy, P. van Gent et al., "HeartPy: A novel heart rate algorithm for the analysis of noisy
signals", Transp. Res. Part F 66:368, 2019; the wheel's LICENSE file is MIT, the project README
says GPL-3).  What they are, from HeartPy's example notebook ``examples/1_regular_PPG``:

* ``heartpy0`` (``data.csv``): a short, very clean finger PPG, 100.0 Hz, 24.8 s, ~59 bpm;
* ``heartpy1`` (``data2.csv``): ~2 min of PPG with a millisecond timer (116.99 Hz), missing
  signal in the first third and noise spikes in the rest, ~62 bpm;
* ``heartpy2`` (``data3.csv``): 11.4 min recorded "in the wild" in a driving simulator with a
  Pulse Sensor on the index finger and an Arduino, ~97 bpm.  Its datetime stamps come in packets
  of 2-3 samples; the rate is taken as the mean over the recording, 100.42 Hz (60 s blocks range
  100.24-100.66 Hz, i.e. +-0.2 %).

The recordings are read at run time through ``heartpy`` (imported lazily, an optional
dependency of the simulator only); nothing is copied into this project and ``agent/`` never needs
them.

Clean segments and the tuning/benchmark split
---------------------------------------------
A finger sensor adds its own artefacts (ADC saturation, contact loss, motion spikes) that a face
would not show, so only clean stretches are used: beats are found on the 0.5-8 Hz band, and a beat
interval is clean when no sample in it sits on the lower ADC rail (contact loss) and at most
40 ms on the upper one (saturation of a peak's tip), its length is 0.7-1.4x and its
peak-to-peak 0.5-2x the running median of its neighbours, it holds no spike (a first
difference beyond 6x the recording's 99th percentile), and its shape correlates with the median
beat of its neighbours at >= 0.86 (:data:`MIN_TEMPLATE_R`).  Clean runs of >= :data:`MIN_RUN_S` form
the segments.  :data:`SPLIT` assigns every segment to one set: ``tune`` (used to derive the
pipeline's thresholds) or ``bench`` (the benchmark's real-PPG clips), by recording and source
time, with a 20 s guard gap inside ``heartpy2``; no source sample belongs to both sets.
``heartpy2`` is one person across both sets (different minutes), so the sets share that person's
waveform morphology but no waveform segment.

From a recording to a face pulse
--------------------------------
* The source is split at 0.5 Hz into a pulsatile part (0.5 Hz .. ``min(10, 12 / k)`` Hz, zero-phase
  Butterworth) and a baseline part (0.05-0.5 Hz, the respiratory baseline wander).
* Both are time-stretched by ``k = target rate / segment rate`` (linear interpolation of the
  source at ``s0 + k t``): the mean rate becomes the target while the beat-to-beat variability (in
  relative terms), the waveform shape, the dicrotic notch and the harmonics are kept.  The low-pass
  edge ``12 / k`` keeps the stretched pulse below 12 Hz (no aliasing at 30 frames/s of what the
  sensor never saw).  Breathing is stretched with it, so that the baseline wander and the
  respiratory sinus arrhythmia of the beats stay locked to the same breaths; its rate becomes
  ``k`` times the recording's (k = 0.55-1.4 for the 55-130 bpm targets, the recordings breathe at
  8-16 /min).  The simulated chest motion keeps its own breathing rate: the two are not matched.
* Both are scaled by one factor so that the median beat's peak-to-peak of the pulsatile part is 1,
  the unit of :meth:`hal_sim.face.physiology.PhysiologyTrack.skin_blood_at`.
* Beats (the truth) are the pulse-wave feet (minimum before each systolic peak) of the source,
  mapped through the stretch; the instantaneous rate is 60 / the beat interval holding ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from scipy.signal import butter, find_peaks, sosfiltfilt

#: Recording name -> (heartpy example index, sampling rate Hz, description).
RECORDINGS: dict[str, tuple[int, float, str]] = {
    "heartpy0": (0, 100.0, "HeartPy data.csv: short, very clean finger PPG, 100 Hz"),
    "heartpy1": (1, float("nan"), "HeartPy data2.csv: ~2 min finger PPG, ms timer, dropout and noise spikes"),
    "heartpy2": (2, float("nan"), "HeartPy data3.csv: 11.4 min Pulse Sensor on the index finger, driving simulator"),
}

#: Set -> (recording, source start s, source end s) spans.  Disjoint: see the module docstring.
SPLIT: dict[str, tuple[tuple[str, float, float], ...]] = {
    "tune": (("heartpy0", 0.0, np.inf), ("heartpy1", 0.0, np.inf), ("heartpy2", 0.0, 330.0)),
    "bench": (("heartpy2", 350.0, np.inf),),
}

#: Shortest clean run kept as a segment (s of source).
MIN_RUN_S = 20.0

#: Range of target mean rates the benchmark draws from (issue 16: 55-130 bpm).
TARGET_HR_RANGE_BPM = (55.0, 130.0)

_PULSE_LO_HZ = 0.5
_WANDER_BAND_HZ = (0.05, 0.5)


class RealPpgUnavailable(RuntimeError):
    """heartpy (the source of the recordings) is not installed."""


@dataclass(frozen=True)
class Recording:
    """One source recording, uniformly sampled."""

    name: str
    fs_hz: float
    x: np.ndarray  # raw ADC values
    beats_s: np.ndarray  # pulse-wave feet (s)
    peaks_s: np.ndarray  # systolic peaks (s)
    description: str


@dataclass(frozen=True)
class Segment:
    """A clean stretch of one recording: source times ``[start_s, end_s)`` and its beats."""

    recording: str
    start_s: float
    end_s: float
    mean_hr_bpm: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class RealPulse:
    """A real PPG stretched to a target rate, on a uniform clip-time grid starting at 0."""

    grid_hz: float
    pulse: np.ndarray  # pulsatile part, median beat peak-to-peak 1 (positive = more blood)
    wander: np.ndarray  # respiratory baseline wander, same scale
    beat_times_s: np.ndarray  # pulse-wave feet in clip time
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def t_s(self) -> np.ndarray:
        return np.arange(self.pulse.size) / self.grid_hz

    def hr_bpm(self, t_s: np.ndarray) -> np.ndarray:
        """Instantaneous rate: 60 / the interval between the beats around ``t`` (held at the ends)."""
        b = self.beat_times_s
        ibi = np.diff(b)
        i = np.clip(np.searchsorted(b, t_s, side="right") - 1, 0, ibi.size - 1)
        return 60.0 / ibi[i]

    def cardiac_phase(self, t_s: np.ndarray) -> np.ndarray:
        """Beats since the first foot, linear between feet (integer at every foot)."""
        b = self.beat_times_s
        k = np.arange(b.size, dtype=float)
        ph = np.interp(t_s, b, k)
        # extrapolate with the first/last interval beyond the ends
        ph = np.where(t_s < b[0], (t_s - b[0]) / (b[1] - b[0]), ph)
        return np.where(t_s > b[-1], k[-1] + (t_s - b[-1]) / (b[-1] - b[-2]), ph)


# --------------------------------------------------------------------------- loading
def _heartpy() -> Any:
    try:
        import heartpy
    except ImportError as err:
        raise RealPpgUnavailable("real-PPG pulses need the 'heartpy' package (its example recordings): "
                                 "pip install heartpy") from err
    return heartpy


def _rate_from_datetimes(stamps: np.ndarray) -> float:
    from datetime import datetime

    t = np.array([datetime.fromisoformat(str(s)).timestamp() for s in (stamps[0], stamps[-1])])
    return float((len(stamps) - 1) / (t[1] - t[0]))


def _bandpass(x: np.ndarray, fs: float, lo: float, hi: float, order: int = 2) -> np.ndarray:
    nyq = 0.5 * fs
    sos = butter(order, [lo / nyq, min(hi, 0.95 * nyq) / nyq], btype="bandpass", output="sos")
    return sosfiltfilt(sos, x)


@cache
def load_recording(name: str) -> Recording:
    """Read one recording through heartpy and find its beats (cached per process)."""
    if name not in RECORDINGS:
        raise ValueError(f"unknown PPG recording {name!r} (known: {', '.join(RECORDINGS)})")
    example, fs, desc = RECORDINGS[name]
    hp = _heartpy()
    data, timer = hp.load_exampledata(example)
    x = np.asarray(data, dtype=float)
    if example == 1:
        tm = np.asarray(timer, dtype=float)
        fs = float((tm.size - 1) / (tm[-1] - tm[0]) * 1000.0)
    elif example == 2:
        fs = _rate_from_datetimes(np.asarray(timer))
    feet, peaks = _find_beats(x, fs)
    return Recording(name, float(fs), x, feet / fs, peaks / fs, desc)


def _local_period_s(y: np.ndarray, fs: float, window_s: float = 20.0) -> np.ndarray:
    """Beat period around every sample: the first autocorrelation maximum at 0.4-1.6 s lag of
    each 20 s window (half overlapping), interpolated.  Why: a prominent diastolic wave is a second
    peak per beat at 0.3-0.4 s; the refractory distance of the peak search must come from the
    period, not from a fixed guess."""
    w = int(window_s * fs)
    centres, periods = [], []
    for a in range(0, max(y.size - w, 0) + 1, max(w // 2, 1)):
        seg = y[a:a + w] - y[a:a + w].mean()
        ac = np.correlate(seg, seg, mode="full")[seg.size - 1:]
        lo, hi = int(0.4 * fs), min(int(1.6 * fs), ac.size - 1)
        if hi <= lo:
            continue
        pk, _ = find_peaks(ac[lo:hi])
        if pk.size == 0:
            continue
        best = pk[np.argmax(ac[lo:hi][pk])]
        # prefer the shortest lag whose correlation is close to the best one (not a multiple)
        first = next(p for p in pk if ac[lo + p] >= 0.8 * ac[lo + best])
        centres.append(a + 0.5 * seg.size)
        periods.append((lo + first) / fs)
    if not periods:
        return np.full(y.size, 0.8)
    return np.interp(np.arange(y.size), centres, periods)


def _find_beats(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Systolic peaks on the 0.5-8 Hz band (refractory 0.6 of the local period) and the steepest
    point of the upstroke before each, as sample indices (parabola-refined).

    The steepest upstroke (maximum first derivative) marks each beat rather than the foot
    (minimum): in these recordings the trough after the dicrotic wave is often deeper than the
    true foot, and the minimum then jumps between the two from beat to beat."""
    y = _bandpass(x - np.median(x), fs, 0.5, 8.0)
    period = _local_period_s(y, fs)
    amp = np.percentile(y, 95) - np.percentile(y, 5)
    cand, _ = find_peaks(y, prominence=0.25 * amp)
    peaks: list[int] = []
    for c in cand:  # greedy: keep the higher of two candidates closer than 0.6 period
        if peaks and c - peaks[-1] < 0.6 * period[c] * fs:
            if y[c] > y[peaks[-1]]:
                peaks[-1] = int(c)
            continue
        peaks.append(int(c))
    dy = np.gradient(y)
    feet = []
    for i, p in enumerate(peaks):
        lo = max(peaks[i - 1] + 1 if i > 0 else 0, p - int(0.35 * period[p] * fs))
        j = lo + int(np.argmax(dy[lo:p + 1]))
        jf = float(j)
        if 0 < j < y.size - 1:
            d = dy[j - 1] - 2 * dy[j] + dy[j + 1]
            jf = j + (float(np.clip(0.5 * (dy[j - 1] - dy[j + 1]) / d, -0.5, 0.5)) if d < 0 else 0.0)
        feet.append(jf)
    return np.asarray(feet, dtype=float), np.asarray(peaks, dtype=float)


# --------------------------------------------------------------------------- clean segments
def _rails(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples on the lower and upper ADC rails: within 1 % of the range of the extreme value, if
    the recording sits there often (>= 20 samples), else none.  The lower rail is contact loss;
    the upper one saturation, which flattens the top of a systolic peak."""
    lo, hi = float(x.min()), float(x.max())
    tol = 0.01 * (hi - lo)
    low, high = x <= lo + tol, x >= hi - tol
    return (low if low.sum() >= 20 else np.zeros_like(low)), (high if high.sum() >= 20 else np.zeros_like(high))


#: Least correlation of a beat (resampled foot to foot) with the median beat of its 11 neighbours:
#: the template-matching signal-quality index of PPG (Orphanidou et al., IEEE J Biomed Health
#: Inform 19:832, 2015): a spike that a finger sensor picked up would otherwise be carried into the
#: face as if it were blood volume.
MIN_TEMPLATE_R = 0.86

#: Saturated samples tolerated per beat: up to 40 ms flattens only the tip of a systolic peak.
MAX_SATURATED_S = 0.04


@cache
def clean_segments(name: str, min_run_s: float = MIN_RUN_S) -> list[Segment]:
    """Clean runs of beats of one recording (rules in the module docstring); cached per process."""
    rec = load_recording(name)
    fs, x = rec.fs_hz, rec.x
    feet = rec.beats_s
    if feet.size < 10:
        return []
    low, high = _rails(x)
    max_sat = int(MAX_SATURATED_S * fs)
    dx = np.abs(np.diff(x, prepend=x[0]))
    spike = dx > 6.0 * np.percentile(dx, 99)
    y = _bandpass(x - np.median(x), fs, 0.5, 8.0)
    idx = np.round(feet * fs).astype(int)
    ibi = np.diff(feet)
    pp = np.array([y[a:b].max() - y[a:b].min() for a, b in zip(idx[:-1], idx[1:], strict=True)])
    shapes = np.array([np.interp(np.linspace(a, b, 64, endpoint=False), np.arange(y.size), y)
                       for a, b in zip(idx[:-1], idx[1:], strict=True)])
    good = np.ones(ibi.size, dtype=bool)
    for i in range(ibi.size):
        lo, hi = max(0, i - 4), min(ibi.size, i + 5)
        med_ibi, med_pp = np.median(ibi[lo:hi]), np.median(pp[lo:hi])
        a, b = idx[i], idx[i + 1]
        template = np.median(shapes[max(0, i - 5):i + 6], axis=0)
        r = np.corrcoef(shapes[i], template)[0, 1]
        good[i] = (0.7 * med_ibi <= ibi[i] <= 1.4 * med_ibi and 0.5 * med_pp <= pp[i] <= 2.0 * med_pp
                   and not low[a:b + 1].any() and int(high[a:b + 1].sum()) <= max_sat
                   and not spike[a:b + 1].any() and r >= MIN_TEMPLATE_R)
    out = []
    i = 0
    while i < good.size:
        if not good[i]:
            i += 1
            continue
        j = i
        while j < good.size and good[j]:
            j += 1
        # intervals i..j-1 are clean: beats i..j; drop one beat at each end (edge of an artefact)
        if j - i >= 3:
            s0, s1 = feet[i + 1], feet[j - 1]
            if s1 - s0 >= min_run_s:
                n = j - 1 - (i + 1)
                out.append(Segment(name, float(s0), float(s1), float(60.0 * n / (s1 - s0))))
        i = j
    return out


def segments(set_name: str) -> list[Segment]:
    """The clean segments of one set (``tune`` or ``bench``), clipped to the set's spans."""
    if set_name not in SPLIT:
        raise ValueError(f"unknown real-PPG set {set_name!r} (known: {', '.join(SPLIT)})")
    out = []
    for name, a, b in SPLIT[set_name]:
        rec = load_recording(name)
        for seg in clean_segments(name):
            s0, s1 = max(seg.start_s, a), min(seg.end_s, b)
            if s1 - s0 < MIN_RUN_S:
                continue
            inside = rec.beats_s[(rec.beats_s >= s0) & (rec.beats_s <= s1)]
            if inside.size < 3:
                continue
            s0, s1 = float(inside[0]), float(inside[-1])
            out.append(Segment(name, s0, s1, float(60.0 * (inside.size - 1) / (s1 - s0))))
    return out


# --------------------------------------------------------------------------- stretching
def stretch_segment(seg: Segment, offset_s: float, target_hr_bpm: float, duration_s: float,
                    grid_hz: float = 100.0) -> RealPulse:
    """The pulse of ``seg`` from ``offset_s`` into it, stretched to ``target_hr_bpm``, over
    ``[0, duration_s]`` of clip time on a ``grid_hz`` grid."""
    rec = load_recording(seg.recording)
    fs = rec.fs_hz
    k = float(target_hr_bpm) / seg.mean_hr_bpm  # source seconds per clip second
    s0 = seg.start_s + float(offset_s)
    need = k * duration_s
    if s0 < seg.start_s or s0 + need > seg.end_s + 1e-9:
        raise ValueError(f"segment {seg.recording} {seg.start_s:.1f}-{seg.end_s:.1f} s is too short for "
                         f"{duration_s:.1f} s at {target_hr_bpm:.1f} bpm from offset {offset_s:.1f} s")
    x = rec.x - np.median(rec.x)
    pulsatile = _bandpass(x, fs, _PULSE_LO_HZ, min(10.0, 12.0 / k))
    wander = _bandpass(x, fs, *_WANDER_BAND_HZ)
    n = int(np.floor(duration_s * grid_hz)) + 1
    t = np.arange(n) / grid_hz
    src_t = np.arange(x.size) / fs
    p = np.interp(s0 + k * t, src_t, pulsatile)
    w = np.interp(s0 + k * t, src_t, wander)
    w -= w.mean()
    # truth beats: source feet inside the stretched span (plus one either side for the rate)
    feet = rec.beats_s
    sel = (feet >= s0 - 2.0 * 60.0 / seg.mean_hr_bpm) & (feet <= s0 + k * duration_s + 2.0 * 60.0 / seg.mean_hr_bpm)
    beats = (feet[sel] - s0) / k
    # scale: median beat peak-to-peak of the pulsatile part = 1
    bi = np.round(beats * grid_hz).astype(int)
    bi = bi[(bi >= 0) & (bi < n)]
    pps = [np.ptp(p[a:b]) for a, b in zip(bi[:-1], bi[1:], strict=True) if b - a > 2]
    scale = float(np.median(pps)) if pps else float(np.ptp(p))
    p = (p - p.mean()) / scale
    w = w / scale
    info = {"recording": seg.recording, "source_start_s": round(s0, 3),
            "source_end_s": round(s0 + need, 3), "segment": [round(seg.start_s, 3), round(seg.end_s, 3)],
            "stretch": round(k, 5), "target_hr_bpm": round(float(target_hr_bpm), 3),
            "segment_hr_bpm": round(seg.mean_hr_bpm, 3)}
    return RealPulse(grid_hz=grid_hz, pulse=p, wander=w, beat_times_s=beats, info=info)


def draw_real_pulse(set_name: str, rng: np.random.Generator, duration_s: float,
                    target_hr_bpm: float | None = None, grid_hz: float = 100.0) -> RealPulse:
    """A real pulse from a segment of ``set_name`` drawn with ``rng`` (target rate uniform in
    :data:`TARGET_HR_RANGE_BPM` unless given), long enough for ``duration_s`` of clip time."""
    target = float(target_hr_bpm) if target_hr_bpm is not None else float(rng.uniform(*TARGET_HR_RANGE_BPM))
    segs = segments(set_name)
    fits = [s for s in segs if s.length_s >= target / s.mean_hr_bpm * duration_s]
    if not fits:
        raise ValueError(f"no clean {set_name} segment holds {duration_s:.1f} s at {target:.1f} bpm "
                         f"(longest {max((s.length_s for s in segs), default=0):.1f} s of source)")
    seg = fits[int(rng.integers(0, len(fits)))]
    spare = seg.length_s - target / seg.mean_hr_bpm * duration_s
    return stretch_segment(seg, float(rng.uniform(0.0, max(spare, 0.0))), target, duration_s, grid_hz)
