"""OpenCV camera driver against a real MJPG/AVI file written with cv2.VideoWriter."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from agent.hal.interfaces import DeviceContext, DeviceError, DeviceTimeout, DeviceUnavailable, SensorState
from agent.hal.registry import create_device
from drivers.opencv_camera import OpenCvCamera

cv2 = pytest.importorskip("cv2")

N_FRAMES = 12
FPS = 50.0
W, H = 96, 64


def _level(i: int) -> int:
    """Grey level that encodes frame number i (20 apart: far beyond MJPG's error on a flat patch)."""
    return 10 + 20 * i


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        img = np.zeros((H, W, 3), np.uint8)
        img[:, : W // 2] = _level(i)  # left half: frame number
        img[:, W // 2 :, 2] = 200  # right half: pure red in BGR, checks channel order
        writer.write(img)
    writer.release()
    return path


def _frame_number(image: np.ndarray) -> int:
    return round((float(image[8:-8, 8 : W // 2 - 8].mean()) - 10) / 20)


def test_file_frames_arrive_in_order_as_bgr(clip: Path) -> None:
    with OpenCvCamera(str(clip)) as cam:
        assert isinstance(cam, OpenCvCamera)
        assert cam.fps == pytest.approx(FPS)
        numbers, indices = [], []
        while True:
            try:
                frame = cam.read_frame(timeout_s=0.5)
            except DeviceTimeout:
                break
            assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
            red = frame.image[8:-8, W // 2 + 8 : -8].mean(axis=(0, 1))
            assert red[2] > 180 and red[0] < 30 and red[1] < 30
            numbers.append(_frame_number(frame.image))
            indices.append(frame.index)
        assert indices == sorted(set(indices))  # never the same frame twice
        assert numbers == sorted(numbers) and set(numbers) <= set(range(N_FRAMES))
        assert numbers[-1] == N_FRAMES - 1
        assert cam.state == SensorState.DEGRADED and "end of file" in cam.state_detail
        info = cam.describe()
        assert (info["width"], info["height"]) == (W, H)
        assert info["stats"]["frames"] == N_FRAMES
    assert cam.state == SensorState.CLOSED


def test_looping_file_reopens_and_keeps_delivering(clip: Path) -> None:
    ctx = DeviceContext(unit_id="cam-01")
    cam = create_device("camera", "opencv", {"source": str(clip), "loop_file": True, "realtime": False}, ctx)
    assert isinstance(cam, OpenCvCamera)
    with cam:
        last = -1
        for _ in range(3 * N_FRAMES):
            frame = cam.read_frame(timeout_s=2.0)
            assert frame.index > last
            last = frame.index
        assert cam.stats()["reopens"] >= 1
        assert cam.state == SensorState.OK


def test_missing_source_and_missing_cv2_are_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cam = OpenCvCamera(str(tmp_path / "nope.avi"))
    with pytest.raises(DeviceError):
        cam.read_frame(0.1)  # never opened
    with pytest.raises(DeviceUnavailable, match="does not exist"):
        cam.open()
    assert cam.state == SensorState.FAILED
    cam.close()
    cam.close()  # idempotent
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    with pytest.raises(DeviceUnavailable, match="OpenCV"):
        OpenCvCamera(0).open()
