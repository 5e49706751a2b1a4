"""The controller's store (issue 20: one interface, SQLite and PostgreSQL backends).

Modules: :mod:`.store` (the :class:`Store` - every rule about what is stored), :mod:`.schema` (tables,
keys, indices), :mod:`.migrations` (versioned schema changes for both engines), :mod:`.backend` (the
engine interface), :mod:`.sqlite_backend`, :mod:`.postgres_backend`, :mod:`.location` (store URL ->
backend), :mod:`.rows` (message <-> row conversions).  ``from controller.store import Store`` is the
public entry point and stays what it was before the split.
"""

from controller.store.rows import content_digest, epoch_s, iso_utc
from controller.store.schema import ACTIVE_TASK_STATES
from controller.store.store import RejectBudget, Store, StoreError, StoreOutcome

__all__ = [
    "ACTIVE_TASK_STATES",
    "RejectBudget",
    "Store",
    "StoreError",
    "StoreOutcome",
    "content_digest",
    "epoch_s",
    "iso_utc",
]
