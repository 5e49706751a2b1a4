"""Property-based fuzzing of the wire schema (issue 14, item 6).

What must hold for *any* input an outsider can put on the broker: :func:`decode_uplink` and
:func:`decode_command` either return a valid message or raise :class:`WireError` carrying one of
the documented reason codes - never another exception (which the controller could only file as
``internal_error``, row 11). And what the agents send must come back unchanged (round trip).

Reproducible: ``derandomize=True`` (examples derived from the test, not a random seed) and no
example database; example counts are modest so the file runs in seconds.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import wire_schema as ws

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NOW = "2026-11-27T08:00:00.000Z"

# --------------------------------------------------------------------------- strategies
json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=30,
)
kinds = st.sampled_from(ws.UPLINK_KINDS)
unit_ids = st.one_of(st.sampled_from(["mob-1", "hh-2", "cam-1", "..", ".", "-x", "a/b", "+", "#", ""]),
                     st.text(max_size=70))
topics = st.one_of(
    st.builds(ws.uplink_topic, unit_ids, st.one_of(kinds, st.text(max_size=12))),
    st.text(max_size=80),
)


def _valid_bodies() -> dict[str, dict[str, Any]]:
    pos = {"lat_deg": 51.95, "lon_deg": 4.05, "alt_m": 5.0, "x_m": 1.0, "y_m": 2.0, "z_m": 1.5, "fix_quality": 1}
    return {
        "birth": {"unit_type": "mobile", "profile": "p", "software_version": "0.1", "site": "yard",
                  "sensors": {"gamma": {"state": "ok"}}},
        "death": {"reason": "connection lost"},
        "health": {"uptime_s": 1.0, "cpu_pct": 2.0, "mem_rss_mb": 50.0, "outbox_pending": 0, "queue_depth": {},
                   "loop_lag_ms": 0.1, "sensors": {}, "position": pos},
        "measurement": {"interval_s": 1.0, "live_time_s": 0.98, "gross_counts": 1000, "gross_cps": 1020.4,
                        "detector_model": "NaI", "position": pos, "spectrum": [0, 1, 2, 3]},
        "alarm": {"alarm_id": "A1", "detector": "gross", "significance_sigma": 6.0, "peak_cps": 2000.0,
                  "background_cps": 1000.0, "t_peak_utc": NOW, "position": pos, "threshold_sigma": 5.0},
        "task_event": {"task_id": "T1", "cmd_id": "c1", "state": "accepted", "position": pos},
        "vitals": {"track_id": "t1", "heart_rate_bpm": 70.0, "evidence": {"hr_bpm_z": 2.5}, "ibi_ms": [830.0]},
        "tracklet": {"camera_id": "cam-1", "track_id": "k1", "state": "active", "t_start_utc": NOW,
                     "samples": [{"dt_s": 0.0, "x_m": 3.5, "y_m": 7.25, "confidence": 0.9}],
                     "appearance": {"torso": [0.5, 0.5], "height_m": 1.75, "n_frames": 12}},
    }


def _envelope(kind: str) -> dict[str, Any]:
    return {"schema": 1, "kind": kind, "unit_id": "mob-1", "boot_id": "a" * 32,
            "seq": 0 if kind in ws.SESSION_KINDS else 7, "t_utc": NOW, "t_mono_s": 12.5, "clock_valid": True,
            "body": _valid_bodies()[kind]}


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (dict keys and list indices)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _decode(topic: str, payload: bytes) -> None:
    """decode_uplink at a fixed 'now'; only WireError with a documented reason may escape."""
    from datetime import UTC, datetime

    try:
        ws.decode_uplink(topic, payload, now_utc=datetime(2026, 11, 27, 9, 0, tzinfo=UTC))
    except ws.WireError as err:
        assert err.reason in ws.WIRE_REASONS, err.reason
        assert str(err)  # says why


# --------------------------------------------------------------------------- properties
@FUZZ
@given(topic=topics, payload=st.binary(max_size=300))
def test_arbitrary_bytes_and_topics_give_only_wire_errors(topic: str, payload: bytes) -> None:
    _decode(topic, payload)


@FUZZ
@given(kind=kinds, value=json_values)
def test_arbitrary_json_gives_only_wire_errors(kind: str, value: Any) -> None:
    _decode(ws.uplink_topic("mob-1", kind), json.dumps(value).encode())


@FUZZ
@given(kind=kinds, data=st.data(), new=st.one_of(json_values, st.sampled_from(
    [float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 2**63 - 1, 2**63, 2**64, -1, "garbage",
     "9999-12-31T23:59:59Z", "..", "[/oops]", "x" * 5000, [0] * 20000, {"a": {"b": {"c": [[[[]]]]}}}])))
def test_valid_envelope_with_one_field_replaced(kind: str, data: st.DataObject, new: Any) -> None:
    """Any one value of a valid envelope, anywhere (body included), replaced by junk."""
    env = _envelope(kind)
    path = data.draw(st.sampled_from(_paths(env)))
    mutated = _replace(env, path, new)
    _decode(ws.uplink_topic("mob-1", kind), json.dumps(mutated).encode())  # json.dumps writes NaN / Infinity


@FUZZ
@given(kind=kinds, data=st.data())
def test_truncated_and_spliced_valid_payloads(kind: str, data: st.DataObject) -> None:
    raw = json.dumps(_envelope(kind)).encode()
    cut = data.draw(st.integers(0, len(raw)))
    junk = data.draw(st.binary(max_size=20))
    _decode(ws.uplink_topic("mob-1", kind), raw[:cut] + junk + raw[cut:])


@FUZZ
@given(depth=st.integers(1, 5000), opener=st.sampled_from([b"[", b'{"a":']))
def test_deep_nesting_is_refused_before_parsing(depth: int, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    payload = opener * depth + b"1" + closer * depth
    try:
        ws.decode_uplink(ws.uplink_topic("mob-1", "health"), payload)
    except ws.WireError as err:
        assert err.reason == ("too_deep" if depth > ws.MAX_JSON_DEPTH else "not_object" if opener == b"[" else
                              "bad_schema"), (depth, err.reason)


@FUZZ
@given(payload=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_decode_command_gives_only_wire_errors(payload: bytes) -> None:
    try:
        ws.decode_command(payload)
    except ws.WireError as err:
        assert err.reason in ws.WIRE_REASONS


# --------------------------------------------------------------------------- round trip
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
nonneg = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
ids = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters="\x7f"),
              max_size=40)
positions = st.builds(
    ws.Position, lat_deg=st.floats(-90, 90), lon_deg=st.floats(-180, 180), alt_m=st.floats(-500, 9000),
    x_m=finite, y_m=finite, z_m=st.floats(-1000, 1000), fix_quality=st.integers(0, 8),
    hdop=st.none() | st.floats(0, 99.99))
bodies = {
    "measurement": st.builds(
        ws.Measurement, interval_s=st.floats(0.01, 60), live_time_s=st.floats(0, 60),
        gross_counts=st.integers(0, ws.MAX_COUNTS), gross_cps=nonneg, background_cps=st.none() | nonneg,
        dose_rate_usv_h=st.none() | nonneg, detector_model=ids, position=st.none() | positions,
        speed_m_s=st.none() | st.floats(0, 50), spectrum=st.none() | st.lists(st.integers(0, 10**6), max_size=64),
        energy_calibration_kev=st.none() | st.lists(finite, max_size=4)),
    "alarm": st.builds(
        ws.Alarm, alarm_id=ids, detector=ids, significance_sigma=finite, peak_cps=nonneg, background_cps=nonneg,
        t_peak_utc=st.just(NOW), position=st.none() | positions, threshold_sigma=finite,
        nuclides=st.lists(st.builds(ws.Nuclide, name=ids, confidence=st.floats(0, 1)), max_size=3)),
    "vitals": st.builds(
        ws.Vitals, track_id=ids, heart_rate_bpm=st.none() | st.floats(30, 220), abnormal_score=st.none() | finite,
        evidence=st.dictionaries(ids, finite, max_size=4), ibi_ms=st.lists(st.floats(250, 1430), max_size=8)),
    "task_event": st.builds(
        ws.TaskEvent, task_id=ids, cmd_id=ids,
        state=st.sampled_from(["accepted", "rejected", "on_site", "measuring", "confirmed", "cleared"]),
        position=st.none() | positions, reason=ids),
}


@FUZZ
@given(data=st.data(), kind=st.sampled_from(sorted(bodies)), seq=st.integers(1, ws.MAX_SEQ - 1),
       clock_valid=st.booleans(), delivery=st.sampled_from(["live", "backfill"]))
def test_valid_messages_round_trip(data: st.DataObject, kind: str, seq: int, clock_valid: bool, delivery: str) -> None:
    body = data.draw(bodies[kind])
    env = ws.make_envelope(kind, "mob-1", "b" * 32, seq, NOW, 3.0, clock_valid, body, delivery)
    env2, body2 = ws.decode_uplink(ws.uplink_topic("mob-1", kind), ws.encode(env))
    assert env2 == env and body2 == body
    for v in json.loads(ws.encode(env))["body"].values():  # nothing non-finite on the wire
        assert not (isinstance(v, float) and not math.isfinite(v))
