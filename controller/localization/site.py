"""The site in the localization model: where cargo is, how high it is stacked, what may attenuate.

Why the site belongs in the fit: a hidden source sits *in cargo*, not in a lane, and the cargo
between it and a detector attenuates.  Fitting a free point in space with a bare 1/r^2 law pulls
the estimate towards the lane on the thinly shielded side (the count rate there is higher than
the distance alone explains) and lets it sit in a lane or above the stack.  Here the source is
constrained to the inside of a container *column* (one bay of a row, all its tiers), and every
source-to-detector ray is traced through the columns to get its path length through cargo; the
cargo's linear attenuation coefficient is an unknown of the fit, one per *cargo group* (by default
one per row; a site file may give each bay its own group when the cargo differs).

File format (YAML, ``schema: 1``, unknown keys rejected, checked at load)::

    schema: 1
    name: demo-yard
    origin: {lat_deg: 51.95, lon_deg: 4.05, alt_m: 5.0}      # optional: for lat/lon output
    container: {length_m: 12.19, width_m: 2.44, height_m: 2.59, wall_m: 0.002}
    cargo_attenuation_prior_per_m: {mean: 1.0, sigma: 1.5}   # Gaussian prior, truncated at 0
    rows:
      - {id: A, x0_m: 10.0, y0_m: 0.0, axis: x, n_bays: 10, gap_m: 0.3, stack: 2}
      - {id: B, x0_m: 10.0, y0_m: 12.0, n_bays: 10, stacks: [2, 2, 3, 0, 1, 2, 2, 2, 2, 2]}
    containers:                                              # optional: boxes of any other shape
      - {label: X-1, lo_m: [0, 60, 0], hi_m: [6.06, 62.44, 2.59], cargo_group: reefer}

A row is ``n_bays`` containers end to end along +x (``axis: x``) or +y from its south-west corner
(x0_m, y0_m); ``stack`` tiers in every bay, or ``stacks`` per bay (0: empty bay).  Stacked tiers
form one column box (the floors between tiers are thin steel, not modelled).

Cargo attenuation prior: the effective mu of the build-up form used by the model
(:mod:`controller.localization.kernels`) is ~0.07 cm2/g for Cs-137 gross counts in iron, i.e.
~1 m^-1 for smeared cargo of 0.15 g/cm3.  The default prior (mean 1.0 m^-1, sigma 1.5 m^-1,
truncated at 0) is wide enough for empty containers and dense cargo alike; the data decide when
two lanes see the source through different thicknesses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.config import ConfigError, format_validation_error
from agent.safe_yaml import YamlError, load_yaml_file

__all__ = ["Column", "Site", "SiteError", "load_site", "site_from_dict"]

SCHEMA_VERSION = 1


class SiteError(ConfigError):
    """A site file that cannot be used; the message names the file and the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OriginSpec(_Model):
    lat_deg: float = Field(ge=-90, le=90)
    lon_deg: float = Field(ge=-180, le=180)
    alt_m: float = 0.0


class ContainerSpec(_Model):
    """External dimensions (ISO 668 40 ft: 12.19 x 2.44 x 2.59 m) and wall thickness."""

    length_m: float = Field(gt=0, le=60)
    width_m: float = Field(gt=0, le=10)
    height_m: float = Field(gt=0, le=10)
    wall_m: float = Field(default=0.002, ge=0, le=0.2)


class PriorSpec(_Model):
    mean: float = Field(default=1.0, ge=0, le=50)
    sigma: float = Field(default=1.5, gt=0, le=50)


