"""A camera's track of one person as the controller holds it: ground-plane samples plus an appearance summary.

Why a controller-side type rather than the wire model: the wire message (agent.wire_schema.Tracklet)
is one *update* (new samples since the last message, times relative to ``t_start_utc``); the
controller needs the whole track in absolute seconds, with numpy arrays for the association's
geometry. ``Tracklet.from_plain`` takes the plain dict of the edge pipeline's offline output
(``agent.cctv.tracklet_message.as_plain``: samples with absolute ``t_s``), ``TrackletBuffer`` folds
wire updates of live boxes into the same type. Anything malformed is refused with a message naming
the field (the box is not trusted to send sane arrays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

__all__ = ["Descriptor", "Tracklet", "TrackletBuffer", "TrackletError"]

PARTS = ("head", "torso", "legs")
MAX_SAMPLES = 20_000  #: a person is not in one camera's view for more than ~30 min at 10 Hz
MAX_HIST_BINS = 16


class TrackletError(ValueError):
    """A tracklet that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Descriptor:
    """Colour by body part (normalised histograms, layout hue8+grey3/v1; empty = part not seen) and height."""

    head: np.ndarray
    torso: np.ndarray
    legs: np.ndarray
    height_m: float | None = None
    n_frames: int = 0

    @classmethod
    def from_plain(cls, d: dict) -> Descriptor:
        parts = {}
        for p in PARTS:
            v = np.asarray(d.get(p) or [], float).ravel()
            if len(v) > MAX_HIST_BINS or not np.isfinite(v).all() or (v < 0).any():
                raise TrackletError(f"appearance.{p}: expected <= {MAX_HIST_BINS} finite non-negative bins")
            s = v.sum()
            parts[p] = v / s if s > 0 else np.zeros(0)
        h = d.get("height_m")
        if h is not None and not (isinstance(h, int | float) and 0.3 <= h <= 3.0):
            raise TrackletError(f"appearance.height_m: {h!r} is not a height in 0.3..3 m")
        return cls(parts["head"], parts["torso"], parts["legs"], None if h is None else float(h),
                   int(d.get("n_frames") or 0))

    def to_plain(self) -> dict:
        return {"head": self.head.round(4).tolist(), "torso": self.torso.round(4).tolist(),
                "legs": self.legs.round(4).tolist(), "height_m": self.height_m, "n_frames": self.n_frames}

    @staticmethod
    def mean(descs: list[Descriptor]) -> Descriptor:
        """Frame-weighted mean of several descriptors of one person (parts missing in some are skipped)."""
        out = {}
        for p in PARTS:
            vs = [(getattr(d, p), max(1, d.n_frames)) for d in descs if len(getattr(d, p))]
            n = max((len(v) for v, _ in vs), default=0)
            vs = [(v, w) for v, w in vs if len(v) == n]
            out[p] = (sum(v * w for v, w in vs) / sum(w for _, w in vs)) if vs else np.zeros(0)
        hs = [(d.height_m, max(1, d.n_frames)) for d in descs if d.height_m is not None]
        h = sum(a * w for a, w in hs) / sum(w for _, w in hs) if hs else None
        return Descriptor(out["head"], out["torso"], out["legs"], h, sum(d.n_frames for d in descs))


