"""Fleet controller configuration: one validated YAML file, usable with no file at all.

Same conventions as the unit profile (:mod:`agent.config`): pydantic models with unknown keys
rejected and a schema version checked, so a typo is reported with the file and the key before the
controller touches the broker or the database.  Layering: embedded defaults < file < environment
(``CEDGE_BROKER_HOST``, ``CEDGE_BROKER_PORT``, ``CEDGE_CONTROLLER_DB``) < command line.

The embedded defaults describe a loopback broker, a database in the working directory, the system
clock and the demo yard's site origin, so ``cedge controller run`` works out of the box.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.config import (
    BrokerConfig,
    ConfigError,
    DriverConfig,
    SiteConfig,
    format_validation_error,
    load_yaml,
)

__all__ = [
    "CctvConfig",
    "ConfigError",
    "ControllerBrokerConfig",
    "ControllerConfig",
    "DispatchConfig",
    "IngestConfig",
    "LivenessConfig",
    "LocalizationConfig",
    "SequenceConfig",
    "WebConfig",
    "apply_controller_env",
    "controller_config_from_dict",
    "default_controller_config",
    "load_controller_config",
]


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ControllerBrokerConfig(BrokerConfig):
    """Broker connection of the controller: MQTT 5 with a persistent session.

    Why persistent: with ``clean_start=False``, a fixed ``client_id`` and a session expiry the
    broker keeps the subscription and queues QoS-1 uplinks while the controller is down (restart,
    upgrade); the controller acknowledges each one only after it is committed to SQLite.

    Identity: on a site broker (``cedge site``) the controller connects with ``tls_cert_file`` /
    ``tls_key_file``, and the certificate's Common Name is its username and client id there (the
    inherited check sets ``client_id`` from it, or refuses a different one).  Each controller
    process (one per shared-subscription member) has its own certificate, so client ids are unique
    and no process, and no unit, can take over another's session.
    """

    client_id: str = Field(default="cedge-controller", min_length=1, max_length=128)
    shared_subscription_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, le=0xFFFFFFFF)
    receive_maximum: int = Field(default=200, ge=1, le=65535)  # un-acked QoS-1 messages in flight to us

    @model_validator(mode="after")
    def _needs_mqtt5(self) -> ControllerBrokerConfig:
        if self.protocol != 5:
            raise ValueError("the controller needs MQTT 5 (session expiry, shared subscriptions); set protocol: 5")
        return self


class IngestConfig(_Cfg):
    max_payload_bytes: int = Field(default=1024 * 1024, gt=0)
    batch_max: int = Field(default=200, ge=1, le=10_000)  # messages committed per SQLite transaction
    reject_log_interval_s: float = Field(default=10.0, ge=0)


class LivenessConfig(_Cfg):
    stale_after_s: float = Field(default=30.0, gt=0)
    offline_after_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LivenessConfig:
        if self.offline_after_s < self.stale_after_s:
            raise ValueError("offline_after_s must be >= stale_after_s")
        return self


class DispatchConfig(_Cfg):
    """Incident grouping, fusion hold and the handheld task state machine's time-outs."""

    enabled: bool = True  # with a shared subscription, run dispatch in one controller process only
    group_radius_m: float = Field(default=30.0, gt=0)
    group_window_s: float = Field(default=900.0, gt=0)
    pass_gap_s: float = Field(default=30.0, gt=0)  # alarms of one unit further apart = separate passes
    hold_for_fusion_s: float = Field(default=60.0, ge=0)
    accept_timeout_s: float = Field(default=60.0, gt=0)
    arrive_timeout_s: float | None = Field(default=None, gt=0)  # None: distance / walk speed + margin
    walk_speed_m_s: float = Field(default=1.2, gt=0)
    arrive_margin_s: float = Field(default=120.0, ge=0)
    measure_timeout_s: float = Field(default=120.0, gt=0)  # on top of dwell_s
    max_redispatch: int = Field(default=2, ge=0)
    dwell_s: float = Field(default=60.0, gt=0)
    radius_m: float = Field(default=5.0, gt=0)
    # signed commands live this long (controller.command_signer); units refuse them afterwards
    command_ttl_s: float = Field(default=120.0, gt=0, le=3600)
    cancel_ttl_s: float = Field(default=3600.0, gt=0, le=3600)  # a unit back from an outage still learns it


