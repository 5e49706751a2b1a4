"""Simulated GNSS receiver: the unit's true position plus a realistic, slowly wandering error.

Why a correlated error and not white noise: a stand-alone receiver's error is dominated by
slowly varying ionospheric, ephemeris and multipath terms with correlation times of minutes
(Misra & Enge, *Global Positioning System*, 2nd ed., 2006, ch. 5), so consecutive fixes are off
in the same direction.  That matters to the fleet: a track drawn from such fixes is shifted,
not jittered, and source localisation must live with it.  Each axis is a first-order
Gauss-Markov process (Gelb, *Applied Optimal Estimation*, 1974, sec. 3.8) with standard deviation
``sigma_m`` and correlation time ``corr_time_s``, synthesised by spectral representation
(Shinozuka & Deodatis, Appl. Mech. Rev. 44(4), 1991): a sum of cosines with random phases and
frequencies drawn from the process's Lorentzian spectrum.  The error is then a pure function of
time: reproducible from the seed and the same whichever fixes were read.

Fix loss (``outage``: list of [start_s, end_s] in simulated seconds since the scenario start)
returns fixes with ``quality == INVALID`` and the last known position, as receivers do.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agent.hal.interfaces import (
    DeviceContext,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    FixQuality,
    GnssFix,
    GnssReceiver,
    SensorState,
)
from hal_sim.scenario import ScenarioError
from hal_sim.world import SimWorld, get_world, unit_seed, world_clock

_TOL_S = 1e-6
_N_TERMS = 32


class GaussMarkovError:
    """A zero-mean process with autocorrelation ``sigma^2 exp(-|dt| / tau)``, evaluated at any t.

    For omega drawn from the half-Cauchy density ``2 tau / (pi (1 + (omega tau)^2))`` and uniform
    phases, ``E[cos(omega t + phi) cos(omega (t + dt) + phi)] = exp(-|dt| / tau) / 2``; K terms of
    amplitude ``sigma sqrt(2 / K)`` give the variance ``sigma^2``.
    """

    def __init__(self, rng: np.random.Generator, sigma: float, tau_s: float, n_terms: int = _N_TERMS) -> None:
        u = rng.uniform(0.0, 1.0, n_terms)
        self._omega = np.tan(0.5 * math.pi * u) / tau_s
        self._phase = rng.uniform(0.0, 2 * math.pi, n_terms)
        self._amp = sigma * math.sqrt(2.0 / n_terms)

    def __call__(self, t_s: float) -> float:
        return float(self._amp * np.cos(self._omega * t_s + self._phase).sum())


class SimGnss(GnssReceiver):
    """GNSS receiver of a unit in the simulated world (fix rate ``rate_hz``, default 1 Hz)."""

    def __init__(
        self,
        context: DeviceContext,
        scenario: str,
        unit_id: str | None = None,
        hdop: float = 0.9,
        sigma_m: float = 1.0,
        seed: int | None = None,
        outage: list[list[float]] | None = None,
        rate_hz: float = 1.0,
        corr_time_s: float = 60.0,
        name: str = "sim-gnss",
    ) -> None:
        super().__init__(name, context)
        if not sigma_m >= 0:
            raise DeviceUnavailable(f"sim gnss: sigma_m={sigma_m} (must be >= 0)")
        if not rate_hz > 0:
            raise DeviceUnavailable(f"sim gnss: rate_hz={rate_hz} (must be > 0)")
        if not corr_time_s > 0:
            raise DeviceUnavailable(f"sim gnss: corr_time_s={corr_time_s} (must be > 0)")
        windows: list[tuple[float, float]] = []
        for i, w in enumerate(outage or []):
            if len(w) != 2 or not float(w[0]) < float(w[1]):
                raise DeviceUnavailable(f"sim gnss: outage[{i}]={w!r} (want [start_s, end_s] with start < end)")
            windows.append((float(w[0]), float(w[1])))
        self.unit_id = unit_id or (context.unit_id if context is not None else "")
        self.scenario = str(scenario)
        self.hdop = float(hdop)
        self.sigma_m = float(sigma_m)
        self.rate_hz = float(rate_hz)
        self.outage = windows
        try:
            self.world: SimWorld = get_world(context, scenario)
            self._unit = self.world.radiation_unit(self.unit_id)
        except (ScenarioError, OSError, ImportError, KeyError) as err:
            raise DeviceUnavailable(f"sim gnss for unit '{self.unit_id}': {err}") from err
        self._entropy = unit_seed(self.world, self.unit_id, "gnss", seed)
        rng = np.random.default_rng(self._entropy)
        self._err = [GaussMarkovError(rng, self.sigma_m * s, corr_time_s) for s in (1.0, 1.0, 1.6)]  # VDOP > HDOP
        self._sat_phase = float(rng.uniform(0, 2 * math.pi))
        self._clock = world_clock(context, self.world)
        self._last_k: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": "sim-gnss",
            "serial": f"SIM-{self.unit_id}",
            "rate_hz": self.rate_hz,
            "unit_id": self.unit_id,
        }

    def _open(self) -> None:
        self._last_k = None

    def in_outage(self, t_s: float) -> bool:
        return any(a <= t_s < b for a, b in self.outage)

    def _last_known(self, t_s: float) -> tuple[float, float, float]:
        """Position of the last valid epoch before the outage holding ``t_s``: what a receiver
        keeps reporting during fix loss.  Computed, not remembered, so it does not depend on
        which fixes were read."""
        period = 1.0 / self.rate_hz
        t = t_s
        for _ in range(len(self.outage) + 1):
            start = min((a for a, b in self.outage if a <= t < b), default=None)
            if start is None:
                f = self.fix_at(t)
                return f.lat_deg, f.lon_deg, f.alt_m
            t = (math.ceil(start / period - _TOL_S) - 1) * period  # the epoch just before
        frame = self.world.frame
        return frame.lat0_deg, frame.lon0_deg, frame.alt0_m

    def read_fix(self, timeout_s: float) -> GnssFix:
        if self.state not in (SensorState.OK, SensorState.DEGRADED):
            raise DeviceError(f"sim gnss {self.unit_id}: read on a device that is not open ({self.state.value})")
        clock = self._clock
        now = self.world.time_s(clock)
        k_done = math.floor(now * self.rate_hz + _TOL_S)
        if self._last_k is None or k_done > self._last_k:
            k = k_done  # a newer fix is already there: the newest one
        else:
            k = self._last_k + 1
            t_k = k / self.rate_hz
            if t_k - now > timeout_s + _TOL_S:
                clock.sleep(timeout_s)
                raise DeviceTimeout(f"sim gnss {self.unit_id}: no fix within {timeout_s:.2f} s")
            while (wait := t_k - self.world.time_s(clock)) > _TOL_S:
                clock.sleep(wait)
        self._last_k = k
        return self.fix_at(k / self.rate_hz)

    def fix_at(self, t_s: float) -> GnssFix:
        """The fix this receiver reports for epoch ``t_s`` (also used by tests and the demo)."""
        lag = max(self.world.time_s(self._clock) - t_s, 0.0)
        t_mono = self._clock.monotonic_s() - lag
        t_utc = self.world.utc_at(t_s)
        if self.in_outage(t_s):
            lat, lon, alt = self._last_known(t_s)
            return GnssFix(
                t_utc=t_utc,
                t_mono_s=t_mono,
                lat_deg=lat,
                lon_deg=lon,
                alt_m=alt,
                quality=FixQuality.INVALID,
                num_satellites=int(2 + (t_s // 7) % 2),
                hdop=None,
            )
        st = self.world.actor_state(self.unit_id, t_s)
        rng = np.random.default_rng([*self._entropy, int(round(t_s * 1000)) % (1 << 63)])
        ex, ey, ez = (e(t_s) for e in self._err)
        lat, lon, alt = self.world.frame.to_geodetic(st.x_m + ex, st.y_m + ey, self._unit.detector_height_m + ez)
        moving = st.course_deg is not None
        speed = max(st.speed_m_s + 0.03 * rng.standard_normal(), 0.0) if moving else 0.0
        course = (st.course_deg + 0.5 * rng.standard_normal()) % 360.0 if moving else None
        sats = 9 + int(round(3 * math.sin(t_s / 900.0 + self._sat_phase)))
        return GnssFix(
            t_utc=t_utc,
            t_mono_s=t_mono,
            lat_deg=lat,
            lon_deg=lon,
            alt_m=alt,
            quality=FixQuality.GPS,
            num_satellites=sats,
            hdop=self.hdop,
            speed_m_s=float(speed),
            course_deg=None if course is None else float(course),
        )
