"""DetectorResponse: expected count-rate spectra of a detector model, fast enough for a fleet.

Cost model (why it is organised like this): the simulated fleet asks for ~200 spectra per wall
second, so everything that does not depend on the scene is computed once and cached:

* per detector (on construction): channel energies, the resolution-smearing matrix, the response
  of the crystal to photons on a log energy grid (used for scattered, back-scattered, background and
  cosmic photons), Pb K x-ray columns;
* per nuclide (first use): one response column per line (full-energy Gaussian at the exact energy,
  escape peaks, Compton continuum, back-scatter from the mounting), the sum-peak columns, and the
  scatter-shape matrices per shielding medium.

A call then computes only per-line scalars (solid angle, exp(-mu x), build-up) and does a couple of
small matrix-vector products. Rates are counts per second per channel before dead time.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.special import ndtr

from agent.hal.interfaces import EnergyCalibration
from hal_sim.gamma import background as bg
from hal_sim.gamma import counting, dose, efficiency, transport
from hal_sim.gamma.crystal_response import DepositModel
from hal_sim.gamma.detectors import DetectorSpec, get_detector
from hal_sim.gamma.materials import ME_C2_KEV, get_material
from hal_sim.gamma.nuclides import Nuclide, get_nuclide

_FOUR_PI = 4.0 * np.pi


@dataclass
class _NuclideCache:
    nuclide: Nuclide
    energies: np.ndarray
    yields: np.ndarray
    columns: np.ndarray  # (n_lines, n_channels): counts per photon incident on the front face
    eff_face: np.ndarray  # window x intrinsic efficiency per line (for sum-peak loss)
    h_line: np.ndarray  # H*(10) per fluence at each line (pSv cm2)
    k_line: np.ndarray  # air kerma per fluence at each line (pGy cm2)
    single: np.ndarray  # (n_lines, n_grid) forward single-scatter shape, normalised to 1
    sum_columns: np.ndarray  # (n_cascades, n_channels): sum-peak response per coincident pair (both hit)
    sum_eff: np.ndarray  # (n_cascades, 2) peak efficiency x window of each partner
    sum_partner: list[tuple[int, int, float]]  # (line i, line j, probability per decay)
    multi: dict[str, np.ndarray]  # medium -> (n_lines, n_grid) slowing-down shape, normalised to 1


class DetectorResponse:
    """Response of one detector model; use :meth:`for_model` (cached, thread-safe to share)."""

    def __init__(self, spec: DetectorSpec, n_channels: int = 1024, max_energy_kev: float = 3000.0) -> None:
        if not (16 <= int(n_channels) <= 65536):
            raise ValueError(f"n_channels must be 16..65536, got {n_channels!r}")
        if not (100.0 <= float(max_energy_kev) <= 20000.0):
            raise ValueError(f"max_energy_kev must be 100..20000 keV, got {max_energy_kev!r}")
        self.spec = spec
        self.model = spec.name
        self.n_channels = int(n_channels)
        self.max_energy_kev = float(max_energy_kev)
        self.calibration = self._make_calibration()
        self.edges_kev = self.calibration.edges_kev(self.n_channels)
        self.centers_kev = self.calibration.energy_kev(np.arange(self.n_channels, dtype=float))
        self.widths_kev = np.diff(self.edges_kev)
        # lower-level discriminator: soft edge (electronic noise), erf profile
        self.threshold = ndtr((self.centers_kev - spec.threshold_kev) / max(spec.threshold_width_kev, 1e-3))
        top = max(3500.0, 1.15 * self.max_energy_kev)
        self.deposit = DepositModel(spec, top_kev=top)
        self._smear = self._smearing_matrix()
        self._lock = threading.Lock()
        self._nuc: dict[str, _NuclideCache] = {}
        self._bg: dict[tuple[float, float, float, float], np.ndarray] = {}
        self.grid_kev = np.geomspace(12.0, 0.98 * top, 150)
        # (n_channels, n_grid): recorded spectrum per interacting photon of each grid energy
        self.grid_shapes = self._interaction_spectra(self.grid_kev)
        self.grid_window = efficiency.window_transmission(spec, self.grid_kev)
        self.grid_face = self.grid_window * efficiency.intrinsic_face(spec, self.grid_kev)
        self.grid_iso_area = self.grid_window * efficiency.isotropic_interaction_area_cm2(spec, self.grid_kev)
        self.grid_face_resp = self.grid_shapes * self.grid_face  # per photon on the face
        self.grid_h = dose.hstar10_per_fluence_psv_cm2(self.grid_kev)
        self.grid_k = dose.air_kerma_per_fluence_pgy_cm2(self.grid_kev)
        self._pb_column = self._line_columns(transport.PB_K_LINES_KEV).T @ transport.PB_K_REL

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_model(
        cls, model: str, n_channels: int = 1024, max_energy_kev: float = 3000.0
    ) -> DetectorResponse:
        """Cached constructor: one instance per (model, n_channels, max_energy_kev)."""
        spec = get_detector(model)
        return _cached(spec.name, int(n_channels), float(max_energy_kev))

    def _make_calibration(self) -> EnergyCalibration:
        """Slightly quadratic, as a PMT/SiPM chain with scintillator non-proportionality is
        (~1-2 % deviation from linear over the range; RadiaCode-102 files carry c2 ~ 4e-4 keV/ch^2
        for 2.4 keV/ch, i.e. ~15 % of the top end, so this is on the gentle side)."""
        n = self.n_channels - 0.5
        c2 = 0.015 * self.max_energy_kev / (n * n)
        c0 = 0.0
        c1 = (self.max_energy_kev - c0 - c2 * n * n) / n
        return EnergyCalibration((c0, c1, c2))

    def _smearing_matrix(self) -> sparse.csr_matrix:
        """S[k, j]: probability that a deposit at channel j's centre energy is recorded in channel k.

        Banded (Gaussian tails beyond ~7 sigma dropped), stored sparse so a smear costs ~n*band."""
        sig = np.maximum(self.spec.resolution.sigma_kev(np.maximum(self.centers_kev, 1.0)), 1e-3)
        rows, cols, vals = [], [], []
        for j in range(self.n_channels):
            lo = int(np.searchsorted(self.edges_kev, self.centers_kev[j] - 7 * sig[j])) - 1
            hi = int(np.searchsorted(self.edges_kev, self.centers_kev[j] + 7 * sig[j])) + 1
            lo, hi = max(lo, 0), min(hi, self.n_channels)
            p = np.diff(ndtr((self.edges_kev[lo : hi + 1] - self.centers_kev[j]) / sig[j]))
            rows.append(np.arange(lo, hi))
            cols.append(np.full(hi - lo, j))
            vals.append(p)
        return sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(self.n_channels, self.n_channels),
        )

    def _gauss(self, e: float) -> np.ndarray:
        sig = float(self.spec.resolution.sigma_kev(max(e, 1.0)))
        return np.diff(ndtr((self.edges_kev - e) / sig))

    def _interaction_spectrum(self, e: float) -> np.ndarray:
        """Recorded spectrum (threshold applied) per photon interacting in the crystal."""
        return self._interaction_spectra(np.array([e]))[:, 0]

    def _interaction_spectra(self, energies: np.ndarray) -> np.ndarray:
        """(n_channels, n_energies) recorded spectra per interacting photon, threshold applied."""
        dens = np.empty((self.n_channels, energies.size))
        peak_e, peak_w, peak_col = [], [], []
        for n, e in enumerate(energies):
            peaks, d = self.deposit.deposits(float(e), self.centers_kev)
            dens[:, n] = np.maximum(d, 0.0) * self.widths_kev
            for pe, pw in peaks:
                if pw > 0 and pe > 0:
                    peak_e.append(pe)
                    peak_w.append(pw)
                    peak_col.append(n)
        out = np.asarray(self._smear @ dens)
        if peak_e:
            pe = np.array(peak_e)
            sig = self.spec.resolution.sigma_kev(pe)
            g = np.diff(ndtr((self.edges_kev[:, None] - pe[None, :]) / sig[None, :]), axis=0)
            np.add.at(out.T, np.array(peak_col), (g * np.array(peak_w)[None, :]).T)
        return out * self.threshold[:, None]

    def _grid_weights(self, energies: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Distribute photons at arbitrary energies onto the log grid (linear in log E)."""
        lg = np.log(self.grid_kev)
        x = np.log(np.clip(energies, self.grid_kev[0], self.grid_kev[-1]))
        i = np.clip(np.searchsorted(lg, x) - 1, 0, lg.size - 2)
        f = (x - lg[i]) / (lg[i + 1] - lg[i])
        out = np.zeros(self.grid_kev.size)
        np.add.at(out, i, weights * (1 - f))
        np.add.at(out, i + 1, weights * f)
        return out

    def _backscatter_weights(self, e: float) -> np.ndarray:
        """Photons back-scattered (120-180 deg, Klein-Nishina weighted) into the crystal by the
        mounting behind it, per photon on the face. Gives the back-scatter peak near E/(1 + 2E/mc2)."""
        k = e / ME_C2_KEV
        cth = np.linspace(-1.0, -0.5, 24)
        r = 1.0 / (1.0 + k * (1 - cth))
        kn = r * r * (r + 1 / r - (1 - cth * cth))
        w = kn / kn.sum() * self.spec.backscatter_fraction
        return self._grid_weights(e * r, w)

    def _line_columns(self, energies: np.ndarray) -> np.ndarray:
        """(n_lines, n_channels): counts per photon of each energy arriving at the front face
        (direct interactions + photons back-scattered into the crystal by its mounting)."""
        e = np.asarray(energies, dtype=float)
        eff = efficiency.window_transmission(self.spec, e) * efficiency.intrinsic_face(self.spec, e)
        cols = self._interaction_spectra(e) * eff[None, :]
        bs = np.array([self._backscatter_weights(float(x)) for x in e]).T  # (n_grid, n_lines)
        return (cols + self.grid_face_resp @ bs).T

    # ------------------------------------------------------------------ per-nuclide cache
    def _nuclide(self, name: str) -> _NuclideCache:
        hit = self._nuc.get(name)
        if hit is not None:
            return hit
        with self._lock:
            hit = self._nuc.get(name)
            if hit is not None:
                return hit
            nuc = get_nuclide(name)
            e, y = nuc.energies_kev, nuc.yields_per_decay
            cols = np.ascontiguousarray(self._line_columns(e))
            eff = efficiency.window_transmission(self.spec, e) * efficiency.intrinsic_face(self.spec, e)
            single = np.array([transport.scatter_shape(float(x), self.grid_kev, [], 0.0) for x in e])
            single /= np.maximum(single.sum(axis=1, keepdims=True), 1e-300)
            sum_cols, sum_eff, partners = [], [], []
            for e1, e2, p in nuc.cascades:
                i, j = int(np.argmin(np.abs(e - e1))), int(np.argmin(np.abs(e - e2)))
                thr = float(np.interp(e1 + e2, self.centers_kev, self.threshold))
                sum_cols.append(self._gauss(e1 + e2) * thr)
                f1, f2 = (self.deposit.f_at(x) for x in (e1, e2))
                sum_eff.append((eff[i] * f1, eff[j] * f2))
                partners.append((i, j, p))
            cache = _NuclideCache(
                nuc, e, y, cols, eff,
                dose.hstar10_per_fluence_psv_cm2(e), dose.air_kerma_per_fluence_pgy_cm2(e),
                single, np.array(sum_cols).reshape(-1, self.n_channels), np.array(sum_eff).reshape(-1, 2),
                partners, {},
            )
            self._nuc[name] = cache
            return cache

    def _multi_shape(self, cache: _NuclideCache, medium: str) -> np.ndarray:
        m = cache.multi.get(medium)
        if m is None:
            rows = []
            for x in cache.energies:
                full = transport.scatter_shape(float(x), self.grid_kev, [(medium, 1e9)], 1e9)
                rows.append(full / max(full.sum(), 1e-300))
            m = np.array(rows)
            cache.multi[medium] = m
        return m

    # ------------------------------------------------------------------ public API
    def full_energy_efficiency(self, energy_kev: np.ndarray | float) -> np.ndarray:
        """Probability that a photon of this energy arriving at the front face ends up in the
        full-energy peak (window transmission x interaction probability x photofraction)."""
        e = np.atleast_1d(np.asarray(energy_kev, dtype=float))
        eff = efficiency.window_transmission(self.spec, e) * efficiency.intrinsic_face(self.spec, e)
        return eff * np.array([self.deposit.f_at(float(x)) for x in e])

    def source_rate_spectrum(
        self,
        nuclide: str,
        activity_bq: float,
        distance_m: float,
        shielding: Sequence[tuple[str, float]] = (),
    ) -> np.ndarray:
        """Expected counts/s per channel from a point source (uncollided + scattered + x-rays)."""
        spec, _, _ = self._transport(nuclide, activity_bq, distance_m, shielding)
        return spec

    def true_dose_rate_usv_h(
        self,
        nuclide: str,
        activity_bq: float,
        distance_m: float,
        shielding: Sequence[tuple[str, float]] = (),
    ) -> float:
        """H*(10) rate at the detector position from the source: uncollided + build-up (ICRP 74)."""
        _, h, _ = self._transport(nuclide, activity_bq, distance_m, shielding, want_spectrum=False)
        return h

    def _transport(
        self,
        nuclide: str,
        activity_bq: float,
        distance_m: float,
        shielding: Sequence[tuple[str, float]],
        want_spectrum: bool = True,
    ) -> tuple[np.ndarray, float, float]:
        a = float(activity_bq)
        d = float(distance_m)
        if not np.isfinite(a) or a < 0:
            raise ValueError(f"activity_bq must be >= 0, got {activity_bq!r}")
        if not np.isfinite(d) or d <= 0:
            raise ValueError(f"distance_m must be > 0, got {distance_m!r}")
        layers = (*transport.validate_shielding(shielding), ("air", transport.air_g_cm2(d)))
        c = self._nuclide(nuclide)
        e = c.energies
        mfp = transport.layer_mfp(layers, e)
        total_mfp = mfp.sum(axis=0)
        trans = np.exp(-total_mfp)
        dominant = np.argmax(mfp, axis=0)
        bfac = np.ones_like(e)
        for i, (mat, _) in enumerate(layers):
            sel = dominant == i
            if np.any(sel):
                bfac[sel] = transport.buildup_factor(mat, e[sel], total_mfp[sel])
        # fluence at the detector per decay (photons/cm2), point source, inverse square
        r_cm = d * 100.0
        phi_unc = c.yields * trans / (_FOUR_PI * r_cm * r_cm)  # per decay
        # scattered photons: kerma-normalised to (B - 1) x uncollided kerma
        medium = layers[int(np.argmax(mfp[:, int(np.argmax(c.yields))]))][0] if len(layers) else "air"
        medium = get_material(medium).name
        multi = self._multi_shape(c, medium)
        alpha = 1.0 / (1.0 + 0.5 * total_mfp)
        ks = c.single @ self.grid_k
        km = multi @ self.grid_k
        n_scat = (bfac - 1.0) * c.k_line / np.maximum(alpha * ks + (1 - alpha) * km, 1e-300)
        coef_s = phi_unc * n_scat * alpha
        coef_m = phi_unc * n_scat * (1 - alpha)
        grid_phi = coef_s @ c.single + coef_m @ multi  # photons/cm2 per decay on the grid
        h_psv = float(phi_unc @ c.h_line + grid_phi @ self.grid_h)  # pSv per decay
        hdot = a * h_psv * dose.PSV_PER_S_TO_USV_PER_H
        if not want_spectrum:
            return np.empty(0), hdot, 0.0
        geom = float(efficiency.solid_angle_fraction(self.spec, d))
        # direct lines: photons on the face per second = A * y * T * Omega/4pi
        line_rate = a * c.yields * trans * geom
        # true-coincidence summing: both photons of a cascade in one detector (close geometry)
        if c.sum_partner:
            loss = np.zeros_like(line_rate)
            sum_rates = np.zeros(len(c.sum_partner))
            for n, (i, j, p) in enumerate(c.sum_partner):
                pi, pj = trans[i] * geom, trans[j] * geom
                sum_rates[n] = a * p * pi * pj * c.sum_eff[n, 0] * c.sum_eff[n, 1]
                loss[i] += p * pj * c.eff_face[j] / max(c.yields[i], 1e-12)
                loss[j] += p * pi * c.eff_face[i] / max(c.yields[j], 1e-12)
            line_rate = line_rate * np.clip(1.0 - loss, 0.0, 1.0)
        out = line_rate @ c.columns
        if c.sum_partner:
            out += sum_rates @ c.sum_columns
        # scattered photons arrive from the shield side, treated as entering the face; the
        # point-kernel fluence (1/4 pi r^2) is converted with the same solid angle as the lines
        out += self.grid_face_resp @ (grid_phi * (a * geom * _FOUR_PI * r_cm * r_cm))
        # lead fluorescence
        pb = transport.lead_xray_yield(layers, e)
        if np.any(pb > 0):
            out += a * geom * float(c.yields @ pb) * self._pb_column
        return out, hdot, geom

    def background_rate_spectrum(
        self,
        dose_rate_usv_h: float,
        k40_bq_kg: float = 400.0,
        u238_bq_kg: float = 35.0,
        th232_bq_kg: float = 30.0,
        cosmic_fraction: float = 0.35,
    ) -> np.ndarray:
        """Expected counts/s per channel of natural background whose total H*(10) is dose_rate_usv_h."""
        h = float(dose_rate_usv_h)
        if not np.isfinite(h) or h < 0:
            raise ValueError(f"dose_rate_usv_h must be >= 0, got {dose_rate_usv_h!r}")
        conc = (float(k40_bq_kg), float(u238_bq_kg), float(th232_bq_kg))
        if any((not np.isfinite(x)) or x < 0 for x in conc) or sum(conc) <= 0:
            raise ValueError(f"soil activity concentrations must be >= 0 and not all zero, got {conc!r}")
        cf = float(cosmic_fraction)
        if not (0.0 <= cf < 1.0):
            raise ValueError(f"cosmic_fraction must be in [0, 1), got {cosmic_fraction!r}")
        key = (*conc, cf)
        shape = self._bg.get(key)
        if shape is None:
            shape = bg.background_per_usv_h(self, *conc, cf)
            with self._lock:
                if len(self._bg) > 64:
                    self._bg.clear()
                self._bg[key] = shape
        return shape * h

    def sample(
        self,
        expected_counts: np.ndarray,
        real_time_s: float,
        rng: np.random.Generator,
        temperature_c: float | None = None,
    ) -> tuple[np.ndarray, float]:
        """Poisson counts after dead time and temperature gain drift; returns (counts, live_time_s)."""
        return counting.sample(self, expected_counts, real_time_s, rng, temperature_c)


