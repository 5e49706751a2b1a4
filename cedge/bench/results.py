"""Where a benchmark's results go: one JSON file and its figures in the ``--out`` directory.

One function so every benchmark writes the same way (same JSON formatting, the figure paths
recorded in the result itself).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def save_results(result: dict[str, Any], out_dir: str | Path, name: str,
                 figures: Callable[[Path], Any], figures_key: str = "figures") -> Path:
    """Make ``out_dir``, draw the figures into it (their paths go to ``result[figures_key]``) and
    write ``bench_<name>.json``; returns the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result[figures_key] = figures(out)
    path = out / f"bench_{name}.json"
    path.write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")
    return path
