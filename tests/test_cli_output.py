"""Errors read the same on any terminal: one unwrapped stderr line, whatever the width or path (issue 12).

The commands run as real processes under a narrow terminal width with a long path, the case
that broke before: Rich wrapped the message, so "no such video" came out as "no\\nsuch video".
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from agent.cli_output import plain, safe

ROOT = Path(__file__).resolve().parents[1]


def _long_dir(tmp_path: Path) -> Path:
    """A directory whose path is longer than any terminal line we test with."""
    d = tmp_path / ("a-rather-long-folder-name-for-a-field-laptop" * 2) / "spectra and videos of 2026-12-07"
    d.mkdir(parents=True)
    assert len(str(d)) > 120
    return d


def _cedge(args: list[str], columns: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "24", "TERM": "xterm-256color"}
    return subprocess.run([sys.executable, "-m", "cedge", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("columns", [40, 250])
def test_missing_video_error_is_one_line(tmp_path: Path, columns: int) -> None:
    video = _long_dir(tmp_path) / "nope.avi"
    res = _cedge(["camera", "analyze", str(video)], columns)
    assert res.returncode == 2
    line = _error_line(res.stderr)
    assert str(video) in line and "no such video file or image directory" in line
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_spectrum_and_controller_errors_are_one_line(tmp_path: Path) -> None:
    d = _long_dir(tmp_path)
    spectrum = d / "missing.n42"
    res = _cedge(["spectrum", "analyze", str(spectrum)], 40)
    assert res.returncode == 1 and str(spectrum) in _error_line(res.stderr)
    db = d / "controller.sqlite"
    res = _cedge(["controller", "units", "--db", str(db)], 40)
    assert res.returncode == 1 and str(db) in _error_line(res.stderr)
    assert "Traceback" not in res.stderr


def test_bad_profile_error_goes_to_stderr(tmp_path: Path) -> None:
    profile = _long_dir(tmp_path) / "unit.yaml"
    profile.write_text("unit_id: mob-1\nunit_type: submarine\n")
    res = _cedge(["agent", "check-config", str(profile)], 40)
    assert res.returncode == 2 and res.stdout == ""
    assert str(profile) in _error_line(res.stderr) and "unit_type" in res.stderr


def test_markup_and_control_characters_from_outside_are_shown_literally() -> None:
    hostile = "[/oops] [bold]x\x1b[2J\nrow"
    assert plain(hostile) == "[/oops] [bold]x\\x1b[2J\\x0arow"
    table = Table("track")
    table.add_row(safe(hostile))
    buf = io.StringIO()
    Console(file=buf, width=120, color_system=None).print(table)  # would raise MarkupError unescaped
    assert "[/oops] [bold]x\\x1b[2J\\x0arow" in buf.getvalue()
