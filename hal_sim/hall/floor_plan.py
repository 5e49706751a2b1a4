"""Floor plan of a simulated arrival hall: walkable area, obstacles, named zones, cameras.

Why a YAML file validated at load: the same plan drives the pedestrian model (walkable geometry),
the renderer (cameras), the ground truth (zones of each behaviour) and the controller's behaviour
rules (zone names and kinds), so a typo must stop the program with a message naming the field,
not silently produce a hall where nobody ever enters the restroom.

Coordinates are metres in the hall frame: x along the passenger flow, y across, z up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from shapely import Point, Polygon, unary_union
from shapely.geometry.base import BaseGeometry

from agent.safe_yaml import YamlError, load_yaml_file

__all__ = ["CameraSpec", "FloorPlan", "HallConfig", "HallConfigError", "ZoneSpec", "load_hall", "ZONE_KINDS"]

XY = tuple[float, float]
PolygonXY = Annotated[list[XY], Field(min_length=3, max_length=64)]
ZONE_KINDS = ("gates", "corridor", "restroom", "baggage", "blind_spot", "customs_approach", "customs_green",
              "customs_red", "landside", "exit")
#: Zone kinds nobody is filmed in; a traveller there shows up as a gap in the trajectory.
UNSEEN_KINDS = ("restroom", "blind_spot")


class HallConfigError(ValueError):
    """A hall file that cannot be used; the message names the file and what was wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _polygon(points: list[XY], what: str) -> Polygon:
    poly = Polygon(points)
    if not poly.is_valid or poly.area <= 0:
        raise ValueError(f"{what}: polygon is self-intersecting or has no area")
    return poly


class ZoneSpec(_Strict):
    """A named area. ``entrance_m`` (unseen zones only) is the filmed area in front of the way in."""

    kind: Literal["gates", "corridor", "restroom", "baggage", "blind_spot", "customs_approach", "customs_green",
                  "customs_red", "landside", "exit"]
    polygon_m: PolygonXY
    entrance_m: PolygonXY | None = None

    @field_validator("polygon_m", "entrance_m")
    @classmethod
    def _valid_polygon(cls, v: list[XY] | None) -> list[XY] | None:
        if v is not None:
            _polygon(v, "zone")
        return v


class ObstacleSpec(_Strict):
    """A fixed object on the floor. Low ones (belts, lane barriers) are seen over; tall ones
    (>= ``TALL_M``: kiosks, screens, walls) hide what is behind them from the cameras."""

    polygon_m: PolygonXY
    height_m: float = Field(gt=0, le=10)

    @field_validator("polygon_m")
    @classmethod
    def _valid_polygon(cls, v: list[XY]) -> list[XY]:
        _polygon(v, "obstacle")
        return v


TALL_M = 2.0


