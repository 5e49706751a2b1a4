"""Camera box analysis: contactless vital signs and abnormal-state screening from one RGB camera.

Stages, each usable alone: :mod:`face_tracker` (Haar detection + KLT tracking, anonymous ids),
:mod:`skin_roi` (skin colour per frame), :mod:`rppg` (POS, CHROM, GREEN), :mod:`pulse` (heart rate,
beats, signal quality), :mod:`respiration`, :mod:`blink`, :mod:`expression`, :mod:`abnormal`,
optional :mod:`face_mesh` (user-provided LiteRT model); :mod:`pipeline` composes them per frame;
:mod:`truth_formats` reads reference data (UBFC-rPPG, PURE, our synthetic clips).

Privacy by design: only derived numbers and random track ids leave these modules; images are kept
only when evidence clips are switched on explicitly.
"""

from agent.vision.abnormal import AbnormalResult, AbnormalScorer
from agent.vision.blink import BlinkDetector, BlinkEvent, EyeRegionSignal, eye_aspect_ratio, match_events
from agent.vision.errors import VisionInputError
from agent.vision.face_tracker import FaceTracker, Track
from agent.vision.pipeline import CameraPipeline, FrameResult, PipelineConfig
from agent.vision.pulse import PulseEstimate, estimate_pulse
from agent.vision.respiration import RespirationEstimate, rate_from_motion, rate_from_pulse
from agent.vision.rppg import chrom, green, pos, pulse_signal
from agent.vision.skin_roi import SkinRoi, SkinSample
from agent.vision.truth_formats import GroundTruth, read_truth

__all__ = [
    "AbnormalResult", "AbnormalScorer", "BlinkDetector", "BlinkEvent", "CameraPipeline", "EyeRegionSignal",
    "FaceTracker", "FrameResult", "GroundTruth", "PipelineConfig", "PulseEstimate", "RespirationEstimate",
    "SkinRoi", "SkinSample", "Track", "VisionInputError", "chrom", "estimate_pulse", "eye_aspect_ratio", "green",
    "match_events", "pos", "pulse_signal", "rate_from_motion", "rate_from_pulse", "read_truth",
]
