"""The handheld part of ``cedge bench localize``: the guided search against walking to the point.

For every scenario whose source the mobile passes detected, a simulated operator with a 2x2 in
NaI handheld starts at a post outside the yard (background there for 120 s, as the agent's idle
background), and then:

* **guided search** (:class:`controller.localization.handheld_search.HandheldSearch`): the
  controller's posterior starts from the fused estimate; the operator walks to the stand point
  the controller picks, dwells ``dwell_s`` at each of two heights, the controller fuses the counts
  and picks the next, until it stops; then the final dwell (60 s) at the point nearest the
  estimate;
* **baseline** (what the dispatcher did before): walk straight to the wall point nearest the
  fused point estimate, dwell 60 s there; the source is placed at the fused estimate.

The counts are hal_sim's (ray tracing through the containers' steel and cargo with build-up,
the handheld's own response, dead time, Poisson noise): not the controller's model.  The final
spectrum goes through the handheld's own verdict (:func:`agent.analysis.handheld_verdict.judge_dwell`)
against its background spectrum, for the nuclide.

Success (``handheld_success_rate``): the final estimate within ``SUCCESS_RADIUS_M`` (3D) of the
true source *and* the top man-made nuclide of the verdict is the true one.  Also recorded: how
close the handheld itself got to the source (3D, closest dwell), walking distance, dwells, time.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from cedge.bench.localize_scenarios import Case, scenario_dict, site_of
from controller.localization.handheld_search import HandheldSearch, SearchConfig, walk_grid
from controller.localization.result import SourceEstimate

__all__ = ["HANDHELD_DETECTOR", "SUCCESS_RADIUS_M", "handheld_figure", "run_handheld", "summarize_handheld"]

HANDHELD_DETECTOR = "NaI 2x2 in"
SUCCESS_RADIUS_M = 1.0
POST_XY = (-20.0, -15.0)  # the operator's post: outside the yard's south-west corner
BACKGROUND_S = 120.0


class _Operator:
    """The simulated handheld: measures hal_sim counts where it stands, keeps time and distance."""

    def __init__(self, case: Case, seed: int) -> None:
        from hal_sim.scenario import scenario_from_dict
        from hal_sim.world import SimWorld

        self.world = SimWorld(scenario_from_dict(scenario_dict(case), case.name))
        self.resp = self.world.response(HANDHELD_DETECTOR)
        self.rng = np.random.default_rng([seed, 17])
        self.here = POST_XY
        self.walk_m = 0.0
        self.time_s = 0.0
        self.closest_m = math.inf
        self.truth = np.asarray(self.world.sources[0].position_m, dtype=float)

    def spectrum(self, x: float, y: float, z: float, t_s: float) -> tuple[np.ndarray, float]:
        rate, _dose = self.world.expected_rate_at(HANDHELD_DETECTOR, (x, y, z))
        spec, live = self.resp.sample(rate * t_s, t_s, self.rng)
        self.time_s += t_s
        self.closest_m = min(self.closest_m, float(np.linalg.norm(self.truth - np.array([x, y, z]))))
        return spec, live

    def walk(self, grid: Any, x: float, y: float, speed: float) -> None:
        dist, _ = grid.distances(*self.here)
        i, j = grid.nearest_free(x, y)
        d = float(dist[i, j]) if math.isfinite(dist[i, j]) else math.hypot(x - self.here[0], y - self.here[1])
        self.walk_m += d
        self.time_s += d / speed
        self.here = (x, y)


def _verdict(op: _Operator, spec: np.ndarray, live: float, bg: np.ndarray, bg_live: float,
             distance_m: float) -> list[str]:
    from agent.analysis.handheld_verdict import judge_dwell
    from agent.spectral.identify import NORM_SOURCES

    v = judge_dwell(spec, live, bg, bg_live, op.resp.calibration, HANDHELD_DETECTOR, distance_m, 5.0)
    return [n for n, _c in v.nuclides if n not in NORM_SOURCES]


def run_handheld(case: Case, estimate: SourceEstimate, seed: int, config: SearchConfig | None = None
                 ) -> dict[str, Any]:
    """Guided search and baseline for one scenario; returns the record's handheld fields."""
    cfg = config or SearchConfig()
    site = site_of(case)
    nuclide = case.sources[0].nuclide
    out: dict[str, Any] = {}
    # ---- guided search
    op = _Operator(case, seed)
    bg, bg_live = op.spectrum(*POST_XY, 1.0, BACKGROUND_S)
    op.time_s = 0.0
    op.closest_m = math.inf
    t0 = time.perf_counter()
    search = HandheldSearch(estimate, site, float(bg.sum()) / bg_live, cfg)
    modes: list[str] = []
    path: list[list[float]] = [list(op.here)]
    while True:
        g, k = search.guide(op.here)
        modes.append(g.mode)
        path.append([g.x_m, g.y_m])
        op.walk(search.grid, g.x_m, g.y_m, cfg.walk_speed_m_s)
        if k is None:
            break
        for h in g.heights_m:
            spec, live = op.spectrum(g.x_m, g.y_m, h, cfg.dwell_s)
            search.add(g.x_m, g.y_m, h, live, float(spec.sum()), stand=k)
    fx, fy, fz = search.final_point()
    spec, live = op.spectrum(fx, fy, fz, cfg.final_dwell_s)
    est = np.array(search.estimate_xyz())
    err = float(np.linalg.norm(est - op.truth))
    found = _verdict(op, spec, live, bg, bg_live, float(np.linalg.norm(est - np.array([fx, fy, fz]))))
    post = search.posterior()
    out.update(
        handheld_error_m=err, handheld_horizontal_error_m=float(np.hypot(*(est[:2] - op.truth[:2]))),
        handheld_height_error_m=float(abs(est[2] - op.truth[2])), handheld_closest_m=op.closest_m,
        handheld_nuclides=found, handheld_nuclide_ok=bool(found) and found[0] == nuclide,
        handheld_points=len(search.measured), handheld_walk_m=op.walk_m, handheld_time_s=op.time_s,
        handheld_radius_95_m=post["radius_95_m"], handheld_covered=bool(err <= max(post["radius_95_m"], 1e-9)),
        handheld_gradient=("gradient" in modes),
        handheld_chi2_per_dwell=search.best_chi2() / max(len(search.dwells), 1),
        handheld_cpu_s=time.perf_counter() - t0,
        handheld_path=path, handheld_estimate=est.tolist(), fused_estimate=[estimate.x_m, estimate.y_m, estimate.z_m],
    )
    out["handheld_success"] = bool(err <= SUCCESS_RADIUS_M and out["handheld_nuclide_ok"])
    # ---- baseline: straight to the fused point, one dwell, the fused point is the answer
    op = _Operator(case, seed)
    bg, bg_live = op.spectrum(*POST_XY, 1.0, BACKGROUND_S)
    op.time_s = 0.0
    op.closest_m = math.inf
    grid = search.grid if search.grid is not None else walk_grid(site, (-40, -30, 160, 60))
    fused = np.array([estimate.x_m, estimate.y_m, estimate.z_m])
    stand = min(search.stands, key=lambda s: math.hypot(s.x_m - fused[0], s.y_m - fused[1])) if search.stands \
        else None
    sx, sy = (stand.x_m, stand.y_m) if stand else (fused[0], fused[1])
    sz = min(cfg.heights_m, key=lambda h: abs(h - fused[2]))
    op.walk(grid, sx, sy, cfg.walk_speed_m_s)
    spec, live = op.spectrum(sx, sy, sz, cfg.final_dwell_s)
    found_b = _verdict(op, spec, live, bg, bg_live, float(np.linalg.norm(fused - np.array([sx, sy, sz]))))
    err_b = float(np.linalg.norm(fused - op.truth))
    out.update(
        baseline_handheld_error_m=err_b, baseline_handheld_closest_m=op.closest_m,
        baseline_handheld_nuclide_ok=bool(found_b) and found_b[0] == nuclide, baseline_handheld_time_s=op.time_s,
    )
    out["baseline_handheld_success"] = bool(err_b <= SUCCESS_RADIUS_M and out["baseline_handheld_nuclide_ok"])
    return out


