"""Simulated world: scenario validation, yard shielding geometry, motion, background, clock, plot."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from sim_gamma_standin import StandInResponse

from hal_sim.motion import RouteFollower, Walker
from hal_sim.scenario import (
    ScenarioError,
    load_scenario,
    packaged_scenario_path,
    resolve_scenario,
    scenario_from_dict,
)
from hal_sim.sim_clock import ManualClock, SimClock
from hal_sim.world import SimWorld
from hal_sim.yard import STEEL_DENSITY_G_CM3, Yard

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "scenarios" / "demo_yard.yaml"


@pytest.fixture(scope="module")
def demo_dict() -> dict:
    return yaml.safe_load(DEMO.read_text())


@pytest.fixture(scope="module")
def demo_world() -> SimWorld:
    return SimWorld(load_scenario(DEMO), response_factory=StandInResponse.for_model)


# --------------------------------------------------------------------------- scenario
def test_packaged_demo_is_identical_to_configs_copy() -> None:
    packaged = packaged_scenario_path("demo_yard")
    assert packaged.read_bytes() == DEMO.read_bytes()
    assert resolve_scenario("demo_yard") == packaged
    sc = load_scenario(packaged)
    assert sc.name == "demo-yard"
    assert [u.unit_id for u in sc.units] == ["mob-1", "mob-2", "hh-1", "hh-2", "cam-1"]
    assert sc.sources[0].container == "B-6"


def _error(data: dict) -> str:
    with pytest.raises(ScenarioError) as exc:
        scenario_from_dict(data, "test.yaml")
    return str(exc.value)


@pytest.mark.parametrize(
    ("mutate", "expected_key"),
    [
        (lambda d: d["units"][0].__setitem__("speed_m_s", -1.0), "units.0.mobile.speed_m_s"),
        (lambda d: d["sources"][0].__setitem__("activty_mbq", 3.0), "sources.0.activty_mbq"),
        (lambda d: d["sources"][0].__setitem__("container", "Z-3"), "sources.0.container"),
        (lambda d: d["sources"][0].__setitem__("container", "B-11"), "sources.0.container"),
        (lambda d: d["sources"][0].__setitem__("tier", 2), "sources.0.tier"),
        (lambda d: d["sources"][0].__setitem__("offset_m", [1.0, 3.0, 1.0]), "sources.0.offset_m"),
        (lambda d: d["units"][1].__setitem__("unit_id", "mob-1"), "units.1.unit_id"),
        (lambda d: d["background"].__setitem__("cosmic_fraction", 1.5), "background.cosmic_fraction"),
        (lambda d: d["time"].__setitem__("start_utc", "2026-11-27T08:00:00"), "time.start_utc"),
        (lambda d: d.__setitem__("schema", 2), "schema"),
        (lambda d: d["yard"]["rows"][0].pop("cargo"), "yard.rows.0.cargo"),
    ],
)
def test_scenario_errors_name_the_key(demo_dict: dict, mutate, expected_key: str) -> None:
    data = copy.deepcopy(demo_dict)
    mutate(data)
    msg = _error(data)
    assert "test.yaml" in msg
    assert expected_key in msg


def test_scenario_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="nope.yaml"):
        load_scenario(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: 1\nname: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="packaged"):
        packaged_scenario_path("no_such_scenario")


def test_unknown_material_is_reported_by_key(demo_dict: dict) -> None:
    data = copy.deepcopy(demo_dict)
    data["yard"]["rows"][2]["cargo"]["material"] = "unobtainium"
    world = SimWorld(scenario_from_dict(data), response_factory=StandInResponse.for_model)
    with pytest.raises(ScenarioError, match=r"yard\.rows\.2\.cargo\.material"):
        world.response("NaI 2x2 in")
    data["yard"]["rows"][2]["cargo"]["material"] = "concrete"
    data["sources"][0]["nuclide"] = "Xx-999"
    world = SimWorld(scenario_from_dict(data), response_factory=StandInResponse.for_model)
    with pytest.raises(ScenarioError, match=r"sources\.0\.nuclide"):
        world.response("NaI 2x2 in")


# --------------------------------------------------------------------------- yard geometry
def test_ray_shielding_source_near_south_wall(demo_world: SimWorld) -> None:
    """Source 0.4 m behind B-6's south wall: 0.4 m cargo + one wall south, ~2 m cargo north."""
    yard = demo_world.yard
    src = demo_world.source_positions()["hidden-1"]
    assert src == pytest.approx((10.0 + 5 * (12.19 + 0.3) + 1.0, 12.4, 1.0))
    wall_g = 0.2 * STEEL_DENSITY_G_CM3  # 2 mm steel, normal incidence

    south = yard.shielding(src, (src[0], 7.2, src[2]))
    assert south.walls_crossed == 1
    assert south.wall_g_cm2 == pytest.approx(wall_g)
    assert south.cargo_path_m == pytest.approx(0.4 - 0.002)
    assert south.by_material_g_cm2["iron"] == pytest.approx(wall_g + 39.8 * 0.15)
    assert south.containers == ("B-6/t0",)

    north = yard.shielding(src, (src[0], 19.2, src[2]))
    assert north.walls_crossed == 1
    assert north.cargo_path_m == pytest.approx(2.44 - 0.4 - 0.002)

    far_north = yard.shielding(src, (src[0], 31.2, src[2]))  # through B-6 and all of C-6
    assert far_north.walls_crossed == 3
    assert far_north.containers == ("B-6/t0", "C-6/t0")
    assert far_north.by_material_g_cm2["concrete"] == pytest.approx((2.44 - 0.004) * 100 * 0.2)
    assert sum(far_north.by_material_g_cm2.values()) > sum(north.by_material_g_cm2.values())

    # the batch form agrees with the itemised one
    batch = yard.areal_density_batch(np.array([src, src]), np.array([(src[0], 7.2, 1.0), (src[0], 31.2, 1.0)]))
    assert batch[0, yard.materials.index("iron")] == pytest.approx(south.by_material_g_cm2["iron"])
    assert batch[1, yard.materials.index("concrete")] == pytest.approx(far_north.by_material_g_cm2["concrete"])


