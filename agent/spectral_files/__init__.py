"""Spectrum file formats: ANSI N42.42-2012 (read/write) and -2006 (read), IAEA/ORTEC SPE, RadiaCode XML export.

``read_spectrum_file(path)`` picks the reader from the file's content, not its name.
"""

from __future__ import annotations

from pathlib import Path

from agent.spectral_files.model import (
    AlarmResult,
    AnalysisRecord,
    InstrumentInfo,
    NuclideResult,
    SpectrumFile,
    SpectrumFileError,
    SpectrumMeasurement,
)
from agent.spectral_files.n42 import parse_n42, read_n42, to_n42_bytes, write_n42
from agent.spectral_files.radiacode_xml import parse_radiacode_xml, read_radiacode_xml
from agent.spectral_files.spe import format_spe, parse_spe, read_spe

__all__ = [
    "AlarmResult",
    "AnalysisRecord",
    "InstrumentInfo",
    "NuclideResult",
    "SpectrumFile",
    "SpectrumFileError",
    "SpectrumMeasurement",
    "format_spe",
    "parse_n42",
    "parse_radiacode_xml",
    "parse_spe",
    "read_n42",
    "read_radiacode_xml",
    "read_spe",
    "read_spectrum_file",
    "to_n42_bytes",
    "write_n42",
]


def read_spectrum_file(path: str | Path) -> SpectrumFile:
    """Read N42, RadiaCode XML or SPE, recognised by content (a clear error for anything else)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise SpectrumFileError(f"{p}: cannot read: {err.strerror}") from err
    head = data[:4096].decode("utf-8", errors="replace")
    if "RadInstrumentData" in head or "N42InstrumentData" in head:
        return parse_n42(data, str(p))
    if "ResultDataFile" in head:
        return parse_radiacode_xml(data, str(p))
    if "$DATA:" in data.decode("utf-8", errors="replace") or head.lstrip().startswith("$"):
        return parse_spe(data.decode("utf-8", errors="replace"), str(p))
    raise SpectrumFileError(f"{p}: not a recognised spectrum file (N42.42, RadiaCode XML or IAEA SPE)")
