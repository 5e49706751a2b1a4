"""Site operations: ``init`` (CA, broker, controller, units), ``enroll`` one identity, ``revoke`` one.

Each operation updates ``enrolled.yaml`` and regenerates everything derived from it (ACL, CRL,
mosquitto.conf) in one go, under a lock on the site directory, so the broker never sees an ACL that
disagrees with the registry.  The broker applies a change on reload: SIGHUP re-reads the ACL and the
CRL (``systemctl reload mosquitto``); tested with Mosquitto 2.0.11 in tests/test_site.py.

What revocation does and does not do: the unit's certificate serial goes into the CRL, so the
broker refuses its TLS handshake after the reload, and its ACL entries go, so even a connection that
was open before the reload may no longer publish or read anything.  The open TCP connection itself
lasts until the broker restarts or the unit disconnects (Mosquitto 2.0 does not drop clients on a
reload); it can do nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import yaml

from agent.config import ConfigError, load_yaml, profile_from_dict
from cedge.site import ca as ca_mod
from cedge.site.broker_conf import BrokerFiles, render_acl, render_mosquitto_conf
from cedge.site.files import write_atomic, write_private
from cedge.site.layout import CA_CERT, CLIENT_CERT, CLIENT_KEY, COMMAND_KEYS, SiteLayout
from cedge.site.profiles import controller_snippet, profile_from_template, unit_snippet
from cedge.site.registry import (
    DEFAULT_CONTROLLER,
    CertRecord,
    RevokedRecord,
    SiteBroker,
    SiteRegistry,
    check_identity,
    load_registry,
    save_registry,
)

UNIT_SNIPPET = "profile-snippet.yaml"
UNIT_PROFILE = "profile.yaml"
CONTROLLER_SNIPPET = "controller-snippet.yaml"


class SiteError(RuntimeError):
    """A site operation that cannot be done; the message says why and what to do instead."""


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One `cedge site` operation at a time per site directory (flock on DIR/.lock)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


# --------------------------------------------------------------------------- broker files
def broker_files(layout: SiteLayout, reg: SiteRegistry, persistence_dir: Path | None = None,
                 log_file: Path | None = None) -> BrokerFiles:
    """The broker's file paths as the broker host sees them (``conf_dir``) or here (default)."""
    conf_dir = Path(reg.broker.conf_dir) if reg.broker.conf_dir else layout.broker_dir
    pers = persistence_dir or (Path(reg.broker.persistence_dir) if reg.broker.persistence_dir else conf_dir / "data")
    log = log_file or (Path(reg.broker.log_file) if reg.broker.log_file else None)
    return BrokerFiles(cafile=conf_dir / CA_CERT, certfile=conf_dir / "broker.crt", keyfile=conf_dir / "broker.key",
                       crlfile=conf_dir / "crl.pem", acl_file=conf_dir / "acl", persistence_dir=pers, log_file=log)


def site_broker_conf(site_dir: str | Path, *, port: int | None = None, bind_address: str | None = None,
                     persistence_dir: Path | None = None, log_file: Path | None = None,
                     run_as_user: str | None = None) -> str:
    """The site's mosquitto.conf with a different port, data dir or log (private test/demo brokers).

    TLS files, ACL and CRL stay the site's own, so ``cedge site revoke`` + SIGHUP acts on it.
    """
    layout = SiteLayout.at(site_dir)
    reg = load_registry(layout.registry)
    files = broker_files(layout, reg, persistence_dir, log_file)
    return render_mosquitto_conf(port or reg.broker.port, bind_address or reg.broker.bind_address, files,
                                 run_as_user=run_as_user if run_as_user is not None else reg.broker.run_as_user)


