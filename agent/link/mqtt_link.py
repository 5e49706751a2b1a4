"""The agent's MQTT uplink: drains the durable outbox to the broker, receives commands.

Why it is built this way:

* **Never lose, never block.**  :meth:`MqttLink.send` only assigns the seq and commits the message to
  the :class:`~agent.link.outbox.Outbox`; a sender thread publishes rows in id order with QoS 1 and
  the row is deleted only after the broker's PUBACK (MQTT 5: a PUBACK with a failure reason code
  keeps the row and retries it later).  So the runtime never waits on the network, and a broker
  outage, a crash or a power cut costs at most duplicates, which the controller drops by
  ``(unit_id, boot_id, seq)``.
* **Bounded in-flight window.**  At most ``min(max_inflight, broker Receive Maximum)`` messages are
  unacknowledged (MQTT 5 section 4.9 flow control), so a backlog of millions of rows after an
  outage is streamed, not dumped into paho's memory.
* **Re-send after a disconnect.**  When the broker resumes our session (CONNACK session present),
  paho re-sends the unacknowledged PUBLISH packets with their original packet ids and DUP set, as
  MQTT requires (MQTT 5 section 4.4, 3.1.1 section 4.4), and their PUBACKs delete the rows.  When
  the session is gone (broker lost it, expired, first connect), paho's copies are discarded
  (``drop_out_messages``) and every unacknowledged row is published again from the outbox.  Rows
  are never trusted to paho's memory alone: a process crash loses nothing.
* **delivery flag**, set when a row is (re)published from the outbox: ``backfill`` if the message
  was created while the link was down, in an earlier agent boot, or more than ``live_window_s``
  before it is published; otherwise ``live``.  A packet re-sent by the session keeps its flag.
* **Session messages.**  A ``birth`` (seq 0) is published directly (not via the outbox) on every
  successful connect, before any backlog.  The MQTT Last Will is a ``death`` envelope (seq 0,
  reason "connection lost") that the broker publishes if the unit vanishes without a DISCONNECT;
  a clean :meth:`MqttLink.stop` publishes ``death`` with reason "shutdown" itself and then sends a
  normal DISCONNECT, which suppresses the will (MQTT 5 section 3.1.2.5).
* **Persistent session for commands.**  The client id is stable (``cedge-agent-<unit_id>``) and the
  session survives disconnects (MQTT 5 Clean Start = 0 with a Session Expiry Interval; MQTT 3.1.1
  clean session = 0), so QoS-1 commands sent while a handheld is in a dead spot are delivered when
  it reconnects.

Threads: paho's network thread runs the ``on_*`` callbacks, including the user's ``on_command``;
a sender thread does all outbox reads, publishes and ack deletions.  No lock of ours is held while
calling into paho (paho calls ``on_publish`` with its own lock held, so the reverse order would
deadlock).  A PUBACK that overtakes the registration of its packet id is parked and matched only
if that very message object reports itself published, so a stale PUBACK for a re-used packet id
can never delete the wrong row.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel

from agent import wire_schema
from agent.config import BrokerConfig
from agent.hal.interfaces import Clock, utc_iso
from agent.link.connect_failure_log import ConnectFailureLog
from agent.link.outbox import Outbox, OutboxRow
from agent.link.sequence import BootJournal, BootSequence

log = logging.getLogger(__name__)

_LIVE = b',"delivery":"live","body":'
_BACKFILL = b',"delivery":"backfill","body":'
_EARLY_ACK_MAX_AGE_S = 60.0
_LOG_EVERY_S = 10.0


class _QuietPahoFilter(logging.Filter):
    """paho 2.2 logs ERROR "Client is not connected" from its loop once after every disconnect
    (the socket is already gone); it is not an error and it reconnects anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_paho_log = logging.getLogger(f"{__name__}.paho")
_paho_log.addFilter(_QuietPahoFilter())


def with_delivery(payload: bytes, delivery: str) -> bytes:
    """The stored envelope JSON with its ``delivery`` field set; stored rows say ``live``.

    A byte replacement of the first structural ``,"delivery":"live","body":`` (quotes inside JSON
    strings are escaped, and ``delivery`` precedes ``body`` in the envelope), so a backlog of
    spectra is not re-parsed; anything else falls back to a JSON round trip.
    """
    if delivery == "live" or _BACKFILL in payload:
        return payload
    if _LIVE in payload:
        return payload.replace(_LIVE, _BACKFILL, 1)
    raw = json.loads(payload)
    raw["delivery"] = delivery
    return json.dumps(raw, separators=(",", ":")).encode()


