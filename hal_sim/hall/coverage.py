"""Which part of the floor each camera films: overlaps, gaps and blind spots of a hall's camera plan.

Why compute it rather than declare it: the controller's camera topology (which cameras overlap,
which are separated by an unfilmed stretch) and the tests' "the blind corner is really blind"
must follow from the calibrated cameras, not from a hand-written list that drifts when a camera
is re-aimed.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely import contains_xy

from hal_sim.hall.camera import CameraCalib
from hal_sim.hall.floor_plan import FloorPlan

__all__ = ["coverage_grid", "seen_fraction"]


def coverage_grid(plan: FloorPlan, calibs: list[CameraCalib], step_m: float = 0.25,
                  margin_px: float = 0.0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Floor sample points (x, y grids) and per camera a boolean grid: point free and in the image.

    A point counts as filmed when a person's feet there are inside the picture (the box needs the
    foot point for the ground position); walls are not modelled as occluders.
    """
    minx, miny, maxx, maxy = plan.free_space.bounds
    xs = np.arange(minx + step_m / 2, maxx, step_m)
    ys = np.arange(miny + step_m / 2, maxy, step_m)
    gx, gy = np.meshgrid(xs, ys)
    free = contains_xy(plan.free_space, gx, gy)
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    out = {c.camera_id: (c.sees_ground(pts, margin_px=margin_px, max_range_m=1e9).reshape(gx.shape) & free
                         & line_of_sight(plan, c, pts).reshape(gx.shape)) for c in calibs}
    return gx, gy, out


def line_of_sight(plan: FloorPlan, calib: CameraCalib, xy: np.ndarray) -> np.ndarray:
    """Per floor point: the plan-view line from the camera to it stays inside the sight region
    (no outer wall, no tall obstacle in between). Vectorised in GEOS through shapely 2."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) == 0:
        return np.zeros(0, bool)
    cam = np.broadcast_to(calib.C[:2], xy.shape)
    lines = shapely.linestrings(np.stack([cam, xy], 1))
    region = plan.sight_region.buffer(0.05)
    shapely.prepare(region)
    return shapely.covers(region, lines)


def seen_fraction(plan: FloorPlan, calibs: list[CameraCalib], zone: str, step_m: float = 0.25) -> dict[str, float]:
    """Per camera, the fraction of a zone's free floor it films."""
    gx, gy, cov = coverage_grid(plan, calibs, step_m)
    inside = contains_xy(plan.zone_polygons[zone], gx, gy) & contains_xy(plan.free_space, gx, gy)
    n = max(1, int(inside.sum()))
    return {cid: float((g & inside).sum() / n) for cid, g in cov.items()}
