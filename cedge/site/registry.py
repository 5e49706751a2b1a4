"""``enrolled.yaml``: which identities a site has enrolled, their certificates and what was revoked.

Why one file: the broker ACL, the CRL and the controller's enrolment check are all derived from it,
so they cannot disagree.  ``units`` is the list the controller checks uplinks against (an uplink from
an id not listed is reported, never auto-created); the rest is bookkeeping for ``cedge site``
(certificate serials for revocation, the CRL number, the broker's address and files).

Identities are certificate Common Names, MQTT usernames and client ids at once, and appear in ACL
lines and topic levels, so they are restricted further than the wire schema's unit id: a letter or
digit first (no ``.``/``..``, no ``$``, no leading ``-`` that a shell tool could take for an option).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.config import ConfigError, format_validation_error, load_yaml
from cedge.site.files import write_atomic

IDENTITY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
REGISTRY_FILE = "enrolled.yaml"
DEFAULT_CONTROLLER = "cedge-controller"


def check_identity(name: str, what: str = "identity") -> str:
    """``name`` if it is a usable identity, else ValueError naming the rule."""
    if not isinstance(name, str) or not re.match(IDENTITY_PATTERN, name):
        raise ValueError(f"{what} {name!r} must match {IDENTITY_PATTERN} "
                         "(letters, digits, '_', '.', '-'; a letter or digit first; at most 64)")
    return name


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CertRecord(_Cfg):
    serial_hex: str = Field(pattern=r"^[0-9a-f]{1,40}$")
    not_after_utc: str
    issued_utc: str


class RevokedRecord(_Cfg):
    identity: str
    serial_hex: str = Field(pattern=r"^[0-9a-f]{1,40}$")
    revoked_utc: str


class SiteBroker(_Cfg):
    """Where units connect and where the broker keeps its files (paths as on the broker host)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8883, ge=1, le=65535)
    hostnames: list[str] = Field(default_factory=list)  # subjectAltName of the broker certificate
    bind_address: str = "127.0.0.1"
    conf_dir: str | None = None  # None: DIR/broker of the site itself
    persistence_dir: str | None = None  # None: <conf_dir>/data
    log_file: str | None = None  # None: stderr
    run_as_user: str | None = None


class SiteRegistry(_Cfg):
    schema_: Literal[1] = Field(alias="schema", default=1)
    site_name: str = "site"
    broker: SiteBroker = Field(default_factory=SiteBroker)
    units: list[str] = Field(default_factory=list)
    controllers: list[str] = Field(default_factory=lambda: [DEFAULT_CONTROLLER])
    command_key_ids: list[str] = Field(default_factory=list)
    unit_install_dir: str | None = None  # where units/<unit>/ lands on a unit (None: this site dir)
    certificates: dict[str, CertRecord] = Field(default_factory=dict)
    revoked: list[RevokedRecord] = Field(default_factory=list)
    crl_number: int = Field(default=0, ge=0)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _identities(self) -> SiteRegistry:
        for u in self.units:
            check_identity(u, "unit id")
        for c in self.controllers:
            check_identity(c, "controller identity")
        both = set(self.units) & set(self.controllers)
        if both:
            raise ValueError(f"identities both unit and controller: {sorted(both)}")
        if len(set(self.units)) != len(self.units) or len(set(self.controllers)) != len(self.controllers):
            raise ValueError("an identity is listed twice")
        return self

    def identities(self) -> list[str]:
        return [*self.controllers, *self.units]


def load_registry(path: str | Path) -> SiteRegistry:
    try:
        return SiteRegistry.model_validate(load_yaml(path))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from err


def save_registry(path: str | Path, reg: SiteRegistry) -> Path:
    data = reg.model_dump(by_alias=True, mode="json")
    header = ("# customs-edge site registry, kept by `cedge site` (init / enroll / revoke).\n"
              "# units: the enrolled unit ids the broker ACL and the controller accept.\n")
    return write_atomic(path, header + yaml.safe_dump(data, sort_keys=False))
