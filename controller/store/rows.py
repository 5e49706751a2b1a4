"""Conversions between wire messages and store rows: times, positions, JSON columns, digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from agent.wire_schema import Alarm, Envelope, Position
from controller.store.schema import JSON_COLS, POS_COLS


def epoch_s(t: str | float | datetime | None) -> float | None:
    """ISO-8601 UTC text, a datetime or epoch seconds -> epoch seconds (None if unparseable)."""
    if t is None:
        return None
    if isinstance(t, int | float):
        return float(t)
    if isinstance(t, datetime):
        dt = t
    else:
        try:
            dt = datetime.fromisoformat(t)
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def iso_utc(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pos_cols(p: Position | None) -> dict[str, Any]:
    if p is None:
        return dict.fromkeys(POS_COLS)
    return {
        "x_m": p.x_m,
        "y_m": p.y_m,
        "z_m": p.z_m,
        "lat_deg": p.lat_deg,
        "lon_deg": p.lon_deg,
        "alt_m": p.alt_m,
        "fix_quality": p.fix_quality,
    }


def content_digest(env: Envelope) -> str:
    """SHA-256 of the envelope without ``delivery`` (canonical JSON): equal for a QoS-1 redelivery or
    an outbox re-send of the same message, different for another message under the same seq."""
    data = env.model_dump(mode="json", by_alias=True, exclude={"delivery"})
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def alarm_row(common: dict[str, Any], body: Alarm) -> dict[str, Any]:
    return common | {
        "alarm_id": body.alarm_id,
        "detector": body.detector,
        "significance_sigma": body.significance_sigma,
        "peak_cps": body.peak_cps,
        "background_cps": body.background_cps,
        "threshold_sigma": body.threshold_sigma,
        "false_alarm_rate_per_h": body.false_alarm_rate_per_h,
        "t_peak_utc": body.t_peak_utc,
        "t_peak_epoch_s": epoch_s(body.t_peak_utc),
        **pos_cols(body.position),
        "nuclides": js([n.model_dump() for n in body.nuclides]),
        "dose_rate_usv_h": body.dose_rate_usv_h,
        "incident_id": None,
    }


def js(v: Any) -> str | None:
    return None if v is None else json.dumps(v, separators=(",", ":"))


def decode(row: dict[str, Any]) -> dict[str, Any]:
    for k in JSON_COLS.intersection(row):
        if isinstance(row[k], str):
            with contextlib.suppress(json.JSONDecodeError):
                row[k] = json.loads(row[k])
    return row
