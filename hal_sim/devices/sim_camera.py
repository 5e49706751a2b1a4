"""Simulated camera-box camera: synthetic people with known vital signs, delivered in (simulated) real time.

Why: the camera-box agent must run unchanged against this device and a real V4L2/RTSP camera.
Frames come from :mod:`hal_sim.face` (faces with a blood-volume pulse, breathing, blinks, tense
episodes, light and sensor effects).  Timing follows ``context.clock``: frame k is due at
``t_open + k / fps``; ``read_frame`` sleeps on that clock until it is due, and a consumer that
falls behind gets the newest frame (older ones are dropped, as a real camera's driver queue
does), so frame indices then skip.  The scene is generated for ``horizon_s`` and then replays
from its start.

Scenarios (``scenario=``): calm, tense, checkpoint (default: calm with scripted tense episodes,
moving heads, specular skin, MJPG at quality 90 as docs/camera_benchmark.md recommends for the
box), crowd, photo, mask, flicker, dark_skin.
"""

from __future__ import annotations

import zlib
from datetime import timedelta
from typing import Any

import numpy as np

from agent.hal.interfaces import Camera, Clock, DeviceContext, DeviceTimeout, DeviceUnavailable, Frame

SCENARIOS: dict[str, dict[str, Any]] = {
    "calm": {},
    "tense": {"motion": True, "_tense_every_s": 60.0, "_tense_len_s": 40.0},
    "checkpoint": {"motion": True, "specular": True, "jpeg_quality": 90, "_tense_every_s": 120.0,
                   "_tense_len_s": 30.0},
    "crowd": {"motion": True, "people": 3, "_tense_every_s": 90.0, "_tense_len_s": 30.0},
    "photo": {"control": "photo"},
    "mask": {"control": "mask", "motion": True},
    "flicker": {"flicker": True, "illumination_drift": True, "jpeg_quality": 80},
    "dark_skin": {"fitzpatrick": 6, "specular": True},
}


def _episodes(every_s: float, length_s: float, horizon_s: float, people: int,
              rng: np.random.Generator) -> list[tuple[float, float, str, int]]:
    """Tense episodes at about every ``every_s`` seconds, each for one randomly chosen person."""
    out = []
    t = float(rng.uniform(0.3, 0.7)) * every_s
    while t + length_s < horizon_s:
        out.append((t, t + length_s, "tense", int(rng.integers(0, people))))
        t += every_s * float(rng.uniform(0.7, 1.3))
    return out


