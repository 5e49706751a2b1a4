"""Unit profile: the YAML that makes one agent a mobile unit, a handheld or a camera box.

Validated at load (pydantic, unknown keys rejected, schema version checked) so that a typo in the
field is reported with the file and the key, before any device is opened.  Layering:
defaults < file < environment (``CEDGE_BROKER_HOST`` / ``CEDGE_BROKER_PORT``) < command line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.cctv.cctv_config import CctvConfig
from agent.safe_yaml import YamlError, load_yaml_file
from agent.wire_schema import UNIT_ID_PATTERN


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteConfig(_Cfg):
    """Local ENU frame of the site: x east, y north, z up, metres from the origin."""

    name: str = "site"
    origin_lat_deg: float = Field(ge=-90, le=90)
    origin_lon_deg: float = Field(ge=-180, le=180)
    origin_alt_m: float = 0.0


class DriverConfig(_Cfg):
    driver: str
    params: dict[str, Any] = Field(default_factory=dict)


class BrokerConfig(_Cfg):
    """Where the broker is and how this process proves who it is.

    A site broker (``cedge site init``) admits only TLS clients with a certificate from the site CA
    and takes the certificate's Common Name as username *and* client id, so: ``tls_ca_file`` (the
    site CA, to check the broker), ``tls_cert_file`` + ``tls_key_file`` (this process's identity),
    and ``client_id`` fixed to that identity - set from the certificate when not given, an error
    when it differs (the broker would use the certificate's anyway).  The files are checked at
    load.  Plain TCP without certificates remains possible for lab brokers and the anonymous test
    broker; nothing ``cedge site`` or the demo writes uses it.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    keepalive_s: int = Field(default=15, ge=5, le=600)
    protocol: Literal[5, 311] = 5
    username: str | None = None
    password: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    reconnect_max_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _tls_files(self) -> BrokerConfig:
        from agent.link.tls_identity import CertificateError, certificate_identity, check_key_pair

        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together (certificate and its private key)")
        if self.tls_cert_file and not self.tls_ca_file:
            raise ValueError("a client certificate needs tls_ca_file (the site CA) to check the broker's certificate")
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ValueError(f"{name}: no such file {value}")
        if self.tls_cert_file and self.tls_key_file:
            try:
                check_key_pair(self.tls_cert_file, self.tls_key_file)
                ident = certificate_identity(self.tls_cert_file)
            except CertificateError as err:
                raise ValueError(str(err)) from err
            if "client_id" in self.model_fields_set and self.client_id != ident:
                raise ValueError(f"client_id {self.client_id!r} is not the certificate's identity {ident!r} "
                                 "(the broker uses the certificate's)")
            self.client_id = ident
        return self

    @property
    def identity(self) -> str | None:
        """The identity the broker will see (certificate Common Name), None without a certificate."""
        return self.client_id if self.tls_cert_file else None


class OutboxConfig(_Cfg):
    """The durable outbox (agent.link.outbox).

    The disk budget is ``max_messages`` rows and ``max_bytes`` (payload + topic + ~100 B per row;
    the file adds free pages and a WAL of at most ~1 MiB).  When it is full, health messages go
    first, then the oldest measurements/vitals; alarms and task events are never dropped (the
    budget is exceeded for them).  ``memory_max_*`` bound the in-memory queue that holds messages
    while the disk refuses writes (full, read-only, failing); alarms and task events may use up to
    4x that before one is lost.  Every drop is counted and reported in health messages.
    """

    path: str = "outbox.sqlite"
    max_messages: int = Field(default=2_000_000, gt=0)
    max_bytes: int = Field(default=1024**3, ge=64 * 1024)  # 1 GiB: days of measurements offline
    memory_max_messages: int = Field(default=10_000, ge=10, le=10_000_000)
    memory_max_bytes: int = Field(default=32 * 1024**2, ge=64 * 1024, le=4 * 1024**3)
    max_inflight: int = Field(default=200, ge=1, le=65535)
    live_window_s: float = Field(default=5.0, gt=0)


class AcquisitionConfig(_Cfg):
    interval_s: float = Field(default=1.0, gt=0)
    queue_size: int = Field(default=600, ge=1)
    send_spectrum: Literal["never", "alarm", "always"] = "alarm"
    # Height of the detector above the site's ground plane (z = 0 at site.origin_alt_m).  When set
    # it replaces GNSS altitude in reported positions: GNSS vertical error is 1.5-2x the horizontal
    # one (metres, slowly wandering), while a yard is flat and the mounting height is known to cm.
    detector_height_m: float | None = Field(default=None, ge=0, le=10)


class DetectorConfig(_Cfg):
    """Search detector of a mobile unit.

    ``spectral`` (default): agent.analysis.spectral_search - NMF background subspace + source
    templates at an explicit false-alarm rate, trained on the unit's first ``training_s`` of
    background; the gross-count detector stands in until then.  ``gross_k_sigma``: only the
    gross-count alarm (agent.analysis.gross_count), e.g. for a detector without a spectrum.
    """

    kind: Literal["spectral", "gross_k_sigma"] = "spectral"
    far_per_hour: float = Field(default=0.125, gt=0)  # spectral: 1 false alarm per 8 h of driving
    training_s: float = Field(default=120.0, ge=10)
    threshold_sigma: float = Field(default=5.0, gt=0)
    window_s: int = Field(default=2, ge=1, le=30)
    background_tau_s: float = Field(default=60.0, gt=0)
    warmup_s: float = Field(default=20.0, ge=0)
    holdoff_s: float = Field(default=10.0, ge=0)


class HealthConfig(_Cfg):
    interval_s: float = Field(default=10.0, gt=0)


class WatchdogConfig(_Cfg):
    timeout_s: float = Field(default=15.0, gt=0)


class HandheldConfig(_Cfg):
    dwell_s: float = Field(default=60.0, gt=0)
    confirm_sigma: float = Field(default=5.0, gt=0)
    background_dwell_s: float = Field(default=30.0, gt=0)


class CameraConfig(_Cfg):
    """Camera box analysis (agent.vision).  Privacy by design: only derived signals and anonymous
    track ids leave the box; ``evidence_clips`` (off by default) keeps short clips on the box when
    an alert starts, for an authorised operator to review."""

    fps: float = Field(default=30.0, gt=0, le=240)  # the camera's frame rate (analysis time base)
    vitals_interval_s: float = Field(default=5.0, gt=0)  # how often each track's vitals are published
    evidence_clips: bool = False
    evidence_dir: str | None = None
    face_mesh_model: str | None = None  # a user-provided 468-point face-mesh .tflite (optional)


class CctvUnitConfig(_Cfg):
    """A CCTV camera of the arrival hall (unit_type ``cctv``, issue 19): which calibrated camera this
    unit is, and its people-tracking chain (agent.cctv).  Only anonymous ground-plane tracklets leave
    the unit (wire_schema.Tracklet); the controller associates them across cameras."""

    camera_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    calibration_file: str  # calib.json (schema cedge.hall_calib/1) holding this camera's K, R, C
    pipeline: CctvConfig = Field(default_factory=CctvConfig)


class CommandAuthConfig(_Cfg):
    """Which controller commands this unit obeys (agent.command_auth).

    ``keys_dir``: directory of pinned controller public keys, one PEM ``*.pub`` per key (several
    during a key rotation); relative paths are taken from the agent's state dir.  With
    ``require_signed_commands`` (the default) a command is obeyed only if it carries a valid
    Ed25519 signature under one of those keys, names this unit, is within its validity window
    (``max_clock_skew_s`` of tolerance either side) and was never seen before.  A unit that pins no
    key still measures and reports, but refuses every command.  ``require_signed_commands: false``
    is for lab set-ups without a site CA only; it is never the default.
    """

    keys_dir: str = "command_keys"
    require_signed_commands: bool = True
    max_clock_skew_s: float = Field(default=30.0, ge=0, le=3600)
    max_ttl_s: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)
    max_nonces: int = Field(default=10_000, ge=16, le=1_000_000)


class UnitProfile(_Cfg):
    schema_: Literal[1] = Field(alias="schema")
    unit_id: str = Field(pattern=UNIT_ID_PATTERN)
    unit_type: Literal["mobile", "handheld", "camerabox", "cctv"]
    profile: str = "custom"
    site: SiteConfig
    clock: DriverConfig = Field(default_factory=lambda: DriverConfig(driver="system"))
    devices: dict[Literal["gamma", "gnss", "camera", "display"], DriverConfig] = Field(default_factory=dict)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    acquisition: AcquisitionConfig = Field(default_factory=AcquisitionConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    handheld: HandheldConfig = Field(default_factory=HandheldConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    cctv: CctvUnitConfig | None = None
    command_auth: CommandAuthConfig = Field(default_factory=CommandAuthConfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("devices")
    @classmethod
    def _devices_fit_unit(cls, v: dict[str, DriverConfig]) -> dict[str, DriverConfig]:
        return v


REQUIRED_DEVICES = {"mobile": {"gamma", "gnss"}, "handheld": {"gamma", "gnss"}, "camerabox": {"camera"},
                    "cctv": {"camera"}}


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} problem(s)"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  - {where}: {e['msg']}")
    return "\n".join(lines)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A configuration file's top-level mapping, loaded within bounds (size, alias expansion, depth)."""
    p = Path(path)
    try:
        data = load_yaml_file(p)
    except YamlError as err:
        raise ConfigError(str(err)) from err
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def profile_from_dict(data: dict[str, Any], source: str = "profile") -> UnitProfile:
    try:
        prof = UnitProfile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from err
    if prof.unit_type == "cctv" and prof.cctv is None:
        raise ConfigError(f"{source}: unit_type cctv needs a cctv section (camera_id, calibration_file)")
    missing = REQUIRED_DEVICES[prof.unit_type] - set(prof.devices)
    if missing:
        raise ConfigError(f"{source}: unit_type {prof.unit_type} needs devices {sorted(missing)}")
    if prof.broker.identity is not None and prof.broker.identity != prof.unit_id:
        raise ConfigError(f"{source}: broker.tls_cert_file is the certificate of {prof.broker.identity!r}, "
                          f"not of unit {prof.unit_id!r} (the broker would let it publish only as that identity)")
    return prof


def apply_env(prof: UnitProfile, env: dict[str, str] | None = None) -> UnitProfile:
    env = dict(os.environ) if env is None else env
    if "CEDGE_BROKER_HOST" in env:
        prof.broker.host = env["CEDGE_BROKER_HOST"]
    if "CEDGE_BROKER_PORT" in env:
        try:
            prof.broker.port = int(env["CEDGE_BROKER_PORT"])
        except ValueError as err:
            raise ConfigError(f"CEDGE_BROKER_PORT={env['CEDGE_BROKER_PORT']!r} is not a port number") from err
    return prof


def load_profile(path: str | Path) -> UnitProfile:
    return apply_env(profile_from_dict(load_yaml(path), str(path)))
