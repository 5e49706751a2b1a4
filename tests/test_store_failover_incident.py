"""The leader controller is killed during an incident (issue 20): the other controller takes over,
the task finishes, and exactly one handheld is ever dispatched.

Real parts, as in tests/test_store_failover.py: two ``cedge controller run`` processes on one private
PostgreSQL (leader election by advisory lock, controller.leader) behind an MQTT 5 shared subscription
on a private Mosquitto; the units are real links (agent.link.MqttLink with its outbox) publishing real
wire messages.  A mobile unit drives one pass past a source and raises an alarm; two handhelds report
their positions and answer a dispatch the way agent/runtime/roles.py does (accepted, naming the
command's cmd_id; then on_site, measuring, confirmed, naming the task's current dispatch).  A plain
MQTT client subscribed to every unit's command topic counts what the controllers really publish.

Scenarios (the leader is SIGKILLed, so it can neither finish a transaction nor say goodbye):

* ``holding`` - while the incident is held for fusion, before any task exists: the new leader opens
  the one task and dispatches the nearest handheld;
* ``accepted`` - after the handheld's acceptance was applied: the new leader applies on_site,
  measuring and confirmed, closes task and incident, and sends no second dispatch.

Each with the killed controller restarted after the take-over (systemd's Restart=on-failure): its
persistent session hands back the uplinks the broker kept for it.  Without the restart (its host is
gone) the case is a strict xfail: Mosquitto 2.0 keeps routing the shared subscription's messages to
the dead member's session, so task events sent after the kill wait there (issue 20, open).

The commands are unsigned (no ``command_signing_key``, as in the failover test): the scripted
handhelds only parse them, which is what agent.link.MqttLink hands a unit's role before its command
gate checks the signature; signing is covered by the command-auth tests.
"""

from __future__ import annotations

import math
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from broker_fixture import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures
from test_store_failover import _controller as failover_controller
from test_store_failover import _log, _wait

from agent import wire_schema as ws
from agent.geo import LocalFrame
from agent.hal.system_clock import SystemClock
from agent.link import MqttLink, Outbox
from controller.store import Store

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]
LEADS = "leader: this controller now runs dispatch and liveness"
DEADLINE_S = 90.0
ORIGIN = (51.95, 4.05, 5.0)  # the controller's default site origin (controller.config._default_site)
FRAME = LocalFrame(*ORIGIN)
SOURCE_XY = (50.0, 4.0)
# hold_for_fusion_s: long enough to see the incident held and kill the leader inside the hold; when the
# leader is killed later, no hold (the test gets to the acceptance sooner)
HOLD_S = {"holding": 4.0, "accepted": 0.0}
NEAR, FAR = "hh-near", "hh-far"
HANDHELD_XY = {NEAR: (60.0, 12.0), FAR: (220.0, 150.0)}


def _pos(x: float, y: float, z: float = 1.5) -> ws.Position:
    lat, lon, alt = FRAME.to_geodetic(x, y, z)
    return ws.Position(lat_deg=lat, lon_deg=lon, alt_m=alt, x_m=x, y_m=y, z_m=z, fix_quality=1)


def _controller(tmp_path: Path, broker: Mosquitto, name: str, url: str, hold_s: float) -> subprocess.Popen:
    return failover_controller(tmp_path, broker, name, url, extra={
        "site": {"name": "yard", "origin_lat_deg": ORIGIN[0], "origin_lon_deg": ORIGIN[1], "origin_alt_m": ORIGIN[2]},
        # no time-out may fire during the test: a re-dispatch would be a second, legitimate dispatch
        "dispatch": {"hold_for_fusion_s": hold_s, "accept_timeout_s": 600.0, "arrive_timeout_s": 600.0,
                     "measure_timeout_s": 600.0, "dwell_s": 2.0, "radius_m": 5.0},
        "localization": {"prior_z_min_m": 0.0, "prior_z_max_m": 3.0}})


