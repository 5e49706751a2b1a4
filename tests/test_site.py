"""`cedge site`: the site CA, the generated and shipped broker configs and the ACL, on a real Mosquitto.

Issue 14: any client that reached the broker could read dispatches, publish as any unit and connect
as the controller.  These tests run Mosquitto with the configuration `cedge site` generates (and the
shipped ``configs/mosquitto.conf``) and check, with real TLS clients, that anonymous and foreign
clients are refused, that each unit can publish and read only its own topics, that no certificate
can take the controller's session (row 7), and that a revoked unit is refused after a reload.

A forbidden publish is checked at the receiving end, not only by its PUBACK: after it, the same
client publishes an allowed message, and once that one has arrived (Mosquitto handles one
client's packets in order) the forbidden one would have arrived too.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from broker_fixture import Mosquitto, find_mosquitto
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.subscribeoptions import SubscribeOptions
from typer.testing import CliRunner

from agent.command_auth import load_public_keys
from agent.config import BrokerConfig, ConfigError, profile_from_dict
from cedge.cli import app
from cedge.site import ca as ca_mod
from cedge.site.broker_conf import MAX_PACKET_SIZE_BYTES, MAX_QUEUED_BYTES, MESSAGE_SIZE_LIMIT_BYTES
from cedge.site.files import write_atomic, write_private
from cedge.site.layout import SiteLayout
from cedge.site.manage import SiteError, enroll, init_site, revoke
from cedge.site.registry import load_registry
from controller.config import ControllerBrokerConfig
from controller.mqtt_client import ControllerMqtt

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[1]
UNITS = ["mob-1", "mob-2", "hh-1"]
DEADLINE_S = 20.0


def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.02)


class Peer:
    """A paho MQTT 5 client that records what happens to it (connects, messages, PUBACK codes)."""

    def __init__(self, client: mqtt.Client) -> None:
        self.c = client
        self.messages: list[tuple[str, bytes]] = []
        self.connects: list[bool] = []
        self.disconnects = 0
        self.puback: dict[int, int] = {}
        self.suback: list[list[int]] = []
        self._lock = threading.Lock()
        self.done = threading.Event()  # connected, refused or dropped
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = lambda c, u: self.done.set()

    def _on_connect(self, c: mqtt.Client, u: object, flags: object, rc: object, props: object) -> None:
        self.connects.append(not getattr(rc, "is_failure", False))
        self.done.set()

    def _on_disconnect(self, c: mqtt.Client, u: object, flags: object, rc: object, props: object) -> None:
        self.disconnects += 1
        self.done.set()

    def _on_message(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((m.topic, bytes(m.payload)))

    def _on_publish(self, c: mqtt.Client, u: object, mid: int, rc: object, props: object) -> None:
        self.puback[mid] = int(getattr(rc, "value", 0))

    def _on_subscribe(self, c: mqtt.Client, u: object, mid: int, rcs: list, props: object) -> None:
        self.suback.append([int(getattr(r, "value", r)) for r in rcs])

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _ in self.messages]

    def got(self, topic: str, payload: bytes | None = None) -> bool:
        with self._lock:
            return any(t == topic and (payload is None or p == payload) for t, p in self.messages)

    def start(self, host: str, port: int) -> bool:
        """Connect and wait for the outcome; True if the broker accepted the connection."""
        try:
            self.c.connect(host, port, keepalive=30)
        except (OSError, ssl.SSLError):
            return False
        self.c.loop_start()
        self.done.wait(DEADLINE_S)
        # TLS 1.3: a refused client certificate shows up after the handshake, as the connection
        # closing instead of a CONNACK; an accepted one gets CONNACK first
        return bool(self.connects) and self.connects[0] and self.disconnects == 0

    def publish(self, topic: str, payload: bytes) -> int:
        """QoS-1 publish; returns the PUBACK reason code (0 accepted, 135 not authorised)."""
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(DEADLINE_S)
        wait_until(lambda: info.mid in self.puback, f"PUBACK for {topic}")
        return self.puback[info.mid]

    def subscribe(self, topic: str) -> None:
        n = len(self.suback)
        self.c.subscribe(topic, options=SubscribeOptions(qos=1))
        wait_until(lambda: len(self.suback) > n, f"SUBACK for {topic}")

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    d = tmp_path / "site"
    init_site(d, UNITS, site_name="test-yard", broker_host="127.0.0.1",
              templates={"mob-": REPO / "configs/units/mobile.yaml", "hh-": REPO / "configs/units/handheld.yaml"})
    return d


@pytest.fixture
def broker(tmp_path: Path, site: Path) -> Iterator[Mosquitto]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found")
    b = Mosquitto.secure(tmp_path / "broker", site)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def peers() -> Iterator[Callable[[mqtt.Client], Peer]]:
    made: list[Peer] = []

    def make(client: mqtt.Client) -> Peer:
        p = Peer(client)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def connected(broker: Mosquitto, peers: Callable[[mqtt.Client], Peer], identity: str,
              client_id: str | None = None) -> Peer:
    p = peers(broker.client(identity, client_id=client_id))
    assert p.start(broker.host, broker.port), f"{identity} could not connect: {broker.log_text()[-1500:]}"
    return p


# --------------------------------------------------------------------------- generated files
def test_init_writes_ca_certificates_keys_acl_and_registry(site: Path) -> None:
    layout = SiteLayout.at(site)
    reg = load_registry(layout.registry)
    assert reg.units == sorted(UNITS) and reg.controllers == ["cedge-controller"]
    keys = [layout.ca_key, layout.broker_key, layout.signing_key, layout.controller_dir() / "client.key",
            *(layout.unit_dir(u) / "client.key" for u in UNITS)]
    for k in keys:
        assert stat.S_IMODE(k.stat().st_mode) == 0o600, k
    assert stat.S_IMODE(layout.ca_key.parent.stat().st_mode) == 0o700

    ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for ident, d in [("cedge-controller", layout.controller_dir()), *((u, layout.unit_dir(u)) for u in UNITS)]:
        cert = x509.load_pem_x509_certificate((d / "client.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ident
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = x509.load_pem_x509_certificate(layout.broker_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(a) for a in san.get_values_for_type(x509.IPAddress)]

    crl = x509.load_pem_x509_crl(layout.broker_crl.read_bytes())
    assert crl.is_signature_valid(ca.public_key()) and len(crl) == 0
    acl = layout.broker_acl.read_text()
    assert "pattern" not in re.sub(r"#.*", "", acl)
    assert acl.lstrip().startswith("#") and re.search(r"^user cedge-controller$", acl, re.M)

    # the controller's command key, pinned on every unit, under the id it is filed by
    (key_id,) = reg.command_key_ids
    assert (layout.command_keys / f"{key_id}.pub").is_file()
    for u in UNITS:
        assert set(load_public_keys(layout.unit_dir(u) / "command_keys")) == {key_id}


def test_unit_profiles_from_templates_pass_the_agents_own_validation(site: Path) -> None:
    layout = SiteLayout.at(site)
    for u, utype in (("mob-1", "mobile"), ("hh-1", "handheld")):
        data = yaml.safe_load((layout.unit_dir(u) / "profile.yaml").read_text())
        prof = profile_from_dict(data, f"{u}/profile.yaml")
        assert prof.unit_id == u and prof.unit_type == utype
        assert prof.broker.identity == u and prof.broker.client_id == u
        assert prof.broker.port == 8883 and Path(prof.command_auth.keys_dir).is_dir()
    snippet = yaml.safe_load((layout.unit_dir("mob-2") / "profile-snippet.yaml").read_text())
    assert snippet["broker"]["tls_cert_file"].endswith("units/mob-2/client.crt")


def test_profile_with_another_units_certificate_is_refused_at_load(site: Path) -> None:
    layout = SiteLayout.at(site)
    data = yaml.safe_load((layout.unit_dir("mob-1") / "profile.yaml").read_text())
    data["unit_id"] = "mob-2"
    with pytest.raises(ConfigError, match="certificate of 'mob-1'"):
        profile_from_dict(data, "mob-2.yaml")
    tls = {"tls_ca_file": str(layout.unit_dir("mob-1") / "ca.crt")}
    with pytest.raises(ValueError, match="no such file"):
        BrokerConfig(**tls, tls_cert_file=str(site / "nope.crt"), tls_key_file=str(site / "nope.key"))
    with pytest.raises(ValueError, match="not the private key"):
        BrokerConfig(**tls, tls_cert_file=str(layout.unit_dir("mob-1") / "client.crt"),
                     tls_key_file=str(layout.unit_dir("mob-2") / "client.key"))
    with pytest.raises(ValueError, match="not the certificate's identity"):
        BrokerConfig(**tls, tls_cert_file=str(layout.unit_dir("mob-1") / "client.crt"),
                     tls_key_file=str(layout.unit_dir("mob-1") / "client.key"), client_id="cedge-controller")
    with pytest.raises(ValueError, match="go together"):
        BrokerConfig(**tls, tls_cert_file=str(layout.unit_dir("mob-1") / "client.crt"))


def test_cli_init_enroll_revoke_and_their_errors(tmp_path: Path) -> None:
    d = tmp_path / "s"
    run = CliRunner().invoke
    r = run(app, ["site", "init", str(d), "--units", "mob-1,hh-1", "--broker-host", "broker.yard.example",
                  "--hostname", "10.0.0.5"])
    assert r.exit_code == 0, r.output
    conf = (d / "broker/mosquitto.conf").read_text()
    assert "listener 8883 0.0.0.0" in conf  # a DNS name: every interface, TLS only
    server = x509.load_pem_x509_certificate((d / "broker/broker.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.yard.example" in san.get_values_for_type(x509.DNSName)
    assert "10.0.0.5" in [str(a) for a in san.get_values_for_type(x509.IPAddress)]

    r = run(app, ["site", "init", str(d)])
    assert r.exit_code == 1 and "already holds a site" in r.output and "Traceback" not in r.output
    for bad in ("..", "-x", "a/b", "+", "cedge-controller"):
        r = run(app, ["site", "enroll", str(d), "--", bad])
        assert r.exit_code == 1 and "Traceback" not in r.output, (bad, r.output)
    r = run(app, ["site", "enroll", str(d), "mob-1"])
    assert r.exit_code == 1 and "already enrolled" in r.output
    r = run(app, ["site", "revoke", str(d), "mob-9"])
    assert r.exit_code == 1 and "not enrolled" in r.output
    r = run(app, ["site", "enroll", str(d), "mob-2", "--template", str(REPO / "configs/units/mobile.yaml")])
    assert r.exit_code == 0, r.output
    assert (d / "units/mob-2/profile.yaml").is_file()
    r = run(app, ["site", "revoke", str(d), "hh-1"])
    assert r.exit_code == 0 and "revoked hh-1" in r.output
    reg = load_registry(d / "enrolled.yaml")
    assert reg.units == ["mob-1", "mob-2"] and [r.identity for r in reg.revoked] == ["hh-1"]
    assert "hh-1" not in (d / "broker/acl").read_text()
    assert not (d / "units/hh-1").exists()  # the revoked key is not left lying around
    r = run(app, ["site", "show", str(d)])
    assert r.exit_code == 0 and "mob-2" in r.output and "revoked" in r.output
    with pytest.raises(SiteError, match="not a site directory"):
        enroll(tmp_path / "empty", "mob-1")


# --------------------------------------------------------------------------- who may connect
def test_generated_config_refuses_anonymous_and_foreign_clients(tmp_path: Path, broker: Mosquitto,
                                                                 peers: Callable[[mqtt.Client], Peer]) -> None:
    assert _plain_refused(broker)  # plain MQTT, no TLS
    # TLS without a client certificate
    assert not peers(broker.client(None, client_id="anon-tls")).start(broker.host, broker.port)
    # a certificate for "mob-1" from another CA
    rogue = ca_mod.create_ca("rogue")
    leaf = ca_mod.issue_client_cert(rogue, "mob-1")
    write_atomic(tmp_path / "rogue.crt", ca_mod.cert_pem(leaf.cert))
    write_private(tmp_path / "rogue.key", ca_mod.key_pem(leaf.key))
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mob-1", protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(SiteLayout.at(broker.site_dir).broker_ca), certfile=str(tmp_path / "rogue.crt"),
              keyfile=str(tmp_path / "rogue.key"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    assert not peers(c).start(broker.host, broker.port)
    # and the real thing does connect
    connected(broker, peers, "mob-1")


def _plain_refused(broker: Mosquitto) -> bool:
    """A plain-TCP MQTT CONNECT gets no CONNACK from the TLS listener."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anon-tcp", protocol=mqtt.MQTTv5)
    p = Peer(c)
    try:
        return not p.start(broker.host, broker.port)
    finally:
        p.stop()


