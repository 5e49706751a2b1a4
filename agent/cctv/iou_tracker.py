"""The plain baseline: frame-to-frame IoU tracking (Bochinski, Eiselein, Sikora, AVSS 2017).

"High-Speed Tracking-by-Detection Without Using Image Information": each track takes the detection
that overlaps its last box most, if the overlap is at least ``sigma_iou``; unmatched detections start
tracks, unmatched tracks end at once (no motion model, no memory).  It is what a camera box would do
without a Kalman filter or a second association stage, so the bench shows what those two buy.
Greedy as in the paper, online output (every matched box is reported with its track's id).
"""

from __future__ import annotations

import numpy as np

from agent.cctv.box_geometry import iou_matrix
from agent.cctv.byte_tracker import TrackOutput
from agent.cctv.detections import Detection


class IouTracker:
    """Online IoU tracker; same ``update`` interface as ByteTracker."""

    def __init__(self, sigma_l: float = 0.3, sigma_iou: float = 0.3):
        self.sigma_l = sigma_l  #: detections below this score are ignored
        self.sigma_iou = sigma_iou
        self.frame = 0
        self._next_id = 1
        self._tracks: dict[int, np.ndarray] = {}  # id -> last box
        self.removed_ids: list[int] = []

    def update(self, detections: list[Detection]) -> list[TrackOutput]:
        self.frame += 1
        idx = [i for i, d in enumerate(detections) if d.score >= self.sigma_l]
        boxes = np.array([detections[i].tlwh for i in idx]).reshape(-1, 4)
        ids = list(self._tracks)
        iou = iou_matrix(np.array([self._tracks[t] for t in ids]).reshape(-1, 4), boxes)
        free = set(range(len(idx)))
        out: list[TrackOutput] = []
        new_tracks: dict[int, np.ndarray] = {}
        self.removed_ids = []
        for r, tid in enumerate(ids):  # greedy, in track order, as in the paper
            cands = [c for c in free if iou[r, c] >= self.sigma_iou]
            if not cands:
                self.removed_ids.append(tid)
                continue
            c = max(cands, key=lambda k: iou[r, k])
            free.discard(c)
            new_tracks[tid] = boxes[c]
            out.append(TrackOutput(tid, boxes[c], detections[idx[c]].score, idx[c]))
        for c in sorted(free):
            tid = self._next_id
            self._next_id += 1
            new_tracks[tid] = boxes[c]
            out.append(TrackOutput(tid, boxes[c], detections[idx[c]].score, idx[c]))
        self._tracks = new_tracks
        return out

    def active_ids(self) -> list[int]:
        return list(self._tracks)
