"""Signed commands (issue 14, rows 4, 5 and 8): a unit obeys only what the pinned controller key signed.

Unit level: every way a command can be wrong (forged, unsigned, expired, future-dated, replayed,
for another unit, under an unknown key) is refused with its reason, the replay cache survives a
restart, keys rotate.  Controller level: the dispatcher's commands verify on a unit.  Real broker:
a handheld agent (the shipped runtime, simulated devices) on a private Mosquitto does not obey a
forged dispatch, does not answer it, logs and counts it, and still obeys a genuine one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker_fixture import Mosquitto, find_mosquitto

from agent.command_auth import (
    NONCE_FILE,
    CommandRejected,
    CommandVerifier,
    canonical_command_bytes,
    key_id_of,
    load_private_key,
    load_public_keys,
    write_signing_keypair,
)
from agent.config import CommandAuthConfig
from agent.runtime.command_gate import CommandGate
from agent.wire_schema import Command, DispatchTask, Position, command_topic, decode_command, encode
from controller.command_signer import CommandSigner, SignerError
from hal_sim.sim_clock import ManualClock

START = "2026-11-27T08:00:00Z"
UNIT = "hh-1"
TARGET = Position(lat_deg=51.95, lon_deg=4.05, alt_m=5.0, x_m=10.0, y_m=20.0, z_m=1.0, fix_quality=7)


def dispatch(unit: str = UNIT, task_id: str = "T-1", cmd_id: str = "c-1", x_m: float = 10.0) -> Command:
    target = TARGET.model_copy(update={"x_m": x_m})
    return Command(cmd_id=cmd_id, unit_id=unit, command="dispatch", t_utc=START,
                   task=DispatchTask(task_id=task_id, alarm_id="A-1", target=target, radius_m=5.0, dwell_s=60.0))


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path | str]:
    """A controller key pair: private key, and the unit's command_keys dir with its .pub."""
    priv, pub_dir = tmp_path / "ctl" / "signing.pem", tmp_path / "unit" / "command_keys"
    key_id = write_signing_keypair(priv, pub_dir / "controller.pub")
    return {"priv": priv, "pub_dir": pub_dir, "key_id": key_id, "state": tmp_path / "unit"}


def verifier(keys: dict, clock: ManualClock, **kw) -> CommandVerifier:
    return CommandVerifier(load_public_keys(keys["pub_dir"]), clock, UNIT, state_dir=keys["state"], **kw)


def rejected(v: CommandVerifier, cmd: Command) -> str:
    with pytest.raises(CommandRejected) as info:
        v.verify(cmd)
    return info.value.reason


# ------------------------------------------------------------------------------ key files
def test_keypair_files_private_key_0600_and_key_id_from_the_key(keys: dict) -> None:
    assert os.stat(keys["priv"]).st_mode & 0o777 == 0o600
    pinned = load_public_keys(keys["pub_dir"])
    assert list(pinned) == [keys["key_id"]] and len(keys["key_id"]) == 16
    assert key_id_of(load_private_key(keys["priv"]).public_key()) == keys["key_id"]
    with pytest.raises(FileExistsError):  # never overwrite a signing key
        write_signing_keypair(keys["priv"], keys["pub_dir"] / "again.pub")


def test_signer_refuses_a_key_id_that_is_not_its_key(keys: dict) -> None:
    with pytest.raises(SignerError, match="key id"):
        CommandSigner(keys["priv"], "0123456789abcdef", ManualClock(START))


def test_canonical_bytes_cover_every_field_and_do_not_depend_on_key_order(keys: dict) -> None:
    cmd = CommandSigner(keys["priv"], keys["key_id"], ManualClock(START)).sign(dispatch())
    raw = json.loads(encode(cmd))
    shuffled = dict(reversed(list(raw.items())))
    assert canonical_command_bytes(decode_command(json.dumps(shuffled).encode())) == canonical_command_bytes(cmd)
    assert b'"signature"' not in canonical_command_bytes(cmd)
    for field, value in (("unit_id", "hh-2"), ("cmd_id", "c-2"), ("t_expires_utc", "2027-01-01T00:00:00.000Z"),
                         ("nonce", "0" * 32)):
        assert canonical_command_bytes(cmd.model_copy(update={field: value})) != canonical_command_bytes(cmd), field


