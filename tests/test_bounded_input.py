"""Issue 14, rows 9-14: hostile input gets a clear, specific reject or error, bounded memory and no
traceback - in the ingest path, in a real controller process behind a real Mosquitto, in the
spectrum readers and on the operator's terminal.

The full row-13 flood (100 messages of 10 MB, controller RSS < 300 MB) is a measurement and lives
in ``cedge bench flood``; here a smaller flood checks the mechanism on a real process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from broker_fixture import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from typer.testing import CliRunner

from agent import wire_schema as ws
from agent.spectral_files import SpectrumFileError, read_spectrum_file
from controller.config import SequenceConfig
from controller.ingest import Ingestor
from controller.store import RejectBudget, Store

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
BOOT = "boot-aaaa-0001"
N42_NS = "http://physics.nist.gov/N42/2011/N42"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic_s(self) -> float:
        return self.t

    def utc_now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    rate = 1.0
    utc_valid = True


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


POS = {"lat_deg": 51.95, "lon_deg": 4.05, "alt_m": 5.0, "x_m": 1.0, "y_m": 2.0, "z_m": 1.5, "fix_quality": 1}


def envelope(kind: str = "measurement", seq: int = 1, unit: str = "mob-1", t_utc: str | None = None,
             boot: str = BOOT, **body: Any) -> dict[str, Any]:
    bodies = {
        "measurement": {"interval_s": 1.0, "live_time_s": 0.98, "gross_counts": 1000, "gross_cps": 1020.4,
                        "detector_model": "NaI", "position": POS},
        "birth": {"unit_type": "mobile", "profile": "p", "software_version": "0.1", "site": "yard", "sensors": {}},
        "health": {"uptime_s": 1.0, "cpu_pct": 2.0, "mem_rss_mb": 50.0, "outbox_pending": 0, "queue_depth": {},
                   "loop_lag_ms": 0.1, "sensors": {}},
        "vitals": {"track_id": "t1", "heart_rate_bpm": 70.0},
        "task_event": {"task_id": "T1", "cmd_id": "c1", "state": "accepted"},
    }
    return {"schema": 1, "kind": kind, "unit_id": unit, "boot_id": boot, "seq": seq, "t_utc": t_utc or iso(T0),
            "t_mono_s": 1.0, "clock_valid": True, "body": {**bodies[kind], **body}}


def enc(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()  # json.dumps spells float('inf') as Infinity, as a hostile sender may


def deep(levels: int) -> Any:
    v: Any = 1
    for _ in range(levels):
        v = [v]
    return v


def deep_json(levels: int) -> bytes:
    """An envelope whose body holds a list nested ``levels`` deep (json.dumps cannot write 1000 levels)."""
    head = enc(envelope(detector_model="NaI")).decode()
    return head.replace('"detector_model": "NaI"', '"detector_model": ' + "[" * levels + "1" + "]" * levels).encode()


MEAS = ws.uplink_topic("mob-1", "measurement")
#: (label, topic, payload, reason code): rows 10 and 11 of issue 14, each with its own code.
HOSTILE: list[tuple[str, str, bytes, str]] = [
    ("position +1e308", MEAS, enc(envelope(position={**POS, "x_m": 1e308})), "out_of_range"),
    ("position -Infinity", MEAS, enc(envelope(position={**POS, "y_m": float("-inf")})), "non_finite"),
    ("position NaN", MEAS, enc(envelope(position={**POS, "z_m": float("nan")})), "non_finite"),
    ("count 1e400 (inf)", MEAS, enc(envelope()).replace(b'"gross_cps": 1020.4', b'"gross_cps": 1e400'),
     "non_finite"),
    ("t_utc garbage", MEAS, enc(envelope(t_utc="garbage")), "bad_time"),
    ("t_utc year 9999", MEAS, enc(envelope(t_utc="9999-12-31T23:59:59.000Z")), "bad_time"),
    ("t_utc not UTC", MEAS, enc(envelope(t_utc="2026-11-27T08:00:00+02:00")), "bad_time"),
    ("negative counts", MEAS, enc(envelope(gross_counts=-5)), "negative_count"),
    ("negative spectrum", MEAS, enc(envelope(spectrum=[1, 2, -3])), "negative_count"),
    ("200k channels", MEAS, enc(envelope(spectrum=[1] * 200_000)), "too_long"),
    ("seq 2^63-1", MEAS, enc(envelope(seq=2**63 - 1)), "seq_range"),
    ("seq 2^63", MEAS, enc(envelope(seq=2**63)), "seq_range"),
    ("seq 2^64", MEAS, enc(envelope(seq=2**64)), "seq_range"),
    ("unit '..'", ws.uplink_topic("..", "measurement"), enc(envelope(unit="..")), "bad_unit_id"),
    ("unit '-x' in topic only", ws.uplink_topic("-x", "measurement"), enc(envelope()), "bad_unit_id"),
    ("JSON 1000 deep", MEAS, deep_json(1000), "too_deep"),
    ("JSON 100000 deep", MEAS, deep_json(100_000), "too_deep"),
    ("detector model of 100 kB", MEAS, enc(envelope(detector_model="x" * 100_000)), "too_long"),
    ("2 MB payload", MEAS, enc(envelope(detector_model="x" * 2_000_000)), "oversized"),
    ("int of 5000 digits", MEAS, enc(envelope()).replace(b'"gross_counts": 1000', b'"gross_counts": ' + b"9" * 5000),
     "not_json"),
]


@pytest.fixture()
def ingest(tmp_path: Path) -> Ingestor:
    store = Store(tmp_path / "c.sqlite", synchronous="NORMAL")
    yield Ingestor(store, clock=FakeClock(), check_task_events=False, sequence=SequenceConfig(require_birth=False))
    store.close()


# --------------------------------------------------------------------------- rows 10-11, in-process
def test_every_hostile_payload_has_its_own_reason_and_no_traceback(ingest: Ingestor,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        for label, topic, payload, code in HOSTILE:
            assert ingest.handle(topic, payload) == "rejected", label
            last = ingest.store.list_rejects(limit=1)[-1]
            assert last["reason_code"] == code, (label, last["reason"])
            assert last["reason"], label
    assert not any(r.exc_info for r in caplog.records), "a hostile payload produced a traceback"
    assert "internal_error" not in ingest.stats.rejects and not ingest.stats.errors
    assert ingest.store.count("received") == 0 and ingest.store.count("units") == 0
    # the receiver goes on, and `controller stats` has nothing absurd to report
    assert ingest.handle(MEAS, enc(envelope(seq=1))) == "stored"
    boots = ingest.store.counts()["boots"]
    assert [(b["max_seq"], b["missing"]) for b in boots] == [(1, 0)]


def test_clock_valid_false_skips_the_time_range_not_the_syntax(ingest: Ingestor) -> None:
    early = {**envelope(seq=1, t_utc="1970-01-01T00:00:10.000Z"), "clock_valid": False}
    assert ingest.handle(MEAS, enc(early)) == "stored"
    garbage = {**envelope(seq=2, t_utc="garbage"), "clock_valid": False}
    assert ingest.handle(MEAS, enc(garbage)) == "rejected"
    assert ingest.store.list_rejects(limit=1)[-1]["reason_code"] == "bad_time"


def test_internal_errors_log_one_traceback_per_interval(ingest: Ingestor, caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a: object, **k: object) -> None:
        raise RecursionError("a bug deep in storage")

    monkeypatch.setattr(ingest.store, "store_uplink", broken)
    with caplog.at_level(logging.WARNING, logger="controller.ingest"):
        for i in range(100):
            assert ingest.handle(MEAS, enc(envelope(seq=i + 1))) == "rejected"
        ingest.clock.t += 11.0
        ingest.handle(MEAS, enc(envelope(seq=200)))
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 2, [r.getMessage() for r in tracebacks]
    assert "+99 similar suppressed" in tracebacks[1].getMessage()
    assert ingest.stats.rejects["internal_error"] == 101


def test_reject_table_keeps_a_budget_and_counts_what_it_dropped(tmp_path: Path) -> None:
    clock = FakeClock()
    budget = RejectBudget(max_rows=50, max_age_s=3600.0, excerpt_bytes=64, prune_every=10)
    with Store(tmp_path / "c.sqlite", synchronous="NORMAL", reject_budget=budget) as store:
        ing = Ingestor(store, clock=clock, check_task_events=False, sequence=SequenceConfig(require_birth=False))
        for _ in range(300):
            ing.handle(MEAS, b"garbage " * 1000)  # 8 kB each
            clock.t += 1.0
        assert store.count("rejects") <= budget.max_rows + budget.prune_every
        rows = store.list_rejects(limit=1000)
        assert all(len(r["payload_excerpt"]) <= 64 and r["payload_bytes"] == 8000 for r in rows)
        assert store.reject_counts() == {"not_json": 300}  # kept + dropped: nothing silently lost
        clock.t += 7200.0  # everything is now older than max_age_s
        for _ in range(10):
            ing.handle(MEAS, b"[]")
        assert store.count("rejects") <= 10 and store.reject_counts() == {"not_json": 300, "not_object": 10}


# --------------------------------------------------------------------------- rows 9-13, real processes
def _controller(tmp_path: Path, broker: Mosquitto, db: Path, **extra: Any) -> tuple[subprocess.Popen, Path]:
    # the ingest path under test, without the operator console (a web server thread and its libraries
    # add ~100 MB of their own to the process; issue 18)
    cfg = {"schema": 1, "db_path": str(db), "dispatch": {"enabled": False}, "web": {"enabled": False},
           "broker": {"host": broker.host, "port": broker.port, "reconnect_max_s": 1.0}, **extra}
    path = tmp_path / "controller.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log_path = tmp_path / "controller.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "cedge", "controller", "run", "--config", str(path)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and "subscribing" not in log_path.read_text(errors="replace"):
        assert proc.poll() is None, log_path.read_text(errors="replace")
        time.sleep(0.2)
    return proc, log_path


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log.close()  # type: ignore[attr-defined]


def _publisher(broker: Mosquitto) -> mqtt.Client:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="hostile", protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def _peak_rss_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of a running process, from /proc."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]


def _wait_rejects(db: Path, n: int, timeout_s: float = 120.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            with Store(db, create=False) as store:
                counts = store.reject_counts()
        except Exception:  # noqa: BLE001 - the controller may still be creating it
            counts = {}
        if sum(counts.values()) >= n:
            return counts
        time.sleep(0.3)
    raise AssertionError(f"only {counts} rejects after {timeout_s} s")


@pytest.mark.timeout(300)
def test_real_controller_rejects_rows_10_11_specifically_without_traceback(tmp_path: Path,
                                                                           mosquitto: Mosquitto) -> None:
    db = tmp_path / "controller.sqlite"
    proc, log_path = _controller(tmp_path, mosquitto, db)
    pub = _publisher(mosquitto)
    try:
        now = iso(datetime.now(UTC))
        for _label, topic, payload, _code in HOSTILE:
            payload = payload.replace(iso(T0).encode(), now.encode())  # the real controller's clock is the system's
            pub.publish(topic, payload, qos=1).wait_for_publish(30)
        counts = _wait_rejects(db, len(HOSTILE))
        expected: dict[str, int] = {}
        for *_, code in HOSTILE:
            expected[code] = expected.get(code, 0) + 1
        assert counts == expected
        # still receiving: a birth and a measurement of the same boot are stored
        pub.publish(ws.uplink_topic("mob-1", "birth"), enc(envelope("birth", seq=0, t_utc=now)), qos=1)
        pub.publish(MEAS, enc(envelope(seq=1, t_utc=now)), qos=1).wait_for_publish(30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with Store(db, create=False) as store:
                if store.count("received") == 1:
                    break
            time.sleep(0.3)
        stats = subprocess.run([sys.executable, "-m", "cedge", "controller", "stats", "--db", str(db), "--json"],
                               capture_output=True, text=True, timeout=120)
        assert stats.returncode == 0, stats.stderr
        boots = json.loads(stats.stdout)["boots"]
        assert [(b["unit_id"], b["max_seq"], b["missing"]) for b in boots] == [("mob-1", 1, 0)]
        assert proc.poll() is None
    finally:
        pub.loop_stop()
        pub.disconnect()
        _stop(proc)
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text and "internal_error" not in text
    assert len(re.findall(r"rejected cedge/", text)) <= len(expected)  # one line per reason and interval


@pytest.mark.timeout(300)
def test_real_controller_bounds_a_flood_of_10_mb_messages_without_a_broker_limit(tmp_path: Path,
                                                                                 mosquitto: Mosquitto) -> None:
    """Row 13's mechanism on a real process: the broker has no message_size_limit, the controller
    keeps only an excerpt of each oversized message (the full 100 x 10 MB run: ``cedge bench flood``)."""
    db = tmp_path / "controller.sqlite"
    proc, log_path = _controller(tmp_path, mosquitto, db)
    pub = _publisher(mosquitto)
    n, size = 12, 10 * 1024 * 1024
    try:
        for i in range(n):
            payload = b'{"schema": 1, "pad": "' + bytes([97 + i % 26]) * size + b'"}'
            pub.publish(MEAS, payload, qos=1).wait_for_publish(60)
        counts = _wait_rejects(db, n)
        peak_mb = _peak_rss_mb(proc.pid)
        with Store(db, create=False) as store:
            rows = store.list_rejects(limit=n)
        assert proc.poll() is None
    finally:
        pub.loop_stop()
        pub.disconnect()
        _stop(proc)
    assert counts == {"oversized": n}
    assert all(r["payload_bytes"] > size and len(r["payload_excerpt"]) <= 1024 for r in rows)
    assert peak_mb < 300, f"controller peak RSS {peak_mb:.0f} MB"
    assert "Traceback" not in log_path.read_text(errors="replace")


# --------------------------------------------------------------------------- row 9 and row 14: files
BOMB_2012 = (f'<?xml version="1.0"?><RadInstrumentData xmlns="{N42_NS}"><EnergyCalibration id="ec">'
             "<CoefficientValues>0 3</CoefficientValues></EnergyCalibration><RadMeasurement id=\"m\">"
             "<MeasurementClassCode>Foreground</MeasurementClassCode><RealTimeDuration>PT1S</RealTimeDuration>"
             '<Spectrum id="s" energyCalibrationReference="ec"><LiveTimeDuration>PT1S</LiveTimeDuration>'
             '<ChannelData compressionCode="CountedZeroes">0 100000000</ChannelData></Spectrum></RadMeasurement>'
             "</RadInstrumentData>").encode()
PEAK_RSS_WRAPPER = """
import resource, sys
from cedge.cli import app
try:
    app(["spectrum", "analyze", sys.argv[1]])
