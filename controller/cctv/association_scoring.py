"""Scores a cross-camera association against the true identity of each tracklet sample.

Identity F1 (Ristani et al., "Performance measures and a data set for multi-target, multi-camera
tracking", ECCV 2016 workshops): predicted and true identities are matched one-to-one so that the
number of samples they share is largest (a bipartite assignment), then
IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN). Here every tracklet sample is one observation carrying the
trajectory id it was given and the true traveller id, so IDF1 measures exactly what the
association adds: whether a traveller's pieces from different cameras and times end up in one
trajectory, and only his.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy.optimize import linear_sum_assignment

from controller.cctv.association import Trajectory

__all__ = ["identity_f1", "score_association"]


def identity_f1(pred: list[str], true: list[int]) -> dict[str, float]:
    """IDF1, IDP, IDR over aligned lists of predicted and true ids (one entry per observation)."""
    if not pred:
        return {"idf1": float("nan"), "idp": float("nan"), "idr": float("nan")}
    pairs = Counter(zip(pred, true, strict=True))
    p_ids = sorted(set(pred))
    t_ids = sorted(set(true))
    pi = {p: k for k, p in enumerate(p_ids)}
    ti = {t: k for k, t in enumerate(t_ids)}
    m = np.zeros((len(p_ids), len(t_ids)))
    for (p, t), c in pairs.items():
        m[pi[p], ti[t]] = c
    r, c = linear_sum_assignment(-m)
    idtp = float(m[r, c].sum())
    n = float(len(pred))
    idfp = idfn = n - idtp  # every observation has exactly one prediction and one truth
    return {"idf1": 2 * idtp / (2 * idtp + idfp + idfn), "idp": idtp / n, "idr": idtp / n}


def score_association(trajectories: list[Trajectory], tracklets: list[dict]) -> dict[str, float]:
    """Sample-level IDF1 of trajectories built from tracklet dicts carrying ``true_id`` (oracle or matched)."""
    true_of = {f"{d['camera_id']}/{d['track_id']}": int(d["true_id"]) for d in tracklets if "true_id" in d}
    pred, true = [], []
    for tr in trajectories:
        for seg in tr.segments:
            for t in seg.tracklets:
                if t.key in true_of:
                    pred += [tr.trajectory_id] * len(t.t_s)
                    true += [true_of[t.key]] * len(t.t_s)
    out = identity_f1(pred, true)
    out["n_trajectories"] = float(len(trajectories))
    out["n_true_travellers"] = float(len(set(true)))
    out["n_tracklets"] = float(len(true_of))
    return out
