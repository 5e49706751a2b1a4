"""Loading of the reference tables shipped in ``hal_sim/gamma/data`` (see data/README.md for sources).

Why a module of its own: every physics module needs the same small CSV reader (comment lines start
with ``#``), and the product must read its data from the installed package, never from ../shared.
"""

from __future__ import annotations

import csv
import functools
import io
from importlib import resources


@functools.cache
def read_table(name: str) -> tuple[dict[str, str], ...]:
    """Rows of ``data/<name>`` as dicts; ``#`` comment lines are skipped."""
    text = resources.files("hal_sim.gamma").joinpath("data", name).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return tuple(csv.DictReader(io.StringIO("\n".join(lines))))
