"""Camera through OpenCV's ``VideoCapture``: a V4L2 device, an RTSP/HTTP stream or a video file.

Why a reader thread that keeps only the newest frame: a camera produces frames whether or not
the analysis keeps up, and both V4L2 and FFmpeg queue frames internally.  Reading them in order
would make the analysis fall further behind real time (an RTSP stream a few seconds late puts
the face in the wrong place relative to the radiation alarm); dropping all but the newest keeps
latency at one frame period and makes the drop count a health metric instead of a hidden delay.

Reconnection is an outer loop (a stream that ends or a USB camera that disappears is released
and reopened every ``reconnect_interval_s``), and FFmpeg open/read time-outs are set where the
OpenCV build supports them so a stalled RTSP server cannot block the thread for its default 30 s.
For RTSP over TCP set ``OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;tcp`` in the unit's
environment (OpenCV ``videoio`` documentation, "FFmpeg backend").

``cv2`` is imported only on ``open()``: a unit without OpenCV gets :class:`DeviceUnavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from agent.hal.interfaces import (
    Camera,
    DeviceContext,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    Frame,
    SensorState,
)

log = logging.getLogger(__name__)

_BACKENDS = ("any", "v4l2", "ffmpeg", "gstreamer")


class OpenCvCamera(Camera):
    """``source``: device index (``0`` or ``"0"``), ``/dev/videoN``, a stream URL or a file path.

    Files play at their nominal frame rate (``realtime``), so a recorded clip behaves like the
    camera it came from; ``loop_file`` replays it forever (demos, soak tests).  A file that ends
    without ``loop_file`` leaves the camera DEGRADED ("end of file") - not an error to retry.
    """

    def __init__(
        self,
        source: int | str = 0,
        context: DeviceContext | None = None,
        name: str = "camera",
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        backend: str = "any",
        reconnect_interval_s: float = 2.0,
        loop_file: bool = False,
        realtime: bool | None = None,
        io_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(name=name, context=context)
        if backend not in _BACKENDS:
            raise ValueError(f"camera {name}: backend {backend!r} is not one of {', '.join(_BACKENDS)}")
        if reconnect_interval_s <= 0 or io_timeout_s <= 0:
            raise ValueError(f"camera {name}: reconnect_interval_s and io_timeout_s must be > 0")
        if isinstance(source, str) and source.strip().isdigit():
            source = int(source)
        self.source: int | str = source
        self.is_file = isinstance(source, str) and "://" not in source and not source.startswith("/dev/")
        self.requested_size = (width, height)
        self.requested_fps = fps
        self.backend = backend
        self.reconnect_interval_s = float(reconnect_interval_s)
        self.loop_file = loop_file
        self.realtime = self.is_file if realtime is None else realtime
        self.io_timeout_s = float(io_timeout_s)
        self._cv2: Any = None
        self._cap: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._last_returned = -1
        self._index = 0
        self._nominal_fps = 0.0
        self._measured_fps: float | None = None
        self._last_frame_mono: float | None = None
        self._size = (0, 0)
        self._counts = dict.fromkeys(
            ("frames", "frames_returned", "read_failures", "reopens", "bad_frames"), 0
        )

    # -- public
    @property
    def fps(self) -> float:
        """Frame rate the source declares (or was configured to); 0 when it declares none."""
        return self._nominal_fps

    def stats(self) -> dict[str, Any]:
        with self._cond:
            out: dict[str, Any] = dict(self._counts)
            out["frames_dropped"] = max(0, out["frames"] - out["frames_returned"])
            out["measured_fps"] = None if self._measured_fps is None else round(self._measured_fps, 2)
        return out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(source=str(self.source), backend=self.backend, fps=self.fps,
                    width=self._size[0], height=self._size[1], stats=self.stats())
        return info

    def read_frame(self, timeout_s: float) -> Frame:
        """The newest frame not yet returned, waiting up to ``timeout_s`` for one."""
        if self._state in (SensorState.NOT_OPENED, SensorState.CLOSED):
            raise DeviceError(f"camera {self.name}: read_frame on a device that is {self._state.value}")
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while self._frame is None or self._frame.index <= self._last_returned:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceTimeout(f"camera {self.name}: no new frame from {self.source} within "
                                        f"{timeout_s:g} s (state {self._state.value} {self._state_detail})")
                self._cond.wait(remaining)
            frame = self._frame
            self._last_returned = frame.index
            self._counts["frames_returned"] += 1
        return frame

    # -- life cycle hooks
    def _open(self) -> None:
        try:
            import cv2  # optional dependency: imported only when this driver is chosen
        except ImportError as err:
            raise DeviceUnavailable(f"camera {self.name}: OpenCV (cv2) is not installed: {err}") from err
        self._cv2 = cv2
        self._stop_thread()
        self._cap = self._open_capture()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        self._stop_thread()

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.io_timeout_s + 2.0)
            if self._thread.is_alive():
                log.error("camera %s: reader thread did not stop", self.name)
        self._thread = None
        self._release()

    def _open_capture(self) -> Any:
        cv2 = self._cv2
        if self.is_file and not Path(str(self.source)).is_file():
            raise DeviceUnavailable(f"camera {self.name}: video file {self.source} does not exist")
        api = {"any": cv2.CAP_ANY, "v4l2": cv2.CAP_V4L2, "ffmpeg": cv2.CAP_FFMPEG,
               "gstreamer": cv2.CAP_GSTREAMER}[self.backend]
        params: list[int] = []
        ms = int(self.io_timeout_s * 1000)
        for prop in ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC"):
            if hasattr(cv2, prop) and not isinstance(self.source, int):
                params += [getattr(cv2, prop), ms]
        cap = cv2.VideoCapture(self.source, api, params) if params else cv2.VideoCapture(self.source, api)
        if not cap.isOpened():
            cap.release()
            raise DeviceUnavailable(f"camera {self.name}: cannot open {self.source} (backend {self.backend})")
        width, height = self.requested_size
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if self.requested_fps:
            cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame wins; ignored where unsupported
        declared = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._nominal_fps = declared if declared > 0 else float(self.requested_fps or 0.0)
        self._size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        return cap

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            try:
                cap.release()
            except Exception as err:  # a dead device may fail to release; keep going
                log.debug("camera %s: release failed: %s", self.name, err)

    # -- reader thread
    def _clock_now(self) -> tuple[float, datetime]:
        clock = self.context.clock if self.context is not None else None
        if clock is not None:
            return clock.monotonic_s(), clock.utc_now()
        return time.monotonic(), datetime.now(UTC)

    def _run(self) -> None:
        period = 1.0 / self._nominal_fps if self.realtime and self._nominal_fps > 0 else 0.0
        next_due = time.monotonic()
        while not self._stop.is_set():
            cap = self._cap
            if cap is None:
                if not self._reopen():
                    continue
                cap = self._cap
                next_due = time.monotonic()
            if period:
                delay = next_due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_due = max(next_due + period, time.monotonic() - period)
            try:
                ok, image = cap.read()
            except Exception as err:  # cv2.error, backend faults: a lost source
                ok, image = False, None
                log.debug("camera %s: read raised %s", self.name, err)
            if self._stop.is_set():
                break
            if not ok or image is None:
                self._on_read_failure()
                continue
            self._publish(image)

    def _publish(self, image: np.ndarray) -> None:
        if image.ndim == 2:  # monochrome sensor: the Frame contract is BGR
            image = self._cv2.cvtColor(image, self._cv2.COLOR_GRAY2BGR)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            with self._cond:
                self._counts["bad_frames"] += 1
            log.warning("camera %s: dropped frame of shape %s dtype %s", self.name, image.shape, image.dtype)
            return
        t_mono, t_utc = self._clock_now()
        with self._cond:
            if self._last_frame_mono is not None and t_mono > self._last_frame_mono:
                inst = 1.0 / (t_mono - self._last_frame_mono)
                m = self._measured_fps
                self._measured_fps = inst if m is None else 0.9 * m + 0.1 * inst  # EMA over ~10 frames
            self._last_frame_mono = t_mono
            self._frame = Frame(image=image, t_mono_s=t_mono, t_utc=t_utc, index=self._index)
            self._index += 1
            self._counts["frames"] += 1
            self._cond.notify_all()
        if self._state != SensorState.OK:
            self.set_state(SensorState.OK)

    def _on_read_failure(self) -> None:
        with self._cond:
            self._counts["read_failures"] += 1
        self._release()
        if self.is_file and not self.loop_file:
            self.set_state(SensorState.DEGRADED, f"end of file {self.source} after {self._index} frames")
            self._stop.wait()  # nothing more will come; idle until close()
            return
        if not self.is_file:
            log.warning("camera %s: no frame from %s; reconnecting every %g s",
                        self.name, self.source, self.reconnect_interval_s)
            self.set_state(SensorState.FAILED, f"no frames from {self.source}; reconnecting")

    def _reopen(self) -> bool:
        if not self.is_file and self._stop.wait(self.reconnect_interval_s):
            return False
        try:
            self._cap = self._open_capture()
        except DeviceError as err:
            log.warning("%s", err)
            if self.is_file:  # a looping file that vanished: wait like a camera would
                self._stop.wait(self.reconnect_interval_s)
            return False
        with self._cond:
            self._counts["reopens"] += 1
        return True
