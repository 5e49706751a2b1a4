"""The scenario file: the simulated world (yard, sources, units, background), typed and validated.

Why a validated model and not a dict: the same YAML drives every simulated device of every unit
process and the controller's ground truth; a typo ("activty_mbq") must stop the demo at load with
the file and the key named, not give a world without a source.  Unknown keys are rejected, the
schema version is checked (``schema: 1``), and cross references (a source's container, unique unit
ids) are checked after the field types, again naming the key.

The format is documented by the packaged demo (``hal_sim/scenarios/demo_yard.yaml``); optional
extensions beyond that demo are commented on the fields below and all have defaults, so a
schema-1 file written for the first version still loads.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.config import ConfigError, SiteConfig, format_validation_error
from agent.safe_yaml import YamlError, load_yaml_file
from agent.wire_schema import UNIT_ID_PATTERN

SCHEMA_VERSION = 1
_PACKAGED_DIR = Path(__file__).resolve().parent / "scenarios"
_CONTAINER_LABEL = re.compile(r"^(?P<row>[A-Za-z0-9_]+)-(?P<index>\d+)$")

XY = tuple[float, float]
XYZ = tuple[float, float, float]


class ScenarioError(ConfigError):
    """A scenario file that cannot be used; the message names the file and the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- site and time
# The site is the same concept for a simulated scenario and a real unit's profile: one model.
SiteSpec = SiteConfig


class TimeSpec(_Model):
    start_utc: str
    rate: float = Field(default=1.0, gt=0, description="simulated seconds per wall-clock second")
    duration_s: float = Field(default=3600.0, gt=0)

    @field_validator("start_utc")
    @classmethod
    def _iso_utc(cls, v: str) -> str:
        parse_utc(v)
        return v

    @property
    def start_datetime(self) -> datetime:
        return parse_utc(self.start_utc)


def parse_utc(text: str) -> datetime:
    """ISO-8601 with an explicit UTC offset ('Z' or +00:00); naive times are refused (ambiguous)."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError as err:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from err
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset (write e.g. 2026-11-27T08:00:00Z)")
    return t.astimezone(UTC)


class EnvironmentSpec(_Model):
    """Optional (extension): air temperature, a daily cosine peaking at 15:00 local solar time.

    Drives the detector temperature handed to the gain-drift model of the gamma response.
    """

    temperature_mean_c: float = 12.0
    temperature_amplitude_c: float = Field(default=5.0, ge=0)


# --------------------------------------------------------------------------- background
class NormPatch(_Model):
    """A smooth change of the terrestrial background (granite ballast, fertiliser store ...).

    The terrestrial part of the background is multiplied by ``1 + (factor - 1) exp(-(d/radius)^2)``
    at distance d from the centre; several patches multiply.
    """

    x_m: float
    y_m: float
    radius_m: float = Field(gt=0)
    factor: float = Field(ge=0)


class BackgroundSpec(_Model):
    dose_rate_usv_h: float = Field(gt=0, description="H*(10) of the natural background at 1 m")
    cosmic_fraction: float = Field(ge=0, lt=1)
    k40_bq_kg: float = Field(ge=0)
    u238_bq_kg: float = Field(ge=0)
    th232_bq_kg: float = Field(ge=0)
    patches: list[NormPatch] = Field(default_factory=list)


# --------------------------------------------------------------------------- yard
class ContainerSpec(_Model):
    """External dimensions of one container (ISO 668 40 ft: 12.19 x 2.44 x 2.59 m)."""

    length_m: float = Field(gt=0)
    width_m: float = Field(gt=0)
    height_m: float = Field(gt=0)
    wall_steel_mm: float = Field(default=2.0, ge=0)


class CargoSpec(_Model):
    """Cargo smeared homogeneously over the container's inside (material as the gamma model names it)."""

    material: str = Field(min_length=1)
    density_g_cm3: float = Field(ge=0)


