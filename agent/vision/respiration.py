"""Respiration rate from chest/shoulder motion, cross-checked with the pulse.

**Motion.**  Breathing lifts the chest and shoulders (and, through them, the head) by a few
millimetres per breath.  Dense optical flow (G. Farneback, "Two-frame motion estimation based
on polynomial expansion", SCIA 2003) on a downscaled region below the face gives the mean
vertical velocity of that region; its running sum is a displacement trace whose dominant
frequency in 6-42 breaths/min is the respiration rate -- the approach of camera-based
respiration monitors such as Lukac et al. / Massaroni et al. ("Contactless methods for
measuring respiratory rate: a review", IEEE Sensors J. 21(11), 2021).

**Pulse.**  Breathing also modulates the pulse (Karlen, Raman, Ansermino & Dumont,
"Multiparameter respiratory rate estimation from the photoplethysmogram", IEEE TBME 60(7),
2013): beat-to-beat intervals shorten during inspiration (respiratory sinus arrhythmia, RSIV)
and the pulse amplitude varies (RIAV).  Each modulation series is resampled to 4 Hz and its
dominant respiratory frequency taken; Karlen's "smart fusion" averages the estimates that agree
within 4 breaths/min and rejects the window otherwise.

**Fusion.**  The motion estimate is the primary one (direct, and unaffected by the Mayer-wave
heart-rate variability near 6 /min).  The pulse estimate is a cross-check: when both exist and
agree within ``agree_bpm`` the rate is their quality-weighted mean; when they disagree the
motion estimate is kept with reduced quality; with no usable motion the pulse estimate is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.vision.errors import VisionInputError
from agent.vision.face_tracker import Box
from agent.vision.pulse import power_spectrum, spectral_peak_hz

#: Respiration band: 6-42 breaths/min.
RESP_BAND_HZ = (0.1, 0.7)


@dataclass(frozen=True, slots=True)
class RateEstimate:
    rate_bpm: float | None  # breaths per minute
    quality: float  # 0..1


@dataclass(frozen=True, slots=True)
class RespirationEstimate:
    rr_bpm: float | None
    quality: float
    rr_motion_bpm: float | None
    rr_pulse_bpm: float | None
    agree: bool | None  # None when only one source exists


def chest_box(face: Box, frame_shape: tuple[int, ...], width_faces: float = 2.2,
              top_faces: float = 1.15, height_faces: float = 0.9) -> tuple[int, int, int, int] | None:
    """Upper chest and shoulders below a face box, clipped to the frame (None if off-frame)."""
    x, y, w, h = face
    cx = x + w / 2
    x0, x1 = cx - width_faces * w / 2, cx + width_faces * w / 2
    y0, y1 = y + top_faces * h, y + (top_faces + height_faces) * h
    H, W = frame_shape[:2]
    x0, x1, y0, y1 = max(0.0, x0), min(float(W), x1), max(0.0, y0), min(float(H), y1)
    if x1 - x0 < 16 or y1 - y0 < 12:
        return None
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


class ChestMotion:
    """Per-frame vertical motion of the chest region by Farneback flow on a downscaled crop.

    The region follows the face only slowly (time constant ``follow_tau_s``), so that breathing
    itself (0.1-0.7 Hz) is measured rather than followed, while posture changes are.
    """

    def __init__(self, fps: float, work_width: int = 64, follow_tau_s: float = 4.0) -> None:
        self.work_width = work_width
        self._alpha = 1.0 - np.exp(-1.0 / (follow_tau_s * fps))
        self._box: np.ndarray | None = None
        self._prev_small: np.ndarray | None = None
        self._prev_box: tuple[int, int, int, int] | None = None

    def update(self, gray: np.ndarray, face: Box) -> float:
        """Vertical velocity (px/frame at full resolution, positive = up); NaN when unavailable."""
        if gray.ndim != 2:
            raise VisionInputError(f"ChestMotion.update: need a grayscale frame, got shape {gray.shape}")
        target = chest_box(face, gray.shape)
        if target is None:
            self._prev_small = None
            return float("nan")
        tb = np.asarray(target, dtype=float)
        self._box = tb if self._box is None else self._box + self._alpha * (tb - self._box)
        bx, by, bw, bh = (int(round(v)) for v in self._box)
        crop = gray[by:by + bh, bx:bx + bw]
        if crop.shape[0] < 8 or crop.shape[1] < 8:
            self._prev_small = None
            return float("nan")
        scale = self.work_width / crop.shape[1]
        size = (self.work_width, max(8, int(round(crop.shape[0] * scale))))
        small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        box = (bx, by, bw, bh)
        v = float("nan")
        if self._prev_small is not None and self._prev_box is not None and abs(bx - self._prev_box[0]) <= 1 \
                and abs(by - self._prev_box[1]) <= 1 and self._prev_small.shape == small.shape:
            flow = cv2.calcOpticalFlowFarneback(self._prev_small, small, None, pyr_scale=0.5, levels=2,
                                                winsize=9, iterations=2, poly_n=5, poly_sigma=1.1, flags=0)
            # Weight by texture: flow in flat areas is unreliable.
            gy = np.abs(np.diff(small.astype(np.float32), axis=0))
            wgt = np.zeros(small.shape, np.float32)
            wgt[1:] += gy
            wgt[:-1] += gy
            tot = wgt.sum()
            dy = float((flow[..., 1] * wgt).sum() / tot) if tot > 0 else float(flow[..., 1].mean())
            shift = by - self._prev_box[1]  # region moved between frames: add its shift back
            v = -(dy / scale + shift)
        self._prev_small = small
        self._prev_box = box
        return v


def _band_rate(x: np.ndarray, fs: float, band_hz: tuple[float, float] = RESP_BAND_HZ) -> RateEstimate:
    """Dominant frequency in the respiration band and a 0..1 peak-concentration quality."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 8 or not np.all(np.isfinite(x)) or x.std() == 0:
        return RateEstimate(None, 0.0)
    t = np.arange(x.size)
    x = x - np.polyval(np.polyfit(t, x, 1), t)  # remove linear drift
    freqs, power = power_spectrum(x, fs, pad_factor=16)
    f0 = spectral_peak_hz(freqs, power, band_hz)
    band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    near = band & (np.abs(freqs - f0) <= 0.05)
    broad = (freqs >= 0.03) & (freqs <= 1.5)
    q = float(power[near].sum() / max(power[broad].sum(), 1e-300))
    return RateEstimate(60.0 * f0, float(np.clip(q * 1.5, 0.0, 1.0)))


