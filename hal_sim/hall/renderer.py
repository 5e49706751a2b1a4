"""Renders one hall camera: static background, travellers as perspective-correct body parts, lighting, noise.

Why this construction: the edge pipeline under test does background subtraction, HOG people
detection, ground-plane projection of the foot point and colour-by-body-part descriptors. Each of
those needs a specific property of the picture, and the renderer provides exactly that, cheaply:

* every body part is a 3D quad (legs, torso, arms, bag) or ellipse (head) standing on the hall
  floor, projected through the calibrated camera, so apparent size, foreshortening and the foot
  point obey the same projection the box inverts (Hartley & Zisserman, ch. 6);
* quads are billboards facing the camera around the vertical axis (the usual impostor technique
  for crowds, Tecchia, Loscos & Chrysanthou 2002), legs and arms swing with the gait phase, so a
  silhouette looks like a walking person to a HOG detector (Dalal & Triggs 2005) and not a box;
* travellers are drawn far to near (painter's algorithm) - occlusion by depth order - and a label
  image drawn the same way gives each person's visible fraction for the MOTChallenge truth;
* a global illumination gain per frame (slow drift and abrupt steps), and Gaussian sensor noise
  from a precomputed bank, which is what real fixed cameras feed background subtraction.

Static objects (belts, lane walls) are part of the background and never occlude travellers; the
cameras are high (5 m) and the objects low (0.9 m), so this is visible only at the far image edge.
Cost: one 640x480 frame with 20 people takes ~3 ms (numpy projection of all points at once, then
OpenCV polygon fills), so a bench can render on the fly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from hal_sim.hall.camera import CameraCalib
from hal_sim.hall.crowd import FrameState
from hal_sim.hall.floor_plan import FloorPlan

__all__ = ["GtBox", "HallRenderer"]

PX_PER_M = 25.0  # top-down floor texture resolution
FLOOR_BGR = (178, 188, 196)
WALL_BGR = (150, 152, 148)


@dataclass(frozen=True)
class GtBox:
    """Truth of one traveller in one frame of one camera (MOTChallenge gt row, 1-based frame added by the writer)."""

    traveller_id: int
    left_px: float
    top_px: float
    width_px: float
    height_px: float
    visibility: float  # visible fraction of the silhouette (occlusion and image border), 0..1
    x_m: float
    y_m: float


def _floor_texture(plan: FloorPlan, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top-down picture of the floor and the affine map metres -> its pixels."""
    minx, miny, maxx, maxy = plan.free_space.bounds
    minx, miny, maxx, maxy = minx - 2, miny - 2, maxx + 2, maxy + 2
    w, h = int((maxx - minx) * PX_PER_M), int((maxy - miny) * PX_PER_M)
    A = np.array([[PX_PER_M, 0, -minx * PX_PER_M], [0, PX_PER_M, -miny * PX_PER_M], [0, 0, 1.0]])
    img = np.empty((h, w, 3), np.uint8)
    img[:] = WALL_BGR

    def fill(poly, bgr):
        pts = np.asarray(poly.exterior.coords)[:, :2]
        pts = (pts @ A[:2, :2].T + A[:2, 2]).round().astype(np.int32)
        cv2.fillPoly(img, [pts], bgr, lineType=cv2.LINE_AA)

    geoms = getattr(plan.free_space, "geoms", [plan.free_space])
    for g in geoms:
        fill(g, FLOOR_BGR)
        for hole in g.interiors:
            pts = (np.asarray(hole.coords)[:, :2] @ A[:2, :2].T + A[:2, 2]).round().astype(np.int32)
            cv2.fillPoly(img, [pts], (70, 70, 75))
    tints = {"customs_green": (150, 200, 150), "customs_red": (150, 150, 210), "restroom": (200, 200, 190),
             "exit": (190, 200, 170)}
    for name, poly in plan.zone_polygons.items():
        kind = plan.zone_kind(name)
        if kind in tints:
            fill(poly.intersection(plan.free_space).buffer(0) if kind != "restroom" else poly, tints[kind])
    # tiles: 1 m grid and a mild per-tile brightness variation (texture for a fixed background)
    tile = rng.normal(0, 5, (int(maxy - miny) + 1, int(maxx - minx) + 1))
    tile_img = cv2.resize(tile, (w, h), interpolation=cv2.INTER_NEAREST)[..., None]
    floor_mask = np.all(img != np.array(WALL_BGR, np.uint8), axis=2, keepdims=True)
    img = np.where(floor_mask, np.clip(img + tile_img, 0, 255), img).astype(np.uint8)
    for gx in np.arange(np.ceil(minx), maxx):
        x = int((gx - minx) * PX_PER_M)
        img[:, x][floor_mask[:, x, 0]] = (img[:, x][floor_mask[:, x, 0]] * 0.85).astype(np.uint8)
    for gy in np.arange(np.ceil(miny), maxy):
        y = int((gy - miny) * PX_PER_M)
        img[y][floor_mask[y, :, 0]] = (img[y][floor_mask[y, :, 0]] * 0.85).astype(np.uint8)
    return img, A


