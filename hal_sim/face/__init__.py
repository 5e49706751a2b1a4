"""Synthetic camera-box video with known physiology: faces whose skin carries a blood-volume pulse,
breathing, blinks, expressions, head motion, several people, photo/mask negative controls, and the
light and camera effects that make contactless vital signs hard.  See ``clip.render_clip``.
"""

from hal_sim.face.clip import Clip, render_clip
from hal_sim.face.spec import ClipSpec
from hal_sim.face.truth import ClipTruth, PersonTruth

__all__ = ["Clip", "ClipSpec", "ClipTruth", "PersonTruth", "render_clip"]
