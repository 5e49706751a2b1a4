"""Who walks through the hall: ordinary travellers plus the scripted behaviours with ground truth.

Ordinary travellers arrive as a Poisson stream at the gates, may visit the restroom briefly,
wait at a baggage belt, walk through the green (most) or red customs lane and leave. Their
stays are kept below the rule limits of configs/cctv_rules.yaml with a margin, because a normal
traveller who happens to exceed them would be a genuine (unlabelled) case, not a false alert.

Each scripted case is an ordinary route with the behaviour inserted at the point where it
happens in a real hall (a U-turn in front of the customs lanes, a jacket taken off in the blind
corner, ...). The legs carry the event label, so the truth is taken from the simulation itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hal_sim.hall.appearance import Bag, _colour, random_appearance
from hal_sim.hall.floor_plan import FloorPlan
from hal_sim.hall.plan import BEHAVIOUR_TYPES, Leg, TravellerPlan

__all__ = ["HallScenario", "build_travellers", "SCRIPTED_CASES"]

#: Scripted cases and the behaviour type each one is ground truth for.
#: (Ordered so that the cases using the blind corner are spread apart in time.)
SCRIPTED_CASES = {
    "loitering": "loitering",
    "blind_long": "long_stay",
    "restroom_long": "long_stay",
    "u_turn": "u_turn",
    "jacket_off": "appearance_change",
    "repeated_passes": "repeated_passes",
    "meeting": "meeting",
    "counter_flow": "counter_flow",
    "bag_swap": "appearance_change",
}


@dataclass(frozen=True)
class HallScenario:
    """Parameters of one simulated period: arrival rate, duration, which scripted cases, seed."""

    seed: int = 1
    duration_s: float = 600.0
    travellers_per_hour: float = 240.0
    scripted: tuple[str, ...] = tuple(SCRIPTED_CASES)
    scripted_start_s: float = 20.0  #: first scripted case spawns then, the others spread over the period
    scripted_spread_s: float | None = None  #: default: the first 70 % of the period


def _speed(rng: np.random.Generator) -> float:
    """Free walking speed of travellers with luggage: ~N(1.25, 0.2) m/s (Weidmann 1993 gives 1.34 unladen)."""
    return float(np.clip(rng.normal(1.25, 0.2), 0.8, 1.8))


class _Routes:
    """Zone-level waypoints of the standard route; the pedestrian model finds the way between them."""

    def __init__(self, plan: FloorPlan, rng: np.random.Generator) -> None:
        self.plan = plan
        self.rng = rng

    def pt(self, zone: str, margin_m: float = 0.6) -> tuple[float, float]:
        return self.plan.random_point_in(zone, self.rng, margin_m)

    def corridor(self, v: float) -> list[Leg]:
        return [Leg(self.pt("corridor", 1.0), v)]

    def restroom(self, v: float, stay_s: float, event: tuple[str, str] | None = None, **kw) -> list[Leg]:
        door_in = (10.7, 18.8)
        # the stalls: behind the privacy screen, out of every camera's sight
        inside = (float(self.rng.uniform(8.7, 12.3)), float(self.rng.uniform(22.7, 24.4)))
        return [Leg(door_in, v), Leg(inside, v, dwell_s=stay_s, event=event, **kw),
                Leg(door_in, v)]

    def baggage(self, v: float, wait_s: float) -> list[Leg]:
        # wait next to one of the belts, on the side facing the hall's centre line
        y = float(self.rng.choice([4.2, 7.3, 12.7, 15.8]))
        return [Leg((float(self.rng.uniform(18.5, 27.5)), y), v, dwell_s=wait_s)]

    def customs_and_exit(self, v: float, red: bool | None = None) -> list[Leg]:
        if red is None:
            red = self.rng.random() < 0.15
        y = float(self.rng.uniform(12.5, 16.5)) if red else float(self.rng.uniform(3.5, 7.5))
        exit_pt = self.plan.config.exit_points_m[int(self.rng.integers(len(self.plan.config.exit_points_m)))]
        return [Leg((33.5, y), v), Leg((35.8, y), v), Leg((39.2, y), v), Leg(tuple(exit_pt), v)]


def _normal(tid: int, t: float, plan: FloorPlan, rng: np.random.Generator) -> TravellerPlan:
    r = _Routes(plan, rng)
    v = _speed(rng)
    legs = r.corridor(v)
    if rng.random() < 0.2:
        legs += r.restroom(v, float(rng.uniform(30, 150)))
    legs += r.baggage(v, float(rng.uniform(10, 150)))
    legs += r.customs_and_exit(v)
    spawn = plan.config.spawn_points_m[int(rng.integers(len(plan.config.spawn_points_m)))]
    return TravellerPlan(tid, t, tuple(spawn), random_appearance(rng), legs)


def _scripted(case: str, tid: int, t: float, plan: FloorPlan, rng: np.random.Generator) -> list[TravellerPlan]:
    r = _Routes(plan, rng)
    v = _speed(rng)
    app = random_appearance(rng)
    spawn = tuple(plan.config.spawn_points_m[int(rng.integers(len(plan.config.spawn_points_m)))])
    btype = SCRIPTED_CASES[case]
    legs: list[Leg] = []
    extra: list[TravellerPlan] = []
    if case == "loitering":
        cx, cy = 9.0, float(rng.uniform(5, 14))
        for i in range(10):
            p = (cx + float(rng.uniform(-2, 2)), cy + float(rng.uniform(-2, 2)))
            legs.append(Leg(p, 0.7, dwell_s=float(rng.uniform(10, 20)), event=(btype, "corridor"),
                            event_from_arrival=(i == 0)))
        legs += r.baggage(v, 20) + r.customs_and_exit(v)
    elif case == "restroom_long":
        legs = r.corridor(v) + r.restroom(v, float(rng.uniform(420, 480)), event=(btype, "restroom"),
                                          event_from_arrival=True)
        legs += r.baggage(v, 20) + r.customs_and_exit(v)
    elif case in ("blind_long", "jacket_off", "bag_swap"):
        legs = r.corridor(v) + r.baggage(v, float(rng.uniform(10, 40)))
        after = None
        if case == "jacket_off":
            new_upper = app.upper_bgr
            while sum(abs(a - b) for a, b in zip(new_upper, app.upper_bgr, strict=True)) < 150:
                new_upper = _colour(rng)
            after = app.with_changes(upper_bgr=new_upper)
        elif case == "bag_swap":
            new_bag = Bag("suitcase" if app.bag is None or app.bag.kind != "suitcase" else "backpack", _colour(rng))
            while app.bag is not None and sum(abs(a - b) for a, b in zip(new_bag.bgr, app.bag.bgr, strict=True)) < 150:
                new_bag = Bag(new_bag.kind, _colour(rng))
            after = app.with_changes(bag=new_bag)
        stay = float(rng.uniform(150, 200)) if case == "blind_long" else float(rng.uniform(15, 30))
        zone = "blind_corner"
        # fixed, separate spots: two scripted cases in the corner at once must not block each other
        spot = {"blind_long": (29.2, 17.1), "jacket_off": (29.3, 19.4), "bag_swap": (30.5, 17.1)}[case]
        legs.append(Leg(spot, v, dwell_s=stay, appearance_after=after, event=(btype, zone),
                        event_from_arrival=True))
        legs += r.customs_and_exit(v)
    elif case == "meeting":
        partner = tid + 1
        p1 = (30.2, 19.4)
        p2 = (30.9, 17.4)
        app2 = random_appearance(rng)
        v2 = _speed(rng)
        legs = r.corridor(v) + r.baggage(v, 15)
        together = float(rng.uniform(30, 45))
        legs.append(Leg(p1, v, meet_with=partner, together_s=together, event=(btype, "blind_corner"),
                        event_from_arrival=True))
        legs += r.customs_and_exit(v)
        legs2 = r.corridor(v2) + [Leg(p2, v2, meet_with=tid, together_s=together, event=(btype, "blind_corner"),
                                      event_from_arrival=True)]
        legs2 += r.customs_and_exit(v2)
        spawn2 = tuple(plan.config.spawn_points_m[int(rng.integers(len(plan.config.spawn_points_m)))])
        extra.append(TravellerPlan(partner, t + float(rng.uniform(10, 30)), spawn2, app2, legs2, behaviour=btype))
    elif case == "u_turn":
        legs = r.corridor(v) + r.baggage(v, 15)
        y = float(rng.uniform(4, 16))
        legs += [Leg((33.8, y), v, dwell_s=2.0, event=(btype, "customs_approach")),
                 Leg((23.0, float(rng.choice([10.0, 11.0]))), v, dwell_s=20.0, event=(btype, "customs_approach"))]
        legs += r.customs_and_exit(v)
    elif case == "repeated_passes":
        y = float(rng.uniform(5, 14))
        legs = [Leg((10.0, y), v)]
        for i in range(4):
            legs.append(Leg((4.8 if i % 2 == 0 else 9.5, y + float(rng.uniform(-1, 1))), v, dwell_s=3.0,
                            event=(btype, "corridor_line")))
        legs += r.baggage(v, 20) + r.customs_and_exit(v)
    elif case == "counter_flow":
        legs = r.corridor(v) + [Leg((24.0, 10.0), v, dwell_s=10.0)]
        legs += [Leg((2.5, 10.0), 3.6, event=(btype, "hall"))]
        legs += [Leg((3.0, 10.0), v, dwell_s=5.0)] + r.corridor(v) + r.baggage(v, 10) + r.customs_and_exit(v)
    else:
        raise ValueError(f"unknown scripted case {case!r}; known: {sorted(SCRIPTED_CASES)}")
    assert btype in BEHAVIOUR_TYPES
    return [TravellerPlan(tid, t, spawn, app, legs, behaviour=btype, tags=[case]), *extra]


def build_travellers(plan: FloorPlan, scenario: HallScenario) -> list[TravellerPlan]:
    """All traveller plans of a scenario (deterministic in ``scenario.seed``), ids from 1, by spawn time."""
    rng = np.random.default_rng(scenario.seed)
    out: list[TravellerPlan] = []
    tid = 1
    spread = scenario.scripted_spread_s if scenario.scripted_spread_s is not None else 0.7 * scenario.duration_s
    for i, case in enumerate(scenario.scripted):
        t = scenario.scripted_start_s + (spread * i / max(1, len(scenario.scripted)))
        made = _scripted(case, tid, t, plan, rng)
        out += made
        tid += len(made)
    rate_per_s = scenario.travellers_per_hour / 3600.0
    t = float(rng.exponential(1 / rate_per_s)) if rate_per_s > 0 else scenario.duration_s
    while t < scenario.duration_s:
        out.append(_normal(tid, t, plan, rng))
        tid += 1
        t += float(rng.exponential(1 / rate_per_s))
    out.sort(key=lambda p: p.t_spawn_s)
    return out