class HallRenderer:
    """Renders frames of one camera. Build once per camera; ``render`` is cheap."""

    def __init__(self, plan: FloorPlan, calib: CameraCalib, seed: int = 0, noise_sigma: float = 3.0) -> None:
        self.plan = plan
        self.calib = calib
        rng = np.random.default_rng(seed * 1009 + sum(map(ord, calib.camera_id)))
        self.size = (calib.width_px, calib.height_px)
        self.background = self._background(rng)
        self._noise = []
        for _ in range(6):
            n = rng.normal(0, noise_sigma, (calib.height_px, calib.width_px, 3))
            self._noise.append((np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)))
        self._frame_no = 0
        self._rng = rng

    # ------------------------------------------------------------------ background
    def _background(self, rng: np.random.Generator) -> np.ndarray:
        tex, A = _floor_texture(self.plan, rng)
        H = self.calib.H_ground_to_image @ np.linalg.inv(A)
        w, h = self.size
        bg = cv2.warpPerspective(tex, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=WALL_BGR)
        # pixels whose ray never meets the floor (above the horizon) are wall: a vertical gradient
        vv, uu = np.mgrid[0:h, 0:w]
        ground = self.calib.image_to_ground(np.stack([uu.ravel(), vv.ravel()], 1).astype(float))
        sky = ~np.isfinite(ground[:, 0]).reshape(h, w)
        far = np.hypot(ground[:, 0] - self.calib.C[0], ground[:, 1] - self.calib.C[1]).reshape(h, w) > 60
        wall = (np.linspace(120, 165, h)[:, None, None] * np.array([1.0, 1.0, 0.97])).astype(np.uint8)
        mask = (sky | far)[..., None]
        bg = np.where(mask, np.broadcast_to(wall, (h, w, 3)), bg)
        # static boxes: baggage belts and lane walls as 3D blocks
        for name, poly in self.plan.obstacle_polygons.items():
            height = 0.9 if name.startswith("belt") else 1.2
            bg = self._draw_block(bg, np.asarray(poly.exterior.coords)[:-1, :2], height)
        # vignetting, as every wide lens has
        r2 = ((uu - w / 2) / (w / 2)) ** 2 + ((vv - h / 2) / (h / 2)) ** 2
        bg = np.clip(bg * (1 - 0.12 * r2)[..., None], 0, 255).astype(np.uint8)
        return np.ascontiguousarray(bg)

    def _draw_block(self, img: np.ndarray, base_xy: np.ndarray, height_m: float) -> np.ndarray:
        n = len(base_xy)
        bottom = np.hstack([base_xy, np.zeros((n, 1))])
        top = np.hstack([base_xy, np.full((n, 1), height_m)])
        faces = [(np.vstack([bottom[i], bottom[(i + 1) % n], top[(i + 1) % n], top[i]]), (95, 95, 100))
                 for i in range(n)]
        faces.append((top, (60, 62, 66)))
        faces.sort(key=lambda f: -float(self.calib.depth_m(f[0]).mean()))
        for pts3, bgr in faces:
            uv = self.calib.project(pts3)
            if not np.isfinite(uv).all():
                continue
            cv2.fillConvexPoly(img, np.round(uv).astype(np.int32), bgr, lineType=cv2.LINE_AA)
        return img

    # ------------------------------------------------------------------ people
    def _parts(self, xy: np.ndarray, heading: np.ndarray, phase: np.ndarray, moving: np.ndarray, apps: list):
        """All body-part quads of all travellers at once: corners (N, 6, 4, 3), colours (N, 6, 3),
        valid (N, 6), head centre and head top (N, 3). Slots: bag, leg, leg, torso, arm, arm."""
        n = len(xy)
        hgt = np.array([a.height_m for a in apps])
        d = xy - self.calib.C[:2]
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
        u = np.stack([-d[:, 1], d[:, 0]], 1)  # billboard axis (horizontal, facing the camera)
        f = np.stack([np.cos(heading), np.sin(heading)], 1)
        left = np.stack([-f[:, 1], f[:, 0]], 1)
        s = (np.sin(phase) * moving)[:, None]
        hip, shoulder = 0.50 * hgt, 0.81 * hgt
        c_lo = np.zeros((n, 6, 2))
        c_hi = np.zeros((n, 6, 2))
        w = np.zeros((n, 6, 2))
        z = np.zeros((n, 6, 2))
        col = np.zeros((n, 6, 3))
        valid = np.ones((n, 6), bool)
        for k, a in enumerate(apps):  # the bag: behind (backpack) or beside (suitcase, shoulder bag)
            b = a.bag
            if b is None:
                valid[k, 0] = False
                continue
            col[k, 0] = b.bgr
            if b.kind == "backpack":
                c = xy[k] - f[k] * 0.2
                w[k, 0], z[k, 0] = (0.32, 0.30), (hip[k] + 0.05 * hgt[k], shoulder[k] - 0.02 * hgt[k])
            elif b.kind == "suitcase":
                c = xy[k] - left[k] * 0.38 - f[k] * 0.15
                w[k, 0], z[k, 0] = (0.40, 0.40), (0.05, 0.62)
            else:
                c = xy[k] + left[k] * 0.25
                w[k, 0], z[k, 0] = (0.26, 0.26), (0.43 * hgt[k], 0.58 * hgt[k])
            c_lo[k, 0] = c_hi[k, 0] = c
        lower = np.array([a.lower_bgr for a in apps], float)
        upper = np.array([a.upper_bgr for a in apps], float)
        for slot, side in ((1, -1), (2, 1)):  # legs
            hip_c = xy + u * 0.085 * side
            c_hi[:, slot] = hip_c
            c_lo[:, slot] = hip_c + f * 0.28 * s * side
            w[:, slot] = (0.12, 0.15)
            z[:, slot, 0], z[:, slot, 1] = 0.0, hip + 0.02 * hgt
            col[:, slot] = lower
        c_lo[:, 3] = c_hi[:, 3] = xy  # torso
        w[:, 3] = (0.34, 0.42)
        z[:, 3, 0], z[:, 3, 1] = hip, shoulder
        col[:, 3] = upper
        for slot, side in ((4, -1), (5, 1)):  # arms, swinging against the legs
            sh = xy + u * 0.235 * side
            c_hi[:, slot] = sh
            c_lo[:, slot] = sh - f * 0.18 * s * side
            w[:, slot] = (0.08, 0.10)
            z[:, slot, 0], z[:, slot, 1] = 0.45 * hgt, shoulder
            col[:, slot] = upper
        uu = u[:, None, :]
        corners = np.empty((n, 6, 4, 3))
        corners[:, :, 0, :2] = c_lo - uu * w[..., :1] / 2
        corners[:, :, 1, :2] = c_lo + uu * w[..., :1] / 2
        corners[:, :, 2, :2] = c_hi + uu * w[..., 1:] / 2
        corners[:, :, 3, :2] = c_hi - uu * w[..., 1:] / 2
        corners[:, :, :2, 2] = z[..., :1]
        corners[:, :, 2:, 2] = z[..., 1:]
        head_c = np.hstack([xy, (hgt - 0.115)[:, None]])
        return corners, col, valid, head_c

    def render(self, frame: FrameState, appearance_of, gain: float = 1.0, truth: bool = True,
               noise: bool = True) -> tuple[np.ndarray, list[GtBox]]:
        """One frame. ``appearance_of(traveller_id) -> Appearance``. Returns (BGR image, truth boxes)."""
        img = self.background.copy()
        w, h = self.size
        label = np.zeros((h, w), np.uint16) if truth else None
        cam = self.calib
        drawn = []
        if len(frame.ids):
            n_all = len(frame.ids)
            depth = cam.depth_m(np.hstack([frame.xy_m, np.zeros((n_all, 1))]))
            # cull: behind the camera, or clearly outside the image
            uv0 = cam.project(np.hstack([frame.xy_m, np.full((n_all, 1), 0.9)]))
            ok = (depth > 0.5) & np.isfinite(uv0).all(1)
            ok &= (uv0[:, 0] > -200) & (uv0[:, 0] < w + 200) & (uv0[:, 1] > -400) & (uv0[:, 1] < h + 400)
            idx = np.array([i for i in np.argsort(-depth) if ok[i]], int)
        else:
            idx = np.zeros(0, int)
        if len(idx):
            xy = frame.xy_m[idx]
            heading = frame.heading_rad[idx]
            moving = np.hypot(frame.v_mps[idx, 0], frame.v_mps[idx, 1]) > 0.15
            apps = [appearance_of(int(t)) for t in frame.ids[idx]]
            corners, col, valid, head_c = self._parts(xy, heading, frame.phase_rad[idx], moving, apps)
            n = len(idx)
            pts = np.vstack([corners.reshape(-1, 3), head_c, head_c + [0, 0, 0.12]])
            uv_all = cam.project(pts)
            quads = np.round(uv_all[:n * 24].reshape(n, 6, 4, 2) * 16)
            hc, ht = uv_all[n * 24:n * 25], uv_all[n * 25:]
            part_depth = ((corners - cam.C) @ cam.R[2]).mean(axis=2)  # (n, 6)
            part_order = np.argsort(-part_depth, axis=1, kind="stable")
            face_away = np.einsum("ij,ij->i", np.stack([np.cos(heading), np.sin(heading)], 1), xy - cam.C[:2]) > 0
            r_px = np.maximum(1.0, np.abs(hc[:, 1] - ht[:, 1]))
            finite = np.isfinite(quads).all(axis=(1, 2, 3)) & np.isfinite(hc).all(1)
            quads_i = np.where(np.isfinite(quads), quads, 0).astype(np.int32)
            for k in range(n):
                if not finite[k]:
                    continue
                for slot in part_order[k]:
                    if valid[k, slot]:
                        cv2.fillConvexPoly(img, quads_i[k, slot], col[k, slot].tolist(), cv2.LINE_AA, 4)
                centre = (int(round(hc[k, 0] * 16)), int(round(hc[k, 1] * 16)))
                axes = (int(round(r_px[k] * 0.78 * 16)), int(round(r_px[k] * 16)))
                a = apps[k]
                cv2.ellipse(img, centre, axes, 0, 0, 360, a.hair_bgr if face_away[k] else a.skin_bgr, -1,
                            cv2.LINE_AA, 4)
                if not face_away[k]:
                    cv2.ellipse(img, centre, axes, 0, 180, 360, a.hair_bgr, -1, cv2.LINE_AA, 4)
                if truth:
                    lab = len(drawn) + 1
                    polys = [quads_i[k, sl] for sl in range(6) if valid[k, sl]]
                    for q in polys:
                        cv2.fillConvexPoly(label, q, lab, cv2.LINE_8, 4)
                    cv2.ellipse(label, centre, axes, 0, 0, 360, lab, -1, cv2.LINE_8, 4)
                    drawn.append((int(frame.ids[idx[k]]), int(idx[k]), polys, centre, axes, lab))
        if gain != 1.0:
            img = cv2.convertScaleAbs(img, alpha=float(gain))
        if noise:
            pos, neg = self._noise[self._frame_no % len(self._noise)]
            self._frame_no += 1
            img = cv2.subtract(cv2.add(img, pos), neg)
        boxes = self._truth_boxes(frame, drawn, label) if truth else []
        return img, boxes

    def _truth_boxes(self, frame: FrameState, drawn, label: np.ndarray) -> list[GtBox]:
        """Boxes of the whole silhouette (MOTChallenge convention: occluded parts included) and the
        visible fraction: label pixels left after nearer people were drawn over, divided by the
        silhouette's own area (drawn alone on a canvas of its box, so the image border counts too)."""
        w, h = self.size
        counts = np.bincount(label.ravel(), minlength=len(drawn) + 2)
        out = []
        for tid, i, polys, centre, axes, lab in drawn:
            allp = np.vstack(polys + [np.array([[centre[0] - axes[0], centre[1] - axes[1]],
                                                 [centre[0] + axes[0], centre[1] + axes[1]]])]) / 16.0
            x0, y0 = allp.min(0)
            x1, y1 = allp.max(0)
            visible = int(counts[lab])
            if visible == 0 or x1 < 0 or y1 < 0 or x0 >= w or y0 >= h:
                continue
            off = np.array([int(math.floor(x0)) - 1, int(math.floor(y0)) - 1]) * 16
            canvas = np.zeros((int(math.ceil(y1 - y0)) + 3, int(math.ceil(x1 - x0)) + 3), np.uint8)
            for q in polys:
                cv2.fillConvexPoly(canvas, q - off.astype(np.int32), 1, cv2.LINE_8, 4)
            cv2.ellipse(canvas, (centre[0] - int(off[0]), centre[1] - int(off[1])), axes, 0, 0, 360, 1, -1,
                        cv2.LINE_8, 4)
            full = max(1, int(canvas.sum()))
            out.append(GtBox(tid, float(x0), float(y0), float(x1 - x0), float(y1 - y0),
                             min(1.0, visible / full), float(frame.xy_m[i, 0]), float(frame.xy_m[i, 1])))
        return out


def _scale(bgr) -> tuple[int, int, int]:
    return (int(bgr[0]), int(bgr[1]), int(bgr[2]))
