"""Lines the fitted model does not explain: the evidence behind "unknown" and behind naming SNM.

Why: a full-spectrum fit always returns *some* best model. When the source is not in the library
its best substitute leaves a line (or several) unexplained; when a library source is present but
its template is imperfect, the residual is a broad ripple. An identifier that knows when it does
not know must tell these apart (ANSI N42.34 expects "unidentified" rather than a wrong name). The
same test, applied to the model *without* a nuclide, asks whether that nuclide's own lines stand
out as net peaks: the evidence required before special nuclear material is named.

The statistic is a zero-area "top-hat" filter on the residual r = n - mu in the identifier's
resolution-matched bins (each half a FWHM wide): the sum over 3 bins (1.5 FWHM, ~87 % of a
Gaussian line) minus half the sum over the 3 bins on each side. A zero-area kernel ignores a
residual that is constant or linear across 4.5 FWHM (a continuum misfit), like the second-
difference filters of peak searches (Mariscotti, NIM 50 (1967) 309). Its variance counts Poisson
noise plus a relative model uncertainty f (variance mu + (f mu)^2): a template that is right to
within f never looks like a line, whatever the count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from agent.spectral.detector import DetectorModel
from agent.spectral.library import NuclideLibrary
from agent.spectral.line_check import distinctive_lines_kev

_CENTRE = 1  # bins each side of the centre in the line window
_SIDE = 3  # bins in each side band


@dataclass(frozen=True, slots=True)
class ResidualLine:
    energy_kev: float
    z: float  # significance of the unexplained excess (filter output / its sigma)
    net_counts: float  # excess counts in the 3-bin window above the side bands


MEASURED_REL_SIGMA = 0.01  # a measured background's shape: known far better than any template
# A continuum emitter's template (fission gammas, bremsstrahlung: library_lines.csv) depends on the source's
# encapsulation and surroundings; on the real RASE Sr-90 it is off by up to 40 % in shape between 50 and
# 500 keV. Lines claimed over such a continuum must clear this uncertainty, not the line templates' 10 %.
LOOSE_REL_SIGMA = 0.4


@numba.njit(cache=True, error_model="numpy")
def _line_filter(n, mu, measured, loose, rel_sigma, k, half):  # pragma: no cover
    """:func:`line_statistic` in one pass (``measured``/``loose`` of size 0 = none)."""
    size = n.shape[0]
    width = k.shape[0]
    c = width // 2
    r = np.empty(size)
    var = np.empty(size)
    for i in range(size):
        m = mu[i] if mu[i] > 1e-9 else 1e-9
        meas = 0.0
        if measured.shape[0] > 0:
            meas = min(max(measured[i], 0.0), m)
        lo = 0.0
        if loose.shape[0] > 0:
            lo = min(max(loose[i], 0.0), m - meas)
        r[i] = n[i] - m
        t = rel_sigma * (m - meas - lo)
        u = MEASURED_REL_SIGMA * meas
        v = LOOSE_REL_SIGMA * lo
        var[i] = m + t * t + u * u + v * v
    s = np.zeros(size)
    z = np.zeros(size)
    for i in range(size):
        a = 0.0
        b = 0.0
        for j in range(width):
            q = i + j - c
            if 0 <= q < size:
                a += r[q] * k[j]
                b += var[q] * k[j] * k[j]
        s[i] = a
        if half <= i < size - half:
            z[i] = a / np.sqrt(b if b > 1e-12 else 1e-12)
    return s, z


_KERNEL = np.concatenate([np.full(_SIDE, -0.5 * (2 * _CENTRE + 1) / _SIDE),
                          np.ones(2 * _CENTRE + 1), np.full(_SIDE, -0.5 * (2 * _CENTRE + 1) / _SIDE)])
_NONE = np.zeros(0)


def line_statistic(counts: np.ndarray, mu: np.ndarray, rel_sigma: float,
                   measured: np.ndarray | None = None, loose: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Filter output (net excess counts) and its z per bin; bins too near the edges get z = 0.

    ``measured`` is the part of ``mu`` that comes from a measured background: the relative model
    uncertainty ``rel_sigma`` applies to the rest (templates, continuum terms), 1 % to it.
    ``loose`` is the part of ``mu`` from continuum-emitter templates (LOOSE_REL_SIGMA applies to it).
    The filtering runs in one numba pass (a dozen numpy temporaries and two ``np.correlate`` calls
    cost more on ~260 bins, and this runs several times per spectrum; issue 13).
    """
    n = np.ascontiguousarray(counts, dtype=float)
    m = np.ascontiguousarray(mu, dtype=float)
    meas = _NONE if measured is None else np.ascontiguousarray(measured, dtype=float)
    lo = _NONE if loose is None else np.ascontiguousarray(loose, dtype=float)
    if m.shape != n.shape or meas.size not in (0, n.size) or lo.size not in (0, n.size):
        raise ValueError(f"line_statistic: shapes differ (counts {n.shape}, model {m.shape})")
    return _line_filter(n, m, meas, lo, float(rel_sigma), _KERNEL, _CENTRE + _SIDE)


