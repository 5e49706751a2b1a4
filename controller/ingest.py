"""Uplink ingest: topic + payload bytes in, one durable outcome out.

Every message ends in exactly one outcome, and the MQTT layer acknowledges it to the broker only
for the final ones:

* ``'stored'``    decoded and committed (ledger row + kind row in one transaction);
* ``'duplicate'`` a QoS-1 redelivery of something already stored; nothing written;
* ``'rejected'``  not valid under :mod:`agent.wire_schema` (or it crashed our handling); recorded
  in the ``rejects`` table with a reason code, counted, logged (rate-limited per reason) -
  retrying would give the same answer, so it is acknowledged and dropped;
* ``'retry'``     the database could not take it right now (locked, disk full, I/O error): not
  acknowledged, the caller keeps it and tries again, so a storage hiccup loses nothing.

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
    WireError,
    decode_uplink,
)
from controller.rate_limited_log import RateLimitedLog
from controller.store import Store

__all__ = ["IngestOutcome", "IngestStats", "Ingestor", "MAX_PAYLOAD_BYTES", "classify_reject"]

log = logging.getLogger(__name__)

IngestOutcome = Literal["stored", "duplicate", "rejected", "retry"]
MAX_PAYLOAD_BYTES = MAX_UPLINK_BYTES
#: Every reason a message can be rejected for: the wire schema's (each failure it can classify has
#: its own code: too_deep, non_finite, bad_time, seq_range, bad_unit_id, negative_count, ...) and
#: ``internal_error``, kept for our own bugs only.
REJECT_CODES = (*WIRE_REASONS, "internal_error")


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
    ):
        self.store = store
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
        try:
            env, body = decode_uplink(topic, payload, max_bytes=self.max_payload_bytes, now_utc=self.clock.utc_now())
        except WireError as err:
            return self._reject(topic, payload, received_utc, err.reason, str(err))
        outcome = self.store.store_uplink(env, body, received_utc)
        if outcome == "duplicate":
            self.store.bump_counter("duplicate", env.unit_id)
            return "duplicate"
        self.stats.kinds[env.kind] += 1
        self.stats.delivery[env.delivery] += 1
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
