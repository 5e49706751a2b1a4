"""rPPG methods (POS, CHROM, GREEN) and the pulse analysis on synthetic colour traces."""

from __future__ import annotations

import numpy as np
import pytest
from vision_synth import rgb_trace

from agent.vision.errors import VisionInputError
from agent.vision.pipeline import CameraPipeline, PipelineConfig
from agent.vision.pulse import (
    PulseEstimate,
    PulseGate,
    beat_rate_bpm,
    beat_times,
    estimate_pulse,
    fundamental_hz,
    power_spectrum,
    projections_agree,
    snr_db,
    snr_threshold_db,
    spectral_peak_hz,
)
from agent.vision.rppg import bandpass, chrom, distance_ppg, green, pos, pulse_signal

FPS = 30.0


@pytest.mark.parametrize("method", ["pos", "chrom", "green"])
@pytest.mark.parametrize("hr", [52.0, 75.0, 118.0])
def test_methods_recover_heart_rate(method: str, hr: float) -> None:
    est = estimate_pulse(pulse_signal(rgb_trace(450, FPS, hr, seed=int(hr)), FPS, method), FPS)
    assert est.valid
    assert est.hr_bpm is not None and abs(est.hr_bpm - hr) < 1.0


def test_pos_cancels_intensity_flicker_that_breaks_green() -> None:
    # 3 % intensity flicker at 1.3 Hz (78 bpm) against a 0.3 % pulse at 60 bpm
    rgb = rgb_trace(450, FPS, 60.0, flicker=0.03, seed=3)
    e_pos = estimate_pulse(pulse_signal(rgb, FPS, "pos"), FPS)
    e_green = estimate_pulse(pulse_signal(rgb, FPS, "green"), FPS, threshold_db=-np.inf)
    assert e_pos.hr_bpm is not None and abs(e_pos.hr_bpm - 60.0) < 1.0
    assert abs(e_green.raw_hr_bpm - 78.0) < 2.0  # GREEN locks onto the flicker


def test_no_pulse_gives_no_valid_estimate() -> None:
    rgb = rgb_trace(600, FPS, 70.0, amp=0.0, noise=0.001, seed=5)
    est = estimate_pulse(pulse_signal(rgb, FPS, "pos"), FPS)
    assert not est.valid and est.hr_bpm is None
    assert est.quality < 0.5


def test_outputs_have_input_length_and_zero_mean() -> None:
    rgb = rgb_trace(300, FPS, 70.0)
    for fn in (pos, chrom, green):
        out = fn(rgb, FPS)
        assert out.shape == (300,)
        assert abs(out.mean()) < 0.1 * out.std()


def test_bad_inputs_are_named() -> None:
    with pytest.raises(VisionInputError, match="shape"):
        pos(np.ones((100, 4)), FPS)
    with pytest.raises(VisionInputError, match="NaN"):
        bad = rgb_trace(100)
        bad[5, 1] = np.nan
        pos(bad, FPS)
    with pytest.raises(VisionInputError, match="unknown rPPG method"):
        pulse_signal(rgb_trace(100), FPS, "ica")
    with pytest.raises(VisionInputError, match="need >="):
        estimate_pulse(np.zeros(20), FPS)


def test_spectral_peak_interpolation_is_sub_bin() -> None:
    f_true = 1.234
    t = np.arange(300) / FPS
    freqs, power = power_spectrum(np.sin(2 * np.pi * f_true * t), FPS)
    f = spectral_peak_hz(freqs, power, (0.7, 4.0))
    assert abs(f - f_true) < 0.005  # 0.3 bpm, far below the 0.1 Hz raw resolution of 10 s
    assert snr_db(freqs, power, f) > 8.0


