"""Run a per-camera tracker over a MOTChallenge detection file (the "public detections" protocol).

In that protocol every tracker gets the same detections, so the score measures the tracker alone
(Milan et al. 2016, section 4); ``cedge cctv track`` is this function plus file handling.
"""

from __future__ import annotations

from pathlib import Path

from agent.cctv.byte_tracker import ByteTracker, ByteTrackParams
from agent.cctv.detections import Detection
from agent.cctv.iou_tracker import IouTracker
from agent.cctv.mot_format import format_result_line, read_detections

TRACKERS = ("bytetrack", "iou")


def make_tracker(name: str, params: ByteTrackParams | None = None) -> ByteTracker | IouTracker:
    if name == "bytetrack":
        return ByteTracker(params)
    if name == "iou":
        return IouTracker()
    raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")


def track_detections(by_frame: dict[int, list[Detection]], last_frame: int, tracker: str = "bytetrack",
                     params: ByteTrackParams | None = None) -> list[str]:
    """MOTChallenge result lines for detections given per frame (frames without any still step)."""
    t = make_tracker(tracker, params)
    lines: list[str] = []
    for frame in range(1, last_frame + 1):
        for out in t.update(by_frame.get(frame, [])):
            lines.append(format_result_line(frame, out.track_id, out.tlwh, out.score))
    return lines


def track_file(det_path: Path | str, tracker: str = "bytetrack", params: ByteTrackParams | None = None) -> list[str]:
    last, by_frame = read_detections(det_path)
    return track_detections(by_frame, last, tracker, params)
