"""The agent's uplink: durable outbox, per-boot sequence numbers, MQTT link to the controller."""

from agent.link.mqtt_link import MqttLink
from agent.link.outbox import Outbox, OutboxCorrupt, OutboxError, OutboxRow
from agent.link.sequence import BootSequence, new_boot_id

__all__ = ["BootSequence", "MqttLink", "Outbox", "OutboxCorrupt", "OutboxError", "OutboxRow", "new_boot_id"]
