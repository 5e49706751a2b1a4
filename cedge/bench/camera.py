"""``cedge bench camera``: heart rate, respiration, blinks, abnormal state and speed of agent.vision.

Every clip is rendered by ``hal_sim.face`` from a fixed seed (30 s, 640x480, 30 fps, sensor
noise on) and run frame by frame through :class:`agent.vision.pipeline.CameraPipeline`, exactly
as on the box.  Seeds ``BENCH_SEED + i`` are disjoint from the tuning seeds ``TUNE_SEED + i``
used to set the pulse-quality thresholds (:func:`tune_gate`) and the other detector settings.

Clip groups (all six Fitzpatrick skin types in each group of the full run):

* ``still``   -- a still, clean face (sensor noise only);
* ``hard``    -- head motion (translation, turning, glances), 100 Hz mains flicker through a rolling
  shutter, specular highlights and JPEG compression at quality 75 (libjpeg's default, what an
  MJPG webcam delivers) all at once;
* ``control`` -- negative controls: a printed photo (still and hand-held) and a live person
  wearing a skin-coloured mask (breathes and blinks, no visible pulse);
* ``episode`` -- a calm baseline, then a scripted tense episode from 12 s to the end.

Metrics:

* heart rate: every pipeline update (1 Hz) with a valid pulse, against the mean of the true
  instantaneous rate over the same window; MAE per group and per skin type; coverage (share of
  updates with a valid pulse); the GREEN baseline (Verkruysse 2008) and CHROM on the same clips,
  same skin regions and windows, without quality gating; POS also without gating;
* inter-beat intervals: every published interval matched to a true one
  (:func:`agent.vision.beats.score_ibis`); MAE in ms, coverage (share of true intervals reported),
  and the RMSSD of adjacent reported intervals against the true RMSSD of the same pairs;
* ``no_pulse_detection_rate``: share of updates on control clips reported as *no valid pulse*;
* respiration: every update with a rate, against the mean true rate over its window;
* blinks: detected blink intervals matched one-to-one to true ones (overlap within 0.2 s), F1
  pooled over clips; blink-rate error per clip over the tracked span;
* abnormal state: ROC AUC of the per-update score (from the end of the 10 s personal baseline)
  against the scripted state, pooled over the episode clips and the calm still clips;
* speed: wall time of ``CameraPipeline.process`` per frame, one face, OpenCV on one thread and
  the process pinned to one CPU; p50 and p99.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cedge.bench.results import save_results

BENCH_SEED = 20_261_127
TUNE_SEED = 7_100_000
TONES = (1, 2, 3, 4, 5, 6)
JPEG_QUALITY = 90
HARD = {"motion": True, "flicker": True, "specular": True, "jpeg_quality": JPEG_QUALITY}
EPISODE = [(12.0, 30.0, "tense")]
DURATION_S = 30.0


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # still | hard | control | episode
    spec: Any  # hal_sim.face.ClipSpec
    seed: int


#: Still and hard clips per skin type in the full run: REPS first, EXTRA_REPS more appended after
#: the episode clips (so the first 42 clips and their seeds are those of the earlier, 2-per-type
#: design).  Why 4: the skin-tone ratio is a max/min over six small groups.  Bootstrapping clips of
#: 72 tuning clips (types I-VI, 6 still + 6 hard each) with the shipped pipeline, whose pooled ratio
#: is 1.47, gives a worst/best ratio above 2 in 41 % of draws with 2 + 2 clips per type and in 21 %
#: with 4 + 4 (median 1.88 and 1.70): with 2 + 2 the benchmark mostly measured which clips were drawn.
REPS = 2
EXTRA_REPS = 2
#: Appended after those (2026-11-28, third session): MORE_REPS further still + hard clips per type
#: and a second episode clip per type, so 6 + 6 and 2 per type in all.  Why: in the 66-clip design
#: both targets that are decided by a few clips had 90 % intervals straddling them (skin-tone ratio
#: 1.76-2.64 around 2, abnormal AUC 0.85-0.97 around 0.9).  The same bootstrap puts the ratio above 2
#: in 13 % of draws with 6 + 6 clips per type (21 % with 4 + 4).  The first 66 clips and their seeds
#: are unchanged, and :func:`run_bench` reports that subset too (``first_66_clips``).
MORE_REPS = 2
EPISODE_REPS = 2
N_CLIPS_66 = 66  # length of the earlier design (REPS + EXTRA_REPS, one episode clip per type)
#: Appended after those (issue 16): REAL_REPS still and REAL_REPS hard clips per skin type whose
#: pulse is a real finger-PPG recording from the benchmark set of hal_sim.face.real_ppg (never the
#: tuning set), time-stretched to 55-130 bpm.  Groups ``real_still`` / ``real_hard``; they are kept
#: out of every earlier figure so that those stay comparable across sessions.
REAL_REPS = 2
REAL_GROUPS = ("real_still", "real_hard")
N_CLIPS_96 = 96  # length of the design before the real-PPG clips


def bench_cases(quick: bool = False, seed0: int = BENCH_SEED) -> list[Case]:
    """The clip list.  Quick: one clip per group and skin types I, IV and VI only (real-PPG: still
    clips of those types and one hard clip of type IV)."""
    from hal_sim.face import ClipSpec

    tones = (1, 4, 6) if quick else TONES
    reps = 1 if quick else REPS
    out: list[Case] = []
    k = 0

    def add(name: str, group: str, **kw: Any) -> None:
        nonlocal k
        out.append(Case(name, group, ClipSpec(duration_s=DURATION_S, **kw), seed0 + k))
        k += 1

    for f in tones:
        for r in range(reps):
            add(f"still-f{f}-{r}", "still", fitzpatrick=f)
    for f in tones:
        for r in range(reps):
            add(f"hard-f{f}-{r}", "hard", fitzpatrick=f, **HARD)
    for i, f in enumerate(tones):
        add(f"photo-f{f}", "control", fitzpatrick=f, control="photo", motion=bool(i % 2))
        add(f"mask-f{f}", "control", fitzpatrick=f, control="mask")
    for f in (tones if not quick else (3,)):
        add(f"episode-f{f}", "episode", fitzpatrick=f, episodes=list(EPISODE))
    for r in range(reps, reps + (0 if quick else EXTRA_REPS + MORE_REPS)):
        for f in tones:
            add(f"still-f{f}-{r}", "still", fitzpatrick=f)
            add(f"hard-f{f}-{r}", "hard", fitzpatrick=f, **HARD)
    for r in range(1, 1 if quick else EPISODE_REPS):
        for f in tones:
            add(f"episode-f{f}-{r}", "episode", fitzpatrick=f, episodes=list(EPISODE))
    if quick:
        for f in tones:
            add(f"real-still-f{f}-0", "real_still", fitzpatrick=f, pulse_source="real-bench")
        add("real-hard-f4-0", "real_hard", fitzpatrick=4, pulse_source="real-bench", **HARD)
        return out
    for r in range(REAL_REPS):
        for f in tones:
            add(f"real-still-f{f}-{r}", "real_still", fitzpatrick=f, pulse_source="real-bench")
            add(f"real-hard-f{f}-{r}", "real_hard", fitzpatrick=f, pulse_source="real-bench", **HARD)
    return out


# =========================================================================== one clip
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _window_mean(t: np.ndarray, v: np.ndarray, t0: float, t1: float) -> float:
    sel = (t >= t0) & (t <= t1) & np.isfinite(v)
    return float(np.mean(v[sel])) if sel.any() else float("nan")


def run_case(case: Case, timings_ms: list[float] | None = None, config: Any = None) -> dict[str, Any]:
    """Render one clip, run the pipeline, score it against the truth."""
    from agent.vision.abnormal import AbnormalScorer
    from agent.vision.beats import score_ibis
    from agent.vision.blink import match_events
    from agent.vision.pipeline import CameraPipeline, PipelineConfig
    from cedge.bench.peer_pos import PeerPosCollector
    from hal_sim.face import render_clip

    clip = render_clip(case.spec, case.seed)
    truth = clip.truth
    person = truth.people[0]
    cfg = config or PipelineConfig(compare_methods=("green", "chrom"), track_seed=case.seed)
    pipe = CameraPipeline(truth.fps, cfg)
    t_frames = np.asarray(truth.t_s, dtype=float)
    frames_without_track = 0
    peer = PeerPosCollector() if person.pulse_present else None
    for k, frame in enumerate(clip.frames()):
        t0 = time.perf_counter()
        res = pipe.process(frame, float(t_frames[k]))
        dt = (time.perf_counter() - t0) * 1000.0
        if timings_ms is not None:
            timings_ms.append(dt)
        frames_without_track += not res
        if peer is not None:  # untimed: the peer baseline is not part of the box
            peer.add(frame)
    # Records of the track(s) on this person (a stray detection elsewhere is not them).
    recs: list[dict[str, Any]] = []
    blinks: list[tuple[float, float]] = []
    ibis: list[tuple[float, float]] = []
    first_t = np.inf
    events = pipe.blink_events()
    trace_t: list[float] = []
    trace_rgb: list[np.ndarray] = []
    for tid, hist in pipe.history().items():
        on_person = [r for r in hist if _iou(np.asarray(r["box"]), person.face_box[
            int(np.clip(np.searchsorted(t_frames, r["t_s"]), 0, t_frames.size - 1))]) > 0.2]
        if len(on_person) >= 0.5 * max(len(hist), 1) and on_person:
            st = pipe._states.get(tid) or pipe.finished.get(tid)
            if st is not None:
                trace_t.extend(st.t_s)
                trace_rgb.extend(st.rgb)
            recs.extend(on_person)
            ibis.extend(pipe.ibis(tid))
            blinks.extend((e.start_s, e.end_s) for e in events.get(tid, []))
            first_t = min(first_t, hist[0]["t_s"] - 1.0)
    recs.sort(key=lambda r: r["t_s"])
    ibis.sort()
    out: dict[str, Any] = {"name": case.name, "group": case.group, "seed": case.seed,
                           "fitzpatrick": int(case.spec.fitzpatrick), "kind": person.kind,
                           "frames_without_track": frames_without_track, "n_updates": len(recs),
                           "pulse_amplitude_rel": person.pulse_amplitude_rel,
                           "pulse_source": case.spec.pulse_source}
    if peer is not None:
        # whole-clip rate of the peer baseline against the mean true rate over the clip
        out["peer_pos_hr_bpm"] = peer.hr_bpm(truth.fps)
        out["peer_pos_dynamic_hr_bpm"] = peer.hr_bpm(truth.fps, static=False)
        out["truth_clip_hr_bpm"] = float(np.nanmean(person.hr_bpm))
    hr_rows, rr_rows, ab_rows = [], [], []
    tense_frames = np.array([s == "tense" for s in person.state])
    onset_s = t_frames[1:][tense_frames[1:] & ~tense_frames[:-1]]
    # The same scoring rule fed the true instantaneous heart and breathing rates instead of the
    # measured ones (other cues as measured): what the rule could reach if measurement were
    # perfect, i.e. the ceiling set by the body's own lag at the onset of an episode.
    true_scorer = AbnormalScorer()
    updates = []
    for r in recs:
        t = r["t_s"]
        tense = bool(tense_frames[int(np.clip(np.searchsorted(t_frames, t), 0, t_frames.size - 1))])
        updates.append({"t_s": t, "features": r["features"], "tense": tense})
        if r["hr_window_s"]:
            ht = _window_mean(t_frames, person.hr_bpm, t - r["hr_window_s"], t)
            hr_rows.append({"t_s": t, "window_s": r["hr_window_s"], "truth": ht, "pos": r["heart_rate_bpm"],
                            "pos_raw": r["hr_raw_bpm"],
                            "green": r.get("hr_green_raw_bpm"), "chrom": r.get("hr_chrom_raw_bpm"),
                            "snr_db": r["hr_snr_db"], "valid": r["hr_valid"]})
        if r["rr_bpm"] is not None:
            rt = _window_mean(t_frames, person.rr_bpm, t - r["rr_window_s"], t)
            rr_rows.append({"t_s": t, "truth": rt, "est": r["rr_bpm"], "motion": r["rr_motion_bpm"],
                            "pulse": r["rr_pulse_bpm"]})
        true_feats = dict(r["features"], hr_bpm=float(np.interp(t, t_frames, person.hr_bpm)),
                          rr_bpm=float(np.interp(t, t_frames, person.rr_bpm)))
        true_score = true_scorer.update(t, true_feats).score
        if r["abnormal_score"] is not None:
            before = onset_s[onset_s <= t]
            ab_rows.append({"t_s": t, "score": r["abnormal_score"], "tense": tense, "alert": bool(r["alert"]),
                            "since_onset_s": float(t - before[-1]) if tense and before.size else None,
                            "score_true_hr_rr": true_score, "features": r["features"]})
    out["updates"] = updates
    # The person's skin-colour trace, for offline replays of the heart-rate validity path (the
    # gate-threshold curve); kept in memory only (keys starting with "_" are not written out).
    order = np.argsort(trace_t, kind="mergesort")
    out["_trace"] = {"t_s": np.asarray(trace_t, dtype=float)[order],
                     "rgb": np.asarray(trace_rgb, dtype=float).reshape(-1, 3)[order]}
    if recs and person.pulse_present:
        out["ibi"] = score_ibis(ibis, np.asarray(person.beat_times_s, dtype=float), first_t + 2.0,
                                recs[-1]["t_s"] - 1.0)
    out["hr"] = hr_rows
    out["rr"] = rr_rows
    out["abnormal"] = ab_rows
    # Blinks inside the tracked span (a blink before the face was first tracked cannot be seen).
    last_t = recs[-1]["t_s"] if recs else -np.inf
    if np.isfinite(first_t) and recs:
        t_lo = first_t + 2.0  # the detector's 1 s warm-up after the track's first frame
        tb = [(a, b) for a, b in person.blink_intervals_s if a >= t_lo and b <= last_t]
        db = [(a, b) for a, b in blinks if a >= t_lo and b <= last_t]
        tp, fp, fn = match_events(db, tb)
        span_min = (last_t - t_lo) / 60.0
        out["blink"] = {"tp": tp, "fp": fp, "fn": fn, "n_truth": len(tb), "n_detected": len(db),
                        "rate_truth_per_min": len(tb) / span_min if span_min > 0 else None,
                        "rate_detected_per_min": len(db) / span_min if span_min > 0 else None}
    return out


# =========================================================================== summaries
def _mae(rows: list[dict[str, Any]], key: str, valid_only: bool = False) -> float | None:
    errs = [abs(r[key] - r["truth"]) for r in rows
            if r.get(key) is not None and np.isfinite(r["truth"]) and (r["valid"] or not valid_only)]
    return round(float(np.mean(errs)), 3) if errs else None


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve by the Mann-Whitney U statistic (ties count one half)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size)
    ranks[order] = np.arange(1, s.size + 1)
    for v in np.unique(s):  # average ranks of ties
        m = s == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def auc_of(rows: list[dict[str, Any]], key: str = "score") -> float | None:
    """ROC AUC of ``key`` for tense vs calm rows, over the rows where ``key`` is set."""
    ok = [r for r in rows if r.get(key) is not None]
    return roc_auc(np.array([r[key] for r in ok]), np.array([r["tense"] for r in ok]))


def onset_loss_share(rows: list[dict[str, Any]], first_s: float) -> float | None:
    """Share of the AUC's shortfall (1 - AUC) that comes from tense updates in the first
    ``first_s`` seconds of their episode.

    1 - AUC is the mean, over tense updates, of the fraction of calm updates that score at least
    as high (ties half).  Split by time since the episode began, it shows where the ranking
    fails: at the onset, where the body has barely responded yet, or later.
    """
    calm = np.sort([r["score"] for r in rows if not r["tense"]])
    tense = [r for r in rows if r["tense"] and r.get("since_onset_s") is not None]
    if not calm.size or not tense:
        return None
    lo = np.searchsorted(calm, [r["score"] for r in tense], side="left")
    hi = np.searchsorted(calm, [r["score"] for r in tense], side="right")
    loss = 1.0 - (lo + 0.5 * (hi - lo)) / calm.size
    early = np.array([r["since_onset_s"] < first_s for r in tense])
    total = float(loss.sum())
    return round(float(loss[early].sum()) / total, 3) if total > 0 else None


def summarize(clips: list[dict[str, Any]]) -> dict[str, Any]:
    """All figures: those of the parametric-pulse clips (every group but the real-PPG ones, as in
    earlier sessions) and those of the real-PPG clips with the peer baseline
    (:func:`summarize_real_ppg`)."""
    res = summarize_parametric([c for c in clips if c["group"] not in REAL_GROUPS])
    res.update(summarize_real_ppg(clips))
    return res


def _coverage(rows: list[dict[str, Any]]) -> float | None:
    return round(float(np.mean([r["valid"] for r in rows])), 3) if rows else None


def summarize_real_ppg(clips: list[dict[str, Any]]) -> dict[str, Any]:
    """Heart rate on the real-PPG clips, coverage next to every MAE (overall, still / hard, by skin
    type), and the peer baseline (whole-clip POS, :mod:`cedge.bench.peer_pos`) on the same clips."""
    real = [c for c in clips if c["group"] in REAL_GROUPS]
    res: dict[str, Any] = {"real_ppg_clips": len(real)}

    def hr(sel: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for c in sel for r in c.get("hr", [])]

    res["real_ppg_hr_mae_bpm"] = _mae(hr(real), "pos", valid_only=True)
    res["real_ppg_coverage"] = _coverage(hr(real))
    for g in ("still", "hard"):
        sel = [c for c in real if c["group"] == f"real_{g}"]
        res[f"real_ppg_hr_mae_bpm_{g}"] = _mae(hr(sel), "pos", valid_only=True)
        res[f"real_ppg_coverage_{g}"] = _coverage(hr(sel))
    errs = [abs(r["pos"] - r["truth"]) for r in hr(real) if r["valid"] and r["pos"] is not None
            and np.isfinite(r["truth"])]
    res["real_ppg_updates_over_5bpm"] = int(sum(e > 5.0 for e in errs))
    res["real_ppg_hr_mae_bpm_ungated"] = _mae(hr(real), "pos_raw")
    # the most coverage any validity gate could give at errors under 5 bpm: the share of updates whose
    # rate, were the gate to accept every window, is within 5 bpm of the truth (a gate can only
    # withhold estimates, not fix them); replayed from the clips' skin-colour traces
    from cedge.bench.camera_replay import ungated_rates

    for g in ("still", "hard"):
        pairs = [(r["truth"], est) for c in real if c["group"] == f"real_{g}"
                 for r, est in zip(c.get("hr", []), ungated_rates(c), strict=True) if np.isfinite(r["truth"])]
        res[f"real_ppg_raw_within_5bpm_{g}"] = (round(float(np.mean([e is not None and abs(e - t) <= 5.0
                                                                     for t, e in pairs])), 3) if pairs else None)
    tones = sorted({c["fitzpatrick"] for c in real})
    res["real_ppg_hr_mae_bpm_by_skin_tone"] = {
        str(f): _mae(hr([c for c in real if c["fitzpatrick"] == f]), "pos", valid_only=True) for f in tones}
    cov = {str(f): _coverage(hr([c for c in real if c["fitzpatrick"] == f])) for f in tones}
    res["coverage_by_skin_tone"] = cov
    for g in ("still", "hard"):
        res[f"real_ppg_coverage_by_skin_tone_{g}"] = {
            str(f): _coverage(hr([c for c in real if c["fitzpatrick"] == f and c["group"] == f"real_{g}"]))
            for f in tones}
    vals = [v for v in cov.values() if v is not None]
    res["coverage_by_skin_tone_worst_to_best"] = round(min(vals) / max(vals), 3) if vals and max(vals) > 0 else None
    # peer baseline: one whole-clip rate per clip against the clip's mean true rate
    for label, sel in (("", real), ("_still", [c for c in real if c["group"] == "real_still"]),
                       ("_hard", [c for c in real if c["group"] == "real_hard"]),
                       ("_parametric", [c for c in clips if c["group"] in ("still", "hard")])):
        for key, name in (("peer_pos_hr_bpm", "peer_pos_hr_mae_bpm"),  # static box: the toolbox default
                          ("peer_pos_dynamic_hr_bpm", "peer_pos_dynamic_hr_mae_bpm")):  # re-detected every 30 frames
            e = [abs(c[key] - c["truth_clip_hr_bpm"]) for c in sel
                 if c.get(key) is not None and np.isfinite(c.get("truth_clip_hr_bpm", np.nan))]
            res[f"{name}{label}"] = round(float(np.mean(e)), 3) if e else None
    res["real_ppg_rr_mae_bpm"] = _mae_key([r for c in real for r in c.get("rr", []) if np.isfinite(r["truth"])], "est")
    return res


def summarize_parametric(clips: list[dict[str, Any]]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    by_group: dict[str, list[dict[str, Any]]] = {}
    for c in clips:
        by_group.setdefault(c["group"], []).append(c)

    def rows(groups: tuple[str, ...], key: str = "hr") -> list[dict[str, Any]]:
        return [r for c in clips if c["group"] in groups for r in c.get(key, [])]

    for g in ("still", "hard"):
        hr = rows((g,))
        res[f"hr_mae_bpm_{g}"] = _mae(hr, "pos", valid_only=True)
        res[f"hr_coverage_{g}"] = round(float(np.mean([r["valid"] for r in hr])), 3) if hr else None
        res[f"hr_mae_bpm_{g}_ungated"] = _mae(hr, "pos_raw")
        res[f"green_hr_mae_bpm_{g}"] = _mae(hr, "green")
        res[f"chrom_hr_mae_bpm_{g}"] = _mae(hr, "chrom")
    tones = sorted({c["fitzpatrick"] for c in clips if c["group"] in ("still", "hard")})
    by_tone, cov_tone, green_tone = {}, {}, {}
    for f in tones:
        hr = [r for c in clips if c["group"] in ("still", "hard") and c["fitzpatrick"] == f for r in c["hr"]]
        by_tone[str(f)] = _mae(hr, "pos", valid_only=True)
        cov_tone[str(f)] = round(float(np.mean([r["valid"] for r in hr])), 3) if hr else None
        green_tone[str(f)] = _mae(hr, "green")
    res["hr_mae_bpm_by_skin_tone"] = by_tone
    # the same split within each condition: type VI's hard windows are rarely valid, so its pooled
    # figure is close to a still-only figure while lighter types' include hard windows
    for g in ("still", "hard"):
        res[f"hr_mae_bpm_by_skin_tone_{g}"] = {
            str(f): _mae([r for c in clips if c["group"] == g and c["fitzpatrick"] == f for r in c["hr"]], "pos",
                         valid_only=True) for f in tones}
    res["hr_coverage_by_skin_tone"] = cov_tone
    for g in ("still", "hard"):
        res[f"hr_coverage_by_skin_tone_{g}"] = {
            str(f): _coverage([r for c in clips if c["group"] == g and c["fitzpatrick"] == f for r in c["hr"]])
            for f in tones}
    res["hr_coverage"] = _coverage(rows(("still", "hard")))
    res["green_hr_mae_bpm_by_skin_tone"] = green_tone
    vals = [v for v in by_tone.values() if v is not None]
    res["hr_skin_tone_worst_to_best"] = round(max(vals) / max(min(vals), 1e-9), 2) if len(vals) >= 2 else None
    res["hr_skin_tone_worst_to_best_ci90"] = skin_tone_ratio_ci(clips)
    res["hr_clips_by_skin_tone"] = {str(f): sum(1 for c in clips if c["group"] in ("still", "hard")
                                                and c["fitzpatrick"] == f) for f in tones}
    res.update(summarize_ibis(clips, tones))
    ctrl = [r for c in by_group.get("control", []) for r in c["hr"]]
    res["no_pulse_detection_rate"] = round(float(np.mean([not r["valid"] for r in ctrl])), 4) if ctrl else None
    res["no_pulse_detection_rate_photo"] = _rate([r for c in by_group.get("control", []) if c["kind"] == "photo"
                                                  for r in c["hr"]])
    res["no_pulse_detection_rate_mask"] = _rate([r for c in by_group.get("control", []) if c["kind"] == "mask"
                                                 for r in c["hr"]])
    res["control_clips_never_valid"] = sum(1 for c in by_group.get("control", []) if not any(
        r["valid"] for r in c["hr"]))
    res["control_clips"] = len(by_group.get("control", []))
    for label, groups in (("", ("still", "hard", "episode", "control")), ("_still", ("still",)),
                          ("_hard", ("hard",))):
        rr = [r for r in rows(groups, "rr") if np.isfinite(r["truth"])]
        res[f"rr_mae_bpm{label}"] = round(float(np.mean([abs(r["est"] - r["truth"]) for r in rr])), 3) if rr else None
    rr_all = [r for r in rows(("still", "hard", "episode", "control"), "rr") if np.isfinite(r["truth"])]
    res["rr_motion_mae_bpm"] = _mae_key(rr_all, "motion")
    res["rr_pulse_mae_bpm"] = _mae_key(rr_all, "pulse")
    bl = [c["blink"] for c in clips if c.get("blink") and c["blink"]["n_truth"] + c["blink"]["n_detected"] > 0]
    tp, fp, fn = (sum(b[k] for b in bl) for k in ("tp", "fp", "fn"))
    res["blink_precision"] = round(tp / (tp + fp), 3) if tp + fp else None
    res["blink_recall"] = round(tp / (tp + fn), 3) if tp + fn else None
    res["blink_f1"] = round(2 * tp / (2 * tp + fp + fn), 3) if tp + fp + fn else None
    errs = [abs(b["rate_detected_per_min"] - b["rate_truth_per_min"]) for b in bl
            if b["rate_truth_per_min"] is not None]
    res["blink_rate_error_per_min"] = round(float(np.mean(errs)), 3) if errs else None
    ab = [r for c in clips if c["group"] in ("episode", "still") for r in c["abnormal"]]
    res["abnormal_auc"] = _round(auc_of(ab))
    res["abnormal_auc_ci90"] = abnormal_auc_ci(clips)
    res["abnormal_auc_with_true_hr_rr"] = _round(auc_of(ab, "score_true_hr_rr"))
    res["abnormal_auc_loss_share_first_4s"] = onset_loss_share(ab, 4.0)
    ep = [r for c in by_group.get("episode", []) for r in c["abnormal"]]
    res["abnormal_auc_episode_clips_only"] = _round(auc_of(ep))
    calm_alerts = [r for c in by_group.get("still", []) for r in c["abnormal"] if r["score"] >= 0.8]
    res["abnormal_false_alert_updates_calm"] = len(calm_alerts)
    res.update(alert_summary(by_group.get("episode", []), by_group.get("still", [])))
    res["clips"] = len(clips)
    res["frames_without_track"] = int(sum(c["frames_without_track"] for c in clips))
    return res


def alert_summary(episodes: list[dict[str, Any]], calm: list[dict[str, Any]]) -> dict[str, Any]:
    """What an operator sees: alerts raised (score above threshold on consecutive updates).

    ``abnormal_episodes_alerted``: share of the tense episodes with an alert while tense;
    latency from the scripted onset (the body responds with an 8 s time constant, so a few
    seconds are the floor); ``abnormal_alert_updates_calm``: alert updates in the calm clips.
    """
    lat = []
    for c in episodes:
        hit = [r["since_onset_s"] for r in c["abnormal"] if r.get("alert") and r["tense"]
               and r.get("since_onset_s") is not None]
        lat.append(min(hit) if hit else None)
    got = [x for x in lat if x is not None]
    return {"abnormal_episodes_alerted": round(len(got) / len(lat), 3) if lat else None,
            "abnormal_alert_latency_s_median": round(float(np.median(got)), 1) if got else None,
            "abnormal_alert_updates_calm": sum(bool(r.get("alert")) for c in calm for r in c["abnormal"])}


def summarize_ibis(clips: list[dict[str, Any]], tones: list[int]) -> dict[str, Any]:
    """Inter-beat intervals (:func:`agent.vision.beats.score_ibis` per clip), pooled per group and type."""
    def pooled(sel: list[dict[str, Any]]) -> tuple[float | None, float | None, float | None]:
        ib = [c["ibi"] for c in sel if c.get("ibi")]
        errs = [e for b in ib for e in b["abs_err_ms"]]
        n_true, n_rep = sum(b["n_true"] for b in ib), sum(b["n_reported"] for b in ib)
        return (round(float(np.mean(errs)), 1) if errs else None,
                round(sum(b["n_matched"] for b in ib) / n_true, 3) if n_true else None,
                round(1.0 - len(errs) / n_rep, 3) if n_rep else None)

    res: dict[str, Any] = {}
    for g in ("still", "hard"):
        res[f"ibi_mae_ms_{g}"], res[f"ibi_coverage_{g}"], res[f"ibi_unmatched_share_{g}"] = pooled(
            [c for c in clips if c["group"] == g])
    res["ibi_mae_ms_by_skin_tone"] = {str(f): pooled([c for c in clips if c["group"] in ("still", "hard")
                                                      and c["fitzpatrick"] == f])[0] for f in tones}
    rm = [(c["ibi"]["rmssd_ms"], c["ibi"]["rmssd_true_ms"]) for c in clips
          if c["group"] in ("still", "hard") and c.get("ibi") and c["ibi"]["rmssd_ms"] is not None]
    res["hrv_rmssd_ms_mean"] = round(float(np.mean([a for a, _ in rm])), 1) if rm else None
    res["hrv_rmssd_true_ms_mean"] = round(float(np.mean([b for _, b in rm])), 1) if rm else None
    return res


#: Keys reported again for the first 66 clips (the earlier design), so runs stay comparable.
SUBSET_KEYS = ("hr_mae_bpm_still", "hr_mae_bpm_hard", "hr_mae_bpm_by_skin_tone", "hr_skin_tone_worst_to_best",
               "hr_skin_tone_worst_to_best_ci90", "hr_coverage_by_skin_tone", "no_pulse_detection_rate",
               "rr_mae_bpm", "blink_f1", "abnormal_auc", "abnormal_auc_ci90", "clips")


def summarize_subset(clips: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline metrics of a subset of the clips (see :data:`SUBSET_KEYS`)."""
    full = summarize_parametric(clips)
    return {k: full[k] for k in SUBSET_KEYS}


