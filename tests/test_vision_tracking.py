"""Face tracking with anonymous ids and the skin region (real face photograph, moved in frame)."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from vision_synth import astronaut_bgr

from agent.vision.errors import VisionInputError
from agent.vision.face_tracker import FaceTracker, iou
from agent.vision.skin_roi import SkinRoi


def _frame(dx: float, dy: float) -> np.ndarray:
    face = astronaut_bgr()
    fr = np.full((480, 640, 3), 90, np.uint8)
    fr[:, 64:576] = face[16:496]
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(fr, m, (640, 480), borderMode=cv2.BORDER_REPLICATE)


def test_tracker_follows_a_moving_face_with_one_random_id() -> None:
    tr = FaceTracker(seed=7)
    first = None
    for k in range(90):
        dx, dy = 25 * np.sin(2 * np.pi * k / 60), 6 * np.cos(2 * np.pi * k / 45)
        tracks = tr.update(cv2.cvtColor(_frame(dx, dy), cv2.COLOR_BGR2GRAY))
        assert len(tracks) == 1
        if first is None:
            first = tracks[0]
            box0, d0 = np.array(first.box), np.array([dx, dy])
        assert tracks[0].track_id == first.track_id
    # the box moved with the face (within 3 px) and kept its size (within 10 %)
    box = np.array(tracks[0].box)
    assert np.allclose(box[:2] - box0[:2], np.array([dx, dy]) - d0, atol=3.0)
    assert abs(box[2] / box0[2] - 1) < 0.1
    assert re.fullmatch(r"t[0-9a-f]{8}", first.track_id)


def test_ids_are_random_not_derived_from_the_face() -> None:
    gray = cv2.cvtColor(_frame(0, 0), cv2.COLOR_BGR2GRAY)
    ids = {FaceTracker(seed=s).update(gray)[0].track_id for s in range(5)}
    assert len(ids) == 5


def test_no_face_no_track_and_bad_input() -> None:
    tr = FaceTracker()
    assert tr.update(np.full((480, 640), 120, np.uint8)) == []
    with pytest.raises(VisionInputError, match="grayscale"):
        tr.update(np.zeros((480, 640, 3), np.uint8))


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 1 / 3) < 1e-9


def test_skin_roi_excludes_highlights_and_moves_smoothly() -> None:
    rng = np.random.default_rng(1)
    frame = np.empty((200, 200, 3), np.uint8)
    frame[:] = (90, 120, 170)  # skin-like BGR
    frame += rng.integers(0, 3, frame.shape, dtype=np.uint8)
    frame[30:90, 60:140] = (120, 130, 140)  # grey "hair" patch in the forehead
    frame[120:130, 70:90] = 255  # specular highlight on a cheek
    roi = SkinRoi()
    s = roi.sample(frame, (40.0, 20.0, 120.0, 120.0))
    assert s.n_pixels > 1000
    assert np.allclose(s.rgb, (171, 121, 91), atol=2.0)  # R, G, B of the skin only
    # a sub-pixel shift of the box changes the mean by a sub-pixel amount (no one-pixel steps)
    ramp = np.tile(np.linspace(60, 200, 200, dtype=np.float32)[:, None], (1, 200))
    grad = np.stack([ramp * 0.55, ramp * 0.7, ramp], axis=2).astype(np.uint8)
    roi2 = SkinRoi()
    means = [roi2.sample(grad, (40.0, 20.0 + d, 120.0, 120.0)).rgb[0] for d in np.linspace(0, 1, 6)]
    steps = np.diff(means)
    assert np.all(steps > 0) and steps.max() < 2.0 * steps.min()
