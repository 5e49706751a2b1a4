"""Ground-truth readers: our synthetic-clip JSON, UBFC-rPPG and PURE.

One object out (:class:`GroundTruth`) so that ``cedge camera analyze VIDEO --truth FILE`` scores
the same way whatever the data set.  Layouts:

* **customs-edge clip truth** (``schema: customs-edge.face-truth/1``), written next to synthetic
  videos by the simulator: per-frame ``t_s``; per person ``hr_bpm``, ``rr_bpm``, ``state`` per
  frame, ``beat_times_s``, ``blink_intervals_s``.  Read here without importing the simulator
  (the agent never imports ``hal_sim``).
* **UBFC-rPPG** (S. Bobbia et al., "Unsupervised skin tissue segmentation for remote
  photoplethysmography", Pattern Recognit. Lett. 124:82, 2019), two layouts:
  DATASET_2 ``ground_truth.txt`` -- three whitespace-separated lines: PPG signal, heart rate
  (bpm), time (s); DATASET_1 ``gtdump.xmp`` -- CSV rows: time (ms), heart rate, SpO2, PPG.
* **PURE** (R. Stricker, S. Mueller, H.-M. Gross, "Non-contact video-based pulse rate
  measurement on a mobile service robot", IEEE RO-MAN 2014): one JSON per sequence with
  ``/FullPackage`` entries ``{"Timestamp": ns, "Value": {"pulseRate", "waveform", ...}}`` from a
  60 Hz finger oximeter and ``/Image`` entries ``{"Timestamp": ns}`` of the video frames.

Reference heart rate over a window: the finger-oximeter HR column of these data sets lags and is
quantised to 1 bpm, so, as is usual for them (e.g. rPPG-Toolbox, Liu et al. NeurIPS 2023
Datasets track), the reference is computed from the PPG waveform over the same window when a
waveform is present; the column is the fallback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.vision.errors import VisionInputError


@dataclass
class GroundTruth:
    """Reference signals of one recording; times in seconds from the first video frame."""

    source: str
    hr_t_s: np.ndarray | None = None
    hr_bpm: np.ndarray | None = None
    ppg_t_s: np.ndarray | None = None
    ppg: np.ndarray | None = None
    rr_t_s: np.ndarray | None = None
    rr_bpm: np.ndarray | None = None
    beat_times_s: np.ndarray | None = None
    blink_intervals_s: list[tuple[float, float]] | None = None
    state_t_s: np.ndarray | None = None
    tense: np.ndarray | None = None  # bool per state sample
    frame_t_s: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def hr_over(self, t0_s: float, t1_s: float) -> float | None:
        """Reference mean heart rate over [t0, t1].

        Synthetic clips: the mean of the simulator's instantaneous rate over the window's frames.
        Recorded data sets: from the PPG waveform, else the oximeter's HR column.
        """
        if self.hr_t_s is not None and self.hr_bpm is not None and self.source == "customs-edge":
            return _mean_over(self.hr_t_s, self.hr_bpm, t0_s, t1_s)
        if self.ppg is not None and self.ppg_t_s is not None:
            v = _ppg_rate(self.ppg_t_s, self.ppg, t0_s, t1_s)
            if v is not None:
                return v
        if self.hr_t_s is not None and self.hr_bpm is not None:
            return _mean_over(self.hr_t_s, self.hr_bpm, t0_s, t1_s)
        return None

    def beats(self) -> np.ndarray | None:
        """Reference beat times: the simulator's, else the peaks of the contact PPG (data sets)."""
        if self.beat_times_s is not None and self.beat_times_s.size:
            return self.beat_times_s
        if self.ppg is None or self.ppg_t_s is None or self.ppg_t_s.size < 64:
            return None
        from agent.vision.pulse import estimate_pulse
        from agent.vision.rppg import bandpass

        t = self.ppg_t_s
        fs = float((t.size - 1) / (t[-1] - t[0]))
        grid = np.linspace(t[0], t[-1], t.size)
        x = bandpass(np.interp(grid, t, self.ppg), fs)
        # the same beat picking as the camera's pulse (maxima of the signal band-passed around its rate);
        # beats within a period of the recording's ends are moved by the filter's edge transients
        # (15 ms on a clean 72 bpm wave)
        est = estimate_pulse(x, fs, threshold_db=-np.inf, t0_s=float(grid[0]))
        period = 60.0 / est.raw_hr_bpm
        b = est.beat_times_s
        return b[(b > grid[0] + period) & (b < grid[-1] - period)]

    def rr_over(self, t0_s: float, t1_s: float) -> float | None:
        if self.rr_t_s is None or self.rr_bpm is None:
            return None
        return _mean_over(self.rr_t_s, self.rr_bpm, t0_s, t1_s)

    def is_tense(self, t_s: float) -> bool | None:
        if self.state_t_s is None or self.tense is None or not self.state_t_s.size:
            return None
        i = int(np.clip(np.searchsorted(self.state_t_s, t_s, side="right") - 1, 0, self.state_t_s.size - 1))
        return bool(self.tense[i])


