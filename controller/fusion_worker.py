"""A worker thread for the incident fusions, so dispatch never waits on a fit.

Why: a fusion (controller.localization.locate with the two-source test) takes 0.3-2 s, and
under load the dispatcher, which ran it inline, held back task events (accepted, on site,
confirmed) by 1.5-3 min.  The dispatcher now hands the fit's *inputs* (rows it read from the
store on its own thread) to this worker and applies the finished estimate on its next tick.

* **Latest wins per incident**: a newer request for an incident whose request is still waiting
  replaces it (counted ``superseded``): the newer one holds every measurement the older had.
* **Bounded**: at most ``max_pending`` incidents wait; beyond that the oldest waiting request is
  dropped, counted (``dropped``) and logged - the incident keeps its previous estimate and is
  re-fused with its next alarm or hold.
* Results wait in a dict keyed by incident (again latest wins), collected by the dispatcher.
* An exception in a fit is caught and handed back as the result (the dispatcher logs it).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["FusionWorker"]

log = logging.getLogger(__name__)


class FusionWorker:
    def __init__(self, compute: Callable[[dict[str, Any]], Any], max_pending: int = 64,
                 name: str = "fusion") -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._compute = compute
        self.max_pending = int(max_pending)
        self._pending: dict[str, dict[str, Any]] = {}  # insertion order = age
        self._done: dict[str, tuple[dict[str, Any], Any]] = {}
        self._busy: str | None = None
        self._cond = threading.Condition()
        self._stop = False
        self.stats: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, key: str, job: dict[str, Any]) -> None:
        with self._cond:
            if key in self._pending:
                del self._pending[key]
                self.stats["superseded"] += 1
            elif len(self._pending) >= self.max_pending:
                old = next(iter(self._pending))
                del self._pending[old]
                self.stats["dropped"] += 1
                log.warning("fusion queue full (%d incidents waiting): request for incident %s dropped "
                            "(it keeps its previous estimate)", self.max_pending, old)
            self._pending[key] = job
            self.stats["submitted"] += 1
            self._cond.notify()

    def collect(self) -> list[tuple[str, dict[str, Any], Any]]:
        """Finished fusions since the last call: (key, job, result or exception)."""
        with self._cond:
            done, self._done = self._done, {}
        return [(k, job, res) for k, (job, res) in done.items()]

    def waiting(self, key: str) -> bool:
        """A request for ``key`` is queued or being computed (its result not yet collected)."""
        with self._cond:
            return key in self._pending or self._busy == key

    def idle(self) -> bool:
        with self._cond:
            return not self._pending and self._busy is None

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until nothing is queued or running (tests, shutdown); False on time-out."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._busy is None, timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or bool(self._pending))
                if self._stop:
                    return
                key = next(iter(self._pending))
                job = self._pending.pop(key)
                self._busy = key
            try:
                result: Any = self._compute(job)
            except Exception as err:  # handed back: the dispatcher logs it and keeps the old estimate
                result = err
            with self._cond:
                if key in self._done:
                    self.stats["superseded"] += 1
                self._done[key] = (job, result)
                self._busy = None
                self.stats["computed"] += 1
                self._cond.notify_all()