def clip_bootstrap_ci(cells: dict[Any, list[Any]], stat: Any, n_boot: int = 2000, seed: int = 0,
                      ndigits: int = 3) -> list[float] | None:
    """90 % interval of ``stat`` over bootstrap resamples of whole clips within each cell.

    Updates of one clip are strongly correlated (one person, overlapping windows), so the clip is
    the unit of resampling.  ``cells`` maps a key to its clips' data; ``stat`` gets a resampled
    mapping of the same shape and returns a number, or None where it is undefined for that draw.
    """
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        draw = {k: [v[i] for i in rng.integers(0, len(v), len(v))] for k, v in cells.items() if v}
        x = stat(draw)
        if x is not None:
            values.append(x)
    if not values:
        return None
    return [round(float(np.quantile(values, 0.05)), ndigits), round(float(np.quantile(values, 0.95)), ndigits)]


def skin_tone_ratio_ci(clips: list[dict[str, Any]], n_boot: int = 2000, seed: int = 0) -> list[float] | None:
    """90 % clip-bootstrap interval of the worst/best skin-type HR MAE ratio.

    Clips are resampled within each (skin type, still/hard) cell, so the interval shows how much of
    the ratio is the luck of which clips were drawn.
    """
    cells: dict[tuple[int, str], list[np.ndarray]] = {}
    for c in clips:
        if c["group"] in ("still", "hard"):
            e = np.array([abs(r["pos"] - r["truth"]) for r in c["hr"]
                          if r["valid"] and r["pos"] is not None and np.isfinite(r["truth"])], dtype=float)
            cells.setdefault((c["fitzpatrick"], c["group"]), []).append(e)
    tones = sorted({f for f, _ in cells})
    if len(tones) < 2:
        return None
    cells = {(f, g): cells[(f, g)] for f in tones for g in ("still", "hard") if (f, g) in cells}

    def ratio(draw: dict[tuple[int, str], list[np.ndarray]]) -> float | None:
        maes = []
        for f in tones:
            e = np.concatenate([x for (tone, _), cl in draw.items() if tone == f for x in cl] or [np.zeros(0)])
            if e.size:
                maes.append(float(e.mean()))
        return max(maes) / min(maes) if len(maes) >= 2 and min(maes) > 0 else None

    return clip_bootstrap_ci(cells, ratio, n_boot, seed, ndigits=2)


