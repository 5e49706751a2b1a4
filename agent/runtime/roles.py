"""What each kind of unit does with its readings: mobile search, handheld follow-up, camera box.

One firmware, three roles chosen by the profile's ``unit_type``.  A role receives readings from
the runtime's queues and decides what to publish; it never talks to devices or the broker
directly (it gets a :class:`RoleContext`), which keeps the roles testable without hardware.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agent.analysis.episode import Interval
from agent.analysis.gross_count import GrossCountDetector, dwell_significance
from agent.analysis.handheld_verdict import judge_dwell
from agent.config import ConfigError, UnitProfile
from agent.hal.interfaces import (
    Clock,
    EnergyCalibration,
    Frame,
    OperatorDisplay,
    SpectrumReading,
    TaskGuide,
    utc_iso,
)
from agent.runtime.track import PositionTrack
from agent.wire_schema import (
    Alarm,
    Command,
    Measurement,
    Nuclide,
    Position,
    TaskEvent,
    TaskResult,
    Vitals,
)

log = logging.getLogger(__name__)


class Sender(Protocol):
    def send(self, kind: str, body: Any) -> int: ...


@dataclass
class RoleContext:
    profile: UnitProfile
    clock: Clock
    link: Sender
    track: PositionTrack
    display: OperatorDisplay | None = None


class Role:
    """Base: publishes one measurement per spectrum; subclasses add detection or tasks."""

    def __init__(self, ctx: RoleContext) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()

    # -- called by the runtime
    def warm_up(self) -> None:
        """Compile/prepare the analysis before acquisition and the watchdog start (see
        agent.spectral.warmup); the base role has nothing to prepare."""

    def on_spectrum(self, reading: SpectrumReading) -> None:
        pass

    def on_frame(self, frame: Frame) -> None:
        pass

    def on_command(self, cmd: Command) -> None:
        log.info("command %s ignored by %s", cmd.command, type(self).__name__)

    def tick(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {}

    @property
    def available(self) -> bool:
        return False

    @property
    def task_id(self) -> str | None:
        return None

    # -- helpers
    def _mid_position(self, reading: SpectrumReading) -> Position | None:
        return self.ctx.track.position_at(reading.t_mono_s - reading.real_time_s / 2.0)

    def _measurement(self, reading: SpectrumReading, pos: Position | None, background_cps: float | None,
                     with_spectrum: bool) -> Measurement:
        return Measurement(
            interval_s=reading.real_time_s,
            live_time_s=reading.live_time_s,
            gross_counts=reading.gross_counts,
            gross_cps=reading.gross_cps,
            background_cps=background_cps,
            dose_rate_usv_h=reading.dose_rate_usv_h,
            detector_model=reading.detector_model,
            position=pos,
            speed_m_s=self.ctx.track.speed_m_s(),
            spectrum=reading.counts.astype(int).tolist() if with_spectrum else None,
            energy_calibration_kev=list(reading.calibration.coefficients_kev) if with_spectrum else None,
        )


class MobileRole(Role):
    """Vehicle search: every 1 s spectrum -> measurement (spectral dose); alarms at the end of a pass.

    The spectral search (agent.analysis.spectral_search) alarms and identifies; the gross-count
    k-sigma detector covers the first minutes while the spectral one learns the unit's background,
    and is the only detector when the profile asks for ``gross_k_sigma``.
    """

    def __init__(self, ctx: RoleContext) -> None:
        super().__init__(ctx)
        d = ctx.profile.detector
        interval = ctx.profile.acquisition.interval_s
        self.detector = GrossCountDetector(
            threshold_sigma=d.threshold_sigma, window_s=d.window_s, background_tau_s=d.background_tau_s,
            warmup_s=d.warmup_s, holdoff_s=d.holdoff_s, interval_s=interval,
        )
        self.spectral = None
        if d.kind == "spectral":
            from agent.analysis.spectral_search import SpectralSearch

            self.spectral = SpectralSearch(far_per_hour=d.far_per_hour, training_s=d.training_s,
                                           holdoff_s=d.holdoff_s, interval_s=interval)
        self.alarms = 0

    def warm_up(self) -> None:
        if self.spectral is not None:
            from agent.spectral.warmup import warm_up_mobile

            log.info("spectral pipeline ready in %.1f s (numba compile or cache load)", warm_up_mobile())

    def on_spectrum(self, reading: SpectrumReading) -> None:
        pos = self._mid_position(reading)
        iv = Interval(
            t_mono_s=reading.t_mono_s, t_utc=utc_iso(reading.t_utc), live_time_s=reading.live_time_s,
            gross_counts=reading.gross_counts,
            x_m=pos.x_m if pos else None, y_m=pos.y_m if pos else None, z_m=pos.z_m if pos else None,
        )
        bg = self.detector.background_cps
        gross_alarm = self.detector.update(iv)
        dose = reading.dose_rate_usv_h
        spectral_alarm = None
        in_alarm = self.detector.in_alarm
        if self.spectral is not None:
            # while learning the background, keep out anything the gross counter finds elevated
            suspect = self.detector.in_alarm or self.detector.last_z > 2.5
            analysis, spectral_alarm = self.spectral.update(reading, iv, suspect=suspect)
            dose = analysis.dose_rate_usv_h if analysis.dose_rate_usv_h is not None else dose
            if self.spectral.trained:
                in_alarm = self.spectral.episodes.active
        mode = self.ctx.profile.acquisition.send_spectrum
        with_spectrum = mode == "always" or (mode == "alarm" and in_alarm)
        m = self._measurement(reading, pos, bg, with_spectrum)
        self.ctx.link.send("measurement", m.model_copy(update={"dose_rate_usv_h": dose}))
        if spectral_alarm is not None:
            self._publish_spectral(spectral_alarm)
        elif gross_alarm is not None and (self.spectral is None or not self.spectral.trained):
            self._publish_gross(gross_alarm)

    def _alarm_position(self, x: float | None, y: float | None, z: float | None) -> Position | None:
        if x is None or y is None or z is None:
            return None
        lat, lon, alt = self.ctx.track.frame.to_geodetic(x, y, z)
        last = self.ctx.track.last_fix
        return Position(lat_deg=lat, lon_deg=lon, alt_m=alt, x_m=x, y_m=y, z_m=z,
                        fix_quality=int(last.quality) if last else 0, hdop=last.hdop if last else None)

    def _publish_gross(self, a: Any) -> None:
        self.alarms += 1
        log.warning("ALARM %s (gross count): %.1f sigma, peak %.0f cps over %.0f cps at %s", a.alarm_id,
                    a.significance_sigma, a.peak_cps, a.background_cps,
                    f"x={a.x_m:.1f} y={a.y_m:.1f}" if a.x_m is not None else "unknown position")
        self.ctx.link.send("alarm", Alarm(
            alarm_id=a.alarm_id, detector="gross_k_sigma", significance_sigma=a.significance_sigma,
            peak_cps=a.peak_cps, background_cps=a.background_cps, t_peak_utc=a.t_peak_utc,
            position=self._alarm_position(a.x_m, a.y_m, a.z_m),
            threshold_sigma=a.threshold_sigma, false_alarm_rate_per_h=a.false_alarm_rate_per_h,
        ))

    def _publish_spectral(self, a: Any) -> None:
        self.alarms += 1
        nuclides = [Nuclide(name=n.name, confidence=round(float(n.confidence), 3)) for n in a.identification.nuclides]
        log.warning("ALARM %s (spectral): q=%.0f, %s, peak %.0f cps at %s", a.alarm_id, a.statistic,
                    ", ".join(f"{n.name} {n.confidence:.2f}" for n in nuclides) or "unidentified",
                    a.peak_cps, f"x={a.x_m:.1f} y={a.y_m:.1f}" if a.x_m is not None else "unknown position")
        self.ctx.link.send("alarm", Alarm(
            alarm_id=a.alarm_id, detector="spectral_nmf", significance_sigma=a.significance_sigma,
            peak_cps=a.peak_cps, background_cps=a.background_cps, t_peak_utc=a.t_peak_utc,
            position=self._alarm_position(a.x_m, a.y_m, a.z_m),
            threshold_sigma=round(float(a.threshold) ** 0.5, 2), false_alarm_rate_per_h=a.false_alarm_rate_per_h,
            nuclides=nuclides, dose_rate_usv_h=a.dose_rate_usv_h,
        ))

    def shutdown(self) -> None:
        if self.spectral is not None and self.spectral.trained:
            alarm = self.spectral.flush()
            if alarm is not None:
                self._publish_spectral(alarm)
            return
        gross = self.detector.flush()
        if gross is not None:
            self._publish_gross(gross)

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {"background_cps": self.detector.background_cps, "z": round(self.detector.last_z, 2),
                              "alarms": self.alarms}
        if self.spectral is not None:
            last = self.spectral.last
            st["spectral"] = {
                "trained": self.spectral.trained, "in_alarm": self.spectral.episodes.active,
                "statistic": round(last.anomaly.statistic, 2) if last and last.anomaly else None,
                "dose_rate_usv_h": last.dose_rate_usv_h if last else None,
                "nuclides": last.nuclides if last else [],
            }
        return st


@dataclass
class _Task:
    task_id: str
    cmd_id: str
    target: Position
    radius_m: float
    dwell_s: float
    state: str = "accepted"
    counts: int = 0
    live_s: float = 0.0
    spectrum: np.ndarray | None = None
    dose_sum: float = 0.0
    dose_n: int = 0
    distance_m: float | None = None


class HandheldRole(Role):
    """Follow-up: background while idle; on dispatch go to the target, dwell, confirm or clear."""

    def __init__(self, ctx: RoleContext) -> None:
        super().__init__(ctx)
        self.bg_counts = 0.0
        self.bg_live_s = 0.0
        self.bg_spectrum: np.ndarray | None = None  # idle background, same capped weighting
        self._calibration: EnergyCalibration | None = None
        self._detector_model = "unknown"
        self._bg_cap_s = ctx.profile.handheld.background_dwell_s * 4
        self.task: _Task | None = None
        self.completed: list[str] = []
        self._pending_cmds: list[Command] = []

    def warm_up(self) -> None:
        from agent.spectral.warmup import warm_up_dwell

        log.info("dwell analysis ready in %.1f s (numba compile or cache load)", warm_up_dwell())

    @property
    def available(self) -> bool:
        return self.task is None

    @property
    def task_id(self) -> str | None:
        return self.task.task_id if self.task else None

    @property
    def background_cps(self) -> float | None:
        return self.bg_counts / self.bg_live_s if self.bg_live_s > 0 else None

    def on_command(self, cmd: Command) -> None:
        # Runs on the MQTT thread: queue it for the main loop.
        with self.lock:
            self._pending_cmds.append(cmd)

    def tick(self) -> None:
        with self.lock:
            cmds, self._pending_cmds = self._pending_cmds, []
        for cmd in cmds:
            self._handle_command(cmd)

    def _event(self, state: str, reason: str = "", result: TaskResult | None = None,
               task: _Task | None = None, answers: Command | None = None) -> None:
        """Publish a task event that names exactly what it is about.

        A reply to a command (``answers``: accepted, rejected) carries *that* command's cmd_id and
        task_id; progress on a task (``task``: on_site, measuring, confirmed, cleared) carries the
        task's current dispatch.  Never the task the unit happens to be busy with: a "rejected"
        answer to a second dispatch that carried the running task's ids made the controller give
        the running task away while the operator kept working it (issue 14, row 5).
        """
        if answers is not None:
            task_id = answers.task.task_id if answers.task else (answers.task_id or "")
            cmd_id = answers.cmd_id
        elif task is not None:
            task_id, cmd_id = task.task_id, task.cmd_id
        else:
            raise ValueError(f"task event {state!r} names neither a command nor a task")
        self.ctx.link.send("task_event", TaskEvent(task_id=task_id, cmd_id=cmd_id, state=state,
                                                   position=self.ctx.track.current(), result=result,
                                                   reason=reason))

    def _handle_command(self, cmd: Command) -> None:
        if cmd.command == "dispatch" and cmd.task is not None:
            spec = cmd.task
            if self.task is not None and self.task.task_id != spec.task_id:
                self._event("rejected", reason=f"busy with task {self.task.task_id}", answers=cmd)
                return
            if spec.task_id in self.completed:
                self._event("rejected", reason="task already completed here", answers=cmd)
                return
            if self.task is not None:  # updated target for the task we are on
                self.task.cmd_id, self.task.target, self.task.radius_m = cmd.cmd_id, spec.target, spec.radius_m
                if self.task.state in ("accepted",):
                    self._show(self.task, spec.note)
                self._event("accepted", reason="target updated", answers=cmd)
                return
            self.task = _Task(task_id=spec.task_id, cmd_id=cmd.cmd_id, target=spec.target,
                              radius_m=spec.radius_m, dwell_s=spec.dwell_s)
            self._show(self.task, spec.note)
            self._event("accepted", answers=cmd)
        elif cmd.command == "cancel" and self.task is not None and cmd.task_id in (None, self.task.task_id):
            log.info("task %s cancelled by controller", self.task.task_id)
            self.task = None
            if self.ctx.display:
                self.ctx.display.clear()

    def _show(self, task: _Task, note: str) -> None:
        if self.ctx.display is None:
            return
        t = task.target
        self.ctx.display.show_task(TaskGuide(task_id=task.task_id, target_x_m=t.x_m, target_y_m=t.y_m,
                                             target_z_m=t.z_m, target_lat_deg=t.lat_deg,
                                             target_lon_deg=t.lon_deg, dwell_s=task.dwell_s, note=note))

    def on_spectrum(self, reading: SpectrumReading) -> None:
        pos = self._mid_position(reading)
        task = self.task
        if task is None:
            # Idle: the reading is background at the operator's post. Keep a capped running sum.
            self.bg_counts += reading.gross_counts
            self.bg_live_s += reading.live_time_s
            spec = reading.counts.astype(float)
            if self.bg_spectrum is None or self.bg_spectrum.shape != spec.shape:
                self.bg_spectrum = spec
                self._calibration = reading.calibration
                self._detector_model = reading.detector_model
            else:
                self.bg_spectrum += spec
            if self.bg_live_s > self._bg_cap_s:
                scale = self._bg_cap_s / self.bg_live_s
                self.bg_counts *= scale
                self.bg_live_s *= scale
                self.bg_spectrum *= scale
            self.ctx.link.send("measurement", self._measurement(reading, pos, self.background_cps, False))
            return
        self.ctx.link.send("measurement", self._measurement(reading, pos, self.background_cps,
                                                            task.state == "measuring"))
        if task.state == "accepted":
            if pos is not None:
                d = ((pos.x_m - task.target.x_m) ** 2 + (pos.y_m - task.target.y_m) ** 2) ** 0.5
                if d <= task.radius_m:
                    task.state = "on_site"
                    task.distance_m = d
                    self._event("on_site", task=task)
                    task.state = "measuring"
                    self._event("measuring", task=task)
            return
        if task.state == "measuring":
            task.counts += reading.gross_counts
            task.live_s += reading.live_time_s
            task.spectrum = reading.counts.copy() if task.spectrum is None else task.spectrum + reading.counts
            if reading.dose_rate_usv_h is not None:
                task.dose_sum += reading.dose_rate_usv_h
                task.dose_n += 1
            if task.live_s >= task.dwell_s:
                self._finish(task)

    def _finish(self, task: _Task) -> None:
        bg = self.background_cps or 0.0
        gross = task.counts / task.live_s
        sig = dwell_significance(task.counts, bg, task.live_s, self.bg_live_s)
        confirm_sigma = self.ctx.profile.handheld.confirm_sigma
        t = task.target
        pos = self.ctx.track.current()
        distance = None if pos is None else math.dist((pos.x_m, pos.y_m, pos.z_m), (t.x_m, t.y_m, t.z_m))
        nuclides: list[Nuclide] = []
        dose = task.dose_sum / task.dose_n if task.dose_n else None
        activity = None
        if task.spectrum is not None and self.bg_spectrum is not None and self._calibration is not None \
                and task.spectrum.shape == self.bg_spectrum.shape:
            v = judge_dwell(task.spectrum, task.live_s, self.bg_spectrum, self.bg_live_s, self._calibration,
                            self._detector_model, distance, confirm_sigma)
            confirmed, reason, score = v.confirmed, v.reason, v.shape_sigma
            nuclides = [Nuclide(name=n, confidence=round(c, 3)) for n, c in v.nuclides]
            dose = v.dose_rate_usv_h if v.dose_rate_usv_h is not None else dose
            activity = v.activity_mbq
            if activity is not None:
                reason += (f"; ~{activity:.0f} MBq {v.activity_nuclide} (unshielded equivalent at {distance:.1f} m "
                           "from the estimated source position)")
        else:
            confirmed, reason, score = sig >= confirm_sigma, "gross count only (no spectrum)", sig
        result = TaskResult(
            dwell_s=task.live_s, gross_cps=gross, background_cps=bg, net_cps=gross - bg,
            significance_sigma=round(float(score), 2), dose_rate_usv_h=dose, nuclides=nuclides,
            activity_mbq=round(activity, 2) if activity is not None else None, distance_m=distance,
        )
        state = "confirmed" if confirmed else "cleared"
        log.warning("task %s %s: %.0f cps vs background %.0f cps (gross %.1f sigma); %s", task.task_id,
                    state.upper(), gross, bg, sig, reason)
        self._event(state, result=result, task=task, reason=reason)
        self.completed.append(task.task_id)
        self.task = None
        if self.ctx.display:
            self.ctx.display.clear()

    def status(self) -> dict[str, Any]:
        return {"background_cps": self.background_cps, "task": self.task.task_id if self.task else None,
                "task_state": self.task.state if self.task else None, "completed": len(self.completed)}


class CameraboxRole(Role):
    """Camera box: every frame through the vision pipeline; vitals per anonymous track, periodically.

    No image leaves this role: the pipeline keeps colour means and motion signals, and the
    published body (wire_schema.Vitals) holds numbers and a random track id only.
    """

    def __init__(self, ctx: RoleContext) -> None:
        super().__init__(ctx)
        from agent.vision.pipeline import CameraPipeline, PipelineConfig

        c = ctx.profile.camera
        self.pipeline = CameraPipeline(fps=c.fps, config=PipelineConfig(
            evidence_clips=c.evidence_clips, evidence_dir=c.evidence_dir, face_mesh_model=c.face_mesh_model))
        self.frames = 0
        self.published = 0
        self._first_t: float | None = None
        self._last_t: float | None = None
        self._next_publish: float | None = None
        self._ibi_sent_s: dict[str, float] = {}  # per track: ending time of the last IBI published

    def on_frame(self, frame: Frame) -> None:
        self.frames += 1
        if self._first_t is None:
            self._first_t = frame.t_mono_s
            self._next_publish = frame.t_mono_s + self.ctx.profile.camera.vitals_interval_s
        self._last_t = frame.t_mono_s
        self.pipeline.process(frame)
        if self._next_publish is not None and frame.t_mono_s >= self._next_publish:
            self._next_publish = frame.t_mono_s + self.ctx.profile.camera.vitals_interval_s
            for vit in self.pipeline.results():
                tid = vit["track_id"]
                ibis = self.pipeline.ibis(tid, self._ibi_sent_s.get(tid, -float("inf")))[-256:]
                if ibis:
                    self._ibi_sent_s.pop(tid, None)  # re-inserted last: the dict stays ordered by use
                    self._ibi_sent_s[tid] = ibis[-1][0]
                self.ctx.link.send("vitals", Vitals(**vit, ibi_ms=[ms for _, ms in ibis]))
                self.published += 1
                if vit.get("alert"):
                    log.warning("track %s abnormal-state alert (score %.2f): %s", vit["track_id"],
                                vit.get("abnormal_score") or 0.0, vit.get("evidence"))
            while len(self._ibi_sent_s) > 64:  # a track re-identified after a short loss keeps its cursor
                self._ibi_sent_s.pop(next(iter(self._ibi_sent_s)))

    def status(self) -> dict[str, Any]:
        fps = None
        if self._first_t is not None and self._last_t is not None and self._last_t > self._first_t:
            fps = round((self.frames - 1) / (self._last_t - self._first_t), 2)
        return {"frames": self.frames, "fps": fps, "tracks": len(self.pipeline.results()),
                "vitals_published": self.published}


class CctvRole(Role):
    """A CCTV camera of the arrival hall (issue 19): every frame through the people-tracking chain
    (agent.cctv.camera_pipeline: MOG2 + HOG, ByteTrack, ground plane through the camera's
    calibration); the tracklet updates it yields go out as ``tracklet`` messages.

    Why the role and not the controller runs the chain: video stays on the unit.  A tracklet holds an
    anonymous id, ground positions and an appearance summary, nothing that can be turned back into a
    picture (agent.cctv.tracklet_message); the controller associates them across cameras.
    """

    def __init__(self, ctx: RoleContext) -> None:
        super().__init__(ctx)
        from agent.cctv.camera_calibration import load_calibrations
        from agent.cctv.camera_pipeline import CameraPipeline

        c = ctx.profile.cctv
        assert c is not None  # profile_from_dict refuses a cctv unit without its section
        try:
            calibs = load_calibrations(c.calibration_file)
        except ValueError as err:  # names the file and the problem: the unit does not start
            raise ConfigError(f"cctv.calibration_file: {err}") from None
        if c.camera_id not in calibs:
            raise ConfigError(f"cctv.camera_id: {c.calibration_file} has no camera {c.camera_id!r} "
                              f"(it has {', '.join(sorted(calibs))})")
        self.pipeline = CameraPipeline(c.camera_id, calibs[c.camera_id], c.pipeline)
        self.frames = 0
        self.tracklets_sent = 0
        self._t0: tuple[float, Any] | None = None  # (t_mono_s, t_utc) of the first frame: pipeline time 0

    def on_frame(self, frame: Frame) -> None:
        if self._t0 is None:
            self._t0 = (frame.t_mono_s, frame.t_utc)
        self.frames += 1
        self._send(self.pipeline.process(frame.image, frame.t_mono_s - self._t0[0]))

    def _send(self, updates: list[Any]) -> None:
        from agent.cctv.tracklet_message import to_wire

        if self._t0 is None:
            return
        for u in updates:
            for body in to_wire(u, self._t0[1]):
                self.ctx.link.send("tracklet", body)
                self.tracklets_sent += 1

    def shutdown(self) -> None:
        self._send(self.pipeline.finish())  # every open track ends with an "ended" tracklet

    def status(self) -> dict[str, Any]:
        return {"frames": self.frames, "tracklets_sent": self.tracklets_sent}


ROLES: dict[str, type[Role]] = {"mobile": MobileRole, "handheld": HandheldRole, "camerabox": CameraboxRole,
                                "cctv": CctvRole}
