"""MOTChallenge text files: detections in, tracking results out.

Format (Milan et al. 2016, "MOT16: A Benchmark for Multi-Object Tracking", section 3.3): one object
per line, comma separated ``frame, id, bb_left, bb_top, bb_width, bb_height, conf, x, y, z``; frames
count from 1; a detection file has ``id = -1``; ``x, y, z`` are -1 in 2D.  Ground-truth files put a
"consider" flag in ``conf`` and a class and visibility after it (MOT16+), which :func:`read_gt` keeps.

Reading is strict where a wrong value would silently change a score (a negative width, a frame 0, a
NaN), and bounded (``max_lines``): a bad file fails with the line number and what is wrong in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.cctv.detections import Detection

MAX_LINES = 5_000_000  #: MOT20's largest det.txt is ~ 1.1 M lines


class MotFormatError(ValueError):
    """A MOTChallenge file that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class MotRow:
    frame: int
    obj_id: int
    tlwh: tuple[float, float, float, float]
    conf: float
    extra: tuple[float, ...] = ()  #: columns after conf (x, y, z, or class, visibility in gt files)


def _parse(path: Path, max_lines: int) -> list[MotRow]:
    rows: list[MotRow] = []
    try:
        fh = path.open("r", encoding="utf-8", errors="strict")
    except OSError as err:
        raise MotFormatError(f"{path}: cannot open ({err.strerror or err})") from err
    with fh:
        for n, line in enumerate(fh, start=1):
            if n > max_lines:
                raise MotFormatError(f"{path}: more than {max_lines} lines; not a MOTChallenge file of one sequence")
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = [p.strip() for p in text.split(",")] if "," in text else text.split()
            if len(parts) < 7:
                raise MotFormatError(f"{path} line {n}: {len(parts)} columns, want at least 7 "
                                     "(frame, id, left, top, width, height, conf)")
            try:
                vals = [float(p) for p in parts[:16]]
            except ValueError as err:
                raise MotFormatError(f"{path} line {n}: not a number ({err})") from err
            if not all(math.isfinite(v) for v in vals):
                raise MotFormatError(f"{path} line {n}: NaN or infinite value")
            frame, obj = vals[0], vals[1]
            if frame != int(frame) or frame < 1 or frame > 10**7:
                raise MotFormatError(f"{path} line {n}: frame {parts[0]!r} is not an integer >= 1")
            if obj != int(obj) or abs(obj) > 2**31:
                raise MotFormatError(f"{path} line {n}: id {parts[1]!r} is not an integer")
            w, h = vals[4], vals[5]
            if w <= 0 or h <= 0:
                raise MotFormatError(f"{path} line {n}: box width and height must be > 0, got {w} x {h}")
            rows.append(MotRow(int(frame), int(obj), (vals[2], vals[3], w, h), vals[6], tuple(vals[7:])))
    if not rows:
        raise MotFormatError(f"{path}: no rows")
    return rows


def read_rows(path: Path | str, max_lines: int = MAX_LINES) -> list[MotRow]:
    """Every row of a MOTChallenge file (detections, results or ground truth)."""
    return _parse(Path(path), max_lines)


def read_detections(path: Path | str, max_lines: int = MAX_LINES) -> tuple[int, dict[int, list[Detection]]]:
    """``(last_frame, {frame: detections})`` from a det.txt (conf is the detector's score).

    Scores outside [0, 1] (some public detectors write raw SVM margins, DPM in MOT16) are mapped into
    it by a logistic so that the tracker's thresholds keep their meaning; the order is preserved.
    """
    rows = read_rows(path, max_lines)
    confs = np.array([r.conf for r in rows])
    if confs.min() < 0 or confs.max() > 1:
        confs = 1.0 / (1.0 + np.exp(-confs))
    by_frame: dict[int, list[Detection]] = {}
    for r, c in zip(rows, confs, strict=True):
        by_frame.setdefault(r.frame, []).append(Detection(np.array(r.tlwh), float(c), "file"))
    return max(by_frame), by_frame


def format_result_line(frame: int, track_id: int, tlwh: np.ndarray, conf: float = 1.0) -> str:
    """One line of a MOTChallenge result file (x, y, z = -1)."""
    left, top, w, h = (float(v) for v in tlwh)
    return f"{frame},{track_id},{left:.2f},{top:.2f},{w:.2f},{h:.2f},{conf:.3f},-1,-1,-1"


def write_results(path: Path | str, lines: list[str]) -> None:
    """Write result lines atomically (a reader never sees half a file)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".part")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(p)
