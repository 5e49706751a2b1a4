"""The camera benchmark's clip design and its skin-tone ratio interval (no clips rendered)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from cedge.bench.camera import (
    BENCH_SEED,
    N_CLIPS_66,
    N_CLIPS_96,
    REAL_GROUPS,
    REAL_REPS,
    REPS,
    SUBSET_KEYS,
    TONES,
    abnormal_auc_ci,
    alert_summary,
    auc_of,
    bench_cases,
    onset_loss_share,
    skin_tone_ratio_ci,
    summarize_subset,
)


def test_full_design_keeps_the_earlier_clips_and_appends_the_extra_ones() -> None:
    cases = [c for c in bench_cases() if c.group not in REAL_GROUPS]
    assert len({c.name for c in cases}) == len(cases)
    assert [c.seed for c in cases] == list(range(BENCH_SEED, BENCH_SEED + len(cases)))
    first = cases[:42]  # the 2-per-type design: still, hard, controls, episodes
    assert [c.group for c in first] == ["still"] * 12 + ["hard"] * 12 + ["control"] * 12 + ["episode"] * 6
    # the 4 + 4 design: 24 still/hard clips appended, alternating per type
    assert [c.name for c in cases[42:N_CLIPS_66]] == [f"{g}-f{f}-{r}" for r in (2, 3) for f in TONES
                                                      for g in ("still", "hard")]
    for group, n in (("still", 6), ("hard", 6), ("episode", 2), ("control", 2)):
        per_tone = {f: sum(1 for c in cases if c.group == group and c.spec.fitzpatrick == f) for f in TONES}
        assert set(per_tone.values()) == {n}, group
    assert {c.group for c in cases[42:]} == {"still", "hard", "episode"}
    assert all(int(c.name.rsplit("-", 1)[1]) >= REPS for c in cases[42:] if c.group != "episode")
    assert [c.name for c in cases[-6:]] == [f"episode-f{f}-1" for f in TONES]


def test_quick_design_keeps_its_clips_and_adds_real_ppg_ones() -> None:
    quick = bench_cases(quick=True)
    assert [c.name for c in quick] == ["still-f1-0", "still-f4-0", "still-f6-0", "hard-f1-0", "hard-f4-0",
                                       "hard-f6-0", "photo-f1", "mask-f1", "photo-f4", "mask-f4", "photo-f6",
                                       "mask-f6", "episode-f3", "real-still-f1-0", "real-still-f4-0",
                                       "real-still-f6-0", "real-hard-f4-0"]
    assert {c.spec.pulse_source for c in quick if c.group in REAL_GROUPS} == {"real-bench"}


def test_real_ppg_clips_are_appended_with_benchmark_recordings_only() -> None:
    cases = bench_cases()
    assert len(cases) == N_CLIPS_96 + 2 * REAL_REPS * len(TONES)
    real = cases[N_CLIPS_96:]
    assert all(c.group in REAL_GROUPS and c.spec.pulse_source == "real-bench" for c in real)
    assert all(c.spec.pulse_source == "parametric" for c in cases[:N_CLIPS_96])
    for g in REAL_GROUPS:
        assert sorted(c.spec.fitzpatrick for c in real if c.group == g) == sorted(list(TONES) * REAL_REPS)
    from cedge.bench.camera import tuning_cases

    tune = tuning_cases()
    assert not {c.seed for c in tune} & {c.seed for c in cases}
    assert {c.spec.pulse_source for c in tune} == {"real-tune", "parametric"}


def _fake_result(case: Any, rng: np.random.Generator) -> dict[str, Any]:
    """What run_case returns for a clip, without rendering it (the JSON assembly is under test)."""
    live = case.spec.control is None
    truth = 70.0 + 10.0 * rng.random()
    hr = [{"t_s": 15.0 + k, "window_s": 15.0 + k, "truth": truth if live else float("nan"),
           "pos": truth + 0.5 if live and k % 3 else None, "pos_raw": truth + 0.5, "green": truth + 9.0,
           "chrom": truth + 1.0, "snr_db": 3.0, "valid": bool(live and k % 3)} for k in range(3)]
    t = np.arange(900) / 30.0
    pulse = np.sin(2 * np.pi * truth / 60 * t) if live else np.zeros_like(t)
    rgb = np.stack([180 + 0.2 * pulse, 140 + 0.5 * pulse, 120 + 0.3 * pulse], axis=1) + rng.normal(0, 0.05, (900, 3))
    out = {"name": case.name, "group": case.group, "seed": case.seed, "fitzpatrick": case.spec.fitzpatrick,
           "kind": "person" if live else str(case.spec.control), "frames_without_track": 0, "n_updates": 3,
           "pulse_amplitude_rel": 0.003, "pulse_source": case.spec.pulse_source, "updates": [], "hr": hr,
           "rr": [{"t_s": 20.0, "truth": 15.0, "est": 15.4, "motion": 15.4, "pulse": None}],
           "abnormal": [{"t_s": 12.0 + k, "score": 0.1 + 0.05 * k, "tense": k > 5, "alert": False,
                         "since_onset_s": float(k - 5) if k > 5 else None, "score_true_hr_rr": 0.5,
                         "features": {}} for k in range(10)],
           "blink": {"tp": 4, "fp": 0, "fn": 1, "n_truth": 5, "n_detected": 4, "rate_truth_per_min": 12.0,
                     "rate_detected_per_min": 10.0},
           "_trace": {"t_s": t, "rgb": rgb}}
    if live:
        out["peer_pos_hr_bpm"], out["truth_clip_hr_bpm"] = truth + 2.0, truth
    return out


def test_quick_bench_json_has_the_real_ppg_keys(monkeypatch: Any, tmp_path: Any) -> None:
    import cedge.bench.camera as cam

    rng = np.random.default_rng(0)

    def fake_run_clips(cases: list[Any], progress: Any = None, config: Any = None) -> tuple[list, list]:
        return [_fake_result(c, rng) for c in cases], [4.0] * 50

    monkeypatch.setattr(cam, "run_clips", fake_run_clips)
    monkeypatch.setattr("cedge.bench.camera_replay.CURVE_OFFSETS_DB", (0.0, 1.0))  # fewer replays
    result = cam.run_bench(json_out=True, quick=True, out_dir=tmp_path)
    for key in ("real_ppg_hr_mae_bpm", "real_ppg_coverage_still", "real_ppg_coverage_hard", "coverage_by_skin_tone",
                "peer_pos_hr_mae_bpm", "real_ppg_hr_mae_bpm_by_skin_tone", "coverage_by_skin_tone_worst_to_best",
                "hr_coverage", "hr_coverage_by_skin_tone_still", "gate_threshold_curve"):
        assert key in result, key
    assert result["real_ppg_hr_mae_bpm"] == 0.5 and result["peer_pos_hr_mae_bpm"] == 2.0
    assert set(result["coverage_by_skin_tone"]) == {"1", "4", "6"}
    assert result["real_ppg_coverage_still"] == round(2 / 3, 3)
    curve = result["gate_threshold_curve"]
    assert [r["offset_db"] for r in curve] == [0.0, 1.0]
    assert all(r["control_false_pulse_rate"] == 0.0 for r in curve)  # the controls' traces hold no pulse
    saved = json.loads((tmp_path / "bench_camera.json").read_text())
    assert any(f.endswith("camera_gate_curve.png") for f in saved["figures"])
    assert any(f.endswith("camera_real_ppg.png") for f in saved["figures"])  # ours beside the peer
    assert result["real_ppg_raw_within_5bpm_still"] == 1.0  # the fake clips' raw rates are 0.5 bpm off
    import pickle

    traces = pickle.loads((tmp_path / "bench_camera_traces.pkl").read_bytes())  # for exact offline replays
    assert len(traces) == len(saved_clips := json.loads((tmp_path / "bench_camera_clips.json").read_text()))
    assert traces[0]["name"] == saved_clips[0]["name"] and "_trace" in traces[0]
    assert "_trace" not in json.loads((tmp_path / "bench_camera_clips.json").read_text())[0]


def test_subset_summary_reports_the_headline_keys() -> None:
    clips = [_clip(f, g, 0.3 * f) for f in (1, 2) for g in ("still", "hard")]
    for c in clips:
        c.update(rr=[], abnormal=[], frames_without_track=0)
    sub = summarize_subset(clips)
    assert set(sub) == set(SUBSET_KEYS)
    assert sub["hr_mae_bpm_by_skin_tone"] == {"1": 0.3, "2": 0.6}
    assert sub["hr_skin_tone_worst_to_best"] == 2.0


def _clip(tone: int, group: str, err: float, n: int = 20) -> dict[str, Any]:
    return {"group": group, "fitzpatrick": tone,
            "hr": [{"valid": True, "pos": 70.0 + err, "truth": 70.0} for _ in range(n)]}


def test_ratio_interval_is_one_for_equal_groups_and_brackets_a_real_gap() -> None:
    equal = [_clip(f, g, 0.5) for f in (1, 2, 3) for g in ("still", "hard") for _ in range(2)]
    assert skin_tone_ratio_ci(equal) == [1.0, 1.0]
    rng = np.random.default_rng(1)
    gap = [_clip(f, g, float(rng.uniform(0.4, 0.6)) * (2.0 if f == 3 else 1.0))
           for f in (1, 2, 3) for g in ("still", "hard") for _ in range(3)]
    lo, hi = skin_tone_ratio_ci(gap)
    assert 1.5 < lo <= hi < 3.0


def _scored(group: str, scores: list[float], tense: list[bool]) -> dict[str, Any]:
    return {"group": group, "abnormal": [{"score": s, "tense": t} for s, t in zip(scores, tense, strict=True)]}


def test_auc_interval_resamples_whole_clips() -> None:
    rng = np.random.default_rng(2)
    separable = [_scored("episode", [0.1] * 5 + [0.9] * 5, [False] * 5 + [True] * 5) for _ in range(6)]
    separable += [_scored("still", [0.1] * 10, [False] * 10) for _ in range(6)]
    assert abnormal_auc_ci(separable) == [1.0, 1.0]
    noise = [_scored("episode", list(rng.random(10)), [False] * 5 + [True] * 5) for _ in range(6)]
    noise += [_scored("still", list(rng.random(10)), [False] * 10) for _ in range(6)]
    lo, hi = abnormal_auc_ci(noise)
    assert lo < 0.5 < hi and hi - lo > 0.1
    assert abnormal_auc_ci([_scored("still", [0.1], [False])]) is None


def test_onset_loss_share_splits_the_auc_shortfall_by_time_since_onset() -> None:
    calm = [{"score": v, "tense": False} for v in (0.1, 0.2, 0.3, 0.4)]
    # two early tense updates rank among the calm ones, the late ones above them all
    tense = [{"score": 0.15, "tense": True, "since_onset_s": 1.0},  # 3 of 4 calm score higher
             {"score": 0.3, "tense": True, "since_onset_s": 3.0},  # 1 higher, 1 tie: 1.5 of 4
             {"score": 0.9, "tense": True, "since_onset_s": 8.0},
             {"score": 0.8, "tense": True, "since_onset_s": 12.0}]
    rows = calm + tense
    auc = auc_of(rows)
    assert auc is not None and abs((1.0 - auc) - (0.75 + 0.375) / 4) < 1e-12
    assert onset_loss_share(rows, 4.0) == 1.0
    late_miss = rows + [{"score": 0.25, "tense": True, "since_onset_s": 10.0}]  # 2 of 4 higher
    assert onset_loss_share(late_miss, 4.0) == round(1.125 / 1.625, 3)
    assert onset_loss_share(calm, 4.0) is None


def test_a_rendered_episode_clip_carries_onset_times_and_the_true_rate_score() -> None:
    from cedge.bench.camera import TUNE_SEED, Case, run_case
    from hal_sim.face import ClipSpec

    spec = ClipSpec(duration_s=17.0, fitzpatrick=2, episodes=[(13.0, 17.0, "tense")])
    out = run_case(Case("episode-short", "episode", spec, TUNE_SEED + 9100))
    rows = out["abnormal"]
    assert rows and any(r["tense"] for r in rows) and any(not r["tense"] for r in rows)
    for r in rows:
        assert (r["since_onset_s"] is not None) == r["tense"]
        if r["tense"]:
            assert 0.0 <= r["since_onset_s"] <= r["t_s"] - 13.0 + 0.05
        assert r["score_true_hr_rr"] is not None and 0.0 <= r["score_true_hr_rr"] <= 1.0


def test_alert_summary_counts_episodes_latency_and_calm_alerts() -> None:
    def row(t: float, alert: bool, tense: bool) -> dict[str, Any]:
        return {"t_s": t, "score": 0.9 if alert else 0.1, "alert": alert, "tense": tense,
                "since_onset_s": t - 12.0 if tense else None}

    caught = {"abnormal": [row(11, False, False), row(13, False, True), row(19, True, True), row(20, True, True)]}
    missed = {"abnormal": [row(13, False, True), row(25, False, True)]}
    calm = {"abnormal": [row(15, False, False), row(16, True, False)]}
    out = alert_summary([caught, missed], [calm])
    assert out == {"abnormal_episodes_alerted": 0.5, "abnormal_alert_latency_s_median": 7.0,
                   "abnormal_alert_updates_calm": 1}
    assert alert_summary([], [])["abnormal_episodes_alerted"] is None
