"""Per-camera multi-person tracker: Kalman prediction and ByteTrack's two-stage association.

ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection Box",
ECCV 2022) keeps the low-confidence detections that other trackers throw away: after the confident
boxes are matched to the predicted tracks, the remaining *tracked* tracks get a second chance against
the weak boxes, which are mostly the same people partly occluded (exactly what happens when two
travellers cross in a crowded hall).  Weak boxes never start a track, so they add few false tracks.

Stages per frame (ByteTrack, Algorithm 1, with its public defaults):

1. predict every tracked and lost track (kalman_box.predict);
2. high-score boxes (>= ``high_thresh``) vs tracked + lost tracks, cost ``1 - IoU * score``, gate 0.8;
3. low-score boxes vs the tracked tracks left over, cost ``1 - IoU``, gate 0.5;
4. unconfirmed (one-frame) tracks vs the high boxes left over, gate 0.7; the rest are dropped;
5. high boxes still unmatched with score >= ``new_track_thresh`` start (unconfirmed) tracks;
6. tracks unmatched for more than ``track_buffer_frames`` are removed.

Ids are consecutive integers per tracker (MOTChallenge wants integers); the camera pipeline maps them
to anonymous strings before anything leaves the box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent.cctv import kalman_box
from agent.cctv.assignment import assign
from agent.cctv.box_geometry import iou_matrix, tlwh_to_xyah, xyah_to_tlwh
from agent.cctv.detections import Detection


@dataclass(frozen=True)
class ByteTrackParams:
    """ByteTrack's published defaults (MOT17 public settings), at a 10-30 fps camera."""

    high_thresh: float = 0.5  #: boxes at or above go to the first stage
    low_thresh: float = 0.1  #: boxes below are ignored altogether
    new_track_thresh: float = 0.6  #: a new track needs a box at least this confident
    match_gate: float = 0.8  #: first-stage cost gate (1 - IoU*score)
    second_gate: float = 0.5  #: second-stage cost gate (1 - IoU)
    unconfirmed_gate: float = 0.7
    track_buffer_frames: int = 30  #: a lost track is kept this long for re-identification by motion
    fuse_score: bool = True  #: multiply IoU by detection score in stage 1 (ByteTrack, not on MOT20)
    min_box_area_px: float = 10.0


@dataclass
class Track:
    """One tracked person in one camera."""

    track_id: int
    mean: np.ndarray
    cov: np.ndarray
    score: float
    start_frame: int
    last_frame: int
    state: str = "tracked"  # tracked | lost
    activated: bool = False
    hits: int = 1
    det_index: int | None = None  #: index of this frame's detection that updated it, else None
    history: list[int] = field(default_factory=list, repr=False)

    @property
    def tlwh(self) -> np.ndarray:
        return xyah_to_tlwh(self.mean[:4])


@dataclass(frozen=True)
class TrackOutput:
    """A confirmed track seen in this frame."""

    track_id: int
    tlwh: np.ndarray
    score: float
    det_index: int | None


