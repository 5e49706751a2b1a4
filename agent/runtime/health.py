"""Process health for the periodic health message: CPU, memory, queues, sensor states, disk faults."""

from __future__ import annotations

from typing import Any

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


def persistence_health(outbox_report: dict[str, Any], status_write_failures: int) -> dict[str, Any]:
    """The Health fields that report disk faults and lost messages (issue 15: no silent loss).

    From :meth:`agent.link.outbox.Outbox.report`: the outbox's current state, its failed disk
    operations by kind, messages lost by reason (each a seq gap at the controller), and how many
    messages wait in memory because the disk refused them.  Dicts are capped at the wire schema's
    16 entries (largest counts kept) so a health message can always be built.
    """

    def top(counts: dict[str, int]) -> dict[str, int]:
        return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:16])

    return {
        "outbox_state": str(outbox_report.get("state", "ok"))[:32],
        "outbox_errors": top({str(k)[:32]: int(v) for k, v in outbox_report.get("errors", {}).items()}),
        "messages_lost": top({str(k)[:32]: int(v) for k, v in outbox_report.get("lost", {}).items()}),
        "outbox_in_memory": int(outbox_report.get("in_memory", 0)),
        "status_write_failures": int(status_write_failures),
    }
