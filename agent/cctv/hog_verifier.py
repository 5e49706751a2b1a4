"""Second opinion on motion blobs: OpenCV's HOG + linear SVM people detector.

Dalal & Triggs 2005 ("Histograms of oriented gradients for human detection"), with the SVM OpenCV
ships (``HOGDescriptor_getDefaultPeopleDetector``, 64x128 window): no model file, no download.  It is
too slow to scan whole 640x480 frames at 15 fps on one core, so it only looks at each blob's
neighbourhood, scaled so that the blob is about one window tall.  A blob it confirms gains confidence;
one it does not loses some (a moving trolley, a door, a reflection): a marginal blob then only
continues a track in ByteTrack's second stage and never starts one, while a clearly person-sized blob
still does.  Why not a hard gate: HOG misses people who are small (< ~100 px), seen from above, or
partly occluded, which is common in a hall, and a missed confirmation must not delete a traveller.
"""

from __future__ import annotations

import cv2
import numpy as np

from agent.cctv.box_geometry import iou_matrix
from agent.cctv.detections import Detection

WINDOW_H_PX = 128
WINDOW_W_PX = 64


class HogVerifier:
    def __init__(self, hit_threshold: float = 0.0, confirm_iou: float = 0.3, demote: float = 0.85,
                 boost: float = 0.25):
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.hit_threshold = hit_threshold
        self.confirm_iou = confirm_iou
        self.demote = demote  #: confidence factor for a blob HOG does not confirm
        self.boost = boost  #: confidence added to a blob it confirms

    def people_near(self, frame_bgr: np.ndarray, tlwh: np.ndarray) -> np.ndarray:
        """HOG person boxes (frame pixels, (N, 4)) around one blob."""
        H, W = frame_bgr.shape[:2]
        left, top, w, h = (float(v) for v in tlwh)
        pad_x, pad_y = 0.5 * h * 0.5, 0.15 * h
        x0, y0 = int(max(0, left - pad_x)), int(max(0, top - pad_y))
        x1, y1 = int(min(W, left + w + pad_x)), int(min(H, top + h + pad_y))
        if x1 - x0 < 8 or y1 - y0 < 16:
            return np.zeros((0, 4))
        scale = (WINDOW_H_PX * 1.25) / max(h, 1.0)  # the person fills ~80 % of a window, as in training
        crop = cv2.resize(frame_bgr[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        if crop.shape[0] < WINDOW_H_PX or crop.shape[1] < WINDOW_W_PX:
            return np.zeros((0, 4))
        rects, _ = self.hog.detectMultiScale(crop, hitThreshold=self.hit_threshold, winStride=(8, 8),
                                             padding=(8, 8), scale=1.1)
        if len(rects) == 0:
            return np.zeros((0, 4))
        r = np.asarray(rects, float) / scale
        r[:, 0] += x0
        r[:, 1] += y0
        return r

    def verify(self, frame_bgr: np.ndarray, dets: list[Detection]) -> list[Detection]:
        out = []
        for d in dets:
            hits = self.people_near(frame_bgr, d.tlwh)
            ok = len(hits) and iou_matrix(d.tlwh[None, :], hits).max() >= self.confirm_iou
            score = min(1.0, d.score + self.boost) if ok else d.score * self.demote
            out.append(Detection(d.tlwh, score, d.source + ("+hog" if ok else "")))
        return out
