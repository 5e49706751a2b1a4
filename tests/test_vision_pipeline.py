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


def test_inter_beat_intervals_of_a_synthetic_face(analysed: CameraPipeline) -> None:
    (tid,) = analysed.history()
    ibis = analysed.ibis(tid)
    assert len(ibis) >= 6  # every beat from 1 s into the first 6 s window to 1 s before the end
    t = [x[0] for x in ibis]
    assert t == sorted(t) and min(np.diff(t)) > 0.5
    err = np.abs(np.array([ms for _, ms in ibis]) - 60_000.0 / 78.0)
    # the first window's beats (2-5 s, while the skin colour model settles) are off by up to ~50 ms
    assert np.median(err) < 20.0 and err.max() < 60.0
    assert analysed.ibis(tid, since_s=t[-2]) == ibis[-1:]


def test_camera_role_publishes_each_interval_once(analysed: CameraPipeline) -> None:
    from datetime import UTC, datetime

    from agent.config import load_profile
    from agent.hal.interfaces import Frame
    from agent.runtime.roles import CameraboxRole, RoleContext

    class Capture:
        def __init__(self) -> None:
            self.sent: list[tuple[str, Vitals]] = []

        def send(self, kind: str, body: Vitals) -> None:
            self.sent.append((kind, body))

    profile = load_profile(Path(__file__).resolve().parents[1] / "configs" / "units" / "camerabox.yaml")
    link = Capture()
    role = CameraboxRole(RoleContext(profile=profile, clock=None, link=link, track=None))  # type: ignore[arg-type]

    class Replay:  # the pipeline analysed above, with no new frames: the role only publishes
        def process(self, frame: Frame) -> list[object]:
            return []

        def __getattr__(self, name: str) -> object:
            return getattr(analysed, name)

    role.pipeline = Replay()  # type: ignore[assignment]
    blank = np.zeros((480, 640, 3), np.uint8)
    interval = profile.camera.vitals_interval_s
    for k in range(3):
        role.on_frame(Frame(image=blank, t_mono_s=100.0 + 1.01 * interval * k, t_utc=datetime.now(UTC), index=k))
    bodies = [b for kind, b in link.sent if kind == "vitals"]
    assert len(bodies) == 2  # the first frame arms the publishing timer
    (tid,) = analysed.history()
    assert bodies[0].ibi_ms == [ms for _, ms in analysed.ibis(tid)] and bodies[0].ibi_ms
    assert bodies[1].ibi_ms == []  # nothing new since: no interval is sent twice


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
    assert out["tracks"][0]["ibi_count"] >= 3  # beats of the contact PPG are the reference
    assert out["score"]["ibi_coverage"] >= 0.5 and out["score"]["ibi_mae_ms"] < 100.0  # 60 ms: MJPG, 9 s
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
    from agent.vision.beats import score_ibis
    (tid,) = pipe.history()
    ibi = score_ibis(pipe.ibis(tid), person.beat_times_s, 2.0, float(truth.t_s[-1]) - 1.0)
    assert ibi["n_reported"] >= 0.8 * ibi["n_true"] and ibi["n_matched"] == ibi["n_reported"]
    assert np.mean(ibi["abs_err_ms"]) < 45.0  # 27 ms here; ~15 ms at a high pulse SNR, ~60 ms near the threshold
    (events,) = pipe.blink_events().values()
    from agent.vision.blink import match_events
    tb = [(a, b) for a, b in person.blink_intervals_s if a > 2.0]
    tp, fp, fn = match_events([(e.start_s, e.end_s) for e in events if e.start_s > 2.0], tb)
    assert fp <= 1 and fn <= 1 and tp >= len(tb) - 1
