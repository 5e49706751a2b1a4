"""One NMEA 0183 sentence -> a typed report (GGA, RMC, GNS, GLL, ZDA), an ignore reason, or a reject.

Why a module of its own: this is the part a reviewer checks against the standard's sentence
definitions, and the part a fuzzer hammers.  Its contract is small and total:

* :func:`parse_line` returns a report for the five sentences a position fix is built from, or an
  :class:`Ignored` (with a reason) for any other well-formed sentence - proprietary ``$P...``,
  non-standard addresses (``$GYOACC``, ``$SNRSTAT``, ``$LOG108``), standard types we do not use
  (GSV, GSA, VTG, TXT ...).  Ignoring is normal traffic, counted, never logged as an error.
* Everything else raises :class:`NmeaError` whose ``kind`` is one of :data:`REJECT_REASONS`.
  No other exception leaves this module, whatever the bytes (the fuzz tests hold it to that).
* A field that is present but unusable (a no-fix placeholder latitude like ``8960.0000``, an
  altitude ``54x.4``, a date ``320394``) does *not* throw the sentence away: the field becomes
  ``None``, its name goes to the report's ``field_errors``, and the rest - above all the time of
  day, which places the sentence in its epoch - is kept.  Only an unreadable time in a timed
  sentence rejects it (``bad_time``): without it the sentence cannot be placed in an epoch.

Sentence layouts: NMEA 0183 v4.10 (as documented by gpsd's NMEA.adoc, BSD-2, and the u-blox M8
Receiver Description UBX-13003221 sec. 31.2): GGA quality 0..8 (6 estimated/dead reckoning, 7
manual input, 8 simulator); mode indicator (RMC, GLL, GNS: one letter per constellation) A
autonomous, D differential, P precise, R RTK fixed, F RTK float, E estimated, M manual, S
simulator, N no fix; RMC/GLL status A valid, V invalid; the v4.1 navigational status (RMC and GNS
last field) S safe, C caution, U unsafe, V "equipment does not provide it" - so only ``U`` counts
against a fix.

Checksums (NMEA 0183 sec. 5.2.1, XOR of the characters between ``$`` and ``*``): a wrong one is
always rejected.  A missing one is allowed, as in NMEA 0183 v2.x where the checksum is mandatory
only for RMA, RMB and RMC (and as gpsd's lexer accepts them); an unchecked sentence we use must
then carry its full field count, because a line cut short by a glitch and terminated by the next
CR/LF has no checksum either and would otherwise yield truncated coordinates.

Speed conversion uses the international knot, 1852 m per hour (BIPM SI Brochure, 9th ed.,
Table 8).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date
from datetime import time as dtime

from agent.hal.interfaces import DeviceDataError, FixQuality

__all__ = [
    "KNOT_M_S",
    "MAX_LINE_BYTES",
    "REJECT_REASONS",
    "GgaReport",
    "GllReport",
    "GnsReport",
    "Ignored",
    "NmeaError",
    "NmeaReport",
    "RmcReport",
    "ZdaReport",
    "mode_quality",
    "nmea_checksum",
    "parse_line",
    "parse_sentence",
]

KNOT_M_S = 1852.0 / 3600.0  # international knot in m/s (exact)

# NMEA 0183 limits a sentence to 82 characters including "$" and <CR><LF>.  Real receivers exceed it
# with proprietary sentences (u-blox PUBX,03 reaches ~ 100+, Skytraq PSTI ~ 100), so allow generous
# slack; anything longer is line noise, not a sentence.
MAX_LINE_BYTES = 256

# Why a line was thrown away (NmeaError.kind).  Counted per reason by the decoder and the bench.
REJECT_REASONS = (
    "non_ascii",  # a byte outside printable ASCII
    "overlong",  # longer than MAX_LINE_BYTES
    "framing",  # not "$<address>,...[*hh]"
    "checksum",  # checksum wrong or malformed
    "missing_checksum",  # no checksum on a sentence whose checksum the standard makes mandatory
    "truncated",  # fewer fields than the sentence needs
    "bad_time",  # a timed sentence whose time of day cannot be read
)

# Sentences whose checksum NMEA 0183 (v2.x) makes mandatory.
_CHECKSUM_MANDATORY = frozenset({"RMA", "RMB", "RMC"})

# Mode indicator letter -> fix quality.  A/D/P/R/F are fixes; E, M, S are the estimated, manual and
# simulator modes (kept as qualities, but not valid fixes); N and anything unknown: no fix.
_MODE_QUALITY: dict[str, FixQuality] = {
    "A": FixQuality.GPS,
    "D": FixQuality.DGPS,
    "P": FixQuality.PPS,
    "R": FixQuality.RTK,
    "F": FixQuality.FLOAT_RTK,
    "E": FixQuality.ESTIMATED,
    "M": FixQuality.MANUAL,
    "S": FixQuality.SIMULATION,
}
_VALID_QUALITIES = frozenset({FixQuality.GPS, FixQuality.DGPS, FixQuality.PPS, FixQuality.RTK,
                              FixQuality.FLOAT_RTK})

_ADDRESS_RE = re.compile(r"^[A-Z]{2}[A-Z]{3}$")
_FORMATTER_RE = re.compile(r"^[A-Z]{3}$")
_HEX2_RE = re.compile(r"^[0-9A-Fa-f]{2}$")
_TIME_RE = re.compile(r"^(\d{2})(\d{2})(\d{2})(?:\.(\d*))?$")
_DM_RE = re.compile(r"^(\d{1,3})(\d{2}(?:\.\d*)?)$")
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_INT_RE = re.compile(r"^\d{1,6}$")


# --------------------------------------------------------------------------- errors
class NmeaError(DeviceDataError):
    """One line was rejected.  ``kind`` is one of :data:`REJECT_REASONS` and selects the counter."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- reports
