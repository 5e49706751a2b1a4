"""A fixed camera's calibration as the camera box reads it: ``calib.json`` (schema cedge.hall_calib/1).

The same file is written by the hall simulator (hal_sim/hall/camera.py) and by a site's calibration
step; it holds per camera the intrinsics ``K``, rotation ``R``, centre ``C_m``, the 3x4 projection
``P = K [R | -R C]`` and the image-to-ground homography (Hartley & Zisserman 2004, 8.1.1).  Read here
with its own validation because the agent never imports the simulator.  ``P`` is recomputed from K, R,
C and a stored ``P`` or homography that disagrees with them is refused: a wrong matrix would put every
traveller somewhere else in the hall without any other symptom.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CALIB_SCHEMA = "cedge.hall_calib/1"
MAX_CALIB_BYTES = 1_000_000

Mat3 = list[list[float]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CameraEntry(_Strict):
    camera_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    width_px: int = Field(ge=16, le=16384)
    height_px: int = Field(ge=16, le=16384)
    K: Mat3
    R: Mat3
    C_m: list[float] = Field(min_length=3, max_length=3)
    P: list[list[float]] | None = None
    H_image_to_ground: Mat3 | None = None


class CalibFile(_Strict):
    schema_: str = Field(alias="schema")
    hall: str = Field(default="", max_length=256)
    cameras: list[CameraEntry] = Field(min_length=1, max_length=256)


class CameraCalibration:
    """Projection and ground-plane mapping of one fixed camera."""

    def __init__(self, camera_id: str, K: np.ndarray, R: np.ndarray, C: np.ndarray, width_px: int, height_px: int):
        self.camera_id = camera_id
        self.K, self.R, self.C = K, R, C
        self.width_px, self.height_px = width_px, height_px
        self.P = K @ np.hstack([R, (-R @ C)[:, None]])
        self.H_ground_to_image = self.P[:, [0, 1, 3]]
        self.H_image_to_ground = np.linalg.inv(self.H_ground_to_image)

    @classmethod
    def from_entry(cls, e: CameraEntry) -> CameraCalibration:
        K, R, C = np.asarray(e.K, float), np.asarray(e.R, float), np.asarray(e.C_m, float)
        if K.shape != (3, 3) or R.shape != (3, 3):
            raise ValueError(f"camera {e.camera_id}: K and R must be 3x3")
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-5):
            raise ValueError(f"camera {e.camera_id}: R is not a rotation matrix")
        cal = cls(e.camera_id, K, R, C, e.width_px, e.height_px)
        if e.P is not None:
            P = np.asarray(e.P, float)
            if P.shape != (3, 4) or not np.allclose(P / np.linalg.norm(P), cal.P / np.linalg.norm(cal.P), atol=1e-6):
                raise ValueError(f"camera {e.camera_id}: stored P disagrees with K [R | -R C]")
        if e.H_image_to_ground is not None:
            H = np.asarray(e.H_image_to_ground, float)
            a, b = H / H[2, 2] if H[2, 2] else H, cal.H_image_to_ground / cal.H_image_to_ground[2, 2]
            if H.shape != (3, 3) or not np.allclose(a, b, rtol=1e-4, atol=1e-6):
                raise ValueError(f"camera {e.camera_id}: stored H_image_to_ground disagrees with K, R, C")
        return cal


def load_calibrations(path: str | Path) -> dict[str, CameraCalibration]:
    """Every camera of a ``calib.json``; ValueError naming the file and the problem otherwise."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_CALIB_BYTES:
            raise ValueError(f"larger than {MAX_CALIB_BYTES} bytes")
        doc = CalibFile.model_validate(json.loads(p.read_text(encoding="utf-8")))
        if doc.schema_ != CALIB_SCHEMA:
            raise ValueError(f"schema is {doc.schema_!r}, want {CALIB_SCHEMA!r}")
        return {c.camera_id: CameraCalibration.from_entry(c) for c in doc.cameras}
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e.get("loc", ()))
        raise ValueError(f"{path}: not a camera calibration file: {where}: {e.get('msg')}") from None
    except (OSError, ValueError, np.linalg.LinAlgError) as err:
        raise ValueError(f"{path}: not a camera calibration file: {err}") from None
