"""Outbox unit tests (no broker): order, ack, drop policy, corruption salvage, concurrency, and disk
faults (issue 15): a file deleted or replaced while open, a byte budget, a tmpfs that fills up, a disk
read-only at start.  The tmpfs tests need root (mount) and are skipped with the reason otherwise."""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
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


def test_corrupt_file_salvaged_then_moved_aside_on_request(tmp_path: Path) -> None:
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
        # rows SQLite can still reach are salvaged before the file is moved aside; the ones on the
        # smashed pages are counted as lost (their ids are still listed in the intact index)
        report = ob.report()
        assert report["salvage"]["salvaged"] == ob.count() > 300
        assert ob.count() + report["lost"]["corrupt"] == 399
        ob.put("t", b"{}", "alarm", "boot0002", 1, 0.0)
        assert ob.count() == report["salvage"]["salvaged"] + 1
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


# --------------------------------------------------------------------------- disk faults (issue 15)
def _env(kind: str, seq: int, boot: str = "boot0001", size: int = 0) -> bytes:
    """A payload shaped like a real envelope (the page-scan salvage checks for the JSON object)."""
    return json.dumps({"schema": 1, "kind": kind, "seq": seq, "boot_id": boot, "pad": "x" * size}).encode()


def _put_env(ob: Outbox, kind: str, seq: int, size: int = 0, boot: str = "boot0001") -> int | None:
    return ob.put(f"cedge/v1/up/u1/{kind}", _env(kind, seq, boot, size), kind, boot, seq, float(seq))


def _wait_report(ob: Outbox, ok: Callable[[dict], bool], timeout_s: float = 10.0) -> dict:
    """Call maintain() (as the runtime loop does) until the report satisfies ``ok``."""
    deadline = time.monotonic() + timeout_s
    while True:
        ob.maintain()
        rep = ob.report()
        if ok(rep) or time.monotonic() > deadline:
            return rep
        time.sleep(0.02)


def _wait_state(ob: Outbox, state: str, timeout_s: float = 10.0) -> dict:
    return _wait_report(ob, lambda rep: rep["state"] == state, timeout_s)


def _all_seqs(ob: Outbox) -> list[int]:
    return sorted(r.seq for r in ob.take_batch(1_000_000, count_attempt=False))


