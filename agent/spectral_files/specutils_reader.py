"""Every other spectrum format, through Sandia's SpecUtils (PyPI ``sandiaspecutils``, import ``SpecUtils``).

Why a library: SpecUtils (the file layer of InterSpec, LGPL-2.1) reads some 100 formats and vendor
dialects: Canberra CNF, ORTEC SPC/CHN, GADRAS PCF, Exploranium GR-130/135, CSV/TXT, vendor N42
variants. Hand-written parsers for those would each be a new source of bugs. It is optional
(``pip install 'customs-edge[files]'``, wheels for x86_64 only): units on aarch64 keep the native
N42/SPE/RadiaCode readers, and ``read_spectrum_file`` says when a file needs SpecUtils.

Conversion rules (SpecUtils 0.0.11 Python API: ``SpecFile.loadFileFromStream``, ``Measurement``):

- one :class:`SpectrumMeasurement` per SpecUtils measurement with gamma channels (neutron-only
  records are skipped), with its source type, detector name, sample number, live/real time and
  start time (SpecUtils' "no time" 1970-01-01 becomes ``None``);
- derived spectra (N42-2012 ``DerivedData``: sums, background-subtracted) are flagged ``derived``;
- energy calibration in the project's one convention: SpecUtils polynomials give channel lower
  edges, exactly as :func:`agent.spectral_files.n42.file_calibration` reads N42 and SPE files;
  full-range-fraction (PCF) is converted to that polynomial; lower-channel-energy lists and
  calibrations with deviation pairs are fitted (cubic) at channel centres;
- SpecUtils keeps times and coefficients as 32-bit floats; values are taken at their shortest
  float32 decimal form (400.29 s, not 400.2900085449219 s).

Size guard before SpecUtils sees the bytes: the caller checks the file size; here CountedZeroes
data is summed without expanding it (SpecUtils would allocate the expansion in C++), and every
spectrum's channel count is checked after parsing.

SpecUtils reports parser attempts on the C++ stderr ("Failed CNF: ..."); that is silenced while
it parses, so a command's errors stay one line each.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from agent.hal.interfaces import EnergyCalibration, SpectrumReading
from agent.spectral_files.limits import check_channels, check_counts, counted_zeroes_length, malformed_values
from agent.spectral_files.model import InstrumentInfo, SpectrumFile, SpectrumFileError, SpectrumMeasurement
from agent.spectral_files.n42 import file_calibration

INSTALL_HINT = "pip install 'customs-edge[files]' (SpecUtils wheels exist for x86_64 only)"
_STDERR_LOCK = threading.Lock()
_COUNTED_ZEROES = re.compile(
    rb"<(?:[\w.-]+:)?ChannelData\b[^>]*?[Cc]ompression(?:Code)?\s*=\s*[\"']CountedZeroes[\"'][^>]*>([^<]*)<",
)
_CLASS = {
    "Foreground": "Foreground",
    "Background": "Background",
    "Calibration": "Calibration",
    "IntrinsicActivity": "IntrinsicActivity",
}
_KINDS = ("HPGe", "NaI", "LaBr3", "CZT", "CdTe", "CsI", "BGO", "SrI2", "CLYC", "PVT")


def specutils_module() -> Any | None:
    """The SpecUtils module, or None when the optional package is not installed (aarch64 units)."""
    try:
        import SpecUtils
    except ImportError:
        return None
    return SpecUtils


def specutils_available() -> bool:
    return specutils_module() is not None


def specutils_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("sandiaspecutils")
    except Exception:  # noqa: BLE001 - metadata missing is "unknown version", nothing worse
        return None


def guard_counted_zeroes(data: bytes, source: str) -> None:
    """Refuse XML whose CountedZeroes channel data would expand past the channel limit (no expansion made)."""
    for match in _COUNTED_ZEROES.finditer(data):
        try:
            values = np.array(match.group(1).split(), dtype=float)
        except ValueError as err:
            raise SpectrumFileError(f"{source}: non-numeric CountedZeroes ChannelData") from err
        counted_zeroes_length(values, source)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[io.StringIO]:
    """Silence C++ writes to file descriptor 2 while SpecUtils parses; yields what it wrote."""
    captured = io.StringIO()
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to silence
            yield captured
            return
        try:
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.write(sink.read(4096).decode("utf-8", errors="replace"))


def _f32(value: float) -> float:
    """A float32 from SpecUtils at its shortest decimal form (400.29, not 400.2900085449219)."""
    return float(str(np.float32(value)))


def _start(value: datetime | None) -> datetime | None:
    if value is None or value.year <= 1970:  # SpecUtils' "no time"
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _calibration(sm: Any, su: Any, n_channels: int, source: str) -> EnergyCalibration:
    """Energy calibration of one SpecUtils measurement in the project's convention (see module docstring).

    The polynomial is used as is only when it reproduces SpecUtils' own channel edges (to 0.01 keV
    or 1e-5 relative): that also catches deviation pairs, which SpecUtils' Python binding cannot
    return (``deviationPairs()`` raises TypeError in 0.0.11).
    """
    kind = sm.energyCalibrationModel()
    edges = np.asarray(sm.channelEnergies(), dtype=float)
    if edges.size < n_channels or n_channels < 2 or not np.all(np.isfinite(edges)):
        raise SpectrumFileError(f"{source}: spectrum has no usable energy calibration ({kind.name})")
    if edges.size == n_channels:
        edges = np.append(edges, 2 * edges[-1] - edges[-2])
    coeffs = [float(c) for c in sm.calibrationCoeffs()]
    if coeffs and kind == su.EnergyCalType.FullRangeFraction and len(coeffs) <= 4:
        coeffs = [float(c) for c in su.fullRangeFractionCoefToPolynomial(coeffs, n_channels)]
        kind = su.EnergyCalType.Polynomial
    if coeffs and kind in (su.EnergyCalType.Polynomial, su.EnergyCalType.UnspecifiedUsingDefaultPolynomial):
        poly_edges = np.polynomial.polynomial.polyval(np.arange(n_channels + 1, dtype=float), coeffs)
        if np.allclose(poly_edges, edges[: n_channels + 1], rtol=1e-5, atol=0.01):
            return file_calibration([_f32(c) for c in coeffs])
    centres = 0.5 * (edges[1 : n_channels + 1] + edges[:n_channels])
    ch = np.arange(n_channels, dtype=float)
    fit = np.polynomial.polynomial.polyfit(ch, centres, deg=min(3, n_channels - 1))
    return EnergyCalibration(tuple(float(c) for c in fit))


def _detector_kind(text: str) -> str:
    low = text.lower()
    for kind in _KINDS:
        if kind.lower() in low:
            return kind
    return "Other"


def convert_specfile(sf: Any, su: Any, source: str) -> SpectrumFile:
    """A loaded SpecUtils ``SpecFile`` as our :class:`SpectrumFile`."""
    model = sf.instrumentModel().strip() or "unknown"
    det_type = sf.detectorType()
    det_type_name = getattr(det_type, "name", str(det_type))
    instrument = InstrumentInfo(
        manufacturer=sf.manufacturer().strip() or "unknown",
        model=model,
        serial=sf.instrumentId().strip() or None,
        class_code=sf.instrumentType().strip() or "Other",
        detector_kind=_detector_kind(f"{det_type_name} {model}"),
        detector_description=None if det_type_name == "Unknown" else det_type_name,
        versions=(),
    )
    derived_flag = int(su.DerivedDataProperties.IsDerived.value)
    measurements = []
    for sm in sf.measurements():
        n = int(sm.numGammaChannels())
        if n == 0:
            continue  # neutron-only record
        check_channels(n, source)
        counts = np.asarray(sm.gammaCounts(), dtype=float)
        if counts.size != n:
            raise SpectrumFileError(f"{source}: a spectrum holds {counts.size} counts for {n} channels")
        check_counts(counts, source)
        live_s, real_s = _f32(sm.liveTime()), _f32(sm.realTime())
        if live_s <= 0 and real_s <= 0:
            raise SpectrumFileError(
                f"{source}: spectrum {sm.sampleNumber()} {sm.detectorName()!r} has no live or real time"
                " (the format does not keep it, e.g. CSV)")
        live_s = live_s if live_s > 0 else real_s
        real_s = real_s if real_s > 0 else live_s
        start = _start(sm.startTime())
        det_name = sm.detectorName().strip() or None
        reading = SpectrumReading(
            counts=np.rint(counts).astype(np.int64) if np.all(counts == np.rint(counts)) else counts,
            live_time_s=live_s,
            real_time_s=real_s,
            calibration=_calibration(sm, su, n, source),
            t_utc=start + timedelta(seconds=real_s) if start is not None else datetime.now(UTC),
            t_mono_s=0.0,
            detector_model=model,
        )
        source_type = getattr(sm.sourceType(), "name", "")
        remarks = [r for r in sm.remarks() if r] + ([sm.title()] if sm.title() else [])
        measurements.append(
            SpectrumMeasurement(
                reading=reading,
                measurement_class=_CLASS.get(source_type, "NotSpecified"),
                start_utc=start,
                remark=" ".join(remarks)[:500],
                detector_name=det_name,
                sample=int(sm.sampleNumber()),
                derived=bool(int(sm.derivedDataProperties()) & derived_flag),
            )
        )
    if not measurements:
        raise SpectrumFileError(f"{source}: SpecUtils found no gamma spectrum in the file")
    return SpectrumFile(tuple(measurements), instrument, (), source)


def parse_with_specutils(data: bytes, source: str) -> SpectrumFile:
    """Parse ``data`` (a whole file, size already checked) with SpecUtils' automatic format detection."""
    su = specutils_module()
    if su is None:
        raise SpectrumFileError(
            f"{source}: reading this format needs SpecUtils, which is not installed ({INSTALL_HINT})")
    guard_counted_zeroes(data, source)
    sf = su.SpecFile()
    with _quiet_stderr():
        try:
            sf.loadFileFromStream(io.BytesIO(data), os.path.basename(source) or "spectrum")
        except RuntimeError as err:
            raise SpectrumFileError(
                f"{source}: not a recognised spectrum file (SpecUtils, which reads N42, SPE, CNF, SPC, CHN, PCF,"
                f" CSV/TXT, Exploranium and more, could not parse it: {err})"
            ) from err
    with malformed_values(source):  # e.g. an infinite real time SpecUtils read from a text format
        return convert_specfile(sf, su, source)
