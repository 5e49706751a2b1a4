"""Errors of the vision pipeline.

One small tree so callers can tell bad input (a caller's mistake, reported with what was wrong)
from a missing optional model or runtime (:class:`agent.hal.interfaces.DeviceUnavailable`).
"""

from __future__ import annotations


class VisionInputError(ValueError):
    """An array, box or file given to a vision stage that cannot be used; the message says why."""