def _write_broker_files(layout: SiteLayout, reg: SiteRegistry, ca: ca_mod.Issued) -> None:
    """ACL, CRL and mosquitto.conf from the registry (the broker applies them on SIGHUP)."""
    write_atomic(layout.broker_acl, render_acl(reg.controllers, reg.units))
    reg.crl_number += 1
    revoked = [(int(r.serial_hex, 16), _parse_iso(r.revoked_utc)) for r in reg.revoked]
    write_atomic(layout.broker_crl, ca_mod.crl_pem(ca_mod.build_crl(ca, revoked, reg.crl_number)))
    files = broker_files(layout, reg)
    if not reg.broker.conf_dir:
        files.persistence_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(layout.broker_conf, render_mosquitto_conf(reg.broker.port, reg.broker.bind_address, files,
                                                           run_as_user=reg.broker.run_as_user))


def _parse_iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


# --------------------------------------------------------------------------- identities
def _files_dir(layout: SiteLayout, reg: SiteRegistry, unit_id: str) -> Path:
    return Path(reg.unit_install_dir) if reg.unit_install_dir else layout.unit_dir(unit_id)


def _issue(layout: SiteLayout, reg: SiteRegistry, ca: ca_mod.Issued, identity: str, is_controller: bool) -> Path:
    """Key, certificate and CA certificate of one identity into its directory."""
    issued = ca_mod.issue_client_cert(ca, identity)
    d = _private_dir(layout.identity_dir(identity, is_controller))
    write_private(d / CLIENT_KEY, ca_mod.key_pem(issued.key))
    write_atomic(d / CLIENT_CERT, ca_mod.cert_pem(issued.cert))
    write_atomic(d / CA_CERT, ca_mod.cert_pem(ca.cert))
    reg.certificates[identity] = CertRecord(serial_hex=format(issued.cert.serial_number, "x"),
                                            not_after_utc=_iso(issued.cert.not_valid_after_utc),
                                            issued_utc=_iso(issued.cert.not_valid_before_utc))
    return d


def _pin_command_keys(layout: SiteLayout, unit_dir: Path) -> None:
    """Copy every site command public key into the unit (and drop keys the site no longer has)."""
    dst = unit_dir / COMMAND_KEYS
    dst.mkdir(parents=True, exist_ok=True)
    keep = {p.name for p in layout.command_keys.glob("*.pub")}
    for p in dst.glob("*.pub"):
        if p.name not in keep:
            p.unlink()
    for name in keep:
        write_atomic(dst / name, (layout.command_keys / name).read_bytes())


def _write_unit_config(layout: SiteLayout, reg: SiteRegistry, unit_id: str, template: Path | None) -> None:
    d = layout.unit_dir(unit_id)
    snippet = unit_snippet(reg, unit_id, _files_dir(layout, reg, unit_id))
    write_atomic(d / UNIT_SNIPPET, "# written by `cedge site`: merge into this unit's profile\n"
                 + yaml.safe_dump(snippet, sort_keys=False))
    if template is None:
        return
    try:
        prof = profile_from_template(load_yaml(template), snippet)
        if not reg.unit_install_dir:  # the files are where the profile says: check it as the agent will
            profile_from_dict(prof, f"{template} for {unit_id}")
    except ConfigError as err:
        raise SiteError(f"profile template does not give a valid profile: {err}") from err
    write_atomic(d / UNIT_PROFILE, f"# {unit_id}: {template} with the site's broker and command keys\n"
                 + yaml.safe_dump(prof, sort_keys=False))


def _write_controller_config(layout: SiteLayout, reg: SiteRegistry, identity: str) -> None:
    d = layout.controller_dir(identity)
    key_id = reg.command_key_ids[-1] if reg.command_key_ids else None
    signing = layout.signing_key if layout.signing_key.exists() else None
    snippet = controller_snippet(reg, identity, d, signing, key_id, layout.registry)
    write_atomic(d / CONTROLLER_SNIPPET, "# written by `cedge site`: merge into the controller config\n"
                 + yaml.safe_dump(snippet, sort_keys=False))


