"""World ground truth of a simulated hall run: who was where, what they looked like, what they did.

Why separate from the per-camera MOTChallenge truth: the controller's cross-camera trajectories
and behaviour alerts are scored against hall-level facts (one id per traveller for the whole
hall, behaviour events with their times), which no single camera's gt.txt contains. Events are
taken from the simulation's actual leg timings (hal_sim/hall/crowd.py), not from the script.

File ``world_truth.json`` (schema ``cedge.hall_truth/1``)::

    {"schema", "hall", "seed", "fps", "n_frames", "duration_s",
     "travellers": [{"id", "behaviour", "cases", "t_enter_s", "t_exit_s",
                     "appearances": [{"t_from_s", "height_m", "upper_bgr", ...}]}],
     "events": [{"type", "case", "traveller_ids", "zone", "t_start_s", "t_end_s"}]}

plus ``trajectories.csv``: ``frame,t_s,traveller_id,x_m,y_m,vx_mps,vy_mps`` (frame is 1-based,
like MOTChallenge).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hal_sim.hall.appearance import Appearance
from hal_sim.hall.crowd import HallRun

__all__ = ["BehaviourEvent", "WorldTruth", "behaviour_events", "world_truth", "load_world_truth",
           "write_world_truth"]

TRUTH_SCHEMA = "cedge.hall_truth/1"


@dataclass(frozen=True)
class BehaviourEvent:
    type: str  # one of hal_sim.hall.plan.BEHAVIOUR_TYPES
    case: str  # the scripted case (e.g. "jacket_off", "restroom_long")
    traveller_ids: tuple[int, ...]
    zone: str  # zone or checkpoint name ("hall" for counter-flow)
    t_start_s: float
    t_end_s: float


@dataclass
class WorldTruth:
    hall: str
    seed: int
    fps: float
    n_frames: int
    travellers: list[dict]
    events: list[BehaviourEvent]

    def appearances_of(self, traveller_id: int) -> list[tuple[float, Appearance]]:
        for t in self.travellers:
            if t["id"] == traveller_id:
                return [(a["t_from_s"], Appearance.from_dict(a)) for a in t["appearances"]]
        raise KeyError(traveller_id)

    def normal_ids(self) -> list[int]:
        return [t["id"] for t in self.travellers if t["behaviour"] == "normal"]


def behaviour_events(run: HallRun) -> list[BehaviourEvent]:
    """Group each traveller's legs by event label; times as simulated (arrival/leaving of legs)."""
    out: list[BehaviourEvent] = []
    for tid, rec in sorted(run.travellers.items()):
        legs = rec.plan.legs
        case = rec.plan.tags[0] if rec.plan.tags else rec.plan.behaviour
        k = 0
        while k < len(rec.legs):
            label = legs[k].event
            if label is None:
                k += 1
                continue
            j = k
            while j + 1 < len(rec.legs) and legs[j + 1].event == label:
                j += 1
            first, last = rec.legs[k], rec.legs[j]
            t0 = first.t_arrive_s if legs[k].event_from_arrival else first.t_start_s
            t1 = last.t_leave_s
            if label[0] == "counter_flow":
                t1 = last.t_arrive_s
            k = j + 1
            if math.isnan(t0) or math.isnan(t1):
                continue  # the run ended before the behaviour did
            if label[0] == "meeting":
                partner = legs[j].meet_with
                if partner is None or partner < tid:
                    continue  # one event per pair, from the lower id
                prec = run.travellers.get(partner)
                mleg = next((lt for lt, lg in zip(prec.legs, prec.plan.legs, strict=False) if lg.meet_with == tid),
                            None) if prec else None
                if mleg is None or math.isnan(mleg.t_arrive_s) or math.isnan(mleg.t_leave_s):
                    continue
                t0, t1 = max(t0, mleg.t_arrive_s), min(t1, mleg.t_leave_s)
                out.append(BehaviourEvent("meeting", "meeting", (tid, partner), label[1], t0, t1))
                continue
            out.append(BehaviourEvent(label[0], case, (tid,), label[1], t0, t1))
    return out


def world_truth(run: HallRun) -> WorldTruth:
    trav = []
    for tid, rec in sorted(run.travellers.items()):
        if math.isnan(rec.t_enter_s):
            continue
        trav.append({"id": tid, "behaviour": rec.plan.behaviour, "cases": list(rec.plan.tags),
                     "t_enter_s": rec.t_enter_s, "t_exit_s": None if math.isnan(rec.t_exit_s) else rec.t_exit_s,
                     "appearances": [{"t_from_s": t, **a.to_dict()} for t, a in rec.appearances]})
    return WorldTruth(run.plan.name, run.seed, run.fps, run.n_frames, trav, behaviour_events(run))


def write_world_truth(out_dir: str | Path, run: HallRun) -> WorldTruth:
    out_dir = Path(out_dir)
    wt = world_truth(run)
    doc = {"schema": TRUTH_SCHEMA, "hall": wt.hall, "seed": wt.seed, "fps": wt.fps, "n_frames": wt.n_frames,
           "duration_s": wt.n_frames / wt.fps, "travellers": wt.travellers,
           "events": [asdict(e) for e in wt.events]}
    (out_dir / "world_truth.json").write_text(json.dumps(doc, indent=1))
    with open(out_dir / "trajectories.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "t_s", "traveller_id", "x_m", "y_m", "vx_mps", "vy_mps"])
        for k, f in enumerate(run.frames):
            for i in range(len(f.ids)):
                w.writerow([k + 1, f"{f.t_s:.2f}", int(f.ids[i]), f"{f.xy_m[i, 0]:.3f}", f"{f.xy_m[i, 1]:.3f}",
                            f"{f.v_mps[i, 0]:.3f}", f"{f.v_mps[i, 1]:.3f}"])
    return wt


def load_world_truth(clip_dir: str | Path) -> tuple[WorldTruth, dict[int, np.ndarray]]:
    """Read ``world_truth.json`` and ``trajectories.csv``: (truth, {traveller id: array (n, 5) of
    t_s, x_m, y_m, vx_mps, vy_mps})."""
    clip_dir = Path(clip_dir)
    doc = json.loads((clip_dir / "world_truth.json").read_text())
    if doc.get("schema") != TRUTH_SCHEMA:
        raise ValueError(f"{clip_dir}/world_truth.json: schema {doc.get('schema')!r}, expected {TRUTH_SCHEMA!r}")
    events = [BehaviourEvent(e["type"], e["case"], tuple(e["traveller_ids"]), e["zone"], e["t_start_s"],
                             e["t_end_s"]) for e in doc["events"]]
    wt = WorldTruth(doc["hall"], doc["seed"], doc["fps"], doc["n_frames"], doc["travellers"], events)
    data = np.loadtxt(clip_dir / "trajectories.csv", delimiter=",", skiprows=1, ndmin=2)
    tracks: dict[int, np.ndarray] = {}
    if len(data):
        for tid in np.unique(data[:, 2]).astype(int):
            rows = data[data[:, 2] == tid]
            tracks[int(tid)] = rows[:, [1, 3, 4, 5, 6]]
    return wt, tracks


def trajectories_from_run(run: HallRun) -> dict[int, np.ndarray]:
    """Same layout as ``load_world_truth``'s tracks, straight from a run in memory."""
    acc: dict[int, list] = {}
    for f in run.frames:
        for i in range(len(f.ids)):
            acc.setdefault(int(f.ids[i]), []).append((f.t_s, *f.xy_m[i], *f.v_mps[i]))
    return {k: np.asarray(v, float) for k, v in acc.items()}
