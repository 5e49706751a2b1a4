"""``cedge cctv track|analyze``: the camera box's CCTV tracker on files.

``track`` is the MOTChallenge "public detections" protocol (Milan et al. 2016): a det.txt in, a result
file out, the same tracker the box runs (ByteTrack, or ``--tracker iou`` for the plain baseline), so it
can be set beside published trackers on real pedestrian sequences; ``--gt`` scores the result with
motmetrics (IDF1, MOTA) and HOTA.

``analyze`` runs the camera chain (MOG2 + HOG, ByteTrack, ground plane, appearance) over recorded videos
of calibrated cameras (``--calib calib.json``), and writes per camera a MOTChallenge result file and the
tracklets the box would have published (JSON lines).  No image is written unless ``--evidence-dir``.
With ``--hall`` (the hall file, configs/hall.yaml layout) the controller's half runs too: cross-camera
association (controller.cctv.association) and the behaviour rules (``--rules``, default the hall
file's sibling cctv_rules.yaml), and the alerts are listed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from agent.cli_output import fail
from agent.exit_codes import EXIT_FAILED, EXIT_USAGE

app = typer.Typer(help="AI CCTV: per-camera people tracking on files (MOTChallenge, recorded videos).",
                  no_args_is_help=True)


@app.callback()
def _cctv() -> None:
    """AI CCTV: per-camera people tracking on files (MOTChallenge, recorded videos)."""


@app.command("track")
def track_cmd(
    detections: Path = typer.Option(..., "--detections", help="MOTChallenge det.txt (frame,-1,left,top,w,h,conf,...)."),
    out: Path | None = typer.Option(None, "--out", help="Result file (MOTChallenge); default: standard output."),
    tracker: str = typer.Option("bytetrack", "--tracker", help="bytetrack (the box's tracker) or iou (baseline)."),
    gt: Path | None = typer.Option(None, "--gt", help="Ground truth gt.txt: score the result (IDF1, MOTA, HOTA)."),
    json_out: bool = typer.Option(False, "--json", help="With --gt: print the scores as one JSON object."),
) -> None:
    """Track people in a MOTChallenge detection file; write MOTChallenge results."""
    from agent.cctv.mot_format import MotFormatError, read_rows, write_results
    from agent.cctv.mot_runner import TRACKERS, track_file

    if tracker not in TRACKERS:
        fail(f"--tracker {tracker!r}: choose one of {', '.join(TRACKERS)}", EXIT_USAGE)
    t0 = time.perf_counter()
    try:
        lines = track_file(detections, tracker)
        gt_rows = read_rows(gt) if gt is not None else None
    except MotFormatError as err:
        fail(err, EXIT_FAILED)
    elapsed = time.perf_counter() - t0
    if out is not None:
        try:
            write_results(out, lines)
        except OSError as err:
            fail(f"{out}: cannot write ({err.strerror or err})", EXIT_FAILED)
    elif gt is None:
        typer.echo("\n".join(lines))
    if gt_rows is not None:
        from cedge.bench.cctv_scoring import clear_mot, gt_rows_considered, hota, rows_by_frame

        g = rows_by_frame(gt_rows_considered(gt_rows))
        h = rows_by_frame([(int(s.split(",")[0]), int(s.split(",")[1]), [float(v) for v in s.split(",")[2:6]])
                           for s in lines])
        scores = {"tracker": tracker, **clear_mot(g, h), **hota(g, h), "seconds": round(elapsed, 3)}
        if json_out:
            typer.echo(json.dumps(scores))
        else:
            for k, v in scores.items():
                typer.echo(f"{k}: {round(v, 4) if isinstance(v, float) else v}")


def _camera_of(video: Path, cameras: list[str], given: list[str], index: int) -> str:
    if given:
        return given[index]
    if video.stem in cameras:
        return video.stem
    for cam in cameras:  # "c2_run3.avi" -> c2
        if video.stem.split("_")[0] == cam or video.stem.split("-")[0] == cam:
            return cam
    fail(f"{video}: cannot tell which camera of the calibration it is (name it after the camera id, one of "
         f"{', '.join(cameras)}, or pass --camera per video)", EXIT_USAGE)


@app.command("analyze")
def analyze_cmd(
    videos: list[Path] = typer.Argument(..., help="Recorded videos (or frame-image directories), one per camera."),
    calib: Path = typer.Option(..., "--calib", help="Camera calibration calib.json (schema cedge.hall_calib/1)."),
    camera: list[str] = typer.Option([], "--camera", help="Camera id of each video, in order (default: file name)."),
    out: Path | None = typer.Option(None, "--out", help="Directory for <camera>.txt (MOT) and tracklets.jsonl."),
    fps: float | None = typer.Option(None, "--fps", help="Frame rate when the container does not say."),
    tracker: str = typer.Option("bytetrack", "--tracker", help="bytetrack or iou."),
    hog: str = typer.Option("new", "--hog", help="HOG verification: off, new (unexplained blobs), all."),
    evidence_dir: Path | None = typer.Option(None, "--evidence-dir", help="Switch evidence clips on, kept here."),
    hall: Path | None = typer.Option(None, "--hall", help="Hall file: also associate across cameras and run rules."),
    rules: Path | None = typer.Option(None, "--rules", help="Behaviour rules (default: cctv_rules.yaml by --hall)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Run the CCTV chain over recorded videos of calibrated cameras."""
    from pydantic import ValidationError

    from agent.cctv.camera_calibration import load_calibrations
    from agent.cctv.camera_pipeline import CameraPipeline
    from agent.cctv.cctv_config import CctvConfig
    from agent.cctv.mot_format import format_result_line, write_results
    from agent.cctv.tracklet_message import as_plain
    from agent.cli_camera import VideoSourceError, iter_frames

    if camera and len(camera) != len(videos):
        fail(f"--camera given {len(camera)} times for {len(videos)} videos", EXIT_USAGE)
    try:
        calibs = load_calibrations(calib)
        cfg = CctvConfig(tracker=tracker, hog_verify=hog, evidence_clips=evidence_dir is not None,
                         evidence_dir=evidence_dir)
    except ValueError as err:  # ValidationError is a ValueError
        msg = err.errors()[0]["msg"] if isinstance(err, ValidationError) else err
        fail(msg, EXIT_USAGE)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"cameras": {}, "tracklets": 0}
    all_updates = []
    for i, video in enumerate(videos):
        cam = _camera_of(video, sorted(calibs), camera, i)
        if cam not in calibs:
            fail(f"--camera {cam!r} is not in {calib} ({', '.join(sorted(calibs))})", EXIT_USAGE)
        pipe = CameraPipeline(cam, calibs[cam], cfg)
        lines: list[str] = []
        t0 = time.perf_counter()
        n = 0
        try:
            rate, frames = iter_frames(video, fps)
            for n, (img, _t) in enumerate(frames, start=1):
                t_s = (n - 1) / rate
                all_updates += pipe.process(img, t_s)
                lines += [format_result_line(n, tb.number, tb.tlwh, tb.score) for tb in pipe.last_tracks]
        except VideoSourceError as err:
            fail(err, EXIT_FAILED)
        if n == 0:
            fail(f"{video}: no frames could be read", EXIT_FAILED)
        all_updates += pipe.finish()
        wall = time.perf_counter() - t0
        ids = {int(s.split(",")[1]) for s in lines}
        summary["cameras"][cam] = {"video": str(video), "frames": n, "tracks": len(ids),
                                   "fps_processed": round(n / max(wall, 1e-9), 1)}
        if out is not None:
            write_results(out / f"{cam}.txt", lines)
    summary["tracklets"] = len({u.track_id for u in all_updates})
    if hall is not None:
        summary.update(_controller_half(all_updates, hall, rules))
    if out is not None:
        with (out / "tracklets.jsonl").open("w", encoding="utf-8") as fh:
            for u in all_updates:
                fh.write(json.dumps(as_plain(u)) + "\n")
        summary["out"] = str(out)
    if json_out:
        typer.echo(json.dumps(summary))
    else:
        for cam, s in summary["cameras"].items():
            typer.echo(f"{cam}: {s['frames']} frames, {s['tracks']} tracks, {s['fps_processed']} fps")
        typer.echo(f"tracklets: {summary['tracklets']}")
        if "trajectories" in summary:
            typer.echo(f"trajectories: {summary['trajectories']}")
            for a in summary["alerts"]:
                typer.echo(f"alert {a['rule']}: trajectories {', '.join(a['trajectory_ids'])}, zones "
                           f"{', '.join(a['zones']) or '-'}, {a['t_start_s']:.1f}-{a['t_end_s']:.1f} s")


def _controller_half(updates: list, hall: Path, rules: Path | None) -> dict:
    """Association across cameras and behaviour rules on the tracklets of this run."""
    from agent.cctv.tracklet_message import as_plain
    from cedge.bench.cctv import merge_updates
    from controller.cctv.association import associate
    from controller.cctv.behaviour_alerts import evaluate
    from controller.cctv.behaviour_rules import load_rules
    from controller.cctv.hall_map import load_hall_map

    try:
        hall_map = load_hall_map(hall)
        rule_set = load_rules(rules or hall.with_name("cctv_rules.yaml"), hall_map)
    except (OSError, ValueError) as err:
        fail(err, EXIT_USAGE)
    trajs = associate(merge_updates([as_plain(u) for u in updates]), hall_map)
    alerts = evaluate(trajs, hall_map, rule_set)
    return {"trajectories": len(trajs), "alerts": [
        {k: v for k, v in a.to_dict().items() if k != "evidence"} for a in alerts]}
