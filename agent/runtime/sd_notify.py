"""The systemd notification protocol (sd_notify(3)), with the standard library only.

Why not a package: the protocol is one datagram on an AF_UNIX socket named by ``$NOTIFY_SOCKET``
(``READY=1``, ``WATCHDOG=1``, ``STATUS=...``, ``STOPPING=1``), and the package we used (sdnotify)
swallowed every send error, so an agent whose watchdog pings never reached systemd looked healthy
in its own log until systemd killed it.  Here a failing send is logged once at WARNING.

Address forms (sd_notify(3)): an absolute path, or ``@name`` for the Linux abstract namespace.
The ``vsock:`` form (systemd 254+, for virtual machines) is not used on our units and is reported
as unsupported.  The watchdog is enabled for this process only when ``WATCHDOG_USEC`` is set and
``WATCHDOG_PID``, if set, is our pid (sd_watchdog_enabled(3)): a child we start must not ping for us.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

log = logging.getLogger(__name__)


def _address(value: str) -> str | bytes | None:
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """systemd's watchdog period for this process (``WatchdogSec=``) in seconds, or None if it has none."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6


class SystemdNotifier:
    """Sends notifications to the service manager; a no-op when not started by systemd."""

    def __init__(self, notify_socket: str | None = None) -> None:
        value = os.environ.get("NOTIFY_SOCKET", "") if notify_socket is None else notify_socket
        self._address = _address(value) if value else None
        if value and self._address is None:
            log.warning("NOTIFY_SOCKET=%r is not a path or @abstract name: no systemd notifications", value)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, state: str) -> bool:
        """Send ``state`` (e.g. ``"READY=1"``, ``"WATCHDOG=1"``); True if it was handed to the socket."""
        if self._address is None:
            return False
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(state.encode(), self._address)
            return True
        except OSError as err:
            if not self._warned:
                log.warning("systemd notification %r not sent (%s); systemd may consider this service "
                            "hung", state.split("=", 1)[0], err)
                self._warned = True
            return False

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
