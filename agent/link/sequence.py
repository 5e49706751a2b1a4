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
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def new_boot_id() -> str:
    """A fresh random boot identifier (uuid4, 32 hex digits), one per agent process start."""
    return uuid.uuid4().hex


class BootSequence:
    """The ``seq`` counter of one boot: starts at 1, +1 per stored sequenced message."""

    def __init__(self, boot_id: str | None = None, first_seq: int = 1) -> None:
        if first_seq < 1:
            raise ValueError(f"first_seq must be >= 1 (0 is reserved for birth/death), got {first_seq}")
        self.boot_id = boot_id or new_boot_id()
        self._next = first_seq
        self._lock = threading.Lock()

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

    @property
    def last_seq(self) -> int:
        """The last consumed seq of this boot (0 if none yet)."""
        return self._next - 1
