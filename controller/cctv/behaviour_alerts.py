"""Behaviour rules applied to cross-camera trajectories; each firing is an alert carrying its evidence.

The rules (limits in configs/cctv_rules.yaml, controller/cctv/behaviour_rules.py):

* ``loitering`` - time inside a filmed zone beyond its dwell limit;
* ``long_stay`` - a trajectory gap at the entrance of an unfilmed zone (restroom, blind spot)
  beyond its limit: the person went in and did not come out;
* ``appearance_change`` - across such a gap, torso or legs colours differ (Bhattacharyya distance)
  by more than the threshold: a jacket off, a bag swapped;
* ``meeting`` - two trajectories out of view in the same unfilmed zone at the same time, entering
  or leaving close together;
* ``u_turn`` - into the customs approach, then back to baggage claim without passing a lane;
* ``repeated_passes`` - crossings of a checkpoint line (with hysteresis against position noise)
  within a window;
* ``counter_flow`` - moving against the hall's passenger flow faster than a walk for a while.

Evidence of every alert: the trajectory (1 Hz samples), its tracklets (camera/track keys), the
zones, the times, the measured quantity against its limit and, where appearance matters, the
descriptors before and after. ``t_raised_s`` is the earliest time the rule could have fired on the
data it used (for the alert-latency measurement), not the time the function was called.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from controller.cctv.appearance_distance import part_distances
from controller.cctv.association import Trajectory
from controller.cctv.behaviour_rules import CctvRules
from controller.cctv.hall_map import HallMap

__all__ = ["Alert", "evaluate"]


@dataclass(frozen=True)
class Alert:
    rule: str
    trajectory_ids: tuple[str, ...]
    zones: tuple[str, ...]
    t_start_s: float
    t_end_s: float
    t_raised_s: float
    evidence: dict = field(compare=False, hash=False)
    alert_id: str = ""

    def to_dict(self) -> dict:
        return {"alert_id": self.alert_id, "rule": self.rule, "trajectory_ids": list(self.trajectory_ids),
                "zones": list(self.zones), "t_start_s": self.t_start_s, "t_end_s": self.t_end_s,
                "t_raised_s": self.t_raised_s, "evidence": self.evidence}


def _make(rule: str, trajs: list[Trajectory], zones: list[str], t0: float, t1: float, t_raised: float,
          **evidence) -> Alert:
    keys = sorted(k for t in trajs for k in t.tracklet_keys)
    digest = hashlib.sha256(f"{rule}|{round(t0)}|{'|'.join(keys[:4])}".encode()).hexdigest()[:16]
    ev = {"trajectories": {t.trajectory_id: _trajectory_evidence(t) for t in trajs}, **evidence}
    return Alert(rule, tuple(t.trajectory_id for t in trajs), tuple(zones), float(t0), float(t1), float(t_raised), ev,
                 f"cctv-{digest}")


def _trajectory_evidence(t: Trajectory) -> dict:
    ts, xy, _ = t.samples()
    keep = np.r_[0, np.flatnonzero(np.diff(np.floor(ts)) > 0) + 1] if len(ts) else np.zeros(0, int)
    return {"samples_t_x_y": [[round(float(ts[k]), 2), round(float(xy[k, 0]), 2), round(float(xy[k, 1]), 2)]
                              for k in keep],
            "tracklets": t.tracklet_keys,
            "gaps": [{"t_start_s": g.t_start_s, "t_end_s": g.t_end_s, "zone": g.zone} for g in t.gaps]}


# ------------------------------------------------------------------------------------------- rules
def _stays(times: np.ndarray, bridge_s: float) -> list[tuple[float, float]]:
    if len(times) == 0:
        return []
    cut = np.flatnonzero(np.diff(times) > bridge_s)
    starts = np.r_[0, cut + 1]
    ends = np.r_[cut, len(times) - 1]
    return [(float(times[a]), float(times[b])) for a, b in zip(starts, ends, strict=True)]


def _loitering(t: Trajectory, hall: HallMap, rules: CctvRules) -> list[Alert]:
    ts, xy, _ = t.samples()
    inside = hall.zones_at(xy)
    out = []
    for zone, limit in rules.dwell_limits_s.items():
        for a, b in _stays(ts[inside[zone]], rules.bridge_gap_s):
            if b - a >= limit:
                out.append(_make("loitering", [t], [zone], a, b, a + limit, dwell_s=round(b - a, 1), limit_s=limit))
    return out


def _long_stay(t: Trajectory, rules: CctvRules) -> list[Alert]:
    out = []
    for g in t.gaps:
        limit = rules.unseen_stay_limits_s.get(g.zone or "")
        if limit is not None and g.duration_s >= limit:
            out.append(_make("long_stay", [t], [g.zone], g.t_start_s, g.t_end_s, g.t_start_s + limit,
                             unseen_s=round(g.duration_s, 1), limit_s=limit))
    return out


def _appearance_change(t: Trajectory, rules: CctvRules) -> list[Alert]:
    r = rules.appearance_change
    out = []
    for k, g in enumerate(t.gaps):
        if g.zone not in r.zones:
            continue
        before, after = t.segments[k].appearance, t.segments[k + 1].appearance
        d = _like_with_like(t.segments[k].tracklets, t.segments[k + 1].tracklets)
        changed = {p: v for p, v in d.items() if p in ("torso", "legs") and v > r.part_distance_threshold}
        if changed:
            nxt = t.segments[k + 1]
            out.append(_make("appearance_change", [t], [g.zone], g.t_start_s, g.t_end_s,
                             min(nxt.t_end_s, g.t_end_s + 2.0), part_distances={p: round(v, 3) for p, v in d.items()},
                             threshold=r.part_distance_threshold, descriptor_before=before.to_plain(),
                             descriptor_after=after.to_plain()))
    return out


def _like_with_like(before: list, after: list) -> dict[str, float]:
    """Per part, the smallest before/after distance, over pairs of tracklets of the same camera when
    there are any (the same camera's colour response and viewpoint: a change is then the person's),
    else over all pairs. A person seen by three cameras before and two after must differ in all of
    them to count as changed."""
    same = [(b, a) for b in before for a in after if b.camera_id == a.camera_id]
    pairs = same or [(b, a) for b in before for a in after]
    out: dict[str, float] = {}
    for b, a in pairs:
        for part, v in part_distances(b.appearance, a.appearance).items():
            out[part] = min(out.get(part, 1.0), v)
    return out


def _meetings(trajs: list[Trajectory], rules: CctvRules) -> list[Alert]:
    r = rules.meeting
    gaps = [(t, g) for t in trajs for g in t.gaps if g.zone in r.zones]
    out = []
    for i, (ta, ga) in enumerate(gaps):
        for tb, gb in gaps[i + 1:]:
            if tb is ta or ga.zone != gb.zone:
                continue
            t0, t1 = max(ga.t_start_s, gb.t_start_s), min(ga.t_end_s, gb.t_end_s)
            if t1 - t0 < r.min_overlap_s:
                continue
            d_in = float(np.hypot(ga.xy_from_m[0] - gb.xy_from_m[0], ga.xy_from_m[1] - gb.xy_from_m[1]))
            d_out = float(np.hypot(ga.xy_to_m[0] - gb.xy_to_m[0], ga.xy_to_m[1] - gb.xy_to_m[1]))
            if min(d_in, d_out) > r.max_distance_m:
                continue
            out.append(_make("meeting", [ta, tb], [ga.zone], t0, t1, t0 + r.min_overlap_s,
                             together_s=round(t1 - t0, 1), entry_distance_m=round(d_in, 2),
                             exit_distance_m=round(d_out, 2)))
    return out


def _u_turn(t: Trajectory, hall: HallMap, rules: CctvRules) -> list[Alert]:
    r = rules.u_turn
    ts, xy, _ = t.samples()
    inside = hall.zones_at(xy)
    appr = np.flatnonzero(inside[r.approach_zone])
    if len(appr) == 0:
        return []
    lane = np.zeros(len(ts), bool)
    for z in r.lane_zones:
        lane |= inside[z]
    back = np.zeros(len(ts), bool)
    for z in r.return_zones:
        back |= inside[z]
    along = xy @ hall.flow_unit
    k0 = int(appr[0])
    furthest = along[k0]
    for k in range(k0, len(ts)):
        if lane[k]:
            return []
        furthest = max(furthest, along[k])
        if back[k] and furthest - along[k] >= r.min_return_m:
            zone = next(z for z in r.return_zones if inside[z][k])
            return [_make("u_turn", [t], [r.approach_zone, zone], float(ts[k0]), float(ts[k]), float(ts[k]),
                          returned_m=round(float(furthest - along[k]), 2))]
    return []


def _repeated_passes(t: Trajectory, hall: HallMap, rules: CctvRules) -> list[Alert]:
    r = rules.repeated_passes
    (x0, y0), (x1, y1) = hall.checkpoints[r.checkpoint]
    p0 = np.array([x0, y0], float)
    d = np.array([x1 - x0, y1 - y0], float)
    length = float(np.linalg.norm(d))
    d /= length
    ts, xy, _ = t.samples()
    rel = xy - p0
    along = rel @ d
    signed = rel[:, 0] * d[1] - rel[:, 1] * d[0]
    near = (along >= -1.0) & (along <= length + 1.0)
    side = 0
    crossings: list[float] = []
    for k in np.flatnonzero(near):
        s = 1 if signed[k] > r.hysteresis_m else (-1 if signed[k] < -r.hysteresis_m else 0)
        if s == 0:
            continue
        if side != 0 and s != side:
            crossings.append(float(ts[k]))
        side = s
    n = r.min_crossings
    for i in range(len(crossings) - n + 1):
        if crossings[i + n - 1] - crossings[i] <= r.window_s:
            j = i + n - 1
            while j + 1 < len(crossings) and crossings[j + 1] - crossings[i] <= r.window_s:
                j += 1
            return [_make("repeated_passes", [t], [r.checkpoint], crossings[i], crossings[j], crossings[i + n - 1],
                          crossings=j - i + 1, crossing_times_s=[round(c, 1) for c in crossings[i:j + 1]])]
    return []


def _counter_flow(t: Trajectory, hall: HallMap, rules: CctvRules) -> list[Alert]:
    r = rules.counter_flow
    out = []
    for seg in t.segments:
        if seg.t_end_s - seg.t_start_s < r.min_duration_s + r.smoothing_s:
            continue
        ts = seg.t_s
        back = ts - r.smoothing_s
        ok = back >= ts[0]
        prev = np.stack([np.interp(back, ts, seg.xy_m[:, 0]), np.interp(back, ts, seg.xy_m[:, 1])], 1)
        v_flow = ((seg.xy_m - prev) @ hall.flow_unit) / r.smoothing_s
        fast = ok & (v_flow <= -r.min_speed_mps)
        for a, b in _stays(ts[fast], 0.6):
            if b - a >= r.min_duration_s:
                vmin = float(v_flow[(ts >= a) & (ts <= b)].min())
                out.append(_make("counter_flow", [t], ["hall"], a - r.smoothing_s, b, a + r.min_duration_s,
                                 speed_against_flow_mps=round(-vmin, 2), limit_mps=r.min_speed_mps))
                break
        if out:
            break
    return out


def evaluate(trajectories: list[Trajectory], hall: HallMap, rules: CctvRules) -> list[Alert]:
    """Every rule on every trajectory (meetings on pairs); alerts sorted by the time they could be raised."""
    alerts: list[Alert] = []
    for t in trajectories:
        alerts += _loitering(t, hall, rules)
        alerts += _long_stay(t, rules)
        alerts += _appearance_change(t, rules)
        alerts += _u_turn(t, hall, rules)
        alerts += _repeated_passes(t, hall, rules)
        alerts += _counter_flow(t, hall, rules)
    alerts += _meetings(trajectories, rules)
    alerts.sort(key=lambda a: a.t_raised_s)
    return alerts
