"""NMEA 0183 GPS driver: pure parser/splitter/epoch-assembler tests, then the real driver against the
hal_sim emulator over a pseudo-terminal (real bytes, real pyserial, injected faults).

Sentence cases follow NMEA 0183 v4.10 (GGA, RMC, GNS, GLL, ZDA field definitions); the epoch
merging follows gpsd's driver_nmea0183.c cycle detector.  Whole real-receiver captures are
scored by ``cedge bench gps`` (tests/test_bench_gps.py).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import pytest

from agent.hal.interfaces import (
    Clock,
    DeviceContext,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    FixQuality,
    GnssFix,
    SensorState,
)
from agent.hal.registry import create_device
from drivers.gps_week_rollover import GPS_WEEK_ROLLOVER, WeekRolloverGuard
from drivers.nmea_gps import (
    REJECT_REASONS,
    GgaReport,
    GllReport,
    GnsReport,
    Ignored,
    NmeaDecoder,
    NmeaEpochAssembler,
    NmeaError,
    NmeaGpsReceiver,
    NmeaLineSplitter,
    RmcReport,
    ZdaReport,
    parse_line,
    parse_sentence,
)
from hal_sim.nmea_emulator import (
    NmeaEmulator,
    render_gga,
    render_rmc,
    route_source,
    serve_forever,
    stationary,
)

CLASSIC_GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
CLASSIC_RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
RATE_HZ = 20.0  # fast epochs keep the pty tests short


def wait_for(pred: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _with_checksum(body: str) -> str:
    cs = 0
    for ch in body.encode():
        cs ^= ch
    return f"${body}*{cs:02X}"


# =========================================================================== pure parser
def test_classic_gga_decodes() -> None:
    r = parse_sentence(CLASSIC_GGA)
    assert isinstance(r, GgaReport)
    assert r.lat_deg == pytest.approx(48 + 7.038 / 60, abs=1e-12)
    assert r.lon_deg == pytest.approx(11 + 31.0 / 60, abs=1e-12)
    assert r.quality == FixQuality.GPS
    assert (r.num_satellites, r.hdop, r.alt_m) == (8, 0.9, 545.4)
    assert r.time_utc == dtime(12, 35, 19, tzinfo=UTC)
    assert r.field_errors == ()


def test_classic_rmc_decodes_with_crlf_bytes() -> None:
    r = parse_sentence((CLASSIC_RMC + "\r\n").encode())
    assert isinstance(r, RmcReport)
    assert r.valid and r.quality == FixQuality.GPS and r.mode is None
    assert r.speed_m_s == pytest.approx(22.4 * 1852 / 3600, abs=1e-12)
    assert r.course_deg == pytest.approx(84.4)
    assert r.date_utc == date(1994, 3, 23)


@pytest.mark.parametrize("talker", ["GP", "GN", "GL"])
@pytest.mark.parametrize(
    "lat,lon",
    [(48.1173, 11.516666), (-33.8688197, -151.2092955), (59.99999999, -0.00000001), (0.0, 179.9999)],
)
def test_render_parse_round_trip(talker: str, lat: float, lon: float) -> None:
    t = datetime(2024, 2, 29, 23, 59, 58, 250000, tzinfo=UTC)
    gga = parse_sentence(render_gga(talker, t, lat, lon, -12.3, 2, 11, 0.75))
    rmc = parse_sentence(render_rmc(talker, t, lat, lon, 13.9, 359.99, 2))
    assert isinstance(gga, GgaReport) and isinstance(rmc, RmcReport)
    for r in (gga, rmc):
        assert r.talker == talker
        assert abs(r.lat_deg - lat) < 1e-6 and abs(r.lon_deg - lon) < 1e-6  # type: ignore[operator]
        assert r.time_utc == dtime(23, 59, 58, 250000, tzinfo=UTC)
    assert gga.quality == FixQuality.DGPS and gga.alt_m == -12.3 and gga.num_satellites == 11
    assert rmc.quality == FixQuality.DGPS and rmc.mode == "D" and rmc.date_utc == date(2024, 2, 29)
    assert rmc.speed_m_s == pytest.approx(13.9, abs=1e-3)


def test_no_fix_sentences_decode_as_invalid() -> None:
    t = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)
    gga = parse_sentence(render_gga("GN", t, None, None, None, 0, 0, None))
    rmc = parse_sentence(render_rmc("GN", t, None, None, None, None, 0))
    assert isinstance(gga, GgaReport) and gga.quality == FixQuality.INVALID and gga.lat_deg is None
    assert gga.hdop is None  # 99.99 is the receivers' "no DOP"
    assert isinstance(rmc, RmcReport) and not rmc.valid and rmc.quality == FixQuality.INVALID
    assert rmc.date_utc == date(2024, 5, 1)  # the receiver's RTC still knows the date


@pytest.mark.parametrize(
    "line,kind",
    [
        (CLASSIC_GGA[:-2] + "48", "checksum"),
        (CLASSIC_GGA[:-2] + "G7", "checksum"),
        (CLASSIC_RMC[:-3], "missing_checksum"),  # mandatory for RMC (NMEA 0183 v2.x)
        ("$GPGGA,123519,4807.0", "truncated"),  # no checksum and cut short: not the full sentence
        (b"$GPGGA,123519,48\xff7.038,N*47", "non_ascii"),
        ("$GPGGA,1235\x0719,4807.038*47", "non_ascii"),
        ("garbage without dollar", "framing"),
        ("$GPGGA,1$GPGGA*00", "framing"),
        ("$" + "A" * 300, "overlong"),
        (_with_checksum("GPGGA,126519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), "bad_time"),
        (_with_checksum("GPGGA,12:35:19,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), "bad_time"),
        (_with_checksum("GPGGA,123519,4807.038"), "truncated"),
        (_with_checksum("GPRMC,123519,A,4807.038,N,01131.000,E"), "truncated"),
    ],
)
def test_rejected_lines_name_their_reason(line: str | bytes, kind: str) -> None:
    with pytest.raises(NmeaError) as exc:
        parse_sentence(line)
    assert exc.value.kind == kind and kind in REJECT_REASONS
    assert str(exc.value)  # says what was wrong


def test_missing_checksum_is_allowed_where_the_standard_allows_it() -> None:
    """NMEA 0183 v2.x makes the checksum mandatory for RMA/RMB/RMC only; a complete GGA without
    one is accepted (and counted as unchecked), as gpsd's lexer does."""
    dec = NmeaDecoder()
    r = dec.decode(CLASSIC_GGA[:-3])
    assert isinstance(r, GgaReport) and r.lat_deg == pytest.approx(48.1173)
    assert dec.unchecked == 1 and dec.rejected == {}
    assert dec.decode(CLASSIC_RMC[:-3]) is None and dec.rejected == {"missing_checksum": 1}