def abnormal_auc_ci(clips: list[dict[str, Any]], n_boot: int = 2000, seed: int = 0) -> list[float] | None:
    """90 % clip-bootstrap interval of the abnormal-state AUC (episode and calm still clips).

    With six episode clips the interval is wide, and it says so.
    """
    cells = {g: [c["abnormal"] for c in clips if c["group"] == g and c.get("abnormal")] for g in ("episode", "still")}
    if not cells["episode"]:
        return None

    def auc(draw: dict[str, list[list[dict[str, Any]]]]) -> float | None:
        return auc_of([r for cl in draw.values() for clip in cl for r in clip])

    return clip_bootstrap_ci(cells, auc, n_boot, seed, ndigits=3)


def _rate(rows: list[dict[str, Any]]) -> float | None:
    return round(float(np.mean([not r["valid"] for r in rows])), 4) if rows else None


def _mae_key(rows: list[dict[str, Any]], key: str) -> float | None:
    e = [abs(r[key] - r["truth"]) for r in rows if r.get(key) is not None and np.isfinite(r["truth"])]
    return round(float(np.mean(e)), 3) if e else None


def _round(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(float(v), nd)


# =========================================================================== runner
@contextmanager
def one_core() -> Iterator[str]:
    """OpenCV on one thread and the process pinned to one CPU, restored afterwards."""
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    affinity = None
    note = "cv2 threads 1"
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
        cv2.setNumThreads(threads)
        if affinity is not None:
            os.sched_setaffinity(0, affinity)


def run_clips(cases: list[Case], progress: Progress | None = None, config: Any = None
              ) -> tuple[list[dict[str, Any]], list[float]]:
    timings: list[float] = []
    clips = []
    task = progress.add_task("camera clips", total=len(cases)) if progress else None
    for case in cases:
        # Speed is measured on single-face live clips only (the "one face" condition).
        timed = timings if case.group in ("still", "hard", "episode") else None
        clips.append(run_case(case, timed, config))
        if progress is not None and task is not None:
            progress.update(task, advance=1, description=f"camera clips ({case.name})")
    return clips, timings


def run_bench(json_out: bool = False, quick: bool = False, out_dir: str | Path | None = None,
              seed0: int = BENCH_SEED) -> dict[str, Any]:
    """Run the benchmark; returns one flat dict of results (the CLI prints it as JSON)."""
    t0 = time.perf_counter()
    cases = bench_cases(quick, seed0)
    console = Console(stderr=True)
    with one_core() as core_note, Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                           TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                           console=console, transient=False) as progress:
        clips, timings = run_clips(cases, progress)
    result: dict[str, Any] = {"bench": "camera", "quick": quick, "seed": seed0, "duration_s": DURATION_S,
                              "resolution": "640x480", "fps": 30, "hard_conditions": HARD}
    result.update(summarize(clips))
    # coverage and MAE as every pulse-validity threshold moves (offline replay of the same traces)
    from cedge.bench import camera_replay

    result["gate_threshold_curve"] = camera_replay.threshold_curve(clips, offsets_db=camera_replay.CURVE_OFFSETS_DB)
    if not quick and len(clips) > N_CLIPS_66:
        result["first_66_clips"] = summarize_subset(clips[:N_CLIPS_66])
    if not quick and len(clips) > N_CLIPS_96:
        result["first_96_clips"] = summarize_subset(clips[:N_CLIPS_96])
    tm = np.asarray(timings)
    result["ms_per_frame_p50"] = round(float(np.percentile(tm, 50)), 3) if tm.size else None
    result["ms_per_frame_p99"] = round(float(np.percentile(tm, 99)), 3) if tm.size else None
    result["ms_per_frame_mean"] = round(float(tm.mean()), 3) if tm.size else None
    result["fps_single_core_p50"] = round(1000.0 / result["ms_per_frame_p50"], 1) if tm.size else None
    result["speed_conditions"] = core_note
    result["seconds_total"] = round(time.perf_counter() - t0, 1)
    if out_dir is not None:
        saved = save_results(result, out_dir, "camera", lambda out: write_figures(result, clips, out)
                             + write_gate_figure({"benchmark": result["gate_threshold_curve"]}, out))
        public = [{k: v for k, v in c.items() if not k.startswith("_")} for c in clips]
        (saved.parent / "bench_camera_clips.json").write_text(json.dumps(public, default=float), encoding="utf-8")
        # the skin-colour traces too, so that a validity rule chosen on tuning clips can be measured on
        # these clips by an exact offline replay (cedge.bench.camera_replay) without rendering them again
        import pickle

        (saved.parent / "bench_camera_traces.pkl").write_bytes(pickle.dumps(clips))
    if not json_out:
        console.print({k: v for k, v in result.items() if not isinstance(v, list)})
        console.print(peer_table(result))
    return result


