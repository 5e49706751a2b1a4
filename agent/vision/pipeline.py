"""Camera pipeline: frames in, per-track vital signs and an abnormal-state score out.

Per frame (cheap, ~3-4 ms for one face at 640x480 on one core): grayscale, face tracking,
skin colour sample, chest and head motion, eye-region closure signal, expression cues.  Once per
``update_every_s`` of stream time per track (cheap too, < 2 ms): heart rate and quality from the
last ``hr_window_s`` of skin colour (POS by default), beats and IBIs, respiration rate (motion,
cross-checked with the pulse), blink rate, abnormal-state score with evidence.

Samples are stored with their timestamps and resampled onto a uniform grid before any spectral
step, so camera jitter and dropped frames do not bend the rates.

Privacy by design: nothing in this module keeps an image beyond the previous grayscale frame
needed for optical flow.  Published results are derived numbers keyed by anonymous, random
track ids (:mod:`agent.vision.face_tracker`).  Only when ``evidence_clips`` is switched on does
the pipeline keep a short, downscaled ring buffer of frames and write it to ``evidence_dir`` when
an alert starts.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.hal.interfaces import Frame
from agent.vision.abnormal import AbnormalScorer
from agent.vision.beats import BeatTrain
from agent.vision.blink import BlinkDetector, BlinkEvent, EarSignal, EyeRegionSignal
from agent.vision.errors import VisionInputError
from agent.vision.expression import ExpressionTracker
from agent.vision.face_mesh import FaceMesh
from agent.vision.face_tracker import Box, FaceTracker, Track
from agent.vision.pulse import (
    AGREE_BPM,
    AGREE_WIDTH_FACTOR,
    HOLD_AFTER_VALID,
    SNR_HOLD_MARGIN_DB,
    PulseEstimate,
    PulseGate,
    estimate_pulse,
    projections_agree,
    snr_threshold_db,
)
from agent.vision.respiration import (
    ChestMotion,
    HeadMotion,
    RespirationEstimate,
    fuse,
    rate_from_motion,
    rate_from_pulse,
    recent_rate_from_motion,
)
from agent.vision.rppg import distance_ppg, pulse_signal
from agent.vision.skin_roi import SkinRoi

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """Settings of :class:`CameraPipeline` (all have working defaults)."""

    method: str = "pos"  # rPPG method: pos | chrom | green
    compare_methods: tuple[str, ...] = ()  # extra rPPG methods run on the same traces (benchmarks)
    hr_window_s: float = 20.0
    hr_min_window_s: float = 6.0
    rr_window_s: float = 20.0
    rr_min_window_s: float = 12.0
    update_every_s: float = 1.0
    blink_window_s: float = 60.0
    baseline_s: float = 10.0
    fast_hr_s: float = 4.0  # heart-rate cue of the abnormal score: beats of the last few seconds
    snr_threshold_db: float | None = None  # None: by window length (agent.vision.pulse.snr_threshold_db)
    # Added to every pulse-validity threshold: > 0 trades coverage for fewer false pulses (the
    # gate-threshold curve of docs/camera_benchmark.md).
    snr_threshold_offset_db: float = 0.0
    snr_hold_margin_db: float = SNR_HOLD_MARGIN_DB  # hysteresis, see agent.vision.pulse.PulseGate
    hold_after_valid: int = HOLD_AFTER_VALID
    # Second projection that must find the pulse within agree_bpm of the first (None: off); see
    # agent.vision.pulse.AGREE_BPM.
    agree_method: str | None = "chrom"
    agree_bpm: float = AGREE_BPM
    agree_width_factor: float = AGREE_WIDTH_FACTOR
    # DistancePPG patch weighting of the POS signal (agent.vision.rppg.distance_ppg).  Off: on the
    # tuning seeds (types I, IV-VI still + hard, 4 controls) it raised the controls' SNR as much as
    # the live faces' (selection bias; controls no-pulse 1.00 -> 0.98 at unchanged thresholds) and
    # worsened HR MAE (hard 0.94 -> 1.47 bpm, type VI 0.65 -> 1.18), because the dark-skin losses
    # there come from JPEG chroma quantisation spread evenly over the face, not from a few bad
    # patches.  The SNR thresholds (agent.vision.pulse) hold for off only; ~40 ms per update on.
    patch_weighting: bool = False
    hold_tolerance_bpm: float = 5.0
    hold_s: float = 5.0
    detect_every: int = 10
    full_scan_every: int = 60
    max_tracks: int = 4
    track_seed: int | None = None  # fixed seed -> reproducible anonymous ids (tests only)
    face_mesh_model: str | None = None  # user-provided .tflite; None = eye-region method
    evidence_clips: bool = False  # privacy: off by default, no image is ever kept
    evidence_dir: str | None = None
    evidence_seconds: float = 5.0
    history_max: int = 600  # update records kept per track (10 min at 1 Hz); the box runs for days
    finished_max: int = 32  # ended tracks kept (for re-identification and reports)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What one frame did for one track (returned by :meth:`CameraPipeline.process`)."""

    track_id: str
    box: Box
    skin_ok: bool
    blink: BlinkEvent | None
    updated: bool  # a new vitals estimate was made on this frame


