"""``cedge camera analyze VIDEO [--truth FILE] [--json]``: vital signs from a recorded video.

VIDEO is a video file OpenCV can read (AVI/MJPG, MP4 ...) or a directory of frame images
(PURE ships PNG sequences).  Frame times come from, in order: the truth file's frame times
(PURE ``/Image``, our clip JSON), the container's timestamps, or ``index / fps``.

With ``--truth`` (UBFC-rPPG ``ground_truth.txt`` / ``gtdump.xmp``, PURE JSON, or our clip JSON)
the estimates are scored: heart-rate MAE over the updates that reported a valid pulse against the
reference over the same window, coverage, and -- where the truth has them -- respiration MAE and
blink F1.

Privacy: the analysis keeps no image; ``--evidence-dir`` switches evidence clips on explicitly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import typer

app = typer.Typer(help="Camera box: contactless vital signs from recorded video.", no_args_is_help=True)

@app.callback()
def _camera() -> None:
    """Camera box: contactless vital signs from recorded video."""


_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class VideoSourceError(ValueError):
    """The video (or image directory) cannot be read; the message says why."""


def iter_frames(path: Path, fps: float | None) -> tuple[float, Iterator[tuple[np.ndarray, float | None]]]:
    """(fps, iterator of (BGR frame, container time in s or None))."""
    import cv2

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_EXT)
        if not files:
            raise VideoSourceError(f"{path}: directory holds no image files ({', '.join(sorted(_IMAGE_EXT))})")

        def gen_dir() -> Iterator[tuple[np.ndarray, float | None]]:
            for f in files:
                img = cv2.imread(str(f), cv2.IMREAD_COLOR)
                if img is None:
                    raise VideoSourceError(f"{f}: not a readable image")
                yield img, None

        return float(fps or 30.0), gen_dir()
    if not path.is_file():
        raise VideoSourceError(f"{path}: no such video file or image directory")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoSourceError(f"{path}: OpenCV cannot open it as a video")
    rate = float(fps or cap.get(cv2.CAP_PROP_FPS) or 30.0)
    if not 1.0 <= rate <= 240.0:
        rate = 30.0

    def gen_cap() -> Iterator[tuple[np.ndarray, float | None]]:
        try:
            while True:
                ok, img = cap.read()
                if not ok:
                    break
                ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                yield img, (ms / 1000.0 if ms and ms > 0 else None)
        finally:
            cap.release()

    return rate, gen_cap()


def analyze_video(video: Path, truth_path: Path | None = None, fps: float | None = None,
                  method: str = "pos", max_frames: int | None = None,
                  evidence_dir: Path | None = None) -> dict[str, Any]:
    """Run the camera pipeline over a recording; return a JSON-able summary."""
    from agent.vision.blink import match_events
    from agent.vision.pipeline import CameraPipeline, PipelineConfig
    from agent.vision.truth_formats import read_truth

    truth = read_truth(truth_path) if truth_path is not None else None
    rate, frames = iter_frames(video, fps)
    cfg = PipelineConfig(method=method, evidence_clips=evidence_dir is not None,
                         evidence_dir=str(evidence_dir) if evidence_dir else None)
    pipe = CameraPipeline(rate, cfg)
    frame_t = truth.frame_t_s if truth is not None else None
    n = 0
    last_t = -np.inf
    for img, t_container in frames:
        if max_frames is not None and n >= max_frames:
            break
        if frame_t is not None and n < frame_t.size:
            t = float(frame_t[n])
        elif t_container is not None and t_container > last_t:
            t = t_container
        else:
            t = n / rate
        if t <= last_t:
            t = last_t + 1.0 / rate
        pipe.process(img, t)
        last_t = t
        n += 1
    if n == 0:
        raise VideoSourceError(f"{video}: no frames could be read")
    history = pipe.history()
    events = pipe.blink_events()
    tracks = []
    for tid, hist in history.items():
        ibi_ms = [ms for _, ms in pipe.ibis(tid)]
        hr = [r["heart_rate_bpm"] for r in hist if r["heart_rate_bpm"] is not None]
        rr = [r["rr_bpm"] for r in hist if r["rr_bpm"] is not None]
        scores = [r["abnormal_score"] for r in hist if r["abnormal_score"] is not None]
        tracks.append({
            "track_id": tid, "updates": len(hist), "first_s": hist[0]["t_s"] if hist else None,
            "last_s": hist[-1]["t_s"] if hist else None,
            "heart_rate_bpm_median": _med(hr), "hr_valid_share": _share([r["hr_valid"] for r in hist
                                                                         if r["hr_window_s"]]),
            "respiration_rate_bpm_median": _med(rr), "blinks": len(events.get(tid, [])),
            "blink_rate_per_min": hist[-1]["blink_rate_per_min"] if hist else None,
            "ibi_count": len(ibi_ms), "ibi_ms_median": _med(ibi_ms),
            "abnormal_score_max": max(scores) if scores else None,
            "alert_updates": sum(1 for r in hist if r["alert"]),
            "timeline": [{k: r[k] for k in ("t_s", "heart_rate_bpm", "hr_snr_db", "rr_bpm", "blink_rate_per_min",
                                            "abnormal_score", "alert")} for r in hist],
        })
    tracks.sort(key=lambda d: -d["updates"])
    out: dict[str, Any] = {"video": str(video), "frames": n, "fps": rate, "duration_s": round(last_t, 3),
                           "method": method, "tracks": tracks, "evidence_files": pipe.evidence_files}
    if truth is not None and tracks:
        main = tracks[0]["track_id"]
        out["truth"] = {"file": str(truth_path), "format": truth.source}
        out["score"] = score_against_truth(history[main], truth, [(e.start_s, e.end_s) for e in events[main]],
                                           match_events)
        out["score"].update(score_ibis_against_truth(pipe.ibis(main), truth, history[main]))
    return out


def score_against_truth(hist: list[dict[str, Any]], truth: Any, blinks: list[tuple[float, float]],
                        match_events: Any) -> dict[str, Any]:
    hr_err, n_windows, n_valid = [], 0, 0
    rr_err = []
    for r in hist:
        if r["hr_window_s"]:
            n_windows += 1
            if r["heart_rate_bpm"] is not None:
                ref = truth.hr_over(r["t_s"] - r["hr_window_s"], r["t_s"])
                if ref is not None and np.isfinite(ref):
                    n_valid += 1
                    hr_err.append(r["heart_rate_bpm"] - ref)
        if r["rr_bpm"] is not None:
            ref = truth.rr_over(r["t_s"] - r["rr_window_s"], r["t_s"])
            if ref is not None and np.isfinite(ref):
                rr_err.append(r["rr_bpm"] - ref)
    res: dict[str, Any] = {
        "hr_mae_bpm": round(float(np.mean(np.abs(hr_err))), 3) if hr_err else None,
        "hr_bias_bpm": round(float(np.mean(hr_err)), 3) if hr_err else None,
        "hr_coverage": round(n_valid / n_windows, 3) if n_windows else None,
        "hr_updates_scored": len(hr_err),
        "rr_mae_bpm": round(float(np.mean(np.abs(rr_err))), 3) if rr_err else None,
    }
    if truth.blink_intervals_s is not None and hist:
        lo, hi = hist[0]["t_s"] + 1.0, hist[-1]["t_s"]
        tb = [(a, b) for a, b in truth.blink_intervals_s if a >= lo and b <= hi]
        db = [(a, b) for a, b in blinks if a >= lo and b <= hi]
        tp, fp, fn = match_events(db, tb)
        res["blink_f1"] = round(2 * tp / (2 * tp + fp + fn), 3) if tp + fp + fn else None
    return res


def score_ibis_against_truth(ibis: list[tuple[float, float]], truth: Any, hist: list[dict[str, Any]]
                             ) -> dict[str, Any]:
    """IBI error and coverage against the reference beats (agent.vision.beats.score_ibis)."""
    from agent.vision.beats import score_ibis

    beats = truth.beats()
    if beats is None or not hist:
        return {}
    s = score_ibis(ibis, beats, hist[0]["t_s"] + 1.0, hist[-1]["t_s"] - 1.0)
    return {"ibi_mae_ms": round(float(np.mean(s["abs_err_ms"])), 1) if s["abs_err_ms"] else None,
            "ibi_coverage": round(s["n_matched"] / s["n_true"], 3) if s["n_true"] else None,
            "ibi_unmatched": s["n_reported"] - len(s["abs_err_ms"])}


def _med(v: list[float]) -> float | None:
    return round(float(np.median(v)), 2) if v else None


def _share(v: list[bool]) -> float | None:
    return round(float(np.mean(v)), 3) if v else None


@app.command("analyze")
def analyze(
    video: Path = typer.Argument(..., help="Video file, or a directory of frame images (PURE)."),
    truth: Path | None = typer.Option(None, "--truth", help="Ground truth: UBFC-rPPG ground_truth.txt or "
                                      "gtdump.xmp, PURE .json, or a customs-edge clip .json."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    fps: float | None = typer.Option(None, help="Frame rate when the container has none (image folders)."),
    method: str = typer.Option("pos", help="rPPG method: pos, chrom or green."),
    max_frames: int | None = typer.Option(None, help="Stop after this many frames."),
    evidence_dir: Path | None = typer.Option(None, help="Switch evidence clips ON and write them here."),
) -> None:
    """Heart rate, respiration, blinks and abnormal-state score of every face in a recording."""
    from rich.table import Table

    from agent.cli_output import console, fail, safe
    from agent.vision.errors import VisionInputError

    try:
        result = analyze_video(video, truth, fps, method, max_frames, evidence_dir)
    except (VideoSourceError, VisionInputError) as exc:
        fail(exc, 2)
    if json_out:
        print(json.dumps(result, default=float))
        return
    con = console()
    con.print(f"{safe(result['video'])}: {result['frames']} frames, {result['duration_s']:.1f} s at "
              f"{result['fps']:.2f} fps, method {result['method']}")
    table = Table("track", "updates", "HR median (bpm)", "valid pulse", "IBIs", "RR median (/min)", "blinks",
                  "blink rate (/min)", "abnormal max", "alert updates")
    for t in result["tracks"]:
        table.add_row(safe(t["track_id"]), str(t["updates"]), _fmt(t["heart_rate_bpm_median"]),
                      _fmt(t["hr_valid_share"]), str(t["ibi_count"]),
                      _fmt(t["respiration_rate_bpm_median"]), str(t["blinks"]),
                      _fmt(t["blink_rate_per_min"]), _fmt(t["abnormal_score_max"]), str(t["alert_updates"]))
    con.print(table)
    if not result["tracks"]:
        con.print("no face was found")
    if "score" in result:
        con.print(safe(f"against {result['truth']['format']} truth: {result['score']}"))


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"
