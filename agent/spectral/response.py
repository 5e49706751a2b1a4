"""Detector response function (DRF) and per-source spectral templates.

Why a parametric DRF: identification compares the measured spectrum with what each library source
*would* look like in this detector. Like Sandia's GADRAS detector response functions, the
response to a photon of energy E0 is built from its physical parts, each with an energy-dependent
strength tabulated per detector model:

* sharp deposits, Gaussians with the model's FWHM: the full-energy peak at E0, the K x-ray escape
  peak at E0 - E_K (iodine ~29 keV in NaI/CsI), pair single/double escape peaks at E0 - 511/1022;
* a continuum (Compton scattering, multiple scattering, back-scatter from the housing) tabulated
  *in edge-normalised coordinates*: 40 bins of E_dep / T_max below the Compton edge
  T_max = E0 * 2a/(1+2a), a = E0/511 keV (Knoll, Radiation Detection and Measurement, 4th ed.,
  eq. 10.4), and 12 bins of (E_dep - T_max)/(E0 - T_max) between edge and peak. In these
  coordinates the edge stays put from one tabulated energy to the next, so responses interpolate
  cleanly to any line energy (response functions are interpolated in such scaled energies rather
  than channel by channel).

The strengths (counts per photon on the detector face) come from ``data/detector_response.csv``,
which ``cedge/spectral_tools/fit_detector_response.py`` fits offline to a detector's monoenergetic responses (measured
or, here, simulated) — the way a DRF is characterised, not tuned per nuclide. Shielded variants of
each template attenuate the lines by exp(-mu x) of iron or lead (NIST SRD 126); the photons the
shield scatters are smooth and are left to the identifier's continuum nuisance terms.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
from scipy.special import ndtr

from agent.spectral.binning import AnalysisBins
from agent.spectral.detector import DetectorModel, detector_model
from agent.spectral.library import LibraryError, NuclideLibrary, read_data_csv

ME_C2_KEV = 510.99895
GRID_STEP_KEV = 1.0
PEAK_FIELDS = ("peak", "escape", "single_escape", "double_escape")
N_BELOW_EDGE = 40  # continuum bins in E_dep / T_max
N_PLATEAU = 12  # continuum bins in (E_dep - T_max) / (E0 - T_max)
N_CONTINUUM = N_BELOW_EDGE + N_PLATEAU

# Default shield variants: none, steel on a factor-3 grid (1.3, 3.8, 7.6 cm: vehicle body to dense
# cargo) and 4.4 mm of lead; the continuum terms and non-negative mixing cover what lies between.
DEFAULT_SHIELDS: tuple[tuple[str, float], ...] = (
    ("none", 0.0), ("iron", 10.0), ("iron", 30.0), ("iron", 60.0), ("lead", 5.0))


def compton_edge_kev(energy_kev: np.ndarray | float) -> np.ndarray:
    a = np.asarray(energy_kev, dtype=float) / ME_C2_KEV
    return np.asarray(energy_kev, dtype=float) * 2 * a / (1 + 2 * a)


def continuum_segments_kev(energy_kev: float) -> np.ndarray:
    """Deposited-energy edges (keV) of the N_CONTINUUM tabulated continuum bins of a line at E0."""
    t_max = float(compton_edge_kev(energy_kev))
    below = np.linspace(0.0, t_max, N_BELOW_EDGE + 1)
    plateau = np.linspace(t_max, energy_kev, N_PLATEAU + 1)
    return np.concatenate([below, plateau[1:]])


@dataclass(frozen=True, eq=False)
class ResponseTable:
    """Response of one detector model versus incident energy, per photon on the detector face.

    ``peaks[field]``: probability of that sharp deposit; ``continuum``: (n_energies, N_CONTINUUM)
    probability in each edge-normalised continuum bin.
    """

    model: str
    energies_kev: np.ndarray
    peaks: dict[str, np.ndarray]
    continuum: np.ndarray
    xray_escape_kev: float
    min_energy_kev: float  # lowest energy the analysis trusts (discriminator + 3 widths)
    # Measured-detector terms (0/empty for the simulator-fitted tables, whose simulator has an ideal
    # Gaussian peak and a linear light yield; see agent/spectral/presets.py):
    threshold_kev: float = 0.0  # lower-level discriminator 50 % point on the recorded energy (0: none)
    threshold_width_kev: float = 1.0  # erf width of its roll-off
    # light-yield non-proportionality and calibration offset: recorded/true energy - 1 = sum_k p_k ln(E/662 keV)^k
    nonprop: tuple[float, ...] = ()
    tail_fraction: float = 0.0  # share of each sharp deposit in an exponential low-energy tail
    tail_length_sigma: float = 1.0  # its 1/e length in units of the peak's sigma

    def apparent_energy_kev(self, energy_kev: np.ndarray | float) -> np.ndarray:
        """Where a deposit of ``energy_kev`` appears on a calibration that is linear through 662 keV.

        NaI(Tl)/CsI(Tl) give more light per keV at 20-200 keV than at 662 keV (Knoll 4th ed.
        sec. 8.II.B; Moszynski et al., NIM A 484 (2002) 259), so their low-energy peaks sit a few per
        cent above a linear calibration."""
        e = np.asarray(energy_kev, dtype=float)
        if not self.nonprop:
            return e
        lg = np.log(np.clip(e, 10.0, 3000.0) / 661.657)
        d = sum(p * lg**k for k, p in enumerate(self.nonprop))
        return e * (1.0 + d)

    def threshold_pass(self, energy_kev: np.ndarray | float) -> np.ndarray:
        """Fraction of events at a recorded energy that pass the discriminator (erf roll-off)."""
        e = np.asarray(energy_kev, dtype=float)
        if self.threshold_kev <= 0:
            return np.ones_like(e)
        return ndtr((e - self.threshold_kev) / max(self.threshold_width_kev, 1e-3))

    def _weights(self, energy_kev: float) -> tuple[int, float]:
        le = np.log(np.clip(energy_kev, self.energies_kev[0], self.energies_kev[-1]))
        grid = np.log(self.energies_kev)
        i = int(np.clip(np.searchsorted(grid, le) - 1, 0, grid.size - 2))
        f = float((le - grid[i]) / (grid[i + 1] - grid[i]))
        return i, f

    def peak(self, field: str, energy_kev: float) -> float:
        i, f = self._weights(energy_kev)
        v = self.peaks[field]
        return float((1 - f) * v[i] + f * v[i + 1])

    def continuum_at(self, energy_kev: float) -> np.ndarray:
        i, f = self._weights(energy_kev)
        return (1 - f) * self.continuum[i] + f * self.continuum[i + 1]


def _generic_table() -> ResponseTable:
    """A rough 2x2-in NaI-like DRF (Klein-Nishina continuum, P/T after Heath, IDO-16880 (1964)),
    used only for a detector model that has no fitted table."""
    e = np.geomspace(15.0, 3000.0, 40)
    pt = np.interp(np.log(e), np.log([20, 100, 200, 300, 500, 662, 1000, 1500, 2000, 3000]),
                   [1.0, 0.97, 0.85, 0.72, 0.55, 0.47, 0.37, 0.30, 0.26, 0.21])
    eff = np.interp(np.log(e), np.log([20, 100, 200, 500, 662, 1000, 2000, 3000]),
                    [0.95, 0.97, 0.92, 0.66, 0.57, 0.47, 0.35, 0.30])
    cont = np.zeros((e.size, N_CONTINUUM))
    for k, e0 in enumerate(e):
        edges = continuum_segments_kev(e0)
        mid = 0.5 * (edges[1:] + edges[:-1])
        a = e0 / ME_C2_KEV
        sv = np.clip(mid / e0, 0, 0.999)
        kn_shape = 2 + sv**2 / (a * a * (1 - sv) ** 2) + sv / (1 - sv) * (sv - 2 / a)
        kn = np.where(mid < compton_edge_kev(e0), kn_shape, 0.0)
        kn = np.maximum(kn, 0.0) * np.diff(edges)
        kn[N_BELOW_EDGE:] = 0.15 * kn[:N_BELOW_EDGE].sum() / N_PLATEAU
        cont[k] = kn / max(kn.sum(), 1e-12) * eff[k] * (1 - pt[k])
    peaks = {"peak": eff * pt, "escape": np.where((e > 34) & (e < 200), 0.05 * eff * pt * (34 / e) ** 2, 0.0),
             "single_escape": np.where(e > 1100, 0.01 * eff, 0.0),
             "double_escape": np.where(e > 1100, 0.003 * eff, 0.0)}
    return ResponseTable("generic", e, peaks, cont, 29.1, 30.0)


@functools.cache
def response_tables() -> dict[str, ResponseTable]:
    """Fitted DRF tables per detector model from ``data/detector_response.csv`` (empty if absent)."""
    try:
        rows = read_data_csv("detector_response.csv")
    except LibraryError:
        return {}
    by_model: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_model.setdefault(r["detector"], []).append(r)
    out = {}
    for model, rs in by_model.items():
        rs.sort(key=lambda r: float(r["energy_keV"]))
        out[model] = ResponseTable(
            model=model,
            energies_kev=np.array([float(r["energy_keV"]) for r in rs]),
            peaks={f: np.array([float(r[f]) for r in rs]) for f in PEAK_FIELDS},
            continuum=np.array([[float(r[f"c{k:02d}"]) for k in range(N_CONTINUUM)] for r in rs]),
            xray_escape_kev=float(rs[0]["xray_escape_keV"]),
            min_energy_kev=float(rs[0]["min_energy_keV"]),
        )
    return out


def response_table(model: DetectorModel) -> ResponseTable:
    """The table of a detector model: its preset's (agent/spectral/presets.py), its own fitted table,
    else the nearest of the same crystal family, else a generic one."""
    from agent.spectral.presets import preset_table_cached, presets

    if model.name in presets():
        return preset_table_cached(model.name)
    tables = response_tables()
    if model.name in tables:
        return tables[model.name]
    family = model.name.split()[0]  # nearest fitted model of the same crystal family
    for name, table in tables.items():
        if name.split()[0] == family:
            return table
    return _generic_table()


@functools.cache
def _shield_table() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows = read_data_csv("shield_attenuation.csv")
    out: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        out.setdefault(r["material"], []).append((float(r["energy_keV"]), float(r["mu_over_rho_cm2_g"])))
    tabs = {}
    for m, pts in out.items():
        e = np.array([p[0] for p in pts])
        mu = np.array([p[1] for p in pts])
        for i in range(1, e.size):  # absorption edge listed twice: step, not ambiguity
            if e[i] <= e[i - 1]:
                e[i - 1] = e[i] * (1 - 1e-6)
        tabs[m] = (e, mu)
    return tabs


def shield_transmission(material: str, areal_density_g_cm2: float, energy_kev: np.ndarray) -> np.ndarray:
    """Narrow-beam transmission exp(-mu/rho * x), log-log interpolated NIST SRD 126 data."""
    e = np.asarray(energy_kev, dtype=float)
    if material == "none" or areal_density_g_cm2 <= 0:
        return np.ones_like(e)
    tabs = _shield_table()
    if material not in tabs:
        raise LibraryError(f"no attenuation data for shield {material!r} (known: {', '.join(tabs)})")
    te, mu = tabs[material]
    le = np.log(np.clip(e, te[0], te[-1]))
    mu_e = np.exp(np.interp(le, np.log(te), np.log(mu)))
    return np.exp(-mu_e * areal_density_g_cm2)


@numba.njit(cache=True)
def _blur(density: np.ndarray, sigma_cells: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Gaussian blur with a cell-dependent width (the width at the *source* cell)."""
    n = density.shape[0]
    out = np.zeros(n)
    for i in range(n):
        v = density[i]
        if v == 0.0:
            continue
        s = sigma_cells[i]
        if s < 0.3:
            out[i] += v
            continue
        w = int(3.5 * s) + 1
        lo = max(0, i - w)
        hi = min(n, i + w + 1)
        tot = 0.0
        for j in range(lo, hi):
            tot += np.exp(-0.5 * ((j - i) / s) ** 2)
        for j in range(lo, hi):
            out[j] += v * np.exp(-0.5 * ((j - i) / s) ** 2) / tot
    return out


