"""The agent's main program: devices -> queues -> role -> durable link, with health and watchdog.

Threads: one acquisition thread per device (blocking reads at the device's own rate), paho's
network thread and the link's sender thread, the watchdog, and this main loop, which is the only
place analysis and state changes happen.  A sensor that fails is reported in health messages and
re-opened with back-off; the rest keeps running.  SIGTERM/SIGINT stop the loop, flush open alarm
episodes into the outbox and disconnect cleanly; whatever the broker has not acknowledged stays in
the outbox for the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import UnitProfile
from agent.geo import LocalFrame
from agent.hal.interfaces import (
    Camera,
    Clock,
    Device,
    DeviceContext,
    DeviceError,
    GammaSpectrometer,
    GnssReceiver,
    OperatorDisplay,
)
from agent.hal.registry import create_clock, create_device
from agent.link import MqttLink, Outbox
from agent.link.outbox import OutboxError
from agent.link.sequence import BOOT_JOURNAL_FILE
from agent.runtime.acquisition import AcquisitionThread, BoundedQueue
from agent.runtime.command_gate import CommandGate
from agent.runtime.health import ProcessHealth, persistence_health, sensor_health
from agent.runtime.roles import ROLES, RoleContext
from agent.runtime.status_file import StatusFile
from agent.runtime.track import PositionTrack
from agent.runtime.watchdog import Watchdog
from agent.wire_schema import Birth, Command, Health

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
DRAIN_BUDGET_S = 1.0  #: longest one loop cycle spends on queued readings before health and the watchdog


class CountingSender:
    """Wraps the link's send to count the sequenced messages this boot produced, in total and by
    kind (status file, demo, and the tests that check every alarm reached the controller)."""

    def __init__(self, link: MqttLink) -> None:
        self.link = link
        self.count = 0
        self.last_seq = 0
        self.failures = 0
        self.by_kind: dict[str, int] = {}

    def send(self, kind: str, body: Any) -> int:
        try:
            seq = self.link.send(kind, body)
        except OutboxError as err:  # disk full or I/O error: say so loudly, keep the unit running
            self.failures += 1
            log.error("could not store %s message in the outbox: %s", kind, err)
            return -1
        self.count += 1
        self.last_seq = seq
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        return seq


class AgentRuntime:
    def __init__(self, profile: UnitProfile, state_dir: str | Path) -> None:
        self.profile = profile
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.boot_id = uuid.uuid4().hex
        self.stop_event = threading.Event()
        self.clock: Clock = create_clock(profile.clock.driver, dict(profile.clock.params))
        self.frame = LocalFrame(profile.site.origin_lat_deg, profile.site.origin_lon_deg, profile.site.origin_alt_m)
        self.device_context = DeviceContext(unit_id=profile.unit_id, clock=self.clock)
        self.devices: dict[str, Device] = {}
        self.device_errors: dict[str, str] = {}
        self.queues: dict[str, BoundedQueue] = {}
        self.threads: dict[str, AcquisitionThread] = {}
        self.track = PositionTrack(self.frame, fixed_z_m=profile.acquisition.detector_height_m)
        outbox_path = Path(profile.outbox.path)
        if not outbox_path.is_absolute():
            outbox_path = self.state_dir / outbox_path
        oc = profile.outbox
        # never refuses to start for a full/read-only disk or a corrupt file (issue 15): see Outbox
        self.outbox = Outbox(str(outbox_path), oc.max_messages, max_bytes=oc.max_bytes,
                             memory_max_messages=oc.memory_max_messages, memory_max_bytes=oc.memory_max_bytes,
                             on_corrupt="move_aside")
        self.status_file = StatusFile(self.state_dir / STATUS_FILE)
        self._commands: queue.Queue[Command] = queue.Queue(maxsize=100)
        # every command is verified (signature, unit, expiry, replay) before it is queued
        self.command_gate = CommandGate(profile.command_auth, profile.unit_id, self.clock, self.state_dir)
        self.link = MqttLink(profile.unit_id, profile.broker, self.outbox, self.clock, birth=self._birth,
                             on_command=self._on_command, live_window_s=profile.outbox.live_window_s,
                             max_inflight=profile.outbox.max_inflight, boot_id=self.boot_id,
                             boot_journal_path=str(self.state_dir / BOOT_JOURNAL_FILE))
        self.sender = CountingSender(self.link)
        self._create_devices()
        display = self.devices.get("display")
        self.role = ROLES[profile.unit_type](RoleContext(
            profile=profile, clock=self.clock, link=self.sender, track=self.track,
            display=display if isinstance(display, OperatorDisplay) else None,
        ))
        self.watchdog = Watchdog(profile.watchdog.timeout_s)
        self.proc = ProcessHealth()
        self.started_mono = time.monotonic()
        self.loop_lag_ms = 0.0

    # ------------------------------------------------------------------ set-up
    def _create_devices(self) -> None:
        for kind, dc in self.profile.devices.items():
            try:
                self.devices[kind] = create_device(kind, dc.driver, dict(dc.params), self.device_context)
            except DeviceError as err:
                # Graceful degradation: the unit runs without this sensor and says so.
                log.error("device %s (%s) not created: %s", kind, dc.driver, err)
                self.device_errors[kind] = str(err)

    def _read_fn(self, dev: Device):  # noqa: ANN202 - returns a bound reader
        interval = self.profile.acquisition.interval_s
        if isinstance(dev, GammaSpectrometer):
            return lambda: dev.read_spectrum(timeout_s=interval * 3 + 2)
        if isinstance(dev, GnssReceiver):
            def read_fix() -> Any:
                fix = dev.read_fix(timeout_s=5.0)
                self.clock.sleep(0.5)  # poll at 2 Hz of unit time; the driver keeps the newest fix
                return fix
            return read_fix
        if isinstance(dev, Camera):
            return lambda: dev.read_frame(timeout_s=5.0)
        return None

    def _birth(self) -> Birth:
        return Birth(unit_type=self.profile.unit_type, profile=self.profile.profile,
                     software_version=__version__, site=self.profile.site.name,
                     sensors=sensor_health(self.devices, self._error_counts()),
                     devices=[d.describe() for d in self.devices.values()],
                     pending_backfill=self.outbox.count())

    def _on_command(self, cmd: Command) -> None:
        # Runs on paho's thread. The broker keeps this unit's session, so commands queued while it
        # was away arrive on reconnect: the gate drops expired ones (the controller re-dispatches),
        # and anything not signed by a pinned controller key, for another unit, or replayed.
        if not self.command_gate.admit(cmd):
            return
        if cmd.command == "ping":
            # the controller saw data of a boot it has no birth for (lost database, shared
            # subscription): announce this boot again (Sparkplug B calls this a rebirth request)
            self.link.rebirth()
            return
        try:
            self._commands.put_nowait(cmd)
        except queue.Full:
            log.error("command queue full: dropping %s %s", cmd.command, cmd.cmd_id)

    def _error_counts(self) -> dict[str, int]:
        return {k: t.errors for k, t in self.threads.items()}

    # ------------------------------------------------------------------ run
    def start(self) -> None:
        # Before acquisition (whose bounded queues would drop readings meanwhile) and before the
        # watchdog (a cold numba compile can exceed its timeout on a busy box): prepare the analysis.
        try:
            self.role.warm_up()
        except Exception:  # the unit still runs; the first real reading pays the compile instead
            log.exception("analysis warm-up failed")
        for kind, dev in self.devices.items():
            reader = self._read_fn(dev)
            if reader is None:
                try:
                    dev.open()
                except DeviceError as err:
                    log.error("%s failed to open: %s", kind, err)
                continue
            q = BoundedQueue(self.profile.acquisition.queue_size)
            self.queues[kind] = q
            t = AcquisitionThread(dev, reader, q, self.clock, self.stop_event)
            self.threads[kind] = t
            t.start()
        self.link.start()
        self.watchdog.start()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT or :meth:`stop`; returns the process exit code."""
        self._install_signals()
        self.start()
        next_health = self.clock.monotonic_s()
        next_status = time.monotonic()
        try:
            while not self.stop_event.is_set():
                t0 = time.monotonic()
                self._drain()
                self.role.tick()
                now = self.clock.monotonic_s()
                if now >= next_health:
                    self._send_health()
                    next_health = now + self.profile.health.interval_s
                if time.monotonic() >= next_status:
                    self.write_status()
                    next_status = time.monotonic() + 1.0
                self.outbox.maintain()  # deleted/replaced file check, retry of a failing disk
                self.watchdog.kick()
                self.loop_lag_ms = (time.monotonic() - t0) * 1000
                self.stop_event.wait(0.02)
        finally:
            self.shutdown()
        return 0

    def _drain(self) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
            self.role.on_command(cmd)
        self._drain_gnss()
        # bounded per cycle, in items and in time, so health, status and the watchdog keep their pace: a
        # camera whose analysis is slower than its frame rate (a CCTV chain at 10 fps) never empties its
        # queue, and 200 frames of it would starve the watchdog
        deadline = time.monotonic() + DRAIN_BUDGET_S
        for kind, handler in (("gamma", self.role.on_spectrum), ("camera", self.role.on_frame)):
            q = self.queues.get(kind)
            if q is None:
                continue
            for _ in range(200):
                if time.monotonic() > deadline:
                    break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                # fixes that arrived while the previous reading was analysed: a reading must never be
                # positioned from a track that stops before it (after a slow first analysis, say)
                self._drain_gnss()
                try:
                    handler(item)
                except Exception:  # analysis bug: report, drop this reading, keep the unit alive
                    log.exception("%s handler failed on one reading", kind)

    def _drain_gnss(self) -> None:
        gnss = self.queues.get("gnss")
        if gnss is None:
            return
        while True:
            try:
                self.track.add(gnss.get_nowait())
            except queue.Empty:
                return

    def _send_health(self) -> None:
        sensors = sensor_health(self.devices, self._error_counts())
        for kind, err in self.device_errors.items():
            from agent.wire_schema import SensorHealth

            sensors[kind] = SensorHealth(state="failed", detail=err[:200])
        stats = self.link.stats()
        self.sender.send("health", Health(
            uptime_s=round(time.monotonic() - self.started_mono, 1),
            cpu_pct=self.proc.cpu_pct(), mem_rss_mb=round(self.proc.mem_rss_mb(), 1),
            outbox_pending=int(stats.get("pending", 0)),
            queue_depth={k: q.qsize() for k, q in self.queues.items()},
            loop_lag_ms=round(self.loop_lag_ms, 2), sensors=sensors, position=self.track.current(),
            available=self.role.available, task_id=self.role.task_id,
            **persistence_health(self.outbox.report(), self.status_file.failures),
            commands_rejected=self.command_gate.rejected_total,
        ))

    def status(self) -> dict[str, Any]:
        return {
            "unit_id": self.profile.unit_id, "unit_type": self.profile.unit_type, "boot_id": self.boot_id,
            "pid": os.getpid(), "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "clock_utc": self.clock.utc_now().isoformat(),
            "link": {**self.link.stats(), "sequenced_sent": self.sender.count,
                     "sent_by_kind": dict(self.sender.by_kind), "outbox_failures": self.sender.failures},
            "outbox": self.outbox.report(),
            "status_write_failures": self.status_file.failures,
            "sensors": {k: {"state": v.state.value, "detail": v.state_detail} for k, v in self.devices.items()},
            "device_errors": self.device_errors,
            "queues": {k: {"depth": q.qsize(), "dropped": q.dropped} for k, q in self.queues.items()},
            "role": self.role.status(), "commands": self.command_gate.status(),
            "watchdog_s_since_kick": round(self.watchdog.seconds_since_kick, 2),
            "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def write_status(self) -> None:
        """Atomically replace status.json for `cedge agent status`; a full or read-only disk is
        counted and logged (rate-limited), never fatal (agent.runtime.status_file)."""
        self.status_file.write(self.status())

    def stop(self) -> None:
        self.stop_event.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def shutdown(self) -> None:
        log.info("shutting down %s", self.profile.unit_id)
        self.stop_event.set()
        try:
            self.role.shutdown()
            self._drain()
        except Exception:
            log.exception("role shutdown failed")
        for t in self.threads.values():
            t.join(timeout=3)
        for dev in self.devices.values():
            try:
                dev.close()
            except Exception:
                log.exception("closing %s failed", dev.name)
        self.link.stop(timeout_s=3.0)
        self.watchdog.stop()
        self.outbox.close()
        with contextlib.suppress(OSError):
            self.write_status()