def rate_from_motion(velocity: np.ndarray, fps: float) -> RateEstimate:
    """Respiration rate from a per-frame vertical velocity trace (NaNs interpolated over)."""
    v = np.asarray(velocity, dtype=np.float64)
    if v.size < int(8 * fps):
        return RateEstimate(None, 0.0)
    bad = ~np.isfinite(v)
    if bad.mean() > 0.3:
        return RateEstimate(None, 0.0)
    if bad.any():
        idx = np.arange(v.size)
        v = v.copy()
        v[bad] = np.interp(idx[bad], idx[~bad], v[~bad])
    disp = np.cumsum(v)
    # decimate to ~10 Hz: respiration lives below 1 Hz and the spectrum gets cheaper
    step = max(1, int(round(fps / 10.0)))
    kernel = np.ones(step) / step
    disp_d = np.convolve(disp, kernel, mode="valid")[::step]
    return _band_rate(disp_d, fps / step)


def rate_from_pulse(beat_times_s: np.ndarray, beat_amplitudes: np.ndarray | None = None,
                    agree_bpm: float = 4.0) -> RateEstimate:
    """Respiration rate from RSIV (and RIAV when amplitudes are given), Karlen-style fusion."""
    b = np.asarray(beat_times_s, dtype=np.float64)
    if b.size < 8 or (b[-1] - b[0]) < 8.0:
        return RateEstimate(None, 0.0)
    fs = 4.0
    tb = b[1:]
    ibi = np.diff(b)
    ok = (ibi > 0.27) & (ibi < 2.0)  # 30-220 bpm; drop missed/extra beats
    if ok.sum() < 6:
        return RateEstimate(None, 0.0)
    grid = np.arange(tb[ok][0], tb[ok][-1], 1.0 / fs)
    ests = [_band_rate(np.interp(grid, tb[ok], ibi[ok]), fs, (0.13, 0.7))]
    if beat_amplitudes is not None and len(beat_amplitudes) == b.size:
        a = np.asarray(beat_amplitudes, dtype=np.float64)
        ests.append(_band_rate(np.interp(grid, b, a), fs, (0.13, 0.7)))
    rates = [e for e in ests if e.rate_bpm is not None]
    if not rates:
        return RateEstimate(None, 0.0)
    if len(rates) == 1:
        return RateEstimate(rates[0].rate_bpm, 0.5 * rates[0].quality)
    r = np.array([e.rate_bpm for e in rates])
    if r.max() - r.min() > agree_bpm:
        return RateEstimate(None, 0.0)
    q = np.array([e.quality for e in rates])
    return RateEstimate(float(np.average(r, weights=q + 1e-6)), float(q.mean()))


def fuse(motion: RateEstimate, pulse: RateEstimate, agree_bpm: float = 3.0,
         min_quality: float = 0.15) -> RespirationEstimate:
    """Combine the motion estimate (primary) with the pulse-derived cross-check."""
    m_ok = motion.rate_bpm is not None and motion.quality >= min_quality
    p_ok = pulse.rate_bpm is not None and pulse.quality >= min_quality
    if m_ok and p_ok:
        assert motion.rate_bpm is not None and pulse.rate_bpm is not None
        agree = abs(motion.rate_bpm - pulse.rate_bpm) <= agree_bpm
        if agree:
            w = np.array([2.0 * motion.quality, pulse.quality])
            rr = float(np.average([motion.rate_bpm, pulse.rate_bpm], weights=w))
            return RespirationEstimate(rr, min(1.0, motion.quality + 0.5 * pulse.quality),
                                       motion.rate_bpm, pulse.rate_bpm, True)
        return RespirationEstimate(motion.rate_bpm, 0.5 * motion.quality, motion.rate_bpm,
                                   pulse.rate_bpm, False)
    if m_ok:
        return RespirationEstimate(motion.rate_bpm, motion.quality, motion.rate_bpm, pulse.rate_bpm, None)
    if p_ok:
        return RespirationEstimate(pulse.rate_bpm, 0.5 * pulse.quality, motion.rate_bpm, pulse.rate_bpm, None)
    return RespirationEstimate(None, 0.0, motion.rate_bpm, pulse.rate_bpm, None)
