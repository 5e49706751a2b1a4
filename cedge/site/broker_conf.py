"""The site broker's Mosquitto configuration and ACL, generated from the enrolled identities.

Every option below exists in Mosquitto 2.0.11 (``man mosquitto.conf``) and is explained where it is
written.  In short:

* **Who may connect**: one TLS listener (``cafile``/``certfile``/``keyfile``/``crlfile``) with
  ``require_certificate true``: no certificate from the site CA, no TCP session.  ``allow_anonymous
  false`` on top, for defence in depth.
* **Who you are**: ``use_identity_as_username true`` makes the certificate's Common Name the MQTT
  username; ``use_username_as_clientid true`` then replaces the client id with it, so a client can
  only ever take over the session of its own identity (issue 14 row 7: a unit's certificate cannot
  connect as ``cedge-controller`` and push the controller off).
* **What you may do**: the ACL (:func:`render_acl`).  A unit may publish only under
  ``cedge/v1/up/<its id>/`` and read only ``cedge/v1/down/<its id>/cmd``; only controller
  identities may read the up-stream and publish commands.  Written per enrolled identity (``user``
  blocks), not with ``pattern ... %u`` lines: patterns apply to *every* authenticated user, so a
  controller certificate, or the still-valid certificate of a unit that was un-enrolled, would gain
  unit rights.  With ``user`` blocks an identity that is not listed can do nothing at all.
* **How much**: ``max_packet_size`` disconnects a client that announces a larger packet before the
  broker buffers it, ``message_size_limit`` refuses larger payloads, ``max_queued_messages`` /
  ``max_queued_bytes`` bound each client's queue (issue 14 row 13: ten 10 MB messages grew the broker
  to 1.1 GB).  The limit is the wire schema's own (``MAX_UPLINK_BYTES``): the largest message the
  schema allows is an alarm with a 16384-channel spectrum of 13-digit counts, ~230 kB of JSON; the
  demo's largest spectra are a few kB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.wire_schema import MAX_UPLINK_BYTES, TOPIC_ROOT

#: Largest accepted PUBLISH payload: what the controller accepts (agent.wire_schema), no more.
MESSAGE_SIZE_LIMIT_BYTES = MAX_UPLINK_BYTES
#: Largest MQTT packet (payload + topic + properties); the broker drops a client announcing more.
MAX_PACKET_SIZE_BYTES = MESSAGE_SIZE_LIMIT_BYTES + 64 * 1024
#: Per-client queue while a client (normally the controller) is away.  Beyond it Mosquitto drops
#: new messages for that client; the controller then sees the loss as sequence gaps, never silently.
MAX_QUEUED_BYTES = 256 * 1024 * 1024
MAX_QUEUED_MESSAGES = 1_000_000


@dataclass(frozen=True)
class BrokerFiles:
    """Paths as the broker host sees them (the files need not exist where the config is written)."""

    cafile: Path
    certfile: Path
    keyfile: Path
    crlfile: Path
    acl_file: Path
    persistence_dir: Path
    log_file: Path | None = None  # None: stderr (the journal under systemd)


def render_mosquitto_conf(port: int, bind_address: str, files: BrokerFiles, run_as_user: str | None = None,
                          autosave_interval_s: int = 30) -> str:
    """A complete mosquitto.conf for the site listener (TLS, client certificates, ACL, limits)."""
    log_dest = f"log_dest file {files.log_file}" if files.log_file else "log_dest stderr"
    user = (f"# Mosquitto started as root drops to this user; the broker files must be readable by it.\n"
            f"user {run_as_user}\n") if run_as_user else ""
    return f"""# customs-edge site broker, written by `cedge site` (init / enroll / revoke): edit the site.
# Mosquitto 2.0: every option below is described in `man mosquitto.conf`.
{user}per_listener_settings false

# --- who may connect: TLS with a client certificate from the site CA, nothing else
listener {port} {bind_address}
protocol mqtt
tls_version tlsv1.2
cafile {files.cafile}
certfile {files.certfile}
keyfile {files.keyfile}
# revoked client certificates (`cedge site revoke`); re-read by restarting the broker
crlfile {files.crlfile}
require_certificate true
# the certificate's Common Name is the username, and the username is the client id: nobody can
# connect under (and so take over the session of) another identity
use_identity_as_username true
use_username_as_clientid true
allow_anonymous false

# --- what each identity may do (re-read on SIGHUP)
acl_file {files.acl_file}

# --- how much: bounded message size and per-client queues
message_size_limit {MESSAGE_SIZE_LIMIT_BYTES}
max_packet_size {MAX_PACKET_SIZE_BYTES}
max_queued_messages {MAX_QUEUED_MESSAGES}
max_queued_bytes {MAX_QUEUED_BYTES}
max_inflight_messages 200
max_keepalive 600
# MQTT 5 session expiry is requested by the clients; cap it at a week
persistent_client_expiration 7d

# --- persistence: QoS-1 messages queued for the controller's persistent session survive a restart
persistence true
persistence_location {files.persistence_dir}/
autosave_interval {autosave_interval_s}

{log_dest}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
"""


def render_acl(controllers: Sequence[str], units: Sequence[str]) -> str:
    """ACL: controllers read every up-stream and publish commands; each unit its own topics only.

    ``$share/<group>/...`` is listed for the controllers because Mosquitto checks a SUBSCRIBE against
    the filter as sent, shared-subscription prefix included; delivery is checked on the real topic.
    """
    lines = [
        "# customs-edge broker ACL, written by `cedge site`: enroll / revoke units there, not here.",
        "# Nothing before the first `user` line (that would apply to anonymous clients) and no",
        "# `pattern` lines (they would apply to every authenticated identity, enrolled or not).",
        "",
    ]
    for name in controllers:
        lines += [f"user {name}",
                  f"topic read {TOPIC_ROOT}/up/#",
                  f"topic read $share/+/{TOPIC_ROOT}/up/#",
                  f"topic write {TOPIC_ROOT}/down/+/cmd",
                  ""]
    for unit in units:
        lines += [f"user {unit}",
                  f"topic write {TOPIC_ROOT}/up/{unit}/#",
                  f"topic read {TOPIC_ROOT}/down/{unit}/cmd",
                  ""]
    return "\n".join(lines)
