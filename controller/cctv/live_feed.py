"""The controller's live CCTV path: stored tracklet uplinks in, behaviour alerts into the store.

Why two halves on two threads: ingest (the thread that acknowledges messages to the broker) must
never wait for a re-association of the hall, which takes tens of milliseconds to seconds on a busy
hall.  :meth:`LiveCctvFeed.on_tracklet` runs on the ingest thread after a tracklet message is
committed and only folds the update into a bounded buffer; :meth:`LiveCctvFeed.step` runs on its own
thread (controller.service) every ``cctv.step_interval_s``, hands the finished tracklets to the
:class:`~controller.cctv.hall_analyzer.HallAnalyzer` together with the tracks still running, and
stores the new alerts (de-duplicated by alert id in the database too, so a restart or a second
controller does not store an alert twice).

Times: tracklet sample times are UTC epoch seconds (``TrackletBuffer(t0_epoch_s=0)``), so alert
times convert to UTC ISO-8601 directly and retention compares with the controller clock.
Nothing is lost silently: updates beyond the buffers are counted (``stats``), a malformed update is
counted and logged, and evidence larger than ``max_evidence_bytes`` is cut (trajectory samples
dropped first, ``evidence_truncated`` set) rather than refused.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, OrderedDict
from datetime import UTC, datetime
from typing import Any

from agent.wire_schema import Envelope
from agent.wire_schema import Tracklet as TrackletMessage
from controller.cctv.behaviour_alerts import Alert
from controller.cctv.behaviour_rules import load_rules
from controller.cctv.hall_analyzer import HallAnalyzer
from controller.cctv.hall_map import load_hall_map
from controller.cctv.tracklet import Tracklet, TrackletBuffer, TrackletError
from controller.config import CctvConfig

__all__ = ["LiveCctvFeed", "alert_row"]

log = logging.getLogger(__name__)

_SEEN_MESSAGES = 4096  # (unit, boot, seq) of recent updates: a batch re-run must not fold one twice


def _utc(t_epoch_s: float) -> str:
    return datetime.fromtimestamp(t_epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_row(alert: Alert, stored_utc: str, max_evidence_bytes: int) -> dict[str, Any]:
    """The ``cctv_alerts`` row of an alert; evidence bounded to ``max_evidence_bytes`` of JSON."""
    evidence, truncated = alert.evidence, 0
    text = json.dumps(evidence, separators=(",", ":"), default=float)
    if len(text) > max_evidence_bytes:
        truncated = 1
        evidence = dict(evidence)
        trajs = {tid: {k: v for k, v in t.items() if k != "samples_t_x_y"} | {"samples_dropped": len(
            t.get("samples_t_x_y", []))} for tid, t in (evidence.get("trajectories") or {}).items()}
        evidence["trajectories"] = trajs
        text = json.dumps(evidence, separators=(",", ":"), default=float)
        if len(text) > max_evidence_bytes:  # still too big: keep only the scalar facts
            evidence = {k: v for k, v in evidence.items() if isinstance(v, int | float | str | bool)}
            evidence["trajectories_dropped"] = len(trajs)
            text = json.dumps(evidence, separators=(",", ":"), default=float)[:max_evidence_bytes]
    return {
        "alert_id": alert.alert_id,
        "rule": alert.rule,
        "zones": json.dumps(list(alert.zones)),
        "trajectory_ids": json.dumps(list(alert.trajectory_ids)),
        "t_start_utc": _utc(alert.t_start_s),
        "t_end_utc": _utc(alert.t_end_s),
        "t_raised_utc": _utc(alert.t_raised_s),
        "t_raised_epoch_s": float(alert.t_raised_s),
        "stored_utc": stored_utc,
        "evidence": text,
        "evidence_truncated": truncated,
    }


class LiveCctvFeed:
    """Bounded buffer of tracklet updates (ingest thread) and the periodic analysis (its own thread)."""

    def __init__(self, config: CctvConfig) -> None:
        self.config = config
        hall = load_hall_map(config.hall_file)
        rules = load_rules(config.rules_file, hall)
        if config.retention_max_age_s is not None:
            rules = rules.model_copy(update={"retention": rules.retention.model_copy(
                update={"max_age_s": config.retention_max_age_s})})
        self.analyzer = HallAnalyzer(hall, rules, max_tracklets=config.max_tracklets)
        self.buffer = TrackletBuffer(t0_epoch_s=0.0, max_tracks=config.max_open_tracks)
        self._finished: list[Tracklet] = []
        self._seen: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._lock = threading.Lock()  # buffer + finished list: ingest thread vs step thread
        self._step_lock = threading.Lock()  # one analysis at a time
        self.stats: Counter[str] = Counter()

    # ----------------------------------------------------------------- ingest thread
    def on_tracklet(self, env: Envelope, body: TrackletMessage) -> None:
        """Fold one stored tracklet update in; cheap (no association here)."""
        key = (env.unit_id, env.boot_id, env.seq)
        with self._lock:
            if key in self._seen:
                self.stats["updates_repeated"] += 1
                return
            self._seen[key] = None
            if len(self._seen) > _SEEN_MESSAGES:
                self._seen.popitem(last=False)
            evicted = self.buffer.evicted
            try:
                done = self.buffer.add_wire(env.unit_id, body.model_dump(mode="json"))
            except TrackletError as err:
                self.stats["updates_refused"] += 1
                log.warning("cctv: tracklet update refused: %s", err)
                return
            self.stats["updates"] += 1
            self.stats["open_tracks_evicted"] += self.buffer.evicted - evicted
            if done is None:
                return
            if len(self._finished) >= self.config.max_pending:
                self._finished.pop(0)
                self.stats["finished_dropped"] += 1
                log.warning("cctv: analysis behind, oldest finished tracklet dropped (%d so far)",
                            self.stats["finished_dropped"])
            self._finished.append(done)
            self.stats["tracklets_finished"] += 1

    # ----------------------------------------------------------------- analysis thread
    def step(self, now_epoch_s: float) -> list[Alert]:
        """Add the finished tracklets, re-associate with the running ones, return the new alerts."""
        with self._step_lock:
            with self._lock:
                finished, self._finished = self._finished, []
                running = self.buffer.open_tracklets()
            for t in finished:
                self.analyzer.add(t)
            new = self.analyzer.step(now_epoch_s, running)
            self.stats["steps"] += 1
            self.stats["alerts"] += len(new)
            self.stats["tracklets_over_capacity"] = self.analyzer.dropped_over_capacity
            self.stats["tracklets_deleted_by_retention"] = self.analyzer.deleted_tracklets
            return new

    def step_and_store(self, store: Any, now_epoch_s: float) -> int:
        """:meth:`step`, then save the new alerts; returns how many rows were new in the store."""
        new = self.step(now_epoch_s)
        if not new:
            return 0
        rows = [alert_row(a, _utc(now_epoch_s), self.config.max_evidence_bytes) for a in new]
        try:
            stored = store.save_cctv_alerts(rows)
        except Exception:
            # not stored: forget them as raised, so the next step raises and stores them again
            for a in new:
                self.analyzer.alerts.pop(a.alert_id, None)
            raise
        for a in new:
            log.warning("CCTV ALERT %s: %s in %s (trajectories %s)", a.alert_id, a.rule, ",".join(a.zones) or "-",
                        ",".join(a.trajectory_ids))
        return stored
