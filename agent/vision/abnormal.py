"""Abnormal-state score: the person's signals against their own baseline, with evidence.

Why a personal baseline: resting heart rate alone spans 50-100 bpm between healthy adults, so a
population threshold flags the athletic and misses the anxious.  Each feature is compared with
the same person's values over the first ``baseline_s`` seconds of the track by a z-score

    z = direction * (x - mean_baseline) / max(SD_baseline, floor)

clipped to [``Z_MIN``, ``Z_MAX``].  The direction encodes what acute stress does (module
docstring of the simulator and Allen et al., Neurosci Biobehav Rev 38:94, 2014; Grassmann et al.,
Front Psychiatry 7:229, 2016; Harrigan & O'Connell, Pers Individ Differ 21:205, 1996): heart rate
up, breathing faster, more blinking, brows lowered, glabella furrowed, mouth tightened.  The floor
stops a very steady baseline from turning a tiny change into a huge z.

Why mean/SD and not median/MAD: a baseline holds only 3-6 values of each cue, where the median
keeps about two thirds of the mean's efficiency and the MAD less; the protection against a wild
value comes from the clipping instead.  Tuning seeds (3 x 48 clips, 12 episodes + 36 calm each):
AUC 0.879 -> 0.887.

Fusion is the weighted mean of the *signed* z-scores, mapped to 0..1 by a logistic (a
one-feature logistic model per cue with shared slope -- simple enough to explain to an operator).
Why signed: in a calm person every cue wanders up and down; keeping only the positive parts
(the earlier rule) adds up the upward half of each cue's noise, whereas a tense person moves all
cues the same way.  Same tuning seeds: 0.862 -> 0.879, on each of the three sets.  The clipping
keeps one wrong reading (a heart rate locked on a noise peak in a dark, compressed face) from
dominating, in either direction.

An alert needs the score above ``alert_score`` on ``alert_updates`` consecutive updates; its
evidence lists every cue with its current value, baseline and z, so the operator sees *why*.

This is a screening aid for a human, never a verdict: the output is "this person differs from
how they were a minute ago", nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Cue -> (direction, weight, z floor scale in the cue's unit).  Weights and floors were chosen on
#: the tuning seeds (never the benchmark's): alone, the heart-rate cue ranks tense above calm
#: updates with AUC 0.88, breathing 0.83, blink rate over 20 s 0.57, brow 0.58, lip press 0.61 --
#: the weak cues are kept with small weights for the evidence they give an operator.  With the
#: signed fusion a grid over the four non-HR weights (192 combinations) is flat: the best is
#: 0.002 above these.
CUES: dict[str, tuple[float, float, float]] = {
    "hr_bpm": (1.0, 1.0, 3.0),
    "rr_bpm": (1.0, 0.6, 1.5),
    "blink_per_min": (1.0, 0.2, 6.0),
    "brow_lowering": (1.0, 0.2, 0.006),
    "lip_press": (1.0, 0.1, 0.1),
}

#: Range of a cue's z in the fusion (its evidence shows the unclipped value).
Z_MIN = -2.0
Z_MAX = 4.0

#: Fused z at which the score is 0.5; an alert (score >= 0.8) then needs a fused z of about 2.0.
#: Chosen on the tuning seeds for no alert in calm clips: with signed fusion the fused z of a
#: tense person is lower than the old positive-part mean, so the old midpoint (2.0) alerted on 31 %
#: of the tense episodes, this one on 92 % (median 10 s after onset), 0 of 1,999 calm updates.
MIDPOINT = 1.2


@dataclass
class AbnormalResult:
    score: float | None  # None during the baseline period
    alert: bool
    evidence: dict[str, float] = field(default_factory=dict)


@dataclass
class _Baseline:
    values: list[float] = field(default_factory=list)
    t_first: float | None = None
    mean: float = float("nan")
    scale: float = float("nan")
    frozen: bool = False
    dropped: bool = False  # too few values to stand for this person's baseline


class AbnormalScorer:
    """Per-track scorer; feed it the derived features at each update (about once a second).

    Each cue's baseline is the mean/SD of its values over the track's first ``baseline_s``
    seconds.  A cue that needs a long analysis window (respiration) first appears later; its
    baseline is then its first ``late_s`` seconds of values, provided it appeared no later than
    ``late_s`` after the baseline period -- otherwise the cue is left out for this person rather
    than compared with a baseline taken while they may already be tense.  A baseline needs at
    least :attr:`min_values` values: one or two (a heart rate that was valid once in a dark,
    compressed face) give no spread and a mean that is just one noisy reading, and a later valid
    reading then looks like a change of state; such a cue is left out too.
    """

    min_values = 3

    def __init__(self, baseline_s: float = 10.0, alert_score: float = 0.8, alert_updates: int = 2,
                 midpoint: float = MIDPOINT, slope: float = 0.6, late_s: float = 4.0,
                 cues: dict[str, tuple[float, float, float]] | None = None) -> None:
        self.baseline_s = baseline_s
        self.alert_score = alert_score
        self.alert_updates = alert_updates
        self.midpoint = midpoint
        self.slope = slope
        self.late_s = late_s
        self.cues = dict(CUES if cues is None else cues)
        self._base: dict[str, _Baseline] = {k: _Baseline() for k in self.cues}
        self._t0: float | None = None
        self._above = 0

    @property
    def baseline_ready(self) -> bool:
        return any(b.frozen for b in self._base.values())

    def baseline(self) -> dict[str, tuple[float, float]]:
        """Cue -> (mean, scale) of the frozen baselines."""
        return {k: (b.mean, b.scale) for k, b in self._base.items() if b.frozen}

    def _learn(self, t_s: float, features: dict[str, float | None]) -> None:
        assert self._t0 is not None
        age = t_s - self._t0
        for k, b in self._base.items():
            if b.frozen or b.dropped:
                continue
            v = features.get(k)
            if v is not None and np.isfinite(v):
                if b.t_first is None:
                    if age > self.baseline_s + self.late_s:
                        continue
                    b.t_first = t_s
                b.values.append(float(v))
            if b.t_first is None or age < self.baseline_s:
                continue
            if len(b.values) >= self.min_values:
                a = np.asarray(b.values)
                b.mean = float(a.mean())
                b.scale = float(a.std(ddof=1))
                b.frozen = True
            elif t_s - b.t_first >= self.late_s and age >= self.baseline_s + self.late_s:
                b.dropped = True

    def update(self, t_s: float, features: dict[str, float | None]) -> AbnormalResult:
        if self._t0 is None:
            self._t0 = t_s
        self._learn(t_s, features)
        if t_s - self._t0 < self.baseline_s:
            return AbnormalResult(None, False, {})
        z_sum, w_sum = 0.0, 0.0
        evidence: dict[str, float] = {}
        for k, (direction, weight, floor) in self.cues.items():
            v = features.get(k)
            b = self._base[k]
            if v is None or not np.isfinite(v) or not b.frozen:
                continue
            z = direction * (float(v) - b.mean) / max(b.scale, floor)
            z_sum += weight * min(max(z, Z_MIN), Z_MAX)
            w_sum += weight
            evidence[k] = round(float(v), 4)
            evidence[f"{k}_baseline"] = round(b.mean, 4)
            evidence[f"{k}_z"] = round(z, 2)
        if w_sum == 0:
            return AbnormalResult(None, False, {})
        fused = z_sum / w_sum
        score = float(1.0 / (1.0 + np.exp(-(fused - self.midpoint) / self.slope)))
        self._above = self._above + 1 if score >= self.alert_score else 0
        alert = self._above >= self.alert_updates
        evidence["fused_z"] = round(fused, 3)
        return AbnormalResult(score, alert, evidence)
