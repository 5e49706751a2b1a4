"""Controller store: exactly-once storage, atomicity, liveness columns, gaps and spatial queries.

The tests that use the ``store`` or ``location`` fixture run twice: on SQLite (the embedded default)
and on a real PostgreSQL (a private server, :mod:`pg_fixture`; skipped, with the reason, without one).
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures

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
    make_envelope,
)
from controller.store import Store, StoreError, epoch_s

T0 = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
BOOT = "boot-aaaa-0001"


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pos(x: float, y: float, z: float = 1.5) -> Position:
    return Position(lat_deg=51.95, lon_deg=4.05, alt_m=5.0, x_m=x, y_m=y, z_m=z, fix_quality=1)


def meas_env(unit: str, seq: int, x: float = 0.0, y: float = 0.0, boot: str = BOOT, delivery: str = "live"):
    body = Measurement(
        interval_s=1.0,
        live_time_s=0.97,
        gross_counts=1500 + seq,
        gross_cps=(1500 + seq) / 0.97,
        background_cps=1500.0,
        detector_model="NaI 2x4x16",
        position=pos(x, y),
        speed_m_s=5.0,
    )
    t = T0 + timedelta(seconds=seq)
    return make_envelope("measurement", unit, boot, seq, iso(t), float(seq), True, body, delivery), body


def birth_env(unit: str, boot: str = BOOT, t_mono: float = 0.0, unit_type: str = "mobile"):
    body = Birth(
        unit_type=unit_type,
        profile="p",
        software_version="0.1.0",
        site="yard",
        sensors={"gamma": SensorHealth(state="ok")},
    )
    return make_envelope("birth", unit, boot, 0, iso(T0), t_mono, True, body), body


def death_env(unit: str, boot: str = BOOT, t_mono: float = 0.0):
    body = Death(reason="connection lost")
    return make_envelope("death", unit, boot, 0, iso(T0), t_mono, True, body), body


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a new controller database goes: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "c.sqlite")


@pytest.fixture()
def store(location: str) -> Store:
    s = Store(location, synchronous="NORMAL")
    yield s
    s.close()


def test_duplicate_stores_nothing(store: Store) -> None:
    env, body = meas_env("mob-1", 1)
    assert store.store_uplink(env, body, iso(T0)) == "stored"
    assert store.store_uplink(env, body, iso(T0 + timedelta(seconds=5))) == "duplicate"
    assert store.count("received") == 1 and store.count("measurements") == 1
    unit = store.get_unit("mob-1")
    assert unit["messages"] == 1 and unit["state"] == "online"
    # same seq in a new boot is a different message
    env2, body2 = meas_env("mob-1", 1, boot="boot-bbbb-0002")
    assert store.store_uplink(env2, body2, iso(T0)) == "stored"
    assert store.count("measurements") == 2


def test_concurrent_duplicates_are_stored_exactly_once(location: str) -> None:
    """Eight writers (own connections, like controller processes on a shared subscription) race
    to store the same 40 messages in different orders: each is stored exactly once."""
    path = location
    Store(path).close()
    messages = [meas_env("mob-1", seq) for seq in range(1, 41)]
    outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            s = Store(path)
            order = list(range(len(messages)))
            random.Random(k).shuffle(order)
            barrier.wait()
            for i in order:
                env, body = messages[i]
                out = s.store_uplink(env, body, iso(T0))
                with lock:
                    outcomes.append((env.seq, out))
            s.close()
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    stored = [seq for seq, out in outcomes if out == "stored"]
    assert sorted(stored) == list(range(1, 41))
    assert sum(1 for _, out in outcomes if out == "duplicate") == 7 * 40
    with Store(path) as s:
        assert s.count("received") == 40 and s.count("measurements") == 40
        assert s.get_unit("mob-1")["messages"] == 40


def test_ledger_and_row_are_one_transaction(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    env, body = meas_env("mob-1", 1)

    def boom(*a, **k):
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setattr(store, "_touch_unit", boom)
    with pytest.raises(sqlite3.OperationalError):
        store.store_uplink(env, body, iso(T0))
    assert store.count("received") == 0 and store.count("measurements") == 0  # nothing half-stored
    monkeypatch.undo()
    assert store.store_uplink(env, body, iso(T0)) == "stored"  # and the redelivery is not a "duplicate"


def test_batch_savepoint_rolls_back_one_message_only(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    good = [meas_env("mob-1", s) for s in (1, 2, 4)]
    bad_env, bad_body = meas_env("mob-1", 3)
    real = store._touch_unit

    def flaky(env, *a, **k):
        if env.seq == 3:
            raise ValueError("bad row")
        return real(env, *a, **k)

    monkeypatch.setattr(store, "_touch_unit", flaky)
    with store.batch():
        for env, body in good[:2]:
            store.store_uplink(env, body, iso(T0))
        with pytest.raises(ValueError):
            store.store_uplink(bad_env, bad_body, iso(T0))
        store.store_uplink(*good[2], iso(T0))
    assert store.count("measurements") == 3
    assert [g["first_missing"] for g in store.gaps()] == [3]


def test_all_kinds_are_stored_in_their_tables(store: Store) -> None:
    k = 0

    def env(kind: str, body):
        nonlocal k
        k += 1
        return make_envelope(kind, "hh-1", BOOT, k, iso(T0 + timedelta(seconds=k)), float(k), True, body)

    bodies = {
        "health": Health(
            uptime_s=5,
            cpu_pct=3,
            mem_rss_mb=50,
            outbox_pending=0,
            queue_depth={"acq": 0},
            loop_lag_ms=1.0,
            sensors={"gamma": SensorHealth(state="ok")},
            position=pos(3, 4),
            available=False,
            task_id="T-1",
        ),
        "alarm": Alarm(
            alarm_id="A-1",
            detector="gross",
            significance_sigma=7.0,
            peak_cps=2500,
            background_cps=1500,
            t_peak_utc=iso(T0),
            position=pos(5, 6),
            threshold_sigma=5.0,
        ),
        "task_event": TaskEvent(task_id="T-1", cmd_id="c1", state="accepted", position=pos(1, 1)),
        "vitals": Vitals(track_id="tr-1", heart_rate_bpm=80.0, alert=True, evidence={"hr": 0.5}),
    }
    for kind, body in bodies.items():
        e = env(kind, body)
        assert store.store_uplink(e, body, iso(T0)) == "stored"
    assert store.count("health") == store.count("alarms") == store.count("task_events") == store.count("vitals") == 1
    unit = store.get_unit("hh-1")
    assert unit["available"] == 0 and unit["task_id"] == "T-1"
    assert (unit["x_m"], unit["y_m"]) == (1.0, 1.0)  # newest position (the task event)
    assert store.list_alarms()[0]["alarm_id"] == "A-1"
    assert store.list_task_events()[0]["disposition"] is None


def test_sessions_drive_liveness(store: Store) -> None:
    b, bb = birth_env("mob-1", t_mono=100.0)
    store.store_uplink(b, bb, iso(T0))
    assert store.get_unit("mob-1")["state"] == "online" and store.get_unit("mob-1")["unit_type"] == "mobile"
    # a late Last Will of an earlier session (older t_mono) does not take the unit offline
    d_old, dbody = death_env("mob-1", t_mono=50.0)
    store.store_uplink(d_old, dbody, iso(T0))
    assert store.get_unit("mob-1")["state"] == "online"
    d, dbody = death_env("mob-1", t_mono=100.0)
    store.store_uplink(d, dbody, iso(T0))
    unit = store.get_unit("mob-1")
    assert unit["state"] == "offline" and unit["death_reason"] == "connection lost"
    assert store.count("sessions") == 3 and store.count("received") == 0
    # any message brings it back
    m, mb = meas_env("mob-1", 1)
    store.store_uplink(m, mb, iso(T0 + timedelta(seconds=10)))
    assert store.get_unit("mob-1")["state"] == "online"
    # silence: stale then offline
    changes = store.sweep_liveness(iso(T0 + timedelta(seconds=50)), 30, 120)
    assert changes == [("mob-1", "online", "stale")]
    changes = store.sweep_liveness(iso(T0 + timedelta(seconds=200)), 30, 120)
    assert changes == [("mob-1", "stale", "offline")]


def test_gaps_and_counts(store: Store) -> None:
    for s in (1, 2, 3, 6, 7, 10):
        store.store_uplink(*meas_env("mob-1", s), iso(T0))
    for s in (3, 4):
        store.store_uplink(*meas_env("mob-1", s, boot="boot-bbbb-0002"), iso(T0 + timedelta(seconds=1)))
    gaps = store.gaps("mob-1")
    assert [(g["boot_id"], g["first_missing"], g["last_missing"]) for g in gaps] == [
        (BOOT, 4, 5),
        (BOOT, 8, 9),
        ("boot-bbbb-0002", 1, 2),
    ]
    counts = store.counts()
    assert counts["messages_per_unit"] == {"mob-1": 8}
    boot = next(b for b in counts["boots"] if b["boot_id"] == BOOT)
    assert (boot["n"], boot["min_seq"], boot["max_seq"], boot["missing"]) == (6, 1, 10, 4)
    assert boot["gaps"] == [[4, 5], [8, 9]]


def test_measurements_near_space_and_time_window(store: Store) -> None:
    for s in range(1, 21):
        store.store_uplink(*meas_env("mob-1", s, x=5.0 * s, y=0.0), iso(T0))
    rows = store.measurements_near(50.0, 3.0, 12.0)
    assert sorted(r["x_m"] for r in rows) == [40.0, 45.0, 50.0, 55.0, 60.0]
    rows = store.measurements_near(50.0, 3.0, 12.0, T0 + timedelta(seconds=10), iso(T0 + timedelta(seconds=11)))
    assert [r["seq"] for r in rows] == [10, 11]
    assert rows[0]["t_epoch_s"] == epoch_s(T0 + timedelta(seconds=10))


def test_vitals_intervals_are_stored_and_an_old_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with Store(path) as s:
        pass
    con = sqlite3.connect(path)  # as written by a version before vitals carried inter-beat intervals
    con.execute("ALTER TABLE vitals DROP COLUMN ibi_ms")
    con.commit()
    con.close()
    with Store(path) as s:
        body = Vitals(track_id="tr-1", heart_rate_bpm=75.0, ibi_ms=[801.0, 799.5])
        e = make_envelope("vitals", "cam-1", BOOT, 1, iso(T0), 1.0, True, body)
        assert s.store_uplink(e, body, iso(T0)) == "stored"
        (row,) = s.list_vitals()
        assert json.loads(row["ibi_ms"]) == [801.0, 799.5]


def test_open_existing_requires_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no controller database"):
        Store(tmp_path / "missing.sqlite", create=False)
    (tmp_path / "other.sqlite").write_bytes(b"")
    with pytest.raises(StoreError, match="not a controller database"):
        Store(tmp_path / "other.sqlite", create=False)


def test_health_keeps_the_units_persistence_faults(store: Store) -> None:
    """A unit whose disk refuses writes says so in its health (issue 15); the controller keeps it."""
    body = Health(uptime_s=9, cpu_pct=3, mem_rss_mb=50, outbox_pending=12, queue_depth={"acq": 0},
                  loop_lag_ms=1.0, sensors={"gamma": SensorHealth(state="ok")}, outbox_state="ENOSPC",
                  outbox_errors={"ENOSPC": 4}, messages_lost={"memory_full": 7}, outbox_in_memory=12,
                  status_write_failures=2)
    e = make_envelope("health", "mob-1", BOOT, 1, iso(T0), 1.0, True, body)
    assert store.store_uplink(e, body, iso(T0)) == "stored"
    row = store.query("SELECT outbox_state, outbox_errors, messages_lost, outbox_in_memory, status_write_failures "
                      "FROM health")[0]
    assert (row["outbox_state"], json.loads(row["outbox_errors"]), json.loads(row["messages_lost"]),
            row["outbox_in_memory"], row["status_write_failures"]) == (
        "ENOSPC", {"ENOSPC": 4}, {"memory_full": 7}, 12, 2)
