"""Durable store-and-forward outbox: every uplink message is on disk before it goes on the wire.

Why: a unit in a vehicle loses its uplink (tunnels, dead spots, broker restarts) and its power
(ignition off) routinely.  Nothing it measured may be lost for that, so the rule is *write, then
send, then delete on PUBACK*: a row is committed before the MQTT link publishes it and removed only
after the broker acknowledged it (QoS 1).  A crash at any point leaves the message either not yet
stored (the caller never got a seq for it) or stored and re-sent later (a duplicate, which the
controller discards by ``(unit_id, boot_id, seq)``).

Storage choices (SQLite, stdlib ``sqlite3`` for direct control of transactions and pragmas):

* ``journal_mode=WAL``: appends and deletes do not rewrite the main file, readers never block the
  writer, and a torn write leaves the last committed state intact.
* ``synchronous=FULL`` (default): in WAL mode FULL fsyncs the WAL at every commit, NORMAL only at
  checkpoints.  NORMAL survives an *application* crash but can roll back the last commits on a
  *power* loss -- which on a vehicle unit is the normal way to switch off.  FULL costs one fsync
  per message (0.3 ms on this SSD, a few ms on eMMC/SD) at a few messages per second, so we pay it.
  Acks are deleted in batches (:meth:`Outbox.ack_many`) so the fsync cost is not per PUBACK; a lost
  delete only causes a harmless duplicate.
* ``locking_mode=EXCLUSIVE``: the file stays locked while open, so a second agent process pointed at
  the same outbox fails at start with a clear error instead of double-sending (and WAL then needs no
  ``-shm`` file).

Drop policy when ``max_messages`` is reached: health messages are dropped oldest-first, then
measurement/vitals oldest-first; alarms and task events are never dropped (the cap is exceeded for
them rather than losing one).  A new message never evicts an older message of a *more* important
class: a new health message when only measurements are stored is itself dropped.  Every drop is
counted (:attr:`Outbox.dropped`) and logged; the controller sees the hole as a ``seq`` gap.

Corrupt file at open: :class:`OutboxCorrupt` names the file and the SQLite error.  With
``on_corrupt="move_aside"`` the file (and its ``-wal``) is renamed to ``<path>.corrupt-<UTC stamp>``
for forensics and a new empty outbox is created.  A file that is readable but is not an outbox (other
tables, newer schema version) or is locked by another process raises :class:`OutboxError` and is
never moved: a readable database is never silently discarded.

Thread safety: one connection shared under a lock -- the MQTT network thread acks while the
runtime thread appends; SQLite calls are short, so a lock is simpler and faster than a pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Lower rank = dropped first.  Kinds absent from this map (alarm, task_event, anything new) are
# never dropped.
DROP_RANK: dict[str, int] = {"health": 0, "measurement": 1, "vitals": 1}

_COLUMNS = ("id", "topic", "payload", "kind", "boot_id", "seq", "created_mono_s", "created_utc",
            "attempts", "offline")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM outbox"
_SCHEMA = """
CREATE TABLE outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,  -- send order
    topic          TEXT    NOT NULL,
    payload        BLOB    NOT NULL,                   -- envelope JSON, delivery='live'
    kind           TEXT    NOT NULL,
    boot_id        TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    created_mono_s REAL    NOT NULL,
    created_utc    TEXT    NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,         -- times handed to the sender
    offline        INTEGER NOT NULL DEFAULT 0          -- created while the link was down
);
CREATE INDEX outbox_kind_id ON outbox (kind, id);
"""
_LOG_EVERY_S = 10.0


class OutboxError(RuntimeError):
    """The outbox cannot be used (unreadable path, locked, not an outbox, disk full)."""


class OutboxCorrupt(OutboxError):
    """The outbox file exists but SQLite cannot read it as a database."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    topic: str
    payload: bytes
    kind: str
    boot_id: str
    seq: int
    created_mono_s: float
    created_utc: str
    attempts: int
    offline: bool


