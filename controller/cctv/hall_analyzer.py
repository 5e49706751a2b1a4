"""The controller's CCTV chain in one object: tracklets in, trajectories and new alerts out, old data deleted.

Why re-associate a sliding window instead of extending trajectories one tracklet at a time: the
global assignment (controller/cctv/association.py) is only as good as the evidence it sees at
once; re-running it every ``step`` over the retained tracklets lets a late tracklet fix an earlier
link. Alerts are de-duplicated by id, so an alert is raised once even if the rule keeps firing on
the re-built trajectory. Usable offline (the bench feeds all tracklets, then steps once) and from
the controller's ingest (feed tracklets as :class:`~controller.cctv.tracklet.TrackletBuffer`
completes them, step every few seconds).
"""

from __future__ import annotations

from controller.cctv.association import AssociationParams, Trajectory, associate
from controller.cctv.behaviour_alerts import Alert, evaluate
from controller.cctv.behaviour_rules import CctvRules
from controller.cctv.hall_map import HallMap
from controller.cctv.retention import prune_tracklets
from controller.cctv.tracklet import Tracklet

__all__ = ["HallAnalyzer"]


class HallAnalyzer:
    def __init__(self, hall: HallMap, rules: CctvRules, params: AssociationParams | None = None,
                 max_tracklets: int = 50_000) -> None:
        self.hall = hall
        self.rules = rules
        self.params = params or AssociationParams()
        self.max_tracklets = max_tracklets
        self.tracklets: list[Tracklet] = []
        self.trajectories: list[Trajectory] = []
        self.alerts: dict[str, Alert] = {}
        self.deleted_tracklets = 0
        self.dropped_over_capacity = 0

    def add(self, tracklet: Tracklet | dict) -> None:
        t = tracklet if isinstance(tracklet, Tracklet) else Tracklet.from_plain(tracklet)
        if len(self.tracklets) >= self.max_tracklets:  # bounded memory; counted, never silent
            self.tracklets.pop(0)
            self.dropped_over_capacity += 1
        self.tracklets.append(t)

    def step(self, now_s: float, open_tracklets: list[Tracklet] | None = None) -> list[Alert]:
        """Delete what is past retention, re-associate, evaluate the rules; returns the alerts new since last step.

        ``open_tracklets``: tracks still running (live use), associated this step but not kept -
        a loiterer still in view is seen before his track ends; the next step gets them again."""
        self.tracklets, n = prune_tracklets(self.tracklets, now_s, self.rules.retention.max_age_s)
        self.deleted_tracklets += n
        self.trajectories = associate(self.tracklets + list(open_tracklets or ()), self.hall, self.params)
        new = []
        for a in evaluate(self.trajectories, self.hall, self.rules):
            if a.alert_id not in self.alerts:
                self.alerts[a.alert_id] = a
                new.append(a)
        return new
