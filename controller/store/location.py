"""Where the controller's store lives: a URL (or a plain path) picks the backend.

``postgresql://user@host/db`` (or ``postgres://``, and libpq's ``?host=/socket/dir`` form) selects
PostgreSQL; ``sqlite:///abs/path.sqlite``, ``sqlite:relative.sqlite`` or a plain file path select
SQLite.  Any other ``scheme://`` is refused by name, so a typo is an error at start, not a file
called ``postgresq:/...`` next to the controller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass(frozen=True)
class StoreLocation:
    backend: Literal["sqlite", "postgresql"]
    target: str  # the SQLite path, or the PostgreSQL URL as given


def parse_store_location(value: str | Path) -> StoreLocation:
    """Parse a store URL or path; ValueError names what is wrong."""
    if isinstance(value, Path):
        return StoreLocation("sqlite", str(value))
    text = value.strip()
    if not text:
        raise ValueError("store location is empty (give a path or a postgresql:// URL)")
    m = _SCHEME.match(text)
    if m is None or len(m.group(1)) == 1:  # no scheme, or a Windows drive letter
        return StoreLocation("sqlite", text)
    scheme = m.group(1).lower()
    if scheme in ("postgresql", "postgres"):
        return StoreLocation("postgresql", text)
    if scheme == "sqlite":
        rest = text[len("sqlite:"):]
        path = rest[2:] if rest.startswith("//") else rest  # sqlite:///abs -> /abs; sqlite:rel -> rel
        if not path:
            raise ValueError(f"store location {text!r}: sqlite URL without a path")
        return StoreLocation("sqlite", path)
    raise ValueError(f"store location {text!r}: unknown scheme {scheme!r} (use postgresql://..., "
                     "sqlite:///path, or a file path)")


def is_postgresql(value: str | Path) -> bool:
    try:
        return parse_store_location(value).backend == "postgresql"
    except ValueError:
        return False