def strongest_unexplained(counts: np.ndarray, mu: np.ndarray, centers_kev: np.ndarray,
                          rel_sigma: float, measured: np.ndarray | None = None) -> ResidualLine:
    """The most significant unexplained line-like excess of the spectrum."""
    s, z = line_statistic(counts, mu, rel_sigma, measured)
    i = int(np.argmax(z))
    return ResidualLine(float(centers_kev[i]), float(z[i]), float(s[i]))


def line_z_at(counts: np.ndarray, mu: np.ndarray, centers_kev: np.ndarray, rel_sigma: float,
              energies_kev: np.ndarray, measured: np.ndarray | None = None,
              loose: np.ndarray | None = None) -> np.ndarray:
    """Best z within +-1 bin of each energy (a line centred on a bin edge straddles two bins)."""
    _, z = line_statistic(counts, mu, rel_sigma, measured, loose)
    idx = np.clip(np.searchsorted(centers_kev, np.asarray(energies_kev, dtype=float)), 0, z.size - 1)
    return np.maximum(np.maximum(z[np.maximum(idx - 1, 0)], z[idx]), z[np.minimum(idx + 1, z.size - 1)])


def own_line_seen(name: str, others: Sequence[str], counts_binned: np.ndarray, mu_without: np.ndarray,
                  centers_kev: np.ndarray, library: NuclideLibrary, model: DetectorModel, rel_sigma: float,
                  min_z: float, e_min_kev: float, e_max_kev: float, avoid_kev: np.ndarray | None = None,
                  measured: np.ndarray | None = None, loose: np.ndarray | None = None) -> bool:
    """True when one of ``name``'s distinctive lines stands out over the model without it.

    Distinctive: at least 10 % of the nuclide's strongest line in the analysed range and more than
    1 FWHM from every line of the ``others`` (agent.spectral.line_check) and from the ``avoid_kev``
    energies (the others' escape and back-scatter peaks). A nuclide all of whose lines are shared
    with another named source cannot be checked and is kept (line_check's rule); one whose free lines
    all sit on the others' escape or back-scatter peaks is not.
    """
    lines = distinctive_lines_kev(name, list(others), library, model, e_min_kev, e_max_kev,
                                  min_rel_yield=0.1, separation_fwhm=1.0)
    if lines.size == 0:
        return True  # every line shared with another named source: cannot be checked, kept (a true mixture)
    if avoid_kev is not None and np.size(avoid_kev):
        # its free lines must not sit on the others' escape and back-scatter peaks, which a template may
        # get a few per cent wrong: a nuclide seen only there is an artefact of the others
        gap = np.abs(lines[:, None] - np.asarray(avoid_kev)[None, :]).min(axis=1)
        lines = lines[gap > 1.0 * np.asarray(model.fwhm_kev(lines))]
        if lines.size == 0:
            return False
    return bool(np.any(line_z_at(counts_binned, mu_without, centers_kev, rel_sigma, lines, measured, loose)
                       >= min_z))


