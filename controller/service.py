"""The controller process: MQTT in, SQLite, liveness, fusion and dispatch, in one loop.

One thread owns the database: it drains the MQTT inbox in batches, commits each batch in one
transaction (one fsync for up to ``ingest.batch_max`` messages, each message still atomic through
a savepoint), and only then acknowledges the batch to the broker.  If the batch cannot be
committed (disk full, I/O error) the messages are re-run one by one; those that still cannot be
stored stay un-acknowledged and are retried with back-off - never dropped.  Every ``tick_s`` of
the injected clock the liveness sweep and the dispatcher (new alarms, task events, time-outs) run;
every ``status_interval_s`` a status line is logged.

SIGTERM/SIGINT set the stop event (see :func:`install_signal_handlers`); the loop then stores and
acknowledges what is already queued, disconnects (the broker keeps the persistent session and
queues for the next start) and closes the database.  Under systemd (``Type=notify``) READY, STATUS
and WATCHDOG are sent (agent/runtime/sd_notify.py) when ``NOTIFY_SOCKET`` is set.
"""

from __future__ import annotations

import logging
import queue
import signal
import sqlite3
import threading
import time
import uuid
from typing import Any

from agent.command_auth import KeyFileError
from agent.hal.interfaces import Clock, utc_iso
from agent.hal.registry import create_clock
from agent.wire_schema import Command
from controller.command_signer import CommandSigner, SignerError
from controller.config import ConfigError, ControllerConfig
from controller.dispatch import Dispatcher
from controller.enrolment import Enrolment, EnrolmentError
from controller.ingest import Ingestor
from controller.leader import leader_for
from controller.liveness import LivenessMonitor
from controller.mqtt_client import ControllerMqtt, InboundMessage
from controller.rate_limited_log import RateLimitedLog
from controller.sequence_guard import SequenceGuard
from controller.store import ACTIVE_TASK_STATES, Store, StoreError

__all__ = ["ControllerService", "install_signal_handlers"]

log = logging.getLogger(__name__)

_RETRY_MAX_WALL_S = 5.0
_SWEEP_WALL_S = 1.0  # parked messages: release / expire (controller.sequence_guard)


def _signer(config: ControllerConfig, clock: Clock) -> CommandSigner | None:
    """The command signer, or None (logged) when no key is configured; a bad key stops the start."""
    if config.command_signing_key is None:
        log.error("no command_signing_key configured: every command goes out unsigned and units refuse it")
        return None
    d = config.dispatch
    try:
        signer = CommandSigner(config.command_signing_key, config.command_key_id, clock,
                               {"dispatch": d.command_ttl_s, "cancel": d.cancel_ttl_s, "ping": d.command_ttl_s})
    except (KeyFileError, SignerError) as err:
        raise ConfigError(f"command_signing_key: {err}") from err
    log.info("commands signed with key %s (%s)", signer.key_id, config.command_signing_key)
    return signer


def _enrolment(config: ControllerConfig) -> Enrolment | None:
    if not config.enrolment_required:
        log.warning("require_enrolment is off: uplinks of any unit id are accepted")
        return None
    try:
        return Enrolment(config.enrolled_units, config.enrolled_units_file, required=True)
    except EnrolmentError as err:
        raise ConfigError(str(err)) from err


class _RetryBatch(Exception):
    """A message in the batch hit a storage error: redo the batch message by message."""


class _Notifier:
    def __init__(self) -> None:
        from agent.runtime.sd_notify import SystemdNotifier  # stdlib sd_notify(3); a no-op without systemd

        self._n = SystemdNotifier()

    def notify(self, msg: str) -> None:
        self._n.notify(msg)