def peer_table(result: dict[str, Any]) -> Any:
    """The project's heart rate beside the peer baseline's (whole-clip POS) on the same real-PPG clips."""
    from rich.table import Table

    t = Table(title="Heart rate on real-PPG clips: this pipeline beside whole-clip POS (rPPG-Toolbox settings)")
    for col in ("clips", "this pipeline: MAE (bpm)", "coverage", "peer POS: MAE (bpm)", "peer coverage"):
        t.add_column(col)
    for g, label in (("", "all"), ("_still", "still"), ("_hard", "hard")):
        t.add_row(label, str(result.get(f"real_ppg_hr_mae_bpm{g}")), str(result.get(f"real_ppg_coverage{g}")),
                  str(result.get(f"peer_pos_hr_mae_bpm{g}")), "1 (one rate per clip, always)")
    return t


# =========================================================================== partial runs
def run_shard(groups: tuple[str, ...], part: int, nparts: int, out_dir: str | Path, seed0: int = BENCH_SEED) -> Path:
    """Run every ``nparts``-th clip (from ``part``) of the full design's ``groups`` and pickle the
    results (with their traces) to ``out_dir/shard_<part>.pkl``.  Why: on a shared machine the whole
    design takes hours; the real-PPG keys need only the real-PPG clips and the photo/mask controls,
    and shards can run side by side.  Clips, seeds and frames are those of the full run."""
    import pickle

    import cv2

    cv2.setNumThreads(1)
    cases = [c for c in bench_cases(False, seed0) if c.group in groups][part::nparts]
    clips = []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        clips.append(run_case(case))
        (out / f"shard_{part}.pkl").write_bytes(pickle.dumps(clips))
    return out / f"shard_{part}.pkl"


