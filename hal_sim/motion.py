"""How simulated units move: vehicles along a looped route, operators walking to a task.

Why analytic motion (position as a function of time) rather than stepping a state: several
devices of one unit (spectrometer, GNSS) and the spectrum integrator's sub-steps ask for the
position at arbitrary times, possibly out of order and from different threads; a pure function
of t gives every one of them the same answer.  The walker keeps a short history of legs so a
spectrum integrated across the moment a task was given still sees the old leg before it.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hal_sim.yard import Yard

_STOPPED_M_S = 0.05


@dataclass(frozen=True, slots=True)
class MotionState:
    """Where an actor is at one time: ENU metres, speed, course (degrees clockwise from north)."""

    x_m: float
    y_m: float
    speed_m_s: float
    course_deg: float | None  # None while standing still (as a GNSS receiver reports it)


class Actor(Protocol):
    def positions(self, t_s: np.ndarray) -> np.ndarray:
        """(N, 2) ground positions at the times ``t_s`` (simulated seconds since scenario start)."""
        ...

    def state(self, t_s: float) -> MotionState: ...


class Polyline:
    """A path of straight legs, parametrised by arc length."""

    def __init__(self, points: list[tuple[float, float]] | np.ndarray) -> None:
        pts = np.asarray(points, dtype=float).reshape(-1, 2)
        if len(pts) == 0:
            raise ValueError("a path needs at least one point")
        if len(pts) == 1:
            pts = np.vstack([pts, pts])
        self.points = pts
        seg = np.diff(pts, axis=0)
        self._seg_len = np.hypot(seg[:, 0], seg[:, 1])
        self._cum = np.concatenate([[0.0], np.cumsum(self._seg_len)])
        self.length_m = float(self._cum[-1])

    def at(self, s_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (N, 2) and course (N,) in degrees at arc lengths ``s_m`` (clamped to the path)."""
        s = np.clip(np.asarray(s_m, dtype=float), 0.0, self.length_m)
        i = np.clip(np.searchsorted(self._cum, s, side="right") - 1, 0, len(self._seg_len) - 1)
        seg_len = self._seg_len[i]
        frac = np.divide(s - self._cum[i], seg_len, out=np.zeros_like(s), where=seg_len > 0)
        p0, p1 = self.points[i], self.points[i + 1]
        pos = p0 + (p1 - p0) * frac[..., None]
        d = p1 - p0
        course = np.degrees(np.arctan2(d[..., 0], d[..., 1])) % 360.0
        return pos, course


