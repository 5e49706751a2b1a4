"""The benchmark's peer baseline: whole-clip POS as rPPG-Toolbox computes it (cedge.bench.peer_pos)."""

from __future__ import annotations

import numpy as np
from vision_synth import face_frames, rgb_trace

from cedge.bench.peer_pos import PeerPosCollector, detrend, hr_fft_bpm, peer_pos_hr_bpm, pos_wang

FPS = 30.0


def test_pos_cancels_a_pure_intensity_change_and_keeps_the_pulse() -> None:
    n = 600
    t = np.arange(n) / FPS
    flicker = (1.0 + 0.05 * np.sin(2 * np.pi * 1.3 * t))[:, None] * np.array([180.0, 120.0, 100.0])
    assert np.std(pos_wang(flicker, FPS)) < 1e-9  # along [1, 1, 1] after temporal normalisation
    rgb = rgb_trace(n, FPS, hr_bpm=84.0, amp=0.003, flicker=0.05, seed=2)
    assert abs(peer_pos_hr_bpm(rgb, FPS) - 84.0) < 2.0  # FFT bins of 30/1024 Hz = 1.76 bpm


def test_detrend_removes_a_slow_drift_and_keeps_the_pulse() -> None:
    t = np.arange(900) / FPS
    pulse = np.sin(2 * np.pi * 1.2 * t)
    out = detrend(pulse + 3.0 * t / t[-1])
    assert abs(np.polyfit(t, out, 1)[0]) < 0.01
    assert np.corrcoef(out, pulse)[0, 1] > 0.99
    assert abs(hr_fft_bpm(out, FPS) - 72.0) < 1.0


def test_collector_finds_the_face_and_reads_the_rate_from_frames() -> None:
    peer = PeerPosCollector()
    first_box = None
    for frame, _ in face_frames(600, FPS, hr_bpm=66.0, pulse_amp=0.004, seed=4):
        peer.add(frame)
        first_box = first_box or peer.static_box
    assert peer.box is not None and peer.box[2] > 60  # the Haar face, enlarged 1.5x
    assert peer.static_box == first_box  # the toolbox default: one detection for the whole clip
    assert len(peer.rgb) == len(peer.rgb_static) == 600
    hr = peer.hr_bpm(FPS)
    assert hr is not None and abs(hr - 66.0) < 2.0
    assert peer.hr_bpm(FPS, static=False) is not None  # the re-detected box variant is read too
    assert PeerPosCollector().hr_bpm(FPS) is None  # no frames: no rate
