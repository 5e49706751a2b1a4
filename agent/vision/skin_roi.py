"""Skin region of interest: tracked face box -> spatially averaged skin colour per frame.

rPPG reads a ~0.1-1 % periodic colour change of the skin, so the region must (a) hold only skin,
(b) stay on the same patch of skin from frame to frame and (c) average as many pixels as possible
(camera noise falls as 1/sqrt(n)).  Following the practice of Wang et al. 2017 (POS) and Bobbia
et al. 2017 (UBFC-rPPG), we average the forehead and both cheeks -- the most perfused, least
deforming, least hair-covered parts of the face -- and leave out the eyes, mouth and nostrils,
which move with blinks, speech and breathing.

Inside those regions a pixel is kept when

* it is not a specular highlight or clipped (max channel below ``specular_level``): highlights
  carry the light source's colour, not the skin's, and move with the head (Wang et al. 2017,
  Sec. II, the dichromatic skin model);
* it is not in deep shadow (min channel above ``dark_level``), where noise and quantisation
  dominate;
* its chromaticity ``(r, g) = (R, G) / (R + G + B)`` lies within ``chroma_tol`` of the running
  skin chromaticity of this face (hair, eyebrows, glasses frames fall outside).  The reference is
  learnt per face and adapts slowly, so the test works for every skin tone (no fixed
  YCrCb box, which is known to fail on dark skin -- Dasari et al., "Evaluation of biases in
  remote photoplethysmography methods", npj Digit. Med. 4:91, 2021).

Optionally each region is also split into a grid of patches (:data:`PATCH_GRID`) whose mean
colours are returned too, for patch-weighted rPPG (DistancePPG, :func:`agent.vision.rppg.distance_ppg`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from agent.vision.errors import VisionInputError
from agent.vision.face_tracker import Box

#: Regions as fractions (x, y, w, h) of an OpenCV Haar frontal-face box, which spans roughly
#: mid-forehead to lower lip and the outer eye corners; eyes lie at ~0.38 of its height.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "forehead": (0.18, 0.06, 0.64, 0.22),
    "cheeks_nose": (0.08, 0.49, 0.84, 0.22),
}

#: Patch grid (columns, rows) per region for patch-weighted rPPG (DistancePPG, Kumar et al. 2015):
#: 3 x 2 on the forehead and 4 x 2 over cheeks and nose -- 14 patches of ~15 x 20 px on a
#: 170 px face, large enough that sensor noise does not swamp each patch's pulse, small enough
#: that an eyebrow, a highlight or a moving edge spoils only one or two of them.
PATCH_GRID: dict[str, tuple[int, int]] = {"forehead": (3, 2), "cheeks_nose": (4, 2)}


@dataclass(frozen=True, slots=True)
class SkinSample:
    """Mean skin colour of one frame.  ``rgb`` is (R, G, B) (note: not BGR), NaN if no skin."""

    rgb: np.ndarray
    n_pixels: int
    fraction_kept: float
    #: (n_patches, 3) mean skin colour (R, G, B) of each patch of the regions' grids (see
    #: :class:`SkinRoi`), NaN where a patch holds too little skin; for patch-weighted rPPG.
    patch_rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))


def region_box(face: Box, frac: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    x, y, w, h = face
    fx, fy, fw, fh = frac
    return int(round(x + fx * w)), int(round(y + fy * h)), max(1, int(round(fw * w))), max(1, int(round(fh * h)))


def _crop(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    H, W = frame.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return frame[0:0, 0:0]
    return frame[y0:y1, x0:x1]


def _coverage(lo: float, hi: float, n0: int, n1: int) -> np.ndarray:
    """Fraction of each pixel n0..n1-1 covered by the interval [lo, hi) (sub-pixel box edges)."""
    edges = np.arange(n0, n1 + 1, dtype=np.float32)
    return np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, 1.0)


def _band_coverage(lo: float, hi: float, n_bands: int, n0: int, n1: int) -> np.ndarray:
    """(n_bands, n1 - n0): coverage of each pixel by each of ``n_bands`` equal sub-intervals of
    [lo, hi).  The rows sum to :func:`_coverage` of the whole interval, so patch sums add up to the
    region sum exactly, and inner patch edges are sub-pixel too."""
    cuts = np.linspace(lo, hi, n_bands + 1)
    return np.stack([_coverage(float(cuts[i]), float(cuts[i + 1]), n0, n1) for i in range(n_bands)])


class SkinRoi:
    """Per-face skin sampler.  Keep one instance per track (it learns that face's skin colour).

    Two details matter at the 0.1 % level of the pulse:

    * region edges are sub-pixel: boundary rows and columns are weighted by how much of them
      the region covers, so a box moving by a fraction of a pixel changes the mean smoothly
      instead of in one-pixel steps (a step of a textured 40-row region moves its mean by
      ~0.05 %, as much as a weak pulse);
    * the skin test is soft and made on a 5x5-blurred copy: a pixel near the chroma tolerance
      fades in or out instead of flipping with sensor noise from frame to frame.
    """

    def __init__(self, regions: dict[str, tuple[float, float, float, float]] | None = None,
                 chroma_tol: float = 0.035, specular_level: float = 240.0, dark_level: float = 12.0,
                 adapt: float = 0.02, reference_region: str = "cheeks_nose",
                 patch_grid: dict[str, tuple[int, int]] | None = None) -> None:
        self.regions = dict(REGIONS if regions is None else regions)
        grid = PATCH_GRID if patch_grid is None else patch_grid
        self.patch_grid = {name: grid.get(name, (1, 1)) for name in self.regions}
        self.n_patches = sum(c * r for c, r in self.patch_grid.values())
        self.reference_region = reference_region
        self.chroma_tol = chroma_tol
        self.specular_level = specular_level
        self.dark_level = dark_level
        self.adapt = adapt
        self._ref_rg: np.ndarray | None = None

    def sample(self, frame_bgr: np.ndarray, face: Box) -> SkinSample:
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise VisionInputError(f"SkinRoi.sample: need an (H, W, 3) uint8 BGR frame, got "
                                   f"{frame_bgr.dtype} {frame_bgr.shape}")
        H, W = frame_bgr.shape[:2]
        fx, fy, fw, fh = (float(v) for v in face)
        crops, bands, names = [], [], []
        for name, (rx, ry, rw, rh) in self.regions.items():
            x0, x1 = fx + rx * fw, fx + (rx + rw) * fw
            y0, y1 = fy + ry * fh, fy + (ry + rh) * fh
            c0, c1 = max(0, int(np.floor(x0))), min(W, int(np.ceil(x1)))
            r0, r1 = max(0, int(np.floor(y0))), min(H, int(np.ceil(y1)))
            if c1 - c0 < 3 or r1 - r0 < 3:
                crops.append(None)
                bands.append(None)
                names.append(name)
                continue
            crops.append(frame_bgr[r0:r1, c0:c1].astype(np.float32))
            names.append(name)
            ncol, nrow = self.patch_grid[name]
            bands.append((_band_coverage(y0, y1, nrow, r0, r1), _band_coverage(x0, x1, ncol, c0, c1)))
        nan_patches = np.full((self.n_patches, 3), np.nan)
        if all(c is None for c in crops):
            return SkinSample(np.full(3, np.nan), 0, 0.0, nan_patches)
        if self._ref_rg is None:
            # learn the skin colour from the cheeks: the region least likely to hold hair
            present = [c for c in crops if c is not None]
            ref = [c for c, name in zip(crops, names, strict=True)
                   if name == self.reference_region and c is not None] or present
            allpix = np.concatenate([c.reshape(-1, 3) for c in ref])
            ok = (allpix.max(axis=1) < self.specular_level) & (allpix.min(axis=1) > self.dark_level)
            base = allpix[ok] if ok.sum() > 20 else allpix
            s = base.sum(axis=1) + 1e-6
            self._ref_rg = np.array([np.median(base[:, 2] / s), np.median(base[:, 1] / s)], np.float32)
        tol = self.chroma_tol
        acc = np.zeros(3, np.float64)
        wsum = 0.0
        area = 0.0
        rg_acc = np.zeros(2, np.float64)
        patch_acc, patch_w = [], []
        for crop, band, (ncol, nrow) in zip(crops, bands, self.patch_grid.values(), strict=True):
            if crop is None or band is None:
                patch_acc.append(np.zeros((nrow * ncol, 3)))
                patch_w.append(np.zeros(nrow * ncol))
                continue
            by, bx = band
            blur = cv2.blur(crop, (5, 5))
            ssum = blur.sum(axis=2) + 1e-3
            d = np.maximum(np.abs(blur[..., 2] / ssum - self._ref_rg[0]), np.abs(blur[..., 1] / ssum - self._ref_rg[1]))
            w = np.clip((tol - d) / (0.3 * tol), 0.0, 1.0)
            w *= np.clip((self.specular_level - blur.max(axis=2)) / 10.0, 0.0, 1.0)
            w *= np.clip((blur.min(axis=2) - self.dark_level) / 5.0, 0.0, 1.0)
            # patch sums: (rows x H) @ (w * crop) @ (W x cols), two small matrix products
            wc = (w[..., None] * crop).reshape(crop.shape[0], -1)
            pa = np.einsum("rxc,qx->rqc", (by @ wc).reshape(nrow, crop.shape[1], 3), bx)
            pw = by @ w @ bx.T
            patch_acc.append(pa.reshape(-1, 3))
            patch_w.append(pw.reshape(-1))
            acc += pa.sum(axis=(0, 1))
            ws = float(pw.sum())
            w *= by.sum(axis=0)[:, None] * bx.sum(axis=0)[None, :]
            wsum += ws
            area += float(by.sum() * bx.sum())
            if ws > 0:
                rg_acc += ws * np.array([(w * blur[..., 2] / ssum).sum() / ws, (w * blur[..., 1] / ssum).sum() / ws])
        frac = wsum / area if area > 0 else 0.0
        if wsum < 20 or frac < 0.05:
            return SkinSample(np.full(3, np.nan), int(wsum), frac, nan_patches)
        pacc, pw = np.concatenate(patch_acc), np.concatenate(patch_w)
        # a patch with less than a quarter of its fair share of skin is left out (NaN) for this frame
        good = pw >= max(5.0, 0.25 * wsum / self.n_patches)
        patch_bgr = np.where(good[:, None], pacc / np.maximum(pw, 1e-9)[:, None], np.nan)
        # slow adaptation of the face's skin chromaticity (illumination colour drift)
        self._ref_rg = ((1 - self.adapt) * self._ref_rg + self.adapt * rg_acc / wsum).astype(np.float32)
        mean_bgr = acc / wsum
        return SkinSample(mean_bgr[::-1].copy(), int(wsum), frac, patch_bgr[:, ::-1].copy())