class RowSpec(_Model):
    """``n_containers`` end to end along +x from the south-west corner (x0_m, y0_m), ``stack`` tiers."""

    id: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    x0_m: float
    y0_m: float
    n_containers: int = Field(ge=1)
    gap_m: float = Field(default=0.3, ge=0)
    stack: int = Field(default=1, ge=1, le=9)
    cargo: CargoSpec


class YardSpec(_Model):
    container: ContainerSpec
    rows: list[RowSpec] = Field(default_factory=list)


# --------------------------------------------------------------------------- sources
class ShieldLayer(_Model):
    """Optional (extension): local shielding around a source, e.g. a lead pot, as areal density."""

    material: str = Field(min_length=1)
    areal_density_g_cm2: float = Field(ge=0)


class SourceSpec(_Model):
    """A point source, either in a container (``container`` + ``tier`` + ``offset_m`` from the
    container's south-west floor corner) or, as an extension, free in the yard (``position_m``)."""

    id: str = Field(min_length=1)
    nuclide: str = Field(min_length=1)
    activity_mbq: float = Field(gt=0)
    container: str | None = Field(default=None, pattern=_CONTAINER_LABEL.pattern)
    tier: int = Field(default=0, ge=0)
    offset_m: XYZ | None = None
    position_m: XYZ | None = None  # extension: ENU position of a source outside containers
    shielding: list[ShieldLayer] = Field(default_factory=list)  # extension


# --------------------------------------------------------------------------- units
class MobileUnitSpec(_Model):
    """A vehicle with a gamma spectrometer and GNSS driving a polyline route at constant speed."""

    unit_id: str = Field(pattern=UNIT_ID_PATTERN)
    type: Literal["mobile"]
    detector: str = Field(min_length=1)
    detector_height_m: float = Field(default=1.5, ge=0)
    speed_m_s: float = Field(gt=0)
    start_s: float = Field(default=0.0, ge=0)
    route: list[XY] = Field(min_length=2)
    loop: bool = False


class HandheldUnitSpec(_Model):
    """An operator with a handheld spectrometer, waiting at ``start_m`` until given a task."""

    unit_id: str = Field(pattern=UNIT_ID_PATTERN)
    type: Literal["handheld"]
    detector: str = Field(min_length=1)
    start_m: XY
    walk_speed_m_s: float = Field(default=1.4, gt=0)
    detector_height_m: float = Field(default=1.0, ge=0)  # extension: instrument held at ~1 m
    standoff_m: float = Field(default=0.5, gt=0, le=1.5)  # extension: distance kept from a wall
    return_home: bool = True  # extension: walk back to start_m when the task is cleared


class CameraUnitSpec(_Model):
    unit_id: str = Field(pattern=UNIT_ID_PATTERN)
    type: Literal["camerabox"]
    fps: float = Field(default=10.0, gt=0)
    resolution: tuple[int, int] = (320, 240)


UnitSpec = Annotated[MobileUnitSpec | HandheldUnitSpec | CameraUnitSpec, Field(discriminator="type")]
RadiationUnitSpec = MobileUnitSpec | HandheldUnitSpec


# --------------------------------------------------------------------------- scenario
class Scenario(_Model):
    schema_: Literal[1] = Field(alias="schema")
    name: str = "scenario"
    seed: int = Field(default=0, ge=0)
    site: SiteSpec
    time: TimeSpec
    environment: EnvironmentSpec = Field(default_factory=EnvironmentSpec)
    background: BackgroundSpec
    yard: YardSpec
    sources: list[SourceSpec] = Field(default_factory=list)
    units: list[UnitSpec] = Field(default_factory=list)

    def unit(self, unit_id: str) -> MobileUnitSpec | HandheldUnitSpec | CameraUnitSpec:
        for u in self.units:
            if u.unit_id == unit_id:
                return u
        known = ", ".join(u.unit_id for u in self.units) or "none"
        raise ScenarioError(f"scenario {self.name}: no unit '{unit_id}' (units: {known})")

    def row(self, row_id: str) -> RowSpec:
        for r in self.yard.rows:
            if r.id == row_id:
                return r
        raise ScenarioError(f"scenario {self.name}: no row '{row_id}'")


