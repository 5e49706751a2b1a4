"""Distances between appearance descriptors (colour histograms by body part, height).

Per part, the Bhattacharyya distance between normalised histograms, in the form OpenCV uses for
``HISTCMP_BHATTACHARYYA`` (``sqrt(1 - sum(sqrt(p*q)))``, 0 same .. 1 disjoint; Comaniciu, Ramesh &
Meer 2003 use it for colour-based tracking for the same reason: bounded and robust to bin noise).

Two summaries, because the controller asks two different questions:

* ``appearance_cost`` - is this the same person? Torso and legs weigh most; the head (hair/skin,
  few pixels) little; the height difference adds a term. ``robust=True`` lets one of torso or
  legs change (a jacket taken off in a blind spot) without breaking the link.
* ``part_distances`` - what changed? The appearance-change rule compares the parts one by one.
"""

from __future__ import annotations

import numpy as np

from controller.cctv.tracklet import Descriptor

__all__ = ["appearance_cost", "bhattacharyya", "part_distances"]

WEIGHTS = {"head": 0.15, "torso": 0.45, "legs": 0.40}
HEIGHT_SCALE_M = 0.25  #: a 25 cm height difference costs as much as disjoint colours


def bhattacharyya(p: np.ndarray, q: np.ndarray) -> float | None:
    """Distance 0..1 between two normalised histograms of the same length; None if either is missing."""
    if len(p) == 0 or len(q) == 0 or len(p) != len(q):
        return None
    bc = float(np.sum(np.sqrt(np.clip(p, 0, None) * np.clip(q, 0, None))))
    return float(np.sqrt(max(0.0, 1.0 - min(1.0, bc))))


def part_distances(a: Descriptor, b: Descriptor) -> dict[str, float]:
    out = {}
    for part in WEIGHTS:
        d = bhattacharyya(getattr(a, part), getattr(b, part))
        if d is not None:
            out[part] = d
    return out


def appearance_cost(a: Descriptor, b: Descriptor, robust: bool = False) -> float:
    """0 (identical) .. ~1 (nothing in common). Missing parts are left out; nothing comparable -> 0.5."""
    d = part_distances(a, b)
    if not d:
        colour = 0.5
    elif robust and "torso" in d and "legs" in d:
        lo, hi = sorted((d["torso"], d["legs"]))
        colour = 0.8 * lo + 0.2 * hi
    else:
        w = sum(WEIGHTS[p] for p in d)
        colour = sum(WEIGHTS[p] * v for p, v in d.items()) / w
    if a.height_m is not None and b.height_m is not None:
        colour = 0.8 * colour + 0.2 * min(1.0, abs(a.height_m - b.height_m) / HEIGHT_SCALE_M)
    return float(colour)
