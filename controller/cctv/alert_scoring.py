"""Scores behaviour alerts against the hall's ground-truth events (recall per type, false alerts, latency).

An alert matches a truth event when the rule equals the event type, one of the alert's
trajectories belongs (by majority of its samples) to one of the event's travellers, and the
alert's time span overlaps the event's, widened by ``tolerance_s``. Each event is matched at
most once; an alert matching no event is false. Latency is ``t_raised_s`` minus the event's
start (so a long stay's latency includes its limit by construction).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from controller.cctv.association import Trajectory
from controller.cctv.behaviour_alerts import Alert

__all__ = ["score_alerts", "trajectory_owners"]


def trajectory_owners(trajectories: list[Trajectory], true_of_tracklet: dict[str, int]) -> dict[str, list]:
    """Trajectory id -> [(t_start_s, t_end_s, true traveller)] per segment (majority of its samples).

    Per segment, not per trajectory: an association error that joins two travellers must not make
    an alert on the first one's part count against the second one."""
    out: dict[str, list] = {}
    for tr in trajectories:
        for seg in tr.segments:
            c: Counter = Counter()
            for t in seg.tracklets:
                if t.key in true_of_tracklet:
                    c[true_of_tracklet[t.key]] += len(t.t_s)
            if c:
                out.setdefault(tr.trajectory_id, []).append((seg.t_start_s, seg.t_end_s, c.most_common(1)[0][0]))
    return out


def _owners_during(owners: dict[str, list], trajectory_id: str, t0: float, t1: float, margin_s: float) -> set[int]:
    return {who for a, b, who in owners.get(trajectory_id, []) if b >= t0 - margin_s and a <= t1 + margin_s}


def score_alerts(alerts: list[Alert], events: list, owners: dict[str, list], n_travellers: int,
                 tolerance_s: float = 30.0) -> dict:
    """``events``: objects with type, traveller_ids, t_start_s, t_end_s (hal_sim.hall.BehaviourEvent)."""
    matched_events: set[int] = set()
    false: list[Alert] = []
    latencies: dict[str, list[float]] = {}
    for a in alerts:
        who = set().union(*(_owners_during(owners, tid, a.t_start_s, a.t_end_s, 5.0) for tid in a.trajectory_ids))
        hit = None
        for k, e in enumerate(events):
            if k in matched_events or e.type != a.rule or not who & set(e.traveller_ids):
                continue
            if a.t_end_s >= e.t_start_s - tolerance_s and a.t_start_s <= e.t_end_s + tolerance_s:
                hit = k
                break
        if hit is None:
            # a second alert on an already matched event is a duplicate, not a false alert
            dup = any(e.type == a.rule and who & set(e.traveller_ids) for e in events)
            if not dup:
                false.append(a)
            continue
        matched_events.add(hit)
        latencies.setdefault(a.rule, []).append(a.t_raised_s - events[hit].t_start_s)
    types = sorted({e.type for e in events})
    recall = {t: sum(1 for k, e in enumerate(events) if e.type == t and k in matched_events)
              / sum(1 for e in events if e.type == t) for t in types}
    all_lat = [v for vs in latencies.values() for v in vs]
    return {"event_recall": recall, "events": len(events), "alerts": len(alerts),
            "false_alerts": len(false), "false_alert_rules": dict(Counter(a.rule for a in false)),
            "false_alerts_per_100_travellers": 100.0 * len(false) / max(1, n_travellers),
            "alert_latency_s_p50": float(np.median(all_lat)) if all_lat else float("nan"),
            "alert_latency_s_p50_by_rule": {k: float(np.median(v)) for k, v in latencies.items()}}
