"""Uplink ingest: topic + payload bytes in, one durable outcome out.

Every message ends in exactly one outcome, and the MQTT layer acknowledges it to the broker only
for the final ones:

* ``'stored'``    decoded and committed (ledger row + kind row in one transaction);
* ``'duplicate'`` a QoS-1 redelivery of something already stored; nothing written;
* ``'rejected'``  not valid under :mod:`agent.wire_schema` (or it crashed our handling); recorded
  in the ``rejects`` table with a reason code, counted, logged (rate-limited per reason) -
  retrying would give the same answer, so it is acknowledged and dropped;
* ``'retry'``     the database could not take it right now (locked, disk full, I/O error): not
  acknowledged, the caller keeps it and tries again, so a storage hiccup loses nothing;
* ``'parked'``    held for checking (:mod:`controller.sequence_guard`: a boot no birth announced, a
  seq far ahead): durably kept in ``parked``, stored when it checks out, else rejected later;
* ``'conflict'``  another message already holds its (unit, boot, seq): kept in ``seq_conflicts``.

Who may say what (issue 14, item 2; :meth:`Ingestor._admit`): the topic's unit id must be the
envelope's (the broker ACL makes the topic's unit the authenticated identity); a unit that is not
enrolled is rejected ``unit_not_enrolled`` (counted, never auto-created); a task event is accepted
only from the unit the controller dispatched that task to, for a cmd_id it sent that unit
(``task_not_issued``: row 2, a forged "cleared" for another unit's task).

Why the reason codes: an operator asked "why is unit X missing data" needs "412 body_invalid from
mob-2 since 10:02" rather than a log line per message, and a malformed-message flood must neither
fill the log nor stop the receiver.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from agent.hal.interfaces import Clock, utc_iso
from agent.hal.system_clock import SystemClock
from agent.wire_schema import (
    MAX_UPLINK_BYTES,
    WIRE_REASONS,
    Envelope,
    Health,
    TaskEvent,
    WireError,
    decode_uplink,
    parse_uplink_topic,
)
from controller.config import SequenceConfig
from controller.enrolment import Enrolment
from controller.rate_limited_log import RateLimitedLog
from controller.sequence_guard import SequenceGuard
from controller.store import Store, epoch_s

__all__ = ["IngestOutcome", "IngestStats", "Ingestor", "MAX_PAYLOAD_BYTES", "classify_reject"]

log = logging.getLogger(__name__)

IngestOutcome = Literal["stored", "duplicate", "rejected", "retry", "parked", "conflict"]
MAX_PAYLOAD_BYTES = MAX_UPLINK_BYTES
#: identity and sequence checks (see the module docstring and controller.sequence_guard)
ADMISSION_REASONS = ("unit_not_enrolled", "task_not_issued", "boot_not_announced", "seq_far_ahead")
_MAX_COUNTED_UNKNOWN_UNITS = 1000  # per-unit counters for unknown ids; the rest share one ("*")
#: Every reason a message can be rejected for: the wire schema's (each failure it can classify has
#: its own code: too_deep, non_finite, bad_time, seq_range, bad_unit_id, negative_count, ...) and
#: ``internal_error``, kept for our own bugs only.
REJECT_CODES = (*WIRE_REASONS, "internal_error", *ADMISSION_REASONS)


def classify_reject(topic: str, payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> str | None:
    """Reason code :func:`decode_uplink` gives ``payload``, or None if it is valid."""
    try:
        decode_uplink(topic, payload, max_bytes=max_bytes)
    except WireError as err:
        return err.reason
    return None


@dataclass
class IngestStats:
    outcomes: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # stored messages per kind
    delivery: Counter[str] = field(default_factory=Counter)  # stored messages live / backfill
    errors: Counter[str] = field(default_factory=Counter)  # internal errors by exception type

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "outcomes": dict(self.outcomes),
            "rejects": dict(self.rejects),
            "kinds": dict(self.kinds),
            "delivery": dict(self.delivery),
            "errors": dict(self.errors),
        }


class Ingestor:
    """Decode, validate and store uplinks; ``on_event(env, body)`` runs after each stored one."""

    def __init__(
        self,
        store: Store,
        on_event: Callable[[Envelope, BaseModel], None] | None = None,
        clock: Clock | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        reject_log_interval_s: float = 10.0,
        enrolment: Enrolment | None = None,
        sequence: SequenceGuard | SequenceConfig | None = None,
        check_task_events: bool = True,
        request_birth: Callable[[str], None] | None = None,
    ):
        self.store = store
        self.enrolment = enrolment  # None: every unit (tests, a controller without a site)
        self.sequence = sequence if isinstance(sequence, SequenceGuard) else SequenceGuard(store, sequence)
        self.check_task_events = check_task_events
        self.request_birth = request_birth
        self._unknown_units: set[str] = set()
        self.on_event = on_event
        self.clock = clock or SystemClock()
        self.max_payload_bytes = max_payload_bytes
        self.stats = IngestStats()
        self._rlog = RateLimitedLog(self.clock, reject_log_interval_s, log)

    def handle(self, topic: str, payload: bytes, received_utc: str | None = None,
               payload_bytes: int | None = None) -> IngestOutcome:
        """Never raises: every failure becomes an outcome (see module doc).

        ``payload_bytes``: the size the message had on the wire when the MQTT layer kept only an
        excerpt of an oversized one (so a 10 MB flood never sits in memory, issue 14 row 13).
        """
        received_utc = received_utc or utc_iso(self.clock.utc_now())
        try:
            outcome = self._handle(topic, payload, received_utc, payload_bytes)
        except sqlite3.IntegrityError as err:  # constraint broken: retrying cannot help
            self.stats.errors[type(err).__name__] += 1
            self._rlog.error("integrity", "integrity error storing %s: %s", topic[:200], err)
            outcome = self._reject(topic, payload, received_utc, "internal_error", f"IntegrityError: {err}")
        except sqlite3.Error as err:  # storage trouble: keep the message, try again later
            self.stats.errors[type(err).__name__] += 1
            self._rlog.warning("store-error", "cannot store %s now (%s); will retry", topic[:200], err)
            outcome = "retry"
        except Exception as err:  # a bug must not stop the receiver; keep evidence in rejects
            self.stats.errors[type(err).__name__] += 1
            # one traceback per exception type and interval: a message that trips a bug, sent in a
            # loop, must not turn into a 15-line traceback per message (issue 14, row 11)
            self._rlog.exception(f"internal:{type(err).__name__}", "internal error handling %s", topic[:200])
            outcome = self._reject(topic, payload, received_utc, "internal_error",
                                   f"{type(err).__name__}: {str(err)[:500]}")
        self.stats.outcomes[outcome] += 1
        return outcome

    def _handle(self, topic: str, payload: bytes, received_utc: str, payload_bytes: int | None = None) -> IngestOutcome:
        if not isinstance(payload, bytes | bytearray | memoryview):
            return self._reject(topic, b"", received_utc, "not_json", f"payload is {type(payload).__name__}")
        payload = bytes(payload)
        size = max(len(payload), payload_bytes or 0)
        if size > self.max_payload_bytes:
            return self._reject(topic, payload, received_utc, "oversized",
                                f"{size} bytes > limit {self.max_payload_bytes}", size)
        refused = self._enrolment_check(topic, payload, received_utc)
        if refused is not None:
            return refused
        try:
            env, body = decode_uplink(topic, payload, max_bytes=self.max_payload_bytes, now_utc=self.clock.utc_now())
        except WireError as err:
            return self._reject(topic, payload, received_utc, err.reason, str(err))
        held = self._admit(topic, payload, env, body, received_utc)
        if held is not None:
            return held
        outcome = self.store.store_uplink(env, body, received_utc)
        if outcome == "duplicate":
            self.store.bump_counter("duplicate", env.unit_id)
            return "duplicate"
        if outcome == "conflict":
            self._rlog.error(f"conflict:{env.unit_id}", "SEQUENCE CONFLICT: %s boot %s seq %d (%s) differs from the "
                             "message stored under that key; both kept (seq_conflicts)", env.unit_id,
                             env.boot_id[:40], env.seq, env.kind)
            return "conflict"
        self.stats.kinds[env.kind] += 1
        self.stats.delivery[env.delivery] += 1
        if env.kind == "birth":
            self._release_parked(env.unit_id)
        elif isinstance(body, Health):
            self._note_refused_commands(env, body)
        if self.on_event is not None:
            try:
                self.on_event(env, body)
            except Exception:  # the message is stored; a broken listener must not undo that
                self.stats.errors["on_event"] += 1
                self._rlog.exception("on_event", "event handler failed for %s", topic[:200])
        return "stored"

    def _reject(self, topic: str, payload: bytes, received_utc: str, code: str, reason: str,
                payload_bytes: int | None = None) -> IngestOutcome:
        self.stats.rejects[code] += 1
        self._rlog.warning(f"reject:{code}", "rejected %s: %s: %s", topic[:200], code, reason[:300])
        try:
            self.store.record_reject(received_utc, topic, code, reason, payload, payload_bytes=payload_bytes)
        except sqlite3.Error as err:  # the reject is counted and logged even if the store is down
            self.stats.errors[type(err).__name__] += 1
        return "rejected"

    # ------------------------------------------------------------------ identity and sequence checks
    def _enrolment_check(self, topic: str, payload: bytes, received_utc: str) -> IngestOutcome | None:
        """Reject uplinks of units that are not enrolled (before decoding: their content is moot)."""
        if self.enrolment is None or not self.enrolment.required:
            return None
        try:
            unit_id, _kind = parse_uplink_topic(topic)
        except WireError:
            return None  # decode_uplink gives the precise reason
        if self.enrolment.is_enrolled(unit_id):
            return None
        counted = unit_id if (unit_id in self._unknown_units or len(self._unknown_units) < _MAX_COUNTED_UNKNOWN_UNITS) \
            else "*"
        self._unknown_units.add(counted)
        self.store.bump_counter("unit_not_enrolled", counted[:64])
        return self._reject(topic, payload, received_utc, "unit_not_enrolled",
                            f"unit {unit_id[:64]!r} is not enrolled at this site")

    def _admit(self, topic: str, payload: bytes, env: Envelope, body: BaseModel,
               received_utc: str) -> IngestOutcome | None:
        """None if the decoded message may be stored now; else its outcome (rejected or parked)."""
        if self.check_task_events and isinstance(body, TaskEvent) \
                and not self.store.command_issued(env.unit_id, body.cmd_id, body.task_id):
            self.store.bump_counter("task_not_issued", env.unit_id)
            return self._reject(topic, payload, received_utc, "task_not_issued",
                                f"{env.unit_id} reports {body.state!r} for task {body.task_id[:64]} / cmd "
                                f"{body.cmd_id[:40]}, which this controller never dispatched to it")
        now_s = self.clock.utc_now().timestamp()
        verdict = self.sequence.check_envelope(env, now_s)
        if verdict is None:
            return None
        cfg = self.sequence.config
        row = {"unit_id": env.unit_id, "boot_id": env.boot_id, "seq": env.seq, "kind": env.kind, "topic": topic,
               "payload": payload, "payload_bytes": len(payload), "received_utc": received_utc,
               "parked_epoch_s": now_s, "reason": verdict.reason}
        if not self.store.park(row, cfg.max_parked_per_unit, cfg.max_parked_bytes):
            self.store.bump_counter(verdict.reason, env.unit_id)
            return self._reject(topic, payload, received_utc, verdict.reason,
                                f"{verdict.detail}; parking budget used up")
        self.store.bump_counter(f"parked.{verdict.reason}", env.unit_id)
        self._rlog.warning(f"park:{verdict.reason}:{env.unit_id}", "held %s %s seq %d: %s", env.unit_id, env.kind,
                           env.seq, verdict.detail)
        if verdict.reason == "boot_not_announced" and self.request_birth is not None \
                and self.sequence.should_ask_rebirth(env.unit_id, now_s):
            try:
                self.request_birth(env.unit_id)
            except Exception as err:  # the timeout still decides; never fail ingest for this
                self._rlog.warning("rebirth", "could not ask %s for a birth: %s", env.unit_id, err)
        return "parked"

    def _note_refused_commands(self, env: Envelope, body: Health) -> None:
        """Log when a unit reports more refused commands: someone sent it forged, stale or replayed
        commands (the unit logs each one too; this is the controller's view of the same attempts)."""
        if body.commands_rejected == 0:
            return
        before = self.store.commands_refused_before(env.unit_id, env.boot_id, env.seq)
        if body.commands_rejected <= before:
            return
        self.store.bump_counter("commands_refused_by_unit", env.unit_id, body.commands_rejected - before)
        self._rlog.warning(f"refused:{env.unit_id}", "%s refused %d more command(s) (%d this boot): forged, "
                           "expired or replayed commands reach it", env.unit_id, body.commands_rejected - before,
                           body.commands_rejected)

    def _release_parked(self, unit_id: str | None = None) -> int:
        """Store the parked messages that now check out (oldest boot/seq first); returns how many."""
        now_s = self.clock.utc_now().timestamp()
        done = 0
        for row in self.store.parked_messages(unit_id):
            if self.sequence.check(row["unit_id"], row["boot_id"], row["seq"], row["kind"], now_s) is not None:
                continue
            payload = self.store.parked_payload(row["id"])
            self.store.unpark(row["id"])
            outcome = self._handle(row["topic"], payload, row["received_utc"])
            self.stats.outcomes[outcome] += 1
            self.stats.outcomes["released"] += 1
            done += 1
        return done

    def sweep(self) -> dict[str, int]:
        """Release parked messages that check out now; reject those parked longer than the timeout.

        Called periodically by the service (the birth may reach another controller process, or the
        seqs before a far-ahead one may fill in).  Each expired one is rejected under its park
        reason (``boot_not_announced`` / ``seq_far_ahead``), counted, and its evidence kept.
        """
        released = self._release_parked(None)
        expired = 0
        now_s = self.clock.utc_now().timestamp()
        for row in self.store.parked_messages(None):
            if not self.sequence.expired(row, now_s):
                continue
            payload = self.store.parked_payload(row["id"])
            self.store.unpark(row["id"])
            parked_s = now_s - (row["parked_epoch_s"] or epoch_s(row["received_utc"]) or now_s)
            self.store.bump_counter(row["reason"], row["unit_id"])
            self._reject(row["topic"], payload, row["received_utc"], row["reason"],
                         f"{row['unit_id']} {row['kind']} seq {row['seq']} held {parked_s:.0f} s and never "
                         f"checked out ({row['reason']})")
            self.stats.outcomes["rejected"] += 1
            expired += 1
        return {"released": released, "expired": expired}
