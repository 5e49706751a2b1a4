"""Failed connection attempts to the broker, logged at WARNING with back-off.

Why: an unreachable broker was logged only at DEBUG, so an agent in the field stayed silent for
35 s (and for ever at the default level) against a dead or mistyped broker.  Logging every
attempt instead would fill the journal during a long outage, since paho retries every 1 s ..
``reconnect_max_s``.  So a streak of failures is logged at its 1st, 2nd, 4th, 8th ... attempt
and at least every ``max_quiet_s``, each line with the address, the error, how many attempts
and for how long; the end of a streak is logged once when the connection succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ConnectFailureLog:
    """Counts one streak of failed connection attempts and decides which of them to log."""

    def __init__(self, logger: logging.Logger, what: str, max_quiet_s: float = 300.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._what = what
        self._max_quiet_s = max_quiet_s
        self._now = monotonic
        self.failures = 0
        self._first_s = 0.0
        self._last_logged_s = 0.0
        self._next_count = 1

    def failed(self, address: str, error: object, retry_max_s: float) -> bool:
        """Count a failed attempt; log it if it is due.  Returns True when a line was logged."""
        now = self._now()
        if self.failures == 0:
            self._first_s = now
        self.failures += 1
        if self.failures < self._next_count and now - self._last_logged_s < self._max_quiet_s:
            return False
        self._next_count = self.failures * 2
        self._last_logged_s = now
        self._log.warning("%s: broker %s unreachable (%s): %d failed attempt(s) over %.0f s; retrying with "
                          "back-off up to %.0f s, messages wait in the outbox", self._what, address,
                          error or "connection failed", self.failures, now - self._first_s, retry_max_s)
        return True

    def connected(self) -> None:
        """The connection succeeded: close the streak (logged if there was one)."""
        if self.failures:
            self._log.warning("%s: broker reachable again after %d failed attempt(s) over %.0f s", self._what,
                              self.failures, self._now() - self._first_s)
        self.failures = 0
        self._next_count = 1
