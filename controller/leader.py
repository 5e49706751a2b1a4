"""Which controller process leads: the one that runs dispatch and the liveness sweep (issue 20).

Several controllers may ingest at once (an MQTT 5 shared subscription spreads the messages; the
store de-duplicates), but the dispatcher and the liveness sweep must run in exactly one of them:
two dispatchers would each send a handheld, two sweeps would log every transition twice.

PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own.
The server holds it for as long as that session lives, so when the leader process dies (or its
connection is cut) the lock is released and the next controller to try takes over - no lease to
tune, no clock to trust.  Every :meth:`AdvisoryLockLeader.is_leader` call (once per tick) checks the
session is alive; a leader that lost it stops leading at once.  A leader cut off from the database
whose session the server has not yet dropped could overlap with its successor for up to the TCP
keep-alive time (about 15 s with the settings below); the store's compare-and-set claims
(:meth:`controller.store.Store.claim_incident_task`, ``claim_task_attempt``) keep even that overlap
from sending two handhelds to one incident.

SQLite (one machine, one file): an exclusive ``flock`` on ``<db>.leader``, released by the kernel
when the process dies - the same fail-over for controllers sharing one file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from controller.store.location import parse_store_location

log = logging.getLogger(__name__)

#: advisory lock key for "the controller that dispatches" (any fixed 64-bit number, 'cedge' + 2)
LEADER_LOCK_KEY = 0x63656467_65000002


class Leadership(Protocol):
    def is_leader(self) -> bool: ...

    def close(self) -> None: ...


class AdvisoryLockLeader:
    """Leader while this process holds a PostgreSQL session advisory lock."""

    def __init__(self, url: str, key: int = LEADER_LOCK_KEY, name: str = "cedge-leader",
                 check_timeout_ms: int = 5000) -> None:
        self.url = url
        self.key = key
        self.name = name
        self.check_timeout_ms = check_timeout_ms
        self._conn: Any = None
        self._held = False
        self.changes = 0  # times leadership was gained or lost (logged; tests read it)

    def _connect(self) -> Any:
        import psycopg

        # keep-alives: a dead peer is noticed in ~15 s on both sides, not after the OS default of hours
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5, application_name=self.name,
                               keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
        conn.execute(f"SET statement_timeout = {int(self.check_timeout_ms)}")
        return conn

    def is_leader(self) -> bool:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            if self._held:
                self._conn.execute("SELECT 1")  # the session, and so the lock, is still there
            else:
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                if row and row[0]:
                    self._held = True
                    self.changes += 1
                    log.info("leader: this controller now runs dispatch and liveness (advisory lock %#x)", self.key)
        except psycopg.Error as err:
            if self._held:
                self.changes += 1
                log.warning("leader: lost the database session (%s); no longer dispatching", str(err).strip())
            self._held = False
            self._drop()
        return self._held

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Give up leadership (closing the session releases the lock: another takes over)."""
        self._held = False
        self._drop()


class FileLockLeader:
    """Leader while this process holds an exclusive flock on ``<db>.leader`` (SQLite stores)."""

    def __init__(self, db_path: str) -> None:
        self.lock_path = f"{db_path}.leader"
        self._fd: int | None = None
        self.changes = 0

    def is_leader(self) -> bool:
        if self._fd is not None:
            return True
        try:
            Path(self.lock_path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            log.warning("leader: cannot open %s (%s); not dispatching", self.lock_path, err)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        self.changes += 1
        log.info("leader: this controller now runs dispatch and liveness (lock %s)", self.lock_path)
        return True

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class AlwaysLeader:
    """An in-memory store has one process by definition."""

    changes = 0

    def is_leader(self) -> bool:
        return True

    def close(self) -> None:
        return None


def leader_for(store_location: str | Path) -> Leadership:
    where = parse_store_location(store_location)
    if where.backend == "postgresql":
        return AdvisoryLockLeader(where.target)
    if where.target == ":memory:":
        return AlwaysLeader()
    return FileLockLeader(where.target)
