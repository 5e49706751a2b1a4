"""The wire schema: every MQTT topic and payload exchanged by agents and the controller.

One module, used by both sides, so that a message is valid on the wire exactly when both ends
agree.  Version ``1`` of the schema; a payload with another ``schema`` value is rejected with a
reason rather than guessed at.

Topics::

    cedge/v1/up/{unit_id}/{kind}      agent -> controller   kind in UPLINK_KINDS
    cedge/v1/down/{unit_id}/cmd       controller -> agent   (Command)

Every uplink payload is an :class:`Envelope` whose ``body`` type is fixed by ``kind``.  Sequenced
kinds carry ``(unit_id, boot_id, seq)``: ``seq`` starts at 1 for every boot and increases by one
per message, so the controller can de-duplicate QoS-1 redeliveries and find gaps.  ``birth`` and
``death`` are session messages (``seq == 0``): birth is sent on every connect, death is the MQTT
Last Will.  ``delivery`` tells live data from backfill released from the outbox after an outage.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
TOPIC_ROOT = "cedge/v1"
UNIT_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class WireError(ValueError):
    """A payload or topic that is not valid under this schema; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- common parts
class Position(_Strict):
    """WGS-84 fix plus the same point in the site's local ENU frame (metres from the origin)."""

    lat_deg: float = Field(ge=-90, le=90)
    lon_deg: float = Field(ge=-180, le=180)
    alt_m: float
    x_m: float
    y_m: float
    z_m: float
    fix_quality: int = Field(ge=0, le=8)
    hdop: float | None = None


class SensorHealth(_Strict):
    state: Literal["not_opened", "ok", "degraded", "failed", "closed"]
    detail: str = ""
    errors: int = 0


# --------------------------------------------------------------------------- bodies
class Birth(_Strict):
    unit_type: Literal["mobile", "handheld", "camerabox"]
    profile: str
    software_version: str
    site: str
    sensors: dict[str, SensorHealth]
    devices: list[dict[str, Any]] = Field(default_factory=list)
    pending_backfill: int = 0


class Death(_Strict):
    reason: str = "connection lost"


class Health(_Strict):
    uptime_s: float
    cpu_pct: float
    mem_rss_mb: float
    outbox_pending: int
    queue_depth: dict[str, int]
    loop_lag_ms: float
    sensors: dict[str, SensorHealth]
    position: Position | None = None
    available: bool = True  # handhelds: free to take a task
    task_id: str | None = None


class Measurement(_Strict):
    """One acquisition interval of a radiation unit (1 s on vehicles)."""

    interval_s: float = Field(gt=0)
    live_time_s: float = Field(ge=0)
    gross_counts: int = Field(ge=0)
    gross_cps: float = Field(ge=0)
    background_cps: float | None = None
    dose_rate_usv_h: float | None = Field(default=None, ge=0)
    detector_model: str
    position: Position | None = None
    speed_m_s: float | None = None
    spectrum: list[int] | None = None  # raw counts; sent on alarms / handheld dwell
    energy_calibration_kev: list[float] | None = None


class Nuclide(_Strict):
    name: str
    confidence: float = Field(ge=0, le=1)


class Alarm(_Strict):
    alarm_id: str
    detector: str
    significance_sigma: float
    peak_cps: float
    background_cps: float
    t_peak_utc: str
    position: Position | None
    threshold_sigma: float
    false_alarm_rate_per_h: float | None = None
    nuclides: list[Nuclide] = Field(default_factory=list)
    dose_rate_usv_h: float | None = None


TaskState = Literal[
    "open", "dispatched", "accepted", "on_site", "measuring", "confirmed", "cleared", "timed_out",
    "rejected", "cancelled",
]


class TaskResult(_Strict):
    dwell_s: float
    gross_cps: float
    background_cps: float
    net_cps: float
    significance_sigma: float
    dose_rate_usv_h: float | None = None
    nuclides: list[Nuclide] = Field(default_factory=list)
    activity_mbq: float | None = None
    distance_m: float | None = None


class TaskEvent(_Strict):
    """A handheld reports progress on a task it was dispatched to (its acknowledgement)."""

    task_id: str
    cmd_id: str
    state: Literal["accepted", "rejected", "on_site", "measuring", "confirmed", "cleared"]
    position: Position | None = None
    result: TaskResult | None = None
    reason: str = ""


class Vitals(_Strict):
    """Camera box: derived signals of one anonymous track (no images)."""

    track_id: str
    heart_rate_bpm: float | None = None
    hr_quality: float | None = None
    respiration_rate_bpm: float | None = None
    blink_rate_per_min: float | None = None
    abnormal_score: float | None = None
    alert: bool = False
    evidence: dict[str, float] = Field(default_factory=dict)
    #: Inter-beat intervals completed since this track's previous message, oldest first (the
    #: pulse band 42-240 bpm is 250-1430 ms; at most one message interval's worth is sent).
    ibi_ms: list[Annotated[float, Field(ge=200.0, le=2000.0)]] = Field(default_factory=list, max_length=256)


BODY_TYPES: dict[str, type[_Strict]] = {
    "birth": Birth,
    "death": Death,
    "health": Health,
    "measurement": Measurement,
    "alarm": Alarm,
    "task_event": TaskEvent,
    "vitals": Vitals,
}
UPLINK_KINDS = tuple(BODY_TYPES)
SESSION_KINDS = ("birth", "death")  # seq == 0, not de-duplicated
SEQUENCED_KINDS = tuple(k for k in UPLINK_KINDS if k not in SESSION_KINDS)