@pytest.mark.parametrize(
    "body,field,check",
    [
        # the no-fix placeholder latitude: no position, but the sentence and its time stay
        ("GPGGA,123519,8960.0000,N,00000.0000,E,0,00,99.99,,M,,M,,", "position",
         lambda r: r.lat_deg is None and r.time_utc == dtime(12, 35, 19, tzinfo=UTC)),
        ("GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "position",  # 67 minutes
         lambda r: r.lat_deg is None and r.lon_deg is None and r.alt_m == 545.4),
        ("GPGGA,123519,4807.038,X,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "position", lambda r: r.lat_deg is None),
        ("GPGGA,123519,4807.038,N,01131.000,E,9,08,0.9,545.4,M,46.9,M,,", "quality",
         lambda r: r.quality == FixQuality.INVALID),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,54x.4,M,46.9,M,,", "altitude",
         lambda r: r.alt_m is None and r.lat_deg is not None),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,nan,545.4,M,46.9,M,,", "hdop", lambda r: r.hdop is None),
        ("GPRMC,123519,Q,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W", "status", lambda r: not r.valid),
        ("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,320394,003.1,W", "date",
         lambda r: r.date_utc is None and r.valid),
        ("GPRMC,000231.099,A,4829.0005,N,00022.0015,E,0.15,212.28,2208-1,,,A", "date",  # Telit HE910 year -1
         lambda r: r.date_utc is None and r.time_utc == dtime(0, 2, 31, 99000, tzinfo=UTC)),
        ("GPZDA,160012.71,11,13,2004,-1,00", "date", lambda r: r.date_utc is None),
    ],
)
def test_unusable_fields_are_dropped_not_the_sentence(body: str, field: str, check: Callable) -> None:
    r = parse_sentence(_with_checksum(body))
    assert r is not None and field in r.field_errors
    assert check(r)


def test_gns_gll_zda_decode() -> None:
    gns = parse_sentence(_with_checksum("GPGNS,224749.00,3333.4268304,N,11153.3538273,W,D,19,0.6,406.110,-26.294,"
                                        "6.0,0138,S,"))
    assert isinstance(gns, GnsReport)
    assert gns.lat_deg == pytest.approx(33 + 33.4268304 / 60) and gns.lon_deg == pytest.approx(-(111 + 53.3538273 / 60))
    assert (gns.quality, gns.num_satellites, gns.hdop, gns.alt_m) == (FixQuality.DGPS, 19, 0.6, 406.11)
    gll = parse_sentence("$GPGLL,4916.45,N,12311.12,W,225444,A,A*5C")
    assert isinstance(gll, GllReport) and gll.quality == FixQuality.GPS
    assert gll.time_utc == dtime(22, 54, 44, tzinfo=UTC) and gll.lat_deg == pytest.approx(49 + 16.45 / 60)
    zda = parse_sentence("$GPZDA,160012.71,11,03,2004,-1,00*7D")
    assert isinstance(zda, ZdaReport) and zda.date_utc == date(2004, 3, 11)
    assert zda.time_utc == dtime(16, 0, 12, 710000, tzinfo=UTC)


