"""``cedge bench ingest``: messages per second from the broker into the store, and publish-to-stored
latency, for one controller on SQLite, one on PostgreSQL and two on PostgreSQL (issue 20).

Everything is real: a private Mosquitto (plain loopback listener; TLS and ACLs are tested in
``tests/test_site.py``), a private PostgreSQL (:mod:`cedge.postgres`, fsync on - like SQLite's
``synchronous=FULL``, an acknowledged message survives a power cut), and ``cedge controller run``
processes subscribed through an MQTT 5 shared subscription (``$share/bench/...``), acknowledging
each message only after it is committed.

Load generator: ``units`` simulated units, each a (unit_id, boot_id, seq) counter whose messages are
real wire envelopes (:mod:`agent.wire_schema`: a birth, then measurements with the spectrum of a
1024-channel detector left out, as a mobile unit's 1-s message without spectrum).  Many units share a
few MQTT connections, so thousands fit on one machine; the broker and the controller see the same
topics and payloads as from real units.  Payloads are encoded before the clock starts.

Figures per configuration:

* **throughput** - every message published as fast as the publisher can (QoS 1, 1000 in flight):
  messages / (time from the first publish until all are in the store), polled every 50 ms;
* **latency** - then a paced run at half of that maximum rate: for each message, time from its
  publish to when a poller (every 20 ms, on its own connection) sees its row in the store;
  percentiles 50/99 (the poll interval is part of it);
* **loss / duplicates** - rows stored vs. messages published (must be equal: QoS 1 + de-dup);
* **peak RSS** of each controller process (VmHWM).

Baseline beside ours, in the same run: **broker only** - the same publisher into the same broker
with one plain paho subscriber that receives and acknowledges but stores nothing: the ceiling
of this machine's broker + Python client path; each figure is also given as a ratio to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from cedge.broker import free_port

#: the unit ids, boot ids and publish order derive from this seed (the load, not the result)
BENCH_SEED = 20261220
PUBLISHERS = 4  # MQTT connections the simulated units share
POLL_THROUGHPUT_S = 0.05
POLL_LATENCY_S = 0.02


def _hwm_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------- broker
class _Broker:
    """Private Mosquitto: no persistence (each case starts clean), unbounded queues so that a
    controller lagging behind a flood is never the reason for a lost message (it is counted anyway)."""

    def __init__(self, work: Path) -> None:
        binary = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)
        if binary is None:
            raise FileNotFoundError("mosquitto not found (apt install mosquitto)")
        self.port = free_port()
        conf = work / "mosquitto.conf"
        conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
            "max_queued_messages 0", "max_inflight_messages 0", f"log_dest file {work / 'mosquitto.log'}",
            "log_type error", "log_type warning", f"user {pwd.getpwuid(os.geteuid()).pw_name}"]) + "\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = getattr(proc, "log", None)
    if log is not None:
        log.close()


# ------------------------------------------------------------------------------------- controllers
def _start_controllers(work: Path, port: int, store: str, n: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        cfg = {"schema": 1, "store": store, "db_path": str(work / "unused.sqlite"),
               "dispatch": {"enabled": False}, "web": {"enabled": False}, "status_interval_s": 10.0,
               "broker": {"host": "127.0.0.1", "port": port, "client_id": f"bench-ctl-{i}",
                          "shared_subscription_group": "bench", "reconnect_max_s": 1.0}}
        path = work / f"ctl-{i}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        log = open(work / f"ctl-{i}.log", "wb")  # noqa: SIM115 - closed by _stop
        proc = subprocess.Popen([sys.executable, "-m", "cedge", "controller", "run", "--config", str(path)],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        proc.log = log  # type: ignore[attr-defined]
        procs.append(proc)
    deadline = time.monotonic() + 120
    for i, proc in enumerate(procs):
        while "subscribing" not in (work / f"ctl-{i}.log").read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (work / f"ctl-{i}.log").read_text(errors="replace")[-3000:]
                for p in procs:
                    _stop(p)
                raise RuntimeError(f"controller {i} did not subscribe: {text}")
            time.sleep(0.1)
    time.sleep(0.5)  # the SUBSCRIBE is sent; let the broker register it
    return procs


# --------------------------------------------------------------------------------- load generator
@dataclass
class _Load:
    """Pre-encoded wire messages of ``units`` simulated units (births, then measurements)."""

    units: int
    per_unit: int
    seed: int
    births: list[tuple[str, bytes]] = field(default_factory=list)
    boots: dict[str, str] = field(default_factory=dict)
    next_seq: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from agent import wire_schema as ws

        rng = random.Random(self.seed)
        now = _utc_now()
        for u in range(self.units):
            unit = f"mob-{u:05d}"
            boot = f"boot-{rng.getrandbits(48):012x}"
            self.boots[unit] = boot
            self.next_seq[unit] = 1
            body = ws.Birth(unit_type="mobile", profile="bench", software_version="0", site="bench", sensors={})
            env = ws.make_envelope("birth", unit, boot, 0, now, 0.0, True, body)
            self.births.append((ws.uplink_topic(unit, "birth"), ws.encode(env)))

    def measurements(self, rounds: int) -> list[tuple[str, bytes, str, int]]:
        """``rounds`` messages per unit, round-robin over units: (topic, payload, unit, seq)."""
        from agent import wire_schema as ws

        out = []
        now = _utc_now()
        rng = random.Random(self.seed + rounds)
        for _ in range(rounds):
            for u in range(self.units):
                unit = f"mob-{u:05d}"
                seq = self.next_seq[unit]
                self.next_seq[unit] = seq + 1
                counts = 1000 + rng.randrange(100)
                body = ws.Measurement(interval_s=1.0, live_time_s=0.98, gross_counts=counts,
                                      gross_cps=counts / 0.98, background_cps=1000.0, detector_model="NaI 2x4x16")
                env = ws.make_envelope("measurement", unit, self.boots[unit], seq, now, float(seq), True, body)
                out.append((ws.uplink_topic(unit, "measurement"), ws.encode(env), unit, seq))
        return out


class _Publishers:
    """A few paho MQTT 5 clients that the simulated units share (QoS 1, 1000 messages in flight)."""

    def __init__(self, port: int, n: int = PUBLISHERS) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.acked = 0
        self._lock = threading.Lock()
        self.clients = []
        for i in range(n):
            c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{i}",
                            protocol=mqtt.MQTTv5)
            c.max_inflight_messages_set(1000)
            c.max_queued_messages_set(0)
            c.on_publish = self._on_publish
            c.connect("127.0.0.1", port)
            c.loop_start()
            self.clients.append(c)
        deadline = time.monotonic() + 15
        while not all(c.is_connected() for c in self.clients):
            if time.monotonic() > deadline:
                raise RuntimeError("publishers did not connect")
            time.sleep(0.02)

    def _on_publish(self, *_a: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, i: int, topic: str, payload: bytes) -> None:
        self.clients[i % len(self.clients)].publish(topic, payload, qos=1)

    def wait_acked(self, n: int, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.acked < n and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


# ------------------------------------------------------------------------------------- measuring
def _count(store: Any, table: str) -> int:
    try:
        return int(store.count(table))
    except Exception:  # noqa: BLE001 - a busy moment: ask again at the next poll
        return -1


def _wait_count(store: Any, table: str, n: int, timeout_s: float) -> tuple[int, float]:
    deadline = time.monotonic() + timeout_s
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        c = _count(store, table)
        now = time.monotonic()
        if c >= n:
            return c, now
        if c != last:
            last, last_change = c, now
        elif now - last_change > 30.0:  # nothing more is arriving
            break
        time.sleep(POLL_THROUGHPUT_S)
    return max(last, 0), time.monotonic()


class _LatencyPoller(threading.Thread):
    """Sees new measurement rows (by id) and stamps when each (unit, seq) became visible.

    Ids are given at insert; with two writers a smaller id can commit after a larger one, so the
    poller asks again from the lowest id not yet seen, and gives up on a hole after 5 s (an id
    consumed by a rolled-back transaction is never filled)."""

    def __init__(self, store: Any) -> None:
        super().__init__(daemon=True, name="latency-poller")
        self.store = store
        self.seen: dict[tuple[str, int], float] = {}
        self._halt = threading.Event()
        self.low = self._max_id()
        self._ids: set[int] = set()
        self._hole_since: float | None = None

    def _max_id(self) -> int:
        rows = self.store.query("SELECT COALESCE(MAX(id), 0) AS m FROM measurements")
        return int(rows[0]["m"])

    def run(self) -> None:
        while not self._halt.is_set():
            rows = self.store.query("SELECT id, unit_id, seq FROM measurements WHERE id > ? ORDER BY id LIMIT 20000",
                                    (self.low,))
            now = time.monotonic()
            for r in rows:
                if r["id"] not in self._ids:
                    self._ids.add(r["id"])
                    self.seen.setdefault((r["unit_id"], int(r["seq"])), now)
            while self.low + 1 in self._ids:
                self.low += 1
                self._ids.discard(self.low)
            if self._ids:
                if self._hole_since is None:
                    self._hole_since = now
                elif now - self._hole_since > 5.0:
                    self.low += 1  # a hole that will not fill
                    self._hole_since = None
            else:
                self._hole_since = None
            self._halt.wait(POLL_LATENCY_S)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(q / 100 * (len(v) - 1)))))
    return v[k]


# ----------------------------------------------------------------------------------------- cases
def _run_store_case(name: str, store_url: str, n_controllers: int, load: _Load, rounds: int,
                    latency_s: float, work: Path) -> dict[str, Any]:
    from controller.store import Store

    work.mkdir(parents=True, exist_ok=True)
    Store(store_url).close()  # schema once, before the controllers race to create it
    broker = _Broker(work)
    procs: list[subprocess.Popen[bytes]] = []
    pubs = None
    store = None
    try:
        procs = _start_controllers(work, broker.port, store_url, n_controllers)
        store = Store(store_url, create=False)
        pubs = _Publishers(broker.port)
        for i, (topic, payload) in enumerate(load.births):
            pubs.publish(i, topic, payload)
        n_units, _ = _wait_count(store, "units", load.units, 120)
        if n_units < load.units:
            raise RuntimeError(f"{name}: only {n_units} of {load.units} births stored")
        # throughput: everything as fast as the publisher goes
        msgs = load.measurements(rounds)
        base = _count(store, "received")
        acked0 = pubs.acked
        t0 = time.monotonic()
        for i, (topic, payload, _u, _s) in enumerate(msgs):
            pubs.publish(i, topic, payload)
        pubs.wait_acked(acked0 + len(msgs))
        t_published = time.monotonic()
        stored, t_end = _wait_count(store, "received", base + len(msgs), 300)
        n_stored = stored - base
        rate = n_stored / (t_end - t0) if t_end > t0 else 0.0
        # latency at half the maximum rate
        lat = _latency_run(store, pubs, load, rate * 0.5, latency_s)
        time.sleep(1.0)
        total = _count(store, "received")
        published = len(msgs) + lat["published"]
        dup = store.query("SELECT COUNT(*) AS n FROM (SELECT unit_id, boot_id, seq FROM measurements "
                          "GROUP BY unit_id, boot_id, seq HAVING COUNT(*) > 1) d")[0]["n"]
        rss = [_hwm_mb(p.pid) for p in procs]
        return {
            "name": name, "controllers": n_controllers, "messages": len(msgs), "stored": n_stored,
            "publish_s": round(t_published - t0, 3), "store_s": round(t_end - t0, 3),
            "msgs_per_s": round(rate, 1), "latency": lat,
            "lost": published - (total - base), "duplicates": int(dup),
            "controller_peak_rss_mb": [round(r, 1) if r is not None else None for r in rss],
        }
    finally:
        if pubs is not None:
            pubs.close()
        if store is not None:
            store.close()
        for p in procs:
            _stop(p)
        broker.stop()


def _latency_run(store: Any, pubs: _Publishers, load: _Load, rate: float, seconds: float) -> dict[str, Any]:
    rounds = max(1, int(rate * seconds / load.units))
    msgs = load.measurements(rounds)
    interval = 1.0 / max(rate, 1.0)
    poller = _LatencyPoller(store)
    poller.start()
    sent: dict[tuple[str, int], float] = {}
    t0 = time.monotonic()
    for i, (topic, payload, unit, seq) in enumerate(msgs):
        due = t0 + i * interval
        while (now := time.monotonic()) < due:
            time.sleep(min(due - now, 0.002))
        sent[(unit, seq)] = time.monotonic()
        pubs.publish(i, topic, payload)
    t_pub = time.monotonic() - t0
    deadline = time.monotonic() + 60
    while len(poller.seen.keys() & sent.keys()) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    poller.stop()
    lat_ms = [(poller.seen[k] - t) * 1000 for k, t in sent.items() if k in poller.seen]
    return {"target_rate_msgs_per_s": round(rate, 1), "rate_msgs_per_s": round(len(msgs) / max(t_pub, 1e-9), 1),
            "published": len(msgs), "seen": len(lat_ms),
            "p50_ms": _round(_percentile(lat_ms, 50)), "p99_ms": _round(_percentile(lat_ms, 99)),
            "max_ms": _round(max(lat_ms) if lat_ms else None)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _broker_only(load: _Load, rounds: int, work: Path) -> dict[str, Any]:
    """Baseline: publisher -> Mosquitto -> one paho subscriber that only acknowledges."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.wire_schema import UPLINK_SUBSCRIPTION

    work.mkdir(parents=True, exist_ok=True)
    broker = _Broker(work)
    got = {"n": 0, "t_last": 0.0}
    lock = threading.Lock()

    def on_message(*_a: Any) -> None:
        with lock:
            got["n"] += 1
            got["t_last"] = time.monotonic()

    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-sink", protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    pubs = None
    try:
        sub.connect("127.0.0.1", broker.port)
        sub.subscribe(UPLINK_SUBSCRIPTION, qos=1)
        sub.loop_start()
        time.sleep(0.5)
        pubs = _Publishers(broker.port)
        msgs = load.measurements(rounds)
        t0 = time.monotonic()
        for i, (topic, payload, _u, _s) in enumerate(msgs):
            pubs.publish(i, topic, payload)
        deadline = time.monotonic() + 300
        while got["n"] < len(msgs) and time.monotonic() < deadline:
            time.sleep(0.01)
        rate = got["n"] / (got["t_last"] - t0) if got["t_last"] > t0 else 0.0
        return {"messages": len(msgs), "received": got["n"], "msgs_per_s": round(rate, 1)}
    finally:
        if pubs is not None:
            pubs.close()
        sub.disconnect()
        sub.loop_stop()
        broker.stop()