def test_shipped_config_is_secure_and_refuses_anonymous(tmp_path: Path, site: Path,
                                                        peers: Callable[[mqtt.Client], Peer]) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found")
    shipped = (REPO / "configs/mosquitto.conf").read_text()
    opts = {m.group(1): m.group(2).strip() for m in re.finditer(r"^(\w+)\s+(.*)$", shipped, re.M)}
    assert opts["allow_anonymous"] == "false" and opts["require_certificate"] == "true"
    assert opts["use_identity_as_username"] == "true" and opts["use_username_as_clientid"] == "true"
    # the same bounds as the generated config (cedge.site.broker_conf)
    assert int(opts["message_size_limit"]) == MESSAGE_SIZE_LIMIT_BYTES
    assert int(opts["max_packet_size"]) == MAX_PACKET_SIZE_BYTES
    assert int(opts["max_queued_bytes"]) == MAX_QUEUED_BYTES
    assert len(re.findall(r"^listener ", shipped, re.M)) == 1  # no second, plain listener

    # run it, as shipped, with only the paths and the port pointed at this test's site
    b = Mosquitto(tmp_path / "shipped")
    layout = SiteLayout.at(site)
    paths = {"cafile": layout.broker_ca, "certfile": layout.broker_cert, "keyfile": layout.broker_key,
             "crlfile": layout.broker_crl, "acl_file": layout.broker_acl, "persistence_location": f"{b.data_dir}/"}
    text = re.sub(r"^listener \d+ \S+$", f"listener {b.port} {b.host}", shipped, flags=re.M)
    for key, value in paths.items():
        text, n = re.subn(rf"^{key} .*$", f"{key} {value}", text, flags=re.M)
        assert n == 1, key
    text = re.sub(r"^log_dest syslog$", f"log_dest file {b.log_path}", text, flags=re.M)
    b.conf_path.write_text(f"user {_me()}\n{text}")
    b.start()
    try:
        assert _plain_refused(b)
        b.site_dir = site.resolve()
        assert not peers(b.client(None, client_id="anon-tls")).start(b.host, b.port)
        ctl = connected(b, peers, "cedge-controller")
        ctl.subscribe("cedge/v1/up/#")
        unit = connected(b, peers, "mob-1")
        assert unit.publish("cedge/v1/up/mob-2/alarm", b"forged") == 135
        assert unit.publish("cedge/v1/up/mob-1/health", b"real") == 0
        wait_until(lambda: ctl.got("cedge/v1/up/mob-1/health"), "the controller gets mob-1's own message")
        assert not ctl.got("cedge/v1/up/mob-2/alarm")
    finally:
        b.stop()


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


