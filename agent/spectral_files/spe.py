"""IAEA / ORTEC ``.spe`` text spectrum reader.

Why: SPE is the lowest common denominator of gamma-spectrometry software (ORTEC Maestro, the IAEA's
WinSPEC/GENIE exports, Open Gamma Detector tools, many hobbyist apps). The format is a list of
``$KEYWORD:`` blocks (IAEA "SPE" format description, ORTEC Maestro manual appendix): ``$DATA:`` gives
first and last channel then one count per line, ``$MEAS_TIM:`` live and real seconds, ``$DATE_MEA:``
``mm/dd/yyyy hh:mm:ss``, ``$ENER_FIT:`` offset and gain, ``$MCA_CAL:`` the number of coefficients then
the polynomial (Maestro). Polynomials give channel *lower edges*, as SpecUtils/InterSpec read them
(the one convention of :func:`agent.spectral_files.n42.file_calibration`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from agent.hal.interfaces import SpectrumReading
from agent.spectral_files.limits import (
    MAX_CHANNELS,
    check_channels,
    check_counts,
    check_duration,
    malformed_values,
    read_capped,
)
from agent.spectral_files.model import InstrumentInfo, SpectrumFile, SpectrumFileError, SpectrumMeasurement
from agent.spectral_files.n42 import file_calibration, file_coefficients


def _blocks(text: str, source: str) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("$"):
            current = line[1:].split(":", 1)[0].strip().upper()
            blocks[current] = []
            rest = line.split(":", 1)[1].strip() if ":" in line else ""
            if rest:
                blocks[current].append(rest)
        elif current is not None and line:
            blocks[current].append(line)
    if "DATA" not in blocks:
        raise SpectrumFileError(f"{source}: no $DATA: block, not an SPE file")
    return blocks


def parse_spe(text: str, source: str = "<text>", detector_model: str | None = None) -> SpectrumFile:
    """Parse SPE text; a bad file raises :class:`SpectrumFileError` only (values that do not convert included)."""
    with malformed_values(source):
        return _parse_spe(text, source, detector_model)


def _parse_spe(text: str, source: str, detector_model: str | None) -> SpectrumFile:
    blocks = _blocks(text, source)
    data = blocks["DATA"]
    try:
        first, last = (int(v) for v in data[0].split()[:2])
        check_channels(last - first + 1, source)  # before reading a count: the header may claim 10^8
        values = [v for line in data[1:] for v in line.split()]
        check_channels(len(values), source)
        counts = np.array([float(v) for v in values])
    except (ValueError, IndexError) as err:
        raise SpectrumFileError(f"{source}: malformed $DATA: block ({err})") from err
    check_counts(counts, source)
    if not 0 <= first < MAX_CHANNELS:
        raise SpectrumFileError(f"{source}: $DATA: first channel {first} is not 0 .. {MAX_CHANNELS - 1}")
    if counts.size != last - first + 1:
        raise SpectrumFileError(
            f"{source}: $DATA: announces channels {first}..{last} ({last - first + 1}) but holds {counts.size}"
        )
    live_s = real_s = None
    if "MEAS_TIM" in blocks and blocks["MEAS_TIM"]:
        try:
            parts = [float(v) for v in blocks["MEAS_TIM"][0].split()]
        except ValueError as err:
            raise SpectrumFileError(f"{source}: bad $MEAS_TIM: {blocks['MEAS_TIM'][0]!r}") from err
        if not parts:
            raise SpectrumFileError(f"{source}: empty $MEAS_TIM:")
        live_s = check_duration(parts[0], source, "$MEAS_TIM: live time")
        real_s = check_duration(parts[1] if len(parts) > 1 else parts[0], source, "$MEAS_TIM: real time")
    if live_s is None or live_s <= 0:
        raise SpectrumFileError(f"{source}: no positive live time in $MEAS_TIM:")
    start = None
    if blocks.get("DATE_MEA"):
        for fmt in ("%m/%d/%Y %H:%M:%S", "%m/%d/%y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%d.%m.%Y %H:%M:%S"):
            try:
                start = datetime.strptime(blocks["DATE_MEA"][0], fmt).replace(tzinfo=UTC)
                break
            except ValueError:
                continue
    coeffs: tuple[float, ...] | None = None
    if blocks.get("MCA_CAL") and len(blocks["MCA_CAL"]) >= 2:
        try:
            n = int(blocks["MCA_CAL"][0].split()[0])
            coeffs = tuple(float(v) for v in blocks["MCA_CAL"][1].split()[:n])
        except ValueError:
            coeffs = None
    if coeffs is None and blocks.get("ENER_FIT"):
        try:
            coeffs = tuple(float(v) for v in blocks["ENER_FIT"][0].split())
        except ValueError:
            coeffs = None
    if not coeffs or len(coeffs) < 2:
        raise SpectrumFileError(f"{source}: no energy calibration ($MCA_CAL: or $ENER_FIT:)")
    if first != 0:  # calibrations refer to absolute channel numbers; shift to 0-based data
        shifted = np.polynomial.polynomial.Polynomial(coeffs)(np.polynomial.polynomial.Polynomial([first, 1]))
        coeffs = tuple(float(c) for c in shifted.coef)
    remark = " ".join(blocks.get("SPEC_REM", []) + blocks.get("SPEC_ID", []))
    end = (start + timedelta(seconds=real_s)) if start else datetime.now(UTC)
    reading = SpectrumReading(
        counts=np.rint(counts).astype(np.int64),
        live_time_s=live_s,
        real_time_s=real_s or live_s,
        calibration=file_calibration(coeffs),
        t_utc=end,
        t_mono_s=0.0,
        detector_model=detector_model or "unknown",
    )
    return SpectrumFile(
        (SpectrumMeasurement(reading, "Foreground", start, remark.strip()),),
        InstrumentInfo(model=detector_model or "unknown"),
        (),
        source,
    )


def read_spe(path: str | Path, detector_model: str | None = None) -> SpectrumFile:
    text = read_capped(path, str(path)).decode("utf-8", errors="replace")
    return parse_spe(text, str(path), detector_model)


def format_spe(reading: SpectrumReading, spec_id: str = "customs-edge") -> str:
    """Write the IAEA SPE subset read above (used by tests and for exchange with SPE-only tools)."""
    start = reading.t_utc - timedelta(seconds=reading.real_time_s)
    c = file_coefficients(reading.calibration)  # files carry lower-edge polynomials
    lines = [
        "$SPEC_ID:", spec_id, "$DATE_MEA:", start.strftime("%m/%d/%Y %H:%M:%S"),
        "$MEAS_TIM:", f"{reading.live_time_s:g} {reading.real_time_s:g}",
        "$DATA:", f"0 {reading.n_channels - 1}",
        *(str(int(v)) for v in reading.counts),
        "$ENER_FIT:", f"{c[0]:.9g} {c[1]:.9g}",
        "$MCA_CAL:", str(len(c)), " ".join(f"{v:.9g}" for v in c) + " keV",
    ]
    return "\n".join(lines) + "\n"
