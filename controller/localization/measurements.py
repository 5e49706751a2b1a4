"""The localizer's input: count data of moving detectors, validated, one row per interval.

Why so strict: every silent repair here became a wrong answer downstream.  Rows without a time
were joined across passes into 34-m "segments" (median error 0.3 -> 5.7 m); positions tagged at
the interval's end were taken for its middle (1.6 m at 5 m/s, 2.9 m at 10 m/s); two detectors of
one vehicle were chained into one path that jumped between their heights.  So:

* times are required (``t_epoch_s`` of each row): a row without one is an error naming the row;
* where the position was taken is stated (``position_at``: ``mid`` - what the agent reports, see
  ``agent.runtime.roles`` - ``end`` or ``start`` of the interval) and converted to the middle;
* each *detector channel* (unit + detector) has its own path: a vehicle with a mast of two
  detectors is one unit with two channels, sharing the unit's GNSS error but not its path;
* the path of interval i runs between the mid-points with its neighbours of the same channel
  (at most ``max_gap_intervals`` intervals apart); at the ends of a run it is extended
  symmetrically, and an isolated interval is a point;
* a background the unit did not report is NaN here: the fit estimates it (see
  :mod:`controller.localization.model`), it is not filled with a percentile that a short pass
  with a source in it would bias.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["MeasurementSet", "PositionAt", "midpoint_segments"]

PositionAt = Literal["mid", "end", "start"]

# 1-sigma horizontal error of a fix by NMEA GGA fix quality (0 invalid, 1 GPS, 2 DGPS, 3 PPS,
# 4 RTK fixed, 5 RTK float, 6 dead reckoning, 7 manual input, 8 simulation).  Stand-alone GPS:
# ~1 m per axis for a modern dual-frequency receiver in the open (Misra & Enge 2006, ch. 5); DGPS/SBAS
# ~0.5 m; RTK fixed 2 cm, float ~0.3 m; a manually entered (surveyed) position carries no GNSS error.
DEFAULT_GNSS_SIGMA_BY_FIX: dict[int, float] = {1: 1.0, 2: 0.5, 3: 0.5, 4: 0.02, 5: 0.3, 6: 3.0, 7: 0.0, 8: 1.0}


@dataclass
class MeasurementSet:
    """Count data of one or several units, as flat arrays (one row per acquisition interval).

    ``start_xyz_m``/``end_xyz_m``: where the detector was when the interval began and ended (equal
    for a standing detector).  ``group`` indexes the detector *model* (each has its own efficiency,
    hence its own strength parameter); ``unit`` the unit (GNSS errors are per unit and pass);
    ``detector`` the detector channel (unit + detector; background is per channel and pass).
    ``t_s`` is each interval's mid time (epoch seconds; NaN when not known: then each channel is
    one pass).  ``background_cps`` NaN: not reported, estimated by the fit.
    ``position_sigma_m``: horizontal GNSS 1-sigma per axis of each row's position (0: exact).
    """

    end_xyz_m: np.ndarray  # (N, 3)
    start_xyz_m: np.ndarray  # (N, 3)
    live_time_s: np.ndarray  # (N,)
    counts: np.ndarray  # (N,)
    background_cps: np.ndarray  # (N,)  NaN: unknown
    group: np.ndarray  # (N,) int
    unit: np.ndarray  # (N,) int
    group_names: tuple[str, ...] = ("detector",)
    unit_names: tuple[str, ...] = ("unit",)
    detector: np.ndarray | None = None  # (N,) int; default: one channel per unit
    t_s: np.ndarray | None = None  # (N,) interval mid times, epoch s
    position_sigma_m: np.ndarray | None = None  # (N,)
    detector_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(np.asarray(self.counts))
        for name in ("end_xyz_m", "start_xyz_m"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.shape != (n, 3):
                raise ValueError(f"{name} must have shape ({n}, 3), not {arr.shape}")
            setattr(self, name, arr)
        for name, dtype in (("live_time_s", float), ("counts", float), ("background_cps", float),
                            ("group", np.int64), ("unit", np.int64)):
            arr = np.asarray(getattr(self, name), dtype=dtype)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), not {arr.shape}")
            setattr(self, name, arr)
        if self.detector is None:
            self.detector = self.unit.copy()
        if self.t_s is None:
            self.t_s = np.full(n, np.nan)
        if self.position_sigma_m is None:
            self.position_sigma_m = np.zeros(n)
        for name, dtype in (("detector", np.int64), ("t_s", float), ("position_sigma_m", float)):
            arr = np.asarray(getattr(self, name), dtype=dtype)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), not {arr.shape}")
            setattr(self, name, arr)
        if not self.detector_names:
            self.detector_names = tuple(f"det{i}" for i in range(int(self.detector.max()) + 1 if n else 0))
        if not n:
            return
        finite = np.isfinite
        if not (finite(self.end_xyz_m).all() and finite(self.start_xyz_m).all()):
            raise ValueError("positions must be finite")
        if not (finite(self.live_time_s).all() and finite(self.counts).all()):
            raise ValueError("live_time_s and counts must be finite")
        if np.any(self.live_time_s <= 0):
            raise ValueError(f"live_time_s must be > 0 (row {int(np.argmin(self.live_time_s))})")
        if np.any(self.counts < 0):
            raise ValueError("counts must be >= 0")
        known = self.background_cps[~np.isnan(self.background_cps)]
        if np.any(known < 0) or not finite(known).all():
            raise ValueError("background_cps must be >= 0 (NaN: unknown)")
        if np.any(self.position_sigma_m < 0) or not finite(self.position_sigma_m).all():
            raise ValueError("position_sigma_m must be finite and >= 0")
        if self.group.min() < 0 or self.group.max() >= len(self.group_names):
            raise ValueError("group index out of range of group_names")

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    @property
    def mid_xyz_m(self) -> np.ndarray:
        return 0.5 * (self.start_xyz_m + self.end_xyz_m)

    def subset(self, idx: np.ndarray) -> MeasurementSet:
        """Rows ``idx`` (index array or boolean mask), names kept."""
        assert self.detector is not None and self.t_s is not None and self.position_sigma_m is not None
        return MeasurementSet(self.end_xyz_m[idx], self.start_xyz_m[idx], self.live_time_s[idx], self.counts[idx],
                              self.background_cps[idx], self.group[idx], self.unit[idx], self.group_names,
                              self.unit_names, self.detector[idx], self.t_s[idx], self.position_sigma_m[idx],
                              self.detector_names)

    @classmethod
    def concat(cls, parts: Sequence[MeasurementSet]) -> MeasurementSet:
        """Join sets that share their name tables (as the incremental localizer's chunks do)."""
        first = parts[0]
        cat = {k: np.concatenate([getattr(p, k) for p in parts]) for k in (
            "end_xyz_m", "start_xyz_m", "live_time_s", "counts", "background_cps", "group", "unit",
            "detector", "t_s", "position_sigma_m")}
        return cls(group_names=first.group_names, unit_names=first.unit_names,
                   detector_names=first.detector_names, **cat)

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_track(
        cls,
        t_s: np.ndarray,
        xyz_m: np.ndarray,
        live_time_s: np.ndarray,
        counts: np.ndarray,
        channel: Sequence[tuple[str, str, str]],
        background_cps: np.ndarray | None = None,
        interval_s: np.ndarray | None = None,
        position_at: PositionAt = "mid",
        position_sigma_m: np.ndarray | float = 0.0,
        max_gap_intervals: float = 3.0,
    ) -> MeasurementSet:
        """Build from per-interval positions and times.

        ``channel[i] = (unit_id, detector_id, detector_model)``; ``t_s`` the time the position
        refers to (the interval's middle, end or start as ``position_at`` says; epoch seconds);
        ``interval_s`` the real time of each interval (default: live time).
        """
        n = len(counts)
        t = np.asarray(t_s, dtype=float)
        if t.shape != (n,) or not np.all(np.isfinite(t)):
            bad = int(np.flatnonzero(~np.isfinite(t))[0]) if t.shape == (n,) else -1
            raise ValueError(f"every interval needs its time (t_s): row {bad} has none" if bad >= 0
                             else f"t_s must have shape ({n},)")
        xyz = np.asarray(xyz_m, dtype=float).reshape(n, 3)
        live = np.asarray(live_time_s, dtype=float)
        real = np.asarray(interval_s, dtype=float) if interval_s is not None else live.copy()
        if np.any(real <= 0):
            raise ValueError("interval_s must be > 0")
        units = sorted({c[0] for c in channel})
        chans = sorted(set(channel))
        models = sorted({c[2] for c in channel})
        unit = np.array([units.index(c[0]) for c in channel], dtype=np.int64)
        det = np.array([chans.index(c) for c in channel], dtype=np.int64)
        grp = np.array([models.index(c[2]) for c in channel], dtype=np.int64)
        # the time of each interval's middle
        shift = {"mid": 0.0, "end": -0.5, "start": 0.5}[position_at]
        t_mid = t + shift * real
        mid = xyz.copy()
        if position_at != "mid":
            mid = _positions_at(t, xyz, t_mid, det, real, max_gap_intervals)
        start, end = midpoint_segments(t_mid, mid, det, real, max_gap_intervals)
        bkg = np.full(n, np.nan) if background_cps is None else np.asarray(background_cps, dtype=float)
        sig = np.broadcast_to(np.asarray(position_sigma_m, dtype=float), (n,)).copy()
        return cls(end, start, live, np.asarray(counts, dtype=float), bkg, grp, unit, tuple(models), tuple(units),
                   det, t_mid, sig, tuple(f"{c[0]}/{c[1]}" for c in chans))

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[Mapping[str, Any]],
        strength_per: Literal["unit", "detector_model"] = "detector_model",
        position_at: PositionAt = "mid",
        gnss_sigma_by_fix: Mapping[int, float] | None = None,
        position_sigma_m: float | None = None,
    ) -> MeasurementSet:
        """Build from store rows (``controller.store.Store.measurements_near``).

        Rows need ``unit_id, t_epoch_s, x_m, y_m, z_m, live_time_s`` and ``gross_counts`` (or
        ``gross_cps``); optional ``background_cps``, ``detector_model``, ``detector`` (channel of a
        multi-detector unit), ``interval_s``, ``fix_quality``.  ``t_epoch_s`` is the interval's end
        (the agent stamps a measurement when its spectrum is complete) and the position its middle
        (``position_at="mid"``: the agent interpolates its track to the interval's mid time).
        Rows without a position are skipped (nothing to fit); rows without a time are an error.
        ``position_sigma_m`` None: each row's GNSS sigma from its fix quality
        (``gnss_sigma_by_fix``), else this value for every row.
        """
        rows = [r for r in rows if r.get("x_m") is not None and r.get("y_m") is not None]
        for i, r in enumerate(rows):
            if r.get("t_epoch_s") is None:
                raise ValueError(
                    f"measurement row {i} (unit {r.get('unit_id')!r}, seq {r.get('seq')!r}) has no t_epoch_s: "
                    "passes cannot be told apart without times")
            if not r.get("live_time_s"):
                raise ValueError(f"measurement row {i} (unit {r.get('unit_id')!r}, seq {r.get('seq')!r}) "
                                 "has no live_time_s")
        n = len(rows)
        table = dict(DEFAULT_GNSS_SIGMA_BY_FIX if gnss_sigma_by_fix is None else gnss_sigma_by_fix)
        live = np.array([float(r["live_time_s"]) for r in rows], dtype=float)
        real = np.array([float(r.get("interval_s") or r["live_time_s"]) for r in rows], dtype=float)
        counts = np.array([float(r["gross_counts"]) if r.get("gross_counts") is not None
                           else float(r["gross_cps"]) * float(r["live_time_s"]) for r in rows], dtype=float)
        bkg = np.array([np.nan if r.get("background_cps") is None else float(r["background_cps"]) for r in rows])
        xyz = np.array([(r["x_m"], r["y_m"], r.get("z_m") or 0.0) for r in rows], dtype=float).reshape(n, 3)
        # t_epoch_s is the interval end; the position refers to the time set by position_at
        t_end = np.array([float(r["t_epoch_s"]) for r in rows], dtype=float)
        shift = {"mid": -0.5, "end": 0.0, "start": -1.0}[position_at]
        t_pos = t_end + shift * real
        if position_sigma_m is not None:
            sig = np.full(n, float(position_sigma_m))
        else:
            sig = np.array([_fix_sigma(r, table) for r in rows], dtype=float)
        channel = []
        for r in rows:
            model = str(r.get("detector_model") or "unknown")
            grp = str(r["unit_id"]) if strength_per == "unit" else model
            channel.append((str(r["unit_id"]), str(r.get("detector") or model), grp))
        return cls.from_track(t_pos, xyz, live, counts, channel, bkg, real, position_at, sig)