# ------------------------------------------------------------------------------------------ entry
def run_bench(units: int = 1000, rounds: int = 6, latency_s: float = 10.0, json_out: bool = False,
              out_dir: Path | None = None, quick: bool = False, seed: int = BENCH_SEED) -> dict[str, Any]:
    from cedge.postgres import PrivatePostgres, find_pg_bin

    if quick:
        units, rounds, latency_s = 200, 10, 4.0
    work = Path(tempfile.mkdtemp(prefix="cedge-bench-ingest-"))
    result: dict[str, Any] = {
        "bench": "ingest", "seed": seed, "units": units, "messages_per_case": units * rounds,
        "publishers": PUBLISHERS, "cpu_count": os.cpu_count(), "started_utc": _utc_now(),
        # the machine's load when the run started and ended: figures from a shared, loaded machine
        # are not the engine's capacity (the targets are "on one core" of an idle machine)
        "load_average_1min_start": round(os.getloadavg()[0], 2),
    }
    cases: dict[str, dict[str, Any]] = {}
    try:
        result["broker_only"] = _broker_only(_Load(units, rounds, seed), rounds, work / "broker_only")
        cases["sqlite"] = _run_store_case("sqlite", str(work / "sqlite" / "controller.sqlite"), 1,
                                          _Load(units, rounds, seed), rounds, latency_s, work / "sqlite")
        if find_pg_bin() is None:
            result["postgres_skipped"] = "PostgreSQL server binaries not found (apt install postgresql)"
        else:
            with PrivatePostgres(fsync=True) as pg:
                for name, n in (("postgres_1", 1), ("postgres_2", 2)):
                    url = pg.create_database(f"bench_{name}")
                    cases[name] = _run_store_case(name, url, n, _Load(units, rounds, seed), rounds, latency_s,
                                                  work / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    broker = result["broker_only"]["msgs_per_s"] or None
    result["cases"] = cases
    result["broker_only_msgs_per_s"] = result["broker_only"]["msgs_per_s"]
    for name, c in cases.items():
        result[f"msgs_per_s_{name}"] = c["msgs_per_s"]
        result[f"ratio_to_broker_{name}"] = round(c["msgs_per_s"] / broker, 3) if broker else None
        result[f"latency_ms_p99_{name}"] = c["latency"]["p99_ms"]
        result[f"lost_{name}"] = c["lost"]
        result[f"duplicates_{name}"] = c["duplicates"]
    result["latency_ms_p99"] = cases["sqlite"]["latency"]["p99_ms"]
    if "postgres_1" in cases and "postgres_2" in cases and cases["postgres_1"]["msgs_per_s"]:
        result["scaling_postgres_2_over_1"] = round(cases["postgres_2"]["msgs_per_s"]
                                                    / cases["postgres_1"]["msgs_per_s"], 3)
    result["not_measured"] = ["soak_units", "soak_minutes", "soak_lost", "soak_duplicates", "soak_rss_growth_mb"]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "bench_ingest.json").write_text(json.dumps(result, indent=2) + "\n")
        _figure(result, out_dir / "bench_ingest.png")
    if json_out:
        print(json.dumps(result))
    else:
        for line in summary_lines(result):
            print(line)
    return result


