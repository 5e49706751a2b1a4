"""Inter-beat intervals: one series from overlapping windows, artefacts, and scoring against truth."""

from __future__ import annotations

import numpy as np
import pytest

from agent.vision.beats import BeatTrain, score_ibis


def _true_beats(duration_s: float = 40.0, hr_bpm: float = 72.0, rsa_bpm: float = 4.0) -> np.ndarray:
    """Beats of a heart rate with respiratory sinus arrhythmia at 0.25 Hz (integral pulse frequency model)."""
    t = np.arange(0.0, duration_s, 0.001)
    phase = np.cumsum((hr_bpm + 0.5 * rsa_bpm * np.sin(2 * np.pi * 0.25 * t)) / 60.0) * 0.001
    return np.interp(np.arange(1, int(phase[-1])), phase, t)


def _feed(train: BeatTrain, beats: np.ndarray, t_ends: np.ndarray, jitter_s: float = 0.0,
          window_s: float = 20.0, seed: int = 0) -> list[tuple[float, float]]:
    """One analysis window per update: its beats re-found with fresh timing noise each time."""
    rng = np.random.default_rng(seed)
    out = []
    for t_end in t_ends:
        t0 = max(0.0, t_end - window_s)
        b = beats[(beats >= t0) & (beats <= t_end)]
        out += train.add(t0, t_end, b + rng.normal(0.0, jitter_s, b.size), 72.0)
    return out


def test_each_interval_is_reported_once_from_overlapping_windows() -> None:
    beats = _true_beats()
    train = BeatTrain()
    got = _feed(train, beats, np.arange(6.0, 40.0, 1.0), jitter_s=0.005)
    t = np.array([g[0] for g in got])
    assert np.all(np.diff(t) > 0.4)  # no beat twice
    inside = beats[(beats >= 1.0) & (beats <= 39.0 - 1.0)]
    assert len(got) >= inside.size - 2  # every interval from the first window's interior on
    j = np.argmin(np.abs(t[:, None] - beats[None, :]), axis=1)
    true_ms = 1000.0 * (beats[j] - beats[j - 1])
    err = np.abs(np.array([g[1] for g in got]) - true_ms)
    assert err.max() < 30.0 and err.mean() < 10.0  # 5 ms timing noise on each of two beats
    assert train.since(t[-3]) == got[-2:]


def test_intervals_never_span_a_stretch_without_a_valid_pulse() -> None:
    beats = _true_beats()
    train = BeatTrain()
    first = _feed(train, beats, np.arange(6.0, 15.0, 1.0))
    # no valid window from 15 to 30 s, then windows of the last 6 s only (a new short track span)
    second = _feed(train, beats, np.arange(30.0, 36.0, 1.0), window_s=6.0)
    assert first and second
    assert second[0][0] > 24.0 + 1.0  # starts inside the first new window, not back at 14 s
    assert all(600.0 < ms < 1100.0 for _, ms in first + second)


def test_a_missed_beat_is_an_artefact_not_a_long_interval() -> None:
    beats = _true_beats()
    missing = np.delete(beats, 15)  # one beat lost at ~12.5 s in every window
    train = BeatTrain()
    got = _feed(train, missing, np.arange(6.0, 30.0, 1.0))
    assert train.artefacts == 1
    assert max(ms for _, ms in got) < 1.3 * 60_000.0 / 72.0


def test_score_matches_intervals_after_the_pulse_transit_delay() -> None:
    beats = _true_beats()
    detected = [(float(b + 0.18), round(1000.0 * float(b - a), 1))
                for a, b in zip(beats[:-1], beats[1:], strict=True)]
    s = score_ibis(detected[5:30], beats, 0.0, 40.0)
    assert s["n_matched"] == 25 and max(s["abs_err_ms"]) < 0.1
    assert s["rmssd_ms"] == pytest.approx(s["rmssd_true_ms"], abs=0.1) and s["rmssd_ms"] > 5.0
    # a false interval in the middle of nowhere is not matched
    s2 = score_ibis(detected[5:30] + [(float(beats[40] + 0.18 + 0.4), 800.0)], beats, 0.0, 40.0)
    assert s2["n_reported"] == 26 and s2["n_matched"] == 25 and len(s2["abs_err_ms"]) == 25
    assert score_ibis([], beats, 0.0, 40.0)["n_matched"] == 0