def lines_consistent(name: str, others: Sequence[str], counts_binned: np.ndarray, mu_without: np.ndarray,
                     own_part: np.ndarray, centers_kev: np.ndarray, library: NuclideLibrary, model: DetectorModel,
                     rel_sigma: float, min_z: float, e_min_kev: float, e_max_kev: float,
                     min_fraction: float = 0.3, measured: np.ndarray | None = None,
                     loose: np.ndarray | None = None) -> bool:
    """Stricter than :func:`own_line_seen`: *every* distinctive line the fitted template predicts to be
    clearly visible (expected z >= 2 ``min_z``) must be seen at ``min_fraction`` of its expected z, at
    least one at ``min_z``, and with the nuclide's template added no line-like residual of ``min_z`` may
    remain within 1.5 FWHM of its lines. One coincident line is not a nuclide: Ir-192's 316.5 keV line sits
    4.6 keV from Np-237's (Pa-233) 311.9 keV, but Np-237 would also show 86-98 keV lines Ir-192 lacks.
    """
    lines = distinctive_lines_kev(name, list(others), library, model, e_min_kev, e_max_kev,
                                  min_rel_yield=0.1, separation_fwhm=1.0)
    if lines.size == 0:
        return False
    z_obs = line_z_at(counts_binned, mu_without, centers_kev, rel_sigma, lines, measured, loose)
    z_exp = line_z_at(mu_without + own_part, mu_without, centers_kev, rel_sigma, lines, measured, loose)
    clear = z_exp >= 2 * min_z
    if not (np.any(z_obs >= min_z) and np.all(z_obs[clear] >= min_fraction * z_exp[clear])):
        return False
    # and with the nuclide in, its lines' neighbourhoods (+-1.5 FWHM) are explained: a stand-in for a
    # different nuclide (Np-237's 300/312 keV doublet for Ir-192's 296/308/316 keV triplet) leaves structure
    _, z_with = line_statistic(counts_binned, mu_without + own_part, rel_sigma, measured, loose)
    half = 1.5 * np.asarray(model.fwhm_kev(lines))
    near = np.any(np.abs(centers_kev[:, None] - lines[None, :]) <= half[None, :], axis=1)
    return bool(np.max(np.abs(z_with[near]), initial=0.0) < min_z)


def lines_as_predicted(name: str, others: Sequence[str], counts_binned: np.ndarray, mu_without: np.ndarray,
                       own_part: np.ndarray, centers_kev: np.ndarray, library: NuclideLibrary,
                       model: DetectorModel, rel_sigma: float, min_z: float, e_min_kev: float,
                       e_max_kev: float, min_fraction: float = 0.2, blend_fwhm: float = 2.0,
                       measured: np.ndarray | None = None, loose: np.ndarray | None = None) -> bool:
    """Are the lines a fitted nuclide predicts actually there?  The check on the *leading* name.

    A full-spectrum fit of a source the library does not hold picks the nuclide whose template
    soaks up most counts; its own line pattern is then wrong: Eu-152 for Eu-154 predicts a strong
    344 keV line that is absent, Cs-134 for Cf-252's smooth fission spectrum predicts 605/796 keV
    lines that are absent. This is the RIID's "does the pattern match" step (the line-list check of
    peak-based identifiers, e.g. Gilmore, Practical Gamma-ray Spectrometry, 2nd ed., ch. 8).

    Looser than :func:`lines_consistent` (for SNM) in three ways, because the leading source has the
    fit's whole weight behind it and a real detector's response is only approximately the template's:
    lines of the nuclide closer than ``blend_fwhm`` FWHM merge into one feature (a NaI detector does not
    resolve Co-57's 122/136 keV or Tl-201's 69-71/80 keV X-rays, and the template's blend shape is the
    least certain part: on the RASE NaI the fitted preset's resolution is 10-25 % wider than the real
    peaks between 120 and 300 keV, so a blend's weaker member can even come out negative); a feature
    counts as seen at ``min_fraction`` of the z the template predicts for it; nothing is asked of the
    residual with the nuclide in. Lines the window cannot test (predicted z < ``min_z``, e.g. at the
    analysis range's edge) do not count; a nuclide with none is kept.
    """
    lines = np.sort(distinctive_lines_kev(name, list(others), library, model, e_min_kev, e_max_kev,
                                          min_rel_yield=0.1, separation_fwhm=1.0))
    if lines.size == 0:
        return True
    z_obs = line_z_at(counts_binned, mu_without, centers_kev, rel_sigma, lines, measured, loose)
    z_exp = line_z_at(mu_without + own_part, mu_without, centers_kev, rel_sigma, lines, measured, loose)
    fwhm = np.asarray(model.fwhm_kev(lines), dtype=float)
    group = np.concatenate([[0], np.cumsum(np.diff(lines) > blend_fwhm * 0.5 * (fwhm[1:] + fwhm[:-1]))])
    # lines are sorted, so each group is a contiguous run: a segmented max (no ``np.maximum.at``)
    starts = np.flatnonzero(np.diff(group, prepend=-1))
    g_obs = np.maximum.reduceat(z_obs, starts)
    g_exp = np.maximum.reduceat(z_exp, starts)
    testable = g_exp >= min_z
    if not np.any(testable):
        return True
    clear = g_exp >= 2 * min_z
    return bool(np.any(g_obs[testable] >= min_z) and np.all(g_obs[clear] >= min_fraction * g_exp[clear]))
