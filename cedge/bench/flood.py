"""``cedge bench flood``: issue 14 row 13 measured - a real controller behind a real Mosquitto,
flooded with large messages; peak memory of both, and whether the controller still works.

Row 13 as found: 100 messages of 10 MB were rejected by the controller, but the broker grew to
1.1 GB (no ``message_size_limit``, ``max_queued_bytes 0``) and nothing bounded what the controller
kept. Two configurations are run, each on a fresh private Mosquitto (plain loopback listener: this
measures memory, the TLS and ACL of a site are tested in ``tests/test_site.py``):

* ``no_broker_limit`` - the broker passes everything on; the controller must bound what it keeps
  by itself (it queues only a 1 kB excerpt of a payload over ``ingest.max_payload_bytes`` and
  rejects it as ``oversized``);
* ``site_limits`` - the size limits of the generated site broker config
  (:mod:`cedge.site.broker_conf`: ``message_size_limit``, ``max_packet_size``, ``max_queued_bytes``):
  the broker refuses the messages, the controller never sees them.

A sampler reads VmRSS of both processes every 50 ms, and VmHWM (the kernel's peak resident set)
just before they stop. After the flood a birth and a measurement are sent: the run passes only if
they are stored (the controller still works), the controller log has no traceback, the controller
peaked below 300 MB and, with the site limits, the broker below 200 MB.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from cedge.broker import free_port

CONTROLLER_LIMIT_MB = 300.0
BROKER_LIMIT_MB = 200.0


def _rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"{field}:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else None


class _Sampler(threading.Thread):
    """Largest VmRSS seen per process, sampled every 50 ms."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pids = pids
        self.max_mb: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for name, pid in self.pids.items():
                v = _rss_mb(pid)
                if v is not None:
                    self.max_mb[name] = max(self.max_mb[name], v)
            self._halt.wait(0.05)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _start_broker(work: Path, limits: bool) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)
    if binary is None:
        raise FileNotFoundError("mosquitto not found (apt install mosquitto)")
    port = free_port()
    conf = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false",
            f"log_dest file {work / 'mosquitto.log'}", "log_type error", "log_type warning", "log_type notice",
            f"user {pwd.getpwuid(os.geteuid()).pw_name}"]
    if limits:
        from cedge.site.broker_conf import (
            MAX_PACKET_SIZE_BYTES,
            MAX_QUEUED_BYTES,
            MAX_QUEUED_MESSAGES,
            MESSAGE_SIZE_LIMIT_BYTES,
        )

        conf += [f"message_size_limit {MESSAGE_SIZE_LIMIT_BYTES}", f"max_packet_size {MAX_PACKET_SIZE_BYTES}",
                 f"max_queued_messages {MAX_QUEUED_MESSAGES}", f"max_queued_bytes {MAX_QUEUED_BYTES}"]
    (work / "mosquitto.conf").write_text("\n".join(conf) + "\n")
    proc = subprocess.Popen([binary, "-c", str(work / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def _start_controller(work: Path, port: int) -> subprocess.Popen[bytes]:
    cfg = {"schema": 1, "db_path": str(work / "controller.sqlite"), "dispatch": {"enabled": False},
           "broker": {"host": "127.0.0.1", "port": port, "reconnect_max_s": 1.0}, "status_interval_s": 5.0}
    (work / "controller.yaml").write_text(yaml.safe_dump(cfg))
    log = open(work / "controller.log", "wb")  # noqa: SIM115 - closed by _stop_controller
    proc = subprocess.Popen([sys.executable, "-m", "cedge", "controller", "run", "--config",
                             str(work / "controller.yaml")], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "subscribing" in (work / "controller.log").read_text(errors="replace"):
            return proc
        if proc.poll() is not None:
            raise RuntimeError("controller exited: " + (work / "controller.log").read_text(errors="replace")[-2000:])
        time.sleep(0.2)
    raise RuntimeError("controller did not subscribe within 120 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = getattr(proc, "log", None)
    if log is not None:
        log.close()


def _counts(db: Path) -> tuple[dict[str, int], int]:
    from controller.store import Store

    try:
        with Store(db, create=False) as store:
            return store.reject_counts(), store.count("received")
    except Exception:  # noqa: BLE001 - not created yet / locked for a moment: ask again
        return {}, 0


def _client(mqtt: Any, api: Any, port: int, client_id: str) -> Any:
    c = mqtt.Client(callback_api_version=api.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.monotonic() + 10
    while not c.is_connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    return c


def _envelope(kind: str, seq: int, now: str) -> bytes:
    from agent import wire_schema as ws

    body: ws.BaseModel = (ws.Birth(unit_type="mobile", profile="flood", software_version="0", site="bench",
                                   sensors={}) if kind == "birth" else
                          ws.Measurement(interval_s=1.0, live_time_s=0.98, gross_counts=1000, gross_cps=1020.0,
                                         detector_model="NaI"))
    return ws.encode(ws.make_envelope(kind, "mob-1", "flood-boot-0001", seq, now, 1.0, True, body))


def run_case(messages: int, size_bytes: int, limits: bool) -> dict[str, Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.wire_schema import uplink_topic

    work = Path(tempfile.mkdtemp(prefix="cedge-flood-"))
    broker, port = _start_broker(work, limits)
    controller = None
    try:
        controller = _start_controller(work, port)
        rss_before = {"controller": _rss_mb(controller.pid), "broker": _rss_mb(broker.pid)}
        sampler = _Sampler({"controller": controller.pid, "broker": broker.pid})
        sampler.start()
        topic = uplink_topic("mob-1", "measurement")
        t0 = time.monotonic()
        acked = refused = 0
        pub: Any = None
        for i in range(messages):
            if pub is None or not pub.is_connected():  # a broker with max_packet_size drops the sender
                if pub is not None:
                    pub.loop_stop()
                pub = _client(mqtt, CallbackAPIVersion, port, f"flooder-{i}")
            payload = b'{"schema": 1, "pad": "' + bytes([97 + i % 26]) * size_bytes + b'"}'
            info = pub.publish(topic, payload, qos=1)
            del payload
            deadline = time.monotonic() + 60
            while not info.is_published() and pub.is_connected() and time.monotonic() < deadline:
                time.sleep(0.02)
            if info.is_published():
                acked += 1
            else:
                refused += 1
        if pub is not None:
            pub.loop_stop()
            pub.disconnect()
        publish_s = time.monotonic() - t0
        # rejects reach the store for what the broker forwarded; with limits nothing is forwarded
        deadline = time.monotonic() + (300 if not limits else 10)
        rejects: dict[str, int] = {}
        while time.monotonic() < deadline:
            rejects, _ = _counts(work / "controller.sqlite")
            if rejects.get("oversized", 0) >= acked and (acked or limits):
                break
            time.sleep(0.5)
        drain_s = time.monotonic() - t0
        # still working: a birth and a measurement from a fresh connection are stored
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        check = _client(mqtt, CallbackAPIVersion, port, "checker")
        check.publish(uplink_topic("mob-1", "birth"), _envelope("birth", 0, now), qos=1).wait_for_publish(30)
        check.publish(topic, _envelope("measurement", 1, now), qos=1).wait_for_publish(30)
        stored = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and stored < 1:
            _, stored = _counts(work / "controller.sqlite")
            time.sleep(0.3)
        check.loop_stop()
        check.disconnect()
        peak = {"controller": _rss_mb(controller.pid, "VmHWM"), "broker": _rss_mb(broker.pid, "VmHWM")}
        sampler.stop()
        alive = controller.poll() is None
    finally:
        if controller is not None:
            _stop(controller)
        _stop(broker)
    log = (work / "controller.log").read_text(errors="replace")
    broker_log = (work / "mosquitto.log").read_text(errors="replace") if (work / "mosquitto.log").exists() else ""
    shutil.rmtree(work, ignore_errors=True)
    ok_controller = (peak["controller"] or 1e9) < CONTROLLER_LIMIT_MB
    ok_broker = not limits or (peak["broker"] or 1e9) < BROKER_LIMIT_MB
    return {
        "case": "site_limits" if limits else "no_broker_limit",
        "messages": messages,
        "message_mb": round(size_bytes / 2**20, 2),
        "publish_acked_by_broker": acked,
        "publish_refused_by_broker": refused,
        "publish_s": round(publish_s, 1),
        "until_rejected_s": round(drain_s, 1),
        "controller_rejects": rejects,
        "controller_rss_before_mb": round(rss_before["controller"] or 0, 1),
        "controller_peak_rss_mb": round(peak["controller"] or 0, 1),
        "controller_max_sampled_rss_mb": round(sampler.max_mb["controller"], 1),
        "broker_rss_before_mb": round(rss_before["broker"] or 0, 1),
        "broker_peak_rss_mb": round(peak["broker"] or 0, 1),
        "broker_max_sampled_rss_mb": round(sampler.max_mb["broker"], 1),
        "controller_alive": alive,
        "stored_after_flood": stored,
        "controller_tracebacks": log.count("Traceback"),
        "controller_reject_log_lines": len(re.findall(r"rejected cedge/", log)),
        "broker_log_size_refusals": len(re.findall(r"(?i)too large|exceeds|size limit|packet", broker_log)),
        "pass": bool(ok_controller and ok_broker and alive and stored >= 1 and "Traceback" not in log),
    }


def run_bench(messages: int = 100, size_mb: float = 10.0, json_out: bool = False,
              cases: tuple[str, ...] = ("no_broker_limit", "site_limits")) -> dict[str, Any]:
    results = []
    for case in cases:
        if not json_out:
            print(f"flood: {case}: {messages} x {size_mb:g} MB ...", file=sys.stderr)
        results.append(run_case(messages, int(size_mb * 2**20), limits=(case == "site_limits")))
    return {"bench": "flood", "controller_limit_mb": CONTROLLER_LIMIT_MB, "broker_limit_mb": BROKER_LIMIT_MB,
            "cases": results, "pass": all(r["pass"] for r in results)}


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run_bench(json_out=True), indent=1))
