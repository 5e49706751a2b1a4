"""Logging for agent and controller processes: one line per event, journald-aware.

On a terminal or into a file: ``2026-12-07T10:00:00.123Z WARNING [mob-01] agent.link...: text``
(UTC ISO-8601, whatever the unit's time zone).

Under systemd, stderr goes to the journal, which stamps each line itself and files it under the
priority given by a ``<N>`` prefix (sd-daemon(3): ``SD_ERR`` is ``<3>``); without one every line
is filed as info, and ``journalctl -p err`` shows nothing of an agent that is failing.  So when
stderr *is* the journal stream we write ``<3>ERROR [mob-01] agent...: text`` without a
timestamp.  "Is the journal" follows systemd.exec(5): ``$JOURNAL_STREAM`` holds the device and
inode of the stream systemd connected, and it counts only if they are those of our stderr (a
child whose stderr was redirected inherits the variable but must keep timestamps).  Every line
of a multi-line record (a traceback) carries the prefix, since journald reads it per line.
Rotation is journald's (``SystemMaxUse=``): the programs write no log files of their own.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

#: Python level -> syslog priority (RFC 5424 severities, as sd-daemon(3)'s SD_* prefixes)
SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a Python log level (levels between the named ones round to the more severe)."""
    for level in sorted(SYSLOG_PRIORITY, reverse=True):
        if levelno >= level:
            return SYSLOG_PRIORITY[level]
    return 7


def stream_is_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True if ``stream`` is the journal stream systemd connected (``$JOURNAL_STREAM`` = ``dev:inode``)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not backed by a file descriptor
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class UtcFormatter(logging.Formatter):
    """``%(asctime)s`` in UTC with milliseconds and a ``Z``."""

    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"


class JournalFormatter(logging.Formatter):
    """``<N>`` syslog priority on every line, no timestamp (journald adds its own)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def make_handler(name: str = "", stream: TextIO | None = None,
                 environ: dict[str, str] | None = None) -> logging.Handler:
    """A stderr handler in the journal's format if stderr is the journal stream, else with UTC timestamps."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    if stream_is_journal(stream, environ):
        handler.setFormatter(JournalFormatter(f"%(levelname)s {name}%(name)s: %(message)s"))
    else:
        handler.setFormatter(UtcFormatter(f"%(asctime)s %(levelname)s {name}%(name)s: %(message)s"))
    return handler


def setup_logging(level: str = "INFO", name: str = "") -> None:
    """Route all logging to stderr at ``level``; ``name`` (e.g. ``"[mob-01] "``) starts each message."""
    root = logging.getLogger()
    root.handlers[:] = [make_handler(name)]
    root.setLevel(level)
    logging.getLogger("numba").setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