def _fix_sigma(row: Mapping[str, Any], table: Mapping[int, float]) -> float:
    q = row.get("fix_quality")
    if q is None:
        return float(table.get(1, 1.0))
    return float(table.get(int(q), table.get(1, 1.0)))


def _runs(t: np.ndarray, det: np.ndarray, real: np.ndarray, max_gap_intervals: float) -> list[np.ndarray]:
    """Index runs of each channel in time order, split where consecutive times are too far apart."""
    out = []
    for d in np.unique(det):
        idx = np.flatnonzero(det == d)
        idx = idx[np.argsort(t[idx], kind="stable")]
        if idx.size == 0:
            continue
        gaps = np.diff(t[idx]) > max_gap_intervals * np.maximum(real[idx[1:]], 1e-9)
        out.extend(np.split(idx, np.flatnonzero(gaps) + 1))
    return out


def midpoint_segments(t_mid: np.ndarray, mid: np.ndarray, det: np.ndarray, real: np.ndarray,
                      max_gap_intervals: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Path start/end of each interval from the mid-points of its neighbours in the same channel run."""
    n = len(t_mid)
    start = mid.copy()
    end = mid.copy()
    for idx in _runs(t_mid, det, real, max_gap_intervals):
        p = mid[idx]
        if idx.size == 1:
            continue
        half = 0.5 * (p[1:] + p[:-1])  # boundaries between consecutive intervals
        a = np.empty_like(p)
        b = np.empty_like(p)
        a[1:] = half
        b[:-1] = half
        a[0] = 2 * p[0] - b[0]
        b[-1] = 2 * p[-1] - a[-1]
        start[idx] = a
        end[idx] = b
    assert start.shape == (n, 3)
    return start, end


def _positions_at(t: np.ndarray, xyz: np.ndarray, t_want: np.ndarray, det: np.ndarray, real: np.ndarray,
                  max_gap_intervals: float) -> np.ndarray:
    """Positions at ``t_want`` interpolated (or linearly extrapolated at run ends) along each channel run."""
    out = xyz.copy()
    for idx in _runs(t, det, real, max_gap_intervals):
        if idx.size < 2:
            continue  # a lone interval: its only position is the best there is
        ts = t[idx]
        for k in range(3):
            v = xyz[idx, k]
            w = np.interp(t_want[idx], ts, v)
            lo = t_want[idx] < ts[0]
            hi = t_want[idx] > ts[-1]
            w[lo] = v[0] + (t_want[idx][lo] - ts[0]) * (v[1] - v[0]) / max(ts[1] - ts[0], 1e-9)
            w[hi] = v[-1] + (t_want[idx][hi] - ts[-1]) * (v[-1] - v[-2]) / max(ts[-1] - ts[-2], 1e-9)
            out[idx, k] = w
    return out