@dataclass
class _TrackState:
    track_id: str
    t_first_s: float
    skin: SkinRoi
    chest: ChestMotion
    head: HeadMotion  # motion reference: whole-body sway is removed from the chest signal
    eyes: EyeRegionSignal
    ear: EarSignal
    blinks: BlinkDetector
    expression: ExpressionTracker
    scorer: AbnormalScorer
    t_s: list[float] = field(default_factory=list)
    rgb: list[np.ndarray] = field(default_factory=list)
    patch_rgb: list[np.ndarray] = field(default_factory=list)  # (n_patches, 3) per frame, for DistancePPG
    chest_v: list[float] = field(default_factory=list)
    head_v: list[float] = field(default_factory=list)
    expr: list[tuple[float, float]] = field(default_factory=list)
    gate: PulseGate = field(default_factory=PulseGate)
    beats: BeatTrain = field(default_factory=BeatTrain)
    next_update_s: float = 0.0
    latest: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    alert_active: bool = False


def _uniform(t: np.ndarray, x: np.ndarray, fps: float, t_end: float, span_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample (t, x) onto a uniform grid covering the last ``span_s`` up to ``t_end``."""
    n = int(round(span_s * fps))
    grid = t_end - (np.arange(n)[::-1]) / fps
    if x.ndim == 1:
        return grid, np.interp(grid, t, x)
    return grid, np.stack([np.interp(grid, t, x[:, i]) for i in range(x.shape[1])], axis=1)


def window_pulse(t: np.ndarray, rgb: np.ndarray, t_end: float, span_s: float, fps: float, method: str,
                 threshold_db: float) -> PulseEstimate | None:
    """Pulse estimate of the last ``span_s`` up to ``t_end`` of a track's skin colour (R, G, B per
    sample at times ``t``), or None when fewer than 80 % of the window's frames hold skin."""
    sel = t >= t_end - span_s
    ok = sel & np.isfinite(rgb[:, 0])
    if ok.sum() < 0.8 * span_s * fps:
        return None
    grid, u = _uniform(t[ok], rgb[ok], fps, t_end, span_s)
    try:
        return estimate_pulse(pulse_signal(u, fps, method), fps, threshold_db, t0_s=float(grid[0]))
    except VisionInputError as err:
        log.debug("pulse estimate skipped: %s", err)
        return None


