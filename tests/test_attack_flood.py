"""Issue 14, row 13 on the site's own broker: a flood of large messages leaves broker and controller bounded.

Row 13 as found: 100 messages of 10 MB; the controller rejected them, but the broker grew to 1.1 GB.
Here the broker runs the configuration ``cedge site init`` generates (TLS, client certificates,
ACL, ``message_size_limit``, ``max_packet_size``, ``max_queued_bytes``) and a real ``cedge
controller run`` process is connected with its site identity and the site's enrolment.  The flood
comes from an enrolled unit's certificate: on this broker nothing else can publish at all.

* 100 x 10 MB: the broker drops the sender of each oversized packet before buffering it, logs it,
  and the controller never sees one;
* 100 x just under the size limit (1 MiB): the broker passes them on, the controller rejects each
  with a reason code and keeps a 1 kB excerpt.

Both: peak resident memory (the kernel's ``VmHWM``) of the broker below 200 MB and of the
controller below 300 MB (the issue's bounds), no traceback, and the controller still stores a
unit's messages afterwards.  The measurement with more messages and without a broker limit is
``cedge bench flood``; hostile content (rows 9-12) is tests/test_bounded_input.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from broker_fixture import Mosquitto, find_mosquitto

from agent.hal.interfaces import utc_iso
from agent.wire_schema import MAX_UPLINK_BYTES, Birth, Measurement, encode, make_envelope, uplink_topic
from cedge.site.layout import SiteLayout
from cedge.site.manage import init_site
from cedge.site.registry import DEFAULT_CONTROLLER, load_registry
from controller.store import Store, StoreError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.broker,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs the mosquitto binary (apt-get install mosquitto)"),
    pytest.mark.timeout(300),
]

UNIT = "mob-1"  # a unit that keeps working through the flood
FLOODER = "hh-9"  # an enrolled unit certificate in the attacker's hands
MESSAGES = 100
BROKER_LIMIT_MB = 200.0
CONTROLLER_LIMIT_MB = 300.0


def peak_rss_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of a running process, from /proc."""
    m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert m is not None
    return int(m.group(1)) / 1024


def wait_for(pred, timeout_s: float, what: str):  # noqa: ANN001, ANN201 - small local poller
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.3)


