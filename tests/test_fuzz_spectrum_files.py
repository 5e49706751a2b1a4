"""Property-based fuzzing of the spectrum file readers (issue 14, item 6).

Spectrum files arrive on USB sticks and by e-mail. Whatever the bytes, a reader must answer with a
:class:`SpectrumFileError` naming the file (or a valid spectrum), never another exception and
never unbounded memory. Inputs are *mutations of real files* (the shared RadiaCode-102 N42, an
N42 and an SPE written by our own writers, a RadiaCode XML export, a SpecUtils CSV), so the
fuzzing gets past the XML and header checks into the value conversion behind them:

* one numeric token replaced by junk (NaN, Inf, -1, 1e400, a 5,000-digit integer, text, empty);
* bytes flipped, inserted or deleted anywhere;
* an element's content duplicated or the file cut short.

Reproducible (``derandomize=True``, no example database); inputs stay small (a few kB), so each
example takes milliseconds even when it hits a limit.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.hal.interfaces import EnergyCalibration, SpectrumReading
from agent.spectral_files import (
    SpectrumFile,
    SpectrumFileError,
    SpectrumMeasurement,
    format_spe,
    parse_n42,
    parse_radiacode_xml,
    parse_spe,
    parse_spectrum_bytes,
    specutils_available,
    to_n42_bytes,
)

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SHARED_N42 = Path(__file__).resolve().parents[2] / "shared" / "spectra" / "radiacode102_am241.n42"

RADIACODE_XML = b"""<?xml version="1.0"?>
<ResultDataFile><FormatVersion>120920</FormatVersion><ResultDataList><ResultData>
<DeviceConfigReference><Name>RadiaCode-102</Name></DeviceConfigReference>
<StartTime>2023-10-17T22:30:56</StartTime><EndTime>2023-10-19T22:30:56</EndTime>
<EnergySpectrum><NumberOfChannels>4</NumberOfChannels><SerialNumber>RC-102-000115</SerialNumber>
<EnergyCalibration><PolynomialOrder>2</PolynomialOrder><Coefficients><Coefficient>-11.3706</Coefficient>
<Coefficient>2.46757</Coefficient><Coefficient>3.9769E-4</Coefficient></Coefficients></EnergyCalibration>
<MeasurementTime>172800</MeasurementTime><Spectrum><DataPoint>859</DataPoint><DataPoint>5770</DataPoint>
<DataPoint>2875</DataPoint><DataPoint>1340</DataPoint></Spectrum></EnergySpectrum>
</ResultData></ResultDataList></ResultDataFile>
"""
CSV = b"Energy, Data\n0.0, 1\n3.0, 20\n6.0, 300\n9.0, 40\n12.0, 5\n"


def _reading() -> SpectrumReading:
    counts = np.zeros(64, dtype=np.int64)
    counts[5:20] = np.arange(1, 16)
    counts[40] = 300  # zero runs around it: CountedZeroes in the N42 writer
    return SpectrumReading(counts, 59.5, 60.0, EnergyCalibration((0.5, 2.9, 4e-5)),
                           datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), 0.0, "NaI 2x2 in")


SEEDS: dict[str, bytes] = {
    "ours.n42": to_n42_bytes(SpectrumFile((SpectrumMeasurement(_reading()),))),
    "ours.spe": format_spe(_reading()).encode(),
    "radiacode.xml": RADIACODE_XML,
}
if SHARED_N42.is_file():
    SEEDS["radiacode102.n42"] = SHARED_N42.read_bytes()
NATIVE = {".n42": parse_n42, ".spe": lambda d, s: parse_spe(d.decode("utf-8", errors="replace"), s),
          ".xml": parse_radiacode_xml}
JUNK_NUMBERS = ["nan", "NaN", "inf", "-inf", "-1", "-0", "1e400", "-1e400", "9" * 5000, "", "x", "0x10", "1e-400",
                "99999999999999999999", "4294967296", "0 100000000", "P99999999999Y", "PT1e400S", "9999-99-99"]
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _parse(name: str, data: bytes) -> None:
    """The native reader for the seed's format, then the dispatcher: only SpectrumFileError may escape."""
    for parser in (NATIVE[Path(name).suffix], parse_spectrum_bytes):
        try:
            parser(data, name)
        except SpectrumFileError as err:
            assert name in str(err) or "<" in str(err), err  # the message names the file


def test_seeds_are_valid() -> None:
    for name, data in SEEDS.items():
        assert NATIVE[Path(name).suffix](data, name).measurements


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)), data=st.data(), junk=st.sampled_from(JUNK_NUMBERS))
def test_one_number_replaced_by_junk(name: str, data: st.DataObject, junk: str) -> None:
    seed = SEEDS[name]
    spans = [m.span() for m in NUMBER.finditer(seed)]
    a, b = data.draw(st.sampled_from(spans))
    _parse(name, seed[:a] + junk.encode() + seed[b:])


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_bytes_flipped_inserted_deleted(name: str, data: st.DataObject) -> None:
    buf = bytearray(SEEDS[name])
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(buf)))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip" and at < len(buf):
            buf[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        elif at < len(buf):
            del buf[at:at + data.draw(st.integers(1, 64))]
    _parse(name, bytes(buf))


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_a_slice_repeated_or_the_file_cut(name: str, data: st.DataObject) -> None:
    seed = SEEDS[name]
    a = data.draw(st.integers(0, len(seed)))
    b = data.draw(st.integers(a, min(len(seed), a + 400)))
    times = data.draw(st.integers(0, 20))
    _parse(name, seed[:b] + seed[a:b] * times + seed[b:] if times else seed[:a])


@FUZZ
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_through_the_dispatcher(data: bytes) -> None:
    try:
        parse_spectrum_bytes(data, "fuzz.bin")
    except SpectrumFileError as err:
        assert "fuzz.bin" in str(err)


@pytest.mark.skipif(not specutils_available(), reason="SpecUtils (optional extra 'files') not installed")
@settings(FUZZ, max_examples=100)
@given(data=st.data(), junk=st.sampled_from(JUNK_NUMBERS))
def test_mutated_csv_through_specutils(data: st.DataObject, junk: str) -> None:
    spans = [m.span() for m in NUMBER.finditer(CSV)]
    a, b = data.draw(st.sampled_from(spans))
    try:
        parse_spectrum_bytes(CSV[:a] + junk.encode() + CSV[b:], "fuzz.csv")
    except SpectrumFileError as err:
        assert "fuzz.csv" in str(err)
