"""People as moving foreground blobs of a fixed camera: MOG2 background subtraction.

A fixed CCTV camera sees the same hall all day, so the cheapest person detector is the difference
from a background model.  OpenCV's MOG2 (Zivkovic 2004, "Improved adaptive Gaussian mixture model for
background subtraction"; Zivkovic & van der Heijden 2006) keeps a per-pixel Gaussian mixture that
adapts to slow lighting changes, and labels shadows separately (value 127), which are dropped here:
a shadow box would put the foot point metres away.

Blob -> box: morphological opening (noise) and closing (a person split at the belt by a similar
background colour), connected components, then a person-size check against the calibration: the
expected pixel size of a 1.7 m person at the blob's foot point.  A blob much wider than one person
is split into side-by-side people (two travellers walking together).  Each box's confidence says how
much it looks like one standing person (size ratio, fill), which feeds ByteTrack's two stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.cctv.camera_calibration import CameraCalibration
from agent.cctv.detections import Detection
from agent.cctv.ground_plane import expected_box_px


@dataclass(frozen=True)
class MotionParams:
    history_frames: int = 300  #: ~ 20-30 s at 10-15 fps: a standing traveller fades in after that
    var_threshold: float = 16.0  #: MOG2's squared Mahalanobis distance (OpenCV default)
    learning_rate: float = -1.0  #: -1: OpenCV's automatic 1/history
    min_area_px: int = 60
    open_px: int = 3
    close_px: int = 7
    max_split: int = 4  #: at most this many people side by side in one blob


class MotionDetector:
    """Foreground blobs of one fixed camera as person detections."""

    def __init__(self, calib: CameraCalibration | None = None, params: MotionParams | None = None):
        self.p = params or MotionParams()
        self.calib = calib
        self.mog = cv2.createBackgroundSubtractorMOG2(history=self.p.history_frames,
                                                      varThreshold=self.p.var_threshold, detectShadows=True)
        self._k_open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (self.p.open_px, self.p.open_px))
        self._k_close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (self.p.close_px, self.p.close_px * 2 + 1))
        self.mask: np.ndarray | None = None  #: the last frame's cleaned foreground mask (for appearance)

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        fg = self.mog.apply(frame_bgr, learningRate=self.p.learning_rate)
        fg = np.where(fg == 255, 255, 0).astype(np.uint8)  # drop shadows (127)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._k_open)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._k_close)
        self.mask = fg
        n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        dets: list[Detection] = []
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < self.p.min_area_px:
                continue
            dets += self._boxes_of_blob(x, y, w, h, area)
        return dets

    def _boxes_of_blob(self, x: int, y: int, w: int, h: int, area: int) -> list[Detection]:
        fill = area / max(w * h, 1)
        exp = expected_box_px(self.calib, (x + w / 2, y + h)) if self.calib is not None else None
        if exp is None:  # no calibration: judge by the aspect ratio of a standing person (~0.3-0.5)
            aspect = w / max(h, 1)
            score = float(np.clip(1.0 - abs(aspect - 0.4) / 0.6, 0.05, 1.0) * np.clip(fill * 1.6, 0.2, 1.0))
            return [Detection(np.array([x, y, w, h], float), score, "mog2")]
        ew, eh = exp
        k = int(np.clip(round(w / max(ew, 1.0)), 1, self.p.max_split)) if w > 1.6 * ew else 1
        size_ratio = h / max(eh, 1.0)
        # a person of 1.45-2.0 m standing at the foot point: ratio ~0.85-1.2; occluded/partial lower
        size_score = float(np.exp(-0.5 * (np.log(max(size_ratio, 1e-3)) / 0.25) ** 2))
        score = float(np.clip(size_score * np.clip(fill * 1.6, 0.3, 1.0), 0.05, 1.0))
        if k == 1:
            return [Detection(np.array([x, y, w, h], float), score, "mog2")]
        step = w / k
        return [Detection(np.array([x + j * step, y, step, h], float), score * 0.8, "mog2") for j in range(k)]