class SimCamera(Camera):
    """A Camera that renders synthetic faces at ``fps`` on the context clock."""

    def __init__(
        self,
        context: DeviceContext | None = None,
        scenario: str | None = None,
        fps: float = 30.0,
        resolution: tuple[int, int] | list[int] = (640, 480),
        seed: int | None = None,
        people: int = 1,
        name: str = "",
        horizon_s: float = 600.0,
        jitter_ms: float = 1.5,
    ) -> None:
        super().__init__(name=name or "sim_camera", context=context)
        scenario = scenario or "checkpoint"
        if scenario not in SCENARIOS:
            raise DeviceUnavailable(f"sim camera: unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
        try:
            w, h = (int(v) for v in resolution)
        except (TypeError, ValueError) as err:
            raise DeviceUnavailable(f"sim camera: resolution must be [width, height], got {resolution!r}") from err
        if not (32 <= w <= 4096 and 32 <= h <= 4096):
            raise DeviceUnavailable(f"sim camera: resolution {w}x{h} outside 32..4096")
        if not 0.5 <= float(fps) <= 240.0:
            raise DeviceUnavailable(f"sim camera: fps must be 0.5..240, got {fps}")
        if not 1 <= int(people) <= 6:
            raise DeviceUnavailable(f"sim camera: people must be 1..6, got {people}")
        if horizon_s < 10.0:
            raise DeviceUnavailable(f"sim camera: horizon_s must be >= 10, got {horizon_s}")
        unit = context.unit_id if context is not None else "cam"
        self._seed = int(seed) if seed is not None else zlib.crc32(f"{unit}/{self.name}".encode())
        self._scenario = scenario
        self._fps = float(fps)
        self._size = (w, h)
        self._people = int(people)
        self._horizon_s = float(horizon_s)
        self._jitter_s = max(float(jitter_ms), 0.0) * 1e-3
        self._clock: Clock | None = context.clock if context is not None else None
        self._scene: Any = None
        self._t_open = 0.0
        self._next_k = 0
        self._rng = np.random.default_rng([self._seed, 0xCA])

    # -- Camera
    @property
    def fps(self) -> float:
        return self._fps

    @property
    def scene(self) -> Any:
        """The :class:`hal_sim.face.scene.Scene` being filmed (for scenario checks and demos)."""
        return self._scene

    def _open(self) -> None:
        # Imported here so the device table can list this class without paying for cv2 at import.
        from hal_sim.face.scene import Scene
        from hal_sim.face.spec import ClipSpec

        if self._clock is None:
            from agent.hal.system_clock import SystemClock

            self._clock = SystemClock()
        opts = dict(SCENARIOS[self._scenario])
        every = opts.pop("_tense_every_s", None)
        length = opts.pop("_tense_len_s", 30.0)
        people = max(int(opts.pop("people", 1)), self._people)
        rng = np.random.default_rng([self._seed, 0xE9])
        episodes = _episodes(every, length, self._horizon_s, people, rng) if every else []
        spec = ClipSpec(duration_s=self._horizon_s, fps=self._fps, width=self._size[0], height=self._size[1],
                        people=people, episodes=episodes, **opts)
        self._scene = Scene(spec, self._seed, horizon_s=self._horizon_s + 1.0)
        self._t_open = self._clock.monotonic_s()
        self._next_k = 0

    def _close(self) -> None:
        self._scene = None

    def read_frame(self, timeout_s: float) -> Frame:
        if self._scene is None or self._clock is None:
            raise DeviceUnavailable(f"camera {self.name}: read_frame before open()")
        clock = self._clock
        now = clock.monotonic_s()
        # A consumer that fell behind gets the newest frame; the ones in between are dropped.
        k = max(self._next_k, int(np.floor((now - self._t_open) * self._fps)))
        t_due = self._t_open + k / self._fps
        wait = t_due - now
        if wait > timeout_s:
            clock.sleep(max(timeout_s, 0.0))
            raise DeviceTimeout(f"camera {self.name}: next frame due in {wait:.3f} s > timeout {timeout_s} s")
        if wait > 0:
            clock.sleep(wait)
        # Exposures are regular; the reported timestamp carries the host's jitter (UVC/V4L2).
        t_scene = (t_due - self._t_open) % self._horizon_s
        image = self._scene.render(t_scene, k)
        self._next_k = k + 1
        t_stamp = t_due + float(self._rng.normal(0.0, self._jitter_s)) if self._jitter_s else t_due
        lag = clock.monotonic_s() - t_stamp
        return Frame(image=image, t_mono_s=t_stamp, t_utc=clock.utc_now() - timedelta(seconds=max(lag, 0.0)),
                     index=k)

    # -- extras
    def truth_at(self, t_mono_s: float) -> list[dict[str, Any]]:
        """What each person's vital signs really are at a camera time (for demos and checks)."""
        if self._scene is None:
            return []
        t = np.array([(t_mono_s - self._t_open) % self._horizon_s])
        out = []
        for actor in self._scene.actors:
            ph = actor.physio
            live = actor.kind == "person" and ph is not None
            out.append({
                "person": actor.index,
                "kind": actor.kind,
                "hr_bpm": float(ph.hr_at(t)[0]) if live else None,
                "rr_bpm": float(ph.rr_at(t)[0]) if ph is not None else None,
                "state": ph.state_at(t)[0] if ph is not None else "calm",
            })
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"model": "customs-edge synthetic camera", "scenario": self._scenario, "fps": self._fps,
                  "resolution": list(self._size), "people": self._people, "seed": self._seed})
        return d
