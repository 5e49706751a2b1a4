"""WGS-84 geodetic <-> local east-north-up (ENU) metres around a site origin.

Why not a flat 111 km/degree rule: over a 1 km yard that rule is off by metres at high
latitude; the tangent-plane conversion through ECEF below is exact to millimetres at yard scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_A = 6378137.0  # WGS-84 semi-major axis, m
_F = 1 / 298.257223563
_E2 = _F * (2 - _F)


def _geodetic_to_ecef(lat_deg: float, lon_deg: float, alt_m: float) -> tuple[float, float, float]:
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    n = _A / math.sqrt(1 - _E2 * math.sin(lat) ** 2)
    return (
        (n + alt_m) * math.cos(lat) * math.cos(lon),
        (n + alt_m) * math.cos(lat) * math.sin(lon),
        (n * (1 - _E2) + alt_m) * math.sin(lat),
    )


def _ecef_to_geodetic(x: float, y: float, z: float) -> tuple[float, float, float]:
    lon = math.atan2(y, x)
    p = math.hypot(x, y)
    lat = math.atan2(z, p * (1 - _E2))
    for _ in range(6):  # Bowring-style fixed point, converges to < 1e-12 rad in a few steps
        n = _A / math.sqrt(1 - _E2 * math.sin(lat) ** 2)
        alt = p / math.cos(lat) - n
        lat = math.atan2(z, p * (1 - _E2 * n / (n + alt)))
    n = _A / math.sqrt(1 - _E2 * math.sin(lat) ** 2)
    alt = p / math.cos(lat) - n
    return math.degrees(lat), math.degrees(lon), alt


@dataclass(frozen=True)
class LocalFrame:
    """ENU frame: x east, y north, z up, metres, origin at (lat0, lon0, alt0)."""

    lat0_deg: float
    lon0_deg: float
    alt0_m: float = 0.0

    def to_enu(self, lat_deg: float, lon_deg: float, alt_m: float) -> tuple[float, float, float]:
        x0, y0, z0 = _geodetic_to_ecef(self.lat0_deg, self.lon0_deg, self.alt0_m)
        x, y, z = _geodetic_to_ecef(lat_deg, lon_deg, alt_m)
        dx, dy, dz = x - x0, y - y0, z - z0
        lat, lon = math.radians(self.lat0_deg), math.radians(self.lon0_deg)
        sl, cl, so, co = math.sin(lat), math.cos(lat), math.sin(lon), math.cos(lon)
        east = -so * dx + co * dy
        north = -sl * co * dx - sl * so * dy + cl * dz
        up = cl * co * dx + cl * so * dy + sl * dz
        return east, north, up

    def to_geodetic(self, x_m: float, y_m: float, z_m: float) -> tuple[float, float, float]:
        lat, lon = math.radians(self.lat0_deg), math.radians(self.lon0_deg)
        sl, cl, so, co = math.sin(lat), math.cos(lat), math.sin(lon), math.cos(lon)
        dx = -so * x_m - sl * co * y_m + cl * co * z_m
        dy = co * x_m - sl * so * y_m + cl * so * z_m
        dz = cl * y_m + sl * z_m
        x0, y0, z0 = _geodetic_to_ecef(self.lat0_deg, self.lon0_deg, self.alt0_m)
        return _ecef_to_geodetic(x0 + dx, y0 + dy, z0 + dz)
