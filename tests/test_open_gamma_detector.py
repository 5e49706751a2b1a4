"""Open Gamma Detector driver: pure parsing layers, then the real driver against the hal_sim firmware
emulator over a pseudo-terminal (real bytes, real pyserial, injected faults).  The emulator's
output period is shortened to 0.1 s so the suite stays short; nothing else differs from 1 s."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.hal.interfaces import (
    DeviceContext,
    DeviceDataError,
    DeviceTimeout,
    DeviceUnavailable,
    SensorState,
    SpectrumReading,
)
from agent.hal.registry import create_device
from drivers.open_gamma_detector import (
    ADC_BINS,
    DEFAULT_BAUDRATE,
    CumulativeDifferencer,
    LineSplitter,
    OgdError,
    OpenGammaDetector,
    calibration_for,
    parse_data_line,
    rebin,
)
from hal_sim.ogd_emulator import BAUDRATE, EmittedPeriod, OgdEmulator, synthetic_source

PERIOD_S = 0.1
DEAD_TIME_US = 24.0


def wait_for(pred: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def read_n(dev: OpenGammaDetector, n: int) -> list[SpectrumReading]:
    return [dev.read_spectrum(timeout_s=3.0) for _ in range(n)]


def match_truth(readings: list[SpectrumReading], emitted: list[EmittedPeriod], n_out: int) -> list[int]:
    """Each reading must equal the summed increments of one or more consecutive periods (more than
    one where a line was lost: cumulative spectra conserve counts).  Returns periods per reading."""
    inc = [rebin(e.increment, n_out) for e in emitted]
    start = None
    for j in range(len(inc)):
        if np.array_equal(inc[j], readings[0].counts):
            start = j
            break
    assert start is not None, "first reading matches no emitted period"
    spans = []
    j = start
    for r in readings:
        acc = np.zeros(n_out, dtype=np.int64)
        for k in range(j, min(j + 30, len(inc))):
            acc = acc + inc[k]
            if np.array_equal(acc, r.counts):
                spans.append(k - j + 1)
                j = k + 1
                break
        else:
            raise AssertionError(f"reading {len(spans)} ({r.gross_counts} counts) matches no run of periods")
    return spans


@pytest.fixture
def emulator(tmp_path: Path, no_thread_leak: None) -> Iterator[OgdEmulator]:
    emu = OgdEmulator(synthetic_source(continuum_cps=900.0, peak_cps=300.0), period_s=PERIOD_S, seed=7,
                      dead_time_us=DEAD_TIME_US, link_path=tmp_path / "ogd0")
    emu.start()
    try:
        yield emu
    finally:
        emu.close()


def make_driver(emu: OgdEmulator, **kw: object) -> OpenGammaDetector:
    params: dict = {"interval_s": PERIOD_S, "device_period_s": PERIOD_S, "reopen_interval_s": 0.1}
    params.update(kw)
    return OpenGammaDetector(emu.port, **params)


# =========================================================================== pure layers
def test_default_baudrate_is_the_firmwares() -> None:
    assert DEFAULT_BAUDRATE == BAUDRATE == 2_000_000


def test_parse_data_line_spectrum_and_events() -> None:
    line = b";".join(str(i % 7).encode() for i in range(ADC_BINS)) + b";"
    values = parse_data_line(line)
    assert values.shape == (ADC_BINS,) and values[:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 0]
    assert parse_data_line(b"389;874;4095;0;", None).tolist() == [389, 874, 4095, 0]


@pytest.mark.parametrize(
    ("line", "kind"),
    [(b"12;0;3;", "truncated"), (b"\x00\xff12;3;", "garbage"), (b"12;x;3;", "garbage"), (b"12;3", "garbage"),
     (b"[#] x", "garbage")],
)
def test_parse_data_line_rejects(line: bytes, kind: str) -> None:
    with pytest.raises(OgdError) as ei:
        parse_data_line(line)
    assert ei.value.kind == kind


def test_event_value_out_of_adc_range_rejected() -> None:
    with pytest.raises(OgdError, match="4096"):
        parse_data_line(b"12;4096;", None)


def test_line_splitter_handles_chunks_crlf_and_overlong() -> None:
    sp = LineSplitter(max_line_bytes=32)
    assert sp.feed(b"1;2;") == []
    assert sp.feed(b"3;\r\n[#] ok\r") == [b"1;2;3;"]
    assert sp.feed(b"\n" + b"9" * 40) == [b"[#] ok"]
    assert sp.feed(b"9;\r\n4;\r\n") == [b"4;"]
    assert sp.overlong_lines == 1


def test_differencer_baseline_increment_reset_and_corruption() -> None:
    d = CumulativeDifferencer(max_consecutive_corrupt=3)
    a = np.array([5, 5, 5], dtype=np.int64)
    assert d.feed(a) == (None, "baseline")
    inc, kind = d.feed(np.array([6, 9, 5]))
    assert kind == "ok" and inc.tolist() == [1, 4, 0]
    with pytest.raises(OgdError) as ei:  # one channel down while the total rises: a damaged line
        d.feed(np.array([60, 1, 50]))
    assert ei.value.kind == "corrupt"
    inc, kind = d.feed(np.array([7, 9, 6]))  # baseline kept: counts conserved past the bad line
    assert kind == "ok" and inc.tolist() == [1, 0, 1]
    assert d.feed(np.array([1, 0, 0])) == (None, "reset")
    assert d.resets == 1


def test_differencer_rebaselines_after_repeated_disagreement() -> None:
    d = CumulativeDifferencer(max_consecutive_corrupt=2)
    d.feed(np.array([100, 0]))  # a damaged baseline (an extra digit in channel 0)
    with pytest.raises(OgdError):
        d.feed(np.array([10, 200]))
    with pytest.raises(OgdError, match="baseline re-taken"):
        d.feed(np.array([11, 206]))
    inc, kind = d.feed(np.array([12, 208]))
    assert kind == "ok" and inc.tolist() == [1, 2] and d.rebaselines == 1


def test_rebin_conserves_counts_and_calibration_composes() -> None:
    rng = np.random.default_rng(3)
    c = rng.poisson(3.0, ADC_BINS)
    r = rebin(c, 1024)
    assert r.shape == (1024,) and r.sum() == c.sum() and r[0] == c[:4].sum()
    with pytest.raises(ValueError):
        rebin(c, 1000)
    adc = (1.5, 0.7, 1e-5)
    cal = calibration_for(adc, 4)
    j = np.array([0.0, 10.0, 500.0, 1023.0])
    x = 4 * j + 1.5  # centre of the 4 ADC channels 4j .. 4j+3
    assert np.allclose(cal.energy_kev(j), adc[0] + adc[1] * x + adc[2] * x * x, rtol=1e-12)


# =========================================================================== driver against the emulator
def test_spectra_equal_emulator_truth_with_calibration_and_live_time(emulator: OgdEmulator) -> None:
    adc_cal = [2.0, 0.73, 2e-6]
    dev = make_driver(emulator, calibration_kev=adc_cal, detector_model="NaI 2x2 in")
    with dev:
        wait_for(lambda: dev.dead_time_us is not None, "dead time from 'read info'")
        for _ in range(dev.stats()["queued"]):  # spectra finished before the dead time was known
            dev.read_spectrum(timeout_s=1.0)
        readings = read_n(dev, 6)
        info = dev.describe()
    spans = match_truth(readings, emulator.emitted(), 1024)
    assert spans == [1] * 6  # every line arrived: one period per reading, exact counts
    assert emulator.commands_received[:3] == ["set mode energy", "set out spectrum", "read info"]
    for r in readings:
        assert r.n_channels == 1024 and r.counts.dtype == np.int64
        assert r.detector_model == "NaI 2x2 in"
        assert r.real_time_s > 0
        assert r.live_time_s == pytest.approx(r.real_time_s - r.gross_counts * DEAD_TIME_US * 1e-6, abs=1e-12)
        assert r.calibration.energy_kev(100.0) == pytest.approx(2.0 + 0.73 * 401.5 + 2e-6 * 401.5**2)
    assert info["firmware"] == "4.2.0" and info["dead_time_us"] == DEAD_TIME_US
    assert info["calibration"] == "configured" and info["adc_channels"] == ADC_BINS
    assert readings[-1].temperature_c == pytest.approx(27.4)


def test_garbage_between_lines_is_counted_and_costs_no_counts(emulator: OgdEmulator) -> None:
    with make_driver(emulator) as dev:
        first = read_n(dev, 2)
        emulator.inject_garbage(b"\x00\xfe\xff garbage \x07\r\n\xc3(")
        emulator.inject_garbage(b"%%%\r\n")
        rest = read_n(dev, 4)
        stats = dev.stats()
    match_truth(first + rest, emulator.emitted(), 1024)
    assert stats["garbage_lines"] >= 2
    assert dev.state == SensorState.CLOSED


@pytest.mark.parametrize("how", ["drop", "cut"])
def test_truncated_line_is_dropped_and_the_next_reading_conserves_counts(emulator: OgdEmulator,
                                                                         how: str) -> None:
    with make_driver(emulator) as dev:
        first = read_n(dev, 2)
        emulator.inject_truncated(1, how=how)
        rest = read_n(dev, 3)
        stats = dev.stats()
    spans = match_truth(first + rest, emulator.emitted(), 1024)
    assert sorted(spans) == [1, 1, 1, 1, 2]  # the reading after the damaged line covers two periods
    assert stats["truncated_lines"] + stats["garbage_lines"] == 1


def test_silence_degrades_then_recovers_without_losing_counts(emulator: OgdEmulator) -> None:
    with make_driver(emulator, stale_after_s=0.35) as dev:
        first = read_n(dev, 2)
        emulator.pause(1.0)
        wait_for(lambda: dev.state == SensorState.DEGRADED, "DEGRADED during silence", 3.0)
        assert "no spectra" in dev.state_detail
        rest = read_n(dev, 2)
        wait_for(lambda: dev.state == SensorState.OK, "OK after silence", 3.0)
        stats = dev.stats()
    spans = match_truth(first + rest, emulator.emitted(), 1024)
    assert max(spans) >= 5  # the first reading after the pause holds every silent period's counts
    assert stats["stale_events"] == 1


def test_read_times_out_cleanly_when_the_device_is_silent(emulator: OgdEmulator) -> None:
    with make_driver(emulator) as dev:
        read_n(dev, 1)
        emulator.pause(2.0)
        time.sleep(0.15)
        while dev.stats()["queued"]:
            dev.read_spectrum(0.1)
        with pytest.raises(DeviceTimeout, match="no spectrum"):
            dev.read_spectrum(timeout_s=0.3)


def test_device_reboot_resends_setup_and_readings_resume(emulator: OgdEmulator) -> None:
    with make_driver(emulator) as dev:
        before = read_n(dev, 2)
        emulator.reboot()
        wait_for(lambda: dev.stats()["device_reboots"] == 1, "reboot banner")
        after = read_n(dev, 3)
        stats = dev.stats()
    assert emulator.commands_received.count("set out spectrum") == 2
    match_truth(before, emulator.emitted(), 1024)
    match_truth(after, emulator.emitted(), 1024)
    assert stats["histogram_resets"] == 1


def test_factory_settings_after_reboot_are_detected_and_fixed(emulator: OgdEmulator) -> None:
    """A reboot with factory settings prints events, not spectra; the driver notices (banner, short
    data lines) and puts the device back into spectrum mode."""
    with make_driver(emulator) as dev:
        read_n(dev, 1)
        emulator.reboot(factory_settings=True)
        wait_for(lambda: emulator.conf.print_spectrum, "spectrum mode restored")
        after = read_n(dev, 3)
    match_truth(after, emulator.emitted(), 1024)


def test_unplug_replug_fails_then_recovers_and_conserves_counts(emulator: OgdEmulator) -> None:
    with make_driver(emulator) as dev:
        before = read_n(dev, 2)
        emulator.disconnect()
        wait_for(lambda: dev.state == SensorState.FAILED, "FAILED on unplug")
        time.sleep(0.3)
        emulator.reconnect()
        wait_for(lambda: dev.state == SensorState.OK, "OK after replug")
        after = read_n(dev, 3)
        stats = dev.stats()
    spans = match_truth(before + after, emulator.emitted(), 1024)
    assert max(spans) >= 3  # the first reading after the replug spans the unplugged periods
    assert stats["serial_errors"] >= 1 and stats["reopens"] >= 1
    assert emulator.commands_received.count("set out spectrum") == 2


def test_events_mode_exact_counts_and_damaged_line_is_reported(emulator: OgdEmulator) -> None:
    with make_driver(emulator, output="events") as dev:
        readings = read_n(dev, 4)
        emulator.inject_truncated(1, how="cut")
        with pytest.raises(DeviceDataError, match="events line"):
            for _ in range(5):
                dev.read_spectrum(timeout_s=3.0)
        more = read_n(dev, 2)
    events = [e for e in emulator.emitted() if e.kind == "events" and not e.damaged]
    assert match_truth(readings, events, 1024) == [1] * 4
    assert match_truth(more, events, 1024) == [1, 1]


def test_absent_port_is_device_unavailable() -> None:
    dev = OpenGammaDetector("/dev/does-not-exist-ogd")
    with pytest.raises(DeviceUnavailable, match="cannot open Open Gamma Detector port"):
        dev.open()
    assert dev.state == SensorState.FAILED
    dev.close()


@pytest.mark.parametrize(
    ("kw", "what"),
    [({"n_channels": 1000}, "must divide"), ({"output": "trng"}, "output"),
     ({"calibration_kev": [1.0, float("nan")]}, "calibration_kev")],
)
def test_bad_parameters_are_named(kw: dict, what: str) -> None:
    with pytest.raises(DeviceUnavailable, match=what):
        OpenGammaDetector("/dev/null", **kw)


def test_registry_creates_the_driver_by_name(emulator: OgdEmulator) -> None:
    ctx = DeviceContext(unit_id="van-1")
    dev = create_device("gamma", "open_gamma", {"port": emulator.port, "interval_s": PERIOD_S,
                                                "device_period_s": PERIOD_S, "n_channels": 2048}, ctx)
    assert isinstance(dev, OpenGammaDetector)
    with dev:
        r = dev.read_spectrum(timeout_s=3.0)
    assert r.n_channels == 2048 and dev.n_channels == 2048
    assert dev.describe()["calibration"] == "nominal (uncalibrated)"
    assert r.calibration.energy_kev(0.0) == pytest.approx(0.75 * 0.5)