def test_ray_shielding_slant_and_open_lane(demo_world: SimWorld) -> None:
    yard = demo_world.yard
    src = demo_world.source_positions()["hidden-1"]
    # 45 degrees in the y-z plane: the wall is crossed on a slant, path longer by sqrt(2)
    slant = yard.shielding(src, (src[0], 12.4 - 3.0, 1.0 + 3.0))
    assert slant.wall_g_cm2 == pytest.approx(0.2 * STEEL_DENSITY_G_CM3 * math.sqrt(2))
    assert slant.cargo_path_m == pytest.approx((0.4 - 0.002) * math.sqrt(2))
    # along an open lane nothing is in the way
    lane = yard.shielding((0.0, 7.2, 1.5), (140.0, 7.2, 1.5))
    assert lane.walls_crossed == 0 and lane.as_list() == []


def test_nearest_accessible_point_and_path(demo_world: SimWorld) -> None:
    yard = demo_world.yard
    src = demo_world.source_positions()["hidden-1"]
    stand = yard.nearest_accessible_point(src[0], src[1])
    assert stand == pytest.approx((src[0], 12.0 - yard.standoff_m))
    assert yard.nearest_accessible_point(5.0, 7.0) == (5.0, 7.0)  # already free
    # a target in the 0.3 m gap between two containers is not reachable through the gap
    gap_x = 10.0 + 12.19 + 0.15
    gx, gy = yard.nearest_accessible_point(gap_x, 13.0)
    assert gy == pytest.approx(12.0 - 0.5) and gx == pytest.approx(gap_x)
    path = yard.plan_path((-10.0, 45.0), stand)
    pts = np.array(path)
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        for f in np.linspace(0, 1, 200):
            x, y = a + f * (b - a)
            assert yard.is_accessible(x, y, yard.standoff_m - 0.01), (x, y)


# --------------------------------------------------------------------------- motion
def test_route_positions_at_known_times_and_loop() -> None:
    square = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0), (0.0, 0.0)]
    r = RouteFollower(square, speed_m_s=2.0, start_s=5.0, loop=True)
    assert r.period_s == pytest.approx(20.0)
    st = r.state(0.0)
    assert (st.x_m, st.y_m, st.speed_m_s, st.course_deg) == (0.0, 0.0, 0.0, None)
    st = r.state(5.0 + 2.5)
    assert (st.x_m, st.y_m) == pytest.approx((5.0, 0.0)) and st.course_deg == pytest.approx(90.0)
    st = r.state(5.0 + 7.5)
    assert (st.x_m, st.y_m) == pytest.approx((10.0, 5.0)) and st.course_deg == pytest.approx(0.0)
    st = r.state(5.0 + 12.5)
    assert st.course_deg == pytest.approx(270.0)
    np.testing.assert_allclose(r.positions(np.array([7.5, 27.5, 407.5])), [[5, 0]] * 3, atol=1e-9)
    once = RouteFollower(square, speed_m_s=2.0, start_s=0.0, loop=False)
    end = once.state(100.0)
    assert (end.x_m, end.y_m, end.speed_m_s) == (0.0, 0.0, 0.0)
    assert once.state(19.0).y_m == pytest.approx(2.0)


