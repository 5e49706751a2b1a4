"""A private PostgreSQL server for the ingest benchmark and the tests of the PostgreSQL store.

Why a private server rather than the machine's: the bench and the tests must neither need nor touch
a configured database; Debian's server binaries (package ``postgresql``, under
``/usr/lib/postgresql/<major>/bin``) are started on a fresh ``initdb`` directory in a temporary
folder, listening on a Unix socket only (no TCP port to collide with), trust authentication on that
socket (its directory is the only door), and removed afterwards.

PostgreSQL refuses to run as root; started by root, the server runs as the unprivileged ``postgres``
account that the Debian package creates (or ``$CEDGE_PG_USER``), and its directory is handed to it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def find_pg_bin() -> Path | None:
    """Directory holding ``initdb`` and ``postgres``: $CEDGE_PG_BIN, Debian's newest, or the PATH."""
    env = os.environ.get("CEDGE_PG_BIN")
    if env and (Path(env) / "initdb").exists():
        return Path(env)
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if debian:
        return Path(debian[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _run_as() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("CEDGE_PG_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"running as root and there is no '{name}' account to run PostgreSQL as "
                           "(install Debian's postgresql package, or set CEDGE_PG_USER)") from None


class PrivatePostgres:
    """One PostgreSQL server on a temporary data directory and Unix socket; :meth:`stop` removes it."""

    def __init__(self, fsync: bool = True, bin_dir: Path | None = None, max_connections: int = 60) -> None:
        found = bin_dir or find_pg_bin()
        if found is None:
            raise FileNotFoundError("PostgreSQL server binaries not found (apt install postgresql, or set "
                                    "CEDGE_PG_BIN to the directory holding initdb)")
        self.bin_dir = found
        self.fsync = fsync
        self.max_connections = max_connections
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="cedge-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_path = self.root / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.db_user = "postgres"

    def _as_server_user(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def start(self, timeout_s: float = 60.0) -> PrivatePostgres:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            for p in (self.root, self.socket_dir):
                os.chown(p, self.user.pw_uid, self.user.pw_gid)
        if not self.data_dir.exists():
            init = subprocess.run(
                [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.db_user, "--auth=trust",
                 "-E", "UTF8", "--no-locale", "--no-sync"],
                capture_output=True, text=True, check=False, **self._as_server_user())  # type: ignore[call-overload]
            if init.returncode != 0:
                raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr.strip()[-2000:]}")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server's stderr for its whole life
        if self.user is not None:
            os.chown(self.log_path, self.user.pw_uid, self.user.pw_gid)
        self._proc = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-k", str(self.socket_dir),
             "-c", "listen_addresses=", "-c", f"fsync={'on' if self.fsync else 'off'}",
             "-c", f"synchronous_commit={'on' if self.fsync else 'off'}",
             "-c", f"max_connections={self.max_connections}", "-c", "shared_buffers=64MB"],
            stdout=log, stderr=log, start_new_session=True, **self._as_server_user())  # type: ignore[call-overload]
        log.close()
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                text, code = self.log_text()[-2000:], self._proc.returncode
                self.stop()
                raise RuntimeError(f"postgres exited with {code}: {text}")
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    text = self.log_text()[-2000:]
                    self.stop()
                    raise RuntimeError(f"postgres not ready within {timeout_s} s: {text}") from None
                time.sleep(0.1)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.db_user}@/{dbname}?host={self.socket_dir}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def terminate_backends(self, dbname: str, application_name: str | None = None) -> int:
        """Kill the server sessions on ``dbname`` (a lost connection, as after a network fault)."""
        import psycopg

        sql = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
               "WHERE datname = %s AND pid <> pg_backend_pid()")
        params: list[str] = [dbname]
        if application_name is not None:
            sql += " AND application_name = %s"
            params.append(application_name)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            row = conn.execute(sql, params).fetchone()
        return int(row[0]) if row else 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT: sessions are ended), then the directory is removed."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
