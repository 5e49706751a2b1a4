"""The whole camera pipeline, its privacy defaults, the wire schema and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner
from vision_synth import face_frames

from agent.cli_camera import app
from agent.hal.interfaces import DeviceUnavailable
from agent.vision.errors import VisionInputError
from agent.vision.face_mesh import FaceMesh
from agent.vision.pipeline import CameraPipeline, PipelineConfig
from agent.wire_schema import Vitals

FPS = 30.0


@pytest.fixture(scope="module")
def analysed() -> CameraPipeline:
    pipe = CameraPipeline(FPS, PipelineConfig(track_seed=3))
    for frame, t in face_frames(int(14 * FPS), FPS, hr_bpm=78.0, rr_bpm=16.0):
        pipe.process(frame, t)
    return pipe


def test_heart_and_respiration_rates_of_a_synthetic_face(analysed: CameraPipeline) -> None:
    hist = next(iter(analysed.history().values()))
    hr = [r["heart_rate_bpm"] for r in hist if r["heart_rate_bpm"] is not None]
    assert len(hr) >= 6 and all(abs(v - 78.0) < 1.5 for v in hr)
    rr = [r["rr_motion_bpm"] for r in hist if r["rr_motion_bpm"] is not None]
    assert rr and abs(rr[-1] - 16.0) < 1.0


def test_results_are_wire_vitals_without_images(analysed: CameraPipeline) -> None:
    res = analysed.results()
    assert len(res) == 1
    v = Vitals.model_validate(res[0])  # the body of a vitals message, as published
    assert v.track_id.startswith("t") and v.heart_rate_bpm is not None and 0 < (v.hr_quality or 0) <= 1
    blob = json.dumps(res) + json.dumps(analysed.history(), default=float)
    assert len(blob) < 200_000  # numbers only: one 640x480 frame alone would be 900 kB
    for rec in next(iter(analysed.history().values())):
        assert all(not isinstance(val, np.ndarray) for val in rec.values())
    assert analysed.config.evidence_clips is False and analysed.evidence_files == []


def test_negative_control_reports_no_valid_pulse() -> None:
    pipe = CameraPipeline(FPS, PipelineConfig(track_seed=1))
    for frame, t in face_frames(int(12 * FPS), FPS, pulse=False, seed=2):
        pipe.process(frame, t)
    hist = next(iter(pipe.history().values()))
    windows = [r for r in hist if r["hr_window_s"]]
    assert windows and not any(r["hr_valid"] for r in windows)
    assert pipe.results()[0]["heart_rate_bpm"] is None


def test_evidence_clips_only_when_switched_on(tmp_path: Path) -> None:
    with pytest.raises(VisionInputError, match="evidence_dir"):
        CameraPipeline(FPS, PipelineConfig(evidence_clips=True))
    pipe = CameraPipeline(FPS, PipelineConfig(evidence_clips=True, evidence_dir=str(tmp_path), track_seed=1))
    for frame, t in face_frames(20, FPS):
        pipe.process(frame, t)
    st = next(iter(pipe._states.values()))
    pipe._write_evidence(st, 1.0)  # what an alert triggers
    files = list(tmp_path.glob("*.avi"))
    assert len(files) == 1 and files[0].name.startswith(st.track_id)


def test_bad_frames_are_rejected() -> None:
    pipe = CameraPipeline(FPS)
    with pytest.raises(VisionInputError, match="uint8 BGR"):
        pipe.process(np.zeros((480, 640), np.uint8))
    with pytest.raises(VisionInputError, match="fps"):
        CameraPipeline(0.0)


def test_face_mesh_needs_a_user_model(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnavailable, match="no model configured"):
        FaceMesh(None)
    with pytest.raises(DeviceUnavailable, match="not found"):
        FaceMesh(tmp_path / "face_landmark.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    with pytest.raises(DeviceUnavailable, match="cannot load"):
        FaceMesh(junk)


def test_cli_analyze_with_ubfc_truth(tmp_path: Path) -> None:
    video = tmp_path / "vid.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 480))
    for frame, _ in face_frames(int(9 * FPS), FPS, hr_bpm=66.0, noise_dn=1.0, pulse_amp=0.006):
        writer.write(frame)
    writer.release()
    t = np.arange(0, 9, 1 / 60)
    ppg = np.sin(2 * np.pi * 66 / 60 * t)
    (tmp_path / "ground_truth.txt").write_text("\n".join(" ".join(f"{v:.6e}" for v in row)
                                                       for row in (ppg, np.full_like(t, 66.0), t)))
    res = CliRunner().invoke(app, ["analyze", str(video), "--truth", str(tmp_path / "ground_truth.txt"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["frames"] == int(9 * FPS) and out["truth"]["format"] == "ubfc-rppg"
    assert out["tracks"] and out["score"]["hr_updates_scored"] >= 1
    assert out["score"]["hr_mae_bpm"] < 3.0
    missing = CliRunner().invoke(app, ["analyze", str(tmp_path / "nope.avi")])
    assert missing.exit_code == 2 and "no such video" in missing.output


def test_synthetic_camera_clip_end_to_end() -> None:
    """A 14 s clip of the simulator's face (tests may use hal_sim; the agent never does)."""
    face = pytest.importorskip("hal_sim.face")
    clip = face.render_clip(face.ClipSpec(duration_s=14.0, fitzpatrick=3), seed=424242)
    truth = clip.truth
    pipe = CameraPipeline(truth.fps, PipelineConfig(track_seed=5))
    for k, frame in enumerate(clip.frames()):
        pipe.process(frame, float(truth.t_s[k]))
    (hist,) = pipe.history().values()
    person = truth.people[0]
    valid = [r for r in hist if r["hr_valid"]]
    assert len(valid) >= 5
    for r in valid:
        sel = (truth.t_s >= r["t_s"] - r["hr_window_s"]) & (truth.t_s <= r["t_s"])
        assert abs(r["heart_rate_bpm"] - float(np.mean(person.hr_bpm[sel]))) < 2.0
    rr = [r for r in hist if r["rr_bpm"] is not None]
    assert rr and abs(rr[-1]["rr_bpm"] - float(np.mean(person.rr_bpm))) < 1.5
    (events,) = pipe.blink_events().values()
    from agent.vision.blink import match_events
    tb = [(a, b) for a, b in person.blink_intervals_s if a > 2.0]
    tp, fp, fn = match_events([(e.start_s, e.end_s) for e in events if e.start_s > 2.0], tb)
    assert fp <= 1 and fn <= 1 and tp >= len(tb) - 1