def test_walker_reaches_stand_point_then_returns(demo_world: SimWorld) -> None:
    yard = demo_world.yard
    src = demo_world.source_positions()["hidden-1"]
    w = Walker((-10.0, 45.0), 1.4, yard, standoff_m=0.5, return_home=True)
    stand = w.set_target(src[0], src[1], t_s=100.0)
    assert stand == pytest.approx((src[0], 11.5))
    assert w.target == (src[0], src[1])
    assert w.state(50.0).x_m == -10.0  # before the task: at home
    mid = w.state(100.0 + 5.0)
    assert mid.speed_m_s == pytest.approx(1.4) and mid.course_deg is not None
    t_arrive = w.arrival_s()
    assert t_arrive > 100.0 + math.dist((-10.0, 45.0), stand) / 1.4 - 1e-6
    there = w.state(t_arrive + 1.0)
    assert (there.x_m, there.y_m) == pytest.approx(stand) and there.speed_m_s == 0.0
    # the ray from the source to the operator crosses exactly the near wall
    sp = yard.shielding(src, (there.x_m, there.y_m, 1.0))
    assert sp.walls_crossed == 1 and sp.containers == ("B-6/t0",)
    # positions queried for times before the task was given still see the old leg
    assert tuple(w.positions(np.array([99.0]))[0]) == (-10.0, 45.0)
    w.clear(t_arrive + 10.0)
    assert w.target is None
    home = w.state(w.arrival_s() + 1.0)
    assert (home.x_m, home.y_m) == pytest.approx((-10.0, 45.0))

    stay = Walker((-10.0, 45.0), 1.4, yard, return_home=False)
    stay.set_target(src[0], src[1], 0.0)
    stay.clear(stay.arrival_s() + 5.0)
    st = stay.state(stay.arrival_s() + 100.0)
    assert (st.x_m, st.y_m) == pytest.approx(stand)


# --------------------------------------------------------------------------- world
def test_norm_patch_background(demo_world: SimWorld) -> None:
    bg = demo_world.scenario.background
    hi = max(bg.patches, key=lambda p: p.factor)
    lo = min(bg.patches, key=lambda p: p.factor)
    assert hi.factor > 1 > lo.factor  # the demo has a raised and a lowered patch
    at_patch = demo_world.background_dose_rate_usv_h(hi.x_m, hi.y_m)
    assert at_patch == pytest.approx(
        bg.dose_rate_usv_h * (bg.cosmic_fraction + (1 - bg.cosmic_fraction) * hi.factor), rel=1e-3
    )
    assert demo_world.background_dose_rate_usv_h(-500.0, 500.0) == pytest.approx(bg.dose_rate_usv_h)
    assert demo_world.background_dose_rate_usv_h(lo.x_m, lo.y_m) < bg.dose_rate_usv_h
    # smooth: at one radius the excess has fallen to 1/e
    f = demo_world.norm_factor(hi.x_m + hi.radius_m, hi.y_m)
    assert float(f) == pytest.approx(1 + (hi.factor - 1) / math.e, rel=1e-3)