def test_beats_and_beat_rate_follow_a_varying_rate() -> None:
    # rate ramps 60 -> 80 bpm: the mean beat rate is the mean instantaneous rate (70)
    t = np.arange(int(20 * FPS)) / FPS
    rate_hz = (60.0 + 20.0 * t / t[-1]) / 60.0
    phase = np.cumsum(rate_hz) / FPS
    x = bandpass(np.sin(2 * np.pi * phase), FPS)
    b = beat_times(x, FPS, 70.0)
    assert abs(b.size - np.floor(phase[-1] - phase[0])) <= 1
    assert abs(beat_rate_bpm(b) - 70.0) < 1.5
    ibi = np.diff(b)
    assert ibi[0] > ibi[-1]  # intervals shorten as the rate rises


# ---------------------------------------------------------------- DistancePPG patch weighting
def _patches(seed: int, n_pulse: int, n_noise: int, hr: float = 66.0, n: int = 600) -> np.ndarray:
    """(n, patches, 3): ``n_pulse`` clean pulsing patches, then ``n_noise`` noisy ones without pulse."""
    good = [rgb_trace(n, FPS, hr, amp=0.003, noise=0.001, seed=100 * seed + i) for i in range(n_pulse)]
    bad = [rgb_trace(n, FPS, hr, amp=0.0, noise=0.006, seed=100 * seed + 50 + i) for i in range(n_noise)]
    return np.stack(good + bad, axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_distance_ppg_recovers_the_pulse_when_most_patches_are_noise(seed: int) -> None:
    p = _patches(seed, n_pulse=4, n_noise=8)
    plain = pulse_signal(p.mean(axis=1), FPS)  # POS on the mean colour: the noisy patches swamp it
    combined, w = distance_ppg(p, FPS, plain)
    e_plain, e_mrc = estimate_pulse(plain, FPS), estimate_pulse(combined, FPS)
    assert not e_plain.valid
    assert e_mrc.valid and e_mrc.hr_bpm is not None and abs(e_mrc.hr_bpm - 66.0) < 1.0
    assert e_mrc.snr_db > e_plain.snr_db + 6.0
    assert w.shape == (12,) and abs(w.sum() - 1.0) < 1e-9 and w[:4].sum() > 0.9


def test_distance_ppg_does_not_make_a_pulse_out_of_noise() -> None:
    snr = []
    for seed in range(20):
        p = np.stack([rgb_trace(600, FPS, 70.0, amp=0.0, noise=0.002, seed=1000 * seed + i) for i in range(12)], 1)
        combined, w = distance_ppg(p, FPS, pulse_signal(p.mean(axis=1), FPS))
        assert np.all(np.isfinite(combined)) and np.all(w >= 0)
        snr.append(estimate_pulse(combined, FPS).snr_db)
    thr = snr_threshold_db(20.0)
    # the weighting favours patches whose noise peaks at f0 (selection bias), hence a threshold for it
    # would have to be set on negative controls analysed the same way (the pipeline's thresholds hold
    # for patch weighting off, its default).  Against the plain 20 s threshold (0.63 dB since issue 16,
    # 1.3 dB before) 3 of these 20 noise windows come out above it -- plain noise stays mostly below
    assert sum(s >= thr for s in snr) <= 3
    assert float(np.median(snr)) < thr - 2.0


def test_distance_ppg_rejects_bad_shapes() -> None:
    with pytest.raises(VisionInputError, match="n_patches"):
        distance_ppg(np.ones((300, 3)), FPS)
    with pytest.raises(VisionInputError, match="reference"):
        distance_ppg(_patches(0, 2, 2, n=300), FPS, np.zeros(10))


def test_skin_patches_partition_the_regions() -> None:
    from vision_synth import face_frames

    from agent.vision.pipeline import CameraPipeline, PipelineConfig
    from agent.vision.skin_roi import PATCH_GRID, SkinRoi

    frame, t = next(iter(face_frames(1, FPS, hr_bpm=70.0, rr_bpm=15.0)))
    box = CameraPipeline(FPS, PipelineConfig(track_seed=1)).process(frame, t)[0].box
    with_patches = SkinRoi().sample(frame, box)
    without = SkinRoi(patch_grid={}).sample(frame, box)
    n_grid = sum(c * r for c, r in PATCH_GRID.values())
    assert with_patches.patch_rgb.shape == (n_grid, 3) and without.patch_rgb.shape == (2, 3)
    # the grid only splits the sums: the whole-region mean is unchanged
    assert np.allclose(with_patches.rgb, without.rgb, rtol=1e-6)
    ok = np.isfinite(with_patches.patch_rgb[:, 0])
    assert ok.sum() >= n_grid // 2
    assert with_patches.fraction_kept > 0.5
    # every kept patch is skin: its chromaticity is that of the whole region (brightness may differ
    # with shading)
    chroma = with_patches.patch_rgb[ok] / with_patches.patch_rgb[ok].sum(axis=1, keepdims=True)
    assert np.all(np.abs(chroma - with_patches.rgb / with_patches.rgb.sum()) < 0.04)


def test_pipeline_with_patch_weighting_measures_the_rate() -> None:
    from vision_synth import face_frames

    from agent.vision.pipeline import CameraPipeline, PipelineConfig

    pipe = CameraPipeline(FPS, PipelineConfig(track_seed=3, patch_weighting=True))
    for frame, t in face_frames(int(12 * FPS), FPS, hr_bpm=78.0, rr_bpm=16.0):
        pipe.process(frame, t)
    hist = next(iter(pipe.history().values()))
    hr = [r["heart_rate_bpm"] for r in hist if r["heart_rate_bpm"] is not None]
    assert len(hr) >= 4 and all(abs(v - 78.0) < 1.5 for v in hr)


def _phased_trace(n: int, hr_bpm: float, phase: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    p = np.sin(2 * np.pi * hr_bpm / 60.0 * t + phase)
    return np.array([180.0, 120.0, 100.0]) * (1.0 + 0.003 * np.outer(p, [0.33, 0.77, 0.53])) * (
        1.0 + 0.0002 * rng.standard_normal((n, 3)))


def test_pos_envelope_is_flat_up_to_the_window_ends() -> None:
    # The overlap-add is divided by how many windows cover each sample, so the first and last
    # 1.6 s are not tapered (a taper pulls the beats there inwards and biases the rate up).
    # (Tested on the paper's overlap-add; the per-window normalisation, on by default, scales each
    # window by the std of a non-integer number of cycles, which ripples the envelope by ~10 %.)
    out = pos(_phased_trace(600, 72.0, 0.3, seed=1), FPS, normalize=False)
    env = np.abs(out)
    mid = env[200:400].max()
    assert 0.85 * mid < env[:40].max() < 1.15 * mid
    assert 0.85 * mid < env[-40:].max() < 1.15 * mid


def test_pos_normalisation_removes_slow_amplitude_modulation() -> None:
    # A pulse whose amplitude a head movement modulates at 0.15 Hz (depth 0.8): sidebands at
    # f0 +- 0.15 Hz that, with noise, can outgrow the carrier at a low SNR.
    t = np.arange(600) / FPS
    am = 1.0 + 0.8 * np.sin(2 * np.pi * 0.15 * t)
    p = np.sin(2 * np.pi * 1.2 * t) * am
    rgb = np.array([180.0, 120.0, 100.0]) * (1.0 + 0.003 * np.outer(p, [0.33, 0.77, 0.53]))

    def sideband_to_carrier(x: np.ndarray) -> float:
        f, pw = power_spectrum(x, FPS)
        at = [float(pw[np.argmin(np.abs(f - v))]) for v in (1.05, 1.2, 1.35)]
        return (at[0] + at[2]) / at[1]

    paper = sideband_to_carrier(pos(rgb, FPS, normalize=False))
    ours = sideband_to_carrier(pos(rgb, FPS))
    assert paper > 0.2 and ours < 0.25 * paper


def test_beat_rate_from_pos_is_unbiased_at_the_window_ends() -> None:
    rng = np.random.default_rng(7)
    errs = []
    for k in range(40):
        hr = float(rng.uniform(55.0, 100.0))
        est = estimate_pulse(pulse_signal(_phased_trace(600, hr, float(rng.uniform(0, 2 * np.pi)), seed=k), FPS,
                                          "pos"), FPS)
        assert est.hr_bpm is not None
        errs.append(est.hr_bpm - hr)
    assert abs(float(np.mean(errs))) < 0.1  # +0.19 bpm before the ends were normalised
    assert float(np.mean(np.abs(errs))) < 0.3


def _est(snr_db: float, hr_bpm: float, threshold_db: float) -> PulseEstimate:
    valid = snr_db >= threshold_db
    return PulseEstimate(hr_bpm=hr_bpm if valid else None, raw_hr_bpm=hr_bpm, snr_db=snr_db, quality=0.5,
                         valid=valid)


def _run_gate(gate: PulseGate, seq: list[tuple[float, float]], full_db: float = 2.0) -> list[bool]:
    out = []
    for k, (snr, hr) in enumerate(seq):
        t = float(k)
        out.append(gate.accept(t, _est(snr, hr, gate.threshold_db(t, full_db)), full_db).valid)
    return out


def test_gate_reports_two_agreeing_updates_and_not_an_isolated_peak() -> None:
    # an isolated crossing is not reported; two in a row at the same rate are (from the second)
    assert _run_gate(PulseGate(), [(2.1, 69.0), (0.5, 69.2), (2.2, 80.0), (2.3, 95.0)]) == [False] * 4
    assert _run_gate(PulseGate(), [(2.1, 69.0), (2.2, 70.0)]) == [False, True]


def test_gate_does_not_hold_an_unconfirmed_pulse() -> None:
    # two windows just above the threshold, then weak windows at the same rate: not held
    assert _run_gate(PulseGate(), [(2.1, 69.0)] * 2 + [(0.5, 69.2)] * 5) == [False, True] + [False] * 5


def test_gate_holds_a_confirmed_pulse_while_its_rate_stays() -> None:
    gate = PulseGate()
    seq = [(4.0, 72.0)] * 4 + [(0.5, 72.5), (0.4, 73.0), (0.3, 80.0)]
    assert _run_gate(gate, seq) == [False, True, True, True, True, True, False]  # the jump is not held
    assert not gate.holding(20.0)  # and nothing is held beyond hold_s


def test_gate_never_accepts_below_the_lowered_threshold() -> None:
    assert _run_gate(PulseGate(), [(4.0, 72.0)] * 4 + [(2.0 - 1.95, 72.0)]) == [False] + [True] * 3 + [False]


def test_gate_rejects_a_window_where_the_second_projection_disagrees() -> None:
    # full-threshold windows at a steady rate, but the second projection disagrees on the second:
    # it is not reported and does not confirm the third either (no two full agreeing updates)
    gate = PulseGate()
    out = []
    for k, agrees in enumerate([True, False, True, True]):
        t = float(k)
        out.append(gate.accept(t, _est(4.0, 72.0, gate.threshold_db(t, 2.0)), 2.0, agrees=agrees).valid)
    assert out == [False, False, False, True]


def test_pipeline_needs_chrom_to_agree_with_pos(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a second projection that always puts the peak elsewhere, no pulse is ever valid."""
    from hal_sim.face import ClipSpec, render_clip

    clip = render_clip(ClipSpec(duration_s=12.0, fitzpatrick=2), 5)
    t = np.asarray(clip.truth.t_s, dtype=float)

    def run(cfg: PipelineConfig) -> list[bool]:
        pipe = CameraPipeline(clip.truth.fps, cfg)
        for k, frame in enumerate(clip.frames()):
            pipe.process(frame, float(t[k]))
        return [r["hr_valid"] for h in pipe.history().values() for r in h if r["hr_window_s"]]

    assert any(run(PipelineConfig(track_seed=5)))  # POS and CHROM agree on a clear face
    import agent.vision.rppg as rppg_mod

    def shifted(rgb: np.ndarray, fps: float, *a: object, **k: object) -> np.ndarray:
        tt = np.arange(len(rgb)) / fps
        return np.sin(2 * np.pi * 2.9 * tt)  # 174 bpm: far from any true rate here

    monkeypatch.setitem(rppg_mod.METHODS, "chrom", shifted)
    assert not any(run(PipelineConfig(track_seed=5)))
    assert any(run(PipelineConfig(track_seed=5, agree_method=None)))


# --------------------------------------------------------------------------- real pulses (issue 16)
def _harmonic_pulse(f0_hz: float, fund: float, harm: float, n: int = 600, noise: float = 0.3,
                    seed: int = 0) -> np.ndarray:
    t = np.arange(n) / FPS
    rng = np.random.default_rng(seed)
    x = fund * np.sin(2 * np.pi * f0_hz * t) + harm * np.sin(2 * np.pi * 2 * f0_hz * t + 0.7)
    return bandpass(x + noise * rng.standard_normal(n), FPS)


def test_the_fundamental_is_found_when_the_harmonic_is_the_highest_peak() -> None:
    # a real pulse often carries more power in its second harmonic than in its fundamental
    x = _harmonic_pulse(1.1, fund=0.6, harm=1.0)
    freqs, power = power_spectrum(x, FPS)
    assert abs(spectral_peak_hz(freqs, power, (0.7, 4.0)) - 2.2) < 0.05  # the highest-peak rule is fooled
    assert abs(fundamental_hz(freqs, power) - 1.1) < 0.03
    est = estimate_pulse(x, FPS)
    assert est.valid and est.hr_bpm is not None and abs(est.hr_bpm - 66.0) < 1.5


def test_snr_counts_the_harmonic_power_as_signal() -> None:
    x = _harmonic_pulse(1.1, fund=0.6, harm=1.0)
    freqs, power = power_spectrum(x, FPS)
    band = (freqs >= 0.7) & (freqs <= 4.0)
    fund = band & (np.abs(freqs - 1.1) <= 0.2)
    fund_only_db = 10 * np.log10(power[fund].sum() / power[band & ~fund].sum())
    assert snr_db(freqs, power, 1.1) > fund_only_db + 6.0  # the harmonic moved from noise to signal


def test_a_half_rate_candidate_is_not_taken_for_a_fast_pulse() -> None:
    # 132 bpm: the harmonic lies above the band, so f/2 would score the fundamental as its harmonic
    t = np.arange(600) / FPS
    rng = np.random.default_rng(3)
    x = bandpass(np.sin(2 * np.pi * 2.2 * t) + 0.4 * rng.standard_normal(600) + 0.15 * np.sin(2 * np.pi * 1.1 * t),
                 FPS)
    freqs, power = power_spectrum(x, FPS)
    assert abs(fundamental_hz(freqs, power) - 2.2) < 0.03


def test_projection_agreement_scales_with_the_spectral_peak_width() -> None:
    main = PulseEstimate(hr_bpm=80.0, raw_hr_bpm=80.0, snr_db=5.0, quality=0.8, valid=True, peak_width_bpm=12.0)
    other = PulseEstimate(hr_bpm=None, raw_hr_bpm=87.0, snr_db=1.0, quality=0.3, valid=False)
    assert not projections_agree(main, other, agree_bpm=4.0, width_factor=0.0)
    assert projections_agree(main, other, agree_bpm=4.0, width_factor=0.75)  # 9 bpm for a 12 bpm wide lobe
    assert not projections_agree(main, None)
    # the width is measured: a rate that wanders widens the lobe
    t = np.arange(600) / FPS
    steady = np.sin(2 * np.pi * 1.2 * t)
    wander = np.sin(2 * np.pi * np.cumsum(1.2 + 0.15 * np.sin(2 * np.pi * 0.25 * t)) / FPS)
    w_steady = estimate_pulse(steady, FPS).peak_width_bpm
    assert estimate_pulse(wander, FPS).peak_width_bpm > 1.3 * w_steady
