"""The console's own tables in the controller database: operator users, operator actions, and the
history of unit states (online/stale/offline) the console saw change (the store keeps only the
current state; the timeline shows the changes).

Why in the controller database: one file to back up, and the actions sit next to the alarms and
tasks they act on, each with who did it and when.  The tables are created here, not in
:mod:`controller.store`, so the store's schema stays the ingest path's alone; every connection is a
plain ``sqlite3`` connection in autocommit mode with a busy timeout, and each write is one short
``BEGIN IMMEDIATE`` transaction, so the ingest writer waits at most milliseconds for it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["SCHEMA", "connect"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS web_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_utc TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS web_actions (
    id INTEGER PRIMARY KEY,
    t_utc TEXT NOT NULL,
    user TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    done_utc TEXT
);
CREATE TABLE IF NOT EXISTS web_unit_states (
    id INTEGER PRIMARY KEY,
    t_utc TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    state TEXT NOT NULL,
    previous TEXT
);
CREATE INDEX IF NOT EXISTS idx_web_unit_states_unit ON web_unit_states (unit_id, id);
CREATE INDEX IF NOT EXISTS idx_web_actions_state ON web_actions (state);
CREATE INDEX IF NOT EXISTS idx_web_actions_target ON web_actions (action, target);
"""


def connect(db_path: str | Path, busy_timeout_ms: int = 10_000) -> sqlite3.Connection:
    """Autocommit connection with the console tables present (created if missing)."""
    conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=busy_timeout_ms / 1000,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    conn.executescript(SCHEMA)
    return conn
