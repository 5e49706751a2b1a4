"""Handheld display for a unit with only a terminal: prints the task for the operator."""

from __future__ import annotations

import logging

from agent.hal.interfaces import DeviceContext, OperatorDisplay, TaskGuide

log = logging.getLogger(__name__)


class ConsoleDisplay(OperatorDisplay):
    def __init__(self, context: DeviceContext | None = None, name: str = "console") -> None:
        super().__init__(name, context)
        self.current: TaskGuide | None = None

    def _open(self) -> None:
        pass

    def show_task(self, guide: TaskGuide) -> None:
        self.current = guide
        log.warning(
            "TASK %s: go to lat %.6f lon %.6f (x=%.1f m, y=%.1f m), measure %.0f s. %s",
            guide.task_id, guide.target_lat_deg, guide.target_lon_deg,
            guide.target_x_m, guide.target_y_m, guide.dwell_s, guide.note,
        )

    def clear(self) -> None:
        self.current = None