def test_expected_rate_matches_direct_physics(demo_world: SimWorld) -> None:
    """The memo grid (1 % in distance and areal density) stays within 1 % of exact evaluation."""
    resp = StandInResponse.for_model("NaI 2x2 in", 1024, 3000.0)
    src = demo_world.sources[0]
    w = demo_world.walker("hh-1")
    w.set_target(*src.position_m[:2], t_s=0.0)
    t = w.arrival_s() + 5.0
    rate, dose = demo_world.expected_rate("hh-1", t - 1.0, t, 1024, 3000.0)
    det = demo_world.detector_points("hh-1", np.array([t]))[0]
    r = float(np.linalg.norm(det - np.asarray(src.position_m)))
    shield = demo_world.yard.shielding(src.position_m, tuple(det)).as_list()
    direct = resp.source_rate_spectrum(src.nuclide, src.activity_bq, r, shield)
    bg_direct = resp.background_rate_spectrum(demo_world.background_dose_rate_usv_h(*det[:2]), 0, 0, 0, 0)
    assert rate.sum() == pytest.approx(direct.sum() + bg_direct.sum(), rel=0.01)
    assert dose == pytest.approx(demo_world.true_dose_rate_usv_h(*det), rel=0.01)
    assert dose > 5 * demo_world.scenario.background.dose_rate_usv_h
    w.clear(t)


def test_interval_interpolation_matches_sub_step_evaluation() -> None:
    """The end-point interpolation of the transmitted spectrum agrees with evaluating every sub-step
    (a full loop of mob-1 past the hidden source, through gaps and slanted walls)."""
    world = SimWorld(load_scenario(DEMO), response_factory=StandInResponse.for_model)
    worst = 0.0
    for k in range(1, 70):
        fast, dose_fast = world.expected_rate("mob-1", k - 1.0, float(k))
        slow, dose_slow = world.expected_rate("mob-1", k - 1.0, float(k), exact=True)
        worst = max(worst, abs(fast.sum() / slow.sum() - 1), abs(dose_fast / dose_slow - 1))
        np.testing.assert_allclose(fast, slow, rtol=0.02, atol=1e-6 * slow.max())
    assert worst < 0.01
    assert world.stats["interpolated"] > 0 and world.stats["exact"] > 69


def test_world_time_from_clocks(demo_world: SimWorld) -> None:
    clock = ManualClock("2026-11-27T08:00:00Z")
    assert demo_world.time_s(clock) == 0.0
    clock.sleep(12.5)
    assert demo_world.time_s(clock) == 12.5
    assert clock.monotonic_s() == pytest.approx(1012.5)
    later = ManualClock("2026-11-27T08:01:00Z")
    assert demo_world.time_s(later) == 60.0
    assert 0.0 < demo_world.temperature_c(0.0) < 12.0  # Nov morning, mean 6 +- 3 C


def test_sim_clock_rate_and_shared_timeline() -> None:
    wall0 = time.time() - 2.0
    a = SimClock("2026-11-27T08:00:00Z", rate=1000.0, wall_start_s=wall0)
    b = SimClock("2026-11-27T08:00:00Z", rate=1000.0, wall_start_s=wall0)
    ta = a.monotonic_s() - 1000.0
    assert 2000.0 <= ta < 2000.0 + 1000.0 * 30  # generous: a loaded machine may stall
    assert abs(b.monotonic_s() - a.monotonic_s()) < 1000.0 * 5
    before = a.monotonic_s()
    a.sleep(50.0)  # 50 simulated seconds = 50 ms of wall time
    assert a.monotonic_s() - before >= 50.0 - 1e-6
    assert a.rate == 1000.0 and a.utc_valid
    elapsed = (a.utc_now() - a.start_utc).total_seconds()
    assert elapsed >= ta
    assert SimClock("2026-11-27T08:00:00Z", rate=10.0).monotonic_s() >= 1000.0
    with pytest.raises(ValueError, match="rate"):
        SimClock("2026-11-27T08:00:00Z", rate=0.0)


def test_draw_yard(tmp_path: Path, demo_world: SimWorld) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    from hal_sim.plot_yard import draw_yard

    draw_yard(ax, demo_world)
    n_footprints = sum(r.n_containers for r in demo_world.scenario.yard.rows)
    n_patches = len(demo_world.scenario.background.patches)
    assert len(ax.patches) == n_footprints + n_patches
    assert len(ax.lines) >= 2 + 2 + 1  # two routes, two operators, one source
    out = tmp_path / "yard.png"
    fig.savefig(out, dpi=60)
    plt.close(fig)
    assert out.stat().st_size > 1000


def test_yard_without_rows() -> None:
    y = Yard([], standoff_m=0.5)
    assert y.shielding((0, 0, 0), (10, 0, 0)).as_list() == []
    assert y.nearest_accessible_point(1.0, 2.0) == (1.0, 2.0)
    assert y.plan_path((0, 0), (5, 5)) == [(0.0, 0.0), (5.0, 5.0)]
