"""Render a synthetic camera clip with its ground truth.

``render_clip(spec, seed)`` builds the scene (all randomness drawn up front), computes the frame
times and the truth, and returns a :class:`Clip` whose ``frames()`` renders lazily: a 30 s,
640x480 clip is 830 MB as float frames, so nothing is held in memory.  The same seed gives the
same frames, bit for bit, every time ``frames()`` is iterated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from hal_sim.face.optics import frame_times
from hal_sim.face.scene import Scene
from hal_sim.face.spec import ClipSpec
from hal_sim.face.truth import ClipTruth, PersonTruth

__all__ = ["Clip", "ClipSpec", "render_clip"]


class Clip:
    """A rendered-on-demand clip: ``frames()`` yields BGR uint8 (H, W, 3); ``truth`` is known up front."""

    def __init__(self, scene: Scene, truth: ClipTruth) -> None:
        self.scene = scene
        self.truth = truth

    @property
    def n_frames(self) -> int:
        return self.truth.n_frames

    @property
    def _capture_s(self) -> np.ndarray:
        t = self.truth.t_capture_s
        return self.truth.t_s if t is None else t

    def frames(self) -> Iterator[np.ndarray]:
        for k, t in enumerate(self._capture_s):
            yield self.scene.render(float(t), k)

    def timed_frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """(reported timestamp, frame) pairs, as a camera driver would deliver them."""
        for k, img in enumerate(self.frames()):
            yield float(self.truth.t_s[k]), img

    def frame(self, k: int) -> np.ndarray:
        """Frame ``k`` alone (random access; same pixels as the k-th item of ``frames()``)."""
        if not 0 <= k < self.n_frames:
            raise IndexError(f"frame {k} outside 0..{self.n_frames - 1}")
        return self.scene.render(float(self._capture_s[k]), k)

    def write_video(self, path: str | Path) -> Path:
        """Write an MJPG .avi at the nominal fps and the truth JSON next to it (same stem, .json).

        Note the AVI container stores only the nominal rate; the jittered times are in the JSON.
        MJPG re-encodes every frame as JPEG (quality ~95 in OpenCV's writer), on top of any
        ``jpeg_quality`` the clip already applied.
        """
        path = Path(path)
        if path.suffix.lower() != ".avi":
            path = path.with_suffix(".avi")
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(self.truth.fps),
                                 (self.truth.width, self.truth.height))
        if not writer.isOpened():
            raise RuntimeError(f"cannot open a MJPG video writer for {path}")
        try:
            for img in self.frames():
                writer.write(img)
        finally:
            writer.release()
        self.truth.to_json(path.with_suffix(".json"))
        return path


def render_clip(spec: ClipSpec, seed: int) -> Clip:
    """Build the scene for ``spec`` and the truth; frames are rendered when iterated."""
    spec.validate()
    n_frames = int(round(spec.duration_s * spec.fps))
    if n_frames < 1:
        raise ValueError(f"ClipSpec gives no frames: duration {spec.duration_s} s at {spec.fps} fps")
    t_capture, t_stamp = frame_times(n_frames, spec.fps, np.random.default_rng([int(seed), 0x7153]),
                                     jitter_ms=spec.jitter_ms, drop_prob=spec.drop_prob,
                                     jitter_kind=spec.jitter_kind)
    scene = Scene(spec, seed, horizon_s=float(max(t_capture[-1], t_stamp[-1])) + 1.0)
    return Clip(scene, clip_truth(scene, t_capture, t_stamp))


def clip_truth(scene: Scene, t_s: np.ndarray, t_stamp_s: np.ndarray | None = None) -> ClipTruth:
    """Truth for frames captured at ``t_s`` of ``scene`` and reported with ``t_stamp_s``."""
    people = []
    t0, t1 = float(t_s[0]), float(t_s[-1])
    for actor in scene.actors:
        ph = actor.physio
        n = t_s.size
        if ph is None:  # photo: nothing physiological is visible
            beats = np.zeros(0)
            hr = np.full(n, np.nan)
            rr = np.full(n, np.nan)
            blinks: list[tuple[float, float]] = []
            state = ["calm"] * n
            expressions: list[tuple[float, float, str]] = []
            base = (np.nan, np.nan, np.nan)
            bvp, breath, eyes = np.full(n, np.nan), np.full(n, np.nan), np.ones(n)
        else:
            visible = actor.kind == "person"
            beats = ph.beat_times_s[(ph.beat_times_s >= t0) & (ph.beat_times_s <= t1)] if visible else np.zeros(0)
            hr = ph.hr_at(t_s) if visible else np.full(n, np.nan)
            rr = ph.rr_at(t_s)
            blinks = [(s, e) for s, e in ph.blink_intervals() if e >= t0 and s <= t1]
            state = ph.state_at(t_s)
            expressions = [(s, e, k) for s, e, k in ph.expressions if e >= t0 and s <= t1]
            p = ph.params
            base = (p.base_hr_bpm, p.base_rr_bpm, p.base_blink_per_min)
            bvp = ph.skin_blood_at(t_s) if visible else np.full(n, np.nan)
            breath = ph.breath_at(t_s)
            eyes = ph.eye_openness_at(t_s)
        people.append(PersonTruth(
            track_hint=actor.index,
            fitzpatrick=actor.fitzpatrick,
            pulse_present=actor.kind == "person",
            beat_times_s=np.asarray(beats, dtype=float),
            hr_bpm=np.asarray(hr, dtype=float),
            rr_bpm=np.asarray(rr, dtype=float),
            blink_intervals_s=blinks,
            state=state,
            face_box=actor.face_boxes(t_s, scene.width, scene.height),
            kind=actor.kind,
            pulse_amplitude_rel=actor.texture.pulse_amplitude_rel,
            baseline_hr_bpm=base[0],
            baseline_rr_bpm=base[1],
            baseline_blink_per_min=base[2],
            expression_events=expressions,
            bvp=bvp,
            breath=breath,
            eye_openness=eyes,
        ))
    conditions = scene.conditions()
    conditions["spec"] = scene.spec.to_dict()
    stamps = np.asarray(t_s if t_stamp_s is None else t_stamp_s, dtype=float)
    return ClipTruth(fps=float(scene.spec.fps), t_s=stamps, width=scene.width, height=scene.height,
                     people=people, conditions=conditions, seed=scene.seed,
                     t_capture_s=np.asarray(t_s, dtype=float))
