"""The handheld's close measurement: confirm or clear, with nuclide, dose rate and activity.

Why three tests together: the shape test (agent.analysis.dwell_test) says whether the dwell
spectrum is more than a scaled natural background; identification (agent.spectral) says what it
is; a NORM-only identification (K-40, Ra-226, Th-232 chains) clears the alarm even when the shape
differs (a fertiliser store has more K-40 than the operator's post), while anything else confirms.
A shape excess that nothing in the library explains is confirmed too, as "unidentified": an
operator would rather re-check than walk away.

Activity: the unshielded-equivalent activity A = (net H*(10) rate) d^2 / Gamma of the identified
nuclide at the handheld-to-source distance d, with Gamma the H*(10) rate constant (uSv m2/(MBq h),
computed from ICRP 74 and the line yields: embedded in agent/spectral/data).  Cargo shielding makes
it an underestimate at the true distance; the distance itself comes from the fused source
estimate, so its error (metres, at a standoff of about one metre) dominates: an order of magnitude.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from agent.analysis.dwell_test import dwell_test
from agent.hal.interfaces import EnergyCalibration, SpectrumReading


@dataclass(frozen=True, slots=True)
class HandheldVerdict:
    confirmed: bool
    reason: str
    shape_sigma: float
    gross_sigma: float
    nuclides: tuple[tuple[str, float], ...]  # (name, confidence)
    dose_rate_usv_h: float | None  # mean H*(10) rate over the dwell (spectral)
    net_dose_rate_usv_h: float | None
    activity_mbq: float | None  # unshielded-equivalent at the estimated distance
    activity_nuclide: str | None


@functools.lru_cache(maxsize=1)
def _gamma_constants() -> dict[str, float]:
    from agent.spectral.library import read_data_csv

    return {r["source"]: float(r["hstar10_rate_constant_uSv_m2_per_MBq_h"]) for r in read_data_csv(
        "dose_rate_constants.csv")}


def _reading(counts: np.ndarray, live_s: float, calibration: EnergyCalibration, model: str) -> SpectrumReading:
    return SpectrumReading(counts=np.rint(counts).astype(np.int64), live_time_s=live_s, real_time_s=live_s,
                           calibration=calibration, t_utc=datetime.now(UTC), t_mono_s=0.0, detector_model=model)


def judge_dwell(dwell_counts: np.ndarray, dwell_live_s: float, bg_counts: np.ndarray, bg_live_s: float,
                calibration: EnergyCalibration, detector_model: str, distance_m: float | None,
                confirm_sigma: float = 5.0) -> HandheldVerdict:
    from agent.spectral.identify import NORM_SOURCES
    from agent.spectral.pipeline import SpectrumPipeline

    energy = calibration.energy_kev(np.arange(dwell_counts.size))
    shape = dwell_test(dwell_counts, dwell_live_s, bg_counts, bg_live_s, energy, confirm_sigma=confirm_sigma)
    dwell = _reading(dwell_counts, dwell_live_s, calibration, detector_model)
    background = _reading(bg_counts, bg_live_s, calibration, detector_model)
    pipe = SpectrumPipeline(min_background_s=min(30.0, bg_live_s))
    pipe.set_background(background)
    ident = pipe.identify_sum(dwell.counts, dwell_live_s, dwell)
    # A nuclide is reported only when its own likelihood-ratio significance reaches confirm_sigma:
    # a changed NORM mix (more K-40 than at the operator's post) alters the low-energy scattered
    # continuum, which the identifier can misread as a weak low-energy emitter (Tl-201, Tc-99m,
    # U-235 seen at 0-4 sigma in tests), while real sources at a few metres are at 15-130 sigma.
    nuclides = tuple((n.name, float(n.confidence)) for n in ident.nuclides if n.significance >= confirm_sigma)
    dose = pipe.dose_rate_usv_h(dwell)
    dose_bg = pipe.dose_rate_usv_h(background)
    net = None if dose is None or dose_bg is None else max(dose - dose_bg, 0.0)
    man_made = [(n, c) for n, c in nuclides if n not in NORM_SOURCES]
    activity = nuclide = None
    if man_made and net is not None and distance_m is not None:
        nuclide = man_made[0][0]
        gamma = _gamma_constants().get(nuclide)
        if gamma:
            activity = net * max(distance_m, 0.3) ** 2 / gamma
    if not shape.confirmed:
        confirmed, reason = False, shape.reason
    elif man_made:
        confirmed = True
        reason = "identified " + ", ".join(f"{n} ({c:.0%})" for n, c in man_made) + f"; {shape.reason}"
    elif nuclides:
        confirmed = False
        reason = "natural radioactivity: " + ", ".join(n for n, _ in nuclides) + f"; {shape.reason}"
    else:
        confirmed, reason = True, f"unidentified anomaly; {shape.reason}"
    return HandheldVerdict(confirmed=confirmed, reason=reason, shape_sigma=shape.shape_sigma,
                           gross_sigma=shape.gross_sigma, nuclides=nuclides, dose_rate_usv_h=dose,
                           net_dose_rate_usv_h=net, activity_mbq=activity, activity_nuclide=nuclide)
