"""Geometric and intrinsic detection efficiency of a crystal.

* Point source on the crystal axis: solid-angle fraction of the front face, taken as the disk of the
  same area, Omega/4pi = (1 - d / sqrt(d^2 + R^2)) / 2 (Knoll 4th ed. eq. 4.19). Far away this is
  A / (4 pi d^2), the inverse-square law; close in it stays finite.
* Intrinsic (interaction) efficiency for a parallel beam on the face: 1 - exp(-mu t), t = depth.
* Isotropic field (natural background, skyshine): interaction rate per unit fluence rate is
  (S/4) * (1 - <exp(-mu c)>), with the chord distribution of the sphere that has the same Cauchy mean
  chord 4V/S: p(c) = c / (2 R^2), R = 3V/S, so <exp(-mu c)> = [1 - (1 + 2 mu R) exp(-2 mu R)] / (2 mu^2 R^2)
  (Case, de Hoffmann & Placzek 1953, "Introduction to the theory of neutron diffusion", sec. 8).
  Small-mu limit: mu V, as it must be.
* The housing/entrance window attenuates as exp(-mu_w x_w).
"""

from __future__ import annotations

import numpy as np

from hal_sim.gamma.detectors import DetectorSpec
from hal_sim.gamma.materials import get_material


def solid_angle_fraction(spec: DetectorSpec, distance_m: float | np.ndarray) -> np.ndarray:
    d_cm = np.maximum(np.asarray(distance_m, dtype=float) * 100.0, 1e-3)
    r2 = spec.crystal.front_area_cm2 / np.pi
    return 0.5 * (1.0 - d_cm / np.sqrt(d_cm * d_cm + r2))


def window_transmission(spec: DetectorSpec, energy_kev: np.ndarray) -> np.ndarray:
    if spec.window_g_cm2 <= 0:
        return np.ones_like(np.asarray(energy_kev, dtype=float))
    mu = get_material(spec.window_material).mu_rho_cm2_g(energy_kev)
    return np.exp(-mu * spec.window_g_cm2)


def intrinsic_face(spec: DetectorSpec, energy_kev: np.ndarray) -> np.ndarray:
    """Probability that a photon entering the front face interacts in the crystal."""
    med = spec.crystal.medium
    mu_lin = med.mu_rho_cm2_g(energy_kev) * med.density_g_cm3
    return -np.expm1(-mu_lin * spec.crystal.depth_cm)


def isotropic_interaction_area_cm2(spec: DetectorSpec, energy_kev: np.ndarray) -> np.ndarray:
    """Interactions per second per unit isotropic fluence rate (photons / cm2 / s)."""
    c = spec.crystal
    med = c.medium
    mu_lin = med.mu_rho_cm2_g(energy_kev) * med.density_g_cm3
    r = 3 * c.volume_cm3 / c.surface_cm2
    x = 2 * mu_lin * r
    exact = (1 - (1 + x) * np.exp(-x)) / np.maximum(0.5 * x * x, 1e-300)
    mean_trans = np.where(x > 1e-6, exact, 1.0 - 2 * x / 3)
    return c.surface_cm2 / 4.0 * (1.0 - mean_trans)