def _stop_all(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to all first, then wait: the graceful stops overlap."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.log.close()


class CommandTap:
    """A plain MQTT client subscribed to every unit's command topic: what the controllers published."""

    def __init__(self, broker: Mosquitto) -> None:
        self.commands: list[ws.Command] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="cmd-tap")
        self._c.on_connect = lambda c, *_: c.subscribe(ws.command_topic("+"), qos=1)
        self._c.on_subscribe = lambda *_: self._subscribed.set()
        self._c.on_message = self._on_message
        self._c.connect(broker.host, broker.port, keepalive=30)
        self._c.loop_start()
        assert self._subscribed.wait(30), "command tap did not subscribe"

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        cmd = ws.decode_command(msg.payload)
        with self._lock:
            self.commands.append(cmd)

    def dispatches(self) -> list[ws.Command]:
        with self._lock:
            return [c for c in self.commands if c.command == "dispatch"]

    def close(self) -> None:
        self._c.loop_stop()
        self._c.disconnect()


class Handheld:
    """A handheld unit's link, answering dispatches like agent.runtime.roles.HandheldRole.

    ``hold_after_accept``: after accepting, wait for :meth:`go` before walking to the target (the
    test kills the leader in between).  Commands are handed from paho's thread to a worker thread
    (MqttLink's on_command must not do I/O)."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, unit_id: str, hold_after_accept: bool) -> None:
        self.unit_id = unit_id
        self.dispatches: list[ws.Command] = []
        self.events_sent: list[str] = []
        self._go = threading.Event()
        if not hold_after_accept:
            self._go.set()
        self._q: queue.Queue[ws.Command | None] = queue.Queue()
        self.outbox = Outbox(tmp_path / f"{unit_id}.outbox.sqlite", 10_000)
        self.link = MqttLink(unit_id, broker.broker_config(), self.outbox, SystemClock(),
                             birth=lambda: ws.Birth(unit_type="handheld", profile="t", software_version="0",
                                                    site="yard", sensors={}),
                             on_command=self._q.put)
        self._worker = threading.Thread(target=self._run, name=f"hh-{unit_id}", daemon=True)

    def start(self) -> None:
        self.link.start()
        self._worker.start()
        x, y = HANDHELD_XY[self.unit_id]
        self.link.send("health", ws.Health(uptime_s=1, cpu_pct=1, mem_rss_mb=1, outbox_pending=0, queue_depth={},
                                           loop_lag_ms=0, sensors={}, available=True, position=_pos(x, y)))

    def go(self) -> None:
        self._go.set()

    def _event(self, task_id: str, cmd_id: str, state: str, **kw: object) -> None:
        self.link.send("task_event", ws.TaskEvent(task_id=task_id, cmd_id=cmd_id, state=state, **kw))
        self.events_sent.append(state)

    def _run(self) -> None:
        while (cmd := self._q.get()) is not None:
            if cmd.command != "dispatch" or cmd.task is None:
                continue
            self.dispatches.append(cmd)
            if len(self.dispatches) > 1:
                continue  # a second dispatch is the failure the test looks for; do not answer it
            spec = cmd.task
            self._event(spec.task_id, cmd.cmd_id, "accepted")
            self._go.wait(DEADLINE_S)
            at = _pos(spec.target.x_m, spec.target.y_m)
            self._event(spec.task_id, cmd.cmd_id, "on_site", position=at)
            self._event(spec.task_id, cmd.cmd_id, "measuring", position=at)
            self._event(spec.task_id, cmd.cmd_id, "confirmed", position=at, reason="scripted dwell",
                        result=ws.TaskResult(dwell_s=spec.dwell_s, gross_cps=900.0, background_cps=120.0,
                                             net_cps=780.0, significance_sigma=40.0, distance_m=1.0))

    def stop(self) -> None:
        self._q.put(None)
        self._go.set()
        self._worker.join(10)
        self.link.stop(timeout_s=5)
        self.outbox.close()


def _drive_pass_with_alarm(link: MqttLink) -> None:
    """1-s measurements along the lane y=0 past a source at SOURCE_XY, then an alarm at the count peak
    (as tests/test_dispatch.Yard.drive_pass; fixed seed)."""
    rng = np.random.default_rng(20)
    xs = 10.0 + 5.0 * np.arange(17)
    peak = (-1, 0.0)
    for i in range(1, len(xs)):
        x = float((xs[i - 1] + xs[i]) / 2)
        r = math.hypot(x - SOURCE_XY[0], SOURCE_XY[1], 0.5)
        counts = int(rng.poisson(0.97 * (1500.0 + 6000.0 * math.exp(-0.0093 * r) / r**2)))
        link.send("measurement", ws.Measurement(interval_s=1.0, live_time_s=0.97, gross_counts=counts,
                                                gross_cps=counts / 0.97, background_cps=1500.0,
                                                detector_model="NaI 2x4x16", position=_pos(x, 0.0), speed_m_s=5.0))
        peak = max(peak, (counts, x))
    now = SystemClock().utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
    link.send("alarm", ws.Alarm(alarm_id="A-mob-7-0001", detector="gross_k_sigma",
                                significance_sigma=(peak[0] / 0.97 - 1500.0) / math.sqrt(1500.0),
                                peak_cps=peak[0] / 0.97, background_cps=1500.0, t_peak_utc=now,
                                position=_pos(peak[1], 0.0), threshold_sigma=5.0))


_DEAD_SESSION = (
    "product gap (issue 20): Mosquitto 2.0 keeps routing the shared subscription's messages to the killed "
    "controller's persistent session (session_expiry_s 7 days), so about half of the task events sent after "
    "the kill wait there until that controller comes back: with no supervisor restart they are never stored "
    "(seen with a kill during the hold: of accepted, on_site, measuring, confirmed sent after the kill, accepted "
    "and measuring were never stored, and the task went from dispatched straight to on_site)")


@pytest.mark.parametrize(("kill_when", "restarted"), [
    ("holding", True),
    ("accepted", True),
    pytest.param("accepted", False, marks=pytest.mark.xfail(strict=True, reason=_DEAD_SESSION)),
])
def test_leader_killed_during_incident_one_handheld_dispatched_and_task_finishes(
        tmp_path: Path, mosquitto: Mosquitto, pg_url: str, kill_when: str, restarted: bool) -> None:  # noqa: F811
    """``restarted``: the killed controller comes back after the take-over, as systemd's
    Restart=on-failure does (configs/systemd/cedge-controller.service); without it, its host is gone."""
    Store(pg_url).close()
    names = ["ctl-a", "ctl-b"]
    procs = {n: _controller(tmp_path, mosquitto, n, pg_url, HOLD_S[kill_when]) for n in names}
    tap = mobile = mobile_outbox = None
    handhelds: list[Handheld] = []
    store = Store(pg_url, create=False)
    try:
        for n in names:
            _wait(lambda n=n: "subscribing" in _log(tmp_path, n), f"{n} to subscribe")
        _wait(lambda: sum(LEADS in _log(tmp_path, n) for n in names) == 1, "one leader")
        leader = next(n for n in names if LEADS in _log(tmp_path, n))
        survivor = next(n for n in names if n != leader)
        tap = CommandTap(mosquitto)

        handhelds = [Handheld(tmp_path, mosquitto, u, hold_after_accept=kill_when == "accepted") for u in (NEAR, FAR)]
        for h in handhelds:
            h.start()

        def handhelds_known() -> bool:
            units = {u["unit_id"]: u for u in store.list_units(unit_type="handheld", state="online")}
            return all(u in units and units[u]["x_m"] is not None for u in HANDHELD_XY)

        _wait(handhelds_known, "both handhelds online with a position")

        mobile_outbox = Outbox(tmp_path / "mob-7.outbox.sqlite", 10_000)
        mobile = MqttLink("mob-7", mosquitto.broker_config(), mobile_outbox, SystemClock(),
                          birth=lambda: ws.Birth(unit_type="mobile", profile="t", software_version="0", site="yard",
                                                 sensors={}),
                          on_command=lambda cmd: None)
        mobile.start()
        _drive_pass_with_alarm(mobile)

        if kill_when == "holding":
            _wait(lambda: any(i["state"] == "holding" for i in store.list_incidents()), "an incident held for fusion")
        else:
            _wait(lambda: [t["state"] for t in store.list_tasks()] == ["accepted"], "the handheld's acceptance applied")
        procs[leader].send_signal(signal.SIGKILL)
        procs[leader].wait(timeout=30)
        procs[leader].log.close()
        if kill_when == "holding":
            # the premise: the dead leader had opened no task and sent nobody
            assert store.list_tasks() == [] and tap.dispatches() == [], \
                f"the leader dispatched within {HOLD_S[kill_when]} s of the hold before it was killed (raise HOLD_S)"
        else:
            for h in handhelds:
                h.go()  # on_site, measuring, confirmed go out while the old leader is dead, the new one not yet up

        _wait(lambda: LEADS in _log(tmp_path, survivor), f"{survivor} to take over")
        if restarted:
            procs[leader] = _controller(tmp_path, mosquitto, leader, pg_url, HOLD_S[kill_when])
        near = handhelds[0]
        _wait(lambda: len(near.events_sent) == 4 and near.outbox.count() == 0,
              "the handheld's four task events acknowledged by the broker")
        # from here the broker holds all of them: a controller that can take them stores them at once
        # (the restarted controller must first boot; a live one needs a second)
        _wait(lambda: len(store.list_task_events()) == 4, "all four task events stored",
              DEADLINE_S if restarted else 5.0)
        _wait(lambda: [t["state"] for t in store.list_tasks()] == ["confirmed"], "the task confirmed")
        time.sleep(1.5)  # three more ticks of the new leader: still no second dispatch

        tasks = store.list_tasks()
        assert len(tasks) == 1
        task = tasks[0]
        incidents = store.list_incidents()
        assert [(i["state"], i["task_id"]) for i in incidents] == [("confirmed", task["task_id"])]
        assert task["unit_id"] == NEAR and task["attempts"] == 1
        # exactly one dispatch: published on the command topics, received by the handhelds, recorded
        assert [(c.unit_id, c.task.task_id) for c in tap.dispatches()] == [(NEAR, task["task_id"])]
        assert [len(h.dispatches) for h in handhelds] == [1, 0]
        assert [c["command"] for c in store.list_commands()] == ["dispatch"]
        assert task["cmd_id"] == tap.dispatches()[0].cmd_id
        # every task event the handheld sent is stored; one that the restarted controller's session
        # handed back after a later one was applied is ignored as out of order, never applied twice
        events = sorted(store.list_task_events(task["task_id"]), key=lambda e: e["seq"])
        assert [e["state"] for e in events] == ["accepted", "on_site", "measuring", "confirmed"]
        assert events[-1]["disposition"] == "applied"
        for e in events:
            assert e["disposition"] == "applied" or (
                e["disposition"] == "ignored" and ("out of order" in e["disposition_reason"]
                                                   or "already confirmed" in e["disposition_reason"])), e
        applied = [h["state"] for h in task["history"] if "event_id" in h]
        assert applied == [e["state"] for e in events if e["disposition"] == "applied"]
        assert LEADS in _log(tmp_path, survivor) and "Traceback" not in _log(tmp_path, survivor)
        if restarted:
            assert _log(tmp_path, leader).count(LEADS) == 1  # only its first run led
    finally:
        store.close()
        for h in handhelds:
            h.stop()
        if mobile is not None:
            mobile.stop(timeout_s=5)
        if mobile_outbox is not None:
            mobile_outbox.close()
        if tap is not None:
            tap.close()
        _stop_all(list(procs.values()))
