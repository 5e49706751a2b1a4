"""An incident's count data as mobile-survey files (N42.42-2012), one per unit.

Why: the data a localization was made from should leave the controller in the format the field's
tools read (InterSpec, vendor software, ``cedge localize``), so that a reach-back analyst can
repeat or check it.  Rows are the ones the dispatcher fuses (``Store.measurements_near`` around the
incident's alarms, same radius and time margin); each becomes one RadMeasurement with its
spectrum when the unit sent one (else GrossCounts), its live time, and its position - latitude,
longitude, elevation, and the detector's height above the site ground as ElevationOffsetValue -
taken at the interval's middle (as the agent reports it; the file says so).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from agent.hal.interfaces import EnergyCalibration
from agent.spectral_files.survey import SurveyInterval, write_survey
from controller.config import LocalizationConfig
from controller.store import Store

__all__ = ["ExportError", "export_incident"]


class ExportError(ValueError):
    """The incident cannot be exported; the message says why."""


def _json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str | bytes) else v


def _interval(r: dict[str, Any]) -> SurveyInterval:
    real = float(r.get("interval_s") or r["live_time_s"])
    end = datetime.fromtimestamp(float(r["t_epoch_s"]), UTC)
    spectrum = cal = None
    if r.get("spectrum"):
        # the store decodes its JSON columns; a raw row (str) is decoded here
        spectrum = np.asarray(_json(r["spectrum"]), dtype=float)
        coeffs = _json(r["energy_calibration_kev"]) if r.get("energy_calibration_kev") else None
        if coeffs:
            cal = EnergyCalibration(tuple(float(c) for c in coeffs))
        else:
            spectrum = None
    counts = r.get("gross_counts")
    if counts is None:
        counts = float(r["gross_cps"]) * float(r["live_time_s"])
    return SurveyInterval(
        start_utc=end - timedelta(seconds=real), real_time_s=real, live_time_s=float(r["live_time_s"]),
        gross_counts=float(counts), detector=str(r.get("detector_model") or "detector"),
        detector_model=str(r.get("detector_model") or "unknown"), instrument=str(r["unit_id"]),
        spectrum=spectrum, calibration=cal, lat_deg=r.get("lat_deg"), lon_deg=r.get("lon_deg"),
        alt_m=r.get("alt_m"), height_m=r.get("z_m"), position_at="mid", dose_rate_usv_h=r.get("dose_rate_usv_h"))


def export_incident(store: Store, incident_id: str, out_dir: str | Path,
                    config: LocalizationConfig | None = None) -> list[Path]:
    """Write ``<incident>_<unit>.n42`` per unit into ``out_dir``; returns the paths."""
    lc = config or LocalizationConfig()
    inc = store.get_incident(incident_id)
    if inc is None:
        raise ExportError(f"no incident {incident_id!r}")
    if not inc.get("alarms"):
        raise ExportError(f"incident {incident_id} has no alarms")
    rows = store.measurements_near(inc["center_x_m"], inc["center_y_m"], lc.search_radius_m,
                                   inc["first_alarm_epoch_s"] - lc.time_margin_s,
                                   inc["last_alarm_epoch_s"] + lc.time_margin_s)
    rows = [r for r in rows if r.get("lat_deg") is not None and r.get("t_epoch_s") is not None
            and r.get("live_time_s")]
    if not rows:
        raise ExportError(f"incident {incident_id}: no positioned measurements near its alarms")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_unit: dict[str, list[SurveyInterval]] = {}
    for r in rows:
        by_unit.setdefault(str(r["unit_id"]), []).append(_interval(r))
    paths = []
    for unit, ivs in sorted(by_unit.items()):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{incident_id}_{unit}")
        paths.append(write_survey(sorted(ivs, key=lambda iv: iv.start_utc), out / f"{safe}.n42"))
    return paths
