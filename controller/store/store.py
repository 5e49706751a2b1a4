"""The controller's store: everything received, de-duplicated, plus incidents and tasks.

Two engines behind one class (issue 20): SQLite in WAL mode, the embedded default (one file,
crash-safe transactions, concurrent readers - CLI, demo, console - while the controller writes), and
PostgreSQL for several controller processes sharing one database.  ``Store(location)`` picks the
engine from the location (:mod:`controller.store.location`: a path or ``sqlite:///...``, or
``postgresql://...``); the schema and its versioned migrations are shared
(:mod:`controller.store.migrations`).  The MQTT layer acknowledges a message to the broker only
after :meth:`Store.store_uplink` has committed, so the store is the point where a message stops
being the broker's responsibility.

Exactly-once: QoS 1 means at-least-once; redeliveries are removed here.  The ``received`` ledger is
keyed by ``(unit_id, boot_id, seq)`` (its primary key: the database enforces it) and written with
``INSERT ... ON CONFLICT DO NOTHING`` in the same transaction as the message's row, so a message is
either fully stored and in the ledger, or neither; a second copy - from a redelivery, or through
another controller - finds its key taken and stores nothing (``'duplicate'``).  On SQLite
``BEGIN IMMEDIATE`` takes the write lock up front, so writers serialise instead of dead-locking on a
read->write upgrade; on PostgreSQL the second insert of a key waits for the first transaction and
the unit's row is read ``FOR UPDATE``.  Session messages (birth/death, ``seq == 0``) are not in the
ledger; they go to ``sessions``.

Transactions are explicit (the connection is in autocommit mode and every write goes through
:meth:`Store.transaction`): nested use becomes a SAVEPOINT, so a batch of messages commits with one
fsync while a failing message rolls back alone.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from agent.wire_schema import (
    Alarm,
    Birth,
    Command,
    Death,
    Envelope,
    Health,
    Measurement,
    Position,
    TaskEvent,
    Tracklet,
    Vitals,
)
from controller import liveness
from controller.store import migrations
from controller.store.backend import Backend, BackendError
from controller.store.location import parse_store_location
from controller.store.rows import alarm_row, content_digest, decode, epoch_s, iso_utc, js, pos_cols
from controller.store.schema import JSON_COLS, PKS, TABLES

__all__ = ["RejectBudget", "Store", "StoreError", "StoreOutcome", "epoch_s", "iso_utc"]

log = logging.getLogger(__name__)

StoreOutcome = Literal["stored", "duplicate", "conflict"]


class StoreError(RuntimeError):
    """The database cannot be opened or is not a controller database."""


_DROPPED_PREFIX = "rejects_dropped."


@dataclass(frozen=True)
class RejectBudget:
    """How much evidence of rejected messages is kept (issue 14, row 13: nothing bounded it).

    At most ``max_rows`` rows (plus up to ``prune_every`` between prunes), none older than
    ``max_age_s``, and ``excerpt_bytes`` of each payload: with the topic and reason capped too, a
    row is < 2.5 kB, so the table stays under ~25 MB whatever arrives.
    """

    max_rows: int = 10_000
    max_age_s: float = 7 * 86400.0
    excerpt_bytes: int = 1024
    prune_every: int = 100


class Store:
    """One controller database. Thread-safe (one connection behind a re-entrant lock)."""

    def __init__(
        self,
        path: str | Path,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 30_000,
        create: bool = True,
        reject_budget: RejectBudget | None = None,
    ):
        """``path``: a SQLite file path (or ``sqlite:///...``), or a ``postgresql://`` URL.
        ``create=False`` opens an existing controller database only (readers: CLI, console)."""
        self.reject_budget = reject_budget or RejectBudget()
        self._rejects_since_prune = self.reject_budget.prune_every  # prune on the first reject
        try:
            where = parse_store_location(path)
        except ValueError as err:
            raise StoreError(str(err)) from err
        self.backend_name = where.backend
        self.path = where.target
        if where.backend == "sqlite" and not create and (self.path == ":memory:" or not Path(self.path).exists()):
            raise StoreError(f"no controller database at {self.path}")
        self._b: Backend = self._open_backend(where.backend, where.target, synchronous, busy_timeout_ms)
        self.path = self._b.location  # a PostgreSQL URL without its password, for logs and messages
        self._lock = threading.RLock()
        self._depth = 0
        try:
            if create:
                self._create_schema()
            elif "received" not in self._b.table_names():
                raise StoreError(f"{self.path} is not a controller database (no 'received' table)")
        except sqlite3.Error as err:
            self._b.close()
            raise StoreError(f"{self.path}: cannot open database ({err})") from err
        except StoreError:
            self._b.close()
            raise

    @staticmethod
    def _open_backend(kind: str, target: str, synchronous: Literal["FULL", "NORMAL"],
                      busy_timeout_ms: int) -> Backend:
        try:
            if kind == "postgresql":
                try:
                    from controller.store.postgres_backend import PostgresBackend
                except ImportError as err:
                    raise StoreError("a postgresql:// store needs psycopg 3 (pip install 'psycopg[binary]', "
                                     "part of the controller extra)") from err
                return PostgresBackend(target, lock_timeout_ms=busy_timeout_ms)
            from controller.store.sqlite_backend import SqliteBackend

            return SqliteBackend(target, synchronous, busy_timeout_ms)
        except sqlite3.Error as err:  # BackendError is one too
            shown = target if kind == "sqlite" else target.rsplit("@", 1)[-1]
            raise StoreError(f"{shown}: cannot open database ({err})") from err

    @property
    def dialect(self) -> str:
        """``'sqlite'`` or ``'postgresql'``."""
        return self._b.dialect

    def schema_version(self) -> int:
        with self._lock:
            return migrations.schema_version(self._b)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        with self._lock:
            self._b.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_schema(self) -> None:
        with self.transaction():
            migrations.migrate(self._b)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of work; nested calls become SAVEPOINTs (roll back alone)."""
        with self._lock:
            depth = self._depth
            if depth == 0:
                self._b.begin()
            else:
                self._b.execute(f"SAVEPOINT sp{depth}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth = depth
                self._rollback(depth)
                raise
            self._depth = depth
            if depth == 0:
                try:
                    self._b.execute("COMMIT")
                except sqlite3.Error:
                    if self._b.in_transaction:
                        self._b.execute("ROLLBACK")
                    raise
            else:
                self._b.execute(f"RELEASE sp{depth}")

    batch = transaction

    def _rollback(self, depth: int) -> None:
        # SQLite may already have rolled the whole transaction back (SQLITE_FULL, IOERR, BUSY):
        # then there is nothing to undo, and the caller's exception is the one that matters.
        # (PostgreSQL keeps a failed transaction open until ROLLBACK: in_transaction stays true.)
        if not self._b.in_transaction:
            return
        try:
            if depth == 0:
                self._b.execute("ROLLBACK")
            else:
                self._b.execute(f"ROLLBACK TO sp{depth}")
                self._b.execute(f"RELEASE sp{depth}")
        except sqlite3.Error:
            if depth == 0 and self._b.in_transaction:
                self._b.execute("ROLLBACK")

    def _insert(self, table: str, row: dict[str, Any], on_conflict: str = "") -> Any:
        cols = ", ".join(row)
        marks = ", ".join(f":{c}" for c in row)
        return self._b.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks}) {on_conflict}", row)

    def _upsert(self, table: str, row: dict[str, Any]) -> None:
        pk = PKS[table]
        keys = (pk,) if isinstance(pk, str) else pk
        sets = ", ".join(f"{c}=excluded.{c}" for c in row if c not in keys)
        self._insert(table, row, f"ON CONFLICT({', '.join(keys)}) DO UPDATE SET {sets}")

    def _update(self, table: str, key: dict[str, Any], values: dict[str, Any], also: str = "") -> int:
        sets = ", ".join([f"{c}=:v_{c}" for c in values] + ([also] if also else []))
        where = " AND ".join(f"{c}=:k_{c}" for c in key)
        params = {f"v_{c}": v for c, v in values.items()} | {f"k_{c}": v for c, v in key.items()}
        return self._b.execute(f"UPDATE {table} SET {sets} WHERE {where}", params).rowcount

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [decode(r) for r in self._b.query(sql, params)]

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Ad-hoc read (views, plots): rows as dicts with JSON columns decoded. SELECT only."""
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            raise ValueError("Store.query is for SELECT statements")
        return self._rows(sql, params)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """One write to the operator console's own tables (controller.web), in its own transaction (or
        the caller's); returns the row count.  Ingest and dispatch write through the methods below."""
        with self.transaction():
            return int(self._b.execute(sql, params).rowcount)

    def insert_returning_id(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """An INSERT into a table with an engine-assigned ``id``; returns that id (``RETURNING``:
        SQLite >= 3.35 and PostgreSQL)."""
        with self.transaction():
            row = self._b.execute(f"{sql} RETURNING id", params).fetchone()
        return int(row["id"] if isinstance(row, dict) else row[0])

    # ------------------------------------------------------------------ uplink
    #: times a message's own transaction is re-run after the server broke a deadlock with another writer
    DEADLOCK_RETRIES = 5

    def store_uplink(self, env: Envelope, body: BaseModel, received_utc: str) -> StoreOutcome:
        """Store one decoded uplink atomically; ``'duplicate'`` (nothing written) if already stored.

        Several controllers on PostgreSQL lock the ledger key, the boot and the unit row of each
        message; two transactions can still wait on each other (a batch takes many), and the server
        then rolls one back.  Outside a batch the message is simply stored again (nothing of the
        rolled-back attempt remains); inside a batch the error goes up, and the caller's batch falls
        back to one message at a time (controller.service)."""
        for attempt in range(self.DEADLOCK_RETRIES + 1):
            try:
                return self._store_uplink_once(env, body, received_utc)
            except BackendError as err:
                if not err.retry_now or self._depth > 0 or attempt == self.DEADLOCK_RETRIES:
                    raise
                log.debug("store: %s/%s/%d: deadlock broken by the server, storing again", env.unit_id,
                          env.boot_id, env.seq)
        raise AssertionError("unreachable")  # pragma: no cover

    def _store_uplink_once(self, env: Envelope, body: BaseModel, received_utc: str) -> StoreOutcome:
        with self.transaction():
            if env.kind in ("birth", "death"):
                self._store_session(env, body, received_utc)
                return "stored"
            cur = self._insert(
                "received",
                {
                    "unit_id": env.unit_id,
                    "boot_id": env.boot_id,
                    "seq": env.seq,
                    "kind": env.kind,
                    "t_utc": env.t_utc,
                    "t_mono_s": env.t_mono_s,
                    "delivery": env.delivery,
                    "received_utc": received_utc,
                    "content_sha256": (digest := content_digest(env)),
                },
                "ON CONFLICT DO NOTHING",
            )
            if cur.rowcount == 0:
                return self._duplicate_or_conflict(env, body, digest, received_utc)
            self._raise_boot_ref(env.unit_id, env.boot_id, env.seq, epoch_s(received_utc))
            common = {
                "unit_id": env.unit_id,
                "boot_id": env.boot_id,
                "seq": env.seq,
                "t_utc": env.t_utc,
                "t_epoch_s": epoch_s(env.t_utc),
                "delivery": env.delivery,
                "received_utc": received_utc,
            }
            position: Position | None = None
            unit_extra: dict[str, Any] = {}
            if isinstance(body, Measurement):
                position = body.position
                self._insert(
                    "measurements",
                    common
                    | {
                        "interval_s": body.interval_s,
                        "live_time_s": body.live_time_s,
                        "gross_counts": body.gross_counts,
                        "gross_cps": body.gross_cps,
                        "background_cps": body.background_cps,
                        "dose_rate_usv_h": body.dose_rate_usv_h,
                        "detector_model": body.detector_model,
                        **pos_cols(position),
                        "hdop": position.hdop if position else None,
                        "speed_m_s": body.speed_m_s,
                        "spectrum": js(body.spectrum),
                        "energy_calibration_kev": js(body.energy_calibration_kev),
                    },
                )
            elif isinstance(body, Alarm):
                self._insert("alarms", alarm_row(common, body))
            elif isinstance(body, Health):
                position = body.position
                self._insert(
                    "health",
                    common
                    | {
                        "uptime_s": body.uptime_s,
                        "cpu_pct": body.cpu_pct,
                        "mem_rss_mb": body.mem_rss_mb,
                        "outbox_pending": body.outbox_pending,
                        "loop_lag_ms": body.loop_lag_ms,
                        "queue_depth": js(body.queue_depth),
                        "sensors": js({k: v.model_dump() for k, v in body.sensors.items()}),
                        **pos_cols(position),
                        "available": int(body.available),
                        "task_id": body.task_id,
                        "commands_rejected": body.commands_rejected,
                        "outbox_state": body.outbox_state,
                        "outbox_errors": js(body.outbox_errors),
                        "messages_lost": js(body.messages_lost),
                        "outbox_in_memory": body.outbox_in_memory,
                        "status_write_failures": body.status_write_failures,
                    },
                )
                if env.delivery == "live":
                    unit_extra = {
                        "available": int(body.available),
                        "task_id": body.task_id,
                        "sensors": js({k: v.model_dump() for k, v in body.sensors.items()}),
                        "outbox_pending": body.outbox_pending,
                    }
            elif isinstance(body, TaskEvent):
                position = body.position
                self._insert(
                    "task_events",
                    common
                    | {
                        "task_id": body.task_id,
                        "cmd_id": body.cmd_id,
                        "state": body.state,
                        **pos_cols(position),
                        "result": js(body.result.model_dump() if body.result else None),
                        "reason": body.reason,
                        "disposition": None,
                        "disposition_reason": None,
                    },
                )
            elif isinstance(body, Vitals):
                self._insert(
                    "vitals",
                    common
                    | {
                        "track_id": body.track_id,
                        "heart_rate_bpm": body.heart_rate_bpm,
                        "hr_quality": body.hr_quality,
                        "respiration_rate_bpm": body.respiration_rate_bpm,
                        "blink_rate_per_min": body.blink_rate_per_min,
                        "abnormal_score": body.abnormal_score,
                        "alert": int(body.alert),
                        "evidence": js(body.evidence),
                        "ibi_ms": js(body.ibi_ms) if body.ibi_ms else None,
                    },
                )
            elif isinstance(body, Tracklet):
                # ledger row only (de-duplication, sequence): the positions go to the hall analyzer in
                # memory (controller.cctv.live_feed), deleted after the CCTV retention; only the
                # alerts it raises are kept (cctv_alerts)
                pass
            else:  # pragma: no cover - decode_uplink guarantees the body type
                raise TypeError(f"no table for body {type(body).__name__}")
            self._touch_unit(env, received_utc, position, unit_extra)
            return "stored"

    def _touch_unit(self, env: Envelope, received_utc: str, position: Position | None, extra: dict[str, Any]) -> None:
        # FOR UPDATE (PostgreSQL): another controller storing this unit's next message waits here
        # instead of reading the same state and overwriting this one's update
        row = self._b.execute(f"SELECT state, position_epoch_s FROM units WHERE unit_id=?{self._b.for_update}",
                              (env.unit_id,)).fetchone()
        now_s = epoch_s(received_utc)
        values: dict[str, Any] = {
            "last_seen_utc": received_utc,
            "last_seen_epoch_s": now_s,
            "last_kind": env.kind,
            **extra,
        }
        if row is None:
            # two controllers may both find the unit new: the second insert does nothing, and the
            # row (now the first one's, locked) is read again
            self._insert(
                "units",
                {
                    "unit_id": env.unit_id,
                    "boot_id": env.boot_id,
                    "state": "online",
                    "state_since_utc": received_utc,
                    "messages": 0,
                    **values,
                },
                "ON CONFLICT DO NOTHING",
            )
            row = self._b.execute(f"SELECT state, position_epoch_s FROM units WHERE unit_id=?{self._b.for_update}",
                                  (env.unit_id,)).fetchone()
        new_state = liveness.state_on_message(row[0], env.kind, env.delivery)
        if new_state != row[0]:
            values |= {"state": new_state, "state_since_utc": received_utc}
        t_s = epoch_s(env.t_utc)
        if position is not None and position.fix_quality > 0 and (row[1] is None or t_s is None or t_s >= row[1]):
            values |= {**pos_cols(position), "position_epoch_s": t_s}
        self._update("units", {"unit_id": env.unit_id}, values, also="messages = messages + 1")

    def _store_session(self, env: Envelope, body: BaseModel, received_utc: str) -> None:
        unit = self._b.execute(
            "SELECT boot_id, session_t_mono_s, state FROM units WHERE unit_id=?", (env.unit_id,)
        ).fetchone()
        now_s = epoch_s(received_utc)
        if isinstance(body, Birth):
            applied = True
            self._announce_boot(env, body, received_utc)
            values = {
                "unit_type": body.unit_type,
                "state": "online",
                "state_since_utc": received_utc,
                "last_seen_utc": received_utc,
                "last_seen_epoch_s": now_s,
                "last_kind": "birth",
                "boot_id": env.boot_id,
                "session_t_mono_s": env.t_mono_s,
                "birth_utc": env.t_utc,
                "birth": js(body.model_dump(mode="json")),
                "profile": body.profile,
                "software_version": body.software_version,
                "death_reason": None,
                "sensors": js({k: v.model_dump() for k, v in body.sensors.items()}),
            }
            if unit is None:
                self._insert("units", {"unit_id": env.unit_id, "messages": 0, "available": 1} | values)
            else:
                self._update("units", {"unit_id": env.unit_id}, values)
        else:
            assert isinstance(body, Death)
            applied = unit is not None and liveness.death_applies(unit[0], unit[1], env.boot_id, env.t_mono_s)
            if body.last_seq is not None:
                self._end_boot(env.unit_id, env.boot_id, body.last_seq, received_utc)
            if applied:
                self._update(
                    "units",
                    {"unit_id": env.unit_id},
                    {
                        "state": "offline",
                        "state_since_utc": received_utc,
                        "death_reason": body.reason,
                        "last_kind": "death",
                    },
                )
            elif unit is None:
                self._insert(
                    "units",
                    {
                        "unit_id": env.unit_id,
                        "boot_id": env.boot_id,
                        "state": "offline",
                        "state_since_utc": received_utc,
                        "death_reason": body.reason,
                        "last_kind": "death",
                        "messages": 0,
                    },
                )
        self._insert(
            "sessions",
            {
                "unit_id": env.unit_id,
                "boot_id": env.boot_id,
                "kind": env.kind,
                "t_utc": env.t_utc,
                "t_mono_s": env.t_mono_s,
                "clock_valid": int(env.clock_valid),
                "received_utc": received_utc,
                "body": js(body.model_dump(mode="json")),
                "applied": int(applied),
            },
        )

    def record_reject(self, received_utc: str, topic: str, reason_code: str, reason: str, payload: bytes,
                      payload_bytes: int | None = None) -> None:
        """Keep evidence of one rejected message: an excerpt of its payload, within the reject budget.

        ``payload_bytes``: the size on the wire, when ``payload`` is already only an excerpt.
        """
        budget = self.reject_budget
        with self.transaction():
            self._insert(
                "rejects",
                {
                    "received_utc": received_utc,
                    "topic": topic[:300],
                    "reason_code": reason_code[:64],
                    "reason": reason[:1000],
                    "payload_excerpt": payload[: budget.excerpt_bytes].decode("utf-8", errors="replace"),
                    "payload_bytes": max(len(payload), payload_bytes or 0),
                },
            )
            self._rejects_since_prune += 1
            if self._rejects_since_prune >= budget.prune_every:
                self._prune_rejects(received_utc)

    def _prune_rejects(self, now_utc: str) -> None:
        """Drop rejects older than the budget's age or beyond its row count; count them per reason.

        Why a budget: rejects are what an outsider can make us write. A flood of junk must neither
        fill the disk nor hide the count of what it was: the dropped rows live on as counters
        ``rejects_dropped.<reason>``, which :meth:`reject_counts` adds back.
        """
        budget = self.reject_budget
        self._rejects_since_prune = 0
        now_s = epoch_s(now_utc)
        cutoff = iso_utc(datetime.fromtimestamp(now_s - budget.max_age_s, UTC)) if now_s is not None else None
        newest_dropped = self._b.execute(
            "SELECT id FROM rejects ORDER BY id DESC LIMIT 1 OFFSET ?", (budget.max_rows,)
        ).fetchone()
        where, params = [], []
        if cutoff is not None:
            where.append("received_utc < ?")
            params.append(cutoff)
        if newest_dropped is not None:
            where.append("id <= ?")
            params.append(newest_dropped[0])
        if not where:
            return
        cond = " OR ".join(where)
        dropped = self._b.execute(
            f"SELECT reason_code, COUNT(*) FROM rejects WHERE {cond} GROUP BY reason_code", params
        ).fetchall()
        if not dropped:
            return
        self._b.execute(f"DELETE FROM rejects WHERE {cond}", params)
        for code, n in dropped:
            self._b.execute(
                "INSERT INTO counters (name, unit_id, value) VALUES (?, '', ?) "
                "ON CONFLICT(name, unit_id) DO UPDATE SET value = value + excluded.value",
                (f"{_DROPPED_PREFIX}{code}", n),
            )
        log.info("rejects: %d old row(s) dropped (budget: %d rows, %.0f days); counted per reason",
                 sum(n for _, n in dropped), budget.max_rows, budget.max_age_s / 86400)

    def bump_counter(self, name: str, unit_id: str = "", by: int = 1) -> None:
        with self.transaction():
            self._b.execute(
                "INSERT INTO counters (name, unit_id, value) VALUES (?, ?, ?) "
                "ON CONFLICT(name, unit_id) DO UPDATE SET value = value + excluded.value",
                (name, unit_id, by),
            )

    # ------------------------------------------------------------------ liveness
    def sweep_liveness(self, now_utc: str, stale_after_s: float, offline_after_s: float) -> list[tuple[str, str, str]]:
        """Demote silent units: online -> stale -> offline. Returns (unit_id, old, new) changes."""
        now_s = epoch_s(now_utc) or 0.0
        changes: list[tuple[str, str, str]] = []
        with self.transaction():
            rows = self._b.execute(
                "SELECT unit_id, state, last_seen_epoch_s FROM units WHERE state IN ('online', 'stale')"
            ).fetchall()
            for unit_id, state, seen in rows:
                new = liveness.state_on_silence(
                    state, now_s - (seen if seen is not None else now_s), stale_after_s, offline_after_s
                )
                if new != state:
                    self._update("units", {"unit_id": unit_id}, {"state": new, "state_since_utc": now_utc})
                    changes.append((unit_id, state, new))
        return changes

    # ------------------------------------------------------------------ dispatcher support
    def alarms_after(self, rowid: int, limit: int = 500) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT a.*, u.unit_type FROM alarms a LEFT JOIN units u USING (unit_id) "
            "WHERE a.id > ? ORDER BY a.id LIMIT ?",
            (rowid, limit),
        )

    def task_events_after(self, rowid: int, limit: int = 500) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM task_events WHERE id > ? ORDER BY id LIMIT ?", (rowid, limit))

    def set_alarm_incident(self, alarm_rowid: int, incident_id: str) -> None:
        with self.transaction():
            self._update("alarms", {"id": alarm_rowid}, {"incident_id": incident_id})

    def set_task_event_disposition(self, event_rowid: int, disposition: str, reason: str = "") -> None:
        with self.transaction():
            self._update("task_events", {"id": event_rowid}, {"disposition": disposition, "disposition_reason": reason})

    def save_task(self, task: dict[str, Any]) -> None:
        with self.transaction():
            self._upsert("tasks", {k: (js(v) if k in JSON_COLS else v) for k, v in task.items()})

    # Claims: compare-and-set updates, so that two dispatchers (two controllers, or a leader and the
    # one taking over from it) never open two tasks for one incident nor send two handhelds for one
    # task attempt.  One UPDATE with the expected old value in its WHERE: on PostgreSQL the second of
    # two concurrent updates waits for the first's row lock, re-reads the row and matches nothing;
    # on SQLite the file's write lock orders them.
    def claim_incident_task(self, incident_id: str, task_id: str) -> bool:
        """Make ``task_id`` the incident's task if it has none yet; False if another got there first."""
        with self.transaction():
            return self._b.execute(
                "UPDATE incidents SET task_id = ? WHERE incident_id = ? AND (task_id IS NULL OR task_id = '')",
                (task_id, incident_id),
            ).rowcount == 1

    def claim_task_attempt(self, task_id: str, attempts_seen: int, unit_id: str | None = None) -> bool:
        """Count one more dispatch attempt of an open task, if it is still open at ``attempts_seen``
        attempts; False if another dispatcher already took this attempt (it sends the handheld).

        The claim also moves the task out of 'open' (to 'dispatched', to ``unit_id``) in the same
        statement: a claim that only counted the attempt left the task open until the winner saved it,
        and a second dispatcher reading it in between claimed the *next* attempt and sent a second
        handheld (seen in CI: attempts 2 after one race)."""
        with self.transaction():
            return self._b.execute(
                "UPDATE tasks SET attempts = ?, state = 'dispatched', unit_id = COALESCE(?, unit_id) "
                "WHERE task_id = ? AND state = 'open' AND COALESCE(attempts, 0) = ?",
                (attempts_seen + 1, unit_id, task_id, attempts_seen),
            ).rowcount == 1

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return rows[0] if rows else None

    def save_incident(self, incident: dict[str, Any]) -> None:
        """Insert or update an incident.  Its task, once given (:meth:`claim_incident_task`), is kept:
        a stale copy saved by another dispatcher (``task_id`` None, state ``holding``) cannot take it
        back and so let a second task be opened (issue 20)."""
        row = {k: (js(v) if k in JSON_COLS else v) for k, v in incident.items()}
        sets = [f"{c}=excluded.{c}" for c in row if c not in ("incident_id", "task_id", "state")]
        if "task_id" in row:
            sets.append("task_id=COALESCE(incidents.task_id, excluded.task_id)")
        if "state" in row:
            sets.append("state=CASE WHEN incidents.task_id IS NOT NULL AND excluded.state = 'holding' "
                        "THEN incidents.state ELSE excluded.state END")
        with self.transaction():
            self._insert("incidents", row, f"ON CONFLICT(incident_id) DO UPDATE SET {', '.join(sets)}" if sets
                         else "ON CONFLICT(incident_id) DO NOTHING")

    def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM incidents WHERE incident_id = ?", (incident_id,))
        return rows[0] if rows else None

    def active_incidents(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM incidents WHERE state IN ('holding', 'tasked') ORDER BY created_utc")

    def incidents_in_window(self, t_s: float, window_s: float, states: Sequence[str]) -> list[dict[str, Any]]:
        """Incidents in ``states`` whose alarm time span is within ``window_s`` of ``t_s``."""
        marks = ", ".join("?" * len(states))
        return self._rows(
            f"SELECT * FROM incidents WHERE state IN ({marks}) AND last_alarm_epoch_s >= ? "
            "AND first_alarm_epoch_s <= ? ORDER BY created_utc",
            [*states, t_s - window_s, t_s + window_s],
        )

    def record_command(self, cmd: Command) -> None:
        with self.transaction():
            self._insert(
                "commands",
                {
                    "cmd_id": cmd.cmd_id,
                    "unit_id": cmd.unit_id,
                    "command": cmd.command,
                    "task_id": cmd.task.task_id if cmd.task else cmd.task_id,
                    "t_utc": cmd.t_utc,
                    "payload": cmd.model_dump_json(by_alias=True),
                },
            )

    def get_unit(self, unit_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM units WHERE unit_id = ?", (unit_id,))
        return rows[0] if rows else None

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._b.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._upsert("meta", {"key": key, "value": value})

    # ------------------------------------------------------------------ queries
    def list_units(self, unit_type: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM units WHERE 1=1", []
        if unit_type:
            sql, params = sql + " AND unit_type = ?", [*params, unit_type]
        if state:
            sql, params = sql + " AND state = ?", [*params, state]
        return self._rows(sql + " ORDER BY unit_id", params)

    def list_alarms(self, limit: int = 1000, unit_id: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM alarms", []
        if unit_id:
            sql, params = sql + " WHERE unit_id = ?", [unit_id]
        return self._rows(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])[::-1]

    def list_tasks(self, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        if states is None:
            return self._rows("SELECT * FROM tasks ORDER BY created_utc, task_id")
        states = list(states)
        marks = ", ".join("?" * len(states))
        return self._rows(f"SELECT * FROM tasks WHERE state IN ({marks}) ORDER BY created_utc, task_id", states)

    def list_incidents(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM incidents ORDER BY created_utc, incident_id")

    def list_vitals(self, latest_per_track: bool = True, limit: int = 1000,
                    alerts_only: bool = False) -> list[dict[str, Any]]:
        """Camera-box vitals: the newest message of each (unit, track), or the last ``limit`` messages;
        ``alerts_only``: the last ``limit`` messages that carried an abnormal-state alert."""
        if alerts_only:
            return self._rows("SELECT * FROM vitals WHERE alert = 1 ORDER BY id DESC LIMIT ?", (limit,))[::-1]
        if latest_per_track:
            return self._rows(
                "SELECT v.* FROM vitals v JOIN (SELECT unit_id, track_id, MAX(id) AS id FROM vitals "
                "GROUP BY unit_id, track_id) last ON v.id = last.id ORDER BY v.unit_id, v.track_id"
            )
        return self._rows("SELECT * FROM vitals ORDER BY id DESC LIMIT ?", (limit,))[::-1]

    def save_cctv_alerts(self, rows: Sequence[dict[str, Any]]) -> int:
        """Store hall CCTV alerts (rows from controller.cctv.live_feed.alert_row); an alert id already
        stored is left as it is.  Returns how many were new."""
        new = 0
        with self.transaction():
            for r in rows:
                new += self._insert("cctv_alerts", r, "ON CONFLICT(alert_id) DO NOTHING").rowcount
        return new

    def list_cctv_alerts(self, limit: int = 100, rule: str | None = None) -> list[dict[str, Any]]:
        """The most recent ``limit`` CCTV alerts (optionally of one rule), oldest first."""
        sql, params = "SELECT * FROM cctv_alerts", []
        if rule:
            sql, params = sql + " WHERE rule = ?", [rule]
        return self._rows(sql + " ORDER BY t_raised_epoch_s DESC, alert_id LIMIT ?", [*params, limit])[::-1]

    def list_rejects(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM rejects ORDER BY id DESC LIMIT ?", (limit,))[::-1]

    def list_commands(self, task_id: str | None = None) -> list[dict[str, Any]]:
        if task_id:
            return self._rows("SELECT * FROM commands WHERE task_id = ? ORDER BY id", (task_id,))
        return self._rows("SELECT * FROM commands ORDER BY id")

    def list_task_events(self, task_id: str | None = None) -> list[dict[str, Any]]:
        if task_id:
            return self._rows("SELECT * FROM task_events WHERE task_id = ? ORDER BY id", (task_id,))
        return self._rows("SELECT * FROM task_events ORDER BY id")

    def measurements_near(
        self,
        x_m: float,
        y_m: float,
        radius_m: float,
        t_from: str | float | datetime | None = None,
        t_to: str | float | datetime | None = None,
        unit_ids: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Measurements with a position within ``radius_m`` (ground plane) of (x, y), in a time window.

        Times are the agent's interval-end times (ISO text, datetime or epoch seconds); the window
        uses the ``t_epoch_s`` index, the circle a bounding box then an exact test.
        """
        lo, hi = epoch_s(t_from), epoch_s(t_to)
        sql = (
            "SELECT * FROM measurements WHERE x_m BETWEEN :x0 AND :x1 AND y_m BETWEEN :y0 AND :y1 "
            "AND ((x_m - :x) * (x_m - :x) + (y_m - :y) * (y_m - :y)) <= :r2"
        )
        params: dict[str, Any] = {
            "x": x_m,
            "y": y_m,
            "x0": x_m - radius_m,
            "x1": x_m + radius_m,
            "y0": y_m - radius_m,
            "y1": y_m + radius_m,
            "r2": radius_m * radius_m,
        }
        if lo is not None:
            sql, params["lo"] = sql + " AND t_epoch_s >= :lo", lo
        if hi is not None:
            sql, params["hi"] = sql + " AND t_epoch_s <= :hi", hi
        if unit_ids:
            marks = ", ".join(f":u{i}" for i in range(len(unit_ids)))
            sql += f" AND unit_id IN ({marks})"
            params |= {f"u{i}": u for i, u in enumerate(unit_ids)}
        return self._rows(sql + " ORDER BY unit_id, boot_id, seq", params)

    def gaps(self, unit_id: str | None = None) -> list[dict[str, Any]]:
        """Missing sequence ranges per (unit, boot): between stored seqs, before the first, and
        after the last up to the boot's end as the unit's next birth reported it (``end_seq``).

        Without that end a gap after the last stored seq cannot be seen (nothing says more were
        sent); the agent's outbox backfill normally closes gaps after an outage.
        """
        where = "WHERE unit_id = :u" if unit_id else ""
        where_b = "AND b.unit_id = :u" if unit_id else ""
        sql = f"""
            WITH s AS (
              SELECT unit_id, boot_id, seq,
                     LAG(seq, 1, 0) OVER (PARTITION BY unit_id, boot_id ORDER BY seq) AS prev
              FROM received {where}),
            tail AS (
              SELECT b.unit_id, b.boot_id, COALESCE(MAX(r.seq), 0) + 1 AS first_missing,
                     b.end_seq AS last_missing, b.end_seq - COALESCE(MAX(r.seq), 0) AS n_missing
              FROM boots b LEFT JOIN received r ON r.unit_id = b.unit_id AND r.boot_id = b.boot_id
              WHERE b.end_seq IS NOT NULL {where_b}
              GROUP BY b.unit_id, b.boot_id HAVING b.end_seq > COALESCE(MAX(r.seq), 0))
            SELECT unit_id, boot_id, prev + 1 AS first_missing, seq - 1 AS last_missing,
                   seq - prev - 1 AS n_missing
            FROM s WHERE seq > prev + 1
            UNION ALL SELECT * FROM tail
            ORDER BY unit_id, boot_id, first_missing"""
        return self._rows(sql, {"u": unit_id} if unit_id else {})

    def counts(self) -> dict[str, Any]:
        """Messages per unit and kind, seqs per boot with gap totals, rejects and counters."""
        per_unit = self._rows(
            "SELECT unit_id, kind, delivery, COUNT(*) AS n FROM received "
            "GROUP BY unit_id, kind, delivery ORDER BY unit_id, kind, delivery"
        )
        boots = self._rows(
            "SELECT unit_id, boot_id, COUNT(*) AS n, MIN(seq) AS min_seq, MAX(seq) AS max_seq, "
            "MIN(received_utc) AS first_received_utc, MAX(received_utc) AS last_received_utc "
            "FROM received GROUP BY unit_id, boot_id ORDER BY unit_id, first_received_utc"
        )
        gaps = self.gaps()
        # a boot that the next birth says ended at seq N but of which nothing arrived: all N lost
        seen = {(b["unit_id"], b["boot_id"]) for b in boots}
        boots += [
            {"unit_id": g["unit_id"], "boot_id": g["boot_id"], "n": 0, "min_seq": None, "max_seq": None,
             "first_received_utc": None, "last_received_utc": None}
            for g in gaps if g["first_missing"] == 1 and (g["unit_id"], g["boot_id"]) not in seen
        ]
        for b in boots:
            bg = [g for g in gaps if g["unit_id"] == b["unit_id"] and g["boot_id"] == b["boot_id"]]
            b["missing"] = sum(g["n_missing"] for g in bg)
            b["gaps"] = [[g["first_missing"], g["last_missing"]] for g in bg]
        messages_per_unit: dict[str, int] = {}
        for r in per_unit:
            messages_per_unit[r["unit_id"]] = messages_per_unit.get(r["unit_id"], 0) + r["n"]
        counters = self._rows("SELECT name, unit_id, value FROM counters ORDER BY name, unit_id")
        sessions = self._rows("SELECT unit_id, kind, COUNT(*) AS n FROM sessions GROUP BY unit_id, kind")
        return {
            "messages_per_unit": messages_per_unit,
            "per_unit_kind": per_unit,
            "boots": boots,
            "gaps": gaps,
            "rejects": self.reject_counts(),
            "counters": counters,
            "sessions": sessions,
            "parked": self.parked_counts(),
            "seq_conflicts": self._rows(
                "SELECT unit_id, boot_id, COUNT(*) AS n, MIN(seq) AS min_seq, MAX(seq) AS max_seq "
                "FROM seq_conflicts GROUP BY unit_id, boot_id ORDER BY unit_id, boot_id"
            ),
        }

    def unit_state_counts(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._rows("SELECT state, COUNT(*) AS n FROM units GROUP BY state")}

    def reject_counts(self) -> dict[str, int]:
        """Rejects per reason since the database was made: rows kept plus rows the budget dropped."""
        counts: dict[str, int] = {}
        for r in self._rows("SELECT reason_code, COUNT(*) AS n FROM rejects GROUP BY reason_code"):
            counts[r["reason_code"]] = r["n"]
        for r in self._rows("SELECT name, value FROM counters WHERE name LIKE ? AND unit_id = ''",
                            (f"{_DROPPED_PREFIX}%",)):
            code = r["name"][len(_DROPPED_PREFIX):]
            counts[code] = counts.get(code, 0) + r["value"]
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(f"no table {table!r}")
        with self._lock:
            return int(self._b.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    # ------------------------------------------------------------------ sequence integrity
    # (policy in controller.sequence_guard; these are the facts it decides on)
    MAX_CONFLICT_ROWS = 10_000
    CONFLICT_EXCERPT_CHARS = 4096

    def _duplicate_or_conflict(self, env: Envelope, body: BaseModel, digest: str, received_utc: str) -> StoreOutcome:
        """The (unit, boot, seq) key is taken: a redelivery of the same message (``'duplicate'``),
        or another message under the same key (``'conflict'``, issue 14 row 6).

        A conflict is never silently dropped as a duplicate: it is kept in ``seq_conflicts`` (whole
        envelope for alarms and task events, an excerpt of others, at most MAX_CONFLICT_ROWS rows),
        counted per unit (``seq_conflict``), and an alarm among them still goes into ``alarms``
        (the dispatcher sees it) unless an alarm already holds that key.  Which of the two is the
        real one the controller cannot know; the broker ACL is what keeps others off a unit's topics.
        """
        row = self._b.execute(
            "SELECT content_sha256, kind FROM received WHERE unit_id=? AND boot_id=? AND seq=?",
            (env.unit_id, env.boot_id, env.seq),
        ).fetchone()
        if row is None or row[0] is None or row[0] == digest:
            return "duplicate"
        alarm_stored = 0
        if isinstance(body, Alarm):
            common = {
                "unit_id": env.unit_id, "boot_id": env.boot_id, "seq": env.seq, "t_utc": env.t_utc,
                "t_epoch_s": epoch_s(env.t_utc), "delivery": env.delivery, "received_utc": received_utc,
            }
            alarm_stored = self._insert("alarms", alarm_row(common, body), "ON CONFLICT DO NOTHING").rowcount
        if self._b.execute("SELECT COUNT(*) FROM seq_conflicts").fetchone()[0] < self.MAX_CONFLICT_ROWS:
            text = env.model_dump_json(by_alias=True)
            if env.kind not in ("alarm", "task_event"):
                text = text[: self.CONFLICT_EXCERPT_CHARS]
            self._insert("seq_conflicts", {
                "unit_id": env.unit_id, "boot_id": env.boot_id, "seq": env.seq, "kind": env.kind,
                "stored_kind": row[1], "received_utc": received_utc, "envelope": text,
                "alarm_stored": int(alarm_stored > 0),
            })
        self.bump_counter("seq_conflict", env.unit_id)
        return "conflict"

    def _raise_boot_ref(self, unit_id: str, boot_id: str, seq: int, now_s: float | None) -> None:
        self._b.execute(
            "INSERT INTO boots (unit_id, boot_id, announced, ref_seq, ref_epoch_s) VALUES (?, ?, 0, ?, ?) "
            "ON CONFLICT(unit_id, boot_id) DO UPDATE SET ref_seq = excluded.ref_seq, "
            "ref_epoch_s = excluded.ref_epoch_s WHERE excluded.ref_seq > boots.ref_seq",
            (unit_id, boot_id, seq, now_s),
        )

    def _announce_boot(self, env: Envelope, birth: Birth, received_utc: str) -> None:
        """A birth announces its own boot (how far its seq has got) and the unit's previous boot
        (where it ended); both then exist for the sequence guard, and the end makes trailing gaps."""
        now_s = epoch_s(received_utc)
        boots = [(env.boot_id, birth.last_seq, None)]
        if birth.prev_boot_id and birth.prev_boot_id != env.boot_id:
            boots.append((birth.prev_boot_id, birth.prev_boot_last_seq or 0, birth.prev_boot_last_seq))
        g = self._b.greatest
        for boot_id, ref_seq, end_seq in boots:
            self._b.execute(
                "INSERT INTO boots (unit_id, boot_id, announced, announced_utc, announced_by, ref_seq, ref_epoch_s, "
                "end_seq) VALUES (:u, :b, 1, :t, :by, :ref, :now, :end) "
                "ON CONFLICT(unit_id, boot_id) DO UPDATE SET "
                "announced_utc = COALESCE(CASE WHEN boots.announced = 1 THEN boots.announced_utc END, :t), "
                "announced_by = COALESCE(CASE WHEN boots.announced = 1 THEN boots.announced_by END, :by), "
                "announced = 1, "
                "ref_epoch_s = CASE WHEN :ref > boots.ref_seq THEN :now ELSE boots.ref_epoch_s END, "
                f"ref_seq = {g}(boots.ref_seq, :ref), "
                f"end_seq = CASE WHEN :end IS NULL THEN boots.end_seq ELSE {g}(COALESCE(boots.end_seq, 0), :end) END",
                {"u": env.unit_id, "b": boot_id, "t": received_utc, "by": env.boot_id, "ref": ref_seq,
                 "now": now_s, "end": end_seq},
            )

    def _end_boot(self, unit_id: str, boot_id: str, last_seq: int, received_utc: str) -> None:
        """A clean shutdown's death names the boot's last seq: its end (a later loss is a gap)."""
        self._b.execute(
            "INSERT INTO boots (unit_id, boot_id, announced, ref_seq, ref_epoch_s, end_seq) VALUES (?, ?, 0, ?, ?, ?) "
            f"ON CONFLICT(unit_id, boot_id) DO UPDATE SET end_seq = {self._b.greatest}(COALESCE(boots.end_seq, 0), "
            "excluded.end_seq)",
            (unit_id, boot_id, last_seq, epoch_s(received_utc), last_seq),
        )

    def get_boot(self, unit_id: str, boot_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM boots WHERE unit_id = ? AND boot_id = ?", (unit_id, boot_id))
        return rows[0] if rows else None

    def park(self, row: dict[str, Any], max_per_unit: int, max_bytes: int) -> bool:
        """Hold one message for checking (table ``parked``); False if the budget is used up."""
        with self.transaction():
            n_unit = self._b.execute(
                "SELECT COUNT(*) FROM parked WHERE unit_id = ?", (row["unit_id"],)
            ).fetchone()[0]
            total = self._b.execute("SELECT COALESCE(SUM(payload_bytes), 0) FROM parked").fetchone()[0]
            if n_unit >= max_per_unit or total + row["payload_bytes"] > max_bytes:
                return False
            self._insert("parked", row)
            return True

    _PARKED_COLS = "id, unit_id, boot_id, seq, kind, topic, payload_bytes, received_utc, parked_epoch_s, reason"

    def parked_messages(self, unit_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Parked messages in (unit, boot, seq) order, without their payloads (:meth:`parked_payload`)."""
        if unit_id is None:
            return self._rows(f"SELECT {self._PARKED_COLS} FROM parked ORDER BY unit_id, boot_id, seq, id LIMIT ?",
                              (limit,))
        return self._rows(f"SELECT {self._PARKED_COLS} FROM parked WHERE unit_id = ? ORDER BY boot_id, seq, id "
                          "LIMIT ?", (unit_id, limit))

    def parked_payload(self, parked_id: int) -> bytes:
        with self._lock:
            row = self._b.execute("SELECT payload FROM parked WHERE id = ?", (parked_id,)).fetchone()
        return bytes(row[0]) if row else b""

    def parked_units(self) -> list[str]:
        return [r["unit_id"] for r in self._rows("SELECT DISTINCT unit_id FROM parked ORDER BY unit_id")]

    def unpark(self, parked_id: int) -> None:
        with self.transaction():
            self._b.execute("DELETE FROM parked WHERE id = ?", (parked_id,))

    def parked_counts(self) -> dict[str, int]:
        return {r["reason"]: r["n"] for r in self._rows("SELECT reason, COUNT(*) AS n FROM parked GROUP BY reason")}

    def commands_refused_before(self, unit_id: str, boot_id: str, seq: int) -> int:
        """The highest refused-commands count a health message of this boot reported before ``seq``."""
        with self._lock:
            row = self._b.execute(
                "SELECT MAX(commands_rejected) FROM health WHERE unit_id = ? AND boot_id = ? AND seq < ?",
                (unit_id, boot_id, seq),
            ).fetchone()
        return int(row[0] or 0)

    def command_issued(self, unit_id: str, cmd_id: str, task_id: str) -> bool:
        """True if this controller sent ``unit_id`` a dispatch ``cmd_id`` for ``task_id``."""
        with self._lock:
            return self._b.execute(
                "SELECT 1 FROM commands WHERE cmd_id = ? AND unit_id = ? AND task_id = ? "
                "AND command = 'dispatch' LIMIT 1",
                (cmd_id, unit_id, task_id),
            ).fetchone() is not None