def merge_real_shards(shard_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Real-PPG summary (:func:`summarize_real_ppg`), the controls' no-pulse rate and the
    gate-threshold curve from the shards of :func:`run_shard`; writes ``bench_camera_real.json``,
    the traces and the real-PPG and gate figures into ``out_dir``."""
    import pickle

    from cedge.bench import camera_replay

    clips = [c for f in sorted(Path(shard_dir).glob("shard_*.pkl")) for c in pickle.loads(f.read_bytes())]
    order = {c.name: i for i, c in enumerate(bench_cases())}
    clips.sort(key=lambda c: order.get(c["name"], 10 ** 6))
    res: dict[str, Any] = {"bench": "camera", "partial": "real-PPG clips and photo/mask controls only",
                           "seed": BENCH_SEED, "clips": [c["name"] for c in clips]}
    res.update(summarize_real_ppg(clips))
    ctrl = [r for c in clips if c["group"] == "control" for r in c["hr"]]
    res["no_pulse_detection_rate"] = round(float(np.mean([not r["valid"] for r in ctrl])), 4) if ctrl else None
    res["control_updates"] = len(ctrl)
    res["gate_threshold_curve"] = camera_replay.threshold_curve(clips, offsets_db=camera_replay.CURVE_OFFSETS_DB)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res["figures"] = [write_real_ppg_figure(res, clips, out)]
    (out / "bench_camera_real.json").write_text(json.dumps(res, indent=1, default=float), encoding="utf-8")
    (out / "bench_camera_traces.pkl").write_bytes(pickle.dumps(clips))
    return res


# =========================================================================== tuning
def tuning_cases() -> list[Case]:
    """Tuning clips of the pulse-validity gate (issue 16), never the benchmark seeds or recordings:
    real-PPG clips from the *tuning* set of hal_sim.face.real_ppg (still and hard, every skin type,
    two seed sets, TUNE_SEED + 51000 / + 52000) and parametric-pulse clips with their photo/mask
    controls (two sets, TUNE_SEED + 60000 / + 61000): 24 + 24 + 24 clips."""
    from hal_sim.face import ClipSpec

    cases = []
    for base in (TUNE_SEED + 51_000, TUNE_SEED + 52_000):
        k = 0
        for group, kw in (("real_still", {}), ("real_hard", HARD)):
            for f in TONES:
                cases.append(Case(f"tune-{group}-f{f}-{base}", group, ClipSpec(
                    duration_s=DURATION_S, fitzpatrick=f, pulse_source="real-tune", **kw), base + k))
                k += 1
    photo, mask = ("control", {"control": "photo", "motion": True}), ("control", {"control": "mask"})
    for base, order in ((TUNE_SEED + 60_000, (("still", {}), ("hard", HARD), photo, mask)),
                        (TUNE_SEED + 61_000, (photo, mask, ("still", {}), ("hard", HARD)))):
        k = 0
        for group, kw in order:
            for f in TONES:
                cases.append(Case(f"tune-{group}-{kw.get('control', '')}-f{f}-{base}", group,
                                  ClipSpec(duration_s=DURATION_S, fitzpatrick=f, **kw), base + k))
                k += 1
    return cases


def tune_gate(clips: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Derive the pulse-validity thresholds on the tuning clips (:func:`tuning_cases`).

    The anchors of :data:`agent.vision.pulse.SNR_THRESHOLD_ANCHORS_DB` are the 98th percentile of
    the controls' SNR by window length (:func:`cedge.bench.camera_replay.derive_anchors`); the
    gate-threshold curve shows what moving them costs or buys on the same clips.  Renders the
    clips unless given (~45 min on one core)."""
    from cedge.bench.camera_replay import derive_anchors, threshold_curve

    if clips is None:
        with one_core(), Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                  console=Console(stderr=True)) as progress:
            clips, _ = run_clips(tuning_cases(), progress)
    return {"anchors_db": derive_anchors(clips), "curve": threshold_curve(clips), "clips": clips}