def mode_quality(mode: str | None) -> FixQuality:
    """Mode indicator (one letter per constellation, NMEA 4.10 GNS) -> the best quality it states.

    A fix by any constellation is a fix (``NA``: GPS not used, GLONASS autonomous); a simulator
    letter anywhere makes the whole sentence simulated - nothing from a simulator is a position.
    """
    if not mode:
        return FixQuality.INVALID
    qualities = [_MODE_QUALITY.get(ch, FixQuality.INVALID) for ch in mode]
    if FixQuality.SIMULATION in qualities:
        return FixQuality.SIMULATION
    valid = [q for q in qualities if q in _VALID_QUALITIES]
    if valid:
        return max(valid)
    for q in (FixQuality.ESTIMATED, FixQuality.MANUAL):
        if q in qualities:
            return q
    return FixQuality.INVALID


@dataclass(frozen=True, slots=True)
class GgaReport:
    """GGA - Global positioning system fix data (time, position, quality, satellites, altitude)."""

    talker: str
    time_utc: dtime | None
    lat_deg: float | None
    lon_deg: float | None
    quality: FixQuality
    num_satellites: int
    hdop: float | None
    alt_m: float | None  # antenna altitude above mean sea level (geoid)
    field_errors: tuple[str, ...] = ()
    satellites_given: bool = True  # the satellites-in-use field was present

    formatter = "GGA"


@dataclass(frozen=True, slots=True)
class RmcReport:
    """RMC - Recommended minimum specific GNSS data (validity, position, date, speed, course)."""

    talker: str
    time_utc: dtime | None
    valid: bool  # status A (or D) and a mode indicator that is a fix, and not navigationally unsafe
    lat_deg: float | None
    lon_deg: float | None
    speed_m_s: float | None
    course_deg: float | None
    date_utc: date | None
    mode: str | None  # NMEA 2.3+ mode indicator, None on older receivers
    field_errors: tuple[str, ...] = ()

    formatter = "RMC"

    @property
    def quality(self) -> FixQuality:
        if self.mode is not None and self.mode in "EMS":  # says why it is not a fix
            return _MODE_QUALITY[self.mode]
        if not self.valid:
            return FixQuality.INVALID
        return FixQuality.GPS if self.mode is None else mode_quality(self.mode)


@dataclass(frozen=True, slots=True)
class GnsReport:
    """GNS - GNSS fix data (NMEA 3.0+/4.10): GGA's content with a per-constellation mode string."""

    talker: str
    time_utc: dtime | None
    lat_deg: float | None
    lon_deg: float | None
    mode: str
    num_satellites: int
    hdop: float | None
    alt_m: float | None  # above mean sea level
    unsafe: bool  # navigational status U (NMEA 4.1)
    field_errors: tuple[str, ...] = ()

    formatter = "GNS"

    @property
    def quality(self) -> FixQuality:
        return FixQuality.INVALID if self.unsafe else mode_quality(self.mode)


