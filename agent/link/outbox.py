"""Durable store-and-forward outbox: every uplink message is on disk before it goes on the wire.

Why: a unit in a vehicle loses its uplink (tunnels, dead spots, broker restarts) and its power
(ignition off) routinely.  Nothing it measured may be lost for that, so the rule is *write, then
send, then delete on PUBACK*: a row is committed before the MQTT link publishes it and removed only
after the broker acknowledged it (QoS 1).  A crash at any point leaves the message either not yet
stored or stored and re-sent later (a duplicate, which the controller discards by
``(unit_id, boot_id, seq)``).

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
* A bounded WAL (checkpoint every 256 pages, truncated to 256 KiB when it restarts), so the
  outbox's disk use stays within its budget plus about 1 MiB.

Budget (``max_messages`` rows and ``max_bytes``; policy in :mod:`agent.link.outbox_store`): health
messages are dropped oldest-first, then measurement/vitals oldest-first; alarms and task events are
never dropped (the budget is exceeded for them rather than losing one).  Every drop is counted by
reason (:meth:`Outbox.report`, ``lost``) and logged; its seq was consumed, so the controller sees
the hole as a ``seq`` gap.

Disk faults (issue 15: no silent loss) -- :meth:`put` never raises for them:

* A write the disk refuses (ENOSPC, EIO, EROFS, ...) is classified and counted
  (:mod:`agent.link.persist_fault`), and the message is kept in an **in-memory queue** -- an
  in-memory SQLite table with the same drop policy and its own budget (``memory_max_messages``,
  ``memory_max_bytes``) -- where the link still sends it from.  Measurements and health are evicted
  from it oldest-first when it is full (each eviction counted as lost, reason
  ``disk_unavailable``); alarms and task events are kept beyond that budget up to 4x, and only a
  unit that has been unable to write its disk for that long loses one (reason ``memory_full``,
  logged CRITICAL each time).  The count errs on the safe side: a message evicted after the link
  had handed it to the MQTT client may still arrive, and is then both stored and counted lost.
* While failing, writes go straight to memory, and the disk is retried with exponential back-off
  (``retry_min_s`` .. ``retry_max_s``); the first successful retry moves the memory queue into the
  file, rows keeping their ids and seqs, and the episode ends (logged at WARNING).
* :meth:`maintain` (called by the runtime every loop, and by :meth:`put`) compares the open file's
  identity (device, inode, recorded at open) with what is at the path every ``check_interval_s``.
  A **deleted or replaced** file is reported, and a new file is built at the path from the rows
  still readable through the open connection (on POSIX an unlinked file stays readable while
  open): nothing is lost unless those reads fail, and what could not be read is counted as lost
  (reason ``deleted``/``replaced``).  A replacement file is moved aside (``.replaced-<stamp>``),
  never deleted.  An in-place overwrite keeps the inode and shows up as corruption instead.
* A **corrupt** file at open with ``on_corrupt="move_aside"``: its pending rows are salvaged
  (:mod:`agent.link.outbox_salvage`) into a fresh outbox first, then the corrupt file (and its
  ``-wal``) is renamed to ``<path>.corrupt-<UTC stamp>`` for forensics.  How many rows were
  salvaged and how many are known lost is logged and kept in :attr:`salvage`.
* A disk that is full, read-only or failing *at start* does not stop the unit either: it starts on
  its memory queue and opens the file when the disk allows.  A file that is readable but is not an
  outbox (other tables, newer schema version) or is locked by another process raises
  :class:`OutboxError` and is never moved: a readable database is never silently discarded.

Row ids are assigned here and increase across the file, the memory queue and re-created files:
the MQTT link streams rows in id order and remembers the highest id it handed out.

Thread safety: one lock -- the MQTT sender thread reads and acks while the runtime thread appends;
SQLite calls are short, so a lock is simpler and faster than a pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from agent.link.outbox_salvage import SalvageReport, salvage
from agent.link.outbox_store import DROP_RANK, INSERT, OutboxRow, RowStore, create_schema
from agent.link.persist_fault import FaultTracker, fault_kind

__all__ = ["DROP_RANK", "Outbox", "OutboxCorrupt", "OutboxError", "OutboxRow", "SCHEMA_VERSION"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_COLUMNS = ("id", "topic", "payload", "kind", "boot_id", "seq", "created_mono_s", "created_utc",
            "attempts", "offline")
#: Fault kinds at open after which the unit starts on its memory queue instead of refusing to run.
_START_DEGRADED = frozenset({"ENOSPC", "EIO", "EROFS", "cantopen"})
#: Alarms and task events may exceed the memory budget by this factor before one is lost.
_NEVER_DROP_MEMORY_FACTOR = 4
_WAL_AUTOCHECKPOINT_PAGES = 256
_WAL_SIZE_LIMIT_B = 256 * 1024


class OutboxError(RuntimeError):
    """The outbox cannot be used (unreadable path, locked, not an outbox, closed).

    ``kind`` is a :func:`~agent.link.persist_fault.fault_kind` or ``config``/``foreign``/``closed``.
    """

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


class OutboxCorrupt(OutboxError):
    """The outbox file exists but SQLite cannot read it as a database."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "corrupt")


