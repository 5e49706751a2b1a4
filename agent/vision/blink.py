"""Blink detection and blink rate.

Two closure signals, one detector:

* **Eye aspect ratio** when eye landmarks exist (T. Soukupova, J. Cech, "Real-time eye blink
  detection using facial landmarks", CVWW 2016):
  ``EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)``; it drops towards 0 as the lid closes.
  The closure signal is ``-EAR``.
* **Eye-region method** otherwise (no landmarks, only the tracked face box): the eye band of
  the face is reduced to a small, mean-normalised patch and compared with a slowly updated
  template of the *open* eyes.  A closing lid replaces the dark iris/pupil and the bright
  sclera by lid skin, so the patch departs from the open-eye template for the 100-400 ms of a
  blink (durations: Caffier et al., Eur J Appl Physiol 89:319, 2003).  Normalising by the
  patch mean makes the signal insensitive to flicker and exposure; the template absorbs slow
  changes (expression, pose).  This is the frame-differencing family of eye-region blink
  detectors (e.g. Grauman et al., "Communication via eye blinks", CVPR 2001), with the reference
  frame replaced by a template so that a blink gives one peak, not two.

**Detector.**  A blink is a run of frames where the closure signal exceeds an adaptive
threshold ``median + k * 1.4826 * MAD`` of the last ``history_s`` seconds (robust to the blinks
themselves), with hysteresis (the run ends below the half-way level), merged across one-frame
gaps and kept when its duration is 50-700 ms.  Blink rate is events per minute over a window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from agent.vision.errors import VisionInputError
from agent.vision.face_tracker import Box
from agent.vision.skin_roi import region_box

#: Eye band as a fraction (x, y, w, h) of an OpenCV Haar frontal-face box.
EYE_BAND: tuple[float, float, float, float] = (0.14, 0.355, 0.72, 0.15)

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
    """Closure signal from the eye band of a tracked face (no landmarks needed).

    ``update(gray, face)`` returns the mean absolute difference between the current normalised
    eye patch and the open-eye template; larger means more closed (or otherwise changed).
    """

    def __init__(self, fps: float, patch_size: tuple[int, int] = (48, 12), template_tau_s: float = 1.0,
                 band: tuple[float, float, float, float] = EYE_BAND) -> None:
        self.patch_size = patch_size
        self.band = band
        self._alpha = 1.0 - np.exp(-1.0 / (template_tau_s * fps))
        self._template: np.ndarray | None = None
        self.freeze = False  # set by the caller while a blink is in progress

    def update(self, gray: np.ndarray, face: Box) -> float:
        x, y, w, h = region_box(face, self.band)
        H, W = gray.shape[:2]
        x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
        if x1 - x0 < 8 or y1 - y0 < 4:
            return float("nan")
        patch = cv2.resize(gray[y0:y1, x0:x1], self.patch_size, interpolation=cv2.INTER_AREA).astype(np.float32)
        m = float(patch.mean())
        if m <= 1.0:
            return float("nan")
        patch /= m
        if self._template is None:
            self._template = patch
            return 0.0
        d = float(np.abs(patch - self._template).mean())
        if not self.freeze:
            self._template += self._alpha * (patch - self._template)
        return d


class BlinkDetector:
    """Streaming blink detector on a closure signal (larger = more closed)."""

    def __init__(self, fps: float, k: float = 4.0, history_s: float = 10.0, min_duration_s: float = 0.05,
                 max_duration_s: float = 0.7, warmup_s: float = 1.0) -> None:
        if not fps > 0:
            raise VisionInputError(f"BlinkDetector: fps must be > 0, got {fps}")
        self.fps = fps
        self.k = k
        self.min_duration_s = min_duration_s
        self.max_duration_s = max_duration_s
        self.warmup_n = int(warmup_s * fps)
        self._hist: deque[float] = deque(maxlen=max(8, int(history_s * fps)))
        self._med = 0.0
        self._sd = 1.0
        self._n = 0
        self._run_start: float | None = None
        self._run_last: float = 0.0
        self._run_peak = 0.0
        self._gap = 0
        self.events: list[BlinkEvent] = []

    @property
    def in_blink(self) -> bool:
        return self._run_start is not None

    def update(self, t_s: float, closure: float) -> BlinkEvent | None:
        """Feed one sample; returns a blink when one has just ended."""
        if not np.isfinite(closure):
            return self._close_run() if self._run_start is not None else None
        self._n += 1
        if self._n % 5 == 1 or self._n < self.warmup_n:  # robust stats every few frames is plenty
            if len(self._hist) >= 8:
                h = np.fromiter(self._hist, dtype=np.float64)
                self._med = float(np.median(h))
                self._sd = max(1.4826 * float(np.median(np.abs(h - self._med))), 1e-6)
        z = (closure - self._med) / self._sd
        if self._run_start is None:
            self._hist.append(closure)
        done = None
        if self._n <= self.warmup_n:
            return None
        if self._run_start is None:
            if z > self.k:
                self._run_start, self._run_last, self._run_peak, self._gap = t_s, t_s, z, 0
        elif z > 0.5 * self.k:
            self._run_last, self._run_peak, self._gap = t_s, max(self._run_peak, z), 0
            if t_s - self._run_start > 2.0 * self.max_duration_s:  # a long change: not a blink
                self._run_start = None
                self._hist.append(closure)
        else:
            self._gap += 1
            if self._gap > 1:
                done = self._close_run()
        return done

    def _close_run(self) -> BlinkEvent | None:
        start, end, peak = self._run_start, self._run_last + 1.0 / self.fps, self._run_peak
        self._run_start = None
        if start is None:
            return None
        dur = end - start
        if self.min_duration_s <= dur <= self.max_duration_s:
            ev = BlinkEvent(start, end, peak)
            self.events.append(ev)
            return ev
        return None

    def rate_per_min(self, t_now_s: float, window_s: float = 60.0, t_first_s: float = 0.0) -> float | None:
        """Blinks per minute over the last ``window_s`` (or since ``t_first_s`` if shorter)."""
        span = min(window_s, t_now_s - t_first_s)
        if span < 10.0:
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
