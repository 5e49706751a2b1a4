"""``cedge bench console``: issue 18's load test of the operator console, in a real browser.

A private Mosquitto, the real controller process (``cedge controller run --web``), ``units``
simulated mobile units (100 by default) each sending one measurement a second - position on its
own lane of the yard, gross counts (Poisson) and a 1024-channel spectrum, as mobile systems send
them - over MQTT, and ``browsers`` (10) Chromium pages of the console logged in, each in its own
browser context (own session cookie, own ``EventSource``), all in Debian's headless Chromium
driven by Playwright (as ``tests/test_web_console.py`` does).

What is measured, in one run:

* ``update_latency_ms_p50/p99``: from the moment a measurement was stored (its ``received_utc``,
  stamped by the controller's ingest when it handles the message: an upper bound of "stored") to
  the moment the console page's ``EventSource`` delivers the position row to the page (wall
  clock of the same host on both sides; Chromium's ``Date.now()`` and Python's UTC clock);
* the same for the **baseline**: a page that polls the JSON API (``GET /api/positions`` once a
  second), the usual way a dashboard without push follows a database;
* ``events_missing``: rows stored during the window that a connected page never received
  (no silent loss; a ``resync`` is counted separately);
* ``page_load_ms_p50/p95``: a logged-in operator opens the console URL (fresh page) until the
  live stream is on and all units are in the units table, with the load running;
* ``server_cpu_percent``: the controller process's CPU time over the window (100 % = one core),
  with the console serving the browsers, beside the same controller with ``--no-web`` under the
  same load (the console's cost), and both processes' resident memory.

Seeds: the unit lanes and counts come from ``seed`` (benchmark seed 20261218; nothing is tuned
on them).  Targets (issue 18): ``update_latency_ms_p99 <= 500``, ``page_load_ms_p50 <= 1000``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cedge.bench.flood import _rss_mb, _start_broker, _stop
from cedge.broker import free_port

BENCH_SEED = 20261218
LATENCY_P99_TARGET_MS = 500.0
PAGE_LOAD_P50_TARGET_MS = 1000.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
OPERATOR = ("bench-op", "bench-operator-pass")
WARMUP_S = 5.0
CATCH_UP_S = 60.0
CHANNELS = 1024

# Runs in every page before the console's own scripts (Playwright init script; CSP does not apply):
# wraps EventSource so each delivered position row is stamped with the page's wall clock.
_SSE_PROBE = """
(() => {
  const lat = []; const seen = new Set(); let resyncs = 0; let maxId = 0;
  window.__bench = { lat, seen, resyncs: () => resyncs, maxId: () => maxId };
  const Orig = window.EventSource;
  window.EventSource = class extends Orig {
    constructor(...args) {
      super(...args);
      this.addEventListener("positions", (ev) => {
        const now = Date.now();
        for (const r of JSON.parse(ev.data)) {
          if (seen.has(r.id)) continue;
          seen.add(r.id); lat.push([r.id, now - Date.parse(r.received_utc)]); maxId = Math.max(maxId, r.id);
        }
      });
      this.addEventListener("resync", () => { resyncs += 1; });
    }
  };
})();
"""

# The baseline: what a dashboard without push does - poll the API once a second.
_POLL_PROBE = """
async (periodMs) => {
  const lat = []; const seen = new Set();
  window.__poll = { lat, seen, stop: false };
  while (!window.__poll.stop) {
    const t0 = Date.now();
    try {
      const rows = await (await fetch("/api/positions?since_s=10")).json();
      const now = Date.now();
      for (const r of rows) {
        if (!seen.has(r.id)) { seen.add(r.id); lat.push([r.id, now - Date.parse(r.received_utc)]); }
      }
    } catch (e) { /* counted as missing rows */ }
    await new Promise((res) => setTimeout(res, Math.max(0, periodMs - (Date.now() - t0))));
  }
}
"""


_T0 = time.monotonic()


def _say(msg: str) -> None:
    """Progress on stderr (stdout carries the result): a slow machine shows where the time goes."""
    print(f"[bench console {time.monotonic() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (proc(5): fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Fleet(threading.Thread):
    """``units`` mobile units at ``rate_hz`` over one MQTT connection (QoS 1), on seeded lanes.

    Unit k drives back and forth along its own lane (y = 4 m * k) at 1..3 m/s; its counts are a
    Poisson draw of a 250..350 cps background; its spectrum a Poisson draw of a falling continuum."""

    def __init__(self, port: int, units: int, rate_hz: float, seed: int) -> None:
        super().__init__(daemon=True, name="bench-fleet")
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from agent.geo import LocalFrame

        self.units = [f"mob-{k:03d}" for k in range(units)]
        self.period_s = 1.0 / rate_hz
        self.rng = np.random.default_rng(seed)
        self.speed = self.rng.uniform(1.0, 3.0, units)
        self.x0 = self.rng.uniform(-100.0, 100.0, units)
        self.bg_cps = self.rng.uniform(250.0, 350.0, units)
        e = np.arange(CHANNELS) * 3.0
        self.shape = np.exp(-e / 400.0) / np.exp(-e / 400.0).sum()
        self.frame = LocalFrame(51.95, 4.05, 5.0)  # the controller's default site origin
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-fleet",
                                  protocol=mqtt.MQTTv5, reconnect_on_failure=True)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.halt = threading.Event()
        self.sent = 0
        self.late_ticks = 0
        self.seq = dict.fromkeys(self.units, 0)
        self.t_start = time.monotonic()

    def _send(self, unit: str, kind: str, body: Any) -> None:
        from agent import wire_schema as ws

        if kind not in ws.SESSION_KINDS:
            self.seq[unit] += 1  # births and deaths carry seq 0 (agent.wire_schema)
        env = ws.make_envelope(kind, unit, f"bench-{unit}", self.seq[unit] if kind not in ws.SESSION_KINDS else 0,
                               _utc_now(),
                               time.monotonic() - self.t_start, True, body)
        self.client.publish(ws.uplink_topic(unit, kind), ws.encode(env), qos=1)

    def births(self) -> None:
        from agent import wire_schema as ws

        for u in self.units:
            self._send(u, "birth", ws.Birth(unit_type="mobile", profile="bench", software_version="0",
                                            site="demo-yard", sensors={}))

    def run(self) -> None:
        from agent import wire_schema as ws

        tick = 0
        next_t = time.monotonic()
        while not self.halt.is_set():
            t = tick * self.period_s
            for k, u in enumerate(self.units):
                # back and forth over 200 m: a triangle wave
                s = (self.x0[k] + 100.0 + self.speed[k] * t) % 400.0
                x = s - 100.0 if s < 200.0 else 300.0 - s
                y = 4.0 * k - 200.0
                lat, lon, alt = self.frame.to_geodetic(x, y, 1.0)
                counts = int(self.rng.poisson(self.bg_cps[k]))
                spec = self.rng.poisson(self.bg_cps[k] * self.shape).astype(int).tolist()
                self._send(u, "measurement", ws.Measurement(
                    interval_s=self.period_s, live_time_s=self.period_s, gross_counts=counts, gross_cps=float(counts),
                    background_cps=float(self.bg_cps[k]), detector_model="NaI 2x4x16",
                    position=ws.Position(lat_deg=lat, lon_deg=lon, alt_m=alt, x_m=x, y_m=y, z_m=1.0, fix_quality=4),
                    speed_m_s=float(self.speed[k]), spectrum=spec, energy_calibration_kev=[0.0, 3.0]))
                self.sent += 1
            tick += 1
            next_t += self.period_s
            delay = next_t - time.monotonic()
            if delay < 0:
                self.late_ticks += 1
                next_t = time.monotonic()
            self.halt.wait(max(0.0, delay))

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)
        self.client.loop_stop()
        self.client.disconnect()


def _start_controller(work: Path, broker_port: int, web: bool) -> tuple[subprocess.Popen[bytes], str | None]:
    db = work / "controller.sqlite"
    cfg = {"schema": 1, "db_path": str(db), "dispatch": {"enabled": False},
           "broker": {"host": "127.0.0.1", "port": broker_port, "reconnect_max_s": 1.0}}
    (work / "controller.yaml").write_text(yaml.safe_dump(cfg))
    if web:
        from controller.web.db import connect
        from controller.web.users import add_user

        conn = connect(db)
        add_user(conn, OPERATOR[0], "operator", OPERATOR[1], replace=True)
        conn.close()
    port = free_port()
    args = ["--web", f"127.0.0.1:{port}"] if web else ["--no-web"]
    log = open(work / "controller.log", "wb")  # noqa: SIM115 - closed by _stop
    proc = subprocess.Popen([sys.executable, "-m", "cedge", "controller", "run", "--config",
                             str(work / "controller.yaml"), *args], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    want = "operator console at" if web else "subscribing"
    while time.monotonic() < deadline:
        text = (work / "controller.log").read_text(errors="replace")
        if "subscribing" in text and want in text:
            return proc, (f"http://127.0.0.1:{port}/" if web else None)
        if proc.poll() is not None:
            raise RuntimeError("controller exited: " + text[-2000:])
        time.sleep(0.2)
    _stop(proc)
    raise RuntimeError("controller did not start within 120 s")


def _max_id(db: Path) -> int:
    from controller.store import Store

    with Store(db, create=False) as store:
        return int(store.query("SELECT MAX(id) AS m FROM measurements")[0]["m"] or 0)


def _stored_ids(db: Path, lo: int, hi: int) -> set[int]:
    from controller.store import Store

    with Store(db, create=False) as store:
        rows = store.query("SELECT id FROM measurements WHERE id BETWEEN ? AND ? AND x_m IS NOT NULL", (lo, hi))
    return {int(r["id"]) for r in rows}


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _stats(lat: list[float]) -> dict[str, Any]:
    return {"n": len(lat), "p50": _pct(lat, 50), "p95": _pct(lat, 95), "p99": _pct(lat, 99),
            "max": round(max(lat), 1) if lat else None}


def _login(context: Any, url: str) -> Any:
    page = context.new_page()
    page.goto(url)
    page.fill("#login-name", OPERATOR[0])
    page.fill("#login-password", OPERATOR[1])
    page.click("#login-button")
    page.wait_for_selector("#live.on", timeout=60_000)
    return page


def _browser_phase(url: str, db: Path, pid: int, browsers: int, duration_s: float, page_loads: int,
                   units: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    exe = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if exe is None:
        raise FileNotFoundError("Debian's chromium is needed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            pages = []
            for _ in range(browsers):
                ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
                ctx.add_init_script(_SSE_PROBE)
                pages.append(_login(ctx, url))
                _say(f"browser {len(pages)} of {browsers} logged in and live")
            poll_ctx = browser.new_context()
            poll_page = _login(poll_ctx, url)
            poll_page.evaluate("() => { window.__pollDone = null; }")
            poll_page.evaluate(f"() => {{ window.__pollDone = ({_POLL_PROBE})(1000); }}")
            time.sleep(WARMUP_S)
            id_lo = max(int(r[0]) for r in pages[0].evaluate("window.__bench.lat.slice(-1)") or [[0]]) + 1
            cpu0, t0 = _cpu_s(pid), time.monotonic()
            _say(f"window open ({duration_s:g} s)")
            time.sleep(duration_s / 2)
            # page loads while the load runs: a logged-in operator opens the console afresh
            load_ms: list[float] = []
            load_ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
            _login(load_ctx, url).close()
            for _ in range(page_loads):
                page = load_ctx.new_page()
                t = time.perf_counter()
                page.goto(url)
                # selectors, not an expression: the console's CSP forbids eval, and the page runs under it
                page.wait_for_selector("#live.on", timeout=60_000)
                page.wait_for_selector(f"#units tbody tr:nth-child({units})", state="attached", timeout=60_000)
                load_ms.append((time.perf_counter() - t) * 1000.0)
                _say(f"page load {len(load_ms)} of {page_loads}: {load_ms[-1]:.0f} ms")
                page.close()
            rest = duration_s - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
            cpu_s, wall_s = _cpu_s(pid) - cpu0, time.monotonic() - t0
            id_hi = _max_id(db)
            # the rows stored by the window's end reach every page (late is measured, not lost): wait
            # for each page's newest id to pass them, at most CATCH_UP_S
            _say(f"window closed at id {id_hi}; waiting for the pages to catch up")
            deadline = time.monotonic() + CATCH_UP_S
            while time.monotonic() < deadline and min(pg.evaluate("window.__bench.maxId()") for pg in pages) < id_hi:
                time.sleep(1.0)
            _say("collecting the pages' records")
            # only the window's rows leave the pages (the arrays hold everything since login)
            window_js = f"(lat) => lat.filter((r) => r[0] >= {id_lo} && r[0] <= {id_hi})"
            per_page = [pg.evaluate(f"[({window_js})(window.__bench.lat), window.__bench.resyncs()]")
                        for pg in pages]
            poll_page.evaluate("() => { window.__poll.stop = true; }")
            poll = poll_page.evaluate(f"({window_js})(window.__poll.lat)")
        finally:
            browser.close()
    # the window: rows stored from the first id after warm-up to the window's end
    stored = _stored_ids(db, id_lo, id_hi)
    lat_all: list[float] = []
    missing: list[int] = []
    for lat, _ in per_page:
        got = {int(r[0]) for r in lat}
        lat_all += [float(r[1]) for r in lat if id_lo <= r[0] <= id_hi]
        missing.append(len(stored - got))
    poll_lat = [float(r[1]) for r in poll if id_lo <= r[0] <= id_hi]
    return {
        "lat": lat_all, "poll_lat": poll_lat, "load_ms": load_ms,
        "rows_in_window": len(stored), "events_missing_per_browser": missing,
        "poll_missing": len(stored - {int(r[0]) for r in poll}),
        "resyncs": sum(int(r) for _, r in per_page),
        "cpu_percent": 100.0 * cpu_s / wall_s, "wall_s": wall_s,
    }


def _run_controller(work: Path, port: int, units: int, rate_hz: float, seed: int, web: bool, browsers: int,
                    duration_s: float, page_loads: int) -> dict[str, Any]:
    proc, url = _start_controller(work, port, web)
    _say(f"controller up ({'with' if web else 'without'} the console)")
    fleet = None
    try:
        fleet = _Fleet(port, units, rate_hz, seed)
        fleet.births()
        fleet.start()
        if web:
            assert url is not None
            out = _browser_phase(url, work / "controller.sqlite", proc.pid, browsers, duration_s, page_loads, units)
        else:
            time.sleep(WARMUP_S)
            cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
            time.sleep(duration_s)
            out = {"cpu_percent": 100.0 * (_cpu_s(proc.pid) - cpu0) / (time.monotonic() - t0)}
        out["rss_mb"] = _rss_mb(proc.pid)
        out["rss_peak_mb"] = _rss_mb(proc.pid, "VmHWM")
        out["threads"] = len(os.listdir(f"/proc/{proc.pid}/task"))
        out["sent"] = fleet.sent
        out["late_ticks"] = fleet.late_ticks
        out["alive"] = proc.poll() is None
    finally:
        if fleet is not None:
            fleet.stop()
        _stop(proc)
    log = (work / "controller.log").read_text(errors="replace")
    out["traceback_in_log"] = "Traceback" in log
    return out


def run_bench(units: int = 100, rate_hz: float = 1.0, browsers: int = 10, duration_s: float = 60.0,
              page_loads: int = 20, seed: int = BENCH_SEED, baseline_s: float = 20.0, json_out: bool = False,
              out_dir: str | Path | None = None) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    for web in (True, False):
        if not web and baseline_s <= 0:
            continue
        work = Path(tempfile.mkdtemp(prefix="cedge-bench-console-"))
        broker, port = _start_broker(work, limits=False)
        try:
            runs["console" if web else "no_console"] = _run_controller(
                work, port, units, rate_hz, seed, web, browsers, duration_s if web else baseline_s, page_loads)
        finally:
            _stop(broker)
            shutil.rmtree(work, ignore_errors=True)
    c = runs["console"]
    sse, poll = _stats(c["lat"]), _stats(c["poll_lat"])
    result: dict[str, Any] = {
        "bench": "console", "seed": seed, "units": units, "rate_hz": rate_hz, "browsers": browsers,
        "duration_s": duration_s, "page_loads": page_loads, "utc": _utc_now(), "host_cpus": os.cpu_count(),
        # other work on the host shows here: the latencies are only as good as the machine was quiet
        "host_load_avg_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "update_latency_ms_p50": sse["p50"], "update_latency_ms_p99": sse["p99"],
        "page_load_ms_p50": _pct(c["load_ms"], 50), "page_load_ms_p95": _pct(c["load_ms"], 95),
        "server_cpu_percent": round(c["cpu_percent"], 1),
        "server_cpu_percent_no_console": round(runs["no_console"]["cpu_percent"], 1) if "no_console" in runs else None,
        "server_rss_mb": c["rss_mb"], "server_rss_peak_mb": c["rss_peak_mb"],
        "server_rss_mb_no_console": runs.get("no_console", {}).get("rss_mb"),
        "events_missing": sum(c["events_missing_per_browser"]), "resyncs": c["resyncs"],
        "rows_in_window": c["rows_in_window"],
        "sse": sse, "baseline_poll_1s": {**poll, "missing": c["poll_missing"]},
        "publisher_late_ticks": c["late_ticks"], "messages_sent": c["sent"],
        "controller_alive": c["alive"], "traceback_in_log": c["traceback_in_log"],
        "targets": {"update_latency_ms_p99": LATENCY_P99_TARGET_MS, "page_load_ms_p50": PAGE_LOAD_P50_TARGET_MS},
    }
    result["passed"] = bool(
        sse["p99"] is not None and sse["p99"] <= LATENCY_P99_TARGET_MS and result["page_load_ms_p50"] is not None
        and result["page_load_ms_p50"] <= PAGE_LOAD_P50_TARGET_MS and result["events_missing"] == 0
        and c["alive"] and not c["traceback_in_log"])
    if out_dir is not None:
        from cedge.bench.results import save_results

        samples = {"sse": c["lat"], "poll": c["poll_lat"], "load": c["load_ms"]}
        save_results(result, out_dir, "console", lambda out: [str(_figure(samples, result, out))])
    return result


def _figure(samples: dict[str, list[float]], result: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("sse", "console (Server-Sent Events)"), ("poll", "baseline: API polled every 1 s")):
        v = np.sort(np.asarray(samples[key]))
        if v.size:
            ax1.plot(v, np.arange(1, v.size + 1) / v.size, label=f"{label}, p99 {np.percentile(v, 99):.0f} ms")
    ax1.axvline(LATENCY_P99_TARGET_MS, color="red", ls="--", lw=1, label="target p99 500 ms")
    ax1.set_xlabel("stored -> browser event (ms)")
    ax1.set_ylabel("fraction of position updates")
    ax1.set_title(f"{result['units']} units at {result['rate_hz']:g} Hz, {result['browsers']} browsers")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.hist(samples["load"], bins=15, color="tab:green")
    ax2.axvline(PAGE_LOAD_P50_TARGET_MS, color="red", ls="--", lw=1, label="target p50 1000 ms")
    ax2.set_xlabel("page load to live + all units shown (ms)")
    ax2.set_ylabel("loads")
    ax2.set_title(f"page load p50 {result['page_load_ms_p50']} ms; server CPU {result['server_cpu_percent']} %")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = out / "bench_console.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_lines(r: dict[str, Any]) -> list[str]:
    ok = lambda v, t: "ok" if v is not None and v <= t else "MISSED"  # noqa: E731
    return [
        f"console load: {r['units']} units at {r['rate_hz']:g} Hz, {r['browsers']} browsers, {r['duration_s']:g} s",
        f"update latency stored->browser: p50 {r['update_latency_ms_p50']} ms, p99 {r['update_latency_ms_p99']} ms "
        f"(target <= 500: {ok(r['update_latency_ms_p99'], LATENCY_P99_TARGET_MS)}); "
        f"baseline 1 s polling p99 {r['baseline_poll_1s']['p99']} ms",
        f"page load: p50 {r['page_load_ms_p50']} ms, p95 {r['page_load_ms_p95']} ms "
        f"(target p50 <= 1000: {ok(r['page_load_ms_p50'], PAGE_LOAD_P50_TARGET_MS)})",
        f"server CPU {r['server_cpu_percent']} % of a core "
        f"(without the console: {r['server_cpu_percent_no_console']} %);"
        f" RSS {r['server_rss_mb']:.0f} MB (without: {r['server_rss_mb_no_console'] or 0:.0f} MB)",
        f"rows in window {r['rows_in_window']}, missing {r['events_missing']}, resyncs {r['resyncs']}; "
        f"{'PASS' if r['passed'] else 'FAIL'}",
    ]