class LocalizationConfig(_Cfg):
    """Source localization (controller.localization; docs/localization.md).

    ``site_file``: the yard's container rows and stacks (configs/sites/*.yaml); with it the source
    is searched inside cargo only, cargo attenuates, and the height bound is the highest stack.
    ``position_sigma_m`` null: each measurement's GNSS error from its fix quality
    (``gnss_sigma_by_fix_m``), so the GNSS term of the 95 % region counts only where there is one;
    a number applies to every unit (0: positions exact).
    """

    prior_z_min_m: float = 0.0
    prior_z_max_m: float = 10.5  # without a site file: four stacked ISO containers (4 x 2.59 m)
    mu_air_per_m: float = Field(default=0.0093, ge=0)  # 662 keV: 0.0775 cm2/g x 1.205e-3 g/cm3 (NIST XCOM)
    search_radius_m: float = Field(default=40.0, gt=0)
    time_margin_s: float = Field(default=120.0, ge=0)
    near_field_m: float = Field(default=0.3, gt=0)
    subsamples: int = Field(default=1, ge=1, le=50)  # minimum path sub-samples (1 per metre of path above it)
    ambiguity_dnll: float = Field(default=2.0, gt=0)
    min_measurements: int = Field(default=3, ge=3)
    position_sigma_m: float | None = Field(default=None, ge=0)
    gnss_sigma_by_fix_m: dict[int, float] = Field(
        default_factory=lambda: {1: 1.0, 2: 0.5, 3: 0.5, 4: 0.02, 5: 0.3, 6: 3.0, 7: 0.0, 8: 1.0})
    strength_per: Literal["unit", "detector_model"] = "detector_model"  # see localization.from_rows
    site_file: str | None = None
    detect_threshold: float = Field(default=20.0, gt=0)
    second_source_threshold: float = Field(default=200.0, gt=0)
    max_sources: int = Field(default=2, ge=1, le=2)
    height_resolved_sigma_m: float = Field(default=0.75, gt=0)

    @model_validator(mode="after")
    def _z_range(self) -> LocalizationConfig:
        if self.prior_z_max_m <= self.prior_z_min_m:
            raise ValueError("prior_z_max_m must be > prior_z_min_m")
        if any(not 0 <= k <= 8 or not v >= 0 for k, v in self.gnss_sigma_by_fix_m.items()):
            raise ValueError("gnss_sigma_by_fix_m: keys are GGA fix qualities 0..8, values sigmas >= 0")
        if self.site_file is not None:
            from controller.localization.site import SiteError, load_site

            try:
                load_site(self.site_file)
            except SiteError as err:
                raise ValueError(f"site_file: {err}") from err
        return self


class SequenceConfig(_Cfg):
    """Sequence integrity of uplinks (controller.sequence_guard).

    ``require_birth``: a boot exists only once the unit's birth announced it; messages of an
    unannounced boot are parked (bounded by ``max_parked_per_unit`` and ``max_parked_bytes``) and
    stored when the birth arrives, or rejected ``boot_not_announced`` after ``park_timeout_s``.
    A seq more than ``max_seq_jump`` + ``max_msgs_per_s`` x (seconds since the reference) beyond the
    highest seq known for its boot is parked the same way (``seq_far_ahead``).  While messages are
    parked the controller asks the unit for a birth (signed ping) at most every ``rebirth_interval_s``.
    """

    require_birth: bool = True
    park_timeout_s: float = Field(default=300.0, gt=0)
    max_seq_jump: int = Field(default=1000, ge=1)
    max_msgs_per_s: float = Field(default=50.0, gt=0)
    max_parked_per_unit: int = Field(default=10_000, ge=1)
    max_parked_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    rebirth_interval_s: float = Field(default=30.0, gt=0)


