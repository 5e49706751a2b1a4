"""The camera benchmark's clip design and its skin-tone ratio interval (no clips rendered)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cedge.bench.camera import (
    BENCH_SEED,
    N_CLIPS_66,
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
    cases = bench_cases()
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


def test_quick_design_is_unchanged() -> None:
    quick = bench_cases(quick=True)
    assert [c.name for c in quick] == ["still-f1-0", "still-f4-0", "still-f6-0", "hard-f1-0", "hard-f4-0",
                                       "hard-f6-0", "photo-f1", "mask-f1", "photo-f4", "mask-f4", "photo-f6",
                                       "mask-f6", "episode-f3"]


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
