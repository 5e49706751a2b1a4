"""Simulated handheld display, i.e. the simulated operator who reads it and walks.

Why the display moves the operator: on a real handheld the task on the screen is what sends the
person to the container; in simulation the walker of this unit in the shared world goes to the
stand point in front of the wall nearest the target, and the handheld's SimGnss and
SimSpectrometer (same process, same ``DeviceContext.shared`` world) follow it.
"""

from __future__ import annotations

import logging
from typing import Any

from agent.hal.interfaces import DeviceContext, DeviceUnavailable, OperatorDisplay, TaskGuide
from hal_sim.motion import Walker
from hal_sim.scenario import ScenarioError
from hal_sim.world import SimWorld, get_world, world_clock

log = logging.getLogger(__name__)


class SimOperatorDisplay(OperatorDisplay):
    def __init__(
        self, context: DeviceContext, scenario: str, unit_id: str | None = None, name: str = "sim-operator"
    ) -> None:
        super().__init__(name, context)
        self.unit_id = unit_id or (context.unit_id if context is not None else "")
        self.scenario = str(scenario)
        try:
            self.world: SimWorld = get_world(context, scenario)
            self.walker: Walker = self.world.walker(self.unit_id)
        except (ScenarioError, OSError, ImportError, KeyError) as err:
            raise DeviceUnavailable(f"sim operator for unit '{self.unit_id}': {err}") from err
        self._clock = world_clock(context, self.world)
        self.current: TaskGuide | None = None
        self.stand_point: tuple[float, float] | None = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": "sim-operator", "unit_id": self.unit_id}

    def _open(self) -> None:
        pass

    def show_task(self, guide: TaskGuide) -> None:
        t = self.world.time_s(self._clock)
        self.current = guide
        self.stand_point = self.walker.set_target(guide.target_x_m, guide.target_y_m, t)
        log.info(
            "sim operator %s: task %s, walking to (%.1f, %.1f) for target (%.1f, %.1f), arrives t=%.0f s",
            self.unit_id,
            guide.task_id,
            *self.stand_point,
            guide.target_x_m,
            guide.target_y_m,
            self.walker.arrival_s(),
        )

    def clear(self) -> None:
        t = self.world.time_s(self._clock)
        self.current = None
        self.stand_point = None
        self.walker.clear(t)
