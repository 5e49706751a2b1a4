"""Natural background: terrestrial K/U/Th lines, their scattered continuum, and cosmic rays.

Terrestrial part (soil as a uniform half-space, detector at 1 m):
* Uncollided fluence rate of a line of yield y from activity concentration C (Bq/g):
      phi = C y / (2 (mu/rho)_soil) * E2(mu_air h)
  (half-space point-kernel integral; Beck, DeCampo & Gogolak, HASL-258 (1972), eq. 4). Soil is
  represented by NIST ordinary concrete (similar composition; mu/rho differ by < 2 % above 100 keV).
* Total air kerma rate per Bq/kg from UNSCEAR 2000 Report, Annex B, table 5 (after Saito & Jacob
  1995): 0.0417 (K-40), 0.462 (U-238 series), 0.604 (Th-232 series) nGy/h per Bq/kg. What the
  uncollided lines do not carry is the scattered (sky- and soil-shine) continuum; its spectrum is
  the Compton slowing-down shape in soil with a 30 % single-scatter share, which puts the familiar
  hump at ~70-120 keV (cf. the measured/computed spectra of Beck et al. 1972, fig. 6).
* U-238 series = Ra-226 + progeny lines plus the U-238/Th-234/Pa-234m lines; Th-232 series as listed.

Cosmic part (a fraction of the total H*(10)): at sea level the directly ionising cosmic component is
~32 nGy/h, ~80 % of it muons with an integral flux of ~1 /cm2/min (UNSCEAR 2000 Annex B paras
13-20; PDG Review of Particle Physics, "Cosmic rays"). Muons cross the crystal depositing
dE/dx * chord (minimum ionising, ~1.2-1.3 MeV cm2/g: PDG atomic & nuclear properties tables) with
the sphere-equivalent chord distribution; most of that lands above 3 MeV (overflow) in big crystals.
The remaining electron/photon component is represented by photons with an E^-2 spectrum.
All background fields are treated as isotropic at the detector.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expn

from hal_sim.gamma import dose, efficiency, transport
from hal_sim.gamma.materials import get_material
from hal_sim.gamma.nuclides import get_nuclide
from hal_sim.gamma.response_view import BackgroundView

UNSCEAR_NGY_H_PER_BQ_KG = {"K": 0.0417, "U": 0.462, "Th": 0.604}
SERIES = {"K": ("K-40",), "U": ("Ra-226", "U-238"), "Th": ("Th-232",)}
DETECTOR_HEIGHT_M = 1.0
SINGLE_SCATTER_SHARE = 0.3
COSMIC_IONISING_SEA_LEVEL_USV_H = 0.032
MUON_FLUX_SEA_LEVEL_CM2_S = 1.0 / 60.0
MUON_DOSE_SHARE = 0.8
MIP_DEDX_MEV_CM2_G = {"NaI": 1.305, "CsI": 1.243, "LaBr3": 1.25, "CZT": 1.25, "Ge": 1.37}
_PGY_S_PER_NGY_H = 1000.0 / 3600.0


def _iso_line_columns(resp: BackgroundView, energies: np.ndarray) -> np.ndarray:
    """(n_lines, n_ch): counts per unit isotropic fluence (photons/cm2) of each line."""
    area = efficiency.window_transmission(resp.spec, energies) * efficiency.isotropic_interaction_area_cm2(
        resp.spec, energies)
    return (resp._interaction_spectra(energies) * area[None, :]).T


def terrestrial_fluence(resp: BackgroundView, k40: float, u238: float, th232: float):
    """Line energies, uncollided fluence rates (photons/cm2/s) and scattered fluence on resp.grid_kev."""
    soil = get_material("soil")
    air = get_material("air")
    air_g = transport.air_g_cm2(DETECTOR_HEIGHT_M)
    conc = {"K": k40, "U": u238, "Th": th232}
    energies, phis = [], []
    grid_phi = np.zeros(resp.grid_kev.size)
    for s, names in SERIES.items():
        c_bq_g = conc[s] * 1e-3
        if c_bq_g <= 0:
            continue
        e = np.concatenate([get_nuclide(n).energies_kev for n in names])
        y = np.concatenate([get_nuclide(n).yields_per_decay for n in names])
        phi = c_bq_g * y / (2 * soil.mu_rho_cm2_g(e)) * expn(2, air.mu_rho_cm2_g(e) * air_g)
        k_unc = float(phi @ dose.air_kerma_per_fluence_pgy_cm2(e))
        k_tot = UNSCEAR_NGY_H_PER_BQ_KG[s] * conc[s] * _PGY_S_PER_NGY_H
        k_sc = max(k_tot - k_unc, 0.0)
        shape = np.zeros(resp.grid_kev.size)
        kl = phi * dose.air_kerma_per_fluence_pgy_cm2(e)
        for ei, wi in zip(e, kl / max(kl.sum(), 1e-300), strict=True):
            single = transport.scatter_shape(float(ei), resp.grid_kev, [], 0.0)
            multi = transport.scatter_shape(float(ei), resp.grid_kev, [("soil", 1e9)], 1e9)
            single /= max(single.sum(), 1e-300)
            multi /= max(multi.sum(), 1e-300)
            shape += wi * (SINGLE_SCATTER_SHARE * single + (1 - SINGLE_SCATTER_SHARE) * multi)
        k_shape = float(shape @ resp.grid_k)
        if k_shape > 0:
            grid_phi += shape * (k_sc / k_shape)
        energies.append(e)
        phis.append(phi)
    return np.concatenate(energies), np.concatenate(phis), grid_phi


def _muon_spectrum(resp: BackgroundView, flux_cm2_s: float) -> np.ndarray:
    spec = resp.spec
    c = spec.crystal
    dedx = MIP_DEDX_MEV_CM2_G.get(c.material, 1.3) * 1000.0 * c.medium.density_g_cm3  # keV/cm
    r = 3 * c.volume_cm3 / c.surface_cm2
    dmax = 2 * r * dedx
    rate = flux_cm2_s * c.surface_cm2 / 4.0
    dens = np.where(resp.centers_kev < dmax, resp.centers_kev / (0.5 * dmax * dmax), 0.0)
    return rate * np.asarray(resp._smear @ (dens * resp.widths_kev)) * resp.threshold


def background_per_usv_h(
    resp: BackgroundView, k40: float, u238: float, th232: float, cosmic_fraction: float
) -> np.ndarray:
    """Counts/s per channel for a background field of total H*(10) = 1 uSv/h."""
    e, phi, grid_phi = terrestrial_fluence(resp, k40, u238, th232)
    h_terr_psv_s = float(phi @ dose.hstar10_per_fluence_psv_cm2(e) + grid_phi @ resp.grid_h)
    target_terr = (1.0 - cosmic_fraction) / dose.PSV_PER_S_TO_USV_PER_H  # pSv/s for 1 uSv/h
    scale = target_terr / h_terr_psv_s if h_terr_psv_s > 0 else 0.0
    cols = _iso_line_columns(resp, e)
    terr = (phi * scale) @ cols + resp.grid_shapes @ (grid_phi * scale * resp.grid_iso_area)
    cosmic = np.zeros(resp.n_channels)
    if cosmic_fraction > 0:
        h_c = cosmic_fraction  # uSv/h
        flux_mu = h_c / COSMIC_IONISING_SEA_LEVEL_USV_H * MUON_FLUX_SEA_LEVEL_CM2_S
        cosmic += _muon_spectrum(resp, flux_mu)
        soft = resp.grid_kev ** -2.0 * np.gradient(resp.grid_kev)
        h_soft = float(soft @ resp.grid_h)
        soft *= (1 - MUON_DOSE_SHARE) * h_c / dose.PSV_PER_S_TO_USV_PER_H / h_soft
        cosmic += resp.grid_shapes @ (soft * resp.grid_iso_area)
    return terr + cosmic