def _make_command_key(layout: SiteLayout, reg: SiteRegistry) -> str:
    """The controller's Ed25519 command-signing key pair (helper: agent.command_auth)."""
    from agent.command_auth import write_signing_keypair

    layout.command_keys.mkdir(parents=True, exist_ok=True)
    tmp_pub = layout.command_keys / f".new-{os.getpid()}.pub"
    key_id = write_signing_keypair(layout.signing_key, tmp_pub)
    os.replace(tmp_pub, layout.command_keys / f"{key_id}.pub")
    reg.command_key_ids.append(key_id)
    return key_id


def _pick_template(unit_id: str, templates: Mapping[str, Path] | None) -> Path | None:
    """The template whose key is the longest prefix of ``unit_id`` (``""`` matches every unit)."""
    if not templates:
        return None
    best = max((p for p in templates if unit_id.startswith(p)), key=len, default=None)
    return templates[best] if best is not None else None


# --------------------------------------------------------------------------- operations
def init_site(root: str | Path, units: Sequence[str] = (), *, site_name: str = "site",
              broker_host: str = "127.0.0.1", broker_port: int = 8883, hostnames: Sequence[str] = (),
              bind_address: str | None = None, controllers: Sequence[str] = (DEFAULT_CONTROLLER,),
              run_as_user: str | None = None, log_file: str | None = None, persistence_dir: str | None = None,
              conf_dir: str | None = None, unit_install_dir: str | None = None,
              templates: Mapping[str, Path] | None = None) -> SiteRegistry:
    """Create a site in ``root``: CA, broker files, controller identities and key, the units."""
    layout = SiteLayout.at(root)
    if layout.registry.exists() or layout.ca_key.exists():
        raise SiteError(f"{layout.root} already holds a site (enrolled.yaml / ca.key): use `cedge site enroll` "
                        "or `revoke`; a new CA would lock every enrolled unit out")
    import ipaddress

    if bind_address is None:
        try:
            ipaddress.ip_address(broker_host)
            bind_address = broker_host
        except ValueError:
            bind_address = "0.0.0.0"  # a DNS name: listen on every interface (TLS + certificates only)
    names = list(dict.fromkeys([broker_host, *hostnames, "localhost", "127.0.0.1"]))
    try:
        reg = SiteRegistry(site_name=site_name, controllers=list(controllers), units=sorted(set(units)),
                           broker=SiteBroker(host=broker_host, port=broker_port, hostnames=names,
                                             bind_address=bind_address, conf_dir=conf_dir,
                                             persistence_dir=persistence_dir, log_file=log_file,
                                             run_as_user=run_as_user),
                           unit_install_dir=unit_install_dir)
    except ValueError as err:
        raise SiteError(str(err)) from err
    with _locked(layout.root):
        ca = ca_mod.create_ca(site_name)
        _private_dir(layout.ca_key.parent)
        write_private(layout.ca_key, ca_mod.key_pem(ca.key))
        write_atomic(layout.ca_cert, ca_mod.cert_pem(ca.cert))
        server = ca_mod.issue_server_cert(ca, names)
        _private_dir(layout.broker_dir)
        write_private(layout.broker_key, ca_mod.key_pem(server.key))
        write_atomic(layout.broker_cert, ca_mod.cert_pem(server.cert))
        write_atomic(layout.broker_ca, ca_mod.cert_pem(ca.cert))
        for c in reg.controllers:
            _issue(layout, reg, ca, c, is_controller=True)
        _make_command_key(layout, reg)
        for c in reg.controllers:
            _write_controller_config(layout, reg, c)
        for u in reg.units:
            _pin_command_keys(layout, _issue(layout, reg, ca, u, is_controller=False))
            _write_unit_config(layout, reg, u, _pick_template(u, templates))
        _write_broker_files(layout, reg, ca)
        save_registry(layout.registry, reg)
    return reg


