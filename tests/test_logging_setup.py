"""Journald-friendly logs: ``<N>`` syslog priority on every line, no timestamp, only when stderr is
the journal stream systemd connected ($JOURNAL_STREAM = device:inode of that stream)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from agent.logging_setup import make_handler, stream_is_journal, syslog_priority

ROOT = Path(__file__).resolve().parents[1]

# A child process that logs one line per level and a traceback, through setup_logging().
_CHILD = """
import logging
from agent.logging_setup import setup_logging
setup_logging("DEBUG", "[mob-01] ")
log = logging.getLogger("agent.link.mqtt_link")
log.debug("d"); log.info("i"); log.warning("w"); log.error("e"); log.critical("c")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("boom")
"""


def _run_child(stderr_path: Path, journal_stream: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    with stderr_path.open("wb") as err:
        subprocess.run([sys.executable, "-c", _CHILD], stderr=err, cwd=ROOT, env=env, timeout=60, check=True)
    return stderr_path.read_text().splitlines()


def _dev_ino(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_syslog_priorities_follow_sd_daemon() -> None:
    # sd-daemon(3): SD_CRIT <2>, SD_ERR <3>, SD_WARNING <4>, SD_INFO <6>, SD_DEBUG <7>
    assert [syslog_priority(lv) for lv in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]
    assert syslog_priority(35) == 4 and syslog_priority(5) == 7  # between levels: the more severe one


def test_under_journald_every_line_carries_its_priority_and_no_timestamp(tmp_path: Path) -> None:
    err = tmp_path / "stderr.log"
    err.touch()
    lines = _run_child(err, _dev_ino(err))  # the child's stderr *is* the stream JOURNAL_STREAM names
    assert lines[:5] == [
        "<7>DEBUG [mob-01] agent.link.mqtt_link: d",
        "<6>INFO [mob-01] agent.link.mqtt_link: i",
        "<4>WARNING [mob-01] agent.link.mqtt_link: w",
        "<3>ERROR [mob-01] agent.link.mqtt_link: e",
        "<2>CRITICAL [mob-01] agent.link.mqtt_link: c",
    ]
    # the traceback is part of the error record: each of its lines keeps <3>, or journald files it as info
    tb = lines[5:]
    assert tb[0] == "<3>ERROR [mob-01] agent.link.mqtt_link: boom"
    assert len(tb) >= 4 and all(line.startswith("<3>") for line in tb), tb
    assert tb[-1] == "<3>ZeroDivisionError: division by zero"


def test_outside_journald_lines_keep_utc_timestamps(tmp_path: Path) -> None:
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    for journal_stream in (None, "12345:67890", "garbage"):  # unset, another stream (inherited), malformed
        lines = _run_child(tmp_path / "stderr.log", journal_stream)
        assert re.fullmatch(stamp + r" WARNING \[mob-01\] agent\.link\.mqtt_link: w", lines[2]), lines
        assert not any(line.startswith("<") for line in lines)


def test_stream_is_journal_compares_device_and_inode(tmp_path: Path) -> None:
    path = tmp_path / "x"
    with path.open("w") as f:
        assert stream_is_journal(f, {"JOURNAL_STREAM": _dev_ino(path)})
        assert not stream_is_journal(f, {"JOURNAL_STREAM": _dev_ino(tmp_path)})
        assert not stream_is_journal(f, {})
        handler = make_handler("", f, {"JOURNAL_STREAM": _dev_ino(path)})
        rec = logging.LogRecord("n", logging.WARNING, __file__, 1, "two\nlines", None, None)
        assert handler.format(rec) == "<4>WARNING n: two\n<4>lines"
