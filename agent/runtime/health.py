"""Process health for the periodic health message: CPU, memory, queues, sensor states."""

from __future__ import annotations

import psutil

from agent.hal.interfaces import Device
from agent.wire_schema import SensorHealth


class ProcessHealth:
    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)  # first call primes the counter

    def cpu_pct(self) -> float:
        return float(self._proc.cpu_percent(None))

    def mem_rss_mb(self) -> float:
        return self._proc.memory_info().rss / 1e6


def sensor_health(devices: dict[str, Device], errors: dict[str, int]) -> dict[str, SensorHealth]:
    return {
        name: SensorHealth(state=dev.state.value, detail=dev.state_detail[:200], errors=errors.get(name, 0))
        for name, dev in devices.items()
    }
