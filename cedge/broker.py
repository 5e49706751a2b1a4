"""A private MQTT broker for the demo and the end-to-end tests when none is configured.

Mosquitto is the production broker, so the demo runs the same broker with the same configuration
as a site: the mosquitto.conf `cedge site` generates (TLS listener, client certificates required,
certificate identity as username and client id, no anonymous access, the site ACL and CRL, bounded
message and queue sizes), on a free loopback port with persistence and log in the demo's work
directory.  (Pure-Python brokers such as amqtt speak MQTT 3.1.1 only, and the controller needs
MQTT 5 session expiry.)
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_running(proc: subprocess.Popen[bytes], log_path: Path, offset: int = 0,
                       timeout_s: float = 15.0) -> bool:
    """Wait for Mosquitto's "running" log line after byte ``offset`` (its listeners are open then).

    Why not probe the port: on a TLS listener a bare TCP connect is logged as a failed connection,
    which reads like an attack in the broker log of every demo.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with open(log_path, "rb") as f:
                f.seek(offset)
                if b" running" in f.read():
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)


class EmbeddedBroker:
    """One Mosquitto running a site's broker config (``site_dir``: a `cedge site init` directory)."""

    def __init__(self, work_dir: str | Path, site_dir: str | Path, port: int | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.site_dir = Path(site_dir)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from cedge.site.manage import site_broker_conf

        exe = find_mosquitto()
        if exe is None:
            raise RuntimeError("no mosquitto binary found: install it (Debian: apt-get install mosquitto) "
                               "or point the demo at a running site broker with --broker-host/--broker-port")
        data_dir = self.work_dir / "data"
        data_dir.mkdir(exist_ok=True)
        log_path = self.work_dir / "mosquitto.log"
        conf = self.work_dir / "mosquitto.conf"
        # Started as root, mosquitto would drop to user 'mosquitto' and could not read the site's
        # 0600 keys or write its log in our private work dir: stay the user we are.
        conf.write_text(site_broker_conf(self.site_dir, port=self.port, bind_address=self.host,
                                         persistence_dir=data_dir, log_file=log_path,
                                         run_as_user=pwd.getpwuid(os.geteuid()).pw_name))
        offset = log_path.stat().st_size if log_path.exists() else 0  # a restart appends to the log
        with open(self.work_dir / "broker.out", "ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        if not wait_until_running(self.proc, log_path, offset, 15.0):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port} "
                               f"(see {self.work_dir / 'broker.out'} and {self.work_dir / 'mosquitto.log'})")

    def reload(self, timeout_s: float = 10.0) -> bool:
        """SIGHUP: Mosquitto re-reads the ACL and the CRL (after `cedge site enroll` / `revoke`).

        Returns once its log says so (it reloads in one turn of its event loop, before serving the
        next packet), False if it did not within ``timeout_s``.
        """
        if self.proc is None or self.proc.poll() is not None:
            return False
        log_path = self.work_dir / "mosquitto.log"

        def count() -> int:
            try:
                return log_path.read_bytes().count(b"Reloading config")
            except OSError:
                return 0

        before = count()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if count() > before:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
