"""Live push to the browsers: Server-Sent Events (HTML Living Standard, "Server-sent events").

Why SSE and not WebSocket: the traffic is one-way (server -> browser; actions are ordinary POSTs
that carry the CSRF token), SSE runs over plain HTTP with the session cookie, and the browser's
``EventSource`` reconnects by itself.

One poller per server reads the store's watermarks (newest ids, newest update times) every
``poll_interval_s`` (200 ms by default) and, when something moved, reads what is new once and
fans it out to every connected browser.  Each browser has a bounded queue; a browser that falls
that far behind is not silently skipped: its stream is ended with a ``resync`` event, and the page
reconnects and reloads the full state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool

from controller.store import Store
from controller.web import queries

__all__ = ["Broadcaster"]

log = logging.getLogger(__name__)

QUEUE_MAX = 256
KEEPALIVE_S = 15.0


class Broadcaster:
    def __init__(self, store: Store, poll_interval_s: float, history: Store | None = None):
        self.store = store
        self.history = history  # where unit-state changes are recorded (controller.web.db), if given
        self._unit_states: dict[str, str] | None = None
        self._units_mark: Any = None
        self.poll_interval_s = poll_interval_s
        self.clients: set[asyncio.Queue[str | None]] = set()
        self._marks: dict[str, Any] | None = None
        self._last = {"alarms": 0, "measurements": 0, "actions": 0}
        self.polls = 0
        self.events_sent = 0
        self.resyncs = 0

    def _init_cursors(self) -> None:
        m = queries.watermarks(self.store)
        self._marks = m
        self._last["alarms"] = int(m["alarms"] or 0)
        self._last["measurements"] = int(m["measurements"] or 0)
        self._last["actions"] = int(str(m["actions"]).split(":")[0] or 0)

    def _record_unit_states(self) -> None:
        """Append each unit's state change (online/stale/offline...) to ``web_unit_states``, stamped
        with the store's own ``state_since_utc`` (so the time is the change's, not this poll's)."""
        if self.history is None:
            return
        mark = self.store.query("SELECT MAX(state_since_utc) AS m, COUNT(*) AS n FROM units")[0]
        if mark == self._units_mark:
            return
        if self._unit_states is None:  # after a restart: continue from what was recorded
            self._unit_states = {r["unit_id"]: r["state"] for r in self.history.query(
                "SELECT unit_id, state FROM web_unit_states WHERE id IN "
                "(SELECT MAX(id) FROM web_unit_states GROUP BY unit_id)")}
        rows = [(u["state_since_utc"] or u["last_seen_utc"] or "", u["unit_id"], u["state"],
                 self._unit_states.get(u["unit_id"]))
                for u in self.store.query("SELECT unit_id, state, state_since_utc, last_seen_utc FROM units")
                if u["state"] != self._unit_states.get(u["unit_id"])]
        if rows:
            with self.history.transaction():  # one short write transaction, as every console write
                for r in rows:
                    self.history.execute(
                        "INSERT INTO web_unit_states (t_utc, unit_id, state, previous) VALUES (?, ?, ?, ?)", r)
            self._unit_states.update({r[1]: r[2] for r in rows})
        self._units_mark = mark

    def _changes(self) -> list[tuple[str, Any]]:
        """What moved since the last poll (runs in a worker thread: SQLite calls block)."""
        self._record_unit_states()
        if self._marks is None or not self.clients:
            self._init_cursors()  # nobody listening: only keep the cursors current
            return []
        m = queries.watermarks(self.store)
        out: list[tuple[str, Any]] = []
        if m["alarms"] != self._marks["alarms"]:
            rows = queries.list_alarms(self.store, after_id=self._last["alarms"], limit=500)
            if rows:
                self._last["alarms"] = rows[-1]["id"]
                out.append(("alarms", rows))
        if m["measurements"] != self._marks["measurements"]:
            rows = queries.positions_after(self.store, self._last["measurements"], limit=5000)
            if rows:
                self._last["measurements"] = rows[-1]["id"]
                out.append(("positions", rows))
        if m["units"] != self._marks["units"] or m["health"] != self._marks["health"]:
            out.append(("units", queries.unit_rows(self.store)))
        if m["vitals"] != self._marks["vitals"]:
            out.append(("vitals", queries.vitals_rows(self.store)))
        if m["tasks"] != self._marks["tasks"]:
            out.append(("tasks", self.store.list_tasks()))
        if m["cctv_alerts"] != self._marks.get("cctv_alerts"):
            out.append(("cctv_alerts", queries.cctv_alert_rows(self.store, limit=200)))
        if m["incidents"] != self._marks["incidents"]:
            out.append(("incidents", queries.list_incidents(self.store)))
        if m["actions"] != self._marks["actions"]:
            # new actions and those whose outcome arrived: resend the recent ones
            out.append(("actions", queries.list_actions(self.store, limit=50)))
            out.append(("alarms_acked", queries.list_alarms(self.store, limit=200)))
        self._marks = m
        return out

    async def run(self) -> None:
        """Poll until cancelled; errors are logged (once a minute at most) and polling goes on."""
        last_err = 0.0
        while True:
            try:
                # polled even with nobody connected (one cheap query): the cursors stay current, so a
                # page that connects and then loads the full state can miss nothing in between
                changes = await run_in_threadpool(self._changes)
                self.polls += 1
                for kind, data in changes:
                    self.publish(kind, data)
            except Exception:
                if time.monotonic() - last_err > 60:
                    log.exception("console live poll failed")
                    last_err = time.monotonic()
            await asyncio.sleep(self.poll_interval_s)

    def publish(self, kind: str, data: Any) -> None:
        if not self.clients:
            return
        text = _event(kind, data)  # encoded once, shared by every browser's queue
        for q in list(self.clients):
            try:
                q.put_nowait(text)
            except asyncio.QueueFull:
                self.resyncs += 1
                self.clients.discard(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(_event("resync", {"reason": "browser fell behind; reload the state"}))
                q.put_nowait(None)

    async def stream(self, is_disconnected: Any) -> AsyncIterator[str]:
        q: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_MAX)
        self.clients.add(q)
        try:
            yield "retry: 2000\n\n"
            yield _event("hello", {"t_mono_s": time.monotonic()})
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    if await is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                self.events_sent += 1
                yield item
        finally:
            self.clients.discard(q)


def _event(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"
