"""Sequence integrity (issue 14, item 4 and row 6): whose (boot, seq) is stored, held, or reported.

Controller side, through the real Ingestor and Store: a boot exists only once a birth announced it
(messages before are parked, then stored - none lost - or rejected after the timeout); a seq far
ahead is held; a replayed boot id with the next seqs cannot turn the real messages into
"duplicates" (row 6); the next birth's ``prev_boot_last_seq`` makes a loss at the end of a boot a
gap.  Agent side: the boot journal and, on a real Mosquitto, a birth that carries the previous
boot's end and goes out before the backlog, so a controller that insists on births loses nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker_fixture import Mosquitto, find_mosquitto

from agent.link.sequence import BootJournal, BootSequence
from agent.wire_schema import (
    UPLINK_SUBSCRIPTION,
    Alarm,
    Birth,
    Measurement,
    SensorHealth,
    encode,
    make_envelope,
    uplink_topic,
)
from controller.config import SequenceConfig
from controller.ingest import Ingestor
from controller.store import Store

T0 = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
UNIT = "mob-2"
BOOT = "b0000000000000000000000000000001"
PREV = "a0000000000000000000000000000000"


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


def birth(boot: str = BOOT, last_seq: int = 0, prev: str | None = None, prev_last: int | None = None) -> tuple:
    body = Birth(unit_type="mobile", profile="p", software_version="0.1", site="yard",
                 sensors={"gamma": SensorHealth(state="ok")}, last_seq=last_seq, prev_boot_id=prev,
                 prev_boot_last_seq=prev_last)
    env = make_envelope("birth", UNIT, boot, 0, iso(T0), 1.0, True, body)
    return uplink_topic(UNIT, "birth"), encode(env)


def meas(seq: int, boot: str = BOOT, counts: int = 1000, delivery: str = "live") -> tuple:
    body = Measurement(interval_s=1.0, live_time_s=0.98, gross_counts=counts, gross_cps=counts / 0.98,
                       detector_model="NaI")
    t = T0 + timedelta(seconds=min(seq, 10_000))
    env = make_envelope("measurement", UNIT, boot, seq, iso(t), float(min(seq, 10_000)), True, body, delivery)
    return uplink_topic(UNIT, "measurement"), encode(env)


def alarm(seq: int, boot: str = BOOT) -> tuple:
    body = Alarm(alarm_id=f"A-{seq}", detector="spectral_nmf", significance_sigma=9.0, peak_cps=3000.0,
                 background_cps=1000.0, t_peak_utc=iso(T0 + timedelta(seconds=seq)), position=None, threshold_sigma=5.0)
    env = make_envelope("alarm", UNIT, boot, seq, iso(T0 + timedelta(seconds=seq)), float(seq), True, body)
    return uplink_topic(UNIT, "alarm"), encode(env)


@pytest.fixture
def ing(tmp_path: Path):
    store = Store(tmp_path / "c.sqlite", synchronous="NORMAL")
    asked: list[str] = []
    ingestor = Ingestor(store, clock=FakeClock(), request_birth=asked.append,
                        sequence=SequenceConfig(park_timeout_s=300.0, max_seq_jump=1000, max_msgs_per_s=50.0,
                                                rebirth_interval_s=30.0))
    ingestor.asked = asked  # type: ignore[attr-defined]
    yield ingestor
    store.close()


def handle(ing: Ingestor, msg: tuple) -> str:
    return ing.handle(*msg)


# ------------------------------------------------------------------------------ births
def test_messages_of_an_unannounced_boot_are_held_then_stored_when_the_birth_arrives(ing: Ingestor) -> None:
    assert [handle(ing, meas(s)) for s in (1, 2, 3)] == ["parked"] * 3
    assert ing.store.count("received") == 0 and ing.store.count("units") == 0  # not auto-created
    assert ing.store.parked_counts() == {"boot_not_announced": 3}
    assert ing.asked == [UNIT]  # one rebirth request, not one per message
    assert handle(ing, birth()) == "stored"
    assert ing.store.count("received") == 3 and ing.store.count("parked") == 0
    assert ing.stats.outcomes["released"] == 3 and ing.store.gaps() == []
    assert handle(ing, meas(4)) == "stored"


def test_unannounced_boot_is_rejected_after_the_timeout_and_counted(ing: Ingestor) -> None:
    handle(ing, meas(1))
    ing.clock.t += 100.0
    assert ing.sweep() == {"released": 0, "expired": 0}
    handle(ing, meas(2))
    assert ing.asked == [UNIT, UNIT]  # asked again after rebirth_interval_s
    ing.clock.t += 250.0  # the first is 350 s old, the second 250 s
    assert ing.sweep() == {"released": 0, "expired": 1}
    ing.clock.t += 60.0
    assert ing.sweep() == {"released": 0, "expired": 1}
    assert ing.store.reject_counts() == {"boot_not_announced": 2}
    assert ing.store.count("received") == 0 and ing.store.count("units") == 0 and ing.store.count("parked") == 0
    counters = {(c["name"], c["unit_id"]): c["value"] for c in ing.store.counts()["counters"]}
    assert counters[("boot_not_announced", UNIT)] == 2 and counters[("parked.boot_not_announced", UNIT)] == 2


def test_parking_is_bounded(tmp_path: Path) -> None:
    with Store(tmp_path / "c.sqlite") as store:
        ing = Ingestor(store, clock=FakeClock(), sequence=SequenceConfig(max_parked_per_unit=5))
        outcomes = [ing.handle(*meas(s)) for s in range(1, 9)]
        assert outcomes == ["parked"] * 5 + ["rejected"] * 3
        assert store.count("parked") == 5 and store.reject_counts() == {"boot_not_announced": 3}


def test_the_next_birth_announces_the_previous_boot_and_its_end(ing: Ingestor) -> None:
    """A boot that never connected (its birth never sent) still has its backlog stored, because the
    next boot's birth names it; a loss at its end shows as a gap."""
    handle(ing, birth(boot=BOOT, prev=PREV, prev_last=8))
    assert [handle(ing, meas(s, boot=PREV)) for s in (1, 2, 3, 4, 5)] == ["stored"] * 5
    gaps = ing.store.gaps(UNIT)
    assert [(g["boot_id"], g["first_missing"], g["last_missing"], g["n_missing"]) for g in gaps] == \
        [(PREV, 6, 8, 3)]
    boots = {b["boot_id"]: b for b in ing.store.counts()["boots"]}
    assert boots[PREV]["missing"] == 3 and boots[PREV]["gaps"] == [[6, 8]]


