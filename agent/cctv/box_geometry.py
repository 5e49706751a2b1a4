"""Axis-aligned boxes: conversions and pairwise IoU, vectorised.

Boxes are ``(left, top, width, height)`` in pixels, as in the MOTChallenge files, so that what the
tracker reads and writes needs no conversion at the edges.  The Kalman state uses
``(centre_x, centre_y, aspect, height)`` (Wojke et al. 2017, DeepSORT; kept by ByteTrack) because a
walking person's aspect ratio changes slowly while the box's size changes with distance.
"""

from __future__ import annotations

import numpy as np


def tlwh_to_xyah(tlwh: np.ndarray) -> np.ndarray:
    """``(left, top, w, h)`` -> ``(cx, cy, w/h, h)``; works on one box or an (N, 4) array."""
    b = np.asarray(tlwh, dtype=float)
    out = b.copy()
    out[..., 0] = b[..., 0] + b[..., 2] / 2
    out[..., 1] = b[..., 1] + b[..., 3] / 2
    out[..., 2] = b[..., 2] / np.maximum(b[..., 3], 1e-6)
    return out


def xyah_to_tlwh(xyah: np.ndarray) -> np.ndarray:
    """Inverse of :func:`tlwh_to_xyah`."""
    s = np.asarray(xyah, dtype=float)
    out = s[..., :4].copy()
    w = s[..., 2] * s[..., 3]
    out[..., 2] = w
    out[..., 0] = s[..., 0] - w / 2
    out[..., 1] = s[..., 1] - s[..., 3] / 2
    return out


def iou_matrix(a_tlwh: np.ndarray, b_tlwh: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): (N, M)."""
    a = np.asarray(a_tlwh, dtype=float).reshape(-1, 4)
    b = np.asarray(b_tlwh, dtype=float).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ax1, ay1 = a[:, 0:1], a[:, 1:2]
    ax2, ay2 = ax1 + a[:, 2:3], ay1 + a[:, 3:4]
    bx1, by1 = b[:, 0], b[:, 1]
    bx2, by2 = bx1 + b[:, 2], by1 + b[:, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    union = (a[:, 2:3] * a[:, 3:4]) + (b[:, 2] * b[:, 3]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def foot_point(tlwh: np.ndarray) -> tuple[float, float]:
    """Bottom centre of a box: where a standing person touches the floor (the ground-plane point)."""
    left, top, w, h = (float(v) for v in tlwh[:4])
    return left + w / 2, top + h
