"""Gamma and x-ray line library of the sources the simulated world can contain.

Lines and yields come from ``data/gamma_lines.csv`` (InterSpec PhotoPeak.lis, half-lives ICRP-107),
completed by ``data/extra_lines.csv`` (LNHB/DDEP values for lines the short list omits, e.g. the
Np L x-rays of Am-241 that dominate a pocket detector's low-energy spectrum). Chains are in secular
equilibrium as tabulated (Ra-226 with Pb-214/Bi-214, Th-232 with Ac-228/Pb-212/Tl-208, U-238 with
Th-234/Pa-234m, U-235 with Th-231). Positron emitters (F-18, Na-22) carry the 511 keV annihilation
line with yield 2 x beta+ branching, as in the table.

Names are the short forms used across the project ("Cs-137", "Ra-226", "Th-232"); the table's long
labels ("Cs-137 (+Ba-137m)") are kept in ``Nuclide.label``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from hal_sim.gamma._data import read_table

_UNIT_S = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "y": 365.25 * 86400.0}


def _half_life_s(text: str) -> float:
    value, unit = text.split()
    return float(value) * _UNIT_S[unit]


@dataclass(frozen=True)
class Nuclide:
    """A source: its photon lines (keV, photons per decay) and true-coincidence cascades."""

    name: str
    label: str
    half_life_s: float
    energies_kev: np.ndarray = field(repr=False)
    yields_per_decay: np.ndarray = field(repr=False)
    # (E1 keV, E2 keV, probability per decay that both are emitted in the same decay)
    cascades: tuple[tuple[float, float, float], ...] = ()

    @property
    def photons_per_decay(self) -> float:
        return float(self.yields_per_decay.sum())


def _short_name(label: str) -> str:
    m = re.match(r"([A-Z][a-z]?-\d+m?)", label)
    if not m:
        raise ValueError(f"cannot parse nuclide label {label!r}")
    return m.group(1)


def _load() -> dict[str, Nuclide]:
    lines: dict[str, list[tuple[float, float]]] = {}
    labels: dict[str, str] = {}
    half: dict[str, float] = {}
    for r in read_table("gamma_lines.csv"):
        name = _short_name(r["source"])
        labels[name] = r["source"]
        half[name] = _half_life_s(r["half_life"])
        lines.setdefault(name, []).append((float(r["energy_keV"]), float(r["photons_per_100_decays"]) / 100))
    for r in read_table("extra_lines.csv"):
        lines[r["source"]].append((float(r["energy_keV"]), float(r["photons_per_100_decays"]) / 100))
    casc: dict[str, list[tuple[float, float, float]]] = {}
    for r in read_table("coincidences.csv"):
        casc.setdefault(r["source"], []).append(
            (float(r["energy1_keV"]), float(r["energy2_keV"]), float(r["probability_per_decay"]))
        )
    out = {}
    for name, ls in lines.items():
        ls.sort()
        e = np.array([x[0] for x in ls])
        y = np.array([x[1] for x in ls])
        out[name] = Nuclide(name, labels[name], half[name], e, y, tuple(casc.get(name, ())))
    return out


NUCLIDES: dict[str, Nuclide] = _load()


def get_nuclide(name: str) -> Nuclide:
    """Nuclide by short name; ValueError listing the known names otherwise."""
    try:
        return NUCLIDES[name]
    except KeyError:
        raise ValueError(f"unknown nuclide {name!r}; known: {', '.join(sorted(NUCLIDES))}") from None
