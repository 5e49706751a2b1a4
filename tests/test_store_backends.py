"""Store backends: the location picks the engine, both get the same versioned schema, and the
PostgreSQL backend's translation of the store's SQL and errors (issue 20)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures

from controller.store import Store, StoreError
from controller.store.location import parse_store_location
from controller.store.migrations import MIGRATIONS
from controller.store.schema import TABLES


@pytest.mark.parametrize(("text", "backend", "target"), [
    ("controller.sqlite", "sqlite", "controller.sqlite"),
    ("/var/lib/cedge/c.sqlite", "sqlite", "/var/lib/cedge/c.sqlite"),
    ("sqlite:///var/lib/cedge/c.sqlite", "sqlite", "/var/lib/cedge/c.sqlite"),
    ("sqlite:rel/c.sqlite", "sqlite", "rel/c.sqlite"),
    ("postgresql://cedge@db.example/fleet", "postgresql", "postgresql://cedge@db.example/fleet"),
    ("postgres://cedge@/fleet?host=/run/postgresql", "postgresql", "postgres://cedge@/fleet?host=/run/postgresql"),
])
def test_location_picks_the_backend(text: str, backend: str, target: str) -> None:
    loc = parse_store_location(text)
    assert (loc.backend, loc.target) == (backend, target)


@pytest.mark.parametrize("bad", ["mysql://x/y", "sqlite://", "  "])
def test_bad_location_is_refused_by_name(bad: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="store location"):
        Store(bad)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_both_engines_get_every_migration_and_table_once(backend: str, request: pytest.FixtureRequest,
                                                        tmp_path: Path) -> None:
    location = request.getfixturevalue("pg_url") if backend == "postgresql" else str(tmp_path / "c.sqlite")
    with Store(location) as s:
        assert s.dialect == backend
        assert s.schema_version() == max(m.version for m in MIGRATIONS)
        versions = [r["version"] for r in s.query("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [m.version for m in MIGRATIONS]
        for table in TABLES:
            assert s.count(table) == 0
    with Store(location) as s:  # re-opening applies nothing again
        assert s.query("SELECT COUNT(*) AS n FROM schema_migrations")[0]["n"] == len(MIGRATIONS)
    with Store(location, create=False) as s:
        assert s.schema_version() == len(MIGRATIONS)


def test_a_database_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    """A SQLite file written before the store had migrations (tables, no schema_migrations) opens,
    keeps its rows, and gets every migration recorded."""
    path = tmp_path / "old.sqlite"
    with Store(path) as s:
        s.set_meta("k", "v")
    con = sqlite3.connect(path)
    con.execute("DROP TABLE schema_migrations")
    con.execute("DROP INDEX idx_measurements_t_epoch_s")
    con.commit()
    con.close()
    with Store(path) as s:
        assert s.get_meta("k") == "v" and s.schema_version() == len(MIGRATIONS)
        assert s.query("SELECT name FROM sqlite_master WHERE name = 'idx_measurements_t_epoch_s'")


def test_postgres_stores_what_an_outsider_sends_even_with_nul(pg_url: str) -> None:  # noqa: F811
    """PostgreSQL refuses NUL in text; a rejected payload's excerpt may hold one: kept, NUL replaced."""
    with Store(pg_url) as s:
        s.record_reject("2026-11-27T08:00:00.000Z", "cedge/v1/up/x/measurement", "bad_json", "not JSON",
                        b"\x00\x01abc%s?:name")
        (row,) = s.list_rejects()
        assert row["payload_excerpt"] == "\ufffd\x01abc%s?:name" and row["payload_bytes"] == 13
        assert s.reject_counts() == {"bad_json": 1}


def test_postgres_unreachable_is_a_clear_error(pg_server, tmp_path: Path) -> None:  # noqa: F811
    url = f"postgresql://postgres:secret@/nosuchdb?host={pg_server.socket_dir}"
    with pytest.raises(StoreError) as err:
        Store(url)
    assert "nosuchdb" in str(err.value) and "secret" not in str(err.value)


def test_postgres_connection_lost_is_retryable_and_reconnects(pg_server, pg_url: str) -> None:  # noqa: F811
    """The server drops the session (restart, network): the next write fails as storage trouble
    (sqlite3.OperationalError, which ingest retries), and the one after succeeds on a new session."""
    from urllib.parse import urlsplit

    with Store(pg_url) as s:
        s.set_meta("a", "1")
        assert pg_server.terminate_backends(urlsplit(pg_url).path.lstrip("/")) >= 1
        with pytest.raises(sqlite3.OperationalError):
            s.set_meta("b", "2")
        s.set_meta("c", "3")
        assert (s.get_meta("a"), s.get_meta("b"), s.get_meta("c")) == ("1", None, "3")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_attempt_claim_takes_the_task_out_of_open_at_once(backend: str, request: pytest.FixtureRequest,
                                                             tmp_path: Path) -> None:
    """Issue 20's race, in the interleaving that sent two handhelds: dispatcher B reads the task after
    A's claim but before A saves it.  B must see the task already dispatched to A's handheld, and no
    claim of any attempt by B may succeed."""
    location = request.getfixturevalue("pg_url") if backend == "postgresql" else str(tmp_path / "c.sqlite")
    task_id = f"T-claim-{backend}-{tmp_path.name}"
    with Store(location) as a, Store(location) as b:
        a.save_task({"task_id": task_id, "incident_id": "I-1", "state": "open", "attempts": 0})
        assert a.claim_task_attempt(task_id, 0, "hh-1")
        seen_by_b = b.get_task(task_id)
        assert (seen_by_b["state"], seen_by_b["unit_id"], seen_by_b["attempts"]) == ("dispatched", "hh-1", 1)
        assert not b.claim_task_attempt(task_id, 0, "hh-2")
        assert not b.claim_task_attempt(task_id, 1, "hh-2")
        assert a.get_task(task_id)["unit_id"] == "hh-1"