def _mean_over(t: np.ndarray, v: np.ndarray, t0: float, t1: float) -> float | None:
    sel = (t >= t0) & (t <= t1) & np.isfinite(v)
    if sel.sum() >= 1:
        return float(np.mean(v[sel]))
    ok = np.isfinite(v)
    if ok.sum() >= 2 and t[ok][0] <= t1 and t[ok][-1] >= t0:
        return float(np.interp(0.5 * (t0 + t1), t[ok], v[ok]))
    return None


def _ppg_rate(t: np.ndarray, ppg: np.ndarray, t0: float, t1: float) -> float | None:
    """Mean pulse rate of a contact PPG over [t0, t1]: spectral peak, then beat counting."""
    from agent.vision.pulse import estimate_pulse
    from agent.vision.rppg import bandpass

    sel = (t >= t0) & (t <= t1)
    if sel.sum() < 16 or t1 - t0 < 4.0:
        return None
    ts = t[sel]
    fs = float((ts.size - 1) / (ts[-1] - ts[0]))
    grid = np.linspace(ts[0], ts[-1], ts.size)
    x = bandpass(np.interp(grid, ts, ppg[sel]), fs)
    est = estimate_pulse(x, fs, threshold_db=-np.inf)
    return est.hr_bpm


# --------------------------------------------------------------------------- readers
def read_clip_json(path: Path, person: int = 0) -> GroundTruth:
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise VisionInputError(f"{path}: cannot read clip truth JSON ({err})") from err
    if d.get("schema") != "customs-edge.face-truth/1":
        raise VisionInputError(f"{path}: not a customs-edge clip truth (schema {d.get('schema')!r})")
    try:
        t = np.asarray(d["t_s"], dtype=float)
        p = d["people"][person]
    except (KeyError, IndexError, TypeError) as err:
        raise VisionInputError(f"{path}: clip truth lacks t_s or person {person} ({err})") from err

    def arr(key: str) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in p.get(key, [])], dtype=float)

    state = [str(s) for s in p.get("state", [])]
    return GroundTruth(
        source="customs-edge", hr_t_s=t, hr_bpm=arr("hr_bpm"), rr_t_s=t, rr_bpm=arr("rr_bpm"),
        beat_times_s=np.asarray(p.get("beat_times_s", []), dtype=float),
        blink_intervals_s=[(float(a), float(b)) for a, b in p.get("blink_intervals_s", [])],
        state_t_s=t if state else None, tense=np.array([s == "tense" for s in state]) if state else None,
        frame_t_s=t, meta={"kind": p.get("kind"), "fitzpatrick": p.get("fitzpatrick"),
                           "pulse_present": p.get("pulse_present"), "fps": d.get("fps")})


