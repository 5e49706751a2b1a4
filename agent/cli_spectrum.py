"""``cedge spectrum``: analyse spectrum files and simulate N42 files.

``analyze FILE...`` reads N42.42 (2006/2012), IAEA SPE and RadiaCode XML natively, and CNF, SPC, CHN,
PCF, CSV/TXT, Exploranium and vendor N42 dialects when SpecUtils is installed (extra ``files``). It
prints, per file, the identified nuclides with confidence, the H*(10) rate from the spectrum and the
gross count rate (``--json``: one JSON object per run with a list of files, each with
``detector_assumed``). A file's own Background measurement(s), or ``--background FILE``, is used as
background; without one the natural K/U/Th lines are modelled as background and not reported. The
detector model comes from ``--detector``, else from the file, else the default with a warning on stderr;
``--detector-file FILE`` first loads the presets of a file written by ``fit-detector`` (its fitted
resolution/response and, if fitted with ``--dose-rate``, its G(E)).

``simulate`` writes an N42 file (foreground + background measurement + our analysis) from the
simulator; it is the only command that needs ``hal_sim``, imported inside it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

app = typer.Typer(help="Gamma spectra: identify nuclides, dose rate and gross counts; simulate N42 files.",
                  no_args_is_help=True)


def _resolve_detector(requested: str | None, doc_models: list[str]) -> tuple[str, bool, str | None]:
    """(model name, assumed?, what the file said): ``--detector`` wins, then the file's names, else the default."""
    from agent.spectral.detector import DEFAULT_MODEL, detector_model
    from agent.spectral.library import LibraryError

    if requested:
        return detector_model(requested, fallback=None).name, False, None
    for name in doc_models:
        try:
            return detector_model(name, fallback=None).name, False, None
        except LibraryError:
            continue
    said = next((n for n in doc_models if n and n != "unknown"), "unknown")
    return DEFAULT_MODEL, True, said


def _analyse_file(path: Path, background_path: Path | None, detector: str | None) -> dict:
    from dataclasses import replace

    from agent.cli_output import warning_line
    from agent.spectral.pipeline import SpectrumPipeline
    from agent.spectral_files import read_spectrum_file

    doc = read_spectrum_file(path)
    fg = doc.foreground()
    bg = doc.background()
    if background_path is not None:
        bg = read_spectrum_file(background_path).foreground()
    model, assumed, said = _resolve_detector(detector, [fg.reading.detector_model, doc.instrument.model])
    if assumed:
        warning_line(f"{path}: the file names no detector model we know ({said!r}); assuming {model!r}"
                     " (give --detector NAME)")
    fg_reading = replace(fg.reading, detector_model=model)
    bg_reading = replace(bg.reading, detector_model=model) if bg is not None else None
    analysis = SpectrumPipeline().analyze(fg_reading, bg_reading)
    out = {"file": str(path), "instrument": doc.instrument.model, **analysis.to_dict()}
    out["detector_assumed"] = assumed
    out["foreground_spectra"] = fg.summed_from
    out["background_from"] = (
        str(background_path) if background_path else ("file" if bg is not None else "modelled (K/U/Th)")
    )
    return out


