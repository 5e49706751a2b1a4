"""Unit liveness: online / stale / offline, from session messages and silence.

Rules (Sparkplug-B style session awareness, adapted to this wire schema):

* ``birth`` or any message -> ``online`` (a unit that sends is connected, even if it is replaying
  backfill from its outbox).
* ``death`` (the MQTT Last Will the broker publishes when the unit's connection drops) ->
  ``offline``, but only if it belongs to the unit's current session: the Last Will is registered
  at connect time, so it carries the boot id and ``t_mono_s`` of that connect.  A late death of an
  earlier session (delivered after the unit reconnected and sent a new birth) is ignored.
* silence: ``stale`` after ``stale_after_s`` without a message, ``offline`` after
  ``offline_after_s`` (covers a broker that never published the will, e.g. a restarted broker).

Silence is measured on the controller's clock (``received_utc`` stamps from ``Clock.utc_now()``),
never on agent timestamps, which may be invalid before GNSS/NTP.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

from agent.hal.interfaces import Clock, utc_iso
from controller.config import LivenessConfig

__all__ = ["LivenessMonitor", "UnitState", "death_applies", "state_on_message", "state_on_silence"]

log = logging.getLogger(__name__)

UnitState = Literal["online", "stale", "offline"]


def state_on_message(current: str | None, kind: str, delivery: str = "live") -> UnitState:
    """State after a message of ``kind`` (other than death) arrives."""
    return "online"


def death_applies(
    current_boot_id: str | None, session_t_mono_s: float | None, death_boot_id: str, death_t_mono_s: float
) -> bool:
    """Whether a Last Will belongs to the unit's current session (see module doc)."""
    if current_boot_id is None:
        return True
    if death_boot_id != current_boot_id:
        return False
    return session_t_mono_s is None or death_t_mono_s >= session_t_mono_s


def state_on_silence(current: str, silent_s: float, stale_after_s: float, offline_after_s: float) -> str:
    if current == "offline":
        return current
    if silent_s >= offline_after_s:
        return "offline"
    if silent_s >= stale_after_s:
        return "stale"
    return current


class SilenceSweeper(Protocol):
    """The store's side of the sweep (``controller.store.Store`` has it). A Protocol, so this module, which
    the store imports for the transition rules, does not import the store back."""

    def sweep_liveness(self, now_utc: str, stale_after_s: float,
                       offline_after_s: float) -> list[tuple[str, str, str]]: ...


class LivenessMonitor:
    """Periodic sweep that demotes silent units; logs every transition."""

    def __init__(self, store: SilenceSweeper, clock: Clock, config: LivenessConfig):
        self._store = store
        self._clock = clock
        self._config = config

    def tick(self) -> list[tuple[str, str, str]]:
        changes = self._store.sweep_liveness(
            utc_iso(self._clock.utc_now()), self._config.stale_after_s, self._config.offline_after_s
        )
        for unit_id, old, new in changes:
            log.info("unit %s: %s -> %s (silent)", unit_id, old, new)
        return changes
