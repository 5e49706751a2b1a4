"""Incidents and handheld tasks: from mobile-unit alarms to a confirmed (or cleared) source.

Flow::

    alarm (mobile) -> incident (alarms within group_radius_m and group_window_s)
                   -> fusion: Poisson ML localization on all measurements near the incident
                   -> task, once the fusion is ready (>= 2 passes, or hold_for_fusion_s elapsed)
                   -> dispatch to the nearest available online handheld
    task: open -> dispatched -> accepted -> on_site -> measuring -> confirmed | cleared
          timed_out / rejected -> re-dispatch to the next nearest handheld (the failed one excluded,
          at most max_redispatch times) ; cancelled

Why hold for fusion: one straight pass leaves the source's side of the lane undetermined (see
:mod:`controller.localization`); a second pass by the same vehicle in the other lane, or by another
vehicle, typically arrives within a minute on a yard loop and cuts the search area from two
candidate spots to one.  Waiting ``hold_for_fusion_s`` trades that against response time, and an
incident with alarms from two passes is dispatched at once.

Everything the dispatcher knows lives in the store (incidents, tasks with their full history,
cursors over the alarm and task-event tables), so a restarted controller picks up where it left
off, and a controller process without the alarm (shared subscription) still sees it in the shared
database.  Time-outs run on the injected clock (the simulation's clock runs faster than real time).

Task events drive the transitions only if they come from the assigned unit and carry the current
dispatch's ``cmd_id``, and only forwards: a redelivered or superseded event is ignored, and the
reason is written next to the event (``task_events.disposition``).

Every command is signed (:class:`controller.command_signer.CommandSigner`: key id, nonce, issue and
expiry times, Ed25519 signature) and recorded in the store *before* it is published: units obey
only signed commands, and ingest accepts a task event only for a (unit, cmd_id, task_id) recorded
here, so a fast reply must never overtake its command's record.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np

from agent.config import SiteConfig
from agent.geo import LocalFrame
from agent.hal.interfaces import Clock, utc_iso
from agent.wire_schema import Command, DispatchTask, Position
from controller.command_signer import CommandSigner
from controller.config import DispatchConfig, LocalizationConfig
from controller.fusion_worker import FusionWorker
from controller.localization import LocalizationParams, LocalizationResult, MeasurementSet, load_site, locate
from controller.localization.handheld_search import guidance, walk_grid
from controller.store import ACTIVE_TASK_STATES, Store, epoch_s

__all__ = ["Dispatcher", "PublishCommand", "count_passes"]

log = logging.getLogger(__name__)

PublishCommand = Callable[[str, Command], None]

_RANK = {
    "open": 0,
    "dispatched": 1,
    "accepted": 2,
    "on_site": 3,
    "measuring": 4,
    "confirmed": 5,
    "cleared": 5,
}
_TERMINAL = ("confirmed", "cleared", "timed_out", "rejected", "cancelled")
_RETARGETABLE = ("dispatched", "accepted")  # once on site, a moving estimate must not disturb the dwell
_ALARM_CURSOR = "dispatch.alarm_cursor"
_EVENT_CURSOR = "dispatch.task_event_cursor"
_MANUAL_FIX = 7  # GGA "manual input": the target is a computed point, not a receiver fix
# A task that waits for its fusion opens with the estimate it has after this long (clock seconds):
# a stuck or backlogged worker must not hold a handheld back for ever.  Clock seconds: at the
# demo's 10x simulated rate a fit of 2-6 s on a loaded machine is 20-60 of them, and 60 opened
# tasks on the alarm centroid in the demo.
_FUSION_WAIT_S = 180.0


def count_passes(alarms: list[dict[str, Any]], pass_gap_s: float) -> int:
    """Distinct passes: alarms of different units, or of one unit more than pass_gap_s apart."""
    n = 0
    by_unit: dict[str, list[float]] = {}
    for a in alarms:
        by_unit.setdefault(a["unit_id"], []).append(a["t_s"])
    for times in by_unit.values():
        times.sort()
        n += 1 + sum(1 for a, b in zip(times, times[1:], strict=False) if b - a > pass_gap_s)
    return n


class Dispatcher:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        publish_command: PublishCommand,
        config: DispatchConfig,
        localization: LocalizationConfig | None = None,
        site: SiteConfig | None = None,
        signer: CommandSigner | None = None,
        fusion_worker: bool = False,
        fusion_max_pending: int = 64,
    ):
        self.store = store
        self.signer = signer  # None: commands go out unsigned, and units refuse them (logged once)
        self.clock = clock
        self.publish_command = publish_command
        self.config = config
        self.loc_config = localization or LocalizationConfig()
        site = site or SiteConfig(origin_lat_deg=51.95, origin_lon_deg=4.05, origin_alt_m=5.0)
        self.frame = LocalFrame(site.origin_lat_deg, site.origin_lon_deg, site.origin_alt_m)
        lc = self.loc_config
        self.loc_params = LocalizationParams(
            mu_air_per_m=lc.mu_air_per_m,
            z_min_m=lc.prior_z_min_m,
            z_max_m=lc.prior_z_max_m,
            near_field_m=lc.near_field_m,
            subsamples=lc.subsamples,
            ambiguity_dnll=lc.ambiguity_dnll,
            xy_prior_sigma_m=lc.search_radius_m,
            min_measurements=lc.min_measurements,
            position_sigma_m=lc.position_sigma_m,
            site=load_site(lc.site_file) if lc.site_file else None,
            detect_threshold=lc.detect_threshold,
            second_source_threshold=lc.second_source_threshold,
            max_sources=lc.max_sources,
            height_resolved_sigma_m=lc.height_resolved_sigma_m,
        )
        self.stats: Counter[str] = Counter()
        self._waiting_logged: set[str] = set()
        # incident -> (reason, when asked): open its task once the fusion in flight is applied
        self._open_after: dict[str, tuple[str, float]] = {}
        self.fusion: FusionWorker | None = (
            FusionWorker(self._compute_fusion, max_pending=fusion_max_pending) if fusion_worker else None)

    def close(self) -> None:
        """Stop the fusion worker (the controller's shutdown)."""
        if self.fusion is not None:
            self.fusion.close()

    def fusion_stats(self) -> dict[str, int]:
        return dict(self.fusion.stats) if self.fusion is not None else {}

    # ================================================================== entry points
    def tick(self) -> None:
        """Process new alarms/events, release held incidents, assign open tasks, enforce time-outs."""
        self.process_pending()
        self._collect_fusions()
        self._open_overdue()
        now_s = self._now_s()
        for inc in self.store.active_incidents():
            if inc["state"] == "holding" and (epoch_s(inc["hold_until_utc"]) or 0.0) <= now_s \
                    and inc["incident_id"] not in self._open_after:
                # re-fuse first: the rest of the pass (after the alarm) has arrived during the hold
                self._fuse(inc, then_open=f"hold of {self.config.hold_for_fusion_s:.0f} s elapsed")
        for task in self.store.list_tasks(ACTIVE_TASK_STATES):
            if task["state"] == "open":
                self._assign(task)
            elif task["deadline_utc"] and (epoch_s(task["deadline_utc"]) or 0.0) <= now_s:
                self._time_out(task)

    def process_pending(self) -> int:
        """Handle alarms and task events stored since the last call (cursors kept in the store)."""
        n = 0
        cursor = int(self.store.get_meta(_ALARM_CURSOR, "0") or 0)
        for row in self.store.alarms_after(cursor):
            try:
                self.handle_alarm(row)
            except Exception:  # one bad alarm must not wedge the queue behind it
                self.stats["alarm_errors"] += 1
                log.exception("alarm %s (row %s) could not be handled", row.get("alarm_id"), row["id"])
            self.store.set_meta(_ALARM_CURSOR, str(row["id"]))
            n += 1
        cursor = int(self.store.get_meta(_EVENT_CURSOR, "0") or 0)
        for row in self.store.task_events_after(cursor):
            # the task's new state, the event's disposition and the cursor commit together: a reader
            # never sees a task closed by an event still marked unhandled, and a crash in between
            # cannot apply the same event twice at the next start
            try:
                with self.store.transaction():
                    disposition, reason = self.handle_task_event(row)
                    self.store.set_task_event_disposition(row["id"], disposition, reason)
                    self.store.set_meta(_EVENT_CURSOR, str(row["id"]))
            except Exception as err:
                self.stats["event_errors"] += 1
                log.exception("task event row %s could not be handled", row["id"])
                self.store.set_task_event_disposition(row["id"], "error", f"{type(err).__name__}: {err}")
                self.store.set_meta(_EVENT_CURSOR, str(row["id"]))
            n += 1
        return n

    def cancel_task(self, task_id: str, reason: str = "cancelled by operator") -> bool:
        task = self.store.get_task(task_id)
        if task is None or task["state"] in _TERMINAL:
            return False
        if task["unit_id"] and task["state"] != "open":
            self._send_cancel(task, reason)
        self._transition(task, "cancelled", reason=reason)
        self._close_incident(task["incident_id"], "cancelled")
        return True

    # ================================================================== alarms -> incidents
    def handle_alarm(self, alarm: dict[str, Any]) -> str | None:
        """Attach a stored alarm row to an incident (new or existing); returns the incident id."""
        if alarm.get("unit_type") in ("handheld", "camerabox"):
            log.info(
                "alarm %s from %s %s: not a search alarm, no incident",
                alarm["alarm_id"],
                alarm["unit_type"],
                alarm["unit_id"],
            )
            return None
        if alarm.get("x_m") is None:
            self.stats["alarms_without_position"] += 1
            log.warning(
                "alarm %s from %s has no position: cannot localize, no incident",
                alarm["alarm_id"],
                alarm["unit_id"],
            )
            return None
        t_s = alarm.get("t_peak_epoch_s") or alarm.get("t_epoch_s") or self._now_s()
        entry = {
            "row": alarm["id"],
            "alarm_id": alarm["alarm_id"],
            "unit_id": alarm["unit_id"],
            "x_m": alarm["x_m"],
            "y_m": alarm["y_m"],
            "t_s": t_s,
            "sigma": alarm.get("significance_sigma"),
        }
        inc = self._find_incident(entry)
        now = utc_iso(self.clock.utc_now())
        if inc is None:
            hold_until = self.clock.utc_now() + timedelta(seconds=self.config.hold_for_fusion_s)
            inc = {
                "incident_id": f"I-{uuid.uuid4().hex[:10]}",
                "state": "holding",
                "created_utc": now,
                "hold_until_utc": utc_iso(hold_until),
                "alarms": [],
                "task_id": None,
            }
            self.stats["incidents"] += 1
            log.info(
                "incident %s opened by alarm %s of %s at (%.1f, %.1f)",
                inc["incident_id"],
                alarm["alarm_id"],
                alarm["unit_id"],
                alarm["x_m"],
                alarm["y_m"],
            )
        inc["alarms"] = [*inc["alarms"], entry]
        inc["updated_utc"] = now
        self._summarise(inc)
        self.store.save_incident(inc)
        self.store.set_alarm_incident(alarm["id"], inc["incident_id"])
        if inc["state"] == "holding":
            opening = f"{inc['passes']} passes fused" if inc["passes"] >= 2 else None
            self._fuse(inc, then_open=opening)
        elif inc["state"] == "tasked":
            self._fuse(inc)
            if self.fusion is None and inc.get("task_id"):
                self._maybe_retarget(inc)
        return inc["incident_id"]

    def _find_incident(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        best, best_d = None, math.inf
        for inc in self.store.incidents_in_window(
            entry["t_s"], self.config.group_window_s, ("holding", "tasked", "confirmed")
        ):
            d = min(math.hypot(a["x_m"] - entry["x_m"], a["y_m"] - entry["y_m"]) for a in inc["alarms"])
            if inc.get("est_x_m") is not None:
                d = min(d, math.hypot(inc["est_x_m"] - entry["x_m"], inc["est_y_m"] - entry["y_m"]))
            if d <= self.config.group_radius_m and d < best_d:
                best, best_d = inc, d
        return best

    def _summarise(self, inc: dict[str, Any]) -> None:
        alarms = inc["alarms"]
        inc["units"] = sorted({a["unit_id"] for a in alarms})
        inc["passes"] = count_passes(alarms, self.config.pass_gap_s)
        inc["first_alarm_epoch_s"] = min(a["t_s"] for a in alarms)
        inc["last_alarm_epoch_s"] = max(a["t_s"] for a in alarms)
        inc["center_x_m"] = sum(a["x_m"] for a in alarms) / len(alarms)
        inc["center_y_m"] = sum(a["y_m"] for a in alarms) / len(alarms)

    def _fuse(self, inc: dict[str, Any], then_open: str | None = None) -> None:
        """(Re-)localize the incident's source from every measurement near its alarms.

        The rows are read here, on the dispatcher's thread; the fit runs inline, or on the fusion
        worker (:class:`controller.fusion_worker.FusionWorker`) when there is one, and its result is
        applied on a later tick.  ``then_open``: open the incident's task once this fusion is applied
        (the reason), as the hold's end or a second pass asks."""
        job = self._fusion_job(inc)
        if self.fusion is None:
            self._apply_fusion(inc, job, self._compute_fusion(job))
            if then_open and inc["state"] == "holding":
                self._open_task(inc, reason=then_open)
            return
        if then_open:
            # the first request's time stays: each new alarm on a holding incident asks again, and a
            # reset clock let a stream of alarms postpone the late open for ever (issue 17, demo runs)
            self._open_after.setdefault(inc["incident_id"], (then_open, self._now_s()))
        self.fusion.submit(inc["incident_id"], job)

    def _fusion_job(self, inc: dict[str, Any]) -> dict[str, Any]:
        lc = self.loc_config
        rows = self.store.measurements_near(
            inc["center_x_m"],
            inc["center_y_m"],
            lc.search_radius_m,
            inc["first_alarm_epoch_s"] - lc.time_margin_s,
            inc["last_alarm_epoch_s"] + lc.time_margin_s,
        )
        return {"incident_id": inc["incident_id"], "rows": rows,
                "seeds_xy": [(a["x_m"], a["y_m"]) for a in inc["alarms"]]}

    def _compute_fusion(self, job: dict[str, Any]) -> tuple[LocalizationResult | None, str]:
        """The fit alone (no store access: it may run on the worker thread)."""
        rows = job["rows"]
        result: LocalizationResult | None = None
        failure = "no measurements near the alarms"
        if rows:
            try:
                result = locate(
                    MeasurementSet.from_rows(rows, self.loc_config.strength_per,
                                             gnss_sigma_by_fix=self.loc_config.gnss_sigma_by_fix_m,
                                             position_sigma_m=self.loc_config.position_sigma_m),
                    self.loc_params,
                    seeds_xy=job["seeds_xy"],
                )
            except (ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
                failure = f"localization failed: {err}"
                log.warning("incident %s: localization failed (%s)", job["incident_id"], err)
        return result, failure

    def _collect_fusions(self) -> None:
        """Apply the worker's finished fusions to their incidents (as they are now in the store)."""
        if self.fusion is None:
            return
        for incident_id, job, res in self.fusion.collect():
            inc = self.store.get_incident(incident_id)
            if isinstance(res, BaseException):
                self.stats["fusion_errors"] += 1
                log.error("incident %s: fusion failed: %s: %s", incident_id, type(res).__name__, res)
                res = (None, f"fusion failed: {type(res).__name__}: {res}")
            if inc is None or inc["state"] not in ("holding", "tasked"):
                self.stats["fusion_results_stale"] += 1
                self._open_after.pop(incident_id, None)
                continue
            self._apply_fusion(inc, job, res)
            self.stats["fusions_applied"] += 1
            opening = self._open_after.get(incident_id)
            if opening and not self.fusion.waiting(incident_id):
                del self._open_after[incident_id]
                if inc["state"] == "holding":
                    self._open_task(inc, reason=opening[0])
            elif inc["state"] == "tasked" and inc.get("task_id"):
                self._maybe_retarget(inc)

    def _open_overdue(self) -> None:
        """A task waiting for a fusion longer than _FUSION_WAIT_S opens with the estimate it has."""
        now = self._now_s()
        for incident_id, (reason, t_req) in list(self._open_after.items()):
            if now - t_req < _FUSION_WAIT_S:
                continue
            del self._open_after[incident_id]
            inc = self.store.get_incident(incident_id)
            if inc is not None and inc["state"] == "holding":
                if not inc.get("estimate"):  # never fused yet: the alarm centroid, as a failed fit gives
                    self._apply_fusion(inc, {"rows": []}, (None, "fusion not back in time"))
                self.stats["fusion_late_opens"] += 1
                log.warning("incident %s: fusion not back after %.0f s; task opened with the current estimate",
                            incident_id, now - t_req)
                self._open_task(inc, reason=f"{reason} (fusion late)")

    def _apply_fusion(self, inc: dict[str, Any], job: dict[str, Any],
                      computed: tuple[LocalizationResult | None, str]) -> None:
        lc = self.loc_config
        rows = job["rows"]
        result, failure = computed
        est = result.sources[0] if result is not None and result.sources else None
        if result is not None and est is None:
            failure = result.reason
        far = (
            est is not None
            and math.hypot(est.x_m - inc["center_x_m"], est.y_m - inc["center_y_m"]) > lc.search_radius_m
        )
        if est is not None and est.converged and not far:
            estimate = {"method": "poisson_ml", **est.to_dict(), "n_sources": result.n_sources if result else 1,
                        "sources": [s.to_dict() for s in result.sources[1:]] if result else [],
                        "decision": result.reason if result else ""}
            x, y, z, sigma = est.x_m, est.y_m, est.z_m, est.sigma_xy_m
            log.info(
                "incident %s: source at (%.1f, %.1f, %.1f) m, sigma_xy %.1f m, %d meas / %d units%s",
                inc["incident_id"],
                x,
                y,
                z,
                sigma,
                est.n_measurements,
                est.n_units,
                ", AMBIGUOUS" if est.ambiguous else "",
            )
        else:
            # Fallback: significance-weighted centroid of the alarm positions (the detector track,
            # not the source) with a search radius covering the lane's both sides.
            w = [max(a.get("sigma") or 1.0, 1e-3) for a in inc["alarms"]]
            x = sum(wi * a["x_m"] for wi, a in zip(w, inc["alarms"], strict=True)) / sum(w)
            y = sum(wi * a["y_m"] for wi, a in zip(w, inc["alarms"], strict=True)) / sum(w)
            z = 0.5 * (lc.prior_z_min_m + lc.prior_z_max_m)
            sigma = 10.0
            estimate = {
                "method": "alarm_centroid",
                "x_m": x,
                "y_m": y,
                "z_m": z,
                "sigma_xy_m": sigma,
                "n_measurements": len(rows),
                "ambiguous": False,
                "reason": failure if est is None else ("fit too far from alarms" if far else "fit did not converge"),
            }
            log.info(
                "incident %s: no ML fit (%s); alarm centroid (%.1f, %.1f)",
                inc["incident_id"],
                estimate["reason"],
                x,
                y,
            )
        inc.update(
            est_x_m=x,
            est_y_m=y,
            est_z_m=z,
            est_strength=estimate.get("strength"),
            sigma_xy_m=sigma,
            ambiguous=int(bool(estimate.get("ambiguous"))),
            estimate=estimate,
        )
        self.store.save_incident(inc)
        if estimate.get("method") == "poisson_ml":
            self._merge_if_duplicate(inc)

    def _merge_if_duplicate(self, inc: dict[str, Any]) -> None:
        """Two incidents whose fused sources coincide are one source: fold the younger into the older.

        Why: an incident opened by a weak alarm (say, a NORM patch two rows away) fuses every
        measurement within the search radius, and a strong source nearby then dominates its fit.
        Without merging, two handhelds would be sent to the same container.
        """
        for other in self.store.incidents_in_window(
            inc["first_alarm_epoch_s"], self.config.group_window_s, ("holding", "tasked", "confirmed")
        ):
            if other["incident_id"] == inc["incident_id"] or other.get("est_x_m") is None:
                continue
            if (other.get("estimate") or {}).get("method") != "poisson_ml":
                continue
            d = math.hypot(other["est_x_m"] - inc["est_x_m"], other["est_y_m"] - inc["est_y_m"])
            if d > self.config.group_radius_m:
                continue
            # created in the same clock second (a fast clock, a test's fixed one): the first alarm decides,
            # not the random incident id
            older, younger = sorted((inc, other), key=lambda i: (i["created_utc"], i.get("first_alarm_epoch_s") or 0.0,
                                                                 i["incident_id"]))
            known = {a["alarm_id"] for a in older["alarms"]}
            older["alarms"] = [*older["alarms"], *(a for a in younger["alarms"] if a["alarm_id"] not in known)]
            self._summarise(older)
            older["updated_utc"] = utc_iso(self.clock.utc_now())
            self.store.save_incident(older)
            if younger.get("task_id"):
                self.cancel_task(younger["task_id"], reason=f"duplicate of incident {older['incident_id']}")
            younger.update(state="merged", updated_utc=utc_iso(self.clock.utc_now()),
                           estimate={**(younger.get("estimate") or {}), "merged_into": older["incident_id"]})
            self.store.save_incident(younger)
            self.stats["incidents_merged"] += 1
            log.info("incident %s merged into %s: fused sources %.1f m apart", younger["incident_id"],
                     older["incident_id"], d)
            inc.update(self.store.get_incident(inc["incident_id"]) or {})
            return

    def _target(self, inc: dict[str, Any]) -> tuple[float, float, float, float, str]:
        """Where to send the handheld and how wide to search: (x, y, z, radius_m, note)."""
        x, y, z, sigma = inc["est_x_m"], inc["est_y_m"], inc["est_z_m"], inc["sigma_xy_m"] or 0.0
        radius = max(self.config.radius_m, 2.0 * sigma)
        note = f"{inc['estimate'].get('method', '?')}, sigma_xy {sigma:.1f} m"
        est = inc.get("estimate") or {}
        if est.get("ambiguous") and est.get("candidates"):
            far = max(est["candidates"], key=lambda c: math.hypot(c["x_m"] - x, c["y_m"] - y))
            sep = math.hypot(far["x_m"] - x, far["y_m"] - y)
            note = f"AMBIGUOUS: search both ({x:.1f}, {y:.1f}) and ({far['x_m']:.1f}, {far['y_m']:.1f}); " + note
            x, y = 0.5 * (x + far["x_m"]), 0.5 * (y + far["y_m"])
            radius = max(radius, 0.5 * sep + 2.0 * sigma)
        return x, y, z, radius, note

    # ================================================================== tasks
    def _open_task(self, inc: dict[str, Any], reason: str) -> None:
        now = utc_iso(self.clock.utc_now())
        x, y, z, radius, note = self._target(inc)
        task = {
            "task_id": f"T-{uuid.uuid4().hex[:10]}",
            "incident_id": inc["incident_id"],
            "alarm_ids": [a["alarm_id"] for a in inc["alarms"]],
            "state": "open",
            "unit_id": None,
            "cmd_id": None,
            "created_utc": now,
            "updated_utc": now,
            "state_since_utc": now,
            "deadline_utc": None,
            "attempts": 0,
            "excluded_units": [],
            "cmd_ids": [],
            "result": None,
            "dwell_s": self.config.dwell_s,
            "history": [{"t_utc": now, "state": "open", "reason": reason}],
            "note": note,
        }
        self._set_target(task, x, y, z, radius, inc["sigma_xy_m"])
        if not self.store.claim_incident_task(inc["incident_id"], task["task_id"]):  # issue 20: one task
            self.stats["claims_lost"] += 1
            log.info("incident %s already has a task (another dispatcher); none opened", inc["incident_id"])
            return
        self.store.save_task(task)
        inc.update(state="tasked", task_id=task["task_id"], updated_utc=now)
        self.store.save_incident(inc)
        self.stats["tasks"] += 1
        log.info(
            "task %s opened for incident %s (%s): target (%.1f, %.1f) r=%.1f m",
            task["task_id"],
            inc["incident_id"],
            reason,
            x,
            y,
            radius,
        )
        self._assign(task)

    def _set_target(
        self, task: dict[str, Any], x: float, y: float, z: float, radius: float, sigma: float | None
    ) -> None:
        lat, lon, _alt = self.frame.to_geodetic(x, y, z)
        task.update(
            target_x_m=x,
            target_y_m=y,
            target_z_m=z,
            target_lat_deg=lat,
            target_lon_deg=lon,
            radius_m=radius,
            sigma_xy_m=sigma,
        )

    def _busy_units(self, except_task: str) -> set[str]:
        return {
            t["unit_id"]
            for t in self.store.list_tasks(ACTIVE_TASK_STATES)
            if t["unit_id"] and t["state"] != "open" and t["task_id"] != except_task
        }

    def choose_handheld(self, task: dict[str, Any]) -> tuple[dict[str, Any], float] | None:
        """Nearest online, available, idle handheld not excluded from this task (and its distance)."""
        busy = self._busy_units(task["task_id"])
        excluded = set(task.get("excluded_units") or ())
        best: tuple[dict[str, Any], float] | None = None
        for unit in self.store.list_units(unit_type="handheld", state="online"):
            if unit["unit_id"] in busy or unit["unit_id"] in excluded or unit.get("available") == 0:
                continue
            if unit.get("task_id") and unit["task_id"] != task["task_id"]:
                continue  # the handheld itself says it is on another task
            d = (
                math.hypot(unit["x_m"] - task["target_x_m"], unit["y_m"] - task["target_y_m"])
                if unit.get("x_m") is not None
                else math.inf
            )
            if best is None or d < best[1]:
                best = (unit, d)
        return best

    def _assign(self, task: dict[str, Any]) -> bool:
        choice = self.choose_handheld(task)
        if choice is None:
            if task["task_id"] not in self._waiting_logged:
                self._waiting_logged.add(task["task_id"])
                log.warning(
                    "task %s: no available handheld (excluded: %s); waiting",
                    task["task_id"],
                    ", ".join(task.get("excluded_units") or ()) or "none",
                )
            return False
        self._waiting_logged.discard(task["task_id"])
        unit, distance = choice
        if not self.store.claim_task_attempt(task["task_id"], int(task.get("attempts") or 0),  # issue 20
                                             unit["unit_id"]):
            self.stats["claims_lost"] += 1
            log.info("task %s: this attempt was taken by another dispatcher; not sent", task["task_id"])
            return False
        task["unit_id"] = unit["unit_id"]
        task["attempts"] = int(task.get("attempts") or 0) + 1
        if task["attempts"] > 1:
            self.stats["redispatches"] += 1
        self._send_dispatch(
            task,
            reason=f"nearest available handheld, {distance:.0f} m away"
            if math.isfinite(distance)
            else "available handheld, position unknown",
            distance_m=distance if math.isfinite(distance) else None,
        )
        return True

    def _send_dispatch(
        self, task: dict[str, Any], reason: str, distance_m: float | None = None, event: str = "dispatched"
    ) -> None:
        cmd_id = uuid.uuid4().hex
        lat, lon, alt = self.frame.to_geodetic(task["target_x_m"], task["target_y_m"], task["target_z_m"])
        way = self._way_note(task)
        note = task.get("note") or ""
        note = f"{way}; {note}" if way and note else (way or note)
        target = Position(
            lat_deg=lat,
            lon_deg=lon,
            alt_m=alt,
            x_m=task["target_x_m"],
            y_m=task["target_y_m"],
            z_m=task["target_z_m"],
            fix_quality=_MANUAL_FIX,
        )
        cmd = Command(
            cmd_id=cmd_id,
            unit_id=task["unit_id"],
            command="dispatch",
            t_utc=utc_iso(self.clock.utc_now()),
            task=DispatchTask(
                task_id=task["task_id"],
                alarm_id=(task["alarm_ids"] or ["?"])[0],
                target=target,
                radius_m=task["radius_m"],
                dwell_s=task["dwell_s"],
                note=note,
            ),
        )
        task["cmd_id"] = cmd_id
        task["cmd_ids"] = [*(task.get("cmd_ids") or []), cmd_id]
        if event == "dispatched":
            self._transition(task, "dispatched", reason=reason, distance_m=distance_m)
        else:
            self._record(task, event, reason=reason)
        self._publish(cmd)
        self.stats["dispatch_commands"] += 1
        log.info("task %s -> %s (%s, cmd %s): %s", task["task_id"], task["unit_id"], event, cmd_id[:8], reason)

    def _way_note(self, task: dict[str, Any]) -> str:
        """Bearing (clockwise from north) and walking distance from the handheld to the target, round
        the containers of the site (controller.localization.handheld_search), for its display."""
        unit = self.store.get_unit(task["unit_id"]) if task.get("unit_id") else None
        if not unit or unit.get("x_m") is None:
            return ""
        here = (float(unit["x_m"]), float(unit["y_m"]))
        goal = (float(task["target_x_m"]), float(task["target_y_m"]))
        try:
            site = self.loc_params.site
            margin = 20.0
            bbox = (min(here[0], goal[0]) - margin, min(here[1], goal[1]) - margin,
                    max(here[0], goal[0]) + margin, max(here[1], goal[1]) + margin)
            if (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]) > 1e6:  # > 1 km2: straight line only
                raise ValueError("too far for the walking grid")
            grid = walk_grid(site, bbox)
            col = site.column_at(*goal) if site is not None else None
            if col is not None:  # the source is inside a container: walk to the nearest face
                c = site.columns[col]  # type: ignore[union-attr]
                faces = [(goal[0], c.lo[1] - 0.5), (goal[0], c.hi[1] + 0.5), (c.lo[0] - 0.5, goal[1]),
                         (c.hi[0] + 0.5, goal[1])]
                goal = min(faces, key=lambda f: math.hypot(f[0] - goal[0], f[1] - goal[1]))
            bearing, walk = guidance(grid, grid.distances(*here), here, goal)
        except (ValueError, MemoryError):
            bearing = math.degrees(math.atan2(goal[0] - here[0], goal[1] - here[1])) % 360.0
            walk = math.hypot(goal[0] - here[0], goal[1] - here[1])
        return f"walk {walk:.0f} m, first bearing {bearing:.0f} deg; measure at the wall at 0.5 m and 1.8 m height"

    def _send_cancel(self, task: dict[str, Any], reason: str) -> None:
        cmd = Command(
            cmd_id=uuid.uuid4().hex,
            unit_id=task["unit_id"],
            command="cancel",
            t_utc=utc_iso(self.clock.utc_now()),
            task_id=task["task_id"],
        )
        self._publish(cmd)
        log.info("task %s: cancel sent to %s (%s)", task["task_id"], task["unit_id"], reason)

    def _publish(self, cmd: Command) -> None:
        if self.signer is not None:
            cmd = self.signer.sign(cmd)
        else:
            if not self.stats["unsigned_commands"]:
                log.error("no command signing key configured: commands go out UNSIGNED and units refuse them")
            self.stats["unsigned_commands"] += 1
        self.store.record_command(cmd)  # first: ingest checks task events against this record
        try:
            self.publish_command(cmd.unit_id, cmd)
        except Exception:  # the time-out re-dispatches if the command never arrives
            self.stats["publish_errors"] += 1
            log.exception("could not publish %s command %s to %s", cmd.command, cmd.cmd_id, cmd.unit_id)

    def _deadline_s(self, task: dict[str, Any], state: str) -> float | None:
        c = self.config
        if state == "dispatched":
            return c.accept_timeout_s
        if state == "accepted":
            if c.arrive_timeout_s is not None:
                return c.arrive_timeout_s
            unit = self.store.get_unit(task["unit_id"]) if task.get("unit_id") else None
            if unit and unit.get("x_m") is not None:
                d = math.hypot(unit["x_m"] - task["target_x_m"], unit["y_m"] - task["target_y_m"])
            else:
                d = 300.0  # unknown start: assume a walk across a large yard
            return d / c.walk_speed_m_s + c.arrive_margin_s
        if state in ("on_site", "measuring"):
            return task["dwell_s"] + c.measure_timeout_s
        return None

    def _transition(self, task: dict[str, Any], state: str, **info: Any) -> None:
        now = self.clock.utc_now()
        old = task["state"]
        task["state"] = state
        task["state_since_utc"] = task["updated_utc"] = utc_iso(now)
        limit = self._deadline_s(task, state)
        task["deadline_utc"] = utc_iso(now + timedelta(seconds=limit)) if limit is not None else None
        entry = {
            "t_utc": utc_iso(now),
            "state": state,
            "from": old,
            "unit_id": task.get("unit_id"),
            "cmd_id": task.get("cmd_id"),
        }
        entry.update({k: v for k, v in info.items() if v is not None and v != ""})
        task["history"] = [*(task.get("history") or []), entry]
        self.store.save_task(task)

    def _record(self, task: dict[str, Any], event: str, **info: Any) -> None:
        now = utc_iso(self.clock.utc_now())
        entry = {
            "t_utc": now,
            "event": event,
            "state": task["state"],
            "unit_id": task.get("unit_id"),
            "cmd_id": task.get("cmd_id"),
            **{k: v for k, v in info.items() if v is not None},
        }
        task["history"] = [*(task.get("history") or []), entry]
        task["updated_utc"] = now
        self.store.save_task(task)

    def _time_out(self, task: dict[str, Any]) -> None:
        state, unit = task["state"], task["unit_id"]
        self.stats["timeouts"] += 1
        log.warning("task %s: %s timed out in state %s", task["task_id"], unit, state)
        self._send_cancel(task, f"timed out in state {state}")
        self._transition(task, "timed_out", reason=f"no progress from {unit} in state {state}")
        self._fail_over(task, "timed_out")

    def _fail_over(self, task: dict[str, Any], why: str) -> None:
        """After a time-out or rejection: next nearest handheld, or give up after max_redispatch."""
        task["excluded_units"] = sorted({*(task.get("excluded_units") or ()), task["unit_id"]})
        if int(task.get("attempts") or 0) > self.config.max_redispatch:
            log.warning(
                "task %s: %s and %d re-dispatches used up; giving up",
                task["task_id"],
                why,
                self.config.max_redispatch,
            )
            self._record(task, "gave_up", reason=f"{why} after {task['attempts']} dispatch(es)")
            self._close_incident(task["incident_id"], "unresolved")
            return
        task["unit_id"] = None
        task["cmd_id"] = None
        self._transition(task, "open", reason=f"re-dispatch after {why}")
        self._assign(task)

    def _close_incident(self, incident_id: str, state: str) -> None:
        inc = self.store.get_incident(incident_id)
        if inc is not None:
            inc.update(state=state, updated_utc=utc_iso(self.clock.utc_now()))
            self.store.save_incident(inc)

    def _maybe_retarget(self, inc: dict[str, Any]) -> None:
        task = self.store.get_task(inc["task_id"])
        if task is None or task["state"] in _TERMINAL:
            return
        x, y, z, radius, note = self._target(inc)
        moved = math.hypot(x - task["target_x_m"], y - task["target_y_m"])
        if task["state"] == "open":
            self._set_target(task, x, y, z, radius, inc["sigma_xy_m"])
            task["note"] = note
            self._record(task, "target_updated", moved_m=round(moved, 2))
        elif moved > self.config.radius_m and task["state"] in _RETARGETABLE:
            self._set_target(task, x, y, z, radius, inc["sigma_xy_m"])
            task["note"] = note
            self.stats["retargets"] += 1
            self._send_dispatch(task, reason=f"estimate moved {moved:.1f} m", event="retargeted")
            # an updated dispatch restarts the acceptance clock for the new cmd_id
            self._transition(task, "dispatched", reason="updated dispatch")
        elif moved > self.config.radius_m:
            self._record(
                task,
                "estimate_moved",
                moved_m=round(moved, 2),
                reason=f"not retargeted in state {task['state']}",
            )

    # ================================================================== task events
    def handle_task_event(self, ev: dict[str, Any]) -> tuple[str, str]:
        """Apply one stored task event row; returns (disposition, reason)."""
        task = self.store.get_task(ev["task_id"])
        if task is None:
            return self._ignore(ev, f"unknown task {ev['task_id']}")
        if ev["unit_id"] != task["unit_id"]:
            return self._ignore(ev, f"from {ev['unit_id']}, task is assigned to {task['unit_id']}")
        if ev["cmd_id"] != task["cmd_id"]:
            stale = ev["cmd_id"] in (task.get("cmd_ids") or ())
            return self._ignore(ev, "stale cmd_id (superseded dispatch)" if stale else "unknown cmd_id")
        if task["state"] in _TERMINAL:
            return self._ignore(ev, f"task already {task['state']}")
        state = ev["state"]
        if state == "rejected":
            if _RANK[task["state"]] >= _RANK["on_site"]:
                return self._ignore(ev, f"rejection after {task['state']}")
            self.stats["rejections"] += 1
            self._transition(task, "rejected", reason=ev.get("reason") or "rejected by handheld")
            self._fail_over(task, "rejected")
            return "applied", "rejected; re-dispatching"
        if _RANK[state] <= _RANK[task["state"]]:
            return self._ignore(ev, f"duplicate or out of order: {state} while {task['state']}")
        info: dict[str, Any] = {"event_id": ev["id"], "reason": ev.get("reason")}
        if ev.get("x_m") is not None:
            info["position"] = [round(ev["x_m"], 2), round(ev["y_m"], 2)]
        if state in ("confirmed", "cleared"):
            task["result"] = ev.get("result")
        self._transition(task, state, **info)
        self.stats[f"events_{state}"] += 1
        log.info("task %s: %s by %s", task["task_id"], state, ev["unit_id"])
        if state in ("confirmed", "cleared"):
            self._close_incident(task["incident_id"], state)
        return "applied", state

    def _ignore(self, ev: dict[str, Any], reason: str) -> tuple[str, str]:
        self.stats["events_ignored"] += 1
        log.info(
            "task event %s (%s %s %s) ignored: %s",
            ev["id"],
            ev["unit_id"],
            ev["task_id"],
            ev["state"],
            reason,
        )
        return "ignored", reason

    # ================================================================== helpers
    def _now_s(self) -> float:
        return self.clock.utc_now().timestamp()
