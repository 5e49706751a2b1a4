"""A simulated serial device on a pseudo-terminal: the port machinery every wire-level emulator shares.

Why a pty: the real driver under test then runs exactly as on a unit - pyserial opens a tty path,
a reader thread blocks in ``read``, bytes arrive in arbitrary chunks - and the faults of a flaky
USB-UART / USB-CDC link can be injected at the byte level: line noise (:meth:`PtyEmulator.inject_garbage`),
silence (:meth:`PtyEmulator.pause`), and the port vanishing (USB re-enumeration) and coming back
under a stable symlink (:meth:`PtyEmulator.disconnect` / :meth:`PtyEmulator.reconnect`, what a
udev rule such as ``/dev/gps0`` gives).

:class:`PtyEmulator` owns the pty pair, the optional ``link_path`` symlink, the device thread's life
cycle (start / stop / close / context manager) and the non-blocking writer; a device subclass
supplies what the device says and answers (:meth:`PtyEmulator._run`, its thread body) and may
react to a fresh pty (:meth:`PtyEmulator._on_pty_open`).  Used by :mod:`hal_sim.nmea_emulator`
and :mod:`hal_sim.ogd_emulator`.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import logging
import os
import select
import threading
import time
import tty
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Self

log = logging.getLogger(__name__)

# counters the port machinery itself keeps; a subclass names these among its own
PORT_COUNTERS = ("bytes_written", "bytes_dropped", "injected_garbage_bytes")


class PtyEmulator(abc.ABC):
    """A device behind a pty.  ``port`` is the path a driver opens.

    ``link_path`` makes ``port`` a symlink to the current pty slave, so :meth:`disconnect` /
    :meth:`reconnect` model a USB device unplugged and replugged (new pty, same path).
    ``write_timeout_s`` models the link's back-pressure: 0 is a UART (bytes nobody reads are
    dropped at once), > 0 is USB-CDC (a write waits that long for the reader, then the rest is
    dropped; after one such drop the next write does not wait, as a host-side buffer that is still
    full would not drain either).  Dropped bytes are counted in ``stats()['bytes_dropped']``.

    ``counters`` are the names of the subclass's ``stats()`` counters, in the order they are
    reported; the port's own (:data:`PORT_COUNTERS`) are added at the end if not among them.
    The subclass calls :meth:`_open_pty` once its own state is set up.
    """

    thread_name: ClassVar[str] = "pty-emulator"
    log_name: ClassVar[str] = "pty emulator"  # prefix of log lines

    def __init__(
        self, link_path: str | Path | None, counters: Iterable[str], write_timeout_s: float = 0.0
    ) -> None:
        self.link_path = Path(link_path) if link_path is not None else None
        self.write_timeout_s = float(write_timeout_s)
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path = ""
        self._write_lock = threading.Lock()
        self._write_backlogged = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._paused_until = 0.0
        self._counts: dict[str, int] = dict.fromkeys(counters, 0)
        for key in PORT_COUNTERS:
            self._counts.setdefault(key, 0)
        self._log = logging.getLogger(type(self).__module__)

    # -- the device (subclass hooks)
    @abc.abstractmethod
    def _run(self) -> None:
        """The device thread: emit output until ``self._stop`` is set (may read ``self._master``)."""

    def _on_pty_open(self) -> None:  # noqa: B027 - optional hook
        """A fresh pty is in place (at construction and on every reconnect): reset link state."""

    # -- pty
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        # Raw mode: no echo (an echoing slave would fill the master's output queue nobody reads),
        # no CR/LF translation (the driver must see the CRLF the device sent).
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._slave_path = os.ttyname(slave)
        self._write_backlogged = False
        self._on_pty_open()
        if self.link_path is not None:
            tmp = self.link_path.with_name(self.link_path.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self._slave_path)
            tmp.replace(self.link_path)  # atomic re-point, as udev does

    def _close_pty(self) -> None:
        with self._write_lock:
            for fd in (self._master, self._slave):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._slave = None
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()

    @property
    def port(self) -> str:
        """Path to open with pyserial: the symlink if one was asked for, else the pty slave."""
        return str(self.link_path) if self.link_path is not None else self._slave_path

    @property
    def pty_path(self) -> str:
        """The current pty slave device (what ``port`` links to)."""
        return self._slave_path

    @property
    def connected(self) -> bool:
        return self._master is not None

    def disconnect(self) -> None:
        """Unplug: the pty disappears, a reader gets EIO, the port path is gone."""
        self._close_pty()

    def reconnect(self) -> None:
        """Replug: a fresh pty behind the same ``link_path``."""
        if self._closed:
            raise RuntimeError("emulator is closed")
        if self._master is None:
            self._open_pty()

    # -- life cycle
    def start(self) -> Self:
        if self._closed:
            raise RuntimeError("emulator is closed")
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def close(self) -> None:
        """Idempotent: stop the thread, close the pty, remove the link."""
        if self._closed:
            return
        self.stop()
        self._close_pty()
        self._closed = True

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        return dict(self._counts, port=self.port, connected=self.connected)

    # -- fault injection common to every link
    def inject_garbage(self, data: bytes) -> None:
        """Raw bytes written now, between two lines (line noise, a binary protocol, a baud-rate
        mismatch)."""
        self._counts["injected_garbage_bytes"] += len(data)
        self._write(bytes(data))

    def pause(self, seconds: float) -> None:
        """Silence for ``seconds`` (device reset, cable loose, USB stall): the device prints
        nothing; what it keeps doing meanwhile is the subclass's ``_run``.  Returns at once."""
        self._paused_until = time.monotonic() + max(0.0, seconds)

    def _paused(self) -> bool:
        return time.monotonic() < self._paused_until

    # -- output
    def _write(self, data: bytes) -> None:
        """Non-blocking write with bounded back-pressure (``write_timeout_s``; see the class)."""
        with self._write_lock:
            if self._master is None:
                self._counts["bytes_dropped"] += len(data)
                return
            view = memoryview(data)
            deadline = time.monotonic() + (0.0 if self._write_backlogged else self.write_timeout_s)
            while view:
                try:
                    n = os.write(self._master, view)
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stop.is_set():
                        break
                    with contextlib.suppress(OSError, ValueError):
                        select.select([], [self._master], [], min(remaining, 0.05))
                    continue
                except OSError as err:
                    if err.errno not in (errno.EIO, errno.EBADF):
                        self._log.warning("%s: write to %s failed: %s", self.log_name, self._slave_path, err)
                    break
                self._counts["bytes_written"] += n
                view = view[n:]
            self._write_backlogged = bool(view)
            self._counts["bytes_dropped"] += len(view)


def serve_until_stopped(emulator: PtyEmulator, stop: threading.Event | None = None) -> None:
    """Keep a started ``emulator`` running until Ctrl-C (or ``stop`` is set), then close it."""
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()