@dataclass(frozen=True, eq=False)
class TemplateSet:
    """Unbinned templates: Gaussian peaks (analytic) + continuum on a 1 keV grid, per template.

    Template ``i`` is library source ``source_index[i]`` behind shield ``shields[shield_index[i]]``;
    values are counts per decay per unit face fluence factor (shape and relative strength matter,
    the absolute scale is fitted).
    """

    model: DetectorModel
    source_names: tuple[str, ...]
    shields: tuple[tuple[str, float], ...]
    source_index: np.ndarray
    shield_index: np.ndarray
    peak_template: np.ndarray  # template index of each peak
    peak_energy_kev: np.ndarray
    peak_area: np.ndarray
    peak_sigma_kev: np.ndarray
    grid_lo_kev: np.ndarray
    continuum_cum: np.ndarray  # (n_templates, n_grid + 1) cumulative continuum counts

    @property
    def n_templates(self) -> int:
        return int(self.source_index.size)

    def labels(self) -> list[str]:
        out = []
        for s, v in zip(self.source_index, self.shield_index, strict=True):
            mat, x = self.shields[v]
            out.append(self.source_names[s] + ("" if mat == "none" else f" [{mat} {x:g} g/cm2]"))
        return out

    def binned(self, bins: AnalysisBins) -> np.ndarray:
        """(n_templates, n_bins) expected counts per bin."""
        lo = bins.energy_edges_kev[:-1]
        hi = bins.energy_edges_kev[1:]
        out = np.zeros((self.n_templates, bins.n_bins))
        # continuum: difference of the cumulative at the bin edges
        edges_pos = (bins.energy_edges_kev - self.grid_lo_kev[0]) / GRID_STEP_KEV
        idx = np.clip(np.floor(edges_pos).astype(np.int64), 0, self.grid_lo_kev.size - 1)
        frac = np.clip(edges_pos - idx, 0.0, 1.0)
        cum = self.continuum_cum[:, idx] * (1 - frac) + self.continuum_cum[:, idx + 1] * frac
        out += np.diff(cum, axis=1)
        # peaks: exact Gaussian integrals over each bin
        z_hi = (hi[None, :] - self.peak_energy_kev[:, None]) / self.peak_sigma_kev[:, None]
        z_lo = (lo[None, :] - self.peak_energy_kev[:, None]) / self.peak_sigma_kev[:, None]
        contrib = self.peak_area[:, None] * (ndtr(z_hi) - ndtr(z_lo))
        np.add.at(out, self.peak_template, contrib)
        return np.maximum(out, 0.0)