def _is_corruption(err: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT / SQLITE_NOTADB, not a transient or permission problem."""
    name = getattr(err, "sqlite_errorname", "")
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or name.startswith("SQLITE_CORRUPT_"):
        return True
    return type(err) is sqlite3.DatabaseError


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Outbox:
    """SQLite-backed FIFO of uplink messages; see the module docstring for the guarantees."""

    def __init__(self, path: str | os.PathLike[str], max_messages: int = 2_000_000, *,
                 synchronous: Literal["FULL", "NORMAL"] = "FULL",
                 on_corrupt: Literal["raise", "move_aside"] = "raise",
                 integrity_check: bool = True, lock_timeout_s: float = 2.0) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.moved_aside_to: Path | None = None
        self._lock = threading.Lock()
        self._lock_timeout_s = float(lock_timeout_s)
        self._closed = False
        self._dropped = 0
        self._last_drop_log = -_LOG_EVERY_S
        self._last_over_cap_log = -_LOG_EVERY_S
        try:
            self._db, self._count = self._open(synchronous, integrity_check)
        except OutboxCorrupt as err:
            if on_corrupt != "move_aside":
                raise
            self.moved_aside_to = self._move_aside()
            log.error("%s; moved it to %s for forensics and started an empty outbox", err,
                      self.moved_aside_to)
            self._db, self._count = self._open(synchronous, integrity_check)

    # ------------------------------------------------------------------ open / close
    def _open(self, synchronous: str, integrity_check: bool) -> tuple[sqlite3.Connection, int]:
        if self.path.parent and not self.path.parent.exists():
            raise OutboxError(f"outbox {self.path}: directory {self.path.parent} does not exist")
        try:
            db = sqlite3.connect(self.path, timeout=self._lock_timeout_s, isolation_level=None,
                                 check_same_thread=False)
        except sqlite3.Error as err:
            raise OutboxError(f"outbox {self.path}: cannot open ({err})") from err
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"outbox {self.path}: WAL not supported here (journal_mode={mode})")
            db.execute(f"PRAGMA synchronous={synchronous}")
            if integrity_check:
                problems = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
                if problems != ["ok"]:
                    raise OutboxCorrupt(f"outbox {self.path} is corrupt: {'; '.join(problems)}")
            self._ensure_schema(db)
            # Take the exclusive lock now, so a second process fails here and not at first send.
            db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")
            count = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except OutboxError:
            db.close()
            raise
        except sqlite3.Error as err:
            db.close()
            if _is_corruption(err):
                raise OutboxCorrupt(f"outbox {self.path} is corrupt: {err}") from err
            if "locked" in str(err):
                raise OutboxError(f"outbox {self.path} is locked: another agent process uses it") from err
            raise OutboxError(f"outbox {self.path}: {err}") from err
        if count:
            log.info("outbox %s: %d message(s) waiting from before", self.path, count)
        return db, count

    def _ensure_schema(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        tables.discard("sqlite_sequence")
        if version == 0 and not tables:
            db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nPRAGMA user_version={SCHEMA_VERSION};\nCOMMIT;")
            return
        if version != SCHEMA_VERSION:
            raise OutboxError(f"outbox {self.path}: schema version {version} with tables {sorted(tables)}, "
                              f"expected an outbox of version {SCHEMA_VERSION} (not touching it)")
        cols = tuple(r[1] for r in db.execute("PRAGMA table_info(outbox)"))
        if cols != _COLUMNS:
            raise OutboxError(f"outbox {self.path}: table outbox has columns {cols}, expected {_COLUMNS}")

    def _move_aside(self) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm", "-journal"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.rename(Path(f"{target}{suffix}"))
        return target

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as err:
                log.warning("outbox %s: checkpoint at close failed: %s", self.path, err)
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def put(self, topic: str, payload: bytes, kind: str, boot_id: str, seq: int, created_mono_s: float,
            *, created_utc: str | None = None, offline: bool = False) -> int | None:
        """Store one message and commit it (durable on return).

        Returns the row id (ids increase, giving send order), or None when the outbox is full and
        this message was the least important one, so it was dropped (counted in :attr:`dropped`).
        Raises :class:`OutboxError` if the row cannot be written (e.g. disk full).
        """
        utc = created_utc or _utc_now_iso()
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    if self._count >= self.max_messages and not self._make_room(kind):
                        self._db.execute("ROLLBACK")
                        self._note_drop(kind, 1, "itself (nothing less important stored)")
                        return None
                    cur = self._db.execute(
                        "INSERT INTO outbox (topic, payload, kind, boot_id, seq, created_mono_s, "
                        "created_utc, offline) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (topic, payload, kind, boot_id, seq, created_mono_s, utc, int(offline)))
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                self._recount()
                raise OutboxError(f"outbox {self.path}: cannot store {kind} seq {seq}: {err}") from err
            self._count += 1
            return int(cur.lastrowid or 0)

    def _make_room(self, kind: str) -> bool:
        """Inside the put transaction: delete the oldest row of the least important class that is
        not more important than ``kind``.  False if there is none (or ``kind`` is never dropped
        and nothing droppable is stored: then the cap is exceeded instead)."""
        new_rank = DROP_RANK.get(kind)
        for rank in sorted(set(DROP_RANK.values())):
            if new_rank is not None and rank > new_rank:
                break
            kinds = [k for k, r in DROP_RANK.items() if r == rank]
            marks = ",".join("?" * len(kinds))
            row = self._db.execute(
                f"SELECT id, kind FROM outbox WHERE kind IN ({marks}) ORDER BY id LIMIT 1", kinds).fetchone()
            if row is not None:
                self._db.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
                self._count -= 1
                self._note_drop(row[1], 1, f"oldest (row {row[0]})")
                return True
        if new_rank is None:
            now = time.monotonic()
            if now - self._last_over_cap_log >= _LOG_EVERY_S:
                self._last_over_cap_log = now
                log.error("outbox %s full (%d >= %d) of alarms/task events: keeping the new %s over the cap",
                          self.path, self._count, self.max_messages, kind)
            return True
        return False

    def _note_drop(self, kind: str, n: int, what: str) -> None:
        self._dropped += n
        now = time.monotonic()
        if now - self._last_drop_log >= _LOG_EVERY_S or self._dropped == n:
            self._last_drop_log = now
            log.warning("outbox %s full (%d messages): dropped %s %s message; %d dropped so far",
                        self.path, self.max_messages, what, kind, self._dropped)

    def ack(self, row_id: int) -> bool:
        """Delete a row the broker acknowledged; False if it was already gone (dropped, acked)."""
        return self.ack_many((row_id,)) == 1

    def ack_many(self, row_ids: Iterable[int]) -> int:
        """Delete several acknowledged rows in one transaction (one fsync); returns rows deleted."""
        ids = [(int(i),) for i in row_ids]
        if not ids:
            return 0
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                before = self._db.total_changes
                self._db.executemany("DELETE FROM outbox WHERE id = ?", ids)
                deleted = self._db.total_changes - before
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutboxError(f"outbox {self.path}: cannot delete acknowledged rows: {err}") from err
            self._count -= deleted
            return deleted

    # ------------------------------------------------------------------ reading
    def take_batch(self, limit: int, exclude_ids: Iterable[int] = (), after_id: int = 0,
                   *, count_attempt: bool = True) -> list[OutboxRow]:
        """The oldest ``limit`` rows with ``id > after_id`` that are not in ``exclude_ids``, in id
        order.  Rows stay stored until acked; ``attempts`` is incremented for the rows returned."""
        if limit <= 0:
            return []
        exclude = {int(i) for i in exclude_ids if i > after_id}
        with self._lock:
            self._check_open()
            try:
                raw = self._db.execute(f"{_SELECT} WHERE id > ? ORDER BY id LIMIT ?",
                                       (after_id, limit + len(exclude))).fetchall()
                rows = [r for r in raw if r[0] not in exclude][:limit]
                if rows and count_attempt:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?",
                                         [(r[0],) for r in rows])
                    self._db.execute("COMMIT")
            except sqlite3.Error as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutboxError(f"outbox {self.path}: cannot read pending rows: {err}") from err
        return [OutboxRow(id=r[0], topic=r[1], payload=bytes(r[2]), kind=r[3], boot_id=r[4], seq=r[5],
                          created_mono_s=r[6], created_utc=r[7], attempts=r[8] + int(count_attempt),
                          offline=bool(r[9])) for r in rows]

    def count(self) -> int:
        """Messages stored and not yet acknowledged."""
        with self._lock:
            return self._count

    @property
    def dropped(self) -> int:
        """Messages dropped by the full-outbox policy since this Outbox was opened."""
        with self._lock:
            return self._dropped

    def oldest(self) -> OutboxRow | None:
        with self._lock:
            self._check_open()
            r = self._db.execute(f"{_SELECT} ORDER BY id LIMIT 1").fetchone()
        if r is None:
            return None
        return OutboxRow(id=r[0], topic=r[1], payload=bytes(r[2]), kind=r[3], boot_id=r[4], seq=r[5],
                         created_mono_s=r[6], created_utc=r[7], attempts=r[8], offline=bool(r[9]))

    def oldest_age_s(self, now_mono_s: float) -> float | None:
        """Age of the oldest stored message on the caller's monotonic clock (None if empty).
        Only meaningful for rows of the current OS boot; older rows give their stored-time age
        by ``oldest().created_utc``."""
        with self._lock:
            self._check_open()
            r = self._db.execute("SELECT created_mono_s FROM outbox ORDER BY id LIMIT 1").fetchone()
        return None if r is None else max(0.0, now_mono_s - float(r[0]))

    # ------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")

    def _recount(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
