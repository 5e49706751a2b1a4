"""Leader election (controller.leader): one controller dispatches; when it dies another takes over.

PostgreSQL: a session advisory lock on a real private server (tests/pg_fixture.py); the leader is a
separate process that is SIGKILLed, as a crashed controller would be.  SQLite: an flock on the
database's ``.leader`` file, same fail-over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures

from controller.leader import AdvisoryLockLeader, FileLockLeader, leader_for

DEADLINE_S = 60.0  # generous: the CI machine is slow; every wait polls for its condition

_HOLDER = """
import sys, time
from controller.leader import leader_for
leader = leader_for(sys.argv[1])
while not leader.is_leader():
    time.sleep(0.05)
print("leading", flush=True)
while True:
    time.sleep(0.2)
    leader.is_leader()
"""


def _poll(cond, deadline_s: float = DEADLINE_S) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _spawn_leader(location: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, location], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until it leads (or exits)
    assert line.strip() == "leading", f"holder did not become leader (exit {proc.poll()})"
    return proc


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_killed_leader_is_replaced(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    location = request.getfixturevalue("pg_url") if backend == "postgresql" else str(tmp_path / "c.sqlite")
    holder = _spawn_leader(location)
    follower = leader_for(location)
    try:
        # while the holder lives, the follower never leads (checked over several polls)
        assert not any(follower.is_leader() for _ in range(10))
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=DEADLINE_S)
        assert _poll(follower.is_leader), "no fail-over after the leader was killed"
        assert follower.changes == 1
        # and the new leader stays leader
        assert all(follower.is_leader() for _ in range(5))
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
        follower.close()


def test_leader_whose_session_is_cut_steps_down(pg_server, pg_url: str) -> None:  # noqa: F811
    """The server ends the leader's session (a network fault, an admin): it stops leading at its
    next check, and the other controller takes over."""
    a = AdvisoryLockLeader(pg_url, name="leader-a")
    b = AdvisoryLockLeader(pg_url, name="leader-b")
    try:
        assert a.is_leader() and not b.is_leader()
        dbname = urlsplit(pg_url).path.lstrip("/")
        assert pg_server.terminate_backends(dbname, application_name="leader-a") == 1
        assert not a.is_leader()  # its session is gone: not leader any more
        assert _poll(b.is_leader)
        assert not a.is_leader()  # a reconnects but b holds the lock
    finally:
        a.close()
        b.close()


def test_close_hands_over(tmp_path: Path) -> None:
    a, b = FileLockLeader(str(tmp_path / "c.sqlite")), FileLockLeader(str(tmp_path / "c.sqlite"))
    try:
        assert a.is_leader() and not b.is_leader()
        a.close()
        assert b.is_leader() and not a.is_leader()
    finally:
        a.close()
        b.close()
