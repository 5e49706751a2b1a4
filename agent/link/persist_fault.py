"""Disk faults of the outbox: what kind they are, how often they happened, when to try again.

Why a separate object: a unit in the field meets full disks, SD cards that turn read-only, I/O
errors and state directories cleaned by hand.  None of these may stop the unit or lose a message
silently (issue 15), so every failed write is *classified*, *counted* by kind, *logged* without
flooding the journal (the first failure of an episode at ERROR, then at most one line per
``log_every_s``), and retried with exponential back-off -- the disk is not hammered at every
message while it is broken, and the outbox is back within ``retry_max_s`` after it heals.

Kinds use the errno name when SQLite's result code says which it was, since that is what a
technician looks up; SQLite reports a failed ``write()``/``fsync()`` as ``SQLITE_IOERR_*`` without
the errno (EPERM of an immutable file, EROFS of an emergency read-only ext4 and a bad sector all
look the same), so those are all ``EIO``:

============  ===================================================================
``ENOSPC``    SQLITE_FULL ("database or disk is full"), or errno ENOSPC/EDQUOT
``EIO``       SQLITE_IOERR_* ("disk I/O error"), or errno EIO
``EROFS``     SQLITE_READONLY_* ("attempt to write a readonly database"), or errno EROFS
``EACCES``    errno EACCES/EPERM (permissions, an immutable file) on a file operation
``corrupt``   SQLITE_CORRUPT / SQLITE_NOTADB
``cantopen``  SQLITE_CANTOPEN (directory gone, too many open files)
``locked``    SQLITE_BUSY / SQLITE_LOCKED
``deleted``   the outbox file vanished from its path while open (see ``Outbox.maintain``)
``replaced``  another file now sits at the outbox's path
``other``     anything else
============  ===================================================================
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections import Counter

log = logging.getLogger(__name__)

#: Kinds a failing disk produces, after which the unit keeps running on its memory queue.
DISK_FAULTS = frozenset({"ENOSPC", "EIO", "EROFS", "cantopen"})

_ERRNO_KIND = {errno.ENOSPC: "ENOSPC", errno.EDQUOT: "ENOSPC", errno.EIO: "EIO", errno.EROFS: "EROFS",
               errno.EPERM: "EACCES", errno.EACCES: "EACCES", errno.ENOENT: "cantopen"}


def fault_kind(err: BaseException) -> str:
    """The kind (table in the module docstring) of an exception raised by a disk operation."""
    if isinstance(err, sqlite3.Error):
        name = str(getattr(err, "sqlite_errorname", "") or "")
        if name == "SQLITE_FULL":
            return "ENOSPC"
        if name.startswith("SQLITE_IOERR"):
            return "EIO"
        if name.startswith("SQLITE_READONLY"):
            return "EROFS"
        if name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB":
            return "corrupt"
        if name.startswith("SQLITE_CANTOPEN"):
            return "cantopen"
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return "locked"
        text = str(err).lower()  # no error name (e.g. raised by the sqlite3 module itself)
        for needle, kind in (("disk is full", "ENOSPC"), ("disk i/o", "EIO"), ("readonly", "EROFS"),
                             ("malformed", "corrupt"), ("not a database", "corrupt"),
                             ("unable to open", "cantopen"), ("locked", "locked")):
            if needle in text:
                return kind
        return "other"
    if isinstance(err, OSError) and err.errno is not None:
        return _ERRNO_KIND.get(err.errno, errno.errorcode.get(err.errno, "other"))
    return "other"


class FaultTracker:
    """Counts faults by kind and losses by reason; tracks one failing episode and its back-off.

    Not thread-safe on its own: the outbox calls it under its lock.  Times are monotonic seconds
    passed in by the caller (testable, and one clock read per operation).
    """

    def __init__(self, what: str, retry_min_s: float = 0.5, retry_max_s: float = 5.0,
                 log_every_s: float = 10.0) -> None:
        if not 0 < retry_min_s <= retry_max_s:
            raise ValueError(f"need 0 < retry_min_s <= retry_max_s, got {retry_min_s}, {retry_max_s}")
        self.what = what
        self.retry_min_s = float(retry_min_s)
        self.retry_max_s = float(retry_max_s)
        self.log_every_s = float(log_every_s)
        self.errors: Counter[str] = Counter()  # failed disk operations by kind
        self.lost: Counter[str] = Counter()  # sequenced messages lost by reason
        self.failing: str | None = None  # kind of the current episode, None when healthy
        self.since_s = 0.0
        self.retry_at_s = 0.0
        self.episodes = 0
        self._backoff_s = self.retry_min_s
        self._recovered_at_s: float | None = None
        self._last_log_s: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def fault(self, kind: str, detail: str, now_s: float) -> None:
        """A disk operation failed: count it, open (or extend) the episode, schedule the retry."""
        self.errors[kind] += 1
        if self.failing is None:
            self.failing, self.since_s, self.episodes = kind, now_s, self.episodes + 1
            flapping = self._recovered_at_s is not None and now_s - self._recovered_at_s < self.log_every_s
            if flapping:  # a disk that takes some writes and not others: keep backing off, log less
                self.note("fault", now_s, logging.ERROR, "%s failing again (%s): %s; %d failed operations so far",
                          self.what, kind, detail, sum(self.errors.values()))
            else:
                self._backoff_s = self.retry_min_s
                log.error("%s: %s (%s); keeping messages in memory and retrying", self.what, detail, kind)
                self._last_log_s["fault"] = now_s
        else:
            self.failing = kind
            self.note("fault", now_s, logging.ERROR, "%s still failing (%s): %s; %d failed operations "
                               "so far", self.what, kind, detail, sum(self.errors.values()))
        self.retry_at_s = now_s + self._backoff_s
        self._backoff_s = min(self.retry_max_s, self._backoff_s * 2)

    def recovered(self, now_s: float, detail: str) -> None:
        """The disk accepted writes again: close the episode (logged at WARNING, rate-limited)."""
        if self.failing is None:
            return
        self.note("recovered", now_s, logging.WARNING, "%s recovered after %.1f s of %s: %s", self.what,
                  now_s - self.since_s, self.failing, detail)
        self.failing = None
        self._recovered_at_s = now_s

    def due(self, now_s: float) -> bool:
        """True when a failing store should be tried again."""
        return self.failing is not None and now_s >= self.retry_at_s

    def lose(self, reason: str, n: int, detail: str, now_s: float, *, critical: bool = False) -> None:
        """``n`` sequenced messages are lost for ``reason``; their seqs become gaps at the controller."""
        if n <= 0:
            return
        self.lost[reason] += n
        level = logging.CRITICAL if critical else logging.WARNING
        if critical:  # an alarm or task event lost is never rate-limited
            log.critical("%s: LOST %s (%s); %d lost for this reason so far", self.what, detail, reason,
                         self.lost[reason])
            return
        self.note(f"lost:{reason}", now_s, level, "%s: lost %s (%s); %d lost for this reason so far",
                           self.what, detail, reason, self.lost[reason])

    def note(self, key: str, now_s: float, level: int, msg: str, *args: object) -> None:
        """Log ``msg`` at most once per ``log_every_s`` for ``key``, saying how many were suppressed."""
        last = self._last_log_s.get(key)
        if last is not None and now_s - last < self.log_every_s:
            self._suppressed[key] += 1
            return
        self._last_log_s[key] = now_s
        skipped = self._suppressed.pop(key, 0)
        log.log(level, msg + (f" [{skipped} similar lines suppressed]" if skipped else ""), *args)
