"""Spectrum files: native N42.42-2012 (read/write) and -2006, IAEA/ORTEC SPE, RadiaCode XML; the rest via SpecUtils.

``read_spectrum_file(path)`` picks the reader from the file's content, not its name: the native
readers (which every unit has, aarch64 included) for N42/SPE/RadiaCode, SpecUtils (optional extra
``files``) for CNF, SPC, CHN, PCF, CSV/TXT, Exploranium GR-130/135 and vendor N42 dialects.
"""

from __future__ import annotations

from pathlib import Path

from agent.spectral_files.limits import MAX_FILE_BYTES, SpectrumFileLimitError, check_file_size
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
from agent.spectral_files.specutils_reader import INSTALL_HINT, parse_with_specutils, specutils_available

__all__ = [
    "AlarmResult",
    "AnalysisRecord",
    "InstrumentInfo",
    "NuclideResult",
    "SpectrumFile",
    "SpectrumFileError",
    "SpectrumFileLimitError",
    "SpectrumMeasurement",
    "format_spe",
    "parse_n42",
    "parse_radiacode_xml",
    "parse_spe",
    "parse_spectrum_bytes",
    "parse_with_specutils",
    "read_n42",
    "read_radiacode_xml",
    "read_spe",
    "read_spectrum_file",
    "specutils_available",
    "to_n42_bytes",
    "write_n42",
]


def _native_kind(head: str, data: bytes) -> str | None:
    """Which native reader the content asks for: 'n42', 'radiacode', 'spe' or None."""
    if "RadInstrumentData" in head or "N42InstrumentData" in head:
        return "n42"
    if "ResultDataFile" in head:
        return "radiacode"
    stripped = head.lstrip()
    if stripped.startswith("$") or (b"$DATA:" in data and not stripped.startswith("<")):
        return "spe"
    return None


def parse_spectrum_bytes(data: bytes, source: str) -> SpectrumFile:
    """Parse a whole spectrum file's bytes (size already checked): native readers first, then SpecUtils.

    Native readers (N42-2012/-2006, IAEA SPE, RadiaCode XML) need nothing beyond the base install.
    When one of them cannot make sense of a well-formed file (a vendor N42 dialect, an SPE variant),
    SpecUtils gets it, if installed. Never handed on: files over a size limit
    (:class:`SpectrumFileLimitError`) and XML that is not well-formed (a truncated file's counts
    cannot be trusted, even where SpecUtils' lenient parser would return some).
    """
    if not data.strip():
        raise SpectrumFileError(f"{source}: file is empty")
    check_file_size(len(data), source)
    head = data[:4096].decode("utf-8", errors="replace")
    kind = _native_kind(head, data)
    if kind is not None:
        try:
            if kind == "n42":
                return parse_n42(data, source)
            if kind == "radiacode":
                return parse_radiacode_xml(data, source)
            return parse_spe(data.decode("utf-8", errors="replace"), source)
        except SpectrumFileLimitError:
            raise
        except SpectrumFileError as native_err:
            if "not well-formed XML" in str(native_err) or not specutils_available():
                raise
            try:
                return parse_with_specutils(data, source)
            except SpectrumFileLimitError:
                raise
            except SpectrumFileError:
                raise native_err from None
    if not specutils_available():
        raise SpectrumFileError(
            f"{source}: not a recognised spectrum file: the built-in readers take N42.42 (2006/2012), IAEA SPE and"
            f" RadiaCode XML; other formats (CNF, SPC, CHN, PCF, CSV/TXT, Exploranium) need SpecUtils, which is"
            f" not installed ({INSTALL_HINT})"
        )
    return parse_with_specutils(data, source)


def read_spectrum_file(path: str | Path) -> SpectrumFile:
    """Read any spectrum file we can, recognised by content, not name (a clear error naming file and reason)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        check_file_size(size, str(p))
        with p.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise SpectrumFileError(f"{p}: cannot read: {err.strerror or err}") from err
    return parse_spectrum_bytes(data, str(p))
