"""Constant-velocity Kalman filter on ``(cx, cy, aspect, height)`` boxes.

The model and its noise scaling follow DeepSORT (Wojke, Bewley, Paulus 2017, "Simple online and
realtime tracking with a deep association metric") as reused by ByteTrack (Zhang et al. 2022): the
position and velocity noise are proportional to the box height, so a near (tall) person may move more
pixels per frame than a far one, with the same filter for both.  Plain numpy: 8x8 matrices, batched over
tracks, no per-track Python loop in predict.
"""

from __future__ import annotations

import numpy as np

_STD_POS = 1.0 / 20  #: position noise per unit box height (DeepSORT's std_weight_position)
_STD_VEL = 1.0 / 160  #: velocity noise per unit box height (std_weight_velocity)

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # x' = x + v (one frame)
_H = np.eye(4, 8)


def initiate(xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """State mean and covariance of a new track from its first measurement (velocity unknown: 0)."""
    mean = np.r_[np.asarray(xyah, float), np.zeros(4)]
    h = max(float(xyah[3]), 1.0)
    std = np.array([2 * _STD_POS * h, 2 * _STD_POS * h, 1e-2, 2 * _STD_POS * h,
                    10 * _STD_VEL * h, 10 * _STD_VEL * h, 1e-5, 10 * _STD_VEL * h])
    return mean, np.diag(std**2)


def predict(means: np.ndarray, covs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-frame prediction of (N, 8) means and (N, 8, 8) covariances."""
    if len(means) == 0:
        return means, covs
    h = np.maximum(means[:, 3], 1.0)
    std = np.stack([_STD_POS * h, _STD_POS * h, np.full_like(h, 1e-2), _STD_POS * h,
                    _STD_VEL * h, _STD_VEL * h, np.full_like(h, 1e-5), _STD_VEL * h], axis=1)
    q = np.einsum("ni,ij->nij", std**2, np.eye(8))
    means = means @ _F.T
    covs = _F @ covs @ _F.T + q
    return means, covs


def update(mean: np.ndarray, cov: np.ndarray, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct one track's state with a measured box."""
    h = max(float(mean[3]), 1.0)
    r = np.diag(np.array([_STD_POS * h, _STD_POS * h, 1e-1, _STD_POS * h]) ** 2)
    s = _H @ cov @ _H.T + r
    k = np.linalg.solve(s, (cov @ _H.T).T).T  # K = P H^T S^-1 (S symmetric)
    innovation = np.asarray(xyah, float) - _H @ mean
    return mean + k @ innovation, cov - k @ s @ k.T