class RowSpec(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_]+$", max_length=32)
    x0_m: float = Field(ge=-1e5, le=1e5)
    y0_m: float = Field(ge=-1e5, le=1e5)
    axis: Literal["x", "y"] = "x"
    n_bays: int = Field(ge=1, le=500)
    gap_m: float = Field(default=0.3, ge=0, le=50)
    stack: int | None = Field(default=None, ge=0, le=12)
    stacks: list[int] | None = None
    cargo_group: str | None = Field(default=None, max_length=64)
    bay_cargo_groups: list[str] | None = None  # per bay, when cargo differs along the row

    @model_validator(mode="after")
    def _stacks(self) -> RowSpec:
        if (self.stack is None) == (self.stacks is None):
            raise ValueError("give either stack (tiers in every bay) or stacks (one per bay)")
        if self.stacks is not None:
            if len(self.stacks) != self.n_bays:
                raise ValueError(f"stacks has {len(self.stacks)} entries, n_bays is {self.n_bays}")
            if any(not 0 <= s <= 12 for s in self.stacks):
                raise ValueError("stacks entries must be 0..12")
        if self.bay_cargo_groups is not None and len(self.bay_cargo_groups) != self.n_bays:
            raise ValueError(f"bay_cargo_groups has {len(self.bay_cargo_groups)} entries, n_bays is {self.n_bays}")
        return self


class BoxSpec(_Model):
    label: str = Field(min_length=1, max_length=64)
    lo_m: tuple[float, float, float]
    hi_m: tuple[float, float, float]
    cargo_group: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _order(self) -> BoxSpec:
        if any(h <= lo for lo, h in zip(self.lo_m, self.hi_m, strict=True)):
            raise ValueError("hi_m must exceed lo_m on every axis")
        if self.lo_m[2] < 0:
            raise ValueError("lo_m z below the ground (0)")
        return self


class SiteSpec(_Model):
    schema_: Literal[1] = Field(alias="schema")
    name: str = Field(default="site", max_length=128)
    origin: OriginSpec | None = None
    container: ContainerSpec
    cargo_attenuation_prior_per_m: PriorSpec = Field(default_factory=PriorSpec)
    rows: list[RowSpec] = Field(default_factory=list, max_length=500)
    containers: list[BoxSpec] = Field(default_factory=list, max_length=5000)


@dataclass(frozen=True)
class Column:
    """One bay of a row with all its tiers: the volume a source may occupy (outer box)."""

    label: str  # "B-6": row B, 6th bay from the west/south (1-based)
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    tiers: int
    group: int  # index into Site.groups

    def interior(self, wall_m: float) -> tuple[np.ndarray, np.ndarray]:
        lo = np.asarray(self.lo, dtype=float) + wall_m
        hi = np.asarray(self.hi, dtype=float) - wall_m
        return lo, hi


@dataclass(frozen=True)
class Site:
    """Container columns of a yard, as arrays for the ray tracer and bounds for the fit."""

    name: str
    columns: tuple[Column, ...]
    groups: tuple[str, ...]
    wall_m: float
    tier_height_m: float
    mu_prior_mean_per_m: float = 1.0
    mu_prior_sigma_per_m: float = 1.5
    origin: tuple[float, float, float] | None = None  # lat, lon, alt of the local frame origin

    @property
    def z_max_m(self) -> float:
        """Top of the highest stack: the upper bound of a source's height."""
        return max((c.hi[2] for c in self.columns), default=0.0)

    def lo_hi(self) -> tuple[np.ndarray, np.ndarray]:
        """Cargo interiors of all columns, (C, 3) each."""
        lo = np.array([c.interior(self.wall_m)[0] for c in self.columns], dtype=float).reshape(-1, 3)
        hi = np.array([c.interior(self.wall_m)[1] for c in self.columns], dtype=float).reshape(-1, 3)
        return lo, hi

    def group_index(self) -> np.ndarray:
        return np.array([c.group for c in self.columns], dtype=np.int64)

    def column_at(self, x_m: float, y_m: float) -> int | None:
        """Index of the column whose footprint holds (x, y), else None."""
        for i, c in enumerate(self.columns):
            if c.lo[0] <= x_m <= c.hi[0] and c.lo[1] <= y_m <= c.hi[1]:
                return i
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "columns": len(self.columns), "groups": list(self.groups),
                "z_max_m": self.z_max_m}


