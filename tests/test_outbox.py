"""Outbox unit tests (no broker): order, ack, drop policy, corruption handling, concurrency."""

from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path

import pytest

from agent.link.outbox import Outbox, OutboxCorrupt, OutboxError
from agent.link.sequence import BootSequence


def _put(ob: Outbox, kind: str, seq: int, boot: str = "boot0001") -> int | None:
    return ob.put(f"cedge/v1/up/u1/{kind}", f'{{"seq":{seq}}}'.encode(), kind, boot, seq, float(seq))


def test_rows_come_back_in_insert_order_and_ack_deletes(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.sqlite", 100) as ob:
        ids = [_put(ob, "measurement", s) for s in range(1, 11)]
        assert ids == sorted(ids)
        batch = ob.take_batch(4)
        assert [r.seq for r in batch] == [1, 2, 3, 4]
        assert all(r.attempts == 1 and r.kind == "measurement" and r.boot_id == "boot0001" for r in batch)
        # rows stay until acked; exclusion and cursor skip in-flight ones
        assert [r.seq for r in ob.take_batch(3, exclude_ids=[batch[0].id, batch[1].id])] == [3, 4, 5]
        assert [r.seq for r in ob.take_batch(2, after_id=batch[-1].id)] == [5, 6]
        assert ob.ack(batch[0].id) is True
        assert ob.ack(batch[0].id) is False  # second ack of the same row is a no-op
        assert ob.ack_many([r.id for r in batch[1:]]) == 3
        assert ob.count() == 6
        assert [r.seq for r in ob.take_batch(100)] == [5, 6, 7, 8, 9, 10]
        assert ob.oldest() is not None and ob.oldest().seq == 5
        assert ob.oldest_age_s(20.0) == pytest.approx(15.0)


def test_rows_survive_reopen_with_their_attempt_counts(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    with Outbox(path, 100) as ob:
        for s in range(1, 4):
            _put(ob, "alarm", s)
        ob.take_batch(2)
    with Outbox(path, 100) as ob:
        rows = ob.take_batch(10, count_attempt=False)
        assert [(r.seq, r.attempts) for r in rows] == [(1, 1), (2, 1), (3, 0)]
        assert ob.count() == 3


def test_second_process_on_same_outbox_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    with Outbox(path, 10), pytest.raises(OutboxError, match="locked"):
        Outbox(path, 10, lock_timeout_s=0.1)


def test_full_outbox_drops_oldest_health_first_never_alarms(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.sqlite", 5) as ob:
        _put(ob, "health", 1)
        _put(ob, "alarm", 2)
        _put(ob, "measurement", 3)
        _put(ob, "health", 4)
        _put(ob, "task_event", 5)
        _put(ob, "measurement", 6)  # full: oldest health (1) goes
        assert [r.seq for r in ob.take_batch(10)] == [2, 3, 4, 5, 6]
        _put(ob, "alarm", 7)  # next health (4) goes
        assert [r.seq for r in ob.take_batch(10)] == [2, 3, 5, 6, 7]
        assert _put(ob, "health", 8) is None  # only more important rows left: the new health is dropped
        _put(ob, "alarm", 9)  # oldest measurement (3) goes
        _put(ob, "task_event", 10)  # oldest measurement (6) goes
        assert [r.seq for r in ob.take_batch(10)] == [2, 5, 7, 9, 10]
        _put(ob, "alarm", 11)  # nothing droppable left: alarms exceed the cap rather than be lost
        assert [r.kind for r in ob.take_batch(10)] == ["alarm", "task_event", "alarm", "alarm", "task_event",
                                                        "alarm"]
        assert ob.count() == 6
        assert ob.dropped == 5


def test_garbage_file_raises_clear_error_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    path.write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(OutboxCorrupt, match="corrupt"):
        Outbox(path, 10)
    assert path.read_bytes() == random.Random(1).randbytes(8192)  # untouched


def test_corrupt_file_moved_aside_on_request(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    with Outbox(path, 10_000, synchronous="NORMAL") as ob:
        for s in range(1, 400):
            ob.put("t", bytes(300), "measurement", "boot0001", s, 0.0)
    raw = bytearray(path.read_bytes())
    assert len(raw) > 8 * 4096
    raw[4096 * 3:4096 * 6] = random.Random(2).randbytes(4096 * 3)  # smash b-tree pages
    path.write_bytes(bytes(raw))
    with pytest.raises(OutboxCorrupt):
        Outbox(path, 10_000)
    ob = Outbox(path, 10_000, on_corrupt="move_aside")
    try:
        assert ob.moved_aside_to is not None and ob.moved_aside_to.read_bytes() == bytes(raw)
        assert ob.count() == 0
        ob.put("t", b"{}", "alarm", "boot0002", 1, 0.0)
        assert ob.count() == 1
    finally:
        ob.close()


def test_readable_foreign_database_is_never_moved(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE precious (x)")
    db.execute("INSERT INTO precious VALUES (42)")
    db.commit()
    db.close()
    with pytest.raises(OutboxError, match="not touching it") as info:
        Outbox(path, 10, on_corrupt="move_aside")
    assert not isinstance(info.value, OutboxCorrupt)
    assert list(tmp_path.iterdir()) == [path]
    assert sqlite3.connect(path).execute("SELECT x FROM precious").fetchone() == (42,)


def test_concurrent_put_and_ack_from_two_threads(tmp_path: Path) -> None:
    """The runtime thread appends while the network thread acks: no row lost, none acked twice."""
    n = 600
    seq = BootSequence()
    with Outbox(tmp_path / "ob.sqlite", 10_000, synchronous="NORMAL") as ob:
        done = threading.Event()
        acked: list[int] = []
        errors: list[BaseException] = []

        def producer() -> None:
            try:
                for _ in range(n):
                    with seq.reserve() as s:
                        ob.put("t", b"{}", "measurement", seq.boot_id, s, float(s))
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)
            finally:
                done.set()

        def acker() -> None:
            try:
                while True:
                    finished = done.is_set()
                    rows = ob.take_batch(50, count_attempt=False)
                    for r in rows:
                        assert ob.ack(r.id)
                        acked.append(r.seq)
                    if finished and not rows:
                        return
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)

        threads = [threading.Thread(target=producer), threading.Thread(target=acker)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors
        assert sorted(acked) == list(range(1, n + 1))
        assert acked == sorted(acked)  # delivered in seq order
        assert ob.count() == 0
        assert seq.last_seq == n


def test_failed_insert_consumes_no_seq(tmp_path: Path) -> None:
    seq = BootSequence()
    ob = Outbox(tmp_path / "ob.sqlite", 10)
    with seq.reserve() as s:
        ob.put("t", b"{}", "alarm", seq.boot_id, s, 0.0)
    ob.close()
    with pytest.raises(OutboxError, match="closed"), seq.reserve() as s:
        ob.put("t", b"{}", "alarm", seq.boot_id, s, 0.0)
    assert seq.last_seq == 1
    with seq.reserve() as s:
        assert s == 2
