"""A tiny stand-in for hal_sim.gamma.DetectorResponse, for the simulated-world tests.

Why: the world's geometry, timing and device behaviour are tested independently of the gamma
physics (tested on its own); this stand-in has the same API and simple, checkable physics:
a single 662 keV Gaussian line, 1/(4 pi r^2) fluence, exponential attenuation with one
mass attenuation coefficient per material, Poisson counts and a fixed dead time per count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from agent.hal.interfaces import EnergyCalibration

MU_RHO_CM2_G = {"iron": 0.0738, "concrete": 0.0776, "air": 0.0776, "lead": 0.110}  # ~662 keV, NIST
MU_AIR_PER_M = 0.0093
KNOWN_NUCLIDES = {"Cs-137": (661.7, 0.851, 0.0926)}  # energy, yield, uSv m2 / (MBq h)
DEAD_TIME_S = 2e-6


class StandInResponse:
    def __init__(self, model: str, n_channels: int, max_energy_kev: float) -> None:
        self.model = model
        self.n_channels = int(n_channels)
        self.calibration = EnergyCalibration.from_linear(0.0, max_energy_kev / n_channels)
        self.area_cm2 = 80.0 if "log" in model else 20.0
        e = self.calibration.energy_kev(np.arange(self.n_channels))
        self._line = np.exp(-0.5 * ((e - 661.7) / 20.0) ** 2)
        self._line /= self._line.sum()
        self._bg = np.exp(-e / 300.0)
        self._bg /= self._bg.sum()
        self.calls = 0

    @classmethod
    def for_model(cls, model: str, n_channels: int = 1024, max_energy_kev: float = 3000.0) -> StandInResponse:
        return cls(model, n_channels, max_energy_kev)

    @staticmethod
    def transmission(distance_m: float, shielding: Iterable[tuple[str, float]] = ()) -> float:
        mu_x = MU_AIR_PER_M * distance_m
        for material, areal in shielding:
            if material not in MU_RHO_CM2_G:
                raise ValueError(f"unknown material {material!r}")
            mu_x += MU_RHO_CM2_G[material] * areal
        return math.exp(-mu_x)

    def source_rate_spectrum(
        self, nuclide: str, activity_bq: float, distance_m: float, shielding: Iterable[tuple[str, float]] = ()
    ) -> np.ndarray:
        self.calls += 1
        if nuclide not in KNOWN_NUCLIDES:
            raise ValueError(f"unknown nuclide {nuclide!r}")
        _, y, _ = KNOWN_NUCLIDES[nuclide]
        fluence = activity_bq * y / (4 * math.pi * (100.0 * distance_m) ** 2)
        return fluence * self.area_cm2 * 0.5 * self.transmission(distance_m, shielding) * self._line

    def background_rate_spectrum(
        self,
        dose_rate_usv_h: float,
        k40_bq_kg: float,
        u238_bq_kg: float,
        th232_bq_kg: float,
        cosmic_fraction: float,
    ) -> np.ndarray:
        return dose_rate_usv_h / 0.08 * 25.0 * self.area_cm2 * self._bg

    def sample(
        self,
        expected_counts: np.ndarray,
        real_time_s: float,
        rng: np.random.Generator,
        temperature_c: float | None = None,
    ) -> tuple[np.ndarray, float]:
        counts = rng.poisson(np.maximum(expected_counts, 0.0)).astype(np.int64)
        return counts, max(real_time_s - DEAD_TIME_S * counts.sum(), 0.0)

    def true_dose_rate_usv_h(
        self, nuclide: str, activity_bq: float, distance_m: float, shielding: Iterable[tuple[str, float]] = ()
    ) -> float:
        if nuclide not in KNOWN_NUCLIDES:
            raise ValueError(f"unknown nuclide {nuclide!r}")
        return KNOWN_NUCLIDES[nuclide][2] * activity_bq / 1e6 / distance_m**2 * self.transmission(distance_m, shielding)
