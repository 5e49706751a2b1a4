"""Retention of cross-camera data: trajectories and tracklets older than the configured age are deleted.

Why at the controller and by age of the *last* sample: a trajectory describes where a person went;
keeping it longer than the site's policy (configs/cctv_rules.yaml ``retention.max_age_s``) is
keeping a movement profile without a reason. A trajectory still being extended is young by
definition; one that ended ``max_age_s`` ago is gone, with its tracklets. Alerts are not deleted
here: they are incidents with their own retention in the controller's store.
"""

from __future__ import annotations

from controller.cctv.association import Trajectory
from controller.cctv.tracklet import Tracklet

__all__ = ["prune_tracklets", "prune_trajectories"]


def prune_trajectories(trajectories: list[Trajectory], now_s: float, max_age_s: float) -> tuple[list[Trajectory], int]:
    """(kept, number deleted): a trajectory is deleted when its last sample is older than ``max_age_s``."""
    kept = [t for t in trajectories if now_s - t.t_end_s <= max_age_s]
    return kept, len(trajectories) - len(kept)


def prune_tracklets(tracklets: list[Tracklet], now_s: float, max_age_s: float) -> tuple[list[Tracklet], int]:
    kept = [t for t in tracklets if now_s - t.t_end_s <= max_age_s]
    return kept, len(tracklets) - len(kept)
