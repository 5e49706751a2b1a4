"""A real PostgreSQL for the store's tests: one private server per test session, one fresh database
per test (:class:`cedge.postgres.PrivatePostgres`; Debian's ``postgresql`` package, installed by
``setup.sh test``).  Tests that need it skip, saying why, when the server binaries are absent.

fsync is off: the tests check what is stored and how writers interleave, not durability across a
power cut (the ingest benchmark runs with fsync on).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from cedge.postgres import PrivatePostgres, find_pg_bin

_dbs = itertools.count(1)


def postgres_missing() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg 3 not installed (pip install 'psycopg[binary]', part of the controller extra)"
    if find_pg_bin() is None:
        return "PostgreSQL server binaries not found (apt install postgresql, or set CEDGE_PG_BIN)"
    return None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PrivatePostgres]:
    why = postgres_missing()
    if why:
        pytest.skip(why)
    server = PrivatePostgres(fsync=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PrivatePostgres) -> str:
    """URL of a new, empty database on the session's server."""
    return pg_server.create_database(f"t{next(_dbs)}")
