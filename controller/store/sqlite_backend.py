"""SQLite backend: one file in WAL mode, the embedded default for one controller on one machine.

Why WAL and ``BEGIN IMMEDIATE``: readers (CLI, console, demo) never block the writer, and a writer
takes the file's write lock when its transaction starts, so several writers (controller processes on
one file, threads) queue on ``busy_timeout`` instead of dead-locking on a read->write upgrade.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Literal

from controller.store.backend import Params


class SqliteBackend:
    dialect = "sqlite"
    greatest = "MAX"
    for_update = ""

    def __init__(self, path: str | Path, synchronous: Literal["FULL", "NORMAL"] = "FULL",
                 busy_timeout_ms: int = 30_000) -> None:
        self.location = str(path)
        if self.location != ":memory:":
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: every transaction is explicit (Store.transaction)
        self._conn = sqlite3.connect(self.location, isolation_level=None, timeout=busy_timeout_ms / 1000,
                                     check_same_thread=False)
        try:
            if self.location != ":memory:":
                self._conn.execute("PRAGMA journal_mode=wal")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        except sqlite3.Error:
            self._conn.close()
            raise

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        cur = self._conn.execute(sql, params)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def table_names(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def columns(self, table: str) -> set[str]:
        return {r[1] for r in self._conn.execute(f"PRAGMA table_info([{table}])")}

    def close(self) -> None:
        self._conn.close()