class WebConfig(_Cfg):
    """The operator console (controller.web): a browser UI and JSON API served by the controller.

    On by default on loopback: the control room opens it on the controller's host, and nothing is
    reachable from the network unless ``host`` says so.  ``port`` 0 takes a free port; a busy fixed
    port falls back to a free one (logged), so a second controller on the host still starts.  The
    address actually bound is written to ``url_file`` (default ``<db_path>.console.json``).
    """

    enabled: bool = True
    host: str = Field(default="127.0.0.1", min_length=1, max_length=253)
    port: int = Field(default=8470, ge=0, le=65535)
    session_ttl_s: float = Field(default=12 * 3600.0, gt=0, le=7 * 86400.0)
    poll_interval_s: float = Field(default=0.2, gt=0, le=10.0)  # SSE: how often the store is polled
    url_file: str | None = None
    tls_cert_file: str | None = None  # both set: HTTPS
    tls_key_file: str | None = None
    # extra host names the console may be reached by (Host header; DNS-rebinding defence,
    # controller.web.host_check); the bound host, and on loopback localhost/127.0.0.1/::1, always are
    allowed_hosts: list[str] = Field(default_factory=list, max_length=64)
    # the site plan on the map: container rows and stacks (configs/sites/*.yaml; default: the
    # localization's site_file), and an optional background image the site supplies (PNG/JPEG),
    # placed by the local-metre bounds of its edges [x_min, y_min, x_max, y_max]
    site_file: str | None = None
    site_image_file: str | None = None
    site_image_bounds_m: tuple[float, float, float, float] | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("web: tls_cert_file and tls_key_file go together")
        if (self.site_image_file is None) != (self.site_image_bounds_m is None):
            raise ValueError("web: site_image_file and site_image_bounds_m go together")
        b = self.site_image_bounds_m
        if b is not None and not (b[0] < b[2] and b[1] < b[3]):
            raise ValueError("web: site_image_bounds_m is [x_min, y_min, x_max, y_max] with min < max")
        return self


class CctvConfig(_Cfg):
    """Hall CCTV behaviour alerts (issue 19): camera boxes' tracklets -> cross-camera trajectories ->
    behaviour alerts (controller.cctv.live_feed).  Absent from the config: off.

    The hall and rules files are read and cross-checked when the config is loaded, so a misspelt
    zone or a missing file stops the start with its name instead of turning the alerts off later.
    ``retention_max_age_s`` overrides the rules file's ``retention.max_age_s`` (how long tracklets
    and trajectories are kept in memory; alerts are stored, with their evidence, in the database).
    """

    hall_file: str = Field(min_length=1, max_length=1000)
    rules_file: str = Field(min_length=1, max_length=1000)
    retention_max_age_s: float | None = Field(default=None, gt=0, le=7 * 86400.0)
    step_interval_s: float = Field(default=5.0, gt=0, le=600)  # re-association period, wall seconds
    max_tracklets: int = Field(default=50_000, ge=10, le=1_000_000)
    max_open_tracks: int = Field(default=5000, ge=10, le=100_000)
    max_pending: int = Field(default=10_000, ge=10, le=1_000_000)  # finished tracklets waiting for a step
    max_evidence_bytes: int = Field(default=64 * 1024, ge=1024, le=4 * 1024 * 1024)

    @model_validator(mode="after")
    def _files_load(self) -> CctvConfig:
        from controller.cctv.behaviour_rules import RulesError, load_rules
        from controller.cctv.hall_map import load_hall_map

        try:
            load_rules(self.rules_file, load_hall_map(self.hall_file))
        except (RulesError, OSError, ValueError) as err:
            raise ValueError(f"cctv: {err}") from err
        return self


def _default_site() -> SiteConfig:
    # The demo yard's origin (configs/scenarios/demo_yard.yaml), so a file-less run fits the demo.
    return SiteConfig(name="demo-yard", origin_lat_deg=51.95, origin_lon_deg=4.05, origin_alt_m=5.0)


