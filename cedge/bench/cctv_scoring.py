"""CLEAR-MOT and identity scores of tracking results against ground truth, with ``motmetrics``.

``motmetrics`` (py-motmetrics, Heindl et al.) implements CLEAR-MOT (Bernardin & Stiefelhagen 2008:
MOTA) and the identity measures (Ristani et al. 2016: IDF1) the way the MOTChallenge devkit does.
Its own box-distance helper (``distances.iou_matrix``) calls ``np.asfarray``, removed in NumPy 2, so
the IoU distances are computed here (agent.cctv.box_geometry) and handed to its accumulator, with its
convention: distance ``1 - IoU``, and NaN (cannot match) below IoU 0.5.

HOTA (Luiten et al. 2021) is computed by :func:`hota` here, following the paper's definition with
motmetrics-independent code: TrackEval, its reference implementation, pins ``opencv-python``, which
would replace the camera role's ``opencv-python-headless`` in the same environment.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from agent.cctv.box_geometry import iou_matrix

Rows = dict[int, list[tuple[int, np.ndarray]]]  # frame -> [(id, tlwh)]


def rows_by_frame(rows) -> Rows:
    """Group :class:`agent.cctv.mot_format.MotRow` rows (or ``(frame, id, tlwh)`` triples) by frame."""
    out: Rows = defaultdict(list)
    for r in rows:
        if hasattr(r, "frame"):
            out[r.frame].append((r.obj_id, np.asarray(r.tlwh, float)))
        else:
            f, i, b = r
            out[int(f)].append((int(i), np.asarray(b, float)))
    return out


def gt_rows_considered(rows) -> list:
    """MOT16+ ground truth: keep rows whose 'consider' flag (conf column) is set and, when a class
    column is present, whose class is pedestrian (1); MOT15 files (class -1) keep every row."""
    keep = []
    for r in rows:
        if r.conf == 0:
            continue
        if len(r.extra) >= 1 and r.extra[0] not in (-1.0, 1.0) and len(r.extra) == 2:
            continue
        keep.append(r)
    return keep


def drop_ignored(gt: Rows, hyp: Rows, ignore: Rows | None, min_iou: float = 0.5) -> Rows:
    """Hypotheses without those that cover an ignored ground-truth box (MOT16 devkit practice).

    A person mostly hidden or cut by the image border (visibility below the threshold) is neither
    a miss when not found nor a false positive when found: hypotheses matched to such a box (IoU >=
    ``min_iou``, after the kept boxes took their matches) are removed before scoring.
    """
    if not ignore:
        return hyp
    out: Rows = defaultdict(list)
    for f, hs in hyp.items():
        ig = ignore.get(f, [])
        if not ig or not hs:
            out[f] = list(hs)
            continue
        hb = np.array([b for _, b in hs]).reshape(-1, 4)
        keep = np.ones(len(hs), bool)
        g = gt.get(f, [])
        if g:
            iou_g = iou_matrix(np.array([b for _, b in g]).reshape(-1, 4), hb)
            r, c = linear_sum_assignment(-iou_g)
            taken = {int(k) for k, rr in zip(c, r, strict=True) if iou_g[rr, k] >= min_iou}
        else:
            taken = set()
        iou_i = iou_matrix(np.array([b for _, b in ig]).reshape(-1, 4), hb)
        for k in range(len(hs)):
            if k not in taken and iou_i[:, k].max() >= min_iou:
                keep[k] = False
        out[f] = [h for h, k in zip(hs, keep, strict=True) if k]
    return out


def accumulate(gt: Rows, hyp: Rows, frames: list[int] | None = None, min_iou: float = 0.5):
    """A motmetrics MOTAccumulator over ``frames`` (default: every frame with gt or hypotheses)."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    for f in frames if frames is not None else sorted(set(gt) | set(hyp)):
        g = gt.get(f, [])
        h = hyp.get(f, [])
        iou = iou_matrix(np.array([b for _, b in g]).reshape(-1, 4), np.array([b for _, b in h]).reshape(-1, 4))
        dist = np.where(iou >= min_iou, 1.0 - iou, np.nan)
        acc.update([i for i, _ in g], [i for i, _ in h], dist, frameid=f)
    return acc


