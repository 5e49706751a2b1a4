"""One SQLite table of outbox rows with its budget and drop policy; used for the file and for memory.

Why one class for both: the outbox keeps its rows in a file, and -- while the disk refuses writes --
in an in-memory SQLite database with the same table (issue 15: alarms are kept in memory until the
disk accepts them again).  Both need the same queries (oldest rows after an id, delete acknowledged
ids) and the same drop policy, so they share this code, and a row moves between them unchanged,
with its id, seq and creation time.

Row ids are assigned by :class:`~agent.link.outbox.Outbox`, not by SQLite: they must increase across
both stores and across a re-created file, because the MQTT link streams rows in id order and
remembers the highest id it handed out.

Drop policy (a budget of rows and of bytes): health messages are dropped oldest-first, then
measurement/vitals oldest-first; kinds absent from :data:`DROP_RANK` (alarm, task_event, anything
new) are never dropped -- the budget is exceeded for them instead.  A new message never evicts an
older message of a *more* important class: a new health message when only measurements are stored
is itself refused.  The byte cost of a row is its payload and topic plus :data:`ROW_OVERHEAD_B` for
SQLite's record, b-tree cell and index entry; the file itself can be somewhat larger (free pages
are reused, not returned; the WAL is truncated to ``journal_size_limit`` after checkpoints).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: Lower rank = dropped first.  Kinds absent from this map are never dropped.
DROP_RANK: dict[str, int] = {"health": 0, "measurement": 1, "vitals": 1}
#: Bytes charged per row on top of payload and topic (record header, cell, rowid, index entry).
ROW_OVERHEAD_B = 100
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)  # DELETE ... RETURNING

COLUMNS = ("id", "topic", "payload", "kind", "boot_id", "seq", "created_mono_s", "created_utc",
           "attempts", "offline")
SELECT = f"SELECT {', '.join(COLUMNS)} FROM outbox"
INSERT = f"INSERT INTO outbox ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
SCHEMA = """
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

    @property
    def cost_b(self) -> int:
        return row_cost(self.topic, self.payload)

    def values(self) -> tuple[object, ...]:
        """Column values in :data:`COLUMNS` order, for :data:`INSERT`."""
        return (self.id, self.topic, self.payload, self.kind, self.boot_id, self.seq, self.created_mono_s,
                self.created_utc, self.attempts, int(self.offline))


def row_cost(topic: str, payload: bytes) -> int:
    """Bytes a row is charged against a byte budget."""
    return len(payload) + len(topic.encode()) + ROW_OVERHEAD_B


def row_from_db(r: tuple) -> OutboxRow:  # type: ignore[type-arg]
    return OutboxRow(id=int(r[0]), topic=str(r[1]), payload=bytes(r[2]), kind=str(r[3]), boot_id=str(r[4]),
                     seq=int(r[5]), created_mono_s=float(r[6]), created_utc=str(r[7]), attempts=int(r[8]),
                     offline=bool(r[9]))


def create_schema(db: sqlite3.Connection, user_version: int, first_id: int = 1) -> None:
    """Create the outbox table in an empty database; ids continue from ``first_id``."""
    db.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nPRAGMA user_version={int(user_version)};\nCOMMIT;")
    if first_id > 1:  # AUTOINCREMENT never goes below sqlite_sequence: ids keep increasing
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (int(first_id) - 1,))
        db.execute("COMMIT")


