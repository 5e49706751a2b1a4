"""Minimum-cost assignment with a gate, on scipy's Jonker-Volgenant-style solver.

``scipy.optimize.linear_sum_assignment`` (a maintained LAPJV-class solver since scipy 1.4) solves the
rectangular problem exactly; pairs whose cost is above the gate are then dropped, which is what
ByteTrack's ``lap.lapjv(..., cost_limit=thresh)`` achieves.  Gated entries are set above the gate
before solving, so that a forbidden pair never displaces two allowed ones.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def assign(cost: np.ndarray, gate: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Matched ``(row, col)`` pairs with cost <= gate, unmatched rows, unmatched cols."""
    n, m = cost.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    c = np.where(cost > gate, gate + 1e3, cost)
    rows, cols = linear_sum_assignment(c)
    pairs = [(int(r), int(k)) for r, k in zip(rows, cols, strict=True) if cost[r, k] <= gate]
    used_r = {r for r, _ in pairs}
    used_c = {k for _, k in pairs}
    return pairs, [r for r in range(n) if r not in used_r], [k for k in range(m) if k not in used_c]
