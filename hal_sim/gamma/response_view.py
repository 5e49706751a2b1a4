"""What the background and counting models read from a detector response (structural types).

Why a separate module: ``response.py`` builds a :class:`~hal_sim.gamma.response.DetectorResponse` from
``background`` and ``counting``; those in turn only *read* a few of its arrays. Naming that read-only view as
a Protocol here keeps the imports one-way (response -> background/counting -> response_view) instead of
a type-only import back into ``response``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy import sparse

from hal_sim.gamma.detectors import DetectorSpec


class ChannelView(Protocol):
    """The channel grid a spectrum is sampled on."""

    spec: DetectorSpec
    n_channels: int
    edges_kev: np.ndarray


class BackgroundView(ChannelView, Protocol):
    """The response arrays the natural-background model folds its fluence with."""

    centers_kev: np.ndarray
    widths_kev: np.ndarray
    threshold: np.ndarray
    grid_kev: np.ndarray
    grid_h: np.ndarray
    grid_shapes: np.ndarray
    grid_iso_area: np.ndarray
    _smear: sparse.csr_matrix | np.ndarray

    def _interaction_spectra(self, energies: np.ndarray) -> np.ndarray: ...
