"""One person detection in one frame: a box, a confidence, and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detection:
    """A person box ``(left, top, width, height)`` in pixels with a confidence in [0, 1].

    ``source`` says which detector produced it (``mog2``, ``hog``, ``litert``, ``file``): the tracker
    does not care, but the bench and the operator do when a detector misbehaves.
    """

    tlwh: np.ndarray = field(repr=False)
    score: float
    source: str = "file"

    def __post_init__(self) -> None:
        box = np.asarray(self.tlwh, dtype=float).reshape(4)
        if not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
            raise ValueError(f"a detection box needs a finite positive width and height, got {box.tolist()}")
        object.__setattr__(self, "tlwh", box)
        object.__setattr__(self, "score", float(min(max(self.score, 0.0), 1.0)))
