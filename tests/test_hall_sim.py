"""The simulated arrival hall (hal_sim/hall): floor plan validation, camera geometry, coverage,
rendering consistent with its own ground truth, and the clip files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jupedsim")
cv2 = pytest.importorskip("cv2")

from hal_sim.hall import (  # noqa: E402
    HallConfigError,
    HallRenderer,
    HallScenario,
    calibs_for,
    default_hall_path,
    load_calibs,
    load_hall,
    load_world_truth,
    run_scenario,
    write_clip,
)
from hal_sim.hall.appearance import random_appearance  # noqa: E402
from hal_sim.hall.coverage import coverage_grid, seen_fraction  # noqa: E402
from hal_sim.hall.crowd import simulate  # noqa: E402
from hal_sim.hall.plan import Leg, TravellerPlan  # noqa: E402
from hal_sim.hall.world_truth import world_truth  # noqa: E402


@pytest.fixture(scope="module")
def plan():
    return load_hall(default_hall_path())


@pytest.fixture(scope="module")
def small_run(plan):
    """Five ordinary travellers, one after the other, walked for 70 s (a few seconds of JuPedSim)."""
    rng = np.random.default_rng(4)
    travellers = [TravellerPlan(i + 1, 2.0 * i, (1.0, 4.0 + 3 * i), random_appearance(rng),
                                [Leg((9.0, 6.0 + 2 * i), 1.3), Leg((22.0, 10.0), 1.3), Leg((33.5, 5.0), 1.3),
                                 Leg((39.0, 5.0), 1.3), Leg((47.0, 10.0), 1.3)]) for i in range(5)]
    return simulate(plan, travellers, duration_s=70.0, fps=10, seed=4)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hall.yaml"
    p.write_text(text)
    return p


def test_hall_file_errors_name_the_field(tmp_path):
    good = default_hall_path().read_text()
    bad_kind = good.replace("kind: corridor", "kind: coridor")
    with pytest.raises(HallConfigError, match="zones.corridor.kind"):
        load_hall(_write(tmp_path, bad_kind))
    extra = good.replace("name: arrival_hall_a", "name: arrival_hall_a\nnmae: typo")
    with pytest.raises(HallConfigError, match="nmae"):
        load_hall(_write(tmp_path, extra))
    outside = good.replace("[[18, 5], [28, 5], [28, 6.5], [18, 6.5]]", "[[18, 5], [58, 5], [58, 6.5], [18, 6.5]]")
    with pytest.raises(HallConfigError, match="belt_south"):
        load_hall(_write(tmp_path, outside))
    with pytest.raises(HallConfigError, match="hall.yaml"):
        load_hall(_write(tmp_path, "schema: [unclosed"))


def test_homography_round_trip_and_projection_agree(plan):
    rng = np.random.default_rng(0)
    for cam in calibs_for(plan):
        uv = np.column_stack([rng.uniform(0, cam.width_px, 200), rng.uniform(cam.height_px * 0.4, cam.height_px, 200)])
        xy = cam.image_to_ground(uv)
        ok = np.isfinite(xy).all(1)
        assert ok.sum() > 100, cam.camera_id
        back = cam.ground_to_image(xy[ok])
        np.testing.assert_allclose(back, uv[ok], atol=1e-6)
        # the full 3x4 projection of a floor point equals the homography's
        h = np.column_stack([xy[ok], np.ones(ok.sum())]) @ cam.H_ground_to_image.T
        np.testing.assert_allclose(h[:, :2] / h[:, 2:], cam.project(np.column_stack([xy[ok], np.zeros(ok.sum())])),
                                   atol=1e-6)
        # the optical axis hits the configured look-at point
        spec = next(s for s in plan.config.cameras if s.id == cam.camera_id)
        np.testing.assert_allclose(cam.image_to_ground([[cam.width_px / 2, cam.height_px / 2]])[0], spec.look_at_m,
                                   atol=1e-6)


def test_coverage_has_blind_spots_overlaps_and_disjoint_pairs(plan):
    calibs = calibs_for(plan)
    assert max(seen_fraction(plan, calibs, "blind_corner").values()) < 0.05
    assert sum(seen_fraction(plan, calibs, "restroom").values()) < 0.35  # the stalls are behind a screen
    _, _, cov = coverage_grid(plan, calibs, 0.25)
    assert (cov["c1"] & cov["c2"]).sum() > 100  # overlapping pair
    assert (cov["c2"] & cov["c3"]).sum() == 0  # a pair separated by unfilmed floor
    union = np.any(np.stack(list(cov.values())), axis=0)
    assert 0.5 < union.sum() / max(1, sum(g.size for g in [union])) < 1.0


def test_rendering_matches_its_ground_truth(small_run, plan):
    """Noise off, gain 1: every pixel outside the truth boxes is background; a well visible person's
    box is mostly non-background; the box's foot point maps back to the person's floor position."""
    cam = next(c for c in calibs_for(plan) if c.camera_id == "c1")
    r = HallRenderer(plan, cam, seed=1)
    checked = 0
    for k in range(60, 300, 20):
        f = small_run.frames[k]
        img, boxes = r.render(f, lambda tid, t=f.t_s: small_run.travellers[tid].appearance_at(t), gain=1.0,
                              noise=False)
        diff = np.any(img != r.background, axis=2)
        mask = np.zeros_like(diff)
        for b in boxes:  # (anti-aliased edges may touch the pixel next to the silhouette's bounds)
            x0, y0 = max(0, int(b.left_px) - 2), max(0, int(b.top_px) - 2)
            mask[y0:int(b.top_px + b.height_px) + 3, x0:int(b.left_px + b.width_px) + 3] = True
        assert not (diff & ~mask).any(), f"frame {k}: drawing outside every truth box"
        for b in boxes:
            if b.visibility < 0.95 or b.height_px < 40 or b.top_px < 0 or b.top_px + b.height_px > cam.height_px:
                continue
            box = diff[int(b.top_px):int(b.top_px + b.height_px), int(b.left_px):int(b.left_px + b.width_px)]
            assert box.mean() > 0.3
            foot = cam.image_to_ground([[b.left_px + b.width_px / 2, b.top_px + b.height_px]])[0]
            # the box's bottom is the lowest drawn point (a swinging foot): within a stride of the centre
            assert np.hypot(*(foot - [b.x_m, b.y_m])) < 0.8
            checked += 1
    assert checked >= 5


def test_occlusion_lowers_visibility(small_run, plan):
    cam = next(c for c in calibs_for(plan) if c.camera_id == "c1")
    r = HallRenderer(plan, cam, seed=1)
    f = small_run.frames[50]
    # two travellers on one line of sight of the 5 m high camera at x = 0.3 m: the near one's head
    # is seen against the far one's legs (below ~0.8 m), so the far one is partly hidden
    import copy

    g = copy.deepcopy(f)
    g.xy_m[:2] = [[4.0, 10.0], [5.0, 10.0]]
    ids = g.ids[:2]
    _, boxes = r.render(g, lambda tid: small_run.travellers[tid].appearance_at(f.t_s), noise=False)
    vis = {b.traveller_id: b.visibility for b in boxes}
    assert vis[int(ids[0])] > 0.95 and 0.2 < vis[int(ids[1])] < 0.8


def test_clip_writer_files(tmp_path, plan):
    run = run_scenario(HallScenario(seed=3, duration_s=12.0, travellers_per_hour=1200, scripted=()), plan)
    out = write_clip(tmp_path / "clip", run, camera_ids=["c1", "c2"])
    calibs = load_calibs(out / "calib.json")
    assert set(calibs) == {"c1", "c2"}
    np.testing.assert_allclose(calibs["c1"].P, calibs_for(plan)[0].P)
    cap = cv2.VideoCapture(str(out / "c1" / "video.avi"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == run.n_frames == 120
    rows = np.loadtxt(out / "c1" / "gt" / "gt.txt", delimiter=",", ndmin=2)
    assert rows.shape[1] == 9 and len(rows) > 0
    assert rows[:, 0].min() >= 1 and rows[:, 0].max() <= n
    assert ((rows[:, 8] > 0) & (rows[:, 8] <= 1)).all()
    wt, tracks = load_world_truth(out)
    assert {int(i) for i in rows[:, 1]} <= set(tracks)
    doc = json.loads((out / "world_truth.json").read_text())
    assert doc["schema"] == "cedge.hall_truth/1" and doc["n_frames"] == 120


def test_scripted_behaviour_truth_comes_from_the_simulation(plan):
    sc = HallScenario(seed=2, duration_s=150.0, travellers_per_hour=0,
                      scripted=("repeated_passes", "counter_flow"), scripted_start_s=2.0, scripted_spread_s=5.0)
    run = run_scenario(sc, plan)
    events = {e.type: e for e in world_truth(run).events}
    assert set(events) == {"repeated_passes", "counter_flow"}
    tr = {tid: rec for tid, rec in run.travellers.items()}
    # the runner really ran against the flow during its event: x fell at > 2 m/s on average
    e = events["counter_flow"]
    (tid,) = e.traveller_ids
    pts = [(f.t_s, f.xy_m[list(f.ids).index(tid), 0]) for f in run.frames if tid in f.ids
           and e.t_start_s <= f.t_s <= e.t_end_s]
    assert len(pts) > 10
    assert (pts[0][1] - pts[-1][1]) / (pts[-1][0] - pts[0][0]) > 2.0
    # the repeated passer crossed x = 7 m (the checkpoint line) at least four times in its event
    e = events["repeated_passes"]
    (tid,) = e.traveller_ids
    xs = np.array([f.xy_m[list(f.ids).index(tid), 0] for f in run.frames if tid in f.ids
                   and e.t_start_s - 5 <= f.t_s <= e.t_end_s + 5])
    assert np.sum(np.diff(np.sign(xs - 7.0)) != 0) >= 4
    assert tr[tid].plan.behaviour == "repeated_passes"