@functools.lru_cache(maxsize=32)
def _cached(model: str, n_channels: int, max_energy_kev: float) -> DetectorResponse:
    return DetectorResponse(get_detector(model), n_channels, max_energy_kev)


def apparent_energy_kev(spec: DetectorSpec, energy_kev: np.ndarray) -> np.ndarray:
    """Recorded energy of a deposit on a calibration linear through 662 keV (the spec's non-proportionality)."""
    e = np.asarray(energy_kev, dtype=float)
    if not spec.nonprop:
        return e
    lg = np.log(np.clip(e, 10.0, 3000.0) / 661.657)
    return e * (1.0 + sum(p * lg**k for k, p in enumerate(spec.nonprop)))


def rebin_to_calibration(resp: DetectorResponse, spectrum: np.ndarray, calibration: EnergyCalibration,
                         n_channels: int) -> np.ndarray:
    """Counts of ``spectrum`` (on ``resp``'s channels) on another calibration, conserving counts, with
    the detector's non-proportionality moving each channel to its recorded energy."""
    src_edges = apparent_energy_kev(resp.spec, resp.edges_kev)
    cum = np.concatenate([[0.0], np.cumsum(spectrum)])
    dst_edges = np.clip(calibration.edges_kev(int(n_channels)), src_edges[0], src_edges[-1])
    return np.diff(np.interp(dst_edges, src_edges, cum))


def simulated_base_spectrum(nuclide: str, preset: str, calibration: EnergyCalibration, n_channels: int,
                            distance_m: float = 1.0) -> np.ndarray:
    """Expected source counts per channel (unnormalised shape) of ``nuclide`` in detector ``preset``
    (a catalogue model or an agent preset, e.g. "NaI generic (RASE)") on a measured spectrum's
    calibration: what a RASE-style base spectrum of that source looks like in the simulated detector.
    Unshielded point source at ``distance_m`` (1 MBq; scale it yourself), no background."""
    top = float(calibration.edges_kev(int(n_channels))[-1])
    top_kev = float(np.clip(top * 1.02, 100.0, 20000.0))
    resp = DetectorResponse.for_model(preset, n_channels=2048, max_energy_kev=top_kev)
    rate = resp.source_rate_spectrum(nuclide, 1e6, distance_m)
    return np.maximum(rebin_to_calibration(resp, rate, calibration, n_channels), 0.0)
