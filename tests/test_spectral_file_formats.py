"""Spectrum files from the field: every shared real file through the CLI, SpecUtils-written formats read
back, multi-detector files, our N42 read by SpecUtils, XSD validity, and hostile inputs."""

from __future__ import annotations

import json
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from lxml import etree
from typer.testing import CliRunner

from agent.hal.interfaces import EnergyCalibration, SpectrumReading
from agent.spectral_files import (
    InstrumentInfo,
    SpectrumFile,
    SpectrumFileError,
    SpectrumMeasurement,
    parse_n42,
    read_spectrum_file,
    to_n42_bytes,
    write_n42,
)
from agent.spectral_files import specutils_reader as sur
from agent.spectral_files.limits import MAX_CHANNELS
from agent.spectral_files.n42 import file_coefficients
from agent.spectral_files.n42_names import schema_safe_name

SHARED = Path(__file__).resolve().parents[2] / "shared"
SPECTRA = SHARED / "spectra"
RADIACODE_N42 = SPECTRA / "radiacode102_am241.n42"
RASE_CS137 = SPECTRA / "rase_generic_nai" / "VABCD_M001_Cs137.n42"
XSD = SHARED / "reference" / "n42_2011.xsd"
LONG_MODEL = "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)"
N42_NS = "http://physics.nist.gov/N42/2011/N42"


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


def _reading(counts: np.ndarray, model: str = "NaI 2x2 in", cal: tuple[float, ...] = (0.5, 2.9, 4e-5),
             live_s: float = 59.5) -> SpectrumReading:
    return SpectrumReading(np.asarray(counts, dtype=np.int64), live_s, 60.0, EnergyCalibration(cal),
                           datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), 0.0, model)


# --------------------------------------------------------------------------- the CLI on every real file
def test_analyze_opens_every_shared_spectrum() -> None:
    from agent.cli_spectrum import app

    files = sorted(SPECTRA.rglob("*.n42"))
    assert len(files) >= 19
    res = CliRunner().invoke(app, ["analyze", "--json", *map(str, files)])
    assert res.exit_code == 0, res.output
    results = {Path(r["file"]).name: r for r in json.loads(res.stdout)["files"]}
    assert len(results) == len(files) and not [r for r in results.values() if "error" in r]
    assert results["radiacode102_am241.n42"]["detector_assumed"] is False
    rase = results["VABCD_M001_Cs137.n42"]
    assert rase["detector_assumed"] is True and rase["live_time_s"] == pytest.approx(400.29)
    # the RASE files name no detector model: one warning line per file, naming the model assumed
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(files) - 1 and all("assuming 'NaI 2x2 in'" in w for w in warnings)