def validated_pulse(pulse_at: Callable[[str, float], PulseEstimate | None], gate: PulseGate, t_now: float,
                    full_threshold_db: float, config: PipelineConfig) -> PulseEstimate | None:
    """One update of a track's heart-rate validity path: the estimate at the gate's threshold, the
    second projection's agreement (:func:`agent.vision.pulse.projections_agree`), then the gate.

    ``pulse_at(method, threshold_db)`` estimates the current window with one rPPG method.  Shared
    by the pipeline and the benchmark's offline replays, so that both take the same decisions.
    """
    pe = pulse_at(config.method, gate.threshold_db(t_now, full_threshold_db))
    if pe is None:
        return None
    agrees = True
    if pe.valid and config.agree_method is not None and config.agree_method != config.method:
        agrees = projections_agree(pe, pulse_at(config.agree_method, -np.inf), config.agree_bpm,
                                   config.agree_width_factor)
    return gate.accept(t_now, pe, full_threshold_db, agrees)


def full_threshold_db(config: PipelineConfig, window_s: float) -> float:
    """The pulse-validity threshold for a window of ``window_s`` under ``config``."""
    c = config.snr_threshold_db
    return (snr_threshold_db(window_s) if c is None else c) + config.snr_threshold_offset_db


class CameraPipeline:
    """Process frames of one camera; keep per-track state; publish Vitals-like dicts."""

    def __init__(self, fps: float, config: PipelineConfig | None = None) -> None:
        if not fps > 0:
            raise VisionInputError(f"CameraPipeline: fps must be > 0, got {fps}")
        self.fps = float(fps)
        self.config = config or PipelineConfig()
        c = self.config
        if c.evidence_clips and not c.evidence_dir:
            raise VisionInputError("CameraPipeline: evidence_clips needs evidence_dir")
        self.tracker = FaceTracker(detect_every=c.detect_every, full_scan_every=c.full_scan_every,
                                   max_tracks=c.max_tracks, fps=self.fps, seed=c.track_seed)
        self.mesh: FaceMesh | None = FaceMesh(c.face_mesh_model) if c.face_mesh_model else None
        self._states: dict[str, _TrackState] = {}
        self.finished: dict[str, _TrackState] = {}
        self._n = 0
        self._ring: deque[tuple[float, bytes]] | None = (
            deque(maxlen=int(c.evidence_seconds * fps)) if c.evidence_clips else None)
        self.evidence_files: list[str] = []

    # ------------------------------------------------------------------ per frame
    def process(self, frame: Frame | np.ndarray, t_s: float | None = None) -> list[FrameResult]:
        if isinstance(frame, Frame):
            image = frame.image
            t = frame.t_mono_s if t_s is None else t_s
        else:
            image = frame
            t = self._n / self.fps if t_s is None else t_s
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise VisionInputError(f"CameraPipeline.process: need an (H, W, 3) uint8 BGR image, got "
                                   f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
        self._n += 1
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        tracks = self.tracker.update(gray)
        live = {tr.track_id for tr in tracks}
        for tid in [k for k in self._states if k not in live]:
            self.finished[tid] = self._states.pop(tid)
        while len(self.finished) > self.config.finished_max:
            self.finished.pop(next(iter(self.finished)))  # oldest first (dicts keep insertion order)
        if self._ring is not None:
            small = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
            ok, jpg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
            if ok:
                self._ring.append((t, jpg.tobytes()))
        return [self._process_track(tr, image, gray, float(t)) for tr in tracks]

    def _state_for(self, tr: Track, t: float) -> _TrackState:
        st = self._states.get(tr.track_id)
        if st is None and tr.track_id in self.finished:  # re-identified after a short loss
            st = self._states[tr.track_id] = self.finished.pop(tr.track_id)
        if st is None:
            c = self.config
            st = _TrackState(
                track_id=tr.track_id, t_first_s=t, skin=SkinRoi(patch_grid=None if c.patch_weighting else {}),
                chest=ChestMotion(self.fps),
                head=HeadMotion(self.fps),
                eyes=EyeRegionSignal(self.fps), ear=EarSignal(self.fps), blinks=BlinkDetector(self.fps),
                expression=ExpressionTracker(self.fps, neutral_s=min(8.0, c.baseline_s)),
                scorer=AbnormalScorer(baseline_s=c.baseline_s), next_update_s=t + c.update_every_s,
                gate=PulseGate(hold_margin_db=c.snr_hold_margin_db, hold_tolerance_bpm=c.hold_tolerance_bpm,
                               hold_s=c.hold_s, confirm_updates=c.hold_after_valid,
                               consecutive_s=1.5 * c.update_every_s))
            self._states[tr.track_id] = st
        return st

    def _process_track(self, tr: Track, image: np.ndarray, gray: np.ndarray, t: float) -> FrameResult:
        st = self._state_for(tr, t)
        sample = st.skin.sample(image, tr.box)
        st.t_s.append(t)
        st.rgb.append(sample.rgb)
        st.patch_rgb.append(sample.patch_rgb)
        st.chest_v.append(st.chest.update(gray, tr.box))
        st.head_v.append(st.head.update(gray, tr.box))
        if self.mesh is not None:
            tr.landmarks = self.mesh.landmarks(image, tr.box)
            closure = st.ear.update(tr.landmarks)
        else:
            closure = st.eyes.update(gray, tr.box)
        blink = st.blinks.update(t, closure)
        st.eyes.freeze = st.ear.freeze = st.blinks.in_blink
        cues = st.expression.update(gray, tr.box)
        st.expr.append((cues.brow_lowering, cues.lip_press))
        self._trim(st)
        updated = False
        if t >= st.next_update_s:
            st.next_update_s += self.config.update_every_s * max(1, int((t - st.next_update_s) //
                                                                        self.config.update_every_s) + 1)
            self._update(st, t, tr.box)
            updated = True
        return FrameResult(tr.track_id, tr.box, bool(np.isfinite(sample.rgb[0])), blink, updated)

    def _trim(self, st: _TrackState) -> None:
        keep_s = max(self.config.rr_window_s, self.config.hr_window_s) + 2.0
        if len(st.t_s) > 2 * keep_s * self.fps:
            cut = next(i for i, v in enumerate(st.t_s) if v >= st.t_s[-1] - keep_s)
            del st.t_s[:cut], st.rgb[:cut], st.patch_rgb[:cut], st.chest_v[:cut], st.head_v[:cut], st.expr[:cut]

    # ------------------------------------------------------------------ per update
    def _pulse(self, t: np.ndarray, rgb: np.ndarray, t_end: float, span_s: float,
               method: str, threshold_db: float | None = None,
               patches: np.ndarray | None = None) -> PulseEstimate | None:
        thr = self._threshold(span_s) if threshold_db is None else threshold_db
        if patches is None or method != "pos":
            return window_pulse(t, rgb, t_end, span_s, self.fps, method, thr)
        sel = t >= t_end - span_s
        ok = sel & np.isfinite(rgb[:, 0])
        if ok.sum() < 0.8 * span_s * self.fps:
            return None
        grid, u = _uniform(t[ok], rgb[ok], self.fps, t_end, span_s)
        try:
            sig = self._patch_weighted(t, patches, sel, t_end, span_s, pulse_signal(u, self.fps, method))
            return estimate_pulse(sig, self.fps, thr, t0_s=float(grid[0]))
        except VisionInputError as err:
            log.debug("pulse estimate skipped: %s", err)
            return None

    def _patch_weighted(self, t: np.ndarray, patches: np.ndarray, sel: np.ndarray, t_end: float,
                        span_s: float, reference: np.ndarray) -> np.ndarray:
        """DistancePPG combination of the patches that hold skin in >= 80 % of the window."""
        cols = []
        for i in range(patches.shape[1]):
            ok = sel & np.isfinite(patches[:, i, 0])
            if ok.sum() >= 0.8 * span_s * self.fps:
                cols.append(_uniform(t[ok], patches[ok, i], self.fps, t_end, span_s)[1])
        if len(cols) < 2:
            return reference
        return distance_ppg(np.stack(cols, axis=1), self.fps, reference)[0]

    def _threshold(self, window_s: float) -> float:
        return full_threshold_db(self.config, window_s)

    def _update(self, st: _TrackState, t_now: float, box: Box) -> None:
        c = self.config
        t = np.asarray(st.t_s)
        rgb = np.asarray(st.rgb)
        patches = np.asarray(st.patch_rgb) if c.patch_weighting else None
        age = t_now - st.t_first_s
        span = min(c.hr_window_s, age)
        # Hysteresis with confirmation (agent.vision.pulse.PulseGate): an established pulse is kept
        # at a lower threshold while its rate does not jump.
        def pulse_at(m: str, thr: float) -> PulseEstimate | None:
            return self._pulse(t, rgb, t_now, span, m, thr, patches if m == c.method else None)

        pe = validated_pulse(pulse_at, st.gate, t_now, self._threshold(span), c) \
            if span >= c.hr_min_window_s else None
        others = {m: self._pulse(t, rgb, t_now, span, m) for m in c.compare_methods} \
            if span >= c.hr_min_window_s else {}
        beats = pe.beat_times_s if pe is not None and pe.valid else np.zeros(0)
        if pe is not None and pe.hr_bpm:
            st.beats.add(t_now - span, t_now, beats, pe.hr_bpm)
        # Respiration: chest motion, cross-checked with the respiratory modulation of the beats.
        rr_span = min(c.rr_window_s, age)
        resp = RespirationEstimate(None, 0.0, None, None, None)
        rr_fast: float | None = None
        if rr_span >= c.rr_min_window_s:
            sel = t >= t_now - rr_span
            cv = np.asarray(st.chest_v)[sel]
            ok = np.isfinite(cv)
            motion = rate_from_motion(np.zeros(0), self.fps)
            if ok.sum() > 0.7 * rr_span * self.fps:
                _, v = _uniform(t[sel][ok], cv[ok], self.fps, t_now, rr_span)
                # Whole-body sway and head motion are removed with the head's outline as the
                # motion reference (tuning clips with motion: rr MAE 2.46 -> 0.48 /min).
                hv = np.asarray(st.head_v)[sel]
                hok = np.isfinite(hv)
                head = _uniform(t[sel][hok], hv[hok], self.fps, t_now, rr_span)[1] \
                    if hok.sum() > 0.7 * rr_span * self.fps else None
                motion = rate_from_motion(v, self.fps, head_velocity=head)
                rr_fast = recent_rate_from_motion(v, self.fps, expected_bpm=motion.rate_bpm, head_velocity=head)
            resp = fuse(motion, rate_from_pulse(beats[beats >= t_now - rr_span]))
        blink_rate = st.blinks.rate_per_min(t_now, c.blink_window_s, st.t_first_s)
        ex = np.asarray(st.expr[-int(self.fps):], dtype=float).reshape(-1, 2)
        ex_mean = np.nanmean(ex, axis=0) if ex.size and np.isfinite(ex).any() else np.full(2, np.nan)
        hr = pe.hr_bpm if pe is not None else None
        # Cues of the abnormal-state score respond faster than the published values: heart rate
        # from the beats of the last few seconds, breathing from the newest breath cycle, blink
        # rate over the last 20 s.
        # A separate short window (8 s) for it: while the rate climbs, a 20 s spectrum smears and
        # may drop below the quality threshold exactly when the person is getting tense.
        hr_fast = hr
        short = self._pulse(t, rgb, t_now, 8.0, c.method, self._threshold(8.0) - c.snr_hold_margin_db,
                            patches) \
            if age >= 8.0 else None
        fast_beats = short.beat_times_s if short is not None and short.valid else beats
        recent = fast_beats[fast_beats >= t_now - c.fast_hr_s]
        if recent.size >= 3:
            hr_fast = 60.0 * (recent.size - 1) / float(recent[-1] - recent[0])
        if rr_fast is None or resp.rr_bpm is None or not 0.5 < rr_fast / resp.rr_bpm < 2.0:
            rr_fast = resp.rr_bpm
        feats = {"hr_bpm": hr_fast, "rr_bpm": rr_fast,
                 "blink_per_min": st.blinks.rate_per_min(t_now, 20.0, st.t_first_s, min_span_s=8.0),
                 "brow_lowering": float(ex_mean[0]), "lip_press": float(ex_mean[1])}
        ab = st.scorer.update(t_now, feats)
        vit = {
            "track_id": st.track_id,
            "heart_rate_bpm": _r(hr, 1),
            "hr_quality": _r(pe.quality, 3) if pe is not None else None,
            "respiration_rate_bpm": _r(resp.rr_bpm, 1),
            "blink_rate_per_min": _r(blink_rate, 1),
            "abnormal_score": _r(ab.score, 3),
            "alert": bool(ab.alert),
            "evidence": {k: float(v) for k, v in ab.evidence.items()} if ab.alert else {},
        }
        st.latest = vit
        rec = {
            "t_s": t_now, "box": [round(float(v), 1) for v in box], "heart_rate_bpm": hr,
            "hr_raw_bpm": pe.raw_hr_bpm if pe else None,
            "hr_snr_db": pe.snr_db if pe else None, "hr_valid": bool(pe.valid) if pe else False,
            "hr_window_s": span if pe else None, "hr_fast_bpm": hr_fast,
            "rr_bpm": resp.rr_bpm, "rr_motion_bpm": resp.rr_motion_bpm, "rr_pulse_bpm": resp.rr_pulse_bpm,
            "rr_quality": resp.quality, "rr_agree": resp.agree, "rr_window_s": rr_span,
            "blink_rate_per_min": blink_rate, "abnormal_score": ab.score, "alert": ab.alert,
            "features": feats, "evidence": dict(ab.evidence),
        }
        for m, e in others.items():
            rec[f"hr_{m}_bpm"] = e.hr_bpm if e is not None else None
            rec[f"hr_{m}_raw_bpm"] = e.raw_hr_bpm if e is not None else None
        st.history.append(rec)
        if len(st.history) > self.config.history_max:
            del st.history[: len(st.history) - self.config.history_max]
        if ab.alert and not st.alert_active:
            self._write_evidence(st, t_now)
        st.alert_active = ab.alert

    def _write_evidence(self, st: _TrackState, t_now: float) -> None:
        if self._ring is None or not self._ring or not self.config.evidence_dir:
            return
        out = Path(self.config.evidence_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{st.track_id}_{t_now:.1f}s.avi"
        first = cv2.imdecode(np.frombuffer(self._ring[0][1], np.uint8), cv2.IMREAD_COLOR)
        h, w = first.shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (w, h))
        try:
            for _, jpg in self._ring:
                writer.write(cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR))
        finally:
            writer.release()
        self.evidence_files.append(str(path))
        log.info("evidence clip for track %s written to %s", st.track_id, path)

    # ------------------------------------------------------------------ outputs
    def results(self) -> list[dict[str, Any]]:
        """Latest Vitals-like dict per live track (the body of a ``vitals`` wire message)."""
        return [dict(st.latest) for st in self._states.values() if st.latest is not None]

    def history(self) -> dict[str, list[dict[str, Any]]]:
        """Per-track list of update records (derived numbers only), live and finished tracks."""
        out = {k: list(v.history) for k, v in self.finished.items()}
        out.update({k: list(v.history) for k, v in self._states.items()})
        return out

    def ibis(self, track_id: str, since_s: float = -np.inf) -> list[tuple[float, float]]:
        """(time of the ending beat s, IBI ms) of a live or finished track, newer than ``since_s``."""
        st = self._states.get(track_id) or self.finished.get(track_id)
        return st.beats.since(since_s) if st is not None else []

    def blink_events(self) -> dict[str, list[BlinkEvent]]:
        out = {k: list(v.blinks.events) for k, v in self.finished.items()}
        out.update({k: list(v.blinks.events) for k, v in self._states.items()})
        return out


def _r(v: float | None, nd: int) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), nd)
