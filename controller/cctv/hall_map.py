"""The controller's view of the hall: named zones, unfilmed zones with their entrances, checkpoints, flow.

Why the controller reads the hall file itself instead of importing the simulator: a real site
describes its hall in the same YAML (configs/hall.yaml layout) and the controller must not need
the simulator (or JuPedSim) installed. Only the keys the behaviour rules and the association use
are read here; the simulator-only keys (spawn points, cameras, obstacles) are left to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from shapely import Point, Polygon, contains_xy

from agent.safe_yaml import YamlError, load_yaml_file

__all__ = ["HallMap", "HallMapError", "load_hall_map"]

UNSEEN_KINDS = ("restroom", "blind_spot")


class HallMapError(ValueError):
    """A hall file the controller cannot use; names the file and the field."""


@dataclass(frozen=True)
class Zone:
    name: str
    kind: str
    polygon: Polygon
    entrance: Polygon | None  # unfilmed zones: the filmed area in front of the way in


class HallMap:
    def __init__(self, zones: list[Zone], checkpoints: dict[str, tuple[tuple[float, float], tuple[float, float]]],
                 flow_direction: tuple[float, float]) -> None:
        self.zones = {z.name: z for z in zones}
        self.checkpoints = checkpoints
        f = np.asarray(flow_direction, float)
        self.flow_unit = f / np.linalg.norm(f)

    def zones_at(self, xy: np.ndarray) -> dict[str, np.ndarray]:
        """Per zone, a boolean per point (N, 2): inside the zone polygon."""
        xy = np.asarray(xy, float).reshape(-1, 2)
        return {n: contains_xy(z.polygon, xy[:, 0], xy[:, 1]) for n, z in self.zones.items()}

    def unseen_zone_between(self, xy_from: np.ndarray, xy_to: np.ndarray) -> str | None:
        """The unfilmed zone a gap most likely spent in: both ends in (or inside) its entrance."""
        for n, z in self.zones.items():
            if z.entrance is None:
                continue
            area = z.entrance.union(z.polygon)
            if area.covers(Point(*xy_from)) and area.covers(Point(*xy_to)):
                return n
        return None

    def in_kind(self, xy, kinds: tuple[str, ...]) -> bool:
        """Whether a point lies in any zone of the given kinds (e.g. "exit")."""
        pt = Point(float(xy[0]), float(xy[1]))
        return any(z.kind in kinds and z.polygon.covers(pt) for z in self.zones.values())

    def unseen_zones(self) -> list[str]:
        return [n for n, z in self.zones.items() if z.entrance is not None]


def load_hall_map(path: str | Path) -> HallMap:
    """Read zones, checkpoints and flow direction of a hall file (configs/hall.yaml layout)."""
    path = Path(path)
    try:
        raw = load_yaml_file(path)
        zones = []
        for name, z in dict(raw["zones"]).items():
            poly = Polygon(z["polygon_m"])
            ent = Polygon(z["entrance_m"]) if z.get("entrance_m") else None
            if not poly.is_valid or poly.area <= 0 or (ent is not None and (not ent.is_valid or ent.area <= 0)):
                raise HallMapError(f"{path}: zones.{name}: invalid polygon")
            if z["kind"] in UNSEEN_KINDS and ent is None:
                raise HallMapError(f"{path}: zones.{name}: an unfilmed zone needs entrance_m")
            zones.append(Zone(str(name), str(z["kind"]), poly, ent))
        cps = {str(k): (tuple(v[0]), tuple(v[1])) for k, v in dict(raw.get("checkpoints_m") or {}).items()}
        flow = tuple(raw["flow_direction"])
        if len(flow) != 2 or np.hypot(*flow) < 1e-6:
            raise HallMapError(f"{path}: flow_direction must be a non-zero 2-vector")
    except (OSError, YamlError) as exc:
        msg = str(exc)
        raise HallMapError(msg if str(path) in msg else f"{path}: {msg}") from None
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, HallMapError):
            raise
        raise HallMapError(f"{path}: not a hall file: {exc!r}") from None
    return HallMap(zones, cps, flow)
