"""Peak confirmation of secondary nuclides: a second source is named only if its own lines are seen.

Why: the full-spectrum fit (agent.spectral.identify) explains *every* count, so with a strong source
the few-per-cent mismatch of its template (a shield thickness between the template variants, cargo
scatter the variants do not span) can be absorbed by a second library source whose lines sit in the
mismatched region -- the classic case is Cs-134 (605, 796 keV) "found" next to a strong Cs-137
behind steel, whose small-angle scatter fills the shoulder below 662 keV.  Statistical significance
does not protect against this: at 10^5-10^6 counts any systematic misfit is "significant".

The rule, as in peak-based confirmation of RIIDs (ANSI N42.34 asks for the identification to rest
on the characteristic lines): for every reported nuclide after the first, take its *distinctive*
lines -- yield at least ``min_rel_yield`` of its strongest line, inside the analysed energy range,
and more than ``separation_fwhm`` FWHM away from every significant line of the other reported
nuclides.  At least one of them must be found by the matched-filter peak search (SNR >=
``min_snr``) within half a FWHM.  A nuclide with no distinctive line (all its lines coincide with
the others') cannot be checked this way and is kept.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.detector import DetectorModel
from agent.spectral.library import NuclideLibrary
from agent.spectral.peaks import Peak, peak_search_for


def distinctive_lines_kev(name: str, others: Sequence[str], library: NuclideLibrary, model: DetectorModel,
                          e_min_kev: float, e_max_kev: float, min_rel_yield: float = 0.3,
                          separation_fwhm: float = 2.0, other_rel_yield: float = 0.05) -> np.ndarray:
    """Energies of ``name``'s strong lines that no line of ``others`` could be mistaken for.

    Read-only array; the answer depends only on the arguments (library and model are frozen), so it is
    cached: the identifier asks the same few questions for every spectrum (issue 13).
    """
    return _distinctive_lines_kev(name, tuple(others), library, model, float(e_min_kev), float(e_max_kev),
                                  float(min_rel_yield), float(separation_fwhm), float(other_rel_yield))


@functools.lru_cache(maxsize=4096)
def _distinctive_lines_kev(name: str, others: tuple[str, ...], library: NuclideLibrary, model: DetectorModel,
                           e_min_kev: float, e_max_kev: float, min_rel_yield: float, separation_fwhm: float,
                           other_rel_yield: float) -> np.ndarray:
    out = _distinctive_uncached(name, others, library, model, e_min_kev, e_max_kev, min_rel_yield,
                                separation_fwhm, other_rel_yield)
    out.setflags(write=False)
    return out


def _distinctive_uncached(name: str, others: tuple[str, ...], library: NuclideLibrary, model: DetectorModel,
                          e_min_kev: float, e_max_kev: float, min_rel_yield: float, separation_fwhm: float,
                          other_rel_yield: float) -> np.ndarray:
    src = library[name]
    strong = src.yields >= min_rel_yield * src.yields.max()
    e = src.energies_kev[strong & (src.energies_kev >= e_min_kev) & (src.energies_kev <= e_max_kev)]
    if e.size == 0 or not others:
        return e.copy()
    other_e = np.concatenate([
        library[o].energies_kev[library[o].yields >= other_rel_yield * library[o].yields.max()] for o in others
    ])
    if other_e.size == 0:
        return e.copy()
    gap = np.abs(e[:, None] - other_e[None, :]).min(axis=1)
    return e[gap > separation_fwhm * np.asarray(model.fwhm_kev(e))]


def unconfirmed_secondaries(names: Sequence[str], counts: np.ndarray, calibration: EnergyCalibration,
                            model: DetectorModel, library: NuclideLibrary, e_min_kev: float,
                            e_max_kev: float, min_snr: float = 3.0,
                            filtered: tuple[np.ndarray, np.ndarray] | None = None) -> list[str]:
    """The nuclides after the first in ``names`` whose distinctive lines show no peak in ``counts``.

    ``filtered``: the peak filter's output for ``counts`` if the caller has it (``PeakSearch.filter``).
    """
    if len(names) < 2:
        return []
    peaks: list[Peak] | None = None
    dropped: list[str] = []
    for i, name in enumerate(names[1:], start=1):
        others = [n for j, n in enumerate(names) if j != i]
        lines = distinctive_lines_kev(name, others, library, model, e_min_kev, e_max_kev)
        if lines.size == 0:
            continue
        if peaks is None:
            search = peak_search_for(calibration, model, counts.size)
            peaks = search.find(np.asarray(counts, dtype=float), min_snr=min_snr, min_energy_kev=e_min_kev,
                                filtered=filtered)
        found = np.array([p.energy_kev for p in peaks])
        half = 0.5 * np.asarray(model.fwhm_kev(lines))
        if found.size == 0 or not np.any(np.abs(lines[:, None] - found[None, :]).min(axis=1) <= half):
            dropped.append(name)
    return dropped
