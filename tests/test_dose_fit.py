"""G(E) dose weighting fitted to measured sensitivities: the fit itself, the RASE preset's dose on held-out
RASE nuclides through the pipeline, fit-detector --dose-rate, analyze --detector-file."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from agent.hal.interfaces import EnergyCalibration
from agent.spectral.detector import detector_model
from agent.spectral.dose import dose_weighting, dose_weightings
from agent.spectral.dose_fit import DoseSource, dose_ratio, fit_dose_weighting

RASE = pathlib.Path("/work/shared/spectra/rase_generic_nai")
ROOT = pathlib.Path(__file__).resolve().parents[1]
needs_rase = pytest.mark.skipif(not RASE.exists(), reason="RASE base spectra not available")
CHECK = {"Am-241", "Co-57", "Cs-137", "Co-60"}
CAL = EnergyCalibration((0.0, 3.0))


def _line(e0: float, n: int = 1024) -> np.ndarray:
    """A peak at e0 on a flat Compton shelf below it (a crude but smooth spectrum shape)."""
    e = CAL.energy_kev(np.arange(n, dtype=float))
    peak = np.exp(-0.5 * ((e - e0) / (0.03 * e0)) ** 2)
    shelf = 0.3 * (e < 0.7 * e0) * (e > 30.0)
    return 1e4 * (peak / peak.sum() + shelf / max(shelf.sum(), 1.0))


def test_fit_recovers_a_smooth_correction_and_flags_an_inconsistent_source() -> None:
    base = dose_weightings()["NaI 2x2 in"]
    energies = (60.0, 122.0, 662.0, 1250.0, 300.0)

    def true_s(counts: np.ndarray) -> float:  # the unit's true G is G0 * exp(0.4 + 0.1 L)
        e = CAL.energy_kev(np.arange(counts.size, dtype=float))
        g = base.g(e) * np.exp(0.4 + 0.1 * np.log(np.clip(e, 1.0, None) / 662.0))
        return 1.0 / float(counts / counts.sum() @ g)

    srcs = [DoseSource(f"E{e0:g}", _line(e0), CAL, true_s(_line(e0))) for e0 in energies]
    fit = fit_dose_weighting(base, srcs, "synthetic")
    assert all(abs(r - 1.0) < 0.05 for r in fit.ratio_after.values()), fit.ratio_after
    assert all(abs(r - 1.0) > 0.1 for r in fit.ratio_before.values())
    # one source whose sensitivity is 3x off does not pull the others
    bad = [*srcs[:4], DoseSource("bad", srcs[4].counts, CAL, 3.0 * srcs[4].sensitivity_cps_per_usv_h)]
    fit = fit_dose_weighting(base, bad, "synthetic")
    assert fit.robust_weights["bad"] < 0.1
    assert all(abs(fit.ratio_after[s.name] - 1.0) < 0.06 for s in srcs[:4])
    # a single source fixes the scale only
    one = fit_dose_weighting(base, srcs[2:3], "synthetic")
    assert one.correction[1:] == (0.0, 0.0) and abs(one.ratio_after["E662"] - 1.0) < 0.03


def test_rase_preset_has_its_own_g_of_e() -> None:
    w = dose_weighting(detector_model("NaI generic (RASE)"))
    assert w.model == "NaI generic (RASE)"
    assert w is not dose_weightings()["NaI 2x2 in"]


@needs_rase
def test_rase_preset_dose_on_held_out_nuclides_through_the_pipeline() -> None:
    from agent.spectral.pipeline import SpectrumPipeline
    from cedge.bench.rase import _reading, load_base_set

    bases = load_base_set(RASE)
    rng = np.random.default_rng(20261207)
    bgb, dose, bg_dose, dwell, bg_dwell = bases.background, 1.0, 0.08, 120.0, 1200.0
    model = "NaI generic (RASE)"
    errors = {}
    for nuc, b in bases.sources.items():
        if nuc in CHECK:
            continue
        mu = (b.shape * b.sensitivity_cps_per_usv_h * dose + bgb.shape * bgb.sensitivity_cps_per_usv_h * bg_dose)
        fg = _reading(rng.poisson(mu * dwell), dwell, b.calibration, model)
        bg = _reading(rng.poisson(bgb.shape * bgb.sensitivity_cps_per_usv_h * bg_dose * bg_dwell), bg_dwell,
                      b.calibration, model)
        res = SpectrumPipeline().analyze(fg, bg)
        errors[nuc] = res.dose_rate_usv_h / (dose + bg_dose) - 1.0
    assert len(errors) >= 10
    within = [n for n, e in errors.items() if abs(e) <= 0.2]
    assert len(within) >= 0.8 * len(errors), errors
    assert max(abs(e) for e in errors.values()) < 0.35, errors


@pytest.fixture(scope="module")
def fitted_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    if not RASE.exists():
        pytest.skip("RASE base spectra not available")
    from cedge.bench.rase import load_base_set

    bases = load_base_set(RASE)
    out = tmp_path_factory.mktemp("dose") / "my_nai.yaml"
    cmd = [sys.executable, "-m", "cedge", "spectrum", "fit-detector", "--preset", "NaI 2x2 in", "--name", "Dose NaI",
           "--out", str(out), "--max-nfev", "2"]
    for nuc, stem in (("Am-241", "Am241"), ("Cs-137", "Cs137"), ("Co-60", "Co60")):
        b = bases.sources[nuc]
        d = float(np.clip(b.counts, 0, None).sum() / b.live_time_s / b.sensitivity_cps_per_usv_h)
        cmd += ["--source", f"{nuc}={RASE / f'VABCD_M001_{stem}.n42'}", "--dose-rate", f"{nuc}={d:.6g}"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    assert "read/true" in run.stdout
    return out


def test_fit_detector_dose_rate_writes_a_loadable_g_of_e(fitted_file: pathlib.Path) -> None:
    from agent.spectral.presets import read_preset_file

    (p,) = read_preset_file(fitted_file)
    g = p.dose_weighting
    assert len(g["coefficients"]) == 7 and g["base"] == "NaI 2x2 in"
    assert all(abs(r - 1.0) < 0.1 for r in g["read_over_true"].values()), g
    check = ("from agent.spectral.detector import detector_model; from agent.spectral.dose import dose_weighting; "
             "w = dose_weighting(detector_model('Dose NaI', fallback=None)); print(w.model, *w.coefficients)")
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "CEDGE_DETECTOR_FILE": str(fitted_file)})
    assert run.returncode == 0, run.stderr
    name_and = run.stdout.split()
    assert " ".join(name_and[:2]) == "Dose NaI"
    assert np.allclose([float(x) for x in name_and[2:]], g["coefficients"])
    # and the G(E) really is used: the Cs-137 base spectrum reads its own dose rate
    from agent.spectral.dose import DoseWeighting
    from cedge.bench.rase import load_base_set

    b = load_base_set(RASE).sources["Cs-137"]
    w = DoseWeighting("x", np.asarray(g["coefficients"]), g["e_min_keV"], g["e_max_keV"])
    src = DoseSource("Cs-137", b.counts, b.calibration, b.sensitivity_cps_per_usv_h)
    assert abs(dose_ratio(w, src) - 1.0) < 0.1


def test_analyze_detector_file(fitted_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
    spectrum = RASE / "VABCD_M001_Cs137.n42"
    base = [sys.executable, "-m", "cedge", "spectrum", "analyze", str(spectrum), "--json"]
    run = subprocess.run([*base, "--detector-file", str(fitted_file), "--detector", "Dose NaI"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    (r,) = json.loads(run.stdout)["files"]
    assert r["detector_model"] == "Dose NaI" and r["detector_assumed"] is False
    assert r["dose_rate_usv_h"] > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("presets: [ {name: x, base: 'NaI 2x2 in', efficiency: 3} ]\n")
    for f in (bad, tmp_path / "missing.yaml"):
        run = subprocess.run([*base, "--detector-file", str(f), "--detector", "x"], capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
        assert run.returncode == 2, (run.stdout, run.stderr)
        assert re.search(r"--detector-file .*(invalid|cannot read)", run.stderr), run.stderr
        assert "Traceback" not in run.stderr