def add_line_continuum(cont: np.ndarray, grid_lo: np.ndarray, table: ResponseTable, energy_kev: float,
                       weight: float) -> None:
    """Add the (unblurred) continuum of ``weight`` photons of ``energy_kev`` to 1 keV grid cells."""
    values = table.continuum_at(energy_kev) * weight
    edges = continuum_segments_kev(energy_kev)
    cum = np.concatenate([[0.0], np.cumsum(values)])
    n = grid_lo.size
    top = min(n, int(np.ceil(energy_kev / GRID_STEP_KEV)) + 1)
    cells = np.arange(top + 1) * GRID_STEP_KEV + grid_lo[0]
    c = np.interp(cells, edges, cum)
    cont[:top] += np.diff(c)


def _add_tail(cont: np.ndarray, grid_lo: np.ndarray, peak_kev: float, area: float, length_kev: float) -> None:
    """Exponential low-energy tail of a peak (incomplete charge/light collection, scattering in the
    window), added before the resolution blur: exp-tail convolved with the Gaussian is the tailed
    peak shape of GADRAS/InterSpec's peak models (cf. Bortels & Collaers, Appl. Radiat. Isot. 38 (1987) 831)."""
    lam = max(length_kev, 0.3)
    lo = max(peak_kev - 10.0 * lam, float(grid_lo[0]))
    i0 = int((lo - grid_lo[0]) / GRID_STEP_KEV)
    i1 = min(int((peak_kev - grid_lo[0]) / GRID_STEP_KEV) + 1, grid_lo.size)
    if i1 <= i0:
        return
    x_hi = np.minimum(grid_lo[i0:i1] + GRID_STEP_KEV, peak_kev)
    x_lo = grid_lo[i0:i1]
    w = np.exp(-(peak_kev - x_hi) / lam) - np.exp(-(peak_kev - x_lo) / lam)
    tot = w.sum()
    if tot > 0:
        cont[i0:i1] += area * w / tot


