"""A photographic base face: the public-domain astronaut portrait shipped with scikit-image.

Why: a real face has the skin texture, the shading and the feature layout that a parametric face
only approximates, and face detectors were trained on such images.  The portrait (Eileen Collins,
NASA photo, public domain; ``skimage.data.astronaut``) is wrapped onto the front of the same
ellipsoid head the parametric model uses, so pose, pulse, blinks, lighting and the truth machinery
are shared.  Brows and mouth stay as photographed (no expression changes on this base).

* Skin pixels are found with the Cr/Cb skin-colour box of Chai & Ngan 1999 (IEEE TCSVT 9:551)
  inside the face ellipse, and carry the blood-volume pulse.
* The skin can be re-toned to another Fitzpatrick type by a per-channel gain towards that type's
  reference colour (an approximation: real melanin changes also alter texture and contrast).
* Blinks: the eyelid skin is synthesised by inpainting the eye openings (Telea 2004, J Graphics
  Tools 9:23); the open eye from the photo is blended in where the lids are open.
* Eye centres are fixed photo coordinates (found once with OpenCV's Haar eye cascade).
"""

from __future__ import annotations

import cv2
import numpy as np

from hal_sim.face.face_model import (
    BVP_SIGNATURE_BGR,
    FaceGeometry,
    FaceTexture,
    TexturePatch,
    skin_bgr,
)

# Head ellipsoid fitted by eye to the portrait (photo pixels, 512 x 512 image).
_HEAD_CX, _HEAD_CY = 224.0, 106.5
_HEAD_A, _HEAD_B = 48.7, 75.0
_EYES_XY = ((202.0, 100.0), (246.5, 103.5))
_PHOTO_FITZPATRICK = 2


def astronaut_bgr() -> np.ndarray:
    """The portrait as BGR float32 in [0, 1]; needs scikit-image (its bundled data)."""
    try:
        from skimage import data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError("base_face='astronaut' needs scikit-image (skimage.data.astronaut)") from err
    rgb = data.astronaut()
    return (rgb[..., ::-1].astype(np.float32) / 255.0).copy()


