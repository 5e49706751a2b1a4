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


def test_console_lists_tracked_people_and_why_an_alert_was_raised(tmp_path: Path) -> None:
    from agent.wire_schema import Vitals
    from controller.console import evidence_summary

    store = Store(tmp_path / "c.sqlite")
    calm = Vitals(track_id="t1", heart_rate_bpm=71.0, hr_quality=0.9, respiration_rate_bpm=15.0,
                  blink_rate_per_min=14.0, abnormal_score=0.1)
    evidence = {"hr_bpm": 97.0, "hr_bpm_baseline": 78.0, "hr_bpm_z": 6.3, "rr_bpm": 22.0, "rr_bpm_baseline": 16.0,
                "rr_bpm_z": 3.9, "blink_per_min": 15.0, "blink_per_min_baseline": 14.0, "blink_per_min_z": 0.2,
                "fused_z": 4.1}
    tense = Vitals(track_id="t2", heart_rate_bpm=97.0, abnormal_score=0.96, alert=True, evidence=evidence)
    for seq, body in enumerate((calm, tense), start=1):
        env = make_envelope("vitals", "cam-1", "c" * 16, seq, f"2026-11-28T08:00:0{seq}.000Z", float(seq), True, body)
        assert store.store_uplink(env, body, f"2026-11-28T08:00:0{seq}.500Z") == "stored"
    why = evidence_summary(evidence)
    # strongest cue first, weak cues (z < 1) and the fused score left out
    assert why == "hr_bpm 97 (78, z 6.3); rr_bpm 22 (16, z 3.9)"
    assert [r["track_id"] for r in store.list_vitals(alerts_only=True)] == ["t2"]
    con = Console(record=True, width=160)
    con.print(render(store))
    text = con.export_text()
    store.close()
    assert "camera boxes: tracked people (alert messages 1)" in text
    assert "cam-1" in text and "t1" in text and why in text
    assert evidence_summary({}) == "-"
