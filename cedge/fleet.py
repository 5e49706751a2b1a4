"""A simulated fleet on one machine: broker, controller and agent processes for a scenario.

Why real processes: the point of the demo and of the end-to-end tests is that the program under
test is the program that ships — `cedge agent run` and `cedge controller run` talking through a
real Mosquitto — with only the devices and the clock simulated (chosen by the generated YAML).
The tests use the same class to SIGKILL an agent, stop the broker or restart the controller.

Secure like a site: the fleet runs on a `cedge site` directory (by default ``<work>/site``, made on
first use with the scenario's units enrolled): the broker is the site's TLS config with its ACL and
CRL, every process connects with its own client certificate (unit id or ``cedge-controller`` as
identity), units pin the controller's command key and the controller signs with it and accepts
only enrolled units.  An external broker (``broker_host``) must be that site's broker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cedge.broker import EmbeddedBroker, free_port
from cedge.site.layout import COMMAND_KEYS, SiteLayout
from cedge.site.profiles import tls_fields
from cedge.site.registry import DEFAULT_CONTROLLER, load_registry

if TYPE_CHECKING:
    from hal_sim.scenario import Scenario

log = logging.getLogger(__name__)

def _sim_clock(scenario: Scenario, wall_start_s: float, rate: float) -> dict[str, Any]:
    return {"driver": "sim", "params": {"start_utc": scenario.time.start_utc, "rate": rate,
                                        "wall_start_s": wall_start_s}}


def unit_profile(scenario: Scenario, scenario_path: Path, unit: Any, broker_host: str, broker_port: int,
                 clock: dict[str, Any], site_dir: Path | None = None) -> dict[str, Any]:
    """The YAML profile a simulated unit runs with: the same schema as a real unit's profile.

    With ``site_dir`` the unit connects with its site certificate and pins the site's command keys.
    """
    sim = {"scenario": str(scenario_path)}
    utype = unit.type
    if utype == "camerabox":
        fps = getattr(unit, "fps", 10)
        res = list(getattr(unit, "resolution", [320, 240]))
        # The camera box looks at a checkpoint queue, not at the yard: its own face scenario.
        devices = {"camera": {"driver": "sim", "params": {"scenario": "checkpoint", "fps": fps, "resolution": res}}}
    else:
        devices = {"gamma": {"driver": "sim", "params": dict(sim)}, "gnss": {"driver": "sim", "params": dict(sim)}}
        if utype == "handheld":
            devices["display"] = {"driver": "sim", "params": dict(sim)}
    site = scenario.site
    prof: dict[str, Any] = {
        "schema": 1,
        "unit_id": unit.unit_id,
        "unit_type": utype,
        "profile": f"sim-{utype}",
        "site": site.model_dump(),
        "clock": clock,
        "devices": devices,
        "broker": {"host": broker_host, "port": broker_port, "keepalive_s": 10, "reconnect_max_s": 2.0,
                   **_site_tls(site_dir, unit.unit_id, controller=False)},
        "outbox": {"path": "outbox.sqlite", "live_window_s": 5.0 * clock["params"]["rate"]},
        "health": {"interval_s": 10.0},
        "acquisition": {"detector_height_m": unit.detector_height_m} if utype != "camerabox" else {},
        "watchdog": {"timeout_s": 30.0},
        "log_level": "INFO",
    }
    if site_dir is not None:
        prof["command_auth"] = {"keys_dir": str(SiteLayout.at(site_dir).unit_dir(unit.unit_id) / COMMAND_KEYS)}
    if utype == "camerabox":
        prof["camera"] = {"fps": float(getattr(unit, "fps", 10)), "vitals_interval_s": 5.0}
    if utype == "handheld":
        prof["handheld"] = {"dwell_s": 60.0, "confirm_sigma": 5.0, "background_dwell_s": 30.0}
    return prof


def _site_tls(site_dir: Path | None, identity: str, controller: bool) -> dict[str, Any]:
    """``broker:`` keys of ``identity``'s certificate in the site (none without a site)."""
    if site_dir is None:
        return {}
    layout = SiteLayout.at(site_dir)
    return tls_fields(identity, layout.identity_dir(identity, controller))


