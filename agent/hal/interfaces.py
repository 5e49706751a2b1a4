"""Hardware abstraction layer: the device contracts the agent is written against.

Why this module exists: the agent must run unchanged on a RadiaCode-10x (USB), an Open Gamma
Detector (serial text protocol), an NMEA 0183 GPS, a V4L2/RTSP camera, or on the simulated
devices in ``hal_sim``.  Analysis code sees only these value types and abstract classes; the
concrete class is chosen by name from the unit's YAML through :mod:`agent.hal.registry`.

The shape follows python-can's ``BusABC``: public methods carry the shared behaviour
(idempotent ``close``, context manager, state tracking, error translation); a device fills in
a few ``_hooks``.
"""

from __future__ import annotations

import abc
import enum
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- errors
class DeviceError(Exception):
    """Base of every HAL error; the message names the device and what went wrong."""


class DeviceUnavailable(DeviceError):
    """The device (or the optional library it needs, e.g. pyusb or cv2) is not present."""


class DeviceTimeout(DeviceError):
    """No complete reading arrived within the time-out."""


class DeviceDataError(DeviceError):
    """The device sent bytes that could not be parsed into a reading (garbage, truncation)."""


class SensorState(enum.StrEnum):
    """Health of one sensor as reported in health messages."""

    NOT_OPENED = "not_opened"
    OK = "ok"
    DEGRADED = "degraded"  # readings arrive but some are bad / no GNSS fix
    FAILED = "failed"  # no readings; the agent keeps running without it
    CLOSED = "closed"


# --------------------------------------------------------------------------- value types
@dataclass(frozen=True, slots=True)
class EnergyCalibration:
    """Polynomial channel -> energy map, ``E_keV = sum(c_i * ch**i)``.

    Channel numbers refer to channel centres (0-based), as RadiaCode and N42 files use them.
    """

    coefficients_kev: tuple[float, ...] = (0.0, 3.0, 0.0)

    @classmethod
    def from_linear(cls, offset_kev: float, gain_kev_per_ch: float) -> EnergyCalibration:
        return cls((float(offset_kev), float(gain_kev_per_ch), 0.0))

    def energy_kev(self, channels: np.ndarray | float) -> np.ndarray:
        ch = np.asarray(channels, dtype=float)
        return np.polynomial.polynomial.polyval(ch, np.asarray(self.coefficients_kev, dtype=float))

    def edges_kev(self, n_channels: int) -> np.ndarray:
        """Energies of the n+1 channel edges (centre +- 0.5 channel)."""
        return self.energy_kev(np.arange(n_channels + 1, dtype=float) - 0.5)


@dataclass(frozen=True, slots=True)
class SpectrumReading:
    """One accumulated spectrum from a gamma spectrometer.

    ``counts`` are raw counts per channel accumulated over ``real_time_s`` of which
    ``live_time_s`` the detector was able to register pulses (dead time = real - live).
    ``dose_rate_usv_h`` is the device's own dose-rate estimate when it provides one
    (RadiaCode does); analysis computes its own H*(10) from the spectrum regardless.
    """

    counts: np.ndarray  # int64, shape (n_channels,)
    live_time_s: float
    real_time_s: float
    calibration: EnergyCalibration
    t_utc: datetime  # end of the accumulation interval
    t_mono_s: float  # monotonic time of the end of the interval (agent clock)
    detector_model: str = "unknown"
    dose_rate_usv_h: float | None = None
    temperature_c: float | None = None

    @property
    def n_channels(self) -> int:
        return int(self.counts.shape[0])

    @property
    def gross_counts(self) -> int:
        return int(self.counts.sum())

    @property
    def gross_cps(self) -> float:
        return self.gross_counts / self.live_time_s if self.live_time_s > 0 else 0.0


class FixQuality(enum.IntEnum):
    """GGA fix quality indicator (NMEA 0183)."""

    INVALID = 0
    GPS = 1
    DGPS = 2
    PPS = 3
    RTK = 4
    FLOAT_RTK = 5
    ESTIMATED = 6
    MANUAL = 7
    SIMULATION = 8


@dataclass(frozen=True, slots=True)
class GnssFix:
    """A position fix. ``valid`` is False on fix loss; position fields then hold the last known."""

    t_utc: datetime | None  # UTC time from the receiver (None until it knows the date/time)
    t_mono_s: float  # agent monotonic time when the fix was received
    lat_deg: float
    lon_deg: float
    alt_m: float
    quality: FixQuality
    num_satellites: int = 0
    hdop: float | None = None
    speed_m_s: float | None = None
    course_deg: float | None = None

    @property
    def valid(self) -> bool:
        """A measured position: estimated (dead reckoning), manual and simulator modes are not."""
        return self.quality not in (FixQuality.INVALID, FixQuality.ESTIMATED, FixQuality.MANUAL,
                                    FixQuality.SIMULATION)


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera frame (BGR uint8 as OpenCV delivers it)."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    t_mono_s: float
    t_utc: datetime
    index: int


