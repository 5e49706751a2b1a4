"""Tracklets as a near-perfect camera box would publish them, straight from the simulation's truth.

Why: the controller's association and behaviour rules must be testable and measurable apart from
the edge pipeline's detection and tracking errors (the bench runs both: oracle tracklets give the
controller's own accuracy, the real pipeline the end-to-end one). A traveller is in a camera's
track while the feet are in the picture and in line of sight (the same visibility the coverage
map uses); positions get Gaussian ground-plane noise, appearance is the true clothing binned as
the box bins it (hue8+grey3) under the frame's lighting with pixel noise and a per-camera colour
gain, and tracks can be broken at random (``fragment_rate_per_min``) as a real tracker breaks them.

Output: the edge pipeline's plain tracklet dicts (/work/scratch/s13/cctv_wire.md layout), plus a
``true_id`` key that only scoring may read.
"""

from __future__ import annotations

import numpy as np

from hal_sim.hall.appearance import histograms
from hal_sim.hall.camera import CameraCalib
from hal_sim.hall.coverage import coverage_grid
from hal_sim.hall.crowd import HallRun

__all__ = ["oracle_tracklets"]


def oracle_tracklets(run: HallRun, calibs: list[CameraCalib] | None = None, pos_noise_m: float = 0.15,
                     sample_every: int = 2, fragment_rate_per_min: float = 0.0, min_frames: int = 5,
                     seed: int = 0, grid_step_m: float = 0.2) -> list[dict]:
    from hal_sim.hall.clip_writer import calibs_for

    calibs = calibs or calibs_for(run.plan)
    rng = np.random.default_rng(seed)
    gx, gy, cov = coverage_grid(run.plan, calibs, grid_step_m)
    x0, y0 = gx[0, 0], gy[0, 0]
    out: list[dict] = []
    # per traveller: frame indices and positions
    per: dict[int, list[tuple[int, float, float]]] = {}
    for k, f in enumerate(run.frames):
        for i in range(len(f.ids)):
            per.setdefault(int(f.ids[i]), []).append((k, f.xy_m[i, 0], f.xy_m[i, 1]))
    for cam in calibs:
        grid = cov[cam.camera_id]
        cam_gain = float(rng.uniform(0.9, 1.1))
        n_track = 0
        for tid, rows in sorted(per.items()):
            arr = np.asarray(rows, float)
            ix = np.clip(np.round((arr[:, 1] - x0) / grid_step_m).astype(int), 0, grid.shape[1] - 1)
            iy = np.clip(np.round((arr[:, 2] - y0) / grid_step_m).astype(int), 0, grid.shape[0] - 1)
            vis = grid[iy, ix]
            frames = arr[:, 0].astype(int)
            # runs of consecutive visible frames
            breaks = np.flatnonzero(np.diff(np.r_[0, vis.astype(int), 0]))
            for a, b in zip(breaks[::2], breaks[1::2], strict=True):
                run_idx = np.arange(a, b)
                if fragment_rate_per_min > 0 and len(run_idx) > 2 * min_frames:
                    p_cut = fragment_rate_per_min / 60.0 / run.fps
                    cuts = np.flatnonzero(rng.random(len(run_idx)) < p_cut)
                    pieces = np.split(run_idx, cuts)
                else:
                    pieces = [run_idx]
                for piece in pieces:
                    if len(piece) < min_frames:
                        continue
                    sel = piece[::sample_every]
                    t = np.array([run.frames[frames[s]].t_s for s in sel])
                    xy = arr[sel, 1:3] + rng.normal(0, pos_noise_m, (len(sel), 2))
                    mid_t = float(t[len(t) // 2])
                    gain = float(np.mean(run.lighting_gain[frames[piece]])) * cam_gain
                    app = run.travellers[tid].appearance_at(mid_t)
                    desc = histograms(app, gain=gain, spread=10.0, rng=rng)
                    desc["height_m"] = float(np.clip(app.height_m + rng.normal(0, 0.04), 0.3, 3.0))
                    desc["n_frames"] = int(len(piece))
                    n_track += 1
                    out.append({"camera_id": cam.camera_id, "track_id": f"{cam.camera_id}-{n_track}",
                                "state": "ended", "true_id": tid,
                                "samples": [{"t_s": float(tt), "x_m": float(p[0]), "y_m": float(p[1]),
                                             "confidence": 1.0} for tt, p in zip(t, xy, strict=True)],
                                "appearance": desc})
    return out
