"""Operator console renders what the store holds."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from agent.wire_schema import Health, make_envelope
from controller.console import render
from controller.store import Store


def test_console_shows_units_and_counts(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.sqlite")
    body = Health(uptime_s=1, cpu_pct=1, mem_rss_mb=10, outbox_pending=0, queue_depth={}, loop_lag_ms=0,
                  sensors={}, available=True)
    env = make_envelope("health", "hh-7", "b" * 16, 1, "2026-11-27T08:00:00.000Z", 1.0, True, body)
    assert store.store_uplink(env, body, "2026-11-27T08:00:01.000Z") == "stored"
    con = Console(record=True, width=120)
    con.print(render(store))
    text = con.export_text()
    store.close()
    assert "hh-7" in text and "follow-up tasks" in text and "messages stored 1" in text