# ------------------------------------------------------------------------------ verifier
def test_a_signed_command_is_accepted_once(keys: dict) -> None:
    clock = ManualClock(START)
    signer = CommandSigner(keys["priv"], keys["key_id"], clock)
    v = verifier(keys, clock)
    cmd = signer.sign(dispatch())
    assert v.verify(cmd).key_id == keys["key_id"]
    assert rejected(v, cmd) == "replayed"
    # the wire round trip changes nothing the signature covers
    v.verify(decode_command(encode(signer.sign(dispatch(cmd_id="c-2")))))


def test_every_wrong_command_is_refused_with_its_reason(keys: dict, tmp_path: Path) -> None:
    clock = ManualClock(START)
    signer = CommandSigner(keys["priv"], keys["key_id"], clock)
    v = verifier(keys, clock)
    good = signer.sign(dispatch())
    # forged: a valid, signed command whose target was changed in transit
    assert rejected(v, good.model_copy(update={"task": dispatch(x_m=99.0).task})) == "bad_signature"
    # forged: signed by another key that claims the pinned key's id
    attacker = CommandSigner(_other_key(tmp_path / "attacker"), None, clock)
    assert rejected(v, attacker.sign(dispatch()).model_copy(update={"key_id": keys["key_id"]})) == "bad_signature"
    assert rejected(v, attacker.sign(dispatch())) == "unknown_key"
    assert rejected(v, dispatch()) == "unsigned"
    assert rejected(v, good.model_copy(update={"signature": None})) == "unsigned"
    assert rejected(v, signer.sign(dispatch(unit="hh-2"))) == "wrong_unit"
    # row 8: a command dated 2099
    future = ManualClock("2099-01-01T00:00:00Z")
    assert rejected(v, CommandSigner(keys["priv"], None, future).sign(dispatch())) == "future_dated"
    # expired: signed now, arrives after its 120 s lifetime (+ 30 s skew)
    late = signer.sign(dispatch(cmd_id="late"))
    clock.advance(151.0)
    assert rejected(v, late) == "expired"
    long_lived = CommandSigner(keys["priv"], None, clock, {"dispatch": 7200.0}).sign(dispatch())
    assert rejected(v, long_lived) == "ttl_too_long"
    # a command within its window and skew is fine: nothing above was refused by accident
    v.verify(signer.sign(dispatch(cmd_id="ok")))


def test_no_pinned_key_refuses_everything_and_unsigned_needs_an_explicit_opt_out(keys: dict, tmp_path: Path) -> None:
    clock = ManualClock(START)
    signed = CommandSigner(keys["priv"], None, clock).sign(dispatch())
    nokeys = CommandVerifier({}, clock, UNIT, state_dir=tmp_path / "empty")
    assert rejected(nokeys, signed) == "no_pinned_key"
    lab = CommandVerifier({}, clock, UNIT, state_dir=tmp_path / "lab", require_signed=False)
    assert lab.verify(dispatch()).key_id is None
    assert rejected(lab, dispatch(unit="hh-2")) == "wrong_unit"


def test_invalid_unit_clock_fails_closed(keys: dict) -> None:
    class NoTime(ManualClock):
        utc_valid = False

    clock = NoTime(START)
    v = verifier(keys, clock)
    assert rejected(v, CommandSigner(keys["priv"], None, clock).sign(dispatch())) == "clock_invalid"


def test_replay_cache_survives_a_restart_and_expires(keys: dict) -> None:
    clock = ManualClock(START)
    signer = CommandSigner(keys["priv"], keys["key_id"], clock)
    cmd = signer.sign(dispatch())
    verifier(keys, clock).verify(cmd)
    assert (keys["state"] / NONCE_FILE).exists()
    assert rejected(verifier(keys, clock), cmd) == "replayed"  # a new process, same state dir
    clock.advance(200.0)  # past expiry + skew: the nonce is forgotten, the command is expired anyway
    v = verifier(keys, clock)
    v.verify(signer.sign(dispatch(cmd_id="c-2")))
    assert cmd.nonce not in v.nonces and rejected(v, cmd) == "expired"