@dataclass(frozen=True, slots=True)
class TaskGuide:
    """What a handheld operator is shown: where to go and what to measure."""

    task_id: str
    target_x_m: float
    target_y_m: float
    target_z_m: float
    target_lat_deg: float
    target_lon_deg: float
    dwell_s: float
    note: str = ""


# --------------------------------------------------------------------------- context
@dataclass
class DeviceContext:
    """What a device constructor is handed besides its YAML parameters.

    ``shared`` is one dict per agent process: simulated devices of one unit use it to share
    their simulated world (the vehicle the detector and the GPS sit on); real drivers ignore it.
    """

    unit_id: str
    clock: Clock | None = None
    shared: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- base device
class Device(abc.ABC):
    """Shared behaviour of every device: open/close life cycle, state, context manager."""

    kind: str = "device"

    def __init__(self, name: str = "", context: DeviceContext | None = None) -> None:
        self.name = name or type(self).__name__
        self.context = context
        self._state = SensorState.NOT_OPENED
        self._state_detail = ""
        self._lock = threading.Lock()

    # -- public, shared
    @property
    def state(self) -> SensorState:
        return self._state

    @property
    def state_detail(self) -> str:
        return self._state_detail

    def set_state(self, state: SensorState, detail: str = "") -> None:
        if state != self._state or detail != self._state_detail:
            log.info("%s %s -> %s %s", self.kind, self.name, state.value, detail)
        self._state = state
        self._state_detail = detail

    def open(self) -> None:
        with self._lock:
            if self._state not in (SensorState.NOT_OPENED, SensorState.CLOSED, SensorState.FAILED):
                return
            try:
                self._open()
            except DeviceError as err:
                self.set_state(SensorState.FAILED, str(err))
                raise
            except Exception as err:  # translate library errors at the boundary
                self.set_state(SensorState.FAILED, f"{type(err).__name__}: {err}")
                raise DeviceError(f"{self.kind} {self.name}: open failed: {err}") from err
            self.set_state(SensorState.OK)

    def close(self) -> None:
        """Idempotent: safe to call twice and on a device that never opened."""
        with self._lock:
            if self._state in (SensorState.CLOSED, SensorState.NOT_OPENED):
                self._state = SensorState.CLOSED
                return
            try:
                self._close()
            finally:
                self.set_state(SensorState.CLOSED)

    def __enter__(self) -> Device:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Static facts for the birth message (model, serial, channels ...)."""
        return {"kind": self.kind, "name": self.name, "class": type(self).__name__}

    # -- hooks
    @abc.abstractmethod
    def _open(self) -> None: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass


class GammaSpectrometer(Device):
    """A spectrometer that delivers accumulated spectra at a fixed interval (1 s on vehicles)."""

    kind = "gamma"

    @property
    @abc.abstractmethod
    def n_channels(self) -> int: ...

    @property
    @abc.abstractmethod
    def detector_model(self) -> str:
        """Detector model name as in ``detector_resolution.csv`` (e.g. 'NaI 2x4x16 in log')."""

    @abc.abstractmethod
    def read_spectrum(self, timeout_s: float) -> SpectrumReading:
        """Block until the next accumulation interval completes; raise DeviceTimeout/DataError."""


class GnssReceiver(Device):
    kind = "gnss"

    @abc.abstractmethod
    def read_fix(self, timeout_s: float) -> GnssFix:
        """Return the newest fix (waiting up to ``timeout_s`` for one); fix loss gives
        a fix with ``quality == INVALID`` rather than an exception."""


class Camera(Device):
    kind = "camera"

    @property
    @abc.abstractmethod
    def fps(self) -> float: ...

    @abc.abstractmethod
    def read_frame(self, timeout_s: float) -> Frame: ...


class OperatorDisplay(Device):
    """The handheld's screen. Shows the operator where to go; the simulated version is the
    simulated operator, who walks to the target shown."""

    kind = "display"

    @abc.abstractmethod
    def show_task(self, guide: TaskGuide) -> None: ...

    @abc.abstractmethod
    def clear(self) -> None: ...


class Clock(abc.ABC):
    """Time source. Real units use the system clock; simulations run faster than real time.

    ``utc_valid`` is False until the real clock is known good (NTP/GNSS); messages carry it.
    """

    @abc.abstractmethod
    def monotonic_s(self) -> float: ...

    @abc.abstractmethod
    def utc_now(self) -> datetime: ...

    @abc.abstractmethod
    def sleep(self, duration_s: float) -> None:
        """Sleep ``duration_s`` of this clock's time."""

    @property
    def utc_valid(self) -> bool:
        return True

    @property
    def rate(self) -> float:
        """Clock seconds per wall-clock second (1 for real time)."""
        return 1.0


def utc_iso(t: datetime) -> str:
    """UTC ISO-8601 with milliseconds and a 'Z' suffix."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
