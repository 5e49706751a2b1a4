"""The unit's own track: recent GNSS fixes, interpolated to the middle of each spectrum.

Why interpolate: a 1 s spectrum accumulates while the vehicle moves 5-10 m; tagging it with the
fix at the end of the interval would shift every alarm position along the track by half an
interval.  We interpolate the ENU position at the interval's mid time between the bracketing fixes.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from agent.geo import LocalFrame
from agent.hal.interfaces import GnssFix
from agent.wire_schema import Position


class PositionTrack:
    def __init__(self, frame: LocalFrame, max_fixes: int = 120, max_gap_s: float = 5.0,
                 fixed_z_m: float | None = None) -> None:
        self.frame = frame
        self.fixed_z_m = fixed_z_m  # known detector height above the site ground plane
        self.max_gap_s = max_gap_s
        self._t: deque[float] = deque(maxlen=max_fixes)
        self._enu: deque[tuple[float, float, float]] = deque(maxlen=max_fixes)
        self._fix: deque[GnssFix] = deque(maxlen=max_fixes)
        self.last_fix: GnssFix | None = None

    def add(self, fix: GnssFix) -> None:
        self.last_fix = fix
        if not fix.valid:
            return
        if self._t and fix.t_mono_s <= self._t[-1]:
            return
        self._t.append(fix.t_mono_s)
        self._enu.append(self.frame.to_enu(fix.lat_deg, fix.lon_deg, fix.alt_m))
        self._fix.append(fix)

    def position_at(self, t_mono_s: float) -> Position | None:
        """ENU + geodetic position at ``t_mono_s``; None when no valid fix is near that time."""
        if not self._t:
            return None
        ts = list(self._t)
        i = bisect.bisect_left(ts, t_mono_s)
        if i == 0:
            j, w = 0, 0.0
            if ts[0] - t_mono_s > self.max_gap_s:
                return None
            x, y, z = self._enu[0]
        elif i >= len(ts):
            # After the newest fix (the fix for the end of a spectrum often arrives a moment after
            # the spectrum): dead-reckon from the last two fixes.  Holding the last fix instead would
            # tag every spectrum half an interval late and shift alarms back along the track.
            j = len(ts) - 1
            if t_mono_s - ts[j] > self.max_gap_s:
                return None
            x, y, z = self._enu[j]
            if j >= 1 and 0 < ts[j] - ts[j - 1] <= self.max_gap_s:
                (xa, ya, za), dt = self._enu[j - 1], ts[j] - ts[j - 1]
                w = (t_mono_s - ts[j]) / dt
                x, y, z = x + (x - xa) * w, y + (y - ya) * w, z + (z - za) * w
        else:
            j = i
            t0, t1 = ts[i - 1], ts[i]
            if t1 - t0 > 2 * self.max_gap_s:
                return None
            w = (t_mono_s - t0) / (t1 - t0) if t1 > t0 else 0.0
            (x0, y0, z0), (x1, y1, z1) = self._enu[i - 1], self._enu[i]
            x, y, z = x0 + w * (x1 - x0), y0 + w * (y1 - y0), z0 + w * (z1 - z0)
        fix = self._fix[j]
        if self.fixed_z_m is not None:
            z = self.fixed_z_m
        lat, lon, alt = self.frame.to_geodetic(x, y, z)
        return Position(lat_deg=lat, lon_deg=lon, alt_m=alt, x_m=x, y_m=y, z_m=z,
                        fix_quality=int(fix.quality), hdop=fix.hdop)

    def speed_m_s(self) -> float | None:
        if len(self._t) < 2:
            return self.last_fix.speed_m_s if self.last_fix else None
        (x0, y0, _), (x1, y1, _) = self._enu[-2], self._enu[-1]
        dt = self._t[-1] - self._t[-2]
        return math.hypot(x1 - x0, y1 - y0) / dt if dt > 0 else None

    def current(self) -> Position | None:
        return self.position_at(self._t[-1]) if self._t else None
