"""ANSI N42.42-2006 reader: the ``N42InstrumentData`` layout of portal monitors and older handhelds.

Why a native reader beside SpecUtils: units on Linux aarch64 have no SpecUtils wheel, and the
2006 layout is still what many portal monitors, older handhelds and the RASE base-spectrum sets
(LLNL) write. The 2006 standard nests spectra more freely than 2012: a ``Spectrum`` may sit
directly in ``Measurement``, or in ``DetectorData/DetectorMeasurement/SpectrumMeasurement``;
vendors add elements of their own (RASE adds ``RASE_Sensitivity``). So the reader finds every
``Spectrum`` with ``ChannelData`` wherever it is, and takes its times, calibration and role from
the spectrum or its nearest ancestor that has them.

Roles: ``<Spectrum Type="PHA">``, a ``SourceType``/``MeasurementClassCode`` element or a ``Background``
word in the detector name or id decides Foreground/Background. The calibration polynomial is in
the same convention as the 2012 files (see :mod:`agent.spectral_files.n42`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from lxml import etree

from agent.hal.interfaces import EnergyCalibration, SpectrumReading
from agent.spectral_files.limits import check_channels, check_counts, check_duration
from agent.spectral_files.model import (
    InstrumentInfo,
    SpectrumFile,
    SpectrumFileError,
    SpectrumMeasurement,
)
from agent.spectral_files.n42 import (
    _local,
    expand_counted_zeroes,
    file_calibration,
    parse_datetime_utc,
    parse_duration_s,
)

_ROLE_WORDS = {"background": "Background", "foreground": "Foreground", "item": "Foreground",
               "calibration": "Calibration", "intrinsicactivity": "IntrinsicActivity"}




def _find(el: etree._Element, name: str) -> etree._Element | None:
    """First descendant-or-self element with this local name."""
    for c in el.iter():
        if _local(c) == name:
            return c
    return None


def _up_text(el: etree._Element, name: str) -> str | None:
    """Text of the ``name`` child of ``el`` or of its nearest ancestor that has one."""
    node: etree._Element | None = el
    while node is not None:
        for c in node:
            if _local(c) == name and c.text and c.text.strip():
                return c.text.strip()
        node = node.getparent()
    return None


def _seconds(text: str | None, source: str, what: str) -> float | None:
    if text is None:
        return None
    t = text.strip()
    try:
        return parse_duration_s(t) if t.upper().startswith(("P", "-P")) else float(t)
    except (SpectrumFileError, ValueError) as err:
        raise SpectrumFileError(f"{source}: bad {what} {t[:40]!r}") from err


def _calibration(sp: etree._Element, source: str) -> EnergyCalibration:
    node: etree._Element | None = sp
    while node is not None:
        for cal in node:
            if _local(cal) != "Calibration" or (cal.get("Type") or "Energy").lower() != "energy":
                continue
            coeffs = _find(cal, "Coefficients")
            if coeffs is not None and coeffs.text and coeffs.text.split():
                try:
                    values = [float(v) for v in coeffs.text.split()]
                except ValueError as err:
                    raise SpectrumFileError(f"{source}: non-numeric calibration {coeffs.text[:40]!r}") from err
                return file_calibration(values)
        node = node.getparent()
    raise SpectrumFileError(f"{source}: spectrum has no energy calibration")


def _role(sp: etree._Element) -> str:
    for name in ("SourceType", "MeasurementClassCode", "SpectrumType"):
        text = _up_text(sp, name)
        if text and text.replace(" ", "").lower() in _ROLE_WORDS:
            return _ROLE_WORDS[text.replace(" ", "").lower()]
    for attr in ("Detector", "ID", "id", "Name"):
        value = (sp.get(attr) or "").lower()
        if "background" in value:
            return "Background"
    return "Foreground"


def parse_n42_2006(root: etree._Element, source: str) -> SpectrumFile:
    """Every spectrum of an N42.42-2006 document (root ``N42InstrumentData``)."""
    info = _find(root, "InstrumentInformation")
    model = manufacturer = "unknown"
    if info is not None:
        model = (_up_text(info[0], "InstrumentModel") if len(info) else None) or "unknown"
        manufacturer = (_up_text(info[0], "Manufacturer") if len(info) else None) or "unknown"
    det_type = _find(root, "DetectorType")
    instrument = InstrumentInfo(manufacturer=manufacturer, model=model,
                                detector_kind=(det_type.text or "Other").strip() if det_type is not None else "Other")
    measurements = []
    for sp in root.iter():
        if _local(sp) != "Spectrum":
            continue
        cd = next((c for c in sp if _local(c) == "ChannelData"), None)
        if cd is None:
            continue
        text = cd.text or ""
        try:
            values = np.array(text.split(), dtype=float)
        except ValueError as err:
            raise SpectrumFileError(f"{source}: non-numeric ChannelData {text[:40]!r}") from err
        if (cd.get("Compression") or cd.get("compressionCode") or "").lower() == "countedzeroes":
            values = expand_counted_zeroes(values, source)
        check_channels(values.size, source)
        if values.size == 0:
            raise SpectrumFileError(f"{source}: a Spectrum has empty ChannelData")
        check_counts(values, source)
        live_s = _seconds(_up_text(sp, "LiveTime"), source, "LiveTime")
        real_s = _seconds(_up_text(sp, "RealTime"), source, "RealTime")
        if live_s is None and real_s is None:
            raise SpectrumFileError(f"{source}: a Spectrum has no live or real time")
        live = check_duration(float(live_s if live_s is not None else real_s), source, "LiveTime")  # type: ignore[arg-type]
        real = check_duration(float(real_s if real_s is not None else live), source, "RealTime")
        start_text = _up_text(sp, "StartTime")
        start = parse_datetime_utc(start_text) if start_text else None
        end = start + timedelta(seconds=real) if start is not None else datetime.now(UTC)
        det_name = sp.get("Detector") or None
        reading = SpectrumReading(
            counts=np.rint(values).astype(np.int64) if np.all(values == np.rint(values)) else values,
            live_time_s=live, real_time_s=real, calibration=_calibration(sp, source), t_utc=end, t_mono_s=0.0,
            detector_model=model,
        )
        measurements.append(SpectrumMeasurement(reading, _role(sp), start, remark=_up_text(sp, "Remark") or "",
                                                detector_name=det_name))
    if not measurements:
        raise SpectrumFileError(f"{source}: N42-2006 document holds no Spectrum with ChannelData")
    return SpectrumFile(tuple(measurements), instrument, (), source)