@app.command()
def analyze(
    files: list[Path] = typer.Argument(..., help="spectrum files: N42.42, IAEA SPE, RadiaCode XML; with SpecUtils"
                                       " installed also CNF, SPC, CHN, PCF, CSV/TXT, Exploranium"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object instead of text"),
    background: Path | None = typer.Option(None, "--background", help="background spectrum file"),
    detector: str | None = typer.Option(None, "--detector", help="detector model (e.g. 'NaI 3x3 in'); default:"
                                        " the file's, else 'NaI 2x2 in' with a warning"),
    detector_file: list[Path] = typer.Option([], "--detector-file", help="detector preset file (YAML, from `cedge"
                                             " spectrum fit-detector`) whose presets --detector may name (repeat)"),
) -> None:
    """Identify nuclides, dose rate and gross count rate of each FILE.

    A file with several spectra is analysed as the sum of its foreground spectra (all detectors and
    time slices), against the sum of its background spectra when it has any. Unreadable files are
    reported one line each on stderr; the exit code is then 1.
    """
    from agent.cli_output import error_line, fail
    from agent.spectral.detector import detector_model, detector_models
    from agent.spectral.library import LibraryError
    from agent.spectral.presets import load_detector_file

    for f in detector_file:
        try:
            load_detector_file(f)
        except LibraryError as err:
            fail(f"--detector-file {f}: {err}", 2)
    if detector is not None:
        try:
            detector_model(detector, fallback=None)
        except LibraryError:
            fail(f"unknown detector model {detector!r}; valid: {', '.join(detector_models())}", 2)
    results, failed = [], 0
    for path in files:
        try:
            results.append(_analyse_file(path, background, detector))
        except Exception as err:  # noqa: BLE001 - one line per bad file, never a traceback (field files)
            failed += 1
            results.append({"file": str(path), "error": str(err) if isinstance(err, ValueError | OSError)
                            else f"cannot analyse: {type(err).__name__}: {err}"})
    if json_out:
        typer.echo(json.dumps({"files": results}, indent=2))
    for r in results:
        if "error" in r:
            message = r["error"] if r["error"].startswith(r["file"]) else f"{r['file']}: {r['error']}"
            error_line(message)
            continue
        if json_out:
            continue
        names = ", ".join(f"{n['label']} {100 * n['confidence']:.0f}%" for n in r["nuclides"])
        if r.get("unknown"):
            lines = ", ".join(f"{e:g}" for e in r.get("unidentified_kev", []))
            names = (names + "; " if names else "") + f"unknown / unidentified lines at {lines} keV"
        names = names or "background only"
        dose = f"{r['dose_rate_usv_h']:.3g} uSv/h" if r["dose_rate_usv_h"] is not None else "n/a"
        typer.echo(
            f"{r['file']}: {names} | H*(10) {dose} | gross {r['gross_cps']:.1f} cps"
            f" | {r['detector_model']}{' (assumed)' if r['detector_assumed'] else ''},"
            f" live {r['live_time_s']:.0f} s, background {r['background_from']}"
        )
    if failed:
        raise typer.Exit(code=1)


def _parse_shielding(text: str | None) -> list[tuple[str, float]]:
    if not text:
        return []
    out = []
    for part in text.split(","):
        mat, _, g = part.partition(":")
        try:
            out.append((mat.strip(), float(g)))
        except ValueError as err:
            raise typer.BadParameter(f"shielding must be 'material:g_cm2[,material:g_cm2]', got {text!r}") from err
    return out


@app.command()
def simulate(
    out: Path = typer.Argument(..., help="N42 file to write"),
    nuclide: list[str] = typer.Option([], "--nuclide", "-n", help="source nuclide (repeat for mixtures)"),
    activity_mbq: float = typer.Option(1.0, help="activity of each source, MBq"),
    distance_m: float = typer.Option(1.0, help="source-detector distance, m"),
    shielding: str | None = typer.Option(None, help="e.g. 'iron:10,lead:5' (g/cm2)"),
    model: str = typer.Option("NaI 2x2 in", help="detector model"),
    real_time_s: float = typer.Option(60.0, help="foreground acquisition time, s"),
    background_usv_h: float = typer.Option(0.1, help="natural background H*(10), uSv/h"),
    background_s: float = typer.Option(600.0, help="background measurement time (0: none), s"),
    temperature_c: float = typer.Option(20.0, help="detector temperature (gain drift), degC"),
    seed: int = typer.Option(0, help="random seed"),
    analyse: bool = typer.Option(True, "--analyse/--no-analyse", help="add our analysis results"),
) -> None:
    """Write a simulated N42.42 file (needs the simulator, hal_sim)."""
    import numpy as np

    from agent.hal.interfaces import SpectrumReading
    from agent.spectral.pipeline import SpectrumPipeline, to_analysis_record
    from agent.spectral_files import InstrumentInfo, SpectrumFile, SpectrumMeasurement, write_n42

    try:
        from hal_sim.gamma import DetectorResponse
    except ImportError as err:  # pragma: no cover - the simulator ships with the project
        raise typer.BadParameter(f"the simulator (hal_sim) is not available: {err}") from err
    try:
        resp = DetectorResponse.for_model(model)
        rate = resp.background_rate_spectrum(background_usv_h)
        for nuc in nuclide:
            rate = rate + resp.source_rate_spectrum(nuc, activity_mbq * 1e6, distance_m, _parse_shielding(shielding))
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    rng = np.random.default_rng(seed)
    end = datetime.now(UTC).replace(microsecond=0)
    counts, live = resp.sample(rate * real_time_s, real_time_s, rng, temperature_c=temperature_c)
    fg = SpectrumReading(counts, live, real_time_s, resp.calibration, end, 0.0, model)
    measurements = [SpectrumMeasurement(fg, "Foreground", end - timedelta(seconds=real_time_s),
                                        "simulated: " + (", ".join(nuclide) or "background only"))]
    bg_reading = None
    if background_s > 0:
        bcounts, blive = resp.sample(resp.background_rate_spectrum(background_usv_h) * background_s, background_s,
                                     rng, temperature_c=temperature_c)
        bstart = end - timedelta(seconds=real_time_s + background_s)
        bg_reading = SpectrumReading(bcounts, blive, background_s, resp.calibration,
                                     bstart + timedelta(seconds=background_s), 0.0, model)
        measurements.append(SpectrumMeasurement(bg_reading, "Background", bstart, "simulated background"))
    analyses = ()
    if analyse:
        analysis = SpectrumPipeline().analyze(fg, bg_reading)
        analyses = (to_analysis_record(analysis, end),)
    kind = "CsI" if model.startswith("CsI") else model.split()[0]
    doc = SpectrumFile(
        tuple(measurements),
        InstrumentInfo(manufacturer="customs-edge", model=f"simulated {model}", class_code="Radionuclide Identifier",
                       detector_kind=kind, versions=(("Simulator", "hal_sim.gamma"),)),
        analyses,
        str(out),
    )
    write_n42(doc, out)
    typer.echo(f"wrote {out}")


# `fit-detector` lives in its own module (detector presets from a technician's check-source spectra)
from agent.cli_fit_detector import fit_detector  # noqa: E402

app.command("fit-detector")(fit_detector)
