"""Walks the travellers with JuPedSim's collision-free speed model and records them frame by frame.

Why JuPedSim (https://www.jupedsim.org, PedestrianDynamics/jupedsim): a maintained pedestrian
dynamics library whose operational model keeps people apart and slows them in crowds, which is
what makes tracking hard (occlusions, bunching at belts and lanes). The model is Tordeux,
Chraibi & Seyfried, "Collision-free speed model for pedestrian dynamics" (2016,
arXiv:1512.05597). Our code only does the strategic level: each traveller's plan is a list of
legs; the way between two leg targets comes from JuPedSim's routing engine (shortest path on the
navigation mesh of the free space), and each agent is steered along it through a direct-steering
journey, so stays, speeds and scripted detours stay under our control.

Recorded per frame (at the camera rate): id, position, velocity, heading and walk phase of every
traveller in the hall, and per traveller the appearance history and the times of every leg, from
which the behaviour ground truth is derived (hal_sim/hall/world_truth.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jupedsim as jps
import numpy as np
from shapely import Point
from shapely.ops import nearest_points

from hal_sim.hall.appearance import Appearance
from hal_sim.hall.floor_plan import FloorPlan
from hal_sim.hall.plan import TravellerPlan

__all__ = ["FrameState", "HallRun", "LegTiming", "simulate"]

STRIDE_M = 1.4  #: one gait cycle (two steps) at walking speed
ROUTE_CLEARANCE_M = 0.35


@dataclass
class LegTiming:
    t_start_s: float
    t_arrive_s: float = math.nan
    t_leave_s: float = math.nan


@dataclass
class FrameState:
    """Everyone in the hall at one frame; arrays aligned by index."""

    t_s: float
    ids: np.ndarray  # int
    xy_m: np.ndarray  # (n, 2)
    v_mps: np.ndarray  # (n, 2)
    heading_rad: np.ndarray  # (n,)
    phase_rad: np.ndarray  # (n,) gait phase for the leg swing


@dataclass
class TravellerRecord:
    plan: TravellerPlan
    appearances: list[tuple[float, Appearance]] = field(default_factory=list)
    legs: list[LegTiming] = field(default_factory=list)
    t_enter_s: float = math.nan
    t_exit_s: float = math.nan

    def appearance_at(self, t_s: float) -> Appearance:
        app = self.appearances[0][1]
        for t0, a in self.appearances:
            if t0 <= t_s:
                app = a
        return app


@dataclass
class HallRun:
    plan: FloorPlan
    fps: float
    frames: list[FrameState]
    travellers: dict[int, TravellerRecord]
    seed: int
    lighting_gain: np.ndarray  # per frame, global illumination factor (renderer)

    @property
    def n_frames(self) -> int:
        return len(self.frames)


class _Walker:
    """Execution state of one traveller's plan."""

    def __init__(self, rec: TravellerRecord, agent_id: int) -> None:
        self.rec = rec
        self.agent_id = agent_id
        self.leg = 0
        self.path: list[tuple[float, float]] = []
        self.arrived_at_s = math.nan
        self.dist_m = 0.0
        self.last_xy: tuple[float, float] | None = None
        self.done = False
        self.patience_s = math.inf


