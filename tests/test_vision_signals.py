"""Respiration, blinks, expression-free abnormal scoring on synthetic signals."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.vision.abnormal import AbnormalScorer
from agent.vision.blink import (
    BlinkDetector,
    EyeRegionSignal,
    detect_blinks,
    eye_aspect_ratio,
    match_events,
)
from agent.vision.errors import VisionInputError
from agent.vision.respiration import (
    ChestMotion,
    HeadMotion,
    RateEstimate,
    fuse,
    head_coupling,
    rate_from_motion,
    rate_from_pulse,
    recent_rate_from_motion,
)

FPS = 30.0


# --------------------------------------------------------------------------- respiration
def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.normal(128, 40, (h, w)).astype(np.float32), (0, 0), 2.0)
    return np.clip(tex, 0, 255).astype(np.uint8)


def test_chest_flow_measures_breathing_rate() -> None:
    canvas = _textured(700, 640)
    face = (260.0, 60.0, 120.0, 120.0)
    cm = ChestMotion(FPS)
    rr_true = 14.0
    v = []
    for k in range(int(24 * FPS)):
        y = 2.5 * np.sin(2 * np.pi * rr_true / 60.0 * k / FPS)  # chest moves 2.5 px
        m = np.float32([[1, 0, 0], [0, 1, -y]])
        frame = cv2.warpAffine(canvas, m, (640, 480), borderMode=cv2.BORDER_REFLECT)
        v.append(cm.update(frame, face))
    est = rate_from_motion(np.asarray(v), FPS)
    assert est.rate_bpm is not None and abs(est.rate_bpm - rr_true) < 0.5
    assert est.quality > 0.3
    # velocity sign: positive = up, i.e. its running sum follows the imposed displacement
    disp = np.nancumsum(v)
    ref = 2.5 * np.sin(2 * np.pi * rr_true / 60.0 * np.arange(len(v)) / FPS)
    assert np.corrcoef(disp[30:], ref[30:])[0, 1] > 0.9


def test_whole_body_sway_is_removed_using_the_head() -> None:
    t = np.arange(int(20 * FPS)) / FPS
    sway = 12.0 * np.sin(2 * np.pi * 0.05 * t) + 12.0 * np.sin(2 * np.pi * 0.3 * t + 1.0)  # 18 /min sway
    breath = 2.5 * np.sin(2 * np.pi * 0.2 * t)  # 12 /min
    chest = 0.4 * sway + breath
    head = sway + 0.3 * breath
    vel = np.diff(chest, prepend=chest[0])
    hvel = np.diff(head, prepend=head[0])
    naive = rate_from_motion(vel, FPS)
    fixed = rate_from_motion(vel, FPS, head_velocity=hvel)
    assert fixed.rate_bpm is not None and abs(fixed.rate_bpm - 12.0) < 0.7
    assert naive.rate_bpm is not None and abs(naive.rate_bpm - 12.0) > 3.0  # fooled by the sway


def _band_limited(rng: np.random.Generator, n: int, fs: float, lo_hz: float, hi_hz: float) -> np.ndarray:
    """Unit-SD random signal with its power spread over lo_hz..hi_hz (like voluntary sway)."""
    spec = np.fft.rfft(rng.normal(size=n))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    spec[(f < lo_hz) | (f > hi_hz)] = 0.0
    x = np.fft.irfft(spec, n)
    return x / x.std()


def test_head_sway_in_the_breathing_band_is_removed() -> None:
    n = int(20 * FPS)
    t = np.arange(n) / FPS
    naive_err, fixed_err, betas, quality = [], [], [], []
    for seed in range(11, 21):
        rng = np.random.default_rng(seed)
        sway = 7.0 * _band_limited(rng, n, FPS, 0.03, 0.3)  # head translation, px, overlaps 2-18 /min
        breath = 1.2 * np.sin(2 * np.pi * 0.25 * t + 0.4)  # 15 /min
        chest = 0.4 * sway + breath
        head = sway + 0.3 * breath + 0.3 * rng.normal(size=n)  # breathing lifts the head a little too
        vel = np.diff(chest, prepend=chest[0]) + 0.05 * rng.normal(size=n)
        hvel = np.diff(head, prepend=head[0])
        naive = rate_from_motion(vel, FPS)
        fixed = rate_from_motion(vel, FPS, head_velocity=hvel)
        assert naive.rate_bpm is not None and fixed.rate_bpm is not None
        naive_err.append(abs(naive.rate_bpm - 15.0))
        fixed_err.append(abs(fixed.rate_bpm - 15.0))
        quality.append(fixed.quality)
        # the coupling is estimated from the data, away from the breathing peak
        dec = slice(0, n, 3)  # 10 Hz, as inside rate_from_motion
        betas.append(head_coupling(chest[dec] - chest[dec].mean(), head[dec] - head[dec].mean(), 10.0))
    assert sum(e > 2.0 for e in naive_err) >= 3  # without the head, sway is read as breathing
    assert max(fixed_err) < 0.7
    assert min(quality) > 0.5
    assert min(betas) > 0.33 and max(betas) < 0.47


def test_breath_to_breath_rate_also_removes_head_sway() -> None:
    """The abnormal score's fast cue (newest breath cycle) uses the same head reference."""
    n = int(20 * FPS)
    t = np.arange(n) / FPS
    fixed_err, naive_none = [], 0
    for seed in range(31, 39):
        rng = np.random.default_rng(seed)
        sway = 7.0 * _band_limited(rng, n, FPS, 0.03, 0.3)
        breath = 1.5 * np.sin(2 * np.pi * 0.25 * t + 0.4)  # 15 /min
        chest, head = 0.4 * sway + breath, sway + 0.3 * breath
        vel = np.diff(chest, prepend=chest[0]) + 0.05 * rng.normal(size=n)
        hvel = np.diff(head, prepend=head[0])
        fixed = recent_rate_from_motion(vel, FPS, expected_bpm=15.0, head_velocity=hvel)
        naive = recent_rate_from_motion(vel, FPS, expected_bpm=15.0)
        assert fixed is not None
        fixed_err.append(abs(fixed - 15.0))
        naive_none += naive is None or abs(naive - 15.0) > 1.5
    assert max(fixed_err) < 1.5
    assert naive_none >= 2  # without the head, sway breaks the breath-to-breath intervals


