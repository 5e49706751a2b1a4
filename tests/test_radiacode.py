"""RadiaCode driver: the protocol codec against hand-made frames, then the real driver (real pyusb:
usb.core.find, descriptors, string descriptors, bulk transfers) against the hal_sim fake USB bus
whose device decodes the driver's request frames and answers with real response frames."""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from agent.hal.interfaces import (
    DeviceContext,
    DeviceTimeout,
    DeviceUnavailable,
    SensorState,
    SpectrumReading,
)
from agent.hal.registry import create_device
from drivers.radiacode import (
    COMMAND,
    DEFAULT_DETECTOR_MODEL,
    RadiaCodeProtocolError,
    RadiaCodeSpectrometer,
    Reader,
    build_request,
    decode_counts_v1,
    decode_data_buf,
    decode_spectrum,
)
from hal_sim.radiacode_usb_emulator import (
    RadiaCodeSim,
    ServedSpectrum,
    attach,
    encode_counts_v1,
    encode_spectrum,
)

INTERVAL_S = 0.05
RATE_CPS = 2000.0  # a hot source at a pocket detector: many counts per short interval


def shaped_source(total_cps: float = RATE_CPS):  # noqa: ANN201 - returns a spectrum source
    ch = np.arange(1024, dtype=float)
    shape = np.exp(-ch / 200.0) + 0.8 * np.exp(-0.5 * ((ch - 270.0) / 9.0) ** 2)
    shape[:3] = 0.0
    shape *= total_cps / shape.sum()
    return lambda t_s: shape


def chain_truth(readings: list[SpectrumReading], served: list[ServedSpectrum]) -> list[tuple[int, int]]:
    """Each reading must be served[b] - served[a] for spectra the device sent, consecutive readings
    chaining (b of one is a of the next); answers lost in transit only widen a span."""
    pairs: list[tuple[int, int]] = []
    a_candidates = range(len(served))
    for r in readings:
        found = None
        for a in a_candidates:
            for b in range(a + 1, len(served)):
                if np.array_equal(served[b].counts - served[a].counts, r.counts):
                    found = (a, b)
                    break
            if found:
                break
        assert found is not None, f"reading {len(pairs)} ({r.gross_counts} counts) is no served difference"
        pairs.append(found)
        a_candidates = range(found[1], found[1] + 1)
    return pairs


@pytest.fixture
def sim() -> RadiaCodeSim:
    return RadiaCodeSim(source=shaped_source(), seed=11)


@pytest.fixture
def dev(sim: RadiaCodeSim) -> Iterator[RadiaCodeSpectrometer]:
    d = RadiaCodeSpectrometer(backend=attach(sim, max_block_s=0.3), interval_s=INTERVAL_S,
                              response_timeout_s=0.3)
    d.open()
    try:
        yield d
    finally:
        d.close()


# =========================================================================== codec
def test_request_frame_layout() -> None:
    frame, header = build_request(COMMAND.RD_VIRT_STRING, 5, struct.pack("<I", 0x200))
    # <u32 len=8> <u16 0x0826> <u8 0> <u8 0x80+5> <u32 VS.SPECTRUM>
    assert frame == bytes.fromhex("08000000" "26080085" "00020000")
    assert header == bytes.fromhex("26080085")
    assert build_request(COMMAND.GET_VERSION, 33)[1] == bytes.fromhex("0a000081")  # seq wraps at 32


def test_format1_decoder_on_hand_made_groups() -> None:
    body = bytes.fromhex(
        "2000"          # 2 x vlen 0: zeros
        "3100" "05c807"  # 3 x vlen 1: u8 absolute 5, 200, 7
        "2200" "03f6"    # 2 x vlen 2: int8 deltas +3, -10 -> 10, 0
        "1300" "e803"    # 1 x vlen 3: int16 delta +1000 -> 1000
        "1400" "701101"  # 1 x vlen 4: 24-bit delta +70000 -> 71000
        "1400" "78ecff"  # 1 x vlen 4: 24-bit delta -5000 -> 66000
        "1500" "1802ffff"  # 1 x vlen 5: int32 delta -65000 -> 1000
    )
    assert decode_counts_v1(Reader(body)) == [0, 0, 5, 200, 7, 10, 0, 1000, 71000, 66000, 1000]