def summary_lines(r: dict[str, Any]) -> list[str]:
    b = r["broker_only_msgs_per_s"]
    lines = [f"ingest bench: {r['units']} units, {r['messages_per_case']} messages per case, "
             f"{r['cpu_count']} CPU(s), load average {r['load_average_1min_start']} -> {r['load_average_1min_end']}",
             f"  broker only (no store)   {b:9.0f} msg/s"]
    for name, c in r["cases"].items():
        lat = c["latency"]
        lines.append(f"  {name:<12} x{c['controllers']} ctl  {c['msgs_per_s']:9.0f} msg/s  "
                     f"({r[f'ratio_to_broker_{name}']:.2f} of broker)  latency p50 {lat['p50_ms']} ms, "
                     f"p99 {lat['p99_ms']} ms at {lat['rate_msgs_per_s']:.0f} msg/s  lost {c['lost']}  "
                     f"dup {c['duplicates']}  peak RSS {c['controller_peak_rss_mb']} MB")
    if "scaling_postgres_2_over_1" in r:
        lines.append(f"  two controllers on PostgreSQL / one: {r['scaling_postgres_2_over_1']:.2f}x")
    return lines


def _figure(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["cases"])
    rates = [r["cases"][n]["msgs_per_s"] for n in names]
    p99 = [r["cases"][n]["latency"]["p99_ms"] or 0.0 for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.bar(names, rates, color=["#4c72b0", "#55a868", "#c44e52"][: len(names)])
    ax1.axhline(r["broker_only_msgs_per_s"], color="k", ls="--", label="broker only (no store)")
    ax1.axhline(5000, color="grey", ls=":", label="target SQLite 5000 msg/s")
    ax1.set_ylabel("messages stored per second")
    ax1.set_title(f"ingest throughput ({r['cpu_count']} CPUs, load avg {r['load_average_1min_start']:.0f}"
                  f"-{r['load_average_1min_end']:.0f}, {r['units']} units)", fontsize=10)
    ax1.legend(fontsize=8)
    ax2.bar(names, p99, color=["#4c72b0", "#55a868", "#c44e52"][: len(names)])
    ax2.axhline(500, color="grey", ls=":", label="target 500 ms")
    ax2.set_ylabel("publish-to-stored latency p99 (ms)")
    ax2.set_title("at half of each maximum rate")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
