"""Compact appearance of a person: colour by body part and a height estimate.

Why colour by part and not a learned re-identification embedding: the descriptor leaves the box and
is stored at the controller, so it must say little about the person (no face, no pixels) while still
telling "red jacket, dark trousers" from "white shirt, blue jeans" in another camera.  Hue is what
survives a change of camera and lighting best among cheap colour cues (Gray & Tao 2008 and most
hand-crafted re-id since); dark, grey and white clothes have no meaningful hue and get three
brightness bins instead.  Layout "hue8+grey3/v1" (agent/wire_schema.py): per part 8 hue bins of the
chromatic pixels (S >= 60 and V >= 50 on OpenCV's scale), then 3 bins (V < 85, < 170, rest) of the
others; the 11 values sum to 1.

Parts are horizontal bands of the box: head 0-18 %, torso 18-55 %, legs 55-100 % of the height.
Only foreground pixels count when a mask is given (background subtraction), so the floor between the
legs does not colour the trousers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

PARTS = (("head", 0.0, 0.18), ("torso", 0.18, 0.55), ("legs", 0.55, 1.0))
N_HUE = 8
N_GREY = 3
S_MIN, V_MIN = 60, 50
MIN_PART_PIXELS = 12


def part_histograms(frame_bgr: np.ndarray, tlwh: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``{part: 11-bin histogram}`` for the parts with enough (foreground) pixels in the box."""
    H, W = frame_bgr.shape[:2]
    left, top, w, h = (float(v) for v in tlwh)
    x0, x1 = int(max(0, left + 0.15 * w)), int(min(W, left + 0.85 * w))  # trim the sides: background, arms
    out: dict[str, np.ndarray] = {}
    if x1 - x0 < 2:
        return out
    for name, a, b in PARTS:
        y0, y1 = int(max(0, top + a * h)), int(min(H, top + b * h))
        if y1 - y0 < 2:
            continue
        hsv = cv2.cvtColor(frame_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2HSV).reshape(-1, 3)
        if mask is not None:
            keep = mask[y0:y1, x0:x1].reshape(-1) > 0
            hsv = hsv[keep]
        if len(hsv) < MIN_PART_PIXELS:
            continue
        hue, sat, val = hsv[:, 0].astype(int), hsv[:, 1], hsv[:, 2]
        chroma = (sat >= S_MIN) & (val >= V_MIN)
        hist = np.zeros(N_HUE + N_GREY)
        np.add.at(hist, np.minimum(hue[chroma] * N_HUE // 180, N_HUE - 1), 1)
        grey_v = val[~chroma]
        hist[N_HUE + 0] = np.count_nonzero(grey_v < 85)
        hist[N_HUE + 1] = np.count_nonzero((grey_v >= 85) & (grey_v < 170))
        hist[N_HUE + 2] = np.count_nonzero(grey_v >= 170)
        out[name] = hist / hist.sum()
    return out


@dataclass
class AppearanceSummary:
    """Running mean of the part histograms and median of the height estimates of one track."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    heights_m: list[float] = field(default_factory=list)
    n_frames: int = 0
    max_heights: int = 200

    def add(self, hists: dict[str, np.ndarray], height_m: float | None) -> None:
        self.n_frames += 1
        for k, v in hists.items():
            self.sums[k] = self.sums.get(k, 0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        if height_m is not None and 0.3 <= height_m <= 3.0:
            self.heights_m.append(height_m)
            if len(self.heights_m) > self.max_heights:  # bounded: keep every other sample
                self.heights_m = self.heights_m[::2]

    def part(self, name: str) -> list[float]:
        if name not in self.sums:
            return []
        h = self.sums[name] / self.counts[name]
        return [round(float(x), 4) for x in h / h.sum()]

    def height_m(self) -> float | None:
        return round(float(np.median(self.heights_m)), 3) if self.heights_m else None


def distance(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    """Mean Bhattacharyya (Hellinger) distance over the parts both descriptors have, in [0, 1]."""
    ds = []
    for name, _, _ in PARTS:
        x, y = a.get(name) or [], b.get(name) or []
        if len(x) == len(y) and x:
            bc = float(np.sum(np.sqrt(np.asarray(x) * np.asarray(y))))
            ds.append(float(np.sqrt(max(0.0, 1.0 - bc))))
    return float(np.mean(ds)) if ds else 1.0