@dataclass(frozen=True, slots=True)
class GllReport:
    """GLL - Geographic position, latitude/longitude, with time of fix and status."""

    talker: str
    time_utc: dtime | None
    lat_deg: float | None
    lon_deg: float | None
    status_valid: bool  # status A
    mode: str | None  # NMEA 2.3+ mode indicator
    field_errors: tuple[str, ...] = ()

    formatter = "GLL"

    @property
    def quality(self) -> FixQuality:
        if self.mode is not None and self.mode in "EMS":
            return _MODE_QUALITY[self.mode]
        if not self.status_valid:
            return FixQuality.INVALID
        return FixQuality.GPS if self.mode is None else mode_quality(self.mode)


@dataclass(frozen=True, slots=True)
class ZdaReport:
    """ZDA - Time and date (UTC day, month, four-digit year); carries no position."""

    talker: str
    time_utc: dtime | None
    date_utc: date | None
    field_errors: tuple[str, ...] = ()

    formatter = "ZDA"


NmeaReport = GgaReport | RmcReport | GnsReport | GllReport | ZdaReport


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed sentence this driver does not use; ``reason`` is what it is counted under:
    ``proprietary`` ($P...), ``non_standard`` (no 2+3-letter address) or the formatter (``GSV``)."""

    reason: str


# --------------------------------------------------------------------------- framing
def nmea_checksum(body: str) -> int:
    """XOR of the characters between '$' and '*' (NMEA 0183 sec. 5.2.1)."""
    cs = 0
    for ch in body.encode("ascii", errors="replace"):
        cs ^= ch
    return cs


def _text(line: bytes | bytearray | str) -> str:
    if isinstance(line, str):
        text = line
    else:
        raw = bytes(line)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as err:
            raise NmeaError("non_ascii", f"non-ASCII byte at offset {err.start}: {raw[:40]!r}") from None
    text = text.strip("\r\n ")
    if len(text) > MAX_LINE_BYTES:
        raise NmeaError("overlong", f"sentence of {len(text)} characters (limit {MAX_LINE_BYTES}): {text[:40]!r}")
    if not text.isascii() or not text.isprintable():
        raise NmeaError("non_ascii", f"control or non-ASCII character in {text[:40]!r}")
    return text


def parse_line(line: bytes | bytearray | str) -> NmeaReport | Ignored:
    """Parse one sentence (with or without trailing CR/LF) -> a report or :class:`Ignored`.

    Raises :class:`NmeaError` (and nothing else) when the line is rejected.
    """
    text = _text(line)
    if len(text) < 2 or text[0] != "$":
        raise NmeaError("framing", f"not an NMEA sentence (no leading '$'): {text[:40]!r}")
    body, star, given = text[1:].partition("*")
    if "$" in body or "*" in given or not body:
        raise NmeaError("framing", f"malformed sentence {text[:40]!r}")
    fields = body.split(",")
    address = fields[0]
    formatter = address[2:] if _ADDRESS_RE.match(address) else None
    if star:
        if not _HEX2_RE.match(given):
            raise NmeaError("checksum", f"malformed checksum {given[:8]!r} in {text[:40]!r}")
        computed = nmea_checksum(body)
        if int(given, 16) != computed:
            raise NmeaError("checksum", f"checksum {given.upper()} != computed {computed:02X} in {text[:40]!r}")
    elif formatter in _CHECKSUM_MANDATORY and not address.startswith("P"):
        raise NmeaError("missing_checksum", f"{address} without its mandatory checksum: {text[:40]!r}")
    if address.startswith("P"):
        return Ignored("proprietary")  # NMEA 0183 sec. 5.3.3: $P + manufacturer code
    if formatter is None:
        return Ignored("non_standard")  # e.g. $GYOACC, $SNRSTAT, $LOG108 (receiver logs and extras)
    parser = _PARSERS.get(formatter)
    if parser is None:
        return Ignored(formatter)
    need_min, need_full = _FIELD_COUNTS[formatter]
    have = len(fields) - 1
    need = need_min if star else need_full
    if have < need:
        why = "" if star else " (no checksum: the full sentence is required)"
        raise NmeaError("truncated", f"{address} has {have} fields, expected >= {need}{why}: {text[:40]!r}")
    return parser(address[:2], fields[1:])


def parse_sentence(line: bytes | bytearray | str) -> NmeaReport | None:
    """:func:`parse_line` with ignored sentences as ``None`` (the original interface)."""
    out = parse_line(line)
    return None if isinstance(out, Ignored) else out


# --------------------------------------------------------------------------- field helpers
class _Fields:
    """Field access that records unusable fields instead of raising."""

    def __init__(self, what: str, data: list[str]) -> None:
        self.what = what
        self.data = data
        self.errors: list[str] = []

    def raw(self, i: int) -> str:
        return self.data[i].strip() if i < len(self.data) else ""

    def number(self, i: int, name: str) -> float | None:
        raw = self.raw(i)
        if not raw:
            return None
        if not _NUMBER_RE.match(raw) or len(raw) > 20:
            self.errors.append(name)
            return None
        return float(raw)

    def count(self, i: int, name: str) -> int | None:
        raw = self.raw(i)
        if not raw:
            return None
        if not _INT_RE.match(raw):
            self.errors.append(name)
            return None
        return int(raw)

    def time_of_day(self, i: int) -> dtime | None:
        """hhmmss[.sss] -> aware UTC time; a leap second 60 is clamped to 59.999999."""
        raw = self.raw(i)
        if not raw:
            return None
        m = _TIME_RE.match(raw)
        if m is None:
            raise NmeaError("bad_time", f"{self.what} time {raw[:20]!r} is not hhmmss.ss")
        hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3))
        frac = (m.group(4) or "")[:6]
        us = int(frac.ljust(6, "0")) if frac else 0
        if hh > 23 or mm > 59 or ss > 60:
            raise NmeaError("bad_time", f"{self.what} time {raw!r} out of range")
        if ss == 60:
            ss, us = 59, 999_999
        return dtime(hh, mm, ss, us, tzinfo=UTC)

    def position(self, i: int) -> tuple[float | None, float | None]:
        """Fields i..i+3 (ddmm.mm, N/S, dddmm.mm, E/W) -> signed degrees, or (None, None).

        Empty fields are "no position" (normal without a fix).  Present but unusable fields -
        a placeholder ``8960.0000``, a hemisphere ``X``, minutes >= 60 - are also no position,
        recorded in ``errors``: the sentence (and its time) stays.
        """
        lat = self._coordinate(self.raw(i), self.raw(i + 1), ("N", "S"), 90.0)
        lon = self._coordinate(self.raw(i + 2), self.raw(i + 3), ("E", "W"), 180.0)
        if lat is None or lon is None:
            return None, None
        return lat, lon

    def _coordinate(self, raw: str, hemi: str, hemis: tuple[str, str], limit: float) -> float | None:
        if not raw and not hemi:
            return None
        m = _DM_RE.match(raw)
        if m is None or hemi not in hemis:
            self.errors.append("position")
            return None
        deg, minutes = int(m.group(1)), float(m.group(2))
        value = deg + minutes / 60.0
        if minutes >= 60.0 or value > limit:
            self.errors.append("position")
            return None
        return -value if hemi == hemis[1] else value

    def letter(self, i: int, allowed: str, name: str) -> str | None:
        raw = self.raw(i)
        if not raw:
            return None
        if len(raw) != 1 or raw not in allowed:
            self.errors.append(name)
            return None
        return raw


def _mode_field(f: _Fields, i: int) -> str | None:
    raw = f.raw(i)
    if not raw:
        return None
    if len(raw) > 8 or not raw.isalpha() or not raw.isupper():
        f.errors.append("mode")
        return "N"  # an unreadable mode states no fix
    return raw


# --------------------------------------------------------------------------- sentences
def _gga(talker: str, data: list[str]) -> GgaReport:
    # 1 time, 2-5 position, 6 quality, 7 satellites, 8 HDOP, 9-10 altitude MSL + unit, 11-12 geoid sep.
    f = _Fields("GGA", data)
    tod = f.time_of_day(0)
    lat, lon = f.position(1)
    qual = f.count(5, "quality")
    if qual is not None and qual > max(FixQuality):
        f.errors.append("quality")
        qual = None
    quality = FixQuality.INVALID if qual is None else FixQuality(qual)
    alt = f.number(8, "altitude")
    if alt is not None and f.raw(9) not in ("M", ""):
        f.errors.append("altitude")
        alt = None
    hdop = f.number(7, "hdop")
    sats = f.count(6, "satellites")
    return GgaReport(talker, tod, lat, lon, quality, sats or 0,
                     None if hdop is not None and hdop >= 99.0 else hdop,  # 99.99 = "no DOP"
                     alt, tuple(f.errors), sats is not None)


def _rmc(talker: str, data: list[str]) -> RmcReport:
    # 1 time, 2 status, 3-6 position, 7 SOG knots, 8 COG true, 9 date ddmmyy, 10-11 magvar,
    # 12 mode (2.3+), 13 navigational status (4.1).
    f = _Fields("RMC", data)
    tod = f.time_of_day(0)
    status = f.letter(1, "AVD", "status")
    lat, lon = f.position(2)
    knots = f.number(6, "speed")
    course = f.number(7, "course")
    day = _ddmmyy(f, f.raw(8))
    mode = f.letter(11, "ADEFMNPRS", "mode")
    if f.raw(11) and mode is None:
        mode = "N"
    unsafe = f.raw(12) == "U"
    valid = (status in ("A", "D") and (mode is None or mode_quality(mode) in _VALID_QUALITIES)
             and not unsafe and lat is not None)
    return RmcReport(
        talker, tod, valid, lat, lon,
        None if knots is None else knots * KNOT_M_S,
        None if course is None else course % 360.0,
        day, mode, tuple(f.errors),
    )


def _ddmmyy(f: _Fields, raw: str) -> date | None:
    """RMC date; the century is the one that puts the year in 1980..2079 (GPS began in 1980)."""
    if not raw:
        return None
    if len(raw) != 6 or not raw.isdigit():
        f.errors.append("date")
        return None
    dd, mm, yy = int(raw[:2]), int(raw[2:4]), int(raw[4:])
    try:
        return date(1900 + yy if yy >= 80 else 2000 + yy, mm, dd)
    except ValueError:
        f.errors.append("date")
        return None


def _gns(talker: str, data: list[str]) -> GnsReport:
    # 1 time, 2-5 position, 6 mode string, 7 satellites, 8 HDOP, 9 altitude MSL (m), 10 geoid sep,
    # 11 age of differential data, 12 station, 13 navigational status (4.1).
    f = _Fields("GNS", data)
    tod = f.time_of_day(0)
    lat, lon = f.position(1)
    mode = _mode_field(f, 5) or "N"
    hdop = f.number(7, "hdop")
    return GnsReport(talker, tod, lat, lon, mode, f.count(6, "satellites") or 0,
                     None if hdop is not None and hdop >= 99.0 else hdop,
                     f.number(8, "altitude"), f.raw(12) == "U", tuple(f.errors))


def _gll(talker: str, data: list[str]) -> GllReport:
    # 1-4 position, 5 time, 6 status, 7 mode (2.3+).  Very old receivers stop after the position.
    f = _Fields("GLL", data)
    lat, lon = f.position(0)
    tod = f.time_of_day(4)
    status = f.letter(5, "AV", "status")
    mode = f.letter(6, "ADEFMNPRS", "mode")
    if f.raw(6) and mode is None:
        mode = "N"
    # Garmin 65-era GLL has neither time nor status: a position with nothing saying it is a fix.
    ok = status == "A" and lat is not None
    return GllReport(talker, tod, lat, lon, ok, mode, tuple(f.errors))


def _zda(talker: str, data: list[str]) -> ZdaReport:
    # 1 time, 2 day, 3 month, 4 year (4 digits), 5-6 local zone (ignored: we keep UTC).
    f = _Fields("ZDA", data)
    tod = f.time_of_day(0)
    day = f.count(1, "date")
    month = f.count(2, "date")
    year = f.count(3, "date")
    the_date: date | None = None
    if day is not None and month is not None and year is not None:
        if 1980 <= year <= 2200:
            try:
                the_date = date(year, month, day)
            except ValueError:
                f.errors.append("date")
        else:
            f.errors.append("date")
    return ZdaReport(talker, tod, the_date, tuple(f.errors))


_PARSERS = {"GGA": _gga, "RMC": _rmc, "GNS": _gns, "GLL": _gll, "ZDA": _zda}

# formatter -> (minimum data fields with a checksum, full count required without one)
_FIELD_COUNTS = {
    "GGA": (6, 14),
    "RMC": (9, 9),  # never without a checksum
    "GNS": (6, 12),
    "GLL": (4, 6),
    "ZDA": (4, 6),
}

assert set(_PARSERS) == set(_FIELD_COUNTS)
assert all(_FORMATTER_RE.match(k) for k in _PARSERS)