def _site_controller_keys(site_dir: Path | None) -> dict[str, Any]:
    """The controller's command-signing key and enrolment list from the site (none without a site)."""
    if site_dir is None:
        return {}
    layout = SiteLayout.at(site_dir)
    reg = load_registry(layout.registry)
    return {"command_signing_key": str(layout.signing_key), "command_key_id": reg.command_key_ids[-1],
            "enrolled_units_file": str(layout.registry)}


def localizer_site(scenario: Scenario) -> dict[str, Any]:
    """The yard's site description for the controller's localizer (controller/localization/site.py):
    the container rows and stacks of the scenario, as a site survey gives them - geometry only, no
    cargo densities (the localizer fits those)."""
    c = scenario.yard.container
    return {
        "schema": 1, "name": scenario.name,
        "origin": {"lat_deg": scenario.site.origin_lat_deg, "lon_deg": scenario.site.origin_lon_deg,
                   "alt_m": scenario.site.origin_alt_m},
        "container": {"length_m": c.length_m, "width_m": c.width_m, "height_m": c.height_m,
                      "wall_m": c.wall_steel_mm / 1000.0},
        "rows": [{"id": r.id, "x0_m": r.x0_m, "y0_m": r.y0_m, "n_bays": r.n_containers, "gap_m": r.gap_m,
                  "stack": r.stack} for r in scenario.yard.rows],
    }


def controller_config(scenario: Scenario, broker_host: str, broker_port: int, db_path: Path,
                      clock: dict[str, Any], client_id: str = DEFAULT_CONTROLLER,
                      site_dir: Path | None = None, localization_site_file: Path | None = None) -> dict[str, Any]:
    site = scenario.site
    loc = {"localization": {"site_file": str(localization_site_file)}} if localization_site_file else {}
    return {
        "schema": 1,
        "site": site.model_dump(),
        "broker": {"host": broker_host, "port": broker_port, "keepalive_s": 10, "client_id": client_id,
                   "reconnect_max_s": 2.0, **_site_tls(site_dir, client_id, controller=True)},
        **_site_controller_keys(site_dir),
        "db_path": str(db_path),
        "clock": clock,
        # alarms within 20 m are one incident: the yard's lanes are 12 m apart, so a source is seen
        # from the two lanes beside it, while a NORM patch two rows away stays a separate incident
        "dispatch": {"hold_for_fusion_s": 60.0, "dwell_s": 60.0, "radius_m": 5.0, "group_radius_m": 20.0},
        "status_interval_s": 60.0,
        **loc,
    }


