"""A private MQTT broker for the demo and tests when none is configured.

Mosquitto is the production broker, so the demo runs the same broker: a private Mosquitto on a
free loopback port, persistence on, in the demo's work directory.  (Pure-Python brokers such as
amqtt speak MQTT 3.1.1 only, and the controller needs MQTT 5 session expiry.)
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)


MOSQUITTO_CONF = """# written by customs-edge for a private broker
# Started as root, mosquitto would drop to user 'mosquitto' and could not write its log or
# persistence file in our private work dir: stay the user we are.
user {user}
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {data_dir}/
autosave_interval 5
max_queued_messages 1000000
max_inflight_messages 1000
log_dest file {data_dir}/mosquitto.log
log_type error
log_type warning
log_type notice
"""


class EmbeddedBroker:
    def __init__(self, work_dir: str | Path, port: int | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise RuntimeError("no mosquitto binary found: install it (Debian: apt-get install mosquitto) "
                               "or point the demo at a running broker with --broker-host/--broker-port")
        conf = self.work_dir / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=self.port, data_dir=self.work_dir,
                                             user=pwd.getpwuid(os.geteuid()).pw_name))
        with open(self.work_dir / "broker.out", "ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        if not wait_for_port(self.host, self.port, 15.0):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port} "
                               f"(see {self.work_dir / 'broker.out'})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
