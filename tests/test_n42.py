"""ANSI N42.42-2012 reading/writing: the real RadiaCode file, round trips, schema validity."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from lxml import etree

from agent.hal.interfaces import EnergyCalibration, SpectrumReading
from agent.spectral_files import (
    AlarmResult,
    AnalysisRecord,
    InstrumentInfo,
    NuclideResult,
    SpectrumFile,
    SpectrumFileError,
    SpectrumMeasurement,
    parse_n42,
    read_n42,
    read_spectrum_file,
    to_n42_bytes,
    write_n42,
)
from agent.spectral_files.n42 import (
    compress_counted_zeroes,
    expand_counted_zeroes,
    file_coefficients,
    format_duration,
    parse_duration_s,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
RADIACODE_N42 = SHARED / "spectra" / "radiacode102_am241.n42"
XSD = SHARED / "reference" / "n42_2011.xsd"


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


def _reading(counts: np.ndarray, model: str = "NaI 2x2 in", dose: float | None = None) -> SpectrumReading:
    return SpectrumReading(
        counts=counts.astype(np.int64), live_time_s=59.5, real_time_s=60.0,
        calibration=EnergyCalibration((0.5, 2.9, 4e-5)), t_utc=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        t_mono_s=12.0, detector_model=model, dose_rate_usv_h=dose,
    )


def test_reads_real_radiacode_file() -> None:
    doc = read_n42(RADIACODE_N42)
    fg = doc.foreground()
    r = fg.reading
    assert r.n_channels == 1024
    assert r.live_time_s == pytest.approx(613.0)
    # the file's polynomial gives lower channel edges (SpecUtils/InterSpec); inside, channel centres
    assert file_coefficients(r.calibration) == pytest.approx((-6.2832313, 2.4383054, 0.0003818))
    assert r.calibration.energy_kev(100.0) == pytest.approx(-6.2832313 + 2.4383054 * 100.5 + 0.0003818 * 100.5**2)
    assert r.gross_counts == int(np.sum(r.counts)) and r.gross_counts > 300_000
    assert doc.instrument.model == "RadiaCode-102" and doc.instrument.serial == "RC-102-000115"
    assert doc.instrument.detector_kind == "CsI"
    assert fg.start_utc == datetime(2023, 6, 7, 5, 52, tzinfo=UTC)
    assert doc.background() is None


def test_real_file_validates_and_ours_too(schema: etree.XMLSchema) -> None:
    assert schema.validate(etree.parse(str(RADIACODE_N42)))
    doc = read_n42(RADIACODE_N42)
    ours = etree.fromstring(to_n42_bytes(doc))
    assert schema.validate(ours), schema.error_log


def test_round_trip_with_analysis_and_background(tmp_path: Path, schema: etree.XMLSchema) -> None:
    rng = np.random.default_rng(1)
    fg = _reading(rng.poisson(5.0, 1024), dose=0.42)
    bg_counts = rng.poisson(3.0, 1024)
    bg_counts[100:300] = 0  # long zero runs exercise CountedZeroes
    bg = _reading(bg_counts)
    analysis = AnalysisRecord(
        start_utc=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
        nuclides=(NuclideResult("Cs-137", 97.5, "industrial"), NuclideResult("HEU", 61.0, "SNM")),
        alarms=(AlarmResult("Isotope", "Cs-137 (industrial)"),),
        dose_rate_usv_h=0.61, dose_rate_uncertainty_usv_h=0.02, background_dose_rate_usv_h=0.1,
        reduced_chi_square=1.3,
    )
    doc = SpectrumFile(
        (SpectrumMeasurement(fg, "Foreground", remark="truck 7"), SpectrumMeasurement(bg, "Background")),
        InstrumentInfo(manufacturer="ACME", model="Portal", serial="SN1", detector_kind="NaI"),
        (analysis,),
    )
    path = write_n42(doc, tmp_path / "x.n42")
    assert schema.validate(etree.parse(str(path))), schema.error_log
    back = read_spectrum_file(path)
    assert np.array_equal(back.foreground().reading.counts, fg.counts)
    assert np.array_equal(back.background().reading.counts, bg_counts)
    assert back.foreground().reading.live_time_s == pytest.approx(59.5)
    assert back.foreground().reading.real_time_s == pytest.approx(60.0)
    assert back.foreground().reading.calibration.coefficients_kev == pytest.approx((0.5, 2.9, 4e-5))
    assert back.foreground().reading.dose_rate_usv_h == pytest.approx(0.42)
    assert back.foreground().reading.detector_model == "NaI 2x2 in"
    assert back.foreground().remark == "truck 7"
    a = back.analyses[0]
    assert [(n.name, n.confidence_pct, n.category) for n in a.nuclides] == [
        ("Cs-137", 97.5, "industrial"), ("HEU", 61.0, "SNM")]
    assert a.alarms[0].category == "Isotope"
    assert a.dose_rate_usv_h == pytest.approx(0.61)
    assert a.background_dose_rate_usv_h == pytest.approx(0.1)
    assert a.reduced_chi_square == pytest.approx(1.3)


def test_counted_zeroes_and_durations() -> None:
    counts = np.array([0, 0, 0, 5, 0, 7, 0, 0])
    packed = compress_counted_zeroes(counts)
    assert packed == ["0", "3", "5", "0", "1", "7", "0", "2"]
    assert np.array_equal(expand_counted_zeroes(np.array([float(v) for v in packed])), counts)
    assert parse_duration_s("PT613S") == 613.0
    assert parse_duration_s("PT1H2M3.5S") == pytest.approx(3723.5)
    assert parse_duration_s("P1DT1S") == pytest.approx(86401.0)
    assert parse_duration_s(format_duration(12.25)) == pytest.approx(12.25)
    with pytest.raises(SpectrumFileError):
        parse_duration_s("613 s")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not xml at all", "not well-formed"),
        (b"<Foo/>", "not N42"),
        (b'<RadInstrumentData xmlns="urn:other"/>', "namespace"),
    ],
)
def test_bad_files_give_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(SpectrumFileError, match=message):
        parse_n42(data, "bad.n42")


def test_unknown_calibration_reference_is_named() -> None:
    text = RADIACODE_N42.read_bytes().replace(
        b'energyCalibrationReference="ec-fg"', b'energyCalibrationReference="nope"'
    )
    with pytest.raises(SpectrumFileError, match="unknown calibration 'nope'"):
        parse_n42(text, "x.n42")


def test_simulate_command_writes_valid_n42(tmp_path: Path, schema: etree.XMLSchema) -> None:
    from typer.testing import CliRunner

    from agent.cli_spectrum import app

    out = tmp_path / "sim.n42"
    res = CliRunner().invoke(app, ["simulate", str(out), "--nuclide", "Cs-137", "--activity-mbq", "5",
                                   "--real-time-s", "30", "--background-s", "300", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert schema.validate(etree.parse(str(out))), schema.error_log
    doc = read_n42(out)
    assert {m.measurement_class for m in doc.measurements} == {"Foreground", "Background"}
    assert [n.name for n in doc.analyses[0].nuclides][0] == "Cs-137"
    assert doc.analyses[0].dose_rate_usv_h > 0.1