@pytest.mark.parametrize(
    "line,quality",
    [
        # GNS mode: one letter per constellation (GPS, GLONASS, Galileo, BeiDou ...)
        (_with_checksum("GNGNS,101500.00,5221.6802,N,00453.1230,E,NA,08,0.9,12.3,47.1,,,V"), FixQuality.GPS),
        (_with_checksum("GNGNS,101500.00,5221.6802,N,00453.1230,E,NRN,08,0.9,12.3,47.1,,,V"), FixQuality.RTK),
        (_with_checksum("GNGNS,101500.00,5221.6802,N,00453.1230,E,NN,00,,,,,,V"), FixQuality.INVALID),
        (_with_checksum("GNGNS,101500.00,5221.6802,N,00453.1230,E,AS,08,0.9,12.3,47.1,,,V"), FixQuality.SIMULATION),
        (_with_checksum("GNGNS,101500.00,5221.6802,N,00453.1230,E,AA,08,0.9,12.3,47.1,,,U"), FixQuality.INVALID),
        (_with_checksum("GPRMC,101500,A,5221.6802,N,00453.1230,E,0.0,0.0,050324,,,S"), FixQuality.SIMULATION),
        (_with_checksum("GPRMC,101500,A,5221.6802,N,00453.1230,E,0.0,0.0,050324,,,E"), FixQuality.ESTIMATED),
        (_with_checksum("GPRMC,101500,A,5221.6802,N,00453.1230,E,0.0,0.0,050324,,,M"), FixQuality.MANUAL),
        (_with_checksum("GPRMC,101500,V,5221.6802,N,00453.1230,E,0.0,0.0,050324,,,S"), FixQuality.SIMULATION),
        (_with_checksum("GPRMC,101500,A,5221.6802,N,00453.1230,E,0.0,0.0,050324,,,A,V"), FixQuality.GPS),
        (_with_checksum("GPGLL,5221.6802,N,00453.1230,E,101500,A,E"), FixQuality.ESTIMATED),
        (_with_checksum("GPGLL,5221.6802,N,00453.1230,E,101500,V,N"), FixQuality.INVALID),
        (_with_checksum("GPGGA,101500,5221.6802,N,00453.1230,E,6,08,0.9,12.3,M,47.1,M,,"), FixQuality.ESTIMATED),
        (_with_checksum("GPGGA,101500,5221.6802,N,00453.1230,E,8,08,0.9,12.3,M,47.1,M,,"), FixQuality.SIMULATION),
    ],
)
def test_mode_indicators_follow_nmea_4_10(line: str, quality: FixQuality) -> None:
    """RMC navigational status V means "not provided" (u-blox always sends it), only U is unsafe."""
    r = parse_sentence(line)
    assert r is not None and r.quality == quality


@pytest.mark.parametrize(
    "line,reason",
    [
        ("$GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1*39", "GSA"),
        ("$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48", "VTG"),
        (_with_checksum("PUBX,00,081350.00,4717.113210,N,00833.915187,E"), "proprietary"),
        (_with_checksum("GYOACC,1.25,0.75"), "non_standard"),
        ("$SNRSTAT,3,42,38,40", "non_standard"),
        ("$LOG108,boot=1", "non_standard"),
        ("$PGRME,15.0,M,22.5,M,27.0,M*1A", "proprietary"),
    ],
)
def test_other_sentences_are_ignored_with_a_reason(line: str, reason: str) -> None:
    out = parse_line(line)
    assert isinstance(out, Ignored) and out.reason == reason
    assert parse_sentence(line) is None


def test_decoder_counts_every_unused_line_by_reason_and_bounds_its_keys() -> None:
    dec = NmeaDecoder()
    lines = [CLASSIC_GGA, CLASSIC_GGA[:-2] + "00", "$GPGSV,1,1,00*79", "$SNRSTAT,1", "$PGRMZ,2282,f,3*21",
             "junk", _with_checksum("GPGGA,123519,8960.0000,N,00000.0000,E,0,00,99.99,,M,,M,,")]
    assert [dec.decode(x) is not None for x in lines] == [True, False, False, False, False, False, True]
    counts = dec.counts()
    assert counts["rejected_lines"] == {"checksum": 1, "framing": 1}
    assert counts["ignored_sentences"] == {"GSV": 1, "non_standard": 1, "proprietary": 1}
    assert counts["field_errors"] == {"position": 1}
    for i in range(200):  # a stream of invented sentence types cannot grow the counters without bound
        dec.decode(_with_checksum(f"GP{chr(65 + i % 26)}{chr(65 + i // 26 % 26)}Q,1"))
    assert len(dec.counts()["ignored_sentences"]) <= 64 + 1