def test_deleted_file_is_detected_and_rebuilt_from_the_open_file(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    with Outbox(path, 1000, check_interval_s=0.05) as ob:
        for s in range(1, 31):
            _put_env(ob, "alarm" if s % 10 == 0 else "measurement", s)
        sent = ob.take_batch(5)  # five rows are "in flight": their acks arrive after the rebuild
        for p in tmp_path.iterdir():
            p.unlink()  # rm outbox.sqlite*  (a technician "cleaning up")
        time.sleep(0.1)
        for s in range(31, 41):  # rows written after the deletion: the first put notices it
            _put_env(ob, "measurement", s)
        rep = _wait_report(ob, lambda r: r["state"] == "ok" and "deleted" in r["errors"])
        assert rep["errors"].get("deleted") == 1 and rep["lost"] == {}
        assert path.exists() and ob.count() == 40
        assert ob.ack_many([r.id for r in sent]) == 5  # old row ids still valid in the new file
        assert _all_seqs(ob) == list(range(6, 41))
    with Outbox(path, 1000) as ob:  # durable: the rebuilt file holds them after a restart
        assert _all_seqs(ob) == list(range(6, 41))


def test_replaced_file_is_moved_aside_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    with Outbox(path, 1000, check_interval_s=0.05) as ob:
        for s in range(1, 21):
            _put_env(ob, "measurement", s)
        other = tmp_path / "other.sqlite"
        db = sqlite3.connect(other)
        db.execute("CREATE TABLE precious (x)")
        db.execute("INSERT INTO precious VALUES (7)")
        db.commit()
        db.close()
        os.replace(other, path)
        _put_env(ob, "alarm", 21)
        rep = _wait_report(ob, lambda r: r["state"] == "ok" and "replaced" in r["errors"])
        assert rep["errors"].get("replaced") == 1 and rep["lost"] == {}
        assert _all_seqs(ob) == list(range(1, 22))
    aside = [p for p in tmp_path.iterdir() if ".replaced-" in p.name and not p.name.endswith("-wal")]
    assert len(aside) == 1 and sqlite3.connect(aside[0]).execute("SELECT x FROM precious").fetchone() == (7,)


def test_byte_budget_drops_oldest_measurements_never_alarms(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.sqlite", 10_000, max_bytes=20_000) as ob:
        for s in range(1, 101):
            _put_env(ob, "alarm" if s % 10 == 0 else "measurement", s, size=500)
        seqs = _all_seqs(ob)
        rep = ob.report()
        assert rep["on_disk_bytes"] <= 20_000 + 700  # one row may sit over after the alarms
        assert [s for s in range(10, 101, 10)] == [s for s in seqs if s % 10 == 0]  # every alarm kept
        assert seqs[-1] == 100 and min(s for s in seqs if s % 10) > 50  # oldest measurements went first
        assert rep["lost"] == {"outbox_full": 100 - len(seqs)} and ob.dropped == 100 - len(seqs)


def _build_pending_outbox(path: Path, n: int) -> None:
    """An outbox with ``n`` pending rows in its file and WAL (a process that was killed)."""
    src = path.with_name("live.sqlite")
    ob = Outbox(src, 10_000)
    for s in range(1, n + 1):
        _put_env(ob, "alarm" if s % 7 == 0 else "measurement", s, size=300 if s % 3 else 3000)
    for suffix in ("", "-wal"):  # copy while open, like a power cut; then let the live one go
        Path(f"{path}{suffix}").write_bytes(Path(f"{src}{suffix}").read_bytes())
    ob.close()


def _page_of(path: Path, needle: bytes) -> int:
    data = path.read_bytes()
    at = data.find(needle)
    assert at >= 0
    return at // 4096


def test_corrupt_outbox_rows_are_salvaged_and_losses_counted(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    _build_pending_outbox(path, 60)
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file, for the page maths
    con.close()
    raw = bytearray(path.read_bytes())
    victim = _page_of(path, b'"seq": 40,')  # a table leaf page in the middle
    raw[:100] = random.Random(3).randbytes(100)  # the header is garbage: SQLite cannot open it at all
    raw[victim * 4096:(victim + 1) * 4096] = random.Random(4).randbytes(4096)
    path.write_bytes(bytes(raw))
    with Outbox(path, 10_000, on_corrupt="move_aside") as ob:
        rep = ob.report()
        got = _all_seqs(ob)
        sal = rep["salvage"]
        assert sal is not None and sal["salvaged"] == len(got) and not sal["header_ok"]
        assert 40 not in got and len(got) >= 50  # only the smashed page's rows are gone
        assert sal["lost"] == 60 - len(got) and rep["lost"] == {"corrupt": 60 - len(got)}  # each one counted
        assert rep["moved_aside_to"] and Path(rep["moved_aside_to"]).read_bytes() == bytes(raw)
        _put_env(ob, "alarm", 61)  # the fresh outbox works; ids continue above the salvaged ones
        assert ob.take_batch(1000, count_attempt=False)[-1].seq == 61


def test_corrupt_outbox_with_wal_salvages_uncheckpointed_rows(tmp_path: Path) -> None:
    """A bad sector in the main file of an outbox whose newest rows are only in its WAL."""
    path = tmp_path / "ob.sqlite"
    live = tmp_path / "live.sqlite"
    with Outbox(live, 10_000) as ob:  # rows 1..30 checkpointed into the main file at close
        for s in range(1, 31):
            _put_env(ob, "measurement", s, size=300)
    ob = Outbox(live, 10_000)
    for s in range(31, 51):  # rows 31..50 only in the WAL
        _put_env(ob, "alarm" if s % 5 == 0 else "measurement", s, size=300)
    for suffix in ("", "-wal"):  # a power cut: copy while open
        Path(f"{path}{suffix}").write_bytes(Path(f"{live}{suffix}").read_bytes())
    ob.close()
    raw = bytearray(path.read_bytes())
    victim = _page_of(path, b'"seq": 5,')
    raw[victim * 4096:(victim + 1) * 4096] = random.Random(6).randbytes(4096)
    path.write_bytes(bytes(raw))
    with Outbox(path, 10_000, on_corrupt="move_aside") as ob:
        rep = ob.report()
        got = _all_seqs(ob)
        assert rep["salvage"]["wal_frames"] > 0
        assert set(range(31, 51)) <= set(got) and 5 not in got  # every WAL row, not the smashed page
        assert len(got) + rep["lost"]["corrupt"] == 50


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):  # noqa: ANN201 - yields the mount point
    """A 512 KiB tmpfs (root only): a disk that really fills up."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)


def test_full_disk_keeps_alarms_in_memory_and_recovers_by_itself(tiny_tmpfs: Path) -> None:
    ob = Outbox(tiny_tmpfs / "ob.sqlite", 10_000, memory_max_messages=20, retry_min_s=0.05, retry_max_s=0.2)
    try:
        for s in range(1, 11):
            _put_env(ob, "measurement", s)
        _fill(tiny_tmpfs / "ballast")
        s = 10
        while ob.report()["state"] == "ok" and s < 5000:  # until SQLite needs a new block
            s += 1
            _put_env(ob, "measurement", s, size=200)
        assert ob.report()["state"] == "ENOSPC", ob.report()
        first_fault = s
        for _ in range(60):  # one alarm every tenth message while the disk is full
            s += 1
            _put_env(ob, "alarm" if s % 10 == 0 else "measurement", s, size=200)
        rep = ob.report()
        assert rep["in_memory"] >= 6 and rep["errors"]["ENOSPC"] >= 1
        (tiny_tmpfs / "ballast").unlink()
        rep = _wait_state(ob, "ok")
        assert rep["in_memory"] == 0
        got = _all_seqs(ob)
        alarms = [x for x in range(first_fault + 1, s + 1) if x % 10 == 0]
        assert set(alarms) <= set(got)  # every alarm of the full-disk episode is on disk now
        missing = sorted(set(range(1, s + 1)) - set(got))
        assert len(missing) == rep["lost"].get("disk_unavailable", 0) == ob.dropped  # each loss counted
        assert all(m > first_fault - 1 for m in missing)
        _put_env(ob, "measurement", s + 1)
        assert ob.report()["state"] == "ok" and _all_seqs(ob)[-1] == s + 1
    finally:
        ob.close()


def test_unwritable_disk_at_start_runs_on_memory_until_it_can_write(tiny_tmpfs: Path) -> None:
    path = tiny_tmpfs / "ob.sqlite"
    with Outbox(path, 100) as ob:  # two rows from an earlier run
        _put_env(ob, "alarm", 1, boot="old")
        _put_env(ob, "measurement", 2, boot="old")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    ob = Outbox(path, 100, retry_min_s=0.05, retry_max_s=0.2)
    try:
        assert ob.report()["state"] != "ok"
        _put_env(ob, "alarm", 1)  # ids from 1: they clash with the old rows, which get renumbered
        first = ob.take_batch(10)  # sent from memory while the disk is read-only
        assert [(r.boot_id, r.seq) for r in first] == [("boot0001", 1)]
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_tmpfs)], check=True)
        assert _wait_state(ob, "ok")["state"] == "ok"
        assert ob.ack_many([first[0].id]) == 1  # the ack of the memory row removes that row only
        assert sorted((r.boot_id, r.seq) for r in ob.take_batch(10)) == [("old", 1), ("old", 2)]
    finally:
        ob.close()


def _chattr(on: bool, *paths: Path) -> bool:
    return all(subprocess.run(["chattr", "+i" if on else "-i", str(p)], capture_output=True).returncode == 0
               for p in paths)


def test_immutable_outbox_is_not_declared_healthy_until_it_takes_a_write(tmp_path: Path) -> None:
    """chattr +i (root-proof read-only): the retry must do a real write before ending the episode,
    also when the memory queue was already sent and acknowledged (nothing left to move)."""
    path = tmp_path / "ob.sqlite"
    ob = Outbox(path, 1000, retry_min_s=0.05, retry_max_s=0.1)
    try:
        _put_env(ob, "measurement", 1)
        files = [p for p in tmp_path.iterdir() if p.name.startswith("ob.sqlite")]
        if not _chattr(True, *files, tmp_path):
            pytest.skip("chattr +i not available here")
        try:
            _put_env(ob, "alarm", 2)
            if ob.report()["state"] == "ok":
                pytest.skip("this filesystem ignores the immutable flag on open files")
            assert ob.report()["in_memory"] == 1
            assert ob.ack_many([r.id for r in ob.take_batch(10)]) == 2  # the link delivered both
            time.sleep(0.3)
            rep = _wait_report(ob, lambda r: r["state"] == "ok", timeout_s=1.0)
            assert rep["state"] == "EIO" and rep["in_memory"] == 0  # still failing: no write got through
        finally:
            _chattr(False, tmp_path, *files)
        rep = _wait_state(ob, "ok")
        assert rep["state"] == "ok" and rep["lost"] == {}
        _put_env(ob, "measurement", 3)
        assert ob.report()["on_disk"] == 1 and _all_seqs(ob) == [3]  # row 1 was acked while failing
    finally:
        ob.close()