def clear_mot(gt: Rows, hyp: Rows, frames: list[int] | None = None) -> dict[str, float]:
    """IDF1, MOTA, MOTP, id switches, false positives, misses, number of gt objects."""
    import motmetrics as mm

    acc = accumulate(gt, hyp, frames)
    mh = mm.metrics.create()
    s = mh.compute(acc, metrics=["idf1", "mota", "motp", "num_switches", "num_false_positives", "num_misses",
                                 "num_objects", "num_unique_objects"], name="seq")
    rec = s.to_dict("records")[0]
    return {k: (float(v) if v == v else None) for k, v in rec.items()}


def hota(gt: Rows, hyp: Rows, frames: list[int] | None = None) -> dict[str, float]:
    """HOTA, DetA and AssA averaged over IoU thresholds 0.05..0.95 (Luiten et al., IJCV 2021, eq. 1-10).

    Per threshold alpha: frame-wise Hungarian matching on IoU (with the paper's tie-break towards
    pairs that are matched often overall), TP/FN/FP counts, and for every TP pair (g, h) the
    association score A = TPA / (TPA + FNA + FPA) from how often g and h are matched together.
    """
    frames = frames if frames is not None else sorted(set(gt) | set(hyp))
    gt_ids = sorted({i for f in frames for i, _ in gt.get(f, [])})
    hyp_ids = sorted({i for f in frames for i, _ in hyp.get(f, [])})
    gi = {v: k for k, v in enumerate(gt_ids)}
    hi = {v: k for k, v in enumerate(hyp_ids)}
    per_frame = []
    gt_count = np.zeros(len(gt_ids))
    hyp_count = np.zeros(len(hyp_ids))
    sim_sum = np.zeros((len(gt_ids), len(hyp_ids)))
    for f in frames:
        g, h = gt.get(f, []), hyp.get(f, [])
        gidx = np.array([gi[i] for i, _ in g], int)
        hidx = np.array([hi[i] for i, _ in h], int)
        iou = iou_matrix(np.array([b for _, b in g]).reshape(-1, 4), np.array([b for _, b in h]).reshape(-1, 4))
        per_frame.append((gidx, hidx, iou))
        gt_count[gidx] += 1
        hyp_count[hidx] += 1
        if len(gidx) and len(hidx):
            sim_sum[np.ix_(gidx, hidx)] += iou
    # global alignment score used as a tie-break (TrackEval's "potential matches")
    denom = gt_count[:, None] + hyp_count[None, :] - sim_sum
    global_align = np.divide(sim_sum, denom, out=np.zeros_like(sim_sum), where=denom > 0)
    alphas = np.arange(0.05, 0.96, 0.05)
    hota_a, deta_a, assa_a = [], [], []
    for alpha in alphas:
        matches = np.zeros((len(gt_ids), len(hyp_ids)))
        tp = fn = fp = 0
        for gidx, hidx, iou in per_frame:
            if len(gidx) == 0 or len(hidx) == 0:
                fn += len(gidx)
                fp += len(hidx)
                continue
            score = global_align[np.ix_(gidx, hidx)] * iou
            r, c = linear_sum_assignment(-score)
            ok = iou[r, c] >= alpha - np.finfo(float).eps
            r, c = r[ok], c[ok]
            matches[gidx[r], hidx[c]] += 1
            tp += len(r)
            fn += len(gidx) - len(r)
            fp += len(hidx) - len(r)
        if tp == 0:
            hota_a.append(0.0)
            deta_a.append(0.0)
            assa_a.append(0.0)
            continue
        ass = matches / np.maximum(gt_count[:, None] + hyp_count[None, :] - matches, 1)
        assa = float((matches * ass).sum() / tp)
        deta = tp / (tp + fn + fp)
        deta_a.append(deta)
        assa_a.append(assa)
        hota_a.append(float(np.sqrt(deta * assa)))
    return {"hota": float(np.mean(hota_a)), "deta": float(np.mean(deta_a)), "assa": float(np.mean(assa_a))}
