"""Controller side of the hall CCTV (controller/cctv): cross-camera association, behaviour rules,
retention, and refusal of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.cctv.association import associate, associate_nearest_in_time
from controller.cctv.behaviour_alerts import evaluate
from controller.cctv.behaviour_rules import RulesError, load_rules
from controller.cctv.hall_analyzer import HallAnalyzer
from controller.cctv.hall_map import load_hall_map
from controller.cctv.retention import prune_trajectories
from controller.cctv.tracklet import Tracklet, TrackletBuffer, TrackletError

REPO = Path(__file__).resolve().parents[1]
HALL = REPO / "configs" / "hall.yaml"
RULES = REPO / "configs" / "cctv_rules.yaml"


@pytest.fixture(scope="module")
def hall():
    return load_hall_map(HALL)


@pytest.fixture(scope="module")
def rules(hall):
    return load_rules(RULES, hall)


def _hist(bin_: int, n: int = 11) -> list[float]:
    h = [0.02] * n
    h[bin_] = 1.0
    return h


def _app(torso: int, legs: int, height: float = 1.75) -> dict:
    return {"head": _hist(8), "torso": _hist(torso), "legs": _hist(legs), "height_m": height, "n_frames": 50}


def _tracklet(cam: str, tid: str, t0: float, pts: list[tuple[float, float]], speed_mps: float, app: dict,
              dwell: dict[int, float] | None = None, rate_hz: float = 5.0, noise_m: float = 0.1, seed: int = 0):
    """A track walking through ``pts`` at ``speed_mps`` (staying ``dwell[i]`` s at point i), sampled at ``rate_hz``."""
    rng = np.random.default_rng(seed)
    ts, xs = [], []
    t = t0
    pos = np.array(pts[0], float)
    dwell = dwell or {}
    for i, p in enumerate(pts):
        p = np.array(p, float)
        while np.linalg.norm(p - pos) > speed_mps / rate_hz:
            pos = pos + (p - pos) / np.linalg.norm(p - pos) * speed_mps / rate_hz
            ts.append(t)
            xs.append(pos.copy())
            t += 1 / rate_hz
        pos = p
        for _ in range(int(dwell.get(i, 0) * rate_hz)):
            ts.append(t)
            xs.append(pos.copy())
            t += 1 / rate_hz
    xs = np.array(xs) + rng.normal(0, noise_m, (len(xs), 2))
    return {"camera_id": cam, "track_id": tid, "appearance": app,
            "samples": [{"t_s": float(a), "x_m": float(b[0]), "y_m": float(b[1]), "confidence": 0.9}
                        for a, b in zip(ts, xs, strict=True)]}


def _rules_fired(tracklets, hall, rules) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in evaluate(associate(tracklets, hall), hall, rules):
        out[a.rule] = out.get(a.rule, 0) + 1
    return out


def _normal_walker(t0: float, app: dict, seed: int = 1) -> list[dict]:
    """Gates -> corridor (c1) ... unfilmed ... baggage (c3) -> customs (c5) -> green lane."""
    return [_tracklet("c1", f"n{seed}a", t0, [(2, 10), (12, 8)], 1.3, app, seed=seed),
            _tracklet("c3", f"n{seed}b", t0 + 11, [(16, 5.5), (24, 9)], 1.3, app, seed=seed + 1),
            _tracklet("c5", f"n{seed}c", t0 + 18, [(25, 9.5), (33.5, 6), (38, 5)], 1.3, app, seed=seed + 2)]


# ------------------------------------------------------------------------------ association
def test_association_joins_a_traveller_across_a_non_overlapping_pair_with_an_explicit_gap(hall):
    """Two travellers of distinct looks leave camera c2 (corridor) and appear 6-8 s later in c3
    (baggage claim; c2 and c3 share no floor): each is re-joined with itself."""
    a, b = _app(torso=0, legs=8), _app(torso=5, legs=10, height=1.62)
    trs = [_tracklet("c2", "1", 0.0, [(9, 16), (13, 12)], 1.2, a),
           _tracklet("c2", "2", 1.0, [(9, 17), (13.3, 13)], 1.2, b, seed=2),
           _tracklet("c3", "7", 13.0, [(20, 11), (24, 9)], 1.2, a, seed=3),
           _tracklet("c3", "8", 13.8, [(19, 12), (23, 10)], 1.2, b, seed=4)]
    trajs = associate(trs, hall)
    assert len(trajs) == 2
    groups = sorted(sorted(t.tracklet_keys) for t in trajs)
    assert groups == [["c2/1", "c3/7"], ["c2/2", "c3/8"]]
    for t in trajs:
        assert len(t.gaps) == 1 and t.gaps[0].duration_s > 3 and t.gaps[0].zone is None
    # the baseline hands over to whoever appears first, so it swaps the two travellers
    # (the first to reappear is joined to the last to leave)
    base = associate_nearest_in_time(trs)
    assert sorted(sorted(t.tracklet_keys) for t in base) != groups


def test_overlapping_cameras_fuse_and_an_exit_ends_a_trajectory(hall):
    app = _app(2, 9)
    c1 = _tracklet("c1", "1", 0.0, [(3, 10), (13, 10)], 1.3, app)
    c2 = _tracklet("c2", "5", 4.0, [(8.2, 10), (14, 10)], 1.3, app, seed=5)  # same walk, seen by both
    gone = _tracklet("c6", "3", 20.0, [(44, 10), (47, 10)], 1.3, _app(4, 4))  # leaves through the exit
    new = _tracklet("c1", "9", 30.0, [(1.5, 10), (6, 10)], 1.3, _app(4, 4))  # a new arrival, same look
    trajs = associate([c1, c2, gone, new], hall)
    keys = sorted(sorted(t.tracklet_keys) for t in trajs)
    assert ["c1/1", "c2/5"] in keys and ["c6/3"] in keys and ["c1/9"] in keys
    fused = next(t for t in trajs if "c1/1" in t.tracklet_keys)
    assert fused.gaps == [] and len(fused.segments) == 1


def test_association_on_simulated_hall_oracle_tracklets():
    """Oracle tracklets of a simulated minute (tracks broken at random): every traveller is one
    trajectory for most of his samples (IDF1 well above the nearest-in-time baseline)."""
    pytest.importorskip("jupedsim")
    from controller.cctv.association_scoring import score_association
    from hal_sim.hall import HallScenario, default_hall_path, run_scenario
    from hal_sim.hall.oracle_tracklets import oracle_tracklets

    run = run_scenario(HallScenario(seed=5, duration_s=100, travellers_per_hour=500, scripted=()))
    trs = oracle_tracklets(run, seed=2, fragment_rate_per_min=2.0)
    hall = load_hall_map(default_hall_path())
    ours = score_association(associate(trs, hall), trs)
    base = score_association(associate_nearest_in_time(trs), trs)
    assert ours["n_true_travellers"] >= 5
    assert ours["idf1"] > 0.85 and ours["idf1"] > base["idf1"] + 0.1


# ------------------------------------------------------------------------------ rules
def test_normal_walkers_raise_no_alert(hall, rules):
    trs = _normal_walker(0.0, _app(1, 8)) + _normal_walker(5.0, _app(6, 9), seed=7)
    assert _rules_fired(trs, hall, rules) == {}


def test_loitering(hall, rules):
    pts = [(9, 8), (10, 9), (8.5, 10), (9.5, 7.5)] * 4
    trs = [_tracklet("c1", "1", 0, pts, 0.7, _app(3, 8), dwell={i: 8 for i in range(16)})]
    assert _rules_fired(trs, hall, rules) == {"loitering": 1}


def test_long_stay_in_restroom_and_blind_spot(hall, rules):
    a = _app(2, 8)
    door = (10.7, 19.2)
    short = [_tracklet("c2", "1", 0, [(8, 14), door], 1.2, a), _tracklet("c2", "2", 120, [door, (12, 14)], 1.2, a)]
    assert _rules_fired(short, hall, rules) == {}
    long = [_tracklet("c2", "1", 0, [(8, 14), door], 1.2, a), _tracklet("c2", "2", 420, [door, (12, 14)], 1.2, a)]
    assert _rules_fired(long, hall, rules) == {"long_stay": 1}
    nook = (32.5, 19.0)
    blind = [_tracklet("c7", "1", 0, [(33, 12), nook], 1.2, a), _tracklet("c7", "2", 160, [nook, (33.5, 12)], 1.2, a)]
    fired = evaluate(associate(blind, hall), hall, rules)
    assert [(x.rule, x.zones) for x in fired] == [("long_stay", ("blind_corner",))]
    assert fired[0].evidence["unseen_s"] >= rules.unseen_stay_limits_s["blind_corner"]


def test_appearance_change_after_blind_spot(hall, rules):
    nook = (32.5, 19.0)
    before = _app(torso=0, legs=8)
    same = [_tracklet("c7", "1", 0, [(33, 12), nook], 1.2, before),
            _tracklet("c7", "2", 30, [nook, (33.5, 12)], 1.2, before)]
    assert _rules_fired(same, hall, rules) == {}
    jacket_off = [_tracklet("c7", "1", 0, [(33, 12), nook], 1.2, before),
                  _tracklet("c7", "2", 30, [nook, (33.5, 12)], 1.2, _app(torso=4, legs=8))]
    alerts = evaluate(associate(jacket_off, hall), hall, rules)
    assert [a.rule for a in alerts] == ["appearance_change"]
    ev = alerts[0].evidence
    assert ev["part_distances"]["torso"] > 0.5 > ev["part_distances"]["legs"]
    assert ev["descriptor_before"]["torso"] != ev["descriptor_after"]["torso"]


def test_meeting_out_of_view(hall, rules):
    nook = (32.5, 19.0)
    a, b = _app(0, 8), _app(5, 10, 1.6)
    trs = [_tracklet("c7", "1", 0, [(33, 12), nook], 1.2, a), _tracklet("c7", "2", 45, [nook, (33.5, 12)], 1.2, a),
           _tracklet("c7", "3", 8, [(34, 13), (32.8, 18.6)], 1.2, b, seed=3),
           _tracklet("c7", "4", 50, [(32.8, 18.6), (34, 11)], 1.2, b, seed=4)]
    alerts = evaluate(associate(trs, hall), hall, rules)
    assert [x.rule for x in alerts] == ["meeting"]
    assert len(alerts[0].trajectory_ids) == 2


def test_u_turn_before_customs(hall, rules):
    app = _app(1, 9)
    u = [_tracklet("c5", "1", 0, [(25, 9.5), (33.6, 10), (24, 10)], 1.3, app)]
    assert _rules_fired(u, hall, rules) == {"u_turn": 1}
    through = [_tracklet("c5", "1", 0, [(25, 9.5), (33.6, 10), (33.6, 5.5), (38, 5.5)], 1.3, app)]
    assert _rules_fired(through, hall, rules) == {}


def test_repeated_passes(hall, rules):
    app = _app(1, 9)
    once = [_tracklet("c1", "1", 0, [(3, 9), (12, 9)], 1.3, app)]
    assert _rules_fired(once, hall, rules) == {}
    pts = [(3, 9), (10, 9), (4.5, 9.5), (9.5, 9), (4.5, 8.5), (12, 9)]
    many = [_tracklet("c1", "1", 0, pts, 1.3, app)]
    fired = evaluate(associate(many, hall), hall, rules)
    assert [a.rule for a in fired] == ["repeated_passes"] and fired[0].evidence["crossings"] >= 4


def test_counter_flow(hall, rules):
    app = _app(1, 9)
    walk_back = [_tracklet("c3", "1", 0, [(31, 10), (15, 10)], 1.3, app)]
    assert _rules_fired(walk_back, hall, rules) == {}
    run_back = [_tracklet("c3", "1", 0, [(31, 10), (15, 10)], 3.6, app)]
    fired = evaluate(associate(run_back, hall), hall, rules)
    assert [a.rule for a in fired] == ["counter_flow"] and fired[0].evidence["speed_against_flow_mps"] > 3.0


# ------------------------------------------------------------------------------ config, retention, input
def test_rules_file_errors_name_the_zone(tmp_path, hall):
    bad = tmp_path / "rules.yaml"
    bad.write_text(RULES.read_text().replace("  corridor: 75", "  coridor: 75"))
    with pytest.raises(RulesError, match="coridor"):
        load_rules(bad, hall)
    bad.write_text(RULES.read_text().replace("zones: [blind_corner]", "zones: [corridor]"))
    with pytest.raises(RulesError, match="filmed"):
        load_rules(bad, hall)
    bad.write_text(RULES.read_text() + "\nsurprise: 1\n")
    with pytest.raises(RulesError, match="surprise"):
        load_rules(bad, hall)


def test_retention_deletes_old_trajectories(hall, rules):
    an = HallAnalyzer(hall, rules)
    for t in _normal_walker(0.0, _app(1, 8)) + _normal_walker(5000.0, _app(6, 9), seed=7):
        an.add(t)
    an.step(now_s=5100.0)
    assert an.deleted_tracklets == 3 and len(an.trajectories) == 1
    max_age = rules.retention.max_age_s
    kept, n = prune_trajectories(an.trajectories, now_s=5100 + max_age + 1, max_age_s=max_age)
    assert kept == [] and n == 1


def test_bad_tracklets_are_refused_with_the_field_named():
    good = _tracklet("c1", "1", 0, [(3, 9), (6, 9)], 1.3, _app(1, 9))
    with pytest.raises(TrackletError, match="samples"):
        Tracklet.from_plain({**good, "samples": []})
    with pytest.raises(TrackletError, match="finite"):
        Tracklet.from_plain({**good, "samples": [{"t_s": float("nan"), "x_m": 0, "y_m": 0}]})
    with pytest.raises(TrackletError, match="height_m"):
        Tracklet.from_plain({**good, "appearance": {**good["appearance"], "height_m": 9.0}})
    with pytest.raises(TrackletError, match="camera_id"):
        Tracklet.from_plain({"track_id": "1", "samples": good["samples"]})


def test_wire_updates_fold_into_one_tracklet():
    buf = TrackletBuffer(t0_epoch_s=0.0, max_tracks=2)
    base = {"camera_id": "c1", "track_id": "a", "t_start_utc": "1970-01-01T00:00:10Z",
            "appearance": _app(1, 9)}
    assert buf.add_wire("cam-box-1", {**base, "state": "active",
                                      "samples": [{"dt_s": 0.0, "x_m": 3, "y_m": 9, "confidence": 1}]}) is None
    done = buf.add_wire("cam-box-1", {**base, "state": "ended",
                                      "samples": [{"dt_s": 1.0, "x_m": 4, "y_m": 9, "confidence": 1}]})
    assert done is not None and list(done.t_s) == [10.0, 11.0] and done.key == "cam-box-1/c1/a"
    for k in range(3):  # more open tracks than allowed: the oldest is evicted and counted
        buf.add_wire("cam-box-1", {**base, "track_id": f"x{k}", "state": "active",
                                   "samples": [{"dt_s": float(k), "x_m": 3, "y_m": 9, "confidence": 1}]})
    assert buf.evicted == 1 and len(buf.open_tracklets()) == 2
