"""``cedge localize FILES...``: where the source is, from recorded mobile-survey files.

Reads ANSI N42.42-2012 survey files (:mod:`agent.spectral_files.survey`: one RadMeasurement per
interval with spectrum or gross counts, live time, and a GeographicPoint or a local position), in
one file or several (parts of a drive, several vehicles), and runs the controller's localizer
(:func:`controller.localization.locate`) on the gross counts, with the site model when ``--site``
is given.  When the files hold spectra, the intervals with the highest count-rate excess are summed
and identified (the agent's spectral pipeline) against the intervals without excess, and the
apparent activity follows from the fitted strength: A = k S / Gamma, with S the fitted count rate
at 1 m (unshielded: the cargo the model knows is taken out), k the H*(10) rate per count of the
summed excess spectrum (G(E) weighting), Gamma the nuclide's H*(10) rate constant - an
unshielded-equivalent activity, low when shielding the model does not know (a lead pot) hides it.

The local frame is the site file's origin, else a RelativeLocation's origin, else the first
GeographicPoint (its ground: ElevationValue - ElevationOffsetValue).  Detector height comes from
ElevationOffsetValue (height above ground), else from the elevation, else ``--height-m``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

from agent.geo import LocalFrame
from agent.spectral_files.model import SpectrumFileError
from agent.spectral_files.survey import SurveyInterval, read_surveys
from controller.localization import LocalizationParams, MeasurementSet, Site, locate
from controller.localization.site import SiteError, load_site

__all__ = ["LocalizeError", "localize_files"]

# Linear attenuation of air for the main line (NIST XCOM mass attenuation x 1.205e-3 g/cm3)
MU_AIR_PER_M = {"Cs-137": 0.0093, "Co-60": 0.0068, "Ir-192": 0.0116, "Am-241": 0.0226, "Ba-133": 0.0119,
                "I-131": 0.0115, "Tc-99m": 0.0181, "Ra-226": 0.0101, "Se-75": 0.0128}
FOREGROUND_SHARE = 0.5  # sum the most elevated intervals holding this share of the net counts


class LocalizeError(ValueError):
    """Input that cannot be localized; the message says what is wrong."""


def _frame(ivs: Sequence[SurveyInterval], site: Site | None,
           origin: tuple[float, float, float] | None) -> tuple[LocalFrame | None, str]:
    if origin is not None:
        return LocalFrame(*origin), "--origin"
    if site is not None and site.origin is not None:
        return LocalFrame(*site.origin), f"site {site.name}"
    for iv in ivs:
        if iv.origin is not None:
            return LocalFrame(*iv.origin), "RelativeLocation origin"
    for iv in ivs:
        if iv.lat_deg is not None and iv.lon_deg is not None:
            ground = (iv.alt_m or 0.0) - (iv.height_m or 0.0) if iv.alt_m is not None else 0.0
            return LocalFrame(iv.lat_deg, iv.lon_deg, ground), "first position in the files"
    return None, "local positions only"


def measurement_set(ivs: Sequence[SurveyInterval], frame: LocalFrame | None, detector: str | None,
                    height_m: float | None, gnss_sigma_m: float) -> MeasurementSet:
    n = len(ivs)
    xyz = np.empty((n, 3))
    sig = np.zeros(n)
    for i, iv in enumerate(ivs):
        if iv.local_xyz_m is not None and iv.lat_deg is None:
            xyz[i] = iv.local_xyz_m
            continue
        assert frame is not None and iv.lat_deg is not None and iv.lon_deg is not None
        e, nn, up = frame.to_enu(iv.lat_deg, iv.lon_deg, iv.alt_m if iv.alt_m is not None else frame.alt0_m)
        if iv.height_m is not None:
            z = iv.height_m
        elif iv.alt_m is not None:
            z = up
        elif height_m is not None:
            z = height_m
        else:
            raise LocalizeError(f"{iv.source}: interval at {iv.start_utc.isoformat()} has no height "
                                "(no ElevationOffsetValue or ElevationValue): give --height-m")
        xyz[i] = (e, nn, z)
        sig[i] = gnss_sigma_m
    ats = {iv.position_at for iv in ivs}
    if len(ats) > 1:
        raise LocalizeError(f"the files disagree on where in the interval the position was taken: {sorted(ats)}")
    t = np.array([iv.start_utc.astimezone(UTC).timestamp() for iv in ivs])
    real = np.array([iv.real_time_s for iv in ivs])
    shift = {"start": 0.0, "mid": 0.5, "end": 1.0}[ivs[0].position_at]
    channel = [(iv.instrument, iv.detector, detector or iv.detector_model) for iv in ivs]
    return MeasurementSet.from_track(t + shift * real, xyz, np.array([iv.live_time_s for iv in ivs]),
                                     np.array([iv.gross_counts for iv in ivs]), channel, interval_s=real,
                                     position_at=ivs[0].position_at, position_sigma_m=sig)


def _identify(ivs: Sequence[SurveyInterval], ms: MeasurementSet, detector: str | None) -> dict[str, Any] | None:
    """Sum the most elevated intervals and identify them against the flat ones (spectra needed)."""
    spec_idx = [i for i, iv in enumerate(ivs) if iv.spectrum is not None and iv.calibration is not None]
    if len(spec_idx) < 10:
        return None
    n_ch = {ivs[i].spectrum.size for i in spec_idx}  # type: ignore[union-attr]
    if len(n_ch) != 1:
        return None
    from agent.hal.interfaces import SpectrumReading
    from agent.spectral.detector import detector_model
    from agent.spectral.pipeline import SpectrumPipeline

    idx = np.array(spec_idx)
    rate = ms.counts[idx] / ms.live_time_s[idx]
    b = float(np.median(rate))
    excess = (rate - b) * ms.live_time_s[idx]
    sigma = np.sqrt(np.maximum(b * ms.live_time_s[idx], 1.0))
    order = np.argsort(-excess)
    pos = excess[order] > 3 * sigma[order]
    if not pos.any():
        return {"nuclides": [], "note": "no interval above 3 sigma: nothing to identify"}
    cum = np.cumsum(np.where(pos, excess[order], 0.0))
    n_fg = int(np.searchsorted(cum, FOREGROUND_SHARE * cum[-1]) + 1)
    fg = idx[order[:max(n_fg, 1)]]
    bg = idx[np.abs(excess) < 2.0 * sigma]
    if len(bg) < 5:  # a short drive near a strong source: its least elevated third
        bg = idx[np.argsort(rate)[: max(5, len(idx) // 3)]]
        bg = np.setdiff1d(bg, fg)
    if len(bg) < 3:
        return {"nuclides": [], "note": "too few intervals without excess for a background"}
    first = ivs[int(fg[0])]
    model = detector_model(detector or first.detector_model).name

    def summed(rows: np.ndarray) -> SpectrumReading:
        counts = np.sum([ivs[int(i)].spectrum for i in rows], axis=0)
        live = float(sum(ivs[int(i)].live_time_s for i in rows))
        return SpectrumReading(counts=np.rint(counts).astype(np.int64), live_time_s=live, real_time_s=live,
                               calibration=first.calibration, t_utc=first.start_utc, t_mono_s=0.0,  # type: ignore[arg-type]
                               detector_model=model)

    fg_r, bg_r = summed(fg), summed(bg)
    analysis = SpectrumPipeline(min_background_s=min(30.0, bg_r.live_time_s)).analyze(fg_r, bg_r)
    net_cps = fg_r.counts.sum() / fg_r.live_time_s - bg_r.counts.sum() / bg_r.live_time_s
    return {
        "nuclides": [{"name": n.name, "confidence": n.confidence, "significance": n.significance}
                     for n in analysis.identification.nuclides],
        "detector_model": model,
        "foreground_intervals": len(fg),
        "background_intervals": len(bg),
        "net_dose_rate_usv_h": analysis.net_dose_rate_usv_h,
        "net_cps": float(net_cps),
    }


def _gamma_constant(nuclide: str) -> float | None:
    from agent.spectral.library import read_data_csv

    for r in read_data_csv("dose_rate_constants.csv"):
        if r["source"] == nuclide:
            return float(r["hstar10_rate_constant_uSv_m2_per_MBq_h"])
    return None


def localize_files(paths: Sequence[str | Path], site_path: str | Path | None = None, detector: str | None = None,
                   position_at: str = "mid", height_m: float | None = None, gnss_sigma_m: float = 1.0,
                   origin: tuple[float, float, float] | None = None) -> dict[str, Any]:
    """Everything ``cedge localize`` prints, as one dict (raises LocalizeError / SpectrumFileError / SiteError)."""
    if not paths:
        raise LocalizeError("no survey file given")
    site = load_site(site_path) if site_path else None
    ivs = read_surveys(paths, position_at)  # type: ignore[arg-type]
    frame, frame_note = _frame(ivs, site, origin)
    ms = measurement_set(ivs, frame, detector, height_m, gnss_sigma_m)
    ident = _identify(ivs, ms, detector)
    nuclide = None
    if ident and ident.get("nuclides"):
        nuclide = ident["nuclides"][0]["name"]
    mu_air = MU_AIR_PER_M.get(nuclide or "", 0.0093)
    params = LocalizationParams(site=site, mu_air_per_m=mu_air)
    res = locate(ms, params)
    sources = []
    for e in res.sources:
        d = e.to_dict()
        d.pop("candidates", None)
        if frame is not None:
            lat, lon, alt = frame.to_geodetic(e.x_m, e.y_m, e.z_m)
            d.update(lat_deg=lat, lon_deg=lon, alt_m=alt)
        d["nuclide"] = nuclide
        d["apparent_activity_mbq"] = None
        if nuclide and ident and ident.get("net_dose_rate_usv_h") and ident.get("net_cps", 0) > 0:
            gamma = _gamma_constant(nuclide)
            if gamma:
                k = ident["net_dose_rate_usv_h"] / ident["net_cps"]
                d["apparent_activity_mbq"] = k * e.strength / gamma
        sources.append(d)
    return {
        "files": [str(p) for p in paths],
        "intervals": len(ivs),
        "units": list(ms.unit_names),
        "detectors": list(ms.detector_names),
        "site": site.name if site else None,
        "frame_origin": (None if frame is None else
                         {"lat_deg": frame.lat0_deg, "lon_deg": frame.lon0_deg, "alt_m": frame.alt0_m,
                          "from": frame_note}),
        "mu_air_per_m": mu_air,
        "n_sources": res.n_sources,
        "decision": res.reason,
        "statistic_1": res.statistic_1,
        "statistic_2": res.statistic_2,
        "sources": sources,
        "identification": ident,
        "elapsed_ms": res.elapsed_ms,
    }


def format_text(out: dict[str, Any]) -> list[str]:
    lines = [f"{out['intervals']} intervals from {len(out['files'])} file(s); units {', '.join(out['units'])}; "
             f"site {out['site'] or 'none (free space)'}", f"decision: {out['decision']}"]
    ident = out.get("identification") or {}
    if ident.get("nuclides"):
        lines.append("nuclides: " + ", ".join(f"{n['name']} ({n['confidence']:.0%})" for n in ident["nuclides"]))
    for k, s in enumerate(out["sources"], start=1):
        lines.append(f"source {k}: x {s['x_m']:.2f} m, y {s['y_m']:.2f} m, z {s['z_m']:.2f} m"
                     + (f" (lat {s['lat_deg']:.7f}, lon {s['lon_deg']:.7f})" if "lat_deg" in s else ""))
        lines.append(f"  sigma x {s['sigma_x_m']:.2f} m, y {s['sigma_y_m']:.2f} m; 95 % ellipse "
                     f"{s['region_95']['major_m']:.2f} x {s['region_95']['minor_m']:.2f} m at "
                     f"{s['region_95']['angle_deg']:.0f} deg; {s['height_note']}")
        cov = np.asarray(s["cov"])[:3, :3]
        lines.append("  covariance xyz (m2): " + "; ".join(" ".join(f"{v:.3g}" for v in row) for row in cov))
        act = s.get("apparent_activity_mbq")
        lines.append(f"  container {s.get('column') or '-'}; nuclide {s.get('nuclide') or 'not identified'}; "
                     f"apparent activity {f'{act:.3g} MBq' if act is not None else 'n/a'}; "
                     f"strength {s['strength']:.4g} cps at 1 m")
    return lines


def run_cli(files: list[Path], site: Path | None, detector: str | None, json_out: bool, position_at: str,
            height_m: float | None, gnss_sigma_m: float) -> int:
    import json

    from agent.cli_output import fail

    if position_at not in ("mid", "end", "start"):
        fail(f"--position-at must be mid, end or start, not {position_at!r}", 2)
    if detector is not None:
        from agent.spectral.detector import detector_model, detector_models
        from agent.spectral.library import LibraryError

        try:
            detector = detector_model(detector, fallback=None).name
        except LibraryError:
            fail(f"unknown detector model {detector!r}; valid: {', '.join(detector_models())}", 2)
    try:
        out = localize_files(files, site, detector, position_at, height_m, gnss_sigma_m)
    except (LocalizeError, SpectrumFileError, SiteError, ValueError) as err:
        fail(err, 1)
    if json_out:
        print(json.dumps(_jsonable(out), default=float))
    else:
        print("\n".join(format_text(out)))
    return 0


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v