# Scattered-to-uncollided photon ratio behind a slab, B - 1 ~ k * (mu x): exposure build-up of
# ANSI/ANS-6.4.3 (1991) at 0.5-1 MeV and 1-4 mfp is roughly 1 + 1.0 mu x for iron and 1 + 0.25 mu x
# for lead (photoabsorption removes the degraded photons in high-Z shields).
_BUILDUP_SLOPE = {"iron": 1.0, "lead": 0.25}
_SCATTER_FLOOR_KEV = {"iron": 50.0, "lead": 150.0}


_Z_OVER_A = {"iron": 26 / 55.845, "lead": 82 / 207.2}
_R_E_CM = 2.8179403262e-13
_N_A = 6.02214076e23


def klein_nishina_mass_cm2_g(material: str, energy_kev: np.ndarray) -> np.ndarray:
    """Compton mass attenuation from the Klein-Nishina total cross-section per electron (Evans,
    The Atomic Nucleus, eq. 23-1.22) x N_A Z/A."""
    k = np.maximum(np.asarray(energy_kev, dtype=float), 1.0) / ME_C2_KEV
    l2k = np.log1p(2 * k)
    sig = (1 + k) / k**2 * (2 * (1 + k) / (1 + 2 * k) - l2k / k) + l2k / (2 * k) - (1 + 3 * k) / (1 + 2 * k) ** 2
    return 2 * np.pi * _R_E_CM**2 * sig * _N_A * _Z_OVER_A.get(material, 0.5)