class _Refused(Exception):
    """Inside a store transaction: the new row does not fit (rolls the evictions back)."""


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, None if nothing is there.  Other OSErrors propagate."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_quietly(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _memory_store() -> RowStore:
    db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    create_schema(db, SCHEMA_VERSION)
    return RowStore(db, "memory")


class Outbox:
    """SQLite-backed FIFO of uplink messages; see the module docstring for the guarantees."""

    def __init__(self, path: str | os.PathLike[str], max_messages: int = 2_000_000, *,
                 max_bytes: int | None = None, memory_max_messages: int = 10_000,
                 memory_max_bytes: int = 32 * 1024 * 1024,
                 synchronous: Literal["FULL", "NORMAL"] = "FULL",
                 on_corrupt: Literal["raise", "move_aside"] = "raise",
                 integrity_check: bool = True, lock_timeout_s: float = 2.0,
                 retry_min_s: float = 0.5, retry_max_s: float = 5.0, check_interval_s: float = 1.0) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if memory_max_messages < 1 or memory_max_bytes < 1:
            raise ValueError(f"memory budget must be >= 1, got {memory_max_messages} rows, {memory_max_bytes} B")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        if check_interval_s <= 0:
            raise ValueError(f"check_interval_s must be > 0, got {check_interval_s}")
        self.path = Path(path)
        self.max_messages = int(max_messages)
        self.max_bytes = int(max_bytes) if max_bytes is not None else sys.maxsize
        self.memory_max_messages = int(memory_max_messages)
        self.memory_max_bytes = int(memory_max_bytes)
        self.moved_aside_to: Path | None = None
        self.salvage: SalvageReport | None = None
        self._synchronous = synchronous
        self._integrity_check = integrity_check
        self._on_corrupt = on_corrupt
        self._lock_timeout_s = float(lock_timeout_s)
        self._check_interval_s = float(check_interval_s)
        self._lock = threading.Lock()
        self._closed = False
        self._faults = FaultTracker(f"outbox {self.path}", retry_min_s, retry_max_s)
        self._mem = _memory_store()
        self._file: RowStore | None = None
        self._identity: tuple[int, int] | None = None
        self._wal_identity: tuple[int, int] | None = None
        self._rebuild_reason: str | None = None
        self._pending_deletes: set[int] = set()
        self._file_read_failed = False
        self._next_check_s = 0.0
        self._next_id = 1
        self._ever_attached = False
        self._spilled = 0
        self._open_at_start()

    # ------------------------------------------------------------------ open / close
    def _open_at_start(self) -> None:
        try:
            self._attach(self._connect(self._integrity_check))
        except OutboxCorrupt as err:
            self._faults.errors["corrupt"] += 1
            if self._on_corrupt != "move_aside":
                raise
            self._salvage_and_replace(str(err))
        except OutboxError as err:
            if err.kind not in _START_DEGRADED:
                raise
            # The disk is full, read-only or failing right now: run on the memory queue (alarms
            # still go out) and open the file when the disk allows; never refuse to start for it.
            self._faults.fault(err.kind, f"cannot open at start: {err}", time.monotonic())

    def _connect(self, integrity_check: bool) -> sqlite3.Connection:
        path = self.path
        if not path.parent.is_dir():
            raise OutboxError(f"outbox {path}: directory {path.parent} does not exist", "config")
        if integrity_check and path.exists():
            self._check_integrity()
        try:
            db = sqlite3.connect(path, timeout=self._lock_timeout_s, isolation_level=None,
                                 check_same_thread=False)
        except sqlite3.Error as err:
            raise OutboxError(f"outbox {path}: cannot open ({err})", fault_kind(err)) from err
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"outbox {path}: WAL not supported here (journal_mode={mode})", "config")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT_B}")
            self._ensure_schema(db)
            # Take the exclusive lock now, so a second process fails here and not at first send.
            db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")
        except OutboxError:
            db.close()
            raise
        except sqlite3.Error as err:
            db.close()
            kind = fault_kind(err)
            if kind == "corrupt":
                raise OutboxCorrupt(f"outbox {path} is corrupt: {err}") from err
            if kind == "locked":
                raise OutboxError(f"outbox {path} is locked: another agent process uses it", kind) from err
            raise OutboxError(f"outbox {path}: {err}", kind) from err
        return db

    def _check_integrity(self) -> None:
        """``PRAGMA quick_check`` on a read-only connection: closing a read-write connection to a
        damaged file would checkpoint its WAL into it (and delete the WAL) before the salvage."""
        try:
            ro = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self._lock_timeout_s,
                                 isolation_level=None)
        except sqlite3.Error as err:
            raise OutboxError(f"outbox {self.path}: cannot open ({err})", fault_kind(err)) from err
        try:
            problems = [r[0] for r in ro.execute("PRAGMA quick_check(5)").fetchall()]
        except sqlite3.Error as err:
            kind = fault_kind(err)
            if kind == "corrupt":
                raise OutboxCorrupt(f"outbox {self.path} is corrupt: {err}") from err
            if kind == "locked":
                raise OutboxError(f"outbox {self.path} is locked: another agent process uses it", kind) from err
            raise OutboxError(f"outbox {self.path}: {err}", kind) from err
        finally:
            ro.close()
        if problems != ["ok"]:
            raise OutboxCorrupt(f"outbox {self.path} is corrupt: {'; '.join(problems)}")

    def _ensure_schema(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        tables.discard("sqlite_sequence")
        if version == 0 and not tables:
            create_schema(db, SCHEMA_VERSION, first_id=self._next_id)
            return
        if version != SCHEMA_VERSION:
            raise OutboxError(f"outbox {self.path}: schema version {version} with tables {sorted(tables)}, "
                              f"expected an outbox of version {SCHEMA_VERSION} (not touching it)", "foreign")
        cols = tuple(r[1] for r in db.execute("PRAGMA table_info(outbox)"))
        if cols != _COLUMNS:
            raise OutboxError(f"outbox {self.path}: table outbox has columns {cols}, expected {_COLUMNS}", "foreign")

    def _attach(self, db: sqlite3.Connection) -> None:
        """Make ``db`` the file store and remember which file it is.

        After a start on the memory queue (the file could not be read, so ids began at 1), file
        rows may carry ids this process already gave to memory rows -- rows still queued, or
        delivered, or evicted while in flight, whose PUBACK may still come and would then delete
        the file row of that id.  The file rows were never handed to the link by this process, so
        they are the ones renumbered, above every id in use.  The next read of the file starts from
        id 0, so no file row is stranded below the link's cursor.
        """
        try:
            store = RowStore(db, "file")
            if not self._ever_attached and self._next_id > 1:
                clash = [int(r[0]) for r in db.execute("SELECT id FROM outbox WHERE id < ? ORDER BY id",
                                                       (self._next_id,))]
                if clash:
                    base = max(self._next_id, store.max_id() + 1)
                    with store.transaction():
                        db.executemany("UPDATE outbox SET id = ? WHERE id = ?",
                                       [(base + i, old) for i, old in enumerate(clash)])
                    self._next_id = base + len(clash)
                    log.info("outbox %s: renumbered %d stored row(s) above the ids used while the file was "
                             "unavailable", self.path, len(clash))
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.close()
            raise
        self._file = store
        self._ever_attached = True
        self._next_id = max(self._next_id, store.max_id() + 1)
        self._identity = _file_id(self.path)
        self._wal_identity = _file_id(Path(f"{self.path}-wal"))
        self._file_read_failed = True  # read the new file from id 0 once (see take_batch)
        self._rebuild_reason = None
        if store.count:
            log.info("outbox %s: %d message(s) waiting from before", self.path, store.count)

    def _move_aside(self, label: str) -> Path:
        target = self.path.with_name(f"{self.path.name}.{label}-{_stamp()}")
        for suffix in ("", "-wal", "-shm", "-journal"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.rename(Path(f"{target}{suffix}"))
        _fsync_dir(self.path.parent)
        return target

    def close(self) -> None:
        """Move the memory queue to disk if possible, checkpoint the WAL and close; idempotent.

        Messages still only in memory (the disk refused them to the end) are lost: counted
        (reason ``shutdown``) and logged, CRITICAL if an alarm or task event is among them.
        """
        with self._lock:
            if self._closed:
                return
            now = time.monotonic()
            if self._mem.count:
                self._recover(now)  # one last attempt, whatever the back-off says
            if self._mem.count:
                kinds = sorted({r.kind for r in self._mem.select(0, self._mem.count)})
                self._faults.lose("shutdown", self._mem.count,
                                  f"{self._mem.count} message(s) only in memory at shutdown ({', '.join(kinds)})",
                                  now, critical=any(DROP_RANK.get(k) is None for k in kinds))
            self._closed = True
            if self._file is not None:
                try:
                    self._file.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as err:
                    log.warning("outbox %s: checkpoint at close failed: %s", self.path, err)
                with contextlib.suppress(sqlite3.Error):
                    self._file.db.close()
            self._mem.db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def put(self, topic: str, payload: bytes, kind: str, boot_id: str, seq: int, created_mono_s: float,
            *, created_utc: str | None = None, offline: bool = False) -> int | None:
        """Store one message; returns its row id, or None if it was dropped (counted in :meth:`report`).

        Durable on return when the disk accepts writes; while it does not, the message is kept in
        the memory queue (and still sent from there).  Never raises for a disk fault; raises
        :class:`OutboxError` only when the outbox is closed.
        """
        row = OutboxRow(id=0, topic=topic, payload=payload, kind=kind, boot_id=boot_id, seq=seq,
                        created_mono_s=created_mono_s, created_utc=created_utc or _utc_now_iso(), attempts=0,
                        offline=offline)
        with self._lock:
            self._check_open()
            now = time.monotonic()
            self._maintain_safely(now)
            row = dataclasses.replace(row, id=self._next_id)
            self._next_id += 1
            if self._file is not None and self._faults.failing is None:
                try:
                    return row.id if self._put_file(row, now) else None
                except (sqlite3.Error, OSError) as err:
                    self._file_fault(err, f"cannot store {kind} seq {seq}", now)
            return row.id if self._put_memory(row, now) else None

    def _put_file(self, row: OutboxRow, now: float) -> bool:
        store = self._file
        assert store is not None
        try:
            with store.transaction():
                fits, evicted = store.make_room(row.kind, row.cost_b, self.max_messages, self.max_bytes)
                if not fits:
                    raise _Refused
                store.insert(row)
        except _Refused:
            self._faults.lose("outbox_full", 1, f"new {row.kind} seq {row.seq} (outbox budget of "
                              f"{self.max_messages} rows / {self.max_bytes} B full of more important messages)", now)
            return False
        self._note_evicted(evicted, "outbox_full", now)
        if store.count > self.max_messages or store.bytes > self.max_bytes:
            self._faults.note("over_cap", now, logging.ERROR, "outbox %s budget (%d rows, %d B) full of alarms/task "
                              "events: keeping the new %s over it (%d rows, %d B)", self.path, self.max_messages,
                              self.max_bytes, row.kind, store.count, store.bytes)
        return True

    def _put_memory(self, row: OutboxRow, now: float) -> bool:
        mem = self._mem
        self._spilled += 1
        never_drop = DROP_RANK.get(row.kind) is None
        try:
            with mem.transaction():
                fits, evicted = mem.make_room(row.kind, row.cost_b, self.memory_max_messages, self.memory_max_bytes)
                if not fits:
                    raise _Refused
                hard_rows = self.memory_max_messages * _NEVER_DROP_MEMORY_FACTOR
                hard_bytes = self.memory_max_bytes * _NEVER_DROP_MEMORY_FACTOR
                if never_drop and (mem.count + 1 > hard_rows or mem.bytes + row.cost_b > hard_bytes):
                    raise MemoryError(f"memory queue at its hard limit ({mem.count} rows, {mem.bytes} B)")
                mem.insert(row)
        except _Refused:
            self._faults.lose("disk_unavailable", 1, f"{row.kind} seq {row.seq} (disk refuses writes, memory "
                              "queue full of more important messages)", now)
            return False
        except (MemoryError, sqlite3.Error) as err:
            self._faults.lose("memory_full", 1, f"{row.kind} seq {row.seq}: {err}", now, critical=never_drop)
            return False
        self._note_evicted(evicted, "disk_unavailable", now)
        return True

    def _note_evicted(self, evicted: list[OutboxRow], reason: str, now: float) -> None:
        if evicted:
            kinds = sorted({r.kind for r in evicted})
            seqs = f"seq {evicted[0].seq}" + (f"..{evicted[-1].seq}" if len(evicted) > 1 else "")
            self._faults.lose(reason, len(evicted), f"{len(evicted)} oldest {'/'.join(kinds)} ({seqs}) to make room",
                              now)

    def _file_fault(self, err: BaseException, what: str, now: float) -> None:
        kind = fault_kind(err)
        self._faults.fault(kind, f"{what}: {err}", now)
        if kind == "corrupt":
            self._rebuild_reason = "corrupt"

    # ------------------------------------------------------------------ maintenance and recovery
    def maintain(self) -> None:
        """Detect a deleted/replaced file (every ``check_interval_s``) and retry a failing disk on
        its back-off schedule.  Cheap when there is nothing to do; never raises."""
        with self._lock:
            if not self._closed:
                self._maintain_safely(time.monotonic())

    def _maintain_safely(self, now: float) -> None:
        try:
            self._maintain(now)
        except Exception:  # a bug here must not cost the message being stored
            log.exception("outbox %s: maintenance failed", self.path)

    def _maintain(self, now: float) -> None:
        if self._file is None and self._faults.failing is None:  # e.g. a rebuild stopped half-way
            self._faults.fault("cantopen", "no outbox file open", now)
        if now >= self._next_check_s:
            self._next_check_s = now + self._check_interval_s
            self._check_identity(now)
        if self._faults.failing is not None:
            if self._faults.due(now):
                self._recover(now)
        elif self._pending_deletes and self._file is not None:
            self._retry_deletes(now)

    def _check_identity(self, now: float) -> None:
        if self._file is None or self._rebuild_reason is not None:
            return
        try:
            current = _file_id(self.path)
            if self._wal_identity is None:  # SQLite creates the WAL lazily
                self._wal_identity = _file_id(Path(f"{self.path}-wal"))
        except OSError as err:
            self._file_fault(err, "cannot stat the outbox file", now)
            return
        if current == self._identity:
            return
        reason = "deleted" if current is None else "replaced"
        self._faults.fault(reason, f"the outbox file was {reason} while open; re-creating it from the open file", now)
        self._rebuild_reason = reason
        self._recover(now)

    def _recover(self, now: float) -> None:
        """One recovery attempt: open / rebuild the file, move the memory queue into it."""
        try:
            if self._file is None:
                try:
                    self._attach(self._connect(self._integrity_check))
                except OutboxCorrupt as err:
                    if self._on_corrupt != "move_aside":
                        raise
                    self._salvage_and_replace(str(err))
            elif self._rebuild_reason in ("deleted", "replaced"):
                self._rebuild(self._rebuild_reason, now)
            elif self._rebuild_reason == "corrupt":
                old, self._file = self._file, None
                with contextlib.suppress(sqlite3.Error):
                    old.db.close()
                self._pending_deletes.clear()  # acked rows in it may be salvaged again: duplicates only
                self._salvage_and_replace("found corrupt while running")
            moved = self._flush_memory(now)
            self._retry_deletes(now, quiet=False)
            if not moved:
                self._probe_write()  # nothing was written: make sure the disk takes a write now
        except OutboxError as err:
            self._faults.fault(err.kind, str(err), now)
            return
        except (sqlite3.Error, OSError) as err:
            self._file_fault(err, "retry failed", now)
            return
        self._faults.recovered(now, f"{moved} message(s) moved from memory to disk")

    def _probe_write(self) -> None:
        """A real, fsynced write (the header's user_version, rewritten unchanged): a retry that had
        nothing to move must not declare a still read-only or full disk healthy."""
        file = self._file
        assert file is not None
        with file.transaction():
            file.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _flush_memory(self, now: float) -> int:
        """Move every memory row into the file (one transaction); returns rows moved."""
        file = self._file
        if file is None or not self._mem.count:
            return 0
        rows = self._mem.select(0, self._mem.count)
        evicted: list[OutboxRow] = []
        refused: list[OutboxRow] = []
        with file.transaction():
            for row in rows:
                fits, ev = file.make_room(row.kind, row.cost_b, self.max_messages, self.max_bytes)
                evicted += ev
                if fits:
                    file.insert(row)
                else:
                    refused.append(row)
        with self._mem.transaction():
            self._mem.delete(r.id for r in rows)
        self._note_evicted(evicted, "outbox_full", now)
        self._note_evicted(refused, "outbox_full", now)
        return len(rows) - len(refused)

    def _retry_deletes(self, now: float, quiet: bool = True) -> None:
        if not self._pending_deletes or self._file is None:
            return
        try:
            with self._file.transaction():
                self._file.delete(sorted(self._pending_deletes))
            self._pending_deletes.clear()
        except (sqlite3.Error, OSError) as err:
            if not quiet:
                raise
            self._file_fault(err, "cannot delete acknowledged rows", now)

    def _rebuild(self, reason: str, now: float) -> None:
        """Build a new file at the path from the rows readable through the open connection.

        Order matters: the copy is made in ``<path>.rebuild`` (rollback journal, fsynced), a
        replacement file at the path is moved aside, the old connection is closed (it checkpoints
        into its unlinked inode and removes *its* ``-wal``), a WAL left at the path that is not a
        plain new file is moved aside, and only then is the copy renamed into place and opened.
        """
        old = self._file
        assert old is not None
        tmp = self.path.with_name(f"{self.path.name}.rebuild")
        _remove_quietly(tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = sqlite3.connect(tmp, isolation_level=None, check_same_thread=False)
        copied, unreadable_from = 0, None
        try:
            new.execute("PRAGMA journal_mode=DELETE")
            new.execute("PRAGMA synchronous=FULL")
            create_schema(new, SCHEMA_VERSION, first_id=self._next_id)
            after = 0
            while True:
                try:
                    rows = old.select(after, 500)
                except sqlite3.Error as err:
                    unreadable_from = f"{err}"
                    break
                if not rows:
                    break
                new.execute("BEGIN IMMEDIATE")
                new.executemany(INSERT, [r.values() for r in rows if r.id not in self._pending_deletes])
                new.execute("COMMIT")
                copied += sum(1 for r in rows if r.id not in self._pending_deletes)
                after = rows[-1].id
        except BaseException:
            new.close()
            _remove_quietly(tmp, Path(f"{tmp}-journal"))
            raise
        new.close()
        expected = max(0, old.count - len(self._pending_deletes))
        stamp = _stamp()
        if _file_id(self.path) not in (None, self._identity):  # never clobber what now sits at the path
            self.path.rename(self.path.with_name(f"{self.path.name}.replaced-{stamp}"))
        wal = Path(f"{self.path}-wal")
        if _file_id(wal) not in (None, self._wal_identity):
            wal.rename(Path(f"{self.path}.replaced-{stamp}-wal"))
        with contextlib.suppress(sqlite3.Error):
            old.db.close()
        self._file = None
        if wal.exists():  # ours, left behind: it must never be applied to the new file
            wal.rename(Path(f"{self.path}.orphan-{stamp}-wal"))
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self._pending_deletes.clear()
        self._attach(self._connect(integrity_check=False))
        lost = max(0, expected - copied)
        if unreadable_from is not None:
            self._faults.lose(reason, lost, f"{lost} pending row(s) unreadable in the {reason} file "
                              f"({unreadable_from})", now)
        log.error("outbox %s was %s while open: re-created it with the %d pending row(s) read from the open file"
                  "%s", self.path, reason, copied, f"; {lost} unreadable, counted as lost" if lost else "")

    def _salvage_and_replace(self, detail: str) -> None:
        """Salvage the corrupt file's rows into a fresh outbox, move the corrupt file aside."""
        tmp = self.path.with_name(f"{self.path.name}.salvage")
        _remove_quietly(tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"))
        new = sqlite3.connect(tmp, isolation_level=None, check_same_thread=False)
        try:
            new.execute("PRAGMA journal_mode=DELETE")
            new.execute("PRAGMA synchronous=FULL")
            create_schema(new, SCHEMA_VERSION, first_id=self._next_id)
            new.execute("CREATE TEMP TABLE pending_ids (id INTEGER PRIMARY KEY)")
            new.execute("BEGIN IMMEDIATE")
            insert = INSERT.replace("INSERT INTO", "INSERT OR IGNORE INTO")
            report = salvage(self.path, lambda row: new.execute(insert, row.values()),
                             lambda rid: new.execute("INSERT OR IGNORE INTO temp.pending_ids VALUES (?)", (rid,)))
            new.execute("COMMIT")
            report.salvaged = int(new.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            report.pending_ids_seen = int(new.execute("SELECT COUNT(*) FROM temp.pending_ids").fetchone()[0])
            lost_ids = [int(r[0]) for r in new.execute(
                "SELECT id FROM temp.pending_ids WHERE id NOT IN (SELECT id FROM outbox) ORDER BY id")]
            report.lost, report.lost_ids_sample = len(lost_ids), lost_ids[:20]
        except BaseException:
            new.close()
            _remove_quietly(tmp, Path(f"{tmp}-journal"))
            raise
        new.close()
        self.moved_aside_to = self._move_aside("corrupt")
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self.salvage = report
        self._attach(self._connect(integrity_check=False))
        self._faults.lose("corrupt", report.lost, f"{report.lost} pending row(s) unreadable in the corrupt file "
                          f"(ids {report.lost_ids_sample})", time.monotonic())
        log.error("outbox %s was corrupt (%s): salvaged %d pending row(s) into a fresh outbox (%d via SQLite, %d by "
                  "page scan, page size %d), %d known lost; the corrupt file is kept as %s", self.path, detail,
                  report.salvaged, report.sql_rows, report.scan_rows, report.page_size, report.lost,
                  self.moved_aside_to)

    # ------------------------------------------------------------------ acknowledgements
    def ack(self, row_id: int) -> bool:
        """Delete a row the broker acknowledged; False if it was already gone (dropped, acked)."""
        return self.ack_many((row_id,)) == 1

    def ack_many(self, row_ids: Iterable[int]) -> int:
        """Delete acknowledged rows (one transaction per store); returns rows removed.

        If the disk refuses the delete, the ids are remembered, hidden from :meth:`take_batch`
        and deleted when the disk allows (a crash meanwhile only causes duplicates)."""
        ids = [int(i) for i in row_ids]
        if not ids:
            return 0
        with self._lock:
            self._check_open()
            in_mem: set[int] = set()
            if self._mem.count:
                with self._mem.transaction():
                    in_mem = set(self._mem.delete(ids))
            rest = [i for i in ids if i not in in_mem]
            removed = len(in_mem)
            if rest and self._file is not None:
                if self._faults.failing is None:
                    try:
                        with self._file.transaction():
                            removed += len(self._file.delete(rest))
                        rest = []
                    except (sqlite3.Error, OSError) as err:
                        self._file_fault(err, f"cannot delete {len(rest)} acknowledged row(s)", time.monotonic())
                if rest:
                    fresh = [i for i in rest if i not in self._pending_deletes]
                    self._pending_deletes.update(fresh)
                    removed += len(fresh)
            return removed

    # ------------------------------------------------------------------ reading
    def take_batch(self, limit: int, exclude_ids: Iterable[int] = (), after_id: int = 0,
                   *, count_attempt: bool = True) -> list[OutboxRow]:
        """The oldest ``limit`` rows with ``id > after_id`` that are not in ``exclude_ids``, in id
        order, from the file and the memory queue.  Rows stay stored until acked; ``attempts`` is
        incremented (best effort) for the rows returned.

        After a failed read of the file, its next read starts from id 0 instead of ``after_id``
        (excluding ``exclude_ids``), so rows the caller skipped past meanwhile are not stranded."""
        if limit <= 0:
            return []
        with self._lock:
            self._check_open()
            now = time.monotonic()
            self._maintain_safely(now)
            exclude = {int(i) for i in exclude_ids} | self._pending_deletes
            want = limit + len(exclude)
            from_file: list[OutboxRow] = []
            if self._file is not None:
                try:
                    from_file = self._file.select(0 if self._file_read_failed else after_id, want)
                    self._file_read_failed = False
                except sqlite3.Error as err:
                    self._file_read_failed = True
                    self._file_fault(err, "cannot read pending rows", now)
            from_mem = self._mem.select(after_id, want) if self._mem.count else []
            rows = sorted((r for r in (*from_file, *from_mem) if r.id not in exclude), key=lambda r: r.id)[:limit]
            if rows and count_attempt:
                self._bump_attempts(rows, {r.id for r in from_mem}, now)
        if not count_attempt:
            return rows
        return [dataclasses.replace(r, attempts=r.attempts + 1) for r in rows]

    def _bump_attempts(self, rows: list[OutboxRow], mem_ids: set[int], now: float) -> None:
        in_mem = [r.id for r in rows if r.id in mem_ids]
        in_file = [r.id for r in rows if r.id not in mem_ids]
        if in_mem:
            with self._mem.transaction():
                self._mem.bump_attempts(in_mem)
        if in_file and self._file is not None and self._faults.failing is None:
            try:
                with self._file.transaction():
                    self._file.bump_attempts(in_file)
            except (sqlite3.Error, OSError) as err:
                self._file_fault(err, "cannot update attempt counts", now)

    def count(self) -> int:
        """Messages stored (on disk or in the memory queue) and not yet acknowledged."""
        with self._lock:
            on_disk = self._file.count if self._file is not None else 0
            return max(0, on_disk - len(self._pending_deletes)) + self._mem.count

    @property
    def dropped(self) -> int:
        """Messages lost since this Outbox was opened, all reasons (budget, disk, corrupt file)."""
        with self._lock:
            return sum(self._faults.lost.values())

    def oldest(self) -> OutboxRow | None:
        with self._lock:
            self._check_open()
            candidates = [self._mem.oldest()]
            if self._file is not None:
                with contextlib.suppress(sqlite3.Error):
                    candidates.append(self._file.oldest())
        present = [r for r in candidates if r is not None]
        return min(present, key=lambda r: r.id) if present else None

    def oldest_age_s(self, now_mono_s: float) -> float | None:
        """Age of the oldest stored message on the caller's monotonic clock (None if empty).
        Only meaningful for rows of the current OS boot; older rows give their stored-time age
        by ``oldest().created_utc``."""
        row = self.oldest()
        return None if row is None else max(0.0, now_mono_s - row.created_mono_s)

    def report(self) -> dict[str, Any]:
        """Counters for health messages and the status file (all since this Outbox was opened).

        ``state`` is ``ok`` or the fault kind the disk is failing with now; ``errors`` counts
        failed disk operations by kind; ``lost`` counts sequenced messages lost by reason (each
        one a seq gap at the controller); ``in_memory`` are messages the disk has not accepted yet.
        """
        with self._lock:
            f = self._faults
            return {
                "state": f.failing or "ok",
                "errors": dict(f.errors),
                "lost": dict(f.lost),
                "fault_episodes": f.episodes,
                "in_memory": self._mem.count,
                "in_memory_bytes": self._mem.bytes,
                "spilled_to_memory": self._spilled,
                "on_disk": max(0, (self._file.count if self._file else 0) - len(self._pending_deletes)),
                "on_disk_bytes": self._file.bytes if self._file else 0,
                "max_messages": self.max_messages,
                "max_bytes": self.max_bytes if self.max_bytes != sys.maxsize else None,
                "pending_deletes": len(self._pending_deletes),
                "salvage": self.salvage.as_dict() if self.salvage else None,
                "moved_aside_to": str(self.moved_aside_to) if self.moved_aside_to else None,
            }

    # ------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed", "closed")