def read_ubfc_txt(path: Path) -> GroundTruth:
    """UBFC-rPPG DATASET_2 ``ground_truth.txt``: lines PPG, HR, time (s)."""
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        rows = [np.array(ln.split(), dtype=float) for ln in lines[:3]]
    except (OSError, ValueError) as err:
        raise VisionInputError(f"{path}: not a UBFC-rPPG ground_truth.txt ({err})") from err
    if len(rows) < 3 or not (rows[0].size == rows[1].size == rows[2].size) or rows[2].size < 2:
        raise VisionInputError(f"{path}: UBFC-rPPG ground truth needs 3 lines of equal length "
                               "(PPG, HR, time in s)")
    t = rows[2] - rows[2][0]
    return GroundTruth(source="ubfc-rppg", hr_t_s=t, hr_bpm=rows[1], ppg_t_s=t, ppg=rows[0])


def read_ubfc_xmp(path: Path) -> GroundTruth:
    """UBFC-rPPG DATASET_1 ``gtdump.xmp``: CSV rows time (ms), HR, SpO2, PPG."""
    try:
        data = np.loadtxt(path, delimiter=",", ndmin=2)
    except (OSError, ValueError) as err:
        raise VisionInputError(f"{path}: not a UBFC-rPPG gtdump.xmp CSV ({err})") from err
    if data.shape[1] < 4 or data.shape[0] < 2:
        raise VisionInputError(f"{path}: gtdump.xmp needs >= 4 columns (ms, HR, SpO2, PPG), got {data.shape}")
    t = (data[:, 0] - data[0, 0]) / 1000.0
    return GroundTruth(source="ubfc-rppg-dataset1", hr_t_s=t, hr_bpm=data[:, 1], ppg_t_s=t, ppg=data[:, 3],
                       meta={"spo2": float(np.median(data[:, 2]))})


def read_pure_json(path: Path) -> GroundTruth:
    """PURE sequence JSON: ``/FullPackage`` oximeter packages and ``/Image`` frame times (ns)."""
    try:
        d = json.loads(path.read_text())
        pk = d["/FullPackage"]
        t_ns = np.array([float(e["Timestamp"]) for e in pk])
        hr = np.array([float(e["Value"]["pulseRate"]) for e in pk])
        wave = np.array([float(e["Value"]["waveform"]) for e in pk])
        img_ns = np.array([float(e["Timestamp"]) for e in d.get("/Image", [])])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise VisionInputError(f"{path}: not a PURE JSON with /FullPackage pulseRate/waveform ({err})") from err
    if t_ns.size < 2:
        raise VisionInputError(f"{path}: PURE JSON has fewer than 2 oximeter packages")
    t0 = img_ns[0] if img_ns.size else t_ns[0]
    return GroundTruth(source="pure", hr_t_s=(t_ns - t0) / 1e9, hr_bpm=hr, ppg_t_s=(t_ns - t0) / 1e9, ppg=wave,
                       frame_t_s=(img_ns - t0) / 1e9 if img_ns.size else None)


def read_truth(path: str | Path, person: int = 0) -> GroundTruth:
    """Read any supported layout, chosen by file name and content."""
    p = Path(path)
    if not p.is_file():
        raise VisionInputError(f"truth file '{p}' not found")
    name = p.name.lower()
    if name.endswith(".xmp"):
        return read_ubfc_xmp(p)
    if name.endswith(".txt"):
        return read_ubfc_txt(p)
    if name.endswith(".json"):
        try:
            head = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise VisionInputError(f"{p}: not valid JSON ({err})") from err
        if isinstance(head, dict) and "/FullPackage" in head:
            return read_pure_json(p)
        if isinstance(head, dict) and str(head.get("schema", "")).startswith("customs-edge.face-truth"):
            return read_clip_json(p, person)
        raise VisionInputError(f"{p}: JSON is neither PURE (/FullPackage) nor a customs-edge clip truth")
    raise VisionInputError(f"{p}: unknown truth layout (expected ground_truth.txt, gtdump.xmp or .json)")