def slowing_down_shape(material: str, energy_kev: np.ndarray) -> np.ndarray:
    """Relative fluence per keV of multiply scattered photons in a thick medium,
    ~ (sigma_C / mu)(E) / (E mu(E)) (Fano, Spencer & Berger 1959): photons pile up where scattering
    degrades them and photoabsorption has not yet removed them — the low-energy hump behind steel,
    pushed up in energy behind lead."""
    e = np.asarray(energy_kev, dtype=float)
    te, mu_tab = _shield_table()[material]
    mu = np.exp(np.interp(np.log(np.clip(e, te[0], te[-1])), np.log(te), np.log(mu_tab)))
    comp = np.minimum(klein_nishina_mass_cm2_g(material, e), mu)
    return comp / mu / (e * mu)


def shield_scatter_lines(material: str, areal_density_g_cm2: float, energies_kev: np.ndarray,
                         weights: np.ndarray) -> list[tuple[float, float, float]]:
    """Pseudo-lines (energy, photons, energy spread) standing for the photons a shield scatters.

    Once-scattered forward photons (0-90 deg, Klein-Nishina weighted) land between E/(1+E/511) and E,
    multiply-scattered ones below, down to a floor set by photoabsorption; the single-scatter share
    falls with depth as 1/(1 + mu x / 2) (after Fano, Spencer & Berger, "Penetration and diffusion of
    X rays", 1959). Each pseudo-line is later given the detector response, its peak broadened by the
    spacing of the nodes, so the sum is a smooth scattered continuum.
    """
    out: list[tuple[float, float, float]] = []
    slope = _BUILDUP_SLOPE.get(material, 1.0)
    floor = _SCATTER_FLOOR_KEV.get(material, 50.0)
    trans = shield_transmission(material, areal_density_g_cm2, energies_kev)
    mfp = np.minimum(-np.log(np.maximum(trans, 1e-12)), 6.0)
    cos_nodes = (np.arange(6) + 0.5) / 6.0
    for e, w, mx in zip(energies_kev, weights, mfp, strict=True):
        scattered = slope * mx * w
        if scattered <= 1e-7 or e < 60.0:
            continue
        single = scattered / (1.0 + 0.5 * mx)
        k = e / ME_C2_KEV
        r = 1.0 / (1.0 + k * (1.0 - cos_nodes))
        kn = r * r * (r + 1.0 / r - (1.0 - cos_nodes**2))
        e1 = e * r
        spread1 = e * (1.0 - 1.0 / (1.0 + k)) / 6.0
        for ei, wi in zip(e1, kn / kn.sum() * single, strict=True):
            out.append((float(ei), float(wi), float(spread1)))
        e90 = e / (1.0 + k)
        lo = max(floor, e / 8.0)
        if e90 > lo:
            e2 = np.geomspace(lo, e90, 8)
            # slowing-down spectrum of multiply scattered photons ~ (sigma_C / mu)(E') / (E' mu(E'))
            shape = slowing_down_shape(material, e2) * np.gradient(e2)
            shape = shape / shape.sum() * (scattered - single)
            spread2 = float(np.log(e90 / lo) / 8.0) * e2
            for ei, wi, sp in zip(e2, shape, spread2, strict=True):
                out.append((float(ei), float(wi), float(sp)))
    return out


