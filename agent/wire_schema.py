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
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

SCHEMA_VERSION = 1
TOPIC_ROOT = "cedge/v1"
#: A unit id starts with a letter or digit: ``.``, ``..`` or ``-x`` are refused (issue 14, row 10:
#: a unit called ``..`` was stored, and unit ids become file names in site enrolment).
UNIT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# --------------------------------------------------------------------------- input bounds
# Why bounds at all: the controller stores what arrives as the fleet's record, so a value no
# instrument can produce (a position 1e308 m away, a count of -5, seq 2^63, year 9999) must be
# refused at the edge with a reason, not stored and then crash a query (issue 14, rows 10-11).
MAX_UPLINK_BYTES = 1024 * 1024  #: a 16k-channel spectrum is ~ 200 kB of JSON; 1 MiB leaves room
MAX_JSON_DEPTH = 32  #: real envelopes nest <= 6 deep; checked before json.loads recurses
MAX_SEQ = 2**53  #: seq < 2^53: exact in every JSON implementation (IEEE double) and in SQLite
MAX_CHANNELS = 16_384  #: HPGe MCAs have 8k-16k channels; scintillators 256-4k
MAX_COUNTS = 10**12  #: 10^6 cps (a saturated detector) for 10^6 s; anything above is not a count
MAX_CPS = 1e9
MAX_DOSE_RATE_USV_H = 1e9  #: 1 kSv/h: far above any survey meter's range (~10 Sv/h), still physical
#: Local ENU coordinates are bounded by the Earth, not by the site: any valid GNSS fix converts to
#: |x|, |y| < 2 R_earth, so the agent can never build an alarm it cannot send (an alarm whose
#: position failed validation would be lost); 1e308, Inf and NaN are refused all the same.
EARTH_EXTENT_M = 1.3e7
MAX_ALTITUDE_M = 100_000.0  #: GNSS receivers report nothing above 18 km (COCOM limit)
MAX_DURATION_S = 10 * 365 * 86400.0  #: uptime, dwell, interval: ten years
MAX_STR = 1024  #: default cap for free text (details, reasons)
MAX_ITEMS = 256  #: dicts and lists other than spectra (sensors, nuclides, devices, evidence)
EARLIEST_UTC = datetime(2000, 1, 1, tzinfo=UTC)  #: no customs-edge unit ran before this
FUTURE_SLACK = timedelta(days=1)  #: a valid clock may run ahead of the controller's by < 1 day

#: Reason codes a :class:`WireError` carries (the controller counts rejects by these).
WIRE_REASONS = (
    "oversized", "too_deep", "not_json", "non_finite", "not_object", "bad_schema", "envelope_invalid",
    "bad_unit_id", "seq_range", "bad_time", "topic_mismatch", "bad_seq", "negative_count", "out_of_range",
    "too_long", "body_invalid", "bad_topic", "unknown_kind", "command_invalid",
)


class WireError(ValueError):
    """A payload or topic that is not valid under this schema; the message says why.

    ``reason`` is a short code from :data:`WIRE_REASONS` (what an operator counts rejects by).
    """

    def __init__(self, message: str, reason: str = "envelope_invalid"):
        super().__init__(message)
        self.reason = reason


def _utc_text(v: str) -> str:
    """ISO-8601 with a UTC offset (``Z`` or ``+00:00``); the text is kept as sent."""
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as err:
        raise ValueError(f"{v[:40]!r} is not an ISO-8601 time") from err
    if t.tzinfo is None or t.utcoffset() != timedelta(0):
        raise ValueError(f"{v[:40]!r} is not UTC (want a 'Z' or '+00:00' suffix)")
    return v


def utc_datetime(v: str) -> datetime:
    """A schema-valid UTC time text as an aware datetime."""
    return datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))


def check_plausible_time(t_utc: str, now_utc: datetime, what: str = "t_utc") -> None:
    """Raise ``WireError(bad_time)`` for a time before 2000 or more than a day after ``now_utc``."""
    t = utc_datetime(t_utc)
    if not EARLIEST_UTC <= t <= now_utc + FUTURE_SLACK:
        raise WireError(f"{what} {t_utc} is outside {EARLIEST_UTC:%Y-%m-%d} .. now + 1 day "
                        "(a unit with an unsynchronised clock sends clock_valid false)", "bad_time")


