"""MqttLink against a real Mosquitto: exactly-once per seq, outage backfill, restart, will, commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker_fixture import Mosquitto, TcpProxy, find_mosquitto, free_port
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent import wire_schema as ws
from agent.config import BrokerConfig
from agent.hal.system_clock import SystemClock
from agent.link import MqttLink, Outbox
from agent.link.mqtt_link import with_delivery

pytestmark = [pytest.mark.broker,
              pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto binary not found")]
ROOT = Path(__file__).resolve().parents[1]
UNIT = "mob-01"


def wait_until(pred: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def birth() -> ws.Birth:
    return ws.Birth(unit_type="mobile", profile="test", software_version="0.1.0", site="yard",
                    sensors={"gamma": ws.SensorHealth(state="ok")})


def measurement(i: int) -> ws.Measurement:
    return ws.Measurement(interval_s=1.0, live_time_s=0.99, gross_counts=100 + i, gross_cps=101.0 + i,
                          detector_model="NaI 2x4x16 in log")


def health() -> ws.Health:
    return ws.Health(uptime_s=1.0, cpu_pct=3.0, mem_rss_mb=80.0, outbox_pending=0, queue_depth={},
                     loop_lag_ms=0.5, sensors={})


class Collector:
    """A controller stand-in: persistent MQTT 5 session, QoS-1 subscription to all uplinks."""

    def __init__(self, broker: Mosquitto, client_id: str = "test-collector") -> None:
        self.messages: list[ws.Envelope] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(ws.UPLINK_SUBSCRIPTION, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.client.connect(broker.host, broker.port, keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(10), "collector could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            env, _ = ws.decode_uplink(msg.topic, msg.payload)
        except ws.WireError as err:
            with self._lock:
                self.errors.append(str(err))
            return
        with self._lock:
            self.messages.append(env)

    def of_kind(self, *kinds: str) -> list[ws.Envelope]:
        with self._lock:
            return [m for m in self.messages if m.kind in kinds]

    def sequenced(self) -> list[ws.Envelope]:
        return self.of_kind(*ws.SEQUENCED_KINDS)

    def first_by_key(self) -> dict[tuple[str, int], ws.Envelope]:
        out: dict[tuple[str, int], ws.Envelope] = {}
        for m in self.sequenced():
            out.setdefault((m.boot_id, m.seq), m)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(mosquitto: Mosquitto) -> Iterator[Collector]:
    c = Collector(mosquitto)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    ob = Outbox(tmp_path / "outbox.sqlite", 100_000)
    try:
        yield ob
    finally:
        ob.close()


def make_link(broker: BrokerConfig, outbox: Outbox, on_command: Callable[[ws.Command], None] | None = None,
              **kw: object) -> MqttLink:
    return MqttLink(UNIT, broker, outbox, SystemClock(), birth, on_command or (lambda cmd: None), **kw)


# ---------------------------------------------------------------------------------------------
def test_with_delivery_rewrites_only_the_envelope_flag() -> None:
    env = ws.make_envelope("measurement", UNIT, "b" * 32, 7, "2026-01-01T00:00:00.000Z", 1.0, True,
                           measurement(1))
    raw = ws.encode(env)
    assert with_delivery(raw, "live") == raw
    back, _ = ws.decode_uplink(ws.uplink_topic(UNIT, "measurement"), with_delivery(raw, "backfill"))
    assert back.delivery == "backfill" and back.body == env.body and back.seq == 7


def test_live_messages_arrive_exactly_once_then_clean_shutdown(no_thread_leak: None, mosquitto: Mosquitto,
                                                               collector: Collector, outbox: Outbox) -> None:
    link = make_link(mosquitto.broker_config(), outbox, max_inflight=8)
    link.start()
    try:
        wait_until(lambda: link.stats()["connected"], what="link connected")
        seqs = [link.send("health", health()) if i % 10 == 0 else link.send("measurement", measurement(i))
                for i in range(60)]
        assert seqs == list(range(1, 61))
        wait_until(lambda: len(collector.sequenced()) >= 60 and link.stats()["pending"] == 0,
                   what="60 messages delivered and acked")
    finally:
        link.stop(timeout_s=5)
    wait_until(lambda: collector.of_kind("death"), what="death message")
    got = collector.sequenced()
    assert sorted(m.seq for m in got) == list(range(1, 61))  # each seq exactly once
    assert {m.boot_id for m in got} == {link.boot_id}
    assert all(m.delivery == "live" for m in got)
    assert [m.seq for m in got if m.kind == "measurement"] == [s for s in range(1, 61) if (s - 1) % 10]
    births = collector.of_kind("birth")
    assert len(births) == 1 and births[0].seq == 0 and births[0].boot_id == link.boot_id
    deaths = collector.of_kind("death")
    assert [d.body["reason"] for d in deaths] == ["shutdown"]  # clean DISCONNECT: no will
    stats = link.stats()
    assert stats["published"] == 60 and stats["acked"] == 60 and stats["pending"] == 0
    assert stats["connected"] is False and stats["dropped"] == 0
    assert not collector.errors


def test_broker_outage_is_backfilled_in_order(no_thread_leak: None, mosquitto: Mosquitto,
                                              collector: Collector, outbox: Outbox) -> None:
    link = make_link(mosquitto.broker_config(), outbox)
    link.start()
    try:
        wait_until(lambda: link.stats()["connected"], what="link connected")
        for i in range(10):
            link.send("measurement", measurement(i))
        wait_until(lambda: link.stats()["pending"] == 0, what="first 10 acked")

        mosquitto.stop()
        wait_until(lambda: not link.stats()["connected"], what="link noticed the outage")
        for i in range(10):  # ~3 s of data while the broker is down
            assert link.send("measurement", measurement(100 + i)) == 11 + i
            time.sleep(0.3)
        assert link.stats()["pending"] == 10
        mosquitto.start()

        wait_until(lambda: link.stats()["connected"] and link.stats()["pending"] == 0, what="backlog drained")
        for i in range(10):
            link.send("measurement", measurement(200 + i))
        wait_until(lambda: len(collector.first_by_key()) >= 30, what="all 30 seqs at the collector")
    finally:
        link.stop(timeout_s=5)
    first = collector.first_by_key()
    assert sorted(s for _, s in first) == list(range(1, 31))
    delivery = {s: m.delivery for (_, s), m in first.items()}
    assert [delivery[s] for s in range(1, 11)] == ["live"] * 10
    assert [delivery[s] for s in range(11, 21)] == ["backfill"] * 10
    assert [delivery[s] for s in range(21, 31)] == ["live"] * 10
    # the backfill went out in seq order (QoS 1 keeps per-topic order)
    order = [m.seq for m in collector.sequenced()]
    dedup = list(dict.fromkeys(order))
    assert dedup == sorted(dedup)
    births = collector.of_kind("birth")
    assert len(births) == 2 and births[1].body["pending_backfill"] == 10
    assert link.stats()["reconnects"] == 1


def test_unacked_messages_survive_a_hung_then_crashed_broker(no_thread_leak: None, mosquitto: Mosquitto,
                                                            collector: Collector, outbox: Outbox) -> None:
    """Messages published into a broker that stops answering (no PUBACK) and then dies are
    re-sent after it comes back, whether or not it restored our session."""
    link = make_link(mosquitto.broker_config(), outbox)
    link.start()
    try:
        wait_until(lambda: link.stats()["connected"], what="link connected")
        time.sleep(1.2)  # let autosave (1 s) persist the collector's subscription
        mosquitto.freeze()
        for i in range(8):
            link.send("measurement", measurement(i))
        wait_until(lambda: link.stats()["inflight"] == 8, what="8 messages in flight without PUBACK")
        assert link.stats()["acked"] == 0
        mosquitto.kill()  # SIGKILL works on a stopped process; its sockets are reset
        mosquitto.start()
        for i in range(8, 12):
            link.send("measurement", measurement(i))
        wait_until(lambda: link.stats()["pending"] == 0, what="outbox drained after the crash")
        wait_until(lambda: len(collector.first_by_key()) >= 12, what="12 seqs at the collector")
    finally:
        link.stop(timeout_s=5)
    assert sorted(s for _, s in collector.first_by_key()) == list(range(1, 13))
    assert link.stats()["acked"] >= 12


def test_dropped_connection_resumes_session_and_resends_in_flight(
        no_thread_leak: None, mosquitto: Mosquitto, collector: Collector, outbox: Outbox) -> None:
    """A silent network fault (no PUBACKs, then the TCP connection drops) while the broker keeps
    the session: paho re-sends the unacknowledged packets on session resume; every row is acked."""
    proxy = TcpProxy(mosquitto.host, mosquitto.port)
    link = make_link(mosquitto.broker_config(port=proxy.port), outbox)
    try:
        link.start()
        wait_until(lambda: link.stats()["connected"], what="link connected")
        for i in range(3):
            link.send("measurement", measurement(i))
        wait_until(lambda: link.stats()["acked"] == 3, what="first 3 acked")
        proxy.hold()
        for i in range(3, 8):
            link.send("measurement", measurement(i))
        wait_until(lambda: link.stats()["inflight"] == 5, what="5 in flight behind the dead link")
        proxy.cut()
        wait_until(lambda: link.stats()["reconnects"] == 1 and link.stats()["pending"] == 0,
                   what="reconnected and drained")
        wait_until(lambda: len(collector.first_by_key()) >= 8, what="8 seqs at the collector")
    finally:
        link.stop(timeout_s=5)
        proxy.close()
    assert sorted(s for _, s in collector.first_by_key()) == list(range(1, 9))
    stats = link.stats()
    # resumed session: the 5 were re-sent by the MQTT session, not taken again from the outbox
    assert stats["published"] == 8 and stats["acked"] == 8
    assert "connection lost" in [d.body["reason"] for d in collector.of_kind("death")]  # the will fired


def test_outbox_survives_agent_restart_with_old_boot_and_seq(no_thread_leak: None, mosquitto: Mosquitto,
                                                             collector: Collector, tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    nowhere = BrokerConfig(host="127.0.0.1", port=free_port(), keepalive_s=5, reconnect_max_s=0.5)
    ob = Outbox(path, 1000)
    first = make_link(nowhere, ob)
    first.start()
    for i in range(5):
        first.send("measurement", measurement(i))
    first.send("alarm", ws.Alarm(alarm_id="a1", detector="gamma", significance_sigma=7.2, peak_cps=900.0,
                                 background_cps=100.0, t_peak_utc="2026-01-01T00:00:00.000Z", position=None,
                                 threshold_sigma=5.0))
    first.stop(timeout_s=2)
    assert first.stats()["published"] == 0
    ob.close()  # "process exit"

    ob = Outbox(path, 1000)
    try:
        assert ob.count() == 6
        second = make_link(mosquitto.broker_config(), ob)
        assert second.boot_id != first.boot_id
        second.start()
        try:
            wait_until(lambda: second.stats()["connected"], what="second link connected")
            for i in range(3):
                assert second.send("measurement", measurement(50 + i)) == i + 1
            wait_until(lambda: len(collector.first_by_key()) >= 9, what="9 messages at the collector")
            wait_until(lambda: second.stats()["pending"] == 0, what="all acked")
        finally:
            second.stop(timeout_s=5)
    finally:
        ob.close()
    first_by = collector.first_by_key()
    old = sorted((k for k in first_by if k[0] == first.boot_id), key=lambda k: k[1])
    new = sorted((k for k in first_by if k[0] == second.boot_id), key=lambda k: k[1])
    assert [s for _, s in old] == [1, 2, 3, 4, 5, 6] and [s for _, s in new] == [1, 2, 3]
    assert all(first_by[k].delivery == "backfill" for k in old)
    assert all(first_by[k].delivery == "live" for k in new)
    assert first_by[old[-1]].kind == "alarm"
    measurements = [(m.boot_id, m.seq) for m in collector.of_kind("measurement")]
    assert list(dict.fromkeys(measurements)) == old[:5] + new  # old rows go first
    births = collector.of_kind("birth")
    assert [b.boot_id for b in births] == [second.boot_id] and births[0].body["pending_backfill"] == 6


_AGENT_SCRIPT = """
import sys, time
from agent import wire_schema as ws
from agent.config import BrokerConfig
from agent.hal.system_clock import SystemClock
from agent.link import MqttLink, Outbox

