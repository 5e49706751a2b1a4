"""Shared pytest fixtures.  Keep this file small and general; topic-specific helpers live in their
own modules (e.g. ``broker_fixture.py``) and test files."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from broker_fixture import Mosquitto, find_mosquitto


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A fresh Mosquitto on a free loopback port (persistence on); always stopped afterwards.

    ``mosquitto.stop()`` / ``.start()`` restarts it on the same port and data dir; ``.kill()``
    crashes it; ``.broker_config()`` gives an agent BrokerConfig for it.
    """
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found (apt install mosquitto, or set $MOSQUITTO to its path)")
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Fail the test if it leaves threads running (after a 3 s grace period for joins)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if leaked:
        pytest.fail(f"test leaked {len(leaked)} thread(s): {[t.name for t in leaked]}")