def test_format1_encoder_is_the_inverse_of_the_decoder() -> None:
    rng = np.random.default_rng(5)
    cases = [
        np.zeros(1024, dtype=np.int64),
        rng.poisson(3.0, 1024),
        rng.poisson(5e4, 1024),
        np.concatenate([np.zeros(5000, dtype=np.int64), [1, 2**31 - 1, 0, 2**23, 255, 256, 3]]),
        np.arange(1024) * 1000,
    ]
    for counts in cases:
        assert decode_counts_v1(Reader(encode_counts_v1(counts))) == [int(v) for v in counts]


@pytest.mark.parametrize("fmt", [0, 1])
def test_spectrum_payload_round_trip(fmt: int) -> None:
    counts = np.random.default_rng(2).poisson(40.0, 1024)
    payload = encode_spectrum(613, (-6.2, 2.43, 0.000385), counts, fmt)
    spec = decode_spectrum(payload, fmt)
    assert spec.duration_s == 613 and np.array_equal(spec.counts, counts)
    assert spec.coefficients_kev == tuple(float(np.float32(c)) for c in (-6.2, 2.43, 0.000385))


def test_spectrum_decoder_rejects_bad_payloads() -> None:
    head = struct.pack("<Ifff", 1, 0.0, 3.0, 0.0)
    with pytest.raises(RadiaCodeProtocolError, match="vlen=7"):
        decode_spectrum(head + struct.pack("<H", (1 << 4) | 7) + b"\x00" * 8, 1)
    with pytest.raises(RadiaCodeProtocolError, match="needed"):
        decode_spectrum(head + struct.pack("<H", (3 << 4) | 5) + b"\x01\x00", 1)  # truncated group
    with pytest.raises(RadiaCodeProtocolError, match="negative"):
        decode_spectrum(head + struct.pack("<H", (1 << 4) | 2) + b"\xff", 1)
    with pytest.raises(RadiaCodeProtocolError, match="format version"):
        decode_spectrum(head, 2)


def test_data_buf_records_dose_rate_and_temperature() -> None:
    payload = (
        struct.pack("<BBBi", 7, 0, 0, 100) + struct.pack("<ffHHHB", 12.5, 3.0e-5, 40, 120, 0, 0)
        + struct.pack("<BBBi", 8, 0, 3, 200) + struct.pack("<IfHHH", 10, 0.0, 4450, 9000, 0)
        + struct.pack("<BBBi", 9, 0, 99, 300) + b"junk"  # unknown group: stop, keep what came before
    )
    s = decode_data_buf(payload)
    assert s.records == 2
    assert s.count_rate_cps == pytest.approx(12.5)
    assert s.dose_rate_usv_h == pytest.approx(0.3, rel=1e-6)  # 3e-5 x 1e4 uSv/h
    assert s.temperature_c == pytest.approx(24.5)


# =========================================================================== driver on the fake bus
def test_spectra_equal_device_truth_with_calibration_dose_and_time(dev: RadiaCodeSpectrometer,
                                                                   sim: RadiaCodeSim) -> None:
    readings = [dev.read_spectrum(timeout_s=2.0) for _ in range(5)]
    served = sim.served()
    assert chain_truth(readings, served) == [(i, i + 1) for i in range(5)]  # exact, no answer lost
    cal = tuple(float(np.float32(c)) for c in (-6.2, 2.43, 0.000385))
    for r in readings:
        assert r.n_channels == 1024 and r.gross_counts > 0
        assert r.calibration.coefficients_kev == cal
        assert r.live_time_s == r.real_time_s > 0  # no dead time reported by the device
        assert r.dose_rate_usv_h == pytest.approx(RATE_CPS / 30.0, rel=1e-6)
        assert r.temperature_c == pytest.approx(24.5)
        assert r.detector_model == DEFAULT_DETECTOR_MODEL
    info = dev.describe()
    assert info["model"] == "RadiaCode-102" and info["serial"] == "RC-102-000115"
    assert info["firmware"].startswith("4.14") and info["spectrum_format_version"] == 1
    assert info["crystal"] == "CsI(Tl) 10x10x10 mm" and info["hw_serial"].count("-") == 2
    # the library's init sequence, in order, with sequence numbers 0x80.. counting up
    cmds = [c for c, _ in sim.requests[:5]]
    assert cmds == [COMMAND.SET_EXCHANGE, COMMAND.SET_TIME, COMMAND.WR_VIRT_SFR, COMMAND.GET_VERSION,
                    COMMAND.RD_VIRT_STRING]
    assert [s for _, s in sim.requests[:5]] == [0x80, 0x81, 0x82, 0x83, 0x84]


