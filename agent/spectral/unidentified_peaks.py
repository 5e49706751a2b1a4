"""Unidentified peaks: net peaks of a spectrum that no identified nuclide accounts for.

Why peaks, not the fit residual: a template that is a few per cent off in *shape* (a real
detector's low-energy response, cargo scatter) leaves a residual that grows with the count, so a
residual test either calls every strong known source "unknown" or misses unknown ones. A source
the library lacks shows differently: its photopeaks sit at energies where the substitute the fit
reaches for has none (Co-57's 122 keV is not Tc-99m's 140.5 keV; at 2-7 % resolution that is
several FWHM). Line *positions* are what a gain-tracked calibration gets right, so "a significant
net peak more than ``tolerance_fwhm`` from every expected feature" is the test, as RIIDs report
"unidentified lines" (ANSI N42.34 sec. 6: identification rests on the characteristic lines).

Net peaks: the zero-area matched filter of :mod:`agent.spectral.peaks` applied to the foreground
and to the expected background (the measured background scaled to the live time); their
difference over the foreground's filter noise is the net significance.

Expected features of a nuclide: its lines (>= 1 % of its strongest, inside the analysed range),
their iodine/caesium K x-ray escape peaks, their 180-degree back-scatter peaks (E / (1 + 2E/511)),
and the Pb K x-rays (72-88 keV) that shielding or the detector housing make of any source above
88 keV (Knoll, Radiation Detection and Measurement, 4th ed., sec. 10.III).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.detector import DetectorModel
from agent.spectral.library import NuclideLibrary
from agent.spectral.peaks import peak_search_for

ME_C2_KEV = 510.99895
PB_K_XRAYS_KEV = (72.8, 75.0, 84.9, 87.3)


@dataclass(frozen=True, slots=True)
class NetPeak:
    energy_kev: float
    net_snr: float
    net_counts: float


def background_response(background_counts: np.ndarray, calibration: EnergyCalibration,
                        model: DetectorModel) -> np.ndarray:
    """The matched filter's output for a background spectrum. The filter is linear, so a caller that
    analyses many spectra against one background rate computes this once and scales it by live time."""
    search = peak_search_for(calibration, model, background_counts.size)
    resp_bg, _ = search.filter(np.asarray(background_counts, dtype=float))
    return resp_bg


def net_peaks(counts: np.ndarray, background_counts: np.ndarray | None, calibration: EnergyCalibration,
              model: DetectorModel, min_snr: float, e_min_kev: float, e_max_kev: float,
              background_resp: np.ndarray | None = None,
              filtered: tuple[np.ndarray, np.ndarray] | None = None) -> list[NetPeak]:
    """Local maxima of the net matched-filter significance at or above ``min_snr``.

    ``background_resp``: :func:`background_response` of ``background_counts`` when already known;
    ``filtered``: the filter's output for ``counts`` when already known (``PeakSearch.filter``).
    """
    search = peak_search_for(calibration, model, counts.size)
    resp, snr = search.filter(np.asarray(counts, dtype=float)) if filtered is None else filtered
    sigma = np.where(snr != 0, np.abs(resp / np.where(snr != 0, snr, 1.0)), np.inf)
    if background_resp is not None:
        resp = resp - background_resp
    elif background_counts is not None:
        resp = resp - background_response(background_counts, calibration, model)
    z = resp / sigma
    e = search.energies_kev
    inner = z[1:-1]
    idx = np.flatnonzero((inner >= min_snr) & (inner >= z[:-2]) & (inner > z[2:])
                         & (e[1:-1] >= e_min_kev) & (e[1:-1] <= e_max_kev)) + 1
    out = []
    for i in idx:
        unit = search._unit[i]
        out.append(NetPeak(float(e[i]), float(z[i]), float(resp[i] / unit) if unit > 0 else 0.0))
    return out


def expected_features_kev(names: Sequence[str], library: NuclideLibrary, xray_escape_kev: float,
                          min_rel_yield: float = 0.01) -> np.ndarray:
    """Energies where the named nuclides put a peak-like feature (see module docstring).

    Read-only array, cached: it depends only on the arguments (the library is frozen) and the
    identifier asks for the same few name sets every spectrum (issue 13).
    """
    return _expected_features_kev(tuple(names), library, float(xray_escape_kev), float(min_rel_yield))


@functools.lru_cache(maxsize=1024)
def _expected_features_kev(names: tuple[str, ...], library: NuclideLibrary, xray_escape_kev: float,
                           min_rel_yield: float) -> np.ndarray:
    feats: list[float] = []
    any_hard = False
    for name in names:
        src = library[name]
        keep = src.yields >= min_rel_yield * src.yields.max()
        lines_e = src.energies_kev[keep]
        feats += list(lines_e)
        feats += list(lines_e[lines_e > xray_escape_kev + 5] - xray_escape_kev)
        feats += list(lines_e / (1 + 2 * lines_e / ME_C2_KEV))
        any_hard |= bool(np.any(lines_e > 88.0))
    if any_hard:
        feats += list(PB_K_XRAYS_KEV)
    out = np.asarray(sorted(feats), dtype=float)
    out.setflags(write=False)
    return out


def unidentified(peaks: Sequence[NetPeak], names: Sequence[str], library: NuclideLibrary, model: DetectorModel,
                 xray_escape_kev: float, tolerance_fwhm: float = 1.0, min_share: float = 0.0,
                 net_total: float = 1.0) -> list[NetPeak]:
    """The peaks no named nuclide explains (farther than ``tolerance_fwhm`` from every expected feature)."""
    feats = expected_features_kev(names, library, xray_escape_kev)
    cand = [p for p in peaks if not p.net_counts < min_share * net_total]  # (NaN kept, as before)
    if not cand or feats.size == 0:
        return cand
    e = np.array([p.energy_kev for p in cand])
    tol = tolerance_fwhm * np.asarray(model.fwhm_kev(e), dtype=float)
    far = np.abs(e[:, None] - feats[None, :]).min(axis=1) > tol
    return [p for p, f in zip(cand, far, strict=True) if f]


def escape_peaks_kev(names: Sequence[str], library: NuclideLibrary, xray_escape_kev: float,
                     min_rel_yield: float = 0.1, max_line_kev: float = 250.0) -> np.ndarray:
    """K x-ray escape peaks of the named nuclides' strong low-energy lines (E - E_K).

    Escape is only likely where photons stop near the crystal's face, below ~250 keV in NaI/CsI
    (Knoll 4th ed. sec. 10.III.C); there a template's escape fraction a few per cent off leaves a
    line-like residual another nuclide could be named for (Co-57's 136 keV line escapes to 107 keV,
    where Sm-153 has its 103 keV line).
    """
    out: list[float] = []
    for name in names:
        src = library[name]
        keep = (src.yields >= min_rel_yield * src.yields.max()) & (src.energies_kev <= max_line_kev)
        e = src.energies_kev[keep]
        out += list(e[e > xray_escape_kev + 5] - xray_escape_kev)
    return np.asarray(sorted(out))