def summarize_handheld(recs: list[dict[str, Any]]) -> dict[str, Any]:
    hh = [r for r in recs if "handheld_success" in r]
    if not hh:
        return {"handheld_success_rate": None, "baseline_handheld_success_rate": None, "handheld_n": 0}

    def med(key: str) -> float:
        return float(np.median([r[key] for r in hh]))

    return {
        "handheld_success_rate": float(np.mean([r["handheld_success"] for r in hh])),
        "baseline_handheld_success_rate": float(np.mean([r["baseline_handheld_success"] for r in hh])),
        "handheld_n": len(hh),
        "handheld_median_error_m": med("handheld_error_m"),
        "baseline_handheld_median_error_m": med("baseline_handheld_error_m"),
        "handheld_median_closest_m": med("handheld_closest_m"),
        "baseline_handheld_median_closest_m": med("baseline_handheld_closest_m"),
        "handheld_nuclide_rate": float(np.mean([r["handheld_nuclide_ok"] for r in hh])),
        "baseline_handheld_nuclide_rate": float(np.mean([r["baseline_handheld_nuclide_ok"] for r in hh])),
        "handheld_median_points": med("handheld_points"),
        "handheld_median_time_s": med("handheld_time_s"),
        "baseline_handheld_median_time_s": med("baseline_handheld_time_s"),
        "handheld_coverage_95": float(np.mean([r["handheld_covered"] for r in hh])),
        "handheld_gradient_share": float(np.mean([r["handheld_gradient"] for r in hh])),
        "handheld_success_radius_m": SUCCESS_RADIUS_M,
        "handheld_detector": HANDHELD_DETECTOR,
    }