#: ISO-8601 UTC time text (``2026-11-27T19:00:00.000Z``); its plausible range is checked at decode.
UtcTime = Annotated[str, StringConstraints(max_length=40), AfterValidator(_utc_text)]
#: An identifier from the field (task, command, alarm, track): bounded, no control characters.
WireId = Annotated[str, StringConstraints(max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")]
#: Free text: bounded.
Text = Annotated[str, StringConstraints(max_length=MAX_STR)]
NonNegCount = Annotated[int, Field(ge=0, le=MAX_COUNTS)]
Cps = Annotated[float, Field(ge=0, le=MAX_CPS)]
DoseRate = Annotated[float, Field(ge=0, le=MAX_DOSE_RATE_USV_H)]
Sigma = Annotated[float, Field(ge=-1e15, le=1e15)]  # a strong source on ~0 background
Duration = Annotated[float, Field(ge=0, le=MAX_DURATION_S)]


class _Strict(BaseModel):
    # allow_inf_nan=False: NaN and +-Inf are refused everywhere ('non_finite'); str_max_length caps
    # every string (dict keys included) that has no tighter bound of its own.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=MAX_STR)


# --------------------------------------------------------------------------- common parts
class Position(_Strict):
    """WGS-84 fix plus the same point in the site's local ENU frame (metres from the origin)."""

    lat_deg: float = Field(ge=-90, le=90)
    lon_deg: float = Field(ge=-180, le=180)
    alt_m: float = Field(ge=-MAX_ALTITUDE_M, le=MAX_ALTITUDE_M)
    x_m: float = Field(ge=-EARTH_EXTENT_M, le=EARTH_EXTENT_M)
    y_m: float = Field(ge=-EARTH_EXTENT_M, le=EARTH_EXTENT_M)
    z_m: float = Field(ge=-EARTH_EXTENT_M, le=MAX_ALTITUDE_M)  # the far side of the Earth is below the plane
    fix_quality: int = Field(ge=0, le=8)
    hdop: float | None = Field(default=None, ge=0, le=100)  # NMEA caps HDOP at 99.99


class SensorHealth(_Strict):
    state: Literal["not_opened", "ok", "degraded", "failed", "closed"]
    detail: Text = ""
    errors: NonNegCount = 0


# --------------------------------------------------------------------------- bodies
class Birth(_Strict):
    unit_type: Literal["mobile", "handheld", "camerabox", "cctv"]
    profile: Text
    software_version: Annotated[str, StringConstraints(max_length=64)]
    site: Annotated[str, StringConstraints(max_length=128)]
    sensors: dict[str, SensorHealth] = Field(max_length=32)
    devices: list[dict[str, Any]] = Field(default_factory=list, max_length=32)
    pending_backfill: NonNegCount = 0
    # Sequence integrity (controller.sequence_guard): the last seq this boot had consumed when the
    # birth was built, and the previous boot of this unit with its last seq, so the controller
    # knows where each boot ends (a loss at the end of a boot shows as a gap) and that the previous
    # boot's backlog, still in the outbox, is this unit's.
    last_seq: int = Field(default=0, ge=0, lt=MAX_SEQ)
    prev_boot_id: str | None = Field(default=None, pattern=r"^[\x21-\x7e]{8,64}$")
    prev_boot_last_seq: int | None = Field(default=None, ge=0, lt=MAX_SEQ)


class Death(_Strict):
    reason: Text = "connection lost"
    # the boot's last seq, on a clean shutdown (the Last Will, armed at connect, cannot know it)
    last_seq: int | None = Field(default=None, ge=0, lt=MAX_SEQ)


class Health(_Strict):
    uptime_s: Duration
    cpu_pct: float = Field(ge=0, le=100 * 1024)  # a process on n cores reports up to n x 100 %
    mem_rss_mb: float = Field(ge=0, le=1e7)
    outbox_pending: NonNegCount
    queue_depth: dict[str, NonNegCount] = Field(max_length=64)
    loop_lag_ms: float = Field(ge=0, le=MAX_DURATION_S * 1e3)
    sensors: dict[str, SensorHealth] = Field(max_length=32)
    position: Position | None = None
    available: bool = True  # handhelds: free to take a task
    task_id: WireId | None = None
    commands_rejected: NonNegCount = 0  # commands refused by the unit's gate since start (agent.runtime.command_gate)
    # No silent loss (issue 15; agent.link.outbox.Outbox.report): all optional, so older agents'
    # health messages still validate.  Counters run since the agent process started.
    outbox_state: Annotated[str, StringConstraints(max_length=32)] = "ok"  # or the disk fault now: ENOSPC, EIO, ...
    outbox_errors: dict[Annotated[str, StringConstraints(max_length=32)], NonNegCount] = Field(
        default_factory=dict, max_length=16)  # failed outbox disk operations by kind (ENOSPC, EIO, deleted, ...)
    messages_lost: dict[Annotated[str, StringConstraints(max_length=32)], NonNegCount] = Field(
        default_factory=dict, max_length=16)  # sequenced messages lost by reason; each is a seq gap
    outbox_in_memory: NonNegCount = 0  # messages held in memory because the disk refused them
    status_write_failures: NonNegCount = 0  # status.json writes that failed (agent.runtime.status_file)


class Measurement(_Strict):
    """One acquisition interval of a radiation unit (1 s on vehicles)."""

    interval_s: float = Field(gt=0, le=86400)
    live_time_s: float = Field(ge=0, le=86400)
    gross_counts: NonNegCount
    gross_cps: Cps
    background_cps: Cps | None = None
    dose_rate_usv_h: DoseRate | None = None
    detector_model: Annotated[str, StringConstraints(max_length=128)]
    position: Position | None = None
    speed_m_s: float | None = Field(default=None, ge=0, le=150)  # ground speed; 150 m/s = 540 km/h
    spectrum: list[NonNegCount] | None = Field(default=None, max_length=MAX_CHANNELS)  # raw counts; on alarms / dwell
    energy_calibration_kev: list[float] | None = Field(default=None, max_length=16)  # polynomial coefficients


class Nuclide(_Strict):
    name: Annotated[str, StringConstraints(max_length=64)]
    confidence: float = Field(ge=0, le=1)


class Alarm(_Strict):
    alarm_id: WireId
    detector: Annotated[str, StringConstraints(max_length=64)]
    significance_sigma: Sigma
    peak_cps: Cps
    background_cps: Cps
    t_peak_utc: UtcTime
    position: Position | None
    threshold_sigma: Sigma
    false_alarm_rate_per_h: float | None = Field(default=None, ge=0, le=1e9)
    nuclides: list[Nuclide] = Field(default_factory=list, max_length=64)
    dose_rate_usv_h: DoseRate | None = None


TaskState = Literal[
    "open", "dispatched", "accepted", "on_site", "measuring", "confirmed", "cleared", "timed_out",
    "rejected", "cancelled",
]


class TaskResult(_Strict):
    dwell_s: Duration
    gross_cps: Cps
    background_cps: Cps
    net_cps: float = Field(ge=-MAX_CPS, le=MAX_CPS)  # gross - background: may be negative
    significance_sigma: Sigma
    dose_rate_usv_h: DoseRate | None = None
    nuclides: list[Nuclide] = Field(default_factory=list, max_length=64)
    activity_mbq: float | None = Field(default=None, ge=0, le=1e12)
    distance_m: float | None = Field(default=None, ge=0, le=EARTH_EXTENT_M)


class TaskEvent(_Strict):
    """A handheld reports progress on a task it was dispatched to (its acknowledgement)."""

    task_id: WireId
    cmd_id: WireId
    state: Literal["accepted", "rejected", "on_site", "measuring", "confirmed", "cleared"]
    position: Position | None = None
    result: TaskResult | None = None
    reason: Text = ""


class Vitals(_Strict):
    """Camera box: derived signals of one anonymous track (no images)."""

    track_id: WireId
    heart_rate_bpm: float | None = Field(default=None, ge=0, le=400)
    hr_quality: float | None = Field(default=None, ge=-1e6, le=1e6)
    respiration_rate_bpm: float | None = Field(default=None, ge=0, le=200)
    blink_rate_per_min: float | None = Field(default=None, ge=0, le=600)
    abnormal_score: float | None = Field(default=None, ge=-1e6, le=1e6)
    alert: bool = False
    evidence: dict[str, Annotated[float, Field(ge=-1e9, le=1e9)]] = Field(default_factory=dict, max_length=64)
    #: Inter-beat intervals completed since this track's previous message, oldest first (the
    #: pulse band 42-240 bpm is 250-1430 ms; at most one message interval's worth is sent).
    ibi_ms: list[Annotated[float, Field(ge=200.0, le=2000.0)]] = Field(default_factory=list, max_length=256)


# --------------------------------------------------------------------------- CCTV tracklets (issue 19)
#: Hall ground-plane coordinates are metres in the site's hall frame; an arrival hall is < 1 km.
HALL_EXTENT_M = 1e4
MAX_TRACKLET_SAMPLES = 64  #: one message per ~2-6 s of a track at 10-15 fps, subsampled
#: Appearance layout: per body part, 8 hue bins of the chromatic foreground pixels then 3 grey
#: bins (dark, mid, light) of the achromatic ones, summing to 1 (agent/cctv/appearance.py).
APPEARANCE_LAYOUT = "hue8+grey3/v1"
HistBin = Annotated[float, Field(ge=0.0, le=1.0)]


class TrackletSample(_Strict):
    """One ground-plane position of a track: ``dt_s`` after the message's ``t_start_utc``."""

    dt_s: float = Field(ge=0.0, le=3600.0)
    x_m: float = Field(ge=-HALL_EXTENT_M, le=HALL_EXTENT_M)
    y_m: float = Field(ge=-HALL_EXTENT_M, le=HALL_EXTENT_M)
    confidence: float = Field(ge=0.0, le=1.0)


class Appearance(_Strict):
    """Compact appearance of a tracklet: colour by body part and a height estimate (no pixels)."""

    layout: Literal["hue8+grey3/v1"] = APPEARANCE_LAYOUT
    head: list[HistBin] = Field(default_factory=list, max_length=16)
    torso: list[HistBin] = Field(default_factory=list, max_length=16)
    legs: list[HistBin] = Field(default_factory=list, max_length=16)
    height_m: float | None = Field(default=None, ge=0.3, le=3.0)
    n_frames: NonNegCount = 0  #: frames averaged into the histograms


class Tracklet(_Strict):
    """Camera box: one anonymous person track of one camera, on the hall's ground plane.

    Why no boxes or pixels: the controller associates tracks across cameras on ground positions,
    transit times and this appearance summary; nothing here can be turned back into a picture.
    ``evidence_clip`` names a clip kept on the box, only when the site switched evidence clips on.
    """

    camera_id: Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    track_id: WireId  #: random per boot and camera: no identity, no link to earlier boots
    state: Literal["active", "ended"]
    t_start_utc: UtcTime
    samples: list[TrackletSample] = Field(max_length=MAX_TRACKLET_SAMPLES)
    appearance: Appearance
    evidence_clip: WireId | None = None


BODY_TYPES: dict[str, type[_Strict]] = {
    "birth": Birth,
    "death": Death,
    "health": Health,
    "measurement": Measurement,
    "alarm": Alarm,
    "task_event": TaskEvent,
    "vitals": Vitals,
    "tracklet": Tracklet,
}
UPLINK_KINDS = tuple(BODY_TYPES)
SESSION_KINDS = ("birth", "death")  # seq == 0, not de-duplicated
SEQUENCED_KINDS = tuple(k for k in UPLINK_KINDS if k not in SESSION_KINDS)


class Envelope(_Strict):
    schema_: Literal[1] = Field(alias="schema", default=SCHEMA_VERSION)
    kind: Literal["birth", "death", "health", "measurement", "alarm", "task_event", "vitals", "tracklet"]
    unit_id: str = Field(pattern=UNIT_ID_PATTERN)
    boot_id: str = Field(min_length=8, max_length=64, pattern=r"^[\x21-\x7e]+$")  # printable ASCII (a uuid4 hex)
    seq: int = Field(ge=0, lt=MAX_SEQ)
    t_utc: UtcTime  # ISO-8601 UTC, e.g. 2026-11-27T19:00:00.000Z; range checked at decode when clock_valid
    t_mono_s: float = Field(ge=-MAX_DURATION_S, le=MAX_DURATION_S)
    clock_valid: bool
    delivery: Literal["live", "backfill"] = "live"
    body: dict[str, Any]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False,
                              str_max_length=MAX_STR)


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
        raise WireError(f"topic '{topic[:200]}' is not {TOPIC_ROOT}/up/<unit>/<kind>", "bad_topic")
    unit_id, kind = parts[3], parts[4]
    if kind not in BODY_TYPES:
        raise WireError(f"topic '{topic[:200]}': unknown kind '{kind[:64]}'", "unknown_kind")
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
    return f"{where}: {e['msg'][:200]}{more}"


# Fields whose negative value is a "negative count" (row 10) rather than a generic range error.
_COUNT_FIELDS = frozenset({"gross_counts", "spectrum", "gross_cps", "background_cps", "peak_cps", "net_cps",
                           "errors", "outbox_pending", "pending_backfill", "queue_depth"})
_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def _reason(err: ValidationError, default: str) -> str:
    """The reason code of a validation failure: its first error, specific where the type says so."""
    e = err.errors()[0]
    loc = tuple(str(p) for p in e["loc"])
    kind = e["type"]
    if kind == "finite_number":
        return "non_finite"
    if loc[:1] == ("seq",):
        return "seq_range"
    if loc[:1] == ("unit_id",):
        return "bad_unit_id"
    if loc and loc[-1] in ("t_utc", "t_peak_utc"):
        return "bad_time"
    if kind in _RANGE_ERRORS:
        value = e.get("input")
        negative = isinstance(value, int | float) and value < 0
        return "negative_count" if negative and _COUNT_FIELDS.intersection(loc) else "out_of_range"
    if kind in ("too_long", "string_too_long"):
        return "too_long"
    return default


class _NonFinite(ValueError):
    """JSON that spells NaN / Infinity, or a number too large for a double."""


def _refuse_constant(name: str) -> float:
    raise _NonFinite(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    v = float(text)
    if v != v or v in (float("inf"), float("-inf")):
        raise _NonFinite(f"{text[:40]} is not a finite number")
    return v


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(payload: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text, found without parsing it.

    Why before :func:`json.loads`: its C scanner recurses once per level, and ~1,000 levels raise
    ``RecursionError`` (issue 14, row 11), deeper ones may exhaust a thread's stack. Strings are
    cut out first (brackets inside them do not nest), then the running depth is a cumulative sum.
    The result exceeds ``limit`` exactly when the nesting does; below it, it is an upper bound
    (a text with at most ``limit`` brackets cannot nest deeper, and is not scanned).
    """
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return min(limit, payload.count(b"[") + payload.count(b"{"))
    brackets = _JSON_STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = np.frombuffer(brackets, dtype=np.uint8)
    depth = np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1))
    return int(depth.max())


def load_json(payload: bytes, what: str, max_bytes: int) -> Any:
    """Bounded JSON: size, nesting depth and finite numbers checked; raises WireError with a reason."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise WireError(f"{what}: payload is {type(payload).__name__}, not bytes", "not_json")
    payload = bytes(payload)
    if len(payload) > max_bytes:
        raise WireError(f"{what}: payload of {len(payload)} bytes > limit {max_bytes}", "oversized")
    depth = json_depth(payload)
    if depth > MAX_JSON_DEPTH:
        raise WireError(f"{what}: JSON nested more than {MAX_JSON_DEPTH} deep", "too_deep")
    try:
        return json.loads(payload, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NonFinite as err:
        raise WireError(f"{what}: {err}", "non_finite") from err
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError, int > 4300 digits
        raise WireError(f"{what}: payload is not JSON ({str(err)[:200]})", "not_json") from err


def decode_uplink(topic: str, payload: bytes, max_bytes: int = MAX_UPLINK_BYTES,
                  now_utc: datetime | None = None) -> tuple[Envelope, BaseModel]:
    """Validate topic and payload; return the envelope and its typed body, or raise WireError.

    Every refusal carries a reason code (:data:`WIRE_REASONS`); nothing an outsider can send makes
    this raise anything else. ``now_utc`` (default: the system clock) bounds plausible times: the
    controller passes its own clock, so a simulated fleet is judged by simulated time.
    """
    unit_id, kind = parse_uplink_topic(topic)
    where = topic[:200]
    raw = load_json(payload, where, max_bytes)
    if not isinstance(raw, dict):
        raise WireError(f"{where}: payload is not a JSON object", "not_object")
    if raw.get("schema") != SCHEMA_VERSION:
        raise WireError(f"{where}: unsupported schema version {str(raw.get('schema'))[:20]!r} "
                        f"(want {SCHEMA_VERSION})", "bad_schema")
    try:
        env = Envelope.model_validate(raw)
    except ValidationError as err:
        raise WireError(f"{where}: envelope {_first_error(err)}", _reason(err, "envelope_invalid")) from err
    if env.unit_id != unit_id or env.kind != kind:
        code = "topic_mismatch" if re.match(UNIT_ID_PATTERN, unit_id) else "bad_unit_id"
        raise WireError(f"{where}: envelope says {env.unit_id}/{env.kind}, topic says {unit_id[:64]}/{kind}", code)
    if (kind in SESSION_KINDS) != (env.seq == 0):
        raise WireError(f"{where}: seq {env.seq} not allowed for kind {kind}", "bad_seq")
    now = now_utc or datetime.now(UTC)
    if env.clock_valid:
        check_plausible_time(env.t_utc, now)
    try:
        body = BODY_TYPES[kind].model_validate(env.body)
    except ValidationError as err:
        raise WireError(f"{where}: {kind} body {_first_error(err)}", _reason(err, "body_invalid")) from err
    if env.clock_valid and isinstance(body, Alarm):
        check_plausible_time(body.t_peak_utc, now, "t_peak_utc")
    return env, body


def decode_command(payload: bytes) -> Command:
    raw = load_json(payload, "command", MAX_UPLINK_BYTES)  # bounded: size, depth, finite numbers
    try:
        return Command.model_validate(raw)
    except ValidationError as err:
        raise WireError(f"command {_first_error(err)}", "command_invalid") from err
