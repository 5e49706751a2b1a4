"""PostgreSQL backend (psycopg 3): one database shared by several controller processes (issue 20).

Why PostgreSQL for many controllers: row-level locking and MVCC let N writers ingest at once, where
SQLite serialises every writer on one file lock; ``INSERT ... ON CONFLICT DO NOTHING`` on the
``received`` primary key makes de-duplication on (unit, boot, seq) the database's job, so two
controllers that both receive a QoS-1 redelivery store it once (the second insert waits for the first
transaction and then finds the key taken).

The store's SQL uses SQLite's placeholders (``?`` and ``:name``); :func:`to_pyformat` rewrites them to
psycopg's (``%s``, ``%(name)s``) once per statement text (cached), outside string literals.  The
connection is in autocommit mode and transactions are explicit, as on SQLite.  Text with a NUL
character (which PostgreSQL refuses in ``text``) can only come from an outsider's payload excerpt;
it is stored with U+FFFD in its place rather than failing the write.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg.rows import dict_row

from controller.store.backend import BackendError, BackendIntegrityError, Params

_TOKEN = re.compile(r"'(?:[^']|'')*'|::|\?|:([A-Za-z_]\w*)|%")


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """``?`` -> ``%s``, ``:name`` -> ``%(name)s``, ``%`` -> ``%%``; string literals and ``::`` casts kept."""

    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok.startswith("'") or tok == "::":
            return tok
        if tok == "?":
            return "%s"
        if tok == "%":
            return "%%"
        return f"%({m.group(1)})s"

    return _TOKEN.sub(sub, sql)


def redact(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[-1]}"))


def _clean(v: Any) -> Any:
    return v.replace("\x00", "\ufffd") if isinstance(v, str) and "\x00" in v else v


def _params(params: Params) -> Params:
    if isinstance(params, dict):
        return {k: _clean(v) for k, v in params.items()}
    return [_clean(v) for v in params]


def translate(err: psycopg.Error) -> BackendError | BackendIntegrityError:
    if isinstance(err, psycopg.errors.IntegrityError):
        return BackendIntegrityError(f"postgresql: {err}".strip())
    out = BackendError(f"postgresql: {str(err).strip() or type(err).__name__}")
    out.retry_now = getattr(err, "sqlstate", None) in ("40P01", "40001")  # deadlock, serialization failure
    return out


class PostgresBackend:
    dialect = "postgresql"
    greatest = "GREATEST"
    for_update = " FOR UPDATE"

    def __init__(self, url: str, connect_timeout_s: float = 10.0, lock_timeout_ms: int = 30_000) -> None:
        self.url = url
        self.location = redact(url)
        self._connect_timeout_s = connect_timeout_s
        self._lock_timeout_ms = lock_timeout_ms
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout_s)),
                                   application_name="cedge-controller")
            # a writer waits for another's row lock at most this long (then: retry later), like
            # SQLite's busy_timeout; the server's deadlock detector breaks cycles sooner
            conn.execute(f"SET lock_timeout = {int(self._lock_timeout_ms)}")
        except psycopg.Error as err:
            raise translate(err) from err
        return conn

    def _ready(self) -> psycopg.Connection[Any]:
        """The connection, re-opened if the server dropped it (only between transactions)."""
        if self._conn.closed or (self._conn.broken and not self.in_transaction):
            self._conn = self._connect()
        return self._conn

    def execute(self, sql: str, params: Params = ()) -> psycopg.Cursor[Any]:
        try:
            if not params:  # no placeholders to rewrite: psycopg sends the text as it is
                return self._ready().execute(sql)
            return self._ready().execute(to_pyformat(sql), _params(params))
        except psycopg.Error as err:
            raise translate(err) from err

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        try:
            with self._ready().cursor(row_factory=dict_row) as cur:
                if params:
                    cur.execute(to_pyformat(sql), _params(params))
                else:
                    cur.execute(sql)
                return cur.fetchall()
        except psycopg.Error as err:
            raise translate(err) from err

    def begin(self) -> None:
        self.execute("BEGIN")

    @property
    def in_transaction(self) -> bool:
        if self._conn.closed:
            return False
        return self._conn.info.transaction_status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR,
                                                      pq.TransactionStatus.ACTIVE)

    def table_names(self) -> set[str]:
        rows = self.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
        return {r[0] for r in rows.fetchall()}

    def columns(self, table: str) -> set[str]:
        rows = self.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                            "AND table_name = ?", (table,))
        return {r[0] for r in rows.fetchall()}

    def advisory_xact_lock(self, key: int) -> None:
        """Hold an advisory lock until the current transaction ends (migrations, one at a time)."""
        self.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    def close(self) -> None:
        self._conn.close()