class ByteTracker:
    """Online tracker for one camera: call :meth:`update` once per frame, in order."""

    def __init__(self, params: ByteTrackParams | None = None):
        self.p = params or ByteTrackParams()
        self.frame = 0
        self._next_id = 1
        self.tracked: list[Track] = []  # confirmed and unconfirmed
        self.lost: list[Track] = []
        self.removed_ids: list[int] = []  #: ids removed during the last update (the pipeline ends them)

    # ------------------------------------------------------------------ helpers
    def _new_id(self) -> int:
        tid = self._next_id
        self._next_id += 1
        return tid

    @staticmethod
    def _boxes(tracks: list[Track]) -> np.ndarray:
        return np.array([t.tlwh for t in tracks]).reshape(-1, 4)

    def _refresh(self, t: Track, det: Detection, det_index: int) -> None:
        t.mean, t.cov = kalman_box.update(t.mean, t.cov, tlwh_to_xyah(det.tlwh))
        t.score = det.score
        t.last_frame = self.frame
        t.state = "tracked"
        t.activated = True
        t.hits += 1
        t.det_index = det_index

    # ------------------------------------------------------------------ the frame step
    def update(self, detections: list[Detection]) -> list[TrackOutput]:
        """Advance one frame with this frame's detections; return the confirmed tracks seen in it."""
        p = self.p
        self.frame += 1
        self.removed_ids = []
        dets = [d for d in detections if d.score >= p.low_thresh and d.tlwh[2] * d.tlwh[3] >= p.min_box_area_px]
        det_idx = [i for i, d in enumerate(detections) if d.score >= p.low_thresh
                   and d.tlwh[2] * d.tlwh[3] >= p.min_box_area_px]
        high = [k for k, d in enumerate(dets) if d.score >= p.high_thresh]
        low = [k for k, d in enumerate(dets) if d.score < p.high_thresh]

        confirmed = [t for t in self.tracked if t.activated]
        unconfirmed = [t for t in self.tracked if not t.activated]
        pool = confirmed + self.lost
        for t in self.tracked + self.lost:
            t.det_index = None
        if pool:
            means, covs = kalman_box.predict(np.array([t.mean for t in pool]), np.array([t.cov for t in pool]))
            for t, m, c in zip(pool, means, covs, strict=True):
                t.mean, t.cov = m, c

        # stage 1: confident boxes vs tracked + lost
        hb = np.array([dets[k].tlwh for k in high]).reshape(-1, 4)
        iou = iou_matrix(self._boxes(pool), hb)
        sim = iou * np.array([dets[k].score for k in high])[None, :] if p.fuse_score and len(high) else iou
        pairs, un_tracks, un_high = assign(1.0 - sim, p.match_gate)
        for r, c in pairs:
            self._refresh(pool[r], dets[high[c]], det_idx[high[c]])
        # stage 2: weak boxes vs the tracked (not lost) tracks left over
        remaining = [pool[r] for r in un_tracks if pool[r].state == "tracked"]
        lb = np.array([dets[k].tlwh for k in low]).reshape(-1, 4)
        pairs2, un_rem, _ = assign(1.0 - iou_matrix(self._boxes(remaining), lb), p.second_gate)
        for r, c in pairs2:
            self._refresh(remaining[r], dets[low[c]], det_idx[low[c]])
        for r in un_rem:
            remaining[r].state = "lost"
        # stage 3: one-frame-old tracks vs confident boxes still free
        left_high = [high[c] for c in un_high]
        ub = np.array([dets[k].tlwh for k in left_high]).reshape(-1, 4)
        pairs3, un_unc, un_left = assign(1.0 - iou_matrix(self._boxes(unconfirmed), ub), p.unconfirmed_gate)
        for r, c in pairs3:
            self._refresh(unconfirmed[r], dets[left_high[c]], det_idx[left_high[c]])
        dropped = [unconfirmed[r] for r in un_unc]
        self.removed_ids += [t.track_id for t in dropped]
        # new tracks
        born: list[Track] = []
        for c in un_left:
            d = dets[left_high[c]]
            if d.score < p.new_track_thresh:
                continue
            mean, cov = kalman_box.initiate(tlwh_to_xyah(d.tlwh))
            born.append(Track(self._new_id(), mean, cov, d.score, self.frame, self.frame,
                              activated=self.frame == 1, det_index=det_idx[left_high[c]]))
        # bookkeeping: tracked / lost lists, expiry
        alive = [t for t in confirmed + self.lost + unconfirmed if t not in dropped]
        self.tracked = [t for t in alive if t.state == "tracked"] + born
        lost = [t for t in alive if t.state == "lost"]
        expired = [t for t in lost if self.frame - t.last_frame > p.track_buffer_frames]
        self.removed_ids += [t.track_id for t in expired]
        self.lost = [t for t in lost if t not in expired]
        self._remove_duplicates()
        return [TrackOutput(t.track_id, t.tlwh, t.score, t.det_index)
                for t in self.tracked if t.activated and t.last_frame == self.frame]

    def _remove_duplicates(self) -> None:
        """A lost track that overlaps a tracked one almost fully is the same person: keep the older."""
        if not self.tracked or not self.lost:
            return
        iou = iou_matrix(self._boxes(self.tracked), self._boxes(self.lost))
        drop_tracked: set[int] = set()
        drop_lost: set[int] = set()
        for i, j in zip(*np.nonzero(iou > 0.85), strict=True):
            a, b = self.tracked[i], self.lost[j]
            if a.last_frame - a.start_frame > b.last_frame - b.start_frame:
                drop_lost.add(j)
            else:
                drop_tracked.add(i)
        self.removed_ids += [self.tracked[i].track_id for i in drop_tracked]
        self.removed_ids += [self.lost[j].track_id for j in drop_lost]
        self.tracked = [t for i, t in enumerate(self.tracked) if i not in drop_tracked]
        self.lost = [t for j, t in enumerate(self.lost) if j not in drop_lost]

    def active_ids(self) -> list[int]:
        return [t.track_id for t in self.tracked + self.lost]
