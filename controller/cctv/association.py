"""Cross-camera association: per-camera tracklets -> one trajectory per traveller, with explicit gaps.

Two stages, the usual hierarchy of multi-camera tracking (Huang, Wu & Nevatia, "Robust object
tracking by hierarchical association of detection responses", ECCV 2008; for the camera-topology
part, Javed et al., "Tracking across multiple cameras with disjoint views", ICCV 2003):

1. **Overlap fusion.** Two tracklets of different cameras that run at the same time and stay
   within ``overlap_max_dist_m`` on the ground plane (median over the common span) are the same
   person seen twice. Pairs are merged greedily by cost (union-find), never putting two tracklets
   of one camera that overlap in time into one group. A group is a *segment*.
2. **Gap linking.** Each segment end is matched to at most one later segment start by a global
   minimum-cost assignment (scipy's ``linear_sum_assignment``, the Hungarian method). A link is
   feasible only if the walk fits: distance <= ``v_max_mps`` x gap + slack, and the gap is no longer
   than ``max_gap_s`` - or ``max_unseen_stay_s`` when both ends lie at the entrance of the same
   unfilmed zone (restroom, blind spot: the camera topology of this hall). The cost adds appearance
   (body-part colours and height, robust to one part changing across an unfilmed zone), motion
   (distance from the constant-velocity prediction, with an uncertainty growing with the gap) and
   the gap's length.

Result: :class:`Trajectory` objects - segments in time order and a :class:`Gap` between each pair,
naming the unfilmed zone when the gap's ends say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from controller.cctv.appearance_distance import appearance_cost
from controller.cctv.hall_map import HallMap
from controller.cctv.tracklet import Descriptor, Tracklet

__all__ = ["AssociationParams", "Gap", "Segment", "Trajectory", "associate", "associate_nearest_in_time"]

INFEASIBLE = 1e6
ROBUST_PENALTY = 0.2


@dataclass(frozen=True)
class AssociationParams:
    overlap_max_dist_m: float = 1.2
    overlap_min_s: float = 0.6
    overlap_max_appearance: float = 0.65
    v_max_mps: float = 4.5  #: a running traveller; walking is ~1.3 m/s
    pos_slack_m: float = 1.5  #: ground-position error of a foot point at the image edge
    max_gap_s: float = 240.0  #: unfilmed floor between cameras (waiting at an unfilmed belt spot)
    max_unseen_stay_s: float = 1800.0  #: inside a restroom or blind spot
    link_cost_max: float = 0.5
    sink_kinds: tuple[str, ...] = ("exit",)  #: a track ending here left the hall: nothing continues it
    source_kinds: tuple[str, ...] = ("gates",)  #: a track starting here is a new arrival...
    source_radius_m: float = 5.0  #: ...unless someone was last seen this close (went back to the gates)
    #: one-way part of the hall: who was seen in a customs lane or landside cannot reappear airside
    one_way_kinds: tuple[str, ...] = ("customs_green", "customs_red", "landside", "exit")
    w_appearance: float = 0.6
    w_motion: float = 0.3
    w_gap: float = 0.15
    min_visit_s: float = 4.0
    motion_horizon_s: float = 10.0  #: gap over which the motion term hands its weight to appearance


@dataclass
class Segment:
    """Tracklets of several cameras fused as one person over one time span."""

    tracklets: list[Tracklet]
    t_s: np.ndarray = field(init=False)
    xy_m: np.ndarray = field(init=False)
    appearance: Descriptor = field(init=False)

    def __post_init__(self) -> None:
        t = np.unique(np.concatenate([tr.t_s for tr in self.tracklets]))
        acc = np.zeros((len(t), 2))
        n = np.zeros(len(t))
        for tr in self.tracklets:
            inside = (t >= tr.t_start_s) & (t <= tr.t_end_s)
            acc[inside] += tr.position_at(t[inside])
            n[inside] += 1
        self.t_s = t
        self.xy_m = acc / n[:, None]
        self.appearance = Descriptor.mean([tr.appearance for tr in self.tracklets])

    @property
    def t_start_s(self) -> float:
        return float(self.t_s[0])

    @property
    def t_end_s(self) -> float:
        return float(self.t_s[-1])

    def velocity_mps(self, at_end: bool, window_s: float = 2.0) -> np.ndarray:
        sel = self.t_s >= self.t_end_s - window_s if at_end else self.t_s <= self.t_start_s + window_s
        t, xy = self.t_s[sel], self.xy_m[sel]
        if len(t) < 2 or t[-1] - t[0] < 0.3:
            return np.zeros(2)
        return (xy[-1] - xy[0]) / (t[-1] - t[0])

    @property
    def cameras(self) -> list[str]:
        return sorted({tr.camera_id for tr in self.tracklets})


@dataclass(frozen=True)
class Gap:
    """Time the traveller was out of every camera's view between two segments."""

    t_start_s: float
    t_end_s: float
    xy_from_m: tuple[float, float]
    xy_to_m: tuple[float, float]
    zone: str | None  # unfilmed zone it was (most likely) spent in

    @property
    def duration_s(self) -> float:
        return self.t_end_s - self.t_start_s


