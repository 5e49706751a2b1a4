"""``cedge bench localize``: 3D source localization in container stacks, against the truth and the bound.

Scenarios (:mod:`cedge.bench.localize_scenarios`, fixed seeds): a single pass along the yard's
edge, the same with a two-detector mast, two passes of one vehicle, two vehicles at once, a
three-high stack with the source in the lower or the upper tier, two sources in one row, cargo of
different densities with the source against one long wall (one-sided shielding), speeds 2-10 m/s,
standoffs 3-30 m, Cs-137/Co-60/Ir-192/Am-241 of 1-400 MBq, and background-only drives.  The data
are hal_sim spectra (1 s, NaI 2x4x16 in log), gross counts per interval, mid-interval positions.

What is scored (per scenario, then summarised):

* detection: the no-source test passes (``detection_rate`` over scenarios with a source;
  ``false_source_rate`` over background-only ones);
* ``median_horizontal_error_m`` / ``median_height_error_m``: the reported source against the
  truth, over detected one-source scenarios (height only where the fit reports it resolved);
* ``median_lane_normal_bias_m``: signed error across the row (positive: towards the thinly
  shielded side, where an unshielded model is pulled), over the one-sided scenarios;
* ``rms_over_crlb``: three fixed geometries (two lanes; a source against a wall of dense cargo
  seen from two lanes; a third-tier source seen by a mast from two lanes), each repeated with 12
  independent noise seeds: sqrt(mean error^2 / mean CRLB_xy), CRLB_xy the trace of the horizontal block of the
  Cramer-Rao bound for the same geometry, counts and background
  (:func:`controller.localization.crlb_position`) - the RMS over repeats of one geometry is what
  the bound bounds; per geometry in ``rms_over_crlb_by_geometry``; estimates in the wrong basin
  (mirror container) are outliers, left out of the ratio and counted
  (``rms_over_crlb_outlier_rate``).  Over all scenarios (one seed
  each) the median of error/sqrt(CRLB) is reported too;
* ``coverage_95``: share of detected one-source scenarios whose truth lies in the reported
  horizontal 95 % ellipse (GNSS term included where the scenario has GNSS error);
  ``coverage_95_3d`` the same for the 3D ellipsoid where the height is reported resolved;
* ``false_source_rate``: background-only drives with a source reported, split into a flat
  background and a +25 % NORM patch on a lane (the latter flagged, see controller.localization.fit);
* ``two_source_detect_rate``: both sources of a two-source scenario reported, each within 2 m;
* ``ms_per_update_p50``: CPU time (one thread, process pinned to one core) of
  :meth:`IncrementalLocalizer.update` over a 10-minute drive at 1 Hz looping around the source row;
* ``baseline_median_horizontal_error_m``: on the same detected scenarios, a plain baseline - one
  pass (the one with the highest count rate), isotropic point source, scipy's L-BFGS-B, no site;
* ``handheld_success_rate``: over the detected one-source scenarios, the handheld's guided search
  (:mod:`cedge.bench.localize_handheld`, hal_sim counts of a 2x2 in NaI) ends with its estimate
  within 1 m (3D) of the source and the right nuclide; ``baseline_handheld_success_rate`` the same
  for walking straight to the fused point and dwelling there.  This part adds ~4 s of CPU per
  scenario (and ~40 s once for the identifier's templates).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cedge.bench.localize_handheld import handheld_figure, run_handheld, summarize_handheld
from cedge.bench.localize_scenarios import (
    BENCH_SEED,
    LANES_Y,
    TUNE_SEED,
    Case,
    Drive,
    SimulatedCase,
    SourceDef,
    _std_rows,
    cases,
    simulate,
    site_of,
)
from cedge.bench.results import save_results
from controller.localization import (
    IncrementalLocalizer,
    LocalizationParams,
    MeasurementSet,
    crlb_position,
    locate,
)

__all__ = ["baseline_single_pass", "run_bench", "score_case"]

MATCH_RADIUS_M = 2.0


# =========================================================================== baseline
def baseline_single_pass(ms: MeasurementSet, mu_air_per_m: float = 0.0093) -> tuple[float, float, float] | None:
    """One pass, isotropic point source in free space, Poisson ML with scipy (L-BFGS-B), no site.

    The pass is the unit-pass holding the highest count; starts either side of its peak at 2, 5
    and 10 m and two heights.  Background: the pass's median rate, fitted as a free parameter.
    """
    from scipy import optimize

    assert ms.t_s is not None and ms.detector is not None
    rate = ms.counts / ms.live_time_s
    i_peak = int(np.argmax(rate))
    det = ms.detector[i_peak]
    idx = np.flatnonzero(ms.detector == det)
    t = ms.t_s[idx]
    order = np.argsort(t)
    idx = idx[order]
    brk = np.flatnonzero(np.diff(ms.t_s[idx]) > 3.0) + 1
    run = next(r for r in np.split(idx, brk) if i_peak in r)
    if len(run) < 5:
        return None
    p_mid = ms.mid_xyz_m[run]
    c = ms.counts[run]
    live = ms.live_time_s[run]
    b0 = float(np.median(c / live))

    def nll(v: np.ndarray) -> float:
        s, log_s, log_b = v[:3], v[3], v[4]
        d2 = ((p_mid - s) ** 2).sum(axis=1) + 0.09
        lam = live * (math.exp(log_b) + math.exp(log_s) * np.exp(-mu_air_per_m * np.sqrt(d2)) / d2)
        return float(np.sum(lam - c * np.log(lam)))

    peak = ms.mid_xyz_m[i_peak]
    direction = p_mid[-1, :2] - p_mid[0, :2]
    direction = direction / max(float(np.linalg.norm(direction)), 1e-9)
    normal = np.array([-direction[1], direction[0]])
    best = None
    for off in (2.0, 5.0, 10.0):
        for sign in (1.0, -1.0):
            for z in (1.0, 3.0):
                xy = peak[:2] + sign * off * normal
                v0 = np.array([xy[0], xy[1], z, math.log(max((rate[i_peak] - b0) * off * off, 1.0)), math.log(b0)])
                res = optimize.minimize(nll, v0, method="L-BFGS-B",
                                        bounds=[(None, None), (None, None), (0.0, 12.0), (-5.0, 25.0), (-5.0, 15.0)])
                if best is None or res.fun < best.fun:
                    best = res
    assert best is not None
    return float(best.x[0]), float(best.x[1]), float(best.x[2])


# =========================================================================== scoring
def _params(case: Case) -> LocalizationParams:
    return LocalizationParams(site=site_of(case))


def score_case(sim: SimulatedCase, params: LocalizationParams | None = None, handheld: bool = False
               ) -> dict[str, Any]:
    """Run the localizer (and the baseline, and the bound) on one simulated scenario; with
    ``handheld``, also the handheld's guided search and its walk-to-the-point baseline
    (:mod:`cedge.bench.localize_handheld`) where the source was detected."""
    case = sim.case
    p = params or _params(case)
    t0 = time.thread_time()
    res = locate(sim.ms, p)
    cpu_ms = 1000.0 * (time.thread_time() - t0)
    rec: dict[str, Any] = {"name": case.name, "family": case.family, "n_truth": len(sim.truth),
                           "n_sources": res.n_sources, "statistic_1": res.statistic_1,
                           "statistic_2": res.statistic_2, "fit_ms": cpu_ms, "n_measurements": len(sim.ms),
                           "gnss_sigma_m": case.gnss_sigma_m, "tags": case.tags, "reason": res.reason,
                           "smooth_background_flag": res.smooth_background_explains, "norm_patch": case.norm_patch}
    if not sim.truth:
        rec["false_source"] = res.n_sources > 0
        return rec
    rec["detected"] = res.n_sources > 0
    if len(sim.truth) == 2:
        found = 0
        if res.n_sources == 2:
            d = [[math.hypot(e.x_m - t[0], e.y_m - t[1]) for t in sim.truth] for e in res.sources]
            found = int(max(min(d[0][0], d[1][1]) <= MATCH_RADIUS_M and max(d[0][0], d[1][1]) <= MATCH_RADIUS_M,
                            max(d[0][1], d[1][0]) <= MATCH_RADIUS_M))
        rec["both_found"] = bool(found)
        rec["estimates"] = [(e.x_m, e.y_m, e.z_m) for e in res.sources]
        rec["truth"] = sim.truth
        return rec
    truth = np.asarray(sim.truth[0])
    rec["truth"] = truth.tolist()
    if not res.sources:
        return rec
    e = res.sources[0]
    rec.update(
        x_m=e.x_m, y_m=e.y_m, z_m=e.z_m, sigma_xy_m=e.sigma_xy_m, sigma_z_m=e.sigma_z_m, z_resolved=e.z_resolved,
        horizontal_error_m=math.hypot(e.x_m - truth[0], e.y_m - truth[1]), height_error_m=abs(e.z_m - truth[2]),
        covered_95=e.covers(truth), covered_95_3d=e.covers(truth, three_d=True) if e.z_resolved else None,
        ambiguous=e.ambiguous, overdispersion=e.overdispersion, column=e.column,
        cov_xy=e.cov[:2, :2].tolist(), ellipse=[e.ellipse_major_m, e.ellipse_minor_m, e.ellipse_angle_deg],
    )
    if case.one_sided:
        # normal across the row pointing to the nearer long wall (the thinly shielded side)
        src = case.sources[0]
        sign = -1.0 if src.offset_m[1] < 1.22 else 1.0
        rec["lane_normal_error_m"] = sign * (e.y_m - truth[1])
    try:
        bound = crlb_position(sim.ms, [tuple(truth)], p)
        rec["crlb_sigma_xy_m"] = bound.sigma_xy_m[0]
        rec["crlb_sigma_z_m"] = bound.sigma_z_m[0]
    except (ValueError, np.linalg.LinAlgError) as err:
        rec["crlb_error"] = str(err)
    base = baseline_single_pass(sim.ms)
    if base is not None:
        rec["baseline_horizontal_error_m"] = math.hypot(base[0] - truth[0], base[1] - truth[1])
    if handheld:
        rec.update(run_handheld(case, e, case.seed))
    return rec


# =========================================================================== efficiency against the bound
def crlb_geometries(seed: int, n_seeds: int) -> list[Case]:
    """Fixed geometries, each repeated with independent noise: the RMS error over the repeats
    against the Cramer-Rao bound of that geometry (how the bound is meant to be compared)."""
    rng = np.random.default_rng(seed + 17)
    out = []
    geoms = [
        ("two_lanes", _std_rows(), SourceDef("Cs-137", 20.0, "B-3", 0, (6.0, 1.2, 1.0)),
         lambda: (Drive("veh-1", LANES_Y["ab"], -25.0, 110.0, 5.0, 0.0),
                  Drive("veh-1", LANES_Y["bc"], 110.0, -25.0, 5.0, 60.0))),
        ("one_sided", _std_rows(density=0.3), SourceDef("Cs-137", 30.0, "B-3", 0, (5.0, 0.45, 1.0)),
         lambda: (Drive("veh-1", LANES_Y["ab"], -25.0, 110.0, 5.0, 0.0),
                  Drive("veh-1", LANES_Y["bc"], 110.0, -25.0, 5.0, 60.0))),
        ("upper_tier", _std_rows(stack_b=3), SourceDef("Cs-137", 40.0, "B-4", 2, (7.0, 1.0, 1.5)),
         lambda: (Drive("veh-1", LANES_Y["ab"], -25.0, 110.0, 5.0, 0.0, (1.0, 3.5)),
                  Drive("veh-1", LANES_Y["bc"], 110.0, -25.0, 5.0, 60.0, (1.0, 3.5)))),
    ]
    for name, rows, src, drives in geoms:
        for i in range(n_seeds):
            out.append(Case(name=f"crlb_{name}-{i}", family=f"crlb_{name}", seed=int(rng.integers(2**31)), rows=rows,
                            sources=(src,), drives=drives()))
    return out


def efficiency(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """RMS horizontal error over repeats / sqrt(mean horizontal CRLB), per geometry and pooled.

    The bound is local: it describes the error inside the right basin of the likelihood.  An
    estimate in another basin (the mirror container across a lane) is an *outlier* - error above
    max(2 m, 10 sqrt(CRLB)) - counted in ``outlier_rate`` and left out of the ratio, the usual
    split into threshold (outlier) and asymptotic (bound) regimes of ML estimation (e.g. Van
    Trees, Detection, Estimation and Modulation Theory I, sec. 4.2.3)."""
    out: dict[str, Any] = {}
    e2_all: list[float] = []
    c2_all: list[float] = []
    n_all = 0
    n_out = 0
    for fam in sorted({r["family"] for r in recs}):
        rs_all = [r for r in recs if r["family"] == fam and "horizontal_error_m" in r and r.get("crlb_sigma_xy_m")]
        rs = [r for r in rs_all if r["horizontal_error_m"] <= max(2.0, 10.0 * r["crlb_sigma_xy_m"])]
        n_all += len(rs_all)
        n_out += len(rs_all) - len(rs)
        if not rs:
            continue
        e2 = [r["horizontal_error_m"] ** 2 for r in rs]
        c2 = [r["crlb_sigma_xy_m"] ** 2 for r in rs]
        e2_all += e2
        c2_all += c2
        out[fam] = {"n": len(rs_all), "outliers": len(rs_all) - len(rs), "rms_error_m": math.sqrt(float(np.mean(e2))),
                    "sqrt_crlb_m": math.sqrt(float(np.mean(c2))),
                    "rms_over_crlb": math.sqrt(float(np.mean(e2)) / float(np.mean(c2)))}
    pooled = math.sqrt(float(np.mean(e2_all)) / float(np.mean(c2_all))) if e2_all else None
    return {"rms_over_crlb": pooled, "outlier_rate": n_out / max(n_all, 1), "by_geometry": out}


# =========================================================================== incremental timing
@contextmanager
def _one_core() -> Iterator[str]:
    """Pin the process to one CPU while timing (restored afterwards)."""
    note = "thread CPU time"
    affinity = None
    if hasattr(os, "sched_getaffinity"):
        affinity = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, {min(affinity)})
            note += f", pinned to CPU {min(affinity)}"
        except OSError:
            affinity = None
    try:
        yield note
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)


def drive_case(seed: int, duration_s: float = 600.0) -> Case:
    """A 10-minute drive at 5 m/s looping around row B (lanes either side), source in B-3."""
    rng = np.random.default_rng(seed)
    loop = 2 * 135.0 + 2 * 12.0
    n_loops = math.ceil(duration_s * 5.0 / loop)
    drives = []
    t = 0.0
    for _ in range(n_loops):
        drives.append(Drive("veh-1", LANES_Y["ab"], -25.0, 110.0, 5.0, t))
        t += 135.0 / 5.0 + 12.0 / 5.0
        drives.append(Drive("veh-1", LANES_Y["bc"], 110.0, -25.0, 5.0, t))
        t += 135.0 / 5.0 + 12.0 / 5.0
    offset = (round(float(rng.uniform(1, 11)), 2), round(float(rng.uniform(0.4, 2.0)), 2), 1.0)
    return Case(name="drive_10min", family="drive", seed=int(rng.integers(2**31)), rows=_std_rows(),
                sources=(SourceDef("Cs-137", 50.0, "B-3", 0, offset),), drives=tuple(drives))


def time_updates(sim: SimulatedCase, params: LocalizationParams, duration_s: float = 600.0) -> dict[str, Any]:
    ms = sim.ms
    assert ms.t_s is not None
    order = np.argsort(ms.t_s)
    t_first = float(ms.t_s[order[0]])
    loc = IncrementalLocalizer(params)
    times: list[float] = []
    last = None
    with _one_core() as note:
        for i in order:
            if ms.t_s[i] - t_first > duration_s:
                break
            mid = ms.mid_xyz_m[i]
            loc.add(float(ms.t_s[i]), (mid[0], mid[1], mid[2]), float(ms.live_time_s[i]), float(ms.counts[i]),
                    unit_id="veh-1", detector_id="d0", detector_model="NaI 2x4x16 in log",
                    position_sigma_m=float(ms.position_sigma_m[i]) if ms.position_sigma_m is not None else 0.0)
            t0 = time.thread_time()
            last = loc.update()
            times.append(1000.0 * (time.thread_time() - t0))
    tm = np.asarray(times)
    out: dict[str, Any] = {
        "updates": len(times), "ms_per_update_p50": float(np.percentile(tm, 50)),
        "ms_per_update_p95": float(np.percentile(tm, 95)), "ms_per_update_max": float(tm.max()),
        "full_searches": loc.full_searches, "timing": note,
    }
    if last is not None and last.sources:
        e = last.sources[0]
        tr = sim.truth[0]
        out["final_horizontal_error_m"] = math.hypot(e.x_m - tr[0], e.y_m - tr[1])
        out["final_n_sources"] = last.n_sources
    return out


# =========================================================================== summary
def _median(v: list[float]) -> float | None:
    return float(np.median(v)) if v else None


def summarize(recs: list[dict[str, Any]]) -> dict[str, Any]:
    with_src = [r for r in recs if r["n_truth"] >= 1]
    single = [r for r in recs if r["n_truth"] == 1]
    det1 = [r for r in single if r.get("detected")]
    resolved = [r for r in det1 if r.get("z_resolved")]
    one_sided = [r for r in det1 if "lane_normal_error_m" in r]
    exact = [r for r in det1 if r["gnss_sigma_m"] == 0 and r.get("crlb_sigma_xy_m")]
    two = [r for r in recs if r["n_truth"] == 2]
    bg = [r for r in recs if r["n_truth"] == 0]
    bg_flat = [r for r in bg if not r["norm_patch"]]
    bg_norm = [r for r in bg if r["norm_patch"]]
    norm_false = [r for r in bg_norm if r["false_source"]]
    base = [r["baseline_horizontal_error_m"] for r in det1 if "baseline_horizontal_error_m" in r]
    ratio2 = [r["horizontal_error_m"] ** 2 / r["crlb_sigma_xy_m"] ** 2 for r in exact]
    out: dict[str, Any] = {
        "scenarios": len(recs),
        "detection_rate": len([r for r in with_src if r.get("detected")]) / max(len(with_src), 1),
        "median_horizontal_error_m": _median([r["horizontal_error_m"] for r in det1]),
        "p90_horizontal_error_m": float(np.percentile([r["horizontal_error_m"] for r in det1], 90)) if det1 else None,
        "median_height_error_m": _median([r["height_error_m"] for r in resolved]),
        "height_resolved_share": len(resolved) / max(len(det1), 1),
        "median_lane_normal_bias_m": _median([r["lane_normal_error_m"] for r in one_sided]),
        "rms_over_crlb": math.sqrt(float(np.mean(ratio2))) if ratio2 else None,
        "rms_over_crlb_median_ratio": float(np.sqrt(np.median(ratio2))) if ratio2 else None,
        "coverage_95": float(np.mean([r["covered_95"] for r in det1])) if det1 else None,
        "coverage_95_3d": float(np.mean([r["covered_95_3d"] for r in resolved])) if resolved else None,
        "two_source_detect_rate": float(np.mean([r["both_found"] for r in two])) if two else None,
        "false_source_rate": float(np.mean([r["false_source"] for r in bg])) if bg else None,
        "false_source_rate_flat_background": (float(np.mean([r["false_source"] for r in bg_flat]))
                                              if bg_flat else None),
        "false_source_rate_norm_patch": float(np.mean([r["false_source"] for r in bg_norm])) if bg_norm else None,
        "norm_false_sources_flagged": (float(np.mean([r["smooth_background_flag"] for r in norm_false]))
                                       if norm_false else None),
        "true_sources_flagged_smooth_background": float(np.mean([r["smooth_background_flag"] for r in det1]))
        if det1 else None,
        "baseline_median_horizontal_error_m": _median(base),
        "fit_ms_p50": _median([r["fit_ms"] for r in recs]),
    }
    out.update(summarize_handheld(recs))
    fam: dict[str, dict[str, Any]] = {}
    for r in recs:
        f = fam.setdefault(r["family"], {"n": 0, "detected": 0, "errors": [], "false": 0})
        f["n"] += 1
        f["detected"] += int(bool(r.get("detected") or r.get("both_found") or r.get("false_source")))
        if "horizontal_error_m" in r:
            f["errors"].append(r["horizontal_error_m"])
    out["families"] = {k: {"n": v["n"], "detected_or_flagged": v["detected"],
                           "median_horizontal_error_m": _median(v["errors"])} for k, v in fam.items()}
    return out


# =========================================================================== figures
def write_figures(recs: list[dict[str, Any]], sims: dict[str, SimulatedCase], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse, Rectangle

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), dpi=100)
    ax = axes[0]
    pts = [(r["crlb_sigma_xy_m"], r["horizontal_error_m"], r["family"]) for r in recs
           if r.get("crlb_sigma_xy_m") and "horizontal_error_m" in r]
    fams = sorted({f for _, _, f in pts})
    cmap = plt.get_cmap("tab20")
    for i, f in enumerate(fams):
        xs = [a for a, _, g in pts if g == f]
        ys = [b for _, b, g in pts if g == f]
        ax.scatter(xs, ys, s=14, color=cmap(i % 20), label=f)
    if pts:
        lo = max(min(min(a, b) for a, b, _ in pts), 1e-3)
        hi = max(max(a, b) for a, b, _ in pts)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="error = sqrt(CRLB)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sqrt(CRLB) horizontal (m)")
    ax.set_ylabel("achieved horizontal error (m)")
    ax.set_title("error against the Cramer-Rao bound")
    ax.legend(fontsize=6, ncol=2)
    ax = axes[1]
    name = next((r["name"] for r in recs if r["family"] == "one_sided" and "cov_xy" in r), None)
    name = name or next((r["name"] for r in recs if "cov_xy" in r), None)
    if name and name in sims:
        sim = sims[name]
        rec = next(r for r in recs if r["name"] == name)
        site = site_of(sim.case)
        for col in site.columns:
            ax.add_patch(Rectangle(col.lo[:2], col.hi[0] - col.lo[0], col.hi[1] - col.lo[1], fc="0.85", ec="0.5"))
        mid = sim.ms.mid_xyz_m
        sc = ax.scatter(mid[:, 0], mid[:, 1], c=sim.ms.counts / sim.ms.live_time_s, s=8, cmap="viridis")
        fig.colorbar(sc, ax=ax, label="count rate (1/s)", shrink=0.8)
        tr = rec["truth"]
        ax.plot(tr[0], tr[1], "*", color="gold", ms=15, mec="k", label="true source")
        ax.plot(rec["x_m"], rec["y_m"], "X", color="magenta", ms=10, mec="k", label="estimate")
        vals, vecs = np.linalg.eigh(np.asarray(rec["cov_xy"]))
        vals = np.clip(vals, 1e-8, None)
        k = math.sqrt(5.991)
        ax.add_patch(Ellipse((rec["x_m"], rec["y_m"]), 2 * k * math.sqrt(vals[1]), 2 * k * math.sqrt(vals[0]),
                             angle=math.degrees(math.atan2(vecs[1, 1], vecs[0, 1])), fill=False, ec="magenta",
                             lw=1.5, label="95 % region"))
        ax.set_xlim(tr[0] - 12, tr[0] + 12)  # close enough to see the 95 % ellipse, wide enough for both lanes
        ax.set_ylim(tr[1] - 7, tr[1] + 8)
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_title(f"{name}: error {rec['horizontal_error_m']:.2f} m")
        ax.set_xlabel("x east (m)")
        ax.set_ylabel("y north (m)")
    fig.tight_layout()
    path = out / "bench_localize.png"
    fig.savefig(path)
    plt.close(fig)
    paths.append(str(path))
    hh = handheld_figure(recs, {k: v.case for k, v in sims.items()}, out / "bench_localize_handheld.png")
    if hh:
        paths.append(hh)
    return paths


# =========================================================================== entry point
def run_bench(json_out: bool = False, quick: bool = False, out_dir: str | Path | None = None,
              seed: int = BENCH_SEED, cache_dir: str | Path | None = None,
              families: list[str] | None = None, handheld: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns one flat dict (the CLI prints it as JSON)."""
    t0 = time.perf_counter()
    cache = Path(cache_dir) if cache_dir else None
    todo = [c for c in cases(seed, quick) if not families or any(c.family.startswith(f) for f in families)]
    recs: list[dict[str, Any]] = []
    sims: dict[str, SimulatedCase] = {}
    progress = None if json_out else _progress(len(todo) + 3 * (3 if quick else 12))
    for c in todo:
        sim = simulate(c, cache_dir=cache)
        sims[c.name] = sim
        recs.append(score_case(sim, handheld=handheld))
        if progress:
            progress(c.name, recs[-1])
    result: dict[str, Any] = {"bench": "localize", "quick": quick, "seed": seed,
                              "tuning_seed": TUNE_SEED, "detector": "NaI 2x4x16 in log"}
    result.update(summarize(recs))
    eff_recs = []
    for c in crlb_geometries(seed, 3 if quick else 12):
        sim = simulate(c, cache_dir=cache)
        eff_recs.append(score_case(sim))
        if progress:
            progress(c.name, eff_recs[-1])
    eff = efficiency(eff_recs)
    result["rms_over_crlb_all_scenarios_median_ratio"] = result.pop("rms_over_crlb_median_ratio")
    result.pop("rms_over_crlb")
    result["rms_over_crlb"] = eff["rms_over_crlb"]
    result["rms_over_crlb_outlier_rate"] = eff["outlier_rate"]
    result["rms_over_crlb_by_geometry"] = eff["by_geometry"]
    drive = drive_case(seed, 120.0 if quick else 600.0)
    dsim = simulate(drive, cache_dir=cache)
    timing = time_updates(dsim, _params(drive), 120.0 if quick else 600.0)
    result["ms_per_update_p50"] = timing["ms_per_update_p50"]
    result["incremental"] = timing
    result["seconds_total"] = time.perf_counter() - t0
    if out_dir is not None:
        save_results(result, out_dir, "localize", lambda out: write_figures(recs, sims, out))
        import json

        (Path(out_dir) / "bench_localize_cases.json").write_text(json.dumps(recs, default=float, indent=1),
                                                                 encoding="utf-8")
    return result


def _progress(total: int) -> Any:
    import sys

    count = [0]

    def show(name: str, rec: dict[str, Any]) -> None:
        count[0] += 1
        err = rec.get("horizontal_error_m")
        err_s = f"{err:.2f} m" if err is not None else "-"
        print(f"[{count[0]}/{total}] {name}: sources {rec['n_sources']}, error {err_s}", file=sys.stderr)

    return show
