"""Parametric face and upper body: skin tone, eyes that blink, brows and mouth that move, skin that pulses.

Why a 3-D head with a texture map: head rotation (yaw, pitch, roll) must move the face features,
the shading and the specular highlights the way a real head does, and a blink must change the
pixels of the eye region.  The head is an ellipsoid whose surface carries a texture in
(longitude, height) coordinates; every frame the texture is modulated by the blood-volume pulse,
the eyelids/brows/mouth are drawn into small texture patches, and the head is ray-cast
(orthographic camera) into the frame with Lambert + Blinn-Phong shading.  All of this is
vectorised numpy/OpenCV on a few tens of thousands of pixels per head.

Colour and physiology sources
-----------------------------
* Skin colour per Fitzpatrick type: CIELAB values chosen in the Individual Typology Angle classes
  (ITA = atan((L* - 50) / b*); Chardon, Cretois & Hourseau 1991, Int J Cosmet Sci 13:191;
  Del Bino & Bernerd 2013, Br J Dermatol 169 S3:33), mapped one-to-one to Fitzpatrick I-VI as in
  Kinyanjui et al. 2020 (MICCAI, "Fairness of classifiers across skin tones in dermatology").
  L*, b* are typical of measured facial skin (Xiao et al. 2017, Skin Res Technol 23:21).
  CIELAB -> sRGB by CIE 15:2004 (D65) and IEC 61966-2-1.
* Blood-volume-pulse colour signature (relative pulsatility of R, G, B under white light):
  normalised [0.33, 0.77, 0.53] (de Haan & van Leest 2014, Physiol Meas 35:1913, the PBV
  signature; de Haan & Jeanne 2013, IEEE TBME 60:2878 for the CHROM model).  Green strongest.
* Pulse amplitude: 0.1-0.5 % of the skin level (peak-to-peak, green); lower for darker skin
  because melanin absorbs the light before it reaches the dermal vessels (Nowara, McDuff &
  Veeraraghavan 2020, CVPR-W "A meta-analysis of the impact of skin type and gender on non-contact
  photoplethysmography measurements"); the reduction factors here are illustrative, not fitted.
* Spatial distribution: strongest on forehead and cheeks (Kamshilin et al. 2011, Biomed Opt
  Express 2:996; Lempe et al. 2013, "ROI selection for remote photoplethysmography").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# --------------------------------------------------------------------------- colour science
# (L*, a*, b*) per Fitzpatrick type; ITA classes: I > 55, II 41-55, III 28-41, IV 10-28, V -30..10, VI < -30.
SKIN_LAB_BY_FITZPATRICK: dict[int, tuple[float, float, float]] = {
    1: (70.0, 8.0, 11.5),  # ITA ~ 60 deg, very light
    2: (65.0, 10.0, 13.5),  # ITA ~ 48 deg, light
    3: (60.0, 11.0, 14.8),  # ITA ~ 34 deg, intermediate
    4: (54.0, 12.0, 15.5),  # ITA ~ 15 deg, tan
    5: (45.0, 12.0, 17.0),  # ITA ~ -16 deg, brown
    6: (33.0, 9.0, 15.0),  # ITA ~ -49 deg, dark
}
# Pulsatile amplitude relative to type I-II (melanin shading of the dermal signal; illustrative).
PULSE_GAIN_BY_FITZPATRICK: dict[int, float] = {1: 1.0, 2: 1.0, 3: 0.92, 4: 0.82, 5: 0.66, 6: 0.5}

# Normalised BVP signature [R, G, B] (de Haan & van Leest 2014); stored here in BGR order.
BVP_SIGNATURE_RGB = np.array([0.33, 0.77, 0.53])
BVP_SIGNATURE_BGR = BVP_SIGNATURE_RGB[::-1].copy()

_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_XYZ_TO_LINEAR_SRGB = np.array(
    [[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560], [0.0556434, -0.2040259, 1.0572252]]
)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) -> gamma-encoded sRGB in [0, 1] (CIE 15:2004; IEC 61966-2-1)."""
    lab = np.asarray(lab, dtype=float)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    eps = 6.0 / 29.0

    def finv(f: np.ndarray) -> np.ndarray:
        return np.where(f > eps, f**3, 3 * eps**2 * (f - 4.0 / 29.0))

    xyz = np.stack([finv(fx), finv(fy), finv(fz)], axis=-1) * _D65_WHITE
    lin = np.clip(xyz @ _XYZ_TO_LINEAR_SRGB.T, 0.0, None)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(lin, 1 / 2.4) - 0.055)
    return np.clip(srgb, 0.0, 1.0)


