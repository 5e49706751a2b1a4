"""The simulated world: yard, sources, background and moving units, and what a detector sees.

Why a world object shared by the devices: a unit's spectrometer and GNSS must agree on where
the vehicle is, and the handheld's display (the simulated operator) moves the very actor its
spectrometer rides on.  One :class:`SimWorld` per process, kept in ``DeviceContext.shared``
(:func:`get_world`), gives them that without any device knowing about another.

Expected counts of one accumulation interval: the detector moves during it (a vehicle at 5 m/s
crosses 5 m in 1 s, comparable to its distance to a container), so the interval is sub-sampled
(5 points per second, at the sub-interval midpoints) and at each point every source contributes
``DetectorResponse.source_rate_spectrum`` for its distance and the shielding traced through the
yard (:mod:`hal_sim.yard`), plus the natural background there.  The rate spectra are averaged
and the gamma model draws Poisson counts and dead time from the result.

Hot-path economy (budget: ~5 ms per simulated 1 s spectrum; 4 units at 10x share 2 cores):

* the transmitted spectrum of a source (attenuation, build-up, air) varies slowly unless a ray
  crosses a wall edge or a gap, so within an interval it is interpolated between the interval's
  end points whenever the traced areal densities are near-linear in time, with 1/r^2 applied
  exactly at each sub-step; otherwise every sub-step is evaluated;
* each evaluation is memoised (LRU) on a 1 % logarithmic grid of distance and areal densities,
  with the exact 1/r^2 reapplied (air attenuation error < 0.5 % at yard distances), so a
  standing operator or a looping vehicle soon costs only the ray tracing;
* the background is linear in its terrestrial and cosmic parts, so two gamma-model evaluations
  per detector cover every NORM factor.

Measured with the real gamma model (2 cores shared): ~1 ms per spectrum once memoised, 2-3 ms
on a vehicle's first loop or a walking operator.
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agent.geo import LocalFrame
from agent.hal.interfaces import Clock, DeviceContext
from hal_sim.motion import Actor, MotionState, RouteFollower, Walker
from hal_sim.scenario import (
    BackgroundSpec,
    HandheldUnitSpec,
    MobileUnitSpec,
    Scenario,
    ScenarioError,
    load_scenario,
    resolve_scenario,
)
from hal_sim.sim_clock import SimClock
from hal_sim.yard import ShieldingPath, Yard

log = logging.getLogger(__name__)

SUBSTEPS_PER_S = 5.0
_MAX_SUBSTEPS = 64
_MIN_DISTANCE_M = 0.05  # a point source touching the detector: keep 1/r^2 finite
_LOG_GRID = 0.01  # 1 % steps of the memo grid (distance and areal density)
_MIN_AREAL_G_CM2 = 0.01  # below this a layer is ignored (< 0.1 % attenuation at 60 keV in Fe)
_LINEAR_TOL_G_CM2 = 0.3  # shielding within this of linear over an interval: interpolate (4 % of
# a mean free path of 662 keV photons in iron, ~2 % error at most at one sub-step)


class GammaResponse(Protocol):
    """What the world needs from ``hal_sim.gamma.DetectorResponse``."""

    calibration: Any
    n_channels: int

    def source_rate_spectrum(
        self, nuclide: str, activity_bq: float, distance_m: float, shielding: Any = ...
    ) -> np.ndarray: ...

    def background_rate_spectrum(
        self,
        dose_rate_usv_h: float,
        k40_bq_kg: float,
        u238_bq_kg: float,
        th232_bq_kg: float,
        cosmic_fraction: float,
    ) -> np.ndarray: ...

    def sample(
        self,
        expected_counts: np.ndarray,
        real_time_s: float,
        rng: np.random.Generator,
        temperature_c: float | None = None,
    ) -> tuple[np.ndarray, float]: ...

    def true_dose_rate_usv_h(
        self, nuclide: str, activity_bq: float, distance_m: float, shielding: Any = ...
    ) -> float: ...


ResponseFactory = Callable[[str, int, float], GammaResponse]


def default_response_factory(model: str, n_channels: int, max_energy_kev: float) -> GammaResponse:
    from hal_sim.gamma import DetectorResponse  # imported late: the physics tables load on first use

    return DetectorResponse.for_model(model, n_channels=n_channels, max_energy_kev=max_energy_kev)


@dataclass(frozen=True, slots=True)
class SourceTruth:
    """Ground truth of one source, for scoring the fleet's estimates."""

    source_id: str
    nuclide: str
    activity_bq: float
    position_m: tuple[float, float, float]
    container: str | None
    tier: int | None
    local_shielding: tuple[tuple[str, float], ...]


