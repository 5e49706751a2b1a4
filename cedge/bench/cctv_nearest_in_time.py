"""The plain cross-camera baseline of ``cedge bench cctv``: link tracklets by time alone.

Issue 19 asks for "no cross-camera association beyond nearest-in-time": every tracklet continues the
trajectory whose last tracklet ended most recently before it starts (within ``max_gap_s``), whatever
the camera, the place or the clothes; otherwise it starts a new trajectory.  No overlap fusion either:
two cameras seeing one person at once give two trajectories.  It produces the controller's own
:class:`Trajectory` objects, so the same behaviour rules and scores run on it.
"""

from __future__ import annotations

from controller.cctv.association import Gap, Segment, Trajectory
from controller.cctv.tracklet import Tracklet


def associate_nearest_in_time(tracklets: list[dict], max_gap_s: float = 60.0) -> list[Trajectory]:
    trs = sorted((Tracklet.from_plain(d) for d in tracklets if d.get("samples")), key=lambda t: t.t_start_s)
    chains: list[list[Tracklet]] = []
    for tr in trs:
        best, best_dt = None, max_gap_s
        for chain in chains:
            dt = tr.t_start_s - chain[-1].t_end_s
            if 0.0 <= dt <= best_dt:
                best, best_dt = chain, dt
        if best is None:
            chains.append([tr])
        else:
            best.append(tr)
    out = []
    for k, chain in enumerate(chains, start=1):
        segs = [Segment([t]) for t in chain]
        gaps = [Gap(a.t_end_s, b.t_start_s, tuple(a.xy_m[-1]), tuple(b.xy_m[0]), None)
                for a, b in zip(segs, segs[1:], strict=False)]
        out.append(Trajectory(f"B{k}", segs, gaps))
    return out
