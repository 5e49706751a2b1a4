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

import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ValidationError

from agent.hal.interfaces import Clock, utc_iso
from agent.hal.system_clock import SystemClock
from agent.wire_schema import (
    BODY_TYPES,
    SCHEMA_VERSION,
    SESSION_KINDS,
    Envelope,
    WireError,
    decode_uplink,
    parse_uplink_topic,
)
from controller.store import Store

__all__ = ["IngestOutcome", "IngestStats", "Ingestor", "MAX_PAYLOAD_BYTES", "classify_reject"]

log = logging.getLogger(__name__)

IngestOutcome = Literal["stored", "duplicate", "rejected", "retry"]
MAX_PAYLOAD_BYTES = 1024 * 1024
REJECT_CODES = (
    "oversized",
    "bad_topic",
    "unknown_kind",
    "not_json",
    "not_object",
    "bad_schema",
    "envelope_invalid",
    "topic_mismatch",
    "bad_seq",
    "body_invalid",
    "internal_error",
)


def classify_reject(topic: str, payload: bytes) -> str:
    """Reason code for a payload that :func:`decode_uplink` refused (walks the same stages)."""
    try:
        unit_id, kind = parse_uplink_topic(topic)
    except WireError:
        parts = topic.split("/")
        return "unknown_kind" if len(parts) == 5 and parts[4] not in BODY_TYPES else "bad_topic"
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "not_json"
    if not isinstance(raw, dict):
        return "not_object"
    if raw.get("schema") != SCHEMA_VERSION:
        return "bad_schema"
    try:
        env = Envelope.model_validate(raw)
    except ValidationError:
        return "envelope_invalid"
    if env.unit_id != unit_id or env.kind != kind:
        return "topic_mismatch"
    if (kind in SESSION_KINDS) != (env.seq == 0):
        return "bad_seq"
    return "body_invalid"


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


class _RateLimitedLog:
    """At most one log line per key per interval; the next one says how many were suppressed."""

    def __init__(self, clock: Clock, interval_s: float):
        self._clock = clock
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = self._clock.monotonic_s()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] += 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        log.warning(msg + (f" (+{n} similar suppressed)" if n else ""), *args)


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
        self._rlog = _RateLimitedLog(self.clock, reject_log_interval_s)

    def handle(self, topic: str, payload: bytes, received_utc: str | None = None) -> IngestOutcome:
        """Never raises: every failure becomes an outcome (see module doc)."""
        received_utc = received_utc or utc_iso(self.clock.utc_now())
        try:
            outcome = self._handle(topic, payload, received_utc)
        except sqlite3.IntegrityError as err:  # constraint broken: retrying cannot help
            self.stats.errors[type(err).__name__] += 1
            log.error("integrity error storing %s: %s", topic, err)
            outcome = self._reject(topic, payload, received_utc, "internal_error", f"IntegrityError: {err}")
        except sqlite3.Error as err:  # storage trouble: keep the message, try again later
            self.stats.errors[type(err).__name__] += 1
            self._rlog.warning("store-error", "cannot store %s now (%s); will retry", topic, err)
            outcome = "retry"
        except Exception as err:  # a bug must not stop the receiver; keep evidence in rejects
            self.stats.errors[type(err).__name__] += 1
            log.exception("internal error handling %s", topic)
            outcome = self._reject(topic, payload, received_utc, "internal_error", f"{type(err).__name__}: {err}")
        self.stats.outcomes[outcome] += 1
        return outcome

    def _handle(self, topic: str, payload: bytes, received_utc: str) -> IngestOutcome:
        if not isinstance(payload, bytes | bytearray | memoryview):
            return self._reject(topic, b"", received_utc, "not_json", f"payload is {type(payload).__name__}")
        payload = bytes(payload)
        if len(payload) > self.max_payload_bytes:
            return self._reject(
                topic,
                payload,
                received_utc,
                "oversized",
                f"{len(payload)} bytes > limit {self.max_payload_bytes}",
            )
        try:
            env, body = decode_uplink(topic, payload)
        except WireError as err:
            return self._reject(topic, payload, received_utc, classify_reject(topic, payload), str(err))
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
                log.exception("event handler failed for %s", topic)
        return "stored"

    def _reject(self, topic: str, payload: bytes, received_utc: str, code: str, reason: str) -> IngestOutcome:
        self.stats.rejects[code] += 1
        self._rlog.warning(f"reject:{code}", "rejected %s: %s: %s", topic[:200], code, reason[:300])
        try:
            self.store.record_reject(received_utc, topic, code, reason, payload)
        except sqlite3.Error as err:  # the reject is counted and logged even if the store is down
            self.stats.errors[type(err).__name__] += 1
        return "rejected"
