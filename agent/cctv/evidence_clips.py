"""Evidence clips kept on the camera box, only when the site switches them on.

Why on the box and bounded: the hall's CCTV publishes positions and colour summaries only; when an
operator needs to see what happened, the clip is fetched from the box under the site's own rules.
Crops (not whole frames) of one track, at most ``frames_per_clip`` JPEGs per clip and ``max_clips``
clips; the oldest clip is deleted first, so the disk never fills.
"""

from __future__ import annotations

import secrets
import shutil
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np


class EvidenceClips:
    def __init__(self, root: Path, max_clips: int = 200, frames_per_clip: int = 20):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_clips = max_clips
        self.frames_per_clip = frames_per_clip
        self._clips: OrderedDict[str, int] = OrderedDict()  # clip id -> frames written
        self._deleted_ids: OrderedDict[str, None] = OrderedDict()  # never re-created (bounded memory)
        self.deleted = 0

    @staticmethod
    def clip_for(track_id: str) -> str:
        """A new clip id for a track (the pipeline keeps it with the track)."""
        return f"clip-{track_id}-{secrets.token_hex(3)}"

    def add(self, clip_id: str, frame_bgr: np.ndarray, tlwh: np.ndarray) -> None:
        if clip_id in self._deleted_ids:
            return
        if clip_id not in self._clips:
            self._clips[clip_id] = 0
            (self.root / clip_id).mkdir(exist_ok=True)
            while len(self._clips) > self.max_clips:
                old, _ = self._clips.popitem(last=False)
                shutil.rmtree(self.root / old, ignore_errors=True)
                self.deleted += 1
                self._deleted_ids[old] = None
                if len(self._deleted_ids) > 10 * self.max_clips + 1000:
                    self._deleted_ids.popitem(last=False)
        n = self._clips[clip_id]
        if n >= self.frames_per_clip:
            return
        H, W = frame_bgr.shape[:2]
        x, y, w, h = (int(round(v)) for v in tlwh)
        x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        cv2.imwrite(str(self.root / clip_id / f"{n:04d}.jpg"), frame_bgr[y0:y1, x0:x1])
        self._clips[clip_id] = n + 1