def test_format_version_0_device() -> None:
    sim = RadiaCodeSim(source=shaped_source(), format_version=0, seed=3)
    with RadiaCodeSpectrometer(backend=attach(sim), interval_s=INTERVAL_S) as d:
        readings = [d.read_spectrum(timeout_s=2.0) for _ in range(3)]
        assert d.stats()["spectrum_format_version"] == 0
    assert chain_truth(readings, sim.served()) == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize("fault", ["garbage", "late", "truncated"])
def test_bad_answers_are_resynchronised_and_counts_kept(dev: RadiaCodeSpectrometer, sim: RadiaCodeSim,
                                                        fault: str) -> None:
    first = dev.read_spectrum(timeout_s=2.0)
    sim.inject(fault)
    second = dev.read_spectrum(timeout_s=3.0)
    third = dev.read_spectrum(timeout_s=3.0)
    chain_truth([first, second, third], sim.served())
    stats = dev.stats()
    assert stats["resyncs"] >= 1
    assert stats["header_mismatches"] + stats["timeouts"] >= 1
    assert dev.state == SensorState.OK


def test_silent_device_times_out_then_the_gap_is_covered(dev: RadiaCodeSpectrometer,
                                                         sim: RadiaCodeSim) -> None:
    first = dev.read_spectrum(timeout_s=2.0)
    sim.inject("silence", count=2)  # the answer and the answer to the retry are lost
    with pytest.raises(DeviceTimeout, match="no complete answer"):
        dev.read_spectrum(timeout_s=3.0)
    after = dev.read_spectrum(timeout_s=3.0)
    pairs = chain_truth([first, after], sim.served())
    assert pairs[1][1] - pairs[1][0] == 3  # spans the two spectra that never arrived: nothing lost
    assert dev.stats()["timeouts"] == 2


def test_reset_on_the_device_becomes_a_new_baseline(dev: RadiaCodeSpectrometer, sim: RadiaCodeSim) -> None:
    first = dev.read_spectrum(timeout_s=2.0)
    sim.reset_spectrum()
    after = dev.read_spectrum(timeout_s=2.0)
    served = sim.served()
    assert chain_truth([first], served) == [(0, 1)]
    assert chain_truth([after], served) == [(2, 3)]  # served[2] is the post-reset baseline
    assert dev.stats()["spectrum_resets"] == 1


def test_unplug_and_replug(sim: RadiaCodeSim) -> None:
    bus = attach(sim, max_block_s=0.3)
    with RadiaCodeSpectrometer(backend=bus, interval_s=INTERVAL_S, response_timeout_s=0.3) as d:
        first = d.read_spectrum(timeout_s=2.0)
        bus.unplug(sim)
        with pytest.raises(DeviceUnavailable, match="lost from USB"):
            d.read_spectrum(timeout_s=2.0)
        with pytest.raises(DeviceUnavailable, match="no RadiaCode"):
            d.read_spectrum(timeout_s=2.0)
        bus.plug(sim)
        after = d.read_spectrum(timeout_s=2.0)
        stats = d.stats()
    pairs = chain_truth([first, after], sim.served())
    assert pairs[1][0] == pairs[0][1]  # the difference spans the unplugged time: counts conserved
    assert stats["disconnects"] == 1 and stats["reconnects"] == 1


