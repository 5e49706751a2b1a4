"""Synthetic inputs for the CCTV tests: a calibrated camera, walking people, crossing detections.

Small and deterministic on purpose (the hall simulator in hal_sim/hall is the realistic one, used by
the bench): people are flat coloured figures (head, torso, legs) standing on the floor of one
camera, drawn with the camera's projection, so the tests know every box and ground position exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agent.cctv.camera_calibration import CameraCalibration
from agent.cctv.detections import Detection

W, H = 640, 480


def camera(camera_id: str = "c1") -> CameraCalibration:
    """A camera 4 m up at (0, -6) looking at (0, 6) on the floor; 640x480, f = 500 px."""
    C = np.array([0.0, -6.0, 4.0])
    f = np.array([0.0, 6.0, 0.0]) - C
    f /= np.linalg.norm(f)
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    R = np.vstack([right, down, f])
    K = np.array([[500.0, 0, W / 2], [0, 500.0, H / 2], [0, 0, 1]])
    return CameraCalibration(camera_id, K, R, C, W, H)


def write_calib(path: Path, cal: CameraCalibration) -> Path:
    doc = {"schema": "cedge.hall_calib/1", "hall": "test", "cameras": [{
        "camera_id": cal.camera_id, "width_px": cal.width_px, "height_px": cal.height_px, "K": cal.K.tolist(),
        "R": cal.R.tolist(), "C_m": cal.C.tolist(), "P": cal.P.tolist(),
        "H_image_to_ground": cal.H_image_to_ground.tolist()}]}
    path.write_text(json.dumps(doc))
    return path


def person_box(cal: CameraCalibration, xy: tuple[float, float], height_m: float, width_m: float = 0.5) -> np.ndarray:
    """Pixel box (left, top, w, h) of a person standing at ``xy``."""
    foot = cal.P @ np.array([xy[0], xy[1], 0.0, 1.0])
    head = cal.P @ np.array([xy[0], xy[1], height_m, 1.0])
    u, v_foot = foot[0] / foot[2], foot[1] / foot[2]
    v_head = head[1] / head[2]
    depth = (np.array([xy[0], xy[1], height_m / 2]) - cal.C) @ cal.R[2]
    w = cal.K[0, 0] * width_m / depth
    return np.array([u - w / 2, v_head, w, v_foot - v_head])


def render(cal: CameraCalibration, people: list[tuple[tuple[float, float], float, tuple, tuple]],
           rng: np.random.Generator) -> np.ndarray:
    """A noisy grey floor with people ``(xy, height_m, torso_bgr, legs_bgr)``, far ones drawn first."""
    img = np.full((H, W, 3), 110, np.uint8)
    img[: H // 3] = 150  # a wall
    order = sorted(people, key=lambda p: -((np.array([*p[0], 0.0]) - cal.C) @ cal.R[2]))
    for xy, h_m, torso, legs in order:
        x, y, w, h = (int(round(v)) for v in person_box(cal, xy, h_m))
        y0, y1 = max(0, y), min(H, y + h)
        x0, x1 = max(0, x), min(W, x + w)
        if x1 <= x0 or y1 <= y0:
            continue
        ht, hl = y + int(0.18 * h), y + int(0.55 * h)
        img[y0:max(y0, min(y1, ht)), x0:x1] = (120, 160, 210)  # head (skin)
        img[max(y0, ht):max(y0, min(y1, hl)), x0:x1] = torso
        img[max(y0, hl):y1, x0:x1] = legs
    noise = rng.integers(-4, 5, img.shape, dtype=np.int16)  # sensor noise, cheap
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


Truth = list[list[tuple[int, np.ndarray]]]


def crossing_detections(n_frames: int = 60, seed: int = 1) -> tuple[list[list[Detection]], Truth]:
    """Two people crossing horizontally: A left->right, B right->left, B behind A at the crossing.

    While they overlap, B's detection is weak (0.2-0.4, as a detector scores an occluded person) and
    missing for 3 frames; outside the crossing both are strong.  Returns detections per frame and the
    truth per frame as ``(person, tlwh)``.
    """
    rng = np.random.default_rng(seed)
    dets: list[list[Detection]] = []
    truth: list[list[tuple[int, np.ndarray]]] = []
    for k in range(n_frames):
        ax = 100 + k * 7.0
        bx = 520 - k * 7.0
        a = np.array([ax, 200, 40, 110])
        b = np.array([bx, 195, 38, 104])
        overlap = abs(ax - bx) < 45
        frame_d = [Detection(a + rng.normal(0, 1.0, 4) * [1, 1, 0.5, 0.5], rng.uniform(0.7, 0.95))]
        if not overlap:
            frame_d.append(Detection(b + rng.normal(0, 1.0, 4) * [1, 1, 0.5, 0.5], rng.uniform(0.7, 0.95)))
        elif abs(ax - bx) > 12:  # partly visible: weak box of the visible half
            vis = b.copy()
            if bx > ax:
                vis[0], vis[2] = ax + 40, max(6.0, bx + 38 - (ax + 40))
            else:
                vis[2] = max(6.0, ax - bx)
            frame_d.append(Detection(vis, rng.uniform(0.2, 0.4)))
        order = rng.permutation(len(frame_d))
        dets.append([frame_d[i] for i in order])
        truth.append([(1, a), (2, b)])
    return dets, truth