@dataclass
class Tracklet:
    """One camera's track: times (s, one clock for the whole hall), ground positions (m), appearance."""

    camera_id: str
    track_id: str
    t_s: np.ndarray
    xy_m: np.ndarray
    confidence: np.ndarray
    appearance: Descriptor
    unit_id: str = ""
    ended: bool = True
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = f"{self.unit_id}/{self.camera_id}/{self.track_id}" if self.unit_id else \
            f"{self.camera_id}/{self.track_id}"

    @classmethod
    def from_plain(cls, d: dict, unit_id: str = "") -> Tracklet:
        """From the edge pipeline's plain dict: camera_id, track_id, samples [{t_s, x_m, y_m, confidence}],
        appearance."""
        try:
            cam, tid = str(d["camera_id"]), str(d["track_id"])
            samples = d["samples"]
            app = d.get("appearance") or {}
        except (KeyError, TypeError) as exc:
            raise TrackletError(f"tracklet: missing field {exc}") from None
        if not isinstance(samples, list) or not 1 <= len(samples) <= MAX_SAMPLES:
            raise TrackletError(f"tracklet {cam}/{tid}: samples must be a list of 1..{MAX_SAMPLES}")
        try:
            arr = np.array([[s["t_s"], s["x_m"], s["y_m"], s.get("confidence", 1.0)] for s in samples], float)
        except (KeyError, TypeError, ValueError) as exc:
            raise TrackletError(f"tracklet {cam}/{tid}: bad sample ({exc})") from None
        if not np.isfinite(arr).all() or (np.abs(arr[:, 1:3]) > 1e4).any():
            raise TrackletError(f"tracklet {cam}/{tid}: samples must be finite, positions within 10 km")
        arr = arr[np.argsort(arr[:, 0], kind="stable")]
        return cls(cam, tid, arr[:, 0], arr[:, 1:3], np.clip(arr[:, 3], 0, 1), Descriptor.from_plain(app), unit_id,
                   bool(d.get("state", "ended") == "ended"))

    @property
    def t_start_s(self) -> float:
        return float(self.t_s[0])

    @property
    def t_end_s(self) -> float:
        return float(self.t_s[-1])

    def position_at(self, t_s: np.ndarray) -> np.ndarray:
        """Linear interpolation of the ground position at the given times (clamped to the track's span)."""
        t = np.asarray(t_s, float)
        return np.stack([np.interp(t, self.t_s, self.xy_m[:, 0]), np.interp(t, self.t_s, self.xy_m[:, 1])], -1)

    def end_velocity_mps(self, at_end: bool = True, window_s: float = 2.0) -> np.ndarray:
        """Mean velocity over the first/last ``window_s`` (a line fit would be no better at 0.2 m noise)."""
        if len(self.t_s) < 2:
            return np.zeros(2)
        sel = self.t_s >= self.t_end_s - window_s if at_end else self.t_s <= self.t_start_s + window_s
        t, xy = self.t_s[sel], self.xy_m[sel]
        if len(t) < 2 or t[-1] - t[0] < 0.3:
            return np.zeros(2)
        return (xy[-1] - xy[0]) / (t[-1] - t[0])


class TrackletBuffer:
    """Folds live wire updates (agent.wire_schema.Tracklet bodies) into whole tracklets, bounded.

    Why bounded: a box (or an impostor with a box's identity) could open tracks forever; beyond
    ``max_tracks`` the oldest-updated track is closed early and counted in ``evicted`` (reported,
    not silently dropped).
    """

    def __init__(self, t0_epoch_s: float = 0.0, max_tracks: int = 5000) -> None:
        self.t0_epoch_s = t0_epoch_s
        self.max_tracks = max_tracks
        self._open: dict[tuple[str, str, str], dict] = {}
        self.evicted = 0

    def add_wire(self, unit_id: str, body: dict) -> Tracklet | None:
        """Add one update; returns the finished :class:`Tracklet` when ``state`` is "ended", else None."""
        try:
            t0 = datetime.fromisoformat(str(body["t_start_utc"]).replace("Z", "+00:00")).timestamp()
            key = (unit_id, str(body["camera_id"]), str(body["track_id"]))
            new = [{"t_s": t0 - self.t0_epoch_s + float(s["dt_s"]), "x_m": float(s["x_m"]), "y_m": float(s["y_m"]),
                    "confidence": float(s["confidence"])} for s in body["samples"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise TrackletError(f"tracklet update from {unit_id}: {exc}") from None
        acc = self._open.get(key)
        if acc is None:
            if len(self._open) >= self.max_tracks:
                oldest = min(self._open, key=lambda k: self._open[k]["last"])
                del self._open[oldest]
                self.evicted += 1
            acc = self._open[key] = {"samples": [], "last": 0.0}
        acc["samples"] = (acc["samples"] + new)[-MAX_SAMPLES:]
        acc["appearance"] = body.get("appearance") or {}
        acc["last"] = max([s["t_s"] for s in new], default=acc["last"])
        if body.get("state") != "ended":
            return None
        del self._open[key]
        if not acc["samples"]:
            return None
        return Tracklet.from_plain({"camera_id": key[1], "track_id": key[2], "samples": acc["samples"],
                                    "appearance": acc["appearance"], "state": "ended"}, unit_id=unit_id)

    def open_tracklets(self) -> list[Tracklet]:
        """The tracks still running, as tracklets so far (for live association)."""
        out = []
        for (unit, cam, tid), acc in self._open.items():
            if acc["samples"]:
                tr = Tracklet.from_plain({"camera_id": cam, "track_id": tid, "samples": acc["samples"],
                                          "appearance": acc["appearance"], "state": "active"}, unit_id=unit)
                out.append(tr)
        return out