def build_templates(
    library: NuclideLibrary,
    model: DetectorModel,
    shields: tuple[tuple[str, float], ...] = DEFAULT_SHIELDS,
    max_energy_kev: float = 3100.0,
    table: ResponseTable | None = None,
) -> TemplateSet:
    """Templates of every library source (and shield variant) for ``model``; ``table`` overrides the
    model's own response table (used while fitting a preset)."""
    table = table or response_table(model)
    grid_lo = np.arange(0.0, max_energy_kev, GRID_STEP_KEV)
    n_grid = grid_lo.size
    src_idx, sh_idx = [], []
    p_t, p_e, p_a, p_s = [], [], [], []
    cont_rows = []
    sigma_cells = model.sigma_kev(np.maximum(grid_lo + 0.5, 5.0)) / GRID_STEP_KEV
    for si, source in enumerate(library.sources):
        e0 = source.energies_kev
        for vi, (mat, x) in enumerate(shields):
            ti = len(src_idx)
            src_idx.append(si)
            sh_idx.append(vi)
            w = source.yields * shield_transmission(mat, x, e0)
            keep = w > 1e-7
            e_l, w_l = e0[keep], w[keep]
            sp_l = source.spreads_kev[keep] if source.spreads_kev is not None else np.zeros(e_l.size)
            cont = np.zeros(n_grid)
            lines = [(float(e), float(wl), float(sp)) for e, wl, sp in zip(e_l, w_l, sp_l, strict=True)]
            if mat != "none":
                lines += shield_scatter_lines(mat, x, e_l, w_l)
            for e, wl, spread in lines:
                add_line_continuum(cont, grid_lo, table, e, wl)
                parts = [
                    (e, table.peak("peak", e)),
                    (e - table.xray_escape_kev, table.peak("escape", e) if e > table.xray_escape_kev + 5 else 0.0),
                    (e - ME_C2_KEV, table.peak("single_escape", e) if e > 2 * ME_C2_KEV else 0.0),
                    (e - 2 * ME_C2_KEV, table.peak("double_escape", e) if e > 2 * ME_C2_KEV else 0.0),
                ]
                for pe, strength in parts:
                    if strength <= 0:
                        continue
                    pe_rec = float(table.apparent_energy_kev(pe))
                    area = strength * wl * float(table.threshold_pass(pe_rec))
                    sig = float(np.hypot(model.sigma_kev(max(pe, 5.0)), spread))
                    if table.tail_fraction > 0:
                        _add_tail(cont, grid_lo, pe_rec, area * table.tail_fraction, table.tail_length_sigma * sig)
                        area *= 1.0 - table.tail_fraction
                    p_t.append(ti)
                    p_e.append(pe_rec)
                    p_a.append(area)
                    p_s.append(sig)
            cont = _blur(cont, sigma_cells)
            if table.threshold_kev > 0:
                cont *= table.threshold_pass(grid_lo + 0.5 * GRID_STEP_KEV)
            cont_rows.append(np.concatenate([[0.0], np.cumsum(cont)]))
    return TemplateSet(
        model=model,
        source_names=library.names,
        shields=tuple(shields),
        source_index=np.asarray(src_idx),
        shield_index=np.asarray(sh_idx),
        peak_template=np.asarray(p_t, dtype=np.int64),
        peak_energy_kev=np.asarray(p_e),
        peak_area=np.asarray(p_a),
        peak_sigma_kev=np.asarray(p_s),
        grid_lo_kev=grid_lo,
        continuum_cum=np.asarray(cont_rows),
    )


@functools.lru_cache(maxsize=8)
def templates_for(model_name: str, shields: tuple[tuple[str, float], ...] = DEFAULT_SHIELDS) -> TemplateSet:
    from agent.spectral.library import default_library

    return build_templates(default_library(), detector_model(model_name), shields)
