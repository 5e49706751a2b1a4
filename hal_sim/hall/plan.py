"""A traveller's plan: where to walk, how fast, where to stay, and which scripted event a step belongs to.

Why plans are data and not code: the pedestrian model (hal_sim/hall/crowd.py) only executes legs,
so the ground truth of every scripted behaviour is the timing of the legs it consists of, as
they actually happened in the simulation (a crowd may delay a traveller), not as scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hal_sim.hall.appearance import Appearance

__all__ = ["Leg", "TravellerPlan", "BEHAVIOUR_TYPES"]

#: Scripted behaviour types; the controller's rules (configs/cctv_rules.yaml) use the same names.
BEHAVIOUR_TYPES = ("loitering", "long_stay", "appearance_change", "meeting", "u_turn", "repeated_passes",
                   "counter_flow")


@dataclass
class Leg:
    """Walk to ``target_m`` at ``speed_mps`` then stay ``dwell_s``.

    ``appearance_after`` (if set) replaces the traveller's appearance at the end of the stay (a
    jacket taken off in a blind spot). ``meet_with``: stay until that traveller has also arrived at
    its own meeting leg and both have been there ``together_s``. ``event`` groups legs into one
    ground-truth behaviour event (label, zone); the event runs from the start of its first leg
    (or the arrival, if ``event_from_arrival``) to the end of the stay of its last leg.
    """

    target_m: tuple[float, float]
    speed_mps: float
    dwell_s: float = 0.0
    appearance_after: Appearance | None = None
    meet_with: int | None = None
    together_s: float = 0.0
    event: tuple[str, str] | None = None  # (behaviour type, zone or checkpoint name)
    event_from_arrival: bool = False


@dataclass
class TravellerPlan:
    traveller_id: int
    t_spawn_s: float
    spawn_m: tuple[float, float]
    appearance: Appearance
    legs: list[Leg]
    behaviour: str = "normal"  # "normal" or one of BEHAVIOUR_TYPES (the scripted case it carries)
    radius_m: float = 0.22
    tags: list[str] = field(default_factory=list)