def handheld_figure(recs: list[dict[str, Any]], cases_by_name: dict[str, Case], path: Any) -> str | None:
    """Left: 3D error of the final estimate, guided search against the walk to the fused point
    (sorted, with the 1-m success line).  Right: one search's stand points over the yard."""
    hh = [r for r in recs if "handheld_success" in r]
    if not hh:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), dpi=100)
    ax = axes[0]
    a = np.sort([r["handheld_error_m"] for r in hh])
    b = np.sort([r["baseline_handheld_error_m"] for r in hh])
    ax.plot(np.arange(1, len(a) + 1) / len(a), a, "-o", ms=3, label="guided search (posterior mean)")
    ax.plot(np.arange(1, len(b) + 1) / len(b), b, "-s", ms=3, label="walk to the fused point")
    ax.axhline(SUCCESS_RADIUS_M, color="k", ls="--", lw=1, label="success radius")
    ax.set_yscale("log")
    ax.set_xlabel("share of detected scenarios")
    ax.set_ylabel("3D error of the final estimate (m)")
    ax.set_title(f"handheld: success {np.mean([r['handheld_success'] for r in hh]):.2f} "
                 f"vs {np.mean([r['baseline_handheld_success'] for r in hh]):.2f} (baseline)")
    ax.legend(fontsize=8)
    ax = axes[1]
    pick = max(hh, key=lambda r: r["baseline_handheld_error_m"] - r["handheld_error_m"])
    site = site_of(cases_by_name[pick["name"]])
    for col in site.columns:
        ax.add_patch(Rectangle(col.lo[:2], col.hi[0] - col.lo[0], col.hi[1] - col.lo[1], fc="0.85", ec="0.5"))
    pts = np.asarray(pick["handheld_path"][1:])
    ax.plot(pts[:, 0], pts[:, 1], "-o", color="tab:blue", ms=4, label="stand points in order")
    for i, (x, y) in enumerate(pts):
        ax.annotate(str(i + 1), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    tr = pick["truth"]
    ax.plot(tr[0], tr[1], "*", color="gold", ms=15, mec="k", label="true source")
    ax.plot(*pick["fused_estimate"][:2], "X", color="tab:orange", ms=10, mec="k", label="fused (mobile) estimate")
    ax.plot(*pick["handheld_estimate"][:2], "P", color="magenta", ms=10, mec="k", label="after the search")
    ax.set_xlim(tr[0] - 9, tr[0] + 9)
    ax.set_ylim(tr[1] - 6, tr[1] + 6)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"{pick['name']}: {pick['baseline_handheld_error_m']:.1f} m -> {pick['handheld_error_m']:.2f} m")
    ax.set_xlabel("x east (m)")
    ax.set_ylabel("y north (m)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)
