"""Mobile-survey files: ANSI N42.42-2012 with one RadMeasurement per acquisition interval and a position.

Why a reader of its own: :mod:`agent.spectral_files.n42` reads spectra for *analysis* (summing the
foreground); a drive is a time series where each interval's time, live time and position matter.
What the field's survey instruments write, and what this module reads, per RadMeasurement:

* ``StartDateTime`` and ``RealTimeDuration`` (required by the schema, and here: without times
  passes cannot be told apart and the path of each interval is unknown);
* per detector a ``Spectrum`` (with ``LiveTimeDuration``) or a ``GrossCounts`` (``CountData``);
* the position, in ``RadInstrumentState/StateVector`` (the vehicle) and optionally
  ``RadDetectorState/StateVector`` per detector (a mast with detectors at two heights), each as a
  ``GeographicPoint`` (latitude, longitude, optional ``ElevationValue`` and ``ElevationOffsetValue``
  = height above the ground, N42.42-2012 sec. 9.x) or a ``RelativeLocation`` (azimuth from north,
  inclination, distance, from an ``Origin`` whose GeographicPoint is the site origin): a local
  east-north-up position;
* where in the interval the position was taken is not fixed by the standard; the writer here puts
  it at the interval's middle and says so in the measurement's ``Remark`` (``position_at=mid``),
  and the reader takes the remark, else the caller's ``position_at`` (default ``mid``).

The writer produces files valid against the NIST N42.42-2012 schema (tests validate them); the
reader refuses (``SpectrumFileError``, naming file and measurement) a measurement without time,
counts or position rather than guessing.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from lxml import etree

from agent.hal.interfaces import EnergyCalibration, utc_iso
from agent.spectral_files.limits import check_channels, check_counts, check_duration, malformed_values, read_capped
from agent.spectral_files.model import SpectrumFileError
from agent.spectral_files.n42 import (
    N42_NS,
    _calibration,
    _child,
    _children,
    _local,
    _numbers,
    _text,
    compress_counted_zeroes,
    expand_counted_zeroes,
    file_coefficients,
    format_duration,
    parse_datetime_utc,
    parse_duration_s,
    parse_xml,
)
from agent.spectral_files.n42_names import schema_safe_name

__all__ = ["SurveyInterval", "read_survey", "read_surveys", "write_survey"]

PositionAt = Literal["mid", "end", "start"]
_XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_POS_REMARK = re.compile(r"position_at=(mid|end|start)")


@dataclass(frozen=True)
class SurveyInterval:
    """One detector's data for one interval, with the detector's position."""

    start_utc: datetime
    real_time_s: float
    live_time_s: float
    gross_counts: float
    detector: str  # detector name within the instrument ("top", "bottom", or the model)
    detector_model: str
    instrument: str  # the vehicle / instrument (its serial, else its model)
    spectrum: np.ndarray | None = None
    calibration: EnergyCalibration | None = None
    lat_deg: float | None = None
    lon_deg: float | None = None
    alt_m: float | None = None  # ElevationValue (datum elevation)
    height_m: float | None = None  # ElevationOffsetValue: height above the ground
    local_xyz_m: tuple[float, float, float] | None = None  # from a RelativeLocation
    origin: tuple[float, float, float] | None = None  # the RelativeLocation's origin (lat, lon, alt)
    position_at: PositionAt = "mid"
    dose_rate_usv_h: float | None = None
    source: str = ""

    @property
    def position_time_utc(self) -> datetime:
        shift = {"start": 0.0, "mid": 0.5, "end": 1.0}[self.position_at]
        return self.start_utc + timedelta(seconds=shift * self.real_time_s)


# --------------------------------------------------------------------------- reader
def _float(el: etree._Element | None, name: str) -> float | None:
    if el is None:
        return None
    v = _text(el, name)
    return float(v) if v not in (None, "") else None


def _position(sv: etree._Element | None) -> dict[str, object]:
    """Fields of a StateVector: geographic point or relative (local) location."""
    if sv is None:
        return {}
    gp = _child(sv, "GeographicPoint")
    if gp is not None:
        lat, lon = _float(gp, "LatitudeValue"), _float(gp, "LongitudeValue")
        if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise SpectrumFileError("GeographicPoint without a valid latitude/longitude")
        return {"lat_deg": lat, "lon_deg": lon, "alt_m": _float(gp, "ElevationValue"),
                "height_m": _float(gp, "ElevationOffsetValue")}
    rl = _child(sv, "RelativeLocation")
    if rl is not None:
        az = _float(rl, "RelativeLocationAzimuthValue")
        inc = _float(rl, "RelativeLocationInclinationValue") or 0.0
        dist = _float(rl, "DistanceValue")
        if az is None or dist is None:
            raise SpectrumFileError("RelativeLocation needs an azimuth and a distance")
        a, i = math.radians(az), math.radians(inc)
        xyz = (dist * math.cos(i) * math.sin(a), dist * math.cos(i) * math.cos(a), dist * math.sin(i))
        origin = None
        org = _child(rl, "Origin")
        gp = _child(org, "GeographicPoint") if org is not None else None
        if gp is not None:
            olat, olon = _float(gp, "LatitudeValue"), _float(gp, "LongitudeValue")
            if olat is not None and olon is not None:
                origin = (olat, olon, _float(gp, "ElevationValue") or 0.0)
        return {"local_xyz_m": xyz, "origin": origin}
    return {}


def parse_survey(data: bytes, source: str = "<bytes>", position_at: PositionAt = "mid") -> list[SurveyInterval]:
    """All intervals of one N42.42-2012 survey file (several detectors: one interval each)."""
    with malformed_values(source):
        return _parse(data, source, position_at)


def _parse(data: bytes, source: str, position_at: PositionAt) -> list[SurveyInterval]:
    root = parse_xml(data, source)
    if _local(root) != "RadInstrumentData":
        raise SpectrumFileError(f"{source}: root element is {_local(root)!r}, not N42.42-2012 RadInstrumentData")
    info = _child(root, "RadInstrumentInformation")
    instrument = "instrument"
    if info is not None:
        instrument = _text(info, "RadInstrumentIdentifier") or _text(info, "RadInstrumentModelName") or instrument
    detectors = {d.get("id"): d for d in _children(root, "RadDetectorInformation")}
    calibrations = {c.get("id"): c for c in _children(root, "EnergyCalibration")}
    out: list[SurveyInterval] = []
    for n, rm in enumerate(_children(root, "RadMeasurement"), start=1):
        where = f"{source}: RadMeasurement {rm.get('id') or n}"
        start_text = _text(rm, "StartDateTime")
        real_text = _text(rm, "RealTimeDuration")
        if not start_text or not real_text:
            raise SpectrumFileError(f"{where}: StartDateTime and RealTimeDuration are required (no times, no track)")
        start = parse_datetime_utc(start_text)
        real = check_duration(parse_duration_s(real_text), source, "RealTimeDuration")
        if real <= 0:
            raise SpectrumFileError(f"{where}: RealTimeDuration must be > 0")
        remark = " ".join(r.text.strip() for r in _children(rm, "Remark") if r.text)
        m = _POS_REMARK.search(remark)
        at: PositionAt = m.group(1) if m else position_at  # type: ignore[assignment]
        inst_state = _child(rm, "RadInstrumentState")
        try:
            inst_pos = _position(_child(inst_state, "StateVector") if inst_state is not None else None)
            det_pos = {ds.get("radDetectorInformationReference"): _position(_child(ds, "StateVector"))
                       for ds in _children(rm, "RadDetectorState")}
        except SpectrumFileError as err:
            raise SpectrumFileError(f"{where}: {err}") from err
        doses = [float(v) for d in _children(rm, "DoseRate") if (v := _text(d, "DoseRateValue")) is not None]
        blocks = [(el, True) for el in _children(rm, "Spectrum")] + [(el, False) for el in _children(rm, "GrossCounts")]
        if not blocks:
            raise SpectrumFileError(f"{where}: no Spectrum or GrossCounts")
        for el, is_spec in blocks:
            det_ref = el.get("radDetectorInformationReference")
            det_el = detectors.get(det_ref)
            det_name = (_text(det_el, "RadDetectorName") if det_el is not None else None) or det_ref or "detector"
            model = (_text(det_el, "RadDetectorDescription") if det_el is not None else None) or det_name
            live_text = _text(el, "LiveTimeDuration")
            live = check_duration(parse_duration_s(live_text), source, "LiveTimeDuration") if live_text else real
            if not 0 < live <= real * (1 + 1e-6):
                raise SpectrumFileError(f"{where}: live time {live} s must be > 0 and <= the real time {real} s")
            spec = cal = None
            if is_spec:
                cd = _child(el, "ChannelData")
                if cd is None:
                    raise SpectrumFileError(f"{where}: Spectrum without ChannelData")
                values = _numbers(cd.text)
                if (cd.get("compressionCode") or "None") == "CountedZeroes":
                    values = expand_counted_zeroes(values, source)
                check_channels(values.size, source)
                if values.size == 0:
                    raise SpectrumFileError(f"{where}: empty ChannelData")
                check_counts(values, source)
                spec = values
                gross = float(values.sum())
                ref = el.get("energyCalibrationReference")
                if ref in calibrations:
                    cal = _calibration(calibrations[ref], values.size)
            else:
                counts = _numbers(_text(el, "CountData"))
                if counts.size == 0:
                    raise SpectrumFileError(f"{where}: GrossCounts without CountData")
                check_counts(counts, source)
                gross = float(counts.sum())
            pos = det_pos.get(det_ref) or inst_pos
            if not pos:
                raise SpectrumFileError(f"{where}: detector {det_name!r} has no position "
                                        "(RadInstrumentState or RadDetectorState StateVector)")
            out.append(SurveyInterval(
                start_utc=start, real_time_s=real, live_time_s=live, gross_counts=gross, detector=det_name,
                detector_model=model, instrument=instrument, spectrum=spec, calibration=cal, position_at=at,
                dose_rate_usv_h=doses[0] if doses else None, source=source, **pos))  # type: ignore[arg-type]
    if not out:
        raise SpectrumFileError(f"{source}: no RadMeasurement")
    return out


def read_survey(path: str | Path, position_at: PositionAt = "mid") -> list[SurveyInterval]:
    return parse_survey(read_capped(path, str(path)), str(path), position_at)


def read_surveys(paths: Iterable[str | Path], position_at: PositionAt = "mid") -> list[SurveyInterval]:
    """Several files (one drive split in parts, or several vehicles), in time order."""
    out: list[SurveyInterval] = []
    for p in paths:
        out.extend(read_survey(p, position_at))
    out.sort(key=lambda iv: (iv.start_utc, iv.instrument, iv.detector))
    return out


# --------------------------------------------------------------------------- writer
def _el(parent: etree._Element, name: str, text: str | None = None, **attrs: str) -> etree._Element:
    e = etree.SubElement(parent, f"{{{N42_NS}}}{name}", {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        e.text = text
    return e


def _state_vector(parent: etree._Element, iv: SurveyInterval) -> None:
    sv = _el(parent, "StateVector")
    if iv.local_xyz_m is not None and iv.lat_deg is None:
        x, y, z = iv.local_xyz_m
        dist = math.sqrt(x * x + y * y + z * z)
        rl = _el(sv, "RelativeLocation")
        _el(rl, "RelativeLocationAzimuthValue", f"{math.degrees(math.atan2(x, y)):.9f}")
        _el(rl, "RelativeLocationInclinationValue", f"{math.degrees(math.asin(z / dist)) if dist > 0 else 0.0:.9f}")
        _el(rl, "DistanceValue", f"{dist:.6f}")
        org = _el(rl, "Origin")
        if iv.origin is not None:
            gp = _el(org, "GeographicPoint")
            _el(gp, "LatitudeValue", f"{iv.origin[0]:.9f}")
            _el(gp, "LongitudeValue", f"{iv.origin[1]:.9f}")
            _el(gp, "ElevationValue", f"{iv.origin[2]:.3f}")
        else:
            _el(org, "OriginDescription", "site origin")
        return
    if iv.lat_deg is None or iv.lon_deg is None:
        raise SpectrumFileError("every interval needs a geographic or a local position")
    gp = _el(sv, "GeographicPoint")
    _el(gp, "LatitudeValue", f"{iv.lat_deg:.9f}")
    _el(gp, "LongitudeValue", f"{iv.lon_deg:.9f}")
    if iv.alt_m is not None:
        _el(gp, "ElevationValue", f"{iv.alt_m:.3f}")
    if iv.height_m is not None:
        _el(gp, "ElevationOffsetValue", f"{iv.height_m:.3f}")


def build_survey(intervals: Sequence[SurveyInterval], creator: str = "customs-edge") -> etree._ElementTree:
    """An N42.42-2012 document: intervals with the same start time and instrument share one
    RadMeasurement (one Spectrum/GrossCounts and one RadDetectorState per detector)."""
    if not intervals:
        raise SpectrumFileError("cannot write a survey without intervals")
    instruments = {iv.instrument for iv in intervals}
    if len(instruments) > 1:  # N42: one file, one RadInstrumentInformation
        raise SpectrumFileError(f"one survey file holds one instrument, not {sorted(instruments)}: write one per unit")
    root = etree.Element(f"{{{N42_NS}}}RadInstrumentData", nsmap={None: N42_NS, "xsi": _XSI_NS})
    root.set("n42DocUUID", str(uuid.uuid4()))
    _el(root, "RadInstrumentDataCreatorName", schema_safe_name(creator, "customs-edge"))
    info = _el(root, "RadInstrumentInformation", id="rii-1")
    _el(info, "RadInstrumentManufacturerName", "customs-edge")
    _el(info, "RadInstrumentIdentifier", schema_safe_name(intervals[0].instrument))
    _el(info, "RadInstrumentModelName", "mobile survey unit")
    _el(info, "RadInstrumentClassCode", "Radionuclide Identifier")
    v = _el(info, "RadInstrumentVersion")
    _el(v, "RadInstrumentComponentName", "Software")
    _el(v, "RadInstrumentComponentVersion", "customs-edge")
    det_ids: dict[str, str] = {}
    for iv in intervals:
        if iv.detector in det_ids:
            continue
        det_ids[iv.detector] = f"det-{len(det_ids) + 1}"
        det = _el(root, "RadDetectorInformation", id=det_ids[iv.detector])
        _el(det, "RadDetectorName", schema_safe_name(iv.detector))
        _el(det, "RadDetectorCategoryCode", "Gamma")
        low = iv.detector_model.lower()
        kind = next((k for k in ("NaI", "CsI", "LaBr3", "HPGe", "CZT") if k.lower() in low), "Other")
        _el(det, "RadDetectorKindCode", kind)
        _el(det, "RadDetectorDescription", iv.detector_model)
    cal_ids: dict[tuple[float, ...], str] = {}
    for iv in intervals:
        if iv.spectrum is not None and iv.calibration is not None:
            key = file_coefficients(iv.calibration)
            if key not in cal_ids:
                cal_ids[key] = f"ec-{len(cal_ids) + 1}"
                ec = _el(root, "EnergyCalibration", id=cal_ids[key])
                padded = (*key, *([0.0] * max(0, 3 - len(key))))  # the schema wants 3 or 4 coefficients
                _el(ec, "CoefficientValues", " ".join(repr(c) for c in padded))
    groups: dict[tuple[datetime, str], list[SurveyInterval]] = {}
    for iv in intervals:
        groups.setdefault((iv.start_utc, iv.instrument), []).append(iv)
    for n, ((start, _inst), ivs) in enumerate(sorted(groups.items(), key=lambda kv: kv[0][0]), start=1):
        rm_id = f"rm-{n}"
        rm = _el(root, "RadMeasurement", id=rm_id)
        _el(rm, "Remark", f"position_at={ivs[0].position_at}")
        _el(rm, "MeasurementClassCode", "Foreground")
        _el(rm, "StartDateTime", utc_iso(start))
        _el(rm, "RealTimeDuration", format_duration(ivs[0].real_time_s))
        for k, iv in enumerate(ivs):
            if iv.spectrum is not None and iv.calibration is not None:
                sp = _el(rm, "Spectrum", id=f"{rm_id}-sp{k}",
                         energyCalibrationReference=cal_ids[file_coefficients(iv.calibration)],
                         radDetectorInformationReference=det_ids[iv.detector])
                _el(sp, "LiveTimeDuration", format_duration(iv.live_time_s))
                counts = np.asarray(iv.spectrum)
                if counts.ndim != 1 or np.any(counts < 0) or not np.all(np.isfinite(counts)):
                    raise SpectrumFileError(f"interval at {utc_iso(start)}: spectrum must be finite counts >= 0")
                _el(sp, "ChannelData", " ".join(compress_counted_zeroes(counts)), compressionCode="CountedZeroes")
        for k, iv in enumerate(ivs):
            if iv.spectrum is None or iv.calibration is None:
                gc = _el(rm, "GrossCounts", id=f"{rm_id}-gc{k}", radDetectorInformationReference=det_ids[iv.detector])
                _el(gc, "LiveTimeDuration", format_duration(iv.live_time_s))
                _el(gc, "CountData", f"{iv.gross_counts:.0f}")
        for k, iv in enumerate(ivs):
            if iv.dose_rate_usv_h is not None:
                dr = _el(rm, "DoseRate", id=f"{rm_id}-dr{k}", radDetectorInformationReference=det_ids[iv.detector])
                _el(dr, "DoseRateValue", f"{max(iv.dose_rate_usv_h, 0.0):.6g}")
        # one position per detector: the vehicle's own when all detectors share it
        same = len({(i.lat_deg, i.lon_deg, i.alt_m, i.height_m, i.local_xyz_m) for i in ivs}) == 1
        if same:
            st = _el(rm, "RadInstrumentState", radInstrumentInformationReference="rii-1")
            _state_vector(st, ivs[0])
        else:
            for iv in ivs:
                ds = _el(rm, "RadDetectorState", radDetectorInformationReference=det_ids[iv.detector])
                _state_vector(ds, iv)
    return etree.ElementTree(root)


def write_survey(intervals: Sequence[SurveyInterval], path: str | Path, creator: str = "customs-edge") -> Path:
    p = Path(path)
    data = etree.tostring(build_survey(intervals, creator), xml_declaration=True, encoding="UTF-8",
                          pretty_print=True)
    try:
        p.write_bytes(data)
    except OSError as err:
        raise SpectrumFileError(f"{p}: cannot write: {err.strerror}") from err
    return p
