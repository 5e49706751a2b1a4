"""The PostgreSQL store with several writers: what the database itself must guarantee (issue 20).

A real private PostgreSQL (tests/pg_fixture.py); each writer has its own connection - separate
processes for ingest, as separate controllers would be - so the database's locking is what is tested,
not a lock inside one Python process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures
from test_dispatch import T0, Yard

from controller.dispatch import Dispatcher
from controller.store import Store

pytestmark = pytest.mark.timeout(180)

_WRITER = r"""
import json, random, sqlite3, sys
from datetime import UTC, datetime, timedelta
from agent.wire_schema import Measurement, make_envelope
from controller.store import Store

url, k, n_units, n_seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
iso = lambda t: t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
msgs = []
for u in range(n_units):
    for seq in range(1, n_seq + 1):
        body = Measurement(interval_s=1.0, live_time_s=0.97, gross_counts=1000 + seq, gross_cps=1030.0,
                           detector_model="NaI")
        env = make_envelope("measurement", f"mob-{u}", "boot-0001", seq, iso(t0 + timedelta(seconds=seq)),
                            float(seq), True, body)
        msgs.append((env, body))
random.Random(k).shuffle(msgs)
store = Store(url, create=False)
out = {"stored": 0, "duplicate": 0, "batch_retries": 0}
# as the controller service does: a batch per transaction, one by one if the batch fails
# (a deadlock between two controllers' batches is broken by the server: one batch rolls back)
for i in range(0, len(msgs), 25):
    batch = msgs[i:i + 25]
    try:
        res = []
        with store.batch():
            for env, body in batch:
                res.append(store.store_uplink(env, body, iso(t0)))
    except sqlite3.Error:
        out["batch_retries"] += 1
        res = [store.store_uplink(env, body, iso(t0)) for env, body in batch]
    for r in res:
        out[r] += 1
store.close()
print(json.dumps(out))
"""


def test_two_controller_processes_store_every_message_exactly_once(pg_url: str) -> None:  # noqa: F811
    """Two processes store the same 6 units x 100 seqs, shuffled, in batches: every (unit, boot, seq)
    is stored once, the other copy is a duplicate, and no unit's message count is lost to a race."""
    n_units, n_seq = 6, 100
    Store(pg_url).close()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, pg_url, str(k), str(n_units), str(n_seq)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for k in (1, 2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=150)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    total = n_units * n_seq
    assert sum(r["stored"] for r in results) == total
    assert sum(r["duplicate"] for r in results) == total
    with Store(pg_url, create=False) as s:
        assert s.count("received") == total and s.count("measurements") == total
        assert s.gaps() == []
        assert sorted(u["messages"] for u in s.list_units()) == [n_seq] * n_units


def test_racing_claims_have_one_winner(pg_url: str) -> None:  # noqa: F811
    """Two connections claim the same incidents and task attempts at the same moment: one wins each."""
    stores = [Store(pg_url) for _ in range(2)]
    try:
        n = 30
        for i in range(n):
            stores[0].save_incident({"incident_id": f"I-{i}", "state": "holding", "task_id": None})
            stores[0].save_task({"task_id": f"T-{i}", "incident_id": f"I-{i}", "state": "open", "attempts": 0})
        wins: list[list[tuple[str, int]]] = [[], []]
        barrier = threading.Barrier(2)

        def claimer(k: int) -> None:
            for i in range(n):
                barrier.wait(timeout=30)
                if stores[k].claim_incident_task(f"I-{i}", f"T-{i}-{k}"):
                    wins[k].append(("incident", i))
                if stores[k].claim_task_attempt(f"T-{i}", 0):
                    wins[k].append(("task", i))

        threads = [threading.Thread(target=claimer, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        won = sorted(wins[0] + wins[1])
        assert won == sorted([("incident", i) for i in range(n)] + [("task", i) for i in range(n)])
        for i in range(n):
            inc = stores[1].get_incident(f"I-{i}")
            winner = 0 if ("incident", i) in wins[0] else 1
            assert inc["task_id"] == f"T-{i}-{winner}"
            # a stale copy saved by the loser cannot take the task back
            stores[1 - winner].save_incident({"incident_id": f"I-{i}", "state": "holding", "task_id": None})
            inc = stores[1].get_incident(f"I-{i}")
            assert inc["task_id"] == f"T-{i}-{winner}"
            assert stores[1].get_task(f"T-{i}")["attempts"] == 1
            # the claim itself takes the task out of 'open': a dispatcher that reads the task after the
            # claim but before the winner's save sees it dispatched and does not claim the next attempt
            assert stores[1].get_task(f"T-{i}")["state"] == "dispatched"
            assert not stores[1 - winner].claim_task_attempt(f"T-{i}", 1)
    finally:
        for s in stores:
            s.close()


def test_two_dispatchers_racing_on_one_incident_send_one_handheld(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    """Two dispatchers (two controllers during a leader fail-over) tick at the same moment when an
    incident's fusion hold ends: one task is opened and one handheld is dispatched."""
    yard = Yard(tmp_path)
    yard.store.close()
    yard.store = Store(pg_url, synchronous="NORMAL")
    sent_b: list = []
    dispatchers = [
        Dispatcher(yard.store, yard.clock, lambda u, c: yard.sent.append((u, c)), yard.config,
                   _loc(), _site()),
        Dispatcher(Store(pg_url), yard.clock, lambda u, c: sent_b.append((u, c)), yard.config, _loc(), _site()),
    ]
    try:
        yard.unit("mob-1", "mobile")
        yard.unit("hh-1", "handheld", 40.0, 25.0)
        yard.unit("hh-2", "handheld", 60.0, -20.0)
        yard.drive_pass("mob-1", 0.0, T0)
        dispatchers[0].tick()  # the alarm opens an incident, holding for fusion
        (inc,) = yard.store.list_incidents()
        assert inc["state"] == "holding"
        yard.clock.advance(yard.config.hold_for_fusion_s + 1.0)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(d: Dispatcher) -> None:
            try:
                barrier.wait(timeout=30)
                d.tick()
            except BaseException as err:  # surfaced below
                errors.append(err)

        threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors
        tasks = yard.store.list_tasks()
        assert len(tasks) == 1 and tasks[0]["state"] == "dispatched" and tasks[0]["attempts"] == 1
        sent = [c for _, c in yard.sent + sent_b if c.command == "dispatch"]
        assert len(sent) == 1 and sent[0].task.task_id == tasks[0]["task_id"]
        assert yard.store.get_incident(inc["incident_id"])["task_id"] == tasks[0]["task_id"]
        # a later tick of both changes nothing
        for d in dispatchers:
            d.tick()
        assert len(yard.store.list_tasks()) == 1
        assert len([c for _, c in yard.sent + sent_b if c.command == "dispatch"]) == 1
    finally:
        dispatchers[1].store.close()
        yard.store.close()


def _loc():
    from controller.config import LocalizationConfig

    return LocalizationConfig(prior_z_min_m=0.0, prior_z_max_m=3.0)


def _site():
    from test_dispatch import SITE

    return SITE
