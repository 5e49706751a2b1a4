"""From a person's box to the hall floor: foot point through the homography, height through P.

A standing person's feet are on the floor (z = 0), so the bottom centre of the box maps to hall
metres through the image-to-ground homography (Hartley & Zisserman 2004, 8.1.1).  The top of the box
is the head at height Z above that point; with the 3x4 projection P the image row v of (X, Y, Z)
is (a + b Z) / (c + d Z), which is solved for Z: a height estimate that does not depend on the
distance to the camera, unlike the box's pixel height.
"""

from __future__ import annotations

import math

import numpy as np

from agent.cctv.box_geometry import foot_point
from agent.cctv.camera_calibration import CameraCalibration


def box_to_ground(cal: CameraCalibration, tlwh: np.ndarray) -> tuple[float, float] | None:
    """Hall (x_m, y_m) of a box's foot point, or None when the point is above the horizon."""
    u, v = foot_point(tlwh)
    h = cal.H_image_to_ground @ np.array([u, v, 1.0])
    if abs(h[2]) < 1e-12:
        return None
    x, y = h[0] / h[2], h[1] / h[2]
    if (np.array([x, y, 0.0]) - cal.C) @ cal.R[2] <= 0:  # behind the camera: horizon or above
        return None
    return float(x), float(y)


def height_from_box(cal: CameraCalibration, tlwh: np.ndarray, ground_xy: tuple[float, float]) -> float | None:
    """Height (m) of the box's top above the foot point; None if the geometry is degenerate."""
    P = cal.P
    top_v = float(tlwh[1])
    X = np.array([ground_xy[0], ground_xy[1], 0.0, 1.0])
    a, c = P[1] @ X, P[2] @ X
    b, d = P[1, 2], P[2, 2]
    den = top_v * d - b
    if abs(den) < 1e-9:
        return None
    z = (a - top_v * c) / den
    return float(z) if math.isfinite(z) and 0.0 < z < 5.0 else None


def expected_box_px(cal: CameraCalibration, foot_uv: tuple[float, float], height_m: float = 1.7,
                    width_m: float = 0.75) -> tuple[float, float] | None:
    """Pixel (width, height) a person of ``height_m`` standing at that foot pixel would have.

    The motion detector uses it to tell one person from a blob of two walking side by side.  The
    width is that of a walking person's box, arms and hand luggage included (0.75 m: MOTChallenge
    pedestrian boxes have a width/height ratio of about 0.41), not the shoulder width.
    """
    g = cal.H_image_to_ground @ np.array([foot_uv[0], foot_uv[1], 1.0])
    if abs(g[2]) < 1e-12:
        return None
    x, y = g[0] / g[2], g[1] / g[2]
    if (np.array([x, y, 0.0]) - cal.C) @ cal.R[2] <= 0:
        return None
    head = cal.P @ np.array([x, y, height_m, 1.0])
    foot = cal.P @ np.array([x, y, 0.0, 1.0])
    if head[2] <= 0 or foot[2] <= 0:
        return None
    h_px = abs(foot[1] / foot[2] - head[1] / head[2])
    fx = cal.K[0, 0]
    depth = (np.array([x, y, height_m / 2]) - cal.C) @ cal.R[2]
    return float(fx * width_m / max(depth, 1e-3)), float(h_px)


def foot_from_head(cal: CameraCalibration, head_uv: tuple[float, float], height_m: float = 1.7
                   ) -> tuple[float, float] | None:
    """Pixel of the feet of a person of ``height_m`` whose head is at ``head_uv``.

    For a person cut by the bottom of the image the foot point is not seen; the head is, and the
    plane z = height_m maps to the image by its own homography ``P[:, [0, 1]] | P[:, 2] h + P[:, 3]``.
    """
    P = cal.P
    Hh = np.column_stack([P[:, 0], P[:, 1], P[:, 2] * height_m + P[:, 3]])
    try:
        g = np.linalg.solve(Hh, np.array([head_uv[0], head_uv[1], 1.0]))
    except np.linalg.LinAlgError:
        return None
    if abs(g[2]) < 1e-12:
        return None
    x, y = g[0] / g[2], g[1] / g[2]
    foot = P @ np.array([x, y, 0.0, 1.0])
    if foot[2] <= 0 or (np.array([x, y, height_m]) - cal.C) @ cal.R[2] <= 0:
        return None
    return float(foot[0] / foot[2]), float(foot[1] / foot[2])
