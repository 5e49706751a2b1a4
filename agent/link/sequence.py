"""Per-boot message sequence numbers: ``(boot_id, seq)`` identifies every sequenced uplink message.

Why a separate object: the controller de-duplicates QoS-1 redeliveries by ``(unit_id, boot_id, seq)``
and reports a gap in ``seq`` as lost data.  So a sequence number must be *consumed* exactly when the
message that carries it is durably stored in the outbox: a crash (or an exception) between taking a
number and committing the row must neither skip a number (a false gap) nor reuse one (a false
duplicate that the controller would silently discard).

:meth:`BootSequence.reserve` gives that: it holds a lock while the caller builds the envelope and
commits the outbox row, and advances the counter only if that block finishes without an exception.
A crash inside the block loses nothing either: the counter lives in memory, and the next process
start is a new boot with a new ``boot_id`` whose sequence starts again at 1.

:class:`BootJournal` remembers, in the agent's state dir, the current boot and the last seq it
consumed, so that the *next* boot's birth can say where the previous one ended
(``prev_boot_id``, ``prev_boot_last_seq``).  Without it a loss at the end of a boot (the outbox
moved aside as corrupt, the unit's storage replaced) is invisible: the controller's gap check only
sees holes *between* stored seqs.  The journal is rewritten (write + rename, no fsync) at most once
per ``min_interval_s`` while seqs are consumed (a rewrite costs ~1 ms on a busy SD card or overlay
file system: per message it would slow the unit's main loop measurably) and exactly, with fsync, at
a clean stop.  After a crash it may lag by that interval (plus the page-cache write-back delay after
a power loss); the messages of that interval are still in the durable outbox and arrive later.  So
it is a lower bound, which never makes a false gap (the controller takes the larger of it and the
highest seq it stored); it under-reports an end-of-boot loss only when a crash *and* the loss of
the outbox coincide.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

BOOT_JOURNAL_FILE = "boot_journal.json"


def new_boot_id() -> str:
    """A fresh random boot identifier (uuid4, 32 hex digits), one per agent process start."""
    return uuid.uuid4().hex


class BootJournal:
    """The previous boot (id, last seq) read at start; the current boot's last seq kept on disk.

    ``path`` None keeps nothing (tests, tools).  An unreadable or corrupt journal means "previous
    boot unknown" (logged), never a failure to start.
    """

    def __init__(self, path: str | Path | None, boot_id: str, min_interval_s: float = 1.0) -> None:
        self.path = Path(path) if path is not None else None
        self.boot_id = boot_id
        self.min_interval_s = min_interval_s
        self._last = 0
        self._written = 0
        self._next_write = 0.0
        self.prev_boot_id: str | None = None
        self.prev_boot_last_seq: int | None = None
        self._write_failed = False
        if self.path is None:
            return
        try:
            raw = json.loads(self.path.read_text())
            prev_id, prev_seq = raw["boot_id"], raw["last_seq"]
            if not isinstance(prev_id, str) or not isinstance(prev_seq, int) or prev_seq < 0:
                raise ValueError(f"boot_id {prev_id!r} / last_seq {prev_seq!r}")
            if prev_id != boot_id:
                self.prev_boot_id, self.prev_boot_last_seq = prev_id, prev_seq
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("boot journal %s unreadable (%s): previous boot unknown", self.path, err)
        self._write(0, sync=True)  # the interval starts with the first consumed seq

    def record(self, last_seq: int, sync: bool = False) -> None:
        """Note this boot's last consumed seq; rewritten now if ``sync`` or the interval has passed."""
        self._last = last_seq
        if self.path is None or (not sync and time.monotonic() < self._next_write):
            return
        self._next_write = time.monotonic() + self.min_interval_s
        self._write(last_seq, sync)

    def flush(self) -> None:
        """Write the exact last seq, with fsync (clean stop)."""
        if self._written != self._last or self._last == 0:
            self.record(self._last, sync=True)

    def _write(self, last_seq: int, sync: bool) -> None:
        assert self.path is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump({"boot_id": self.boot_id, "last_seq": last_seq}, f)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._written = last_seq
            self._write_failed = False
        except OSError as err:  # the message itself is already in the outbox; only the hint is stale
            if not self._write_failed:
                log.error("boot journal %s not written (%s); the next birth may understate this boot", self.path, err)
            self._write_failed = True


class BootSequence:
    """The ``seq`` counter of one boot: starts at 1, +1 per stored sequenced message."""

    def __init__(self, boot_id: str | None = None, first_seq: int = 1, journal: BootJournal | None = None) -> None:
        if first_seq < 1:
            raise ValueError(f"first_seq must be >= 1 (0 is reserved for birth/death), got {first_seq}")
        self.boot_id = boot_id or new_boot_id()
        self._next = first_seq
        self._lock = threading.Lock()
        self.journal = journal

    @contextmanager
    def reserve(self) -> Iterator[int]:
        """Yield the next seq; it is consumed only if the ``with`` block exits normally.

        The lock is held for the whole block, so two threads never interleave seq assignment
        and outbox insertion (rows are then also stored in seq order).
        """
        with self._lock:
            seq = self._next
            yield seq
            self._next = seq + 1
            if self.journal is not None:
                self.journal.record(seq)

    @property
    def last_seq(self) -> int:
        """The last consumed seq of this boot (0 if none yet)."""
        return self._next - 1
