"""Real finger-PPG recordings as the simulated face's pulse (hal_sim.face.real_ppg).

The recordings come from the ``heartpy`` package (an optional dependency of the simulator, in the
``sim`` extra); without it these tests are skipped, saying so.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("heartpy", reason="real-PPG pulses read heartpy's example recordings (pip install heartpy)")

from hal_sim.face import ClipSpec, render_clip  # noqa: E402
from hal_sim.face.real_ppg import (  # noqa: E402
    SPLIT,
    draw_real_pulse,
    segments,
    stretch_segment,
)

GRID_HZ = 100.0


def _spectrum(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    n = 1 << 17
    f = np.fft.rfftfreq(n, 1.0 / fs)
    return f, np.abs(np.fft.rfft((x - x.mean()) * np.hanning(x.size), n)) ** 2


def _band_power(f: np.ndarray, p: np.ndarray, centre_hz: float, half_hz: float) -> float:
    return float(p[np.abs(f - centre_hz) <= half_hz].sum())


def test_tuning_and_benchmark_segments_share_no_source_sample() -> None:
    tune, bench = segments("tune"), segments("bench")
    assert len(tune) >= 3 and len(bench) >= 3
    for a in tune:
        for b in bench:
            if a.recording == b.recording:
                assert a.end_s <= b.start_s or b.end_s <= a.start_s, (a, b)
    # and the split's own spans are disjoint
    spans = [(name, lo, hi, s) for s, parts in SPLIT.items() for name, lo, hi in parts]
    for i, (n1, lo1, hi1, s1) in enumerate(spans):
        for n2, lo2, hi2, s2 in spans[i + 1:]:
            if n1 == n2 and s1 != s2:
                assert hi1 <= lo2 or hi2 <= lo1
    # every drawn pulse reads its samples inside its own set's segments
    for set_name, segs in (("tune", tune), ("bench", bench)):
        for seed in range(6):
            info = draw_real_pulse(set_name, np.random.default_rng(seed), 33.0).info
            assert any(s.recording == info["recording"] and s.start_s - 1e-6 <= info["source_start_s"]
                       and info["source_end_s"] <= s.end_s + 1e-6 for s in segs), info


@pytest.mark.parametrize("target", [55.0, 90.0, 130.0])
def test_stretched_pulse_has_the_target_mean_rate(target: float) -> None:
    pulse = draw_real_pulse("tune", np.random.default_rng(int(target)), 33.0, target_hr_bpm=target)
    b = pulse.beat_times_s[(pulse.beat_times_s >= 0) & (pulse.beat_times_s <= 33.0)]
    rate = 60.0 * (b.size - 1) / (b[-1] - b[0])
    assert abs(rate - target) < 0.04 * target  # the segment's mean, up to the rate drift inside it
    # the pulse itself beats at that rate: a strong lobe at the rate (its harmonic may be as
    # strong: that is what real pulses do to a highest-peak rule)
    f, p = _spectrum(pulse.pulse, GRID_HZ)
    band = (f > 0.6) & (f < 4.0)
    near = np.abs(60.0 * f - rate) < 0.12 * rate
    assert p[near].max() > 0.25 * p[band].max()
    # beat-to-beat variability is kept (a resting heart's interval varies by a few per cent)
    ibi = np.diff(b)
    assert 0.01 < ibi.std() / ibi.mean() < 0.2


def test_stretching_keeps_the_harmonics_and_the_beat_shape() -> None:
    seg = max(segments("tune"), key=lambda s: s.length_s)
    slow = stretch_segment(seg, 0.0, 0.8 * seg.mean_hr_bpm, 30.0)
    fast = stretch_segment(seg, 0.0, 1.3 * seg.mean_hr_bpm, 30.0)
    ratios = []
    for pulse in (slow, fast):
        f0 = pulse.info["target_hr_bpm"] / 60.0
        f, p = _spectrum(pulse.pulse, GRID_HZ)
        ratios.append(_band_power(f, p, 2 * f0, 0.3 * f0) / _band_power(f, p, f0, 0.15 * f0))
    # a real pulse is far from a sinusoid: its first harmonic carries a tenth or more of the
    # fundamental's power, and stretching the time axis does not change that ratio
    assert min(ratios) > 0.1
    assert abs(ratios[0] - ratios[1]) < 0.3 * max(ratios)
    # the mean beat (systolic upstroke, notch, diastolic wave) keeps its shape
    shapes = []
    for pulse in (slow, fast):
        b = pulse.beat_times_s[(pulse.beat_times_s > 1) & (pulse.beat_times_s < 29)]
        t = np.arange(pulse.pulse.size) / GRID_HZ
        beats = [np.interp(b0 + np.linspace(0, 1, 64, endpoint=False) * (b1 - b0), t, pulse.pulse)
                 for b0, b1 in zip(b[:-1], b[1:], strict=True)]
        shapes.append(np.mean(beats, axis=0))
    assert np.corrcoef(*shapes)[0, 1] > 0.95
    assert abs(np.median([np.ptp(pulse.pulse[int(a * GRID_HZ):int(c * GRID_HZ)]) for a, c in
                          zip(slow.beat_times_s[2:12], slow.beat_times_s[3:13], strict=True)]) - 1.0) < 0.1


def test_breathing_is_stretched_with_the_heart() -> None:
    seg = max(segments("bench"), key=lambda s: s.length_s)
    slow = stretch_segment(seg, 0.0, 0.7 * seg.mean_hr_bpm, 20.0)
    fast = stretch_segment(seg, 0.0, 1.4 * seg.mean_hr_bpm, 10.0)
    # the same source seconds, read twice as fast: the wander (and the beats) follow one time axis
    t = np.arange(fast.wander.size) / GRID_HZ
    np.testing.assert_allclose(np.interp(2.0 * t, np.arange(slow.wander.size) / GRID_HZ, slow.wander)
                               * np.ptp(fast.wander), fast.wander * np.ptp(slow.wander[: 2 * t.size]), atol=0.05)
    np.testing.assert_allclose(slow.beat_times_s[:10] / 2.0, fast.beat_times_s[:10], atol=1e-9)


def test_a_real_pulse_clip_keeps_the_parametric_scene_and_its_truth() -> None:
    real = render_clip(ClipSpec(duration_s=10.0, pulse_source="real-tune", base_hr_bpm=70.0), seed=4)
    param = render_clip(ClipSpec(duration_s=10.0, base_hr_bpm=70.0), seed=4)
    pr, pp = real.truth.people[0], param.truth.people[0]
    info = real.truth.conditions["real_ppg"][0]
    assert info["target_hr_bpm"] == 70.0 and real.truth.conditions["pulse_source"] == "real-tune"
    # only the heart differs: breathing, blinks, face boxes are those of the parametric twin
    np.testing.assert_array_equal(pr.rr_bpm, pp.rr_bpm)
    assert pr.blink_intervals_s == pp.blink_intervals_s
    np.testing.assert_allclose(pr.face_box, pp.face_box, atol=0.5)  # the heartbeat's head micro-motion
    # truth is self-consistent: beats, instantaneous rate and the skin's blood volume
    assert abs(pr.mean_hr_from_beats_bpm() - float(np.mean(pr.hr_bpm))) < 3.0
    assert abs(float(np.mean(pr.hr_bpm)) - 70.0) < 5.0
    assert np.ptp(pr.bvp) > 0.8 and not np.allclose(pr.bvp, pp.bvp, atol=0.05)
    with pytest.raises(ValueError, match="episodes"):
        ClipSpec(pulse_source="real-bench", episodes=[(1.0, 2.0, "tense")]).validate()
    with pytest.raises(ValueError, match="pulse_source"):
        ClipSpec(pulse_source="recorded").validate()
