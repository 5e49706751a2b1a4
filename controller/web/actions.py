"""Operator actions: recorded with who and when, then applied by the controller's dispatch thread.

Why a queue in the database instead of calling the dispatcher from the web thread: the dispatcher
is single-threaded by design (its tick runs alone in the ``dispatch`` thread and reads-modifies-
writes tasks and incidents).  The web server therefore only *records* a request
(``web_actions``, state ``pending``, with the user, role and UTC time); :class:`ActionExecutor`
runs in the dispatch thread after each tick, applies the request through the dispatcher's own
methods - so a manual dispatch or a cancel is a command signed and recorded exactly like the
automatic ones - and writes the outcome (``done`` / ``failed`` with the reason).

Acknowledging an alarm sends nothing to a unit; it is complete once recorded (state ``done``).
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from controller.dispatch import Dispatcher
from controller.store import ACTIVE_TASK_STATES, Store
from controller.web.db import connect

__all__ = ["ACTIONS", "ActionExecutor", "ActionError", "record_action"]

log = logging.getLogger(__name__)

ACTIONS = {  # action -> least role
    "ack_alarm": "operator",
    "dispatch": "operator",
    "cancel_task": "operator",
    "close_incident": "operator",
}
_TERMINAL = ("confirmed", "cleared", "timed_out", "rejected", "cancelled")


class ActionError(ValueError):
    """The request names something that does not exist or cannot be done (-> HTTP 4xx)."""


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_action(conn: Store, user: str, role: str, action: str, target: str,
                  params: dict[str, Any], state: str = "pending", result: str | None = None) -> int:
    now = utc_now_iso()
    return conn.insert_returning_id(
        'INSERT INTO web_actions (t_utc, "user", role, action, target, params, state, result, done_utc) '
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (now, user, role, action, target, json.dumps(params), state, result, now if state != "pending" else None))


class ActionExecutor:
    """Applies pending operator actions; call :meth:`run_pending` from the dispatch thread only."""

    def __init__(self, db_path: str, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self.conn = connect(db_path)

    def close(self) -> None:
        self.conn.close()

    def run_pending(self) -> int:
        rows = self.conn.query("SELECT * FROM web_actions WHERE state = 'pending' ORDER BY id LIMIT 100")
        for row in rows:
            try:
                result, state = self.apply(dict(row)), "done"
            except ActionError as err:
                result, state = str(err), "failed"
            except Exception as err:  # logged and recorded; the next action still runs
                log.exception("operator action %s failed", row["id"])
                result, state = f"{type(err).__name__}: {err}", "failed"
            self.conn.execute("UPDATE web_actions SET state = ?, result = ?, done_utc = ? WHERE id = ?",
                              (state, result, utc_now_iso(), row["id"]))
            log.info("operator action %s %s %s by %s: %s (%s)", row["id"], row["action"], row["target"], row["user"],
                     state, result)
        return len(rows)

    def apply(self, row: dict[str, Any]) -> str:
        params = json.loads(row["params"])
        who = f"{row['user']} ({row['role']})"
        if row["action"] == "cancel_task":
            if not self.dispatcher.cancel_task(row["target"], reason=f"cancelled by operator {who}"):
                raise ActionError(f"task {row['target']} is unknown or already finished")
            return "cancelled"
        if row["action"] == "close_incident":
            return self._close_incident(row["target"], params.get("note", ""), who)
        if row["action"] == "dispatch":
            return self._dispatch(row["target"], params, who)
        raise ActionError(f"unknown action {row['action']!r}")

    def _close_incident(self, incident_id: str, note: str, who: str) -> str:
        d, store = self.dispatcher, self.dispatcher.store
        inc = store.get_incident(incident_id)
        if inc is None:
            raise ActionError(f"incident {incident_id} is unknown")
        if inc["task_id"]:
            task = store.get_task(inc["task_id"])
            if task is not None and task["state"] in ACTIVE_TASK_STATES:
                d.cancel_task(task["task_id"], reason=f"incident closed by operator {who}")
        inc = store.get_incident(incident_id) or inc
        inc.update(state="closed", updated_utc=utc_now_iso())
        store.save_incident(inc)
        return f"closed: {note}"[:500]

    def _dispatch(self, unit_id: str, params: dict[str, Any], who: str) -> str:
        """Send handheld ``unit_id`` to a task's, an incident's or a given target, as a signed command.

        An existing active task is re-assigned (its previous handheld gets a signed cancel); an
        incident without an active task, or a bare point, gets a new task.  The command goes out
        through :meth:`Dispatcher._send_dispatch`, so it is signed, recorded before publishing,
        and the handheld's replies drive the task like any other.
        """
        d, store = self.dispatcher, self.dispatcher.store
        unit = store.get_unit(unit_id)
        if unit is None or unit.get("unit_type") != "handheld":
            raise ActionError(f"{unit_id} is not a known handheld")
        for t in store.list_tasks(ACTIVE_TASK_STATES):
            if t["unit_id"] == unit_id and t["state"] != "open" and t["task_id"] != params.get("task_id"):
                raise ActionError(f"{unit_id} is busy with task {t['task_id']} (cancel it first)")
        task = None
        if params.get("task_id"):
            task = store.get_task(params["task_id"])
            if task is None or task["state"] in _TERMINAL:
                raise ActionError(f"task {params['task_id']} is unknown or already finished")
        elif params.get("incident_id"):
            inc = store.get_incident(params["incident_id"])
            if inc is None:
                raise ActionError(f"incident {params['incident_id']} is unknown")
            if inc.get("task_id"):
                t = store.get_task(inc["task_id"])
                if t is not None and t["state"] not in _TERMINAL:
                    task = t
            if task is None:
                if inc.get("est_x_m") is None and inc.get("center_x_m") is None:
                    raise ActionError(f"incident {params['incident_id']} has no position yet")
                x = inc["est_x_m"] if inc.get("est_x_m") is not None else inc["center_x_m"]
                y = inc["est_y_m"] if inc.get("est_y_m") is not None else inc["center_y_m"]
                task = self._new_task(x, y, inc.get("est_z_m") or 0.0, inc.get("sigma_xy_m"),
                                      inc["incident_id"], [a["alarm_id"] for a in inc.get("alarms") or []], who)
                inc.update(state="tasked", task_id=task["task_id"], updated_utc=utc_now_iso())
                store.save_incident(inc)
        else:
            task = self._new_task(float(params["x_m"]), float(params["y_m"]), 0.0, None, "", [], who)
        if task["unit_id"] and task["unit_id"] != unit_id and task["state"] != "open":
            d._send_cancel(task, f"re-assigned by operator {who}")
        task["unit_id"] = unit_id
        task["attempts"] = int(task.get("attempts") or 0) + 1
        d._send_dispatch(task, reason=f"manual dispatch by operator {who}")
        return f"task {task['task_id']} dispatched to {unit_id} (cmd {task['cmd_id'][:8]})"

    def _new_task(self, x: float, y: float, z: float, sigma: float | None, incident_id: str,
                  alarm_ids: list[str], who: str) -> dict[str, Any]:
        d = self.dispatcher
        now = utc_now_iso()
        task: dict[str, Any] = {
            "task_id": f"T-{uuid.uuid4().hex[:10]}", "incident_id": incident_id, "alarm_ids": alarm_ids or ["manual"],
            "state": "open", "unit_id": None, "cmd_id": None, "created_utc": now, "updated_utc": now,
            "state_since_utc": now, "deadline_utc": None, "attempts": 0, "excluded_units": [], "cmd_ids": [],
            "result": None, "dwell_s": d.config.dwell_s, "note": f"manual task by {who}",
            "history": [{"t_utc": now, "state": "open", "reason": f"manual task by operator {who}"}],
        }
        d._set_target(task, x, y, z, d.config.radius_m, sigma)
        d.store.save_task(task)
        return task
