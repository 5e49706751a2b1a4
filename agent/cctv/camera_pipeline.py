"""One fixed camera's chain on the box: frame -> people -> tracks -> ground-plane tracklets.

Detection is MOG2 background subtraction (motion_detector), verified by HOG (hog_verifier) for blobs
that no confirmed track explains, or a site-supplied LiteRT model instead; tracking is ByteTrack
(byte_tracker) or the IoU baseline; each confirmed track gets ground-plane samples (foot point through
the homography) and a running appearance summary.  Every ``publish_interval_s`` a track with new
samples yields a :class:`TrackletUpdate`; a removed track yields a last one with state "ended".

Track ids leave the box as ``{camera}-{token}-{n}`` where the token is random per pipeline instance:
ids carry no identity and do not link one boot to the next.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import numpy as np

from agent.cctv.appearance import AppearanceSummary, part_histograms
from agent.cctv.box_geometry import iou_matrix
from agent.cctv.byte_tracker import ByteTracker
from agent.cctv.camera_calibration import CameraCalibration
from agent.cctv.cctv_config import CctvConfig
from agent.cctv.detections import Detection
from agent.cctv.evidence_clips import EvidenceClips
from agent.cctv.ground_plane import box_to_ground, height_from_box
from agent.cctv.iou_tracker import IouTracker
from agent.cctv.motion_detector import MotionDetector
from agent.cctv.tracklet_message import TrackletUpdate


@dataclass(frozen=True)
class TrackedBox:
    """A confirmed track in the current frame (for MOT result files and the bench)."""

    track_id: str
    number: int
    tlwh: np.ndarray
    score: float
    ground_xy: tuple[float, float] | None


@dataclass
class _TrackState:
    anon_id: str
    frames: int = 0
    pending: list[tuple[float, float, float, float]] = field(default_factory=list)
    last_publish_s: float = -np.inf
    published: bool = False
    appearance: AppearanceSummary = field(default_factory=AppearanceSummary)
    clip: str | None = None
    first_box: np.ndarray | None = None
    moved: bool = False  #: has left its birth place (a ghost never does)


class CameraPipeline:
    def __init__(self, camera_id: str, calib: CameraCalibration | None, config: CctvConfig | None = None,
                 token: str | None = None):
        self.camera_id = camera_id
        self.calib = calib
        self.cfg = config or CctvConfig()
        self.token = token or secrets.token_hex(3)
        self.frame_index = 0
        self.tracker = ByteTracker() if self.cfg.tracker == "bytetrack" else IouTracker()
        self.motion = MotionDetector(calib)
        self.litert = None
        if self.cfg.person_model_tflite is not None:
            from agent.cctv.litert_detector import LiteRtPersonDetector

            self.litert = LiteRtPersonDetector(self.cfg.person_model_tflite)
        self.hog = None
        if self.cfg.hog_verify != "off":
            from agent.cctv.hog_verifier import HogVerifier

            self.hog = HogVerifier()
        self.evidence = (EvidenceClips(self.cfg.evidence_dir, self.cfg.evidence_max_clips,
                                       self.cfg.evidence_frames_per_clip)
                         if self.cfg.evidence_clips and self.cfg.evidence_dir is not None else None)
        self._states: dict[int, _TrackState] = {}
        self._last_boxes: np.ndarray = np.zeros((0, 4))
        self.last_tracks: list[TrackedBox] = []
        self.last_detections: list[Detection] = []  #: what the tracker got this frame (the bench reuses it)

    # ------------------------------------------------------------------ detection
    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        if self.litert is not None:
            dets = self.litert.detect(frame_bgr)
            self.motion.detect(frame_bgr)  # keep the mask (appearance) and the background model current
            return dets
        hold = [t.tlwh for t in self.last_tracks if self._states.get(t.number) and self._states[t.number].moved]
        dets = self.motion.detect(frame_bgr, hold)
        if self.hog is None or not dets:
            return dets
        if self.cfg.hog_verify == "all":
            return self.hog.verify(frame_bgr, dets)
        # "new": only blobs that no track of the previous frame overlaps need a second opinion
        explained = (iou_matrix(np.array([d.tlwh for d in dets]), self._last_boxes).max(axis=1) >= 0.3
                     if len(self._last_boxes) else np.zeros(len(dets), bool))
        todo = [d for d, e in zip(dets, explained, strict=True) if not e]
        checked = iter(self.hog.verify(frame_bgr, todo))
        return [d if e else next(checked) for d, e in zip(dets, explained, strict=True)]

    # ------------------------------------------------------------------ per frame
    def process(self, frame_bgr: np.ndarray, t_s: float, detections: list[Detection] | None = None
                ) -> list[TrackletUpdate]:
        """Advance one frame; returns the tracklet updates due now (possibly none).

        ``detections`` replaces the detector (public-detection runs and tests).
        """
        self.frame_index += 1
        dets = self.detect(frame_bgr) if detections is None else detections
        self.last_detections = dets
        outs = self.tracker.update(dets)
        mask = self.motion.mask if detections is None else None
        tracks: list[TrackedBox] = []
        for o in outs:
            st = self._states.get(o.track_id)
            if st is None:
                st = self._states[o.track_id] = _TrackState(f"{self.camera_id}-{self.token}-{o.track_id}")
            st.frames += 1
            if st.first_box is None:
                st.first_box = o.tlwh.copy()
            elif not st.moved:
                st.moved = bool(np.hypot(*(o.tlwh[:2] + o.tlwh[2:] / 2 - st.first_box[:2] - st.first_box[2:] / 2))
                                > 0.3 * st.first_box[3])  # a growing ghost blob shifts its centre less
            g = box_to_ground(self.calib, o.tlwh) if self.calib is not None else None
            tracks.append(TrackedBox(st.anon_id, o.track_id, o.tlwh, o.score, g))
            if g is not None and (st.frames - 1) % self.cfg.sample_every_n_frames == 0:
                st.pending.append((float(t_s), g[0], g[1], float(o.score)))
            if (st.frames - 1) % self.cfg.appearance_every_n_frames == 0 and o.det_index is not None:
                h = height_from_box(self.calib, o.tlwh, g) if (self.calib is not None and g is not None) else None
                st.appearance.add(part_histograms(frame_bgr, o.tlwh, mask), h)
            if self.evidence is not None and st.frames >= self.cfg.min_track_frames:
                if st.clip is None:
                    st.clip = self.evidence.clip_for(st.anon_id)
                self.evidence.add(st.clip, frame_bgr, o.tlwh)
        self.last_tracks = tracks
        self._last_boxes = np.array([t.tlwh for t in tracks]).reshape(-1, 4)
        return self._due_updates(t_s, self.tracker.removed_ids)

    def _update_of(self, st: _TrackState, state: str) -> TrackletUpdate:
        a = st.appearance
        u = TrackletUpdate(self.camera_id, st.anon_id, state, st.pending,
                           {"head": a.part("head"), "torso": a.part("torso"), "legs": a.part("legs"),
                            "height_m": a.height_m(), "n_frames": a.n_frames}, st.clip)
        st.pending = []
        st.published = True
        return u

    def _due_updates(self, t_s: float, removed: list[int]) -> list[TrackletUpdate]:
        updates = []
        for tid in removed:
            st = self._states.pop(tid, None)
            if st is not None and (st.published or st.frames >= self.cfg.min_track_frames):
                updates.append(self._update_of(st, "ended"))
        for st in self._states.values():
            if st.frames >= self.cfg.min_track_frames and st.pending \
                    and t_s - st.last_publish_s >= self.cfg.publish_interval_s:
                st.last_publish_s = t_s
                updates.append(self._update_of(st, "active"))
        return updates

    def finish(self) -> list[TrackletUpdate]:
        """End every open track (end of a clip): their last updates."""
        updates = [self._update_of(st, "ended") for st in self._states.values()
                   if st.published or st.frames >= self.cfg.min_track_frames]
        self._states.clear()
        return updates