class _ResponseMemo:
    """A detector response plus the memoised rate spectra of the sources and the background."""

    def __init__(self, response: GammaResponse, max_entries: int) -> None:
        self.response = response
        self.max_entries = max_entries
        self._src: OrderedDict[tuple, tuple[np.ndarray, float]] = OrderedDict()
        self._bg_basis: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def source(self, key: tuple, compute: Callable[[], tuple[np.ndarray, float]]) -> tuple[np.ndarray, float]:
        with self._lock:
            hit = self._src.get(key)
            if hit is not None:
                self._src.move_to_end(key)
                return hit
        val = compute()
        with self._lock:
            self._src[key] = val
            if len(self._src) > self.max_entries:
                self._src.popitem(last=False)
        return val

    def background_basis(self, bg: BackgroundSpec) -> tuple[np.ndarray, np.ndarray]:
        """(scenario background per uSv/h, its terrestrial part alone per uSv/h), computed once."""
        with self._lock:
            if self._bg_basis is not None:
                return self._bg_basis
        resp = self.response
        conc = {"k40_bq_kg": bg.k40_bq_kg, "u238_bq_kg": bg.u238_bq_kg, "th232_bq_kg": bg.th232_bq_kg}
        full = np.asarray(
            resp.background_rate_spectrum(dose_rate_usv_h=1.0, cosmic_fraction=bg.cosmic_fraction, **conc),
            dtype=float,
        )
        terr = np.asarray(resp.background_rate_spectrum(dose_rate_usv_h=1.0, cosmic_fraction=0.0, **conc), float)
        with self._lock:
            self._bg_basis = (full, terr)
        return full, terr


