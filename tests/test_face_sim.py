"""Synthetic camera-box video (hal_sim.face) and the simulated camera device."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest

from agent.hal.interfaces import Clock, DeviceContext, DeviceTimeout, DeviceUnavailable
from agent.hal.registry import create_device
from hal_sim.face import ClipSpec, ClipTruth, render_clip
from hal_sim.face.face_model import SKIN_LAB_BY_FITZPATRICK, ita_deg, skin_bgr
from hal_sim.face.physiology import sample_params, simulate_physiology


def _spectrum_bpm(signal: np.ndarray, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = signal - np.polyval(np.polyfit(t_s, signal, 2), t_s)  # remove slow drift
    x = x * np.hanning(x.size)
    n = 16384
    f_bpm = np.fft.rfftfreq(n, float(np.mean(np.diff(t_s)))) * 60.0
    return f_bpm, np.abs(np.fft.rfft(x, n)) ** 2


def _cheek_green(clip) -> np.ndarray:
    """Mean green over a fixed cheek/nose region (first frame's face box) for every frame."""
    x, y, w, h = clip.truth.people[0].face_box[0]
    rows = slice(int(y + 0.45 * h), int(y + 0.68 * h))
    cols = slice(int(x + 0.15 * w), int(x + 0.85 * w))
    return np.array([f[rows, cols, 1].mean() for f in clip.frames()])


# --------------------------------------------------------------------------- truth
def test_truth_is_consistent():
    clip = render_clip(ClipSpec(duration_s=30.0, motion=True), seed=11)
    truth = clip.truth
    n = int(round(30.0 * 30.0))
    assert truth.n_frames == n
    assert np.all(np.diff(truth.t_s) > 0)
    assert abs(truth.t_s[-1] - (n - 1) / 30.0) < 0.02  # jittered, not drifting
    assert truth.t_capture_s is not None and np.all(np.diff(truth.t_capture_s) > 0)
    assert 0.0 < np.std(truth.t_s - truth.t_capture_s) < 0.005  # timestamp jitter of a few ms
    p = truth.people[0]
    assert p.pulse_present and 1 <= p.fitzpatrick <= 6
    # Mean HR from the beat train matches the per-frame instantaneous HR.
    assert abs(p.mean_hr_from_beats_bpm() - float(np.mean(p.hr_bpm))) < 1.5
    assert 45.0 < np.mean(p.hr_bpm) < 110.0 and 8.0 < np.mean(p.rr_bpm) < 25.0
    assert len(p.blink_intervals_s) >= 3
    for start, end in p.blink_intervals_s:
        assert 0.1 - 1e-9 <= end - start <= 0.4 + 1e-9
        inside = (truth.t_capture_s >= start) & (truth.t_capture_s <= end)
        if np.any(inside):
            assert p.eye_openness[inside].min() < 0.8
    assert p.eye_openness.size == n and np.all(p.eye_openness[p.eye_openness < 1.0] >= 0.0)
    assert np.all(np.isfinite(p.bvp)) and np.ptp(p.bvp) > 0.8
    assert len(p.state) == n and set(p.state) == {"calm"}
    assert p.face_box.shape == (n, 4)
    assert np.all(p.face_box[:, 2] > 40) and np.all(p.face_box[:, 3] > 40)


def test_tense_episode_raises_hr_rr_and_blink_rate():
    clip = render_clip(ClipSpec(duration_s=30.0, episodes=[(8.0, 30.0, "tense")]), seed=5)
    p = clip.truth.people[0]
    t = clip.truth.t_s
    calm, tense = t < 8.0, t > 22.0
    assert np.mean(p.hr_bpm[tense]) > np.mean(p.hr_bpm[calm]) + 8.0
    assert np.mean(p.rr_bpm[tense]) > np.mean(p.rr_bpm[calm]) + 2.0
    assert p.state[int(np.argmax(tense))] == "tense" and p.state[0] == "calm"
    # Blink rate over a long stretch (the 30 s clip has too few blinks to compare).
    rng = np.random.default_rng(3)
    params = sample_params(rng)
    track = simulate_physiology(params, 1200.0, [(600.0, 1200.0, "tense")], rng)
    starts = np.array([s for s, _ in track.blink_intervals()])
    rate_calm = np.sum(starts < 580.0) / 580.0
    rate_tense = np.sum(starts > 650.0) / 550.0
    assert rate_tense > 1.25 * rate_calm
    assert 10.0 / 60.0 < rate_calm < 25.0 / 60.0


def test_truth_json_round_trip(tmp_path):
    clip = render_clip(ClipSpec(duration_s=3.0, people=2, control="photo"), seed=2)
    path = tmp_path / "truth.json"
    clip.truth.to_json(path)
    back = ClipTruth.from_json(path)
    assert back.width == 640 and back.n_frames == clip.truth.n_frames
    np.testing.assert_allclose(back.t_s, clip.truth.t_s, atol=1e-6)
    np.testing.assert_allclose(back.t_capture_s, clip.truth.t_capture_s, atol=1e-6)
    photo, live = back.people
    assert not photo.pulse_present and np.all(np.isnan(photo.hr_bpm)) and photo.beat_times_s.size == 0
    assert live.pulse_present
    np.testing.assert_allclose(live.beat_times_s, clip.truth.people[1].beat_times_s, atol=1e-5)
    np.testing.assert_allclose(live.face_box, clip.truth.people[1].face_box, atol=0.01)
    assert back.conditions["control"] == "photo"


# --------------------------------------------------------------------------- pixels
def test_pulse_visible_in_green_and_absent_from_photo():
    spec = dict(duration_s=20.0, width=320, height=240, fitzpatrick=3)
    live = render_clip(ClipSpec(**spec), seed=3)
    photo = render_clip(ClipSpec(**spec, control="photo"), seed=3)
    hr_true = float(np.mean(live.truth.people[0].hr_bpm))
    f, p_live = _spectrum_bpm(_cheek_green(live), live.truth.t_s)
    _, p_photo = _spectrum_bpm(_cheek_green(photo), photo.truth.t_s)
    band = (f > 40.0) & (f < 180.0)
    peak = f[band][np.argmax(p_live[band])]
    assert abs(peak - hr_true) < 2.0
    near = band & (np.abs(f - hr_true) < 2.0)
    assert p_photo[near].max() < 0.05 * p_live[near].max()


def test_frame_size_dtype_and_reproducibility():
    a = render_clip(ClipSpec(duration_s=0.2, motion=True, specular=True), seed=7)
    b = render_clip(ClipSpec(duration_s=0.2, motion=True, specular=True), seed=7)
    c = render_clip(ClipSpec(duration_s=0.2, motion=True, specular=True), seed=8)
    fa, fb, fc = list(a.frames()), list(b.frames()), list(c.frames())
    assert len(fa) == 6
    assert fa[0].shape == (480, 640, 3) and fa[0].dtype == np.uint8
    for x, y in zip(fa, fb, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.frame(3), fa[3])  # random access = iteration
    assert np.mean(np.abs(fa[0].astype(int) - fc[0].astype(int))) > 2.0
    np.testing.assert_array_equal(a.truth.t_s, b.truth.t_s)


def test_jpeg_is_applied():
    raw = render_clip(ClipSpec(duration_s=0.1, noise=False), seed=4).frame(0).astype(float)
    jpg_clip = render_clip(ClipSpec(duration_s=0.1, noise=False, jpeg_quality=20), seed=4)
    jpg = jpg_clip.frame(0).astype(float)
    assert jpg_clip.truth.conditions["jpeg_quality"] == 20
    assert np.mean(np.abs(jpg - raw)) > 0.3

    def blockiness(img: np.ndarray) -> float:
        d = np.abs(np.diff(img.mean(2), axis=1)).mean(0)  # d[j] = step between columns j and j+1
        at_edges = d[7::8].mean()
        inside = np.delete(d, np.s_[7::8]).mean()
        return float(at_edges / inside)

    assert blockiness(jpg) > 1.1 * blockiness(raw)


def test_blink_changes_the_eye_region():
    clip = render_clip(ClipSpec(duration_s=10.0, noise=False, expressions=False), seed=9)
    p = clip.truth.people[0]
    start, end = p.blink_intervals_s[0]
    t_closed = start + 0.35 * (end - start)
    t_open = end + 0.2
    scene = clip.scene
    closed, open_ = scene.render(t_closed, 0).astype(float), scene.render(t_open, 1).astype(float)
    x, y, w, h = p.face_box[int(round(t_open * 30))]
    eyes = (slice(int(y + 0.2 * h), int(y + 0.42 * h)), slice(int(x + 0.1 * w), int(x + 0.9 * w)))
    cheeks = (slice(int(y + 0.55 * h), int(y + 0.7 * h)), slice(int(x + 0.15 * w), int(x + 0.85 * w)))
    eye_change = np.mean(np.abs(closed[eyes] - open_[eyes]))
    cheek_change = np.mean(np.abs(closed[cheeks] - open_[cheeks]))
    assert eye_change > 2.0
    assert eye_change > 5.0 * cheek_change


def test_mask_control_and_several_people():
    clip = render_clip(ClipSpec(duration_s=5.0, people=3, control="mask", fitzpatrick_others=[1, 6]), seed=1)
    mask, *others = clip.truth.people
    assert mask.kind == "mask" and not mask.pulse_present
    assert np.all(np.isnan(mask.hr_bpm)) and np.all(np.isfinite(mask.rr_bpm))
    assert [o.fitzpatrick for o in others] == [1, 6]
    assert all(o.pulse_present and o.beat_times_s.size > 2 for o in others)
    centres = [float(np.mean(pp.face_box[:, 0] + pp.face_box[:, 2] / 2)) for pp in clip.truth.people]
    assert centres == sorted(centres)
    frame = clip.frame(0)
    assert frame.shape == (480, 640, 3)


def test_write_video(tmp_path):
    clip = render_clip(ClipSpec(duration_s=1.0, width=160, height=120), seed=1)
    path = clip.write_video(tmp_path / "clip.avi")
    assert path.exists() and path.with_suffix(".json").exists()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape == (120, 160, 3)
        n += 1
    cap.release()
    assert n == 30
    assert ClipTruth.from_json(path.with_suffix(".json")).n_frames == 30


def test_bad_spec_is_named():
    with pytest.raises(ValueError, match="fitzpatrick"):
        render_clip(ClipSpec(fitzpatrick=7), seed=0)
    with pytest.raises(ValueError, match="control"):
        render_clip(ClipSpec(control="mannequin"), seed=0)
    with pytest.raises(ValueError, match="episodes"):
        render_clip(ClipSpec(episodes=[(5.0, 2.0, "tense")]), seed=0)


def test_skin_tones_follow_ita_classes():
    itas = [ita_deg(k) for k in range(1, 7)]
    assert itas == sorted(itas, reverse=True)
    bounds = [(55, 90), (41, 55), (28, 41), (10, 28), (-30, 10), (-90, -30)]
    for ita, (lo, hi) in zip(itas, bounds, strict=True):
        assert lo < ita <= hi
    lum = [float(skin_bgr(k) @ np.array([0.114, 0.587, 0.299])) for k in SKIN_LAB_BY_FITZPATRICK]
    assert lum == sorted(lum, reverse=True)


# --------------------------------------------------------------------------- device
class _FastClock(Clock):
    """Simulated clock: sleep() advances time instantly."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic_s(self) -> float:
        return self.t

    def utc_now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)

    def sleep(self, duration_s: float) -> None:
        self.t += max(duration_s, 0.0)


def test_sim_camera_delivers_frames_at_clock_rate():
    clock = _FastClock()
    cam = create_device("camera", "sim", {"fps": 10, "resolution": [320, 240], "seed": 1, "scenario": "calm"},
                        DeviceContext(unit_id="cam-1", clock=clock))
    cam.open()
    try:
        frames = [cam.read_frame(timeout_s=1.0) for _ in range(12)]
        assert [f.index for f in frames] == list(range(12))
        assert frames[0].image.shape == (240, 320, 3) and frames[0].image.dtype == np.uint8
        dt = np.diff([f.t_mono_s for f in frames])
        assert np.allclose(dt, 0.1, atol=0.01)
        assert abs(clock.t - frames[-1].t_mono_s) < 0.01
        # A short timeout before the next frame is due raises and the device keeps working.
        with pytest.raises(DeviceTimeout):
            cam.read_frame(timeout_s=0.0)
        # A consumer that falls behind gets the newest frame.
        clock.sleep(1.0)
        late = cam.read_frame(timeout_s=1.0)
        assert late.index >= frames[-1].index + 10
        truth = cam.truth_at(late.t_mono_s)
        assert truth[0]["kind"] == "person" and 40.0 < truth[0]["hr_bpm"] < 130.0
    finally:
        cam.close()
    cam.close()  # idempotent


def test_sim_camera_rejects_bad_parameters():
    with pytest.raises(DeviceUnavailable, match="scenario"):
        create_device("camera", "sim", {"scenario": "nope"}, DeviceContext(unit_id="cam-1"))
    with pytest.raises(DeviceUnavailable, match="resolution"):
        create_device("camera", "sim", {"resolution": [10]}, DeviceContext(unit_id="cam-1"))


def test_astronaut_base_face_pulses_and_blinks():
    pytest.importorskip("skimage")
    clip = render_clip(ClipSpec(duration_s=8.0, base_face="astronaut", fitzpatrick=4, noise=False), seed=2)
    p = clip.truth.people[0]
    assert p.pulse_present and p.fitzpatrick == 4 and p.blink_intervals_s
    start, end = p.blink_intervals_s[0]
    scene = clip.scene
    closed = scene.render(start + 0.35 * (end - start), 0).astype(float)
    open_ = scene.render(end + 0.2, 1).astype(float)
    x, y, w, h = p.face_box[0]
    eyes = (slice(int(y + 0.2 * h), int(y + 0.42 * h)), slice(int(x + 0.1 * w), int(x + 0.9 * w)))
    assert np.mean(np.abs(closed[eyes] - open_[eyes])) > 1.0
