"""Mobile-survey N42 files: written valid against the NIST schema, read back exactly, bad input
refused; ``cedge localize`` on a simulated drive file; ``cedge controller export-incident``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from lxml import etree

from agent.hal.interfaces import EnergyCalibration
from agent.spectral_files.model import SpectrumFileError
from agent.spectral_files.survey import SurveyInterval, build_survey, parse_survey, read_surveys, write_survey

XSD = Path(__file__).resolve().parents[2] / "shared" / "reference" / "n42_2011.xsd"
T0 = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
CAL = EnergyCalibration((0.0, 3.0))


def _iv(k: int, **kw) -> SurveyInterval:
    base = dict(start_utc=T0 + timedelta(seconds=k), real_time_s=1.0, live_time_s=0.97, gross_counts=1500.0 + k,
                detector="bottom", detector_model="NaI 2x4x16 in log", instrument="veh-1",
                spectrum=np.full(64, 1.0 + k), calibration=CAL, lat_deg=51.95 + 1e-5 * k, lon_deg=4.05,
                alt_m=6.5, height_m=1.5)
    base.update(kw)
    return SurveyInterval(**base)


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    if not XSD.is_file():
        pytest.skip("NIST N42.42-2012 schema not available")
    return etree.XMLSchema(etree.parse(str(XSD)))


def test_written_survey_is_schema_valid_and_reads_back(schema: etree.XMLSchema, tmp_path: Path) -> None:
    ivs = [_iv(k) for k in range(3)]
    # a mast: a second detector at 3.5 m in the same intervals, and gross counts only
    ivs += [_iv(k, detector="top", height_m=3.5, spectrum=None, calibration=None, gross_counts=900.0 + k)
            for k in range(3)]
    assert schema.validate(build_survey(ivs)), schema.error_log
    path = write_survey(ivs, tmp_path / "drive.n42")
    back = read_surveys([path])
    assert len(back) == 6
    top = sorted((b for b in back if b.detector == "top"), key=lambda b: b.start_utc)
    bottom = sorted((b for b in back if b.detector == "bottom"), key=lambda b: b.start_utc)
    assert [b.height_m for b in top] == [3.5] * 3 and [b.height_m for b in bottom] == [1.5] * 3
    assert top[1].gross_counts == 901.0 and top[1].spectrum is None
    assert bottom[2].spectrum is not None and bottom[2].gross_counts == pytest.approx(64 * 3.0)
    assert bottom[1].lat_deg == pytest.approx(51.95001) and bottom[1].live_time_s == pytest.approx(0.97)
    assert bottom[0].position_at == "mid" and bottom[0].start_utc == T0


def test_local_positions_round_trip_through_relative_location(schema: etree.XMLSchema) -> None:
    ivs = [_iv(k, lat_deg=None, lon_deg=None, alt_m=None, height_m=None, local_xyz_m=(10.0 + k, -3.0, 1.5),
               origin=(51.95, 4.05, 5.0)) for k in range(2)]
    doc = build_survey(ivs)
    assert schema.validate(doc), schema.error_log
    back = parse_survey(etree.tostring(doc), "mem")
    assert back[1].local_xyz_m == pytest.approx((11.0, -3.0, 1.5), abs=1e-5)
    assert back[1].origin == (51.95, 4.05, 5.0)


def test_bad_survey_input_is_refused_by_name() -> None:
    doc = build_survey([_iv(0)])
    ns = {"n": "http://physics.nist.gov/N42/2011/N42"}
    rm = doc.getroot().find("n:RadMeasurement", ns)
    state = rm.find("n:RadInstrumentState", ns)
    rm.remove(state)
    with pytest.raises(SpectrumFileError, match="has no position"):
        parse_survey(etree.tostring(doc), "nopos.n42")
    doc = build_survey([_iv(0)])
    rm = doc.getroot().find("n:RadMeasurement", ns)
    rm.remove(rm.find("n:StartDateTime", ns))
    with pytest.raises(SpectrumFileError, match="StartDateTime"):
        parse_survey(etree.tostring(doc), "notime.n42")
    with pytest.raises(SpectrumFileError, match="one instrument"):
        build_survey([_iv(0), _iv(1, instrument="veh-2")])
    with pytest.raises(SpectrumFileError, match="not well-formed"):
        parse_survey(b"<RadInstrumentData", "cut.n42")


def test_cedge_localize_on_a_simulated_drive_file(tmp_path: Path) -> None:
    """A drive the localizer has never seen: hal_sim 1-s NaI spectra + GNSS points (0.5 m error,
    Gauss-Markov) written as N42.42-2012; `cedge localize` run as a subprocess."""
    from cedge.bench.localize_scenarios import Case, Drive, SourceDef, _std_rows, simulate, site_dict, survey_intervals

    case = Case(name="cli", family="test", seed=5, rows=_std_rows(), gnss_sigma_m=0.5,
                sources=(SourceDef("Cs-137", 80.0, "B-3", 0, (5.0, 0.8, 1.0)),),
                drives=(Drive("veh-1", 7.2, 10.0, 70.0, 5.0, 0.0), Drive("veh-1", 19.2, 70.0, 10.0, 5.0, 30.0)))
    sim = simulate(case, with_spectra=True)
    drive = write_survey(survey_intervals(sim), tmp_path / "drive.n42")
    site = site_dict(case.rows)
    site["origin"] = {"lat_deg": 51.95, "lon_deg": 4.05, "alt_m": 5.0}
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "cedge", "localize", str(drive), "--site", str(tmp_path / "site.yaml"),
                           "--gnss-sigma-m", "0.5", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["n_sources"] == 1 and out["intervals"] == len(sim.ms)
    src = out["sources"][0]
    truth = sim.truth[0]
    error_m = math.hypot(src["x_m"] - truth[0], src["y_m"] - truth[1])
    print(f"cedge localize: horizontal error {error_m:.2f} m against the truth, sigma_xy {src['sigma_xy_m']:.2f} m")
    assert error_m < 1.5
    assert src["column"] == "B-3" and src["nuclide"] == "Cs-137"
    assert src["lat_deg"] == pytest.approx(51.95 + truth[1] / 111_250, abs=3e-5)
    assert 10.0 < src["apparent_activity_mbq"] < 200.0  # 80 MBq behind cargo, unshielded-equivalent
    from cedge.localize_cli import format_text

    text = "\n".join(format_text(out))
    assert "source 1:" in text and "container B-3" in text and "Cs-137" in text
    bad = subprocess.run([sys.executable, "-m", "cedge", "localize", str(tmp_path / "site.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_export_incident_writes_files_localize_reads(tmp_path: Path) -> None:
    """Two passes through the controller's store and dispatcher, exported per unit, read back."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_dispatch import FRAME, Yard
    from test_dispatch import T0 as D_T0

    from controller.incident_export import ExportError, export_incident

    yard = Yard(tmp_path)
    yard.unit("mob-1", "mobile")
    yard.unit("mob-2", "mobile")
    yard.drive_pass("mob-1", 0.0, D_T0)
    yard.drive_pass("mob-2", 10.0, D_T0 + timedelta(seconds=60))
    yard.dispatcher.tick()
    [inc] = yard.store.list_incidents()
    paths = export_incident(yard.store, inc["incident_id"], tmp_path / "out")
    assert [p.name for p in paths] == [f"{inc['incident_id']}_mob-1.n42", f"{inc['incident_id']}_mob-2.n42"]
    ivs = read_surveys(paths)
    rows = yard.store.measurements_near(inc["center_x_m"], inc["center_y_m"], 40.0)
    assert len(ivs) == len(rows) and {iv.instrument for iv in ivs} == {"mob-1", "mob-2"}
    assert all(iv.spectrum is None and iv.height_m == pytest.approx(1.5) for iv in ivs)
    first = min(rows, key=lambda r: r["t_epoch_s"])
    assert ivs[0].start_utc.timestamp() == pytest.approx(first["t_epoch_s"] - first["interval_s"])
    proc = subprocess.run([sys.executable, "-m", "cedge", "localize", *map(str, paths), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    est = inc["estimate"]
    src = out["sources"][0]
    # the files carry latitude/longitude; cedge localize puts its frame at the first fix
    x, y, _ = FRAME.to_enu(src["lat_deg"], src["lon_deg"], src["alt_m"])
    assert math.hypot(x - est["x_m"], y - est["y_m"]) < 1.0  # the same data, the same answer
    with pytest.raises(ExportError, match="no incident"):
        export_incident(yard.store, "I-nope", tmp_path / "out")
    yard.store.close()
