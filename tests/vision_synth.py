"""Synthetic inputs for the agent.vision tests (no simulator needed, all seeded).

A real face photograph (scikit-image's ``astronaut``, public domain NASA image) is placed in a
640x480 frame; its skin is modulated by a blood-volume pulse with the PBV colour signature
(de Haan & van Leest 2014), the whole picture moves with breathing and camera noise is added.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

PBV_BGR = np.array([0.53, 0.77, 0.33], np.float32)  # normalised [R, G, B] = [0.33, 0.77, 0.53]


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def face_frames(n: int, fps: float = 30.0, hr_bpm: float = 72.0, rr_bpm: float = 15.0, pulse_amp: float = 0.004,
                breath_px: float = 1.5, noise_dn: float = 2.0, flicker: float = 0.0, seed: int = 0,
                pulse: bool = True) -> Iterator[tuple[np.ndarray, float]]:
    """Yield (BGR uint8 frame, t_s)."""
    rng = np.random.default_rng(seed)
    face = astronaut_bgr().astype(np.float32)
    base = np.full((480, 640, 3), 90.0, np.float32)
    base[:, 64:576] = face[16:496]
    pad = 24  # noise: windows at random offsets of a small seeded bank (fresh normals cost 15 ms)
    bank = [noise_dn * rng.standard_normal((480 + pad, 640 + pad, 3)).astype(np.float32) for _ in range(3)]
    for k in range(n):
        t = k / fps
        p = np.sin(2 * np.pi * hr_bpm / 60.0 * t) if pulse else 0.0
        b = np.sin(2 * np.pi * rr_bpm / 60.0 * t)
        fr = base * (1.0 + pulse_amp * p * PBV_BGR)
        fr *= 1.0 + flicker * np.sin(2 * np.pi * 1.1 * t)
        m = np.float32([[1, 0, 0], [0, 1, breath_px * b]])
        fr = cv2.warpAffine(fr, m, (640, 480), borderMode=cv2.BORDER_REPLICATE)
        dy, dx = (int(v) for v in rng.integers(0, pad, 2))
        fr += bank[k % 3][dy:dy + 480, dx:dx + 640]
        yield np.clip(fr, 0, 255).astype(np.uint8), t


def rgb_trace(n: int, fps: float = 30.0, hr_bpm: float = 72.0, amp: float = 0.003, noise: float = 0.0005,
              flicker: float = 0.0, seed: int = 0) -> np.ndarray:
    """(n, 3) mean skin R, G, B with a pulse, relative noise and an intensity flicker."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    base = np.array([180.0, 120.0, 100.0])
    pv = np.array([0.33, 0.77, 0.53])
    p = np.sin(2 * np.pi * hr_bpm / 60.0 * t)
    inten = 1.0 + flicker * np.sin(2 * np.pi * 1.3 * t + 0.4)
    return base * (1.0 + amp * np.outer(p, pv)) * inten[:, None] * (1.0 + noise * rng.standard_normal((n, 3)))