def test_a_lost_replay_cache_refuses_commands_issued_before_the_start(keys: dict) -> None:
    clock = ManualClock(START)
    signer = CommandSigner(keys["priv"], keys["key_id"], clock)
    old = signer.sign(dispatch())
    verifier(keys, clock).verify(old)
    (keys["state"] / NONCE_FILE).write_text("{not json")
    clock.advance(5.0)
    v = verifier(keys, clock)
    assert rejected(v, old) == "issued_before_start"
    clock.advance(1.0)
    v.verify(signer.sign(dispatch(cmd_id="retry")))  # the controller's retry still gets through


def test_replay_cache_is_bounded_and_fails_closed(keys: dict) -> None:
    clock = ManualClock(START)
    signer = CommandSigner(keys["priv"], keys["key_id"], clock)
    v = verifier(keys, clock, max_nonces=16)
    for i in range(16):
        v.verify(signer.sign(dispatch(cmd_id=f"c-{i}")))
    assert rejected(v, signer.sign(dispatch(cmd_id="c-16"))) == "replay_cache_full"
    clock.advance(151.0)  # the old ones expire and are pruned
    v.verify(signer.sign(dispatch(cmd_id="c-17")))
    assert len(v.nonces) == 1


def test_key_rotation(keys: dict, tmp_path: Path) -> None:
    clock = ManualClock(START)
    old = CommandSigner(keys["priv"], keys["key_id"], clock)
    new_priv = tmp_path / "ctl" / "signing-2.pem"
    new_id = write_signing_keypair(new_priv, keys["pub_dir"] / "controller-2.pub")
    new = CommandSigner(new_priv, new_id, clock)
    both = verifier(keys, clock)  # during the rotation both keys are pinned
    assert set(both.keys) == {keys["key_id"], new_id}
    both.verify(old.sign(dispatch(cmd_id="a")))
    both.verify(new.sign(dispatch(cmd_id="b")))
    (keys["pub_dir"] / "controller.pub").unlink()  # rotation finished: the old key is removed
    after = verifier(keys, clock)
    assert rejected(after, old.sign(dispatch(cmd_id="c"))) == "unknown_key"
    after.verify(new.sign(dispatch(cmd_id="d")))


def _other_key(d: Path) -> Path:
    write_signing_keypair(d / "k.pem", d / "k.pub")
    return d / "k.pem"


