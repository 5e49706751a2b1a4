"""Counting statistics of a spectrometer: gain drift, dead time, Poisson noise.

* Gain drift: pulse height scales by g = 1 + k (T - T_ref) (k per detector, see
  :mod:`hal_sim.gamma.detectors`; NaI -0.3 %/degC). The expected spectrum is re-binned so that a
  deposit of true energy E lands at the channel of g E, with counts conserved.
* Dead time: paralyzable (extending) model, the standard description of a pulse processor with
  pile-up rejection whose busy period is extended by every pulse that arrives in it
  (Knoll 4th ed. sec. 4.VII, eq. 4.23: m = n exp(-n tau); Usman & Patil, Nucl. Eng. Technol. 50
  (2018) 1006). The live fraction is exp(-n tau); live time = real time x exp(-n tau), and each
  channel's mean is scaled by the same factor (pile-up distortion of the shape is not modelled).
* Counts: independent Poisson per channel (a thinned Poisson process stays Poisson).
"""

from __future__ import annotations

import numpy as np

from hal_sim.gamma.response_view import ChannelView


def gain_factor(gain_tc_per_degc: float, temperature_c: float | None, reference_c: float = 20.0) -> float:
    if temperature_c is None:
        return 1.0
    t = float(temperature_c)
    if not np.isfinite(t) or not (-60.0 <= t <= 90.0):
        raise ValueError(f"temperature_c must be finite and within -60..90 degC, got {temperature_c!r}")
    return max(1.0 + gain_tc_per_degc * (t - reference_c), 0.05)


def apply_gain(expected: np.ndarray, edges_kev: np.ndarray, gain: float) -> np.ndarray:
    """Re-bin so that true energy E is recorded at g E (counts conserved within the range)."""
    if gain == 1.0:
        return expected
    cum = np.concatenate(([0.0], np.cumsum(expected)))
    return np.diff(np.interp(edges_kev / gain, edges_kev, cum))


def sample(
    resp: ChannelView,
    expected_counts: np.ndarray,
    real_time_s: float,
    rng: np.random.Generator,
    temperature_c: float | None = None,
) -> tuple[np.ndarray, float]:
    exp = np.asarray(expected_counts, dtype=float)
    if exp.shape != (resp.n_channels,):
        raise ValueError(f"expected_counts must have shape ({resp.n_channels},), got {exp.shape}")
    if not np.all(np.isfinite(exp)) or np.any(exp < 0):
        raise ValueError("expected_counts must be finite and >= 0")
    rt = float(real_time_s)
    if not np.isfinite(rt) or rt <= 0:
        raise ValueError(f"real_time_s must be > 0, got {real_time_s!r}")
    spec = resp.spec
    exp = apply_gain(exp, resp.edges_kev, gain_factor(spec.gain_tc_per_degc, temperature_c,
                                                      spec.reference_temperature_c))
    n_true = float(exp.sum()) / rt
    live_frac = float(np.exp(-n_true * spec.dead_time_s))
    counts = rng.poisson(exp * live_frac).astype(np.int64)
    return counts, rt * live_frac
