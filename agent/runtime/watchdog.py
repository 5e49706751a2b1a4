"""Software watchdog plus the systemd notify protocol.

Why both: under systemd (``WatchdogSec=``) the service manager restarts a hung agent if
``WATCHDOG=1`` stops arriving; we only send it while the main loop is proven alive (it calls
:meth:`Watchdog.kick`), never from a free-running timer, which would hide a hang.  Without
systemd the same check ends the process with a distinct exit code so any supervisor restarts it.
Before that, the stacks of all threads go to stderr (``faulthandler``): a hang in the field must
leave the evidence of where it hung, not only the fact that it did.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

EXIT_WATCHDOG = 70


class Watchdog:
    def __init__(self, timeout_s: float, exit_on_hang: bool = True) -> None:
        self.timeout_s = timeout_s
        self.exit_on_hang = exit_on_hang
        self._last_kick = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notifier = None
        self.under_systemd = bool(os.environ.get("NOTIFY_SOCKET"))
        if self.under_systemd:
            try:
                import sdnotify

                self._notifier = sdnotify.SystemdNotifier()
            except ImportError:  # pragma: no cover - sdnotify is a dependency
                log.warning("NOTIFY_SOCKET set but sdnotify missing: no systemd watchdog")
        usec = os.environ.get("WATCHDOG_USEC")
        self.systemd_interval_s = int(usec) / 1e6 / 2 if usec and usec.isdigit() else None

    def notify(self, message: str) -> None:
        if self._notifier is not None:
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
