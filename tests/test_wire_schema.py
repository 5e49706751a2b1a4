"""Wire schema: round trips, and every kind of malformed payload rejected with a reason."""

from __future__ import annotations

import json

import pytest

from agent import wire_schema as ws


def _env(kind: str = "health", seq: int = 1, **body_over) -> dict:
    bodies = {
        "health": dict(uptime_s=1.0, cpu_pct=2.0, mem_rss_mb=50.0, outbox_pending=0, queue_depth={},
                       loop_lag_ms=0.1, sensors={"gamma": {"state": "ok"}}),
        "birth": dict(unit_type="mobile", profile="p", software_version="0", site="s", sensors={}),
        "measurement": dict(interval_s=1.0, live_time_s=0.99, gross_counts=100, gross_cps=101.0,
                            detector_model="NaI 2x2 in"),
        "vitals": dict(track_id="t1a2b", heart_rate_bpm=72.0, ibi_ms=[830.5, 812.0]),
    }
    body = {**bodies[kind], **body_over}
    return {"schema": 1, "kind": kind, "unit_id": "mob-1", "boot_id": "a" * 32, "seq": seq,
            "t_utc": "2026-11-27T08:00:00.000Z", "t_mono_s": 12.5, "clock_valid": True, "body": body}


def test_round_trip_measurement() -> None:
    body = ws.Measurement(interval_s=1, live_time_s=0.98, gross_counts=2000, gross_cps=2040.8,
                          detector_model="NaI 2x4x16 in log")
    env = ws.make_envelope("measurement", "mob-1", "b" * 32, 7, "2026-11-27T08:00:00.000Z", 3.0, True, body)
    topic = ws.uplink_topic("mob-1", "measurement")
    env2, body2 = ws.decode_uplink(topic, ws.encode(env))
    assert env2.seq == 7 and env2.delivery == "live"
    assert body2 == body


@pytest.mark.parametrize("payload, reason", [
    (b"\xff\xfe garbage", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({**_env(), "schema": 2}).encode(), "unsupported schema"),
    (json.dumps({**_env(), "seq": -1}).encode(), "seq"),
    (json.dumps({**_env(), "unit_id": "other"}).encode(), "topic says"),
    (json.dumps({**_env(), "extra": 1}).encode(), "extra"),
    (json.dumps(_env(cpu_pct="high")).encode(), "cpu_pct"),
    (json.dumps(_env(seq=0)).encode(), "seq 0 not allowed"),
    (json.dumps(_env("birth", seq=3)).encode(), "not allowed"),
    (json.dumps(_env("vitals", ibi_ms=[830.5, 15.0])).encode(), "ibi_ms.1"),
    (json.dumps(_env("vitals", ibi_ms="830")).encode(), "ibi_ms"),
])
def test_rejects_with_reason(payload: bytes, reason: str) -> None:
    kind = next((k for k in ("birth", "vitals") if f'"{k}"'.encode() in payload), "health")
    with pytest.raises(ws.WireError, match=reason):
        ws.decode_uplink(ws.uplink_topic("mob-1", kind), payload)


def test_vitals_carry_inter_beat_intervals() -> None:
    env, body = ws.decode_uplink(ws.uplink_topic("mob-1", "vitals"), json.dumps(_env("vitals")).encode())
    assert isinstance(body, ws.Vitals) and body.ibi_ms == [830.5, 812.0]
    assert ws.Vitals(track_id="t1").ibi_ms == []  # a message without new beats


def test_topic_checks() -> None:
    with pytest.raises(ws.WireError, match="unknown kind"):
        ws.parse_uplink_topic("cedge/v1/up/mob-1/selfie")
    with pytest.raises(ws.WireError):
        ws.parse_uplink_topic("cedge/v2/up/mob-1/health")
    assert ws.shared_subscription("ctl") == "$share/ctl/cedge/v1/up/+/+"


def test_command_decode() -> None:
    cmd = ws.Command(cmd_id="c1", unit_id="hh-1", command="cancel", t_utc="2026-11-27T08:00:00Z", task_id="t1")
    assert ws.decode_command(ws.encode(cmd)) == cmd
    with pytest.raises(ws.WireError, match="command"):
        ws.decode_command(b'{"schema": 1, "cmd_id": "x"}')
