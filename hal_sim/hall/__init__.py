"""Simulated airport arrival hall (issue 19): floor plan, JuPedSim crowd, calibrated cameras, renderer, truth.

Typical use (see docs/cctv_hall.md)::

    from hal_sim.hall import HallScenario, run_scenario, iter_frames, write_clip
    run = run_scenario(HallScenario(seed=1, duration_s=300, travellers_per_hour=240))
    for k, t_s, images, truth in iter_frames(run): ...   # in memory, per camera
    write_clip("out/clip1", run)                          # or to disk (videos, gt.txt, calib.json)

Needs the ``cctv`` extra (jupedsim, shapely) and OpenCV.
"""

from hal_sim.hall.camera import CameraCalib, load_calibs, save_calibs
from hal_sim.hall.clip_writer import calibs_for, iter_frames, run_scenario, write_clip
from hal_sim.hall.crowd import FrameState, HallRun, simulate
from hal_sim.hall.floor_plan import FloorPlan, HallConfigError, default_hall_path, load_hall
from hal_sim.hall.renderer import GtBox, HallRenderer
from hal_sim.hall.scenario import SCRIPTED_CASES, HallScenario, build_travellers
from hal_sim.hall.world_truth import BehaviourEvent, WorldTruth, load_world_truth, world_truth

__all__ = ["BehaviourEvent", "CameraCalib", "FloorPlan", "FrameState", "GtBox", "HallConfigError", "HallRenderer",
           "HallRun", "HallScenario", "SCRIPTED_CASES", "WorldTruth", "build_travellers", "calibs_for",
           "default_hall_path", "iter_frames", "load_calibs", "load_hall", "load_world_truth", "run_scenario",
           "save_calibs", "simulate", "world_truth", "write_clip"]
