"""The controller's MQTT 5 link: persistent session, manual acknowledgement, command publishing.

Why this shape (paho-mqtt 2.x, ``CallbackAPIVersion.VERSION2``):

* **Persistent session** - fixed ``client_id``, ``clean_start=False`` and a Session Expiry Interval:
  the broker keeps our subscription and queues QoS-1 uplinks while the controller is down, and
  re-sends those we had not acknowledged when we come back (MQTT 5.0 sections 3.1.2.4, 4.4).
* **Manual acknowledgement** - ``Client(manual_ack=True)``: PUBACK is sent by :meth:`ack` only after
  the service has committed the message to SQLite, so a crash between receipt and commit loses
  nothing; the broker re-sends it and the store's ledger drops the copy if it had been committed.
* **Receive Maximum** bounds how many un-acknowledged messages the broker sends us (MQTT 5.0
  3.1.2.11), which bounds the in-memory inbox.
* The paho network thread only enqueues (:attr:`inbox`); parsing, SQLite and dispatch run in the
  service's thread, so a slow disk never stalls keep-alives.
* An ack is sent only on the connection the message arrived on (``generation``): after a
  reconnect the broker re-sends un-acked messages, and a packet id from the old connection must
  not acknowledge whatever now uses that id.
* Reconnection is paho's loop with exponential back-off (1 s .. ``reconnect_max_s``).
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.wire_schema import UPLINK_SUBSCRIPTION, Command, command_topic, encode, shared_subscription
from controller.config import ControllerBrokerConfig

__all__ = ["ControllerMqtt", "InboundMessage"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool
    generation: int  # connection it arrived on (acks are only valid there)
    size_bytes: int = -1  # size on the wire; > len(payload) when only an excerpt of an oversized one is kept


#: Bytes of an oversized payload kept as evidence (the rest is dropped as it arrives).
OVERSIZED_EXCERPT_BYTES = 1024


class ControllerMqtt:
    def __init__(self, config: ControllerBrokerConfig, max_payload_bytes: int | None = None):
        self.config = config
        # Why here: the inbox holds up to receive_maximum messages (and any number of QoS-0 ones);
        # 100 messages of 10 MB from a broker without message_size_limit would sit in memory as
        # 1 GB (issue 14, row 13). Past the limit only an excerpt and the size are queued, and
        # ingest rejects it as 'oversized' (counted, recorded, acknowledged).
        self.max_payload_bytes = max_payload_bytes
        self.subscription = (
            shared_subscription(config.shared_subscription_group)
            if config.shared_subscription_group
            else UPLINK_SUBSCRIPTION
        )
        self.inbox: queue.Queue[InboundMessage] = queue.Queue()
        self._generation = 0
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self.session_present: bool | None = None
        self.acks_sent = 0
        self.acks_skipped = 0
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=True,
        )
        if config.username:
            c.username_pw_set(config.username, config.password)
        if config.tls_ca_file:
            # the broker's certificate is checked against the site CA and its host name; our client
            # certificate's Common Name is our identity, username and client id at the site broker
            c.tls_set(ca_certs=config.tls_ca_file, certfile=config.tls_cert_file, keyfile=config.tls_key_file,
                      tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.reconnect_delay_set(min_delay=1, max_delay=max(1, int(config.reconnect_max_s)))
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        log.info(
            "connecting to %s:%d as %s (persistent session, %s)",
            self.config.host,
            self.config.port,
            self.config.client_id,
            self.subscription,
        )
        self._client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly; the broker keeps the session (and queues) for session_expiry_s."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    # ------------------------------------------------------------------ data path
    def ack(self, msg: InboundMessage) -> bool:
        """PUBACK ``msg`` if it arrived on the current connection (call after it is committed)."""
        if msg.qos == 0:
            return True
        with self._lock:
            current = msg.generation == self._generation and self._connected.is_set()
        if not current:
            self.acks_skipped += 1  # the broker re-sends it on the new connection; the ledger de-dups
            return False
        rc = self._client.ack(msg.mid, msg.qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self.acks_skipped += 1
            return False
        self.acks_sent += 1
        return True

    def publish_command(self, unit_id: str, cmd: Command) -> None:
        """QoS-1 command to one unit; paho queues it while disconnected and sends on reconnect."""
        info = self._client.publish(command_topic(unit_id), encode(cmd), qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"publish to {unit_id} failed: {mqtt.error_string(info.rc)}")

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: object,
        properties: object,
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("broker refused connection: %s", reason_code)
            return
        with self._lock:
            self._generation += 1
        self.session_present = bool(flags.session_present)
        self._connected.set()
        log.info("connected (session present: %s); subscribing %s QoS 1", self.session_present, self.subscription)
        client.subscribe(self.subscription, options=SubscribeOptions(qos=1))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason_code: object, properties: object
    ) -> None:
        self._connected.clear()
        log.warning("disconnected from broker (%s); paho reconnects with back-off", reason_code)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list, properties: object
    ) -> None:
        for rc in reason_codes:
            if getattr(rc, "is_failure", False):
                log.error("subscription %s refused: %s", self.subscription, rc)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # still queued (and so rejected + acked) rather than stuck un-acked
            topic = bytes(getattr(message, "_topic", b"")).decode("utf-8", errors="replace")
        payload = message.payload
        size = len(payload)
        if self.max_payload_bytes is not None and size > self.max_payload_bytes:
            payload = payload[:OVERSIZED_EXCERPT_BYTES]
        self.inbox.put(
            InboundMessage(
                topic=topic,
                payload=bytes(payload),
                mid=message.mid,
                qos=message.qos,
                dup=bool(message.dup),
                generation=self._generation,
                size_bytes=size,
            )
        )
