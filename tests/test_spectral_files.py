"""IAEA SPE and RadiaCode XML readers, and format sniffing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from agent.hal.interfaces import EnergyCalibration, SpectrumReading
from agent.spectral_files import (
    SpectrumFileError,
    format_spe,
    parse_radiacode_xml,
    parse_spe,
    read_spectrum_file,
)
from agent.spectral_files.n42 import file_coefficients

RADIACODE_XML = """<?xml version="1.0"?>
<ResultDataFile xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <FormatVersion>120920</FormatVersion>
  <ResultDataList>
    <ResultData>
      <DeviceConfigReference><Name>RadiaCode-102</Name></DeviceConfigReference>
      <SampleInfo><Name><![CDATA[Th-232-BG]]></Name><Note><![CDATA[]]></Note></SampleInfo>
      <BackgroundSpectrumFile>BG 35hr</BackgroundSpectrumFile>
      <StartTime>2023-10-17T22:30:56</StartTime>
      <EndTime>2023-10-19T22:30:56</EndTime>
      <EnergySpectrum>
        <NumberOfChannels>4</NumberOfChannels>
        <ChannelPitch>1</ChannelPitch>
        <SpectrumName><![CDATA[Th-232-BG]]></SpectrumName>
        <SerialNumber>RC-102-000115</SerialNumber>
        <EnergyCalibration><PolynomialOrder>2</PolynomialOrder><Coefficients>
          <Coefficient>-11.3706</Coefficient><Coefficient>2.46757</Coefficient><Coefficient>3.9769E-4</Coefficient>
        </Coefficients></EnergyCalibration>
        <MeasurementTime>172800</MeasurementTime>
        <Spectrum><DataPoint>859</DataPoint><DataPoint>5770</DataPoint><DataPoint>2875</DataPoint>
          <DataPoint>1340</DataPoint></Spectrum>
      </EnergySpectrum>
      <StartTime>2023-09-15T18:58:27</StartTime>
      <EndTime>2023-09-17T06:28:27</EndTime>
      <BackgroundEnergySpectrum>
        <NumberOfChannels>4</NumberOfChannels>
        <SpectrumName><![CDATA[BG 35hr]]></SpectrumName>
        <EnergyCalibration><PolynomialOrder>2</PolynomialOrder><Coefficients>
          <Coefficient>-11.3706</Coefficient><Coefficient>2.46757</Coefficient><Coefficient>3.9769E-4</Coefficient>
        </Coefficients></EnergyCalibration>
        <MeasurementTime>127800</MeasurementTime>
        <Spectrum><DataPoint>13</DataPoint><DataPoint>93</DataPoint><DataPoint>51</DataPoint>
          <DataPoint>28</DataPoint></Spectrum>
      </BackgroundEnergySpectrum>
    </ResultData>
  </ResultDataList>
</ResultDataFile>
"""


def test_radiacode_xml_foreground_and_background(tmp_path: Path) -> None:
    doc = parse_radiacode_xml(RADIACODE_XML.encode(), "x.xml")
    fg, bg = doc.foreground(), doc.background()
    assert fg.reading.counts.tolist() == [859, 5770, 2875, 1340]
    assert fg.reading.live_time_s == 172800
    # the device polynomial gives channel lower edges, as in its N42 exports (SpecUtils' convention)
    assert file_coefficients(fg.reading.calibration) == pytest.approx((-11.3706, 2.46757, 3.9769e-4))
    assert fg.start_utc == datetime(2023, 10, 17, 22, 30, 56, tzinfo=UTC)
    assert bg is not None and bg.reading.counts.tolist() == [13, 93, 51, 28]
    assert bg.reading.live_time_s == 127800 and bg.start_utc == datetime(2023, 9, 15, 18, 58, 27, tzinfo=UTC)
    assert doc.instrument.model == "RadiaCode-102" and doc.instrument.serial == "RC-102-000115"
    path = tmp_path / "export.xml"
    path.write_text(RADIACODE_XML)
    assert read_spectrum_file(path).foreground().reading.counts.sum() == 859 + 5770 + 2875 + 1340


def test_radiacode_xml_channel_count_mismatch_is_named() -> None:
    bad = RADIACODE_XML.replace("<NumberOfChannels>4</NumberOfChannels>", "<NumberOfChannels>8</NumberOfChannels>", 1)
    with pytest.raises(SpectrumFileError, match="NumberOfChannels=8"):
        parse_radiacode_xml(bad.encode())


def test_spe_round_trip_and_channel_offset() -> None:
    counts = np.random.default_rng(2).poisson(20, 512)
    r = SpectrumReading(counts, 100.0, 101.5, EnergyCalibration((1.0, 3.0, 1e-4)),
                        datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), 0.0, "NaI 3x3 in")
    doc = parse_spe(format_spe(r), detector_model="NaI 3x3 in")
    back = doc.foreground().reading
    assert np.array_equal(back.counts, counts)
    assert (back.live_time_s, back.real_time_s) == (100.0, 101.5)
    assert back.calibration.coefficients_kev == pytest.approx((1.0, 3.0, 1e-4))
    assert doc.foreground().start_utc == datetime(2024, 5, 6, 7, 6, 27, 500000, tzinfo=UTC).replace(microsecond=0)
    # data starting at channel 10: the calibration (absolute channels) is shifted to 0-based data
    text = "$MEAS_TIM:\n10 10\n$DATA:\n10 12\n1\n2\n3\n$ENER_FIT:\n0 2\n"
    shifted = parse_spe(text).foreground().reading
    assert shifted.calibration.energy_kev(0.0) == pytest.approx(21.0)  # centre of absolute channel 10: 2 * 10.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$SPEC_ID:\nx\n", "no \\$DATA"),
        ("$MEAS_TIM:\n10 10\n$DATA:\n0 3\n1\n2\n$ENER_FIT:\n0 2\n", "holds 2"),
        ("$DATA:\n0 1\n1\n2\n$ENER_FIT:\n0 2\n", "live time"),
        ("$MEAS_TIM:\n10 10\n$DATA:\n0 1\n1\n2\n", "energy calibration"),
    ],
)
def test_spe_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(SpectrumFileError, match=message):
        parse_spe(text, "bad.spe")


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(SpectrumFileError, match="not a recognised spectrum file"):
        read_spectrum_file(p)
    with pytest.raises(SpectrumFileError, match="cannot read"):
        read_spectrum_file(tmp_path / "missing.n42")