class MqttLink:
    """Durable QoS-1 uplink and command downlink of one unit over paho-mqtt 2.x.

    ``birth`` is called on paho's thread at every connect and must return the current
    :class:`~agent.wire_schema.Birth` quickly (its ``pending_backfill`` is filled in here).
    ``on_command`` is called on paho's network thread with each valid :class:`Command` addressed
    to this unit: it must return quickly (queue the command; do not block or do I/O), because
    while it runs no PUBACK or other packet is processed.  Exceptions it raises are logged.
    Invalid commands are logged with the reason and counted, never raised.

    The outbox is owned by the caller: :meth:`stop` does not close it.
    """

    def __init__(self, unit_id: str, broker: BrokerConfig, outbox: Outbox, clock: Clock,
                 birth: Callable[[], wire_schema.Birth], on_command: Callable[[wire_schema.Command], None],
                 live_window_s: float = 5.0, client_id: str | None = None, *,
                 max_inflight: int = 200, boot_id: str | None = None,
                 session_expiry_s: int = 3600, retry_failed_s: float = 1.0,
                 boot_journal_path: str | None = None) -> None:
        if not isinstance(unit_id, str) or not re.match(wire_schema.UNIT_ID_PATTERN, unit_id):
            raise ValueError(f"unit_id {unit_id!r} does not match {wire_schema.UNIT_ID_PATTERN}")
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
        self.unit_id = unit_id
        self.broker = broker
        if broker.identity is not None and broker.identity != unit_id:
            raise ValueError(f"broker.tls_cert_file is the certificate of {broker.identity!r}, not of {unit_id!r}")
        # with a certificate the broker makes its identity the client id (use_username_as_clientid)
        self.client_id = client_id or broker.client_id or f"cedge-agent-{unit_id}"
        self._outbox = outbox
        self._clock = clock
        self._birth = birth
        self._on_command = on_command
        self._live_window_s = float(live_window_s)
        self._max_inflight = int(max_inflight)
        self._session_expiry_s = int(session_expiry_s)
        self._retry_failed_s = float(retry_failed_s)
        self._seq = BootSequence(boot_id)
        # the previous boot's id and last seq for the birth; this boot's last seq for the next one
        self._seq.journal = BootJournal(boot_journal_path, self._seq.boot_id)

        self._cond = threading.Condition()
        # --- state guarded by _cond
        self._started = False
        self._stopped = False
        self._draining = False  # stop(): publish nothing new from the outbox
        self._publishing = 0  # rows handed to paho but not yet in _inflight (stop() waits for them)
        self._sender_exit = False
        self._connected = False
        self._ever_connected = False
        self._session_gen = 0  # +1 when the MQTT session is reset (paho's copies dropped)
        self._window = self._max_inflight
        self._max_packet_bytes: int | None = None  # broker's Maximum Packet Size (MQTT 5 CONNACK)
        self._cursor = 0  # highest row id handed to paho in this session generation
        self._maybe_pending = True  # rows may exist beyond the cursor
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id (kept across a resumed session)
        self._early: dict[int, tuple[bool, float]] = {}  # PUBACKs that overtook registration
        self._session_mids: set[int] = set()  # birth/death in flight (count against the window)
        self._acked_rows: list[int] = []  # acked, to be deleted by the sender thread
        self._deleting: set[int] = set()  # acked, deletion in progress
        self._held: dict[int, float] = {}  # row id -> monotonic time to retry (failed PUBACK)
        self._published = 0
        self._acked = 0
        self._reconnects = 0
        self._connect_failures = ConnectFailureLog(log, f"link {unit_id}")
        self._rejected_commands = 0
        self._command_errors = 0
        self._publish_failures = 0
        self._last_fail_log = -_LOG_EVERY_S

        self._client = self._make_client()
        self._sender = threading.Thread(target=self._sender_main, name=f"cedge-link-sender-{unit_id}",
                                        daemon=True)

    # ------------------------------------------------------------------ public API
    @property
    def boot_id(self) -> str:
        return self._seq.boot_id

    @property
    def last_seq(self) -> int:
        return self._seq.last_seq

    def start(self) -> None:
        """Connect in the background; reconnects with exponential backoff up to
        ``broker.reconnect_max_s``.  Returns immediately, also when the broker is down."""
        with self._cond:
            if self._started:
                raise RuntimeError("MqttLink.start() called twice")
            self._started = True
        self._set_will()
        kwargs: dict[str, Any] = {}
        if self.broker.protocol == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self._session_expiry_s
            kwargs = {"clean_start": False, "properties": props}
        self._client.connect_async(self.broker.host, self.broker.port, self.broker.keepalive_s, **kwargs)
        self._sender.start()
        self._client.loop_start()
        log.info("link %s: connecting to %s:%d (MQTT %s) as %s, boot %s", self.unit_id, self.broker.host,
                 self.broker.port, "5" if self.broker.protocol == 5 else "3.1.1", self.client_id,
                 self.boot_id)

    def send(self, kind: str, body: BaseModel) -> int:
        """Stamp, sequence and durably queue one uplink message; returns its seq.

        Never blocks on the network and never raises because the broker is down or the disk
        fails.  Raises ``ValueError`` (WireError) for a kind that is not sequenced or a body of
        the wrong type, and :class:`~agent.link.outbox.OutboxError` once the outbox is closed; in
        both cases no seq is consumed.  Otherwise the seq is always consumed: while the disk
        refuses writes (full, read-only, I/O errors) the outbox keeps the message in its memory
        queue and this link sends it from there; a message the outbox drops (its budget, or the
        memory queue, full of more important ones -- never an alarm or task event while room is
        left) is counted by reason in ``Outbox.report()['lost']`` and ``stats()['dropped']``, and
        the controller sees its seq as a gap (issue 15: no silent loss).  Before :meth:`start` and
        after :meth:`stop` messages are still stored; they go out on the next connection (as
        backfill).
        """
        if kind not in wire_schema.SEQUENCED_KINDS:
            raise wire_schema.WireError(
                f"kind {kind!r} is not a sequenced kind {wire_schema.SEQUENCED_KINDS}")
        topic = wire_schema.uplink_topic(self.unit_id, kind)
        with self._seq.reserve() as seq:
            t_mono_s = self._clock.monotonic_s()
            t_utc = utc_iso(self._clock.utc_now())
            env = wire_schema.make_envelope(kind, self.unit_id, self.boot_id, seq, t_utc, t_mono_s,
                                            self._clock.utc_valid, body)  # type: ignore[arg-type]
            with self._cond:
                offline = not self._connected
            self._outbox.put(topic, wire_schema.encode(env), kind, self.boot_id, seq, t_mono_s,
                             created_utc=t_utc, offline=offline)
        with self._cond:
            self._maybe_pending = True
            self._cond.notify_all()
        return seq

    def stop(self, timeout_s: float = 5.0) -> None:
        """Clean shutdown: stop publishing outbox rows, wait (within ``timeout_s``) for in-flight
        PUBACKs, publish ``death`` (reason "shutdown"), DISCONNECT (no will), join the threads.
        Unsent rows stay in the outbox for the next start.  Idempotent."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            if not self._started or self._stopped:
                self._stopped = True
                if self._seq.journal is not None:
                    self._seq.journal.flush()
                return
            self._stopped = True
            self._draining = True
            self._cond.notify_all()
            # a row the sender handed to paho just before _draining was set is not in _inflight yet:
            # wait for it too, or its PUBACK arrives after the DISCONNECT and it is re-sent next boot
            self._cond.wait_for(lambda: not self._connected or (not self._inflight and not self._publishing),
                                timeout=max(0.0, (deadline - time.monotonic()) * 0.5))
            connected = self._connected
        if connected:
            try:
                payload = self._session_payload("death", wire_schema.Death(reason="shutdown",
                                                                           last_seq=self._seq.last_seq))
                info = self._client.publish(wire_schema.uplink_topic(self.unit_id, "death"), payload, qos=1)
                info.wait_for_publish(timeout=max(0.05, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as err:
                log.warning("link %s: death message not confirmed at shutdown: %s", self.unit_id, err)
        self._client.disconnect()
        self._client.loop_stop()
        with self._cond:
            self._connected = False
            self._sender_exit = True
            self._cond.notify_all()
        self._sender.join(timeout=max(1.0, deadline - time.monotonic()))
        if self._sender.is_alive():
            log.error("link %s: sender thread did not stop", self.unit_id)
        if self._seq.journal is not None:
            self._seq.journal.flush()  # this boot's exact last seq, for the next boot's birth
        log.info("link %s stopped: %s", self.unit_id, self.stats())

    def stats(self) -> dict[str, Any]:
        """Counters for health messages and tests (all since this link was created)."""
        with self._cond:
            out: dict[str, Any] = {
                "connected": self._connected,
                "inflight": len(self._inflight),
                "published": self._published,
                "acked": self._acked,
                "reconnects": self._reconnects,
                "rejected_commands": self._rejected_commands,
                "command_errors": self._command_errors,
                "publish_failures": self._publish_failures,
                "last_seq": self._seq.last_seq,
            }
        out["pending"] = self._outbox.count()
        out["dropped"] = self._outbox.dropped
        return out

    # ------------------------------------------------------------------ paho setup
    def _make_client(self) -> mqtt.Client:
        b = self.broker
        if b.protocol == 5:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 protocol=mqtt.MQTTv311, clean_session=False)
        client.suppress_exceptions = True  # a bug in a callback must not kill the network thread
        client.enable_logger(_paho_log)
        client.max_inflight_messages_set(self._max_inflight + 2)  # + birth/death
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=min(1, b.reconnect_max_s), max_delay=b.reconnect_max_s)  # type: ignore[arg-type]
        if b.username is not None:
            client.username_pw_set(b.username, b.password)
        if b.tls_ca_file:
            # TLS 1.2+ with the broker's certificate checked against the site CA and its host name
            # (paho's default context: CERT_REQUIRED, check_hostname); a client certificate if given
            client.tls_set(ca_certs=b.tls_ca_file, certfile=b.tls_cert_file, keyfile=b.tls_key_file,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _session_payload(self, kind: str, body: wire_schema.Birth | wire_schema.Death) -> bytes:
        env = wire_schema.make_envelope(kind, self.unit_id, self.boot_id, 0, utc_iso(self._clock.utc_now()),
                                        self._clock.monotonic_s(), self._clock.utc_valid, body)
        return wire_schema.encode(env)

    def _set_will(self) -> None:
        """(Re)arm the Last Will; called before each connection attempt so its time is recent."""
        payload = self._session_payload("death", wire_schema.Death(reason="connection lost"))
        self._client.will_set(wire_schema.uplink_topic(self.unit_id, "death"), payload, qos=1, retain=False)

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: Any, properties: Properties | None) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("link %s: broker refused connection: %s", self.unit_id, reason_code)
            return
        if not flags.session_present:
            # No session to resume: paho's unacknowledged copies are meaningless to this broker
            # session; publish the rows again from the outbox instead (fresh packet ids and flags).
            client.drop_out_messages()
            with self._cond:
                self._session_gen += 1
                self._inflight.clear()
                self._early.clear()
                self._session_mids.clear()
                self._cursor = 0
        # else: paho re-sends its unacknowledged packets (same ids, DUP) right after this callback.
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        with self._cond:
            self._maybe_pending = True
            if self._ever_connected:
                self._reconnects += 1
            self._ever_connected = True
            self._window = max(1, min(self._max_inflight, int(receive_max) - 1)) if receive_max else \
                self._max_inflight
            max_packet = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
            self._max_packet_bytes = int(max_packet) if max_packet else None
        self._publish_birth(client)
        client.subscribe(wire_schema.command_topic(self.unit_id), qos=1)
        with self._cond:
            self._connected = True
            self._cond.notify_all()
        self._connect_failures.connected()
        log.info("link %s: connected to %s:%d (session present: %s, window %d, %d pending)", self.unit_id,
                 self.broker.host, self.broker.port, flags.session_present, self._window,
                 self._outbox.count())

    def _publish_birth(self, client: mqtt.Client) -> None:
        """Announce this boot: a boot exists at the controller only once its birth arrived, so the
        birth goes out before any backlog.  It says how far this boot's seq has got (``last_seq``)
        and where the previous boot ended (from the :class:`BootJournal`), so a loss at the end of
        a boot is a gap and a seq far beyond ``last_seq`` is suspicious (controller.sequence_guard)."""
        try:
            journal = self._seq.journal
            birth = self._birth().model_copy(update={
                "pending_backfill": self._outbox.count(), "last_seq": self._seq.last_seq,
                "prev_boot_id": journal.prev_boot_id if journal else None,
                "prev_boot_last_seq": journal.prev_boot_last_seq if journal else None})
            info = client.publish(wire_schema.uplink_topic(self.unit_id, "birth"),
                                  self._session_payload("birth", birth), qos=1)
            with self._cond:
                self._session_mids.add(info.mid)
        except Exception:
            log.exception("link %s: could not build or publish the birth message", self.unit_id)

    def rebirth(self) -> None:
        """Publish the birth again now (the controller asked: it holds data of a boot it has no
        birth for).  Safe from paho's thread (an ``on_command`` handler); a no-op while offline,
        as the next connect sends a birth anyway."""
        with self._cond:
            connected = self._connected and not self._stopped
        if connected:
            self._publish_birth(self._client)
            log.info("link %s: birth re-sent on the controller's request", self.unit_id)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError` around the attempt: the error (refused,
        # unreachable, TLS verification ...) is the exception being handled
        err = sys.exc_info()[1]
        self._connect_failures.failed(f"{self.broker.host}:{self.broker.port}", err, self.broker.reconnect_max_s)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Properties | None) -> None:
        with self._cond:
            was = self._connected
            self._connected = False  # in-flight rows stay mapped: a resumed session re-sends them
            self._cond.notify_all()
            stopping = self._stopped
        if was and not stopping:
            log.warning("link %s: disconnected (%s); buffering in the outbox", self.unit_id, reason_code)
        if not stopping:
            self._set_will()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Properties | None) -> None:
        failed = bool(getattr(reason_code, "is_failure", False))
        with self._cond:
            if mid in self._session_mids:
                self._session_mids.discard(mid)
                self._cond.notify_all()
                return
            row_id = self._inflight.pop(mid, None)
            if row_id is None:
                if not self._draining:
                    self._early[mid] = (failed, time.monotonic())
                return
            self._settle(row_id, failed, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            cmd = wire_schema.decode_command(message.payload)
            if cmd.unit_id != self.unit_id:
                raise wire_schema.WireError(f"command for unit {cmd.unit_id!r} arrived at {self.unit_id!r}")
        except wire_schema.WireError as err:
            with self._cond:
                self._rejected_commands += 1
            log.warning("link %s: rejected command on %s: %s", self.unit_id, message.topic, err)
            return
        try:
            self._on_command(cmd)
        except Exception:
            with self._cond:
                self._command_errors += 1
            log.exception("link %s: on_command failed for %s %s", self.unit_id, cmd.command, cmd.cmd_id)

    # ------------------------------------------------------------------ ack bookkeeping (under _cond)
    def _settle(self, row_id: int, failed: bool, reason_code: Any) -> None:
        if failed:
            self._publish_failures += 1
            self._held[row_id] = time.monotonic() + self._retry_failed_s
            now = time.monotonic()
            if now - self._last_fail_log >= _LOG_EVERY_S:
                self._last_fail_log = now
                log.warning("link %s: broker rejected outbox row %d (%s); will retry (%d failures so far)",
                            self.unit_id, row_id, reason_code, self._publish_failures)
        else:
            self._acked += 1
            self._acked_rows.append(row_id)
            self._deleting.add(row_id)
        self._cond.notify_all()

    def _room(self) -> int:
        if not self._connected or self._draining:
            return 0
        return self._window - len(self._inflight) - len(self._session_mids)

    def _due_holds(self, now: float) -> list[int]:
        return [r for r, due in self._held.items() if due <= now]

    def _has_work(self) -> bool:
        if self._sender_exit or self._acked_rows:
            return True
        if self._room() <= 0:
            return False
        return self._maybe_pending or bool(self._due_holds(time.monotonic()))

    # ------------------------------------------------------------------ sender thread
    def _sender_main(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._has_work():
                        now = time.monotonic()
                        future = [due for due in self._held.values() if due > now]
                        self._cond.wait(min(future) - now + 0.01 if future else None)
                    acked, self._acked_rows = self._acked_rows, []
                    if self._sender_exit and not acked:
                        return
                    for row_id in self._due_holds(time.monotonic()):
                        del self._held[row_id]
                        self._cursor = min(self._cursor, row_id - 1)
                        self._maybe_pending = True
                    room = self._room()
                    gen, cursor = self._session_gen, self._cursor
                    exclude = set(self._inflight.values()) | set(self._held) | self._deleting
                if acked:
                    self._delete_acked(acked)
                if room > 0:
                    self._publish_batch(room, exclude, cursor, gen)
        except Exception:
            log.exception("link %s: sender thread crashed; messages stay in the outbox", self.unit_id)

    def _delete_acked(self, acked: list[int]) -> None:
        try:
            self._outbox.ack_many(acked)
        except Exception:
            log.exception("link %s: could not delete %d acknowledged rows (they will be re-sent)",
                          self.unit_id, len(acked))
        with self._cond:
            self._deleting.difference_update(acked)

    def _publish_batch(self, room: int, exclude: set[int], cursor: int, gen: int) -> None:
        rows = self._outbox.take_batch(room, exclude, after_id=cursor)
        with self._cond:
            if len(rows) < room and self._session_gen == gen and self._cursor == cursor:
                self._maybe_pending = False  # all caught up; send() sets it again
        for row in rows:
            with self._cond:
                if self._draining or not self._connected:
                    self._maybe_pending = True
                    return
                self._publishing += 1
            try:
                go_on = self._publish_row(row, gen)
            finally:
                with self._cond:
                    self._publishing -= 1
                    self._cond.notify_all()
            if not go_on:
                return

    def _publish_row(self, row: OutboxRow, gen: int) -> bool:
        """Hand one outbox row to paho and register its packet id (sender thread only); False = stop
        this batch (paho did not keep it, the session was reset, or the link is stopping)."""
        payload = with_delivery(row.payload, self._delivery(row))
        try:
            # A packet over the broker's limit would get us disconnected on every retry and
            # block the link: keep such a row (for forensics / a broker reconfiguration) aside.
            limit = self._max_packet_bytes
            if limit is not None and len(payload) + len(row.topic) + 64 > limit:
                raise ValueError(f"{len(payload)} B payload exceeds the broker's {limit} B packet limit")
            info = self._client.publish(row.topic, payload, qos=1)
        except ValueError as err:
            log.error("link %s: cannot publish outbox row %d (%s seq %d), retry in 60 s: %s",
                      self.unit_id, row.id, row.kind, row.seq, err)
            with self._cond:
                self._publish_failures += 1
                self._held[row.id] = time.monotonic() + 60.0
            return True
        with self._cond:
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN) or self._session_gen != gen:
                # paho did not keep it, or the session was reset meanwhile (paho's copies
                # dropped): the row stays pending and is taken again.
                self._maybe_pending = True
                return False
            # NO_CONN: paho keeps the packet and sends it when the session resumes.
            self._published += 1
            self._cursor = max(self._cursor, row.id)
            self._inflight[info.mid] = row.id
            early = self._early.pop(info.mid, None)
            if self._early:
                old = time.monotonic() - _EARLY_ACK_MAX_AGE_S
                for mid in [m for m, (_, t) in self._early.items() if t < old]:
                    del self._early[mid]
            halt = self._draining or not self._connected
        if early is not None:
            self._resolve_early(info, row.id, early[0])
        return not halt

    def _resolve_early(self, info: mqtt.MQTTMessageInfo, row_id: int, failed: bool) -> None:
        """A PUBACK with this packet id arrived before we registered it.  It is ours only if this
        message object is marked published (paho marks it right after ``on_publish``); otherwise
        it was a stale PUBACK for an earlier use of the id and ours is still to come."""
        deadline = time.monotonic() + 0.5
        try:
            while not info.is_published():
                if time.monotonic() > deadline:
                    return
                time.sleep(0.001)
        except (RuntimeError, ValueError):
            return
        with self._cond:
            if self._inflight.get(info.mid) == row_id:
                del self._inflight[info.mid]
                self._settle(row_id, failed, "PUBACK before registration")

    def _delivery(self, row: OutboxRow) -> str:
        if row.offline or row.boot_id != self.boot_id:
            return "backfill"
        age_s = self._clock.monotonic_s() - row.created_mono_s
        return "backfill" if age_s > self._live_window_s or age_s < 0 else "live"