# =========================================================================== figures
def write_gate_figure(curves: dict[str, list[dict[str, Any]]], out_dir: Path,
                      name: str = "camera_gate_curve.png") -> list[str]:
    """Coverage and MAE as every pulse-validity threshold moves by the same offset, one line
    style per clip set (``curves``: label -> :func:`cedge.bench.camera_replay.threshold_curve`);
    the shipped operating point is offset 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 4.8))
    series = (("real-tune", "real PPG, tuning recordings", "C0"), ("real-bench", "real PPG", "C0"),
              ("parametric", "parametric pulse", "C1"))
    for (label, curve), style in zip(curves.items(), ["-", "--", ":"], strict=False):
        off = np.array([r["offset_db"] for r in curve])
        i0 = int(np.argmin(np.abs(off)))

        def col(key: str, curve: list[dict[str, Any]] = curve) -> list[float]:
            return [np.nan if r.get(key) is None else float(r[key]) for r in curve]

        for key, text, color in series:
            if all(np.isnan(col(f"coverage_{key}"))):
                continue
            for cond, marker in (("still", "o"), ("hard", "^")):
                ax0.plot(off, col(f"coverage_{key}_{cond}"), style, color=color, marker=marker, ms=3,
                         label=f"{text}, {cond} ({label})")
            cov, mae = col(f"coverage_{key}"), col(f"mae_bpm_{key}")
            ax1.plot(cov, mae, style, color=color, marker="o", ms=3, label=f"{text}, still + hard ({label})")
            ax1.plot(cov[i0], mae[i0], "k*", ms=11)
        ax0.plot(off, col("control_false_pulse_rate"), style, color="k", lw=1,
                 label=f"photo/mask updates reported as a pulse ({label})")
    ax0.axvline(0.0, color="grey", lw=0.8)
    ax0.set_xlabel("offset added to every validity threshold (dB)")
    ax0.set_ylabel("share of updates with a valid heart rate")
    ax0.set_ylim(0, 1.02)
    ax0.set_title("Coverage and false pulses vs the gate threshold")
    ax0.legend(fontsize=7)
    ax1.set_xlabel("coverage")
    ax1.set_ylabel("HR MAE over valid updates (bpm)")
    ax1.set_title("MAE against coverage (star: shipped threshold)")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / name
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return [str(p)]


def write_figures(result: dict[str, Any], clips: list[dict[str, Any]], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    for group, marker in (("still", "o"), ("hard", "^")):
        rows = [r for c in clips if c["group"] == group for r in c["hr"]]
        t = np.array([r["truth"] for r in rows if r["valid"]])
        e = np.array([r["pos"] for r in rows if r["valid"]])
        ax.scatter(t, e, s=8, marker=marker, alpha=0.6, label=f"POS {group} (valid)")
        g = [(r["truth"], r["green"]) for r in rows if r["green"] is not None]
        if g:
            ax.scatter(*np.array(g).T, s=6, marker="x", alpha=0.3, label=f"GREEN {group}")
    lo, hi = 40, 140
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, 200)
    ax.set_xlabel("true heart rate (bpm, window mean)")
    ax.set_ylabel("estimated (bpm)")
    ax.set_title("HR per 1 s update")
    ax.legend(fontsize=7)
    ax = axes[1]
    tones = sorted(result["hr_mae_bpm_by_skin_tone"])
    pos = [result["hr_mae_bpm_by_skin_tone"][f] or 0 for f in tones]
    grn = [result["green_hr_mae_bpm_by_skin_tone"][f] or 0 for f in tones]
    x = np.arange(len(tones))
    ax.bar(x - 0.2, pos, 0.4, label="POS (gated)")
    ax.bar(x + 0.2, grn, 0.4, label="GREEN (ungated)")
    ax.set_xticks(x, [f"type {f}" for f in tones])
    ax.set_yscale("log")
    ax.set_ylabel("HR MAE (bpm), still + hard")
    ax.set_title("By Fitzpatrick skin type")
    ax.legend(fontsize=7, loc="upper left")
    cov_ax = ax.twinx()
    cov = [result["hr_coverage_by_skin_tone"][f] for f in tones]
    cov_ax.plot(x, [c if c is not None else np.nan for c in cov], "ko-", ms=4, label="POS valid-pulse coverage")
    cov_ax.set_ylim(0, 1.05)
    cov_ax.set_ylabel("coverage (share of updates with a valid pulse)")
    cov_ax.legend(fontsize=7, loc="upper right")
    ax = axes[2]
    ab = [r for c in clips if c["group"] in ("episode", "still") for r in c["abnormal"]]
    if ab:
        curves = [("score", f"measured cues (AUC {result['abnormal_auc']})", "-")]
        if result.get("abnormal_auc_with_true_hr_rr") is not None:
            curves.append(("score_true_hr_rr", f"true HR and breathing (AUC {result['abnormal_auc_with_true_hr_rr']})",
                           "--"))
        for key, label, style in curves:
            rows = [r for r in ab if r.get(key) is not None]
            s = np.array([r[key] for r in rows])
            y = np.array([r["tense"] for r in rows])
            th = np.unique(np.concatenate([s, [np.inf]]))[::-1]
            tpr = [np.mean(s[y] >= v) if y.any() else 0 for v in th]
            fpr = [np.mean(s[~y] >= v) if (~y).any() else 0 for v in th]
            ax.plot(fpr, tpr, style, label=label)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title("Abnormal-state ROC, per 1 s update")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    p = out_dir / "camera_bench.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(str(p))
    if any(c["group"] in REAL_GROUPS for c in clips):
        written.append(write_real_ppg_figure(result, clips, out_dir))
    return written


def write_real_ppg_figure(result: dict[str, Any], clips: list[dict[str, Any]], out_dir: Path,
                          name: str = "camera_real_ppg.png") -> str:
    """Real-PPG clips: this pipeline's valid rates per update and the peer's one rate per clip against
    the truth; per clip, the error of each and this pipeline's coverage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = [c for c in clips if c["group"] in REAL_GROUPS]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(14, 5))
    for g, marker, color in (("real_still", "o", "C0"), ("real_hard", "^", "C3")):
        rows = [r for c in real if c["group"] == g for r in c["hr"] if np.isfinite(r["truth"])]
        v = [(r["truth"], r["pos"]) for r in rows if r["valid"] and r["pos"] is not None]
        if v:
            ax0.scatter(*np.array(v).T, s=7, marker=marker, color=color, alpha=0.5,
                        label=f"this pipeline, {g.replace('real_', '')} (valid updates)")
        p = [(c["truth_clip_hr_bpm"], c["peer_pos_hr_bpm"]) for c in real if c["group"] == g
             and c.get("peer_pos_hr_bpm") is not None]
        if p:
            ax0.scatter(*np.array(p).T, s=50, marker=marker, facecolors="none", edgecolors="k", lw=1.2,
                        label=f"peer whole-clip POS, {g.replace('real_', '')} (one per clip)")
    ax0.plot([40, 140], [40, 140], "k-", lw=0.8)
    ax0.set_xlim(40, 140)
    ax0.set_ylim(40, 160)
    ax0.set_xlabel("true heart rate (bpm)")
    ax0.set_ylabel("estimated (bpm)")
    ax0.set_title(f"Real finger-PPG pulses: MAE {result.get('real_ppg_hr_mae_bpm')} bpm at coverage "
                  f"{result.get('real_ppg_coverage')} vs peer {result.get('peer_pos_hr_mae_bpm')} bpm", fontsize=9)
    ax0.legend(fontsize=7)
    x = np.arange(len(real))
    ours = [np.mean([abs(r["pos"] - r["truth"]) for r in c["hr"] if r["valid"] and r["pos"] is not None
                     and np.isfinite(r["truth"])] or [np.nan]) for c in real]
    peer = [abs(c["peer_pos_hr_bpm"] - c["truth_clip_hr_bpm"]) if c.get("peer_pos_hr_bpm") is not None else np.nan
            for c in real]
    cov = [np.mean([r["valid"] for r in c["hr"]]) if c["hr"] else np.nan for c in real]
    ax1.bar(x - 0.2, ours, 0.4, label="this pipeline, MAE over valid updates")
    ax1.bar(x + 0.2, peer, 0.4, color="grey", label="peer whole-clip POS, |error|")
    ax1.set_yscale("symlog", linthresh=1.0)
    ax1.set_xticks(x, [c["name"].replace("real-", "") for c in real], rotation=90, fontsize=7)
    ax1.set_ylabel("heart-rate error (bpm)")
    ax1.legend(fontsize=7, loc="upper left")
    cax = ax1.twinx()
    cax.plot(x, cov, "ko", ms=4, label="this pipeline's coverage")
    cax.set_ylim(0, 1.05)
    cax.set_ylabel("coverage (share of updates with a valid rate)")
    cax.legend(fontsize=7, loc="upper right")
    ax1.set_title("Per clip (no bar for this pipeline: no valid update)", fontsize=9)
    fig.tight_layout()
    p = out_dir / name
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return str(p)


