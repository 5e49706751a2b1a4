"""Physics tests of the gamma detector simulator (hal_sim.gamma) against published reference data.

The reference numbers come from ../shared/reference (NIST, ICRP 74, InterSpec/GADRAS) and the real
RadiaCode-102 spectrum in ../shared/spectra; the simulator itself carries its own copies.
Peaks are measured the way an analyst would: a least-squares fit of Gaussians on a linear
background. All randomness is seeded.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from lxml import etree
from numba import njit
from scipy.optimize import curve_fit

from hal_sim.gamma import NUCLIDES, DetectorResponse, get_material, transport
from hal_sim.gamma import dose as gdose
from hal_sim.gamma.crystal_response import DepositModel
from hal_sim.gamma.detectors import get_detector

SHARED = Path(__file__).resolve().parents[2] / "shared"
REF = SHARED / "reference"
N42_NS = {"n": "http://physics.nist.gov/N42/2011/N42"}

CSI_POCKET = "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)"


# ----------------------------------------------------------------------------- helpers
def _rows(name: str) -> list[dict[str, str]]:
    with open(REF / name, newline="") as fh:
        return list(csv.DictReader(fh))


def ref_mu_rho(material: str, energy_kev: float) -> float:
    """mu/rho from the reference mass_attenuation.csv, log-log interpolated."""
    t = np.array([(float(r["energy_keV"]), float(r["mu_over_rho_cm2_g"]))
                  for r in _rows("mass_attenuation.csv") if r["material"] == material])
    return float(np.exp(np.interp(np.log(energy_kev), np.log(t[:, 0]), np.log(t[:, 1]))))


def fit_peaks(e_kev, density, centers, fwhm_kev, weights=None):
    """Fit sum of Gaussians + linear background within [min-1.6 FWHM, max+1.6 FWHM].

    Returns [(centroid keV, FWHM keV, area)] with area in the units of density * keV."""
    lo, hi = min(centers) - 1.6 * fwhm_kev, max(centers) + 1.6 * fwhm_kev
    sel = (e_kev > lo) & (e_kev < hi)
    x, y = e_kev[sel], density[sel]
    xm = x.mean()

    def model(x, *p):
        out = p[0] + p[1] * (x - xm)
        for i in range(len(centers)):
            a, c, w = p[2 + 3 * i: 5 + 3 * i]
            out = out + a * np.exp(-0.5 * ((x - c) / (w / 2.35482)) ** 2)
        return out

    p0 = [float(y.min()), 0.0]
    for c in centers:
        p0 += [float(y[np.argmin(abs(x - c))] - y.min()), c, fwhm_kev]
    sigma = None if weights is None else weights[sel]
    p, _ = curve_fit(model, x, y, p0=p0, sigma=sigma, maxfev=20000)
    out = []
    for i in range(len(centers)):
        a, c, w = p[2 + 3 * i: 5 + 3 * i]
        out.append((float(c), abs(float(w)), float(a * abs(w) / 2.35482 * np.sqrt(2 * np.pi))))
    return out


def peak_area(resp: DetectorResponse, spectrum: np.ndarray, centers, which: int = 0) -> float:
    fw = float(resp.spec.resolution.fwhm_kev(np.mean(centers)))
    return fit_peaks(resp.centers_kev, spectrum / resp.widths_kev, list(centers), fw)[which][2]


@pytest.fixture(scope="module")
def nai3():
    return DetectorResponse.for_model("NaI 3x3 in")


@pytest.fixture(scope="module")
def labr():
    return DetectorResponse.for_model("LaBr3")


@pytest.fixture(scope="module")
def csi():
    return DetectorResponse.for_model(CSI_POCKET)


# ----------------------------------------------------------------------------- data and API
def test_line_library_has_the_22_sources_with_reference_lines():
    names = {"Cs-137", "Co-60", "Am-241", "Ba-133", "Ir-192", "Se-75", "Eu-152", "Co-57", "Na-22", "Mn-54",
             "Cs-134", "I-131", "Tc-99m", "F-18", "Ga-67", "Tl-201", "K-40", "Ra-226", "Th-232", "U-235",
             "U-238", "Pu-239"}
    assert names <= set(NUCLIDES)
    for r in _rows("gamma_lines.csv"):  # every reference line is in the library with its yield
        nuc = NUCLIDES[r["source"].split()[0]]
        i = int(np.argmin(abs(nuc.energies_kev - float(r["energy_keV"]))))
        assert nuc.energies_kev[i] == pytest.approx(float(r["energy_keV"]))
        assert nuc.yields_per_decay[i] == pytest.approx(float(r["photons_per_100_decays"]) / 100)
    assert NUCLIDES["Cs-137"].half_life_s == pytest.approx(30.17 * 365.25 * 86400)
    assert NUCLIDES["F-18"].yields_per_decay[NUCLIDES["F-18"].energies_kev == 511.0][0] == pytest.approx(1.90)


def test_bad_input_gives_clear_errors(nai3):
    with pytest.raises(ValueError, match="NaI 2x2 in"):
        DetectorResponse.for_model("NaI 9x9 in")
    with pytest.raises(ValueError, match="Cs-137"):
        nai3.source_rate_spectrum("Cs-999", 1e6, 1.0)
    with pytest.raises(ValueError, match="lead"):
        nai3.source_rate_spectrum("Cs-137", 1e6, 1.0, [("unobtainium", 1.0)])
    with pytest.raises(ValueError, match="distance_m"):
        nai3.source_rate_spectrum("Cs-137", 1e6, 0.0)
    with pytest.raises(ValueError, match="activity_bq"):
        nai3.source_rate_spectrum("Cs-137", -1.0, 1.0)
    with pytest.raises(ValueError, match="areal density"):
        nai3.source_rate_spectrum("Cs-137", 1e6, 1.0, [("iron", -2.0)])
    with pytest.raises(ValueError, match="shape"):
        nai3.sample(np.ones(10), 1.0, np.random.default_rng(0))


def test_api_shapes_and_calibration(nai3):
    s = nai3.source_rate_spectrum("Cs-137", 1e6, 2.0, [("steel", 1.6), ("organic", 10.0)])
    assert s.shape == (1024,) and s.dtype == np.float64 and np.all(s >= 0)
    cal = nai3.calibration
    assert cal.energy_kev(1023.5) == pytest.approx(3000.0, rel=1e-9)
    assert cal.coefficients_kev[2] > 0  # gently non-linear, like a real PMT chain
    assert DetectorResponse.for_model("NaI 3x3 in") is nai3  # cached instance, shared by units


def test_attenuation_data_equal_the_reference_table():
    for r in _rows("mass_attenuation.csv"):
        got = float(get_material(r["material"]).mu_rho_cm2_g(float(r["energy_keV"])))
        assert got == pytest.approx(float(r["mu_over_rho_cm2_g"]), rel=1e-3), r


def test_air_transmission_at_662_kev_matches_reference_figures():
    # README: mu = 0.0093 /m at 662 keV; transmission 0.91 at 10 m and 0.63 at 50 m
    mu_per_m = ref_mu_rho("air", 661.66) * 0.001205 * 100
    assert mu_per_m == pytest.approx(0.0093, abs=0.0002)
    for d, t_ref in ((10.0, 0.91), (50.0, 0.63)):
        t, b = transport.transmission_and_buildup([("air", transport.air_g_cm2(d))], np.array([661.66]))
        assert t[0] == pytest.approx(t_ref, abs=0.01)
        assert 1.0 < b[0] < 1.0 + 2.5 * (1 - t[0])  # GP build-up of a thin air layer: ~1 + (b-1) mfp


# ----------------------------------------------------------------------------- peaks
@pytest.mark.parametrize("model", ["NaI 1x1 in", "NaI 2x2 in", "NaI 3x3 in", "NaI 2x4x16 in log", "LaBr3",
                                   "CZT 1 cm3", CSI_POCKET, "CsI(Tl) small handheld (D3S class)"])
def test_cs137_peak_centroid_and_fwhm_match_detector_resolution_csv(model):
    ref = {r["detector"]: float(r["fwhm_662_keV"]) for r in _rows("detector_resolution.csv")}
    resp = DetectorResponse.for_model(model)
    rng = np.random.default_rng(11)
    counts, live = resp.sample(resp.source_rate_spectrum("Cs-137", 1e7, 1.0) * 600.0, 600.0, rng)
    dens = counts / resp.widths_kev
    (c, fwhm, _), = fit_peaks(resp.centers_kev, dens, [661.66], ref[model],
                              weights=np.sqrt(np.maximum(counts, 1)) / resp.widths_kev)
    assert c == pytest.approx(661.66, rel=0.005)
    assert fwhm == pytest.approx(ref[model], rel=0.03)


def test_co60_fwhm_follows_gad_power_law_and_line_ratio_is_one(labr):
    # FWHM at 1332 keV = 6.61 b (E/661)^c (the GAD form above 661 keV) with LaBr3 b=3.0, c=0.55
    s = labr.source_rate_spectrum("Co-60", 1e6, 1.0)
    res = fit_peaks(labr.centers_kev, s / labr.widths_kev, [1173.23, 1332.49], 30.0)
    assert res[1][1] == pytest.approx(6.61 * 3.0 * (1332.49 / 661.0) ** 0.55, rel=0.03)
    eff = labr.full_energy_efficiency([1173.23, 1332.49])
    ratio = (res[0][2] / eff[0]) / (res[1][2] / eff[1])  # efficiency-corrected 1173/1332
    assert ratio == pytest.approx(0.998 / 1.000, rel=0.04)


def test_ba133_356_to_81_ratio_is_yields_times_efficiency(labr):
    s = labr.source_rate_spectrum("Ba-133", 1e6, 1.0)
    e, d = labr.centers_kev, s / labr.widths_kev
    a81 = fit_peaks(e, d, [80.9], float(labr.spec.resolution.fwhm_kev(81.0)))[0][2]
    a356 = fit_peaks(e, d, [302.85, 356.02, 383.85], float(labr.spec.resolution.fwhm_kev(356.0)))[1][2]
    eff = labr.full_energy_efficiency([356.02, 81.00, 79.61])
    expected = 0.620 * eff[0] / (0.341 * eff[1] + 0.0262 * eff[2])  # 79.6 keV is unresolved from 81
    assert a356 / a81 == pytest.approx(expected, rel=0.05)


def test_count_rate_falls_as_inverse_square_times_air_attenuation(nai3):
    a1 = peak_area(nai3, nai3.source_rate_spectrum("Cs-137", 1e7, 1.0), [661.66])
    a10 = peak_area(nai3, nai3.source_rate_spectrum("Cs-137", 1e7, 10.0), [661.66])
    air = np.exp(-ref_mu_rho("air", 661.66) * 0.001205 * 900.0)
    assert a10 / a1 == pytest.approx(0.01 * air, rel=0.01)


@pytest.mark.parametrize(("material", "ref_material", "density", "cm"),
                         [("iron", "iron", 7.874, 1.0), ("iron", "iron", 7.874, 5.0),
                          ("concrete", "concrete_ordinary", 2.3, 10.0)])
def test_full_energy_peak_follows_narrow_beam_attenuation(nai3, material, ref_material, density, cm):
    """Peak area ratio = exp(-mu/rho * rho x) with mu/rho from the reference table. The tolerance
    (4 %) covers the fit of a peak sitting on the build-up continuum of the shield."""
    a0 = peak_area(nai3, nai3.source_rate_spectrum("Cs-137", 1e7, 1.0), [661.66])
    a = peak_area(nai3, nai3.source_rate_spectrum("Cs-137", 1e7, 1.0, [(material, density * cm)]), [661.66])
    assert a / a0 == pytest.approx(np.exp(-ref_mu_rho(ref_material, 661.66) * density * cm), rel=0.04)


def test_shielding_adds_scattered_continuum_and_lead_xrays(labr):
    bare = labr.source_rate_spectrum("Ir-192", 1e6, 1.0)
    lead = labr.source_rate_spectrum("Ir-192", 1e6, 1.0, [("lead", 3.4)])  # 3 mm Pb
    water = labr.source_rate_spectrum("Cs-137", 1e6, 1.0, [("water", 30.0)])
    e = labr.centers_kev

    def win(s, lo, hi):
        return float(s[(e >= lo) & (e < hi)].sum())

    # Pb K x-rays (72.8-87.3 keV) stand out of the continuum behind lead
    assert win(lead, 71, 89) > 1.5 * 0.5 * (win(lead, 53, 71) + win(lead, 89, 107))
    assert win(lead, 71, 89) > 3 * win(bare, 71, 89) * np.exp(-5.0 * 3.4)  # not just attenuated Ir x-rays
    # 30 cm of water: the down-scattered photons dominate the count rate below the Compton edge
    peak = win(water, 620, 700)
    assert win(water, 50, 450) > 2 * peak


# ----------------------------------------------------------------------------- crystal physics
@njit(cache=True)
def _mc_photofraction(e0, n, radius, length, log_e, mu_lin, p_photo, p_pair, seed):  # pragma: no cover
    """Analogue Monte Carlo of a pencil-uniform beam on a cylinder face (photoabsorption, Klein-
    Nishina Compton via Kahn's sampling, pair + annihilation), same cross-sections as the model."""
    np.random.seed(seed)
    full = 0
    hit = 0
    for _ in range(n):
        while True:
            x = (2 * np.random.random() - 1) * radius
            y = (2 * np.random.random() - 1) * radius
            if x * x + y * y < radius * radius:
                break
        stack = np.zeros((8, 7))
        stack[0] = (x, y, 0.0, 0.0, 0.0, 1.0, e0)
        ns = 1
        dep = 0.0
        while ns > 0:
            ns -= 1
            x, y, z, ux, uy, uz, e = stack[ns]
            while True:
                le = np.log(e)
                mu = np.exp(np.interp(le, log_e, np.log(mu_lin)))
                s = -np.log(np.random.random()) / mu
                x += ux * s
                y += uy * s
                z += uz * s
                if z < 0 or z > length or x * x + y * y > radius * radius:
                    break
                r = np.random.random()
                pp = np.interp(le, log_e, p_photo)
                pa = np.interp(le, log_e, p_pair)
                if r < pp:
                    dep += e
                    break
                if r < pp + pa:
                    dep += e - 1021.998
                    cz = 2 * np.random.random() - 1
                    ph = 2 * np.pi * np.random.random()
                    sz = np.sqrt(1 - cz * cz)
                    stack[ns] = (x, y, z, sz * np.cos(ph), sz * np.sin(ph), cz, 511.0)
                    stack[ns + 1] = (x, y, z, -sz * np.cos(ph), -sz * np.sin(ph), -cz, 511.0)
                    ns += 2
                    break
                k = e / 510.99895
                while True:
                    r1, r2, r3 = np.random.random(), np.random.random(), np.random.random()
                    if r1 <= (1 + 2 * k) / (9 + 2 * k):
                        xi = 1 + 2 * k * r2
                        if r3 <= 4 * (1 / xi - 1 / xi**2):
                            break
                    else:
                        xi = (1 + 2 * k) / (1 + 2 * k * r2)
                        c = 1 - (xi - 1) / k
                        if r3 <= 0.5 * (c * c + 1 / xi):
                            break
                ep = e / xi
                dep += e - ep
                cth = min(1.0, max(-1.0, 1 - 510.99895 * (1 / ep - 1 / e)))
                sth = np.sqrt(1 - cth * cth)
                ph = 2 * np.pi * np.random.random()
                if abs(uz) > 0.99999:
                    nx, ny, nz = sth * np.cos(ph), sth * np.sin(ph), cth * np.sign(uz)
                else:
                    den = np.sqrt(1 - uz * uz)
                    nx = sth * (ux * uz * np.cos(ph) - uy * np.sin(ph)) / den + ux * cth
                    ny = sth * (uy * uz * np.cos(ph) + ux * np.sin(ph)) / den + uy * cth
                    nz = -sth * np.cos(ph) * den + uz * cth
                ux, uy, uz, e = nx, ny, nz, ep
        if dep > 0:
            hit += 1
            if abs(dep - e0) < 1.0:
                full += 1
    return full / max(hit, 1)


@pytest.mark.parametrize(("model", "energy"), [("NaI 3x3 in", 661.66), ("NaI 1x1 in", 661.66),
                                               ("NaI 3x3 in", 2614.5)])
def test_deterministic_photofraction_agrees_with_analogue_monte_carlo(model, energy):
    """The escape-probability recursion (no random numbers) against an analogue MC with the same
    cross-sections: the photofraction (peak-to-total per interaction) agrees within 5 %."""
    spec = get_detector(model)
    dm = DepositModel(spec)
    grid = np.geomspace(10.0, 10000.0, 400)
    ph, co, pa = dm.med.components_cm2_g(grid)
    mu = ph + co + pa
    radius = np.sqrt(spec.crystal.front_area_cm2 / np.pi)
    f_mc = _mc_photofraction(energy, 40000, radius, spec.crystal.depth_cm, np.log(grid), mu * dm.rho,
                             ph / mu, pa / mu, 7)
    assert dm.f_at(energy) == pytest.approx(f_mc, rel=0.05)


def test_escape_peaks_and_iodine_escape():
    dm = DetectorResponse.for_model("NaI 3x3 in").deposit
    _, peaks, _ = dm.primary(2614.5)
    e = dict(peaks)
    assert e[2614.5 - 1021.99790] > 0 and e[2614.5 - 510.99895] > 0  # double and single escape
    # iodine K x-ray escape below 59.5 keV in NaI: a few % of photoabsorptions (Knoll fig. 10.15)
    _, peaks, _ = dm.primary(59.54)
    p_esc = sum(p for en, p in peaks if 25 < en < 35)
    assert 0.01 < p_esc < 0.15


def test_true_coincidence_sum_peak_of_co60_close_to_detector(nai3):
    s = nai3.source_rate_spectrum("Co-60", 1e5, 0.05)
    (c, _, area), = fit_peaks(nai3.centers_kev, s / nai3.widths_kev, [2505.7], 80.0)
    assert c == pytest.approx(2505.7, rel=0.01)
    far = nai3.source_rate_spectrum("Co-60", 1e5 * 400, 1.0)  # same 1332 rate at 20x distance
    assert area > 20 * peak_area(nai3, far, [2505.7])  # summing scales as solid angle squared


# ----------------------------------------------------------------------------- dose
def test_true_dose_rate_matches_reference_constants(nai3):
    """H*(10) rate constant versus dose_rate_constants.csv (point source, no air, no build-up: the
    simulator is evaluated at 1 cm, where air does not matter, and scaled by r^2 to 1 m).

    The reference sums the tabulated lines only; our library adds lines the short table lacks.
    Below 20 keV (Np L x-rays of Am-241, Co-57 14.4 keV) they are subtracted here, since the
    reference left them out. The reference sums every line of InterSpec's PhotoPeak.lis >= 20 keV;
    for U-235/U-238 the library carries those lines too (extra_lines.csv), e.g. Th-231 25.65 keV."""
    extra_low = {}
    with open(Path(gdose.__file__).parent / "data" / "extra_lines.csv") as fh:
        for r in csv.DictReader(ln for ln in fh if not ln.startswith("#")):
            if float(r["energy_keV"]) < 20:
                h = float(gdose.hstar10_per_fluence_psv_cm2(float(r["energy_keV"])))
                extra_low[r["source"]] = extra_low.get(r["source"], 0.0) + float(r["photons_per_100_decays"]) / 100 * h
    for r in _rows("dose_rate_constants.csv"):
        name = r["source"].split()[0]
        ref = float(r["hstar10_rate_constant_uSv_m2_per_MBq_h"])
        got = nai3.true_dose_rate_usv_h(name, 1e6, 0.01) * 0.01**2
        got -= extra_low.get(name, 0.0) * 1e6 / (4 * np.pi * 1e4) * gdose.PSV_PER_S_TO_USV_PER_H
        assert got == pytest.approx(ref, rel=0.06 if name in ("Th-232",) else 0.05), name


def test_dose_buildup_behind_a_shield(nai3):
    bare = nai3.true_dose_rate_usv_h("Cs-137", 1e9, 2.0)
    shielded = nai3.true_dose_rate_usv_h("Cs-137", 1e9, 2.0, [("lead", 11.35 * 2)])  # 2 cm Pb
    t = np.exp(-float(get_material("lead").mu_rho_cm2_g(661.66)) * 22.7)
    assert t < shielded / bare < 2.5 * t  # uncollided x B, with B(Pb, 662 keV, ~2.7 mfp) ~ 1.5


# ----------------------------------------------------------------------------- counting
def test_poisson_mean_and_variance(nai3):
    rng = np.random.default_rng(3)
    exp = nai3.background_rate_spectrum(0.08) * 1.0
    totals = np.array([nai3.sample(exp, 1.0, rng)[0].sum() for _ in range(400)])
    mu = exp.sum() * np.exp(-exp.sum() * nai3.spec.dead_time_s)
    assert totals.mean() == pytest.approx(mu, abs=4 * np.sqrt(mu / 400))
    assert totals.var() / totals.mean() == pytest.approx(1.0, abs=0.2)
    counts, _ = nai3.sample(exp * 50, 50.0, rng)
    assert counts.dtype == np.int64


def test_dead_time_reduces_live_time_paralyzable():
    log = DetectorResponse.for_model("NaI 2x4x16 in log")
    rate = log.source_rate_spectrum("Cs-137", 4e9, 3.0)
    n = rate.sum()
    counts, live = log.sample(rate * 2.0, 2.0, np.random.default_rng(5))
    assert live == pytest.approx(2.0 * np.exp(-n * log.spec.dead_time_s), rel=1e-9)
    assert live < 2.0
    assert counts.sum() == pytest.approx(n * live, rel=0.01)


def test_gain_drift_with_temperature_moves_the_peak(nai3):
    rate = nai3.source_rate_spectrum("Cs-137", 1e7, 1.0) * 100
    rng = np.random.default_rng(9)
    c20, _ = nai3.sample(rate, 100.0, rng, temperature_c=20.0)
    c30, _ = nai3.sample(rate, 100.0, rng, temperature_c=30.0)
    e, w = nai3.centers_kev, nai3.widths_kev
    p20 = fit_peaks(e, c20 / w, [661.66], 42.0)[0][0]
    p30 = fit_peaks(e, c30 / w, [661.66 * 0.97], 42.0)[0][0]
    assert p30 / p20 == pytest.approx(1 - 0.003 * 10, abs=0.003)  # NaI -0.3 %/degC
    assert c30.sum() == pytest.approx(c20.sum(), rel=0.01)


# ----------------------------------------------------------------------------- background
def test_background_rates_are_plausible_and_scale_with_dose():
    nai2 = DetectorResponse.for_model("NaI 2x2 in")
    b = nai2.background_rate_spectrum(0.08)
    assert np.allclose(nai2.background_rate_spectrum(0.16), 2 * b)
    # 2x2 in NaI in an ordinary outdoor field (0.08 uSv/h ~ 7 uR/h): order 100 cps above ~25 keV
    # (Ludlum 44-10 class probes read a few thousand to ~10^4 cpm in normal background).
    assert 60 < b.sum() < 250
    # the same detector's Cs-137 sensitivity: README/ Ludlum 44-10 data sheet ~15 cps per uR/h
    h = nai2.true_dose_rate_usv_h("Cs-137", 1e6, 1.0)
    kerma_ugy_h = h / (gdose.hstar10_per_fluence_psv_cm2(661.66) / gdose.air_kerma_per_fluence_pgy_cm2(661.66))
    ur_h = float(kerma_ugy_h) / 0.00877  # 1 R = 8.77 mGy air kerma
    assert nai2.source_rate_spectrum("Cs-137", 1e6, 1.0).sum() / ur_h == pytest.approx(15.0, rel=0.25)
    # K-40 1461 keV line on the terrestrial continuum
    (c, _, _), = fit_peaks(nai2.centers_kev, b / nai2.widths_kev, [1460.8], 70.0)
    assert c == pytest.approx(1460.8, rel=0.01)


def test_pocket_csi_background_matches_readme_figure(csi):
    # README: a pocket 1 cm3 CsI(Tl) counts about 6 cps at 0.05 uSv/h. The model gives ~3.7 cps;
    # accepted within a factor of 2 (site radon, the device's own dose calibration, and the
    # scattered-continuum model all enter).
    assert 3.0 < csi.background_rate_spectrum(0.05).sum() < 12.0


# ----------------------------------------------------------------------------- real spectrum
def _read_radiacode():
    doc = etree.parse(str(SHARED / "spectra" / "radiacode102_am241.n42"))
    counts = np.array(doc.findtext(".//n:ChannelData", namespaces=N42_NS).split(), dtype=float)
    coef = np.array(doc.findtext(".//n:EnergyCalibration/n:CoefficientValues", namespaces=N42_NS).split(), float)
    live_iso = doc.findtext(".//n:LiveTimeDuration", namespaces=N42_NS)
    live_s = float(live_iso.removeprefix("PT").removesuffix("S"))
    e = np.polynomial.polynomial.polyval(np.arange(counts.size), coef)
    return counts, e, np.gradient(e), live_s


def test_am241_pocket_csi_against_real_radiacode102_spectrum(csi):
    """Simulated 1 cm3 CsI Am-241 spectrum vs the RadiaCode-102 measurement (613 s live).

    Tolerances and why:
    * centroid within 4 keV: the device's own quadratic calibration and CsI(Tl) non-proportional
      light yield (~5 % excess at 60 keV, Syntfeld-Kazuch et al., IEEE TNS 55 (2008) 1246) put the
      measured 59.5 keV peak at ~61 keV; the simulator is proportional;
    * FWHM within 15 %: the generic row (9.1 % at 662 keV, power 0.5) predicts ~18 keV at 59.5 keV,
      a given unit scatters by ~10 %;
    * shape: valley (36-44 keV) to peak (50-70 keV) ratio within a factor 3, both well below 0.1
      (the valley is fed by the Np L x-ray group, whose strength depends on the source capsule);
    * background continuum shape above 300 keV (no Am-241 lines, no pile-up there): the fractions in
      300-700 / 700-1500 / 1500-2800 keV agree within 25 %.
    """
    counts, em, wm, live_s = _read_radiacode()
    assert live_s == pytest.approx(613.0)
    (cm, fm, _), = fit_peaks(em, counts / wm, [59.5], 18.0, weights=np.sqrt(np.maximum(counts, 1)) / wm)
    s = csi.source_rate_spectrum("Am-241", 4e4, 0.05)
    e = csi.centers_kev
    (cs, fs, _), = fit_peaks(e, s / csi.widths_kev, [59.54], 18.0)
    assert abs(cm - cs) < 4.0
    assert fs == pytest.approx(fm, rel=0.15)

    def win(energy, y, lo, hi):
        return float(y[(energy >= lo) & (energy < hi)].sum())

    v_meas = win(em, counts, 36, 44) / win(em, counts, 50, 70)
    v_sim = win(e, s, 36, 44) / win(e, s, 50, 70)
    assert v_meas < 0.1 and v_sim < 0.1
    assert 1 / 3 < v_sim / v_meas < 3
    b = csi.background_rate_spectrum(0.1)
    bands = [(300, 700), (700, 1500), (1500, 2800)]
    f_meas = np.array([win(em, counts, lo, hi) for lo, hi in bands])
    f_sim = np.array([win(e, b, lo, hi) for lo, hi in bands])
    np.testing.assert_allclose(f_sim / f_sim.sum(), f_meas / f_meas.sum(), rtol=0.25)
