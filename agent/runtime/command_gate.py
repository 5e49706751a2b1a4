"""The unit's command gate: every command passes :class:`agent.command_auth.CommandVerifier` or is dropped.

Why a gate in front of the role: the role acts on commands (a handheld walks to the target), so
the check must sit where commands enter the runtime, once, for every role.  A refused command is
never queued, never answered on the uplink (an unauthenticated sender must not be able to make the
unit talk either) and never shown to the operator; it is counted by reason, logged at WARNING (at
most once per reason every ``log_interval_s``, with the number suppressed, so a flood cannot fill
the disk) and reported in status.json and in health messages (``commands_rejected``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.command_auth import CommandRejected, CommandVerifier, KeyFileError, load_public_keys
from agent.config import CommandAuthConfig
from agent.hal.interfaces import Clock
from agent.wire_schema import Command

log = logging.getLogger(__name__)

UNSIGNED_MAX_AGE_S = 600.0  # only with require_signed_commands: false (signed ones carry an expiry)


class CommandGate:
    def __init__(self, config: CommandAuthConfig, unit_id: str, clock: Clock, state_dir: str | Path,
                 log_interval_s: float = 10.0) -> None:
        keys_dir = Path(config.keys_dir)
        if not keys_dir.is_absolute():
            keys_dir = Path(state_dir) / keys_dir
        try:
            keys = load_public_keys(keys_dir)
        except KeyFileError as err:
            log.error("command keys: %s; this unit will refuse every command", err)
            keys = {}
        if not keys and config.require_signed_commands:
            log.error("no controller key pinned in %s: this unit will refuse every command", keys_dir)
        elif not config.require_signed_commands:
            log.warning("require_signed_commands is false: UNSIGNED COMMANDS WILL BE OBEYED (lab use only)")
        else:
            log.info("commands: %d pinned controller key(s) in %s: %s", len(keys), keys_dir, ", ".join(sorted(keys)))
        self.keys_dir = keys_dir
        self.clock = clock
        self.verifier = CommandVerifier(keys, clock, unit_id, max_skew_s=config.max_clock_skew_s,
                                        max_ttl_s=config.max_ttl_s, state_dir=state_dir,
                                        require_signed=config.require_signed_commands,
                                        max_nonces=config.max_nonces)
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self._log_interval_s = log_interval_s
        self._last_log: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def admit(self, cmd: Command) -> bool:
        """True if the command may be obeyed; False (counted, logged) if it must be dropped."""
        try:
            verified = self.verifier.verify(cmd)
            if verified.key_id is None:
                self._check_unsigned_age(cmd)
        except CommandRejected as rej:
            self._note_reject(cmd, rej)
            return False
        with self._lock:
            self.accepted += 1
        log.info("command %s %s accepted (key %s)", cmd.command, cmd.cmd_id, verified.key_id or "none: unsigned")
        return True

    def _check_unsigned_age(self, cmd: Command) -> None:
        try:
            sent = datetime.fromisoformat(cmd.t_utc.replace("Z", "+00:00"))
            age_s = (self.clock.utc_now() - sent).total_seconds()
        except (ValueError, TypeError) as err:
            raise CommandRejected("bad_time", f"t_utc {cmd.t_utc!r} ({err})") from err
        if age_s > UNSIGNED_MAX_AGE_S:
            raise CommandRejected("expired", f"unsigned command {age_s:.0f} s old")

    def _note_reject(self, cmd: Command, rej: CommandRejected) -> None:
        now = time.monotonic()
        with self._lock:
            self.rejected[rej.reason] += 1
            last = self._last_log.get(rej.reason)
            if last is not None and now - last < self._log_interval_s:
                self._suppressed[rej.reason] += 1
                return
            self._last_log[rej.reason] = now
            n = self._suppressed.pop(rej.reason, 0)
        task = cmd.task.task_id if cmd.task else cmd.task_id
        log.warning("REFUSED %s command %s (task %s, for %s): %s%s", cmd.command, cmd.cmd_id[:40],
                    (task or "-")[:40], cmd.unit_id, rej, f" (+{n} similar suppressed)" if n else "")

    @property
    def rejected_total(self) -> int:
        with self._lock:
            return sum(self.rejected.values())

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"accepted": self.accepted, "rejected": dict(self.rejected),
                    "pinned_keys": sorted(self.verifier.keys), "keys_dir": str(self.keys_dir),
                    "require_signed": self.verifier.require_signed}
