"""Picture of the simulated hall for docs/cctv_hall.md: floor plan with zones, obstacles, what each
camera films, the scripted travellers' paths, and one frame of every camera.

Run: ``python -m hal_sim.hall.plot_hall --out docs/cctv_hall.png [--seed 21]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def plot(out: Path, seed: int = 21, frame_s: float = 360.0) -> None:
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hal_sim.hall import HallScenario, calibs_for, iter_frames, run_scenario
    from hal_sim.hall.coverage import coverage_grid
    from hal_sim.hall.world_truth import trajectories_from_run

    run = run_scenario(HallScenario(seed=seed, duration_s=frame_s + 1, travellers_per_hour=300))
    plan = run.plan
    calibs = calibs_for(plan)
    fig = plt.figure(figsize=(16, 13))
    ax = fig.add_axes([0.04, 0.47, 0.92, 0.5])
    gx, gy, cov = coverage_grid(plan, calibs, 0.2)
    n_cams = sum(g.astype(int) for g in cov.values())
    ax.pcolormesh(gx, gy, np.ma.masked_equal(n_cams, 0), cmap="Blues", vmin=0, vmax=4, shading="nearest", alpha=0.6)
    colours = plt.cm.tab10.colors
    for k, (cid, g) in enumerate(cov.items()):
        ax.contour(gx, gy, g.astype(float), [0.5], colors=[colours[k]], linewidths=1.2)
        c = next(c for c in calibs if c.camera_id == cid)
        ax.plot(c.C[0], c.C[1], "^", color=colours[k], ms=10)
        ax.annotate(cid, (c.C[0], c.C[1]), xytext=(4, 4), textcoords="offset points", color=colours[k], weight="bold")
    for name, poly in plan.zone_polygons.items():
        x, y = poly.exterior.xy
        ax.plot(x, y, "--", color="0.4", lw=0.7)
        ax.text(poly.centroid.x, poly.bounds[1] + 0.3, name, fontsize=8, ha="center", color="0.25")
    for name, poly in plan.obstacle_polygons.items():
        x, y = poly.exterior.xy
        ax.fill(x, y, color="0.2" if plan.obstacle_heights_m[name] >= 2 else "0.55")
    for g in getattr(plan.free_space, "geoms", [plan.free_space]):
        x, y = g.exterior.xy
        ax.plot(x, y, color="k", lw=1.5)
    tracks = trajectories_from_run(run)
    for tid, rec in run.travellers.items():
        if rec.plan.behaviour != "normal" and tid in tracks:
            tr = tracks[tid]
            case = rec.plan.tags[0] if rec.plan.tags else rec.plan.behaviour
            ax.plot(tr[:, 1], tr[:, 2], lw=1.3, label=f"{tid}: {case}")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, with the passenger flow)")
    ax.set_ylabel("y (m)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(f"Simulated arrival hall: zones, tall (black) and low (grey) obstacles, camera coverage (shade = "
                 f"number of cameras), scripted travellers' paths to t = {frame_s:.0f} s (seed {seed})")
    k = int(frame_s * run.fps) - 1
    _, _, imgs, boxes = next(iter_frames(run, frames=range(k, k + 1)))
    tiles = []
    for cid, img in imgs.items():
        img = img.copy()
        for b in boxes[cid]:
            if b.visibility >= 0.25:
                cv2.rectangle(img, (int(b.left_px), int(b.top_px)), (int(b.left_px + b.width_px),
                                                                      int(b.top_px + b.height_px)), (0, 220, 255), 1)
        cv2.putText(img, cid, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
        tiles.append(img[:, :, ::-1])
    while len(tiles) % 4:
        tiles.append(np.full_like(tiles[0], 255))
    grid = np.vstack([np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)])
    ax2 = fig.add_axes([0.04, 0.02, 0.92, 0.42])
    ax2.imshow(grid)
    ax2.set_axis_off()
    ax2.set_title(f"All cameras at t = {frame_s:.0f} s, 640x480 each; "
                  "yellow: MOTChallenge truth boxes with visibility >= 0.25")
    fig.savefig(out, dpi=80)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hal_sim.hall.plot_hall")
    ap.add_argument("--out", type=Path, default=Path("docs/cctv_hall.png"))
    ap.add_argument("--seed", type=int, default=21)
    a = ap.parse_args(argv)
    plot(a.out, a.seed)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
