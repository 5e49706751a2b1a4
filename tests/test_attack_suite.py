"""Attack suite (issue 14, rows 2-8): the attacks of the issue's table, repeated on a live, secure fleet.

One fleet for the whole module, run the way tests/test_end_to_end.py and ``cedge demo`` run it
(:class:`cedge.fleet.Fleet`: a ``cedge controller run`` process and four ``cedge agent run``
processes on the simulated demo yard at 10x real time), connected to a real Mosquitto running the
configuration ``cedge site init`` generates for the site (TLS listener, client certificates,
certificate CN = username = client id, no anonymous access, the site ACL and CRL, size limits).
The attacker holds what an attacker plausibly gets:

* nothing (anonymous: plain MQTT, or TLS without a client certificate): refused at connect;
* the certificate of another enrolled unit (``hh-9``, ``mob-8``: units that are not running, whose
  keys were stolen): the ACL confines it to its own topics, so it can only speak as itself;
* a controller TLS identity without the controller's signing key (``ctl-rogue``): it stands for a
  compromised broker or a stolen controller certificate; it may put any bytes on a command topic,
  and the units refuse what the pinned controller key did not sign;
* for row 6, the certificate of the very unit it impersonates (a compromised ``mob-2``);
* for row 3's unknown unit, a unit revoked from the site whose broker was not reloaded yet (the
  broker's ACL still lets it publish; the controller's enrolment no longer knows it).

Each row's test shows that nothing forged is stored or obeyed and that the attempt is logged: by
the broker (refused connections; refused publishes, which Mosquitto 2.0 logs only with
``log_type debug``, so this broker adds that one line to the site config), by the controller (a
row in its rejects table with the reason code, and its rate-limited log) or by the handheld (its
command gate's log, ``commands.rejected`` in status.json, and the controller's
``commands_refused_by_unit`` counter fed by the handheld's health messages).  The last test stops
the fleet and shows that no real message or alarm was lost: per unit and boot the stored sequence
numbers are 1..N with N what the unit says it sent, ``cedge controller stats`` reports no gap, and
the controller holds every alarm and task event each unit sent.

Rows 2, 5 and 8's replay need a live task: a watcher thread (:class:`TaskAttacker`) attacks every
task as soon as its handheld has accepted it, whatever test runs at that moment.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from broker_fixture import Mosquitto, find_mosquitto
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.command_auth import write_signing_keypair
from agent.geo import LocalFrame
from agent.hal.interfaces import utc_iso
from agent.wire_schema import (
    Alarm,
    Birth,
    Command,
    DispatchTask,
    Measurement,
    Nuclide,
    Position,
    SensorHealth,
    TaskEvent,
    TaskResult,
    command_topic,
    encode,
    make_envelope,
    uplink_topic,
)
from cedge.fleet import Fleet
from cedge.site.layout import SiteLayout
from cedge.site.manage import enroll, init_site, revoke
from cedge.site.registry import DEFAULT_CONTROLLER, load_registry
from controller.command_signer import CommandSigner
from controller.store import Store, StoreError
from hal_sim.scenario import packaged_scenario_path
from hal_sim.sim_clock import ManualClock, SimClock

pytestmark = [
    pytest.mark.slow,
    pytest.mark.broker,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs the mosquitto binary (apt-get install mosquitto)"),
    pytest.mark.timeout(420),
]

UNITS = ["mob-1", "mob-2", "hh-1", "hh-2"]
HANDHELDS = ("hh-1", "hh-2")
THIEF = "hh-9"  # an enrolled unit that is not running: the attacker holds its certificate
IMPOSTOR = "mob-8"  # another stolen unit certificate, used to pose as the controller (row 7)
REVOKED = "mob-7"  # revoked during the run, its broker not reloaded: an unknown unit to the controller
ROGUE = "ctl-rogue"  # a controller TLS identity without the signing key (compromised broker)
NOT_AUTHORIZED = 135  # MQTT 5 PUBACK reason code
MARK = "atk-"  # every id the attacker makes up starts with this, so the stores can be searched for it
FORGED_DISTANCE_M = 100.0  # forged targets lie this far from the handheld's post, away from the yard
YARD_CENTRE_XY = (70.0, 18.0)
FORGED_PU_XY = (120.0, 40.0)  # the forged Pu-239 alarm: 50 m from the real Cs-137, nothing there
WAIT_S = 240.0  # generous: a loaded 2-core machine takes 30-60 s just to warm the agents up
T = TypeVar("T")


# ------------------------------------------------------------------------------ MQTT peers
class Peer:
    """A paho MQTT 5 client that records its connection outcome, PUBACK reason codes and messages."""

    def __init__(self, client: mqtt.Client) -> None:
        self.c = client
        self.messages: list[tuple[str, bytes]] = []
        self.connects: list[bool] = []
        self.disconnects = 0
        self.puback: dict[int, int] = {}
        self.subacks = 0
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
        with self._lock:
            self.puback[mid] = int(getattr(rc, "value", 0))

    def _on_subscribe(self, c: mqtt.Client, u: object, mid: int, rcs: list, props: object) -> None:
        with self._lock:
            self.subacks += 1

    def start(self, host: str, port: int, timeout_s: float = 30.0) -> bool:
        """Connect and wait for the outcome; True if the broker accepted the connection."""
        try:
            self.c.connect(host, port, keepalive=60)
        except (OSError, ssl.SSLError):
            return False
        self.c.loop_start()
        self.done.wait(timeout_s)
        return bool(self.connects) and self.connects[0] and self.disconnects == 0

    def publish_all(self, items: list[tuple[str, bytes]], timeout_s: float = 60.0) -> list[int]:
        """QoS-1 publishes sent back to back; their PUBACK reason codes (-1: none came)."""
        infos = [self.c.publish(topic, payload, qos=1) for topic, payload in items]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if all(i.mid in self.puback for i in infos):
                    break
            time.sleep(0.02)
        with self._lock:
            return [self.puback.get(i.mid, -1) for i in infos]

    def publish(self, topic: str, payload: bytes) -> int:
        return self.publish_all([(topic, payload)])[0]

    def subscribe(self, topic: str, timeout_s: float = 30.0) -> None:
        n = self.subacks
        self.c.subscribe(topic, options=SubscribeOptions(qos=1))
        wait_for(lambda: self.subacks > n, timeout_s, f"SUBACK for {topic}")

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def wait_for(pred: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.3) -> T:
    """Poll ``pred`` until it returns something truthy; return that (never assume speed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


# ------------------------------------------------------------------------------ the arena
@dataclass
class TaskAttack:
    """What the watcher did to one live task (rows 2, 5 and 8's replay)."""

    task_id: str
    unit_id: str
    cmd_id: str
    attempts: int
    t_epoch_s: float  # simulated time of the attack (the controller's clock)
    acl_codes: list[int] = field(default_factory=list)  # PUBACKs of what a foreign certificate tried
    own_topic_codes: list[int] = field(default_factory=list)  # PUBACKs on the thief's own topic
    rogue_codes: list[int] = field(default_factory=list)  # PUBACKs of the rogue controller identity
    forged_cmd_ids: list[str] = field(default_factory=list)
    replay: bytes = b""  # the real dispatch, captured and replayed
    replay_issued_utc: str = ""
    replay_expires_utc: str = ""
    replay_reason: str = "replayed"  # 'replayed|expired' if it was already old when replayed


class Arena:
    """The site, its broker, the fleet and the attacker's clients, plus what the attacker did."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.site = root / "site"
        init_site(self.site, [*UNITS, THIEF, IMPOSTOR, REVOKED], site_name="demo-yard", broker_host="127.0.0.1")
        enroll(self.site, ROGUE, controller=True)
        layout = SiteLayout.at(self.site)
        self.signing_key = layout.signing_key
        self.pinned_key_id = load_registry(layout.registry).command_key_ids[-1]
        self.attacker_key = root / "attacker" / "signing.pem"
        write_signing_keypair(self.attacker_key, root / "attacker" / "signing.pub")
        # Mosquitto 2.0 logs a refused PUBLISH ("Denied PUBLISH from ...") only at debug level
        self.broker = Mosquitto.secure(root / "broker", self.site, extra_conf="log_type debug\n")
        self.fleet = Fleet(packaged_scenario_path("demo_yard"), root / "fleet", rate=10.0, units=UNITS,
                           broker_host=self.broker.host, broker_port=self.broker.port, site_dir=self.site)
        sc = self.fleet.scenario
        self.clock = SimClock(sc.time.start_utc, self.fleet.rate, self.fleet.wall_start_s)
        self.frame = LocalFrame(sc.site.origin_lat_deg, sc.site.origin_lon_deg, sc.site.origin_alt_m)
        self.homes = {u.unit_id: tuple(u.start_m) for u in sc.units if u.unit_id in HANDHELDS}
        self.peers: list[Peer] = []
        self.thief: Peer | None = None
        self.rogue: Peer | None = None
        self.impostor: Peer | None = None
        self.attacker: TaskAttacker | None = None
        self._lock = threading.Lock()
        self._seq: Counter[str] = Counter()
        self.expected_refusals: dict[str, Counter[str]] = {h: Counter() for h in HANDHELDS}
        self.forged_targets: dict[str, list[tuple[float, float]]] = {h: [] for h in HANDHELDS}
        self.row6: dict[str, Any] = {}
        self._store: Store | None = None

    # -------------------------------------------------------------- life cycle
    def start(self) -> None:
        self.broker.start()
        self.fleet.start()
        self.thief = self.connect(THIEF)
        self.rogue = self.connect(ROGUE)
        self.attacker = TaskAttacker(self)
        self.attacker.start()

    def close(self) -> None:
        if self.attacker is not None:
            self.attacker.stop()
        for p in self.peers:
            with contextlib.suppress(Exception):  # teardown goes on
                p.stop()
        if self._store is not None:
            self._store.close()
        try:
            self.fleet.stop()
        finally:
            self.broker.stop()

    def connect(self, identity: str, client_id: str | None = None, **kw: Any) -> Peer:
        p = Peer(self.broker.client(identity, client_id=client_id, **kw))
        self.peers.append(p)
        assert p.start(self.broker.host, self.broker.port), \
            f"{identity} could not connect: {self.broker.log_text()[-1500:]}"
        return p

    # -------------------------------------------------------------- forging
    def now_iso(self) -> str:
        return utc_iso(self.clock.utc_now())

    def now_s(self) -> float:
        return self.clock.utc_now().timestamp()

    def pos(self, x_m: float, y_m: float, z_m: float = 1.0) -> Position:
        lat, lon, alt = self.frame.to_geodetic(x_m, y_m, z_m)
        return Position(lat_deg=lat, lon_deg=lon, alt_m=alt, x_m=x_m, y_m=y_m, z_m=z_m, fix_quality=1)

    def envelope(self, kind: str, unit_id: str, body: Any, boot_id: str, seq: int | None = None) -> bytes:
        """An envelope as a unit would send it, with the simulated time the controller expects."""
        if seq is None:
            with self._lock:
                self._seq[boot_id] += 1
                seq = 0 if kind in ("birth", "death") else self._seq[boot_id]
        return encode(make_envelope(kind, unit_id, boot_id, seq, self.now_iso(), self.clock.monotonic_s(), True,
                                    body))

    def forged_target(self, handheld: str) -> tuple[float, float]:
        """A point FORGED_DISTANCE_M from the handheld's post, away from the yard: no real task
        ever sends it there, so getting closer than half that distance means it obeyed a forgery."""
        hx, hy = self.homes[handheld]
        dx, dy = hx - YARD_CENTRE_XY[0], hy - YARD_CENTRE_XY[1]
        n = math.hypot(dx, dy)
        xy = (hx + FORGED_DISTANCE_M * dx / n, hy + FORGED_DISTANCE_M * dy / n)
        with self._lock:
            self.forged_targets[handheld].append(xy)
        return xy

    def forged_dispatch(self, handheld: str, tag: str) -> Command:
        x, y = self.forged_target(handheld)
        tid = f"{MARK}{tag}-{uuid.uuid4().hex[:8]}"
        return Command(cmd_id=f"{tid}-cmd", unit_id=handheld, command="dispatch", t_utc=self.now_iso(),
                       task=DispatchTask(task_id=tid, alarm_id=f"{MARK}alarm", target=self.pos(x, y), radius_m=5.0,
                                         dwell_s=60.0, note="forged"))

    def unsigned_forgeries(self, cmd: Command) -> list[tuple[str, Command]]:
        """(expected refusal, command): signed by a key the unit does not pin, once claiming the
        pinned key's id; and not signed at all."""
        attacker = CommandSigner(self.attacker_key, None, self.clock)

        def variant(suffix: str) -> Command:
            return cmd.model_copy(update={"cmd_id": f"{cmd.cmd_id}-{suffix}"})

        out = [("bad_signature", attacker.sign(variant("bad-sig")).model_copy(update={"key_id": self.pinned_key_id})),
               ("unknown_key", attacker.sign(variant("unknown-key"))),
               ("unsigned", variant("unsigned"))]
        return out

    def expect_refused(self, handheld: str, reasons: dict[str, int]) -> None:
        with self._lock:
            self.expected_refusals[handheld].update(reasons)

    # -------------------------------------------------------------- looking
    def status(self, unit: str) -> dict[str, Any]:
        try:
            return json.loads((self.fleet.state_dir(unit) / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def refused_by(self, unit: str) -> Counter[str]:
        return Counter(self.status(unit).get("commands", {}).get("rejected", {}))

    def rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        """A SELECT on the controller's database (one connection, opened once the database exists)."""
        with self._lock:
            if self._store is None:
                try:
                    self._store = Store(self.fleet.db_path, create=False)
                except StoreError:
                    return []
        return self._store.query(sql, params)

    def log(self, name: str) -> str:
        path = self.fleet.work_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def broker_log(self, since: int = 0) -> str:
        return self.broker.log_text()[since:]

    def denied(self, identity: str, topic: str, since: int = 0) -> int:
        """Refused publishes the broker logged for ``identity`` on ``topic``."""
        pattern = rf"Denied PUBLISH from {re.escape(identity)} \(d\d, q\d, r\d, m\d+, '{re.escape(topic)}'"
        return len(re.findall(pattern, self.broker_log(since)))

    def assert_anonymous_refused(self, client_id: str) -> None:
        """Plain MQTT and TLS without a client certificate, with ``client_id``: no CONNACK, and the
        broker logs both refusals."""
        since = len(self.broker.log_text())
        plain = Peer(mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                 reconnect_on_failure=False))
        tls = Peer(self.broker.client(None, client_id=client_id, reconnect_on_failure=False))
        for p in (plain, tls):
            self.peers.append(p)
            assert not p.start(self.broker.host, self.broker.port), f"anonymous {client_id} was let in"
            assert p.messages == []
        wait_for(lambda: "wrong version number" in self.broker_log(since)
                 and "peer did not return a certificate" in self.broker_log(since), 30,
                 "the broker's log of both refused anonymous connections")
        assert f" as {client_id} (" not in self.broker_log(since)


def refusal_lines(arena: Arena, handheld: str) -> Counter[str]:
    """REFUSED lines of the handheld's command gate, per reason (rate-limited: at least one per
    reason and interval; the exact counts are in status.json)."""
    found = re.findall(rf"REFUSED \w+ command \S+ \(task .*?, for {re.escape(handheld)}\): (\w+)",
                       arena.log(handheld))
    return Counter(found)


#: Tasks whose handheld has answered "accepted" and not yet reported a result, judged by the task
#: events the controller stored (not by the task's state, which the dispatcher thread applies later
#: and, on a loaded machine, up to minutes later): the handheld is busy with it right now.
LIVE_TASKS = """
    SELECT t.task_id, t.unit_id, e.cmd_id, t.attempts FROM tasks t JOIN task_events e
      ON e.task_id = t.task_id AND e.unit_id = t.unit_id AND e.state = 'accepted'
    WHERE t.state NOT IN ('open', 'confirmed', 'cleared', 'cancelled', 'timed_out', 'rejected')
      AND NOT EXISTS (SELECT 1 FROM task_events r WHERE r.task_id = t.task_id
                      AND r.state IN ('confirmed', 'cleared', 'rejected'))
    ORDER BY e.id"""


class TaskAttacker(threading.Thread):
    """Attacks every task the moment its handheld has accepted it (at most three tasks).

    Row 2: the task's ids are known to the attacker (the worst case: a captured dispatch); it
    publishes ``accepted`` .. ``cleared`` for it with a foreign certificate on the handheld's topic
    (the ACL refuses), on its own topic as itself (``task_not_issued``) and on its own topic as the
    handheld (``topic_mismatch``).  Row 5: forged dispatches to the now busy handheld, with a
    foreign unit certificate (ACL) and through the rogue controller identity (bad signature,
    unknown key, unsigned).  Row 8: the real dispatch, captured, replayed at once (``replayed``).
    """

    def __init__(self, arena: Arena) -> None:
        super().__init__(name="task-attacker", daemon=True)
        self.arena = arena
        self.attacks: list[TaskAttack] = []
        self.errors: list[str] = []
        self._stop_evt = threading.Event()

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=30)

    def run(self) -> None:
        while not self._stop_evt.wait(0.25) and len(self.attacks) < 3:
            try:
                for t in self.arena.rows(LIVE_TASKS):
                    if t["task_id"] not in {a.task_id for a in self.attacks}:
                        self.attacks.append(self.attack(t))
            except Exception as err:  # noqa: BLE001 - reported by the tests
                self.errors.append(f"{type(err).__name__}: {err}")

    def attack(self, t: dict[str, Any]) -> TaskAttack:
        a = self.arena
        assert a.thief is not None and a.rogue is not None
        unit, task_id, cmd_id = t["unit_id"], t["task_id"], t["cmd_id"]
        rec = TaskAttack(task_id=task_id, unit_id=unit, cmd_id=cmd_id, attempts=int(t["attempts"]),
                         t_epoch_s=a.now_s())
        # row 8: the real dispatch, as a compromised broker saw it go by, sent again at once
        (real,) = a.rows("SELECT payload FROM commands WHERE cmd_id = ?", (cmd_id,))
        rec.replay = real["payload"].encode() if isinstance(real["payload"], str) else json.dumps(
            real["payload"]).encode()
        replayed = json.loads(rec.replay)
        rec.replay_issued_utc, rec.replay_expires_utc = replayed["t_issued_utc"], replayed["t_expires_utc"]
        age_s = a.now_s() - datetime.fromisoformat(rec.replay_issued_utc.replace("Z", "+00:00")).timestamp()
        rec.replay_reason = "replayed" if age_s < 100.0 else "replayed|expired"  # lifetime 120 s + 30 s skew
        rec.rogue_codes.append(a.rogue.publish(command_topic(unit), rec.replay))
        # row 2: forged progress ending in "cleared", three ways
        boot = f"{MARK}boot-{uuid.uuid4().hex[:12]}"
        cleared = TaskResult(dwell_s=60.0, gross_cps=300.0, background_cps=298.0, net_cps=2.0,
                             significance_sigma=0.2)
        for state in ("accepted", "on_site", "measuring", "cleared"):
            ev = TaskEvent(task_id=task_id, cmd_id=cmd_id, state=state, reason=f"{MARK}forged",
                           result=cleared if state == "cleared" else None)
            rec.acl_codes.append(a.thief.publish(uplink_topic(unit, "task_event"),
                                                 a.envelope("task_event", unit, ev, boot)))
            rec.own_topic_codes += a.thief.publish_all([
                (uplink_topic(THIEF, "task_event"), a.envelope("task_event", THIEF, ev, boot)),
                (uplink_topic(THIEF, "task_event"), a.envelope("task_event", unit, ev, boot))])
        # row 5: forged dispatches to the busy handheld
        forged = a.forged_dispatch(unit, "row5")
        rec.acl_codes.append(a.thief.publish(command_topic(unit), encode(forged)))
        for _reason, cmd in a.unsigned_forgeries(forged):
            rec.forged_cmd_ids.append(cmd.cmd_id)
            rec.rogue_codes.append(a.rogue.publish(command_topic(unit), encode(cmd)))
        a.expect_refused(unit, {"bad_signature": 1, "unknown_key": 1, "unsigned": 1, rec.replay_reason: 1})
        return rec

    def closed(self) -> list[tuple[TaskAttack, dict[str, Any]]]:
        """Attacked tasks that have reached a final state, with their task rows."""
        out = []
        for rec in list(self.attacks):
            rows = self.arena.rows("SELECT * FROM tasks WHERE task_id = ?", (rec.task_id,))
            if rows and rows[0]["state"] in ("confirmed", "cleared", "cancelled", "timed_out", "rejected"):
                out.append((rec, rows[0]))
        return out


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    a = Arena(tmp_path_factory.mktemp("attack"))
    try:
        a.start()
        yield a
    finally:
        a.close()


def handheld_online(arena: Arena, unit: str) -> bool:
    st = arena.status(unit)
    return bool(st.get("link", {}).get("connected")) and st.get("link", {}).get("sequenced_sent", 0) > 0


def decided_tasks(arena: Arena) -> list[tuple[TaskAttack, dict[str, Any]]]:
    """The attacked tasks, once one of them was closed by its handheld (confirmed or cleared)."""
    assert arena.attacker is not None

    def ready() -> list[tuple[TaskAttack, dict[str, Any]]]:
        assert not arena.attacker.errors, arena.attacker.errors  # type: ignore[union-attr]
        closed = arena.attacker.closed()  # type: ignore[union-attr]
        return closed if any(row["state"] in ("confirmed", "cleared") for _, row in closed) else []

    wait_for(ready, 2 * WAIT_S, "an attacked task closed by its real handheld")
    return arena.attacker.closed()


def task_history(row: dict[str, Any]) -> list[dict[str, Any]]:
    h = row["history"]
    return json.loads(h) if isinstance(h, str) else h


# ------------------------------------------------------------------------------ row 4
def test_row4_forged_dispatch_to_an_idle_handheld_is_refused_and_logged(arena: Arena) -> None:
    """Row 4: a forged dispatch made an idle handheld walk to the attacker's point and the
    controller treated it as busy for the rest of the run."""
    assert arena.thief is not None and arena.rogue is not None
    wait_for(lambda: all(handheld_online(arena, h) for h in HANDHELDS), WAIT_S, "both handhelds online")
    idle = wait_for(lambda: next((h for h in HANDHELDS if arena.status(h).get("role", {}).get("task", "?") is None),
                                 None), WAIT_S, "an idle handheld")
    arena.assert_anonymous_refused(f"{MARK}row4")
    before = arena.refused_by(idle)
    t_attack = arena.now_s()
    cmd = arena.forged_dispatch(idle, "row4")
    # a unit certificate: the ACL lets only controller identities publish commands
    assert arena.thief.publish(command_topic(idle), encode(cmd)) == NOT_AUTHORIZED
    wait_for(lambda: arena.denied(THIEF, command_topic(idle)) >= 1, 30, "the broker's log of the refused publish")
    # a compromised broker (a controller TLS identity): delivered, but not signed by the controller
    forgeries = arena.unsigned_forgeries(cmd)
    assert arena.rogue.publish_all([(command_topic(idle), encode(c)) for _, c in forgeries]) == [0, 0, 0]
    want = Counter(reason for reason, _ in forgeries)
    arena.expect_refused(idle, want)
    wait_for(lambda: refused_since(arena, idle, before, want), 60, f"{idle} refusing the three forgeries")
    # the handheld did not take the task, and logged why
    st = arena.status(idle)
    assert st["role"]["task"] is None or not st["role"]["task"].startswith(MARK)
    lines = refusal_lines(arena, idle)
    assert all(lines[r] >= 1 for r in want), lines
    # the controller still sees it as free: its health after the refusals says available, no task
    n_refused = sum(arena.refused_by(idle).values())
    health = wait_for(lambda: arena.rows(
        "SELECT available, task_id, commands_rejected FROM health WHERE unit_id = ? AND commands_rejected >= ? "
        "ORDER BY id LIMIT 1", (idle, n_refused)), 60, f"a health message of {idle} reporting the refusals")
    genuine = {r["task_id"] for r in arena.rows("SELECT task_id FROM tasks WHERE unit_id = ?", (idle,))}
    assert health[0]["task_id"] is None or health[0]["task_id"] in genuine
    assert health[0]["available"] == 1 or health[0]["task_id"] in genuine
    wait_for(lambda: arena.rows("SELECT value FROM counters WHERE name = 'commands_refused_by_unit' "
                                "AND unit_id = ? AND value >= ?", (idle, n_refused)), 60,
             "the controller's count of commands the handheld refused")
    # it did not walk towards the attacker's point: a minute of simulated walking later, still far
    wait_for(lambda: arena.rows("SELECT id FROM measurements WHERE unit_id = ? AND t_epoch_s > ?",
                                (idle, t_attack + 60.0)), 60, f"a minute of {idle}'s measurements")
    assert_never_approached(arena, idle)
    # and it never answered: no task event names the forged task, stored or rejected
    assert arena.rows("SELECT id FROM task_events WHERE task_id LIKE ? OR cmd_id LIKE ?",
                      (f"{MARK}%", f"{MARK}%")) == []
    assert arena.rows("SELECT id FROM rejects WHERE payload_excerpt LIKE ?", (f"%{cmd.cmd_id}%",)) == []


def refused_since(arena: Arena, unit: str, before: Counter[str], want: Counter[str]) -> bool:
    """The unit has refused at least ``want`` more commands per reason than ``before`` (the watcher
    may attack the same handheld meanwhile; the last test checks the exact totals)."""
    now = arena.refused_by(unit)
    return all(now[r] - before[r] >= n for r, n in want.items())


def assert_never_approached(arena: Arena, handheld: str) -> None:
    """Every position the handheld reported is more than half the forged distance from each forged target."""
    for x, y in list(arena.forged_targets[handheld]):
        (r,) = arena.rows("SELECT COUNT(*) AS n, MIN((x_m - ?) * (x_m - ?) + (y_m - ?) * (y_m - ?)) AS d2 "
                          "FROM measurements WHERE unit_id = ? AND x_m IS NOT NULL", (x, x, y, y, handheld))
        assert r["n"] > 0, f"no positions of {handheld}"
        assert math.sqrt(r["d2"]) > FORGED_DISTANCE_M / 2, \
            f"{handheld} came within {math.sqrt(r['d2']):.0f} m of a forged target {x:.0f},{y:.0f}"


# ------------------------------------------------------------------------------ row 3
def test_row3_forged_pu239_alarm_opens_no_incident(arena: Arena) -> None:
    """Row 3: a forged Pu-239 alarm under mob-1 opened an incident and sent a handheld 45 m away;
    unknown unit ids were accepted too."""
    assert arena.thief is not None
    arena.assert_anonymous_refused("mob-1")
    boot = f"{MARK}boot-{uuid.uuid4().hex[:12]}"

    def pu239(n: int) -> Alarm:
        now = arena.now_iso()
        return Alarm(alarm_id=f"{MARK}pu239-{n}", detector="spectral_nmf", significance_sigma=40.0, peak_cps=9000.0,
                     background_cps=300.0, t_peak_utc=now, position=arena.pos(*FORGED_PU_XY), threshold_sigma=5.0,
                     nuclides=[Nuclide(name="Pu-239", confidence=0.99)])

    # another unit's certificate on mob-1's topic: the ACL refuses it
    mob1_topic = uplink_topic("mob-1", "alarm")
    assert arena.thief.publish(mob1_topic, arena.envelope("alarm", "mob-1", pu239(1), boot)) == NOT_AUTHORIZED
    # its own topic, claiming to be mob-1 in the envelope: the controller checks topic = identity
    own = uplink_topic(THIEF, "alarm")
    assert arena.thief.publish(own, arena.envelope("alarm", "mob-1", pu239(2), boot)) == 0
    # a unit id the site does not enrol: revoked, but its broker not reloaded yet (the ACL still
    # lets it publish): the controller re-reads the registry and refuses it
    stranger = arena.connect(REVOKED)
    log_mark = len(arena.log("controller"))
    revoke(arena.site, REVOKED)
    wait_for(lambda: re.search(rf"enrolment changed .*-\[?'?{REVOKED}", arena.log("controller")[log_mark:]), 60,
             "the controller noticing the revocation")
    born = Birth(unit_type="mobile", profile="p", software_version="0.1", site="demo-yard",
                 sensors={"gamma": SensorHealth(state="ok")})
    stranger_topic = uplink_topic(REVOKED, "alarm")
    assert stranger.publish_all([(uplink_topic(REVOKED, "birth"), arena.envelope("birth", REVOKED, born, boot)),
                                 (stranger_topic, arena.envelope("alarm", REVOKED, pu239(3), boot))]) == [0, 0]

    def rejects() -> dict[tuple[str, str], int]:
        rows = arena.rows("SELECT topic, reason_code, COUNT(*) AS n FROM rejects WHERE topic IN (?, ?, ?) "
                          "GROUP BY topic, reason_code", (own, stranger_topic, uplink_topic(REVOKED, "birth")))
        return {(r["topic"], r["reason_code"]): r["n"] for r in rows}

    want = {(own, "topic_mismatch"): 1, (stranger_topic, "unit_not_enrolled"): 1,
            (uplink_topic(REVOKED, "birth"), "unit_not_enrolled"): 1}
    wait_for(lambda: rejects() == want, 60, f"the controller rejecting the forged alarms: {want}")
    # logged: broker (refused publish), controller (reason codes, rate-limited log)
    assert arena.denied(THIEF, mob1_topic) == 1
    text = arena.log("controller")  # one line per reason and interval; the rejects table has each
    assert f"rejected {own}: topic_mismatch:" in text or ": topic_mismatch:" in text
    assert re.search(rf"rejected cedge/v1/up/{REVOKED}/\w+: unit_not_enrolled:", text)
    # nothing stored: no forged alarm, no unit made up, no incident or task near the forged point
    assert arena.rows("SELECT alarm_id FROM alarms WHERE alarm_id LIKE ?", (f"{MARK}%",)) == []
    assert arena.rows("SELECT unit_id FROM units WHERE unit_id IN (?, ?, ?)", (THIEF, REVOKED, IMPOSTOR)) == []
    counters = {r["name"]: r["value"] for r in arena.rows("SELECT name, value FROM counters WHERE unit_id = ?",
                                                          (REVOKED,))}
    assert counters.get("unit_not_enrolled") == 2
    assert_nothing_near_the_forged_alarm(arena)


def assert_nothing_near_the_forged_alarm(arena: Arena) -> None:
    x, y = FORGED_PU_XY
    for inc in arena.rows("SELECT incident_id, center_x_m, center_y_m, est_x_m, est_y_m FROM incidents"):
        for cx, cy in ((inc["center_x_m"], inc["center_y_m"]), (inc["est_x_m"], inc["est_y_m"])):
            if cx is not None:
                assert math.hypot(cx - x, cy - y) > 20.0, f"incident {inc['incident_id']} near the forged alarm"
    for t in arena.rows("SELECT task_id, target_x_m, target_y_m FROM tasks"):
        assert math.hypot(t["target_x_m"] - x, t["target_y_m"] - y) > 20.0, f"task {t['task_id']} sent there"


# ------------------------------------------------------------------------------ row 7
def test_row7_no_certificate_takes_the_controllers_session(arena: Arena) -> None:
    """Row 7: a client connected as ``cedge-controller`` kicked the real controller off 10 times in
    10 s and acknowledged 436 uplinks; 419 sequence numbers and 3 alarms were lost for good."""
    arena.assert_anonymous_refused(DEFAULT_CONTROLLER)
    since = len(arena.broker.log_text())
    stored_before = arena.rows("SELECT COUNT(*) AS n FROM received")[0]["n"]
    impostor = arena.connect(IMPOSTOR, client_id=DEFAULT_CONTROLLER)
    arena.impostor = impostor
    for topic in ("cedge/v1/up/#", "$share/ctl/cedge/v1/up/#"):
        impostor.subscribe(topic)  # granted by Mosquitto 2.0, but the ACL delivers nothing
    dispatch = arena.forged_dispatch("hh-1", "row7")
    assert impostor.publish(command_topic("hh-1"), encode(dispatch)) == NOT_AUTHORIZED
    # the broker gave it its certificate's identity, not the controller's
    log = arena.broker_log(since)
    assert f" as {IMPOSTOR} (" in log
    assert arena.denied(IMPOSTOR, command_topic("hh-1"), since) == 1
    # meanwhile the real controller keeps receiving and storing; the impostor receives nothing
    wait_for(lambda: arena.rows("SELECT COUNT(*) AS n FROM received")[0]["n"] > stored_before + 100, 120,
             "the real controller storing 100 more uplinks")
    assert impostor.messages == [] and impostor.disconnects == 0
    assert_controller_never_displaced(arena)


def assert_controller_never_displaced(arena: Arena) -> None:
    log = arena.broker.log_text()
    assert log.count(f" as {DEFAULT_CONTROLLER} (") == 1, "the controller connected more than once"
    assert f"Client {DEFAULT_CONTROLLER} already connected" not in log
    ctl = arena.log("controller")
    assert ctl.count("connected (session present") == 1 and "disconnected from broker" not in ctl


# ------------------------------------------------------------------------------ row 6
def test_row6_replayed_boot_id_with_the_next_200_seqs_loses_nothing(arena: Arena) -> None:
    """Row 6: mob-2's boot id replayed with the next 200 sequence numbers, sent first, made the 200
    real messages (3 alarms among them) "duplicates"; the gap check still passed."""
    assert arena.thief is not None
    victim = "mob-2"
    body = Measurement(interval_s=1.0, live_time_s=1.0, gross_counts=0, gross_cps=0.0, detector_model=f"{MARK}forged")

    def next_200() -> tuple[str, list[int], list[tuple[str, bytes]]]:
        """mob-2's boot and the 200 seqs after its current one, a few seconds ahead of it."""
        st = wait_for(lambda: (s := arena.status(victim)) and s["link"].get("sequenced_sent", 0) >= 20 and s,
                      WAIT_S, f"{victim} sending")
        first = st["link"]["sequenced_sent"] + 100  # ~10 s of its messages: the forgeries arrive first
        seqs = list(range(first, first + 200))
        return st["boot_id"], seqs, [(uplink_topic(victim, "measurement"),
                                      arena.envelope("measurement", victim, body, st["boot_id"], s)) for s in seqs]

    # from another identity: refused by the ACL, every one logged by the broker
    since = len(arena.broker.log_text())
    _, _, forged = next_200()
    assert arena.thief.publish_all(forged) == [NOT_AUTHORIZED] * 200
    wait_for(lambda: arena.denied(THIEF, forged[0][0], since) == 200, 30, "200 refused publishes in the broker log")
    # from mob-2's own certificate (a compromised unit): the broker hands it mob-2's session for
    # a moment (the unit reconnects and takes it back; its outbox keeps what it made meanwhile)
    since = len(arena.broker.log_text())
    boot, seqs, forged = next_200()
    thief_of_unit = Peer(arena.broker.client(victim, reconnect_on_failure=False))
    thief_of_unit.c.max_inflight_messages_set(200)
    arena.peers.append(thief_of_unit)
    assert thief_of_unit.start(arena.broker.host, arena.broker.port)
    codes = thief_of_unit.publish_all(forged)
    thief_of_unit.stop()
    assert codes == [0] * 200, Counter(codes)
    assert f"Client {victim} already connected, closing old connection." in arena.broker_log(since)
    arena.row6 = {"unit": victim, "boot": boot, "seqs": seqs}

    # the forgeries took those seqs first ...
    def forged_held() -> int:
        return arena.rows("SELECT COUNT(*) AS n FROM measurements WHERE unit_id = ? AND boot_id = ? AND "
                          "detector_model = ?", (victim, boot, f"{MARK}forged"))[0]["n"]

    wait_for(lambda: forged_held() == 200, 60, "the 200 forgeries stored under mob-2's identity")
    # ... and the real messages with the same seqs are kept as conflicts, not dropped as duplicates
    wait_for(lambda: arena.status(victim)["link"].get("sequenced_sent", 0) >= seqs[-1] + 5, WAIT_S,
             f"{victim} producing past seq {seqs[-1]}")

    def conflicts() -> list[dict[str, Any]]:
        return arena.rows("SELECT seq, kind, alarm_stored, envelope FROM seq_conflicts WHERE unit_id = ? AND "
                          "boot_id = ? ORDER BY seq", (victim, boot))

    wait_for(lambda: len(conflicts()) >= 200, WAIT_S, "the real messages under the forged seqs at the controller")
    rows = conflicts()
    assert [r["seq"] for r in rows] == seqs
    kept = [r["envelope"] if isinstance(r["envelope"], str) else json.dumps(r["envelope"]) for r in rows]
    assert all(MARK not in k for k in kept)  # what was kept aside is the real unit's
    # a real alarm among them still reached the alarms table (and so the dispatcher)
    for r in rows:
        if r["kind"] == "alarm":
            assert r["alarm_stored"] == 1
            assert arena.rows("SELECT id FROM alarms WHERE unit_id = ? AND boot_id = ? AND seq = ?",
                              (victim, boot, r["seq"]))
    counters = {r["name"]: r["value"] for r in arena.rows("SELECT name, value FROM counters WHERE unit_id = ?",
                                                          (victim,))}
    assert counters.get("seq_conflict") == 200
    assert f"SEQUENCE CONFLICT: {victim} boot" in arena.log("controller")
    # no gap is papered over or invented for mob-2's boot
    with Store(arena.fleet.db_path, create=False) as store:
        assert store.gaps(victim) == []


# ------------------------------------------------------------------------------ rows 2 and 5
def test_row2_forged_task_events_do_not_close_the_task(arena: Arena) -> None:
    """Row 2: an anonymous client read a dispatch and published the handheld's task events ending
    in ``cleared``; task and incident were closed, the real confirmation was ignored."""
    arena.assert_anonymous_refused(f"{MARK}row2")
    closed = decided_tasks(arena)
    assert arena.attacker is not None
    for rec in arena.attacker.attacks:
        # a foreign certificate on the handheld's topic: refused by the ACL, logged by the broker
        assert rec.acl_codes[:4] == [NOT_AUTHORIZED] * 4
        assert rec.own_topic_codes == [0] * 8  # its own topic: the broker lets it through to the controller
    own = uplink_topic(THIEF, "task_event")
    n = len(arena.attacker.attacks)
    assert sum(arena.denied(THIEF, uplink_topic(h, "task_event")) for h in HANDHELDS) == 4 * n
    # the controller: as itself, a task never dispatched to it; as the handheld, not its topic
    reasons = Counter(r["reason_code"] for r in arena.rows("SELECT reason_code FROM rejects WHERE topic = ?", (own,)))
    assert reasons == {"task_not_issued": 4 * n, "topic_mismatch": 4 * n}
    text = arena.log("controller")  # one line per reason and interval; the rejects table has each
    assert f"rejected {own}: task_not_issued:" in text and ": topic_mismatch:" in text
    counters = {r["name"]: r["value"] for r in arena.rows("SELECT name, value FROM counters WHERE unit_id = ?",
                                                          (THIEF,))}
    assert counters.get("task_not_issued") == 4 * n
    # nothing forged stored: no task event of the thief, none with the forged text
    assert arena.rows("SELECT id FROM task_events WHERE unit_id = ? OR reason LIKE ?", (THIEF, f"{MARK}%")) == []
    # the real handheld's later confirmation closed the task as confirmed, by its own events
    confirmed = [(rec, row) for rec, row in closed if row["state"] == "confirmed"]
    assert confirmed, f"no attacked task confirmed: {[(r.task_id, row['state']) for r, row in closed]}"
    for rec, row in confirmed:
        assert row["unit_id"] == rec.unit_id
        (ev,) = arena.rows("SELECT unit_id, cmd_id, received_utc FROM task_events WHERE task_id = ? AND state = "
                           "'confirmed' AND disposition = 'applied'", (rec.task_id,))
        assert ev["unit_id"] == rec.unit_id and ev["cmd_id"] == row["cmd_id"]
        forged_seen = arena.rows("SELECT MAX(received_utc) AS t FROM rejects WHERE topic = ? AND payload_excerpt "
                                 "LIKE ?", (own, f"%{rec.task_id}%"))[0]["t"]
        assert forged_seen is not None and forged_seen < ev["received_utc"], "the forgeries came after the result"
        inc = arena.rows("SELECT state FROM incidents WHERE task_id = ?", (rec.task_id,))
        assert inc and inc[0]["state"] == "confirmed"
    assert_closed_only_by_their_handhelds(arena)


def assert_closed_only_by_their_handhelds(arena: Arena) -> None:
    """Every confirmed or cleared task was closed by an event of its own handheld for its own dispatch."""
    for row in arena.rows("SELECT * FROM tasks WHERE state IN ('confirmed', 'cleared')"):
        events = arena.rows("SELECT unit_id, cmd_id, reason FROM task_events WHERE task_id = ? AND state = ? AND "
                            "disposition = 'applied'", (row["task_id"], row["state"]))
        assert len(events) == 1, (row["task_id"], events)
        assert events[0]["unit_id"] == row["unit_id"] and events[0]["cmd_id"] == row["cmd_id"]
        assert not (events[0]["reason"] or "").startswith(MARK)


def test_row5_forged_dispatch_to_a_busy_handheld_leaves_the_real_task_with_it(arena: Arena) -> None:
    """Row 5: a forged dispatch to a busy handheld drew a "rejected" reply carrying the real task's
    ids, and the controller gave the real task away while the handheld kept working on it."""
    arena.assert_anonymous_refused(f"{MARK}row5")
    closed = dict((rec.task_id, row) for rec, row in decided_tasks(arena))
    assert arena.attacker is not None
    for rec in arena.attacker.attacks:
        assert rec.acl_codes[4:] == [NOT_AUTHORIZED]  # a unit certificate may not publish commands
        assert rec.rogue_codes == [0, 0, 0, 0]  # the rogue controller identity may: the handheld decides
        wait_for(lambda rec=rec: arena.refused_by(rec.unit_id)["bad_signature"] >= 1, 60, "refusals counted")
        row = closed.get(rec.task_id) or arena.rows("SELECT * FROM tasks WHERE task_id = ?", (rec.task_id,))[0]
        history = task_history(row)
        # the task stayed with its handheld: no rejection, no re-dispatch, unless the controller
        # itself cancelled it (two incidents found to be one source: "duplicate of incident")
        assert all(h.get("state") != "rejected" for h in history), history
        assert row["unit_id"] == rec.unit_id and int(row["attempts"]) == rec.attempts, row
        if row["state"] == "cancelled":
            assert "duplicate of incident" in history[-1].get("reason", ""), history[-1]
        # every reply of the handheld names the command it answers: a real dispatch of this task
        cmd_ids = set(json.loads(row["cmd_ids"]) if isinstance(row["cmd_ids"], str) else row["cmd_ids"])
        events = arena.rows("SELECT cmd_id, state FROM task_events WHERE task_id = ? AND unit_id = ?",
                            (rec.task_id, rec.unit_id))
        assert events and {e["cmd_id"] for e in events} <= cmd_ids, (events, cmd_ids)
    # nothing answered a forged dispatch, no forged task anywhere at the controller
    forged = [c for rec in arena.attacker.attacks for c in rec.forged_cmd_ids]
    assert forged and arena.rows(f"SELECT id FROM task_events WHERE cmd_id IN ({','.join('?' * len(forged))}) "
                                 "OR task_id LIKE ?", (*forged, f"{MARK}%")) == []
    assert arena.rows("SELECT id FROM rejects WHERE payload_excerpt LIKE ?", (f'%"{MARK}row5%',)) == []
    for h in HANDHELDS:
        lines = refusal_lines(arena, h)
        if arena.expected_refusals[h]["bad_signature"]:
            assert lines["bad_signature"] >= 1 and lines["unknown_key"] >= 1 and lines["unsigned"] >= 1, lines
        assert_never_approached(arena, h)
    assert sum(arena.denied(THIEF, command_topic(h)) for h in HANDHELDS) >= len(arena.attacker.attacks)


# ------------------------------------------------------------------------------ row 8
def test_row8_future_expired_and_replayed_commands_are_refused(arena: Arena) -> None:
    """Row 8: a command dated 2099 was accepted; commands carried no signature, expiry or nonce.
    Here even commands signed with the real controller key are refused when they are dated in
    the future (a controller with a wrong clock, or pre-signed commands), expired (a captured
    command sent late) or replayed (a captured command sent again at once, by the watcher)."""
    assert arena.thief is not None and arena.rogue is not None
    arena.assert_anonymous_refused(f"{MARK}row8")
    decided_tasks(arena)
    assert arena.attacker is not None
    rec = arena.attacker.attacks[0]
    unit = rec.unit_id
    before = arena.refused_by(unit)
    # expired: the captured real dispatch once its lifetime and the 30 s skew have passed
    expires = datetime.fromisoformat(rec.replay_expires_utc.replace("Z", "+00:00")).timestamp()
    wait_for(lambda: arena.now_s() > expires + 45.0, WAIT_S, "the captured dispatch to expire")
    # dated 2099: signed with the controller's real key by a clock in 2099
    future = CommandSigner(arena.signing_key, arena.pinned_key_id, ManualClock("2099-06-01T00:00:00Z")).sign(
        arena.forged_dispatch(unit, "row8"))
    assert arena.thief.publish(command_topic(unit), encode(future)) == NOT_AUTHORIZED  # and a unit may not anyway
    assert arena.rogue.publish_all([(command_topic(unit), rec.replay), (command_topic(unit), encode(future))]) == [0, 0]
    want = Counter({"expired": 1, "future_dated": 1})
    arena.expect_refused(unit, want)
    wait_for(lambda: refused_since(arena, unit, before, want), 60, f"{unit} refusing the expired and 2099 commands")
    refused = arena.refused_by(unit)
    if rec.replay_reason == "replayed":
        assert refused["replayed"] >= 1
    lines = refusal_lines(arena, unit)
    assert lines["expired"] >= 1 and lines["future_dated"] >= 1, lines
    assert rec.replay_reason != "replayed" or lines["replayed"] >= 1, lines
    st = arena.status(unit)
    assert st["role"]["task"] is None or not st["role"]["task"].startswith(MARK)
    assert arena.rows("SELECT id FROM task_events WHERE task_id LIKE ?", (f"{MARK}%",)) == []
    assert_never_approached(arena, unit)


# ------------------------------------------------------------------------------ all rows: nothing lost
def test_zz_no_real_message_or_alarm_lost_and_every_attempt_logged(arena: Arena) -> None:
    """After the attacks: stop the units, let the controller drain, and compare what each unit sent
    with what the controller stored; check every refusal was counted on both sides."""
    fleet = arena.fleet
    assert arena.attacker is not None and not arena.attacker.errors, arena.attacker.errors
    arena.attacker.stop()
    # every refused command counted by the handheld, and by the controller from its health messages
    for h in HANDHELDS:
        want = arena.expected_refusals[h]
        flex = want.get("replayed|expired", 0)
        wait_for(lambda h=h, want=want: sum(arena.refused_by(h).values()) >= sum(want.values()), 60,
                 f"{h} counting the last refusals")
        got = arena.refused_by(h)
        assert sum(got.values()) == sum(want.values()), (h, got, want)
        for reason, n in want.items():
            if reason != "replayed|expired":
                extra = flex if reason in ("replayed", "expired") else 0
                assert n <= got[reason] <= n + extra, (h, got, want)
        wait_for(lambda h=h, total=sum(got.values()): arena.rows(
            "SELECT value FROM counters WHERE name = 'commands_refused_by_unit' AND unit_id = ? AND value = ?",
            (h, total)) if total else True, 60, f"the controller's count of {h}'s refusals")
        assert set(refusal_lines(arena, h)) == {r for r in got if got[r]}  # each reason logged
    if arena.impostor is not None:
        assert arena.impostor.messages == [] and arena.impostor.disconnects == 0
    assert_controller_never_displaced(arena)

    fleet.stop_agents()
    codes = {u: fleet.procs[u].returncode for u in UNITS}
    assert all(c == 0 for c in codes.values()), codes
    assert fleet.wait_drained(timeout_s=WAIT_S), "the controller did not store everything the units sent"
    statuses = {u: json.loads((fleet.state_dir(u) / "status.json").read_text()) for u in UNITS}
    with Store(fleet.db_path, create=False) as store:
        assert store.gaps() == [], store.gaps()
        boots = {(b["unit_id"], b["boot_id"]): b for b in store.counts()["boots"]}
        parked = store.count("parked")
    assert parked == 0
    for (unit, boot), b in boots.items():
        assert unit in UNITS, f"a boot of {unit} was stored"
        assert b["min_seq"] == 1 and b["n"] == b["max_seq"], (unit, boot, b)
    for u, st in statuses.items():
        b = boots[(u, st["boot_id"])]
        assert b["max_seq"] == st["link"]["sequenced_sent"], (u, b, st["link"])
        sent = st["link"]["sent_by_kind"]
        for kind, table in (("alarm", "alarms"), ("task_event", "task_events")):
            (r,) = arena.rows(f"SELECT COUNT(*) AS n FROM {table} WHERE unit_id = ? AND boot_id = ?",
                              (u, st["boot_id"]))
            assert r["n"] == sent.get(kind, 0), f"{u}: {kind}s sent {sent.get(kind, 0)}, stored {r['n']}"
        outbox = fleet.state_dir(u) / "outbox.sqlite"
        con = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
        try:
            assert con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0, f"{u}: outbox not empty"
        finally:
            con.close()
    # the operator's view agrees: `cedge controller stats` reports no missing sequence numbers
    run = subprocess.run([sys.executable, "-m", "cedge", "controller", "stats", "--db", str(fleet.db_path), "--json"],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stdout)
    assert stats["gaps"] == [] and all(b["missing"] == 0 for b in stats["boots"])
    if arena.row6:
        conflicts = {c["unit_id"]: c["n"] for c in stats["seq_conflicts"]}
        assert conflicts == {arena.row6["unit"]: 200}
    # nothing forged stored or obeyed
    assert arena.rows("SELECT alarm_id FROM alarms WHERE alarm_id LIKE ?", (f"{MARK}%",)) == []
    assert arena.rows("SELECT id FROM task_events WHERE task_id LIKE ? OR cmd_id LIKE ? OR reason LIKE ?",
                      (f"{MARK}%", f"{MARK}%", f"{MARK}%")) == []
    assert arena.rows("SELECT task_id FROM tasks WHERE task_id LIKE ?", (f"{MARK}%",)) == []
    assert_closed_only_by_their_handhelds(arena)
    assert arena.rows("SELECT unit_id FROM units WHERE unit_id NOT IN (?, ?, ?, ?)", tuple(UNITS)) == []
    assert arena.rows("SELECT unit_id FROM received WHERE boot_id LIKE ?", (f"{MARK}%",)) == []
    assert arena.rows("SELECT unit_id FROM health WHERE task_id LIKE ?", (f"{MARK}%",)) == []
    assert_nothing_near_the_forged_alarm(arena)
    for h in HANDHELDS:
        assert_never_approached(arena, h)
    # no process hit an unexpected error on the way
    for name in ("controller", *UNITS):
        assert "Traceback" not in arena.log(name), f"traceback in {name}'s log"
