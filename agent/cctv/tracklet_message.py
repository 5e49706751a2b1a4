"""Tracklet updates of the camera pipeline, and their wire form (agent.wire_schema.Tracklet).

What leaves the box is decided here and only here: an anonymous track id, ground-plane samples, the
appearance summary and, when evidence clips are on, the name of a clip kept on the box.  No field can
hold pixels, so the privacy property does not depend on every caller being careful.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agent.wire_schema import MAX_TRACKLET_SAMPLES, Appearance, Tracklet, TrackletSample


@dataclass
class TrackletUpdate:
    camera_id: str
    track_id: str
    state: str  # active | ended
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)  # (t_s, x_m, y_m, conf)
    appearance: dict = field(default_factory=dict)  # head, torso, legs, height_m, n_frames
    evidence_clip: str | None = None


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def to_wire(u: TrackletUpdate, t0_utc: datetime, t0_s: float = 0.0) -> list[Tracklet]:
    """Wire bodies for one update; ``t0_utc`` is the wall time of pipeline time ``t0_s``.

    More samples than one message holds are split over several messages (only the last keeps the
    update's state), so nothing is dropped to fit the bound.
    """
    chunks = [u.samples[i:i + MAX_TRACKLET_SAMPLES] for i in range(0, len(u.samples), MAX_TRACKLET_SAMPLES)] or [[]]
    app = Appearance(head=u.appearance.get("head", []), torso=u.appearance.get("torso", []),
                     legs=u.appearance.get("legs", []), height_m=u.appearance.get("height_m"),
                     n_frames=u.appearance.get("n_frames", 0))
    out = []
    for k, chunk in enumerate(chunks):
        t_start = chunk[0][0] if chunk else t0_s
        samples = [TrackletSample(dt_s=round(max(0.0, t - t_start), 3), x_m=round(x, 3), y_m=round(y, 3),
                                  confidence=round(min(max(c, 0.0), 1.0), 3)) for t, x, y, c in chunk]
        state = u.state if k == len(chunks) - 1 else "active"
        out.append(Tracklet(camera_id=u.camera_id, track_id=u.track_id, state=state,
                            t_start_utc=_iso(t0_utc + timedelta(seconds=t_start - t0_s)), samples=samples,
                            appearance=app, evidence_clip=u.evidence_clip))
    return out


def as_plain(u: TrackletUpdate) -> dict:
    """The update as plain data with absolute times, for the controller's association in-process."""
    return {"camera_id": u.camera_id, "track_id": u.track_id, "state": u.state,
            "samples": [{"t_s": t, "x_m": x, "y_m": y, "confidence": c} for t, x, y, c in u.samples],
            "appearance": dict(u.appearance), "evidence_clip": u.evidence_clip}