def site_from_dict(data: Any, source: str = "site") -> Site:
    """Validate a parsed site file and build the :class:`Site`; raises :class:`SiteError`."""
    if not isinstance(data, dict):
        raise SiteError(f"{source}: top level must be a mapping")
    if "schema" in data and data["schema"] != SCHEMA_VERSION:
        raise SiteError(f"{source}: schema: version {data['schema']!r} not supported (this is {SCHEMA_VERSION})")
    try:
        spec = SiteSpec.model_validate(data)
    except ValidationError as err:
        raise SiteError(format_validation_error(err, source)) from err
    return _build(spec, source)


def load_site(path: str | Path) -> Site:
    """Read and validate a site YAML file (bounded reader: size, aliases, depth)."""
    p = Path(path)
    try:
        data = load_yaml_file(p)
    except YamlError as err:
        raise SiteError(str(err)) from err
    return site_from_dict(data, str(p))


def _build(spec: SiteSpec, source: str) -> Site:
    c = spec.container
    if 2 * c.wall_m >= min(c.length_m, c.width_m, c.height_m):
        raise SiteError(f"{source}: container.wall_m: walls thicker than the container")
    groups: list[str] = []

    def group(name: str) -> int:
        if name not in groups:
            groups.append(name)
        return groups.index(name)

    columns: list[Column] = []
    ids = [r.id for r in spec.rows]
    if len(set(ids)) != len(ids):
        raise SiteError(f"{source}: rows: row ids must be unique")
    for r in spec.rows:
        stacks = r.stacks if r.stacks is not None else [int(r.stack or 0)] * r.n_bays
        for i, tiers in enumerate(stacks):
            if tiers == 0:
                continue
            a0 = (r.x0_m if r.axis == "x" else r.y0_m) + i * (c.length_m + r.gap_m)
            if r.axis == "x":
                lo = (a0, r.y0_m, 0.0)
                hi = (a0 + c.length_m, r.y0_m + c.width_m, tiers * c.height_m)
            else:
                lo = (r.x0_m, a0, 0.0)
                hi = (r.x0_m + c.width_m, a0 + c.length_m, tiers * c.height_m)
            gname = (r.bay_cargo_groups[i] if r.bay_cargo_groups else None) or r.cargo_group or r.id
            columns.append(Column(f"{r.id}-{i + 1}", lo, hi, tiers, group(gname)))
    for b in spec.containers:
        tiers = max(1, round((b.hi_m[2] - b.lo_m[2]) / c.height_m))
        columns.append(Column(b.label, tuple(b.lo_m), tuple(b.hi_m), tiers, group(b.cargo_group or b.label)))
    labels = [col.label for col in columns]
    if len(set(labels)) != len(labels):
        raise SiteError(f"{source}: container labels must be unique")
    _check_overlaps(columns, source)
    origin = (spec.origin.lat_deg, spec.origin.lon_deg, spec.origin.alt_m) if spec.origin else None
    return Site(
        name=spec.name,
        columns=tuple(columns),
        groups=tuple(groups),
        wall_m=c.wall_m,
        tier_height_m=c.height_m,
        mu_prior_mean_per_m=spec.cargo_attenuation_prior_per_m.mean,
        mu_prior_sigma_per_m=spec.cargo_attenuation_prior_per_m.sigma,
        origin=origin,
    )


def _check_overlaps(columns: list[Column], source: str) -> None:
    """Columns must not overlap: a ray would count the cargo twice."""
    if len(columns) < 2:
        return
    lo = np.array([c.lo for c in columns])
    hi = np.array([c.hi for c in columns])
    for i in range(len(columns)):
        over = np.all((lo[i + 1:] < hi[i] - 1e-6) & (hi[i + 1:] > lo[i] + 1e-6), axis=1)
        if over.any():
            j = i + 1 + int(np.flatnonzero(over)[0])
            raise SiteError(f"{source}: containers {columns[i].label} and {columns[j].label} overlap")
