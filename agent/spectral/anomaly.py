"""Moving-detector anomaly detection on 1 s spectra over sliding windows.

Why spectral: on a moving vehicle the gross count rate swings by tens of per cent with the ground
(asphalt, soil, concrete, granite kerbs), so a gross-count threshold must be set high. The *shape*
of natural background varies in few ways (K/U/Th mix, scattered continuum, cosmic share), which a
low-dimensional non-negative basis captures; a source adds counts the basis cannot explain.

Method (after Bilton et al., "Non-negative matrix factorization of gamma-ray spectra for background
modeling, detection, and source identification", IEEE TNS 66 (2019) 827; the same job as the
spectral-comparison-ratio detectors SCRAD/NSCRAD of Pfund et al., IEEE TNS 54 (2007) 1232, done
with a Poisson likelihood and source templates instead of energy-window ratios):

1. Background basis W (K x bins): Poisson (KL) NMF of background training spectra (Lee & Seung,
   NIPS 2000 multiplicative updates), or, in the field, of the unit's own recent background.
2. Every second, for windows of the last w = 1, 2, 4, 8 s: fit x ~ h W (h >= 0, Poisson ML), screen
   every library template t by the likelihood-ratio gain of adding a*t (a >= 0), then refit the best
   one jointly with the background: statistic q = 2 [lnL(h, a) - lnL(h0)]. The detector's statistic
   is the maximum over windows and templates (windows match pass-by durations 2 d0 / v from
   0.6 s to 30 s).
3. An explicit false-alarm rate (alarms per hour) becomes a threshold on q, either from the null
   distribution (Chernoff: q ~ 1/2 chi2(0) + 1/2 chi2(1) per test, Bonferroni over the effective
   number of tests) or, better, by fitting the exponential tail of q on background training data
   (peaks-over-threshold, Pickands 1975) and extrapolating to the wanted rate.

The gross-count baseline: z = (N_w - B_w) / sqrt(B_w) with B_w from the mean count rate of the
preceding 30 s (excluding the window), the same windows, its threshold set by the same FAR procedure.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numba
import numpy as np
from scipy.special import ndtri

from agent.spectral.binning import AnalysisBins
from agent.spectral.fitting import fit_nonneg, poisson_loglik

DEFAULT_WINDOWS_S = (1, 2, 4, 8)


# --------------------------------------------------------------------------- background basis
def fit_nmf(spectra: np.ndarray, n_components: int = 3, n_iter: int = 300, seed: int = 0) -> np.ndarray:
    """Poisson (KL-divergence) NMF of background spectra (rows) -> basis W (K x bins), unit-sum rows.

    Lee & Seung multiplicative updates minimise the generalised KL divergence, i.e. maximise the
    Poisson likelihood, so the basis is right for count data.
    """
    v = np.asarray(spectra, dtype=float)
    if v.ndim != 2 or v.shape[0] < n_components:
        raise ValueError(f"need a 2-D array with >= {n_components} spectra, got shape {v.shape}")
    rng = np.random.default_rng(seed)
    n, m = v.shape
    mean = v.mean(axis=0) + 1e-9
    w = mean[None, :] * rng.uniform(0.5, 1.5, size=(n_components, m))
    h = np.full((n, n_components), v.sum(axis=1, keepdims=True) / (n_components * w.sum(axis=1)[None, :]))
    for _ in range(n_iter):
        wh = h @ w + 1e-12
        h *= ((v / wh) @ w.T) / w.sum(axis=1)[None, :]
        wh = h @ w + 1e-12
        w *= (h.T @ (v / wh)) / h.sum(axis=0)[:, None]
    w /= w.sum(axis=1, keepdims=True)
    return w


# --------------------------------------------------------------------------- statistics kernel
@numba.njit(cache=True)
def spectral_statistics(x: np.ndarray, basis: np.ndarray, templates: np.ndarray, max_iter: int):  # pragma: no cover
    """For each row of ``x`` (window spectra): q of the best template and its index.

    Background fit (basis, h >= 0), 1-D screening of every template on top of it, joint refit of
    the best. Rows are independent; cost ~ (basis fit + J screens + 1 refit) per row.
    """
    n_rows, m = x.shape
    k = basis.shape[0]
    j_count = templates.shape[0]
    q_out = np.zeros(n_rows)
    j_out = np.zeros(n_rows, dtype=np.int64)
    zero = np.zeros(m)
    design = np.empty((k + 1, m))
    for r in range(k):
        design[r] = basis[r]
    h0 = np.empty(k)
    x1 = np.empty(k + 1)
    mu0 = np.empty(m)
    for i in range(n_rows):
        row = x[i]
        total = 0.0
        for b in range(m):
            total += row[b]
        if total <= 0:
            continue
        for r in range(k):
            h0[r] = total / k
        h, ll0, _ = fit_nonneg(row, basis, h0, zero, max_iter)
        for b in range(m):
            v = 0.0
            for r in range(k):
                v += basis[r, b] * h[r]
            mu0[b] = v
        # screening: score test (gradient^2 / information at a = 0), cheap and monotone in the LR
        best = -1.0
        best_j = 0
        for j in range(j_count):
            g = 0.0
            info = 0.0
            for b in range(m):
                t = templates[j, b]
                if t == 0.0:
                    continue
                mb = mu0[b] if mu0[b] > 1e-9 else 1e-9
                g += (row[b] / mb - 1.0) * t
                info += t * t / mb
            if g > 0 and info > 0:
                s = g * g / info
                if s > best:
                    best = s
                    best_j = j
        if best <= 0:
            continue
        for b in range(m):
            design[k, b] = templates[best_j, b]
        for r in range(k):
            x1[r] = h[r]
        x1[k] = 1.0
        _, ll1, _ = fit_nonneg(row, design, x1, zero, max_iter)
        q = 2.0 * (ll1 - ll0)
        q_out[i] = q if q > 0 else 0.0
        j_out[i] = best_j
    return q_out, j_out


def window_sums(spectra: np.ndarray, window: int) -> np.ndarray:
    """Row t = sum of rows t-window+1 .. t (rows before the start are zero-padded)."""
    c = np.cumsum(np.asarray(spectra, dtype=float), axis=0)
    out = c.copy()
    out[window:] -= c[:-window]
    return out


def gross_zscores(gross: np.ndarray, window: int, background_s: int = 30) -> np.ndarray:
    """Gross-count k-sigma statistic per second for one window length (NaN while warming up)."""
    g = np.asarray(gross, dtype=float)
    c = np.concatenate([[0.0], np.cumsum(g)])
    t = np.arange(g.size)
    n_win = c[t + 1] - c[np.maximum(t + 1 - window, 0)]
    lo = np.maximum(t + 1 - window - background_s, 0)
    hi = np.maximum(t + 1 - window, 0)
    n_bg = hi - lo
    rate = np.where(n_bg > 0, (c[hi] - c[lo]) / np.maximum(n_bg, 1), np.nan)
    expected = rate * window
    z = (n_win - expected) / np.sqrt(np.maximum(expected, 1.0))
    return np.where(n_bg >= background_s, z, np.nan)


# --------------------------------------------------------------------------- thresholds
def threshold_from_null_distribution(far_per_hour: float, tests_per_hour: float, n_effective: float) -> float:
    """q threshold from the asymptotic null: P(q > u) = 1/2 P(chi2_1 > u) per test, Bonferroni."""
    alpha = far_per_hour / tests_per_hour / max(n_effective, 1.0)
    z = float(ndtri(1.0 - alpha))  # P(chi2_1 > z^2)/2 = P(Z > z)
    return z * z


def threshold_from_training(null_stats: np.ndarray, far_per_hour: float, tests_per_hour: float,
                            tail_fraction: float = 0.01) -> float:
    """Threshold with exceedance rate ``far_per_hour`` from background-only statistics.

    Peaks over threshold: above the (1 - tail_fraction) quantile u0 the exceedances are fitted
    with an exponential (the generalised Pareto with shape 0, the limit for light tails), and the
    threshold is u0 + scale * ln(tail_fraction / p), p = far / tests_per_hour.
    """
    s = np.asarray(null_stats, dtype=float)
    s = s[np.isfinite(s)]
    if s.size < 1000:
        raise ValueError(f"need >= 1000 background statistics to calibrate a threshold, got {s.size}")
    p = far_per_hour / tests_per_hour
    u0 = float(np.quantile(s, 1.0 - tail_fraction))
    exc = s[s > u0] - u0
    scale = float(exc.mean()) if exc.size else 1.0
    if p >= tail_fraction:
        return float(np.quantile(s, 1.0 - p))
    return u0 + scale * float(np.log(tail_fraction / p))


def count_alarm_events(alarm: np.ndarray, merge_gap_s: int = 5) -> int:
    """Number of alarm events: alarming seconds closer than ``merge_gap_s`` belong to one event."""
    idx = np.flatnonzero(np.asarray(alarm, dtype=bool))
    if idx.size == 0:
        return 0
    return int(1 + np.sum(np.diff(idx) > merge_gap_s))


# --------------------------------------------------------------------------- streaming detector
@dataclass(frozen=True, slots=True)
class AnomalyResult:
    statistic: float  # max over windows of q (spectral) ...
    alarm: bool
    window_s: int  # window that gave the maximum
    template: int  # index of the best-matching template
    gross_z: float  # gross-count baseline statistic (max over windows)
    gross_alarm: bool


class AnomalyDetector:
    """Streaming spectral anomaly detector for a moving unit (one binned 1 s spectrum per call).

    ``basis``: background basis (K x bins) from :func:`fit_nmf`; ``templates``: unit-sum source
    templates in the same bins. ``threshold`` / ``gross_threshold`` are q and z values (use
    :func:`threshold_from_training` or :func:`threshold_from_null_distribution`).
    """

    def __init__(
        self,
        basis: np.ndarray,
        templates: np.ndarray,
        threshold: float | np.ndarray,
        gross_threshold: float | np.ndarray,
        windows_s: tuple[int, ...] = DEFAULT_WINDOWS_S,
        background_s: int = 30,
        bins: AnalysisBins | None = None,
    ) -> None:
        """``threshold``/``gross_threshold``: one value, or one per window (same order as ``windows_s``).
        ``bins``: when given, :meth:`update` takes raw channel counts and groups them itself."""
        self.bins = bins
        self.basis = np.ascontiguousarray(basis, dtype=float)
        self.templates = np.ascontiguousarray(templates, dtype=float)
        if self.basis.shape[1] != self.templates.shape[1]:
            raise ValueError("basis and templates must have the same number of bins")
        self.windows_s = tuple(sorted(windows_s))
        self.threshold = np.broadcast_to(np.asarray(threshold, dtype=float), (len(self.windows_s),)).copy()
        self.gross_threshold = np.broadcast_to(np.asarray(gross_threshold, dtype=float),
                                               (len(self.windows_s),)).copy()
        self.background_s = background_s
        self._buf: deque[np.ndarray] = deque(maxlen=max(self.windows_s))
        self._gross: deque[float] = deque(maxlen=max(self.windows_s) + background_s)

    def update(self, counts: np.ndarray) -> AnomalyResult:
        """Add the newest 1 s spectrum (channels if ``bins`` was given, else analysis bins)."""
        x = np.asarray(counts, dtype=float)
        if self.bins is not None and x.shape == (self.bins.n_channels,):
            x = self.bins.rebin(x)
        if x.shape != (self.basis.shape[1],):
            raise ValueError(f"expected {self.basis.shape[1]} bins, got shape {x.shape}")
        self._buf.append(x)
        self._gross.append(float(x.sum()))
        rows = []
        ws = []
        acc = np.zeros_like(x)
        buf = list(self._buf)
        for i, spec in enumerate(reversed(buf), start=1):
            acc = acc + spec
            if i in self.windows_s:
                rows.append(acc.copy())
                ws.append(i)
        q, j = spectral_statistics(np.array(rows), self.basis, self.templates, 30)
        thr = self.threshold[: len(ws)]
        ratio = q / thr
        best = int(np.argmax(ratio))
        gross = np.array(self._gross)
        gz = -np.inf
        g_alarm = False
        for i, w in enumerate(ws):
            if gross.size >= w + self.background_s:
                z = float(gross_zscores(gross, w, self.background_s)[-1])
                gz = max(gz, z)
                g_alarm = g_alarm or z > self.gross_threshold[i]
        return AnomalyResult(
            statistic=float(q[best]),
            alarm=bool(np.any(q > thr)),
            window_s=ws[best],
            template=int(j[best]),
            gross_z=gz,
            gross_alarm=g_alarm,
        )

    def loglik(self, x: np.ndarray, mu: np.ndarray) -> float:
        return float(poisson_loglik(np.asarray(x, float), np.asarray(mu, float)))


def mobile_templates(model_name: str, bins: AnalysisBins) -> np.ndarray:
    """Unit-sum unshielded library templates in ``bins``, without the natural (NORM) sources,
    which a moving unit sees everywhere and which the background basis already spans, and without
    the continuum-only sources (Sr-90 bremsstrahlung, Cf-252 fission gammas): a smooth template is a
    direction background changes take too, so it adds false alarms, not detections (those sources
    still raise the gross-count alarm)."""
    from agent.spectral.identify import CONTINUUM_SOURCES, NORM_SOURCES
    from agent.spectral.library import default_library
    from agent.spectral.response import templates_for

    t = templates_for(model_name, (("none", 0.0),)).binned(bins)
    keep = [i for i, n in enumerate(default_library().names) if n not in NORM_SOURCES + CONTINUUM_SOURCES]
    t = t[keep]
    return t / t.sum(axis=1, keepdims=True)


def detector_from_background(
    model_name: str,
    calibration,
    background_spectra: np.ndarray,
    far_per_hour: float = 0.05,
    windows_s: tuple[int, ...] = DEFAULT_WINDOWS_S,
    n_components: int = 4,
    training_statistics: tuple[np.ndarray, np.ndarray] | None = None,
) -> AnomalyDetector:
    """An :class:`AnomalyDetector` for one detector from its own 1 s background spectra (channels).

    The basis is the 4-component Poisson NMF of the spectra summed in 10 s groups (K, U, Th and
    cosmic/scatter are the four ways natural background varies). Thresholds: from
    ``training_statistics`` (q and gross z per window, rows = windows) when given, else from the
    asymptotic null (spectral) and a normal tail (gross), each window getting ``far / n_windows``.
    """
    from agent.spectral.binning import make_bins
    from agent.spectral.detector import detector_model
    from agent.spectral.response import response_table

    model = detector_model(model_name)
    spectra = np.asarray(background_spectra, dtype=float)
    bins = make_bins(calibration, model, spectra.shape[1], response_table(model).min_energy_kev, 3000.0)
    x = bins.rebin(spectra)
    groups = max(x.shape[0] // 10, n_components)
    x = x[: groups * (x.shape[0] // groups)].reshape(groups, -1, x.shape[1]).sum(axis=1)
    basis = fit_nmf(x, n_components)
    templates = mobile_templates(model.name, bins)
    per_window = far_per_hour / len(windows_s)
    if training_statistics is not None:
        q_tr, z_tr = training_statistics
        thr = np.array([threshold_from_training(q_tr[i], per_window, 3600.0) for i in range(len(windows_s))])
        gthr = np.array([threshold_from_training(z_tr[i], per_window, 3600.0) for i in range(len(windows_s))])
    else:
        thr = np.full(len(windows_s), threshold_from_null_distribution(per_window, 3600.0, templates.shape[0]))
        gthr = np.full(len(windows_s), float(ndtri(1.0 - per_window / 3600.0)))
    return AnomalyDetector(basis, templates, thr, gthr, windows_s, bins=bins)
