"""Ingest: every malformed variant is rejected with its reason, counted, recorded; ingest goes on."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.wire_schema import (
    Alarm,
    Birth,
    Death,
    Health,
    Measurement,
    Position,
    SensorHealth,
    TaskEvent,
    Vitals,
    encode,
    make_envelope,
    uplink_topic,
)
from controller.config import SequenceConfig
from controller.ingest import Ingestor, classify_reject
from controller.store import Store

T0 = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
BOOT = "boot-aaaa-0001"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic_s(self) -> float:
        return self.t

    def utc_now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    def sleep(self, d: float) -> None:
        self.t += d

    rate = 1.0
    utc_valid = True


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


POS = Position(lat_deg=51.95, lon_deg=4.05, alt_m=5.0, x_m=1.0, y_m=2.0, z_m=1.5, fix_quality=1)
BODIES = {
    "birth": Birth(
        unit_type="mobile",
        profile="p",
        software_version="0.1",
        site="yard",
        sensors={"gamma": SensorHealth(state="ok")},
    ),
    "death": Death(),
    "health": Health(
        uptime_s=1,
        cpu_pct=1,
        mem_rss_mb=1,
        outbox_pending=0,
        queue_depth={},
        loop_lag_ms=0,
        sensors={},
        position=POS,
    ),
    "measurement": Measurement(
        interval_s=1,
        live_time_s=0.98,
        gross_counts=1000,
        gross_cps=1020.4,
        background_cps=1000.0,
        detector_model="NaI",
        position=POS,
    ),
    "alarm": Alarm(
        alarm_id="A1",
        detector="gross",
        significance_sigma=6,
        peak_cps=2000,
        background_cps=1000,
        t_peak_utc=iso(T0),
        position=POS,
        threshold_sigma=5,
    ),
    "task_event": TaskEvent(task_id="T1", cmd_id="c1", state="accepted"),
    "vitals": Vitals(track_id="t1", heart_rate_bpm=70.0),
}
# a body that fails validation, per kind
BAD_BODIES = {
    "birth": {"unit_type": "tank", "profile": "p", "software_version": "0", "site": "s", "sensors": {}},
    "death": {"reason": "x", "extra": 1},
    "health": {"uptime_s": 1},
    "measurement": {
        "interval_s": 0,
        "live_time_s": 1,
        "gross_counts": -5,
        "gross_cps": 1,
        "detector_model": "x",
    },
    "alarm": {"alarm_id": "A", "detector": "g", "significance_sigma": "high"},
    "task_event": {"task_id": "T", "cmd_id": "c", "state": "teleported"},
    "vitals": {"heart_rate_bpm": 70},
}
BAD_BODY_CODES = {"measurement": "out_of_range"}  # interval_s 0: the first error is a range error


def payload(of: str, n: int | None = None, unit: str = "mob-1", delivery: str = "live", **override) -> bytes:
    """A valid envelope of kind ``of`` with sequence number ``n``; ``override`` replaces raw fields."""
    n = (0 if of in ("birth", "death") else 1) if n is None else n
    env = make_envelope(of, unit, BOOT, n, iso(T0), 1.0, True, BODIES[of], delivery)
    raw = json.loads(encode(env))
    raw.update(override)
    return json.dumps(raw).encode()


# These tests are about decoding and storage, one message at a time: no birth first and no dispatch
# (the identity and sequence checks have their own tests: tests/test_sequence_integrity.py).
NO_IDENTITY_CHECKS: dict = {"check_task_events": False, "sequence": SequenceConfig(require_birth=False)}


@pytest.fixture()
def ingest(tmp_path: Path) -> Ingestor:
    store = Store(tmp_path / "c.sqlite", synchronous="NORMAL")
    yield Ingestor(store, clock=FakeClock(), **NO_IDENTITY_CHECKS)
    store.close()


@pytest.mark.parametrize("kind", list(BODIES))
def test_valid_message_of_every_kind_is_stored(ingest: Ingestor, kind: str) -> None:
    assert ingest.handle(uplink_topic("mob-1", kind), payload(kind)) == "stored"
    if kind not in ("birth", "death"):
        assert ingest.handle(uplink_topic("mob-1", kind), payload(kind)) == "duplicate"
    assert ingest.stats.kinds[kind] == 1


def malformed_cases() -> list[tuple[str, str, bytes, str]]:
    """(label, topic, payload, expected reason code) for every rejection path and kind."""
    cases = [
        ("oversized", uplink_topic("mob-1", "measurement"), b"{" + b" " * (1024 * 1024) + b"}", "oversized"),
        ("short topic", "cedge/v1/up/mob-1", payload("measurement"), "bad_topic"),
        ("foreign root", "other/v1/up/mob-1/measurement", payload("measurement"), "bad_topic"),
        ("unknown kind", "cedge/v1/up/mob-1/selfie", payload("measurement"), "unknown_kind"),
    ]
    for kind in BODIES:
        topic = uplink_topic("mob-1", kind)
        seq_ok = 0 if kind in ("birth", "death") else 1
        other = "alarm" if kind != "alarm" else "health"
        cases += [
            (f"{kind}: not json", topic, b"\x00\xffnot json", "not_json"),
            (f"{kind}: truncated", topic, payload(kind)[:-7], "not_json"),
            (f"{kind}: array", topic, b"[1, 2, 3]", "not_object"),
            (f"{kind}: schema 2", topic, payload(kind, schema=2), "bad_schema"),
            (f"{kind}: no schema", topic, json.dumps({"kind": kind}).encode(), "bad_schema"),
            (f"{kind}: short boot id", topic, payload(kind, boot_id="b"), "envelope_invalid"),
            (f"{kind}: extra field", topic, payload(kind, colour="red"), "envelope_invalid"),
            (f"{kind}: negative seq", topic, payload(kind, seq=-1), "seq_range"),
            (f"{kind}: other unit", topic, payload(kind, unit_id="mob-2"), "topic_mismatch"),
            (
                f"{kind}: other kind",
                topic,
                payload(kind, kind=other, seq=0 if other == "birth" else seq_ok),
                "topic_mismatch",
            ),
            (f"{kind}: wrong seq", topic, payload(kind, seq=7 if seq_ok == 0 else 0), "bad_seq"),
            (f"{kind}: bad body", topic, payload(kind, body=BAD_BODIES[kind]),
             BAD_BODY_CODES.get(kind, "body_invalid")),
            (f"{kind}: body not object", topic, payload(kind, body=[1]), "envelope_invalid"),
        ]
    return cases


def test_every_malformed_variant_is_rejected_with_its_reason(ingest: Ingestor) -> None:
    cases = malformed_cases()
    expected: dict[str, int] = {}
    for label, topic, data, code in cases:
        assert ingest.handle(topic, data) == "rejected", label
        assert classify_reject(topic, data) == code or code == "oversized", label
        expected[code] = expected.get(code, 0) + 1
    assert dict(ingest.stats.rejects) == expected
    assert ingest.store.reject_counts() == expected
    assert ingest.store.count("rejects") == len(cases)
    rej = [r for r in ingest.store.list_rejects(limit=5) if r["reason_code"] == "body_invalid"][-1]
    assert "vitals body" in rej["reason"] and rej["topic"] == uplink_topic("mob-1", "vitals")
    assert rej["payload_bytes"] > 0 and rej["payload_excerpt"]
    # nothing got into the data tables, and ingest keeps working afterwards
    assert ingest.store.count("received") == 0 and ingest.store.count("sessions") == 0
    assert ingest.handle(uplink_topic("mob-1", "measurement"), payload("measurement")) == "stored"


def test_rejects_are_logged_rate_limited(ingest: Ingestor, caplog: pytest.LogCaptureFixture) -> None:
    topic = uplink_topic("mob-1", "measurement")
    with caplog.at_level("WARNING", logger="controller.ingest"):
        for _ in range(50):
            ingest.handle(topic, b"garbage")
        ingest.clock.t += 11.0
        ingest.handle(topic, b"garbage")
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(lines) == 2
    assert "+49 similar suppressed" in lines[1]
    assert ingest.stats.rejects["not_json"] == 51


def test_internal_error_is_caught_and_recorded(ingest: Ingestor, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(ingest.store, "store_uplink", broken)
    assert ingest.handle(uplink_topic("mob-1", "measurement"), payload("measurement")) == "rejected"
    assert ingest.stats.rejects["internal_error"] == 1 and ingest.stats.errors["KeyError"] == 1
    assert ingest.store.reject_counts() == {"internal_error": 1}
    monkeypatch.undo()
    assert ingest.handle(uplink_topic("mob-1", "measurement"), payload("measurement")) == "stored"


def test_storage_error_means_retry_not_loss(ingest: Ingestor, monkeypatch: pytest.MonkeyPatch) -> None:
    def locked(*a, **k):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(ingest.store, "store_uplink", locked)
    data = payload("measurement")
    assert ingest.handle(uplink_topic("mob-1", "measurement"), data) == "retry"
    assert ingest.store.count("rejects") == 0  # not a reject: the message is fine
    monkeypatch.undo()
    assert ingest.handle(uplink_topic("mob-1", "measurement"), data) == "stored"


def test_failing_listener_does_not_unstore(tmp_path: Path) -> None:
    seen = []

    def listener(env, body):
        seen.append(env.kind)
        raise RuntimeError("listener bug")

    with Store(tmp_path / "c.sqlite") as store:
        ing = Ingestor(store, on_event=listener, clock=FakeClock(), **NO_IDENTITY_CHECKS)
        assert ing.handle(uplink_topic("mob-1", "alarm"), payload("alarm")) == "stored"
        assert seen == ["alarm"] and store.count("alarms") == 1
        assert ing.stats.errors["on_event"] == 1


def test_live_and_backfill_are_recorded(ingest: Ingestor) -> None:
    topic = uplink_topic("mob-1", "measurement")
    assert ingest.handle(topic, payload("measurement", 1)) == "stored"
    assert ingest.handle(topic, payload("measurement", 2, delivery="backfill")) == "stored"
    assert ingest.stats.delivery == {"live": 1, "backfill": 1}
    rows = ingest.store.measurements_near(1.0, 2.0, 1.0)
    assert [r["delivery"] for r in rows] == ["live", "backfill"]
    per = ingest.store.counts()["per_unit_kind"]
    assert {(r["delivery"], r["n"]) for r in per} == {("live", 1), ("backfill", 1)}


def test_duplicates_are_counted_per_unit(ingest: Ingestor) -> None:
    topic = uplink_topic("mob-1", "measurement")
    for _ in range(3):
        ingest.handle(topic, payload("measurement", 5))
    assert ingest.stats.outcomes == {"stored": 1, "duplicate": 2}
    assert ingest.store.counts()["counters"] == [{"name": "duplicate", "unit_id": "mob-1", "value": 2}]