def test_breath_to_breath_rate_follows_a_step_within_a_breath_or_two() -> None:
    """The abnormal cue times the newest cycle between like extrema (peaks or troughs): 6 s after
    breathing speeds up from 12 to 20 /min it reads the new rate, where three cycles still lag."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        t = np.arange(int(26 * FPS)) / FPS
        rate_hz = np.where(t < 20.0, 12.0, 20.0) / 60.0
        chest = 1.5 * np.sin(2 * np.pi * np.cumsum(rate_hz) / FPS + rng.uniform(0, 2 * np.pi))
        vel = np.diff(chest + 0.05 * rng.normal(size=t.size), prepend=chest[0])
        newest = recent_rate_from_motion(vel, FPS, expected_bpm=12.0)
        three = recent_rate_from_motion(vel, FPS, n_cycles=3, expected_bpm=12.0)
        assert newest is not None and three is not None
        assert abs(newest - 20.0) < 1.0
        assert three < newest - 0.5


def test_still_head_leaves_the_estimate_unchanged() -> None:
    rng = np.random.default_rng(12)
    n = int(20 * FPS)
    t = np.arange(n) / FPS
    breath = 1.5 * np.sin(2 * np.pi * 0.3 * t)  # 18 /min
    chest = breath + 0.1 * rng.normal(size=n)
    head = 0.3 * breath + 0.2 * rng.normal(size=n)  # sub-pixel: only breathing and sensor noise
    vel = np.diff(chest, prepend=chest[0])
    hvel = np.diff(head, prepend=head[0])
    alone = rate_from_motion(vel, FPS)
    with_head = rate_from_motion(vel, FPS, head_velocity=hvel)
    assert alone.rate_bpm is not None and abs(alone.rate_bpm - 18.0) < 0.5
    assert with_head.rate_bpm == alone.rate_bpm and with_head.quality == alone.quality
    # head and chest rising alike with each breath, 1.5 px (the whole frame shifting): nothing but
    # the breath is shared, so nothing is removed
    head = breath + 0.2 * rng.normal(size=n)
    with_head = rate_from_motion(vel, FPS, head_velocity=np.diff(head, prepend=head[0]))
    assert with_head.rate_bpm == alone.rate_bpm and with_head.quality == alone.quality


def test_head_motion_follows_the_outline_of_a_moving_head() -> None:
    canvas = _textured(700, 640, seed=3) // 3  # dark textured background
    head_img = _textured(700, 640, seed=4) // 2 + 120
    yy, xx = np.mgrid[0:700, 0:640]
    inside = ((xx - 320) / 80.0) ** 2 + ((yy - 260) / 100.0) ** 2 <= 1.0  # head top y=160, chin y=360
    face = (260.0, 200.0, 120.0, 150.0)
    hm = HeadMotion(FPS)
    v, ref = [], []
    for k in range(int(10 * FPS)):
        y = 3.0 * np.sin(2 * np.pi * 0.2 * k / FPS)  # head moves 3 px
        m = np.float32([[1, 0, 0], [0, 1, -y]])
        img = np.where(inside, head_img, canvas).astype(np.uint8)
        frame = cv2.warpAffine(img, m, (640, 480), borderMode=cv2.BORDER_REFLECT)
        v.append(hm.update(frame, face))
        ref.append(y)
    assert np.isnan(v[0]) and np.all(np.isfinite(v[1:]))
    disp = np.cumsum(v[1:])
    assert np.corrcoef(disp, ref[1:])[0, 1] > 0.95
    assert 0.7 < np.ptp(disp) / np.ptp(ref[1:]) < 1.3
    with pytest.raises(VisionInputError):
        hm.update(np.zeros((480, 640, 3), np.uint8), face)


def test_rate_from_pulse_reads_rsa() -> None:
    rr = 15.0
    t = np.arange(0, 30, 0.01)
    hr = 70 + 4 * np.sin(2 * np.pi * rr / 60 * t)
    phase = np.cumsum(hr / 60 * 0.01)
    beats = np.interp(np.arange(1, int(phase[-1])), phase, t)
    est = rate_from_pulse(beats)
    assert est.rate_bpm is not None and abs(est.rate_bpm - rr) < 1.0


def test_fusion_prefers_motion_and_flags_disagreement() -> None:
    agree = fuse(RateEstimate(14.0, 0.8), RateEstimate(15.0, 0.6))
    assert agree.agree and 14.0 <= agree.rr_bpm <= 15.0
    clash = fuse(RateEstimate(14.0, 0.8), RateEstimate(24.0, 0.6))
    assert clash.agree is False and clash.rr_bpm == 14.0 and clash.quality < 0.8
    only_pulse = fuse(RateEstimate(None, 0.0), RateEstimate(16.0, 0.6))
    assert only_pulse.rr_bpm == 16.0
    assert fuse(RateEstimate(None, 0.0), RateEstimate(None, 0.0)).rr_bpm is None


# --------------------------------------------------------------------------- blinks
def test_eye_aspect_ratio() -> None:
    open_eye = np.array([[0, 0], [3, -2], [7, -2], [10, 0], [7, 2], [3, 2]], float)
    closed = open_eye * np.array([1.0, 0.1])
    assert abs(eye_aspect_ratio(open_eye) - 0.4) < 1e-9
    assert eye_aspect_ratio(closed) < 0.05
    with pytest.raises(VisionInputError):
        eye_aspect_ratio(np.zeros((5, 2)))


def test_blink_detector_finds_blinks_not_slow_changes() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(int(40 * FPS)) / FPS
    sig = 0.02 * rng.standard_normal(t.size)
    sig += 0.25 * (t > 25) * (t < 28)  # a head turn: a 3 s change, not a blink
    truth = [(3.0, 3.2), (7.5, 7.8), (12.0, 12.15), (18.2, 18.5), (31.0, 31.3), (36.0, 36.2)]
    for a, b in truth:
        u = np.clip((t - a) / (b - a), 0, 1)
        sig += 0.45 * np.sin(np.pi * u) * ((t >= a) & (t <= b))
    events = detect_blinks(t, sig, FPS)
    tp, fp, fn = match_events([(e.start_s, e.end_s) for e in events], truth)
    assert (tp, fp, fn) == (6, 0, 0)


def test_blink_rate_and_matching() -> None:
    det = BlinkDetector(FPS)
    assert det.rate_per_min(5.0) is None  # too short a span to say
    assert match_events([(1.0, 1.2), (5.0, 5.2)], [(1.05, 1.25)]) == (1, 1, 0)
    assert match_events([], [(1.0, 1.2)]) == (0, 0, 1)


def _eye_image(openness: float) -> np.ndarray:
    img = np.full((200, 200), 150, np.uint8)
    for cx in (70, 130):
        h = max(1, int(12 * openness))
        cv2.ellipse(img, (cx, 90), (18, h), 0, 0, 360, 235, -1)  # sclera
        if openness > 0.2:
            cv2.circle(img, (cx, 90), min(9, h), 40, -1)  # iris
        cv2.line(img, (cx - 18, 90 - h), (cx + 18, 90 - h), 60, 2)  # lash line
    return img


def test_eye_region_signal_rises_when_the_eyes_close() -> None:
    face = (30.0, 10.0, 140.0, 180.0)  # eyes at (90 - 10) / 180 = 0.44 of the box height
    sig = EyeRegionSignal(FPS)
    values = [sig.update(_eye_image(1.0), face) for _ in range(30)]
    closed = sig.update(_eye_image(0.05), face)
    assert abs(values[-1]) < 0.05
    assert closed > 0.3


# --------------------------------------------------------------------------- abnormal state
def test_abnormal_score_rises_against_own_baseline_with_evidence() -> None:
    rng = np.random.default_rng(0)
    sc = AbnormalScorer(baseline_s=10.0)
    scores, alerts = [], []
    for k in range(40):
        t = float(k)
        tense = t >= 20
        feats = {"hr_bpm": 62 + rng.normal(0, 1) + (20 if tense else 0),
                 "rr_bpm": 13 + rng.normal(0, 0.5) + (5 if tense else 0),
                 "blink_per_min": 15 + rng.normal(0, 2)}
        r = sc.update(t, feats)
        if t < 10:
            assert r.score is None
        else:
            scores.append((tense, r.score))
            alerts.append((tense, r.alert, r.evidence))
    calm = [s for tn, s in scores if not tn]
    tense_s = [s for tn, s in scores if tn]
    assert max(calm) < 0.3 < 0.9 < min(tense_s)
    fired = [ev for tn, al, ev in alerts if al]
    assert fired and all(tn for tn, al, _ in alerts if al)
    assert fired[0]["hr_bpm_z"] > 3 and abs(fired[0]["hr_bpm_baseline"] - 62) < 2


def test_a_cue_seen_once_during_the_baseline_is_left_out() -> None:
    # Heart rate valid in one update of the baseline only (a dark, compressed face): a later valid
    # reading must not be scored against that single value.
    sc = AbnormalScorer(baseline_s=10.0)
    for k in range(30):
        t = float(k)
        hr = 70.0 if k == 8 else (80.0 if k >= 20 else None)
        r = sc.update(t, {"hr_bpm": hr, "rr_bpm": 14.0 + 0.2 * np.sin(k), "blink_per_min": 15.0})
        if t >= 20:
            assert r.score is not None and r.score < 0.2
            assert "hr_bpm_z" not in r.evidence
    assert "hr_bpm" not in sc.baseline() and "rr_bpm" in sc.baseline()


def test_ear_signal_from_mesh_landmarks() -> None:
    from agent.vision.blink import MESH_LEFT_EYE, MESH_RIGHT_EYE, EarSignal

    def mesh(openness: float) -> np.ndarray:
        lm = np.zeros((468, 3))
        eye = np.array([[0, 0], [3, -2], [7, -2], [10, 0], [7, 2], [3, 2]], float) * np.array([1.0, openness])
        for idx, dx in ((MESH_RIGHT_EYE, 0.0), (MESH_LEFT_EYE, 30.0)):
            lm[list(idx), :2] = eye + np.array([dx, 0.0])
        return lm

    sig = EarSignal(FPS)
    opened = [sig.update(mesh(1.0)) for _ in range(20)]
    assert abs(opened[-1]) < 1e-9
    assert sig.update(mesh(0.15)) > 0.8


def test_abnormal_fusion_is_signed_and_clipped() -> None:
    # Why signed: a calm person's cues wander both ways, a tense person's all rise.  A heart rate
    # 6 bpm up scores lower when breathing slowed at the same time than when it stayed put, and a
    # wild heart-rate reading counts no more than Z_MAX (its evidence keeps the real z).
    from agent.vision.abnormal import Z_MAX

    def final(hr_delta: float, rr_delta: float) -> tuple[float, dict[str, float]]:
        rng = np.random.default_rng(1)
        sc = AbnormalScorer(baseline_s=10.0)
        r = None
        for k in range(16):
            late = k >= 12
            r = sc.update(float(k), {"hr_bpm": 70 + rng.normal(0, 1) + (hr_delta if late else 0),
                                     "rr_bpm": 14 + rng.normal(0, 0.3) + (rr_delta if late else 0),
                                     "blink_per_min": 15.0})
        assert r is not None and r.score is not None
        return r.score, r.evidence

    up_alone, _ = final(6.0, 0.0)
    up_with_slower_breathing, _ = final(6.0, -3.0)
    assert up_with_slower_breathing < up_alone
    wild, ev = final(80.0, 0.0)
    huge, _ = final(400.0, 0.0)
    assert ev["hr_bpm_z"] > 2 * Z_MAX and wild == huge