class Fleet:
    """Starts and stops the processes of one simulated scenario run."""

    def __init__(self, scenario_path: str | Path, work_dir: str | Path, rate: float | None = None,
                 broker_host: str | None = None, broker_port: int | None = None,
                 units: list[str] | None = None, start_delay_s: float = 10.0,
                 site_dir: str | Path | None = None, localization_site: bool = False) -> None:
        """``localization_site``: give the controller's localizer the yard's rows and stacks
        (:func:`localizer_site`), so sources are searched inside cargo, up to the highest stack."""
        from hal_sim.scenario import load_scenario

        self.scenario_path = Path(scenario_path).resolve()
        self.scenario = load_scenario(self.scenario_path)
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.rate = float(rate or self.scenario.time.rate)
        self.broker: EmbeddedBroker | None = None
        self._broker_addr = (broker_host, broker_port) if broker_host else None
        # simulated time starts once broker, controller and agents are up (imports take seconds),
        # so no unit misses the start of its route
        self.wall_start_s = time.time() + start_delay_s
        self.clock = _sim_clock(self.scenario, self.wall_start_s, self.rate)
        self.units = [u for u in self.scenario.units if units is None or u.unit_id in units]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.db_path = self.work_dir / "controller.sqlite"
        if self._broker_addr is not None and site_dir is None:
            raise ValueError("an external broker needs the site it belongs to (site_dir / --site): the fleet "
                             "connects with that site's certificates")
        self.site_dir = Path(site_dir).resolve() if site_dir is not None else self.work_dir / "site"
        self._own_site = site_dir is None
        self.localization_site_file: Path | None = None
        if localization_site and self.scenario.yard.rows:
            self.localization_site_file = self._write_yaml("localizer_site.yaml", localizer_site(self.scenario))

    # --------------------------------------------------------------- addresses and files
    @property
    def broker_host(self) -> str:
        return self._broker_addr[0] if self._broker_addr else self.broker.host  # type: ignore[union-attr]

    @property
    def broker_port(self) -> int:
        return int(self._broker_addr[1]) if self._broker_addr else self.broker.port  # type: ignore[union-attr]

    def state_dir(self, unit_id: str) -> Path:
        return self.work_dir / "units" / unit_id

    def sim_seconds(self) -> float:
        return (time.time() - self.wall_start_s) * self.rate

    def _write_yaml(self, name: str, data: dict[str, Any]) -> Path:
        path = self.work_dir / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log_path = self.work_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "cedge", *args], stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    # --------------------------------------------------------------- site and identities
    def ensure_site(self) -> Path:
        """The fleet's site directory with every unit of the run enrolled.

        A fleet's own site (``<work>/site``) is made on first use and missing units are enrolled
        into it; a given site must already have them (it belongs to a broker we do not control).
        """
        from cedge.site.manage import enroll, init_site, open_registry

        ids = [u.unit_id for u in self.units]
        if self._own_site and not (self.site_dir / "enrolled.yaml").exists():
            init_site(self.site_dir, ids, site_name=self.scenario.site.name, broker_host="127.0.0.1",
                      broker_port=free_port())
            return self.site_dir
        missing = [u for u in ids if u not in open_registry(self.site_dir).units]
        if missing and not self._own_site:
            raise RuntimeError(f"units {missing} are not enrolled in site {self.site_dir}: "
                               f"cedge site enroll {self.site_dir} <unit> (and reload its broker)")
        for u in missing:
            enroll(self.site_dir, u)
        if missing and self.broker is not None:
            self.broker.reload()
        return self.site_dir

    def enroll(self, identity: str) -> Path:
        """Enroll a further unit identity in the fleet's site and reload the broker (tests)."""
        from cedge.site.manage import enroll

        d = enroll(self.ensure_site(), identity)
        if self.broker is not None:
            self.broker.reload()
        return d

    def mqtt_client(self, identity: str, protocol: int = 5) -> Any:
        """A paho client (not connected) with ``identity``'s site certificate, for tests and tools.

        The broker makes the identity its client id: a second client of the same identity takes
        over the first one's session, so use an identity no running process uses.
        """
        import ssl

        import paho.mqtt.client as mqtt

        layout = SiteLayout.at(self.ensure_site())
        d = layout.identity_dir(identity, identity in load_registry(layout.registry).controllers)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=identity,
                             protocol=mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311)
        client.tls_set(ca_certs=str(d / "ca.crt"), certfile=str(d / "client.crt"), keyfile=str(d / "client.key"),
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
        return client

    # --------------------------------------------------------------- life cycle
    def start_broker(self) -> None:
        self.ensure_site()
        if self._broker_addr is None:
            self.broker = EmbeddedBroker(self.work_dir / "broker", self.site_dir)
            self.broker.start()

    def start_controller(self, wait_subscribed_s: float = 60.0) -> None:
        """Start the controller and wait until it has subscribed.

        Why wait: on a broker that holds no session for the controller yet, whatever agents publish
        before the first SUBSCRIBE is acknowledged to them and then dropped (no subscriber).
        """
        cfg = controller_config(self.scenario, self.broker_host, self.broker_port, self.db_path, self.clock,
                                site_dir=self.ensure_site(), localization_site_file=self.localization_site_file)
        path = self._write_yaml("controller.yaml", cfg)
        log_path = self.work_dir / "logs" / "controller.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        self._spawn("controller", ["controller", "run", "--config", str(path)])
        deadline = time.monotonic() + wait_subscribed_s
        while time.monotonic() < deadline:
            if not self.alive("controller"):
                raise RuntimeError(f"controller exited at start; see {log_path}")
            with open(log_path, "rb") as f:
                f.seek(offset)
                if b"subscribing" in f.read():
                    time.sleep(0.3)  # SUBACK follows the SUBSCRIBE within milliseconds on loopback
                    return
            time.sleep(0.1)
        raise RuntimeError(f"controller did not subscribe within {wait_subscribed_s:.0f} s; see {log_path}")

    def unit_clock(self, unit_type: str) -> dict[str, Any]:
        """The clock a unit runs on: the yard's (``rate`` x real time), except the camera box's.

        The camera box watches a checkpoint, not the yard, and its vital signs need real time: at
        the yard's 10x its camera would have to deliver 10x its frame rate, the pipeline would drop
        most frames, and heart and breathing rates would be read off a 10x time axis.
        """
        if unit_type == "camerabox":
            return _sim_clock(self.scenario, self.wall_start_s, 1.0)
        return self.clock

    def start_agent(self, unit_id: str) -> None:
        unit = next(u for u in self.units if u.unit_id == unit_id)
        prof = unit_profile(self.scenario, self.scenario_path, unit, self.broker_host, self.broker_port,
                            self.unit_clock(unit.type), site_dir=self.ensure_site())
        path = self._write_yaml(f"{unit_id}.yaml", prof)
        self._spawn(unit_id, ["agent", "run", "--profile", str(path), "--state-dir",
                              str(self.state_dir(unit_id))])

    def start(self) -> None:
        self.start_broker()
        self.start_controller()
        for u in self.units:
            self.start_agent(u.unit_id)

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` once and wait for the process (SIGKILL after 20 s)."""
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            self._reap(name)

    def _reap(self, name: str, timeout_s: float = 20.0) -> None:
        p = self.procs[name]
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.error("%s did not exit within %.0f s; its thread stacks go to its log", name, timeout_s)
            with contextlib.suppress(OSError):
                p.send_signal(signal.SIGUSR1)  # agents dump all thread stacks (faulthandler)
                time.sleep(1.0)
            p.kill()
            p.wait()

    def stop_agents(self) -> None:
        """SIGTERM every agent once (in parallel: each flushes for up to a few seconds), then reap.
        A second SIGTERM could land after Python has reset its handlers during exit."""
        agents = [n for n in self.procs if n != "controller" and self.alive(n)]
        for name in agents:
            self.procs[name].send_signal(signal.SIGTERM)
        for name in agents:
            self._reap(name)

    def produced_by_final_boots(self) -> dict[tuple[str, str], int]:
        """(unit, boot) -> sequenced messages that boot produced, from the agents' final status files."""
        out: dict[tuple[str, str], int] = {}
        for u in self.units:
            try:
                st = json.loads((self.state_dir(u.unit_id) / "status.json").read_text())
            except (OSError, ValueError):
                continue
            out[(u.unit_id, st["boot_id"])] = int(st["link"].get("sequenced_sent", 0))
        return out

    def wait_drained(self, timeout_s: float = 120.0, settle_s: float = 3.0) -> bool:
        """After :meth:`stop_agents`: wait until the controller has stored everything the agents'
        last boots produced (per the agents' own counts), then until the total stops growing."""
        from controller.store import Store, StoreError

        want = self.produced_by_final_boots()
        deadline = time.monotonic() + timeout_s
        last, stable_since, complete = -1, time.monotonic(), False
        while time.monotonic() < deadline:
            try:
                store = Store(self.db_path, create=False)
            except StoreError:
                time.sleep(0.5)
                continue
            try:
                boots = {(b["unit_id"], b["boot_id"]): b["n"] for b in store.counts()["boots"]}
                total = store.count("received")
            finally:
                store.close()
            complete = all(boots.get(k, 0) >= n for k, n in want.items())
            if total != last:
                last, stable_since = total, time.monotonic()
            elif complete and time.monotonic() - stable_since >= settle_s:
                return True
            time.sleep(0.5)
        return complete

    def stop(self) -> None:
        self.stop_agents()
        self.kill("controller", signal.SIGTERM)
        if self.broker is not None:
            self.broker.stop()
