"""Fit a detector preset to a few measured check-source spectra (and a background), and score it.

Why this exists on the device side: a technician characterises *their* unit from the check sources
they have (Am-241, Co-57, Cs-137, Co-60, Eu-152/154, ...) the way InterSpec fits a detector response
function from measured peaks, and the result must be loadable by the identifier without the
simulator. Only the few parameters of :class:`agent.spectral.presets.DetectorPreset` are fitted; the
rest of the response comes from the base physics table.

Model of a background-subtracted source spectrum: ``A * R(source)`` with ``R`` the preset's template
(:func:`agent.spectral.response.build_templates`, unshielded) binned on the spectrum's own channels
and A >= 0 fitted. The background spectrum, when given, is modelled as K-40 + Ra-226 + Th-232 (+ U-238)
templates plus smooth non-negative continuum terms (cosmic and sky/ground-shine scatter are not
detector properties), so it constrains mainly the peaks: widths and positions at 609-2614 keV.

Figure of merit (``fom``): Pearson reduced chi-square with a relative model uncertainty f,
``sum (n - mu)^2 / (max(mu, 1) + (f mu)^2) / (N - k)`` over the channels from the preset's trusted
minimum energy to 3 MeV, f = 2 % (with f = 0 a 10^6-count spectrum rejects every model at chi2 ~ 10^3).
``l1`` is the normalised residual sum |n - mu| / sum n over the same channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import least_squares, nnls

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.detector import DetectorModel
from agent.spectral.library import LibraryError, NuclideLibrary, Source, default_library
from agent.spectral.presets import DetectorPreset, preset_table
from agent.spectral.response import ResponseTable, build_templates

REL_SYSTEMATIC = 0.02
BACKGROUND_SOURCES = ("K-40", "Ra-226", "Th-232", "U-238")


@dataclass(frozen=True, eq=False)
class Measured:
    """One measured spectrum: ``source`` a library name (or "background"), counts on its calibration."""

    source: str
    counts: np.ndarray
    calibration: EnergyCalibration
    live_time_s: float = 1.0
    path: str = ""
    extra_variance: np.ndarray | None = None  # per channel, e.g. from a subtracted background
    smooth: bool = False  # add the smooth continuum terms (spectrum still holds an unmodelled background)

    def variance(self, mu: np.ndarray | None = None) -> np.ndarray:
        """Poisson variance (of the model if given, else of the data, at least 1) + extra + (f x)^2."""
        x = np.maximum(self.counts if mu is None else mu, 0.0)
        extra = 0.0 if self.extra_variance is None else self.extra_variance
        return np.maximum(x, 1.0) + extra + (REL_SYSTEMATIC * x) ** 2

    @property
    def n_channels(self) -> int:
        return int(self.counts.size)


class _Edges:
    """Duck-typed bins for TemplateSet.binned: the spectrum's own channels (energies clipped at 0)."""

    def __init__(self, calibration: EnergyCalibration, n_channels: int) -> None:
        self.energy_edges_kev = np.maximum(calibration.edges_kev(n_channels), 0.0)
        self.n_bins = n_channels


def source_of(name: str) -> Source:
    try:
        return default_library()[name]
    except LibraryError as err:
        raise LibraryError(f"{name!r} has no lines in the nuclide library: {err}") from err


def template_counts(table: ResponseTable, model: DetectorModel, sources: Sequence[Source],
                    calibration: EnergyCalibration, n_channels: int) -> np.ndarray:
    """(n_sources, n_channels) expected counts per decay-unit of each source in each channel."""
    lib = NuclideLibrary(tuple(sources))
    ts = build_templates(lib, model, shields=(("none", 0.0),), table=table)
    return ts.binned(_Edges(calibration, n_channels))


def smooth_terms(calibration: EnergyCalibration, n_channels: int) -> np.ndarray:
    """Non-negative smooth shapes for the background's scattered/cosmic continuum (per channel)."""
    e = np.maximum(calibration.energy_kev(np.arange(n_channels, dtype=float)), 1.0)
    w = np.gradient(calibration.energy_kev(np.arange(n_channels, dtype=float)))
    terms = [np.exp(-e / s) for s in (40.0, 120.0, 400.0, 1500.0)] + [np.ones_like(e)]
    return np.array([t * w for t in terms])