def skin_bgr(fitzpatrick: int, d_lab: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Skin colour of a Fitzpatrick type as BGR in [0, 1], optionally shifted in CIELAB."""
    if fitzpatrick not in SKIN_LAB_BY_FITZPATRICK:
        raise ValueError(f"fitzpatrick must be 1..6, got {fitzpatrick!r}")
    lab = np.array(SKIN_LAB_BY_FITZPATRICK[fitzpatrick]) + np.array(d_lab)
    return lab_to_srgb(lab)[::-1].copy()


def ita_deg(fitzpatrick: int) -> float:
    """Individual Typology Angle of the type's representative colour."""
    lum, _, b = SKIN_LAB_BY_FITZPATRICK[fitzpatrick]
    return float(np.degrees(np.arctan2(lum - 50.0, b)))


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class FaceGeometry:
    """Face layout in head-texture coordinates.

    u = longitude / 90 deg (0 at the nose, +-1 at the ears), v = height / half-height (-1 top of
    the head, +1 chin).  a_px is the half-width of the head in pixels at scale 1.
    """

    a_px: float = 70.0
    b_ratio: float = 1.32  # half-height / half-width
    c_ratio: float = 0.95  # depth / half-width
    eye_u: float = 0.34
    eye_v: float = -0.06
    eye_w: float = 0.17  # half-width in u
    eye_h_up: float = 0.058  # opening above the eye line, v units
    eye_h_lo: float = 0.036
    brow_v: float = -0.21
    hairline_v: float = -0.52
    nose_v: float = 0.27
    mouth_v: float = 0.52
    mouth_w: float = 0.21
    iris_bgr: tuple[float, float, float] = (0.15, 0.25, 0.35)
    hair_bgr: tuple[float, float, float] = (0.06, 0.07, 0.09)

    @property
    def b_px(self) -> float:
        return self.a_px * self.b_ratio

    @property
    def c_px(self) -> float:
        return self.a_px * self.c_ratio


_IRIS_BGR = [(0.12, 0.22, 0.33), (0.10, 0.16, 0.24), (0.45, 0.38, 0.25), (0.35, 0.40, 0.30), (0.06, 0.1, 0.16)]
_HAIR_BGR = [(0.05, 0.06, 0.08), (0.08, 0.12, 0.18), (0.20, 0.35, 0.50), (0.03, 0.03, 0.04), (0.35, 0.35, 0.38)]


def sample_geometry(rng: np.random.Generator, a_px: float, fitzpatrick: int) -> FaceGeometry:
    """Vary proportions within a few per cent; iris and hair colours likelier dark for darker skin."""
    dark = fitzpatrick >= 4
    iris = _IRIS_BGR[int(rng.integers(0, 2))] if dark else _IRIS_BGR[int(rng.integers(0, len(_IRIS_BGR)))]
    hair = _HAIR_BGR[3 if dark and rng.random() < 0.7 else int(rng.integers(0, len(_HAIR_BGR)))]
    return FaceGeometry(
        a_px=float(a_px),
        b_ratio=float(rng.uniform(1.25, 1.4)),
        c_ratio=float(rng.uniform(0.9, 1.0)),
        eye_u=float(rng.uniform(0.31, 0.37)),
        eye_v=float(rng.uniform(-0.09, -0.03)),
        eye_w=float(rng.uniform(0.16, 0.19)),
        eye_h_up=float(rng.uniform(0.052, 0.064)),
        brow_v=float(rng.uniform(-0.24, -0.18)),
        hairline_v=float(rng.uniform(-0.6, -0.45)),
        mouth_v=float(rng.uniform(0.48, 0.56)),
        mouth_w=float(rng.uniform(0.18, 0.24)),
        iris_bgr=iris,
        hair_bgr=hair,
    )


# --------------------------------------------------------------------------- texture
@dataclass
class TexturePatch:
    """A rectangle of the texture plus its coordinate grids (for per-frame drawing)."""

    sl: tuple[slice, slice]
    u: np.ndarray
    v: np.ndarray


@dataclass
class FaceTexture:
    """Texture-space layers of one head; ``frame_texture`` builds the per-frame texture."""

    geometry: FaceGeometry
    kind: str  # "person" | "mask" | "photo"
    albedo: np.ndarray  # (Th, Tw, 3) float32 BGR in [0, 1]: skin with closed-lid eyes, no brows
    pulse_delta: np.ndarray  # (Th, Tw, 3) float32: albedo * amplitude * signature * weight
    spec_k: np.ndarray  # (Th, Tw) float32 specular strength
    face_mask: np.ndarray  # (Th, Tw) bool: facial skin (for box and ROI truth)
    eyes: list[tuple[TexturePatch, np.ndarray, float]]  # (patch, eyeball BGR, side)
    brows: list[tuple[TexturePatch, float]]
    mouth: TexturePatch
    lip_ratio: np.ndarray  # BGR multiplier lips / skin
    hair_bgr: np.ndarray
    u_per_px: float
    v_per_px: float
    pulse_amplitude_rel: float
    draw_features: bool = True  # False for a photographic base face: its brows and mouth are in the photo

    @property
    def shape(self) -> tuple[int, int]:
        return self.albedo.shape[:2]

    def frame_texture(self, bvp: float, openness: float, smile: float = 0.0, frown: float = 0.0,
                      brow_raise: float = 0.0, out: np.ndarray | None = None) -> np.ndarray:
        """Texture for one frame: pulse-modulated skin, eyes at ``openness``, expression drawn.

        Blood absorbs, so more blood volume (bvp > 0) makes the skin darker: I = I0 (1 - a * bvp).
        """
        if out is None:
            out = np.empty_like(self.albedo)
        if bvp != 0.0:
            cv2.scaleAdd(self.pulse_delta, -float(bvp), self.albedo, dst=out)
        else:
            np.copyto(out, self.albedo)
        for patch, eyeball, _side in self.eyes:
            self._draw_eye(out, patch, eyeball, openness)
        if not self.draw_features:
            return out
        if self.kind == "person":
            for patch, side in self.brows:
                self._draw_brow(out, patch, side, brow_raise, frown)
            self._draw_mouth(out, smile, frown)
        else:
            for patch, side in self.brows:
                self._draw_brow(out, patch, side, 0.0, 0.0)
            self._draw_mouth(out, 0.0, 0.0)
        return out

    # -- per-frame drawing on small patches
    def _draw_eye(self, tex: np.ndarray, p: TexturePatch, eyeball: np.ndarray, openness: float) -> None:
        g = self.geometry
        du = p.u / g.eye_w
        s = np.sqrt(np.clip(1.0 - du * du, 0.0, 1.0)) ** 0.8
        o = float(np.clip(openness, 0.0, 1.0))
        y_closed = 0.45 * g.eye_h_lo * s
        y_up = y_closed + (-g.eye_h_up * s - y_closed) * o
        y_lo = g.eye_h_lo * s * (0.45 + 0.55 * o)
        px = self.v_per_px
        m = np.clip((p.v - y_up) / px + 0.5, 0.0, 1.0) * np.clip((y_lo - p.v) / px + 0.5, 0.0, 1.0)
        region = tex[p.sl]
        region += m[..., None] * (eyeball - region)
        # Upper lash line rides on the lid edge; it is what a closed eye shows.
        lash = np.exp(-(((p.v - y_up) / (2.0 * px + 0.008)) ** 2)) * (np.abs(du) < 1.05)
        region *= (1.0 - 0.85 * lash)[..., None]

    def _draw_brow(self, tex: np.ndarray, p: TexturePatch, side: float, raise_: float, frown: float) -> None:
        g = self.geometry
        t = p.u * side / (1.15 * g.eye_w)  # -1 inner (towards the nose) .. +1 outer
        centre = -0.028 * (1.0 - t * t) - 0.05 * raise_ + 0.035 * frown * np.clip((1.0 - t) / 2.0, 0, 1)
        half = 0.5 * (0.03 - 0.012 * t)
        px = self.v_per_px
        m = np.clip((half - np.abs(p.v - centre)) / px + 0.5, 0.0, 1.0)
        m *= np.clip((1.0 - np.abs(t)) * 8.0, 0.0, 1.0)
        region = tex[p.sl]
        region += (0.85 * m)[..., None] * (self.hair_bgr - region)
        if frown > 0.0:  # glabellar crease (corrugator, AU4)
            crease = np.exp(-(((p.u * side + 0.95 * g.eye_u) / 0.012) ** 2)) * (p.v > -0.02) * (p.v < 0.09)
            region *= (1.0 - 0.25 * frown * crease)[..., None]

    def _draw_mouth(self, tex: np.ndarray, smile: float, frown: float) -> None:
        g = self.geometry
        p = self.mouth
        w = g.mouth_w * (1.0 + 0.15 * smile - 0.05 * frown)
        t = p.u / w
        s = np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
        centre = -0.045 * smile * t * t + 0.012 * frown * t * t
        press = 1.0 - 0.55 * frown
        top = centre - 0.034 * press * s**0.6
        bottom = centre + 0.045 * press * s**0.7
        px = self.v_per_px
        m = np.clip((p.v - top) / px + 0.5, 0.0, 1.0) * np.clip((bottom - p.v) / px + 0.5, 0.0, 1.0)
        m *= np.clip((1.0 - np.abs(t)) * 6.0, 0.0, 1.0)
        region = tex[p.sl]
        region *= 1.0 + m[..., None] * (self.lip_ratio - 1.0)
        line = np.exp(-(((p.v - centre) / (1.2 * px + 0.004)) ** 2)) * np.clip((1.05 - np.abs(t)) * 5, 0, 1)
        region *= (1.0 - 0.55 * line)[..., None]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    n = rng.standard_normal(shape).astype(np.float32)
    if sigma_px > 0:
        n = cv2.GaussianBlur(n, (0, 0), sigma_px)
    sd = float(n.std())
    return n / sd if sd > 0 else n


def _gauss2(u: np.ndarray, v: np.ndarray, u0: float, v0: float, su: float, sv: float) -> np.ndarray:
    return np.exp(-0.5 * (((u - u0) / su) ** 2 + ((v - v0) / sv) ** 2))


def build_face_texture(
    fitzpatrick: int,
    geometry: FaceGeometry,
    rng: np.random.Generator,
    *,
    kind: str = "person",
    pulse_amplitude_rel: float = 0.003,
) -> FaceTexture:
    """Paint the head texture once.  ``pulse_amplitude_rel`` is the green peak-to-peak pulsatility
    (fraction of the skin level) on the forehead/cheeks; it is zero for "mask" and "photo"."""
    if kind not in ("person", "mask", "photo"):
        raise ValueError(f"face kind must be person|mask|photo, got {kind!r}")
    g = geometry
    th = max(int(round(2.2 * g.b_px)), 48)
    tw = max(int(round(2.0 * np.pi * g.a_px * 1.1)), 96)
    u = np.linspace(-2.0, 2.0, tw, dtype=np.float32)[None, :].repeat(th, 0)
    v = np.linspace(-1.0, 1.0, th, dtype=np.float32)[:, None].repeat(tw, 1)
    u_per_px = 4.0 / (tw - 1)
    v_per_px = 2.0 / (th - 1)
    au = np.abs(u)

    skin = skin_bgr(fitzpatrick).astype(np.float32)
    cheek = skin_bgr(fitzpatrick, (-1.5, 4.0, 0.5)).astype(np.float32)
    lips = skin_bgr(fitzpatrick, (-9.0, 12.0, 2.0)).astype(np.float32)
    hair = np.asarray(g.hair_bgr, dtype=np.float32)

    mottle = 0.35 if kind == "mask" else 1.0
    albedo = np.empty((th, tw, 3), np.float32)
    albedo[:] = skin
    blush = 0.8 * (_gauss2(au, v, g.eye_u + 0.05, 0.22, 0.16, 0.14))
    albedo += blush[..., None] * (cheek - skin)
    lum_noise = 0.018 * mottle * _smooth_noise(rng, (th, tw), 3.0) + 0.012 * mottle * _smooth_noise(rng, (th, tw), 0.6)
    albedo *= (1.0 + lum_noise)[..., None]
    albedo *= (1.0 + 0.015 * mottle * np.stack([_smooth_noise(rng, (th, tw), 5.0) for _ in range(3)], -1))

    # Baked relief shading: eye sockets, nose sides, nostrils, nasolabial folds, under-nose shadow.
    shade = np.ones((th, tw), np.float32)
    for side in (-1.0, 1.0):
        shade -= 0.32 * _gauss2(u, v, side * g.eye_u, g.eye_v - 0.015, 0.19, 0.085)  # orbit under the brow ridge
        shade -= 0.10 * _gauss2(u, v, side * g.eye_u, g.eye_v - g.eye_h_up - 0.025, 0.14, 0.02)  # lid crease
        shade -= 0.10 * _gauss2(u, v, side * 0.085, 0.14, 0.03, 0.13)
        shade -= 0.50 * _gauss2(u, v, side * 0.055, g.nose_v + 0.04, 0.022, 0.012)
        shade -= 0.06 * _gauss2(u, v, side * (g.mouth_w + 0.06), 0.38, 0.03, 0.1)
    shade += 0.05 * _gauss2(u, v, 0.0, 0.12, 0.025, 0.14)  # nose ridge catches light
    shade -= 0.08 * _gauss2(u, v, 0.0, g.nose_v + 0.09, 0.08, 0.02)
    albedo *= np.clip(shade, 0.3, 1.2)[..., None]

    # Hair: above the hairline, around the sides above the ears, and the back of the head.
    hairline = g.hairline_v + 0.28 * np.clip(au - 0.15, 0, None) ** 2 * 2.0
    hair_m = (v < hairline) | ((au > 0.88) & (v < 0.15)) | (au > 1.15)
    hair_soft = cv2.GaussianBlur(hair_m.astype(np.float32), (0, 0), 1.2)
    strands = 1.0 + 0.18 * cv2.GaussianBlur(rng.standard_normal((th, tw)).astype(np.float32), (0, 0), sigmaX=0.7,
                                             sigmaY=4.0)
    hair_col = hair[None, None, :] * strands[..., None]
    if kind == "mask":  # full-head silicone mask: skin-coloured "hair" region, painted eyebrows
        hair_col = skin[None, None, :] * (0.9 + 0.05 * strands[..., None])
    albedo += hair_soft[..., None] * (hair_col - albedo)
    # Ears: a darker rim near +-90 deg.
    for side in (-1.0, 1.0):
        ear = _gauss2(u, v, side * 1.0, 0.08, 0.05, 0.13)
        albedo *= (1.0 - 0.12 * ear)[..., None]
    albedo = np.clip(albedo, 0.0, 1.0)

    face_mask = (~hair_m) & (au < 0.85) & (v < 0.98)

    # Pulse weight: forehead and cheeks 1, nose/chin ~0.8, elsewhere on skin 0.6; none on hair.
    weight = 0.6 * np.ones((th, tw), np.float32)
    weight += 0.4 * np.clip((g.brow_v - 0.02 - v) / 0.1, 0, 1)  # forehead
    for side in (-1.0, 1.0):
        weight += 0.4 * _gauss2(u, v, side * (g.eye_u + 0.02), 0.2, 0.14, 0.12)
    weight += 0.2 * _gauss2(u, v, 0.0, 0.15, 0.06, 0.15)
    weight = np.clip(weight, 0.0, 1.0) * (1.0 - hair_soft)
    weight = cv2.GaussianBlur(weight, (0, 0), 1.5)
    for side in (-1.0, 1.0):  # the eyeball itself does not pulse
        weight *= 1.0 - 0.9 * _gauss2(u, v, side * g.eye_u, g.eye_v, g.eye_w * 0.8, 0.03)
    amp = 0.0 if kind != "person" else float(pulse_amplitude_rel)
    sig = (BVP_SIGNATURE_BGR / BVP_SIGNATURE_BGR[1]).astype(np.float32)  # green = 1
    pulse_delta = (albedo * (amp * weight)[..., None] * sig).astype(np.float32)

    # Specular strength: T-zone (forehead, nose) oilier; hair dull; silicone mask shinier.
    spec = 0.05 + 0.10 * np.clip((g.brow_v - v) / 0.2, 0, 1) * (au < 0.5) + 0.12 * _gauss2(u, v, 0, 0.2, 0.05, 0.12)
    spec = spec * (1.0 - hair_soft) + 0.02 * hair_soft
    if kind == "mask":
        spec = spec * 1.8
    spec = spec.astype(np.float32)

    def patch(u0: float, v0: float, hu: float, hv: float) -> TexturePatch:
        c0 = int(np.clip(np.floor((u0 - hu + 2.0) / u_per_px), 0, tw - 1))
        c1 = int(np.clip(np.ceil((u0 + hu + 2.0) / u_per_px) + 1, 1, tw))
        r0 = int(np.clip(np.floor((v0 - hv + 1.0) / v_per_px), 0, th - 1))
        r1 = int(np.clip(np.ceil((v0 + hv + 1.0) / v_per_px) + 1, 1, th))
        sl = (slice(r0, r1), slice(c0, c1))
        return TexturePatch(sl, (u[sl] - u0).copy(), (v[sl] - v0).copy())

    eyes = []
    sclera = np.array([0.55, 0.58, 0.6], np.float32)  # in the orbit's shade
    iris = np.asarray(g.iris_bgr, np.float32)
    for side in (-1.0, 1.0):
        p = patch(side * g.eye_u, g.eye_v, 1.15 * g.eye_w, 1.6 * g.eye_h_up + 0.01)
        r_iris = np.hypot(p.u / 0.07, (p.v - 0.004) / 0.066)
        ball = np.empty(p.u.shape + (3,), np.float32)
        ball[:] = sclera * (1.0 - 0.25 * np.clip(np.abs(p.u) / g.eye_w, 0, 1) ** 2)[..., None]
        iris_m = np.clip((1.0 - r_iris) * 6.0, 0, 1)
        ball += iris_m[..., None] * (iris - ball)
        pupil_m = np.clip((0.42 - r_iris) * 12.0, 0, 1)
        ball *= (1.0 - 0.85 * pupil_m)[..., None]
        glint = _gauss2(p.u, p.v, 0.02 * side, -0.015, 0.012, 0.01)
        ball += (0.6 * glint)[..., None]
        eyes.append((p, np.clip(ball, 0, 1), side))
    brows = [(patch(side * g.eye_u, g.brow_v, 1.2 * g.eye_w, 0.1), side) for side in (-1.0, 1.0)]
    mouth = patch(0.0, g.mouth_v, 1.25 * g.mouth_w, 0.09)
    lip_ratio = (lips / np.maximum(skin, 1e-3)).astype(np.float32)
    return FaceTexture(
        geometry=g, kind=kind, albedo=albedo.astype(np.float32), pulse_delta=pulse_delta, spec_k=spec,
        face_mask=face_mask, eyes=eyes, brows=brows, mouth=mouth, lip_ratio=lip_ratio, hair_bgr=hair,
        u_per_px=u_per_px, v_per_px=v_per_px, pulse_amplitude_rel=amp,
    )


# --------------------------------------------------------------------------- head rendering
def rotation_matrix(yaw_rad: float, pitch_rad: float, roll_rad: float) -> np.ndarray:
    """Head -> camera rotation R = Rz(roll) Rx(pitch) Ry(yaw); x right, y down, z towards the camera."""
    cy, sy = np.cos(yaw_rad), np.sin(yaw_rad)
    cp, sp = np.cos(pitch_rad), np.sin(pitch_rad)
    cr, sr = np.cos(roll_rad), np.sin(roll_rad)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


@dataclass(frozen=True)
class Light:
    """Key light direction (camera frame, pointing towards the light), ambient and diffuse shares."""

    direction: tuple[float, float, float] = (-0.35, -0.45, 0.82)
    ambient: float = 0.42
    diffuse: float = 0.68
    shininess: float = 24.0
    specular_gain: float = 1.0  # 0 switches highlights off


def render_head(
    tex: FaceTexture,
    frame_tex: np.ndarray,
    cx_px: float,
    cy_px: float,
    scale: float,
    rot: np.ndarray,
    light: Light,
    frame_w: int,
    frame_h: int,
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Ray-cast the textured ellipsoid head into a frame region (orthographic camera).

    Returns (region slices, BGR radiance in [0, ~1.3] (not premultiplied), alpha) or None when
    off-frame.
    Radiance = albedo x (ambient + diffuse max(0, n.l)) + specular (Blinn-Phong, light colour),
    i.e. the dichromatic reflection model (Shafer 1985): the specular part carries no pulse.
    """
    g = tex.geometry
    a, b, c = g.a_px * scale, g.b_px * scale, g.c_px * scale
    # Image extent of the rotated ellipsoid along x and y: sqrt(sum_j R[i, j]^2 s_j^2).
    sq = np.array([a * a, b * b, c * c])
    ex = float(np.sqrt(np.sum(rot[0] ** 2 * sq))) + 2.0
    ey = float(np.sqrt(np.sum(rot[1] ** 2 * sq))) + 2.0
    x0, x1 = int(np.floor(cx_px - ex)), int(np.ceil(cx_px + ex)) + 1
    y0, y1 = int(np.floor(cy_px - ey)), int(np.ceil(cy_px + ey)) + 1
    x0c, x1c, y0c, y1c = max(x0, 0), min(x1, frame_w), max(y0, 0), min(y1, frame_h)
    if x0c >= x1c or y0c >= y1c:
        return None
    xs = (np.arange(x0c, x1c, dtype=np.float32) - np.float32(cx_px))[None, :]
    ys = (np.arange(y0c, y1c, dtype=np.float32) - np.float32(cy_px))[:, None]
    r = rot.astype(np.float32)
    k2 = np.array([1.0 / a**2, 1.0 / b**2, 1.0 / c**2], np.float32)
    d = r[2, :]  # R^T e_z
    # o = R^T (x, y, 0) = x * R[0, :] + y * R[1, :]
    ox = xs * r[0, 0] + ys * r[1, 0]
    oy = xs * r[0, 1] + ys * r[1, 1]
    oz = xs * r[0, 2] + ys * r[1, 2]
    qa = float(np.sum(d * d * k2))
    qb = ox * (d[0] * k2[0]) + oy * (d[1] * k2[1]) + oz * (d[2] * k2[2])
    qc = ox * ox * k2[0] + oy * oy * k2[1] + oz * oz * k2[2] - 1.0
    disc = qb * qb - qa * qc
    r_eff = float(np.sqrt(a * b))
    alpha = np.clip(disc * (r_eff**3 / 2.0) + 0.5, 0.0, 1.0).astype(np.float32)
    if not np.any(alpha > 0):
        return None
    z = (-qb + np.sqrt(np.maximum(disc, 0.0))) / qa
    px_ = ox + z * d[0]
    py_ = oy + z * d[1]
    pz_ = oz + z * d[2]
    lon = np.arctan2(px_ / a, pz_ / c)
    v = np.clip(py_ / b, -1.0, 1.0)
    th, tw = tex.shape
    mapx = ((lon * (2.0 / np.pi) + 2.0) * ((tw - 1) / 4.0)).astype(np.float32)
    mapy = ((v + 1.0) * ((th - 1) / 2.0)).astype(np.float32)
    albedo = cv2.remap(frame_tex, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # Normal in camera frame: R (P * k2), normalised.
    nhx, nhy, nhz = px_ * k2[0], py_ * k2[1], pz_ * k2[2]
    nx = r[0, 0] * nhx + r[0, 1] * nhy + r[0, 2] * nhz
    ny = r[1, 0] * nhx + r[1, 1] * nhy + r[1, 2] * nhz
    nz = r[2, 0] * nhx + r[2, 1] * nhy + r[2, 2] * nhz
    inv = 1.0 / np.sqrt(nx * nx + ny * ny + nz * nz + 1e-12)
    nx, ny, nz = nx * inv, ny * inv, nz * inv
    lx, ly, lz = _unit(light.direction)
    ndotl = np.maximum(nx * lx + ny * ly + nz * lz, 0.0)
    shade = (light.ambient + light.diffuse * ndotl).astype(np.float32)
    rgb = albedo * shade[..., None]
    if light.specular_gain > 0:
        hx, hy, hz = _unit((lx, ly, lz + 1.0))
        ndoth = np.maximum(nx * hx + ny * hy + nz * hz, 0.0)
        ks = cv2.remap(tex.spec_k, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        spec = (light.specular_gain * ks * ndoth**light.shininess * (ndotl > 0)).astype(np.float32)
        rgb += spec[..., None]
    return (slice(y0c, y1c), slice(x0c, x1c)), rgb, alpha


def _unit(v: tuple[float, float, float]) -> tuple[float, float, float]:
    n = float(np.sqrt(sum(x * x for x in v)))
    return (v[0] / n, v[1] / n, v[2] / n)


def face_outline_uv(geometry: FaceGeometry, n: int = 48) -> np.ndarray:
    """Points (u, v) around the facial skin region (hairline, temples, jaw, chin) for face boxes."""
    g = geometry
    t = np.linspace(0.0, 1.0, n)
    top_u = -0.8 + 1.6 * t
    top_v = g.hairline_v + 0.56 * np.clip(np.abs(top_u) - 0.15, 0, None) ** 2
    side_v = np.linspace(g.hairline_v + 0.2, 0.95, n)
    pts = [np.stack([top_u, top_v], 1), np.stack([np.full(n, -0.82), side_v], 1),
           np.stack([np.full(n, 0.82), side_v], 1), np.stack([-0.6 + 1.2 * t, np.full(n, 0.97)], 1)]
    return np.concatenate(pts, 0)


def project_uv(geometry: FaceGeometry, uv: np.ndarray, rot: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Image offsets (dx, dy) from the head centre of texture points, and their visibility."""
    g = geometry
    lon = uv[:, 0] * (np.pi / 2.0)
    v = np.clip(uv[:, 1], -1.0, 1.0)
    ring = np.sqrt(1.0 - v * v)
    pts = np.stack([g.a_px * ring * np.sin(lon), g.b_px * v, g.c_px * ring * np.cos(lon)], 1) * scale
    cam = pts @ rot.T
    nrm = (pts / np.array([g.a_px, g.b_px, g.c_px]) ** 2) @ rot.T
    return cam[:, :2], nrm[:, 2] > 0


# --------------------------------------------------------------------------- body
@dataclass
class BodySprite:
    """Neck, shoulders and chest as a BGR + alpha sprite anchored below the head centre."""

    rgb: np.ndarray  # (h, w, 3) float32, not premultiplied (colour defined under alpha = 0 too)
    alpha: np.ndarray  # (h, w) float32
    pulse_delta: np.ndarray  # (h, w, 3) float32 (neck skin)
    anchor_xy: tuple[float, float]  # sprite pixel that sits at the head centre
    chest_y_px: float  # sprite row of the chest (for respiration ROI truth)


def build_body(
    geometry: FaceGeometry,
    fitzpatrick: int,
    rng: np.random.Generator,
    height_px: int,
    *,
    kind: str = "person",
    pulse_amplitude_rel: float = 0.003,
) -> BodySprite:
    """Paint neck + shoulders + chest.  Clothing carries folds and weave so optical flow can track
    breathing.  A mask wearer's neck is covered by a roll-neck collar (no visible pulse)."""
    g = geometry
    a, b = g.a_px, g.b_px
    half_w = int(np.ceil(3.1 * a))
    top = 0.35 * b
    h = max(int(height_px), int(2 * b))
    w = 2 * half_w + 1
    xs = (np.arange(w, dtype=np.float32) - half_w)[None, :].repeat(h, 0)
    ys = (np.arange(h, dtype=np.float32) + top)[:, None].repeat(w, 1)  # y relative to the head centre
    ax = np.abs(xs)

    neck_half = 0.52 * a
    neck = (ax < neck_half) & (ys > 0.3 * b)
    shoulder_tip = 2.75 * a
    tt = np.clip((ax - 0.7 * a) / (shoulder_tip - 0.7 * a), 0.0, 1.0)
    torso_top = 1.25 * b + 0.40 * b * tt * tt - 0.08 * b * (1 - tt)
    outline_x = shoulder_tip + 0.25 * a * np.clip((ys - 1.6 * b) / b, 0, 3)
    torso = (ys > torso_top) & (ax < outline_x)
    edge_soft = np.clip((torso_top - ys) * -1.0 + 0.5, 0, 1) * np.clip(outline_x - ax + 0.5, 0, 1)
    alpha = np.maximum(np.clip(neck_half - ax + 0.5, 0, 1) * (ys > 0.3 * b), edge_soft).astype(np.float32)

    cloth = np.array(rng.uniform(0.1, 0.7, 3), np.float32)
    folds = 0.07 * _smooth_noise(rng, (h, w), 0.08 * a) + 0.03 * _smooth_noise(rng, (h, w), 0.8)
    stripe = 0.04 * np.sin(ys / (0.09 * a) * 2 * np.pi) if rng.random() < 0.4 else 0.0
    cyl = 0.78 + 0.22 * np.cos(np.clip(xs / (outline_x + 1e-3), -1, 1) * np.pi / 2)
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = cloth
    rgb *= ((1.0 + folds + stripe) * cyl)[..., None]
    # Collar band and shoulder seams (trackable edges).
    collar_y = 1.25 * b + 0.55 * a * (ax / (0.9 * a)) ** 2
    collar = np.exp(-(((ys - collar_y) / (0.05 * a)) ** 2)) * (ax < 0.95 * a)
    rgb *= (1.0 - 0.35 * collar)[..., None]
    seam = np.exp(-(((ax - 1.9 * a) / (0.03 * a)) ** 2)) * (ys < torso_top + 0.5 * b)
    rgb *= (1.0 - 0.25 * seam)[..., None]

    skin = skin_bgr(fitzpatrick).astype(np.float32)
    neck_col = skin * (0.75 + 0.2 * np.cos(np.clip(xs / neck_half, -1, 1) * np.pi / 2))[..., None]
    neck_col *= (0.65 + 0.35 * np.clip((ys - 0.55 * b) / (0.5 * b), 0, 1))[..., None]  # under-chin shadow
    neck_col *= (1.0 + 0.02 * _smooth_noise(rng, (h, w), 2.0))[..., None]
    neck_skin = neck & ~torso & (ys < collar_y - 0.03 * a)
    if kind == "mask":
        neck_skin &= False
        rgb = np.where((neck & ~torso)[..., None], cloth * cyl[..., None] * (1 + folds)[..., None], rgb)
    nm = neck_skin.astype(np.float32)
    nm = cv2.GaussianBlur(nm, (0, 0), 0.8)
    rgb = rgb * (1.0 - nm[..., None]) + neck_col * nm[..., None]
    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32)
    amp = float(pulse_amplitude_rel) if kind == "person" else 0.0
    sig = (BVP_SIGNATURE_BGR / BVP_SIGNATURE_BGR[1]).astype(np.float32)
    pulse_delta = (rgb * (0.5 * amp * nm)[..., None] * sig).astype(np.float32)
    return BodySprite(rgb=rgb, alpha=alpha, pulse_delta=pulse_delta, anchor_xy=(float(half_w), float(-top)),
                      chest_y_px=float(1.9 * b - top))
