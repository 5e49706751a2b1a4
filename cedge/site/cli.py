"""`cedge site init|enroll|revoke|show`: the site's identities, certificates and broker ACL."""

from __future__ import annotations

from pathlib import Path

import typer

from agent.cli_output import console as make_console
from agent.cli_output import fail

app = typer.Typer(help="Site CA, unit enrolment and revocation, broker config and ACL.", no_args_is_help=True)

_RELOAD_HINT = ("apply it on the broker: copy DIR/broker/{acl,crl.pem} if the broker runs elsewhere, then "
                "send it SIGHUP (systemctl reload mosquitto)")


def _split(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _templates(items: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        prefix, sep, path = item.rpartition("=")
        if not sep:
            prefix, path = "", item
        if not Path(path).is_file():
            fail(f"--template {item!r}: no such file {path!r}", 2)
        out[prefix] = Path(path)
    return out


@app.command()
def init(
    site_dir: Path = typer.Argument(..., help="Directory for the site (CA, broker, controller, units)."),
    units: list[str] = typer.Option([], "--units", help="Unit ids to enroll, comma separated (repeatable)."),
    broker_host: str = typer.Option("127.0.0.1", help="Host name or address units connect to."),
    broker_port: int = typer.Option(8883, help="TLS port of the broker (8883: IANA secure-mqtt)."),
    hostname: list[str] = typer.Option([], "--hostname", help="Further names/addresses of the broker (SAN)."),
    bind_address: str | None = typer.Option(None, help="Address the broker listens on (default: --broker-host "
                                            "if it is an address, else all interfaces)."),
    controllers: list[str] = typer.Option(["cedge-controller"], "--controllers",
                                          help="Controller identities, comma separated."),
    site_name: str = typer.Option("site", help="Site name (in the CA's name)."),
    template: list[str] = typer.Option([], "--template", help="[UNIT_PREFIX=]PROFILE.yaml: write a whole "
                                       "profile for units whose id starts with UNIT_PREFIX."),
    unit_install_dir: str | None = typer.Option(None, help="Where a unit's files are installed on the unit "
                                                "(e.g. /etc/cedge); default: in this site directory."),
    broker_conf_dir: str | None = typer.Option(None, help="Where DIR/broker is installed on the broker host "
                                               "(e.g. /etc/mosquitto/cedge); default: in this directory."),
    persistence_dir: str | None = typer.Option(None, help="Broker persistence dir (default: <conf dir>/data)."),
    broker_user: str | None = typer.Option(None, help="`user` line of mosquitto.conf (the account Mosquitto "
                                           "started as root runs as)."),
) -> None:
    """Create the site CA, the broker's TLS config and ACL, the controller's identity and command key,
    and a certificate, key and profile section per unit."""
    from cedge.site.manage import SiteError, init_site

    try:
        reg = init_site(site_dir, _split(units), site_name=site_name, broker_host=broker_host,
                        broker_port=broker_port, hostnames=_split(hostname), bind_address=bind_address,
                        controllers=_split(controllers), run_as_user=broker_user, persistence_dir=persistence_dir,
                        conf_dir=broker_conf_dir, unit_install_dir=unit_install_dir, templates=_templates(template))
    except SiteError as err:
        fail(err, 1)
    c = make_console()
    c.print(f"site {reg.site_name} in {site_dir}: broker {reg.broker.host}:{reg.broker.port} (TLS, client "
            f"certificates), controllers {', '.join(reg.controllers)}, units {', '.join(reg.units) or 'none'}",
            markup=False, highlight=False)
    c.print(f"broker: mosquitto -c {site_dir / 'broker' / 'mosquitto.conf'}; keep {site_dir / 'ca' / 'ca.key'} "
            "off the network", markup=False, highlight=False)


@app.command()
def enroll(
    site_dir: Path = typer.Argument(..., help="The site directory."),
    unit: str = typer.Argument(..., help="Unit id (the certificate's Common Name)."),
    template: Path | None = typer.Option(None, help="The unit's profile template: write a whole profile."),
    controller: bool = typer.Option(False, "--controller", help="Enroll a further controller identity instead."),
    renew: bool = typer.Option(False, "--renew", help="Re-issue an enrolled identity's certificate "
                               "(the old one is revoked)."),
) -> None:
    """Enroll one unit: certificate, key, pinned command keys, profile section, ACL and registry."""
    from cedge.site.manage import SiteError
    from cedge.site.manage import enroll as do_enroll

    if template is not None and not template.is_file():
        fail(f"--template: no such file {template}", 2)
    try:
        d = do_enroll(site_dir, unit, controller=controller, template=template, renew=renew)
    except SiteError as err:
        fail(err, 1)
    c = make_console()
    c.print(f"enrolled {unit}: install {d} on the unit (its key is {d / 'client.key'}, mode 0600)",
            markup=False, highlight=False)
    c.print(_RELOAD_HINT, markup=False, highlight=False)


@app.command()
def revoke(
    site_dir: Path = typer.Argument(..., help="The site directory."),
    unit: str = typer.Argument(..., help="Unit id (or controller identity) to revoke."),
) -> None:
    """Revoke a unit's certificate (CRL) and remove it from the ACL and the enrolled units."""
    from cedge.site.manage import SiteError
    from cedge.site.manage import revoke as do_revoke

    try:
        rec = do_revoke(site_dir, unit)
    except SiteError as err:
        fail(err, 1)
    c = make_console()
    c.print(f"revoked {rec.identity} (certificate serial {rec.serial_hex}) at {rec.revoked_utc}",
            markup=False, highlight=False)
    c.print(_RELOAD_HINT, markup=False, highlight=False)


@app.command()
def show(site_dir: Path = typer.Argument(..., help="The site directory.")) -> None:
    """List the enrolled identities, their certificates and the revoked ones."""
    from cedge.site.manage import SiteError, open_registry

    try:
        reg = open_registry(site_dir)
    except SiteError as err:
        fail(err, 1)
    c = make_console()
    c.print(f"site {reg.site_name}: broker {reg.broker.host}:{reg.broker.port}", markup=False, highlight=False)
    for ident in reg.identities():
        rec = reg.certificates.get(ident)
        kind = "controller" if ident in reg.controllers else "unit"
        c.print(f"  {kind:10s} {ident:24s} serial {rec.serial_hex if rec else '-'} until "
                f"{rec.not_after_utc if rec else '-'}", markup=False, highlight=False)
    for r in reg.revoked:
        c.print(f"  revoked    {r.identity:24s} serial {r.serial_hex} at {r.revoked_utc}", markup=False,
                highlight=False)
