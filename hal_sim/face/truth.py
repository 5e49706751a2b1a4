"""Ground truth of a synthetic camera clip: what the vital-signs pipeline should have measured.

Why a separate module: the analysis pipeline (agent/vision) and its benchmark score themselves
against these records, so the names are a contract.  Everything is plain numpy arrays and lists so
the truth survives a JSON round trip next to the video file.

Conventions
-----------
* Times are seconds from the start of the clip (``t_s[0]`` is about 0).  ``t_s`` are the frame
  timestamps as a camera reports them (with jitter); ``t_capture_s`` are the true exposure
  instants, at which the per-frame truth (HR, RR, state, face box) is evaluated.  They differ
  by the timestamp jitter (a few ms) unless the clip was made with ``jitter_kind="capture"``.
* Per-frame arrays have one entry per frame, aligned with ``ClipTruth.t_s``.
* ``face_box`` is (x, y, w, h) in pixels of the visible face (forehead to chin, ear to ear),
  the box a face detector would be expected to return.
* Negative controls (``pulse_present`` False): ``beat_times_s`` is empty and ``hr_bpm`` is NaN.
  A printed photo also has ``rr_bpm`` NaN and no blinks; a person wearing a mask still breathes
  and blinks (eyes show through the mask), so those stay filled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STATE_CALM = "calm"
STATE_TENSE = "tense"


@dataclass
class PersonTruth:
    """Ground truth for one person (or one negative-control object) in view."""

    track_hint: int  # person index (left-to-right placement order at clip start)
    fitzpatrick: int  # 1..6
    pulse_present: bool  # False for photo/mask controls
    beat_times_s: np.ndarray  # true heart beat times (pulse-wave foot at the face), s
    hr_bpm: np.ndarray  # instantaneous HR per frame, NaN when no pulse is visible
    rr_bpm: np.ndarray  # instantaneous respiration rate per frame, NaN for a photo
    blink_intervals_s: list[tuple[float, float]]  # (start, end) of each blink
    state: list[str]  # per frame: "calm" | "tense"
    face_box: np.ndarray  # per frame (x, y, w, h) in pixels, shape (n_frames, 4)
    kind: str = "person"  # "person" | "photo" | "mask"
    pulse_amplitude_rel: float = 0.0  # peak-to-peak green pulsatility / green skin level
    baseline_hr_bpm: float = float("nan")  # this person's calm resting values
    baseline_rr_bpm: float = float("nan")
    baseline_blink_per_min: float = float("nan")
    expression_events: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, kind)
    # Per-frame waveforms for waveform-level scoring (empty when not applicable):
    bvp: np.ndarray = field(default_factory=lambda: np.zeros(0))  # skin blood volume, pulse p-p = 1
    breath: np.ndarray = field(default_factory=lambda: np.zeros(0))  # chest displacement, 0..~1
    eye_openness: np.ndarray = field(default_factory=lambda: np.zeros(0))  # 1 open .. 0 closed

    def mean_hr_from_beats_bpm(self) -> float:
        """Mean HR from the beat train: (n_beats - 1) / span * 60."""
        b = np.asarray(self.beat_times_s, dtype=float)
        if b.size < 2:
            return float("nan")
        return float((b.size - 1) / (b[-1] - b[0]) * 60.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_hint": int(self.track_hint),
            "fitzpatrick": int(self.fitzpatrick),
            "pulse_present": bool(self.pulse_present),
            "beat_times_s": _floats(self.beat_times_s),
            "hr_bpm": _floats(self.hr_bpm),
            "rr_bpm": _floats(self.rr_bpm),
            "blink_intervals_s": [[float(a), float(b)] for a, b in self.blink_intervals_s],
            "state": list(self.state),
            "face_box": np.asarray(self.face_box, dtype=float).round(2).tolist(),
            "kind": self.kind,
            "pulse_amplitude_rel": float(self.pulse_amplitude_rel),
            "baseline_hr_bpm": _float(self.baseline_hr_bpm),
            "baseline_rr_bpm": _float(self.baseline_rr_bpm),
            "baseline_blink_per_min": _float(self.baseline_blink_per_min),
            "expression_events": [[float(a), float(b), str(k)] for a, b, k in self.expression_events],
            "bvp": _floats(self.bvp),
            "breath": _floats(self.breath),
            "eye_openness": _floats(self.eye_openness),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PersonTruth:
        return cls(
            track_hint=int(d["track_hint"]),
            fitzpatrick=int(d["fitzpatrick"]),
            pulse_present=bool(d["pulse_present"]),
            beat_times_s=_arr(d["beat_times_s"]),
            hr_bpm=_arr(d["hr_bpm"]),
            rr_bpm=_arr(d["rr_bpm"]),
            blink_intervals_s=[(float(a), float(b)) for a, b in d["blink_intervals_s"]],
            state=[str(s) for s in d["state"]],
            face_box=np.asarray(d["face_box"], dtype=float).reshape(-1, 4),
            kind=str(d.get("kind", "person")),
            pulse_amplitude_rel=float(d.get("pulse_amplitude_rel", 0.0)),
            baseline_hr_bpm=_unfloat(d.get("baseline_hr_bpm")),
            baseline_rr_bpm=_unfloat(d.get("baseline_rr_bpm")),
            baseline_blink_per_min=_unfloat(d.get("baseline_blink_per_min")),
            expression_events=[(float(a), float(b), str(k)) for a, b, k in d.get("expression_events", [])],
            bvp=_arr(d.get("bvp", [])),
            breath=_arr(d.get("breath", [])),
            eye_openness=_arr(d.get("eye_openness", [])),
        )


@dataclass
class ClipTruth:
    """Ground truth of a whole clip."""

    fps: float  # nominal frame rate
    t_s: np.ndarray  # actual frame timestamps (with jitter and any dropped frames)
    width: int
    height: int
    people: list[PersonTruth]
    conditions: dict[str, Any]  # what was switched on (motion, flicker, specular, jpeg_quality, ...)
    seed: int | None = None
    t_capture_s: np.ndarray | None = None  # true exposure instants (per-frame truth is taken here)

    @property
    def n_frames(self) -> int:
        return int(np.asarray(self.t_s).size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "customs-edge.face-truth/1",
            "fps": float(self.fps),
            "t_s": [round(float(v), 6) for v in np.asarray(self.t_s)],
            "width": int(self.width),
            "height": int(self.height),
            "people": [p.to_dict() for p in self.people],
            "conditions": _jsonable(self.conditions),
            "seed": self.seed,
            "t_capture_s": None if self.t_capture_s is None else [round(float(v), 6) for v in self.t_capture_s],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipTruth:
        if d.get("schema", "customs-edge.face-truth/1") != "customs-edge.face-truth/1":
            raise ValueError(f"unknown face-truth schema {d.get('schema')!r}")
        return cls(
            fps=float(d["fps"]),
            t_s=_arr(d["t_s"]),
            width=int(d["width"]),
            height=int(d["height"]),
            people=[PersonTruth.from_dict(p) for p in d["people"]],
            conditions=dict(d.get("conditions", {})),
            seed=d.get("seed"),
            t_capture_s=None if d.get("t_capture_s") is None else _arr(d["t_capture_s"]),
        )

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> ClipTruth:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read clip truth {path}: {err}") from err
        return cls.from_dict(d)


# --------------------------------------------------------------------------- JSON helpers
def _float(v: float) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else v


def _unfloat(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def _floats(a: np.ndarray) -> list[float | None]:
    """JSON has no NaN: write None and read it back as NaN."""
    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(a, dtype=float).ravel()]


def _arr(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