def test_end_of_boot_loss_shows_as_a_gap(ing: Ingestor) -> None:
    handle(ing, birth(boot=PREV))
    for s in range(1, 51):
        assert handle(ing, meas(s, boot=PREV)) == "stored"
    assert ing.store.gaps(UNIT) == []  # seen so far: 1..50, no gap (the end is not known yet)
    # the unit restarts; its journal says the old boot got to seq 60: 51..60 never arrived
    handle(ing, birth(boot=BOOT, prev=PREV, prev_last=60))
    boots = {b["boot_id"]: b for b in ing.store.counts()["boots"]}
    assert boots[PREV]["missing"] == 10 and boots[PREV]["gaps"] == [[51, 60]]
    # a boot of which nothing at all arrived is listed with everything missing
    third = "c0000000000000000000000000000003"
    handle(ing, birth(boot=third, prev=BOOT, prev_last=7))
    boots = {b["boot_id"]: b for b in ing.store.counts()["boots"]}
    assert boots[BOOT]["n"] == 0 and boots[BOOT]["missing"] == 7


def test_a_clean_shutdown_death_names_the_end_of_the_boot(ing: Ingestor) -> None:
    from agent.wire_schema import Death

    handle(ing, birth())
    for s in range(1, 6):
        handle(ing, meas(s))
    death = make_envelope("death", UNIT, BOOT, 0, iso(T0), 9.0, True, Death(reason="shutdown", last_seq=8))
    assert ing.handle(uplink_topic(UNIT, "death"), encode(death)) == "stored"
    assert [(g["first_missing"], g["last_missing"]) for g in ing.store.gaps(UNIT)] == [(6, 8)]
    assert [handle(ing, meas(s)) for s in (6, 7, 8)] == ["stored"] * 3  # the backlog arrives later
    assert ing.store.gaps(UNIT) == []


# ------------------------------------------------------------------------------ row 6 and far-ahead seqs
def test_replayed_boot_id_with_the_next_seqs_cannot_erase_the_real_messages(ing: Ingestor) -> None:
    """Row 6: the forger's 200 messages come first under mob-2's boot id; the real 200, with 3 alarms
    among them, are then no longer silently dropped as duplicates: they are kept, the alarms reach
    the dispatcher, and the conflict is counted (the broker ACL is what keeps the forger out)."""
    handle(ing, birth())
    for s in range(1, 11):
        handle(ing, meas(s))
    forged = [handle(ing, meas(s, counts=5)) for s in range(11, 211)]
    assert forged == ["stored"] * 200
    alarm_seqs = (50, 120, 200)
    real = [handle(ing, alarm(s) if s in alarm_seqs else meas(s)) for s in range(11, 211)]
    assert real == ["conflict"] * 200 and "duplicate" not in ing.stats.outcomes
    assert ing.store.count("seq_conflicts") == 200
    assert [a["alarm_id"] for a in ing.store.list_alarms()] == [f"A-{s}" for s in alarm_seqs]
    report = ing.store.counts()
    assert report["seq_conflicts"] == [{"unit_id": UNIT, "boot_id": BOOT, "n": 200, "min_seq": 11, "max_seq": 210}]
    assert {"name": "seq_conflict", "unit_id": UNIT, "value": 200} in report["counters"]
    # a true QoS-1 redelivery (or outbox re-send as backfill) is still a plain duplicate
    assert handle(ing, meas(5, delivery="backfill")) == "duplicate"


