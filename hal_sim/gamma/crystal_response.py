"""Energy deposited in a crystal by one photon: full-energy, Compton continuum, escape peaks.

A deterministic transport model (escape-probability / collision-by-collision recursion) rather
than Monte Carlo, so a detector's response is computed in a fraction of a second and is noise-free.
It follows the semi-analytic approach of Berger & Seltzer (NIM 104 (1972) 317) and of GADRAS's
physics-based detector response (Mitchell & Mattingly, SAND2008-6612): every interaction is followed
with the crystal's partial cross-sections (:mod:`hal_sim.gamma.materials`):

* Photoabsorption deposits everything unless the absorbing atom's K x-ray escapes. For the first
  interaction of a beam entering the face the escape probability is
      P_x = 1/2 [1 - (mu_x / mu) ln(1 + mu / mu_x)]
  (semi-infinite medium, isotropic fluorescence; Axel, BNL-271 (1953); Knoll 4th ed. sec. 10.IV.D),
  times omega_K and the K-shell share (1 - 1/J_K): the iodine escape peak of NaI/CsI.
* Compton scattering: recoil energy T from the Klein-Nishina dsigma/dT (Evans, The Atomic Nucleus,
  ch. 23 eq. 2.10); the scattered photon E' = E - T travels along cos(theta) = 1 - mc2 (1/E' - 1/E).
  - First scatter: escape probability averaged over the exponential depth distribution of the first
    interaction in a slab of the crystal's depth, with the path to the exit limited by the front/back
    faces (t - z)/cos(theta) or z/|cos(theta)| and by the side, l_2D / sin(theta) with l_2D = 1.7 A/P
    the mean 2-D escape distance of the face (0.85 R for a disk). This is what makes back-scattered
    photons from the front layer escape easily and sharpens the Compton edge of small crystals.
  - Later scatters start anywhere in the crystal: escape probability from a uniformly distributed
    point of the sphere of equal mean chord (R = 3V/S),
      P_esc(x = mu R) = 3 / (8 x^3) [2 x^2 - 1 + (1 + 2x) exp(-2x)]
    (Case, de Hoffmann & Placzek 1953).
* Pair production (E > 1022 keV): each annihilation photon escapes with P_esc(511), giving the double-
  and single-escape peaks, full absorption, or a partial deposit (spread uniformly between).

The secondary-photon deposit distributions D(E') are built bottom-up on a uniform energy grid
(step h = top/1000) by the exact recursion D(E) = sum over first interaction of [deposit + D(E')
shifted], so multiple Compton scattering fills the valley between Compton edge and peak to all orders.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

from hal_sim.gamma.detectors import DetectorSpec
from hal_sim.gamma.materials import ME_C2_KEV, get_material

_N_DEPTH = 24  # depth quadrature nodes of the first-scatter escape
R_SCALE = 0.75


def kn_electron_pdf(energy_kev: float, t_kev: np.ndarray) -> np.ndarray:
    """Klein-Nishina dsigma/dT (unnormalised) for recoil-electron energy T <= T_max."""
    k = energy_kev / ME_C2_KEV
    s = np.clip(np.asarray(t_kev, dtype=float) / energy_kev, 0.0, 2 * k / (1 + 2 * k))
    one_s = np.maximum(1.0 - s, 1e-12)
    return 2.0 + s * s / (k * k * one_s * one_s) + s / one_s * (s - 2.0 / k)


def sphere_escape(mu_r: np.ndarray) -> np.ndarray:
    x = np.maximum(np.asarray(mu_r, dtype=float), 1e-9)
    val = 3.0 / (8.0 * x**3) * (2 * x * x - 1 + (1 + 2 * x) * np.exp(-2 * x))
    return np.clip(np.where(x < 1e-3, 1 - 0.75 * x, val), 0.0, 1.0)


@njit(cache=True)
def _secondary_kernel(h, tau, sig, kap, pesc, xr_prob, xr_off, i511):  # pragma: no cover - numba
    """F[i] and N[i, k] (probability of a non-full deposit k*h) for a photon of energy i*h that
    starts at a random point inside the crystal."""
    n = tau.size
    me = 510.99895
    f = np.zeros(n)
    nd = np.zeros((n, n))
    for i in range(1, n):
        e = i * h
        xr_tot = 0.0
        for m in range(xr_prob.shape[0]):
            p = xr_prob[m, i]
            if p > 0.0 and i - xr_off[m] > 0:
                nd[i, i - xr_off[m]] += tau[i] * p
                xr_tot += p
        fi = tau[i] * (1.0 - xr_tot)
        if sig[i] > 0.0 and i > 1:
            k = e / me
            tmax = e * 2.0 * k / (1.0 + 2.0 * k)
            jmin = max(1, int(math.ceil((e - tmax) / h - 1e-9)))
            wsum = 0.0
            for j in range(jmin, i):
                s = (i - j) * h / e
                one_s = max(1.0 - s, 1e-12)
                wsum += 2.0 + s * s / (k * k * one_s * one_s) + s / one_s * (s - 2.0 / k)
            if wsum > 0.0:
                for j in range(jmin, i):
                    s = (i - j) * h / e
                    one_s = max(1.0 - s, 1e-12)
                    w = (2.0 + s * s / (k * k * one_s * one_s) + s / one_s * (s - 2.0 / k)) / wsum * sig[i]
                    tb = i - j
                    nd[i, tb] += w * pesc[j]
                    a = w * (1.0 - pesc[j])
                    fi += a * f[j]
                    if a > 1e-15:
                        for kk in range(1, j):
                            v = nd[j, kk]
                            if v != 0.0:
                                nd[i, kk + tb] += a * v
            else:
                fi += sig[i]
        elif sig[i] > 0.0:
            fi += sig[i]
        if kap[i] > 0.0 and i > 2 * i511:
            p = pesc[i511]
            f511 = f[i511]
            de = p * p
            se = 2.0 * p * (1.0 - p) * f511
            full = ((1.0 - p) * f511) ** 2
            rest = max(1.0 - de - se - full, 0.0)
            fi += kap[i] * full
            nd[i, i - 2 * i511] += kap[i] * de
            nd[i, i - i511] += kap[i] * se
            nb = 2 * i511
            for kk in range(i - nb, i):
                nd[i, kk] += kap[i] * rest / nb
        f[i] = fi
    return f, nd


class DepositModel:
    """Deposit distributions of one crystal for photons up to ``top_kev``."""

    def __init__(self, spec: DetectorSpec, top_kev: float = 3500.0, n_grid: int = 1000) -> None:
        self.spec = spec
        c = spec.crystal
        self.med = c.medium
        self.rho = self.med.density_g_cm3
        self.r_eq_cm = R_SCALE * 3 * c.volume_cm3 / c.surface_cm2
        self.depth_cm = c.depth_cm
        perim = 2 * (c.width_cm + c.height_cm) if c.shape == "box" else np.pi * c.width_cm
        self.l2d_cm = 1.7 * c.front_area_cm2 / perim
        # K-fluorescent constituents: (element, mass fraction, edge, x-ray energy, omega, K share)
        self.kshells = []
        for el, w, edge, ex, om in self.med.k_edges():
            m = get_material(el)
            jump = float(m.mu_rho_cm2_g(edge * 1.0001) / m.mu_rho_cm2_g(edge * 0.9999))
            self.kshells.append((el, w, edge, ex, om, 1 - 1 / max(jump, 1.0001)))
        self.h = float(top_kev) / n_grid
        self.x_kev = np.arange(n_grid) * self.h
        e = np.maximum(self.x_kev, 1.0)
        ph, co, pa = self.med.components_cm2_g(e)
        mu = ph + co + pa
        self.i511 = int(round(ME_C2_KEV / self.h))
        xr_prob = np.zeros((max(len(self.kshells), 1), n_grid))
        xr_off = np.zeros(max(len(self.kshells), 1), dtype=np.int64)
        for m, (el, w, edge, ex, om, ksh) in enumerate(self.kshells):
            share = w * get_material(el).mu_rho_cm2_g(e) / mu
            p_int = sphere_escape(self.mu_lin(ex) * self.r_eq_cm)
            xr_prob[m] = np.where(e > edge, share * ksh * om * p_int, 0.0)
            xr_off[m] = int(round(ex / self.h))
        self.f_sec, self.n_sec = _secondary_kernel(
            self.h, ph / mu, co / mu, pa / mu, self.p_esc(e), xr_prob, xr_off, self.i511
        )

    # -- helpers
    def mu_lin(self, e: np.ndarray | float) -> np.ndarray:
        return self.med.mu_rho_cm2_g(e) * self.rho

    def p_esc(self, e: np.ndarray | float) -> np.ndarray:
        return sphere_escape(self.mu_lin(np.asarray(e, dtype=float)) * self.r_eq_cm)

    def xray_escape_face(self, e: float) -> list[tuple[float, float]]:
        """[(x-ray energy, escape probability per photoabsorption)] for a beam entering the face."""
        out = []
        mu_tot = float(self.med.mu_rho_cm2_g(e))
        for el, w, edge, ex, om, kshare in self.kshells:
            if e <= edge:
                continue
            share = w * float(get_material(el).mu_rho_cm2_g(e)) / mu_tot
            ratio = float(self.med.mu_rho_cm2_g(ex)) / mu_tot
            p = 0.5 * (1.0 - ratio * np.log1p(1.0 / ratio))
            out.append((ex, share * kshare * om * p))
        return out

    def first_escape(self, e: float, ep: np.ndarray) -> np.ndarray:
        """Escape probability of the photon scattered to E' at the first interaction (slab model)."""
        mu0 = float(self.mu_lin(e))
        t = self.depth_cm
        u = (np.arange(_N_DEPTH) + 0.5) / _N_DEPTH
        z = -np.log1p(-u * -np.expm1(-mu0 * t)) / mu0  # depth quantiles of the first interaction
        cth = np.clip(1.0 - ME_C2_KEV * (1.0 / ep - 1.0 / e), -1.0, 1.0)
        sth = np.sqrt(np.maximum(1.0 - cth * cth, 1e-12))
        with np.errstate(divide="ignore"):
            axial = np.where(cth[:, None] > 0, (t - z[None, :]) / cth[:, None], z[None, :] / -cth[:, None])
        lateral = self.l2d_cm / sth[:, None]
        path = np.minimum(np.abs(axial), lateral)
        mu1 = self.mu_lin(ep)[:, None]
        return np.exp(-mu1 * path).mean(axis=1)

    def fractions(self, e: float) -> tuple[float, float, float]:
        """(tau, sigma, kappa) / mu at energy e."""
        ph, co, pa = self.med.components_cm2_g(e)
        mu = float(ph[0] + co[0] + pa[0])
        return float(ph[0]) / mu, float(co[0]) / mu, float(pa[0]) / mu

    # -- primary photon (beam entering the face)
    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one model per detector, kept for its lifetime
    def primary(self, e: float) -> tuple[float, tuple[tuple[float, float], ...], np.ndarray]:
        """(full-energy probability F, sharp escape deposits [(keV, prob)], continuum prob per bin
        of width h at x_kev) per interacting photon of energy ``e``. Everything sums to 1."""
        h = self.h
        n = self.x_kev.size
        cont = np.zeros(n)
        tau, sig, kap = self.fractions(e)
        xes = self.xray_escape_face(e)
        xr_tot = sum(p for _, p in xes)
        f = tau * (1 - xr_tot)
        peaks = [(e - ex, tau * p) for ex, p in xes if e - ex > 0]
        k = e / ME_C2_KEV
        tmax = e * 2 * k / (1 + 2 * k)
        nt = int(tmax / h)
        if sig > 0 and nt >= 1 and e / h < n:
            t = np.arange(1, nt + 1) * h
            w = kn_electron_pdf(e, t)
            w = w / w.sum() * sig
            ep = e - t
            j = np.clip(np.rint(ep / h).astype(int), 1, n - 1)
            p1 = self.first_escape(e, ep)
            f += float(np.dot(w * (1 - p1), self.f_sec[j]))
            tb = np.arange(1, nt + 1)
            np.add.at(cont, tb, w * p1)
            a = w * (1 - p1)
            for kk in range(nt):
                if a[kk] > 1e-15:
                    jj = j[kk]
                    hi = min(tb[kk] + jj, n)
                    cont[tb[kk] : hi] += a[kk] * self.n_sec[jj, : hi - tb[kk]]
        else:
            f += sig
        if kap > 0:
            p = float(self.p_esc(511.0))
            f511 = float(self.f_sec[self.i511])
            de, se = p * p, 2 * p * (1 - p) * f511
            full = ((1 - p) * f511) ** 2
            f += kap * full
            peaks += [(e - 2 * ME_C2_KEV, kap * de), (e - ME_C2_KEV, kap * se)]
            rest = kap * max(1 - de - se - full, 0.0)
            lo, hi = int((e - 2 * ME_C2_KEV) / h), min(int(e / h), n)
            if hi > lo:
                cont[lo:hi] += rest / (hi - lo)
        return f, tuple(peaks), cont

    def f_at(self, e: float) -> float:
        return self.primary(float(e))[0]

    def deposits(self, e: float, dep_kev: np.ndarray) -> tuple[list[tuple[float, float]], np.ndarray]:
        """([(energy, probability)] sharp deposits incl. the full-energy peak, continuum density per
        keV at ``dep_kev``) per interacting photon."""
        f, peaks, cont = self.primary(float(e))
        dens = np.interp(np.asarray(dep_kev, dtype=float), self.x_kev, cont / self.h, left=0.0, right=0.0)
        return [(float(e), f), *peaks], dens