# ------------------------------------------------------------------------------ gate (runtime)
def test_gate_counts_and_logs_refusals_rate_limited(keys: dict, caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(START)
    gate = CommandGate(CommandAuthConfig(keys_dir="command_keys"), UNIT, clock, keys["state"])
    signer = CommandSigner(keys["priv"], keys["key_id"], clock)
    with caplog.at_level(logging.WARNING, logger="agent.runtime.command_gate"):
        for i in range(50):
            assert not gate.admit(dispatch(cmd_id=f"forged-{i}"))
        assert gate.admit(signer.sign(dispatch()))
    refused = [r.getMessage() for r in caplog.records if "REFUSED" in r.getMessage()]
    assert len(refused) == 1 and "unsigned" in refused[0] and "forged-0" in refused[0]
    assert gate.rejected == {"unsigned": 50} and gate.accepted == 1 and gate.rejected_total == 50
    assert gate.status()["pinned_keys"] == [keys["key_id"]]


def test_dispatcher_commands_verify_on_the_unit(keys: dict, tmp_path: Path) -> None:
    """The controller signs what it dispatches, records the signed command, and the unit accepts it."""
    from controller.config import DispatchConfig
    from controller.dispatch import Dispatcher
    from controller.store import Store

    clock = ManualClock(START)
    sent: list[Command] = []
    with Store(tmp_path / "c.sqlite") as store:
        d = Dispatcher(store, clock, lambda unit, cmd: sent.append(cmd), DispatchConfig(),
                       signer=CommandSigner(keys["priv"], keys["key_id"], clock))
        task = {"task_id": "T-9", "unit_id": UNIT, "alarm_ids": ["A-1"], "target_x_m": 1.0, "target_y_m": 2.0,
                "target_z_m": 0.5, "radius_m": 5.0, "dwell_s": 60.0, "state": "open", "incident_id": "I-1",
                "history": [], "cmd_ids": []}
        d._send_dispatch(task, reason="test")
        d._send_cancel(task, reason="test")
        recorded = [Command.model_validate(r["payload"]) for r in store.list_commands("T-9")]
        assert store.command_issued(UNIT, sent[0].cmd_id, "T-9")
    assert recorded == sent and [c.command for c in sent] == ["dispatch", "cancel"]
    v = verifier(keys, clock)
    for cmd in sent:
        v.verify(decode_command(encode(cmd)))
    assert datetime.fromisoformat(sent[1].t_expires_utc.replace("Z", "+00:00")) - \
        datetime.fromisoformat(sent[1].t_issued_utc.replace("Z", "+00:00")) == timedelta(seconds=3600)


# ------------------------------------------------------------------------------ real broker, real agent
broker_only = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto binary not found")


def _wait(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


@broker_only
@pytest.mark.broker
@pytest.mark.timeout(240)
def test_forged_dispatch_to_an_idle_handheld_is_not_obeyed(tmp_path: Path, mosquitto: Mosquitto,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Row 4 on a live link: a forged dispatch (valid schema, bad signature), an unsigned one and a
    replay reach the handheld through the broker; it neither walks nor answers; a genuine one works."""
    from agent.config import profile_from_dict
    from agent.runtime.unit import AgentRuntime
    from hal_sim.scenario import packaged_scenario_path
    from hal_sim.sim_clock import SimClock

    state = tmp_path / "hh-1"
    priv = tmp_path / "controller" / "signing.pem"
    key_id = write_signing_keypair(priv, state / "command_keys" / "controller.pub")
    wall_start = time.time()
    sim = {"scenario": str(packaged_scenario_path("demo_yard"))}
    prof = profile_from_dict({
        "schema": 1, "unit_id": UNIT, "unit_type": "handheld",
        "site": {"name": "demo-yard", "origin_lat_deg": 51.95, "origin_lon_deg": 4.05, "origin_alt_m": 5.0},
        "clock": {"driver": "sim", "params": {"start_utc": START, "rate": 1.0, "wall_start_s": wall_start}},
        "devices": {"gamma": {"driver": "sim", "params": sim}, "gnss": {"driver": "sim", "params": sim},
                    "display": {"driver": "sim", "params": sim}},
        "broker": {"host": mosquitto.host, "port": mosquitto.port, "keepalive_s": 5, "reconnect_max_s": 0.5},
        "health": {"interval_s": 2.0},
    })
    rt = AgentRuntime(prof, state)
    # no dwell finishes in this test: skip compiling the dwell analysis (numba, 10-50 s on a busy CI box)
    rt.role.warm_up = lambda: None  # type: ignore[method-assign]
    signer = CommandSigner(priv, key_id, SimClock(START, 1.0, wall_start))
    events: list[dict] = []
    births: list[dict] = []

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        (births if msg.topic.endswith("/birth") else events).append(json.loads(msg.payload))

    ctl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-controller", protocol=mqtt.MQTTv5)
    ctl.on_message = on_message
    ctl.connect(mosquitto.host, mosquitto.port)
    ctl.subscribe([(f"cedge/v1/up/{UNIT}/task_event", 1), (f"cedge/v1/up/{UNIT}/birth", 1)])
    ctl.loop_start()
    th = threading.Thread(target=rt.run, daemon=True)
    th.start()
    try:
        _wait(lambda: rt.link.stats()["connected"], 60, "handheld connected")
        attacker = CommandSigner(_other_key(tmp_path / "attacker"), None, SimClock(START, 1.0, wall_start))
        forged = attacker.sign(dispatch(task_id="T-evil", cmd_id="evil-1")).model_copy(update={"key_id": key_id})
        genuine = signer.sign(dispatch(task_id="T-real", cmd_id="real-1"))
        with caplog.at_level(logging.WARNING, logger="agent.runtime.command_gate"):
            for cmd in (forged, dispatch(task_id="T-evil", cmd_id="evil-2")):
                ctl.publish(command_topic(UNIT), encode(cmd), qos=1).wait_for_publish(5)
            _wait(lambda: sum(rt.command_gate.rejected.values()) >= 2, 30, "both forgeries refused")
            assert rt.role.task is None and rt.role.available  # the handheld did not take the attacker's task
            ctl.publish(command_topic(UNIT), encode(genuine), qos=1).wait_for_publish(5)
            _wait(lambda: any(e["body"]["task_id"] == "T-real" for e in events), 30, "genuine dispatch accepted")
            ctl.publish(command_topic(UNIT), encode(genuine), qos=1).wait_for_publish(5)  # a replay
            _wait(lambda: rt.command_gate.rejected.get("replayed", 0) == 1, 30, "replay refused")
        assert rt.command_gate.rejected == {"bad_signature": 1, "unsigned": 1, "replayed": 1}
        # a signed ping is the controller's request for a new birth (it holds data of an unknown boot)
        n_births = len(births)
        ping = signer.sign(Command(cmd_id="ping-1", unit_id=UNIT, command="ping", t_utc=START))
        ctl.publish(command_topic(UNIT), encode(ping), qos=1).wait_for_publish(5)
        _wait(lambda: len(births) > n_births, 30, "birth re-sent on a signed ping")
        assert births[-1]["boot_id"] == rt.boot_id and births[-1]["body"]["last_seq"] >= 1
        assert rt.role.task is not None and rt.role.task.task_id == "T-real"
        # the handheld answered only the genuine command, and named it (later events, if its simulated
        # operator already reached the target, carry the same ids)
        answers = [(e["body"]["task_id"], e["body"]["cmd_id"], e["body"]["state"]) for e in events]
        assert answers[0] == ("T-real", "real-1", "accepted")
        assert {a[:2] for a in answers} == {("T-real", "real-1")}
        refused = [r.getMessage() for r in caplog.records if "REFUSED" in r.getMessage()]
        assert any("evil-1" in m and "bad_signature" in m for m in refused)
        assert any("evil-2" in m and "unsigned" in m for m in refused)
        rt.write_status()
        status = json.loads((state / "status.json").read_text())
        assert status["commands"]["rejected"] == {"bad_signature": 1, "unsigned": 1, "replayed": 1}
    finally:
        rt.stop()
        th.join(timeout=30)
        ctl.loop_stop()
        ctl.disconnect()
    assert not th.is_alive()


def test_controller_service_signs_its_rebirth_requests_and_checks_its_key(keys: dict, tmp_path: Path) -> None:
    """The service wiring: signing key and key id from the config (a mismatch stops the start), the
    enrolment file must exist, and the ping that asks a unit for a birth is signed and recorded."""
    import queue

    from controller.config import ConfigError, controller_config_from_dict
    from controller.service import ControllerService

    class Link:
        def __init__(self) -> None:
            self.inbox: queue.Queue = queue.Queue()
            self.sent: list[Command] = []
            self.connected = True

        def publish_command(self, unit_id: str, cmd: Command) -> None:
            self.sent.append(cmd)

    enrolled = tmp_path / "enrolled.yaml"
    enrolled.write_text(f"units: [{UNIT}]\n")
    base = {"db_path": str(tmp_path / "c.sqlite"), "command_signing_key": str(keys["priv"]),
            "enrolled_units_file": str(enrolled)}
    clock = ManualClock(START)
    with pytest.raises(ConfigError, match="key id"):
        ControllerService(controller_config_from_dict({**base, "command_key_id": "0123456789abcdef"}), clock, Link())
    with pytest.raises(ConfigError, match="missing.yaml"):
        ControllerService(controller_config_from_dict({**base, "enrolled_units_file": str(tmp_path / "missing.yaml")}),
                          clock, Link())
    link = Link()
    svc = ControllerService(controller_config_from_dict({**base, "command_key_id": keys["key_id"]}), clock, link)
    try:
        assert svc.enrolment is not None and svc.enrolment.units == {UNIT}
        svc._request_birth(UNIT)
        (ping,) = link.sent
        assert ping.command == "ping" and [r["cmd_id"] for r in svc.store.list_commands()] == [ping.cmd_id]
        verifier(keys, clock).verify(decode_command(encode(ping)))
    finally:
        svc.store.close()
