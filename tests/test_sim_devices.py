"""Simulated devices in the simulated world: spectrometer, GNSS, operator display, faults, seeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from sim_gamma_standin import StandInResponse

from agent.hal.interfaces import (
    DeviceContext,
    DeviceDataError,
    DeviceTimeout,
    DeviceUnavailable,
    FixQuality,
    TaskGuide,
)
from agent.hal.registry import create_device
from hal_sim.devices import SimGnss, SimOperatorDisplay, SimSpectrometer
from hal_sim.scenario import load_scenario
from hal_sim.sim_clock import ManualClock
from hal_sim.world import SimWorld, put_world

START = "2026-11-27T08:00:00Z"
# one row of three containers; a Cs-137 source 0.4 m behind the south wall of R-2; a vehicle
# drives east along the south lane (y = -4) at 5 m/s; a NORM patch sits on the lane at x = 70
SCENARIO = {
    "schema": 1,
    "name": "unit-test-yard",
    "seed": 7,
    "site": {"name": "t", "origin_lat_deg": 51.95, "origin_lon_deg": 4.05, "origin_alt_m": 5.0},
    "time": {"start_utc": START, "rate": 10.0, "duration_s": 600},
    "background": {
        "dose_rate_usv_h": 0.08,
        "cosmic_fraction": 0.35,
        "k40_bq_kg": 400,
        "u238_bq_kg": 35,
        "th232_bq_kg": 30,
        "patches": [{"x_m": 70.0, "y_m": -4.0, "radius_m": 6.0, "factor": 3.0}],
    },
    "yard": {
        "container": {"length_m": 12.19, "width_m": 2.44, "height_m": 2.59, "wall_steel_mm": 2.0},
        "rows": [
            {
                "id": "R",
                "x0_m": 0.0,
                "y0_m": 0.0,
                "n_containers": 3,
                "gap_m": 0.3,
                "stack": 1,
                "cargo": {"material": "iron", "density_g_cm3": 0.15},
            }
        ],
    },
    "sources": [
        {
            "id": "s1",
            "nuclide": "Cs-137",
            "activity_mbq": 400.0,
            "container": "R-2",
            "tier": 0,
            "offset_m": [6.0, 0.4, 1.0],
        }
    ],
    "units": [
        {
            "unit_id": "van",
            "type": "mobile",
            "detector": "NaI 2x4x16 in log",
            "detector_height_m": 1.0,
            "speed_m_s": 5.0,
            "start_s": 0,
            "route": [[-30.0, -4.0], [100.0, -4.0]],
            "loop": False,
        },
        {
            "unit_id": "hh",
            "type": "handheld",
            "detector": "NaI 2x2 in",
            "start_m": [-20.0, -15.0],
            "walk_speed_m_s": 1.4,
        },
        {"unit_id": "cam", "type": "camerabox"},
    ],
}
SOURCE_X = 12.19 + 0.3 + 6.0  # 18.49 m: the van passes at t = (18.49 + 30) / 5 = 9.7 s


@pytest.fixture
def scenario_path(tmp_path: Path) -> Path:
    p = tmp_path / "unit_test_yard.yaml"
    p.write_text(yaml.safe_dump(SCENARIO))
    return p


def make_context(unit_id: str, path: Path, elapsed_s: float = 0.0) -> DeviceContext:
    ctx = DeviceContext(unit_id=unit_id, clock=ManualClock(START, elapsed_s))
    put_world(ctx, path, SimWorld(load_scenario(path), response_factory=StandInResponse.for_model))
    return ctx


def read_all(dev: SimSpectrometer, n: int) -> list:
    return [dev.read_spectrum(timeout_s=5.0) for _ in range(n)]


def test_pass_by_peaks_at_closest_approach(scenario_path: Path) -> None:
    ctx = make_context("van", scenario_path)
    with SimSpectrometer(ctx, str(scenario_path), n_channels=512) as dev:
        readings = read_all(dev, 24)
    ends = np.array([(r.t_utc - readings[0].t_utc).total_seconds() + 1.0 for r in readings])
    np.testing.assert_allclose(ends, np.arange(1, 25))  # one spectrum per simulated second, on the grid
    assert [r.t_mono_s for r in readings] == pytest.approx(list(1000.0 + ends))
    cps = np.array([r.gross_cps for r in readings])
    peak_end = ends[int(np.argmax(cps[:16]))]
    assert peak_end in (10.0, 11.0)  # the interval holding t = 9.7 s (or the next, by chance)
    assert cps[9] > 1.8 * cps[0]  # 4.4 m from the source (behind 0.4 m cargo) vs 48 m away
    # the NORM patch on the lane at x = 70 (t = 20 s) raises the count rate over the bare lane
    assert cps[19] > 1.5 * cps[0]
    r = readings[9]
    assert r.counts.dtype == np.int64 and r.n_channels == 512
    assert r.detector_model == "NaI 2x4x16 in log"
    assert 0 < r.live_time_s < r.real_time_s == 1.0
    assert r.dose_rate_usv_h > readings[0].dose_rate_usv_h
    assert r.temperature_c is not None


def test_seeded_runs_are_reproducible(scenario_path: Path) -> None:
    def run(unit: str, seed: int | None = None) -> list[np.ndarray]:
        ctx = make_context(unit, scenario_path)
        with SimSpectrometer(ctx, str(scenario_path), seed=seed, n_channels=256) as dev:
            return [r.counts for r in read_all(dev, 5)]

    a, b = run("van"), run("van")
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = run("van", seed=99)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_interval_content_does_not_depend_on_reads_skipped(scenario_path: Path) -> None:
    ctx1 = make_context("van", scenario_path)
    with SimSpectrometer(ctx1, str(scenario_path), n_channels=256) as dev:
        every = read_all(dev, 6)
    ctx2 = make_context("van", scenario_path, elapsed_s=3.5)  # starts later: first interval ends at 4
    with SimSpectrometer(ctx2, str(scenario_path), n_channels=256) as dev:
        late = read_all(dev, 2)
    assert np.array_equal(late[0].counts, every[3].counts)
    assert np.array_equal(late[1].counts, every[4].counts)


def test_slow_reader_gets_buffered_then_drops(scenario_path: Path) -> None:
    ctx = make_context("van", scenario_path)
    with SimSpectrometer(ctx, str(scenario_path), n_channels=128, buffer_intervals=3) as dev:
        first = dev.read_spectrum(5.0)
        ctx.clock.sleep(2.5)  # the reader stalls for 2.5 s: two spectra wait in the buffer
        t = [(dev.read_spectrum(5.0).t_utc - first.t_utc).total_seconds() for _ in range(3)]
        assert t == [1.0, 2.0, 3.0]
        ctx.clock.sleep(10.0)  # stalls longer than the buffer: the oldest are lost
        nxt = dev.read_spectrum(5.0)
        assert dev.dropped_intervals > 0
        assert (nxt.t_utc - first.t_utc).total_seconds() == pytest.approx(13.0)


def test_fault_injection_timeout_and_data_error(scenario_path: Path) -> None:
    ctx = make_context("van", scenario_path)
    with SimSpectrometer(ctx, str(scenario_path), n_channels=128, fail_after_s=3.0, fail_until_s=6.0) as dev:
        assert len(read_all(dev, 3)) == 3
        with pytest.raises(DeviceTimeout):
            dev.read_spectrum(timeout_s=2.0)
        with pytest.raises(DeviceTimeout):
            dev.read_spectrum(timeout_s=2.0)
        ok = dev.read_spectrum(timeout_s=2.0)  # recovered at t = 7 s
        assert (ok.t_utc - dev.world.start_utc).total_seconds() > 6.0
    ctx = make_context("van", scenario_path)
    with SimSpectrometer(ctx, str(scenario_path), n_channels=128, fail_after_s=2.0, fail_mode="data_error") as dev:
        dev.read_spectrum(5.0)
        dev.read_spectrum(5.0)
        with pytest.raises(DeviceDataError):
            dev.read_spectrum(5.0)
    ctx = make_context("van", scenario_path)
    with (
        SimSpectrometer(ctx, str(scenario_path), n_channels=128, interval_s=2.0) as dev,
        pytest.raises(DeviceTimeout),
    ):
        dev.read_spectrum(timeout_s=0.5)


def test_bad_parameters_and_units_are_clear_errors(scenario_path: Path) -> None:
    ctx = make_context("van", scenario_path)
    with pytest.raises(DeviceUnavailable, match="no unit 'ghost'"):
        SimSpectrometer(ctx, str(scenario_path), unit_id="ghost")
    with pytest.raises(DeviceUnavailable, match="camerabox"):
        SimGnss(ctx, str(scenario_path), unit_id="cam")
    with pytest.raises(DeviceUnavailable, match="not a handheld"):
        SimOperatorDisplay(ctx, str(scenario_path))
    with pytest.raises(DeviceUnavailable, match="fail_mode"):
        SimSpectrometer(ctx, str(scenario_path), fail_mode="explode")
    with pytest.raises(DeviceUnavailable, match="outage"):
        SimGnss(ctx, str(scenario_path), outage=[[10.0, 5.0]])
    with pytest.raises(DeviceUnavailable, match="not found"):
        SimGnss(ctx, str(scenario_path.with_name("missing.yaml")))


def test_registry_builds_sim_devices(scenario_path: Path) -> None:
    ctx = make_context("van", scenario_path)
    gamma = create_device("gamma", "sim", {"scenario": str(scenario_path), "n_channels": 256}, ctx)
    gnss = create_device("gnss", "sim", {"scenario": str(scenario_path), "sigma_m": 0.0}, ctx)
    assert isinstance(gamma, SimSpectrometer) and isinstance(gnss, SimGnss)
    assert gamma.world is gnss.world  # one world per process, shared through the context
    assert gamma.describe()["model"] == "NaI 2x4x16 in log"


def test_gnss_fix_round_trip_and_motion(scenario_path: Path) -> None:
    ctx = make_context("van", scenario_path, elapsed_s=4.2)
    with SimGnss(ctx, str(scenario_path), sigma_m=0.0) as gnss:
        fix = gnss.read_fix(timeout_s=2.0)  # the newest fix: epoch 4 s
        assert fix.valid and fix.quality == FixQuality.GPS and fix.hdop == 0.9
        assert (fix.t_utc - gnss.world.start_utc).total_seconds() == 4.0
        x, y, z = gnss.world.frame.to_enu(fix.lat_deg, fix.lon_deg, fix.alt_m)
        assert (x, y, z) == pytest.approx((-30.0 + 5.0 * 4.0, -4.0, 1.0), abs=1e-4)
        assert fix.alt_m == pytest.approx(6.0, abs=1e-3)
        assert fix.speed_m_s == pytest.approx(5.0, abs=0.2)
        assert fix.course_deg == pytest.approx(90.0, abs=3.0)
        nxt = gnss.read_fix(timeout_s=2.0)  # waits for epoch 5
        assert (nxt.t_utc - fix.t_utc).total_seconds() == 1.0
        assert ctx.clock.elapsed_s() == pytest.approx(5.0)


def test_gnss_error_is_correlated_with_the_given_sigma(scenario_path: Path) -> None:
    ctx = make_context("hh", scenario_path)
    with SimGnss(ctx, str(scenario_path), sigma_m=2.0, outage=[[100.0, 110.0]]) as gnss:
        frame = gnss.world.frame
        errs = []
        for t in np.arange(0.0, 4000.0, 1.0):
            f = gnss.fix_at(float(t))
            if f.valid:
                x, y, _ = frame.to_enu(f.lat_deg, f.lon_deg, f.alt_m)
                errs.append((x + 20.0, y + 15.0))
        e = np.array(errs)
        assert 1.0 < float(np.std(e[:, 0])) < 3.5 and 1.0 < float(np.std(e[:, 1])) < 3.5
        step = np.diff(e[:, 0])
        assert float(np.std(step)) < 0.5  # 1 s apart, tau 60 s: consecutive fixes nearly agree
        lost = gnss.fix_at(105.0)
        assert not lost.valid and lost.hdop is None
        last = gnss.fix_at(99.0)
        assert (lost.lat_deg, lost.lon_deg) == (last.lat_deg, last.lon_deg)


def test_operator_walks_and_handheld_devices_follow(scenario_path: Path) -> None:
    ctx = make_context("hh", scenario_path)
    display = SimOperatorDisplay(ctx, str(scenario_path))
    world = display.world
    gnss = SimGnss(ctx, str(scenario_path), sigma_m=0.3)
    gamma = SimSpectrometer(ctx, str(scenario_path), n_channels=256)
    for d in (display, gnss, gamma):
        d.open()
    home_cps = np.mean([r.gross_cps for r in read_all(gamma, 5)])
    src = world.source_positions()["s1"]
    lat, lon, _ = world.frame.to_geodetic(src[0], src[1], src[2])
    display.show_task(TaskGuide("task-1", src[0], src[1], src[2], lat, lon, dwell_s=30.0))
    assert display.stand_point == pytest.approx((src[0], -0.5))
    while world.time_s(ctx.clock) < world.walker("hh").arrival_s() + 2.0:
        fix = gnss.read_fix(timeout_s=2.0)
    x, y, _ = world.frame.to_enu(fix.lat_deg, fix.lon_deg, fix.alt_m)
    assert math.dist((x, y), display.stand_point) < 2.0
    assert fix.speed_m_s == 0.0 and fix.course_deg is None
    at_wall = read_all(gamma, 3)
    assert np.mean([r.gross_cps for r in at_wall]) > 5 * home_cps
    display.clear()
    back = world.walker("hh")
    assert back.target is None and back.destination == pytest.approx((-20.0, -15.0))
    for d in (display, gnss, gamma):
        d.close()
        d.close()  # idempotent


REAL_GAMMA_READY = (Path(__file__).resolve().parents[1] / "hal_sim" / "gamma" / "READY").exists()


@pytest.mark.skipif(not REAL_GAMMA_READY, reason="hal_sim.gamma not ready yet")
def test_demo_world_with_real_gamma_model() -> None:
    """End to end on the packaged demo with the real detector response."""
    ctx = DeviceContext(unit_id="hh-1", clock=ManualClock(START))
    display = SimOperatorDisplay(ctx, "demo_yard")
    with SimSpectrometer(ctx, "demo_yard") as gamma:
        home = read_all(gamma, 3)
        world = gamma.world
        src = world.source_positions()["hidden-1"]
        display.show_task(TaskGuide("t", src[0], src[1], src[2], 0.0, 0.0, 60.0))
        ctx.clock.sleep(world.walker("hh-1").arrival_s() - world.time_s(ctx.clock) + 1.0)
        near = read_all(gamma, 3)
    home_cps = np.mean([r.gross_cps for r in home])
    near_cps = np.mean([r.gross_cps for r in near])
    assert 50.0 < home_cps < 5000.0  # 2x2 in NaI in 0.08 uSv/h: a few hundred cps
    assert near_cps > 3 * home_cps
    assert near[-1].dose_rate_usv_h > 1.0  # 400 MBq Cs-137 at ~1 m behind 0.4 m cargo: a few uSv/h


def test_unknown_cargo_material_fails_the_spectrometer_with_the_key(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(SCENARIO))
    data["yard"]["rows"][0]["cargo"]["material"] = "unobtainium"
    p = tmp_path / "bad_cargo.yaml"
    p.write_text(yaml.safe_dump(data))
    ctx = make_context("van", p)
    with pytest.raises(DeviceUnavailable, match=r"yard\.rows\.0\.cargo\.material"):
        SimSpectrometer(ctx, str(p))
    SimGnss(ctx, str(p)).close()  # the GNSS needs no gamma model and still works


def test_spectrometer_and_gnss_on_a_fast_sim_clock(scenario_path: Path) -> None:
    """Real sleeping on a SimClock at 1000x: spectra and fixes land on their time grids."""
    from hal_sim.sim_clock import SimClock

    ctx = DeviceContext(unit_id="van", clock=SimClock(START, rate=1000.0))
    put_world(ctx, scenario_path, SimWorld(load_scenario(scenario_path), response_factory=StandInResponse.for_model))
    with SimSpectrometer(ctx, str(scenario_path), n_channels=128) as gamma, SimGnss(ctx, str(scenario_path)) as gnss:
        spectra = read_all(gamma, 4)
        fixes = [gnss.read_fix(timeout_s=5.0) for _ in range(3)]
    ends = [(r.t_utc - gamma.world.start_utc).total_seconds() for r in spectra]
    assert all(e == int(e) for e in ends) and np.all(np.diff(ends) >= 1.0)
    assert all(b.t_mono_s >= a.t_mono_s for a, b in zip(spectra, spectra[1:], strict=False))
    epochs = [(f.t_utc - gnss.world.start_utc).total_seconds() for f in fixes]
    assert all(e == int(e) for e in epochs) and np.all(np.diff(epochs) >= 1.0)
