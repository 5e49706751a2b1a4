"""Light and camera: illumination drift, mains flicker through a rolling shutter, sensor noise,
8-bit quantisation, JPEG, and frame timing.

Why model these: they are what breaks camera-based vital signs in the field.  A drifting light
adds slow trends; mains flicker at 100/120 Hz aliases into or near the heart-rate band at 30 fps;
shot noise and 8-bit rounding bury a 0.1-0.5 % pulse; JPEG's block quantisation removes small
colour changes; timestamp jitter smears a spectrum computed as if samples were uniform.

Sources
-------
* Flicker: light output of mains-driven lamps oscillates at twice the mains frequency; the
  modulation depth ("percent flicker") is a few per cent for good LED drivers and ~30 % for
  magnetic-ballast fluorescents (IEEE Std 1789-2015).  A pixel integrates the light over its
  exposure T_e, which scales a sinusoid of frequency f by sinc(f T_e) = sin(pi f T_e)/(pi f T_e);
  a rolling shutter starts each row later by readout/H, which turns flicker into moving bands.
* Sensor noise: photon shot noise plus read noise, sigma_DN^2 = K * mu_DN + sigma_read^2 with the
  system gain K in DN per electron (EMVA Standard 1288, release 4.0, 2021).  Noise is applied in
  the encoded 8-bit domain, a simplification (no gamma/Bayer/demosaic model).
* JPEG: baseline JPEG via OpenCV/libjpeg with its default 4:2:0 chroma subsampling, as MJPG
  webcams deliver (ITU-T T.81).
* Frame timing: a crystal with a rate error of tens of ppm plus millisecond timestamp jitter
  (USB UVC cameras, V4L2 buffer timestamps), optional dropped frames.  By default exposures are
  regular and only the reported timestamps jitter; irregular capture is an option.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


# --------------------------------------------------------------------------- smooth random functions
@dataclass
class SmoothRandom:
    """A zero-mean smooth random function of time: a sum of sinusoids with random frequencies in
    [f_lo, f_hi] and random phases, RMS 1.  Evaluable at any t, so frames at jittered times and a
    camera that runs for hours need no precomputed grid."""

    freqs_hz: np.ndarray
    phases: np.ndarray
    weights: np.ndarray

    @classmethod
    def make(cls, rng: np.random.Generator, f_lo: float, f_hi: float, n: int = 6) -> SmoothRandom:
        f = np.exp(rng.uniform(np.log(f_lo), np.log(f_hi), n))
        w = 1.0 / np.sqrt(f / f_lo)  # pinkish: slower components larger
        w = w / np.sqrt(0.5 * np.sum(w * w))
        return cls(f, rng.uniform(0, 2 * np.pi, n), w)

    def __call__(self, t_s: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t_s, dtype=float)[..., None]
        return np.sum(self.weights * np.sin(2 * np.pi * self.freqs_hz * t + self.phases), axis=-1)


# --------------------------------------------------------------------------- illumination
@dataclass
class Illumination:
    """Scene light over time: global level and colour drift, a left-right gradient, mains flicker."""

    drift: bool = False
    drift_level: float = 0.06  # RMS relative level change
    drift_colour: float = 0.015  # RMS per-channel (white balance) change
    drift_gradient: float = 0.08  # RMS left/right gradient (a window, a moving cloud)
    flicker: bool = False
    flicker_hz: float = 100.0  # 2 x mains frequency
    flicker_depth: float = 0.08  # modulation depth of the light (IEEE 1789 "percent flicker")
    # 1/200 s: not a multiple of either flicker period (1/100 s or 1/120 s would integrate it away,
    # which is what a camera's anti-flicker setting does), leaving ~5 % modulation at 100 Hz.
    exposure_s: float = 1.0 / 200.0
    readout_s: float = 0.020  # rolling-shutter top-to-bottom readout time
    _level: SmoothRandom | None = None
    _colour: list[SmoothRandom] = field(default_factory=list)
    _gradient: SmoothRandom | None = None
    _flicker_phase: float = 0.0

    def seed(self, rng: np.random.Generator) -> None:
        self._level = SmoothRandom.make(rng, 0.004, 0.05)
        self._colour = [SmoothRandom.make(rng, 0.004, 0.03) for _ in range(3)]
        self._gradient = SmoothRandom.make(rng, 0.004, 0.04)
        self._flicker_phase = float(rng.uniform(0, 2 * np.pi))

    def column_gain(self, t_s: float, width: int) -> np.ndarray:
        """(1, W, 3) float32 gain: level x colour x horizontal gradient at time t."""
        gain = np.ones((1, width, 3), np.float32)
        if not self.drift or self._level is None:
            return gain
        level = 1.0 + self.drift_level * float(self._level(t_s))
        colour = np.array([1.0 + self.drift_colour * float(c(t_s)) for c in self._colour], np.float32)
        slope = self.drift_gradient * float(self._gradient(t_s))
        x = np.linspace(-0.5, 0.5, width, dtype=np.float32)
        gain = ((level * (1.0 + slope * x))[:, None] * colour[None, :])[None, :, :]
        return gain.astype(np.float32)

    def row_gain(self, t_frame_s: float, height: int) -> np.ndarray | None:
        """(H, 1, 1) float32 rolling-shutter flicker gain, or None without flicker.

        Row r starts exposing at t + r/H * readout; its mean light over the exposure is
        1 + m sinc(f Te) cos(2 pi f (t_r + Te/2) + phi).
        """
        if not self.flicker:
            return None
        f, te = self.flicker_hz, self.exposure_s
        t_rows = t_frame_s + np.arange(height) * (self.readout_s / height) + te / 2.0
        att = np.sinc(f * te)  # numpy sinc is sin(pi x)/(pi x)
        g = 1.0 + self.flicker_depth * att * np.cos(2 * np.pi * f * t_rows + self._flicker_phase)
        return g.astype(np.float32)[:, None, None]

    def describe(self) -> dict[str, float | bool]:
        return {
            "illumination_drift": self.drift,
            "flicker": self.flicker,
            "flicker_hz": self.flicker_hz if self.flicker else 0.0,
            "flicker_depth": self.flicker_depth if self.flicker else 0.0,
            "exposure_s": self.exposure_s,
            "rolling_readout_s": self.readout_s,
        }


# --------------------------------------------------------------------------- sensor
@dataclass
class Sensor:
    """Shot + read noise, 8-bit rounding and optional JPEG, all on the whole frame.

    Noise is drawn from a seeded bank of standard-normal frames at a random offset per frame:
    drawing 0.9 M normals per frame would cost more than the rest of the rendering; shifted
    windows of a bank keep the noise independent between frames for any region mean.
    """

    width: int
    height: int
    noise: bool = True
    gain_dn_per_e: float = 255.0 / 8000.0  # full well ~8000 e- at 255 DN
    read_noise_dn: float = 1.2
    jpeg_quality: int | None = None
    bank_size: int = 4
    bank_pad: int = 32
    _bank: list[np.ndarray] = field(default_factory=list)

    def seed(self, rng: np.random.Generator) -> None:
        if not self.noise:
            return
        shape = (self.height + self.bank_pad, self.width + self.bank_pad, 3)
        self._bank = [rng.standard_normal(shape, dtype=np.float32) for _ in range(self.bank_size)]

    def expose(self, radiance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """radiance: (H, W, 3) float32 in DN (0..255 nominal); modified in place.  Returns uint8 BGR."""
        if self.noise and self._bank:
            k = int(rng.integers(0, len(self._bank)))
            dy, dx = (int(v) for v in rng.integers(0, self.bank_pad + 1, 2))
            n = self._bank[k][dy : dy + self.height, dx : dx + self.width]
            np.maximum(radiance, 0.0, out=radiance)
            # sigma = sqrt(K mu + r^2), then mu + sigma * N(0, 1); OpenCV calls avoid temporaries.
            sigma = cv2.addWeighted(radiance, self.gain_dn_per_e, radiance, 0.0, self.read_noise_dn**2)
            cv2.sqrt(sigma, sigma)
            cv2.add(radiance, cv2.multiply(sigma, n), radiance)
            np.maximum(radiance, 0.0, out=radiance)
        img = cv2.convertScaleAbs(radiance)  # rounds to nearest and saturates at 255 (input >= 0)
        if self.jpeg_quality is not None:
            img = jpeg_roundtrip(img, self.jpeg_quality)
        return img

    def describe(self) -> dict[str, float | bool | int | None]:
        return {
            "noise": self.noise,
            "gain_dn_per_e": self.gain_dn_per_e if self.noise else 0.0,
            "read_noise_dn": self.read_noise_dn if self.noise else 0.0,
            "jpeg_quality": self.jpeg_quality,
        }


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode with OpenCV's libjpeg (4:2:0), as an MJPG camera would deliver."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"jpeg_quality must be 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2.imencode failed for a JPEG frame")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


# --------------------------------------------------------------------------- timing
def frame_times(
    n_frames: int,
    fps: float,
    rng: np.random.Generator,
    *,
    jitter_ms: float = 1.5,
    rate_error_ppm: float | None = None,
    drop_prob: float = 0.0,
    jitter_kind: str = "timestamp",
) -> tuple[np.ndarray, np.ndarray]:
    """(capture times, reported timestamps) of ``n_frames`` delivered frames.

    The sensor's clock runs at fps x (1 + ppm 1e-6); a dropped frame leaves a gap of two periods.
    ``jitter_kind="timestamp"`` (what USB/UVC cameras do): exposures are regular and only the
    host timestamps jitter.  ``"capture"``: the exposures themselves are irregular (software
    triggered capture) and the timestamps are exact.  Timestamps stay strictly increasing.
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if jitter_kind not in ("timestamp", "capture"):
        raise ValueError(f"jitter_kind must be 'timestamp' or 'capture', got {jitter_kind!r}")
    ppm = float(rng.uniform(-80.0, 80.0)) if rate_error_ppm is None else float(rate_error_ppm)
    period = 1.0 / (fps * (1.0 + ppm * 1e-6))
    slots = np.arange(n_frames, dtype=float)
    if drop_prob > 0:
        gap = 1 + (rng.random(n_frames) < drop_prob).astype(float)
        gap[0] = 0.0
        slots = np.cumsum(gap)
    regular = slots * period
    stamps = regular.copy()
    if jitter_ms > 0:
        stamps = stamps + rng.normal(0.0, jitter_ms * 1e-3, n_frames)
        stamps -= min(stamps[0], 0.0)
        if np.any(np.diff(stamps) <= 0):  # keep order (only when jitter approaches the period)
            for i in range(1, n_frames):
                if stamps[i] <= stamps[i - 1]:
                    stamps[i] = stamps[i - 1] + 0.1 * period
    capture = stamps.copy() if jitter_kind == "capture" else regular
    return capture, stamps