if __name__ == "__main__":  # pragma: no cover - developer entry: python -m cedge.bench.camera [--quick|--tune|...]
    import sys

    if "--tune" in sys.argv:  # > tune.json
        r = tune_gate()
        r.pop("clips")
        print(json.dumps(r, indent=1))
    elif "--shard" in sys.argv:  # --shard PART NPARTS DIR GROUP[,GROUP...]
        i = sys.argv.index("--shard")
        print(run_shard(tuple(sys.argv[i + 4].split(",")), int(sys.argv[i + 1]), int(sys.argv[i + 2]), sys.argv[i + 3]))
    elif "--merge-real" in sys.argv:  # --merge-real SHARD_DIR OUT_DIR
        i = sys.argv.index("--merge-real")
        r = merge_real_shards(sys.argv[i + 1], sys.argv[i + 2])
        print(json.dumps({k: v for k, v in r.items() if k != "gate_threshold_curve"}, default=float))
    elif "--figures" in sys.argv:  # --figures RUN_DIR OUT_DIR: redraw a saved run's figures (docs/)
        i = sys.argv.index("--figures")
        import pickle

        run = Path(sys.argv[i + 1])
        res = json.loads((run / "bench_camera.json").read_text())
        saved_clips = pickle.loads((run / "bench_camera_traces.pkl").read_bytes())
        print(write_figures(res, saved_clips, Path(sys.argv[i + 2])))
    elif "--gate-figure" in sys.argv:  # --gate-figure tune.json bench_camera.json OUT_DIR (docs/)
        i = sys.argv.index("--gate-figure")
        tune, bench = (json.loads(Path(a).read_text()) for a in sys.argv[i + 1:i + 3])
        print(write_gate_figure({"tuning clips": tune["curve"], "benchmark clips": bench["gate_threshold_curve"]},
                                Path(sys.argv[i + 3])))
    else:
        print(json.dumps(run_bench(json_out=True, quick="--quick" in sys.argv), default=float))