@dataclass
class Trajectory:
    trajectory_id: str
    segments: list[Segment]
    gaps: list[Gap]

    @property
    def t_start_s(self) -> float:
        return self.segments[0].t_start_s

    @property
    def t_end_s(self) -> float:
        return self.segments[-1].t_end_s

    @property
    def tracklet_keys(self) -> list[str]:
        return [tr.key for s in self.segments for tr in s.tracklets]

    def samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All observed samples: t_s, xy_m, and the segment index of each (gaps lie between indices)."""
        t = np.concatenate([s.t_s for s in self.segments])
        xy = np.concatenate([s.xy_m for s in self.segments])
        idx = np.concatenate([np.full(len(s.t_s), k) for k, s in enumerate(self.segments)])
        return t, xy, idx


# ---------------------------------------------------------------------------------------------- stage 1
def _fuse_overlaps(tracklets: list[Tracklet], p: AssociationParams) -> list[Segment]:
    n = len(tracklets)
    order = sorted(range(n), key=lambda i: tracklets[i].t_start_s)
    cands: list[tuple[float, int, int]] = []
    for a_pos, i in enumerate(order):
        a = tracklets[i]
        for j in order[a_pos + 1:]:
            b = tracklets[j]
            if b.t_start_s > a.t_end_s - p.overlap_min_s:
                break
            if a.camera_id == b.camera_id:
                continue
            t0, t1 = max(a.t_start_s, b.t_start_s), min(a.t_end_s, b.t_end_s)
            if t1 - t0 < p.overlap_min_s:
                continue
            ts = a.t_s[(a.t_s >= t0) & (a.t_s <= t1)]
            if len(ts) < 2:
                continue
            dist = float(np.median(np.linalg.norm(a.xy_m[np.searchsorted(a.t_s, ts)] - b.position_at(ts), axis=1)))
            if dist > p.overlap_max_dist_m:
                continue
            app = appearance_cost(a.appearance, b.appearance)
            if app > p.overlap_max_appearance:
                continue
            cands.append((dist / p.overlap_max_dist_m + app, i, j))
    parent = list(range(n))
    members: dict[int, list[int]] = {i: [i] for i in range(n)}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, i, j in sorted(cands):
        ri, rj = find(i), find(j)
        if ri == rj:
            continue
        clash = any(tracklets[x].camera_id == tracklets[y].camera_id
                    and min(tracklets[x].t_end_s, tracklets[y].t_end_s)
                    - max(tracklets[x].t_start_s, tracklets[y].t_start_s) > 0.5
                    for x in members[ri] for y in members[rj])
        if clash:
            continue
        parent[rj] = ri
        members[ri] += members.pop(rj)
    return [Segment([tracklets[k] for k in sorted(m, key=lambda k: tracklets[k].t_start_s)])
            for m in members.values()]


# ---------------------------------------------------------------------------------------------- stage 2
def link_cost(a: Segment, b: Segment, hall: HallMap | None, p: AssociationParams) -> tuple[float, str | None]:
    """Cost of "b continues a" (INFEASIBLE if the walk cannot fit), and the unfilmed zone of the gap."""
    gap = b.t_start_s - a.t_end_s
    if gap < -0.5 or b.t_start_s < a.t_start_s or b.t_end_s < a.t_end_s or b is a:
        return INFEASIBLE, None
    pa, pb = a.xy_m[-1], b.xy_m[0]
    dist = float(np.linalg.norm(pb - pa))
    if dist > p.v_max_mps * max(gap, 0.0) + p.pos_slack_m:
        return INFEASIBLE, None
    if hall is not None and (hall.in_kind(pa, p.sink_kinds) or (hall.in_kind(pb, p.source_kinds)
                                                             and dist > p.source_radius_m)):
        return INFEASIBLE, None
    if hall is not None and hall.in_kind(pa, p.one_way_kinds) and not hall.in_kind(pb, p.one_way_kinds):
        return INFEASIBLE, None
    # a gap counts as a visit to an unfilmed zone only if it is long enough to have walked in and out
    # (a track broken in front of the door is not a visit, and must not get the lenient appearance)
    zone = hall.unseen_zone_between(pa, pb) if hall is not None and gap >= p.min_visit_s else None
    if gap > (p.max_unseen_stay_s if zone else p.max_gap_s):
        return INFEASIBLE, None
    app = appearance_cost(a.appearance, b.appearance)
    if zone is not None:  # clothes may change where nobody films: one part may differ, at a small price
        app = min(app, appearance_cost(a.appearance, b.appearance, robust=True) + ROBUST_PENALTY)
    horizon = min(max(gap, 0.0), 3.0)
    pred = pa + a.velocity_mps(at_end=True) * horizon
    sigma = 0.6 + 0.5 * min(max(gap, 0.0), 20.0)
    motion = min(1.0, float(np.linalg.norm(pb - pred)) / (3.0 * sigma))
    gap_term = 0.0 if zone else min(1.0, max(gap, 0.0) / p.max_gap_s)
    # after a long gap the motion prediction says little: its weight goes to appearance
    informative = float(np.exp(-max(gap, 0.0) / p.motion_horizon_s))
    w_app = p.w_appearance + p.w_motion * (1.0 - informative)
    return w_app * app + p.w_motion * informative * motion + p.w_gap * gap_term, zone


def associate(tracklets: list[Tracklet] | list[dict], hall: HallMap | None = None,
              params: AssociationParams | None = None) -> list[Trajectory]:
    """All tracklets of a period -> trajectories (ids T1, T2, ... by start time)."""
    p = params or AssociationParams()
    trs = [t if isinstance(t, Tracklet) else Tracklet.from_plain(t) for t in tracklets]
    if not trs:
        return []
    segs = sorted(_fuse_overlaps(trs, p), key=lambda s: s.t_start_s)
    n = len(segs)
    cost = np.full((n, n), INFEASIBLE)
    zones: dict[tuple[int, int], str | None] = {}
    starts = np.array([s.t_start_s for s in segs])
    for i, a in enumerate(segs):
        lo = np.searchsorted(starts, a.t_end_s - 0.5)
        hi = np.searchsorted(starts, a.t_end_s + p.max_unseen_stay_s, side="right")
        for j in range(lo, hi):
            if j == i:
                continue
            c, z = link_cost(a, segs[j], hall, p)
            if c < p.link_cost_max:
                cost[i, j] = c
                zones[(i, j)] = z
    nxt: dict[int, int] = {}
    if zones:
        rows, cols = linear_sum_assignment(cost)
        for i, j in zip(rows, cols, strict=True):
            if cost[i, j] < p.link_cost_max:
                nxt[int(i)] = int(j)
    has_prev = set(nxt.values())
    out = []
    for i in range(n):
        if i in has_prev:
            continue
        chain = [i]
        while chain[-1] in nxt and len(chain) <= n:
            chain.append(nxt[chain[-1]])
        seg_list = [segs[k] for k in chain]
        gaps = [Gap(segs[a].t_end_s, segs[b].t_start_s, tuple(segs[a].xy_m[-1]), tuple(segs[b].xy_m[0]),
                    zones.get((a, b))) for a, b in zip(chain, chain[1:], strict=False)]
        out.append(Trajectory("", seg_list, gaps))
    out.sort(key=lambda t: t.t_start_s)
    for k, t in enumerate(out):
        t.trajectory_id = f"T{k + 1}"
    return out


def associate_nearest_in_time(tracklets: list[Tracklet] | list[dict], max_gap_s: float = 10.0) -> list[Trajectory]:
    """Baseline for the bench: no overlap fusion, no appearance, no topology. Each tracklet continues
    the tracklet (any camera) that ended most recently before it started, within ``max_gap_s``.
    This is what "nearest in time" hand-over between cameras amounts to."""
    trs = sorted((t if isinstance(t, Tracklet) else Tracklet.from_plain(t) for t in tracklets),
                 key=lambda t: t.t_start_s)
    chains: list[list[Tracklet]] = []
    open_ends: list[int] = []  # chain indices whose last tracklet may still be continued
    for t in trs:
        best, best_gap = None, max_gap_s
        for c in open_ends:
            gap = t.t_start_s - chains[c][-1].t_end_s
            if 0 <= gap <= best_gap:
                best, best_gap = c, gap
        if best is None:
            chains.append([t])
            open_ends.append(len(chains) - 1)
        else:
            chains[best].append(t)
        open_ends = [c for c in open_ends if t.t_start_s - chains[c][-1].t_end_s <= max_gap_s]
    out = []
    for k, ch in enumerate(sorted(chains, key=lambda c: c[0].t_start_s)):
        segs = [Segment([t]) for t in ch]
        gaps = [Gap(a.t_end_s, b.t_start_s, tuple(a.xy_m[-1]), tuple(b.xy_m[0]), None)
                for a, b in zip(segs, segs[1:], strict=False)]
        out.append(Trajectory(f"B{k + 1}", segs, gaps))
    return out
