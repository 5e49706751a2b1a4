"""Ground-truth readers: UBFC-rPPG (both layouts), PURE and our clip JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.vision.errors import VisionInputError
from agent.vision.truth_formats import GroundTruth, read_truth

FS = 60.0


def _ppg(hr_bpm: float, seconds: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(0, seconds, 1 / FS)
    return t, 100 + 20 * np.sin(2 * np.pi * hr_bpm / 60 * t) + 5 * np.sin(4 * np.pi * hr_bpm / 60 * t)


def test_ubfc_dataset2_ground_truth_txt(tmp_path: Path) -> None:
    t, ppg = _ppg(72.0)
    hr = np.full_like(t, 71.0)  # the oximeter column, lagging and rounded
    p = tmp_path / "ground_truth.txt"
    p.write_text("\n".join(" ".join(f"{v:.7e}" for v in row) for row in (ppg, hr, t + 1.5)) + "\n")
    gt = read_truth(p)
    assert gt.source == "ubfc-rppg"
    assert gt.ppg_t_s is not None and gt.ppg_t_s[0] == 0.0  # re-based to the first sample
    assert abs(gt.hr_over(5.0, 15.0) - 72.0) < 0.5  # from the PPG waveform, not the column


def test_ubfc_dataset1_gtdump_xmp(tmp_path: Path) -> None:
    t, ppg = _ppg(64.0)
    p = tmp_path / "gtdump.xmp"
    rows = np.column_stack([t * 1000 + 12345, np.full_like(t, 64), np.full_like(t, 98), ppg])
    np.savetxt(p, rows, delimiter=",", fmt="%.3f")
    gt = read_truth(p)
    assert gt.source == "ubfc-rppg-dataset1" and gt.meta["spo2"] == 98.0
    assert abs(gt.hr_over(2.0, 12.0) - 64.0) < 0.5


def test_pure_json(tmp_path: Path) -> None:
    t, ppg = _ppg(88.0, 20.0)
    t0_ns = 1_392_643_993_642_815_000
    d = {"/FullPackage": [{"Timestamp": int(t0_ns + 2e8 + s * 1e9),
                           "Value": {"waveform": int(w), "signalStrength": 4, "pulseRate": 88, "o2saturation": 97}}
                          for s, w in zip(t, ppg, strict=True)],
         "/Image": [{"Timestamp": int(t0_ns + k * 1e9 / 30)} for k in range(600)]}
    p = tmp_path / "01-01.json"
    p.write_text(json.dumps(d))
    gt = read_truth(p)
    assert gt.source == "pure"
    assert gt.frame_t_s is not None and gt.frame_t_s.size == 600 and gt.frame_t_s[0] == 0.0
    assert abs(gt.ppg_t_s[0] - 0.2) < 1e-6  # oximeter started 0.2 s after the first frame
    assert abs(gt.hr_over(3.0, 13.0) - 88.0) < 0.7


def test_clip_json(tmp_path: Path) -> None:
    t = np.arange(300) / 30.0
    d = {"schema": "customs-edge.face-truth/1", "fps": 30.0, "t_s": t.tolist(), "width": 640, "height": 480,
         "people": [{"track_hint": 0, "fitzpatrick": 4, "pulse_present": True, "beat_times_s": [],
                     "hr_bpm": (60 + t).tolist(), "rr_bpm": [None] * 150 + [15.0] * 150,
                     "blink_intervals_s": [[1.0, 1.2]], "state": ["calm"] * 200 + ["tense"] * 100,
                     "face_box": [[0, 0, 1, 1]] * 300}], "conditions": {}}
    p = tmp_path / "clip.json"
    p.write_text(json.dumps(d))
    gt = read_truth(p)
    assert abs(gt.hr_over(0.0, 2.0) - 61.0) < 0.05  # mean of the instantaneous rate
    assert gt.rr_over(6.0, 9.0) == 15.0
    assert gt.is_tense(5.0) is False and gt.is_tense(8.0) is True
    assert gt.blink_intervals_s == [(1.0, 1.2)]


def test_bad_truth_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(VisionInputError, match="not found"):
        read_truth(tmp_path / "missing.txt")
    bad = tmp_path / "ground_truth.txt"
    bad.write_text("1 2 3\n4 5\n")
    with pytest.raises(VisionInputError, match="3 lines of equal length"):
        read_truth(bad)
    other = tmp_path / "x.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(VisionInputError, match="neither PURE"):
        read_truth(other)
    with pytest.raises(VisionInputError, match="unknown truth layout"):
        read_truth(tmp_path.joinpath("a.csv").write_text("1") and tmp_path / "a.csv")


def test_reference_beats_come_from_the_contact_ppg_peaks() -> None:
    """Data sets carry a contact PPG, not beat times: the beats are its maxima, one per period."""
    fs, hr_bpm = 60.0, 72.0
    t = np.arange(0.0, 20.0, 1.0 / fs)
    phase = 2 * np.pi * hr_bpm / 60.0 * t
    ppg = np.sin(phase) + 0.3 * np.sin(2 * phase - 0.8)  # systolic peak + a harmonic, like a PPG wave
    beats = GroundTruth(source="test", ppg_t_s=t, ppg=ppg).beats()
    assert beats is not None
    ibi = np.diff(beats)
    assert ibi.size >= 20
    assert np.allclose(ibi, 60.0 / hr_bpm, atol=0.01)