def test_analyze_detector_option_and_unknown_name() -> None:
    from agent.cli_spectrum import app

    runner = CliRunner()
    # an alias resolves to the model's name (the model the RASE device is: a generic NaI)
    res = runner.invoke(app, ["analyze", "--json", "--detector", "nai 2x2", str(RASE_CS137)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)["files"][0]
    assert out["detector_model"] == "NaI 2x2 in" and out["detector_assumed"] is False
    assert "warning" not in res.stderr
    res = runner.invoke(app, ["analyze", "--detector", "NaI 9x9 in", str(RASE_CS137)])
    assert res.exit_code == 2 and "unknown detector model 'NaI 9x9 in'" in res.stderr
    assert "NaI 2x2 in" in res.stderr and "Traceback" not in res.output


def test_analyze_uses_the_background_inside_the_file(tmp_path: Path) -> None:
    from agent.cli_spectrum import app

    doc = read_spectrum_file(RADIACODE_N42)
    fg = doc.foreground()
    bg = SpectrumMeasurement(_reading(np.full(1024, 3), "RadiaCode-102", fg.reading.calibration.coefficients_kev,
                                      1000.0), "Background")
    path = write_n42(SpectrumFile((fg, bg), doc.instrument), tmp_path / "fg_bg.n42")
    res = CliRunner().invoke(app, ["analyze", "--json", str(path)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["files"][0]["background_from"] == "file"


# --------------------------------------------------------------------------- formats written by SpecUtils
# format -> (SaveSpectrumAsType, counts identical?, keeps the calibration?)
FORMATS = {
    "n42_2006": ("N42_2006", True, True),  # read by our native 2006 reader
    "n42": ("N42_2012", True, True),  # native 2012 reader (InterSpec:DetectorType prefix undeclared)
    "spe": ("SpeIaea", True, True),  # native SPE reader
    "chn": ("Chn", False, True),  # SpecUtils' CHN reader zeroes channels 0 and 1
    "pcf": ("Pcf", True, True),  # full-range-fraction calibration, converted
    "spc": ("SpcBinaryInt", True, True),
    "cnf": ("Cnf", True, True),
}


@pytest.fixture(scope="module")
def specutils_original() -> object:
    su = pytest.importorskip("SpecUtils")
    sf = su.SpecFile()
    sf.loadFile(str(RADIACODE_N42), su.ParserType.Auto)
    return sf


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_specutils_written_formats_read_back(ext: str, specutils_original: object, tmp_path: Path) -> None:
    import SpecUtils

    save_as, counts_exact, keeps_cal = FORMATS[ext]
    path = tmp_path / f"am241.{ext}"
    specutils_original.writeAllToFile(str(path), getattr(SpecUtils.SaveSpectrumAsType, save_as))
    orig = read_spectrum_file(RADIACODE_N42).foreground().reading
    back = read_spectrum_file(path).foreground().reading
    assert back.n_channels == orig.n_channels
    if counts_exact:
        assert np.array_equal(back.counts, orig.counts)
    else:
        assert np.array_equal(back.counts[2:], orig.counts[2:]) and back.counts[:2].tolist() == [0, 0]
    assert back.live_time_s == pytest.approx(orig.live_time_s, rel=1e-6)
    assert back.real_time_s == pytest.approx(orig.real_time_s, rel=1e-6)
    if keeps_cal:  # SpecUtils writes coefficients with ~7 digits: centres agree to 0.01 keV over 0-3 MeV
        ch = np.arange(orig.n_channels, dtype=float)
        assert np.max(np.abs(back.calibration.energy_kev(ch) - orig.calibration.energy_kev(ch))) < 0.01
    if ext == "n42":  # the undeclared InterSpec prefix is tolerated, truncation of the same file is not
        cut = tmp_path / "cut.n42"
        cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
        with pytest.raises(SpectrumFileError, match=r"cut\.n42: not well-formed XML"):
            read_spectrum_file(cut)


def test_specutils_csv_has_no_live_time_and_says_so(specutils_original: object, tmp_path: Path) -> None:
    import SpecUtils

    path = tmp_path / "am241.csv"
    specutils_original.writeAllToFile(str(path), SpecUtils.SaveSpectrumAsType.Csv)
    with pytest.raises(SpectrumFileError, match=r"am241\.csv.*no live or real time"):
        read_spectrum_file(path)


@pytest.mark.parametrize("path", [RADIACODE_N42, RASE_CS137], ids=["radiacode2012", "rase2006"])
def test_specutils_and_native_readers_agree(path: Path) -> None:
    """Same file, both readers: the same counts, times and channel energies (the calibration convention)."""
    pytest.importorskip("SpecUtils")
    native = read_spectrum_file(path).foreground().reading
    via = sur.parse_with_specutils(path.read_bytes(), str(path))
    su = via.foreground().reading
    assert np.array_equal(su.counts, native.counts)
    assert (su.live_time_s, su.real_time_s) == pytest.approx((native.live_time_s, native.real_time_s), rel=1e-6)
    ch = np.arange(native.n_channels, dtype=float)
    assert np.max(np.abs(su.calibration.energy_kev(ch) - native.calibration.energy_kev(ch))) < 1e-3


# --------------------------------------------------------------------------- our N42 read by SpecUtils
@pytest.mark.parametrize("model", ["RadiaCode-102", LONG_MODEL])
def test_our_n42_validates_and_specutils_reads_it_back(model: str, tmp_path: Path,
                                                       schema: etree.XMLSchema) -> None:
    doc = read_spectrum_file(RADIACODE_N42)
    fg = doc.foreground()
    bg = SpectrumMeasurement(_reading(np.random.default_rng(3).poisson(2.0, 1024), model,
                                      fg.reading.calibration.coefficients_kev, 1800.0), "Background",
                             datetime(2023, 6, 7, 4, 0, tzinfo=UTC))
    ours = SpectrumFile((fg, bg), InstrumentInfo("Radiacode", model, "RC-102-000115",
                                                 "Spectroscopic Personal Radiation Detector", "CsI"))
    path = write_n42(ours, tmp_path / "ours.n42")
    assert schema.validate(etree.parse(str(path))), schema.error_log
    mine = read_spectrum_file(path)
    assert mine.instrument.model == model  # the exact name comes back from RadInstrumentDescription

    su = pytest.importorskip("SpecUtils")
    sf = su.SpecFile()
    sf.loadFile(str(path), su.ParserType.N42_2012)
    assert sf.instrumentModel() == schema_safe_name(model)  # the schema-safe form; identical for real models
    if model == "RadiaCode-102":
        assert sf.instrumentModel() == "RadiaCode-102"
    by_type = {m.sourceType().name: m for m in sf.measurements()}
    for role, m in (("Foreground", fg), ("Background", bg)):
        s = by_type[role]
        assert np.array_equal(np.asarray(s.gammaCounts()), m.reading.counts)
        assert (s.liveTime(), s.realTime()) == pytest.approx((m.reading.live_time_s, m.reading.real_time_s), rel=1e-6)
        # SpecUtils reads our polynomial as lower edges: the file coefficients, not the internal centres
        assert s.calibrationCoeffs() == pytest.approx(file_coefficients(m.reading.calibration), rel=1e-6)
        assert s.gammaChannelCenter(100) == pytest.approx(float(m.reading.calibration.energy_kev(100.0)), abs=1e-3)


def test_schema_safe_names_pass_the_xsd(schema: etree.XMLSchema) -> None:
    names = [LONG_MODEL, "simulated " + LONG_MODEL, "RadiaCode-102", "a, b, c d", "  ", "NaI 2x2 in", "x\ty (z)"]
    counts = np.arange(16)
    for name in names:
        doc = SpectrumFile((SpectrumMeasurement(_reading(counts, name)),),
                           InstrumentInfo(name, name, name, versions=((name, name),)))
        root = etree.fromstring(to_n42_bytes(doc, creator=name))
        assert schema.validate(root), (name, schema.error_log)
    assert schema_safe_name("RadiaCode-102") == "RadiaCode-102"
    assert schema_safe_name(LONG_MODEL) == "CsI(Tl)_1_cm3_pocket_(RadiaCode-102_class)"


def test_simulate_with_the_radiacode_class_model_is_valid(tmp_path: Path, schema: etree.XMLSchema) -> None:
    from agent.cli_spectrum import app

    out = tmp_path / "sim.n42"
    res = CliRunner().invoke(app, ["simulate", str(out), "--nuclide", "Am-241", "--model", LONG_MODEL,
                                   "--real-time-s", "10", "--background-s", "0", "--no-analyse"])
    assert res.exit_code == 0, res.output
    assert schema.validate(etree.parse(str(out))), schema.error_log
    doc = read_spectrum_file(out)
    assert doc.instrument.model == f"simulated {LONG_MODEL}" and doc.foreground().reading.detector_model == LONG_MODEL


# --------------------------------------------------------------------------- several measurements in a file
def _spectrum_xml(sid: str, det: str, cal: str, counts: np.ndarray, live: str = "PT10S") -> str:
    return (f'<Spectrum id="{sid}" radDetectorInformationReference="{det}" energyCalibrationReference="{cal}">'
            f"<LiveTimeDuration>{live}</LiveTimeDuration><ChannelData>{' '.join(map(str, counts))}</ChannelData>"
            "</Spectrum>")


def _portal_file(rng: np.random.Generator) -> tuple[bytes, dict[str, list[np.ndarray]]]:
    """4 gamma panels x 2 foreground time slices, one background slice, and a derived sum (N42-2012)."""
    panels = ["Aa1", "Aa2", "Ba1", "Ba2"]
    dets = "".join(f'<RadDetectorInformation id="{p}"><RadDetectorName>{p}</RadDetectorName>'
                   "<RadDetectorCategoryCode>Gamma</RadDetectorCategoryCode><RadDetectorKindCode>PVT</RadDetectorKindCode>"
                   "</RadDetectorInformation>" for p in panels)
    parts: dict[str, list[np.ndarray]] = {"Foreground": [], "Background": []}
    blocks = []
    for i, (role, start) in enumerate((("Background", "2026-03-01T10:00:00Z"), ("Foreground", "2026-03-01T10:05:00Z"),
                                       ("Foreground", "2026-03-01T10:05:10Z")), start=1):
        spectra = ""
        for p in panels:
            c = rng.poisson(20 if role == "Foreground" else 5, 64)
            parts[role].append(c)
            spectra += _spectrum_xml(f"s{i}{p}", p, "ec", c)
        blocks.append(f'<RadMeasurement id="rm{i}"><MeasurementClassCode>{role}</MeasurementClassCode>'
                      f"<StartDateTime>{start}</StartDateTime><RealTimeDuration>PT10S</RealTimeDuration>"
                      f"{spectra}</RadMeasurement>")
    derived_sum = np.sum(parts["Foreground"], axis=0)
    blocks.append('<DerivedData id="dd1"><MeasurementClassCode>Foreground</MeasurementClassCode>'
                  "<StartDateTime>2026-03-01T10:05:00Z</StartDateTime><RealTimeDuration>PT20S</RealTimeDuration>"
                  + _spectrum_xml("dsum", "Aa1", "ec", derived_sum, "PT80S") + "</DerivedData>")
    xml = (f'<?xml version="1.0"?><RadInstrumentData xmlns="{N42_NS}"'
           ' n42DocUUID="d1c3a6f0-0000-4000-8000-000000000001">'
           '<RadInstrumentInformation id="rii"><RadInstrumentManufacturerName>Acme</RadInstrumentManufacturerName>'
           "<RadInstrumentModelName>RPM-8</RadInstrumentModelName><RadInstrumentClassCode>Portal Monitor"
           "</RadInstrumentClassCode><RadInstrumentVersion><RadInstrumentComponentName>Firmware"
           "</RadInstrumentComponentName><RadInstrumentComponentVersion>1</RadInstrumentComponentVersion>"
           f'</RadInstrumentVersion></RadInstrumentInformation>{dets}<EnergyCalibration id="ec">'
           "<CoefficientValues>0 45 0</CoefficientValues></EnergyCalibration>"
           + "".join(blocks) + "</RadInstrumentData>")
    return xml.encode(), parts


def test_portal_file_sums_panels_and_slices_and_keeps_derived_apart(schema: etree.XMLSchema) -> None:
    data, parts = _portal_file(np.random.default_rng(5))
    assert schema.validate(etree.fromstring(data)), schema.error_log
    readers = [("native", parse_n42(data, "portal.n42"))]
    if sur.specutils_available():
        readers.append(("specutils", sur.parse_with_specutils(data, "portal.n42")))
    for name, doc in readers:
        assert sum(m.derived for m in doc.measurements) == 1, name
        fg, bg = doc.foreground(), doc.background()
        assert bg is not None
        assert np.array_equal(fg.reading.counts, np.sum(parts["Foreground"], axis=0)), name  # derived not added
        assert fg.summed_from == 8 and fg.reading.live_time_s == pytest.approx(80.0), name
        assert np.array_equal(bg.reading.counts, np.sum(parts["Background"], axis=0)), name
        assert bg.summed_from == 4 and bg.reading.live_time_s == pytest.approx(40.0), name


def test_sum_rebins_detectors_with_their_own_calibration() -> None:
    a = SpectrumMeasurement(_reading(np.full(100, 10), cal=(0.0, 3.0)), detector_name="A")
    b = SpectrumMeasurement(_reading(np.full(200, 5), cal=(0.0, 1.5)), detector_name="B")
    fg = SpectrumFile((a, b)).foreground()
    # B's top half channel (298.5-299.25 keV) lies beyond A's last edge: 2.5 counts fall outside
    assert fg.reading.n_channels == 100 and fg.reading.counts.sum() == pytest.approx(2000.0 - 2.5)
    assert fg.reading.counts[50] == pytest.approx(20.0) and fg.detector_name == "A+B"


# --------------------------------------------------------------------------- hostile and broken input
BOMB_2012 = (f'<?xml version="1.0"?><RadInstrumentData xmlns="{N42_NS}"><EnergyCalibration id="ec"><CoefficientValues>'
             '0 3</CoefficientValues></EnergyCalibration><RadMeasurement id="m"><MeasurementClassCode>Foreground'
             "</MeasurementClassCode><RealTimeDuration>PT1S</RealTimeDuration><Spectrum id=\"s\" "
             'energyCalibrationReference="ec"><LiveTimeDuration>PT1S</LiveTimeDuration>'
             '<ChannelData compressionCode="CountedZeroes">0 100000000</ChannelData></Spectrum></RadMeasurement>'
             "</RadInstrumentData>").encode()
BOMB_2006 = (b'<?xml version="1.0"?><N42InstrumentData><Measurement><Spectrum><RealTime>PT1S</RealTime>'
             b'<LiveTime>PT1S</LiveTime><Calibration Type="Energy"><Equation Model="Polynomial"><Coefficients>0 3'
             b'</Coefficients></Equation></Calibration><ChannelData Compression="CountedZeroes">5 0 100000000 7'
             b"</ChannelData></Spectrum></Measurement></N42InstrumentData>")
HUGE_CHANNELS = BOMB_2012.replace(b' compressionCode="CountedZeroes">0 100000000',
                                  b">" + b"1 " * (MAX_CHANNELS + 10))
HOSTILE = {
    "truncated.n42": (RADIACODE_N42.read_bytes()[:4000], "not well-formed"),  # cut inside ChannelData
    "bomb2012.n42": (BOMB_2012, "channels"),
    "bomb2006.n42": (BOMB_2006, "channels"),
    "garbage.bin": (np.random.default_rng(9).bytes(5000), "not a recognised spectrum file"),
    "empty.spe": (b"", "empty"),
    "huge_channels.n42": (HUGE_CHANNELS, "channels"),
    # no native reader claims it: the guard in front of SpecUtils must catch the bomb
    "bomb_unknown_dialect.xml": (b'<Whatever><ChannelData compressionCode="CountedZeroes">0 100000000</ChannelData>'
                                 b"</Whatever>", "channels|not a recognised"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_fail_fast_with_the_file_name(name: str, tmp_path: Path) -> None:
    data, message = HOSTILE[name]
    path = tmp_path / name
    path.write_bytes(data)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(SpectrumFileError, match=message) as info:
        read_spectrum_file(path)
    assert time.perf_counter() - t0 < 2.0
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) < 100_000  # kB: no expansion
    assert str(path) in str(info.value)


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.n42"
    with path.open("wb") as fh:  # sparse: no disk space used
        fh.truncate(65 * 1024 * 1024)
    with pytest.raises(SpectrumFileError, match=r"huge\.n42: file is 68 MB"):
        read_spectrum_file(path)


def test_hostile_files_through_the_cli_one_line_each(tmp_path: Path) -> None:
    from agent.cli_spectrum import app

    paths = []
    for name, (data, _) in HOSTILE.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    res = CliRunner().invoke(app, ["analyze", *map(str, paths)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    errors = res.stderr.strip().splitlines()
    assert len(errors) == len(paths) and all(e.startswith("error: ") for e in errors)
    assert all(str(p) in e for p, e in zip(paths, errors, strict=True))


def test_without_specutils_other_formats_say_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sur, "specutils_module", lambda: None)
    path = tmp_path / "x.cnf"
    path.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(SpectrumFileError, match=r"x\.cnf: .*SpecUtils, which is not installed"):
        read_spectrum_file(path)
    # the native readers still work
    assert read_spectrum_file(RADIACODE_N42).foreground().reading.n_channels == 1024
