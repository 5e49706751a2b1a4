"""Calibrated pinhole camera over the hall floor: intrinsics, pose, ground-plane homography.

Model (Hartley & Zisserman, *Multiple View Geometry*, 2nd ed., sections 6.1 and 8.1.1): a world point
X projects to ``x ~ K R (X - C)``. For points on the floor (z = 0) this collapses to a 3x3
homography ``H = K [r1 r2 -R C]`` from ground metres to pixels, whose inverse turns a detected
foot point back into hall coordinates. That inverse is what a camera box uses to publish
ground-plane positions, so the calibration file written here is the contract between the
simulator and the edge pipeline (``calib.json`` of a clip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hal_sim.hall.floor_plan import CameraSpec

__all__ = ["CameraCalib", "load_calibs", "save_calibs"]

CALIB_SCHEMA = "cedge.hall_calib/1"


@dataclass(frozen=True)
class CameraCalib:
    """One camera: ``K`` (3x3), ``R`` (world->camera rotation), ``C`` (centre, m), image size."""

    camera_id: str
    K: np.ndarray
    R: np.ndarray
    C: np.ndarray
    width_px: int
    height_px: int

    @classmethod
    def from_spec(cls, spec: CameraSpec) -> CameraCalib:
        """Pose from "position + look-at ground point": optical axis towards the point, image x to the right."""
        C = np.asarray(spec.position_m, dtype=float)
        target = np.array([spec.look_at_m[0], spec.look_at_m[1], 0.0])
        f = target - C
        f /= np.linalg.norm(f)
        up = np.array([0.0, 0.0, 1.0])
        right = np.cross(f, up)
        if np.linalg.norm(right) < 1e-6:  # looking straight down: image x along hall x
            right = np.array([1.0, 0.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(f, right)
        if spec.roll_deg:
            a = np.radians(spec.roll_deg)
            right, down = np.cos(a) * right + np.sin(a) * down, -np.sin(a) * right + np.cos(a) * down
        R = np.vstack([right, down, f])
        K = np.array([[spec.fx_px, 0.0, spec.width_px / 2.0], [0.0, spec.fy_px, spec.height_px / 2.0], [0, 0, 1.0]])
        return cls(spec.id, K, R, C, spec.width_px, spec.height_px)

    # ------------------------------------------------------------------ projection
    @property
    def P(self) -> np.ndarray:
        """3x4 projection matrix ``K [R | -R C]``."""
        return self.K @ np.hstack([self.R, (-self.R @ self.C)[:, None]])

    @property
    def H_ground_to_image(self) -> np.ndarray:
        P = self.P
        return P[:, [0, 1, 3]]

    @property
    def H_image_to_ground(self) -> np.ndarray:
        return np.linalg.inv(self.H_ground_to_image)

    def depth_m(self, xyz: np.ndarray) -> np.ndarray:
        """Distance along the optical axis of world points (N, 3); <= 0 means behind the camera."""
        return (np.asarray(xyz, float) - self.C) @ self.R[2]

    def project(self, xyz: np.ndarray) -> np.ndarray:
        """World points (N, 3) to pixels (N, 2); points behind the camera give NaN."""
        xyz = np.asarray(xyz, dtype=float).reshape(-1, 3)
        cam = (xyz - self.C) @ self.R.T
        z = cam[:, 2:3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (cam[:, :2] / z) * [self.K[0, 0], self.K[1, 1]] + [self.K[0, 2], self.K[1, 2]]
        uv[z[:, 0] <= 1e-3] = np.nan
        return uv

    def image_to_ground(self, uv: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) of points on the floor to hall metres (N, 2); above-horizon pixels give NaN."""
        uv = np.asarray(uv, dtype=float).reshape(-1, 2)
        h = np.hstack([uv, np.ones((len(uv), 1))]) @ self.H_image_to_ground.T
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = h[:, :2] / h[:, 2:3]
        # a pixel above the horizon maps to a point behind the camera (negative scale)
        ground = np.hstack([xy, np.zeros((len(xy), 1))])
        xy[self.depth_m(ground) <= 0] = np.nan
        return xy

    def ground_to_image(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        return self.project(np.hstack([xy, np.zeros((len(xy), 1))]))

    def sees_ground(self, xy: np.ndarray, margin_px: float = 0.0, max_range_m: float = 40.0) -> np.ndarray:
        """Boolean per floor point: in front of the camera, inside the image (less margin), within range."""
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        uv = self.ground_to_image(xy)
        ok = np.isfinite(uv).all(axis=1)
        ok &= (uv[:, 0] >= margin_px) & (uv[:, 0] < self.width_px - margin_px)
        ok &= (uv[:, 1] >= margin_px) & (uv[:, 1] < self.height_px - margin_px)
        ok &= np.hypot(xy[:, 0] - self.C[0], xy[:, 1] - self.C[1]) <= max_range_m
        return ok

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"camera_id": self.camera_id, "width_px": self.width_px, "height_px": self.height_px,
                "K": self.K.tolist(), "R": self.R.tolist(), "C_m": self.C.tolist(), "P": self.P.tolist(),
                "H_image_to_ground": self.H_image_to_ground.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> CameraCalib:
        K = np.asarray(d["K"], float)
        R = np.asarray(d["R"], float)
        C = np.asarray(d["C_m"], float)
        if K.shape != (3, 3) or R.shape != (3, 3) or C.shape != (3,):
            raise ValueError(f"camera {d.get('camera_id')!r}: K and R must be 3x3 and C_m 3 values")
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-6):
            raise ValueError(f"camera {d.get('camera_id')!r}: R is not a rotation")
        return cls(str(d["camera_id"]), K, R, C, int(d["width_px"]), int(d["height_px"]))


def save_calibs(path: str | Path, calibs: list[CameraCalib], hall_name: str) -> None:
    """Write ``calib.json``: one entry per camera (K, R, C, P and the image->ground homography)."""
    doc = {"schema": CALIB_SCHEMA, "hall": hall_name, "cameras": [c.to_dict() for c in calibs]}
    Path(path).write_text(json.dumps(doc, indent=1))


def load_calibs(path: str | Path) -> dict[str, CameraCalib]:
    """Read ``calib.json``; raises ValueError naming the file on a wrong schema or matrix."""
    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("schema") != CALIB_SCHEMA:
            raise ValueError(f"schema is {doc.get('schema')!r}, expected {CALIB_SCHEMA!r}")
        return {c["camera_id"]: CameraCalib.from_dict(c) for c in doc["cameras"]}
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a hall calibration file: {exc}") from None
