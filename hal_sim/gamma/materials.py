"""Photon interaction coefficients of shields, air, soil and detector crystals.

Data: NIST X-Ray Mass Attenuation Coefficients (Hubbell & Seltzer, NIST SRD 126, 2004) for the
elements and materials in ``data/nist_xray_mass_coef.csv`` (checked value for value against the
project's reference ``mass_attenuation.csv``). Compounds (NaI, CsI, LaBr3, CZT) use the mixture rule
mu/rho = sum_i w_i (mu/rho)_i (Hubbell & Seltzer, section 3).

The total coefficient is split into Compton, photoelectric and pair parts because the detector
response needs them separately: Compton from the Klein-Nishina cross-section per electron times
N_A Z/A (binding neglected: it matters only where photoabsorption dominates anyway); the remainder
is photoabsorption below 1022 keV; above it the photoelectric part is continued as ~1/E (Sauter's
high-energy limit, Hubbell 1969 NSRDS-NBS 29 fig. 7) and the rest is pair production.
Interpolation is log-log between tabulated points, with absorption edges kept as step changes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from hal_sim.gamma._data import read_table

N_AVOGADRO = 6.02214076e23
R_E_CM = 2.8179403262e-13  # classical electron radius
ME_C2_KEV = 510.99895

# Z, A (g/mol) and K-shell data of the elements we need: K x-ray energy (intensity-weighted mean of
# K-alpha/K-beta) and fluorescence yield omega_K, from the X-ray Data Booklet (LBNL, Thompson et al.
# 2009, tables 1-2 and 1-3) and Krause, J. Phys. Chem. Ref. Data 8 (1979) 307.
ELEMENTS: dict[str, tuple[int, float]] = {
    "sodium": (11, 22.98977),
    "aluminium": (13, 26.98154),
    "iron": (26, 55.845),
    "zinc": (30, 65.38),
    "germanium": (32, 72.630),
    "bromine": (35, 79.904),
    "cadmium": (48, 112.414),
    "tellurium": (52, 127.60),
    "iodine": (53, 126.90447),
    "cesium": (55, 132.90545),
    "lanthanum": (57, 138.90547),
    "lead": (82, 207.2),
}

K_SHELL: dict[str, tuple[float, float, float]] = {
    # element: (K edge keV, mean K x-ray energy keV, fluorescence yield omega_K)
    "bromine": (13.47, 12.0, 0.62),
    "cadmium": (26.71, 23.6, 0.84),
    "tellurium": (31.81, 27.9, 0.875),
    "iodine": (33.17, 29.1, 0.882),
    "cesium": (35.98, 31.3, 0.894),
    "lanthanum": (38.92, 33.9, 0.902),
    "germanium": (11.10, 10.0, 0.54),
    "lead": (88.0, 76.5, 0.963),
}

# Mass fractions of compounds (stoichiometry; Cd0.9Zn0.1Te for CZT) and densities (g/cm3):
# NaI 3.67, CsI 4.51, LaBr3 5.08, CZT 5.78, Ge 5.323 (Knoll, Radiation Detection and Measurement,
# 4th ed., tables 8.3 and 13.1; Saint-Gobain BrilLanCe-380 data sheet).
_COMPOUNDS: dict[str, tuple[dict[str, float], float]] = {
    "NaI": ({"sodium": 22.98977, "iodine": 126.90447}, 3.67),
    "CsI": ({"cesium": 132.90545, "iodine": 126.90447}, 4.51),
    "LaBr3": ({"lanthanum": 138.90547, "bromine": 3 * 79.904}, 5.08),
    "CZT": ({"cadmium": 0.9 * 112.414, "zinc": 0.1 * 65.38, "tellurium": 127.60}, 5.78),
    "Ge": ({"germanium": 72.630}, 5.323),
}

# Tabulated NIST materials that are not elements: Z/A from NIST SRD 126 table 2.
_MIXTURE_Z_OVER_A = {"air": 0.49919, "water": 0.55508, "polyethylene": 0.57034, "concrete_ordinary": 0.50274}

DENSITY_G_CM3 = {
    "air": 0.001205, "water": 1.0, "polyethylene": 0.93, "concrete_ordinary": 2.3, "sodium": 0.971,
    "aluminium": 2.699, "iron": 7.874, "zinc": 7.133, "germanium": 5.323, "bromine": 3.104,
    "cadmium": 8.65, "tellurium": 6.24, "iodine": 4.93, "cesium": 1.873, "lanthanum": 6.154, "lead": 11.35,
}

ALIASES = {
    "steel": "iron", "fe": "iron", "aluminum": "aluminium", "al": "aluminium", "pb": "lead",
    "concrete": "concrete_ordinary", "soil": "concrete_ordinary", "organic": "water",
    "cargo_organic": "water", "pe": "polyethylene", "h2o": "water", "na": "sodium", "i": "iodine",
    "nai": "NaI", "csi": "CsI", "labr3": "LaBr3", "czt": "CZT", "ge": "Ge", "hpge": "Ge",
}


def _log_interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Log-log interpolation; clamps to the table ends (10 keV - 10 MeV)."""
    lx = np.log(np.clip(np.asarray(x, dtype=float), xp[0], xp[-1]))
    return np.exp(np.interp(lx, np.log(xp), np.log(fp)))