# =========================================================================== line splitter
def test_splitter_reassembles_lines_fed_byte_by_byte_with_any_terminator() -> None:
    stream = (CLASSIC_GGA + "\r\n" + CLASSIC_RMC + "\n" + CLASSIC_GGA + "\r").encode()
    sp = NmeaLineSplitter()
    lines = [line for b in stream for line in sp.feed(bytes([b]))]
    assert lines == [CLASSIC_GGA.encode(), CLASSIC_RMC.encode(), CLASSIC_GGA.encode()]
    assert sp.garbage_bytes == 0 and sp.truncated == 0


def test_splitter_counts_garbage_truncation_and_overlong() -> None:
    sp = NmeaLineSplitter(max_line_bytes=100)
    out = sp.feed(b"\x00\xffjunk" + CLASSIC_GGA[:30].encode())  # 6 junk bytes, then a cut sentence
    out += sp.feed(CLASSIC_RMC.encode() + b"\r\n")
    out += sp.feed(b"$" + b"A" * 150)  # overlong, no terminator yet
    out += sp.feed(b"B" * 500 + b"\r\n" + CLASSIC_GGA.encode() + b"\r\n")
    assert out == [CLASSIC_RMC.encode(), CLASSIC_GGA.encode()]
    assert (sp.garbage_bytes, sp.truncated, sp.overlong_lines) == (6, 1, 1)


# =========================================================================== epochs
def _feed(asm: NmeaEpochAssembler, bodies: list[str], t0: float = 0.0) -> list[GnssFix]:
    out: list[GnssFix] = []
    for i, body in enumerate(bodies):
        r = parse_sentence(_with_checksum(body))
        assert r is not None, body
        out += asm.feed(r, t0 + 0.01 * i)
    return out


def test_one_fix_per_epoch_with_cycle_ender_learned_as_gpsd_does() -> None:
    """First epoch: reported when the next one starts; then the learned ender (the type that came
    last) reports each epoch as soon as it arrives."""
    asm = NmeaEpochAssembler()

    def epoch(s: int) -> list[str]:
        return [f"GPRMC,1200{s:02d},A,4807.038,N,01131.000,E,5.0,90.0,050324,,,A",
                f"GPGGA,1200{s:02d},4807.038,N,01131.000,E,2,09,0.9,545.4,M,46.9,M,,"]

    assert _feed(asm, epoch(0)) == []  # nothing known yet about where an epoch ends
    fixes = _feed(asm, epoch(1)[:1])  # RMC of 12:00:01 ends the 12:00:00 epoch
    assert [f.t_utc for f in fixes] == [datetime(2024, 3, 5, 12, 0, 0, tzinfo=UTC)]
    assert asm.cycle_enders == {"GGA"}
    f = fixes[0]
    assert f.valid and f.quality == FixQuality.DGPS and f.alt_m == 545.4 and f.num_satellites == 9
    assert f.speed_m_s == pytest.approx(5.0 * 1852 / 3600) and f.course_deg == 90.0
    fixes = _feed(asm, epoch(1)[1:])  # the GGA of 12:00:01 is the ender: reported at once
    assert [f.t_utc for f in fixes] == [datetime(2024, 3, 5, 12, 0, 1, tzinfo=UTC)]
    assert asm.flush() is None  # nothing new since


@pytest.mark.parametrize(
    "bodies,date_seen",
    [
        # a receiver sending only GNS, GLL and ZDA
        (["GNGNS,101500.00,5221.6802,N,00453.1230,E,AAN,11,0.9,12.3,47.1,,,V",
          "GNGLL,5221.6802,N,00453.1230,E,101500.00,A,A", "GNZDA,101500.00,05,03,2024,00,00"], True),
        # GGA + ZDA (timing receivers): ZDA after GGA still dates the epoch
        (["GPGGA,101500.00,5221.6802,N,00453.1230,E,1,07,1.1,12.3,M,47.1,M,,", "GPZDA,101500.00,05,03,2024,00,00"],
         True),
        # GLL-timed, ZDA first
        (["GPZDA,101500.00,05,03,2024,00,00", "GPGLL,5221.6802,N,00453.1230,E,101500.00,A,A"], True),
        # GGA alone: a fix, but no date
        (["GPGGA,101500.00,5221.6802,N,00453.1230,E,1,07,1.1,12.3,M,47.1,M,,"], False),
    ],
)
def test_receivers_without_rmc_give_dated_fixes(bodies: list[str], date_seen: bool) -> None:
    asm = NmeaEpochAssembler()
    assert _feed(asm, bodies) == []
    fix = asm.flush()
    assert fix is not None and fix.valid
    assert fix.lat_deg == pytest.approx(52 + 21.6802 / 60) and fix.lon_deg == pytest.approx(4 + 53.1230 / 60)
    assert fix.t_utc == (datetime(2024, 3, 5, 10, 15, tzinfo=UTC) if date_seen else None)


