"""Map of the simulated yard: container rows, NORM patches, routes, operators' homes, true sources.

Why a separate drawing function: the demo's report figure overlays the fleet's tracks, alarms
and source estimates on this ground truth; tests and notebooks draw the same base map.
matplotlib is imported here only (never by the world), and the caller picks the backend (Agg).
"""

from __future__ import annotations

from typing import Any

from hal_sim.motion import RouteFollower, Walker
from hal_sim.world import SimWorld

_ROUTE_COLOURS = ("tab:blue", "tab:green", "tab:purple", "tab:olive", "tab:cyan", "tab:brown")


def draw_yard(ax: Any, world: SimWorld, show_labels: bool = True, show_background: bool = True) -> Any:
    """Draw the world's ground truth on a matplotlib Axes (x east, y north, metres); returns ``ax``."""
    from matplotlib.patches import Circle, Rectangle

    sc = world.scenario
    if show_background:
        for p in sc.background.patches:
            colour = "tab:orange" if p.factor >= 1 else "tab:gray"
            ax.add_patch(Circle((p.x_m, p.y_m), p.radius_m, color=colour, alpha=0.15, lw=0, zorder=0))
            ax.annotate(f"NORM x{p.factor:g}", (p.x_m, p.y_m), fontsize=6, ha="center", color=colour)
    stacks: dict[tuple[float, float], int] = {}
    for b in world.yard.boxes:
        stacks[(b.lo[0], b.lo[1])] = max(stacks.get((b.lo[0], b.lo[1]), 0), b.tier + 1)
    for b in world.yard.boxes:
        if b.tier != 0:
            continue
        n = stacks[(b.lo[0], b.lo[1])]
        ax.add_patch(
            Rectangle(
                (b.lo[0], b.lo[1]),
                b.hi[0] - b.lo[0],
                b.hi[1] - b.lo[1],
                facecolor=(0.55, 0.45, 0.35, 0.25 + 0.2 * min(n, 3)),
                edgecolor="0.3",
                lw=0.5,
                zorder=1,
            )
        )
    if show_labels:
        for row in sc.yard.rows:
            ax.annotate(
                f"row {row.id}",
                (row.x0_m - 1.0, row.y0_m + sc.yard.container.width_m / 2),
                fontsize=7,
                ha="right",
                va="center",
            )
    k = 0
    for unit_id, actor in world.actors.items():
        if isinstance(actor, RouteFollower):
            c = _ROUTE_COLOURS[k % len(_ROUTE_COLOURS)]
            k += 1
            pts = actor.path.points
            ax.plot(pts[:, 0], pts[:, 1], ls="--", lw=0.8, color=c, zorder=2, label=f"{unit_id} route")
        elif isinstance(actor, Walker):
            ax.plot(*actor.home, marker="^", color="tab:green", ms=6, zorder=3, ls="none")
            if show_labels:
                ax.annotate(unit_id, actor.home, fontsize=7, xytext=(3, 3), textcoords="offset points")
    for s in world.sources:
        ax.plot(
            s.position_m[0],
            s.position_m[1],
            marker="*",
            color="red",
            ms=12,
            mec="k",
            mew=0.5,
            zorder=5,
            ls="none",
        )
        if show_labels:
            where = f" in {s.container}" if s.container else ""
            ax.annotate(
                f"{s.source_id}: {s.nuclide} {s.activity_bq / 1e6:g} MBq{where}",
                (s.position_m[0], s.position_m[1]),
                fontsize=7,
                color="darkred",
                xytext=(5, -10),
                textcoords="offset points",
            )
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x east (m)")
    ax.set_ylabel("y north (m)")
    ax.set_title(f"{sc.name}: yard, routes and true sources", fontsize=9)
    ax.autoscale_view()
    return ax