# --------------------------------------------------------------------------- what each identity may do
def test_unit_publishes_only_its_own_up_topics(broker: Mosquitto, peers: Callable[[mqtt.Client], Peer]) -> None:
    ctl = connected(broker, peers, "cedge-controller")
    ctl.subscribe("$share/ctl/cedge/v1/up/#")  # the shared-subscription form the controller may use
    hh = connected(broker, peers, "hh-1")
    hh.subscribe("cedge/v1/down/hh-1/cmd")
    mob = connected(broker, peers, "mob-1")

    forged = [("cedge/v1/up/mob-2/alarm", b"forged alarm"),            # row 3: another unit's alarm
              ("cedge/v1/up/hh-1/task_event", b"forged cleared"),      # row 2: the handheld's task event
              ("cedge/v1/down/hh-1/cmd", b"forged dispatch"),          # row 4: a command
              ("cedge/v1/up/nobody/alarm", b"unknown unit"),
              ("$SYS/broker/x", b"sys")]
    for topic, payload in forged:
        assert mob.publish(topic, payload) == 135, topic  # MQTT 5: Not authorized
    assert mob.publish("cedge/v1/up/mob-1/alarm", b"real") == 0
    wait_until(lambda: ctl.got("cedge/v1/up/mob-1/alarm", b"real"), "mob-1's own alarm at the controller")
    # the controller can command the handheld; the handheld gets that, not the forged one
    assert ctl.publish("cedge/v1/down/hh-1/cmd", b"real dispatch") == 0
    wait_until(lambda: hh.got("cedge/v1/down/hh-1/cmd", b"real dispatch"), "the real dispatch")
    assert ctl.topics() == ["cedge/v1/up/mob-1/alarm"]
    assert hh.messages == [("cedge/v1/down/hh-1/cmd", b"real dispatch")]
    # a unit cannot publish commands even to itself, nor uplinks as the controller
    assert hh.publish("cedge/v1/down/hh-1/cmd", b"self") == 135
    assert ctl.publish("cedge/v1/up/mob-1/alarm", b"controller as unit") == 135