def simulate(plan: FloorPlan, travellers: list[TravellerPlan], duration_s: float, fps: float = 10.0,
             seed: int = 1, dt_s: float = 0.05) -> HallRun:
    """Run the pedestrian model for ``duration_s`` and record ``fps`` frames per second."""
    if not 1 <= fps <= 60:
        raise ValueError(f"fps {fps}: expected 1..60")
    steps_per_frame = max(1, round(1.0 / (fps * dt_s)))
    dt_s = 1.0 / (fps * steps_per_frame)
    sim = jps.Simulation(model=jps.CollisionFreeSpeedModel(), geometry=plan.free_space, dt=dt_s)
    stage = sim.add_direct_steering_stage()
    journey = sim.add_journey(jps.JourneyDescription([stage]))
    # routes are planned on the free space shrunk by a body width: waypoints on a corner would pin
    # agents against it (the operational model keeps them off walls, the waypoint pulls them on)
    route_space = plan.free_space.buffer(-ROUTE_CLEARANCE_M)
    route_inner = route_space.buffer(-0.05)
    router = jps.RoutingEngine(route_space)
    rng = np.random.default_rng(seed + 7919)

    records = {p.traveller_id: TravellerRecord(p, [(p.t_spawn_s, p.appearance)]) for p in travellers}
    pending = sorted(travellers, key=lambda p: p.t_spawn_s)
    walkers: dict[int, _Walker] = {}
    at_meeting: dict[int, float] = {}  # traveller id -> arrival time at its meeting leg
    frames: list[FrameState] = []
    n_frames = int(duration_s * fps)
    spawn_points = list(plan.config.spawn_points_m)

    def inside(p: tuple[float, float]) -> tuple[float, float]:
        pt = Point(p)
        if route_space.contains(pt):
            return p
        q = nearest_points(route_inner, pt)[0]  # strictly inside, not on the boundary
        return (q.x, q.y)

    def route(w: _Walker) -> None:
        agent = sim.agent(w.agent_id)
        leg = w.rec.plan.legs[w.leg]
        start = inside(tuple(agent.position))
        try:
            w.path = [tuple(p) for p in router.compute_waypoints(start, inside(leg.target_m))[1:]] or [start]
        except RuntimeError:  # a point the navigation mesh rounds outside: walk straight, the model avoids walls
            w.path = [inside(leg.target_m)]

    def start_leg(w: _Walker, t: float, new_leg: bool = True) -> None:
        agent = sim.agent(w.agent_id)
        leg = w.rec.plan.legs[w.leg]
        route(w)
        w.arrived_at_s = math.nan
        if new_leg:
            w.rec.legs.append(LegTiming(t))
        if new_leg:
            length = sum(math.dist(a, b) for a, b in zip([tuple(agent.position)] + w.path[:-1], w.path, strict=True))
            w.patience_s = 30.0 + 3.0 * length / max(leg.speed_mps, 0.3)
        agent.model.desired_speed = leg.speed_mps
        agent.target = w.path[0]

    for k in range(n_frames * steps_per_frame):
        t = k * dt_s
        # spawn: at the planned time, or as soon as one gate position is free
        while pending and pending[0].t_spawn_s <= t:
            p = pending[0]
            cands = [tuple(p.spawn_m)] + [tuple(s) for s in spawn_points if tuple(s) != tuple(p.spawn_m)]
            free = [c for c in cands if not list(sim.agents_in_range(c, 0.7))]
            if not free:
                break
            pending.pop(0)
            aid = sim.add_agent(jps.CollisionFreeSpeedModelAgentParameters(
                journey_id=journey, stage_id=stage, position=free[0], desired_speed=p.legs[0].speed_mps,
                radius=p.radius_m))
            rec = records[p.traveller_id]
            rec.t_enter_s = t
            w = _Walker(rec, aid)
            walkers[p.traveller_id] = w
            start_leg(w, t)
        # steering (the tactical level, ours)
        for tid, w in list(walkers.items()):
            if w.done:
                continue
            agent = sim.agent(w.agent_id)
            pos = tuple(agent.position)
            leg = w.rec.plan.legs[w.leg]
            if math.isnan(w.arrived_at_s):
                # a target blocked by someone standing on it: give up the last metre after a long wait
                late = t - w.rec.legs[-1].t_start_s > w.patience_s
                stuck = late and math.dist(pos, leg.target_m) < 2.0
                if late and not stuck:  # jammed on the way: plan again from here, wait longer
                    start_leg(w, t, new_leg=False)
                    w.patience_s += 30.0
                    continue
                if stuck or math.dist(pos, w.path[0]) < (0.6 if len(w.path) > 1 else 0.35):
                    if stuck:
                        w.path = w.path[-1:]
                    w.path.pop(0)
                    if w.path:
                        agent.target = w.path[0]
                    else:
                        w.arrived_at_s = t
                        w.rec.legs[-1].t_arrive_s = t
                        agent.model.desired_speed = 0.0
                        if leg.meet_with is not None:
                            at_meeting[tid] = t
                continue
            stay_over = t - w.arrived_at_s >= leg.dwell_s
            if leg.meet_with is not None:
                other = at_meeting.get(leg.meet_with)
                stay_over = stay_over and other is not None and t - max(other, w.arrived_at_s) >= leg.together_s
            if not stay_over:
                continue
            w.rec.legs[-1].t_leave_s = t
            if leg.appearance_after is not None:
                w.rec.appearances.append((t, leg.appearance_after))
            w.leg += 1
            if w.leg >= len(w.rec.plan.legs):
                sim.mark_agent_for_removal(w.agent_id)
                w.rec.t_exit_s = t
                w.done = True
            else:
                start_leg(w, t)
        sim.iterate()
        for tid in [tid for tid, w in walkers.items() if w.done]:
            del walkers[tid]
        if (k + 1) % steps_per_frame == 0:
            frames.append(_record(sim, walkers, (k + 1) * dt_s, fps))
    gain = _lighting(n_frames, fps, rng)
    return HallRun(plan, float(fps), frames, records, seed, gain)


def _record(sim: jps.Simulation, walkers: dict[int, _Walker], t: float, fps: float) -> FrameState:
    ids, xy, v, head, phase = [], [], [], [], []
    for tid, w in walkers.items():
        agent = sim.agent(w.agent_id)
        pos = tuple(agent.position)
        if w.last_xy is not None:
            step = math.dist(pos, w.last_xy)
            w.dist_m += step
            vel = ((pos[0] - w.last_xy[0]), (pos[1] - w.last_xy[1]))
        else:
            vel = (0.0, 0.0)
        w.last_xy = pos
        ori = agent.orientation
        ids.append(tid)
        xy.append(pos)
        v.append(vel)
        head.append(math.atan2(ori[1], ori[0]))
        phase.append(2 * math.pi * w.dist_m / STRIDE_M)
    n = len(ids)
    return FrameState(t, np.asarray(ids, int), np.asarray(xy, float).reshape(n, 2),
                      np.asarray(v, float).reshape(n, 2) * fps, np.asarray(head, float), np.asarray(phase, float))


def _lighting(n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Global illumination over time: slow drift (daylight through the facade) plus a few abrupt
    steps (a bank of lights switching), the two changes that upset background subtraction."""
    t = np.arange(n_frames) / fps
    gain = 1.0 + 0.08 * np.sin(2 * np.pi * t / 240.0 + rng.uniform(0, 2 * np.pi))
    n_steps = max(1, int(n_frames / fps / 300))
    for _ in range(n_steps):
        t0 = rng.uniform(0, t[-1] if len(t) else 1)
        dur = rng.uniform(15, 40)
        gain[(t >= t0) & (t < t0 + dur)] *= rng.choice([0.8, 1.15])
    return gain
