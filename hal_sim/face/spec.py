"""What to render: the clip specification shared by the clip renderer, the benchmark and SimCamera.

Kept apart from ``clip.py`` so the scene builder can use it without a circular import;
``hal_sim.face.clip`` re-exports it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CONTROLS = (None, "photo", "mask")
#: Where the live people's pulse comes from: the parametric model, or a real finger-PPG recording
#: from the tuning or the benchmark set of :mod:`hal_sim.face.real_ppg` (needs ``heartpy``).
PULSE_SOURCES = ("parametric", "real-tune", "real-bench")


@dataclass
class ClipSpec:
    """Scenario of one clip.  Defaults give a still, clean, single-person 30 s clip at 640x480.

    ``episodes``: (start_s, end_s, "tense") applies to person 0; a 4-tuple
    (start_s, end_s, "tense", person_index) targets another person.
    ``control``: person 0 is replaced by a printed photo ("photo") or wears a skin-coloured mask
    ("mask"); with ``people`` > 1 the others are live.
    """

    duration_s: float = 30.0
    fps: float = 30.0
    width: int = 640
    height: int = 480
    fitzpatrick: int = 3
    people: int = 1
    motion: bool = False
    flicker: bool = False
    specular: bool = False
    jpeg_quality: int | None = None
    noise: bool = True
    control: str | None = None
    episodes: list[tuple[Any, ...]] = field(default_factory=list)
    base_hr_bpm: float | None = None
    base_rr_bpm: float | None = None
    base_blink_per_min: float | None = None
    # Extensions beyond the list (all off or mild by default).
    illumination_drift: bool = False
    flicker_hz: float = 100.0  # 100 (50 Hz mains) or 120 (60 Hz mains)
    jitter_ms: float = 1.5
    jitter_kind: str = "timestamp"  # "timestamp": regular exposures, jittered stamps; "capture": irregular exposures
    drop_prob: float = 0.0
    expressions: bool = True
    bcg_motion: bool = True  # ballistocardiographic head micro-motion (Balakrishnan et al. 2013)
    fitzpatrick_others: list[int] | None = None  # skin types of persons 1.. (default: drawn)
    base_face: str = "parametric"  # person 0's face: "parametric" or "astronaut" (scikit-image portrait)
    pulse_source: str = "parametric"  # see PULSE_SOURCES; "real-*" keep every other draw of the seed

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if not self.duration_s > 0:
            raise ValueError(f"ClipSpec.duration_s must be > 0, got {self.duration_s}")
        if not 1.0 <= self.fps <= 240.0:
            raise ValueError(f"ClipSpec.fps must be in 1..240, got {self.fps}")
        if not (32 <= int(self.width) <= 4096 and 32 <= int(self.height) <= 4096):
            raise ValueError(f"ClipSpec size must be 32..4096 px, got {self.width}x{self.height}")
        if int(self.fitzpatrick) not in range(1, 7):
            raise ValueError(f"ClipSpec.fitzpatrick must be 1..6, got {self.fitzpatrick}")
        if not 1 <= int(self.people) <= 6:
            raise ValueError(f"ClipSpec.people must be 1..6, got {self.people}")
        if self.control not in CONTROLS:
            raise ValueError(f"ClipSpec.control must be None, 'photo' or 'mask', got {self.control!r}")
        if self.jpeg_quality is not None and not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"ClipSpec.jpeg_quality must be 1..100 or None, got {self.jpeg_quality}")
        if self.base_face not in ("parametric", "astronaut"):
            raise ValueError(f"ClipSpec.base_face must be 'parametric' or 'astronaut', got {self.base_face!r}")
        if self.pulse_source not in PULSE_SOURCES:
            raise ValueError(f"ClipSpec.pulse_source must be one of {', '.join(PULSE_SOURCES)}, "
                             f"got {self.pulse_source!r}")
        if self.pulse_source != "parametric" and self.episodes:
            raise ValueError("ClipSpec.episodes need pulse_source='parametric' (a recorded pulse does not "
                             "respond to a scripted tense episode)")
        if self.jitter_kind not in ("timestamp", "capture"):
            raise ValueError(f"ClipSpec.jitter_kind must be 'timestamp' or 'capture', got {self.jitter_kind!r}")
        if self.flicker_hz <= 0:
            raise ValueError(f"ClipSpec.flicker_hz must be > 0, got {self.flicker_hz}")
        for ep in self.episodes:
            if len(ep) not in (3, 4) or float(ep[1]) <= float(ep[0]) or ep[2] not in ("tense", "calm"):
                raise ValueError(f"ClipSpec.episodes entry {ep!r}: need (start_s, end_s, 'tense'[, person])")
            if len(ep) == 4 and not 0 <= int(ep[3]) < int(self.people):
                raise ValueError(f"ClipSpec.episodes entry {ep!r}: person index out of range")
        for name in ("base_hr_bpm", "base_rr_bpm", "base_blink_per_min"):
            val = getattr(self, name)
            if val is not None and not val > 0:
                raise ValueError(f"ClipSpec.{name} must be > 0 or None, got {val}")

    def episodes_for(self, person: int) -> list[tuple[float, float, str]]:
        out = []
        for ep in self.episodes:
            idx = int(ep[3]) if len(ep) == 4 else 0
            if idx == person:
                out.append((float(ep[0]), float(ep[1]), str(ep[2])))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["episodes"] = [list(e) for e in self.episodes]
        return d
