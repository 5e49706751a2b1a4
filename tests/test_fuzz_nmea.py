"""Property-based fuzzing of the NMEA 0183 input layers (issue 14, item 6).

A GNSS receiver's serial line is outside input: line noise, a failing receiver or a spoofer can
put anything on it. The public parse function must answer every line with a report, ``None`` (a
sentence we do not use) or :class:`NmeaError` - never another exception, which would stop the
reader thread. Lines with a *correct* checksum around junk fields are generated too, so the field
conversion behind the checksum gate is what gets fuzzed, not only the gate.

Reproducible (``derandomize=True``, no example database), modest example counts.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.nmea_parse import NmeaError, NmeaLineSplitter, nmea_checksum, parse_sentence

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

VALID = [
    "GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,",
    "GNRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A",
    "GPGGA,235959.99,0000.0000,S,18000.0000,E,4,12,0.5,-20.0,M,0.0,M,1.0,0000",
    "GNGNS,092750.00,5321.6802,N,00630.3372,W,AAN,10,0.9,61.7,55.2,,,V",
    "GPGLL,5321.6802,N,00630.3372,W,092750.000,A,A",
    "GPZDA,092750.00,28,05,2011,00,00",
    "GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00",
    "PUBX,00,081350.00,4717.113210,N,00833.915187,E,546.589,G3,2.1,2.0,0.007,77.52,0.007,,0.92,1.19,0.77,9,0,0",
]
field_junk = st.one_of(
    st.text(alphabet="0123456789.-+eENSWAVMnaifINF", max_size=14),
    st.sampled_from(["", "nan", "inf", "-0", "99999999999999999999", "1e400", "9" * 5000, "٣", "24", "60",
                     "999999.99", "0000.0000", "9000.0001", "18000.0001", "32", "13", "000000", "311299"]),
    st.text(max_size=10),
)


def _sentence(body: str) -> str:
    return f"${body}*{nmea_checksum(body):02X}"


def _check(line: bytes | str) -> None:
    try:
        report = parse_sentence(line)
    except NmeaError as err:
        assert str(err)
        return
    lat = getattr(report, "lat_deg", None)
    lon = getattr(report, "lon_deg", None)
    if lat is not None:
        assert math.isfinite(lat) and -90 <= lat <= 90, report
    if lon is not None:
        assert math.isfinite(lon) and -180 <= lon <= 180, report


@FUZZ
@given(line=st.binary(max_size=300))
def test_arbitrary_bytes(line: bytes) -> None:
    _check(line)


@FUZZ
@given(line=st.text(max_size=200))
def test_arbitrary_text(line: str) -> None:
    _check(line)


@FUZZ
@given(data=st.data(), base=st.sampled_from(VALID), junk=field_junk)
def test_one_field_replaced_behind_a_valid_checksum(data: st.DataObject, base: str, junk: str) -> None:
    fields = base.split(",")
    i = data.draw(st.integers(0, len(fields) - 1))
    fields[i] = junk
    _check(_sentence(",".join(fields)))


@FUZZ
@given(data=st.data(), base=st.sampled_from(VALID))
def test_fields_dropped_or_added_behind_a_valid_checksum(data: st.DataObject, base: str) -> None:
    fields = base.split(",")
    n = data.draw(st.integers(1, len(fields) + 5))
    extra = data.draw(st.lists(field_junk, max_size=max(0, n - len(fields))))
    _check(_sentence(",".join((fields + extra)[:n])))


@FUZZ
@given(chunks=st.lists(st.binary(max_size=400), max_size=10))
def test_line_splitter_never_raises_and_bounds_lines(chunks: list[bytes]) -> None:
    splitter = NmeaLineSplitter()
    for chunk in chunks:
        for line in splitter.feed(chunk):
            assert len(line) <= splitter.max_line_bytes
            _check(line)


def test_valid_sentences_still_parse() -> None:
    """The fuzzed baselines are real sentences: the parser accepts the position-bearing ones."""
    for body in VALID[:2]:
        report = parse_sentence(_sentence(body))
        assert report is not None and abs(report.lat_deg - 53.36134) < 1e-4
