"""Remote photoplethysmography: RGB skin traces -> one pulse signal.

Three classic model-based methods, all operating on the spatially averaged skin colour
``rgb`` (shape ``(n_frames, 3)``, columns R, G, B, linear camera values):

* **POS** "plane orthogonal to skin" -- W. Wang, A. C. den Brinker, S. Stuijk, G. de Haan,
  "Algorithmic principles of remote PPG", IEEE Trans. Biomed. Eng. 64(7):1479-1491, 2017,
  Algorithm 1.  Each 1.6 s window is temporally normalised (divided by its mean), projected on
  the plane orthogonal to the normalised skin tone (rows ``[0, 1, -1]`` and ``[-2, 1, 1]``),
  the two projections are alpha-tuned and the windows overlap-added.  Intensity changes
  (flicker, shading) lie along ``[1, 1, 1]`` after normalisation and are cancelled exactly.
* **CHROM** -- G. de Haan, V. Jeanne, "Robust pulse rate from chrominance-based rPPG",
  IEEE Trans. Biomed. Eng. 60(10):2878-2886, 2013.  Chrominance signals
  ``X = 3R - 2G``, ``Y = 1.5R + G - 1.5B`` (skin-tone standardised), band-passed, combined as
  ``S = X - (sigma_X / sigma_Y) Y`` per window, Hann-windowed overlap-add at 50 %.
* **GREEN** -- W. Verkruysse, L. O. Svaasand, J. S. Nelson, "Remote plethysmographic imaging
  using ambient light", Opt. Express 16(26):21434, 2008.  The band-passed green channel; kept as
  the baseline the other two are benchmarked against.

All three are vectorised over windows (no Python loop over frames): the per-window statistics
are computed on a ``sliding_window_view`` and the overlap-add loops only over the window length.

:func:`distance_ppg` combines POS signals of several skin patches by maximal-ratio combining
(Kumar et al., DistancePPG, Biomed. Opt. Express 6(5):1565, 2015).  It is off in the pipeline by
default: see ``PipelineConfig.patch_weighting`` for what it did on the tuning seeds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import butter, sosfiltfilt

from agent.vision.errors import VisionInputError

#: Pulse band used throughout: 42-240 bpm.
PULSE_BAND_HZ = (0.7, 4.0)

_POS_PROJECTION = np.array([[0.0, 1.0, -1.0], [-2.0, 1.0, 1.0]])


def _check_rgb(rgb: np.ndarray, fps: float, min_frames: int, what: str) -> np.ndarray:
    arr = np.asarray(rgb, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise VisionInputError(f"{what}: rgb trace must have shape (n_frames, 3), got {arr.shape}")
    if not fps > 0:
        raise VisionInputError(f"{what}: fps must be > 0, got {fps}")
    if arr.shape[0] < min_frames:
        raise VisionInputError(f"{what}: need at least {min_frames} frames, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise VisionInputError(f"{what}: rgb trace contains NaN or inf (fill gaps before calling)")
    if np.any(arr.mean(axis=0) <= 0):
        raise VisionInputError(f"{what}: a colour channel has a non-positive mean (no skin in the ROI?)")
    return arr


def bandpass(x: np.ndarray, fps: float, band_hz: tuple[float, float] = PULSE_BAND_HZ,
             order: int = 3) -> np.ndarray:
    """Zero-phase Butterworth band-pass (second-order sections, forward-backward).

    Zero phase matters because beat times are read off the filtered signal.  Short inputs are
    padded by ``sosfiltfilt`` with odd reflection; at least ~3 periods of the low edge are needed.
    """
    lo, hi = band_hz
    nyq = 0.5 * fps
    hi = min(hi, 0.95 * nyq)
    if not 0 < lo < hi:
        raise VisionInputError(f"bandpass: band {band_hz} Hz is empty at {fps} fps")
    sos = butter(order, [lo / nyq, hi / nyq], btype="bandpass", output="sos")
    x = np.asarray(x, dtype=np.float64)
    padlen = min(x.shape[0] - 1, int(2.0 * fps / lo))  # two periods of the low edge
    return sosfiltfilt(sos, x, axis=0, padlen=padlen)


def _window_len(fps: float, window_s: float) -> int:
    return max(int(round(window_s * fps)), 4)


def pos(rgb: np.ndarray, fps: float, window_s: float = 1.6, normalize: bool = True,
        limit: float | None = 2.5) -> np.ndarray:
    """POS pulse signal (Wang et al. 2017, Algorithm 1), same length as ``rgb``.

    Window 1.6 s as in the paper (about one cardiac cycle at the lowest pulse rate of interest).

    ``normalize`` (our modification, default on): each window's projection is scaled to unit
    standard deviation before the overlap-add, so every 1.6 s of video contributes equal power.
    Why: when the head moves, the share of the skin signal that carries the pulse changes (shading,
    highlights, a different patch of skin in the region), which modulates the pulse's amplitude at
    the motion's 0.03-0.4 Hz.  Amplitude modulation puts sidebands at the pulse rate +- the motion
    rate, and at a low SNR a sideband plus noise can outgrow the carrier: on the tuning clips the
    pipeline then reported a confident rate 6-9 bpm off for several updates (masks under the same
    motion, which have no pulse to modulate, never came near the threshold).  Normalising each window
    removes modulation slower than the window and, like the amplitude-selective filtering of Wang et
    al. (Biomed. Opt. Express 8(3):1965, 2017), keeps a head turn's burst from dominating.  Tuning-seed
    benchmark (96 clips): hard-clip MAE 0.52 -> 0.44 bpm, coverage 0.44 -> 0.48, windows > 3 bpm off
    10 -> 2, still faces unchanged, controls "no valid pulse" 99.3 -> 99.7 %.

    With ``normalize=False``, ``limit`` caps a window whose amplitude exceeds ``limit`` times the
    median over all windows (the previous behaviour); ``normalize=False, limit=None`` is the paper's
    algorithm unchanged.
    """
    win = _window_len(fps, window_s)
    c = _check_rgb(rgb, fps, win, "POS")
    n = c.shape[0]
    windows = sliding_window_view(c, win, axis=0)  # (n-win+1, 3, win)
    cn = windows / windows.mean(axis=2, keepdims=True)
    s = np.einsum("pc,mcw->mpw", _POS_PROJECTION, cn)  # (m, 2, win)
    std = s.std(axis=2)
    alpha = std[:, 0] / np.maximum(std[:, 1], 1e-12)
    h = s[:, 0, :] + alpha[:, None] * s[:, 1, :]
    h -= h.mean(axis=1, keepdims=True)
    if normalize:
        h /= np.maximum(h.std(axis=1, keepdims=True), 1e-12)
    elif limit is not None and h.shape[0] > 4:
        amp = h.std(axis=1)
        cap = limit * float(np.median(amp))
        h *= np.minimum(1.0, cap / np.maximum(amp, 1e-12))[:, None]
    out = np.zeros(n)
    m = h.shape[0]
    for k in range(win):  # overlap-add: window starting at j contributes h[j, k] to sample j + k
        out[k:k + m] += h[:, k]
    return out * (win / overlap_count(n, win))


def overlap_count(n: int, win: int) -> np.ndarray:
    """How many length-``win`` windows (one starting at every sample) cover each of ``n`` samples.

    ``win`` in the interior, falling linearly to 1 over the first and last ``win - 1`` samples.
    POS's overlap-add leaves that ramp on the signal's envelope when it is not divided out, and a
    sinusoid times a ramp has its maxima pulled towards the larger amplitude: on the tuning clips
    the beats within 1.5 periods of a 20 s window's ends moved inwards by 15-40 ms, which read as
    a heart rate 0.2-0.5 bpm too high (Algorithm 1 of Wang et al. runs on an endless stream and
    never meets the ends).
    """
    j = np.arange(n)
    m = n - win + 1
    return (np.minimum(j, m - 1) - np.maximum(0, j - win + 1) + 1).astype(np.float64)


def chrom(rgb: np.ndarray, fps: float, window_s: float = 1.6,
          band_hz: tuple[float, float] = PULSE_BAND_HZ) -> np.ndarray:
    """CHROM pulse signal (de Haan & Jeanne 2013), Hann-windowed 50 % overlap-add."""
    win = _window_len(fps, window_s)
    win += win % 2  # even, so that half-window steps tile exactly
    c = _check_rgb(rgb, fps, win, "CHROM")
    n = c.shape[0]
    # Normalise by a running mean over the window so that the standardisation follows slow
    # illumination drift (the paper normalises per interval; this is its sliding equivalent).
    kernel = np.ones(win) / win
    pad = np.pad(c, ((win // 2, win - win // 2 - 1), (0, 0)), mode="edge")
    mean = np.stack([np.convolve(pad[:, i], kernel, mode="valid") for i in range(3)], axis=1)
    cn = c / mean
    x = 3.0 * cn[:, 0] - 2.0 * cn[:, 1]
    y = 1.5 * cn[:, 0] + cn[:, 1] - 1.5 * cn[:, 2]
    xf = bandpass(x, fps, band_hz)
    yf = bandpass(y, fps, band_hz)
    step = win // 2
    starts = np.arange(0, max(n - win, 0) + 1, step)
    xw = np.stack([xf[s:s + win] for s in starts])
    yw = np.stack([yf[s:s + win] for s in starts])
    alpha = xw.std(axis=1) / np.maximum(yw.std(axis=1), 1e-12)
    sw = (xw - alpha[:, None] * yw) * np.hanning(win)[None, :]
    out = np.zeros(n)
    for i, s in enumerate(starts):
        out[s:s + win] += sw[i]
    tail = starts[-1] + win
    if tail < n:  # the last partial window: plain projection so the output covers every sample
        a = xf[tail - step:].std() / max(yf[tail - step:].std(), 1e-12)
        out[tail:] += (xf[tail:] - a * yf[tail:])
    return out


def green(rgb: np.ndarray, fps: float, band_hz: tuple[float, float] = PULSE_BAND_HZ) -> np.ndarray:
    """GREEN baseline (Verkruysse et al. 2008): band-passed, mean-normalised green channel."""
    c = _check_rgb(rgb, fps, 8, "GREEN")
    g = c[:, 1] / c[:, 1].mean() - 1.0
    return bandpass(g, fps, band_hz)


METHODS: dict[str, Callable[..., np.ndarray]] = {"pos": pos, "chrom": chrom, "green": green}


def pulse_signal(rgb: np.ndarray, fps: float, method: str = "pos") -> np.ndarray:
    """Pulse signal by name, band-passed to :data:`PULSE_BAND_HZ` and scaled to unit variance."""
    try:
        fn = METHODS[method]
    except KeyError as err:
        raise VisionInputError(f"unknown rPPG method '{method}' (known: {', '.join(METHODS)})") from err
    s = fn(rgb, fps)
    if method == "pos":
        s = bandpass(s, fps)
    sd = s.std()
    return s / sd if sd > 0 else s


def distance_ppg(patch_rgb: np.ndarray, fps: float, reference: np.ndarray | None = None,
                 iterations: int = 2, half_width_hz: tuple[float, float] = (0.2, 0.3),
                 band_hz: tuple[float, float] = PULSE_BAND_HZ) -> tuple[np.ndarray, np.ndarray]:
    """Patch-weighted POS: maximal-ratio combining of per-patch pulse signals (DistancePPG).

    M. Kumar, A. Veeraraghavan, A. Sabharwal, "DistancePPG: Robust non-contact vital signs
    monitoring using a camera", Biomed. Opt. Express 6(5):1565-1588, 2015, Sec. 3.  Each skin patch
    ``i`` gives a pulse ``x_i = a_i p + n_i``; the combination maximising the SNR weights it by
    ``a_i / sigma_i^2`` (maximal-ratio combining).  Both are read off the patch's spectrum at the
    pulse frequency ``f0`` of the current combined signal: ``sigma_i^2`` from the mean power per
    bin outside the f0 / 2 f0 template, ``a_i`` from the template power in excess of that noise
    floor (zero when a patch shows no pulse).  On the first pass ``f0`` is the peak of the mean of
    the patches' (and ``reference``'s, e.g. POS on the mean colour) unit-power spectra, afterwards
    the peak of the combination.

    ``patch_rgb``: (n_frames, n_patches, 3), finite, uniformly sampled.  Returns the combined
    band-passed signal (unit variance) and the weights.  If no patch shows a pulse the weights are
    uniform.  Beware: the weights favour patches whose noise happens to peak at f0, so the SNR of
    noise-only input comes out higher than for one trace; a validity threshold must be set on
    negative controls analysed the same way.
    """
    arr = np.asarray(patch_rgb, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[1] < 1:
        raise VisionInputError(f"distance_ppg: patch_rgb must have shape (n_frames, n_patches, 3), got {arr.shape}")
    n, n_patch = arr.shape[:2]
    # amplitudes matter here (the weights compare patches), so no per-window normalisation in POS
    xs = np.stack([bandpass(pos(arr[:, i, :], fps, normalize=False), fps, band_hz) for i in range(n_patch)])
    nfft = int(2 ** np.ceil(np.log2(n * 2)))  # weights need no finer bins than 1/(2 T)
    freqs = np.fft.rfftfreq(nfft, d=1.0 / fps)
    spec = np.fft.rfft((xs - xs.mean(axis=1, keepdims=True)) * np.hanning(n), n=nfft, axis=1)
    power = spec.real ** 2 + spec.imag ** 2  # (P, nfft/2+1)
    in_band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    w = np.ones(n_patch)
    # First pulse frequency: every patch (and the reference) votes with its in-band spectrum scaled
    # to unit power, so that a few clean patches are heard even when noisy ones swamp the mean.
    votes = power[:, in_band] / np.maximum(power[:, in_band].sum(axis=1, keepdims=True), 1e-300)
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64)
        if ref.shape != (n,):
            raise VisionInputError(f"distance_ppg: reference must have shape ({n},), got {ref.shape}")
        rspec = np.fft.rfft((ref - ref.mean()) * np.hanning(n), n=nfft)
        rpow = (rspec.real ** 2 + rspec.imag ** 2)[in_band]
        votes = np.vstack([votes, rpow / max(rpow.sum(), 1e-300)])
    y = xs.mean(axis=0)
    ypow = np.zeros_like(freqs)
    ypow[in_band] = votes.mean(axis=0)
    for it in range(max(1, iterations)):
        if it > 0:
            yspec = np.fft.rfft((y - y.mean()) * np.hanning(n), n=nfft)
            ypow = yspec.real ** 2 + yspec.imag ** 2
        f0 = float(freqs[in_band][np.argmax(ypow[in_band])])
        tmpl = in_band & ((np.abs(freqs - f0) <= half_width_hz[0]) | (np.abs(freqs - 2 * f0) <= half_width_hz[1]))
        rest = in_band & ~tmpl
        noise_per_bin = power[:, rest].mean(axis=1)
        excess = np.maximum(power[:, tmpl].sum(axis=1) - noise_per_bin * tmpl.sum(), 0.0)
        w = np.sqrt(excess) / np.maximum(noise_per_bin, 1e-300)
        if not np.any(w > 0):
            w = np.ones(n_patch)
        y = w @ xs
    sd = y.std()
    return (y / sd if sd > 0 else y), w / w.sum()
