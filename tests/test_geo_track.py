"""Local ENU frame and the unit's position track."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.geo import LocalFrame
from agent.hal.interfaces import FixQuality, GnssFix
from agent.runtime.track import PositionTrack


def test_enu_round_trip_and_scale() -> None:
    f = LocalFrame(51.95, 4.05, 5.0)
    lat, lon, alt = f.to_geodetic(250.0, -120.0, 2.0)
    x, y, z = f.to_enu(lat, lon, alt)
    assert (x, y, z) == pytest.approx((250.0, -120.0, 2.0), abs=1e-6)
    # one arc-minute of latitude at 52 deg N: M(phi) * pi / 10800 = 1854.44 m (WGS-84 meridian radius)
    _, north, _ = f.to_enu(51.95 + 1 / 60, 4.05, 5.0)
    assert north == pytest.approx(1854.44, abs=0.05)


def _fix(t: float, x: float, frame: LocalFrame, quality: FixQuality = FixQuality.GPS) -> GnssFix:
    lat, lon, alt = frame.to_geodetic(x, 0.0, 1.5)
    return GnssFix(t_utc=datetime(2026, 1, 1, tzinfo=UTC), t_mono_s=t, lat_deg=lat, lon_deg=lon, alt_m=alt,
                   quality=quality, num_satellites=9, hdop=0.9)


def test_track_interpolates_mid_interval() -> None:
    frame = LocalFrame(51.95, 4.05, 0.0)
    tr = PositionTrack(frame)
    for t in range(10):
        tr.add(_fix(float(t), 5.0 * t, frame))
    pos = tr.position_at(4.5)
    assert pos is not None and pos.x_m == pytest.approx(22.5, abs=1e-3)
    assert tr.speed_m_s() == pytest.approx(5.0, rel=1e-3)
    assert tr.position_at(30.0) is None  # too far from any fix
    ahead = tr.position_at(9.5)  # after the newest fix: dead reckoning, not the stale last fix
    assert ahead is not None and ahead.x_m == pytest.approx(47.5, abs=1e-3)


def test_track_ignores_invalid_fix() -> None:
    frame = LocalFrame(51.95, 4.05, 0.0)
    tr = PositionTrack(frame)
    tr.add(_fix(1.0, 10.0, frame))
    tr.add(_fix(2.0, 99.0, frame, FixQuality.INVALID))
    assert tr.current().x_m == pytest.approx(10.0, abs=1e-3)
    assert tr.last_fix.quality == FixQuality.INVALID
