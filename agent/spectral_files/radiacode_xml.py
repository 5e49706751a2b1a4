"""RadiaCode app XML export reader (``ResultDataFile`` / FormatVersion 120920).

Why: RadiaCode-10x pocket spectrometers are the commonest spectroscopic dosimeters in the field, and
their phone app exports spectra as this XML: ``ResultData`` holds an ``EnergySpectrum`` (channel counts as
``DataPoint`` elements, a polynomial ``EnergyCalibration``, ``MeasurementTime`` in seconds) and
optionally a ``BackgroundEnergySpectrum`` of the same shape. Layout as in the test files of
ckuethe/radiacode-tools (MIT). The app reports one time, which we take as live and real time
(RadiaCode's dead time is negligible at the count rates of a 1 cm3 crystal). The polynomial is the
device's, the same numbers its N42 exports carry, so it is read as those are: channel lower edges.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from lxml import etree

from agent.hal.interfaces import SpectrumReading
from agent.spectral_files.limits import check_channels, check_counts, check_duration, malformed_values, read_capped
from agent.spectral_files.model import InstrumentInfo, SpectrumFile, SpectrumFileError, SpectrumMeasurement
from agent.spectral_files.n42 import file_calibration


def _t(el: etree._Element | None, path: str) -> str | None:
    if el is None:
        return None
    found = el.find(path)
    return found.text.strip() if found is not None and found.text is not None else None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _spectrum(es: etree._Element, device: str, start: datetime | None, source: str) -> SpectrumReading:
    points = es.findall("./Spectrum/DataPoint")
    if not points:
        raise SpectrumFileError(f"{source}: {es.tag} has no Spectrum/DataPoint")
    check_channels(len(points), source)
    try:
        values = np.array([float(p.text or 0) for p in points])
        check_counts(values, source)
        counts = values.astype(np.int64)
        coeffs = tuple(float(c.text) for c in es.findall("./EnergyCalibration/Coefficients/Coefficient"))
        seconds = float(_t(es, "MeasurementTime") or "nan")
    except (TypeError, ValueError) as err:
        raise SpectrumFileError(f"{source}: {es.tag}: non-numeric value ({err})") from err
    if len(coeffs) < 2:
        raise SpectrumFileError(f"{source}: {es.tag} has no energy calibration coefficients")
    if not np.isfinite(seconds) or seconds <= 0:
        raise SpectrumFileError(f"{source}: {es.tag} has no positive MeasurementTime")
    check_duration(seconds, source, "MeasurementTime")
    n_declared = _t(es, "NumberOfChannels")
    if n_declared and int(n_declared) != counts.size:
        raise SpectrumFileError(f"{source}: NumberOfChannels={n_declared} but {counts.size} DataPoints")
    end = (start + timedelta(seconds=seconds)) if start else datetime.now(UTC)
    return SpectrumReading(
        counts=counts,
        live_time_s=seconds,
        real_time_s=seconds,
        calibration=file_calibration(coeffs),
        t_utc=end,
        t_mono_s=0.0,
        detector_model=device,
    )


def parse_radiacode_xml(data: bytes, source: str = "<bytes>") -> SpectrumFile:
    """Parse a RadiaCode XML export; a bad file raises :class:`SpectrumFileError` only."""
    with malformed_values(source):
        return _parse_radiacode_xml(data, source)


def _parse_radiacode_xml(data: bytes, source: str) -> SpectrumFile:
    try:
        root = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as err:
        raise SpectrumFileError(f"{source}: not well-formed XML: {err}") from err
    if etree.QName(root).localname != "ResultDataFile":
        raise SpectrumFileError(f"{source}: root is {etree.QName(root).localname!r}, not RadiaCode ResultDataFile")
    measurements = []
    device = "RadiaCode"
    serial = None
    for rd in root.findall("./ResultDataList/ResultData"):
        device = _t(rd, "./DeviceConfigReference/Name") or device
        # StartTime/EndTime pairs precede the spectrum they belong to.
        starts = [_time(s.text) for s in rd.findall("./StartTime")]
        name = _t(rd, "./SampleInfo/Name") or ""
        fg = rd.find("./EnergySpectrum")
        if fg is not None:
            serial = _t(fg, "SerialNumber") or serial
            measurements.append(
                SpectrumMeasurement(
                    _spectrum(fg, device, starts[0] if starts else None, source),
                    "Foreground",
                    starts[0] if starts else None,
                    name,
                )
            )
        bg = rd.find("./BackgroundEnergySpectrum")
        if bg is not None:
            start = starts[1] if len(starts) > 1 else None
            measurements.append(
                SpectrumMeasurement(
                    _spectrum(bg, device, start, source), "Background", start, _t(bg, "SpectrumName") or ""
                )
            )
    if not measurements:
        raise SpectrumFileError(f"{source}: no EnergySpectrum in ResultDataList")
    instrument = InstrumentInfo(
        manufacturer="Radiacode",
        model=device,
        serial=serial,
        class_code="Spectroscopic Personal Radiation Detector",
        detector_kind="CsI",
    )
    return SpectrumFile(tuple(measurements), instrument, (), source)


def read_radiacode_xml(path: str | Path) -> SpectrumFile:
    return parse_radiacode_xml(read_capped(path, str(path)), str(path))
