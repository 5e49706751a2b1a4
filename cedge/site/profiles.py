"""The configuration sections a site hands to its units and controllers.

A unit needs to know where the broker is, which files prove its identity (``broker.tls_*``) and
which controller keys it obeys (``command_auth.keys_dir``); the controller likewise, plus its
signing key and the enrolled-units list.  These sections are written next to the certificates
(``profile-snippet.yaml``), and merged into a whole profile when the site is given the unit's
profile template (``configs/units/*.yaml``): the template says what the unit *is* (devices, site
frame, detector), the site says whom it talks to and how.

Paths are written as the unit will see them: ``files_dir`` is where ``DIR/units/<unit>/`` is
installed on the unit (by default the site directory itself, so a demo or a test can run in place).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from cedge.site.layout import CA_CERT, CLIENT_CERT, CLIENT_KEY, COMMAND_KEYS
from cedge.site.registry import SiteRegistry

#: Keys of a template's ``broker`` section the site replaces (the rest, e.g. keepalive_s, is kept).
_SITE_BROKER_KEYS = ("host", "port", "client_id", "username", "password", "tls_ca_file", "tls_cert_file",
                     "tls_key_file")


def tls_fields(identity: str, files_dir: Path) -> dict[str, Any]:
    """The ``broker:`` keys that make a client ``identity`` (its files are in ``files_dir``)."""
    return {
        "client_id": identity,
        "tls_ca_file": str(files_dir / CA_CERT),
        "tls_cert_file": str(files_dir / CLIENT_CERT),
        "tls_key_file": str(files_dir / CLIENT_KEY),
    }


def broker_section(reg: SiteRegistry, identity: str, files_dir: Path) -> dict[str, Any]:
    """``broker:`` for one identity: the site broker over TLS with this identity's certificate."""
    return {"host": reg.broker.host, "port": reg.broker.port, **tls_fields(identity, files_dir)}


def unit_snippet(reg: SiteRegistry, unit_id: str, files_dir: Path) -> dict[str, Any]:
    """The sections of a unit profile the site decides."""
    return {"unit_id": unit_id,
            "broker": broker_section(reg, unit_id, files_dir),
            "command_auth": {"keys_dir": str(files_dir / COMMAND_KEYS)}}


def profile_from_template(template: dict[str, Any], snippet: dict[str, Any]) -> dict[str, Any]:
    """``template`` with the site's sections merged in (``unit_id``, ``broker``, ``command_auth``)."""
    prof = copy.deepcopy(template)
    prof["unit_id"] = snippet["unit_id"]
    broker = {k: v for k, v in dict(prof.get("broker") or {}).items() if k not in _SITE_BROKER_KEYS}
    broker.update(snippet["broker"])
    prof["broker"] = broker
    auth = dict(prof.get("command_auth") or {})
    auth.update(snippet["command_auth"])
    prof["command_auth"] = auth
    return prof


def controller_snippet(reg: SiteRegistry, identity: str, files_dir: Path, signing_key: Path | None,
                       key_id: str | None, registry_path: Path) -> dict[str, Any]:
    """The sections of a controller config the site decides."""
    out: dict[str, Any] = {"broker": broker_section(reg, identity, files_dir),
                           "enrolled_units_file": str(registry_path)}
    if signing_key is not None:
        out["command_signing_key"] = str(signing_key)
        out["command_key_id"] = key_id
    return out