class CameraSpec(_Strict):
    """A fixed camera: pinhole intrinsics and a pose given as position plus the ground point it looks at."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    position_m: tuple[float, float, float]
    look_at_m: XY
    fx_px: float = Field(gt=50, lt=5000)
    fy_px: float = Field(gt=50, lt=5000)
    width_px: int = Field(ge=64, le=4096)
    height_px: int = Field(ge=48, le=4096)
    roll_deg: float = Field(default=0.0, ge=-45, le=45)

    @field_validator("position_m")
    @classmethod
    def _above_floor(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not 1.5 <= v[2] <= 30:
            raise ValueError(f"camera height {v[2]} m: expected 1.5..30 m above the floor")
        return v


class HallConfig(_Strict):
    """The hall file as validated (see configs/hall.yaml)."""

    schema_: Literal["cedge.hall/1"] = Field(alias="schema")
    name: str = Field(min_length=1, max_length=64)
    flow_direction: XY
    walkable_m: list[PolygonXY] = Field(min_length=1, max_length=32)
    obstacles_m: dict[str, ObstacleSpec] = Field(default_factory=dict, max_length=64)
    zones: dict[str, ZoneSpec] = Field(min_length=1, max_length=64)
    checkpoints_m: dict[str, tuple[XY, XY]] = Field(default_factory=dict, max_length=16)
    spawn_points_m: list[XY] = Field(min_length=1, max_length=64)
    exit_points_m: list[XY] = Field(min_length=1, max_length=64)
    cameras: list[CameraSpec] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _consistent(self) -> HallConfig:
        walk = self.walkable()
        for name, ob in self.obstacles_m.items():
            if not walk.buffer(1e-6).contains(_polygon(ob.polygon_m, f"obstacle {name}")):
                raise ValueError(f"obstacle {name!r} is not inside the walkable area")
        free = self.free_space()
        for name, z in self.zones.items():
            if not _polygon(z.polygon_m, name).intersects(free):
                raise ValueError(f"zone {name!r} does not overlap the walkable area")
            if z.kind in UNSEEN_KINDS and z.entrance_m is None:
                raise ValueError(f"zone {name!r} of kind {z.kind} needs entrance_m (where it is entered, in view)")
        for label, pts in (("spawn point", self.spawn_points_m), ("exit point", self.exit_points_m)):
            for p in pts:
                if not free.contains(Point(p)):
                    raise ValueError(f"{label} {p} is not in free walkable space")
        ids = [c.id for c in self.cameras]
        if len(set(ids)) != len(ids):
            raise ValueError(f"camera ids are not unique: {ids}")
        fx, fy = self.flow_direction
        if fx * fx + fy * fy < 1e-6:
            raise ValueError("flow_direction must be a non-zero vector")
        return self

    def walkable(self) -> BaseGeometry:
        return unary_union([_polygon(p, "walkable") for p in self.walkable_m])

    def sight_region(self) -> BaseGeometry:
        """Where a line of sight may pass (in plan view): the walkable outline minus tall obstacles.
        Outer walls bound it, so a restroom behind a wall is seen only through its door."""
        tall = [_polygon(ob.polygon_m, n) for n, ob in self.obstacles_m.items() if ob.height_m >= TALL_M]
        return self.walkable().difference(unary_union(tall)) if tall else self.walkable()

    def free_space(self) -> BaseGeometry:
        """Walkable area minus obstacles: the geometry the pedestrian model walks in."""
        obstacles = [_polygon(ob.polygon_m, n) for n, ob in self.obstacles_m.items()]
        return self.walkable().difference(unary_union(obstacles)) if obstacles else self.walkable()


class FloorPlan:
    """Validated hall with shapely geometry for point-in-zone queries."""

    def __init__(self, config: HallConfig) -> None:
        self.config = config
        self.free_space = config.free_space()
        self.zone_polygons: dict[str, Polygon] = {n: Polygon(z.polygon_m) for n, z in config.zones.items()}
        self.entrance_polygons: dict[str, Polygon] = {
            n: Polygon(z.entrance_m) for n, z in config.zones.items() if z.entrance_m is not None}
        self.obstacle_polygons: dict[str, Polygon] = {n: Polygon(o.polygon_m) for n, o in config.obstacles_m.items()}
        self.obstacle_heights_m: dict[str, float] = {n: o.height_m for n, o in config.obstacles_m.items()}
        self.sight_region = config.sight_region()

    @property
    def name(self) -> str:
        return self.config.name

    def zone_kind(self, name: str) -> str:
        return self.config.zones[name].kind

    def zones_of_kind(self, kind: str) -> list[str]:
        return [n for n, z in self.config.zones.items() if z.kind == kind]

    def zones_at(self, x_m: float, y_m: float) -> list[str]:
        """Names of all zones containing the point (zones may overlap, e.g. a blind spot in baggage claim)."""
        p = Point(x_m, y_m)
        return [n for n, poly in self.zone_polygons.items() if poly.covers(p)]

    def random_point_in(self, zone: str, rng, margin_m: float = 0.6) -> XY:
        """A uniformly drawn free point in a zone at least ``margin_m`` from walls and obstacles."""
        area = self.zone_polygons[zone].intersection(self.free_space.buffer(-margin_m))
        if area.is_empty:
            raise HallConfigError(f"zone {zone!r} has no free space {margin_m} m away from walls")
        minx, miny, maxx, maxy = area.bounds
        for _ in range(1000):
            p = (float(rng.uniform(minx, maxx)), float(rng.uniform(miny, maxy)))
            if area.contains(Point(p)):
                return p
        raise HallConfigError(f"zone {zone!r}: could not draw a free point")


def load_hall(path: str | Path) -> FloorPlan:
    """Load and validate a hall file; every failure is a :class:`HallConfigError` naming the file."""
    path = Path(path)
    try:
        raw = load_yaml_file(path)
    except (OSError, YamlError) as exc:
        msg = str(exc)
        raise HallConfigError(msg if str(path) in msg else f"{path}: {msg}") from None
    try:
        return FloorPlan(HallConfig.model_validate(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise HallConfigError(f"{path}: {where}: {first['msg']} ({exc.error_count()} error(s))") from None


def default_hall_path() -> Path:
    """configs/hall.yaml of this checkout (also shipped as package data next to this module)."""
    here = Path(__file__).resolve()
    for cand in (here.parent / "hall.yaml", here.parents[2] / "configs" / "hall.yaml"):
        if cand.exists():
            return cand
    raise HallConfigError("no hall.yaml found next to hal_sim/hall or in configs/")