def analysis_mask(table: ResponseTable, m: Measured, max_energy_kev: float = 3000.0,
                  min_energy_kev: float | None = None) -> np.ndarray:
    """Channels from the table's trusted minimum (or ``min_energy_kev``) to ``max_energy_kev``."""
    e = m.calibration.energy_kev(np.arange(m.n_channels, dtype=float))
    lo = table.min_energy_kev if min_energy_kev is None else min_energy_kev
    return (e >= lo) & (e <= max_energy_kev)


def model_counts(preset: DetectorPreset, m: Measured, table: ResponseTable | None = None,
                 mask: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Best-fitting expected counts of the preset for one measurement, and the number of amplitudes."""
    table = table or preset_table(preset)
    model = DetectorModel(preset.name, preset.offset_a_kev, preset.fwhm_pct_661, preset.power_c)
    return counts_for_table(table, model, m, mask)


def counts_for_table(table: ResponseTable, model: DetectorModel, m: Measured,
                     mask: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    mask = analysis_mask(table, m) if mask is None else mask
    if m.source == "background":
        srcs = [s for s in default_library().sources if s.name in BACKGROUND_SOURCES]
        basis = np.vstack([template_counts(table, model, srcs, m.calibration, m.n_channels),
                           smooth_terms(m.calibration, m.n_channels)])
    else:
        basis = template_counts(table, model, [source_of(m.source)], m.calibration, m.n_channels)
        if m.smooth:
            basis = np.vstack([basis, smooth_terms(m.calibration, m.n_channels)])
    n = m.counts
    sd = np.sqrt(m.variance())
    a = (basis[:, mask] / sd[mask]).T
    coef, _ = nnls(a, n[mask] / sd[mask], maxiter=2000)
    return coef @ basis, basis.shape[0]


def fom(m: Measured, mu: np.ndarray, mask: np.ndarray, k: int = 1) -> tuple[float, float]:
    """(reduced chi-square with 2 % model uncertainty, normalised L1 residual) — see module docstring."""
    nn, mm = m.counts[mask], mu[mask]
    var = m.variance(mu)[mask]
    chi2 = float(np.sum((nn - mm) ** 2 / var) / max(mask.sum() - k, 1))
    l1 = float(np.abs(nn - mm).sum() / max(np.abs(nn).sum(), 1e-12))
    return chi2, l1


def score(preset_or_table: DetectorPreset | tuple[ResponseTable, DetectorModel], m: Measured,
          mask: np.ndarray | None = None) -> tuple[float, float, np.ndarray]:
    """(fom chi2, l1, model counts) of a preset, or of a (table, model) pair, on one measurement."""
    if isinstance(preset_or_table, DetectorPreset):
        table = preset_table(preset_or_table)
        p = preset_or_table
        model = DetectorModel(p.name, p.offset_a_kev, p.fwhm_pct_661, p.power_c)
    else:
        table, model = preset_or_table
    mask = analysis_mask(table, m) if mask is None else mask
    mu, k = counts_for_table(table, model, m, mask)
    chi2, l1 = fom(m, mu, mask, k)
    return chi2, l1, mu


# Parameters a fit may free, with (lower, upper) bounds and a setter onto the preset.
_PARAMS: dict[str, tuple[float, float, Callable[[DetectorPreset, float], DetectorPreset]]] = {
    "offset_a_kev": (-15.0, 30.0, lambda p, v: replace(p, offset_a_kev=v)),
    "fwhm_pct_661": (2.0, 16.0, lambda p, v: replace(p, fwhm_pct_661=v)),
    "power_c": (0.3, 0.9, lambda p, v: replace(p, power_c=v)),
    "threshold_kev": (5.0, 80.0, lambda p, v: replace(p, threshold_kev=v)),
    "threshold_width_kev": (0.5, 20.0, lambda p, v: replace(p, threshold_width_kev=v)),
    "np0": (-0.1, 0.1, lambda p, v: replace(p, nonprop=_np_set(p.nonprop, 0, v))),
    "np1": (-0.2, 0.2, lambda p, v: replace(p, nonprop=_np_set(p.nonprop, 1, v))),
    "np2": (-0.1, 0.1, lambda p, v: replace(p, nonprop=_np_set(p.nonprop, 2, v))),
    "tail_fraction": (0.0, 0.5, lambda p, v: replace(p, tail_fraction=v)),
    "tail_length_sigma": (0.2, 15.0, lambda p, v: replace(p, tail_length_sigma=v)),
    "eff1": (-1.5, 1.5, lambda p, v: replace(p, efficiency=(v, p.efficiency[1]))),
    "eff2": (-0.5, 0.5, lambda p, v: replace(p, efficiency=(p.efficiency[0], v))),
    "cont0": (-1.5, 3.0, lambda p, v: replace(p, continuum=(v, p.continuum[1]))),
    "cont1": (-1.5, 1.5, lambda p, v: replace(p, continuum=(p.continuum[0], v))),
    "backscatter": (0.0, 0.5, lambda p, v: replace(p, backscatter=v)),
    "room_scatter": (0.0, 2.0, lambda p, v: replace(p, room_scatter=v)),
    "escape_scale": (0.0, 4.0, lambda p, v: replace(p, escape_scale=v)),
}
DEFAULT_FREE = tuple(_PARAMS)


def _np_set(nonprop: tuple[float, ...], k: int, v: float) -> tuple[float, ...]:
    out = list(nonprop) + [0.0] * (3 - len(nonprop))
    out[k] = v
    return tuple(out)


def _get(p: DetectorPreset, name: str) -> float:
    nps = list(p.nonprop) + [0.0] * 3
    special = {"np0": nps[0], "np1": nps[1], "np2": nps[2],
               "eff1": p.efficiency[0], "eff2": p.efficiency[1], "cont0": p.continuum[0], "cont1": p.continuum[1]}
    return float(special[name]) if name in special else float(getattr(p, name))


def set_params(p: DetectorPreset, names: Sequence[str], values: Sequence[float]) -> DetectorPreset:
    for n, v in zip(names, values, strict=True):
        p = _PARAMS[n][2](p, float(v))
    return p


@dataclass
class FitResult:
    preset: DetectorPreset
    fom: dict[str, tuple[float, float]]  # measurement label -> (chi2, l1)
    start_fom: dict[str, tuple[float, float]]
    n_evaluations: int


def fit_preset(start: DetectorPreset, measured: Sequence[Measured], free: Sequence[str] = DEFAULT_FREE,
               max_nfev: int = 60, verbose: bool = False, min_energy_kev: float | None = None) -> FitResult:
    """Least-squares fit of the ``free`` preset parameters to all measurements at once.

    Residuals are (n - mu) / sqrt(max(n,1) + (f n)^2) per channel with each measurement's amplitudes
    refitted (NNLS) at every step; each measurement is weighted by 1/sqrt(its channel count) so a
    spectrum with many channels in range does not outweigh the others."""
    free = [f for f in free if f in _PARAMS]
    lo = np.array([_PARAMS[f][0] for f in free])
    hi = np.array([_PARAMS[f][1] for f in free])
    x0 = np.clip([_get(start, f) for f in free], lo + 1e-9, hi - 1e-9)
    # the fit window must not move with the parameters: fixed from the start preset
    masks = {id(m): analysis_mask(preset_table(start), m, min_energy_kev=min_energy_kev) for m in measured}
    evals = [0]

    def resid(x: np.ndarray) -> np.ndarray:
        evals[0] += 1
        p = set_params(start, free, x)
        table = preset_table(p)
        out = []
        for m in measured:
            mask = masks[id(m)]
            mu, _ = model_counts(p, m, table, mask)
            n = m.counts[mask]
            sd = np.sqrt(m.variance()[mask])
            out.append((n - mu[mask]) / sd / np.sqrt(mask.sum()))
        r = np.concatenate(out)
        if verbose and evals[0] % 20 == 0:
            print(f"  eval {evals[0]}: cost {0.5 * float(r @ r):.4g}")
        return r

    start_fom = {_label(m): score(start, m, masks[id(m)])[:2] for m in measured}
    sol = least_squares(resid, x0, bounds=(lo, hi), x_scale="jac", diff_step=1e-3, max_nfev=max_nfev)
    best = set_params(start, free, sol.x)
    final = {_label(m): score(best, m, masks[id(m)])[:2] for m in measured}
    return FitResult(best, final, start_fom, evals[0])


def _label(m: Measured) -> str:
    return m.source if not m.path else f"{m.source} ({m.path.rsplit('/', 1)[-1]})"
