"""``cedge cctv track`` (MOTChallenge public-detection protocol) and ``cedge cctv analyze``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from cctv_synth import camera, crossing_detections, render, write_calib
from typer.testing import CliRunner

from agent.cctv.mot_format import read_rows
from cedge.cli import app

cv2 = pytest.importorskip("cv2")
runner = CliRunner()


def _write_det(path: Path) -> Path:
    dets, _ = crossing_detections()
    lines = [f"{f},-1,{d.tlwh[0]:.2f},{d.tlwh[1]:.2f},{d.tlwh[2]:.2f},{d.tlwh[3]:.2f},{d.score:.3f},-1,-1,-1"
             for f, frame in enumerate(dets, start=1) for d in frame]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_gt(path: Path) -> Path:
    _, truth = crossing_detections()
    lines = [f"{f},{p},{b[0]:.2f},{b[1]:.2f},{b[2]:.2f},{b[3]:.2f},1,1,1.0"
             for f, frame in enumerate(truth, start=1) for p, b in frame]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_track_round_trip_in_motchallenge_format(tmp_path: Path) -> None:
    det = _write_det(tmp_path / "det.txt")
    res = tmp_path / "res.txt"
    r = runner.invoke(app, ["cctv", "track", "--detections", str(det), "--out", str(res)])
    assert r.exit_code == 0, r.output
    rows = read_rows(res)
    lines = res.read_text().splitlines()
    assert all(len(line.split(",")) == 10 and line.endswith(",-1,-1,-1") for line in lines)
    assert {r.obj_id for r in rows} == {1, 2}  # two people, two ids, through the crossing
    assert min(r.frame for r in rows) == 1 and max(r.frame for r in rows) == 60
    # what was written reads back as the same result (the file is the tracker's output, not a copy)
    again = tmp_path / "again.txt"
    assert runner.invoke(app, ["cctv", "track", "--detections", str(det), "--out", str(again)]).exit_code == 0
    assert again.read_text() == res.read_text()


def test_track_scores_against_ground_truth(tmp_path: Path) -> None:
    pytest.importorskip("motmetrics")
    det, gt = _write_det(tmp_path / "det.txt"), _write_gt(tmp_path / "gt.txt")
    scores = {}
    for tracker in ("bytetrack", "iou"):
        r = runner.invoke(app, ["cctv", "track", "--detections", str(det), "--gt", str(gt), "--tracker", tracker,
                                "--json"])
        assert r.exit_code == 0, r.output
        scores[tracker] = json.loads(r.output)
    assert scores["bytetrack"]["num_switches"] == 0 and scores["bytetrack"]["num_objects"] == 120
    assert scores["iou"]["num_switches"] + scores["iou"]["num_false_positives"] > 0
    assert scores["bytetrack"]["idf1"] > scores["iou"]["idf1"]
    assert 0 < scores["iou"]["hota"] < scores["bytetrack"]["hota"] <= 1


def test_track_on_a_real_sequence_shipped_by_motmetrics(tmp_path: Path) -> None:
    """TUD-Campus (MOT15 training set), whose gt.txt ships in motmetrics' package data.

    No det.txt ships with it, so detections are the ground-truth boxes with 10 % dropped and 3 %-of-
    height jitter (fixed seed): a check that the tracker works on real pedestrian motion, not a score
    comparable to the MOT15 leaderboard.
    """
    mm = pytest.importorskip("motmetrics")
    gt = Path(mm.__file__).parent / "data" / "TUD-Campus" / "gt.txt"
    if not gt.is_file():
        pytest.skip("this motmetrics build ships no TUD-Campus data")
    rng = np.random.default_rng(7)
    lines = []
    for r in read_rows(gt):
        if rng.random() < 0.1:
            continue
        b = np.array(r.tlwh) + rng.normal(0, 0.03 * r.tlwh[3], 4)
        lines.append(f"{r.frame},-1,{b[0]:.1f},{b[1]:.1f},{max(b[2], 2):.1f},{max(b[3], 2):.1f},"
                     f"{rng.uniform(0.3, 1.0):.2f},-1,-1,-1")
    det = tmp_path / "det.txt"
    det.write_text("\n".join(lines) + "\n")
    out = {}
    for tracker in ("bytetrack", "iou"):
        r = runner.invoke(app, ["cctv", "track", "--detections", str(det), "--gt", str(gt), "--tracker", tracker,
                                "--json"])
        assert r.exit_code == 0, r.output
        out[tracker] = json.loads(r.output)
    assert out["bytetrack"]["idf1"] > 0.8 and out["bytetrack"]["num_switches"] <= 5
    assert out["bytetrack"]["idf1"] > out["iou"]["idf1"] + 0.2


@pytest.mark.parametrize("line, says", [
    ("1,-1,10,10,-5,20,0.9,-1,-1,-1", "line 2: box width and height must be > 0"),
    ("0,-1,10,10,5,20,0.9,-1,-1,-1", "line 2: frame '0'"),
    ("1,-1,10,nan,5,20,0.9,-1,-1,-1", "line 2: NaN"),
    ("1,-1,10,10", "line 2: 4 columns"),
    ("a,b,c,d,e,f,g", "line 2: not a number"),
])
def test_track_refuses_a_bad_detection_file_naming_the_line(tmp_path: Path, line: str, says: str) -> None:
    det = tmp_path / "det.txt"
    det.write_text("1,-1,1,1,10,20,0.9,-1,-1,-1\n" + line + "\n")
    r = runner.invoke(app, ["cctv", "track", "--detections", str(det)])
    assert r.exit_code == 1
    assert says in r.output and "Traceback" not in r.output


def _video(path: Path, n: int = 60) -> Path:
    cal = camera()
    rng = np.random.default_rng(11)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    for k in range(n):
        people = [] if k < 12 else [((-2.5 + 0.12 * (k - 12), 4.0), 1.75, (30, 30, 200), (200, 80, 20))]
        vw.write(render(cal, people, rng))
    vw.release()
    return path


def test_analyze_a_calibrated_video_writes_tracks_and_no_images(tmp_path: Path) -> None:
    calib = write_calib(tmp_path / "calib.json", camera("c1"))
    video = _video(tmp_path / "c1.avi")
    out = tmp_path / "out"
    r = runner.invoke(app, ["cctv", "analyze", str(video), "--calib", str(calib), "--out", str(out), "--hog", "off",
                            "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["cameras"]["c1"]["frames"] == 60 and summary["cameras"]["c1"]["tracks"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["c1.txt", "tracklets.jsonl"]  # privacy: no image written
    tracklets = [json.loads(x) for x in (out / "tracklets.jsonl").read_text().splitlines()]
    ys = [s["y_m"] for t in tracklets for s in t["samples"]]
    assert ys and abs(np.median(ys) - 4.0) < 0.3
    assert all(t["evidence_clip"] is None for t in tracklets)
    hall = Path(__file__).resolve().parents[1] / "configs" / "hall.yaml"
    if hall.is_file() and importlib.util.find_spec("controller.cctv.association") is not None:
        r = runner.invoke(app, ["cctv", "analyze", str(video), "--calib", str(calib), "--hog", "off", "--json",
                                "--hall", str(hall)])
        assert r.exit_code == 0, r.output
        whole = json.loads(r.output)  # the controller's half on the same tracklets: one walker, one trajectory
        assert whole["trajectories"] == 1 and isinstance(whole["alerts"], list)
    clips = tmp_path / "clips"
    r = runner.invoke(app, ["cctv", "analyze", str(video), "--calib", str(calib), "--out", str(out), "--hog", "off",
                            "--evidence-dir", str(clips)])
    assert r.exit_code == 0, r.output
    assert list(clips.rglob("*.jpg"))


def test_analyze_refuses_a_bad_calibration(tmp_path: Path) -> None:
    bad = tmp_path / "calib.json"
    bad.write_text(json.dumps({"schema": "cedge.hall_calib/1", "cameras": [{"camera_id": "c1"}]}))
    r = runner.invoke(app, ["cctv", "analyze", str(tmp_path / "c1.avi"), "--calib", str(bad)])
    assert r.exit_code == 2 and "not a camera calibration file" in r.output and "Traceback" not in r.output