@dataclass
class Site:
    broker: Mosquitto
    controller: subprocess.Popen[bytes]
    db: Path
    log_path: Path

    @property
    def broker_pid(self) -> int:
        assert self.broker._proc is not None
        return self.broker._proc.pid

    def counts(self) -> tuple[dict[str, int], int]:
        try:
            with Store(self.db, create=False) as store:
                return store.reject_counts(), store.count("received")
        except StoreError:
            return {}, 0

    def publish_once(self, identity: str, topic: str, payload: bytes, timeout_s: float = 60.0) -> int | None:
        """One QoS-1 publish on a fresh connection, driven synchronously (``loop()``): the PUBACK
        reason code, or None if the broker dropped the connection instead (a paho network thread
        can miss that while it is still writing a 10 MB packet)."""
        c = self.broker.client(identity, reconnect_on_failure=False)
        state: dict[str, object] = {"connected": False, "puback": None}
        c.on_connect = lambda *a: state.__setitem__("connected", True)
        c.on_publish = lambda cl, u, mid, rc, props: state.__setitem__("puback", int(getattr(rc, "value", rc)))
        c.connect(self.broker.host, self.broker.port, keepalive=60)
        rc, deadline = 0, time.monotonic() + timeout_s
        while not state["connected"] and rc == 0 and time.monotonic() < deadline:
            rc = c.loop(0.1)
        assert state["connected"], f"{identity} could not connect: {self.broker.log_text()[-1000:]}"
        c.publish(topic, payload, qos=1)
        while state["puback"] is None and rc == 0 and time.monotonic() < deadline:
            rc = c.loop(0.1)
        c.disconnect()
        return state["puback"]  # type: ignore[return-value]

    def assert_still_storing(self) -> None:
        """A unit's birth and measurement, sent after the flood, are stored."""
        _, before = self.counts()
        now = utc_iso(datetime.now(UTC))  # the controller runs on the system clock here
        boot = f"after-flood-{time.monotonic_ns()}"
        birth = Birth(unit_type="mobile", profile="p", software_version="0.1", site="yard", sensors={})
        meas = Measurement(interval_s=1.0, live_time_s=1.0, gross_counts=100, gross_cps=100.0, detector_model="NaI")
        for kind, seq, body in (("birth", 0, birth), ("measurement", 1, meas)):
            env = encode(make_envelope(kind, UNIT, boot, seq, now, 1.0, True, body))
            assert self.publish_once(UNIT, uplink_topic(UNIT, kind), env) == 0
        wait_for(lambda: self.counts()[1] > before, 60, "the unit's measurement stored after the flood")
        assert self.controller.poll() is None

    def assert_bounded(self) -> None:
        broker_mb, controller_mb = peak_rss_mb(self.broker_pid), peak_rss_mb(self.controller.pid)
        assert broker_mb < BROKER_LIMIT_MB, f"broker peak RSS {broker_mb:.0f} MB"
        assert controller_mb < CONTROLLER_LIMIT_MB, f"controller peak RSS {controller_mb:.0f} MB"
        assert "Traceback" not in self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("flood")
    init_site(root / "site", [UNIT, FLOODER], site_name="yard", broker_host="127.0.0.1")
    broker = Mosquitto.secure(root / "broker", root / "site")
    broker.start()
    layout = SiteLayout.at(root / "site")
    cfg = {"schema": 1, "db_path": str(root / "controller.sqlite"), "status_interval_s": 5.0,
           "dispatch": {"enabled": False},
           "broker": {"host": broker.host, "port": broker.port, "reconnect_max_s": 1.0,
                      "client_id": DEFAULT_CONTROLLER, **broker.tls_fields(DEFAULT_CONTROLLER)},
           "command_signing_key": str(layout.signing_key),
           "command_key_id": load_registry(layout.registry).command_key_ids[-1],
           "enrolled_units_file": str(layout.registry)}
    (root / "controller.yaml").write_text(yaml.safe_dump(cfg))
    log_path = root / "controller.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cedge", "controller", "run", "--config",
                                 str(root / "controller.yaml")], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(lambda: proc.poll() is not None or "subscribing" in log_path.read_text(errors="replace"), 120,
                 "the controller subscribing")
        assert proc.poll() is None, log_path.read_text(errors="replace")[-2000:]
        yield Site(broker, proc, root / "controller.sqlite", log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        broker.stop()


def test_flood_of_10_mb_messages_is_refused_by_the_broker(site: Site) -> None:
    topic = uplink_topic(FLOODER, "measurement")
    pubacks = []
    for i in range(MESSAGES):
        payload = b'{"schema": 1, "pad": "' + bytes([97 + i % 26]) * (10 * 2**20) + b'"}'
        pubacks.append(site.publish_once(FLOODER, topic, payload))
        del payload
    assert pubacks == [None] * MESSAGES  # every sender dropped, nothing acknowledged
    log = site.broker.log_text()
    assert log.count(f"Client {FLOODER} disconnected due to oversize packet.") == MESSAGES
    site.assert_still_storing()
    rejects, _ = site.counts()
    assert rejects == {}  # the controller never saw one
    site.assert_bounded()


def test_flood_just_under_the_size_limit_is_rejected_by_the_controller(site: Site) -> None:
    topic = uplink_topic(FLOODER, "measurement")
    pad = MAX_UPLINK_BYTES - 1024  # the broker passes it on (message_size_limit = MAX_UPLINK_BYTES)
    before, _ = site.counts()
    for i in range(MESSAGES):
        payload = b'{"schema": 1, "pad": "' + bytes([97 + i % 26]) * pad + b'"}'
        assert site.publish_once(FLOODER, topic, payload) == 0
    want = before.get("envelope_invalid", 0) + MESSAGES
    wait_for(lambda: site.counts()[0].get("envelope_invalid", 0) >= want, 120, f"{MESSAGES} rejects")
    with Store(site.db, create=False) as store:
        rows = store.query("SELECT reason_code, payload_bytes, LENGTH(payload_excerpt) AS kept FROM rejects "
                           "WHERE topic = ?", (topic,))
    assert len(rows) == MESSAGES
    assert all(r["reason_code"] == "envelope_invalid" and r["payload_bytes"] > pad and r["kept"] <= 1024
               for r in rows)
    site.assert_still_storing()
    site.assert_bounded()