class RowStore:
    """The outbox table of one connection, with running row and byte counts.

    Not thread-safe: the owning :class:`~agent.link.outbox.Outbox` serialises calls.  Mutating
    methods other than :meth:`transaction` must run inside :meth:`transaction`.
    """

    def __init__(self, db: sqlite3.Connection, label: str) -> None:
        self.db = db
        self.label = label
        self.count, self.bytes = self.measure()

    def measure(self) -> tuple[int, int]:
        """(rows, bytes) as stored, read from the table (length() does not load blob content)."""
        n, b = self.db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(length(payload) + length(CAST(topic AS BLOB))), 0) + "
            f"COUNT(*) * {ROW_OVERHEAD_B} FROM outbox").fetchone()
        return int(n), int(b)

    def max_id(self) -> int:
        """The highest id this table ever held (AUTOINCREMENT's sqlite_sequence, or max(id))."""
        top = int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()[0])
        with contextlib.suppress(sqlite3.Error):  # no sqlite_sequence in a table never written
            row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            if row is not None:
                top = max(top, int(row[0]))
        return top

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE .. COMMIT; on any error roll back and restore the running counts."""
        saved = (self.count, self.bytes)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            self.count, self.bytes = saved
            raise

    def insert(self, row: OutboxRow) -> None:
        self.db.execute(INSERT, row.values())
        self.count += 1
        self.bytes += row.cost_b

    def make_room(self, kind: str, cost_b: int, max_rows: int, max_bytes: int) -> tuple[bool, list[OutboxRow]]:
        """Evict rows (policy in the module docstring) until a new ``kind`` row of ``cost_b`` fits.

        Returns ``(fits, evicted)``.  ``fits`` is False when the new row is droppable and nothing
        less or equally important is left to evict (the caller rolls back: the evictions are
        undone and the new row is the one dropped).  Never-dropped kinds always "fit": the budget
        is exceeded for them once nothing droppable is left.
        """
        new_rank = DROP_RANK.get(kind)
        evicted: list[OutboxRow] = []
        while self.count + 1 > max_rows or self.bytes + cost_b > max_bytes:
            victim = self._oldest_droppable(new_rank)
            if victim is None:
                return new_rank is None, evicted
            self.db.execute("DELETE FROM outbox WHERE id = ?", (victim.id,))
            self.count -= 1
            self.bytes -= victim.cost_b
            evicted.append(victim)
        return True, evicted

    def _oldest_droppable(self, max_rank: int | None) -> OutboxRow | None:
        for rank in sorted(set(DROP_RANK.values())):
            if max_rank is not None and rank > max_rank:
                break
            kinds = [k for k, r in DROP_RANK.items() if r == rank]
            marks = ",".join("?" * len(kinds))
            r = self.db.execute(f"{SELECT} WHERE kind IN ({marks}) ORDER BY id LIMIT 1", kinds).fetchone()
            if r is not None:
                return row_from_db(r)
        return None

    def select(self, after_id: int, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` rows with ``id > after_id`` in id order."""
        return [row_from_db(r) for r in
                self.db.execute(f"{SELECT} WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)).fetchall()]

    def select_ids(self, ids: Iterable[int]) -> list[OutboxRow]:
        out: list[OutboxRow] = []
        for i in ids:
            r = self.db.execute(f"{SELECT} WHERE id = ?", (int(i),)).fetchone()
            if r is not None:
                out.append(row_from_db(r))
        return out

    def oldest(self) -> OutboxRow | None:
        r = self.db.execute(f"{SELECT} ORDER BY id LIMIT 1").fetchone()
        return None if r is None else row_from_db(r)

    def delete(self, ids: Iterable[int]) -> list[int]:
        """Delete these ids; returns the ids that were present (and are now gone)."""
        gone: list[int] = []
        for i in ids:
            if _HAS_RETURNING:
                r = self.db.execute("DELETE FROM outbox WHERE id = ? RETURNING length(payload) + "
                                    "length(CAST(topic AS BLOB))", (int(i),)).fetchone()
            else:
                r = self.db.execute("SELECT length(payload) + length(CAST(topic AS BLOB)) FROM outbox WHERE id = ?",
                                    (int(i),)).fetchone()
                if r is not None:
                    self.db.execute("DELETE FROM outbox WHERE id = ?", (int(i),))
            if r is None:
                continue
            self.count -= 1
            self.bytes -= int(r[0]) + ROW_OVERHEAD_B
            gone.append(int(i))
        return gone

    def bump_attempts(self, ids: Iterable[int]) -> None:
        self.db.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(int(i),) for i in ids])
