"""Settings of the CCTV chain on a camera box, validated at load (unknown keys refused)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CctvConfig(BaseModel):
    """One camera's chain.  Defaults are the ones the bench measures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracker: Literal["bytetrack", "iou"] = "bytetrack"
    #: "off": MOG2 blobs only; "new": HOG looks at blobs not explained by a confirmed track (cheap);
    #: "all": HOG looks at every blob of every frame (slow: a few ms per blob).
    hog_verify: Literal["off", "new", "all"] = "new"
    #: a site-supplied LiteRT SSD person detector; replaces MOG2 when set (never downloaded)
    person_model_tflite: Path | None = None
    publish_interval_s: float = Field(default=2.0, gt=0, le=60)
    sample_every_n_frames: int = Field(default=2, ge=1, le=100)  #: ground samples kept per track
    appearance_every_n_frames: int = Field(default=3, ge=1, le=100)
    min_track_frames: int = Field(default=3, ge=1, le=1000)  #: a track is published after this many frames
    #: Privacy: off by default.  When on, crops of each track are kept on the box (evidence_dir) and
    #: the tracklet names its clip; pixels still never go into a wire message.
    evidence_clips: bool = False
    evidence_dir: Path | None = None
    evidence_max_clips: int = Field(default=200, ge=1, le=100_000)
    evidence_frames_per_clip: int = Field(default=20, ge=1, le=1000)

    @model_validator(mode="after")
    def _evidence_needs_dir(self) -> CctvConfig:
        if self.evidence_clips and self.evidence_dir is None:
            raise ValueError("evidence_clips: true needs evidence_dir (where clips are kept on the box)")
        return self
