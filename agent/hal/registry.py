"""Device table: device kind + driver name (from the unit's YAML) -> implementing class.

Why a table of strings: the agent must never import drivers or simulators directly (they pull in
pyusb, cv2, serial ports ...).  A class is imported only when a profile names it, and a missing
optional library becomes a clear :class:`DeviceUnavailable` instead of an ImportError at start.
Simulated devices sit in the same table as real ones, so the program under test is the one that
ships (python-can's interface table does the same).
"""

from __future__ import annotations

import importlib
from typing import Any

from agent.hal.interfaces import Clock, Device, DeviceContext, DeviceUnavailable

DEVICE_TABLE: dict[str, dict[str, str]] = {
    "gamma": {
        "sim": "hal_sim.devices.sim_spectrometer:SimSpectrometer",
        "radiacode": "drivers.radiacode:RadiaCodeSpectrometer",
        "open_gamma": "drivers.open_gamma_detector:OpenGammaDetector",
    },
    "gnss": {
        "sim": "hal_sim.devices.sim_gnss:SimGnss",
        "nmea": "drivers.nmea_gps:NmeaGpsReceiver",
        "gpsd": "drivers.gpsd_client:GpsdReceiver",
    },
    "camera": {
        "sim": "hal_sim.devices.sim_camera:SimCamera",
        "opencv": "drivers.opencv_camera:OpenCvCamera",
    },
    "display": {
        "sim": "hal_sim.devices.sim_operator:SimOperatorDisplay",
        "console": "agent.hal.console_display:ConsoleDisplay",
    },
}

CLOCK_TABLE: dict[str, str] = {
    "system": "agent.hal.system_clock:SystemClock",
    "sim": "hal_sim.sim_clock:SimClock",
}


def _load(spec: str, what: str) -> type:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise DeviceUnavailable(f"{what}: cannot import {module_name} ({err})") from err
    try:
        return getattr(module, attr)
    except AttributeError as err:
        raise DeviceUnavailable(f"{what}: {module_name} has no {attr}") from err


def device_class(kind: str, driver: str) -> type[Device]:
    try:
        spec = DEVICE_TABLE[kind][driver]
    except KeyError as err:
        known = ", ".join(f"{k}:{d}" for k, ds in DEVICE_TABLE.items() for d in ds)
        raise DeviceUnavailable(f"no driver '{driver}' for device kind '{kind}' (known: {known})") from err
    return _load(spec, f"{kind} driver '{driver}'")


def create_device(kind: str, driver: str, params: dict[str, Any], context: DeviceContext) -> Device:
    cls = device_class(kind, driver)
    try:
        return cls(context=context, **params)
    except TypeError as err:
        raise DeviceUnavailable(f"{kind} driver '{driver}': bad parameters {sorted(params)}: {err}") from err


def create_clock(name: str, params: dict[str, Any]) -> Clock:
    try:
        spec = CLOCK_TABLE[name]
    except KeyError as err:
        raise DeviceUnavailable(f"no clock '{name}' (known: {', '.join(CLOCK_TABLE)})") from err
    return _load(spec, f"clock '{name}'")(**params)