class SimWorld:
    """Scenario + yard + sources + actors; answers "what does unit U's detector see in [t0, t1]"."""

    def __init__(
        self,
        scenario: Scenario,
        response_factory: ResponseFactory | None = None,
        substeps_per_s: float = SUBSTEPS_PER_S,
        memo_entries: int = 2048,
        check_materials: bool = True,
    ) -> None:
        self.scenario = scenario
        self.frame = LocalFrame(scenario.site.origin_lat_deg, scenario.site.origin_lon_deg, scenario.site.origin_alt_m)
        self.start_utc: datetime = scenario.time.start_datetime
        self.yard = Yard.from_scenario(scenario)
        self._factory = response_factory or default_response_factory
        self.substeps_per_s = float(substeps_per_s)
        self._memo_entries = int(memo_entries)
        self._responses: dict[tuple[str, int, float], _ResponseMemo] = {}
        self._lock = threading.Lock()
        self.sources: list[SourceTruth] = [self._source_truth(i) for i in range(len(scenario.sources))]
        self._src_pos = np.array([s.position_m for s in self.sources], dtype=float).reshape(-1, 3)
        self.actors: dict[str, Actor] = {}
        for u in scenario.units:
            if isinstance(u, MobileUnitSpec):
                self.actors[u.unit_id] = RouteFollower(u.route, u.speed_m_s, u.start_s, u.loop)
            elif isinstance(u, HandheldUnitSpec):
                self.actors[u.unit_id] = Walker(u.start_m, u.walk_speed_m_s, self.yard, u.standoff_m, u.return_home)
        self._physics_checked = not check_materials
        self.stats = {"interpolated": 0, "exact": 0}  # source-interval evaluations, for benchmarks

    # ----------------------------------------------------------------------- construction
    def _source_truth(self, i: int) -> SourceTruth:
        s = self.scenario.sources[i]
        if s.container is not None and s.offset_m is not None:
            box = self.yard.box(s.container, s.tier)
            pos = box.point(s.offset_m)
            container, tier = s.container, s.tier
        elif s.position_m is not None:
            pos, container, tier = s.position_m, None, None
        else:  # load_scenario refuses this; a hand-built Scenario may not
            raise ScenarioError(f"sources.{i}: give either container (+ tier, offset_m) or position_m")
        return SourceTruth(
            source_id=s.id,
            nuclide=s.nuclide,
            activity_bq=s.activity_mbq * 1e6,
            position_m=(float(pos[0]), float(pos[1]), float(pos[2])),
            container=container,
            tier=tier,
            local_shielding=tuple((L.material, L.areal_density_g_cm2) for L in s.shielding),
        )

    def _check_physics_names(self, resp: GammaResponse) -> None:
        """Fail, naming the key, if the gamma model does not know a nuclide or material.

        Run with the first detector response created (a device's open), not at world load: the
        GNSS and the operator display of a unit need no gamma model at all.
        """
        problems: list[str] = []
        for i, s in enumerate(self.scenario.sources):
            try:
                resp.true_dose_rate_usv_h(s.nuclide, 1e6, 1.0, ())
            except Exception as err:  # the gamma model's own error names what it knows
                problems.append(f"sources.{i}.nuclide: {s.nuclide!r}: {err}")
            for k, layer in enumerate(s.shielding):
                try:
                    resp.true_dose_rate_usv_h(s.nuclide, 1e6, 1.0, [(layer.material, 1.0)])
                except Exception as err:
                    problems.append(f"sources.{i}.shielding.{k}.material: {layer.material!r}: {err}")
        probe = self.scenario.sources[0].nuclide if self.scenario.sources else "Cs-137"
        for i, row in enumerate(self.scenario.yard.rows):
            try:
                resp.true_dose_rate_usv_h(probe, 1e6, 1.0, [(row.cargo.material, 1.0)])
            except Exception as err:
                problems.append(f"yard.rows.{i}.cargo.material: {row.cargo.material!r}: {err}")
        if problems:
            raise ScenarioError(
                "\n".join(
                    [
                        f"scenario {self.scenario.name}: {len(problems)} problem(s)",
                        *(f"  - {p}" for p in problems),
                    ]
                )
            )

    # ----------------------------------------------------------------------- time
    def time_s(self, clock: Clock) -> float:
        """World time (simulated seconds since the scenario start) of ``clock``'s now."""
        elapsed = getattr(clock, "elapsed_s", None)
        start = getattr(clock, "start_utc", None)
        if callable(elapsed) and isinstance(start, datetime):
            return float(elapsed()) + (start - self.start_utc).total_seconds()
        return (clock.utc_now() - self.start_utc).total_seconds()

    def utc_at(self, t_s: float) -> datetime:
        return self.start_utc + timedelta(seconds=float(t_s))

    def temperature_c(self, t_s: float) -> float:
        """Air temperature: a daily cosine peaking at 15:00 local solar time."""
        env = self.scenario.environment
        t = self.utc_at(t_s)
        hour = t.hour + t.minute / 60 + t.second / 3600 + self.scenario.site.origin_lon_deg / 15.0
        return env.temperature_mean_c + env.temperature_amplitude_c * math.cos(2 * math.pi * (hour - 15.0) / 24.0)

    # ----------------------------------------------------------------------- units and motion
    def radiation_unit(self, unit_id: str) -> MobileUnitSpec | HandheldUnitSpec:
        u = self.scenario.unit(unit_id)
        if not isinstance(u, MobileUnitSpec | HandheldUnitSpec):
            raise ScenarioError(
                f"scenario {self.scenario.name}: unit '{unit_id}' is a {u.type}, it has no gamma detector or position"
            )
        return u

    def actor(self, unit_id: str) -> Actor:
        self.radiation_unit(unit_id)
        return self.actors[unit_id]

    def walker(self, unit_id: str) -> Walker:
        a = self.actor(unit_id)
        if not isinstance(a, Walker):
            raise ScenarioError(f"scenario {self.scenario.name}: unit '{unit_id}' is not a handheld operator")
        return a

    def actor_state(self, unit_id: str, t_s: float) -> MotionState:
        return self.actor(unit_id).state(t_s)

    def detector_points(self, unit_id: str, t_s: np.ndarray) -> np.ndarray:
        """(N, 3) detector positions of a unit at times ``t_s``."""
        u = self.radiation_unit(unit_id)
        xy = self.actors[unit_id].positions(np.atleast_1d(np.asarray(t_s, dtype=float)))
        return np.column_stack([xy, np.full(len(xy), u.detector_height_m)])

    # ----------------------------------------------------------------------- truth
    def source_positions(self) -> dict[str, tuple[float, float, float]]:
        return {s.source_id: s.position_m for s in self.sources}

    def shielding_to(self, source_id: str, point_m: tuple[float, float, float]) -> ShieldingPath:
        for s in self.sources:
            if s.source_id == source_id:
                return self.yard.shielding(s.position_m, point_m)
        raise KeyError(f"no source '{source_id}'")

    def norm_factor(self, x_m: np.ndarray | float, y_m: np.ndarray | float) -> np.ndarray:
        """Multiplier of the terrestrial background at (x, y): product of Gaussian bumps."""
        x = np.asarray(x_m, dtype=float)
        y = np.asarray(y_m, dtype=float)
        f = np.ones(np.broadcast(x, y).shape)
        for p in self.scenario.background.patches:
            g = np.exp(-((x - p.x_m) ** 2 + (y - p.y_m) ** 2) / p.radius_m**2)
            f = f * (1.0 + (p.factor - 1.0) * g)
        return f

    def background_dose_rate_usv_h(self, x_m: float, y_m: float) -> float:
        bg = self.scenario.background
        f = float(self.norm_factor(x_m, y_m))
        return bg.dose_rate_usv_h * (bg.cosmic_fraction + (1.0 - bg.cosmic_fraction) * f)

    def true_dose_rate_usv_h(self, x_m: float, y_m: float, z_m: float = 1.0, include_background: bool = True) -> float:
        """True ambient dose equivalent rate H*(10) at a point: sources through the yard + background."""
        resp = self.dose_response()
        p = np.array([x_m, y_m, z_m], dtype=float)
        total = self.background_dose_rate_usv_h(x_m, y_m) if include_background else 0.0
        for s in self.sources:
            r = max(float(np.linalg.norm(p - np.asarray(s.position_m))), _MIN_DISTANCE_M)
            shield = self.yard.shielding(s.position_m, (x_m, y_m, z_m)).as_list() + list(s.local_shielding)
            total += float(resp.true_dose_rate_usv_h(s.nuclide, s.activity_bq, r, shield))
        return total

    # ----------------------------------------------------------------------- detector response
    def response(self, model: str, n_channels: int = 1024, max_energy_kev: float = 3000.0) -> GammaResponse:
        return self._memo(model, n_channels, max_energy_kev).response

    def dose_response(self) -> GammaResponse:
        """Any detector response (dose is a property of the field, not of the detector)."""
        with self._lock:
            if self._responses:
                return next(iter(self._responses.values())).response
        models = [u.detector for u in self.scenario.units if isinstance(u, MobileUnitSpec | HandheldUnitSpec)]
        return self.response(models[0] if models else "NaI 2x2 in")

    def _memo(self, model: str, n_channels: int, max_energy_kev: float) -> _ResponseMemo:
        key = (model, int(n_channels), float(max_energy_kev))
        with self._lock:
            memo = self._responses.get(key)
        if memo is not None:
            return memo
        try:
            resp = self._factory(model, int(n_channels), float(max_energy_kev))
        except (ValueError, KeyError) as err:
            keys = [
                f"units.{i}.detector"
                for i, u in enumerate(self.scenario.units)
                if getattr(u, "detector", None) == model
            ]
            raise ScenarioError(f"{', '.join(keys) or 'detector'}: {model!r}: {err}") from err
        if not self._physics_checked:
            self._check_physics_names(resp)
            self._physics_checked = True
        with self._lock:
            return self._responses.setdefault(key, _ResponseMemo(resp, self._memo_entries))

    def expected_rate(
        self,
        unit_id: str,
        t0_s: float,
        t1_s: float,
        n_channels: int = 1024,
        max_energy_kev: float = 3000.0,
        exact: bool = False,
    ) -> tuple[np.ndarray, float]:
        """Mean rate spectrum (counts/s per channel) of the unit's detector over [t0, t1] and the mean
        true H*(10) rate (uSv/h) there, from all sources and the background.

        ``exact=True`` evaluates every sub-step through the gamma model; the default interpolates
        the transmitted spectrum between the interval's end points when the shielding varies
        linearly over it (see :meth:`_source_over_interval`).
        """
        u = self.radiation_unit(unit_id)
        memo = self._memo(u.detector, n_channels, max_energy_kev)
        dt = max(float(t1_s) - float(t0_s), 0.0)
        n = int(min(max(1, math.ceil(dt * self.substeps_per_s - 1e-9)), _MAX_SUBSTEPS))
        frac = (np.arange(n) + 0.5) / n
        ts = np.concatenate([float(t0_s) + frac * dt, [float(t0_s), float(t1_s)]])
        det = self.detector_points(unit_id, ts)
        rate, dose = self._background(memo, det[:n])
        if self.sources:
            r, areal = self._rays(det)
            src_rate = np.zeros(memo.response.n_channels)
            for j in range(len(self.sources)):
                sr, sd = self._source_over_interval(memo, j, r[j], areal[j], frac, exact)
                src_rate += sr
                dose += sd
            rate = rate + src_rate
        return rate, dose

    def expected_rate_at(
        self, detector_model: str, point_m: tuple[float, float, float], n_channels: int = 1024,
        max_energy_kev: float = 3000.0,
    ) -> tuple[np.ndarray, float]:
        """Mean rate spectrum and true H*(10) rate of a detector standing still at ``point_m``.

        For a handheld held at a chosen point (the bench's handheld search, which moves the
        instrument itself rather than through a scenario unit's motion)."""
        memo = self._memo(detector_model, n_channels, max_energy_kev)
        det = np.asarray(point_m, dtype=float).reshape(1, 3)
        rate, dose = self._background(memo, det)
        if self.sources:
            r, areal = self._rays(det)
            for j in range(len(self.sources)):
                tk, hk = self._transmitted(memo, j, float(r[j, 0]), areal[j, 0])
                rate = rate + tk / float(r[j, 0]) ** 2
                dose += hk / float(r[j, 0]) ** 2
        return rate, dose

    def _background(self, memo: _ResponseMemo, det: np.ndarray) -> tuple[np.ndarray, float]:
        """Background rate spectrum and H*(10) averaged over the sub-step positions.

        The gamma model's background is linear in its two parts, so with F the NORM factor
        ``B(F) = D0 [full + (1 - c)(F - 1) terr]``, ``full`` the scenario background per D0 and
        ``terr`` its terrestrial part alone per uSv/h: two model evaluations per detector, ever.
        """
        bg = self.scenario.background
        f = float(np.mean(self.norm_factor(det[:, 0], det[:, 1])))
        full, terr = memo.background_basis(bg)
        cf = bg.cosmic_fraction
        rate = bg.dose_rate_usv_h * (full + (1.0 - cf) * (f - 1.0) * terr)
        dose = bg.dose_rate_usv_h * (cf + (1.0 - cf) * f)
        return np.maximum(rate, 0.0), dose

    def _rays(self, det: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances (S, N) and areal densities (S, N, n_mat) from every source to every sub-step."""
        ns, n = len(self.sources), len(det)
        src = np.repeat(self._src_pos, n, axis=0)
        dst = np.tile(det, (ns, 1))
        r = np.maximum(np.linalg.norm(dst - src, axis=1), _MIN_DISTANCE_M).reshape(ns, n)
        areal = self.yard.areal_density_batch(src, dst).reshape(ns, n, -1)
        return r, areal

    def _transmitted(self, memo: _ResponseMemo, j: int, r_m: float, areal: np.ndarray) -> tuple[np.ndarray, float]:
        """Source j's rate spectrum and dose rate on one ray, times r^2 (so free of the 1/r^2 law),
        evaluated on the memo grid (1 % steps in distance and in each areal density)."""
        s = self.sources[j]
        qr = round(math.log(r_m) / _LOG_GRID)
        qa = tuple(
            round(math.log(a / _MIN_AREAL_G_CM2) / _LOG_GRID) if a >= _MIN_AREAL_G_CM2 else -1 for a in areal.tolist()
        )
        rq = math.exp(qr * _LOG_GRID)

        def compute() -> tuple[np.ndarray, float]:
            shield = [
                (m, _MIN_AREAL_G_CM2 * math.exp(q * _LOG_GRID))
                for m, q in zip(self.yard.materials, qa, strict=True)
                if q >= 0
            ]
            shield += list(s.local_shielding)
            resp = memo.response
            spec = np.asarray(resp.source_rate_spectrum(s.nuclide, s.activity_bq, rq, shield), dtype=float)
            h = float(resp.true_dose_rate_usv_h(s.nuclide, s.activity_bq, rq, shield))
            return spec * rq**2, h * rq**2

        return memo.source((j, qr, qa), compute)

    def _source_over_interval(
        self, memo: _ResponseMemo, j: int, r: np.ndarray, areal: np.ndarray, frac: np.ndarray, exact: bool
    ) -> tuple[np.ndarray, float]:
        """Mean rate spectrum and dose of source j over one interval.

        ``r`` and ``areal`` hold the n sub-steps followed by the interval's start and end.  The
        1/r^2 law is applied exactly at every sub-step.  The transmitted part (attenuation,
        build-up, air) varies slowly unless the ray crosses a wall edge or a gap; when the areal
        densities at the sub-steps lie within ``_LINEAR_TOL_G_CM2`` of the straight line between
        the end points, it is interpolated between the two end-point spectra (gross rate
        geometrically, i.e. exponential attenuation; shape linearly), costing one new gamma-model
        evaluation per interval (the start was the previous interval's end).  Otherwise every
        sub-step is evaluated.
        """
        n = len(frac)
        r_sub, a_sub = r[:n], areal[:n]
        inv_r2 = 1.0 / r_sub**2
        if not exact and n > 2:
            a0, a1 = areal[n], areal[n + 1]
            lin = a0[None, :] + frac[:, None] * (a1 - a0)[None, :]
            if float(np.abs(a_sub - lin).sum(axis=1).max()) <= _LINEAR_TOL_G_CM2:
                t0, h0 = self._transmitted(memo, j, float(r[n]), a0)
                t1, h1 = self._transmitted(memo, j, float(r[n + 1]), a1)
                g0, g1 = float(t0.sum()), float(t1.sum())
                if g0 > 0 and g1 > 0:
                    g = g0 ** (1 - frac) * g1**frac  # transmitted gross rate, exponential in between
                    wa = float(np.sum((1 - frac) * g / g0 * inv_r2)) / n
                    wb = float(np.sum(frac * g / g1 * inv_r2)) / n
                    hk = h0 ** (1 - frac) * h1**frac if h0 > 0 and h1 > 0 else h0 + (h1 - h0) * frac
                    self.stats["interpolated"] += 1
                    return wa * t0 + wb * t1, float(np.mean(hk * inv_r2))
        self.stats["exact"] += 1
        rate = np.zeros(memo.response.n_channels)
        dose = 0.0
        for k in range(n):
            tk, hk = self._transmitted(memo, j, float(r_sub[k]), a_sub[k])
            rate += tk * inv_r2[k]
            dose += hk * inv_r2[k]
        return rate / n, dose / n


# --------------------------------------------------------------------------- per-process sharing
_PROCESS_SHARED: dict[str, Any] = {}
_SHARED_LOCK = threading.Lock()
_WORLD_KEY = "hal_sim.world"
_CLOCK_KEY = "hal_sim.clock"


def get_world(
    context: DeviceContext | None, scenario_path: str | Path, response_factory: ResponseFactory | None = None
) -> SimWorld:
    """The one :class:`SimWorld` of this process for a scenario (a file path or a packaged name),
    created on first use and kept in ``context.shared`` so a unit's devices share it."""
    path = resolve_scenario(scenario_path)
    shared = context.shared if context is not None else _PROCESS_SHARED
    with _SHARED_LOCK:
        worlds: dict[str, SimWorld] = shared.setdefault(_WORLD_KEY, {})
        world = worlds.get(str(path))
        if world is None:
            world = SimWorld(load_scenario(path), response_factory=response_factory)
            worlds[str(path)] = world
        return world


def put_world(context: DeviceContext, scenario_path: str | Path, world: SimWorld) -> None:
    """Install a ready-made world (tests: one built with a stand-in gamma response)."""
    with _SHARED_LOCK:
        context.shared.setdefault(_WORLD_KEY, {})[str(resolve_scenario(scenario_path))] = world


def world_clock(context: DeviceContext | None, world: SimWorld) -> Clock:
    """The unit's clock, or (no clock in the context) one SimClock at the scenario's rate shared
    by the unit's devices."""
    if context is not None and context.clock is not None:
        return context.clock
    shared = context.shared if context is not None else _PROCESS_SHARED
    with _SHARED_LOCK:
        clock = shared.get(_CLOCK_KEY)
        if clock is None:
            clock = SimClock(world.scenario.time.start_utc, world.scenario.time.rate)
            shared[_CLOCK_KEY] = clock
        return clock


def unit_seed(world: SimWorld, unit_id: str, salt: str, seed: int | None = None) -> list[int]:
    """Entropy for a unit's RNG: scenario seed (or an override), unit id and device kind.

    CRC-32 rather than ``hash()``: Python salts string hashes per process, which would make runs
    unreproducible.
    """
    base = world.scenario.seed if seed is None else int(seed)
    return [base & 0xFFFFFFFFFFFFFFFF, zlib.crc32(unit_id.encode()), zlib.crc32(salt.encode())]
