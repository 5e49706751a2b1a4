"""Where each file of a site directory lives (one place, so `cedge site`, the demo and the tests agree).

    DIR/enrolled.yaml                          the registry (cedge.site.registry)
    DIR/ca/ca.crt, ca.key                      site CA; ca.key never leaves this host
    DIR/broker/mosquitto.conf, acl, crl.pem,   everything the broker host needs
               ca.crt, broker.crt, broker.key
    DIR/controller/client.crt, client.key,     the controller (identity cedge-controller)
                   ca.crt, command_signing.key
    DIR/controller/<name>/...                  further controller processes (shared subscription)
    DIR/command_keys/<key_id>.pub              controller command keys the units pin
    DIR/units/<unit>/client.crt, client.key,   everything one unit needs
                     ca.crt, command_keys/, profile-snippet.yaml [, profile.yaml]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cedge.site.registry import DEFAULT_CONTROLLER, REGISTRY_FILE

CLIENT_CERT = "client.crt"
CLIENT_KEY = "client.key"
CA_CERT = "ca.crt"
COMMAND_KEYS = "command_keys"
SIGNING_KEY = "command_signing.key"


@dataclass(frozen=True)
class SiteLayout:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> SiteLayout:
        return cls(Path(root).resolve())

    @property
    def registry(self) -> Path:
        return self.root / REGISTRY_FILE

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def broker_dir(self) -> Path:
        return self.root / "broker"

    @property
    def broker_conf(self) -> Path:
        return self.broker_dir / "mosquitto.conf"

    @property
    def broker_acl(self) -> Path:
        return self.broker_dir / "acl"

    @property
    def broker_crl(self) -> Path:
        return self.broker_dir / "crl.pem"

    @property
    def broker_cert(self) -> Path:
        return self.broker_dir / "broker.crt"

    @property
    def broker_key(self) -> Path:
        return self.broker_dir / "broker.key"

    @property
    def broker_ca(self) -> Path:
        return self.broker_dir / CA_CERT

    @property
    def command_keys(self) -> Path:
        return self.root / COMMAND_KEYS

    @property
    def signing_key(self) -> Path:
        return self.root / "controller" / SIGNING_KEY

    def controller_dir(self, name: str = DEFAULT_CONTROLLER) -> Path:
        base = self.root / "controller"
        return base if name == DEFAULT_CONTROLLER else base / name

    def unit_dir(self, unit_id: str) -> Path:
        return self.root / "units" / unit_id

    def identity_dir(self, identity: str, is_controller: bool) -> Path:
        return self.controller_dir(identity) if is_controller else self.unit_dir(identity)
