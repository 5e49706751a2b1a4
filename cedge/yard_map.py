"""The demo's picture: yard, unit tracks coloured by count rate, alarms, true and estimated source.

Why a picture: an operator (and a reviewer) judges a localization at a glance — whether the
alarm points sit at the closest approach, whether the error ellipse covers the true source, and
whether the handheld walked to the right container.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cedge.fleet import Fleet
    from cedge.fleet_view import FleetView


def draw_demo_map(fleet: Fleet, view: FleetView, summary: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    from hal_sim.plot_yard import draw_yard
    from hal_sim.world import SimWorld

    fig, ax = plt.subplots(figsize=(12, 6.5), dpi=110)
    draw_yard(ax, SimWorld(fleet.scenario, check_materials=False))
    sc = None
    for unit_id, tr in view.tracks().items():
        xs, ys, cps = np.asarray(tr["x"]), np.asarray(tr["y"]), np.asarray(tr["cps"])
        if xs.size == 0:
            continue
        if tr["unit_type"] == "mobile":
            rel = cps / max(float(np.median(cps)), 1.0)
            sc = ax.scatter(xs, ys, c=rel, s=6, cmap="viridis", vmin=0.8, vmax=max(2.0, float(rel.max())),
                            zorder=3)
        else:
            ax.plot(xs, ys, "-", lw=1.5, color="tab:orange", zorder=4)
            ax.plot(xs[-1], ys[-1], "o", color="tab:orange", ms=6, zorder=5)
            ax.annotate(unit_id, (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if sc is not None:
        fig.colorbar(sc, ax=ax, label="mobile count rate / median", shrink=0.8)
    for a in summary.get("alarms", []):
        if a.get("x_m") is not None:
            ax.plot(a["x_m"], a["y_m"], "^", color="red", ms=9, mec="k", zorder=6)
    est = summary.get("source_estimate")
    if est:
        ax.plot(est["x_m"], est["y_m"], "X", color="magenta", ms=11, mec="k", zorder=7, label="estimate")
        cov = est.get("cov_xy")
        if cov:
            vals, vecs = np.linalg.eigh(np.asarray(cov))
            vals = np.clip(vals, 1e-6, None)
            angle = float(np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1])))
            k = 2.4477  # 95 % for two degrees of freedom
            ax.add_patch(Ellipse((est["x_m"], est["y_m"]), 2 * k * np.sqrt(vals[1]), 2 * k * np.sqrt(vals[0]),
                                 angle=angle, fill=False, ec="magenta", lw=1.5, zorder=7))
    truth = summary.get("source_truth")
    if truth:
        ax.plot(truth["x_m"], truth["y_m"], "*", color="gold", ms=16, mec="k", zorder=8, label="true source")
    ax.plot([], [], "^", color="red", mec="k", label="alarm (peak on track)")
    ax.plot([], [], "-", color="tab:orange", label="handheld path")
    ax.legend(loc="upper right", fontsize=8)
    err = summary.get("location_error_m")
    states = ", ".join(f"{t['task_id'][:8]}: {t['state']}" for t in summary.get("tasks", []))
    ax.set_title(f"customs-edge demo — location error {err} m; tasks: {states or 'none'}", fontsize=10)
    ax.set_xlabel("x east (m)")
    ax.set_ylabel("y north (m)")
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
