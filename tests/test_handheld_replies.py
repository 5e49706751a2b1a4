"""A handheld's task events name the command they answer (issue 14, row 5; a bug even without attacker).

Before the fix ``HandheldRole._event`` took the ids from ``self.task``: a "rejected" answer to a
second dispatch, sent while the handheld was busy, carried the *running* task's ids, so the
controller failed the running task over to another handheld while this operator kept working it.
The role runs here without devices or broker: a list stands in for the link.
"""

from __future__ import annotations

from typing import Any

from agent.config import profile_from_dict
from agent.geo import LocalFrame
from agent.runtime.roles import HandheldRole, RoleContext
from agent.runtime.track import PositionTrack
from agent.wire_schema import Command, DispatchTask, Position, TaskEvent
from hal_sim.sim_clock import ManualClock

SITE = {"name": "yard", "origin_lat_deg": 51.95, "origin_lon_deg": 4.05, "origin_alt_m": 5.0}
TARGET = Position(lat_deg=51.95, lon_deg=4.05, alt_m=5.0, x_m=10.0, y_m=20.0, z_m=1.0, fix_quality=7)


class Sent:
    def __init__(self) -> None:
        self.events: list[TaskEvent] = []

    def send(self, kind: str, body: Any) -> int:
        assert kind == "task_event"
        self.events.append(body)
        return len(self.events)


def handheld() -> tuple[HandheldRole, Sent]:
    prof = profile_from_dict({"schema": 1, "unit_id": "hh-1", "unit_type": "handheld", "site": SITE,
                              "devices": {"gamma": {"driver": "sim"}, "gnss": {"driver": "sim"}}})
    sent = Sent()
    ctx = RoleContext(profile=prof, clock=ManualClock("2026-11-27T08:00:00Z"), link=sent,
                      track=PositionTrack(LocalFrame(51.95, 4.05, 5.0)))
    return HandheldRole(ctx), sent


def dispatch(task_id: str, cmd_id: str, x_m: float = 10.0) -> Command:
    return Command(cmd_id=cmd_id, unit_id="hh-1", command="dispatch", t_utc="2026-11-27T08:00:00.000Z",
                   task=DispatchTask(task_id=task_id, alarm_id="A", target=TARGET.model_copy(update={"x_m": x_m}),
                                     radius_m=5.0, dwell_s=60.0))


def run(role: HandheldRole, cmd: Command) -> None:
    role.on_command(cmd)
    role.tick()


def test_rejection_of_a_second_dispatch_names_that_dispatch_not_the_running_task() -> None:
    role, sent = handheld()
    run(role, dispatch("T-1", "c-1"))
    run(role, dispatch("T-2", "c-2"))
    accepted, rejected = sent.events
    assert (accepted.task_id, accepted.cmd_id, accepted.state) == ("T-1", "c-1", "accepted")
    assert (rejected.task_id, rejected.cmd_id, rejected.state) == ("T-2", "c-2", "rejected")
    assert "busy with task T-1" in rejected.reason
    assert role.task is not None and role.task.task_id == "T-1" and role.task.cmd_id == "c-1"


def test_rejection_of_a_completed_task_and_a_retarget_name_their_commands() -> None:
    role, sent = handheld()
    run(role, dispatch("T-1", "c-1"))
    run(role, dispatch("T-1", "c-1b", x_m=12.0))  # the controller moved the target of the same task
    assert (sent.events[-1].task_id, sent.events[-1].cmd_id, sent.events[-1].reason) == ("T-1", "c-1b",
                                                                                           "target updated")
    assert role.task is not None and role.task.cmd_id == "c-1b" and role.task.target.x_m == 12.0
    role.completed.append("T-0")
    run(role, dispatch("T-0", "c-0"))  # busy first: rejected as busy, still naming T-0 / c-0
    assert (sent.events[-1].task_id, sent.events[-1].cmd_id, sent.events[-1].state) == ("T-0", "c-0", "rejected")
    role.task = None
    run(role, dispatch("T-0", "c-0again"))
    assert (sent.events[-1].task_id, sent.events[-1].cmd_id) == ("T-0", "c-0again")
    assert sent.events[-1].reason == "task already completed here"
