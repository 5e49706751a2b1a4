"""Behaviour rules of the arrival hall, from YAML (configs/cctv_rules.yaml), validated at load.

Why YAML and not code: each site tunes limits to its hall (a restroom far from the gates, a
longer customs approach); the rules' logic (controller/cctv/behaviour_alerts.py) stays the same.
Zone names are checked against the hall map at load, so a misspelt zone cannot turn a rule off
silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.safe_yaml import YamlError, load_yaml_file
from controller.cctv.hall_map import HallMap

__all__ = ["CctvRules", "RulesError", "load_rules"]

Seconds = float
PosS = Field(gt=0, le=86_400)


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppearanceChangeRule(_Strict):
    zones: list[str] = Field(min_length=1)
    part_distance_threshold: float = Field(gt=0, le=1)


class MeetingRule(_Strict):
    zones: list[str] = Field(min_length=1)
    max_distance_m: float = Field(gt=0, le=100)
    min_overlap_s: Seconds = PosS


class UTurnRule(_Strict):
    approach_zone: str
    lane_zones: list[str] = Field(min_length=1)
    return_zones: list[str] = Field(min_length=1)
    min_return_m: float = Field(gt=0, le=100)


class RepeatedPassesRule(_Strict):
    checkpoint: str
    min_crossings: int = Field(ge=2, le=100)
    window_s: Seconds = PosS
    hysteresis_m: float = Field(ge=0, le=10)


class CounterFlowRule(_Strict):
    min_speed_mps: float = Field(gt=0, le=15)
    min_duration_s: Seconds = PosS
    smoothing_s: Seconds = PosS


class Retention(_Strict):
    max_age_s: Seconds = PosS


class CctvRules(_Strict):
    schema_: Literal["cedge.cctv_rules/1"] = Field(alias="schema")
    dwell_limits_s: dict[str, float] = Field(default_factory=dict)
    bridge_gap_s: Seconds = Field(default=10, ge=0, le=600)
    unseen_stay_limits_s: dict[str, float] = Field(default_factory=dict)
    appearance_change: AppearanceChangeRule
    meeting: MeetingRule
    u_turn: UTurnRule
    repeated_passes: RepeatedPassesRule
    counter_flow: CounterFlowRule
    retention: Retention

    def check_against(self, hall: HallMap, source: str = "rules") -> None:
        """Every zone and checkpoint named here exists in the hall (and unfilmed ones are unfilmed)."""
        zones = set(hall.zones)
        named = {"dwell_limits_s": list(self.dwell_limits_s), "unseen_stay_limits_s": list(self.unseen_stay_limits_s),
                 "appearance_change.zones": self.appearance_change.zones, "meeting.zones": self.meeting.zones,
                 "u_turn": [self.u_turn.approach_zone, *self.u_turn.lane_zones, *self.u_turn.return_zones]}
        for where, names in named.items():
            for z in names:
                if z not in zones:
                    raise RulesError(f"{source}: {where}: zone {z!r} is not in the hall ({sorted(zones)})")
        for where, names in (("unseen_stay_limits_s", self.unseen_stay_limits_s),
                             ("appearance_change.zones", self.appearance_change.zones),
                             ("meeting.zones", self.meeting.zones)):
            for z in names:
                if hall.zones[z].entrance is None:
                    raise RulesError(f"{source}: {where}: zone {z!r} is filmed (no entrance_m); "
                                     "these rules need an unfilmed zone")
        if self.repeated_passes.checkpoint not in hall.checkpoints:
            raise RulesError(f"{source}: repeated_passes.checkpoint {self.repeated_passes.checkpoint!r} "
                             f"is not in the hall ({sorted(hall.checkpoints)})")
        for z, v in {**self.dwell_limits_s, **self.unseen_stay_limits_s}.items():
            if not 0 < v <= 86_400:
                raise RulesError(f"{source}: limit for {z!r} must be in 0..86400 s, got {v}")


def load_rules(path: str | Path, hall: HallMap | None = None) -> CctvRules:
    """Load, validate and (with a hall) cross-check a rules file; RulesError names the problem."""
    path = Path(path)
    try:
        rules = CctvRules.model_validate(load_yaml_file(path))
    except (OSError, YamlError) as exc:
        raise RulesError(f"{path}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise RulesError(f"{path}: {where}: {first['msg']}") from None
    if hall is not None:
        rules.check_against(hall, str(path))
    return rules
