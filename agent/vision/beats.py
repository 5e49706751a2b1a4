"""Inter-beat intervals of one track: one IBI series from successive, overlapping analysis windows.

The pipeline re-analyses the last ~20 s of pulse every second, so each beat is found in ~20
windows.  Each IBI must be reported once, and from a window that saw both of its beats well inside
it: the band-pass filter's edge transients displace beats within about half a period of either
end of a window (see :func:`agent.vision.pulse.estimate_pulse`).  :class:`BeatTrain` therefore
takes, from each valid window, only the intervals whose *ending* beat is newer than the last one
taken and at least ``edge_s`` from both window ends, and measures each interval between two beats
of the same window -- an interval never spans a stretch without a valid pulse.

Artefacts: an interval outside 0.7-1.4 x the window's mean beat period is not reported (a missed
beat doubles an interval, a spurious one halves it -- the usual 20-30 % deviation rules of HRV
practice, Task Force of the ESC/NASPE, Circulation 93:1043, 1996); its count is kept.

No heart-rate-variability index is published.  Beat times from a camera jitter by ~15 ms at a
high pulse SNR and ~60 ms near the validity threshold (tuning clips), which adds about that much
to every successive difference: the RMSSD of the reported intervals came out 2-4 x the true one
(:func:`score_ibis` measures it on every benchmark run), so an RMSSD from it would mislead.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Accepted interval range, as a fraction of the window's mean beat period.
IBI_RANGE = (0.7, 1.4)


@dataclass
class BeatTrain:
    """Per-track IBI series; feed it every valid analysis window with :meth:`add`."""

    edge_s: float = 1.0
    keep: int = 600  # intervals kept (about 8 min at 75 bpm)
    ibis: deque[tuple[float, float]] = field(default_factory=deque)  # (time of the ending beat s, IBI ms)
    last_beat_s: float = -np.inf
    artefacts: int = 0

    def add(self, window_start_s: float, window_end_s: float, beats_s: np.ndarray,
            hr_bpm: float) -> list[tuple[float, float]]:
        """Take the new intervals of one valid window; returns them as (t_end_s, ibi_ms)."""
        if not hr_bpm > 0:
            return []
        period_s = 60.0 / hr_bpm
        b = np.asarray(beats_s, dtype=float)
        b = b[(b >= window_start_s + self.edge_s) & (b <= window_end_s - self.edge_s)]
        new: list[tuple[float, float]] = []
        guard = self.last_beat_s + 0.5 * period_s  # the same beat re-found in a later window
        for prev, cur in zip(b[:-1], b[1:], strict=True):
            if cur <= guard:
                continue
            ibi = cur - prev
            if IBI_RANGE[0] * period_s <= ibi <= IBI_RANGE[1] * period_s:
                new.append((float(cur), round(1000.0 * float(ibi), 1)))
            else:
                self.artefacts += 1
            self.last_beat_s = float(cur)
        self.ibis.extend(new)
        while len(self.ibis) > self.keep:
            self.ibis.popleft()
        return new

    def since(self, t_s: float) -> list[tuple[float, float]]:
        """Intervals whose ending beat is later than ``t_s``."""
        return [x for x in self.ibis if x[0] > t_s]


def score_ibis(detected: list[tuple[float, float]], true_beats_s: np.ndarray, t_lo: float, t_hi: float
               ) -> dict[str, Any]:
    """Reported inter-beat intervals against true beat times (benchmark and ``cedge camera analyze``).

    A camera times a point of the pulse wave at the face, the reference its foot (simulator) or a
    finger PPG's peak (data sets): the two differ by a per-person delay, estimated per recording as
    the circular mean of each reported ending beat's position within the true beat period around
    it, then removed.
    A reported interval is matched to the true interval whose ending beat is nearest after that
    correction, if within 25 % of a period; unmatched ones are false.  ``n_true`` counts the true
    intervals ending in [t_lo, t_hi].  RMSSD is compared over the same adjacent matched pairs: the
    reported one from the reported intervals, the true one from their true counterparts.
    """
    tb = np.asarray(true_beats_s, dtype=float)
    n_true = int(np.sum((tb[1:] >= t_lo) & (tb[1:] <= t_hi))) if tb.size > 1 else 0
    out: dict[str, Any] = {"n_true": n_true, "n_reported": len(detected), "n_matched": 0, "abs_err_ms": [],
                           "rmssd_ms": None, "rmssd_true_ms": None}
    if not detected or tb.size < 3:
        return out
    t = np.array([d[0] for d in detected], dtype=float)
    ibi = np.array([d[1] for d in detected], dtype=float)
    # the delay as a fraction of the beat period, averaged on the circle (a delay near zero or near
    # a whole period must not average to half a period)
    i = np.clip(np.searchsorted(tb, t) - 1, 0, tb.size - 2)
    frac = (t - tb[i]) / (tb[i + 1] - tb[i])
    phi = float(np.angle(np.mean(np.exp(2j * np.pi * frac))) / (2 * np.pi)) % 1.0
    expected = tb[:-1] + phi * np.diff(tb)  # where a camera would time each true beat
    j = np.argmin(np.abs(t[:, None] - expected[None, :]), axis=1)
    true_ibi = np.where(j >= 1, tb[j] - tb[np.maximum(j - 1, 0)], np.nan) * 1000.0
    ok = (j >= 1) & (np.abs(t - expected[j]) < 0.25e-3 * true_ibi)
    out["n_matched"] = int(np.unique(j[ok]).size)
    out["abs_err_ms"] = [round(float(v), 2) for v in np.abs(ibi[ok] - true_ibi[ok])]
    pairs = np.flatnonzero(ok[1:] & ok[:-1] & (j[1:] == j[:-1] + 1))
    if pairs.size >= 5:
        out["rmssd_ms"] = round(float(np.sqrt(np.mean(np.diff(ibi)[pairs] ** 2))), 2)
        out["rmssd_true_ms"] = round(float(np.sqrt(np.mean(np.diff(true_ibi)[pairs] ** 2))), 2)
    return out
