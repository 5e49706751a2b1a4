"""The agent's status file (``status.json``): written atomically, never fatal when the disk fails.

Why: ``cedge agent status`` and the tests read this file while the agent runs, so a reader must
never see half a file, and a unit whose state directory is full or read-only must keep measuring
(issue 15: the agent crashed with ENOSPC writing it and stayed down).  So each write goes to a
temporary file in the same directory (same filesystem, so the rename is atomic), is fsynced, and
replaces the old file with ``os.replace`` (POSIX rename(2): readers see the old or the new file).
After a power cut the file is the previous or the new version, never a torn one; the directory
entry itself is not fsynced (the status is advisory and rewritten every second).

A failed write is counted (:attr:`StatusFile.failures`, reported in health messages), logged at
WARNING at most once per ``log_every_s`` with the number of failures since the last line, and
the temporary file is removed.  It never raises ``OSError``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class StatusFile:
    def __init__(self, path: str | os.PathLike[str], log_every_s: float = 30.0) -> None:
        self.path = Path(path)
        self.failures = 0
        self.last_error = ""
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._log_every_s = float(log_every_s)
        self._last_log_s: float | None = None
        self._unlogged = 0
        self._failing = False

    def write(self, status: dict[str, Any]) -> bool:
        """Replace the file with ``status`` as JSON; False (counted, rate-limited log) on failure."""
        data = json.dumps(status, indent=2, default=str).encode()
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
        except OSError as err:
            self._failed(err)
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            return False
        if self._failing:
            log.info("status file %s written again (%d failed write(s) since start)", self.path, self.failures)
            self._failing, self._unlogged, self._last_log_s = False, 0, None
        return True

    def _failed(self, err: OSError) -> None:
        self.failures += 1
        self._failing = True
        name = errno.errorcode.get(err.errno or 0, "error")
        self.last_error = f"{name}: {err.strerror or err}"
        now = time.monotonic()
        if self._last_log_s is not None and now - self._last_log_s < self._log_every_s:
            self._unlogged += 1
            return
        log.warning("cannot write status file %s (%s); the unit keeps running%s", self.path, self.last_error,
                    f" ({self._unlogged} more failures since the last message)" if self._unlogged else "")
        self._last_log_s, self._unlogged = now, 0
