"""Nuclide identification: Poisson template fits, model selection and posterior confidences.

Method (the full-spectrum template approach of GADRAS-style identifiers — Sandia's Gamma Detector
Response and Analysis Software fits non-negative combinations of computed source spectra — with the
model-selection view of Kass & Raftery, "Bayes factors", JASA 90 (1995) 773):

1. The spectrum n (analysis bins) is modelled as ``mu = beta*B + sum_j c_j N_j + sum_k a_k T_k``:
   B the measured background (its shape, scaled by live time), N_j a few smooth non-negative
   continuum terms (absorb scatter from shields/cargo/ground and small background changes — they
   are too broad to mimic a peak), T_k library templates (detector response of each source, with
   steel/lead-shielded variants). All coefficients >= 0, fitted by Poisson maximum likelihood.
2. Hypotheses: background only, each single source, pairs. Every template is first screened by
   Rao's score test against the background fit with the background terms profiled out; the best
   few sources are refitted jointly with the background (unshielded and best shielded variant, and
   the two mixed), then paired with each other and — forward selection — with the sources that
   screen best on top of the best single-source fit.
3. Model selection by penalised likelihood, read as an approximate posterior (BIC/Laplace weights):
   ``w_M ~ prior_M * exp(lnL_M - penalty * k_M / 2)``. A source's confidence is the total posterior
   of the models that contain it; it is reported when that exceeds ``report_confidence``. With no
   source the result is "background only".

Robustness: bins are weighted by 1 / (1 + f^2 n) for a relative template uncertainty f (3 %, 10 %
without a measured background), so DRF mismatch under 10^5 counts does not pass for a second source.

The penalty and priors are settings; the defaults were chosen for a background-only false
identification rate of about 1 % per spectrum on simulated data with seeds separate from the
benchmark's (see docs/spectra_benchmark.md).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import numpy as np

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.binning import AnalysisBins, make_bins
from agent.spectral.detector import DetectorModel
from agent.spectral.fitting import fit_many, fit_nonneg_prior, poisson_loglik, score_test
from agent.spectral.library import NuclideLibrary, default_library
from agent.spectral.line_check import unconfirmed_secondaries
from agent.spectral.peaks import peak_search_for
from agent.spectral.residual_lines import (
    lines_as_predicted,
    lines_consistent,
    own_line_seen,
    strongest_unexplained,
)
from agent.spectral.response import DEFAULT_SHIELDS, TemplateSet, build_templates, response_table
from agent.spectral.snm_check import SNM_NAMES
from agent.spectral.unidentified_peaks import (
    NetPeak,
    background_response,
    escape_peaks_kev,
    net_peaks,
    unidentified,
)

NORM_SOURCES = ("K-40", "Ra-226", "Th-232")
# Sources seen only as a continuum (bremsstrahlung, fission gammas): no line can confirm them, and a smooth
# template soaks up any other source's scatter misfit, so they are named only alone.
CONTINUUM_SOURCES = ("Sr-90", "Cf-252")


@dataclass(frozen=True, slots=True)
class IdentifierSettings:
    penalty: float = 5.0  # per source amplitude, in units of 2 lnL (BIC-like Occam factor)
    prior_background_only: float = 0.5
    prior_single: float = 0.4  # shared by all single-source hypotheses
    prior_pair: float = 0.1  # shared by all pairs
    report_confidence: float = 0.5
    n_candidates: int = 5  # sources refitted jointly and paired
    n_second: int = 4  # extra partners for the best source, screened on top of its fit
    n_variants: int = 2  # variants refitted per candidate: unshielded + the best-scoring shielded ones
    mix_shield_variants: bool = True  # also fit the two best variants together (intermediate thickness)
    # no refits when no template's score reaches this fraction of the 2 lnL a single source needs
    # to be reported (penalty + prior odds): a background-only second costs a screening only
    screen_gate_fraction: float = 0.5
    n_continuum_terms: int = 3
    n_continuum_terms_no_background: int = 6  # the whole continuum must then be modelled
    max_energy_kev: float = 3000.0
    min_energy_kev: float | None = None  # None: the detector table's trusted minimum
    shields: tuple[tuple[str, float], ...] = DEFAULT_SHIELDS
    max_iter: int = 40
    # Gaussian priors when a measured background is given: its scale within background_sigma of the
    # live-time expectation, each continuum term about 0 +- continuum_sigma of the background counts
    background_sigma: float = 0.05
    # relative systematic uncertainty of the templates (DRF accuracy): bins are weighted by
    # 1 / (1 + f^2 n), the variance-inflation of a Poisson count with a relative model error f, so a
    # few-per-cent template mismatch under 10^5 counts does not pass for a second source
    template_systematic: float = 0.03
    # without a measured background the K/U/Th background is itself modelled from templates and the
    # unit's real response may differ from the fitted DRF (e.g. CsI non-proportionality): larger f
    template_systematic_no_background: float = 0.10
    continuum_sigma: float = 0.03
    # a nuclide named next to a stronger one must show a peak at one of its own distinctive lines
    # (agent.spectral.line_check); None disables the check
    confirm_secondary_min_snr: float | None = 3.0
    excess_continuum_sigma: float = 1.0
    # "knows when it does not know": a net peak no named nuclide explains makes the outcome "unknown /
    # unidentified lines" (agent.spectral.unidentified_peaks); a second source, and SNM always, needs a net
    # line of its own over the model without it (agent.spectral.residual_lines), the model uncertain by
    # residual_systematic (relative)
    residual_systematic: float = 0.10
    unknown_peak_snr: float = 6.0  # net peak significance that must be explained
    unknown_tolerance_fwhm: float = 1.0  # how far from an expected feature a peak may sit
    unknown_min_share: float = 0.01  # of the net counts: ignore tiny peaks on strong sources (sum peaks, edges)
    snm_min_z: float = 4.0
    secondary_min_z: float = 4.0  # a second source's own line over the model without it
    # the leading line-emitting source must show its own lines too, and none it predicts clearly may be
    # missing (residual_lines.lines_consistent at this z); when it fails the outcome is "unknown" and
    # the name is withdrawn. None disables the check
    # (thresholds chosen on the RASE tuning seed 7770001, docs/rase_benchmark.md)
    primary_min_z: float | None = 3.0
    primary_min_fraction: float = 0.2
    quasi_likelihood: bool = False  # scale likelihood differences by the best fit's dispersion (see identify)


@dataclass(frozen=True, slots=True)
class NuclideID:
    name: str
    label: str
    category: str
    confidence: float  # posterior probability that the source is present (0-1)
    counts: float  # fitted net counts of the source in the analysis range
    shielding: str  # best-fitting shield variant ("none", "iron 10 g/cm2" ...)
    significance: float  # sqrt of the likelihood-ratio statistic versus background only


@dataclass(frozen=True, slots=True)
class IdentificationResult:
    nuclides: tuple[NuclideID, ...]  # reported sources, most confident first
    background_only: bool
    best_model: tuple[str, ...]  # names in the maximum-posterior hypothesis
    posterior_background_only: float
    reduced_chi2: float  # Pearson chi2 / dof of the best model, a goodness-of-fit check
    log_likelihood: float = 0.0  # of the best model (weighted Poisson + priors), for comparisons
    candidates: tuple[tuple[str, float], ...] = field(default=())  # (name, confidence) of all examined
    dispersion: float = 1.0  # quasi-likelihood scale the posterior used (1: the fit is as good as counting allows)
    unknown: bool = False  # a net peak no named nuclide explains: "unknown / unidentified lines"
    unexplained_kev: float | None = None  # energy of the most significant unidentified peak
    unexplained_z: float = 0.0  # strongest line-like fit residual (diagnostic; model uncertainty counted)
    unexplained_share: float = 0.0  # its net counts over the net (non-background) counts of the spectrum
    unidentified_kev: tuple[float, ...] = ()  # net peaks no named nuclide accounts for
    snm_rejected: tuple[str, ...] = ()  # SNM the fit wanted but whose own lines are not seen

    @property
    def top(self) -> str | None:
        return self.nuclides[0].name if self.nuclides else None

    def names(self) -> list[str]:
        return [n.name for n in self.nuclides]


def continuum_terms(bins: AnalysisBins, n_terms: int) -> np.ndarray:
    """Broad non-negative bumps in log-energy (quadratic B-splines), unit sum each.

    Their width (a factor ~(E_max/E_min)^(1/n) in energy) is far broader than any peak, so they
    absorb smooth continua but cannot explain a photopeak.
    """
    if n_terms <= 0:
        return np.zeros((0, bins.n_bins))
    x = np.log(bins.centers_kev)
    lo, hi = x[0], x[-1]
    knots = np.linspace(lo, hi, n_terms)
    width = (hi - lo) / max(n_terms - 1, 1)
    out = np.empty((n_terms, bins.n_bins))
    for j, k in enumerate(knots):
        u = np.abs(x - k) / (1.5 * width)
        b = np.where(u < 1 / 3, 0.75 - (1.5 * u) ** 2, np.where(u < 1, 0.5 * (1.5 - 1.5 * u) ** 2, 0.0))
        b = b * bins.widths_kev / bins.centers_kev  # counts per bin of a ~1/E continuum
        out[j] = b / b.sum()
    return out


class Identifier:
    """Identifies library sources in spectra of one detector model and calibration."""

    def __init__(
        self,
        model: DetectorModel,
        calibration: EnergyCalibration,
        n_channels: int,
        library: NuclideLibrary | None = None,
        settings: IdentifierSettings | None = None,
        templates: TemplateSet | None = None,
    ) -> None:
        self.model = model
        self.settings = settings or IdentifierSettings()
        self.library = library or default_library()
        self.templates = templates or _cached_templates(self.library, model, self.settings.shields)
        min_e = self.settings.min_energy_kev
        if min_e is None:
            min_e = response_table(model).min_energy_kev
        self.calibration = calibration
        self.n_channels = n_channels
        self.bins = make_bins(calibration, model, n_channels, min_e, self.settings.max_energy_kev)
        raw = self.templates.binned(self.bins)
        self._template_counts = raw.sum(axis=1)
        keep = self._template_counts > 0
        self._tmpl = np.where(keep[:, None], raw / np.where(keep, self._template_counts, 1.0)[:, None], 0.0)
        self._src_of = self.templates.source_index
        self._shield_of = self.templates.shield_index
        n_var = len(self.templates.shields)
        n_lib = len(self.library)
        # templates laid out source-major (_template_index): the per-source best variant is then a
        # row-wise argmax over a (sources, variants) view instead of a Python loop over templates
        self._grid = (self._src_of.size == n_lib * n_var
                      and np.array_equal(self._src_of, np.repeat(np.arange(n_lib), n_var))
                      and np.array_equal(self._shield_of, np.tile(np.arange(n_var), n_lib)))
        self._continuum = continuum_terms(self.bins, self.settings.n_continuum_terms)
        self._continuum_nb = continuum_terms(self.bins, self.settings.n_continuum_terms_no_background)
        self._norm_idx = [self.library.index(n) for n in NORM_SOURCES if n in self.library.names]
        self._bg_resp: dict[bytes, np.ndarray] = {}  # background rate (bytes) -> peak-filter output

    # ------------------------------------------------------------------ public
    def identify(
        self,
        counts: np.ndarray,
        live_time_s: float,
        background_cps: np.ndarray | None = None,
        exclude: tuple[str, ...] = (),
    ) -> IdentificationResult:
        """Identify sources in ``counts`` (per channel) measured for ``live_time_s``.

        ``background_cps`` is the background count rate per channel (a long background measurement
        divided by its live time). Without it the natural-radioactivity templates (K-40, U/Ra, Th)
        become part of the background and are not reported. ``exclude`` names library sources to
        leave out, as if the library did not hold them (benchmarks test out-of-library sources so).
        """
        if live_time_s <= 0 or not np.isfinite(live_time_s):
            raise ValueError(f"live time must be > 0 s, got {live_time_s}")
        c = np.asarray(counts, dtype=float)
        if c.shape != (self.n_channels,):
            raise ValueError(f"expected {self.n_channels} channels, got shape {c.shape}")
        n = self.bins.rebin(c)
        s = self.settings
        if background_cps is not None:
            b = self.bins.rebin(np.asarray(background_cps, dtype=float)) * live_time_s
            bg_rows = [b / max(b.sum(), 1e-12)] if b.sum() > 0 else []
            excluded: set[int] = set()
        else:
            bg_rows = [self._tmpl[self._template_index(i, 0)] for i in self._norm_idx]
            excluded = set(self._norm_idx)
        excluded |= {self.library.index(name) for name in exclude if name in self.library.names}
        rows = bg_rows + list(self._continuum if background_cps is not None else self._continuum_nb)
        base = np.vstack(rows) if rows else np.zeros((0, n.size))
        n_base = base.shape[0]
        zero = np.zeros(n.size)
        total = max(n.sum(), 1.0)
        n_raw, base_raw = n, base
        # templates stay unweighted: the kernels and the score test apply the bin weights themselves
        # (a weighted copy of all templates per spectrum cost more than the fits it fed, issue 13)
        tmpl = self._tmpl
        f_sys = s.template_systematic if background_cps is not None else s.template_systematic_no_background
        wv = np.ones(n.size)
        if f_sys > 0:
            wv = 1.0 / (1.0 + f_sys**2 * np.maximum(n, 1.0))
            n = n * wv
            base = base * wv

        # 1. background-only fit
        x0 = np.full(n_base, 0.05 * total / max(n_base, 1))
        prior_mean = np.zeros(n_base)
        prior_prec = np.zeros(n_base)
        if bg_rows and background_cps is not None:
            b_exp = float(b.sum())
            x0[0] = b_exp
            prior_mean[0] = b_exp
            if s.background_sigma > 0:
                prior_prec[0] = 1.0 / (s.background_sigma * b_exp) ** 2
            if s.continuum_sigma > 0:
                # a few per cent of the background, plus whatever exceeds the background: a strong
                # source brings its own scattered continuum (shields, cargo), which may be large
                sigma_c = s.continuum_sigma * b_exp + s.excess_continuum_sigma * max(total - b_exp, 0.0)
                prior_prec[1:] = 1.0 / sigma_c**2
            # start the continuum rows on the excess over the background: Newton on a Poisson
            # likelihood started at zero spends most of its iterations crawling off the boundary
            x0[1:] = max(total - b_exp, 0.0) / max(n_base - 1, 1)
        xb, ll0, _ = fit_nonneg_prior(n, base, x0, zero, prior_mean, prior_prec, s.max_iter)
        mu0 = base.T @ xb

        # 2. screen every template on top of the background fit
        amp, q = self._screen(n, mu0, base, tmpl, wv, prior_prec)
        n_src = len(self.library)
        best_q, best_t = self._best_variant(q, excluded)
        by_q = np.argsort(-best_q)
        order = list(by_q[np.isfinite(best_q[by_q])][: s.n_candidates])

        # 3. joint refits: singles (every shield variant of each candidate), then pairs
        n_var = len(self.templates.shields)
        nv = min(s.n_variants, n_var)
        single_rows: list[list[int]] = []
        row_src: list[int] = []
        for src in order:
            # the unshielded template always, plus the best-scoring shielded variants
            shielded = self._template_index(src, 0) + np.arange(1, n_var)
            shielded = shielded[self._template_counts[shielded] > 0]
            shielded = shielded[np.argsort(-q[shielded], kind="stable")]  # as sorted(): ties keep their order
            ts = [self._template_index(src, 0)] + [int(t) for t in shielded[: nv - 1]]
            # each of the best shield variants alone, and the two together (a non-negative mix of
            # neighbouring thicknesses stands for the thickness in between)
            rows = [[t, -1] for t in ts] + ([[ts[0], ts[1]]] if len(ts) >= 2 and s.mix_shield_variants else [])
            single_rows += rows
            row_src += [int(src)] * len(rows)
        n_eff_src = max(n_src - len(excluded), 1)
        needed = s.penalty + 2.0 * np.log(s.prior_background_only * n_eff_src / s.prior_single)
        if not single_rows or float(np.max(best_q[order])) < s.screen_gate_fraction * needed:
            single_rows, row_src, order = [], [], []
        single_combos = np.array(single_rows, dtype=np.int64).reshape(-1, 2)
        # single-template fits start from the background fit plus the score test's amplitude, the shield
        # mixes from the better of their two single fits (fitting.fit_many). (Starting the singles at the
        # full profiled Newton step of the score test, background terms lowered too, took more
        # iterations on the RASE spectra: 7.9 against 6.4.)
        no_starts = np.zeros((0, n_base + 2))
        lls, xs = fit_many(n, base, tmpl, wv, xb, single_combos, amp, s.max_iter, prior_mean, prior_prec, no_starts)
        # a model: (sources, [(source, template)...], log-likelihood, coefficients)
        Model = tuple[tuple[int, ...], tuple[tuple[int, int], ...], float, np.ndarray]
        models: list[Model] = [((), (), ll0, xb)]
        single_best: dict[int, Model] = {}
        combo_rows = single_combos.tolist()  # Python ints: no per-element numpy scalars in this loop
        for i, src in enumerate(row_src):
            comps = tuple((src, t) for t in combo_rows[i] if t >= 0)
            x = xs[i, : n_base + len(comps)]
            if src not in single_best or lls[i] > single_best[src][2]:
                single_best[src] = ((src,), comps, float(lls[i]), x)
        models += list(single_best.values())
        pairs = list(itertools.combinations(list(single_best), 2))
        # each source enters a pair with its dominant shield variant
        main = {src: m[1][int(np.argmax(m[3][n_base:]))][1] for src, m in single_best.items()}
        first_ll = max((m[2] for m in single_best.values()), default=ll0)
        if single_best and 2.0 * (first_ll - ll0) > s.screen_gate_fraction * needed:
            # forward step: screen again on top of the best single-source fit, so a weak second source
            # hidden under a strong first one (whose counts spoil the background-only screening)
            # still gets its pair fit
            first = max(single_best.values(), key=lambda m: m[2])
            src1 = first[0][0]
            comps1 = first[1]
            base1 = np.vstack([base] + [tmpl[t][None, :] * wv for _, t in comps1])
            mu1 = base1.T @ first[3][: base1.shape[0]]
            pp1 = np.concatenate([prior_prec, np.zeros(len(comps1))])
            amp1, q1 = self._screen(n, mu1, base1, tmpl, wv, pp1)
            best_q1, best_t1 = self._best_variant(q1, excluded | {src1})
            partners = [int(i) for i in np.argsort(-best_q1)[: s.n_second] if np.isfinite(best_q1[i])]
            new = [src for src in partners if src not in single_best]
            if new:  # their single-source fits too, for the posterior and the report
                amp_new = amp.copy()
                for src in new:
                    amp_new[best_t1[src]] = max(amp[best_t1[src]], amp1[best_t1[src]])
                combos = np.array([[best_t1[src], -1] for src in new], dtype=np.int64)
                lls_n, xs_n = fit_many(n, base, tmpl, wv, xb, combos, amp_new, s.max_iter, prior_mean, prior_prec,
                                       no_starts)
                for src, ll, x in zip(new, lls_n, xs_n, strict=True):
                    model = ((src,), ((src, int(best_t1[src])),), float(ll), x[: n_base + 1])
                    single_best[src] = model
                    models.append(model)
                    main[src] = int(best_t1[src])
                amp = amp_new
            for src in partners:
                key = (min(src1, src), max(src1, src))
                if key not in pairs:
                    pairs.append(key)
        if pairs:
            pair_combos = np.array([[main[a], main[b]] for a, b in pairs], dtype=np.int64)
            # warm start (issue 13): each pair from the better of its two single-source fits, the other
            # source at 1 count; the optimum is the same (concave likelihood), the Newton path ~2x shorter
            starts = np.empty((len(pairs), n_base + 2))
            for i, (a, b) in enumerate(pairs):
                lead = 0 if single_best[a][2] >= single_best[b][2] else 1
                x_lead = single_best[(a, b)[lead]][3]
                starts[i, :n_base] = x_lead[:n_base]
                starts[i, n_base + lead] = max(float(x_lead[n_base:].sum()), 1.0)
                starts[i, n_base + 1 - lead] = 1.0
            lls2, xs2 = fit_many(n, base, tmpl, wv, xb, pair_combos, amp, s.max_iter, prior_mean, prior_prec, starts)
            for (a, b), ll, x in zip(pairs, lls2, xs2, strict=True):
                models.append(((a, b), ((a, main[a]), (b, main[b])), float(ll), x))

        # 4. approximate posterior over hypotheses
        n_eff = max(n_src - len(excluded), 1)
        log_prior = {
            0: np.log(s.prior_background_only),
            1: np.log(s.prior_single / n_eff),
            2: np.log(s.prior_pair / max(n_eff * (n_eff - 1) / 2, 1)),
        }
        # Quasi-likelihood: when even the best-fitting model misses the data by more than counting noise and
        # the templates' stated uncertainty allow (a real detector's response, cargo scatter), likelihood
        # differences are worth less. Dividing them by the dispersion phi = Pearson chi2/dof of the best
        # fit (McCullagh & Nelder, Generalized Linear Models, 2nd ed., sec. 4.5; QAIC, Burnham & Anderson
        # 2002) keeps the confidences of such fits from saturating at 1 for every second name.
        phi = (self._dispersion(n_raw, base_raw, max(models, key=lambda m: m[2]), n_base, f_sys)
               if s.quasi_likelihood else 1.0)
        scores = np.array([ll / phi - 0.5 * s.penalty * len(srcs) + log_prior[len(srcs)]
                           for srcs, _, ll, _ in models])
        w = np.exp(scores - scores.max())
        w /= w.sum()
        conf = np.zeros(n_src)
        for (srcs, _, _, _), wi in zip(models, w, strict=True):
            for src in srcs:
                conf[src] += wi
        best_i = int(np.argmax(w))
        best_srcs, best_comps, _, best_x = models[best_i]

        # goodness of fit of the best model (Pearson chi2 per degree of freedom)
        design = np.vstack([base_raw] + [self._tmpl[t][None, :] for _, t in best_comps]) if best_comps else base_raw
        mu = design.T @ best_x
        dof = max(n_raw.size - design.shape[0], 1)
        chi2 = float(np.sum((n_raw - mu) ** 2 / np.maximum(mu, 1.0)) / dof)

        reported: list[NuclideID] = []
        for src in np.argsort(-conf):
            if conf[src] < s.report_confidence:
                break
            if src not in single_best:
                continue
            # amplitudes from the best model if it contains the source, else from its single fit
            _, comps, x_m = (best_srcs, best_comps, best_x) if src in best_srcs else (
                single_best[src][0], single_best[src][1], single_best[src][3])
            own = [(k, t) for k, (c_src, t) in enumerate(comps) if c_src == src]
            amps = [float(x_m[n_base + k]) for k, _ in own]
            t_main = own[int(np.argmax(amps))][1]
            mat, x_gcm2 = self.templates.shields[self._shield_of[t_main]]
            source = self.library.sources[src]
            reported.append(
                NuclideID(
                    name=source.name,
                    label=source.label,
                    category=source.category,
                    confidence=float(conf[src]),
                    counts=float(sum(amps)),
                    shielding="none" if mat == "none" else f"{mat} {x_gcm2:g} g/cm2",
                    significance=float(np.sqrt(max(2 * (single_best[src][2] - ll0), 0.0))),
                )
            )
        # most confident first; among (near) certain ones the source whose *single-source* hypothesis
        # fits best leads (what one would name if one could name only one)
        single_ll = {self.library.sources[src].name: m[2] for src, m in single_best.items()}
        reported.sort(key=lambda r: (-round(r.confidence, 2), -single_ll.get(r.name, -np.inf)))
        edges = self.bins.energy_edges_kev
        # the counts' peak-filter output, shared by the secondary-name peak check and the unknown-peaks
        # check below (one filter pass a spectrum, issue 13)
        filtered = peak_search_for(self.calibration, self.model, c.size).filter(c)
        if s.confirm_secondary_min_snr is not None and len(reported) > 1:
            drop = set(unconfirmed_secondaries([r.name for r in reported], c, self.calibration, self.model,
                                               self.library, float(edges[0]), float(edges[-1]),
                                               s.confirm_secondary_min_snr, filtered))
            drop |= {r.name for r in reported[1:] if r.name in CONTINUUM_SOURCES}
            reported = [r for r in reported if r.name not in drop]
        # Own lines: a second source, and SNM even alone, must show a net line of its own over the best
        # model without it (agent.spectral.residual_lines); then "unknown" if the final model leaves a line
        part = {src: sum(best_x[n_base + k] * self._tmpl[t] for k, (c_src, t) in enumerate(best_comps)
                         if c_src == src) for src in best_srcs}
        centers = self.bins.centers_kev
        e_lo, e_hi = float(edges[0]), float(edges[-1])
        # the measured background's share of the model: known to ~1 %, unlike the templates
        measured = base_raw[0] * best_x[0] if (background_cps is not None and bg_rows) else None
        # continuum emitters' share of the model: their templates are loose (residual_lines.LOOSE_REL_SIGMA)
        cont_srcs = [src for src in part if self.library.sources[src].name in CONTINUUM_SOURCES]
        loose = sum((part[src] for src in cont_srcs), np.zeros(n_raw.size)) if cont_srcs else None
        snm_rejected: list[str] = []

        def others_of(name: str, names: list[NuclideID]) -> list[str]:
            return [o.name for o in names if o.name != name and o.name not in CONTINUUM_SOURCES]

        # SNM first, against everything else named; then second sources, against what remains
        for r in list(reported):
            if r.name not in SNM_NAMES:
                continue
            src = self.library.index(r.name)
            # every line the template says must show, does
            if src not in part or not lines_consistent(
                    r.name, others_of(r.name, reported), n_raw, mu - part[src], part[src], centers, self.library,
                    self.model, s.residual_systematic, s.snm_min_z, e_lo, e_hi, measured=measured, loose=loose):
                reported.remove(r)
                snm_rejected.append(r.name)
        primary_failed: list[str] = []
        if s.primary_min_z is not None and reported and reported[0].name not in CONTINUUM_SOURCES:
            r = reported[0]
            src = self.library.index(r.name)
            if src in part and not lines_as_predicted(
                    r.name, others_of(r.name, reported), n_raw, mu - part[src], part[src], centers, self.library,
                    self.model, s.residual_systematic, s.primary_min_z, e_lo, e_hi,
                    min_fraction=s.primary_min_fraction, measured=measured, loose=loose):
                # a name whose lines are not there is not an identification: withdrawn, outcome unknown
                primary_failed.append(r.name)
                reported.remove(r)
        confirmed: list[NuclideID] = reported[:1]
        for r in reported[1:]:
            src = self.library.index(r.name)
            others = others_of(r.name, reported)
            avoid = escape_peaks_kev(others, self.library, response_table(self.model).xray_escape_kev)
            if src in part and own_line_seen(r.name, others, n_raw, mu - part[src], centers, self.library,
                                             self.model, s.residual_systematic, s.secondary_min_z, e_lo, e_hi,
                                             avoid, measured, loose):
                confirmed.append(r)
        reported = confirmed

        # "unknown / unidentified lines": a significant net peak that no named nuclide (nor, without a
        # measured background, the modelled K/U/Th) accounts for (agent.spectral.unidentified_peaks)
        net_counts = max(float(n_raw.sum() - (base_raw.T @ best_x[:n_base]).sum()), 1.0)
        bg_counts = None if background_cps is None else np.asarray(background_cps, dtype=float) * live_time_s
        bg_resp = None if background_cps is None else self._background_response(background_cps) * live_time_s
        peaks = net_peaks(c, bg_counts, self.calibration, self.model, s.unknown_peak_snr, e_lo, e_hi, bg_resp,
                          filtered)
        norm = [] if background_cps is not None else [self.library.sources[i].name for i in self._norm_idx]
        xray = response_table(self.model).xray_escape_kev

        def lost(names: list[str]) -> list[NetPeak]:
            names = [n for n in names if n not in CONTINUUM_SOURCES]  # no peaks: they explain none
            return unidentified(peaks, names + norm, self.library, self.model, xray, s.unknown_tolerance_fwhm,
                                s.unknown_min_share, net_counts)

        missing = lost([r.name for r in reported])
        if missing and any(r.name in SNM_NAMES for r in reported):
            # lines the library cannot explain: the spectrum is not understood, so no SNM is named from it
            snm_rejected += [r.name for r in reported if r.name in SNM_NAMES]
            reported = [r for r in reported if r.name not in SNM_NAMES]
            missing = lost([r.name for r in reported])
        unknown = bool(missing) or bool(primary_failed)
        kept = {self.library.index(r.name) for r in reported}
        worst = strongest_unexplained(n_raw, mu - sum((v for k, v in part.items() if k not in kept),
                                                      np.zeros_like(mu)), centers, s.residual_systematic,
                                     measured)
        return IdentificationResult(
            nuclides=tuple(reported),
            background_only=not reported,
            best_model=tuple(self.library.sources[i].name for i in best_srcs),
            posterior_background_only=float(w[0]),
            reduced_chi2=chi2,
            dispersion=phi,
            log_likelihood=float(models[best_i][2]),
            candidates=tuple((self.library.sources[i].name, float(conf[i])) for i in order),
            unknown=unknown,
            unexplained_kev=max(missing, key=lambda p: p.net_snr).energy_kev if missing else None,
            unexplained_z=worst.z,
            unexplained_share=worst.net_counts / net_counts,
            unidentified_kev=tuple(round(p.energy_kev, 1) for p in missing),
            snm_rejected=tuple(snm_rejected),
        )

    # ------------------------------------------------------------------ helpers
    def _background_response(self, background_cps: np.ndarray) -> np.ndarray:
        """Peak-filter output of a background rate, kept for the few backgrounds in use (a unit analyses
        every spectrum against the same background until it updates it; ~0.1 ms a spectrum, issue 13)."""
        bg = np.ascontiguousarray(background_cps, dtype=float)
        key = bg.tobytes()
        hit = self._bg_resp.get(key)
        if hit is None:
            if len(self._bg_resp) >= 8:
                self._bg_resp.pop(next(iter(self._bg_resp)))
            hit = background_response(bg, self.calibration, self.model)
            self._bg_resp[key] = hit
        return hit

    def _dispersion(self, n_raw: np.ndarray, base_raw: np.ndarray, model: tuple, n_base: int, f_sys: float) -> float:
        """Pearson chi2/dof of ``model`` with the templates' relative uncertainty in the variance (>= 1)."""
        _, comps, _, x = model
        design = np.vstack([base_raw] + [self._tmpl[t][None, :] for _, t in comps]) if comps else base_raw
        mu = np.maximum(design.T @ x[: design.shape[0]], 1.0)
        dof = max(n_raw.size - design.shape[0], 1)
        return max(1.0, float(np.sum((n_raw - mu) ** 2 / (mu + (f_sys * mu) ** 2)) / dof))

    def _best_variant(self, q: np.ndarray, excluded: set[int]) -> tuple[np.ndarray, np.ndarray]:
        """Per source: the highest score over its templates (-inf if excluded) and that template's index."""
        n_src = len(self.library)
        if self._grid:
            n_var = len(self.templates.shields)
            qq = q.reshape(n_src, n_var)
            best_v = np.argmax(qq, axis=1)
            best_q = qq[np.arange(n_src), best_v].astype(float)
            best_t = np.arange(n_src, dtype=np.int64) * n_var + best_v
            if excluded:
                best_q[list(excluded)] = -np.inf
                best_t[list(excluded)] = 0
            return best_q, best_t
        best_q = np.full(n_src, -np.inf)
        best_t = np.zeros(n_src, dtype=np.int64)
        for t in range(q.size):
            src = int(self._src_of[t])
            if src not in excluded and q[t] > best_q[src]:
                best_q[src], best_t[src] = q[t], t
        return best_q, best_t

    @staticmethod
    def _screen(n: np.ndarray, mu0: np.ndarray, base: np.ndarray, tmpl: np.ndarray, wv: np.ndarray,
                prior_prec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score test of every template against the background fit, background terms profiled.

        The plain score g^2 / I_tt favours peaky templates when the background's continuum terms have
        already soaked up a source's own continuum (heavy shielding). Using the efficient information
        I_tt - I_tb I_bb^-1 I_bt (Rao's score test with nuisance parameters; Cox & Hinkley 1974,
        sec. 9.3) asks instead what each template adds that the background terms cannot explain.
        Returns (first-step amplitude, score statistic) per template.

        ``tmpl`` are the unweighted templates and ``wv`` the bin weights of :meth:`identify` (the
        weighted templates are ``tmpl * wv``); the sums run in one numba pass
        (:func:`agent.spectral.fitting.score_test`), without a weighted copy of the template matrix.
        """
        return score_test(n, mu0, np.ascontiguousarray(base), tmpl, wv, prior_prec)

    def _template_index(self, source: int, variant: int) -> int:
        return source * len(self.templates.shields) + variant

    def loglik_of(self, counts_binned: np.ndarray, mu: np.ndarray) -> float:
        return float(poisson_loglik(np.asarray(counts_binned, float), np.asarray(mu, float)))


@functools.lru_cache(maxsize=8)
def _cached_templates(
    library: NuclideLibrary, model: DetectorModel, shields: tuple[tuple[str, float], ...]
) -> TemplateSet:
    return build_templates(library, model, shields)