def test_date_carries_across_midnight_to_epochs_without_one() -> None:
    asm = NmeaEpochAssembler()
    fixes = _feed(asm, ["GPRMC,235959.50,A,5200.0,N,00400.0,E,5.0,90.0,311224,,,A",
                        "GPGGA,235959.50,5200.0,N,00400.0,E,4,14,0.6,3.2,M,46.9,M,,",
                        "GPGGA,000000.50,5200.1,N,00400.0,E,4,14,0.6,3.2,M,46.9,M,,"])
    fixes += [f for f in [asm.flush()] if f is not None]
    assert [f.t_utc for f in fixes] == [datetime(2024, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
                                        datetime(2025, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)]
    assert fixes[1].quality == FixQuality.RTK and fixes[1].speed_m_s is None  # no RMC in that epoch


@pytest.mark.parametrize(
    "bodies,quality",
    [
        # Garmin Geko/GPSmap in simulator mode: RMC V with mode S, GGA quality 8, GLL V with mode S
        (["GPRMC,214350,V,4023.8600,N,00339.1630,W,10.8,0.0,140605,2.5,W,S",
          "GPGGA,214350,4023.8600,N,00339.1630,W,8,09,2.0,695.7,M,51.6,M,,",
          "GPGLL,4023.8600,N,00339.1630,W,214350,V,S"], FixQuality.SIMULATION),
        (["GPRMC,214350,A,4023.8600,N,00339.1630,W,10.8,0.0,140605,2.5,W,E",
          "GPGGA,214350,4023.8600,N,00339.1630,W,6,09,2.0,695.7,M,51.6,M,,"], FixQuality.ESTIMATED),
        # GGA says 1 but RMC says estimated (u-blox in a tunnel): not a fix
        (["GPRMC,214350,A,4023.8600,N,00339.1630,W,10.8,0.0,140605,2.5,W,E",
          "GPGGA,214350,4023.8600,N,00339.1630,W,1,09,2.0,695.7,M,51.6,M,,"], FixQuality.ESTIMATED),
        # quality 1 with "00" satellites in use and nothing else vouching: a held position (Hemisphere)
        (["GPGGA,194050.00,4221.8237733,N,07101.9411707,W,1,00,3.3,10.835,M,-33.320,M,,",
          "GPZDA,194050.00,07,09,2018,00,00"], FixQuality.INVALID),
    ],
)
def test_simulated_estimated_and_held_positions_are_not_fixes(bodies: list[str], quality: FixQuality) -> None:
    asm = NmeaEpochAssembler()
    _feed(asm, bodies)
    fix = asm.flush()
    assert fix is not None and not fix.valid and fix.quality == quality
    assert fix.speed_m_s is None and fix.hdop is None and math.isnan(fix.lat_deg)  # never had a fix


def test_placeholder_latitude_keeps_the_epoch_time_then_fix() -> None:
    asm = NmeaEpochAssembler()
    fixes = _feed(asm, ["GPRMC,083000.00,V,,,,,,,010225,,,N",
                        "GPGGA,083000.00,8960.0000,N,00000.0000,E,0,00,99.99,,M,,M,,",
                        "GPRMC,083001.00,A,5919.3456,N,01804.1234,E,0.12,,010225,,,A",
                        "GPGGA,083001.00,5919.3456,N,01804.1234,E,1,07,1.4,,M,,M,,"])
    fixes += [f for f in [asm.flush()] if f is not None]
    assert [(f.t_utc, f.valid) for f in fixes] == [(datetime(2025, 2, 1, 8, 30, 0, tzinfo=UTC), False),
                                                   (datetime(2025, 2, 1, 8, 30, 1, tzinfo=UTC), True)]
    assert fixes[1].alt_m == 0.0  # no altitude sent yet: 0, not NaN


def test_fix_loss_keeps_last_position_and_timeless_no_fix_is_reported() -> None:
    asm = NmeaEpochAssembler()
    _feed(asm, ["GPRMC,120000,A,0130.0000,S,03648.0000,E,0.0,0.0,010624,,,A",
                "GPGGA,120000,0130.0000,S,03648.0000,E,1,07,1.1,1700.0,M,,M,,"])
    fixes = _feed(asm, ["GPRMC,,V,,,,,,,,,,N"])  # Quectel without a fix: no time at all
    assert len(fixes) == 2 and fixes[0].valid and not fixes[1].valid
    lost = fixes[1]
    assert lost.t_utc is None and lost.speed_m_s is None
    assert (lost.lat_deg, lost.lon_deg, lost.alt_m) == pytest.approx((-1.5, 36.8, 1700.0), abs=1e-9)


# =========================================================================== week rollover
def test_rollover_moves_1999_dates_to_2019_against_the_clock() -> None:
    clock = datetime(2019, 4, 7, 12, 0, tzinfo=UTC)
    guard = WeekRolloverGuard(clock=lambda: clock)
    asm = NmeaEpochAssembler(guard)
    _feed(asm, ["GPRMC,000231.42,A,4829.0005,N,00022.0016,E,0.16,212.28,220899,,,A"])
    fix = asm.flush()
    assert fix is not None and fix.t_utc == datetime(2019, 4, 7, 0, 2, 31, 420000, tzinfo=UTC)
    assert guard.corrections == 1


@pytest.mark.parametrize(
    "build,clock,given,expected",
    [
        # a receiver two rollovers behind (1980 epoch firmware in 2019)
        (None, datetime(2019, 4, 7, tzinfo=UTC), datetime(1980, 1, 6, 1, tzinfo=UTC) + timedelta(weeks=1),
         datetime(1980, 1, 6, 1, tzinfo=UTC) + timedelta(weeks=1) + 2 * GPS_WEEK_ROLLOVER),
        # clock unset (Raspberry Pi at 1970) but a build date: the build date decides
        (date(2025, 6, 1), datetime(1970, 1, 1, tzinfo=UTC), datetime(2006, 5, 20, tzinfo=UTC),
         datetime(2006, 5, 20, tzinfo=UTC) + GPS_WEEK_ROLLOVER),
        # a true date is left alone, also with the clock a few months off
        (date(2024, 1, 1), datetime(2025, 10, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC),
         datetime(2025, 3, 1, tzinfo=UTC)),
        # nothing known: no guard
        (None, None, datetime(1999, 8, 22, tzinfo=UTC), datetime(1999, 8, 22, tzinfo=UTC)),
    ],
)
def test_rollover_guard_rules(build: date | None, clock: datetime | None, given: datetime, expected: datetime) -> None:
    guard = WeekRolloverGuard(build, clock=None if clock is None else (lambda: clock))
    assert guard.correct(given) == expected


# =========================================================================== driver over a pty
@pytest.fixture
def emulator() -> Iterator[NmeaEmulator]:
    with NmeaEmulator(stationary(), rate_hz=RATE_HZ) as emu:
        yield emu


@pytest.fixture
def gps(emulator: NmeaEmulator) -> Iterator[NmeaGpsReceiver]:
    with NmeaGpsReceiver(emulator.port, baudrate=9600, stale_after_s=0.4) as dev:
        assert isinstance(dev, NmeaGpsReceiver)
        dev.read_fix(timeout_s=5.0)
        yield dev


def _assert_matches_truth(fix: GnssFix, emu: NmeaEmulator) -> None:
    assert fix.t_utc is not None
    truth = emu.truth_at(fix.t_utc)
    assert truth is not None, f"no emitted epoch at {fix.t_utc}"
    assert fix.t_utc == truth.t_utc
    assert abs(fix.lat_deg - truth.lat_deg) < 1e-6 and abs(fix.lon_deg - truth.lon_deg) < 1e-6
    assert fix.alt_m == pytest.approx(truth.alt_m, abs=0.05)
    assert fix.speed_m_s == pytest.approx(truth.speed_m_s, abs=1e-3)
    assert fix.course_deg == pytest.approx(truth.course_deg, abs=0.01)
    assert fix.quality == truth.quality


def test_moving_fixes_match_what_the_emulator_sent() -> None:
    route = route_source([(51.9225, 4.4792), (51.9325, 4.4992)], speed_m_s=13.0, alt_m=-2.5, loop=False)
    with (
        NmeaEmulator(route, rate_hz=RATE_HZ, talker="GN", noise_sentences=True) as emu,
        NmeaGpsReceiver(emu.port, stale_after_s=1.0) as dev,
    ):
        assert isinstance(dev, NmeaGpsReceiver)
        seen: dict[datetime, GnssFix] = {}
        deadline = time.monotonic() + 5.0
        while len(seen) < 8 and time.monotonic() < deadline:
            fix = dev.read_fix(timeout_s=2.0)
            if fix.t_utc is not None and fix.t_utc not in seen:
                seen[fix.t_utc] = fix
            time.sleep(0.02)
        assert len(seen) >= 8
        for fix in seen.values():
            _assert_matches_truth(fix, emu)
            assert fix.t_mono_s <= time.monotonic()
        lats = [f.lat_deg for _, f in sorted(seen.items())]
        assert lats == sorted(lats)  # heading north-east: latitude grows epoch by epoch
        stats = dev.stats()
        assert stats["sentences_ignored"] > 0  # VTG and GSA were read and set aside
        assert stats["checksum_errors"] == stats["parse_errors"] == stats["garbage_bytes"] == 0
        assert dev.state == SensorState.OK
        assert dev.describe()["stats"]["sentences_ok"] >= stats["sentences_ok"]


def test_utc_date_rolls_over_at_midnight() -> None:
    start = datetime(2024, 12, 31, 23, 59, 59, 700000, tzinfo=UTC)
    with (
        NmeaEmulator(stationary(), rate_hz=RATE_HZ, start_utc=start) as emu,
        NmeaGpsReceiver(emu.port) as dev,
    ):
        assert isinstance(dev, NmeaGpsReceiver)
        wait_for(lambda: (f := dev.read_fix(2.0)).t_utc is not None and f.t_utc.year == 2025, "new year")
        fix = dev.read_fix(1.0)
        assert fix.t_utc is not None and fix.t_utc.date() == date(2025, 1, 1)
        assert emu.truth_at(fix.t_utc) is not None


def test_bad_input_is_counted_and_fixes_keep_coming(emulator: NmeaEmulator, gps: NmeaGpsReceiver,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(20240611)
    junk = bytes(b for b in rng.randbytes(600) if b not in b"$\r\n")
    before = gps.stats()
    emulator.inject_garbage(junk)  # binary line noise
    emulator.inject_garbage(b"$GPGGA,123519,48\xff\xfe7.038,N,01131.000,E*47\r\n")  # non-ASCII inside
    emulator.inject_truncated()  # cut short, next sentence follows directly
    emulator.inject_truncated(with_newline=True)  # cut short but terminated: no checksum left
    emulator.inject_bad_checksum()
    emulator.inject_garbage(b"$GPGGA," + b"9" * 5000)  # overlong, never terminated
    emulator.inject_garbage(b"$GPTXT," + b"Z" * 400 + b"*00\r\n")  # overlong, terminated
    emulator.inject_garbage(_with_checksum("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,5x5.4,M,,M,,").encode()
                            + b"\r\n")  # checksum right, one field wrong: kept without its altitude
    emulator.inject_garbage(b"$GYOACC,1.25,0.75*14\r\n$SNRSTAT,3,42\r\n$LOG108,boot=1\r\n")  # receiver extras
    with caplog.at_level(logging.INFO, logger="drivers.nmea_gps"):
        wait_for(lambda: gps.stats()["fixes_valid"] >= before["fixes_valid"] + 10, "valid fixes after the faults")
    after = gps.stats()
    delta = {k: after[k] - before[k] for k in before if isinstance(before[k], int)}
    assert delta["garbage_bytes"] == len(junk)
    assert delta["non_ascii_lines"] == 1
    assert delta["truncated_sentences"] == 1
    assert delta["missing_checksum"] == 0  # GGA may come without one (NMEA 0183 v2.x) ...
    assert after["rejected_lines"].get("truncated", 0) - before["rejected_lines"].get("truncated", 0) == 1  # ... whole
    assert delta["checksum_errors"] == 1
    assert delta["overlong_lines"] == 2
    assert delta["parse_errors"] == 1  # the truncated one
    assert after["field_errors"].get("altitude", 0) == before["field_errors"].get("altitude", 0) + 1
    assert after["ignored_sentences"]["non_standard"] - before["ignored_sentences"].get("non_standard", 0) == 3
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "truncated" in logged and "GYOACC" not in logged and "SNRSTAT" not in logged and "LOG108" not in logged
    fix = gps.read_fix(1.0)
    assert fix.valid and gps.state == SensorState.OK
    _assert_matches_truth(fix, emulator)


def test_fix_loss_gives_invalid_then_recovers(emulator: NmeaEmulator, gps: NmeaGpsReceiver) -> None:
    good = gps.read_fix(1.0)
    emulator.set_fix_lost(True)
    wait_for(lambda: not gps.read_fix(1.0).valid, "fix loss")
    lost = gps.read_fix(1.0)
    assert (lost.lat_deg, lost.lon_deg, lost.alt_m) == (good.lat_deg, good.lon_deg, good.alt_m)
    assert lost.t_utc is not None  # receiver time keeps running without a position
    assert gps.state == SensorState.DEGRADED and "no GNSS fix" in gps.state_detail
    emulator.set_fix_lost(False)
    wait_for(lambda: gps.read_fix(1.0).valid, "fix recovery")
    assert gps.state == SensorState.OK


def test_simulator_receiver_is_degraded_not_a_fix_and_a_bad_listener_is_survived(
        caplog: pytest.LogCaptureFixture) -> None:
    """A receiver in simulator mode (GGA quality 8, RMC mode S) over the pty: every epoch is
    reported, none is a fix, the device says why; a listener that raises is logged, not fatal."""
    seen: list[GnssFix] = []

    def broken(fix: GnssFix) -> None:
        raise RuntimeError("listener bug")

    with (
        NmeaEmulator(stationary(quality=8), rate_hz=RATE_HZ) as emu,
        NmeaGpsReceiver(emu.port, stale_after_s=1.0) as dev,
    ):
        assert isinstance(dev, NmeaGpsReceiver)
        dev.add_fix_listener(broken)
        dev.add_fix_listener(seen.append)
        wait_for(lambda: len(seen) >= 5, "epochs from the simulating receiver")
        assert all(not f.valid and f.quality == FixQuality.SIMULATION for f in seen)
        assert dev.state == SensorState.DEGRADED and "simulator mode" in dev.state_detail
        assert dev.stats()["fixes_valid"] == 0 and dev.stats()["cycle_enders"]
    assert "fix listener failed" in caplog.text


def test_week_rollover_over_the_pty_with_a_build_date() -> None:
    """The emulated receiver dates its fixes 1999-08-22 (the 2019-04-06 rollover); with
    build_date 2019-01-01 the driver dates them 2019-04-07, 1024 weeks later, time unchanged."""
    start = datetime(2019, 4, 7, 0, 2, 31, tzinfo=UTC) - GPS_WEEK_ROLLOVER
    with (
        NmeaEmulator(stationary(), rate_hz=RATE_HZ, start_utc=start) as emu,
        NmeaGpsReceiver(emu.port, build_date="2019-01-01") as dev,
    ):
        assert isinstance(dev, NmeaGpsReceiver)
        wait_for(lambda: (f := dev.read_fix(2.0)).t_utc is not None and f.valid, "a dated fix")
        fix = dev.read_fix(1.0)
        assert fix.t_utc is not None and fix.t_utc.date() == date(2019, 4, 7)
        truth = emu.truth_at(fix.t_utc - GPS_WEEK_ROLLOVER)
        assert truth is not None and truth.t_utc.date() == date(1999, 8, 22)
        assert dev.stats()["rollover_corrections"] >= 1 and dev.describe()["build_date"] == "2019-01-01"
    with pytest.raises(ValueError, match="ISO date"):
        NmeaGpsReceiver("/dev/null", build_date="1st of May")


def test_silence_degrades_then_recovers(emulator: NmeaEmulator, gps: NmeaGpsReceiver) -> None:
    emulator.pause(1.0)
    wait_for(lambda: gps.state == SensorState.DEGRADED, "DEGRADED on silence")
    assert gps.state_detail.startswith("no NMEA data for ")
    stale = gps.read_fix(0.1)
    assert not stale.valid and stale.t_utc is None
    wait_for(lambda: gps.state == SensorState.OK and gps.read_fix(0.1).valid, "recovery after silence")
    assert gps.stats()["stale_events"] >= 1


def test_vanished_port_fails_then_is_reopened(tmp_path: Path) -> None:
    with (
        NmeaEmulator(stationary(), rate_hz=RATE_HZ, link_path=tmp_path / "gps0") as emu,
        NmeaGpsReceiver(emu.port, stale_after_s=0.4, reopen_interval_s=0.1) as dev,
    ):
        assert isinstance(dev, NmeaGpsReceiver)
        assert dev.read_fix(5.0).valid
        emu.disconnect()
        wait_for(lambda: dev.state == SensorState.FAILED, "FAILED after unplug")
        assert "lost" in dev.state_detail
        wait_for(lambda: not dev.read_fix(0.1).valid, "stale fix while unplugged")
        emu.reconnect()
        wait_for(lambda: dev.state == SensorState.OK and dev.read_fix(0.1).valid, "reopen after replug")
        stats = dev.stats()
        assert stats["serial_errors"] >= 1 and stats["reopens"] == 1


def test_no_data_times_out_and_missing_port_is_unavailable(tmp_path: Path) -> None:
    emu = NmeaEmulator(stationary(), rate_hz=RATE_HZ)  # never started: the port is silent
    try:
        dev = NmeaGpsReceiver(emu.port)
        with pytest.raises(DeviceError):
            dev.read_fix(0.1)  # not opened yet
        with dev, pytest.raises(DeviceTimeout, match="no fix from"):
            dev.read_fix(0.3)
        assert dev.state == SensorState.CLOSED
        dev.close()  # idempotent
    finally:
        emu.close()
        emu.close()
    missing = NmeaGpsReceiver(str(tmp_path / "no_such_tty"))
    with pytest.raises(DeviceUnavailable, match="cannot open"):
        missing.open()
    assert missing.state == SensorState.FAILED


class _OffsetClock(Clock):
    def monotonic_s(self) -> float:
        return time.monotonic() + 1.0e6

    def utc_now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, duration_s: float) -> None:
        time.sleep(duration_s)


def test_registry_builds_driver_with_context_clock(emulator: NmeaEmulator) -> None:
    ctx = DeviceContext(unit_id="veh-01", clock=_OffsetClock())
    dev = create_device("gnss", "nmea", {"port": emulator.port, "baudrate": 4800}, ctx)
    assert isinstance(dev, NmeaGpsReceiver)
    with dev:
        fix = dev.read_fix(5.0)
        assert fix.t_mono_s > 1.0e6  # stamped with the unit's clock, not time.monotonic()
        info = dev.describe()
        assert info["port"] == emulator.port and info["baudrate"] == 4800 and "stats" in info



def test_serve_forever_runs_until_stopped_and_closes() -> None:
    emu = NmeaEmulator(stationary(), rate_hz=RATE_HZ)
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    serve_forever(emu, stop)  # returns once stop is set
    timer.join()
    assert emu.stats()["epochs"] >= 1 and not emu.connected
    emu.close()  # idempotent
