"""Hardware abstraction layer: device contracts and the driver table."""

from agent.hal.interfaces import (
    Camera,
    Clock,
    Device,
    DeviceContext,
    DeviceDataError,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    EnergyCalibration,
    FixQuality,
    Frame,
    GammaSpectrometer,
    GnssFix,
    GnssReceiver,
    OperatorDisplay,
    SensorState,
    SpectrumReading,
    TaskGuide,
    utc_iso,
)

__all__ = [
    "Camera", "Clock", "Device", "DeviceContext", "DeviceDataError", "DeviceError", "DeviceTimeout",
    "DeviceUnavailable", "EnergyCalibration", "FixQuality", "Frame", "GammaSpectrometer", "GnssFix",
    "GnssReceiver", "OperatorDisplay", "SensorState", "SpectrumReading", "TaskGuide", "utc_iso",
]
