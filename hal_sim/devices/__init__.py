"""Simulated devices of the HAL: spectrometer, GNSS, the handheld operator, and the camera.

The registry (agent.hal.registry) imports each module by name.  The re-exports below are lazy
(PEP 562) so that loading one device (e.g. the camera, which needs cv2) does not import the
others and their simulated world.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SimSpectrometer": "hal_sim.devices.sim_spectrometer",
    "SimGnss": "hal_sim.devices.sim_gnss",
    "SimOperatorDisplay": "hal_sim.devices.sim_operator",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hal_sim.devices' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
