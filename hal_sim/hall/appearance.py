"""What a simulated traveller looks like: height, clothing colours, skin, an optional bag.

Why a palette of saturated and achromatic clothing colours rather than uniform random RGB: real
crowds are dominated by black, grey, white, navy and a few strong colours, which is what makes
cross-camera re-identification hard (many travellers share "dark top, dark trousers"). The
palette below gives that mix, so association accuracy is not flattered by unique colours.

``histograms()`` expresses an appearance in the camera box's descriptor layout ("hue8+grey3/v1",
agent/wire_schema.py: 8 OpenCV-hue bins of chromatic pixels, then dark/mid/light grey bins), as
seen under a given illumination gain; the oracle tracklets of the tests use it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Appearance", "Bag", "random_appearance", "histograms", "CLOTHING_BGR"]

#: (name, BGR) - weights below make dark/neutral clothes the most common.
CLOTHING_BGR: list[tuple[str, tuple[int, int, int]]] = [
    ("black", (25, 25, 25)), ("charcoal", (60, 60, 60)), ("grey", (128, 128, 128)), ("white", (230, 230, 230)),
    ("navy", (90, 35, 20)), ("blue", (200, 110, 30)), ("red", (40, 40, 200)), ("green", (50, 150, 40)),
    ("yellow", (40, 200, 230)), ("beige", (140, 180, 205)), ("brown", (30, 60, 110)), ("purple", (140, 40, 110)),
    ("orange", (20, 120, 240)), ("teal", (140, 130, 20)),
]
_WEIGHTS = np.array([8, 5, 5, 4, 6, 4, 2, 2, 1, 3, 3, 1, 1, 1], float)
SKIN_BGR = [(190, 210, 240), (150, 180, 220), (110, 145, 190), (70, 100, 150), (45, 65, 100)]
BAG_KINDS = ("backpack", "suitcase", "shoulder_bag")


@dataclass(frozen=True)
class Bag:
    kind: str  # "backpack" | "suitcase" | "shoulder_bag"
    bgr: tuple[int, int, int]


@dataclass(frozen=True)
class Appearance:
    height_m: float
    upper_bgr: tuple[int, int, int]
    lower_bgr: tuple[int, int, int]
    skin_bgr: tuple[int, int, int]
    hair_bgr: tuple[int, int, int]
    bag: Bag | None = None

    def with_changes(self, **kw) -> Appearance:
        return replace(self, **kw)

    def to_dict(self) -> dict:
        return {"height_m": round(self.height_m, 3), "upper_bgr": list(self.upper_bgr),
                "lower_bgr": list(self.lower_bgr), "skin_bgr": list(self.skin_bgr), "hair_bgr": list(self.hair_bgr),
                "bag": None if self.bag is None else {"kind": self.bag.kind, "bgr": list(self.bag.bgr)}}

    @classmethod
    def from_dict(cls, d: dict) -> Appearance:
        bag = d.get("bag")
        return cls(float(d["height_m"]), tuple(d["upper_bgr"]), tuple(d["lower_bgr"]), tuple(d["skin_bgr"]),
                   tuple(d["hair_bgr"]), None if bag is None else Bag(bag["kind"], tuple(bag["bgr"])))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    i = rng.choice(len(CLOTHING_BGR), p=_WEIGHTS / _WEIGHTS.sum())
    base = np.array(CLOTHING_BGR[i][1], float)
    return tuple(int(v) for v in np.clip(base * rng.uniform(0.85, 1.15) + rng.normal(0, 6, 3), 0, 255))


def random_appearance(rng: np.random.Generator) -> Appearance:
    """A traveller: adult height N(1.70, 0.09) m clipped to 1.45..2.00, clothing from the palette."""
    height = float(np.clip(rng.normal(1.70, 0.09), 1.45, 2.0))
    upper = _colour(rng)
    lower = _colour(rng)
    skin = SKIN_BGR[int(rng.integers(len(SKIN_BGR)))]
    hair = tuple(int(v) for v in rng.choice([(20, 20, 25), (30, 45, 70), (60, 90, 130), (170, 170, 175)]))
    bag = None
    if rng.random() < 0.7:
        bag = Bag(BAG_KINDS[int(rng.integers(len(BAG_KINDS)))], _colour(rng))
    return Appearance(height, upper, lower, skin, hair, bag)


def _hist_of_bgr(bgr: tuple[int, int, int], gain: float, spread: float, rng: np.random.Generator | None) -> list[float]:
    """hue8+grey3 histogram of a patch of one colour (plus lighting/noise spread), as the camera box bins it."""
    import cv2

    n = 64
    base = np.clip(np.array(bgr, float) * gain, 0, 255)
    pix = np.tile(base, (n, 1))
    if rng is not None and spread > 0:
        pix = np.clip(pix + rng.normal(0, spread, pix.shape), 0, 255)
    hsv = cv2.cvtColor(pix.astype(np.uint8)[None], cv2.COLOR_BGR2HSV)[0].astype(float)
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    chroma = (s >= 60) & (v >= 50)
    hist = np.zeros(11)
    np.add.at(hist, np.minimum((h[chroma] / 180 * 8).astype(int), 7), 1)
    grey = v[~chroma]
    hist[8] += np.sum(grey < 85)
    hist[9] += np.sum((grey >= 85) & (grey <= 170))
    hist[10] += np.sum(grey > 170)
    return (hist / hist.sum()).tolist()


def histograms(app: Appearance, gain: float = 1.0, spread: float = 8.0,
               rng: np.random.Generator | None = None) -> dict:
    """The appearance as a camera box descriptor (head / torso / legs, hue8+grey3/v1) plus height."""
    head = _hist_of_bgr(app.hair_bgr, gain, spread, rng)
    head = [0.5 * a + 0.5 * b for a, b in zip(head, _hist_of_bgr(app.skin_bgr, gain, spread, rng), strict=True)]
    # bag shares of the part's pixels, as rendered (hal_sim/hall/renderer.py): a suitcase beside the
    # legs is about as large as both legs; a backpack covers a third of the torso (from behind)
    share = {"suitcase": 0.45, "backpack": 0.3, "shoulder_bag": 0.15}
    torso = _hist_of_bgr(app.upper_bgr, gain, spread, rng)
    legs = _hist_of_bgr(app.lower_bgr, gain, spread, rng)
    if app.bag is not None:
        w = share.get(app.bag.kind, 0.2)
        bag = _hist_of_bgr(app.bag.bgr, gain, spread, rng)
        if app.bag.kind == "suitcase":
            legs = [(1 - w) * a + w * b for a, b in zip(legs, bag, strict=True)]
        else:
            torso = [(1 - w) * a + w * b for a, b in zip(torso, bag, strict=True)]
    return {"layout": "hue8+grey3/v1", "head": head, "torso": torso, "legs": legs, "height_m": app.height_m}
