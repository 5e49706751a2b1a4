"""The console's own tables in the controller database: operator users, operator actions, and the
history of unit states (online/stale/offline) the console saw change (the store keeps only the
current state; the timeline shows the changes).

Why in the controller database: one place to back up, and the actions sit next to the alarms and
tasks they act on, each with who did it and when.  The tables belong to the store's versioned schema
(:mod:`controller.store.migrations`, version 3), so the console runs on SQLite and on PostgreSQL
alike; each console write is one short transaction of its own connection, so the ingest writer waits
at most milliseconds for it.
"""

from __future__ import annotations

from pathlib import Path

from controller.store import Store

__all__ = ["connect"]


def connect(location: str | Path) -> Store:
    """A connection of the console's own to the controller's store (a SQLite path or a
    ``postgresql://`` URL), with the console tables present (created if missing, like every table)."""
    return Store(str(location))
