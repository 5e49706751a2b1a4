"""Simulated gamma spectrometer: the world's expected spectrum for this unit, sampled like a detector.

Why it behaves like hardware in time: a real spectrometer delivers one accumulated spectrum at
the end of each interval on a fixed grid, buffers a few if the reader is late, and drops the
oldest when its buffer is full.  This one does the same on the simulated clock, so the agent's
acquisition loop, its queue and its time stamps are exercised as they are in the field.

Reproducibility: the random numbers of interval k come from a generator seeded with (scenario
seed, unit id, k), so interval k holds the same counts whatever was read or skipped before it.

Fault injection (``fail_after_s`` .. ``fail_until_s``, simulated seconds since the scenario
start): ``fail_mode="timeout"`` makes the device go silent (read_spectrum waits ``timeout_s`` and
raises :class:`DeviceTimeout`), ``"data_error"`` delivers garbled frames on schedule
(:class:`DeviceDataError`), so the runtime's degradation and recovery can be tested.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from agent.hal.interfaces import (
    DeviceContext,
    DeviceDataError,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    GammaSpectrometer,
    SensorState,
    SpectrumReading,
)
from hal_sim.scenario import ScenarioError
from hal_sim.world import SimWorld, get_world, unit_seed, world_clock

log = logging.getLogger(__name__)

_FAIL_MODES = ("timeout", "data_error")
_DOSE_CAL_SIGMA = 0.03  # unit-to-unit calibration spread of a dose-rate reading (IEC 62327: +-20 % allowed)
_TOL_S = 1e-6


class SimSpectrometer(GammaSpectrometer):
    """A unit's gamma spectrometer in the simulated world (detector model from the scenario)."""

    def __init__(
        self,
        context: DeviceContext,
        scenario: str,
        unit_id: str | None = None,
        n_channels: int = 1024,
        interval_s: float = 1.0,
        seed: int | None = None,
        fail_after_s: float | None = None,
        fail_until_s: float | None = None,
        fail_mode: str = "timeout",
        max_energy_kev: float = 3000.0,
        buffer_intervals: int = 10,
        name: str = "sim-gamma",
    ) -> None:
        super().__init__(name, context)
        if not 16 <= int(n_channels) <= 65536:
            raise DeviceUnavailable(f"sim gamma: n_channels={n_channels} (must be 16..65536)")
        if not interval_s > 0:
            raise DeviceUnavailable(f"sim gamma: interval_s={interval_s} (must be > 0)")
        if fail_mode not in _FAIL_MODES:
            raise DeviceUnavailable(f"sim gamma: fail_mode={fail_mode!r} (one of {', '.join(_FAIL_MODES)})")
        if not max_energy_kev > 0:
            raise DeviceUnavailable(f"sim gamma: max_energy_kev={max_energy_kev} (must be > 0)")
        self.unit_id = unit_id or (context.unit_id if context is not None else "")
        self.scenario = str(scenario)
        self._n_channels = int(n_channels)
        self.interval_s = float(interval_s)
        self.max_energy_kev = float(max_energy_kev)
        self.fail_after_s = fail_after_s
        self.fail_until_s = fail_until_s
        self.fail_mode = fail_mode
        self.buffer_intervals = max(int(buffer_intervals), 1)
        self.dropped_intervals = 0
        try:
            self.world: SimWorld = get_world(context, scenario)
            self._unit = self.world.radiation_unit(self.unit_id)
            # build the detector response now: an unknown model, nuclide or material is reported
            # at start-up with its scenario key, and the first spectrum is not late
            self._response: Any = self.world.response(self._unit.detector, self._n_channels, self.max_energy_kev)
        except (ScenarioError, OSError, ImportError, KeyError) as err:
            raise DeviceUnavailable(f"sim gamma for unit '{self.unit_id}': {err}") from err
        self._entropy = unit_seed(self.world, self.unit_id, "gamma", seed)
        cal_rng = np.random.default_rng(unit_seed(self.world, self.unit_id, "gamma-calibration", seed))
        self._dose_bias = float(np.clip(1.0 + _DOSE_CAL_SIGMA * cal_rng.standard_normal(), 0.9, 1.1))
        self._clock = world_clock(context, self.world)
        self._last_k: int | None = None

    # ----------------------------------------------------------------------- properties
    @property
    def n_channels(self) -> int:
        return self._n_channels

    @property
    def detector_model(self) -> str:
        return self._unit.detector

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.detector_model,
            "serial": f"SIM-{self.unit_id}",
            "n_channels": self._n_channels,
            "interval_s": self.interval_s,
            "scenario": self.world.scenario.name,
            "unit_id": self.unit_id,
        }

    # ----------------------------------------------------------------------- life cycle
    def _open(self) -> None:
        self._last_k = None

    def _close(self) -> None:
        self._last_k = None

    # ----------------------------------------------------------------------- reading
    def _in_fault(self, t_s: float) -> bool:
        """Is the device faulty at ``t_s``: fault window [fail_after_s, fail_until_s)."""
        if self.fail_after_s is None or t_s < self.fail_after_s:
            return False
        return self.fail_until_s is None or t_s < self.fail_until_s

    def _interval_faulty(self, end_s: float) -> bool:
        """Does the interval ending at ``end_s`` overlap the fault window."""
        if self.fail_after_s is None or end_s <= self.fail_after_s + _TOL_S:
            return False
        return self.fail_until_s is None or end_s - self.interval_s < self.fail_until_s - _TOL_S

    def _next_index(self, now_s: float) -> int:
        """Index k of the next interval to deliver (it ends at k * interval_s)."""
        k_done = math.floor(now_s / self.interval_s + _TOL_S)  # newest interval already complete
        if self._last_k is None:
            return k_done + 1
        k = self._last_k + 1
        if k_done - k >= self.buffer_intervals:  # device buffer overflowed: oldest spectra lost
            lost = k_done - k
            self.dropped_intervals += lost
            log.warning("sim gamma %s: reader %d intervals behind, %d dropped", self.unit_id, lost + 1, lost)
            k = k_done
        return k

    def read_spectrum(self, timeout_s: float) -> SpectrumReading:
        if self.state not in (SensorState.OK, SensorState.DEGRADED):
            raise DeviceError(f"sim gamma {self.unit_id}: read on a device that is not open ({self.state.value})")
        clock = self._clock
        now = self.world.time_s(clock)
        if self._in_fault(now) and self.fail_mode == "timeout":
            clock.sleep(timeout_s)
            self._last_k = None  # after recovery the device starts a fresh interval
            raise DeviceTimeout(f"sim gamma {self.unit_id}: no spectrum within {timeout_s:.1f} s (injected fault)")
        k = self._next_index(now)
        end_s = k * self.interval_s
        if end_s - now > timeout_s + _TOL_S:
            clock.sleep(timeout_s)
            raise DeviceTimeout(
                f"sim gamma {self.unit_id}: next spectrum due in {end_s - now:.2f} s > timeout {timeout_s:.2f} s"
            )
        while (wait := end_s - self.world.time_s(clock)) > _TOL_S:
            clock.sleep(wait)
        self._last_k = k
        if self._interval_faulty(end_s):
            raise DeviceDataError(f"sim gamma {self.unit_id}: garbled spectrum frame (injected fault)")
        return self._reading(k, end_s)

    def _reading(self, k: int, end_s: float) -> SpectrumReading:
        dt = self.interval_s
        resp = self._response
        rate, dose_true = self.world.expected_rate(
            self.unit_id, end_s - dt, end_s, self._n_channels, self.max_energy_kev
        )
        rng = np.random.default_rng([*self._entropy, k % (1 << 63)])
        temp_c = self.world.temperature_c(end_s)
        counts, live_s = resp.sample(rate * dt, dt, rng, temperature_c=temp_c)
        counts = np.asarray(counts, dtype=np.int64)
        # the instrument's own dose reading: calibration bias of this unit + counting statistics
        rel_sigma = 1.0 / math.sqrt(max(int(counts.sum()), 1))
        dose_est = max(dose_true * self._dose_bias * (1.0 + rel_sigma * rng.standard_normal()), 0.0)
        lag = max(self.world.time_s(self._clock) - end_s, 0.0)
        return SpectrumReading(
            counts=counts,
            live_time_s=float(live_s),
            real_time_s=dt,
            calibration=resp.calibration,
            t_utc=self.world.utc_at(end_s),
            t_mono_s=self._clock.monotonic_s() - lag,
            detector_model=self.detector_model,
            dose_rate_usv_h=float(dose_est),
            temperature_c=round(float(temp_c), 2),
        )
