"""The store's view of a database engine: one small interface, two implementations.

Why an interface this thin (execute, query, begin, a few dialect words) rather than an ORM: the
store's SQL is already plain, portable SQL (``INSERT ... ON CONFLICT``, window functions, CTEs) that
SQLite >= 3.24 and PostgreSQL both run; only the placeholder style, the scalar maximum, the way a
write transaction starts and row locks differ.  Each backend translates those and nothing else, so
one :class:`controller.store.store.Store` holds every rule about what is stored.

Errors: both backends raise the DB-API classes of :mod:`sqlite3` (``sqlite3.OperationalError`` for
storage trouble, ``sqlite3.IntegrityError`` for a broken constraint).  The ingest path decides on
those two (retry the message later vs. never), and keeping one vocabulary means a PostgreSQL outage
is handled exactly like a full or locked SQLite file: the message stays un-acknowledged and is
retried.  :class:`BackendError` and :class:`BackendIntegrityError` keep the engine's error as
``__cause__``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Literal, Protocol

Params = Sequence[Any] | dict[str, Any]
Dialect = Literal["sqlite", "postgresql"]


class BackendError(sqlite3.OperationalError):
    """The engine failed (connection lost, disk full, deadlock, lock time-out): retry later.

    ``retry_now``: the server rolled the transaction back to break a deadlock (or a serialization
    conflict) between writers; running the same transaction again at once is the standard remedy.
    """

    retry_now: bool = False


class BackendIntegrityError(sqlite3.IntegrityError):
    """A constraint of the schema refused the write: retrying the same write cannot help."""


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Backend(Protocol):
    """What :class:`~controller.store.store.Store` needs from an engine connection (not thread-safe:
    the store serialises access behind its own lock)."""

    dialect: Dialect
    #: where the data lives, safe to log (a path, or a URL without its password)
    location: str
    #: the scalar two-argument maximum: ``MAX`` in SQLite, ``GREATEST`` in PostgreSQL
    greatest: str
    #: appended to a SELECT that must lock the rows it reads until the transaction ends
    for_update: str

    def execute(self, sql: str, params: Params = ()) -> Cursor: ...

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]: ...

    def begin(self) -> None:
        """Start a top-level write transaction (SQLite: take the write lock up front)."""

    @property
    def in_transaction(self) -> bool: ...

    def table_names(self) -> set[str]: ...

    def columns(self, table: str) -> set[str]: ...

    def close(self) -> None: ...
