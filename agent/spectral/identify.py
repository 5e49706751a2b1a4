"""Nuclide identification: Poisson template fits, model selection and posterior confidences.

Method (the "full-spectrum template" approach of GADRAS-style identifiers; cf. Mitchell & Mattingly
SAND2009-0958, and Sullivan & Stinnett, "Template-based spectral identification", and the
model-selection view of Kass & Raftery, JASA 90 (1995) 773):

1. The spectrum n (analysis bins) is modelled as ``mu = beta*B + sum_j c_j N_j + sum_k a_k T_k``:
   B the measured background (its shape, scaled by live time), N_j a few smooth non-negative
   continuum terms (absorb scatter from shields/cargo/ground and small background changes — they
   are too broad to mimic a peak), T_k library templates (detector response of each source, with
   steel/lead-shielded variants). All coefficients >= 0, fitted by Poisson maximum likelihood.
2. Hypotheses: background only, each single source, each pair among the strongest candidates.
   Every template is first screened by a 1-parameter fit on top of the background fit; the best few
   sources are then refitted jointly with the background and continuum terms.
3. Model selection by penalised likelihood, read as an approximate posterior (BIC/Laplace weights):
   ``w_M ~ prior_M * exp(lnL_M - penalty * k_M / 2)``. A source's confidence is the total posterior
   of the models that contain it; it is reported when that exceeds ``report_confidence``. With no
   source the result is "background only".

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
from agent.spectral.fitting import fit_many, fit_nonneg_prior, poisson_loglik, screen_templates
from agent.spectral.library import NuclideLibrary, default_library
from agent.spectral.response import DEFAULT_SHIELDS, TemplateSet, build_templates, response_table

NORM_SOURCES = ("K-40", "Ra-226", "Th-232")


@dataclass(frozen=True, slots=True)
class IdentifierSettings:
    penalty: float = 7.0  # per source amplitude, in units of 2 lnL (BIC-like Occam factor)
    prior_background_only: float = 0.5
    prior_single: float = 0.4  # shared by all single-source hypotheses
    prior_pair: float = 0.1  # shared by all pairs
    report_confidence: float = 0.5
    n_candidates: int = 5  # sources refitted jointly and paired
    n_variants: int = 2  # shield variants per candidate refitted (best by screening)
    screen_gate: float = 4.0  # no refits when no template improves 2 lnL by this much
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
    excess_continuum_sigma: float = 1.0


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
        self._continuum = continuum_terms(self.bins, self.settings.n_continuum_terms)
        self._continuum_nb = continuum_terms(self.bins, self.settings.n_continuum_terms_no_background)
        self._norm_idx = [self.library.index(n) for n in NORM_SOURCES if n in self.library.names]

    # ------------------------------------------------------------------ public
    def identify(
        self,
        counts: np.ndarray,
        live_time_s: float,
        background_cps: np.ndarray | None = None,
    ) -> IdentificationResult:
        """Identify sources in ``counts`` (per channel) measured for ``live_time_s``.

        ``background_cps`` is the background count rate per channel (a long background measurement
        divided by its live time). Without it the natural-radioactivity templates (K-40, U/Ra, Th)
        become part of the background and are not reported.
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
        rows = bg_rows + list(self._continuum if background_cps is not None else self._continuum_nb)
        base = np.vstack(rows) if rows else np.zeros((0, n.size))
        n_base = base.shape[0]
        zero = np.zeros(n.size)
        total = max(n.sum(), 1.0)
        n_raw, base_raw = n, base
        tmpl = self._tmpl
        f_sys = s.template_systematic if background_cps is not None else s.template_systematic_no_background
        if f_sys > 0:
            w = 1.0 / (1.0 + f_sys**2 * np.maximum(n, 1.0))
            n = n * w
            base = base * w
            tmpl = self._tmpl * w

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
            x0[1:] = 0.0
        xb, ll0, _ = fit_nonneg_prior(n, base, x0, zero, prior_mean, prior_prec, s.max_iter)
        mu0 = base.T @ xb

        # 2. screen every template on top of the background fit
        amp, q = screen_templates(n, mu0, tmpl, 12)
        n_src = len(self.library)
        best_q = np.full(n_src, -np.inf)
        best_t = np.zeros(n_src, dtype=np.int64)
        for t in range(q.size):
            src = self._src_of[t]
            if src in excluded:
                continue
            if q[t] > best_q[src]:
                best_q[src] = q[t]
                best_t[src] = t
        order = [i for i in np.argsort(-best_q) if np.isfinite(best_q[i])][: s.n_candidates]

        # 3. joint refits: singles (every shield variant of each candidate), then pairs
        n_var = len(self.templates.shields)
        nv = min(s.n_variants, n_var)
        single_rows = []
        for src in order:
            ts = [self._template_index(src, v) for v in range(n_var)]
            ts = [t for t in ts if self._template_counts[t] > 0]
            ts.sort(key=lambda t: -q[t])
            ts = (ts + ts[:1] * nv)[:nv] if ts else []
            single_rows += [[t, -1] for t in ts]
        if not single_rows or float(np.max(best_q[order])) < s.screen_gate:
            single_rows = []
            order = []
        single_combos = np.array(single_rows, dtype=np.int64).reshape(-1, 2)
        lls, xs = fit_many(n, base, tmpl, xb, single_combos, amp, s.max_iter, prior_mean, prior_prec)
        models: list[tuple[tuple[int, ...], tuple[int, ...], float, np.ndarray]] = [((), (), ll0, xb)]
        single_best: dict[int, tuple[int, float, np.ndarray]] = {}
        for i, src in enumerate(order):
            j = i * nv + int(np.argmax(lls[i * nv : (i + 1) * nv]))
            t = int(single_combos[j, 0])
            x = xs[j, : n_base + 1]
            single_best[int(src)] = (t, float(lls[j]), x)
            models.append(((int(src),), (t,), float(lls[j]), x))
        pairs = list(itertools.combinations(list(single_best), 2))
        if pairs:
            pair_combos = np.array([[single_best[a][0], single_best[b][0]] for a, b in pairs], dtype=np.int64)
            lls2, xs2 = fit_many(n, base, tmpl, xb, pair_combos, amp, s.max_iter, prior_mean, prior_prec)
            for (a, b), ll, x in zip(pairs, lls2, xs2, strict=True):
                models.append(((a, b), (single_best[a][0], single_best[b][0]), float(ll), x))

        # 4. approximate posterior over hypotheses
        n_eff = max(n_src - len(excluded), 1)
        log_prior = {
            0: np.log(s.prior_background_only),
            1: np.log(s.prior_single / n_eff),
            2: np.log(s.prior_pair / max(n_eff * (n_eff - 1) / 2, 1)),
        }
        scores = np.array([ll - 0.5 * s.penalty * len(srcs) + log_prior[len(srcs)] for srcs, _, ll, _ in models])
        w = np.exp(scores - scores.max())
        w /= w.sum()
        conf = np.zeros(n_src)
        for (srcs, _, _, _), wi in zip(models, w, strict=True):
            for src in srcs:
                conf[src] += wi
        best_i = int(np.argmax(w))
        best_srcs, best_ts, _, best_x = models[best_i]

        # goodness of fit of the best model (Pearson chi2 per degree of freedom)
        design = np.vstack([base_raw] + [self._tmpl[t][None, :] for t in best_ts]) if best_ts else base_raw
        mu = design.T @ best_x
        dof = max(n_raw.size - design.shape[0], 1)
        chi2 = float(np.sum((n_raw - mu) ** 2 / np.maximum(mu, 1.0)) / dof)

        reported = []
        for src in np.argsort(-conf):
            if conf[src] < s.report_confidence:
                break
            if src not in single_best:
                continue
            t, ll_s, x_s = single_best[src]
            # amplitude from the best model if it contains the source, else from the single fit
            if src in best_srcs:
                a = float(best_x[n_base + best_srcs.index(src)])
                t = best_ts[best_srcs.index(src)]
            else:
                a = float(x_s[-1])
            mat, x_gcm2 = self.templates.shields[self._shield_of[t]]
            source = self.library.sources[src]
            reported.append(
                NuclideID(
                    name=source.name,
                    label=source.label,
                    category=source.category,
                    confidence=float(conf[src]),
                    counts=a,
                    shielding="none" if mat == "none" else f"{mat} {x_gcm2:g} g/cm2",
                    significance=float(np.sqrt(max(2 * (ll_s - ll0), 0.0))),
                )
            )
        # most confident first; among (near) certain ones the source with most counts leads
        reported.sort(key=lambda r: (-round(r.confidence, 2), -r.counts))
        return IdentificationResult(
            nuclides=tuple(reported),
            background_only=not reported,
            best_model=tuple(self.library.sources[i].name for i in best_srcs),
            posterior_background_only=float(w[0]),
            reduced_chi2=chi2,
            log_likelihood=float(models[best_i][2]),
            candidates=tuple((self.library.sources[i].name, float(conf[i])) for i in order),
        )

    # ------------------------------------------------------------------ helpers
    def _template_index(self, source: int, variant: int) -> int:
        return source * len(self.templates.shields) + variant

    def loglik_of(self, counts_binned: np.ndarray, mu: np.ndarray) -> float:
        return float(poisson_loglik(np.asarray(counts_binned, float), np.asarray(mu, float)))


@functools.lru_cache(maxsize=8)
def _cached_templates(
    library: NuclideLibrary, model: DetectorModel, shields: tuple[tuple[str, float], ...]
) -> TemplateSet:
    return build_templates(library, model, shields)
