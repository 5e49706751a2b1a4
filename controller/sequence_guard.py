"""Sequence integrity: which ``(boot_id, seq)`` the controller takes as a unit's truth, and when.

The controller de-duplicates by ``(unit_id, boot_id, seq)`` and reports holes in ``seq`` as lost
data (:mod:`controller.store`).  Both only mean something if the boot and the seq are the unit's.
Issue 14, row 6: a client that replayed mob-2's boot id with the next 200 seqs, sent first, made
the 200 real messages (3 alarms among them) "duplicates", and the gap check still said "1..N, no
gaps".  The rules here:

1. **A boot exists only once announced** (``require_birth``).  A birth announces its own boot and,
   through ``prev_boot_id``, the unit's previous one (whose backlog may still be in the outbox).
   The agent publishes the birth before any backlog on every connect, so real messages are not
   held.  A message of an unannounced boot is *parked* (table ``parked``, bounded per unit and in
   bytes), never acknowledged-and-forgotten: it is stored as soon as the boot is announced (the
   birth arrives, here or in another controller process on a shared subscription), or rejected
   ``boot_not_announced`` after ``park_timeout_s``.  Meanwhile the controller asks the unit to
   re-announce itself with a signed ``ping`` (Sparkplug B's "rebirth" request), which covers a
   controller whose database was replaced while the unit stayed connected.
2. **A seq far ahead is held for checking**: above ``ref + max_seq_jump + max_msgs_per_s x t`` where
   ``ref`` is the highest seq known for the boot (stored, or claimed by its latest birth's
   ``last_seq``) and ``t`` the controller-clock seconds since ``ref`` last rose.  Such a message is
   parked (``seq_far_ahead``) and stored once the seqs before it have caught up, else rejected
   after the timeout; it can no longer push a boot to seq 2^52 and make every later message look
   old, nor fake a huge gap.
3. **Same key, other content is a conflict, not a duplicate** (:meth:`Store._duplicate_or_conflict`):
   a QoS-1 redelivery has the same content digest; anything else under a taken key is kept in
   ``seq_conflicts``, counted and logged, and an alarm among them still reaches the dispatcher.
   So the row-6 attack can no longer make real messages vanish: at worst both versions are kept
   and the conflict is reported.
4. **A boot's end is known**: a clean shutdown's death (``last_seq``) and the next birth's
   ``prev_boot_last_seq`` (from the unit's boot journal, so also after a crash) become the boot's
   ``end_seq``, so a loss at the end of a boot shows as a gap in ``controller stats``.

Threat model, honestly: once the broker ACL is in place (``cedge site``), a client without the
unit's certificate cannot publish on the unit's topics at all, so rows 6 and 3 need the unit's key.
What remains is a buggy or compromised *unit*: it can announce any boot id for itself, claim any
``last_seq`` in its birth (so rule 2 only bounds what it sends without announcing it), and send
well-formed lies under its own identity.  These rules make such a unit unable to erase its own
earlier data or other units' data, keep everything it sends within fixed storage budgets, and make
its tricks visible (parked, conflicts, rejects, counters); they cannot make its measurements true.
Uplink messages are not signed end to end (only commands are); the unit's TLS identity is the trust.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.wire_schema import SESSION_KINDS, Envelope
from controller.config import SequenceConfig
from controller.store import Store, epoch_s

__all__ = ["ParkVerdict", "SequenceGuard"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParkVerdict:
    reason: str  # 'boot_not_announced' | 'seq_far_ahead' (also the reject code after the timeout)
    detail: str


class SequenceGuard:
    def __init__(self, store: Store, config: SequenceConfig | None = None) -> None:
        self.store = store
        self.config = config or SequenceConfig()
        self._rebirth_asked: dict[str, float] = {}

    def check(self, unit_id: str, boot_id: str, seq: int, kind: str, now_s: float) -> ParkVerdict | None:
        """None if the message may be stored now; else why it must be held."""
        if kind in SESSION_KINDS:
            return None
        boot = self.store.get_boot(unit_id, boot_id)
        if self.config.require_birth and (boot is None or not boot["announced"]):
            return ParkVerdict("boot_not_announced", f"no birth of {unit_id} announced boot {boot_id[:40]}")
        if boot is None:  # require_birth off and a boot never seen: nothing to measure against yet
            return None
        ref = int(boot["ref_seq"] or 0)
        since_s = max(0.0, now_s - (boot["ref_epoch_s"] if boot["ref_epoch_s"] is not None else now_s))
        ceiling = ref + self.config.max_seq_jump + self.config.max_msgs_per_s * since_s
        if seq > ceiling:
            return ParkVerdict("seq_far_ahead", f"seq {seq} > {int(ceiling)} (highest known {ref}, "
                                                f"{since_s:.0f} s ago)")
        return None

    def check_envelope(self, env: Envelope, now_s: float) -> ParkVerdict | None:
        return self.check(env.unit_id, env.boot_id, env.seq, env.kind, now_s)

    def should_ask_rebirth(self, unit_id: str, now_s: float) -> bool:
        """At most one rebirth request per unit every ``rebirth_interval_s``."""
        last = self._rebirth_asked.get(unit_id)
        if last is not None and now_s - last < self.config.rebirth_interval_s:
            return False
        if len(self._rebirth_asked) > 10_000:  # bounded: forget the oldest requests
            for u in sorted(self._rebirth_asked, key=self._rebirth_asked.__getitem__)[:5_000]:
                del self._rebirth_asked[u]
        self._rebirth_asked[unit_id] = now_s
        return True

    def expired(self, parked_row: dict, now_s: float) -> bool:
        t = parked_row.get("parked_epoch_s")
        if t is None:
            t = epoch_s(parked_row.get("received_utc")) or now_s
        return now_s - t > self.config.park_timeout_s
