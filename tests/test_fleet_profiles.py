"""Profiles the simulated fleet writes for its units (no process is started)."""

from __future__ import annotations

from pathlib import Path

from agent.config import profile_from_dict
from cedge.fleet import Fleet, unit_profile
from hal_sim.scenario import packaged_scenario_path


def test_camera_box_runs_in_real_time_while_the_yard_runs_faster(tmp_path: Path) -> None:
    fleet = Fleet(packaged_scenario_path("demo_yard"), tmp_path, rate=10.0)
    by_type = {u.type: u for u in fleet.units}
    assert fleet.unit_clock("mobile")["params"]["rate"] == 10.0
    assert fleet.unit_clock("handheld")["params"]["rate"] == 10.0
    cam_clock = fleet.unit_clock("camerabox")
    assert cam_clock["params"]["rate"] == 1.0
    assert cam_clock["params"]["wall_start_s"] == fleet.clock["params"]["wall_start_s"]
    prof = unit_profile(fleet.scenario, fleet.scenario_path, by_type["camerabox"], "127.0.0.1", 1883, cam_clock)
    cam = prof["devices"]["camera"]["params"]
    assert cam["fps"] == 30.0 and list(cam["resolution"]) == [640, 480]  # what rPPG needs (bench conditions)
    profile_from_dict(prof, "cam-1.yaml")  # the profile passes the agent's own validation
