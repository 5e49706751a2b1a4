"""Writes a simulated hall period to disk: per-camera video and MOTChallenge truth, calibration, world truth.

Layout (one directory per clip; per camera the MOTChallenge sequence layout, Milan et al.,
"MOT16: A Benchmark for Multi-Object Tracking", arXiv:1603.00831, with the video as one file)::

    <out>/calib.json                  all cameras (hal_sim/hall/camera.py)
    <out>/world_truth.json            travellers, appearances, behaviour events (world_truth.py)
    <out>/trajectories.csv            every traveller's position and velocity per frame
    <out>/<camera>/seqinfo.ini        name, frameRate, seqLength, imWidth, imHeight
    <out>/<camera>/video.avi          Motion-JPEG, 1 frame per sim frame (frame 1 = t 1/fps s)
    <out>/<camera>/gt/gt.txt          frame,id,left,top,width,height,1,1,visibility

``id`` in gt.txt is the hall-wide traveller id, the same in every camera, so the same files score
per-camera tracking (ids per camera) and cross-camera association (ids across cameras).
Rows are written for every traveller with at least one visible pixel; ``visibility`` is the
visible fraction (occlusion and image border), so a scorer can apply the usual cut-offs.

Run: ``python -m hal_sim.hall --out DIR [--seed N] [--duration-s S] [--rate PER_HOUR]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from hal_sim.hall.camera import CameraCalib, save_calibs
from hal_sim.hall.crowd import HallRun, simulate
from hal_sim.hall.floor_plan import FloorPlan, HallConfigError, default_hall_path, load_hall
from hal_sim.hall.renderer import GtBox, HallRenderer
from hal_sim.hall.scenario import SCRIPTED_CASES, HallScenario, build_travellers
from hal_sim.hall.world_truth import write_world_truth

__all__ = ["calibs_for", "iter_frames", "run_scenario", "write_clip"]


def calibs_for(plan: FloorPlan) -> list[CameraCalib]:
    return [CameraCalib.from_spec(s) for s in plan.config.cameras]


def run_scenario(scenario: HallScenario, plan: FloorPlan | None = None, fps: float = 10.0) -> HallRun:
    """Build the travellers of a scenario and walk them (deterministic in the scenario's seed)."""
    plan = plan or load_hall(default_hall_path())
    return simulate(plan, build_travellers(plan, scenario), scenario.duration_s, fps=fps, seed=scenario.seed)


FrameBundle = tuple[int, float, dict[str, np.ndarray], dict[str, list[GtBox]]]


def iter_frames(run: HallRun, camera_ids: list[str] | None = None, truth: bool = True, noise: bool = True,
                frames: range | None = None) -> Iterator[FrameBundle]:
    """Render a run in memory: yields (frame index from 0, t_s, {camera: BGR image}, {camera: truth boxes})."""
    renderers = {c.camera_id: HallRenderer(run.plan, c, seed=run.seed) for c in calibs_for(run.plan)
                 if camera_ids is None or c.camera_id in camera_ids}
    for k in frames if frames is not None else range(run.n_frames):
        f = run.frames[k]

        def app(tid: int, t=f.t_s):
            return run.travellers[tid].appearance_at(t)

        imgs, boxes = {}, {}
        for cid, r in renderers.items():
            imgs[cid], boxes[cid] = r.render(f, app, gain=float(run.lighting_gain[k]), truth=truth, noise=noise)
        yield k, f.t_s, imgs, boxes


def write_clip(out_dir: str | Path, run: HallRun, camera_ids: list[str] | None = None,
               jpeg_quality: int = 90) -> Path:
    """Render every camera of a run and write the clip directory described in the module docstring."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    calibs = [c for c in calibs_for(run.plan) if camera_ids is None or c.camera_id in camera_ids]
    save_calibs(out / "calib.json", calibs, run.plan.name)
    write_world_truth(out, run)
    writers, gts = {}, {}
    for c in calibs:
        d = out / c.camera_id
        (d / "gt").mkdir(parents=True, exist_ok=True)
        (d / "seqinfo.ini").write_text(
            f"[Sequence]\nname={c.camera_id}\nimDir=img1\nframeRate={run.fps:g}\nseqLength={run.n_frames}\n"
            f"imWidth={c.width_px}\nimHeight={c.height_px}\nimExt=.jpg\nvideo=video.avi\n")
        vw = cv2.VideoWriter(str(d / "video.avi"), cv2.VideoWriter_fourcc(*"MJPG"), run.fps,
                             (c.width_px, c.height_px))
        if not vw.isOpened():
            raise RuntimeError(f"OpenCV cannot write Motion-JPEG video to {d / 'video.avi'}")
        vw.set(cv2.VIDEOWRITER_PROP_QUALITY, jpeg_quality)
        writers[c.camera_id] = vw
        gts[c.camera_id] = open(d / "gt" / "gt.txt", "w")  # noqa: SIM115 - closed below
    try:
        for k, _t, imgs, boxes in iter_frames(run, [c.camera_id for c in calibs]):
            for cid, img in imgs.items():
                writers[cid].write(img)
                for b in boxes[cid]:
                    gts[cid].write(f"{k + 1},{b.traveller_id},{b.left_px:.1f},{b.top_px:.1f},{b.width_px:.1f},"
                                   f"{b.height_px:.1f},1,1,{b.visibility:.3f}\n")
    finally:
        for vw in writers.values():
            vw.release()
        for fh in gts.values():
            fh.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hal_sim.hall", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--hall", type=Path, default=None, help="hall YAML (default configs/hall.yaml)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration-s", type=float, default=300.0)
    ap.add_argument("--rate", type=float, default=240.0, help="ordinary travellers per hour")
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--cases", default=",".join(SCRIPTED_CASES), help="scripted cases, comma-separated ('' for none)")
    ap.add_argument("--cameras", default="", help="camera ids, comma-separated (default all)")
    a = ap.parse_args(argv)
    try:
        plan = load_hall(a.hall or default_hall_path())
        cases = tuple(c for c in a.cases.split(",") if c)
        unknown = [c for c in cases if c not in SCRIPTED_CASES]
        if unknown:
            print(f"error: unknown scripted case(s) {unknown}; known: {list(SCRIPTED_CASES)}", file=sys.stderr)
            return 2
        sc = HallScenario(seed=a.seed, duration_s=a.duration_s, travellers_per_hour=a.rate, scripted=cases)
        run = run_scenario(sc, plan, fps=a.fps)
        write_clip(a.out, run, [c for c in a.cameras.split(",") if c] or None)
    except (HallConfigError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {a.out} ({run.n_frames} frames, {len(run.travellers)} travellers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