def test_unit_cannot_read_other_units_commands_or_uplinks(broker: Mosquitto,
                                                          peers: Callable[[mqtt.Client], Peer]) -> None:
    ctl = connected(broker, peers, "cedge-controller")
    ctl.subscribe("cedge/v1/up/#")
    mob2 = connected(broker, peers, "mob-2")
    mob2.subscribe("cedge/v1/down/mob-2/cmd")
    spy = connected(broker, peers, "mob-1")
    for topic in ("cedge/v1/down/mob-2/cmd", "cedge/v1/down/+/cmd", "cedge/v1/up/#", "#",
                  "$share/g/cedge/v1/up/#", "cedge/v1/down/mob-1/cmd"):
        spy.subscribe(topic)  # Mosquitto 2.0 grants the SUBSCRIBE; the ACL is applied on delivery
    assert mob2.publish("cedge/v1/up/mob-2/measurement", b"m") == 0
    wait_until(lambda: ctl.got("cedge/v1/up/mob-2/measurement"), "mob-2's uplink at the controller")
    assert ctl.publish("cedge/v1/down/mob-2/cmd", b"dispatch mob-2") == 0
    assert ctl.publish("cedge/v1/down/mob-1/cmd", b"dispatch mob-1") == 0
    wait_until(lambda: mob2.got("cedge/v1/down/mob-2/cmd"), "mob-2's command")
    wait_until(lambda: spy.got("cedge/v1/down/mob-1/cmd"), "mob-1's own command (the sentinel)")
    # its own command may come once per matching filter; nothing else ever
    assert {t for t in spy.topics()} == {"cedge/v1/down/mob-1/cmd"}