def test_power_cycle_is_a_reset(sim: RadiaCodeSim) -> None:
    bus = attach(sim, max_block_s=0.3)
    with RadiaCodeSpectrometer(backend=bus, interval_s=INTERVAL_S, response_timeout_s=0.3) as d:
        d.read_spectrum(timeout_s=2.0)
        bus.unplug(sim)
        sim.power_cycle()
        bus.plug(sim)
        with pytest.raises(DeviceUnavailable):
            d.read_spectrum(timeout_s=2.0)
        after = d.read_spectrum(timeout_s=2.0)
        assert d.stats()["spectrum_resets"] == 1
    served = sim.served()
    a, b = chain_truth([after], served)[0]
    assert served[a].duration_s <= served[b].duration_s and b == len(served) - 1


def test_selects_the_device_by_serial_and_maps_the_model() -> None:
    a = RadiaCodeSim(serial="RC-102-000115", seed=1)
    b = RadiaCodeSim(serial="RC-110-000042", seed=2, calibration=(1.0, 2.0, 0.0))
    bus = attach(a, b)
    with RadiaCodeSpectrometer(backend=bus, serial_number="RC-110-000042", interval_s=INTERVAL_S) as d:
        r = d.read_spectrum(timeout_s=2.0)
        info = d.describe()
    assert info["serial"] == "RC-110-000042" and info["model"] == "RadiaCode-110"
    assert info["crystal"].startswith("CsI(Tl)") and r.calibration.coefficients_kev == (1.0, 2.0, 0.0)
    assert a.counts["requests"] == 0  # the other device was never talked to


def test_absent_device_is_device_unavailable() -> None:
    d = RadiaCodeSpectrometer(backend=attach())
    with pytest.raises(DeviceUnavailable, match="no RadiaCode on USB"):
        d.open()
    assert d.state == SensorState.FAILED
    d2 = RadiaCodeSpectrometer(backend=attach(RadiaCodeSim()), serial_number="RC-103-999999")
    with pytest.raises(DeviceUnavailable, match="RC-103-999999"):
        d2.open()


def test_missing_pyusb_is_device_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "usb", None)
    monkeypatch.setitem(sys.modules, "usb.core", None)
    d = RadiaCodeSpectrometer()
    with pytest.raises(DeviceUnavailable, match="pyusb is not installed"):
        d.open()


def test_old_firmware_is_refused() -> None:
    d = RadiaCodeSpectrometer(backend=attach(RadiaCodeSim(firmware=(4, 7))))
    with pytest.raises(DeviceUnavailable, match="too old"):
        d.open()


def test_registry_creates_the_driver_by_name(sim: RadiaCodeSim) -> None:
    ctx = DeviceContext(unit_id="hh-1")
    d = create_device("gamma", "radiacode", {"backend": attach(sim), "interval_s": INTERVAL_S,
                                             "name": "rc"}, ctx)
    assert isinstance(d, RadiaCodeSpectrometer)
    with d:
        r = d.read_spectrum(timeout_s=2.0)
    assert r.n_channels == d.n_channels == 1024
    assert d.state == SensorState.CLOSED


def test_reopen_bridges_short_outages_only(sim: RadiaCodeSim) -> None:
    """The runtime closes and re-opens a failing device: within ``max_gap_s`` the old baseline is
    kept (the first reading covers the outage), beyond it the driver starts afresh."""
    bus = attach(sim)
    d = RadiaCodeSpectrometer(backend=bus, interval_s=INTERVAL_S)
    with d:
        first = d.read_spectrum(timeout_s=2.0)
    with d:
        second = d.read_spectrum(timeout_s=2.0)
    pairs = chain_truth([first, second], sim.served())
    assert pairs[1][0] == pairs[0][1]
    fresh = RadiaCodeSpectrometer(backend=bus, interval_s=INTERVAL_S, max_gap_s=0.0)
    with fresh:
        a = fresh.read_spectrum(timeout_s=2.0)
    with fresh:
        b = fresh.read_spectrum(timeout_s=2.0)
    pa, pb = chain_truth([a], sim.served())[0], chain_truth([b], sim.served())[0]
    assert pb[0] == pa[1] + 1  # a new baseline was taken at the second open
