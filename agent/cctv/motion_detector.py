"""People as moving foreground blobs of a fixed camera: MOG2 background subtraction.

A fixed CCTV camera sees the same hall all day, so the cheapest person detector is the difference
from a background model.  OpenCV's MOG2 (Zivkovic 2004, "Improved adaptive Gaussian mixture model for
background subtraction"; Zivkovic & van der Heijden 2006) keeps a per-pixel Gaussian mixture that
adapts to slow lighting changes, and labels shadows separately (value 127), which are dropped here:
a shadow box would put the foot point metres away.

Selective update (Cucchiara et al. 2003, "Detecting moving objects, ghosts and shadows in video
streams", IEEE PAMI 25(10)): a traveller who stops (loitering, waiting at a belt) would otherwise melt
into the background within seconds and his track would die exactly when a rule needs it.  So the
pixels of people being tracked are not learnt: the foreground is computed without learning, then the
model learns from a frame whose tracked boxes are replaced by the current background image.  Boxes of
tracks that never moved since birth are learnt normally, so a ghost (a person who was there when the
camera started, then left) still fades.  Detection runs at ``scale`` (0.5: a quarter of the pixels).

Lighting: the hall's light changes (daylight, lamps switching) shift every pixel at once, which MOG2
would report as one frame-sized blob.  Each frame is first scaled to the running mean brightness
(global gain compensation), and a frame still more than ``max_fg_fraction`` foreground is taken as a
lighting jump: the model relearns fast and the frame yields no detections (tracks coast on Kalman).

Blob -> box: morphological opening (noise) and closing (a person split at the belt by a similar
background colour), connected components, then a person-size check against the calibration: the
expected pixel size of a 1.7 m person at the blob's foot point.  A blob much wider than one person
is split into side-by-side people (two travellers walking together).  A blob cut by the image border is
completed to a whole person with the same calibration (feet from the head when the bottom is cut,
head from the feet when the top is), so that its foot point, and the box compared with whole-body
ground truth, are right; its confidence is lowered by the fraction that is cut.  Each box's confidence says how
much it looks like one standing person (size ratio, fill), which feeds ByteTrack's two stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.cctv.camera_calibration import CameraCalibration
from agent.cctv.detections import Detection
from agent.cctv.ground_plane import expected_box_px, foot_from_head


@dataclass(frozen=True)
class MotionParams:
    history_frames: int = 300  #: ~ 20-30 s at 10-15 fps: a standing traveller fades in after that
    var_threshold: float = 16.0  #: MOG2's squared Mahalanobis distance (OpenCV default)
    #: fixed 1/history from the start: OpenCV's automatic rate (1/frames seen) would absorb anyone
    #: walking in during the first seconds (at frame 13 a person is background after 2 frames)
    learning_rate: float = 1.0 / 300
    min_area_px: int = 60
    open_px: int = 3
    close_px: int = 7
    max_split: int = 4  #: at most this many people side by side in one blob
    scale: float = 0.5  #: detection resolution relative to the frame
    gain_tau_frames: float = 200.0  #: time constant of the reference brightness
    max_fg_fraction: float = 0.35  #: above: a lighting jump, not people


class MotionDetector:
    """Foreground blobs of one fixed camera as person detections."""

    def __init__(self, calib: CameraCalibration | None = None, params: MotionParams | None = None):
        self.p = params or MotionParams()
        self.calib = calib
        self.mog = cv2.createBackgroundSubtractorMOG2(history=self.p.history_frames,
                                                      varThreshold=self.p.var_threshold, detectShadows=True)
        o = max(1, round(self.p.open_px * self.p.scale))
        c = max(1, round(self.p.close_px * self.p.scale))
        self._k_open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (o, o))
        self._k_close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (c, c * 2 + 1))
        self.mask: np.ndarray | None = None  #: the last frame's cleaned foreground mask (for appearance)
        self._ref_mean: float | None = None
        self.lighting_jumps = 0

    def detect(self, frame_bgr: np.ndarray, hold_boxes: list[np.ndarray] | None = None) -> list[Detection]:
        """Person boxes (full-frame pixels); ``hold_boxes`` are tracked people not to be learnt."""
        s = self.p.scale
        small = frame_bgr if s == 1.0 else cv2.resize(frame_bgr, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        mean = float(small[::4, ::4].mean())
        if self._ref_mean is None:
            self._ref_mean = mean
        if mean > 1.0:
            small = cv2.convertScaleAbs(small, alpha=self._ref_mean / mean)
        self._ref_mean += (mean - self._ref_mean) / self.p.gain_tau_frames
        if hold_boxes:
            fg = self.mog.apply(small, learningRate=0.0)
            learn = small.copy()
            bg = self.mog.getBackgroundImage()
            H, W = small.shape[:2]
            for b in hold_boxes:
                x0, y0 = int(max(0, b[0] * s - 2)), int(max(0, b[1] * s - 2))
                x1, y1 = int(min(W, (b[0] + b[2]) * s + 2)), int(min(H, (b[1] + b[3]) * s + 2))
                if x1 > x0 and y1 > y0:
                    learn[y0:y1, x0:x1] = bg[y0:y1, x0:x1]
            self.mog.apply(learn, learningRate=self.p.learning_rate)
        else:
            fg = self.mog.apply(small, learningRate=self.p.learning_rate)
        fg = np.where(fg == 255, 255, 0).astype(np.uint8)  # drop shadows (127)
        if np.count_nonzero(fg) > self.p.max_fg_fraction * fg.size:
            self.lighting_jumps += 1
            self.mog.apply(small, learningRate=0.2)
            self.mask = np.zeros(frame_bgr.shape[:2], np.uint8)
            return []
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._k_open)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._k_close)
        self.mask = fg if s == 1.0 else cv2.resize(fg, (frame_bgr.shape[1], frame_bgr.shape[0]),
                                                   interpolation=cv2.INTER_NEAREST)
        n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        min_area = self.p.min_area_px * s * s
        blobs = [[float(v) / s for v in stats[i][:4]] + [float(stats[i][4]) / (s * s)]
                 for i in range(1, n) if stats[i][4] >= min_area]
        dets: list[Detection] = []
        for x, y, w, h, area in self._merge_stacked(blobs):
            dets += self._boxes_of_blob(x, y, w, h, area, frame_bgr.shape[:2])
        return dets

    def _merge_stacked(self, blobs: list[list[float]]) -> list[list[float]]:
        """Join a blob with the one right below it when together they make one person's height.

        A person whose trousers match the floor falls apart at the waist into a torso blob and a
        feet blob; each alone has the wrong size and the torso's "foot point" would be a metre off.
        """
        if self.calib is None or len(blobs) < 2:
            return blobs
        blobs = sorted(blobs, key=lambda b: b[1])
        merged = True
        while merged:
            merged = False
            for i in range(len(blobs)):
                for j in range(len(blobs)):
                    if i == j:
                        continue
                    a, b = blobs[i], blobs[j]  # a above b?
                    if b[1] < a[1]:
                        continue
                    ov = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
                    if ov < 0.5 * min(a[2], b[2]):
                        continue
                    x0, y0 = min(a[0], b[0]), a[1]
                    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
                    exp = expected_box_px(self.calib, ((x0 + x1) / 2, y1))
                    if exp is None or b[1] - (a[1] + a[3]) > 0.3 * exp[1] or y1 - y0 > 1.25 * exp[1]:
                        continue
                    blobs[i] = [x0, y0, x1 - x0, y1 - y0, a[4] + b[4]]
                    del blobs[j]
                    merged = True
                    break
                if merged:
                    break
        return blobs

    def _boxes_of_blob(self, x: float, y: float, w: float, h: float, area: float,
                       shape: tuple[int, int]) -> list[Detection]:
        fill = area / max(w * h, 1)
        H, W = shape
        edge = 2.0 / self.p.scale
        cut_top, cut_bottom = y <= edge, y + h >= H - edge
        visible = 1.0
        if self.calib is not None and cut_bottom and not cut_top:
            foot = foot_from_head(self.calib, (x + w / 2, y))
            if foot is not None and foot[1] > y + h:
                visible = h / (foot[1] - y)
                h = foot[1] - y
        exp = expected_box_px(self.calib, (x + w / 2, y + h)) if self.calib is not None else None
        if exp is not None and cut_top and not cut_bottom and exp[1] > h:
            visible = h / exp[1]
            y, h = y + h - exp[1], exp[1]
        if exp is not None and (x <= edge or x + w >= W - edge) and exp[0] > w:
            visible *= w / exp[0]
            x, w = (x + w - exp[0], exp[0]) if x <= edge else (x, exp[0])
        if exp is None:  # no calibration: judge by the aspect ratio of a standing person (~0.3-0.5)
            aspect = w / max(h, 1)
            score = float(np.clip(1.0 - abs(aspect - 0.4) / 0.6, 0.05, 1.0) * np.clip(fill * 1.6, 0.2, 1.0))
            return [Detection(np.array([x, y, w, h], float), score, "mog2")]
        ew, eh = exp
        k = int(np.clip(round(w / max(ew, 1.0)), 1, self.p.max_split)) if w > 1.7 * ew else 1
        size_ratio = h / max(eh, 1.0)
        # a person of 1.45-2.0 m standing at the foot point: ratio ~0.85-1.2; occluded/partial lower
        size_score = float(np.exp(-0.5 * (np.log(max(size_ratio, 1e-3)) / 0.25) ** 2))
        score = float(np.clip(size_score * np.clip(fill * 1.6, 0.3, 1.0) * (0.4 + 0.6 * visible), 0.05, 1.0))
        if k == 1:
            if w < ew:  # thin arms and a bag strap fall to the morphology: the box is a person's box
                x, w = x + w / 2 - ew / 2, ew
            return [Detection(np.array([x, y, w, h], float), score, "mog2")]
        step = w / k
        return [Detection(np.array([x + j * step, y, step, h], float), score * 0.8, "mog2") for j in range(k)]