def test_no_certificate_can_take_the_controllers_session(broker: Mosquitto, peers: Callable[[mqtt.Client], Peer],
                                                         tmp_path: Path) -> None:
    """Row 7: a client connected as ``cedge-controller`` kicked the real controller off 10 times in
    10 s.  Here the real controller (controller.mqtt_client, over TLS) stays connected while a unit
    certificate connects with the controller's client id: the broker gives it the unit's identity."""
    cfg = ControllerBrokerConfig(host=broker.host, port=broker.port, keepalive_s=5, reconnect_max_s=1.0,
                                 **broker.tls_fields("cedge-controller"))
    ctl = ControllerMqtt(cfg)
    ctl.start()
    try:
        assert ctl.wait_connected(DEADLINE_S), broker.log_text()[-1500:]
        impostors = [connected(broker, peers, u, client_id="cedge-controller") for u in ("mob-1", "hh-1")]
        for p in impostors:
            assert p.publish("cedge/v1/down/mob-2/cmd", b"impostor command") == 135
            assert p.publish("cedge/v1/up/mob-2/alarm", b"impostor alarm") == 135
        mob2 = connected(broker, peers, "mob-2")
        assert mob2.publish("cedge/v1/up/mob-2/health", b"still here") == 0
        got: list[str] = []

        def drained() -> bool:
            while not ctl.inbox.empty():
                msg = ctl.inbox.get_nowait()
                got.append(msg.topic)
                ctl.ack(msg)
            return "cedge/v1/up/mob-2/health" in got

        wait_until(drained, "the real controller still receives uplinks")
        assert ctl.connected and ctl.session_present is not None
        assert got == ["cedge/v1/up/mob-2/health"]
        assert all(p.messages == [] and p.disconnects == 0 for p in impostors)
        log = broker.log_text()
        assert " as mob-1 (" in log and " as hh-1 (" in log  # the broker replaced their client id
        assert log.count(" as cedge-controller (") == 1  # one controller connection, never taken over
    finally:
        ctl.stop()


# --------------------------------------------------------------------------- enrolment and revocation
def test_revoked_unit_is_refused_after_reload(tmp_path: Path, broker: Mosquitto,
                                              peers: Callable[[mqtt.Client], Peer]) -> None:
    site = broker.site_dir
    assert site is not None
    kept = tmp_path / "stolen-mob-2"  # what a thief holds: a copy of the unit's files
    shutil.copytree(SiteLayout.at(site).unit_dir("mob-2"), kept)
    ctl = connected(broker, peers, "cedge-controller")
    ctl.subscribe("cedge/v1/up/#")
    before = connected(broker, peers, "mob-2")  # connected before the revocation
    assert before.publish("cedge/v1/up/mob-2/health", b"before") == 0

    rec = revoke(site, "mob-2")
    crl = x509.load_pem_x509_crl(SiteLayout.at(site).broker_crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(rec.serial_hex, 16)) is not None
    assert "mob-2" not in load_registry(SiteLayout.at(site).registry).units
    reloads = broker.log_text().count("Reloading config")
    broker.reload()
    # Mosquitto logs this and re-reads config, ACL and CRL in one turn of its (single) event loop,
    # before it serves the next connection
    wait_until(lambda: broker.log_text().count("Reloading config") > reloads, "the broker reloaded")
    # the connection opened before the reload may stay open, but it can do nothing any more
    assert before.publish("cedge/v1/up/mob-2/alarm", b"after revoke") == 135

    def stolen_refused() -> bool:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mob-2", protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(kept / "ca.crt"), certfile=str(kept / "client.crt"), keyfile=str(kept / "client.key"),
                  tls_version=ssl.PROTOCOL_TLS_CLIENT)
        p = Peer(c)
        try:
            return not p.start(broker.host, broker.port)
        finally:
            p.stop()

    assert stolen_refused(), "the revoked certificate was accepted after the reload"
    assert "certificate verify failed" in broker.log_text()
    mob1 = connected(broker, peers, "mob-1")
    assert mob1.publish("cedge/v1/up/mob-1/health", b"sentinel") == 0
    wait_until(lambda: ctl.got("cedge/v1/up/mob-1/health"), "sentinel")
    assert not ctl.got("cedge/v1/up/mob-2/alarm")