port, path = int(sys.argv[1]), sys.argv[2]
birth = lambda: ws.Birth(unit_type="handheld", profile="t", software_version="0", site="s", sensors={})
link = MqttLink("hh-07", BrokerConfig(port=port, keepalive_s=5, reconnect_max_s=0.5), Outbox(path, 100),
                SystemClock(), birth, lambda cmd: None)
link.start()
while not link.stats()["connected"]:
    time.sleep(0.02)
print(link.boot_id, flush=True)
time.sleep(120)
"""


def test_last_will_death_when_agent_is_killed(mosquitto: Mosquitto, collector: Collector,
                                              tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = [sys.executable, "-c", _AGENT_SCRIPT, str(mosquitto.port), str(tmp_path / "o.sqlite")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        boot_id = proc.stdout.readline().decode().strip()
        assert len(boot_id) == 32, proc.stderr.read().decode() if proc.stderr else ""
        wait_until(lambda: collector.of_kind("birth"), what="birth from the agent process")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    wait_until(lambda: collector.of_kind("death"), what="Last Will death message")
    birth_env, death_env = collector.of_kind("birth")[0], collector.of_kind("death")[0]
    assert birth_env.unit_id == death_env.unit_id == "hh-07"
    assert birth_env.boot_id == death_env.boot_id == boot_id
    assert death_env.seq == 0 and death_env.body["reason"] == "connection lost"


def test_commands_valid_delivered_invalid_counted(no_thread_leak: None, mosquitto: Mosquitto,
                                                  collector: Collector, outbox: Outbox) -> None:
    received: list[ws.Command] = []
    got = threading.Event()

    def on_command(cmd: ws.Command) -> None:
        received.append(cmd)
        got.set()

    link = make_link(mosquitto.broker_config(), outbox, on_command)
    link.start()
    try:
        wait_until(lambda: link.stats()["connected"], what="link connected")
        topic = ws.command_topic(UNIT)
        ping = ws.Command(cmd_id="c-1", unit_id=UNIT, command="ping", t_utc="2026-01-01T00:00:00.000Z")
        other = ping.model_copy(update={"unit_id": "someone-else"})
        for payload in (b"\xff not json", b'{"schema": 1, "cmd_id": "x"}', b'{"schema": 2}', ws.encode(other),
                        ws.encode(ping)):
            collector.client.publish(topic, payload, qos=1).wait_for_publish(5)
        assert got.wait(10), "valid command not delivered"
        assert link.stats()["rejected_commands"] == 4
        assert received == [ping]
        # the link still works after the garbage
        link.send("health", health())
        wait_until(lambda: collector.of_kind("health"), what="health after bad commands")
    finally:
        link.stop(timeout_s=5)


def test_mqtt311_link_delivers(no_thread_leak: None, mosquitto: Mosquitto, collector: Collector,
                               outbox: Outbox) -> None:
    link = make_link(mosquitto.broker_config(protocol=311), outbox)
    link.start()
    try:
        wait_until(lambda: link.stats()["connected"], what="link connected")
        for i in range(5):
            link.send("measurement", measurement(i))
        wait_until(lambda: link.stats()["pending"] == 0 and len(collector.sequenced()) >= 5, what="delivery")
    finally:
        link.stop(timeout_s=5)
    wait_until(lambda: collector.of_kind("death"), what="death message")
    assert sorted(m.seq for m in collector.sequenced()) == [1, 2, 3, 4, 5]
    assert [d.body["reason"] for d in collector.of_kind("death")] == ["shutdown"]


def test_rejected_puback_keeps_row_until_broker_accepts(no_thread_leak: None, tmp_path: Path,
                                                        outbox: Outbox) -> None:
    """MQTT 5 PUBACK with a failure reason (ACL: not authorized) keeps the row; it is retried
    and delivered once the broker accepts it."""
    acl = tmp_path / "acl"
    acl.write_text("pattern read cedge/#\n")  # nobody may publish yet
    broker = Mosquitto(tmp_path / "mq", extra_conf=f"acl_file {acl}\n")
    broker.start()
    link = make_link(broker.broker_config(), outbox, retry_failed_s=0.2)
    try:
        link.start()
        wait_until(lambda: link.stats()["connected"], what="link connected")
        link.send("alarm", ws.Alarm(alarm_id="a9", detector="gamma", significance_sigma=9.0, peak_cps=1e3,
                                    background_cps=90.0, t_peak_utc="2026-01-01T00:00:00.000Z", position=None,
                                    threshold_sigma=5.0))
        wait_until(lambda: link.stats()["publish_failures"] >= 2, what="rejected PUBACKs")
        assert link.stats()["pending"] == 1 and link.stats()["acked"] == 0
        acl.write_text("pattern readwrite cedge/#\n")
        broker.reload()
        wait_until(lambda: link.stats()["pending"] == 0, what="row accepted after ACL change")
        assert link.stats()["acked"] == 1
    finally:
        link.stop(timeout_s=5)
        broker.stop()


def test_message_over_broker_packet_limit_is_held_not_looped(no_thread_leak: None, tmp_path: Path,
                                                             outbox: Outbox) -> None:
    """An oversize row would get the client disconnected on every retry; it is kept aside instead
    and the rest of the outbox keeps flowing."""
    broker = Mosquitto(tmp_path / "mq", extra_conf="max_packet_size 2000\n")
    broker.start()
    link = make_link(broker.broker_config(), outbox)
    try:
        link.start()
        wait_until(lambda: link.stats()["connected"], what="link connected")
        big = measurement(0).model_copy(update={"spectrum": list(range(1024))})
        link.send("measurement", big)
        link.send("health", health())
        wait_until(lambda: link.stats()["acked"] == 1, what="health delivered past the oversize row")
        stats = link.stats()
        assert stats["pending"] == 1 and stats["publish_failures"] == 1 and stats["reconnects"] == 0
        assert outbox.oldest() is not None and outbox.oldest().kind == "measurement"
    finally:
        link.stop(timeout_s=5)
        broker.stop()
