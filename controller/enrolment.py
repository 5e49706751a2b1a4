"""Which units the controller accepts uplinks from: the site's enrolled units.

Why at the controller as well as in the broker ACL: the ACL (``cedge site``) makes the topic's unit
id equal to the authenticated client identity, so a message on ``cedge/v1/up/mob-1/...`` comes from
the holder of mob-1's certificate; but an identity the controller does not know (a revoked unit
whose broker was not yet reloaded, a broker configured by hand, a test broker with anonymous
access) must still not become a unit.  An uplink from a unit that is not enrolled is rejected with
``unit_not_enrolled``, counted and reported, and never creates a row in ``units`` (issue 14, row 3:
566 phantom units from unknown ids).

Sources: ``enrolled_units`` (a list in the controller config) and/or ``enrolled_units_file`` (the
site registry ``DIR/enrolled.yaml`` written by ``cedge site``; its ``units:`` list is read, or a
file that is just a YAML list of ids).  The file is re-read when its modification time or size
changes (checked at most every ``reload_interval_s``), so ``cedge site enroll`` / ``revoke`` take
effect without a controller restart.  A file that cannot be read or parsed keeps the last good
list (logged): a half-written file must not un-enrol the whole fleet, nor enrol everyone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.safe_yaml import YamlError, load_yaml_file

__all__ = ["Enrolment", "EnrolmentError", "read_enrolled_units"]

log = logging.getLogger(__name__)


class EnrolmentError(ValueError):
    """An enrolment file that cannot be used; the message names the file."""


def _ids(items: Any, source: str) -> set[str]:
    if not isinstance(items, list) or not all(isinstance(u, str) for u in items):
        raise EnrolmentError(f"{source}: 'units' must be a list of unit ids")
    return set(items)


def read_enrolled_units(path: str | Path) -> set[str]:
    """The unit ids of an enrolment file (the site registry's ``units:``, or a bare YAML list)."""
    p = Path(path)
    try:
        data: Any = load_yaml_file(p)  # bounded: size, alias expansion, depth (agent.safe_yaml)
    except YamlError as err:
        raise EnrolmentError(str(err)) from err
    if isinstance(data, list):
        return _ids(data, str(p))
    if not isinstance(data, dict) or "units" not in data:
        raise EnrolmentError(f"{p}: no 'units' list")
    return _ids(data["units"], str(p))


class Enrolment:
    """``is_enrolled(unit_id)``; everything is enrolled when ``required`` is False."""

    def __init__(self, units: Iterable[str] | None = None, file: str | Path | None = None,
                 required: bool = True, reload_interval_s: float = 2.0) -> None:
        self.required = required
        self._static = set(units or ())
        self.file = Path(file) if file is not None else None
        self._from_file: set[str] = set()
        self._stamp: tuple[float, int] | None = None
        self._next_check = 0.0
        self._interval = reload_interval_s
        self._lock = threading.Lock()
        if self.file is not None:
            self._reload(initial=True)

    @property
    def units(self) -> set[str]:
        self._maybe_reload()
        with self._lock:
            return self._static | self._from_file

    def is_enrolled(self, unit_id: str) -> bool:
        if not self.required:
            return True
        return unit_id in self.units

    def _maybe_reload(self) -> None:
        if self.file is None or time.monotonic() < self._next_check:
            return
        self._reload(initial=False)

    def _reload(self, initial: bool) -> None:
        assert self.file is not None
        self._next_check = time.monotonic() + self._interval
        try:
            st = self.file.stat()
            stamp = (st.st_mtime, st.st_size)
            if stamp == self._stamp:
                return
            units = read_enrolled_units(self.file)
        except (OSError, EnrolmentError) as err:
            if initial:
                raise EnrolmentError(f"enrolled units file {self.file}: {err}") from err
            log.error("enrolled units file %s not re-read (%s); keeping the last %d unit(s)", self.file, err,
                      len(self._from_file))
            return
        with self._lock:
            added, removed = units - self._from_file, self._from_file - units
            self._from_file, self._stamp = units, stamp
        if not initial and (added or removed):
            log.warning("enrolment changed (%s): +%s -%s", self.file, sorted(added) or "none",
                        sorted(removed) or "none")
        elif initial:
            log.info("enrolled units from %s: %d", self.file, len(units))
