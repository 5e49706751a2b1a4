"""Offline replays of the camera pipeline's heart-rate validity path on recorded skin-colour traces.

Why: rendering and tracking a 30 s clip takes 10-50 s, re-running the spectral analysis, the
projection agreement and the gate on the skin-colour trace the pipeline recorded takes ~0.1 s.
Every update of a clip is replayed with the same code the pipeline runs
(:func:`agent.vision.pipeline.validated_pulse` and :func:`agent.vision.pipeline.window_pulse`) at
the same update times and window lengths, so a replay with the shipped settings reproduces the
pipeline's decisions (the trace is exactly what the pipeline averaged).  The benchmark uses it for
the gate-threshold curve (coverage and MAE as every threshold moves by the same offset); the
thresholds themselves are derived with it on tuning clips (:func:`derive_thresholds`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

#: Offsets (dB) added to every pulse-validity threshold for the gate-threshold curve.
CURVE_OFFSETS_DB = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


def replay_clip(clip: dict[str, Any], config: Any = None, fps: float = 30.0) -> list[dict[str, Any]]:
    """The heart-rate rows of ``clip`` (a :func:`cedge.bench.camera.run_case` result with its
    ``_trace``) re-decided under ``config``: t_s, truth, pos (reported or None), valid, raw, snr_db."""
    from agent.vision.pipeline import PipelineConfig, full_threshold_db, validated_pulse, window_pulse
    from agent.vision.pulse import PulseGate

    cfg = config or PipelineConfig()
    trace = clip.get("_trace")
    if trace is None or not len(trace["t_s"]):
        return []
    t_all, rgb_all = np.asarray(trace["t_s"]), np.asarray(trace["rgb"])
    gate = PulseGate(hold_margin_db=cfg.snr_hold_margin_db, hold_tolerance_bpm=cfg.hold_tolerance_bpm,
                     hold_s=cfg.hold_s, confirm_updates=cfg.hold_after_valid,
                     consecutive_s=1.5 * cfg.update_every_s)
    out = []
    for r in clip["hr"]:
        t_now, span = float(r["t_s"]), min(float(r["window_s"]), cfg.hr_window_s)
        n = int(np.searchsorted(t_all, t_now, side="right"))
        t, rgb = t_all[:n], rgb_all[:n]

        def pulse_at(method: str, thr: float, t: np.ndarray = t, rgb: np.ndarray = rgb,
                     t_now: float = t_now, span: float = span) -> Any:
            return window_pulse(t, rgb, t_now, span, fps, method, thr)

        pe = validated_pulse(pulse_at, gate, t_now, full_threshold_db(cfg, span), cfg)
        out.append({"t_s": t_now, "window_s": span, "truth": r["truth"],
                    "pos": pe.hr_bpm if pe is not None and pe.valid else None,
                    "valid": bool(pe is not None and pe.valid),
                    "raw": pe.raw_hr_bpm if pe is not None else None,
                    "snr_db": pe.snr_db if pe is not None else None})
    return out


def ungated_rates(clip: dict[str, Any], config: Any = None, fps: float = 30.0) -> list[float | None]:
    """Per heart-rate row of ``clip``: the rate the pipeline would report if its validity gate accepted
    every window (the estimate at no threshold, with the beat-train refinement), or None when the
    window holds too little skin.  The gate can only withhold these, never correct them."""
    from agent.vision.pipeline import PipelineConfig, window_pulse

    cfg = config or PipelineConfig()
    trace = clip.get("_trace")
    if trace is None or not len(trace["t_s"]):
        return [None] * len(clip.get("hr", []))
    t_all, rgb_all = np.asarray(trace["t_s"]), np.asarray(trace["rgb"])
    out: list[float | None] = []
    for r in clip["hr"]:
        t_now, span = float(r["t_s"]), min(float(r["window_s"]), cfg.hr_window_s)
        n = int(np.searchsorted(t_all, t_now, side="right"))
        pe = window_pulse(t_all[:n], rgb_all[:n], t_now, span, fps, cfg.method, -np.inf)
        out.append(None if pe is None else pe.hr_bpm)
    return out


def _summary(rows_by_clip: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> dict[str, Any]:
    def cov_mae(sel: list[dict[str, Any]]) -> tuple[float | None, float | None, int]:
        if not sel:
            return None, None, 0
        errs = [abs(r["pos"] - r["truth"]) for r in sel if r["valid"] and np.isfinite(r["truth"])]
        return (round(float(np.mean([r["valid"] for r in sel])), 4),
                round(float(np.mean(errs)), 3) if errs else None, len(sel))

    def cond(c: dict[str, Any]) -> str:  # "real_still" is a still clip too
        return str(c["group"]).replace("real_", "")

    out: dict[str, Any] = {}
    live = [(c, rows) for c, rows in rows_by_clip if cond(c) in ("still", "hard")]
    for label, sel in (("all", live), ("still", [x for x in live if cond(x[0]) == "still"]),
                       ("hard", [x for x in live if cond(x[0]) == "hard"])):
        cov, mae, n = cov_mae([r for _, rows in sel for r in rows])
        out[f"coverage_{label}"], out[f"mae_bpm_{label}"], out[f"updates_{label}"] = cov, mae, n
        errs = [abs(r["pos"] - r["truth"]) for _, rows in sel for r in rows if r["valid"] and np.isfinite(r["truth"])]
        out[f"over_5bpm_{label}"] = int(sum(e > 5.0 for e in errs))
    for src in sorted({c.get("pulse_source", "parametric") for c, _ in live}):
        cov, mae, _ = cov_mae([r for c, rows in live if c.get("pulse_source", "parametric") == src for r in rows])
        out[f"coverage_{src}"], out[f"mae_bpm_{src}"] = cov, mae
        for g in ("still", "hard"):
            cov, mae, _ = cov_mae([r for c, rows in live if c.get("pulse_source", "parametric") == src
                                   and cond(c) == g for r in rows])
            out[f"coverage_{src}_{g}"], out[f"mae_bpm_{src}_{g}"] = cov, mae
    ctrl = [r for c, rows in rows_by_clip if c["group"] == "control" for r in rows]
    out["control_false_pulse_rate"] = round(float(np.mean([r["valid"] for r in ctrl])), 4) if ctrl else None
    out["control_updates"] = len(ctrl)
    return out


def replay_summary(clips: list[dict[str, Any]], config: Any = None) -> dict[str, Any]:
    """Coverage, MAE and > 5 bpm errors (live clips, by condition and pulse source) and the share of
    control updates reported as a pulse, for ``config`` replayed over ``clips``."""
    return _summary([(c, replay_clip(c, config)) for c in clips])


def threshold_curve(clips: list[dict[str, Any]], config: Any = None,
                    offsets_db: tuple[float, ...] = CURVE_OFFSETS_DB) -> list[dict[str, Any]]:
    """:func:`replay_summary` as every validity threshold moves by ``offsets_db``."""
    from agent.vision.pipeline import PipelineConfig

    base = config or PipelineConfig()
    out = []
    for off in offsets_db:
        cfg = replace(base, snr_threshold_offset_db=base.snr_threshold_offset_db + off)
        out.append(dict(offset_db=off, **replay_summary(clips, cfg)))
    return out


def control_snr_quantiles(clips: list[dict[str, Any]], config: Any = None,
                          windows_s: tuple[tuple[float, float], ...] = ((6.0, 10.0), (10.0, 15.0), (15.0, 20.0),
                                                                          (20.0, 21.0)),
                          q: float = 0.98) -> list[dict[str, Any]]:
    """SNR of the control clips' windows (photo, mask) by window length: the ``q`` quantile and
    the maximum, with the estimate made at no threshold -- the raw material of the thresholds."""
    from agent.vision.pipeline import PipelineConfig, window_pulse

    cfg = config or PipelineConfig()
    snrs: dict[tuple[float, float], list[float]] = {w: [] for w in windows_s}
    for c in clips:
        if c["group"] != "control" or c.get("_trace") is None:
            continue
        t_all, rgb_all = np.asarray(c["_trace"]["t_s"]), np.asarray(c["_trace"]["rgb"])
        for r in c["hr"]:
            t_now, span = float(r["t_s"]), float(r["window_s"])
            n = int(np.searchsorted(t_all, t_now, side="right"))
            pe = window_pulse(t_all[:n], rgb_all[:n], t_now, span, 30.0, cfg.method, -np.inf)
            for lo, hi in windows_s:
                if pe is not None and lo <= span < hi:
                    snrs[(lo, hi)].append(pe.snr_db)
    return [{"window_s": list(w), "n": len(v), f"q{int(q * 100)}_db": round(float(np.quantile(v, q)), 2) if v else None,
             "max_db": round(float(np.max(v)), 2) if v else None} for w, v in snrs.items()]


def derive_anchors(clips: list[dict[str, Any]], config: Any = None, q: float = 0.98) -> tuple[tuple[float, float], ...]:
    """Validity-threshold anchors ``((10 s, dB), (20 s, dB))`` from the control clips of ``clips``:
    the ``q`` quantile of their SNR in 6-14 s windows and in 15-20 s windows (the SNR of noise
    falls as the window grows; :data:`agent.vision.pulse.SNR_THRESHOLD_ANCHORS_DB`).  Use tuning
    clips only."""
    table = control_snr_quantiles(clips, config, windows_s=((6.0, 15.0), (15.0, 21.0)), q=q)
    key = f"q{int(q * 100)}_db"
    return ((10.0, float(table[0][key])), (20.0, float(table[1][key])))