def build_astronaut_texture(
    a_px: float,
    fitzpatrick: int | None,
    *,
    kind: str = "person",
    pulse_amplitude_rel: float = 0.003,
) -> tuple[FaceGeometry, FaceTexture]:
    """Texture and geometry of the astronaut head at a head half-width of ``a_px`` pixels."""
    photo = astronaut_bgr()
    scale = a_px / _HEAD_A
    # Geometry: eye positions from the portrait, in texture units.
    (ex0, ey0), (ex1, ey1) = _EYES_XY
    eye_x = 0.5 * (ex1 - ex0) / _HEAD_A
    eye_u = float(np.degrees(np.arcsin(eye_x)) / 90.0)
    eye_v = float((0.5 * (ey0 + ey1) - _HEAD_CY) / _HEAD_B)
    geometry = FaceGeometry(
        a_px=float(a_px), b_ratio=_HEAD_B / _HEAD_A, c_ratio=0.95, eye_u=eye_u, eye_v=eye_v, eye_w=0.16,
        eye_h_up=0.05, eye_h_lo=0.032, brow_v=eye_v - 0.15, hairline_v=-0.55, mouth_v=0.55, mouth_w=0.2,
    )
    g = geometry
    th = max(int(round(2.2 * g.b_px)), 48)
    tw = max(int(round(2.0 * np.pi * g.a_px * 1.1)), 96)
    u = np.linspace(-2.0, 2.0, tw, dtype=np.float32)[None, :].repeat(th, 0)
    v = np.linspace(-1.0, 1.0, th, dtype=np.float32)[:, None].repeat(tw, 1)
    lon = u * (np.pi / 2.0)
    ring = np.sqrt(np.clip(1.0 - v * v, 0.0, 1.0))
    # Orthographic projection of the front hemisphere into the photo.
    mapx = (_HEAD_CX + _HEAD_A * ring * np.sin(np.clip(lon, -np.pi / 2, np.pi / 2))).astype(np.float32)
    mapy = (_HEAD_CY + _HEAD_B * v).astype(np.float32)
    albedo = cv2.remap(photo, mapx, mapy, cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    front = np.abs(u) <= 0.97
    # Behind the ears: hair colour of the portrait.
    hair_col = np.median(photo[30:60, 190:260].reshape(-1, 3), axis=0).astype(np.float32)
    back = cv2.GaussianBlur((~front).astype(np.float32), (0, 0), 1.5)
    albedo = albedo * (1 - back[..., None]) + hair_col * back[..., None]
    # The portrait is lit already: take it as albedo at ~85 % (the renderer adds its own shading).
    albedo *= 0.85

    ycc = cv2.cvtColor((np.clip(albedo, 0, 1) * 255).astype(np.uint8), cv2.COLOR_BGR2YCrCb).astype(np.float32)
    cr, cb = ycc[..., 1], ycc[..., 2]
    skin_m = (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127) & front & (v > -0.6) & (v < 0.97)
    skin_m &= np.abs(u) < 0.9
    skin = cv2.GaussianBlur(skin_m.astype(np.float32), (0, 0), 1.0)

    # Eyelid skin: inpaint the eye openings.
    eye_mask = np.zeros((th, tw), np.uint8)
    for side in (-1.0, 1.0):
        e = ((np.abs(u - side * g.eye_u) / (1.1 * g.eye_w)) ** 2 + ((v - g.eye_v) / (1.6 * g.eye_h_up)) ** 2) <= 1
        eye_mask[e] = 255
    photo_eyes = albedo.copy()
    lids8 = cv2.inpaint((np.clip(albedo, 0, 1) * 255).astype(np.uint8), eye_mask, 3, cv2.INPAINT_TELEA)
    albedo = np.where(eye_mask[..., None] > 0, lids8.astype(np.float32) / 255.0 * 0.98, albedo)

    if fitzpatrick is not None and fitzpatrick != _PHOTO_FITZPATRICK:
        gain = skin_bgr(fitzpatrick) / np.maximum(skin_bgr(_PHOTO_FITZPATRICK), 1e-3)
        albedo = albedo * (1.0 + skin[..., None] * (gain.astype(np.float32) - 1.0))
        photo_eyes = photo_eyes * (1.0 + skin[..., None] * (gain.astype(np.float32) - 1.0))
    albedo = np.clip(albedo, 0.0, 1.0).astype(np.float32)

    amp = float(pulse_amplitude_rel) if kind == "person" else 0.0
    sig = (BVP_SIGNATURE_BGR / BVP_SIGNATURE_BGR[1]).astype(np.float32)
    weight = skin * (1.0 - eye_mask.astype(np.float32) / 255.0)
    pulse_delta = (albedo * (amp * weight)[..., None] * sig).astype(np.float32)
    spec_k = (0.04 + 0.1 * skin * (v < g.eye_v - 0.05) + 0.06 * skin).astype(np.float32)

    u_per_px, v_per_px = 4.0 / (tw - 1), 2.0 / (th - 1)

    def patch(u0: float, v0: float, hu: float, hv: float) -> TexturePatch:
        c0 = int(np.clip(np.floor((u0 - hu + 2.0) / u_per_px), 0, tw - 1))
        c1 = int(np.clip(np.ceil((u0 + hu + 2.0) / u_per_px) + 1, 1, tw))
        r0 = int(np.clip(np.floor((v0 - hv + 1.0) / v_per_px), 0, th - 1))
        r1 = int(np.clip(np.ceil((v0 + hv + 1.0) / v_per_px) + 1, 1, th))
        sl = (slice(r0, r1), slice(c0, c1))
        return TexturePatch(sl, (u[sl] - u0).copy(), (v[sl] - v0).copy())

    eyes = []
    for side in (-1.0, 1.0):
        p = patch(side * g.eye_u, g.eye_v, 1.15 * g.eye_w, 1.6 * g.eye_h_up + 0.01)
        eyes.append((p, np.clip(photo_eyes[p.sl], 0, 1).astype(np.float32), side))
    face_mask = skin_m
    tex = FaceTexture(
        geometry=g, kind=kind, albedo=albedo, pulse_delta=pulse_delta, spec_k=spec_k, face_mask=face_mask,
        eyes=eyes, brows=[], mouth=patch(0.0, g.mouth_v, 1.2 * g.mouth_w, 0.08),
        lip_ratio=np.ones(3, np.float32), hair_bgr=hair_col, u_per_px=u_per_px, v_per_px=v_per_px,
        pulse_amplitude_rel=amp, draw_features=False,
    )
    return geometry, tex
