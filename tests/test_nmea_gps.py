"""NMEA 0183 GPS driver: pure parser/splitter/assembler tests, then the real driver against the
hal_sim emulator over a pseudo-terminal (real bytes, real pyserial, injected faults)."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
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
from drivers.nmea_gps import (
    GgaReport,
    NmeaError,
    NmeaFixAssembler,
    NmeaGpsReceiver,
    NmeaLineSplitter,
    RmcReport,
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


# =========================================================================== pure parser
def test_classic_gga_decodes() -> None:
    r = parse_sentence(CLASSIC_GGA)
    assert isinstance(r, GgaReport)
    assert r.lat_deg == pytest.approx(48 + 7.038 / 60, abs=1e-12)
    assert r.lon_deg == pytest.approx(11 + 31.0 / 60, abs=1e-12)
    assert r.quality == FixQuality.GPS
    assert (r.num_satellites, r.hdop, r.alt_m) == (8, 0.9, 545.4)
    assert r.time_utc == dtime(12, 35, 19, tzinfo=UTC)


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
    assert isinstance(rmc, RmcReport) and not rmc.valid and rmc.quality == FixQuality.INVALID
    assert rmc.date_utc == date(2024, 5, 1)  # the receiver's RTC still knows the date


@pytest.mark.parametrize(
    "line,kind",
    [
        (CLASSIC_GGA[:-2] + "48", "checksum"),
        (CLASSIC_GGA[:-3], "missing_checksum"),
        (CLASSIC_GGA[:-2] + "G7", "checksum"),
        (b"$GPGGA,123519,48\xff7.038,N*47", "non_ascii"),
        ("$GPGGA,1235\x0719,4807.038*47", "non_ascii"),
        ("garbage without dollar", "parse"),
    ],
)
def test_framing_errors_name_their_kind(line: str | bytes, kind: str) -> None:
    with pytest.raises(NmeaError) as exc:
        parse_sentence(line)
    assert exc.value.kind == kind


def _with_checksum(body: str) -> str:
    cs = 0
    for ch in body.encode():
        cs ^= ch
    return f"${body}*{cs:02X}"


@pytest.mark.parametrize(
    "body,needle",
    [
        ("GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "latitude"),  # 67 minutes
        ("GPGGA,123519,4807.038,X,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "latitude"),
        ("GPGGA,123519,,,,,1,08,0.9,545.4,M,46.9,M,,", "without a position"),
        ("GPGGA,123519,4807.038,N,01131.000,E,9,08,0.9,545.4,M,46.9,M,,", "quality"),
        ("GPGGA,126519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "time"),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,54x.4,M,46.9,M,,", "altitude"),
        ("GPGGA,123519,4807.038", "fields"),
        ("GPRMC,123519,Q,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W", "status"),
        ("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,320394,003.1,W", "date"),
    ],
)
def test_field_errors_are_parse_errors_naming_the_field(body: str, needle: str) -> None:
    with pytest.raises(NmeaError) as exc:
        parse_sentence(_with_checksum(body))
    assert exc.value.kind == "parse"
    assert needle in str(exc.value)


@pytest.mark.parametrize(
    "line",
    [
        "$GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1*39",
        "$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48",
        _with_checksum("PUBX,00,081350.00,4717.113210,N,00833.915187,E"),
    ],
)
def test_other_sentence_types_are_ignored(line: str) -> None:
    assert parse_sentence(line) is None


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


# =========================================================================== assembler
def test_assembler_merges_gga_and_rmc_across_midnight() -> None:
    asm = NmeaFixAssembler()
    t0 = datetime(2024, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)
    t1 = datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC)
    asm.update(parse_sentence(render_rmc("GN", t0, 52.0, 4.0, 5.0, 90.0, 1)), 10.0)  # type: ignore[arg-type]
    fix = asm.update(parse_sentence(render_gga("GN", t1, 52.0, 4.0, 3.2, 4, 14, 0.6)), 10.4)  # type: ignore[arg-type]
    assert fix.t_utc == t1  # date from the RMC of the previous day, rolled over
    assert fix.quality == FixQuality.RTK and fix.alt_m == 3.2 and fix.num_satellites == 14
    assert fix.speed_m_s == pytest.approx(5.0, abs=1e-3) and fix.course_deg == pytest.approx(90.0)


def test_assembler_fix_loss_keeps_last_position() -> None:
    asm = NmeaFixAssembler()
    t = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
    first = asm.update(parse_sentence(render_gga("GP", t, None, None, None, 0, 0, None)), 1.0)  # type: ignore[arg-type]
    assert not first.valid and math.isnan(first.lat_deg) and first.t_utc is None  # no date yet
    asm.update(parse_sentence(render_gga("GP", t, -1.5, 36.8, 1700.0, 1, 7, 1.1)), 2.0)  # type: ignore[arg-type]
    lost = asm.update(parse_sentence(render_rmc("GP", t, None, None, None, None, 0)), 3.0)  # type: ignore[arg-type]
    assert not lost.valid and lost.speed_m_s is None
    assert (lost.lat_deg, lost.lon_deg, lost.alt_m) == pytest.approx((-1.5, 36.8, 1700.0), abs=1e-6)
    assert lost.t_utc == t


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


def test_bad_input_is_counted_and_fixes_keep_coming(emulator: NmeaEmulator, gps: NmeaGpsReceiver) -> None:
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
                            + b"\r\n")  # checksum right, field wrong
    wait_for(lambda: gps.stats()["fixes_valid"] >= before["fixes_valid"] + 10, "valid fixes after the faults")
    after = gps.stats()
    delta = {k: after[k] - before[k] for k in before if isinstance(before[k], int)}
    assert delta["garbage_bytes"] == len(junk)
    assert delta["non_ascii_lines"] == 1
    assert delta["truncated_sentences"] == 1
    assert delta["missing_checksum"] == 1
    assert delta["checksum_errors"] == 2  # the bad one and the missing one
    assert delta["overlong_lines"] == 2
    assert delta["parse_errors"] == 1
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
        with dev, pytest.raises(DeviceTimeout, match="no GGA/RMC fix"):
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