def test_a_seq_far_ahead_is_held_until_the_seqs_before_it_arrive(ing: Ingestor) -> None:
    handle(ing, birth())
    for s in range(1, 6):
        handle(ing, meas(s))
    assert handle(ing, meas(2000)) == "parked"  # > 5 + 1000 with no time elapsed
    assert handle(ing, meas(10**12)) == "parked"  # would otherwise report ~1e12 missing
    assert ing.store.gaps(UNIT) == [] and ing.store.parked_counts() == {"seq_far_ahead": 2}
    for s in range(6, 1200):
        assert handle(ing, meas(s)) == "stored"
    assert ing.sweep() == {"released": 1, "expired": 0}  # 2000 <= 1199 + 1000 now
    assert ing.store.get_boot(UNIT, BOOT)["ref_seq"] == 2000
    ing.clock.t += 301.0
    assert ing.sweep() == {"released": 0, "expired": 1}
    assert ing.store.reject_counts() == {"seq_far_ahead": 1}
    assert [(g["first_missing"], g["last_missing"]) for g in ing.store.gaps(UNIT)] == [(1200, 1999)]


def test_the_far_ahead_ceiling_grows_with_time_and_with_the_birth(ing: Ingestor) -> None:
    handle(ing, birth(last_seq=40_000))  # a reconnect: this boot already got to 40,000
    assert handle(ing, meas(40_500)) == "stored"
    ing.clock.t += 60.0  # controller was down a minute: up to 50/s x 60 s more may come at once
    assert handle(ing, meas(40_500 + 1000 + 2900)) == "stored"


# ------------------------------------------------------------------------------ agent side
def test_boot_journal_carries_the_last_seq_into_the_next_boot(tmp_path: Path) -> None:
    path = tmp_path / "boot_journal.json"
    first = BootSequence("boot-one-0001", journal=BootJournal(path, "boot-one-0001"))
    assert first.journal.prev_boot_id is None
    for _ in range(5):
        with first.reserve():
            pass
    with pytest.raises(RuntimeError), first.reserve():  # a failed store consumes no seq
        raise RuntimeError("disk full")
    # a crash now: the journal (rewritten at most once a second) holds a lower bound, never more
    crashed = tmp_path / "crash.json"
    crashed.write_text(path.read_text())
    assert 1 <= BootJournal(crashed, "boot-after-crash").prev_boot_last_seq <= 5
    first.journal.flush()  # a clean stop writes the exact last seq
    second = BootJournal(path, "boot-two-0002")
    assert (second.prev_boot_id, second.prev_boot_last_seq) == ("boot-one-0001", 5)
    path.write_text("{garbage")
    third = BootJournal(path, "boot-three-03")
    assert third.prev_boot_id is None and json.loads(path.read_text()) == {"boot_id": "boot-three-03", "last_seq": 0}


def _wait(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.broker
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto binary not found")
def test_birth_before_backlog_and_previous_boot_end_on_a_real_broker(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Boot 1 stores 5 messages while the broker is unreachable and stops; boot 2 connects: its birth
    names boot 1 and its last seq and goes out first, so a controller that requires births stores
    the whole backlog without parking anything."""
    from agent.hal.system_clock import SystemClock
    from agent.link import MqttLink, Outbox

    received: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            received.append((msg.topic, msg.payload))

    col = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-collector-seq", protocol=mqtt.MQTTv5)
    col.on_message = on_message
    col.connect(mosquitto.host, mosquitto.port)
    col.subscribe(UPLINK_SUBSCRIPTION, qos=1)
    col.loop_start()
    journal = str(tmp_path / "boot_journal.json")
    born = Birth(unit_type="mobile", profile="p", software_version="0.1", site="yard", sensors={})
    body = Measurement(interval_s=1.0, live_time_s=1.0, gross_counts=10, gross_cps=10.0, detector_model="NaI")
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        unreachable = mosquitto.broker_config(port=1)  # boot 1 never reaches a broker
        one = MqttLink(UNIT, unreachable, outbox, SystemClock(), lambda: born, lambda cmd: None,
                       boot_journal_path=journal)
        for _ in range(5):
            one.send("measurement", body)
        one.stop()  # never started: the 5 rows stay in the outbox
        two = MqttLink(UNIT, mosquitto.broker_config(), outbox, SystemClock(), lambda: born, lambda cmd: None,
                       boot_journal_path=journal)
        two.start()
        try:
            _wait(lambda: len(received) >= 6, 20, "birth + 5 backlog messages")
            two.send("measurement", body)
            _wait(lambda: len(received) >= 7, 20, "the live message")
        finally:
            two.stop()
    col.loop_stop()
    col.disconnect()
    first_topic, first_payload = received[0]
    assert first_topic == uplink_topic(UNIT, "birth")
    b = json.loads(first_payload)["body"]
    assert (b["prev_boot_id"], b["prev_boot_last_seq"], b["last_seq"]) == (one.boot_id, 5, 0)
    with Store(tmp_path / "c.sqlite") as store:
        ing = Ingestor(store, clock=FakeClock())
        now = datetime.now(UTC)
        ing.clock.utc_now = lambda: now  # type: ignore[method-assign]  # the messages carry real time
        outcomes = [ing.handle(t, p) for t, p in received]
        assert "parked" not in outcomes and outcomes.count("stored") == len(received)
        assert store.count("received") == 6 and store.gaps() == []
