"""The site plan the console draws under the map: container rows, bays and stack heights, and the
site's own background image, all in local metres.

Why from the localization's site file (configs/sites/*.yaml, controller.localization.site): the
operator sees the same yard the estimate was searched in, so an estimate "in bay B-6, tier 2" can be
checked against the drawing.  The background image (an aerial photo or CAD export the site supplies)
is served by the console itself - nothing is fetched from a tile server - and placed by the local
coordinates of its edges, given in the config (``web.site_image_bounds_m``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.config import WebConfig

__all__ = ["SitePlanError", "image_media_type", "load_site_plan"]

MAX_IMAGE_BYTES = 20 * 2**20
_MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


class SitePlanError(ValueError):
    """The site file or image cannot be used; the message names it and why."""


def image_media_type(path: str) -> str:
    media = _MEDIA.get(Path(path).suffix.lower())
    if media is None:
        raise SitePlanError(f"web.site_image_file {path}: use a .png, .jpg or .webp image")
    return media


def load_site_plan(config: WebConfig) -> dict[str, Any]:
    """``{"name", "columns": [{label, row, x0_m, y0_m, x1_m, y1_m, tiers, top_m}], "image": {...} | None}``."""
    plan: dict[str, Any] = {"name": None, "columns": [], "image": None}
    if config.site_file:
        from controller.localization.site import SiteError, load_site

        try:
            site = load_site(config.site_file)
        except SiteError as err:
            raise SitePlanError(str(err)) from err
        plan["name"] = site.name
        plan["columns"] = [{"label": c.label, "row": c.label.split("-")[0], "x0_m": c.lo[0], "y0_m": c.lo[1],
                            "x1_m": c.hi[0], "y1_m": c.hi[1], "tiers": c.tiers, "top_m": c.hi[2]}
                           for c in site.columns]
    if config.site_image_file and config.site_image_bounds_m:
        path = Path(config.site_image_file)
        image_media_type(str(path))
        try:
            size = path.stat().st_size
        except OSError as err:
            raise SitePlanError(f"web.site_image_file {path}: {err.strerror}") from err
        if size > MAX_IMAGE_BYTES:
            raise SitePlanError(f"web.site_image_file {path}: {size} bytes is over {MAX_IMAGE_BYTES}")
        x0, y0, x1, y1 = config.site_image_bounds_m
        plan["image"] = {"url": "/api/site/image", "x0_m": x0, "y0_m": y0, "x1_m": x1, "y1_m": y1}
    return plan