def _open(root: str | Path) -> tuple[SiteLayout, SiteRegistry, ca_mod.Issued]:
    layout = SiteLayout.at(root)
    if not layout.registry.exists():
        raise SiteError(f"{layout.root} is not a site directory (no enrolled.yaml): run `cedge site init` first")
    try:
        reg = load_registry(layout.registry)
        ca = ca_mod.load_ca(layout.ca_cert, layout.ca_key)
    except (ConfigError, OSError, ValueError) as err:
        raise SiteError(f"cannot open site {layout.root}: {err}") from err
    return layout, reg, ca


def _revoke_serial(reg: SiteRegistry, identity: str) -> RevokedRecord | None:
    rec = reg.certificates.pop(identity, None)
    if rec is None:
        return None
    out = RevokedRecord(identity=identity, serial_hex=rec.serial_hex, revoked_utc=_iso(ca_mod.now_utc()))
    reg.revoked.append(out)
    return out


def enroll(root: str | Path, identity: str, *, controller: bool = False, template: Path | None = None,
           renew: bool = False) -> Path:
    """Enroll one unit (or a further controller identity); returns its directory.

    ``renew``: issue a new certificate to an enrolled identity and revoke the old one.
    """
    try:
        check_identity(identity, "controller identity" if controller else "unit id")
    except ValueError as err:
        raise SiteError(str(err)) from err
    with _locked(SiteLayout.at(root).root):
        layout, reg, ca = _open(root)
        known = identity in reg.units or identity in reg.controllers
        if known and not renew:
            raise SiteError(f"{identity} is already enrolled: `cedge site enroll --renew` re-issues its "
                            "certificate, `cedge site revoke` removes it")
        if known and (identity in reg.controllers) != controller:
            raise SiteError(f"{identity} is enrolled as a {'controller' if not controller else 'unit'}")
        _revoke_serial(reg, identity)
        if controller:
            if identity not in reg.controllers:
                reg.controllers.append(identity)
        elif identity not in reg.units:
            reg.units = sorted([*reg.units, identity])
        try:
            SiteRegistry.model_validate(reg.model_dump(by_alias=True))
        except ValueError as err:
            raise SiteError(str(err)) from err
        d = _issue(layout, reg, ca, identity, is_controller=controller)
        if controller:
            _write_controller_config(layout, reg, identity)
        else:
            _pin_command_keys(layout, d)
            # without a template an existing profile.yaml is kept: its paths did not change
            _write_unit_config(layout, reg, identity, template)
        _write_broker_files(layout, reg, ca)
        save_registry(layout.registry, reg)
    return d


def revoke(root: str | Path, identity: str) -> RevokedRecord:
    """Revoke ``identity``'s certificate (CRL) and remove it from the registry and the ACL."""
    with _locked(SiteLayout.at(root).root):
        layout, reg, ca = _open(root)
        is_controller = identity in reg.controllers
        if identity not in reg.units and not is_controller:
            raise SiteError(f"{identity} is not enrolled (enrolled units: {', '.join(reg.units) or 'none'})")
        rec = _revoke_serial(reg, identity)
        if is_controller:
            reg.controllers.remove(identity)
        else:
            reg.units.remove(identity)
        if rec is None:  # enrolled without a certificate record: cannot happen through cedge site
            raise SiteError(f"{identity} has no certificate record in {layout.registry}")
        _write_broker_files(layout, reg, ca)
        save_registry(layout.registry, reg)
        # The private key of a revoked identity is of no use to anyone now; don't leave it lying around.
        d = layout.identity_dir(identity, is_controller)
        if is_controller and identity == DEFAULT_CONTROLLER:
            for name in (CLIENT_KEY, CLIENT_CERT):
                with contextlib.suppress(FileNotFoundError):
                    (d / name).unlink()
        else:
            shutil.rmtree(d, ignore_errors=True)
    return rec


def open_registry(root: str | Path) -> SiteRegistry:
    """The site's registry (read only)."""
    layout = SiteLayout.at(root)
    try:
        return load_registry(layout.registry)
    except ConfigError as err:
        raise SiteError(str(err)) from err