class RouteFollower:
    """A vehicle driving ``route`` at constant speed from ``start_s``, parked at the first point
    before then, and at the last point after the end unless ``loop`` (then it starts over)."""

    def __init__(
        self, route: list[tuple[float, float]], speed_m_s: float, start_s: float = 0.0, loop: bool = False
    ) -> None:
        if speed_m_s <= 0:
            raise ValueError(f"speed_m_s must be > 0, got {speed_m_s}")
        self.path = Polyline(route)
        self.speed_m_s = float(speed_m_s)
        self.start_s = float(start_s)
        self.loop = bool(loop) and self.path.length_m > 0
        self.period_s = self.path.length_m / self.speed_m_s if self.loop else math.inf

    def _arc(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        travelled = (np.asarray(t_s, dtype=float) - self.start_s) * self.speed_m_s
        moving = travelled >= 0.0
        if self.loop:
            s = np.mod(np.maximum(travelled, 0.0), self.path.length_m)
        else:
            moving &= travelled <= self.path.length_m
            s = np.clip(travelled, 0.0, self.path.length_m)
        return s, moving

    def positions(self, t_s: np.ndarray) -> np.ndarray:
        s, _ = self._arc(np.atleast_1d(t_s))
        return self.path.at(s)[0]

    def state(self, t_s: float) -> MotionState:
        s, moving = self._arc(np.array([t_s]))
        pos, course = self.path.at(s)
        if bool(moving[0]):
            return MotionState(float(pos[0, 0]), float(pos[0, 1]), self.speed_m_s, float(course[0]))
        return MotionState(float(pos[0, 0]), float(pos[0, 1]), 0.0, None)


@dataclass(frozen=True, slots=True)
class _Leg:
    t_start_s: float
    path: Polyline
    target: tuple[float, float] | None  # the task target this leg walks to (None: idle/home)


class Walker:
    """A handheld operator: idle at home, walks to a task's stand point, returns when cleared.

    ``set_target`` chooses the stand point with :meth:`Yard.nearest_accessible_point` (in front of
    the container wall nearest the target, ``standoff_m`` from it) and the way there with
    :meth:`Yard.plan_path`.  Thread-safe: the display sets targets while the spectrometer and the
    GNSS ask for positions.
    """

    _HISTORY = 32

    def __init__(
        self,
        home: tuple[float, float],
        walk_speed_m_s: float,
        yard: Yard | None = None,
        standoff_m: float = 0.5,
        return_home: bool = True,
    ) -> None:
        if walk_speed_m_s <= 0:
            raise ValueError(f"walk_speed_m_s must be > 0, got {walk_speed_m_s}")
        self.home = (float(home[0]), float(home[1]))
        self.walk_speed_m_s = float(walk_speed_m_s)
        self.yard = yard
        self.standoff_m = float(standoff_m)
        self.return_home = bool(return_home)
        self._legs: list[_Leg] = [_Leg(-math.inf, Polyline([self.home]), None)]
        self._starts: list[float] = [-math.inf]
        self._lock = threading.Lock()

    @property
    def target(self) -> tuple[float, float] | None:
        """The current task target (None when idle)."""
        with self._lock:
            return self._legs[-1].target

    @property
    def destination(self) -> tuple[float, float]:
        """Where the current leg ends (the stand point, or home)."""
        with self._lock:
            return tuple(self._legs[-1].path.points[-1])  # type: ignore[return-value]

    def stand_point(self, x_m: float, y_m: float) -> tuple[float, float]:
        if self.yard is None:
            return (float(x_m), float(y_m))
        return self.yard.nearest_accessible_point(x_m, y_m, self.standoff_m)

    def set_target(self, x_m: float, y_m: float, t_s: float) -> tuple[float, float]:
        """Start walking at ``t_s`` towards the stand point for target (x, y); returns the stand point."""
        goal = self.stand_point(x_m, y_m)
        self._walk_to(goal, t_s, (float(x_m), float(y_m)))
        return goal

    def clear(self, t_s: float) -> None:
        """Task done: walk home (``return_home``) or stay where the operator is."""
        here = self._position(t_s)
        goal = self.home if self.return_home else here
        self._walk_to(goal, t_s, None)

    def _walk_to(self, goal: tuple[float, float], t_s: float, target: tuple[float, float] | None) -> None:
        here = self._position(t_s)
        pts = self.yard.plan_path(here, goal, self.standoff_m) if self.yard is not None else [here, goal]
        leg = _Leg(float(t_s), Polyline(pts), target)
        with self._lock:
            # a target given "in the past" (clock skew between threads) replaces later legs
            k = bisect.bisect_right(self._starts, leg.t_start_s)
            del self._legs[k:], self._starts[k:]
            self._legs.append(leg)
            self._starts.append(leg.t_start_s)
            if len(self._legs) > self._HISTORY:
                del self._legs[1 : -self._HISTORY], self._starts[1 : -self._HISTORY]

    def _leg_at(self, t_s: float) -> _Leg:
        with self._lock:
            k = bisect.bisect_right(self._starts, t_s) - 1
            return self._legs[max(k, 0)]

    def _position(self, t_s: float) -> tuple[float, float]:
        p = self.positions(np.array([t_s]))[0]
        return (float(p[0]), float(p[1]))

    def positions(self, t_s: np.ndarray) -> np.ndarray:
        ts = np.atleast_1d(np.asarray(t_s, dtype=float))
        out = np.empty((len(ts), 2))
        for k, t in enumerate(ts):
            leg = self._leg_at(float(t))
            out[k] = leg.path.at(np.array([(t - leg.t_start_s) * self.walk_speed_m_s]))[0][0]
        return out

    def state(self, t_s: float) -> MotionState:
        leg = self._leg_at(t_s)
        s = (t_s - leg.t_start_s) * self.walk_speed_m_s
        pos, course = leg.path.at(np.array([s]))
        if s < leg.path.length_m and leg.path.length_m > 0:
            return MotionState(float(pos[0, 0]), float(pos[0, 1]), self.walk_speed_m_s, float(course[0]))
        return MotionState(float(pos[0, 0]), float(pos[0, 1]), 0.0, None)

    def arrival_s(self) -> float:
        """Time the current leg ends (the operator stands at the destination from then on)."""
        with self._lock:
            leg = self._legs[-1]
        return leg.t_start_s + leg.path.length_m / self.walk_speed_m_s
