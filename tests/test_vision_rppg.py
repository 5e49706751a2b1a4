"""rPPG methods (POS, CHROM, GREEN) and the pulse analysis on synthetic colour traces."""

from __future__ import annotations

import numpy as np
import pytest
from vision_synth import rgb_trace

from agent.vision.errors import VisionInputError
from agent.vision.pulse import (
    beat_rate_bpm,
    beat_times,
    estimate_pulse,
    power_spectrum,
    snr_db,
    spectral_peak_hz,
)
from agent.vision.rppg import bandpass, chrom, green, pos, pulse_signal

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
