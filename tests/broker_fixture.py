"""A real Mosquitto broker for tests, on a free loopback port, with its own config and data dir.

Two modes: the default is an anonymous plain-TCP broker for tests of the link itself (QoS, sessions,
outages); :meth:`Mosquitto.secure` runs a `cedge site` directory's generated config (TLS, client
certificates, ACL, CRL, size limits) for tests of identity and authorization.

Why a real broker: QoS-1 acknowledgement, the Last Will, persistent sessions and broker restarts
are exactly what the link must get right, and an in-process fake would encode our own
assumptions.  Persistence is on, so a :meth:`Mosquitto.stop` / :meth:`Mosquitto.start` cycle
(same port, same data dir) keeps persistent sessions and their queued messages, like a production
broker restart; :meth:`Mosquitto.kill` is a crash (SIGKILL, only what autosave wrote survives).
"""

from __future__ import annotations

import os
import pwd
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary ($MOSQUITTO, PATH, usual sbin dirs), or None."""
    env = os.environ.get("MOSQUITTO")
    if env and os.access(env, os.X_OK):
        return env
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One mosquitto process bound to ``host:port``; restartable on the same port and data dir."""

    host = "127.0.0.1"

    def __init__(self, workdir: str | os.PathLike[str], port: int | None = None, binary: str | None = None,
                 extra_conf: str = "", site_dir: str | os.PathLike[str] | None = None) -> None:
        binary = binary or find_mosquitto()
        if binary is None:
            raise FileNotFoundError("mosquitto binary not found (apt install mosquitto, or set $MOSQUITTO)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(self.host)
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.site_dir = Path(site_dir).resolve() if site_dir is not None else None
        if self.site_dir is not None:
            from cedge.site.manage import site_broker_conf

            # the site's own generated config (TLS, client certificates, ACL, CRL, limits) on our
            # port, data dir and log; its ACL and CRL stay in the site, so `cedge site` + reload() act
            self.conf_path.write_text(site_broker_conf(
                self.site_dir, port=self.port, bind_address=self.host, persistence_dir=self.data_dir,
                log_file=self.log_path, run_as_user=pwd.getpwuid(os.geteuid()).pw_name) + f"{extra_conf}\n")
            return
        self.conf_path.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.data_dir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 0\n"
            "max_keepalive 600\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\n"
            # Started as root, mosquitto would drop to user 'mosquitto' and could not write its
            # log or persistence file in our private tmp dir: stay the user we are.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            f"{extra_conf}\n")

    @classmethod
    def secure(cls, workdir: str | os.PathLike[str], site_dir: str | os.PathLike[str], port: int | None = None,
               extra_conf: str = "") -> Mosquitto:
        """A broker running ``site_dir``'s generated secure config (a `cedge site init` directory)."""
        return cls(workdir, port=port, extra_conf=extra_conf, site_dir=site_dir)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until it accepts TCP connections."""
        if self.running:
            return
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0  # a restart appends
        self._proc = subprocess.Popen([self.binary, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, start_new_session=True)
        if self.site_dir is not None:
            # a bare TCP probe of a TLS listener is logged as a failed connection, which would read
            # like an attack in the log the attack suite checks: wait for the 'running' line instead
            from cedge.broker import wait_until_running

            if wait_until_running(self._proc, self.log_path, offset, timeout_s):
                return
            timeout_s = 0.0  # exited (reported below) or not running in time (killed below)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode} at start: {err.strip()} "
                                   f"{self.log_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} within "
                                       f"{timeout_s} s; log: {self.log_text()[-2000:]}") from None
                time.sleep(0.05)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM): clients see their connection close; persistence is saved."""
        self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Crash the broker (SIGKILL)."""
        self._end(signal.SIGKILL, 10.0)

    def freeze(self) -> None:
        """SIGSTOP: the broker hangs with its sockets open (no PUBACKs), like a stuck host."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its config (ACL and password files included)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGHUP)

    def _end(self, sig: signal.Signals, timeout_s: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def broker_config(self, identity: str | None = None, **overrides: object):  # -> agent.config.BrokerConfig
        """A BrokerConfig pointing at this broker, with test-friendly fast reconnects; on a secure
        broker ``identity`` picks the site certificate it connects with."""
        from agent.config import BrokerConfig

        fields: dict[str, object] = {"host": self.host, "port": self.port, "keepalive_s": 5,
                                     "reconnect_max_s": 0.5}
        if identity is not None:
            fields.update(self.tls_fields(identity))
        fields.update(overrides)
        return BrokerConfig(**fields)

    def identity_dir(self, identity: str) -> Path:
        """Directory of ``identity``'s certificate and key in the site (secure mode only)."""
        from cedge.site.layout import SiteLayout
        from cedge.site.registry import load_registry

        if self.site_dir is None:
            raise RuntimeError("identity_dir(): this broker was not started from a site (Mosquitto.secure)")
        layout = SiteLayout.at(self.site_dir)
        return layout.identity_dir(identity, identity in load_registry(layout.registry).controllers)

    def tls_fields(self, identity: str) -> dict[str, object]:
        """``broker:`` keys (CA, certificate, key, client id) of ``identity`` in the site."""
        from cedge.site.profiles import tls_fields

        return tls_fields(identity, self.identity_dir(identity))

    def client(self, identity: str | None, client_id: str | None = None, protocol: int = 5,
               reconnect_on_failure: bool = True):  # -> mqtt.Client
        """A paho client (not connected): TLS with ``identity``'s site certificate, or, with
        ``identity=None``, plain TCP (anonymous) on the anonymous broker or TLS without a client
        certificate on a secure one.  ``reconnect_on_failure=False``: one connection attempt only
        (an attacker that must not reconnect and take a session back and forth)."""
        import ssl

        import paho.mqtt.client as mqtt

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or identity or "test-client",
                        protocol=mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311,
                        reconnect_on_failure=reconnect_on_failure)
        if self.site_dir is not None:
            from cedge.site.layout import SiteLayout

            if identity is None:
                c.tls_set(ca_certs=str(SiteLayout.at(self.site_dir).broker_ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
            else:
                d = self.identity_dir(identity)
                c.tls_set(ca_certs=str(d / "ca.crt"), certfile=str(d / "client.crt"), keyfile=str(d / "client.key"),
                          tls_version=ssl.PROTOCOL_TLS_CLIENT)
        return c

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TcpProxy:
    """A loopback TCP relay in front of a broker, to make network faults the broker survives.

    ``hold()`` stops relaying in both directions with the connections left open (a dead link
    that TCP has not noticed yet: no PUBACKs come back); ``cut()`` closes every relayed connection
    (the client sees it drop, the broker keeps its sessions) and resumes relaying for new ones;
    ``down()``/``up()`` refuse / accept new connections.  One selector thread; ``close()`` joins it.
    """

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target = (target_host, target_port)
        self._lsock = socket.create_server((host, 0))
        self._lsock.setblocking(False)
        self.port = int(self._lsock.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._lsock, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._commands: list[str] = []
        self._held = False
        self._refusing = False
        self._closing = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()

    def _command(self, cmd: str) -> None:
        with self._lock:
            self._commands.append(cmd)
        self._wake_w.send(b"x")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait until the proxy thread applied it
            with self._lock:
                if cmd not in self._commands:
                    return
            time.sleep(0.005)
        raise RuntimeError(f"proxy did not apply {cmd}")

    def hold(self) -> None:
        self._command("hold")

    def cut(self) -> None:
        self._command("cut")

    def down(self) -> None:
        self._command("down")

    def up(self) -> None:
        self._command("up")

    def close(self) -> None:
        if self._thread.is_alive():
            self._closing = True
            self._wake_w.send(b"x")
            self._thread.join(timeout=5)
        for s in (self._lsock, self._wake_r, self._wake_w):
            s.close()

    # -- proxy thread
    def _set_reading(self, on: bool) -> None:
        for a, b in self._pairs:
            for src, dst in ((a, b), (b, a)):
                if on:
                    self._sel.register(src, selectors.EVENT_READ, (src, dst))
                else:
                    self._sel.unregister(src)

    def _close_pair(self, pair: tuple[socket.socket, socket.socket]) -> None:
        if pair in self._pairs:
            self._pairs.remove(pair)
            for s in pair:
                if not self._held:
                    self._sel.unregister(s)
                s.close()

    def _apply(self, cmd: str) -> None:
        if cmd == "hold" and not self._held:
            self._set_reading(False)
            self._held = True
        elif cmd == "cut":
            if self._held:
                self._set_reading(True)
                self._held = False
            for pair in list(self._pairs):
                for s in pair:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                self._close_pair(pair)
        elif cmd == "down":
            self._refusing = True
        elif cmd == "up":
            self._refusing = False

    def _run(self) -> None:
        while not self._closing:
            for key, _ in self._sel.select(timeout=0.2):
                if key.data == "wake":
                    self._wake_r.recv(4096)
                    with self._lock:
                        cmds = list(self._commands)
                    for cmd in cmds:
                        self._apply(cmd)
                    with self._lock:
                        del self._commands[:len(cmds)]
                elif key.data == "accept":
                    try:
                        client, _ = self._lsock.accept()
                    except BlockingIOError:
                        continue
                    if self._refusing:
                        client.close()
                        continue
                    try:
                        upstream = socket.create_connection(self.target, timeout=2)
                    except OSError:
                        client.close()
                        continue
                    client.setblocking(True)
                    upstream.setblocking(True)
                    pair = (client, upstream)
                    self._pairs.append(pair)
                    if not self._held:
                        self._sel.register(client, selectors.EVENT_READ, (client, upstream))
                        self._sel.register(upstream, selectors.EVENT_READ, (upstream, client))
                elif not self._held:
                    src, dst = key.data
                    pair = next((p for p in self._pairs if src in p), None)
                    try:
                        data = src.recv(65536)
                        if data:
                            dst.sendall(data)
                    except OSError:
                        data = b""
                    if not data and pair is not None:
                        self._close_pair(pair)
        for pair in list(self._pairs):
            self._close_pair(pair)