def klein_nishina_sigma_cm2(energy_kev: np.ndarray) -> np.ndarray:
    """Total Klein-Nishina cross-section per free electron (Evans, The Atomic Nucleus, eq. 23-1.22)."""
    k = np.maximum(np.asarray(energy_kev, dtype=float), 1e-3) / ME_C2_KEV
    l2k = np.log1p(2 * k)
    s = (1 + k) / k**2 * (2 * (1 + k) / (1 + 2 * k) - l2k / k)
    s = s + l2k / (2 * k) - (1 + 3 * k) / (1 + 2 * k) ** 2
    return 2 * np.pi * R_E_CM**2 * s


@dataclass(frozen=True)
class Material:
    """One material: density, Z/A and tabulated mu/rho, mu_en/rho on an energy grid (keV)."""

    name: str
    density_g_cm3: float
    z_over_a: float
    z_eff: float
    energy_kev: np.ndarray = field(repr=False)
    mu_rho: np.ndarray = field(repr=False)
    mu_en_rho: np.ndarray = field(repr=False)
    mass_fractions: dict[str, float] = field(default_factory=dict, repr=False)

    def mu_rho_cm2_g(self, energy_kev: np.ndarray | float) -> np.ndarray:
        return _log_interp(np.asarray(energy_kev, dtype=float), self.energy_kev, self.mu_rho)

    def mu_en_rho_cm2_g(self, energy_kev: np.ndarray | float) -> np.ndarray:
        return _log_interp(np.asarray(energy_kev, dtype=float), self.energy_kev, self.mu_en_rho)

    def compton_rho_cm2_g(self, energy_kev: np.ndarray | float) -> np.ndarray:
        e = np.asarray(energy_kev, dtype=float)
        kn = klein_nishina_sigma_cm2(e) * N_AVOGADRO * self.z_over_a
        return np.minimum(kn, 0.98 * self.mu_rho_cm2_g(e))

    def components_cm2_g(self, energy_kev: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(photoelectric, Compton, pair) mass coefficients; they add up to mu/rho."""
        e = np.atleast_1d(np.asarray(energy_kev, dtype=float))
        mu = self.mu_rho_cm2_g(e)
        comp = self.compton_rho_cm2_g(e)
        resid = np.maximum(mu - comp, 0.0)
        thr = 2 * ME_C2_KEV
        resid_thr = float(np.maximum(self.mu_rho_cm2_g(thr) - self.compton_rho_cm2_g(thr), 0.0))
        photo_hi = resid_thr * thr / np.maximum(e, thr)
        photo = np.where(e <= thr, resid, np.minimum(resid, photo_hi))
        pair = resid - photo
        return photo, comp, pair

    def k_edges(self) -> list[tuple[str, float, float, float, float]]:
        """(element, mass fraction, K edge, K x-ray energy, omega_K) of its K-fluorescent elements."""
        out = []
        for el, w in self.mass_fractions.items():
            if el in K_SHELL:
                edge, ex, om = K_SHELL[el]
                out.append((el, w, edge, ex, om))
        return out


def _table(material: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [r for r in read_table("nist_xray_mass_coef.csv") if r["material"] == material]
    if not rows:
        raise KeyError(material)
    e = np.array([float(r["energy_keV"]) for r in rows])
    mu = np.array([float(r["mu_over_rho_cm2_g"]) for r in rows])
    men = np.array([float(r["mu_en_over_rho_cm2_g"]) for r in rows])
    # Absorption edges are listed twice at the same energy: nudge the lower-side point down a hair
    # so interpolation sees a step, not an ambiguity.
    for i in range(1, len(e)):
        if e[i] <= e[i - 1]:
            e[i - 1] = e[i] * (1 - 1e-6)
    return e, mu, men


@functools.cache
def get_material(name: str) -> Material:
    """Material by name (case-insensitive, aliases such as 'steel', 'concrete', 'organic' accepted).

    Raises ValueError naming the known materials if the name is unknown.
    """
    key = name.strip()
    key = ALIASES.get(key.lower(), key)
    if key.lower() in DENSITY_G_CM3:
        key = key.lower()
    if key in _COMPOUNDS:
        parts, density = _COMPOUNDS[key]
        total = sum(parts.values())
        fr = {el: m / total for el, m in parts.items()}
        tabs = {el: _table(el) for el in fr}
        grid = np.unique(np.concatenate([t[0] for t in tabs.values()]))
        grid = grid[(grid >= 10.0) & (grid <= 10000.0)]
        mu = sum(w * _log_interp(grid, *tabs[el][:2]) for el, w in fr.items())
        men = sum(w * _log_interp(grid, tabs[el][0], tabs[el][2]) for el, w in fr.items())
        za = sum(w * ELEMENTS[el][0] / ELEMENTS[el][1] for el, w in fr.items())
        zeff = sum(w * ELEMENTS[el][0] for el, w in fr.items())
        return Material(key, density, za, zeff, grid, np.asarray(mu), np.asarray(men), fr)
    if key in DENSITY_G_CM3:
        e, mu, men = _table(key)
        if key in ELEMENTS:
            z, a = ELEMENTS[key]
            return Material(key, DENSITY_G_CM3[key], z / a, float(z), e, mu, men, {key: 1.0})
        zeff = {"air": 7.36, "water": 7.42, "polyethylene": 5.44, "concrete_ordinary": 11.0}[key]
        return Material(key, DENSITY_G_CM3[key], _MIXTURE_Z_OVER_A[key], zeff, e, mu, men, {})
    known = sorted(set(DENSITY_G_CM3) | set(_COMPOUNDS) | set(ALIASES))
    raise ValueError(f"unknown material {name!r}; known: {', '.join(known)}")


def known_materials() -> list[str]:
    return sorted(set(DENSITY_G_CM3) | set(_COMPOUNDS))