except SystemExit as e:
    code = e.code
print(f"PEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
sys.exit(code)
"""


def test_row9_counted_zeroes_bomb_through_the_cli_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.n42"
    path.write_bytes(BOMB_2012)
    assert len(BOMB_2012) < 1800  # the 1.7 kB of row 9
    run = subprocess.run([sys.executable, "-c", PEAK_RSS_WRAPPER, str(path)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr and "MemoryError" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bomb.n42" in errors[0] and "channels" in errors[0], run.stderr
    # The bomb itself must cost nothing: what the reader allocates for it, measured in-process. (The CLI
    # process's peak RSS also holds its imports and, on a fresh clone, numba compiling its kernels: 134 MB
    # warm, up to 850 MB in a full fresh-clone run; that is not the file's doing.)
    import tracemalloc

    from agent.spectral_files import SpectrumFileError, read_spectrum_file
    with pytest.raises(SpectrumFileError):  # once untraced: the readers' lazy imports are not the file's cost
        read_spectrum_file(path)
    tracemalloc.start()
    try:
        with pytest.raises(SpectrumFileError, match="channels"):
            read_spectrum_file(path)
        _, peak_b = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # ~67 MB here, all of it lxml's parser set-up (the same for any N42 file), none for the claimed channels
    assert peak_b < 150e6, f"reading the bomb allocated {peak_b / 1e6:.0f} MB (row 9 took 6.4 GB)"


def _n42(manufacturer: str, doctype: str = "", extra_ns: str = "") -> bytes:
    return (f'<?xml version="1.0"?>{doctype}<RadInstrumentData xmlns="{N42_NS}"{extra_ns}>'
            f"<RadInstrumentInformation id=\"i\"><RadInstrumentManufacturerName>{manufacturer}"
            "</RadInstrumentManufacturerName><RadInstrumentModelName>m</RadInstrumentModelName>"
            "</RadInstrumentInformation><EnergyCalibration id=\"ec\"><CoefficientValues>0 3</CoefficientValues>"
            "</EnergyCalibration><RadMeasurement id=\"m\"><MeasurementClassCode>Foreground</MeasurementClassCode>"
            "<RealTimeDuration>PT1S</RealTimeDuration><Spectrum id=\"s\" energyCalibrationReference=\"ec\">"
            "<LiveTimeDuration>PT1S</LiveTimeDuration><ChannelData>1 2 3 4</ChannelData></Spectrum>"
            "</RadMeasurement></RadInstrumentData>").encode()


def test_row14_xml_attacks_stay_harmless(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-MARKER-7431")
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    cases = {
        "xxe.n42": _n42("&xxe;", f'<!DOCTYPE RadInstrumentData [<!ENTITY xxe SYSTEM "file://{secret}">]>'),
        "laughs.n42": _n42("&l9;", f'<!DOCTYPE RadInstrumentData [<!ENTITY l0 "lol">{laughs}]>'),
        "xinclude.n42": _n42(f'<xi:include href="file://{secret}" parse="text"/>',
                             extra_ns=' xmlns:xi="http://www.w3.org/2001/XInclude"'),
        "deep.n42": _n42("<a>" * 100_000 + "x" + "</a>" * 100_000),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        t0 = time.process_time()
        try:
            doc = read_spectrum_file(path)
        except SpectrumFileError as err:
            assert name in str(err) and "SECRET" not in str(err)
        else:
            assert "SECRET" not in repr(doc) and "lol" * 100 not in repr(doc), name
        assert time.process_time() - t0 < 10.0, name  # an expanded bomb would take far longer


# --------------------------------------------------------------------------- row 12: the terminal
HOSTILE_ID = "[/oops] [bold]x"  # Rich markup; valid on the wire (ids are free text without control characters)
ESCAPE_ID = "[/oops]\x1b[2J"  # a control sequence: refused on the wire, escaped if a row holds one anyway


def _hostile_store(tmp_path: Path) -> Path:
    db = tmp_path / "c.sqlite"
    with Store(db, synchronous="NORMAL") as store:
        ing = Ingestor(store, clock=FakeClock(), check_task_events=False, sequence=SequenceConfig(require_birth=False))
        ok = [ing.handle(ws.uplink_topic("mob-1", "health"), enc(envelope("health", seq=1, task_id=HOSTILE_ID))),
              ing.handle(ws.uplink_topic("cam-1", "vitals"), enc(envelope("vitals", seq=1, unit="cam-1",
                                                                               track_id=HOSTILE_ID))),
              ing.handle(ws.uplink_topic("hh-1", "task_event"), enc(envelope("task_event", seq=1, unit="hh-1",
                                                                                  task_id=HOSTILE_ID)))]
        assert ok == ["stored"] * 3
        assert ing.handle(ws.uplink_topic("cam-1", "vitals"),
                          enc(envelope("vitals", seq=2, unit="cam-1", track_id=ESCAPE_ID))) == "rejected"
        store.save_task({"task_id": ESCAPE_ID, "state": "dispatched", "unit_id": "hh-1", "attempts": 1})
    return db


def test_row12_console_prints_hostile_ids_literally(tmp_path: Path) -> None:
    from controller.console import render

    db = _hostile_store(tmp_path)
    out = Console(record=True, width=300, color_system=None)
    with Store(db, create=False) as store:
        out.print(render(store))
    text = out.export_text()
    # the vitals table shows the whole track id, the tasks table the first 10 characters of the task id
    assert "[/oops] [bold]x" in text and "[/oops]\\x1b[2" in text and "\x1b" not in text


@pytest.mark.parametrize("command, shown", [("units", "[/oops] [b"), ("vitals", "[/oops] [bold]x"),
                                            ("tasks", "[/oops]\\x1b[2")])
def test_row12_cli_listings_print_hostile_ids_literally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        command: str, shown: str) -> None:
    """Ids print as sent (task ids cut to 10 characters), whatever the terminal: the table goes to
    a console of fixed width so the test does not depend on the one it runs in."""
    from controller import cli

    db = _hostile_store(tmp_path)
    out = Console(record=True, width=300, color_system=None, file=open(os.devnull, "w"))  # noqa: SIM115
    monkeypatch.setattr(cli, "_out", out)
    res = CliRunner().invoke(cli.app, [command, "--db", str(db)])
    assert res.exit_code == 0, res.output
    text = out.export_text()
    assert shown in text and "\x1b" not in text, text
