"""Simple facial tension cues relative to the person's own neutral face.

Not an emotion classifier: two Action-Unit-like measurements (P. Ekman, W. Friesen, *Facial
Action Coding System*, 1978) that acute stress is known to raise, taken relative to the
person's neutral face learnt at the start of the track:

* **Brow lowering (AU4, "corrugator")** -- brows drawn down and together, the most consistent
  facial sign of negative affect and mental effort (e.g. Larsen, Norris & Cacioppo,
  "Effects of positive and negative affect on electromyographic activity over zygomaticus major
  and corrugator supercilii", Psychophysiology 40:776, 2003).  Measured as the vertical shift of
  the brow band's row-intensity profile against its neutral profile (1-D cross-correlation,
  parabolic sub-row peak), in face heights, positive = lowered.  A brow *raise* (surprise, a
  calm cue here) is negative and does not count as tension.
* **Lip press (AU23/24)** -- pressed lips show less of the (darker) lip: the share of dark pixels
  in the mouth region falls.  A smile (AU12) stretches the lips and raises it.  The cue is the
  relative fall of that share from neutral, positive = pressed.

The neutral references are the running mean over the first ``neutral_s`` seconds of the track
and are then frozen; the abnormal-state stage turns the raw cues into z-scores against the same
baseline period.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.vision.face_tracker import Box
from agent.vision.skin_roi import region_box

#: Regions as fractions (x, y, w, h) of a Haar frontal-face box.
BROW_BAND = (0.16, 0.20, 0.68, 0.18)
MOUTH = (0.28, 0.70, 0.44, 0.22)

_PROFILE_ROWS = 32
_MAX_SHIFT = 4


@dataclass(frozen=True, slots=True)
class ExpressionCues:
    brow_lowering: float  # face heights, + = lowered (NaN before the neutral face is known)
    lip_press: float  # relative fall of the dark (lip) share of the mouth region, + = pressed

    def as_dict(self) -> dict[str, float]:
        return {"brow_lowering": self.brow_lowering, "lip_press": self.lip_press}


def _crop(gray: np.ndarray, face: Box, frac: tuple[float, float, float, float]) -> np.ndarray | None:
    x, y, w, h = region_box(face, frac)
    H, W = gray.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 - x0 < 6 or y1 - y0 < 6:
        return None
    return gray[y0:y1, x0:x1]


def brow_profile(gray: np.ndarray, face: Box) -> np.ndarray | None:
    """Row-mean intensity of the brow band, resampled to 32 rows, zero mean, unit SD."""
    c = _crop(gray, face, BROW_BAND)
    if c is None:
        return None
    prof = cv2.resize(c, (8, _PROFILE_ROWS), interpolation=cv2.INTER_AREA).astype(np.float32).mean(axis=1)
    sd = float(prof.std())
    return (prof - prof.mean()) / sd if sd > 0 else None


def profile_shift(ref: np.ndarray, cur: np.ndarray, max_shift: int = _MAX_SHIFT) -> float:
    """Sub-row shift of ``cur`` against ``ref`` (positive = moved down)."""
    n = ref.size
    shifts = np.arange(-max_shift, max_shift + 1)
    score = np.array([float(np.dot(ref[max(0, -s):n - max(0, s)], cur[max(0, s):n - max(0, -s)]))
                      / (n - abs(s)) for s in shifts])
    k = int(np.argmax(score))
    if 0 < k < shifts.size - 1:
        y0, y1, y2 = score[k - 1:k + 2]
        den = y0 - 2 * y1 + y2
        return float(shifts[k] + (0.5 * (y0 - y2) / den if den < 0 else 0.0))
    return float(shifts[k])


def dark_share(gray: np.ndarray, face: Box) -> float:
    """Share of mouth-region pixels darker than 88 % of the region median (lips, lip line)."""
    c = _crop(gray, face, MOUTH)
    if c is None:
        return float("nan")
    med = float(np.median(c))
    return float(np.mean(c < 0.88 * med)) if med > 0 else float("nan")


class ExpressionTracker:
    """Per-face tension cues; one instance per track."""

    def __init__(self, fps: float, neutral_s: float = 8.0) -> None:
        self.neutral_n = max(1, int(neutral_s * fps))
        self._n = 0
        self._prof_sum: np.ndarray | None = None
        self._dark_sum = 0.0
        self._prof_ref: np.ndarray | None = None
        self._dark_ref = float("nan")

    @property
    def neutral_ready(self) -> bool:
        return self._prof_ref is not None

    def update(self, gray: np.ndarray, face: Box) -> ExpressionCues:
        nan = float("nan")
        prof = brow_profile(gray, face)
        dark = dark_share(gray, face)
        if prof is None or not np.isfinite(dark):
            return ExpressionCues(nan, nan)
        if self._prof_ref is None:
            self._n += 1
            self._prof_sum = prof if self._prof_sum is None else self._prof_sum + prof
            self._dark_sum += dark
            if self._n >= self.neutral_n:
                ref = self._prof_sum / self._n
                self._prof_ref = (ref - ref.mean()) / max(float(ref.std()), 1e-6)
                self._dark_ref = self._dark_sum / self._n
            return ExpressionCues(nan, nan)
        shift_rows = profile_shift(self._prof_ref, prof)
        brow_lowering = shift_rows * BROW_BAND[3] / _PROFILE_ROWS
        lip_press = (self._dark_ref - dark) / self._dark_ref if self._dark_ref > 0 else nan
        return ExpressionCues(brow_lowering, lip_press)