class ControllerConfig(_Cfg):
    schema_: Literal[1] = Field(alias="schema", default=1)
    site: SiteConfig = Field(default_factory=_default_site)
    broker: ControllerBrokerConfig = Field(default_factory=ControllerBrokerConfig)
    db_path: str = "controller.sqlite"
    # issue 20: the store as a URL - postgresql://user@host/db (several controllers on one database),
    # sqlite:///path or a path; unset: the SQLite file db_path (controller.store.location)
    store: str | None = Field(default=None, min_length=1, max_length=2000)
    db_synchronous: Literal["FULL", "NORMAL"] = "FULL"  # FULL: an acked message survives power loss
    clock: DriverConfig = Field(default_factory=lambda: DriverConfig(driver="system"))
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    liveness: LivenessConfig = Field(default_factory=LivenessConfig)
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig)
    localization: LocalizationConfig = Field(default_factory=LocalizationConfig)
    sequence: SequenceConfig = Field(default_factory=SequenceConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    cctv: CctvConfig | None = None  # hall CCTV behaviour alerts (issue 19); None: off
    # Command integrity: every command is signed with this Ed25519 key (PEM, `cedge site init`
    # writes it); units refuse unsigned ones.  command_key_id is checked against the key at start.
    command_signing_key: str | None = None
    command_key_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{8,64}$")
    # Enrolment: uplinks of units not listed are rejected (unit_not_enrolled), never auto-created.
    # enrolled_units_file is re-read when it changes (`cedge site enroll/revoke`: DIR/enrolled.yaml).
    # require_enrolment defaults to true when a list or file is given; false keeps accepting any unit.
    enrolled_units: list[str] | None = None
    enrolled_units_file: str | None = None
    require_enrolment: bool | None = None
    tick_s: float = Field(default=1.0, gt=0)  # dispatcher / liveness period, clock seconds
    status_interval_s: float = Field(default=30.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _enrolment_source(self) -> ControllerConfig:
        listed = self.enrolled_units is not None or self.enrolled_units_file is not None
        if self.require_enrolment and not listed:
            raise ValueError("require_enrolment is true but neither enrolled_units nor enrolled_units_file is set")
        if self.require_enrolment is False and listed:
            raise ValueError("enrolled_units/enrolled_units_file given but require_enrolment is false")
        if self.web.site_file is None and self.localization.site_file is not None:
            self.web.site_file = self.localization.site_file  # the console draws the yard the localizer uses
        return self

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: str | None) -> str | None:
        if v is not None:
            from controller.store.location import parse_store_location

            parse_store_location(v)  # ValueError names the unknown scheme
        return v

    @property
    def store_location(self) -> str:
        """Where the store is: ``store`` if given, else the SQLite file ``db_path``."""
        return self.store or self.db_path

    @property
    def enrolment_required(self) -> bool:
        return self.require_enrolment if self.require_enrolment is not None else (
            self.enrolled_units is not None or self.enrolled_units_file is not None)


def controller_config_from_dict(data: dict[str, Any], source: str = "controller config") -> ControllerConfig:
    try:
        return ControllerConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from err


def default_controller_config() -> ControllerConfig:
    return ControllerConfig()


def apply_controller_env(cfg: ControllerConfig, env: dict[str, str] | None = None) -> ControllerConfig:
    env = dict(os.environ) if env is None else env
    if "CEDGE_BROKER_HOST" in env:
        cfg.broker.host = env["CEDGE_BROKER_HOST"]
    if "CEDGE_BROKER_PORT" in env:
        try:
            cfg.broker.port = int(env["CEDGE_BROKER_PORT"])
        except ValueError as err:
            raise ConfigError(f"CEDGE_BROKER_PORT={env['CEDGE_BROKER_PORT']!r} is not a port number") from err
    if "CEDGE_CONTROLLER_DB" in env:
        cfg.db_path = env["CEDGE_CONTROLLER_DB"]
    if "CEDGE_CONTROLLER_STORE" in env:
        cfg.store = env["CEDGE_CONTROLLER_STORE"] or None
    return cfg


def load_controller_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> ControllerConfig:
    """Load and validate ``path`` (embedded defaults when None), then apply the environment."""
    cfg = default_controller_config() if path is None else controller_config_from_dict(load_yaml(path), str(path))
    return apply_controller_env(cfg, env)
