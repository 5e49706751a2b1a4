"""Logging for agent and controller processes: UTC ISO-8601 timestamps, one line per event."""

from __future__ import annotations

import logging
import time


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"


def setup_logging(level: str = "INFO", name: str = "") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_UtcFormatter(f"%(asctime)s %(levelname)s {name}%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("numba").setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
