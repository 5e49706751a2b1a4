"""Face detection and tracking with anonymous track ids.

Detection uses OpenCV's Viola-Jones Haar cascade (P. Viola, M. Jones, "Rapid object detection
using a boosted cascade of simple features", CVPR 2001; Lienhart & Maydt's extended feature set,
ICIP 2002) shipped in ``cv2.data.haarcascades`` of opencv-python(-headless) 4.x.  Detection is
the expensive step (~15 ms for a 320x240 full-frame scan), so it runs

* around each existing track every ``detect_every`` frames (a small window, ~1 ms), and
* over the whole (downscaled) frame every ``full_scan_every`` frames, to pick up new faces.

Between detections each face is followed by pyramidal Lucas-Kanade optical flow (J.-Y. Bouguet,
"Pyramidal implementation of the Lucas Kanade feature tracker", Intel 2001) of Shi-Tomasi
corners (CVPR 1994) inside the face, with a forward-backward consistency check (Kalal et al.,
"Forward-backward error", ICPR 2010).  The box moves by the median point displacement and scales
by the median change of point spread.  Tracking rather than re-detecting every frame keeps the
box -- and therefore the skin region whose mean colour carries the pulse -- steady to a fraction
of a pixel; Haar boxes jitter by several pixels from frame to frame, which would swamp a 0.1 %
colour change.  Detections only nudge the tracked box to remove drift.

Privacy: a track id is a random 32-bit number drawn when the track starts.  It is not derived
from the face and no face image is kept by this module.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from agent.hal.interfaces import DeviceUnavailable
from agent.vision.errors import VisionInputError

Box = tuple[float, float, float, float]  # x, y, w, h in full-resolution pixels

DEFAULT_CASCADE = "haarcascade_frontalface_alt2.xml"


@dataclass
class Track:
    """One face followed over time.  ``box`` is in full-resolution pixel coordinates."""

    track_id: str
    box: Box
    n_frames: int = 0
    missed_detections: int = 0
    detected_this_frame: bool = False
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 2), np.float32))
    landmarks: np.ndarray | None = None  # (468, 2) when a face-mesh model is configured
    pending: np.ndarray = field(default_factory=lambda: np.zeros(4))  # detection correction still to apply

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def load_cascade(name_or_path: str = DEFAULT_CASCADE) -> cv2.CascadeClassifier:
    """Load a Haar cascade by file name (looked up in ``cv2.data.haarcascades``) or path."""
    path = Path(name_or_path)
    if not path.is_file():
        data = getattr(cv2, "data", None)
        if data is None:
            raise DeviceUnavailable("face detector: this OpenCV build has no cv2.data (Haar cascades "
                                    "ship with opencv-python-headless 4.x, not 5.x)")
        path = Path(data.haarcascades) / name_or_path
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise DeviceUnavailable(f"face detector: cannot load Haar cascade '{path}'")
    return cascade


class FaceTracker:
    """Detect faces every few frames and track them with KLT in between.

    ``update(gray)`` takes one full-resolution grayscale frame and returns the live tracks.
    """

    def __init__(self, detect_every: int = 10, full_scan_every: int = 60, detect_width: int = 320,
                 min_face_frac: float = 0.12, max_missed_detections: int = 15, max_tracks: int = 4,
                 cascade: str = DEFAULT_CASCADE, fallback_cascade: str | None = "haarcascade_frontalface_default.xml",
                 detect_gamma: float = 0.5, reid_s: float = 3.0, fps: float = 30.0,
                 seed: int | None = None) -> None:
        if detect_every < 1 or full_scan_every < 1:
            raise VisionInputError("FaceTracker: detect_every and full_scan_every must be >= 1")
        self.detect_every = detect_every
        self.full_scan_every = full_scan_every
        self.detect_width = detect_width
        self.min_face_frac = min_face_frac
        self.max_missed_detections = max_missed_detections
        self.max_tracks = max_tracks
        self._cascade = load_cascade(cascade)
        self._fallback = load_cascade(fallback_cascade) if fallback_cascade else None
        self._clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
        self._reid_frames = int(reid_s * fps)
        self._pending_rate = 1.0 - np.exp(-1.0 / (0.6 * fps))  # detection corrections: tau 0.6 s
        self._lost: list[tuple[int, Track]] = []  # (frame index when lost, track) for re-identification
        # Gamma < 1 lifts shadows before detection: Haar features are intensity differences, and
        # on dark skin (Fitzpatrick V-VI) under ordinary light the eye/cheek contrast they rely on
        # is squeezed into the lowest ~60 grey levels.  Measured on our synthetic faces: without
        # it the cascade misses most type VI faces.  CLAHE (contrast-limited adaptive histogram
        # equalisation, Zuiderveld, Graphics Gems IV, 1994) then equalises locally, which recovers
        # dark faces in front of a bright wall: on our type V-VI clips with head motion the
        # detection rate rose from ~0.3 to ~0.8 per frame.
        self._lut = np.clip(255.0 * (np.arange(256) / 255.0) ** detect_gamma + 0.5, 0, 255).astype(np.uint8)
        self._rng = random.Random(seed) if seed is not None else random.SystemRandom()
        self._prev: np.ndarray | None = None
        self._frame_index = 0
        self.tracks: list[Track] = []

    # ------------------------------------------------------------------ public
    def update(self, gray: np.ndarray) -> list[Track]:
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise VisionInputError(f"FaceTracker.update: need a 2-D uint8 grayscale frame, got "
                                   f"{gray.dtype} {gray.shape}")
        if self._prev is not None and self._prev.shape != gray.shape:
            self.tracks = []  # resolution changed: start over
            self._prev = None
        for tr in self.tracks:
            tr.detected_this_frame = False
            if self._prev is not None:
                self._follow(tr, self._prev, gray)
        self._drop([t for t in self.tracks if not self._inside(t.box, gray.shape) or t.points.shape[0] < 4])
        i = self._frame_index
        if i % self.full_scan_every == 0 or (not self.tracks and i % self.detect_every == 0):
            self._associate(gray, self._detect(gray, None), full_scan=True)
        elif i % self.detect_every == 0:
            for tr in list(self.tracks):
                self._associate(gray, self._detect(gray, tr.box), full_scan=False, only=tr)
        for tr in self.tracks:
            tr.n_frames += 1
        self._prev = gray
        self._frame_index += 1
        return list(self.tracks)

    def reset(self) -> None:
        self.tracks = []
        self._lost = []
        self._prev = None
        self._frame_index = 0

    # ------------------------------------------------------------------ detection
    def _detect(self, gray: np.ndarray, around: Box | None) -> list[Box]:
        h, w = gray.shape
        scale = min(1.0, self.detect_width / w)
        if around is None:
            x0, y0, sub = 0, 0, gray
            min_side = max(24, int(self.min_face_frac * h * scale))
            max_side = int(min(h, w) * scale)
        else:
            bx, by, bw, bh = around
            m = 0.5 * max(bw, bh)
            x0, y0 = int(max(0, bx - m)), int(max(0, by - m))
            x1, y1 = int(min(w, bx + bw + m)), int(min(h, by + bh + m))
            sub = gray[y0:y1, x0:x1]
            min_side = max(24, int(0.7 * bw * scale))
            max_side = int(1.4 * bw * scale) + 1
        if sub.size == 0:
            return []
        small = cv2.resize(sub, (max(1, int(sub.shape[1] * scale)), max(1, int(sub.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA) if scale < 1.0 else sub
        if min(small.shape) < min_side:
            return []
        small = self._clahe.apply(cv2.LUT(small, self._lut))
        kw = {"scaleFactor": 1.15, "minNeighbors": 3, "minSize": (min_side, min_side),
              "maxSize": (max_side, max_side)}
        found = self._cascade.detectMultiScale(small, **kw)
        if len(found) == 0 and self._fallback is not None and (around is not None or not self.tracks):
            found = self._fallback.detectMultiScale(small, **kw)
        return [(x0 + fx / scale, y0 + fy / scale, fw / scale, fh / scale) for fx, fy, fw, fh in found]

    def _associate(self, gray: np.ndarray, dets: list[Box], full_scan: bool, only: Track | None = None) -> None:
        candidates = [only] if only is not None else list(self.tracks)
        used: set[int] = set()
        for tr in candidates:
            best, best_iou = -1, 0.3
            for j, d in enumerate(dets):
                if j not in used and (v := iou(tr.box, d)) > best_iou:
                    best, best_iou = j, v
            if best < 0:
                tr.missed_detections += 1
                continue
            used.add(best)
            tr.missed_detections = 0
            tr.detected_this_frame = True
            # Drift removal without jitter: when the detection agrees, its offset is fed in over
            # about a second (a first-order low-pass well below the 0.7 Hz pulse band, so the
            # skin region does not jump); when the tracked box has slid off, snap.
            delta = np.asarray(dets[best], dtype=float) - np.asarray(tr.box, dtype=float)
            if best_iou > 0.6:
                tr.pending = 0.7 * delta
            else:
                tr.box = tuple(float(v) for v in dets[best])  # type: ignore[assignment]
                tr.pending = np.zeros(4)
            tr.points = self._seed_points(gray, tr.box)
        self._drop([t for t in self.tracks if t.missed_detections > self.max_missed_detections])
        if full_scan:
            self._lost = [(i, t) for i, t in self._lost if self._frame_index - i <= self._reid_frames]
            for j, d in enumerate(dets):
                if j in used or len(self.tracks) >= self.max_tracks:
                    continue
                if any(iou(t.box, d) > 0.1 for t in self.tracks):
                    continue
                self.tracks.append(self._new_or_returning(gray, d))

    def _drop(self, gone: list[Track]) -> None:
        if not gone:
            return
        ids = {t.track_id for t in gone}
        self.tracks = [t for t in self.tracks if t.track_id not in ids]
        self._lost.extend((self._frame_index, t) for t in gone)

    def _new_or_returning(self, gray: np.ndarray, d: Box) -> Track:
        """A face found where a track was lost a moment ago keeps that track's id (the person
        turned away or was occluded briefly); otherwise it gets a new random id."""
        best, best_dist = None, 0.6
        cx, cy = d[0] + d[2] / 2, d[1] + d[3] / 2
        for k, (_, t) in enumerate(self._lost):
            tx, ty = t.center
            dist = np.hypot(cx - tx, cy - ty) / max(d[2], 1.0)
            if dist < best_dist and 0.6 < d[2] / max(t.box[2], 1.0) < 1.6:
                best, best_dist = k, dist
        if best is not None:
            _, tr = self._lost.pop(best)
            tr.box, tr.missed_detections, tr.detected_this_frame = d, 0, True
            tr.points = self._seed_points(gray, d)
            return tr
        tid = f"t{self._rng.getrandbits(32):08x}"
        return Track(track_id=tid, box=d, detected_this_frame=True, points=self._seed_points(gray, d))

    # ------------------------------------------------------------------ tracking
    @staticmethod
    def _seed_points(gray: np.ndarray, box: Box) -> np.ndarray:
        x, y, w, h = (int(round(v)) for v in box)
        # inner face only: the outline and background would drag the box
        x0, y0 = max(0, x + w // 6), max(0, y + h // 8)
        x1, y1 = min(gray.shape[1], x + w - w // 6), min(gray.shape[0], y + h - h // 10)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return np.zeros((0, 1, 2), np.float32)
        pts = cv2.goodFeaturesToTrack(gray[y0:y1, x0:x1], maxCorners=40, qualityLevel=0.01,
                                      minDistance=max(3, w // 20), blockSize=5)
        if pts is None:
            return np.zeros((0, 1, 2), np.float32)
        return (pts + np.array([x0, y0], np.float32)).astype(np.float32)

    def _follow(self, tr: Track, prev: np.ndarray, gray: np.ndarray) -> None:
        if tr.points.shape[0] < 8:  # replenish corners lost to occlusion or turning
            tr.points = self._seed_points(prev, tr.box)
            if tr.points.shape[0] < 4:
                return
        # Work on a crop around the face so pyramids are built for a few thousand pixels only.
        x, y, w, h = tr.box
        m = 0.4 * max(w, h)
        H, W = gray.shape
        x0, y0 = int(max(0, x - m)), int(max(0, y - m))
        x1, y1 = int(min(W, x + w + m)), int(min(H, y + h + m))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return
        off = np.array([x0, y0], np.float32)
        p0 = tr.points - off
        a, b = prev[y0:y1, x0:x1], gray[y0:y1, x0:x1]
        lk = {"winSize": (15, 15), "maxLevel": 2,
              "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, **lk)
        p0r, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **lk)
        fb = np.linalg.norm((p0 - p0r).reshape(-1, 2), axis=1)
        ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < 0.5)
        if ok.sum() < 4:
            tr.points = np.zeros((0, 1, 2), np.float32)
            return
        q0, q1 = p0[ok].reshape(-1, 2), p1[ok].reshape(-1, 2)
        shift = np.median(q1 - q0, axis=0)
        d0 = np.linalg.norm(q0 - np.median(q0, axis=0), axis=1)
        d1 = np.linalg.norm(q1 - np.median(q1, axis=0), axis=1)
        good = d0 > 2.0
        scale = float(np.median(d1[good] / d0[good])) if good.sum() >= 4 else 1.0
        scale = float(np.clip(scale, 0.95, 1.05))
        if abs(scale - 1.0) < 0.003:  # dead band: noise in the spread must not breathe the box
            scale = 1.0
        cx, cy = x + w / 2 + float(shift[0]), y + h / 2 + float(shift[1])
        nw, nh = w * scale, h * scale
        step = self._pending_rate * tr.pending
        tr.pending = tr.pending - step
        tr.box = (cx - nw / 2 + step[0], cy - nh / 2 + step[1], nw + step[2], nh + step[3])
        tr.points = (q1 + off).reshape(-1, 1, 2).astype(np.float32)

    @staticmethod
    def _inside(box: Box, shape: tuple[int, ...]) -> bool:
        x, y, w, h = box
        cx, cy = x + w / 2, y + h / 2
        return 0 <= cx < shape[1] and 0 <= cy < shape[0] and w >= 8