class Envelope(_Strict):
    schema_: Literal[1] = Field(alias="schema", default=SCHEMA_VERSION)
    kind: Literal["birth", "death", "health", "measurement", "alarm", "task_event", "vitals"]
    unit_id: str = Field(pattern=UNIT_ID_PATTERN)
    boot_id: str = Field(min_length=8, max_length=64)
    seq: int = Field(ge=0)
    t_utc: str  # ISO-8601 UTC, e.g. 2026-11-27T19:00:00.000Z
    t_mono_s: float
    clock_valid: bool
    delivery: Literal["live", "backfill"] = "live"
    body: dict[str, Any]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- downlink
class DispatchTask(_Strict):
    task_id: str
    alarm_id: str
    target: Position
    radius_m: float = Field(gt=0)
    dwell_s: float = Field(gt=0)
    note: str = ""


class Command(_Strict):
    """A controller -> unit command.

    The last five fields make it a signed command (agent.command_auth): ``key_id`` names the
    controller key, ``nonce`` is 16 random bytes in hex, ``t_issued_utc``/``t_expires_utc`` bound
    when it may be obeyed, and ``signature`` is the Ed25519 signature (hex) over
    ``agent.command_auth.canonical_command_bytes`` (every other field).  They are optional in the
    schema only so that a unit configured with ``require_signed_commands: false`` can still parse
    an unsigned command; by default the unit refuses it.
    """

    schema_: Literal[1] = Field(alias="schema", default=SCHEMA_VERSION)
    cmd_id: str = Field(min_length=1, max_length=128)
    unit_id: str = Field(pattern=UNIT_ID_PATTERN)
    command: Literal["dispatch", "cancel", "ping"]
    t_utc: str = Field(max_length=40)
    task: DispatchTask | None = None
    task_id: str | None = Field(default=None, max_length=128)  # for cancel
    key_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{8,64}$")
    nonce: str | None = Field(default=None, pattern=r"^[0-9a-f]{32,128}$")
    t_issued_utc: str | None = Field(default=None, max_length=40)
    t_expires_utc: str | None = Field(default=None, max_length=40)
    signature: str | None = Field(default=None, pattern=r"^[0-9a-f]{128}$")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- topics
def uplink_topic(unit_id: str, kind: str) -> str:
    return f"{TOPIC_ROOT}/up/{unit_id}/{kind}"


def command_topic(unit_id: str) -> str:
    return f"{TOPIC_ROOT}/down/{unit_id}/cmd"


UPLINK_SUBSCRIPTION = f"{TOPIC_ROOT}/up/+/+"


def shared_subscription(group: str) -> str:
    """MQTT 5 shared subscription so several controller processes split the load."""
    return f"$share/{group}/{UPLINK_SUBSCRIPTION}"


def parse_uplink_topic(topic: str) -> tuple[str, str]:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{TOPIC_ROOT}/up":
        raise WireError(f"topic '{topic}' is not {TOPIC_ROOT}/up/<unit>/<kind>")
    unit_id, kind = parts[3], parts[4]
    if kind not in BODY_TYPES:
        raise WireError(f"topic '{topic}': unknown kind '{kind}'")
    return unit_id, kind


# --------------------------------------------------------------------------- encode / decode
def make_envelope(kind: str, unit_id: str, boot_id: str, seq: int, t_utc: str, t_mono_s: float,
                  clock_valid: bool, body: _Strict, delivery: str = "live") -> Envelope:
    if not isinstance(body, BODY_TYPES[kind]):
        raise WireError(f"{kind} body must be {BODY_TYPES[kind].__name__}, not {type(body).__name__}")
    return Envelope(schema=SCHEMA_VERSION, kind=kind, unit_id=unit_id, boot_id=boot_id, seq=seq,
                    t_utc=t_utc, t_mono_s=t_mono_s, clock_valid=clock_valid, delivery=delivery,
                    body=body.model_dump(mode="json"))


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json(by_alias=True).encode()


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "payload"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {e['msg']}{more}"


def decode_uplink(topic: str, payload: bytes) -> tuple[Envelope, BaseModel]:
    """Validate topic and payload; return the envelope and its typed body, or raise WireError."""
    unit_id, kind = parse_uplink_topic(topic)
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WireError(f"{topic}: payload is not JSON ({err})") from err
    if not isinstance(raw, dict):
        raise WireError(f"{topic}: payload is not a JSON object")
    if raw.get("schema") != SCHEMA_VERSION:
        raise WireError(f"{topic}: unsupported schema version {raw.get('schema')!r} (want {SCHEMA_VERSION})")
    try:
        env = Envelope.model_validate(raw)
    except ValidationError as err:
        raise WireError(f"{topic}: envelope {_first_error(err)}") from err
    if env.unit_id != unit_id or env.kind != kind:
        raise WireError(f"{topic}: envelope says {env.unit_id}/{env.kind}, topic says {unit_id}/{kind}")
    if (kind in SESSION_KINDS) != (env.seq == 0):
        raise WireError(f"{topic}: seq {env.seq} not allowed for kind {kind}")
    try:
        body = BODY_TYPES[kind].model_validate(env.body)
    except ValidationError as err:
        raise WireError(f"{topic}: {kind} body {_first_error(err)}") from err
    return env, body


def decode_command(payload: bytes) -> Command:
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WireError(f"command payload is not JSON ({err})") from err
    try:
        return Command.model_validate(raw)
    except ValidationError as err:
        raise WireError(f"command {_first_error(err)}") from err