class ControllerService:
    """Wires store, ingest, liveness, dispatcher and the MQTT link; :meth:`run` is the main loop."""

    def __init__(self, config: ControllerConfig, clock: Clock | None = None, link: ControllerMqtt | None = None):
        self.config = config
        self.clock = clock or create_clock(config.clock.driver, config.clock.params)
        self.signer = _signer(config, self.clock)
        self.enrolment = _enrolment(config)
        self.store = Store(config.store_location, synchronous=config.db_synchronous)
        # issue 20: several controllers may ingest into one store; one of them (the leader) dispatches
        self.leader = leader_for(config.store_location)
        self.link = link or ControllerMqtt(config.broker, max_payload_bytes=config.ingest.max_payload_bytes)
        # hall CCTV (issue 19): tracklets folded on the ingest thread, analysed on the "cctv" thread
        self.cctv: Any = None
        if config.cctv is not None:
            from controller.cctv.live_feed import LiveCctvFeed

            self.cctv = LiveCctvFeed(config.cctv)
        self.ingestor = Ingestor(
            self.store,
            on_event=self._on_event if self.cctv is not None else None,
            clock=self.clock,
            max_payload_bytes=config.ingest.max_payload_bytes,
            reject_log_interval_s=config.ingest.reject_log_interval_s,
            enrolment=self.enrolment,
            sequence=SequenceGuard(self.store, config.sequence),
            request_birth=self._request_birth,
        )
        self.liveness = LivenessMonitor(self.store, self.clock, config.liveness)
        self.dispatcher = Dispatcher(
            self.store, self.clock, self._publish_command, config.dispatch, config.localization, config.site,
            signer=self.signer, fusion_worker=True,  # fits never hold task events back (issue 17)
        )
        self._retry: list[InboundMessage] = []
        self._retry_wait_s = 0.0
        self._retry_at_s = 0.0
        self._notifier = _Notifier()
        self._rlog = RateLimitedLog(self.clock, config.ingest.reject_log_interval_s, log)
        self.acked = 0
        # operator console (controller.web): actions queued by any console are applied by the process
        # that dispatches; the web server itself starts in run()
        self.web_port_given = False
        self.web: Any = None
        self.actions: Any = None
        if config.dispatch.enabled:
            from controller.web.actions import ActionExecutor

            self.actions = ActionExecutor(config.store_location, self.dispatcher)

    def _start_web(self) -> None:
        """Serve the operator console (on by default on loopback); a failure never stops ingest."""
        if not self.config.web.enabled:
            return
        try:
            from controller.web.server import WebServer
        except ImportError as err:
            log.error("operator console off: %s (install the 'controller' extra)", err)
            return
        try:
            self.web = WebServer(self.config.web, self.config.store_location, port_was_given=self.web_port_given,
                                 url_file_default=f"{self.config.db_path}.console.json")
            self.web.start()
        except StoreError as err:
            log.error("operator console off: %s", err)
            self.web = None
        except (OSError, ValueError) as err:
            log.error("operator console off: cannot serve on %s:%d: %s", self.config.web.host,
                      self.config.web.port, err)
            self.web = None

    def _on_event(self, env: Any, body: Any) -> None:
        if env.kind == "tracklet" and self.cctv is not None:
            self.cctv.on_tracklet(env, body)

    def cctv_step(self) -> int:
        """One CCTV analysis step (re-association, rules) and its new alerts stored; never fatal."""
        if self.cctv is None:
            return 0
        try:
            return self.cctv.step_and_store(self.store, self.clock.utc_now().timestamp())
        except sqlite3.Error as err:
            self._rlog.error("cctv-db", "CCTV alerts not stored now, database error: %s (raised again next step)", err)
        except Exception as err:
            self._rlog.exception(f"cctv:{type(err).__name__}", "CCTV step failed")
        return 0

    def _cctv_loop(self, stop_event: threading.Event) -> None:
        assert self.config.cctv is not None
        while not stop_event.wait(self.config.cctv.step_interval_s):
            self.cctv_step()
        self.cctv_step()  # what arrived before the stop

    def _publish_command(self, unit_id: str, cmd: Command) -> None:
        self.link.publish_command(unit_id, cmd)

    def _request_birth(self, unit_id: str) -> None:
        """Ask a unit to re-announce its boot (signed ping): ingest holds data of a boot it has no
        birth for.  Recorded like every command, then published."""
        cmd = Command(cmd_id=uuid.uuid4().hex, unit_id=unit_id, command="ping", t_utc=utc_iso(self.clock.utc_now()))
        if self.signer is not None:
            cmd = self.signer.sign(cmd)
        self.store.record_command(cmd)
        self.link.publish_command(unit_id, cmd)
        log.info("asked %s for a birth (cmd %s)", unit_id, cmd.cmd_id[:8])

    def sweep_parked(self) -> None:
        """Release or expire parked messages (see controller.sequence_guard); never fatal."""
        try:
            with self.store.batch():
                done = self.ingestor.sweep()
        except sqlite3.Error as err:
            self._rlog.error("sweep-db", "parked messages not swept, database error: %s", err)
            return
        except Exception as err:
            self._rlog.exception(f"sweep:{type(err).__name__}", "parked sweep failed")
            return
        if done["released"] or done["expired"]:
            log.info("parked messages: %d stored after checking out, %d rejected after the timeout",
                     done["released"], done["expired"])

    # ------------------------------------------------------------------ main loop
    def run(self, stop_event: threading.Event) -> None:
        log.info(
            "controller starting: db %s, broker %s:%d, clock %s, dispatch %s",
            self.store.path,
            self.config.broker.host,
            self.config.broker.port,
            self.config.clock.driver,
            "on" if self.config.dispatch.enabled else "off",
        )
        self.link.start()
        self._start_web()
        self._notifier.notify("READY=1")
        # Dispatch and liveness run in their own thread: a localization fit takes up to a second
        # on hundreds of measurements, and ingest (and so the acknowledgements the broker waits
        # for) must not stall behind it after an outage floods in.  The store serialises access.
        ticker = threading.Thread(target=self._tick_loop, args=(stop_event,), name="dispatch", daemon=True)
        ticker.start()
        cctv_thread = None
        if self.cctv is not None:
            cctv_thread = threading.Thread(target=self._cctv_loop, args=(stop_event,), name="cctv", daemon=True)
            cctv_thread.start()
        now = self.clock.monotonic_s()
        next_status = now + self.config.status_interval_s
        next_sweep = time.monotonic()
        try:
            while not stop_event.is_set():
                self.process(self._drain(0.2))
                if time.monotonic() >= next_sweep:
                    self.sweep_parked()
                    next_sweep = time.monotonic() + _SWEEP_WALL_S
                now = self.clock.monotonic_s()
                if now >= next_status:
                    self.log_status()
                    next_status = now + self.config.status_interval_s
                self._notifier.notify("WATCHDOG=1")
        finally:
            stop_event.set()
            ticker.join(timeout=10)
            if cctv_thread is not None:
                cctv_thread.join(timeout=30)
            self._shutdown()

    def _tick_loop(self, stop_event: threading.Event) -> None:
        while not stop_event.is_set():
            self.tick()
            stop_event.wait(self.config.tick_s / max(self.clock.rate, 1e-6))

    def tick(self) -> None:
        """Liveness sweep and dispatcher step; an error here is logged, never fatal."""
        try:
            if not self.leader.is_leader():  # another controller dispatches and sweeps (controller.leader)
                return
            self.liveness.tick()
            if self.config.dispatch.enabled:
                self.dispatcher.tick()
            if self.actions is not None:
                self.actions.run_pending()
        except sqlite3.Error as err:
            self._rlog.error("tick-db", "tick skipped, database error: %s", err)
        except Exception as err:  # one traceback per error type and interval, not one per tick
            self._rlog.exception(f"tick:{type(err).__name__}", "tick failed")

    def _drain(self, wait_s: float) -> list[InboundMessage]:
        batch: list[InboundMessage] = []
        if self._retry and self.clock.monotonic_s() >= self._retry_at_s:
            batch, self._retry = self._retry, []
        try:
            if not batch:
                batch.append(self.link.inbox.get(timeout=wait_s) if wait_s > 0 else self.link.inbox.get_nowait())
            while len(batch) < self.config.ingest.batch_max:
                batch.append(self.link.inbox.get_nowait())
        except queue.Empty:
            pass
        return batch

    def process(self, batch: list[InboundMessage]) -> None:
        """Store a batch in one transaction, then acknowledge it; fall back to one by one."""
        if not batch:
            return
        try:
            with self.store.batch():
                for m in batch:
                    if self.ingestor.handle(m.topic, m.payload, payload_bytes=m.size_bytes) == "retry":
                        raise _RetryBatch
        except (_RetryBatch, sqlite3.Error) as err:
            self._rlog.warning("batch", "batch of %d not committed (%s); storing one by one", len(batch),
                               err or "retry")
            done = []
            for m in batch:
                if self.ingestor.handle(m.topic, m.payload, payload_bytes=m.size_bytes) == "retry":
                    self._retry.append(m)
                else:
                    done.append(m)
            self._schedule_retry()
        else:
            done = batch
            self._retry_wait_s = 0.0
        for m in done:
            if self.link.ack(m):
                self.acked += 1

    def _schedule_retry(self) -> None:
        if not self._retry:
            self._retry_wait_s = 0.0
            return
        self._retry_wait_s = min(max(2 * self._retry_wait_s, 0.25), _RETRY_MAX_WALL_S)
        self._retry_at_s = self.clock.monotonic_s() + self._retry_wait_s * self.clock.rate
        log.warning("%d message(s) kept for retry in %.2f s (not acknowledged)", len(self._retry), self._retry_wait_s)

    # ------------------------------------------------------------------ status / shutdown
    def status(self) -> dict[str, Any]:
        s = self.ingestor.stats
        return {
            "connected": self.link.connected,
            "inbox": self.link.inbox.qsize(),
            "retry": len(self._retry),
            "acked": self.acked,
            "outcomes": dict(s.outcomes),
            "rejects": dict(s.rejects),
            "units": self.store.unit_state_counts(),
            "incidents_active": len(self.store.active_incidents()),
            "tasks_active": len(self.store.list_tasks(ACTIVE_TASK_STATES)),
            "dispatch": dict(self.dispatcher.stats),
            "fusion": self.dispatcher.fusion_stats(),
            "parked": self.store.parked_counts(),
            "commands_signed": self.signer.signed if self.signer is not None else 0,
            "cctv": dict(self.cctv.stats) if self.cctv is not None else None,
        }

    def log_status(self) -> None:
        try:
            st = self.status()
        except sqlite3.Error as err:
            log.error("status: database error %s", err)
            return
        o, u = st["outcomes"], st["units"]
        line = (
            f"status: {'connected' if st['connected'] else 'DISCONNECTED'}, inbox {st['inbox']}, "
            f"stored {o.get('stored', 0)}, dup {o.get('duplicate', 0)}, rejected {o.get('rejected', 0)}, "
            f"held {sum(st['parked'].values())}, seq conflicts {o.get('conflict', 0)}, "
            f"retry {st['retry']}; units online {u.get('online', 0)} stale {u.get('stale', 0)} "
            f"offline {u.get('offline', 0)}; incidents {st['incidents_active']}, tasks {st['tasks_active']}"
        )
        log.info(line)
        self._notifier.notify(f"STATUS={line}")

    def _shutdown(self) -> None:
        self._notifier.notify("STOPPING=1")
        try:
            self.process(self._drain(0.0))  # store and ack what is already here while still connected
        except Exception:
            log.exception("final drain failed; un-acked messages stay with the broker")
        if self.web is not None:
            self.web.stop()
        self.dispatcher.close()
        self.link.stop()
        try:  # anything that arrived during disconnect: store it (un-acked; the broker re-sends, we de-dup)
            while True:
                m = self.link.inbox.get_nowait()
                self.ingestor.handle(m.topic, m.payload, payload_bytes=m.size_bytes)
        except queue.Empty:
            pass
        self.log_status()
        if self.actions is not None:
            self.actions.close()
        self.leader.close()
        self.store.close()
        log.info("controller stopped")


def install_signal_handlers(stop_event: threading.Event) -> None:
    """SIGTERM / SIGINT set ``stop_event`` (call from the main thread)."""

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
