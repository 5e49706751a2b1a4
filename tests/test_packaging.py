"""The built wheel, installed by role into a clean venv, run as a technician runs it (issue 15).

The wheel is built from a copy of the source tree (the checkout gets no build/ or egg-info) and
installed as ``customs-edge[gamma]`` -- what a mobile or handheld unit gets -- into a fresh venv
made by ``$CEDGE_PACKAGING_PYTHON`` (default: this interpreter; .ci/run repeats the file with
Python 3.12 and 3.13).  Every command then runs the venv's own ``cedge`` from a directory outside
the checkout, with no PYTHONPATH, so nothing of the source tree can stand in for what the wheel
lacks.  The mobile unit runs on the simulator against a real Mosquitto that starts only after the
agent, so the same run shows the unreachable-broker WARNING, the outbox backfill once the broker
is up, and the systemd READY/WATCHDOG notifications the unit file relies on.

pip resolves the dependencies from the configured indexes (PyPI, or a local mirror): the install
is most of this file's time (~1.5 min for Python 3.11 here), hence one venv for all the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from broker_fixture import Mosquitto, find_mosquitto, free_port

from agent import __version__

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "controller", "drivers", "hal_sim", "cedge")
DATA_SUFFIXES = (".yaml", ".csv", ".json", ".xml", ".tflite")  # pyproject [tool.setuptools.package-data]
# what a gamma unit must have, and what it must not carry (issue 15: 883 MB for every role)
GAMMA_MODULES = ("numpy", "scipy", "numba", "serial", "usb", "pynmea2", "lxml", "paho", "pydantic", "cryptography")
NOT_FOR_GAMMA = ("cv2", "matplotlib", "skimage", "ai_edge_litert", "uvicorn", "psycopg", "SpecUtils", "becquerel")

pytestmark = [pytest.mark.slow, pytest.mark.packaging, pytest.mark.timeout(900)]


@dataclass
class Installed:
    wheel: Path
    venv: Path
    cwd: Path  # outside the checkout
    env: dict[str, str]

    @property
    def cedge(self) -> str:
        return str(self.venv / "bin" / "cedge")

    def run(self, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.cedge, *args], capture_output=True, text=True, cwd=self.cwd, env=self.env,
                              timeout=timeout_s)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "NOTIFY_SOCKET", "WATCHDOG_USEC",
                        "WATCHDOG_PID", "JOURNAL_STREAM", "CEDGE_STATE_DIR")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep the venv as pip left it (its size is measured)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    python = os.environ.get("CEDGE_PACKAGING_PYTHON") or sys.executable
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", "venv", ".git", "tests", "docs", "build", "dist", "*.egg-info", "__pycache__", "out",
        ".ruff_cache", ".pytest_cache", "*.sqlite*"))
    wheels = base / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("customs_edge-*.whl")
    venv = base / "venv"
    made = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          f"{wheel}[gamma]"], capture_output=True, text=True, timeout=900, env=_clean_env())
    assert pip.returncode == 0, pip.stderr[-3000:]
    cwd = base / "elsewhere"
    cwd.mkdir()
    yield Installed(wheel, venv, cwd, _clean_env())


def _venv_python(inst: Installed, code: str) -> str:
    res = subprocess.run([str(inst.venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         cwd=inst.cwd, env=inst.env, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _size_mb(path: Path) -> float:
    """Disk use like ``du -s`` (allocated blocks, hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total / 2**20


def test_wheel_ships_the_package_data(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    data = sorted(p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*")
                  if p.suffix in DATA_SUFFIXES and "__pycache__" not in p.parts)
    assert "agent/spectral/data/library.csv" in data and "hal_sim/scenarios/demo_yard.yaml" in data
    assert [d for d in data if d not in names] == []
    # the code ran from the venv, not from the checkout
    where = _venv_python(installed, "import agent, hal_sim; print(agent.__file__); print(hal_sim.__file__)")
    assert all(Path(line).is_relative_to(installed.venv) for line in where.split()), where


def test_gamma_install_carries_no_camera_plot_or_controller_packages(
        installed: Installed, record_property: pytest.RecordProperty) -> None:
    modules = GAMMA_MODULES + NOT_FOR_GAMMA
    found = json.loads(_venv_python(installed, (
        "import importlib.util, json; "
        f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {modules!r}}}))")))
    assert [m for m in GAMMA_MODULES if not found[m]] == []
    assert [m for m in NOT_FOR_GAMMA if found[m]] == []
    size_mb = _size_mb(installed.venv)
    record_property("gamma_venv_mb", round(size_mb, 1))
    print(f"customs-edge[gamma] venv: {size_mb:.0f} MB ({sys.version.split()[0]} test runner, "
          f"{os.environ.get('CEDGE_PACKAGING_PYTHON') or sys.executable})")


def test_version(installed: Installed) -> None:
    res = installed.run("--version")
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(rf"customs-edge {re.escape(__version__)} \(Python 3\.1[1-3]\.\d+; extras: gamma\)\n",
                        res.stdout), res.stdout


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_check_config_on_each_shipped_profile(installed: Installed) -> None:
    profiles = sorted((ROOT / "configs" / "units").glob("*.yaml"))
    assert len(profiles) >= 3
    for path in profiles:
        unit_type = yaml.safe_load(path.read_text())["unit_type"]
        res = installed.run("agent", "check-config", str(path), timeout_s=120)
        if unit_type in ("mobile", "handheld"):
            assert res.returncode == 0, (path, res.stderr)
            assert json.loads(res.stdout)["unit_type"] == unit_type
        else:  # a camera box needs the camera extra, which a gamma install lacks: say so, in one line
            assert (res.returncode, res.stdout) == (4, ""), (path, res)
            assert "pip install 'customs-edge[camera]'" in _one_error_line(res.stderr)
    bad = installed.cwd / "bad.yaml"
    bad.write_text("schema: 1\nunit_id: mob-1\nunit_type: submarine\n")
    res = installed.run("agent", "check-config", str(bad))
    assert (res.returncode, res.stdout) == (2, "") and "unit_type" in res.stderr and "Traceback" not in res.stderr
    res = installed.run("agent", "run", "--profile", str(bad))
    assert (res.returncode, res.stdout) == (2, "") and str(bad) in res.stderr


def test_commands_of_other_roles_name_their_extra(installed: Installed) -> None:
    for args, extra in ((("camera", "analyze", "clip.avi", "--json"), "camera"),
                        (("controller", "run"), "controller")):
        res = installed.run(*args)
        assert (res.returncode, res.stdout) == (4, ""), (args, res)
        assert f"pip install 'customs-edge[{extra}]'" in _one_error_line(res.stderr)
    res = installed.run("demo", "--json")  # the whole fleet: needs more than a gamma unit has
    assert (res.returncode, res.stdout) == (4, ""), res
    assert "pip install 'customs-edge[" in _one_error_line(res.stderr)
    assert installed.run("--help").returncode == 0


class _Collector:
    """Counts the unit's uplink messages by kind on the broker."""

    def __init__(self, broker: Mosquitto, unit_id: str) -> None:
        self.kinds: dict[str, int] = {}
        self.backfill = 0
        self._lock = threading.Lock()
        self.client = broker.client(None, client_id="packaging-test-collector")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"cedge/v1/up/{unit_id}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]  # type: ignore[attr-defined]
        body = json.loads(msg.payload)  # type: ignore[attr-defined]
        with self._lock:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            self.backfill += body.get("delivery") == "backfill"

    def count(self, kind: str) -> int:
        with self._lock:
            return self.kinds.get(kind, 0)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _wait(what: str, cond, deadline_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:  # noqa: ANN001
    end = time.monotonic() + deadline_s
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"agent exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > end:
            pytest.fail(f"no {what} within {deadline_s:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@pytest.mark.broker
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto binary not installed")
def test_mobile_unit_runs_on_the_simulator_from_the_gamma_install(installed: Installed) -> None:
    work = installed.cwd / "mobile"
    work.mkdir()
    port = free_port()
    profile = work / "mob-1.yaml"
    sim = {"scenario": "demo_yard"}  # the scenario shipped inside the wheel
    profile.write_text(yaml.safe_dump({
        "schema": 1, "unit_id": "mob-1", "unit_type": "mobile", "profile": "sim-mobile",
        "site": {"name": "demo-yard", "origin_lat_deg": 51.95, "origin_lon_deg": 4.05, "origin_alt_m": 5.0},
        "clock": {"driver": "sim", "params": {"start_utc": "2026-11-27T08:00:00Z", "rate": 10.0}},
        "devices": {"gamma": {"driver": "sim", "params": sim}, "gnss": {"driver": "sim", "params": sim}},
        "broker": {"host": "127.0.0.1", "port": port, "keepalive_s": 10, "reconnect_max_s": 2.0},
        "outbox": {"path": "outbox.sqlite", "live_window_s": 50.0},
        "acquisition": {"detector_height_m": 1.5},
        "watchdog": {"timeout_s": 60.0},
    }, sort_keys=False))
    notify_path = work / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.1)
    notes: list[str] = []
    env = {**installed.env, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "20000000"}
    log = work / "agent.log"
    broker = Mosquitto(work / "broker", port=port)
    collector: _Collector | None = None

    def note(wanted: str) -> bool:
        with contextlib.suppress(TimeoutError):
            notes.append(notify.recv(4096).decode())
        return wanted in notes

    with log.open("wb") as err:
        proc = subprocess.Popen([installed.cedge, "agent", "run", "--profile", str(profile), "--state-dir",
                                 str(work / "state")], stdout=err, stderr=subprocess.STDOUT, cwd=installed.cwd,
                                env=env)
    try:
        # READY=1 comes after the numba kernels are compiled (a cold cache in a fresh venv)
        _wait("READY=1 from the agent", lambda: note("READY=1"), 400, proc, log)
        _wait("WARNING about the unreachable broker",
              lambda: re.search(rf"WARNING .*broker 127\.0\.0\.1:{port} unreachable", log.read_text()) is not None,
              120, proc, log)
        broker.start()
        collector = _Collector(broker, "mob-1")
        _wait("birth, 30 measurements and some backfill on the broker",
              lambda: collector.count("birth") >= 1 and collector.count("measurement") >= 30
              and collector.backfill > 0, 180, proc, log)
        _wait("WATCHDOG=1", lambda: note("WATCHDOG=1"), 60, proc, log)
        assert "broker reachable again" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        if collector is not None:
            collector.close()
        broker.stop()
        notify.close()
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
