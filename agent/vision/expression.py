"""Simple facial tension cues relative to the person's own neutral face.

Not an emotion classifier: two Action-Unit-like measurements (P. Ekman, W. Friesen, *Facial
Action Coding System*, 1978) that acute stress is known to raise, taken relative to the
person's neutral face learnt at the start of the track:

* **Brow lowering (AU4, "corrugator")** -- the brows are drawn down and together, which is the
  most consistent facial sign of negative affect and mental effort (e.g. Larsen, Norris &
  Cacioppo, "Effects of positive and negative affect on electromyographic activity over
  zygomaticus major and corrugator supercilii", Psychophysiology 40:776, 2003).  Measured as the
  vertical shift of the brow band against its neutral template (sub-pixel phase correlation,
  Kuglin & Hines 1975), in units of face height, positive = lowered.  A brow *raise*
  (surprise, a calm cue here) gives a negative value and does not count as tension.
* **Glabella furrowing** -- AU4 also creases the skin between the brows vertically; the ratio of
  horizontal-gradient energy in the glabella to its neutral value rises.
* **Mouth change** (lip press/tightening, AU23/24) -- the normalised mouth patch's departure
  from its neutral template.  Smiles move the mouth too, so this cue alone is weak and is
  weighted down by the fusion stage.

The neutral templates are the running mean over the first ``neutral_s`` seconds of the track
and are then frozen; the abnormal-state stage turns the raw cues into z-scores against the
same baseline period.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.vision.face_tracker import Box
from agent.vision.skin_roi import region_box

#: Regions as fractions (x, y, w, h) of a Haar frontal-face box.
BROW_BAND = (0.16, 0.20, 0.68, 0.18)
GLABELLA = (0.40, 0.30, 0.20, 0.12)
MOUTH = (0.25, 0.70, 0.50, 0.26)


@dataclass(frozen=True, slots=True)
class ExpressionCues:
    brow_lowering: float  # face heights, + = lowered (NaN before the neutral face is known)
    glabella_ratio: float  # furrow energy / neutral
    mouth_change: float  # mean |patch - neutral|, relative units

    def as_dict(self) -> dict[str, float]:
        return {"brow_lowering": self.brow_lowering, "glabella_ratio": self.glabella_ratio,
                "mouth_change": self.mouth_change}


def _patch(gray: np.ndarray, face: Box, frac: tuple[float, float, float, float],
           size: tuple[int, int]) -> np.ndarray | None:
    x, y, w, h = region_box(face, frac)
    H, W = gray.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 - x0 < 6 or y1 - y0 < 6:
        return None
    p = cv2.resize(gray[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA).astype(np.float32)
    m = float(p.mean())
    return p / m if m > 1.0 else None


class ExpressionTracker:
    """Per-face tension cues; one instance per track."""

    def __init__(self, fps: float, neutral_s: float = 8.0) -> None:
        self.neutral_n = max(1, int(neutral_s * fps))
        self._n = 0
        self._brow_sum: np.ndarray | None = None
        self._mouth_sum: np.ndarray | None = None
        self._glab_sum = 0.0
        self._brow_t: np.ndarray | None = None
        self._mouth_t: np.ndarray | None = None
        self._glab_t = 0.0
        self._win = cv2.createHanningWindow((32, 16), cv2.CV_32F)

    @property
    def neutral_ready(self) -> bool:
        return self._brow_t is not None

    def update(self, gray: np.ndarray, face: Box) -> ExpressionCues:
        nan = float("nan")
        brow = _patch(gray, face, BROW_BAND, (32, 16))
        mouth = _patch(gray, face, MOUTH, (24, 12))
        glab = _patch(gray, face, GLABELLA, (12, 12))
        if brow is None or mouth is None or glab is None:
            return ExpressionCues(nan, nan, nan)
        g_energy = float(np.abs(np.diff(glab, axis=1)).mean())
        if self._brow_t is None:
            self._n += 1
            self._brow_sum = brow if self._brow_sum is None else self._brow_sum + brow
            self._mouth_sum = mouth if self._mouth_sum is None else self._mouth_sum + mouth
            self._glab_sum += g_energy
            if self._n >= self.neutral_n:
                self._brow_t = self._brow_sum / self._n
                self._mouth_t = self._mouth_sum / self._n
                self._glab_t = max(self._glab_sum / self._n, 1e-6)
            return ExpressionCues(nan, nan, nan)
        (_, dy), _resp = cv2.phaseCorrelate(self._brow_t, brow, self._win)
        face_h = face[3]
        band_h_px = BROW_BAND[3] * face_h
        brow_lowering = float(dy) * band_h_px / 16.0 / face_h  # patch px -> face heights
        assert self._mouth_t is not None
        mouth_change = float(np.abs(mouth - self._mouth_t).mean())
        return ExpressionCues(brow_lowering, g_energy / self._glab_t, mouth_change)