def test_enrolled_unit_connects_after_reload(broker: Mosquitto, peers: Callable[[mqtt.Client], Peer]) -> None:
    site = broker.site_dir
    assert site is not None
    enroll(site, "hh-7", template=REPO / "configs/units/handheld.yaml")
    reloads = broker.log_text().count("Reloading config")
    broker.reload()
    wait_until(lambda: broker.log_text().count("Reloading config") > reloads, "the broker reloaded")
    ctl = connected(broker, peers, "cedge-controller")
    ctl.subscribe("cedge/v1/up/#")

    def hh7_can_publish() -> bool:
        p = Peer(broker.client("hh-7"))
        try:
            return p.start(broker.host, broker.port) and p.publish("cedge/v1/up/hh-7/health", b"hi") == 0
        finally:
            p.stop()

    wait_until(hh7_can_publish, "the new unit connects and publishes after the reload")
    wait_until(lambda: ctl.got("cedge/v1/up/hh-7/health"), "its message at the controller")
    prof = profile_from_dict(yaml.safe_load((SiteLayout.at(site).unit_dir("hh-7") / "profile.yaml").read_text()))
    assert prof.unit_id == "hh-7" and prof.broker.identity == "hh-7"


def test_second_controller_identity_shares_the_uplink(broker: Mosquitto) -> None:
    """Each controller process has its own certificate (client ids unique by construction) and
    the ACL lets every controller identity read the up-stream through a shared subscription."""
    site = broker.site_dir
    assert site is not None
    enroll(site, "cedge-controller-b", controller=True)
    assert (SiteLayout.at(site).controller_dir("cedge-controller-b") / "client.crt").is_file()
    reloads = broker.log_text().count("Reloading config")
    broker.reload()
    wait_until(lambda: broker.log_text().count("Reloading config") > reloads, "the broker reloaded")
    ctls = [ControllerMqtt(ControllerBrokerConfig(host=broker.host, port=broker.port, keepalive_s=5,
                                                  shared_subscription_group="ctl", **broker.tls_fields(name)))
            for name in ("cedge-controller", "cedge-controller-b")]
    assert [c.config.client_id for c in ctls] == ["cedge-controller", "cedge-controller-b"]
    for c in ctls:
        c.start()
    unit = Peer(broker.client("mob-1"))
    try:
        assert all(c.wait_connected(DEADLINE_S) for c in ctls)
        assert unit.start(broker.host, broker.port)
        got: list[list[str]] = [[], []]

        def drain() -> int:
            for i, c in enumerate(ctls):
                while not c.inbox.empty():
                    msg = c.inbox.get_nowait()
                    got[i].append(msg.topic)
                    c.ack(msg)
            return len(got[0]) + len(got[1])

        n = 20
        # the controllers subscribe right after CONNACK; publish until the first message arrives
        wait_until(lambda: unit.publish("cedge/v1/up/mob-1/health", b"probe") == 0 and drain() > 0,
                   "the first uplink through the shared subscription")
        before = drain()
        for _ in range(n):
            assert unit.publish("cedge/v1/up/mob-1/measurement", b"m") == 0
        wait_until(lambda: drain() >= before + n, f"{n} uplinks split over the two controllers")
        measured = [sum(t.endswith("/measurement") for t in g) for g in got]
        assert sum(measured) == n and all(m > 0 for m in measured), measured
    finally:
        unit.stop()
        for c in ctls:
            c.stop()