def _cross_check(sc: Scenario) -> list[str]:
    """Checks that span several keys; each problem names the key it is about."""
    problems: list[str] = []
    rows = {r.id: r for r in sc.yard.rows}
    if len(rows) != len(sc.yard.rows):
        problems.append("yard.rows: row ids must be unique")
    c = sc.yard.container
    if 2 * c.wall_steel_mm / 1000.0 >= min(c.width_m, c.height_m, c.length_m):
        problems.append("yard.container.wall_steel_mm: walls thicker than the container")
    seen_units: set[str] = set()
    for i, u in enumerate(sc.units):
        if u.unit_id in seen_units:
            problems.append(f"units.{i}.unit_id: duplicate unit id '{u.unit_id}'")
        seen_units.add(u.unit_id)
    seen_sources: set[str] = set()
    for i, s in enumerate(sc.sources):
        key = f"sources.{i}"
        if s.id in seen_sources:
            problems.append(f"{key}.id: duplicate source id '{s.id}'")
        seen_sources.add(s.id)
        if (s.container is None) == (s.position_m is None):
            problems.append(f"{key}: give either container (+ tier, offset_m) or position_m")
            continue
        if s.container is None:
            continue
        m = _CONTAINER_LABEL.match(s.container)
        if m is None:  # already reported by the field pattern
            continue
        row = rows.get(m["row"])
        if row is None:
            problems.append(f"{key}.container: no row '{m['row']}' (rows: {', '.join(rows) or 'none'})")
            continue
        index = int(m["index"])
        if not 1 <= index <= row.n_containers:
            problems.append(f"{key}.container: row {row.id} has containers 1..{row.n_containers}, not {index}")
        if s.tier >= row.stack:
            problems.append(f"{key}.tier: row {row.id} is stacked {row.stack} high (tiers 0..{row.stack - 1})")
        if s.offset_m is None:
            problems.append(f"{key}.offset_m: required with container (from its south-west floor corner)")
        else:
            for axis, v, lim in zip("xyz", s.offset_m, (c.length_m, c.width_m, c.height_m), strict=True):
                if not 0.0 < v < lim:
                    problems.append(f"{key}.offset_m: {axis}={v} m is outside the container (0..{lim} m)")
    return problems


def scenario_from_dict(data: Any, source: str = "scenario") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: top level must be a mapping")
    if "schema" in data and data["schema"] != SCHEMA_VERSION:
        raise ScenarioError(f"{source}: schema: version {data['schema']!r} not supported (this is {SCHEMA_VERSION})")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(format_validation_error(err, source)) from err
    problems = _cross_check(sc)
    if problems:
        raise ScenarioError("\n".join([f"{source}: {len(problems)} problem(s)", *(f"  - {p}" for p in problems)]))
    return sc


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML; raises :class:`ScenarioError` naming the file and key."""
    p = Path(path)
    try:
        data = load_yaml_file(p)  # bounded: size, alias expansion, depth
    except YamlError as err:
        raise ScenarioError(str(err)) from err
    return scenario_from_dict(data, str(p))


def packaged_scenarios() -> list[str]:
    return sorted(p.stem for p in _PACKAGED_DIR.glob("*.yaml"))


def packaged_scenario_path(name: str) -> Path:
    """Path of a scenario shipped inside the package (the demo runs without the repo's configs/)."""
    p = _PACKAGED_DIR / f"{name}.yaml"
    if not p.is_file():
        raise ScenarioError(f"no packaged scenario '{name}' (packaged: {', '.join(packaged_scenarios())})")
    return p


def resolve_scenario(scenario: str | Path) -> Path:
    """A device's ``scenario`` parameter: an existing file path, or the name of a packaged scenario."""
    p = Path(scenario)
    if p.is_file():
        return p.resolve()
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        raise ScenarioError(f"scenario file {p} not found")
    return packaged_scenario_path(str(scenario))
