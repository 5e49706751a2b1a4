"""Blink detection and blink rate.

Two closure signals, one detector:

* **Eye aspect ratio** when eye landmarks exist (T. Soukupova, J. Cech, "Real-time eye blink
  detection using facial landmarks", CVWW 2016):
  ``EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)``; it drops towards 0 as the lid closes.
  The closure signal is ``-EAR``.
* **Eye-region method** otherwise (no landmarks, only the tracked face box): the openness of
  each eye is the mean horizontal-gradient energy of its patch (iris edges) relative to the
  patch mean, and closure is its drop below the recent median (:class:`EyeRegionSignal`).  A
  blink lasts 100-400 ms (Caffier et al., Eur J Appl Physiol 89:319, 2003), so a few seconds of
  median follow pose and expression but not the blink.  This replaces the frame-differencing
  family of eye-region detectors (e.g. Grauman et al., "Communication via eye blinks", CVPR
  2001), which on our clips also fired on head turns and smiles (F1 0.74 against 0.94 on the
  tuning clips).

**Detector.**  A blink is a short transient of the closure signal above its local level
(:class:`BlinkDetector`), with hysteresis (the run ends below the half-way level) and a duration
of 50-600 ms.  Blink rate is events per minute over a window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from agent.vision.errors import VisionInputError
from agent.vision.face_tracker import Box
from agent.vision.skin_roi import region_box

#: Eye regions (right and left in the image) as fractions (x, y, w, h) of an OpenCV Haar
#: frontal-face box, whose eye line lies at ~0.38-0.44 of its height.
EYE_REGIONS: tuple[tuple[float, float, float, float], ...] = ((0.12, 0.35, 0.34, 0.16), (0.54, 0.35, 0.34, 0.16))

# Face-mesh (MediaPipe 468-point topology) indices of the six EAR points per eye, ordered
# p1 (outer corner), p2, p3 (upper lid), p4 (inner corner), p5, p6 (lower lid).
MESH_RIGHT_EYE = (33, 160, 158, 133, 153, 144)
MESH_LEFT_EYE = (362, 385, 387, 263, 373, 380)


@dataclass(frozen=True, slots=True)
class BlinkEvent:
    start_s: float
    end_s: float
    peak: float  # closure signal above the baseline, in robust SDs

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def eye_aspect_ratio(eye: np.ndarray) -> float:
    """EAR of one eye from its six landmarks (shape (6, 2)), Soukupova & Cech 2016 Eq. 1."""
    p = np.asarray(eye, dtype=np.float64)
    if p.shape != (6, 2):
        raise VisionInputError(f"eye_aspect_ratio: need 6 (x, y) points, got shape {p.shape}")
    horiz = np.linalg.norm(p[0] - p[3])
    if horiz <= 0:
        raise VisionInputError("eye_aspect_ratio: eye corners coincide")
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * horiz))


def mesh_ear(landmarks: np.ndarray) -> float:
    """Mean EAR of both eyes from 468 face-mesh landmarks."""
    lm = np.asarray(landmarks)
    if lm.ndim != 2 or lm.shape[0] < 468:
        raise VisionInputError(f"mesh_ear: need (468, 2+) landmarks, got shape {lm.shape}")
    return 0.5 * (eye_aspect_ratio(lm[list(MESH_RIGHT_EYE), :2]) + eye_aspect_ratio(lm[list(MESH_LEFT_EYE), :2]))


class EyeRegionSignal:
    """Closure signal from the two eye regions of a tracked face (no landmarks needed).

    An open eye shows the iris and pupil between sclera and lids: strong *horizontal* intensity
    changes (the vertical edges of the iris).  A closed eye shows lid skin and one horizontal
    lash line: almost none.  The mean absolute horizontal gradient of each eye patch, divided
    by the patch mean (so flicker and exposure cancel), is therefore an openness measure that
    does not depend on skin tone (a dark iris on light skin and a white sclera on dark skin both
    give edges) and barely on small misalignment (gradient energy is shift-invariant).  The
    closure signal is ``1 - openness / median(openness over the last few seconds)``: about 0
    with open eyes, 0.3-0.7 at full closure.
    """

    def __init__(self, fps: float, patch_size: tuple[int, int] = (24, 12), history_s: float = 3.0,
                 eyes: tuple[tuple[float, float, float, float], ...] = EYE_REGIONS) -> None:
        self.patch_size = patch_size
        self.eyes = eyes
        self._hist: deque[float] = deque(maxlen=max(8, int(history_s * fps)))
        self._ref = float("nan")
        self._n = 0
        self.freeze = False  # set by the caller while a blink is in progress

    def openness(self, gray: np.ndarray, face: Box) -> float:
        H, W = gray.shape[:2]
        total = 0.0
        for frac in self.eyes:
            x, y, w, h = region_box(face, frac)
            x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
            if x1 - x0 < 8 or y1 - y0 < 4:
                return float("nan")
            p = cv2.resize(gray[y0:y1, x0:x1], self.patch_size, interpolation=cv2.INTER_AREA).astype(np.float32)
            m = float(p.mean())
            if m <= 1.0:
                return float("nan")
            total += float(np.abs(np.diff(p, axis=1)).mean()) / m
        return total / len(self.eyes)

    def update(self, gray: np.ndarray, face: Box) -> float:
        v = self.openness(gray, face)
        if not np.isfinite(v):
            return float("nan")
        self._n += 1
        if not self.freeze:
            self._hist.append(v)
        if self._n % 3 == 1 or not np.isfinite(self._ref):
            self._ref = float(np.median(np.fromiter(self._hist, dtype=np.float64))) if self._hist else v
        return 1.0 - v / self._ref if self._ref > 0 else float("nan")


class EarSignal:
    """Closure signal from face-mesh landmarks: ``1 - EAR / median(EAR over a few seconds)``.

    Same scale as :class:`EyeRegionSignal` (about 0 open, 0.5-0.8 closed), so one detector
    setting serves both.
    """

    def __init__(self, fps: float, history_s: float = 3.0) -> None:
        self._hist: deque[float] = deque(maxlen=max(8, int(history_s * fps)))
        self.freeze = False

    def update(self, landmarks: np.ndarray) -> float:
        ear = mesh_ear(landmarks)
        if not self.freeze:
            self._hist.append(ear)
        ref = float(np.median(np.fromiter(self._hist, dtype=np.float64))) if self._hist else ear
        return 1.0 - ear / ref if ref > 0 else float("nan")


class BlinkDetector:
    """Streaming blink detector on a closure signal (larger = more closed).

    A blink is a transient: the signal rises above its *local* level of the last second (the
    0.3 s just before are skipped so the onset itself does not raise the reference) by more than
    ``k`` robust noise SDs and at least ``min_rise``, and falls back within ``max_duration_s``.
    The noise SD comes from first differences (MAD of ``diff / sqrt(2)``), which ignores slow
    excursions from head turns and expressions that would inflate an ordinary MAD.
    """

    def __init__(self, fps: float, k: float = 5.0, min_rise: float = 0.18, history_s: float = 10.0,
                 baseline_s: float = 1.0, gap_s: float = 0.3, min_duration_s: float = 0.05,
                 max_duration_s: float = 0.6, warmup_s: float = 1.0) -> None:
        if not fps > 0:
            raise VisionInputError(f"BlinkDetector: fps must be > 0, got {fps}")
        self.fps = fps
        self.k = k
        self.min_rise = min_rise
        self.min_duration_s = min_duration_s
        self.max_duration_s = max_duration_s
        self.warmup_n = int(warmup_s * fps)
        self._gap_n = max(1, int(round(gap_s * fps)))
        self._recent: deque[float] = deque(maxlen=self._gap_n + max(4, int(baseline_s * fps)))
        self._diffs: deque[float] = deque(maxlen=max(8, int(history_s * fps)))
        self._last = float("nan")
        self._sd = float("nan")
        self._base = 0.0
        self._thr = np.inf
        self._n = 0
        self._run_start: float | None = None
        self._run_last: float = 0.0
        self._run_peak = 0.0
        self._below = 0
        self.events: list[BlinkEvent] = []

    @property
    def in_blink(self) -> bool:
        return self._run_start is not None

    def update(self, t_s: float, closure: float) -> BlinkEvent | None:
        """Feed one sample; returns a blink when one has just ended."""
        if not np.isfinite(closure):
            self._last = float("nan")
            return self._close_run(False) if self._run_start is not None else None
        self._n += 1
        if np.isfinite(self._last) and self._run_start is None:
            self._diffs.append(abs(closure - self._last))
        self._last = closure
        if self._run_start is None:
            if self._n % 3 == 1 and len(self._diffs) >= 8:
                self._sd = 1.4826 * float(np.median(np.fromiter(self._diffs, np.float64))) / np.sqrt(2.0)
            if len(self._recent) > self._gap_n:
                ref = list(self._recent)[:-self._gap_n]
                self._base = float(np.median(ref))
            self._recent.append(closure)
            if self._n <= self.warmup_n or not np.isfinite(self._sd) or len(self._recent) <= self._gap_n + 3:
                return None
            self._thr = max(self.k * self._sd, self.min_rise)
            if closure - self._base > self._thr:
                self._run_start, self._run_last, self._run_peak, self._below = t_s, t_s, closure - self._base, 0
            return None
        rise = closure - self._base
        if rise > max(0.5 * self._thr, 0.4 * self._run_peak):  # ends when it has fallen back most of the way
            self._run_last, self._run_peak, self._below = t_s, max(self._run_peak, rise), 0
            if t_s - self._run_start > self.max_duration_s:  # a lasting change (head turn): not a blink
                return self._close_run(False)
            return None
        self._below += 1
        return self._close_run(True) if self._below >= 2 else None

    def _close_run(self, ok: bool) -> BlinkEvent | None:
        start, end, peak = self._run_start, self._run_last + 1.0 / self.fps, self._run_peak
        self._run_start = None
        self._recent.clear()  # restart the local level after the event
        if start is None or not ok:
            return None
        if self.min_duration_s <= end - start <= self.max_duration_s:
            ev = BlinkEvent(start, end, peak / self._sd if self._sd > 0 else float("inf"))
            self.events.append(ev)
            return ev
        return None

    def rate_per_min(self, t_now_s: float, window_s: float = 60.0, t_first_s: float = 0.0,
                     min_span_s: float = 10.0) -> float | None:
        """Blinks per minute over the last ``window_s`` (or since ``t_first_s`` if shorter)."""
        span = min(window_s, t_now_s - t_first_s)
        if span < min_span_s:
            return None
        n = sum(1 for e in self.events if e.start_s >= t_now_s - span)
        return 60.0 * n / span


def detect_blinks(t_s: np.ndarray, closure: np.ndarray, fps: float, **kwargs: float) -> list[BlinkEvent]:
    """Offline convenience: run :class:`BlinkDetector` over a whole series."""
    det = BlinkDetector(fps, **kwargs)
    for t, c in zip(np.asarray(t_s, float), np.asarray(closure, float), strict=True):
        det.update(float(t), float(c))
    det.update(float(t_s[-1]) + 1.0 / fps, float("nan"))
    return det.events


def match_events(detected: list[tuple[float, float]], truth: list[tuple[float, float]],
                 tolerance_s: float = 0.2) -> tuple[int, int, int]:
    """Greedy one-to-one matching of intervals that overlap (within ``tolerance_s``).

    Returns (true positives, false positives, false negatives).
    """
    used = [False] * len(truth)
    tp = 0
    for ds, de in sorted(detected):
        best, best_d = -1, np.inf
        for j, (ts, te) in enumerate(truth):
            if used[j] or ds > te + tolerance_s or de < ts - tolerance_s:
                continue
            d = abs(0.5 * (ds + de) - 0.5 * (ts + te))
            if d < best_d:
                best, best_d = j, d
        if best >= 0:
            used[best] = True
            tp += 1
    return tp, len(detected) - tp, len(truth) - tp
