"""Compile the spectral hot paths before a unit goes live.

Why: the numba kernels (peak search, non-negative fits, NMF, the anomaly statistic) compile on
first use, and ``cache=True`` only helps from the second process start on.  On a fresh install a
cold compile of the whole pipeline takes 5-7 s on one idle core, and several times that on a busy
2-core box.  If that happens at the first spectrum, or worse at the first alarm, the main loop
stalls, readings pile up, and the software watchdog ends the process as hung.  So the runtime runs
the same code paths once on a synthetic spectrum *before* it starts acquisition and the watchdog.

The synthetic spectrum only needs the right types and shapes (numba specialises on types, not
values): an exponential continuum with K-40 and Cs-137 peaks, Poisson-sampled with a fixed seed.
Nothing from the warm-up leaves the process.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import numpy as np

from agent.hal.interfaces import EnergyCalibration, SpectrumReading

log = logging.getLogger(__name__)

_N_CHANNELS = 1024
_CALIBRATION = EnergyCalibration.from_linear(0.0, 3.0)


def _synthetic(rng: np.random.Generator, model: str, t_mono_s: float, cs137_cps: float = 0.0,
               live_s: float = 1.0) -> SpectrumReading:
    energy_kev = _CALIBRATION.energy_kev(np.arange(_N_CHANNELS))
    rate = 400.0 * np.exp(-energy_kev / 250.0) / 30.0 + 0.05
    for e_kev, cps, fwhm_kev in ((1460.8, 8.0, 85.0), (661.7, cs137_cps, 47.0)):
        sigma = fwhm_kev / 2.3548
        rate = rate + cps * 3.0 / (sigma * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((energy_kev - e_kev) / sigma) ** 2)
    counts = rng.poisson(rate * live_s).astype(float)
    return SpectrumReading(counts=counts, live_time_s=live_s, real_time_s=live_s, calibration=_CALIBRATION,
                           t_utc=datetime.now(UTC), t_mono_s=t_mono_s, detector_model=model)


def synthetic_pass(model: str = "NaI 2x4x16 in log") -> list:
    """A short mobile search on synthetic spectra: 20 s of training, then a 3 s Cs-137 pass; returns
    the alarms (one, naming Cs-137, when the whole alarm path ran)."""
    from agent.analysis.episode import Interval
    from agent.analysis.spectral_search import SpectralSearch

    rng = np.random.default_rng(0)
    search = SpectralSearch(far_per_hour=1.0, training_s=20.0, holdoff_s=0.0)
    alarms = []
    for k in range(40):
        src = 300.0 if 28 <= k < 31 else 0.0
        reading = _synthetic(rng, model, float(k), src)
        iv = Interval(t_mono_s=float(k), t_utc="2000-01-01T00:00:00Z", live_time_s=1.0,
                      gross_counts=int(reading.counts.sum()), x_m=float(k), y_m=0.0, z_m=1.5)
        _, alarm = search.update(reading, iv, suspect=False)
        if alarm is not None:
            alarms.append(alarm)
    last = search.flush()
    return alarms if last is None else [*alarms, last]


def warm_up_mobile(model: str = "NaI 2x4x16 in log") -> float:
    """Run :func:`synthetic_pass` (training, per-second analysis, alarm identification); seconds."""
    t0 = time.perf_counter()
    synthetic_pass(model)
    return time.perf_counter() - t0


def warm_up_dwell(model: str = "NaI 2x2 in") -> float:
    """Run the handheld verdict on a synthetic dwell against a synthetic background; returns seconds."""
    from agent.analysis.handheld_verdict import judge_dwell

    t0 = time.perf_counter()
    rng = np.random.default_rng(1)
    bg = _synthetic(rng, model, 0.0, live_s=60.0)
    dwell = _synthetic(rng, model, 60.0, cs137_cps=50.0, live_s=30.0)
    judge_dwell(dwell.counts, 30.0, bg.counts, 60.0, _CALIBRATION, model, 2.0)
    return time.perf_counter() - t0
