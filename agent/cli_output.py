"""What the command-line tools print, and how: one place so every command behaves the same.

Why a module of its own: a message meant for a person *and* for a script (an error, a warning)
must read the same whatever the terminal. Rich wraps text at the terminal width, so an error
with a long path broke mid-sentence and a script grepping for it saw a different string under
80 columns than under 200 (issue 12). And Rich interprets ``[...]`` as markup, so a file name
or a track id like ``[/oops]`` from the field crashed a listing (issue 14, row 12).

Rules:
- errors and warnings go to stderr as one unwrapped line per message, no markup, no colour;
- anything from outside (file names, ids, device strings) that goes into a Rich renderable
  passes through :func:`safe` first;
- consoles for prose are made by :func:`console`, which never wraps prose (tables still fit
  the terminal, that is what they are for).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

# Control characters (except tab) would let a hostile string move the cursor or clear the screen.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0, 9), *range(10, 32), 127)}
_CONTROL_BUT_NEWLINE = {c: v for c, v in _CONTROL.items() if c != 10}


def plain(text: object) -> str:
    """``text`` as one printable string: control characters (newlines too) shown escaped."""
    return str(text).translate(_CONTROL)


def safe(text: object) -> str:
    """``text`` for a Rich renderable: printable and with Rich markup escaped."""
    return escape(plain(text))


def console(stderr: bool = False) -> Console:
    """A Rich console that lays out tables for the terminal but never wraps a line of prose."""
    return Console(stderr=stderr, soft_wrap=True)


def error_line(message: object) -> None:
    """Print ``error: <message>`` on stderr, unwrapped, whatever the terminal width.

    The message's own line breaks are kept (a configuration error lists one field a line);
    other control characters are shown escaped.
    """
    sys.stderr.write(f"error: {str(message).translate(_CONTROL_BUT_NEWLINE)}\n")
    sys.stderr.flush()


def warning_line(message: object) -> None:
    """Print ``warning: <message>`` on stderr, unwrapped."""
    sys.stderr.write(f"warning: {str(message).translate(_CONTROL_BUT_NEWLINE)}\n")
    sys.stderr.flush()


def fail(message: object, code: int) -> NoReturn:
    """Print the error and leave the command with exit code ``code`` (no traceback)."""
    error_line(message)
    raise typer.Exit(code)
