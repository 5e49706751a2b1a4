"""Nuclide line library for identification, embedded as package data.

Why embedded: the agent runs on a detector unit with no access to the project's shared reference
folder, so the tables it needs ship inside the package (``agent/spectral/data/*.csv``; each file's
header comments cite where the numbers come from: InterSpec ``PhotoPeak.lis`` / ENSDF for line
energies and yields, ICRP 107 for half-lives, ICRP 74 for dose conversion).

A library *source* (what the operator is told: "Cs-137", "HEU") is a sum of line sets of one or more
decay chains with fixed relative activities (``library.csv``): HEU carries a trace of U-238 lines, DU a
trace of U-235 lines, as their isotopics dictate.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

_DATA_PACKAGE = "agent.spectral.data"

_HALF_LIFE_UNITS_S = {
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "y": 365.25 * 86400.0,
}


class LibraryError(ValueError):
    """A library table is malformed or a source name is unknown."""


def read_data_csv(name: str) -> list[dict[str, str]]:
    """Rows of an embedded CSV (``#`` lines are comments holding the citation)."""
    try:
        text = resources.files(_DATA_PACKAGE).joinpath(name).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise LibraryError(f"embedded data file {name!r} is missing from {_DATA_PACKAGE}") from err
    body = "\n".join(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(body)))


def parse_half_life_s(text: str) -> float:
    """'30.17 y' -> seconds (Julian year, as ICRP 107 uses)."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([a-z]+)\s*", text)
    if not match or match.group(2) not in _HALF_LIFE_UNITS_S:
        raise LibraryError(f"cannot parse half-life {text!r}")
    return float(match.group(1)) * _HALF_LIFE_UNITS_S[match.group(2)]


def _component_key(source_name: str) -> str:
    """'Ra-226 + progeny (...)' -> 'Ra-226'; the key library.csv refers to."""
    return re.split(r"[ (]", source_name.strip(), maxsplit=1)[0]


@dataclass(frozen=True, slots=True, eq=False)
class Source:
    """One reportable library entry with its gamma lines (per decay of the first component)."""

    name: str  # nuclide name used in results, e.g. "U-235"
    label: str  # what an operator reads, e.g. "HEU"
    category: str  # industrial / medical / NORM / SNM
    half_life_s: float
    energies_kev: np.ndarray  # line energies, ascending
    yields: np.ndarray  # photons per decay (not per 100)
    spreads_kev: np.ndarray | None = None  # Gaussian sigma of pseudo-lines (continuum bins); None = all 0

    def lines_above(self, min_yield: float) -> tuple[np.ndarray, np.ndarray]:
        keep = self.yields >= min_yield
        return self.energies_kev[keep], self.yields[keep]


@dataclass(frozen=True, slots=True, eq=False)
class NuclideLibrary:
    """Ordered set of library sources; the order fixes template indices in the identifier."""

    sources: tuple[Source, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, name: str) -> Source:
        for source in self.sources:
            if source.name == name or source.label == name:
                return source
        raise LibraryError(f"unknown library source {name!r} (known: {', '.join(self.names)})")

    def index(self, name: str) -> int:
        # one scan, no ``names`` tuple built per call (the identifier asks several times a spectrum)
        for i, source in enumerate(self.sources):
            if source.name == name or source.label == name:
                return i
        raise LibraryError(f"unknown library source {name!r} (known: {', '.join(self.names)})")

    def subset(self, names: list[str] | tuple[str, ...]) -> NuclideLibrary:
        return NuclideLibrary(tuple(self[n] for n in names))


@functools.cache
def line_table() -> dict[str, tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
    """Component key -> (half-life s, energies keV, photons per decay, pseudo-line spread keV).

    ``gamma_lines.csv`` (the shared reference's strongest lines), ``library_lines.csv`` (the N42.34 and
    RASE nuclides added to it) and ``extra_lines.csv`` (weaker lines of the same sources).
    """
    grouped: dict[str, list[tuple[float, float, float]]] = {}
    half_lives: dict[str, float] = {}
    for row in read_data_csv("gamma_lines.csv") + read_data_csv("library_lines.csv"):
        key = _component_key(row["source"])
        half_lives[key] = parse_half_life_s(row["half_life"])
        grouped.setdefault(key, []).append((float(row["energy_keV"]), float(row["photons_per_100_decays"]) / 100,
                                            float(row.get("spread_keV") or 0.0)))
    for row in read_data_csv("extra_lines.csv"):
        grouped[row["component"]].append((float(row["energy_keV"]), float(row["photons_per_100_decays"]) / 100,
                                          0.0))
    table = {}
    for key, lines in grouped.items():
        arr = np.array(sorted(lines))
        table[key] = (half_lives[key], arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy())
    return table


@functools.cache
def default_library() -> NuclideLibrary:
    """The identification library: ANSI N42.34 list plus the RASE set (industrial, medical, NORM, SNM)."""
    lines = line_table()
    order: list[str] = []
    parts: dict[str, list[dict[str, str]]] = {}
    for row in read_data_csv("library.csv"):
        if row["name"] not in parts:
            order.append(row["name"])
            parts[row["name"]] = []
        parts[row["name"]].append(row)
    sources = []
    for name in order:
        rows = parts[name]
        energies: list[np.ndarray] = []
        yields: list[np.ndarray] = []
        spreads: list[np.ndarray] = []
        for row in rows:
            if row["component"] not in lines:
                raise LibraryError(f"library.csv: {name} refers to unknown line set {row['component']!r}")
            _, e, y, sp = lines[row["component"]]
            energies.append(e)
            yields.append(y * float(row["relative_activity"]))
            spreads.append(sp)
        e_all = np.concatenate(energies)
        y_all = np.concatenate(yields)
        sp_all = np.concatenate(spreads)
        order_idx = np.argsort(e_all)
        sources.append(
            Source(
                name=name,
                label=rows[0]["label"],
                category=rows[0]["category"],
                half_life_s=lines[rows[0]["component"]][0],
                energies_kev=e_all[order_idx],
                yields=y_all[order_idx],
                spreads_kev=sp_all[order_idx] if np.any(sp_all > 0) else None,
            )
        )
    return NuclideLibrary(tuple(sources))


# Background lines used for gain tracking (natural radioactivity everywhere outdoors).
K40_KEV = 1460.75
TL208_KEV = 2614.53
BI214_KEV = 609.31
