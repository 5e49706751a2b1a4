"""A camera-box scene: a wall, one or several people (or a photo / a masked person), light, camera.

Why this split: everything random is drawn once when the scene is built (faces, physiology,
motion paths, noise bank), after which ``render(t)`` is a pure function of time and frame index.
That lets the clip renderer, the truth writer and the real-time SimCamera share one scene.

Motion model
------------
* Physiological, always present for live people: breathing lifts shoulders/chest (~3-5 mm at
  tidal volume, i.e. a few pixels at a camera-box distance) and the head by about a third of that
  (the respiratory-motion basis of camera respiration monitoring, e.g. Massaroni et al. 2019,
  IEEE Sensors J 19:2913); the ballistocardiographic head micro-motion at each heart beat, a
  fraction of a pixel (Balakrishnan, Durand & Guttag 2013, CVPR "Detecting pulse from head
  motions in video"); and a slight postural sway.
* Voluntary (``motion=True``): smooth translation, yaw/pitch/roll and distance changes
  (sum-of-sinusoids, 0.03-0.4 Hz) plus occasional quick glances to the side.
* A hand-held photo moves rigidly (sway plus 8-12 Hz physiological hand tremor, Elble 1996);
  a still photo does not move at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hal_sim.face.face_model import (
    PULSE_GAIN_BY_FITZPATRICK,
    BodySprite,
    FaceGeometry,
    FaceTexture,
    Light,
    build_body,
    build_face_texture,
    face_outline_uv,
    project_uv,
    render_head,
    rotation_matrix,
    sample_geometry,
)
from hal_sim.face.optics import Illumination, Sensor, SmoothRandom
from hal_sim.face.physiology import PhysiologyTrack, sample_params, simulate_physiology, with_real_pulse
from hal_sim.face.spec import ClipSpec

_EXPOSURE_DN = 255.0 * 0.9  # radiance 1.0 -> DN


# --------------------------------------------------------------------------- pose
@dataclass
class Pose:
    """Per-time pose arrays of one actor (all the same shape as the times asked for)."""

    cx: np.ndarray
    cy: np.ndarray
    scale: np.ndarray
    yaw: np.ndarray  # rad
    pitch: np.ndarray
    roll: np.ndarray
    body_dx: np.ndarray
    body_dy: np.ndarray
    chest: np.ndarray  # breathing 0..~1


class PoseTrack:
    """Head and body pose of one actor as a function of time."""

    def __init__(self, rng: np.random.Generator, cx0: float, cy0: float, a_px: float, *, motion: bool,
                 physio: PhysiologyTrack | None, bcg: bool, rigid_only: bool, duration_s: float) -> None:
        self.cx0, self.cy0, self.a = cx0, cy0, a_px
        self.motion, self.physio, self.bcg, self.rigid_only = motion, physio, bcg, rigid_only
        self.sway = [SmoothRandom.make(rng, 0.05, 0.3) for _ in range(2)]
        self.mx, self.my = SmoothRandom.make(rng, 0.03, 0.4), SmoothRandom.make(rng, 0.03, 0.3)
        self.myaw, self.mpitch = SmoothRandom.make(rng, 0.03, 0.3), SmoothRandom.make(rng, 0.05, 0.4)
        self.mroll, self.mscale = SmoothRandom.make(rng, 0.03, 0.3), SmoothRandom.make(rng, 0.02, 0.15)
        self.tremor = SmoothRandom.make(rng, 8.0, 12.0, 4)
        self.glances: list[tuple[float, float, float]] = []
        if motion and not rigid_only:
            t = float(rng.uniform(2.0, 8.0))
            while t < duration_s:
                dur = float(rng.uniform(0.8, 2.5))
                self.glances.append((t, dur, float(np.radians(rng.choice([-1, 1]) * rng.uniform(20, 35)))))
                t += dur + float(rng.exponential(12.0)) + 2.0

    def at(self, t_s: np.ndarray) -> Pose:
        t = np.atleast_1d(np.asarray(t_s, dtype=float))
        z = np.zeros_like(t)
        a = self.a
        cx, cy, scale = self.cx0 + z, self.cy0 + z, 1.0 + z
        yaw, pitch, roll = z.copy(), z.copy(), z.copy()
        chest = z.copy()
        if self.physio is not None:
            chest = self.physio.breath_at(t)
            cy = cy - 0.012 * a * chest
            pitch = pitch + np.radians(0.3) * chest
            if self.bcg and self.physio.params is not None:
                cy = cy + 0.0012 * a * self.physio.pulse_at(t + 0.05)
            if not self.rigid_only:
                cx = cx + 0.004 * a * self.sway[0](t)
                cy = cy + 0.003 * a * self.sway[1](t)
        if self.motion:
            cx = cx + 0.30 * a * self.mx(t)
            cy = cy + 0.12 * a * self.my(t)
            roll = roll + np.radians(5.0) * self.mroll(t)
            if self.rigid_only:  # a hand-held photo: sway and tremor, no turning of a 3-D head
                cx = cx + 0.004 * a * self.tremor(t)
                cy = cy + 0.004 * a * self.tremor(t + 0.37)
            else:
                yaw = yaw + np.radians(14.0) * self.myaw(t)
                pitch = pitch + np.radians(6.0) * self.mpitch(t)
                scale = scale + 0.04 * self.mscale(t)
                for start, dur, target in self.glances:
                    u = np.clip((t - start) / dur, 0.0, 1.0)
                    yaw = yaw + target * np.sin(np.pi * u) ** 2
        body_dx = 0.6 * (cx - self.cx0)
        body_dy = 0.4 * (cy - self.cy0) - 0.035 * a * chest
        return Pose(cx, cy, scale, yaw, pitch, roll, body_dx, body_dy, chest)


# --------------------------------------------------------------------------- actors
@dataclass
class Actor:
    """One person, masked person or photo in the scene."""

    index: int
    kind: str  # "person" | "mask" | "photo"
    fitzpatrick: int
    geometry: FaceGeometry
    texture: FaceTexture
    body: BodySprite
    physio: PhysiologyTrack | None
    track: PoseTrack
    card: tuple[np.ndarray, np.ndarray, tuple[float, float]] | None = None  # (rgb, alpha, head xy)
    photographic: bool = False  # texture from a photograph: shading is already in it

    def face_boxes(self, t_s: np.ndarray, width: int, height: int) -> np.ndarray:
        """(n, 4) face boxes (x, y, w, h) of the facial skin region, clipped to the frame."""
        pose = self.track.at(t_s)
        uv = face_outline_uv(self.geometry)
        out = np.zeros((pose.cx.size, 4))
        for i in range(pose.cx.size):
            if self.kind == "photo":
                rot3 = np.eye(3)
                xy, vis = project_uv(self.geometry, uv, rot3, 1.0)
                c, s = np.cos(pose.roll[i]), np.sin(pose.roll[i])
                xy = xy @ np.array([[c, s], [-s, c]])
            else:
                rot3 = rotation_matrix(pose.yaw[i], pose.pitch[i], pose.roll[i])
                xy, vis = project_uv(self.geometry, uv, rot3, float(pose.scale[i]))
            pts = xy[vis] if np.any(vis) else xy
            x0 = np.clip(pose.cx[i] + pts[:, 0].min(), 0, width)
            x1 = np.clip(pose.cx[i] + pts[:, 0].max(), 0, width)
            y0 = np.clip(pose.cy[i] + pts[:, 1].min(), 0, height)
            y1 = np.clip(pose.cy[i] + pts[:, 1].max(), 0, height)
            out[i] = (x0, y0, x1 - x0, y1 - y0)
        return out


def _blend(frame: np.ndarray, roi: tuple[slice, slice], rgb: np.ndarray, alpha: np.ndarray) -> None:
    """frame = alpha * rgb + (1 - alpha) * frame over ``roi`` (cv2.blendLinear: one pass, no temporaries)."""
    frame[roi] = cv2.blendLinear(rgb, frame[roi], alpha, 1.0 - alpha)


def _warp_sprite(frame: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, m: np.ndarray) -> None:
    """Warp a sprite (colour + alpha) by the 2x3 affine ``m`` (sprite -> frame) and blend it in,
    touching only the frame region it covers.  Colour is warped with replicated borders so the
    anti-aliased edge takes the sprite's own colour, not black."""
    h, w = rgb.shape[:2]
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float) @ m.T
    fh, fw = frame.shape[:2]
    x0 = max(int(np.floor(corners[:, 0].min())) - 1, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + 1, fw)
    y0 = max(int(np.floor(corners[:, 1].min())) - 1, 0)
    y1 = min(int(np.ceil(corners[:, 1].max())) + 1, fh)
    if x0 >= x1 or y0 >= y1:
        return
    mm = m.copy()
    mm[0, 2] -= x0
    mm[1, 2] -= y0
    size = (x1 - x0, y1 - y0)
    wr = cv2.warpAffine(rgb, mm, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    wa = cv2.warpAffine(alpha, mm, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    _blend(frame, (slice(y0, y1), slice(x0, x1)), wr, wa)


# --------------------------------------------------------------------------- scene
class Scene:
    """Everything needed to render frames of one scenario at any time in ``[0, horizon_s]``."""

    def __init__(self, spec: ClipSpec, seed: int, horizon_s: float | None = None) -> None:
        spec.validate()
        self.spec = spec
        self.seed = int(seed)
        self.width, self.height = int(spec.width), int(spec.height)
        self.horizon_s = float(horizon_s if horizon_s is not None else spec.duration_s + 1.0)
        root = np.random.SeedSequence([self.seed, 0xFACE])
        s_bg, s_light, s_sensor, s_layout, *s_people = root.spawn(3 + 1 + int(spec.people))
        self.background = _background(np.random.default_rng(s_bg), self.width, self.height)
        lrng = np.random.default_rng(s_light)
        self.light = Light(
            direction=(float(lrng.uniform(-0.5, 0.5)), float(lrng.uniform(-0.6, -0.2)), 0.85),
            specular_gain=float(lrng.uniform(0.8, 1.3)) if spec.specular else 0.0,
        )
        self._photo_light = Light(direction=self.light.direction, ambient=0.78, diffuse=0.3,
                                  specular_gain=0.5 * self.light.specular_gain)
        self.illumination = Illumination(drift=spec.illumination_drift, flicker=spec.flicker,
                                         flicker_hz=float(spec.flicker_hz))
        self.illumination.seed(lrng)
        self.sensor = Sensor(self.width, self.height, noise=spec.noise, jpeg_quality=spec.jpeg_quality)
        self.sensor.seed(np.random.default_rng(s_sensor))
        self.actors = self._build_actors(np.random.default_rng(s_layout), s_people)
        # Draw far (small) actors first so nearer ones occlude them.
        self._draw_order = sorted(range(len(self.actors)), key=lambda i: self.actors[i].geometry.a_px)
        self._tex_bufs = [np.empty_like(a.texture.albedo) for a in self.actors]
        self.exposure_gain = 1.0
        self.exposure_gain = self._auto_exposure()

    # -- construction
    def _build_actors(self, lay: np.random.Generator, seeds: list[np.random.SeedSequence]) -> list[Actor]:
        spec = self.spec
        n = int(spec.people)
        w, h = self.width, self.height
        a_single = 0.13 * w
        a_base = a_single / (1.0 + 0.45 * (n - 1))
        others = list(spec.fitzpatrick_others or [])
        actors = []
        for i in range(n):
            rng = np.random.default_rng(seeds[i])
            kind = "person"
            if i == 0 and spec.control is not None:
                kind = str(spec.control)
            if i == 0:
                fitz = int(spec.fitzpatrick)
            elif i - 1 < len(others):
                fitz = int(others[i - 1])
            else:
                fitz = int(lay.integers(1, 7))
            a_px = a_base * (1.0 if n == 1 else float(lay.uniform(0.85, 1.1)))
            cx0 = w * (i + 0.5) / n + (0.0 if n == 1 else float(lay.uniform(-0.04, 0.04)) * w)
            cy0 = h * (0.42 if n == 1 else float(lay.uniform(0.36, 0.5)))
            geometry = sample_geometry(rng, a_px, fitz)
            amp = float(rng.uniform(0.0015, 0.005)) * PULSE_GAIN_BY_FITZPATRICK[fitz]
            amp = max(amp, 0.001)
            photographic = i == 0 and spec.base_face == "astronaut"
            physio = None
            if kind != "photo":
                params = sample_params(
                    rng,
                    spec.base_hr_bpm if i == 0 else None,
                    spec.base_rr_bpm if i == 0 else None,
                    spec.base_blink_per_min if i == 0 else None,
                )
                physio = simulate_physiology(params, self.horizon_s, spec.episodes_for(i), rng,
                                             expressions=spec.expressions and kind == "person")
                if spec.pulse_source != "parametric":
                    physio = self._real_heart(physio, i)
            if photographic:
                from hal_sim.face.photo_face import build_astronaut_texture

                geometry, texture = build_astronaut_texture(a_px, fitz, kind=kind, pulse_amplitude_rel=amp)
            else:
                texture = build_face_texture(fitz, geometry, rng, kind=kind, pulse_amplitude_rel=amp)
            body_h = int(h - cy0 + 0.3 * h)
            body = build_body(geometry, fitz, rng, body_h, kind=kind, pulse_amplitude_rel=amp)
            track = PoseTrack(rng, cx0, cy0, a_px, motion=spec.motion, physio=physio, bcg=spec.bcg_motion,
                              rigid_only=kind == "photo", duration_s=self.horizon_s)
            actor = Actor(i, kind, fitz, geometry, texture, body, physio, track, photographic=photographic)
            if kind == "photo":
                actor.card = _print_card(actor, self.light, rng)
            actors.append(actor)
        return actors

    def _real_heart(self, physio: PhysiologyTrack, person: int) -> PhysiologyTrack:
        """Replace the simulated heart by a real recording (hal_sim.face.real_ppg).  Its draws come
        from a generator of their own, so the rest of the scene (face, motion, light, breathing,
        blinks, noise) is that of the parametric clip with the same seed."""
        from hal_sim.face.real_ppg import draw_real_pulse

        rng = np.random.default_rng([self.seed, 0x9E_A1, person])
        target = self.spec.base_hr_bpm if person == 0 else None
        pulse = draw_real_pulse(self.spec.pulse_source.split("-", 1)[1], rng, float(physio.grid_t_s[-1]),
                                target_hr_bpm=target)
        return with_real_pulse(physio, pulse)

    # -- rendering
    def radiance(self, t_s: float) -> np.ndarray:
        """Scene radiance (H, W, 3) float32, 1.0 ~ a white wall under the key light."""
        frame = self.background.copy()
        for i in self._draw_order:
            self._draw_actor(frame, self.actors[i], t_s, self._tex_bufs[i])
        frame *= self.illumination.column_gain(t_s, self.width)
        rows = self.illumination.row_gain(t_s, self.height)
        if rows is not None:
            frame *= rows
        return frame

    def _auto_exposure(self) -> float:
        """Exposure set once at start (then locked, so it adds no dynamics of its own), metered half
        on the whole frame and half on the faces, as face-priority AE in webcams does.  Keeps dark
        faces (Fitzpatrick V-VI) out of the bottom of the 8-bit range and light ones from clipping."""
        rad = self.radiance(0.0)
        lum = rad @ np.array([0.114, 0.587, 0.299], np.float32)
        face_means = []
        for actor in self.actors:
            x, y, w, h = actor.face_boxes(np.array([0.0]), self.width, self.height)[0]
            roi = lum[int(y + 0.3 * h):int(y + 0.9 * h), int(x + 0.15 * w):int(x + 0.85 * w)]
            if roi.size:
                face_means.append(float(roi.mean()))
        metered = 0.5 * float(lum.mean()) + 0.5 * (float(np.mean(face_means)) if face_means else float(lum.mean()))
        return float(np.clip(0.45 / max(metered, 1e-3), 0.75, 1.8))

    def render(self, t_s: float, frame_index: int) -> np.ndarray:
        """One delivered BGR uint8 frame at time ``t_s`` (seconds from scene start)."""
        frame = self.radiance(t_s)
        frame *= np.float32(_EXPOSURE_DN * self.exposure_gain)
        rng = np.random.default_rng([self.seed, 0x5E45, int(frame_index)])
        return self.sensor.expose(frame, rng)

    def _draw_actor(self, frame: np.ndarray, actor: Actor, t: float, buf: np.ndarray) -> None:
        pose = actor.track.at(np.array([t]))
        cx, cy = float(pose.cx[0]), float(pose.cy[0])
        if actor.card is not None:
            rgb, alpha, (hx, hy) = actor.card
            c, s = np.cos(pose.roll[0]), np.sin(pose.roll[0])
            m = np.array([[c, -s, 0.0], [s, c, 0.0]])
            m[:, 2] = np.array([cx, cy]) - m[:, :2] @ np.array([hx, hy])
            if self.light.specular_gain > 0:  # glossy print: a broad glare patch that slides as it tilts
                a_px = actor.geometry.a_px
                rgb = rgb + _glare(rgb.shape[:2], hx + 2.0 * a_px * float(np.sin(pose.roll[0] * 4.0)),
                                   hy - 0.5 * a_px, a_px, 0.25 * self.light.specular_gain)[..., None]
            _warp_sprite(frame, rgb, alpha, m)
            return
        ph = actor.physio
        bvp = float(ph.skin_blood_at(np.array([t]))[0]) if ph is not None else 0.0
        body = actor.body
        chest = float(pose.chest[0])
        sx = 1.0 + 0.012 * chest
        ax, ay = body.anchor_xy
        bx = actor.track.cx0 + float(pose.body_dx[0])
        by = actor.track.cy0 + float(pose.body_dy[0])
        m = np.array([[sx, 0.0, bx - sx * ax], [0.0, 1.0, by - ay]])
        if body.pulse_delta is not None and bvp != 0.0 and actor.kind == "person":
            brgb = body.rgb - np.float32(bvp) * body.pulse_delta
        else:
            brgb = body.rgb
        _warp_sprite(frame, brgb, body.alpha, m)
        if ph is not None:
            openness = float(ph.eye_openness_at(np.array([t]))[0])
            ex = ph.expression_at(np.array([t]))
            smile, frown, raise_ = float(ex["smile"][0]), float(ex["frown"][0]), float(ex["brow_raise"][0])
        else:
            openness, smile, frown, raise_ = 1.0, 0.0, 0.0, 0.0
        tex = actor.texture.frame_texture(bvp, openness, smile, frown, raise_, out=buf)
        rot = rotation_matrix(float(pose.yaw[0]), float(pose.pitch[0]), float(pose.roll[0]))
        light = self._photo_light if actor.photographic else self.light
        out = render_head(actor.texture, tex, cx, cy, float(pose.scale[0]), rot, light, self.width, self.height)
        if out is not None:
            roi, rgb, alpha = out
            _blend(frame, roi, rgb, alpha)

    def conditions(self) -> dict:
        spec = self.spec
        d = {
            "motion": spec.motion,
            "specular": spec.specular,
            "people": spec.people,
            "control": spec.control,
            "fitzpatrick": [a.fitzpatrick for a in self.actors],
            "expressions": spec.expressions,
            "bcg_motion": spec.bcg_motion,
            "pulse_source": spec.pulse_source,
            "real_ppg": [a.physio.real_pulse_info if a.physio is not None else None for a in self.actors]
            if spec.pulse_source != "parametric" else None,
            "jitter_ms": spec.jitter_ms,
            "jitter_kind": spec.jitter_kind,
            "drop_prob": spec.drop_prob,
            "light_direction": list(self.light.direction),
            "exposure_gain": self.exposure_gain,
        }
        d.update(self.illumination.describe())
        d.update(self.sensor.describe())
        return d


# --------------------------------------------------------------------------- static layers
def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A plain wall with a soft light gradient, plaster texture, a door frame and a sign."""
    wall = np.array(rng.uniform(0.55, 0.8, 3), np.float32)
    wall = wall * np.array([1.0, 1.0, 0.97], np.float32)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    grad = 0.9 + 0.15 * (1 - y) * (0.6 + 0.4 * x)
    tex = 1.0 + 0.02 * cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 2.0) \
        + 0.008 * rng.standard_normal((h, w)).astype(np.float32)
    bg = (grad * tex)[..., None] * wall
    # Door frame on one side, a sign with text-like bars on the other: static, non-face structure.
    side = rng.random() < 0.5
    dx0 = int(0.02 * w) if side else int(0.82 * w)
    cv2.rectangle(bg, (dx0, int(0.05 * h)), (dx0 + int(0.16 * w), h + 5), (0.35, 0.3, 0.28), max(2, w // 80))
    sx0 = int(0.8 * w) if side else int(0.04 * w)
    cv2.rectangle(bg, (sx0, int(0.08 * h)), (sx0 + int(0.14 * w), int(0.2 * h)), (0.85, 0.85, 0.82), -1)
    for k in range(3):
        yy = int((0.11 + 0.03 * k) * h)
        cv2.line(bg, (sx0 + int(0.015 * w), yy), (sx0 + int((0.06 + 0.02 * k) * w), yy), (0.2, 0.25, 0.6),
                 max(1, h // 160))
    return np.clip(bg, 0, 1).astype(np.float32)


def _print_card(actor: Actor, light: Light, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Render the actor frontal once and turn it into a printed photo (colour + alpha)."""
    a = actor.geometry.a_px
    cw, ch = int(3.4 * a), int(4.2 * a)
    hx, hy = cw / 2.0, 1.55 * a
    canvas = np.empty((ch, cw, 3), np.float32)
    canvas[:] = np.array([0.72, 0.66, 0.6], np.float32)  # studio backdrop
    body = actor.body
    m = np.array([[1.0, 0.0, hx - body.anchor_xy[0]], [0.0, 1.0, hy - body.anchor_xy[1]]])
    _warp_sprite(canvas, body.rgb, body.alpha, m)
    tex = actor.texture.frame_texture(0.0, 1.0)
    flat = Light(direction=light.direction, ambient=light.ambient, diffuse=light.diffuse, specular_gain=0.3)
    out = render_head(actor.texture, tex, hx, hy, 1.0, np.eye(3), flat, cw, ch)
    if out is not None:
        roi, rgb, alpha = out
        _blend(canvas, roi, rgb, alpha)
    # Print: reduced contrast and a slight warm cast (ink on matte paper), white border.
    canvas = 0.06 + 0.86 * canvas
    canvas *= np.array([0.96, 0.99, 1.03], np.float32)
    border = max(2, int(0.1 * a))
    canvas[:border], canvas[-border:], canvas[:, :border], canvas[:, -border:] = 0.93, 0.93, 0.93, 0.93
    alpha = np.ones((ch, cw), np.float32)
    return np.clip(canvas, 0, 1).astype(np.float32), alpha, (hx, hy)


def _glare(shape: tuple[int, int], cx: float, cy: float, a: float, gain: float) -> np.ndarray:
    """Specular glare of a glossy print: a broad Gaussian patch in card coordinates."""
    h, w = shape
    gx = np.exp(-(((np.arange(w, dtype=np.float32) - cx) / (0.5 * a)) ** 2))
    gy = np.exp(-(((np.arange(h, dtype=np.float32) - cy) / (0.8 * a)) ** 2))
    return (gain * gy[:, None] * gx[None, :]).astype(np.float32)
