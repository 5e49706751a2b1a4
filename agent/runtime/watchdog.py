"""Software watchdog plus the systemd notify protocol.

Why both: under systemd (``Type=notify``, ``WatchdogSec=``; the protocol is in agent/runtime/sd_notify.py)
the service manager restarts a hung agent if ``WATCHDOG=1`` stops arriving; we only send it while
the main loop is proven alive (it calls :meth:`Watchdog.kick`), never from a free-running timer,
which would hide a hang.  Without systemd the same check ends the process with a distinct exit
code so any supervisor restarts it.  Before that, the stacks of all threads go to stderr
(``faulthandler``): a hang in the field must leave the evidence of where it hung, not only the fact that it did.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time

from agent.exit_codes import EXIT_WATCHDOG
from agent.runtime.sd_notify import SystemdNotifier, watchdog_interval_s

log = logging.getLogger(__name__)

__all__ = ["EXIT_WATCHDOG", "Watchdog"]


class Watchdog:
    def __init__(self, timeout_s: float, exit_on_hang: bool = True) -> None:
        self.timeout_s = timeout_s
        self.exit_on_hang = exit_on_hang
        self._last_kick = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notifier = SystemdNotifier()
        self.under_systemd = self._notifier.enabled
        interval = watchdog_interval_s()
        # ping at twice systemd's rate, as sd_watchdog_enabled(3) recommends
        self.systemd_interval_s = interval / 2 if interval else None

    def notify(self, message: str) -> None:
        self._notifier.notify(message)

    def start(self) -> None:
        self.notify("READY=1")
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Called by the main loop each time it completes a cycle."""
        self._last_kick = time.monotonic()

    @property
    def seconds_since_kick(self) -> float:
        return time.monotonic() - self._last_kick

    def _run(self) -> None:
        period = min(1.0, self.timeout_s / 4, self.systemd_interval_s or 1.0)
        reported = False
        while not self._stop.wait(period):
            age = self.seconds_since_kick
            if age <= self.timeout_s:
                self.notify("WATCHDOG=1")
                reported = False
                continue
            if not reported:
                log.critical("watchdog: main loop silent for %.1f s (limit %.1f s); thread stacks follow",
                             age, self.timeout_s)
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                reported = True
            if self.exit_on_hang:
                self.notify("STATUS=main loop hung")
                os._exit(EXIT_WATCHDOG)

    def stop(self) -> None:
        self.notify("STOPPING=1")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
