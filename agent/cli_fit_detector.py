"""``cedge spectrum fit-detector``: fit a detector preset to a technician's own check-source spectra.

Like InterSpec's detector-response-function fit from check sources: start from a preset or physics
model (``--preset``), measure a background and one spectrum per check source, and the few preset
parameters that those lines constrain are fitted (:mod:`agent.spectral.drf_fit`). The background,
scaled by live time, is subtracted from each source spectrum (its variance kept); without one, smooth
continuum terms stand in for it. The result is a YAML preset file the agent loads at run time
(``CEDGE_DETECTOR_FILE=my_detector.yaml`` or :func:`agent.spectral.presets.load_detector_file`), then
``--detector "<name>"`` or the device's reported name (via ``aliases``) selects it.

``--dose-rate NUCLIDE=USV_H`` (repeat; ``background=USV_H`` for the background measurement) gives the
dose rate at the detector during that measurement (net of background for a source when ``--background``
is given, else the total during the measurement, since the spectrum is then used as measured), as read from
a calibrated reference instrument or the source certificate at that distance. The preset file then also
carries a G(E) spectrum-to-dose function fitted to those sensitivities (:mod:`agent.spectral.dose_fit`:
the start model's G(E) times a smooth correction), which ``dose_weighting()`` uses for this preset.
"""

from __future__ import annotations

from pathlib import Path

import typer

# parameters fitted by default: with one line only what a single peak constrains, with more the rest
ONE_LINE_FREE = ("offset_a_kev", "np1", "threshold_kev", "threshold_width_kev", "tail_fraction",
                 "tail_length_sigma", "backscatter", "escape_scale")
MANY_LINES_FREE = ("offset_a_kev", "fwhm_pct_661", "power_c", "np0", "np1", "threshold_kev", "threshold_width_kev",
                   "tail_fraction", "tail_length_sigma", "eff1", "cont0", "cont1", "backscatter", "room_scatter",
                   "escape_scale")


def _parse_source(text: str) -> tuple[str, Path]:
    nuclide, sep, path = text.partition("=")
    if not sep or not nuclide.strip() or not path.strip():
        raise typer.BadParameter(f"--source must be NUCLIDE=FILE, got {text!r}")
    return nuclide.strip(), Path(path.strip())


def _parse_dose_rate(text: str) -> tuple[str, float]:
    nuclide, sep, value = text.partition("=")
    try:
        dose = float(value)
    except ValueError:
        dose = float("nan")
    if not sep or not nuclide.strip() or not dose > 0 or dose == float("inf"):
        raise typer.BadParameter(f"--dose-rate must be NUCLIDE=USV_H with a dose rate > 0, got {text!r}")
    return nuclide.strip(), dose


def fit_detector(
    source: list[str] = typer.Option(..., "--source", "-s", help="NUCLIDE=FILE, one per check source (repeat)"),
    preset: str = typer.Option("NaI 2x2 in", "--preset", help="preset or detector model to start from"),
    background: Path | None = typer.Option(None, "--background", help="background spectrum file (same unit)"),
    name: str = typer.Option("My detector", "--name", help="name of the new preset"),
    out: Path = typer.Option(Path("my_detector.yaml"), "--out", help="preset file to write (YAML)"),
    alias: list[str] = typer.Option([], "--alias", help="device/file names that should select it (repeat)"),
    min_energy_kev: float | None = typer.Option(None, help="lowest energy fitted (default: 15 keV below the rise)"),
    max_nfev: int = typer.Option(80, help="maximum model evaluations of the least-squares fit"),
    dose_rate: list[str] = typer.Option([], "--dose-rate", help="NUCLIDE=USV_H: H*(10) rate at the detector during"
                                        " that source's measurement, net of background ('background=USV_H' for"
                                        " the background); fits the preset's G(E) dose weighting (repeat)"),
) -> None:
    """Fit a detector preset to check-source spectra of your own unit and write a loadable preset file."""
    import numpy as np

    from agent.cli_output import error_line
    from agent.spectral.detector import detector_model
    from agent.spectral.drf_fit import Measured, fit_preset, source_of
    from agent.spectral.library import LibraryError
    from agent.spectral.presets import DetectorPreset, presets, read_preset_file, write_preset_file
    from agent.spectral.response import response_table
    from agent.spectral_files import SpectrumFileError, read_spectrum_file

    pairs = [_parse_source(s) for s in source]
    doses = dict(_parse_dose_rate(d) for d in dose_rate)
    for n in doses:
        if n == "background" and background is None:
            raise typer.BadParameter("--dose-rate background=... needs --background")
        if n != "background" and n not in {nuc for nuc, _ in pairs}:
            raise typer.BadParameter(f"--dose-rate {n}: no --source {n}=FILE")

    def source_lines(n: str) -> tuple:
        s = source_of(n)
        return s.energies_kev, s.yields

    try:
        model = detector_model(preset, fallback=None)
        start = presets().get(model.name)
        table = response_table(model)
        if start is None:
            start = DetectorPreset(name, model.name, offset_a_kev=model.offset_a_kev, fwhm_pct_661=model.fwhm_pct_661,
                                   power_c=model.power_c)
        bg = read_spectrum_file(background).foreground().reading if background else None
        measured = []
        for nuclide, path in pairs:
            r = read_spectrum_file(path).foreground().reading
            counts = np.asarray(r.counts, dtype=float)
            extra = None
            if bg is not None:
                if bg.n_channels != r.n_channels:
                    raise ValueError(f"{path}: {r.n_channels} channels, background {bg.n_channels}")
                k = r.live_time_s / max(bg.live_time_s, 1e-9)
                counts = counts - k * np.asarray(bg.counts, dtype=float)
                extra = np.maximum(np.asarray(bg.counts, dtype=float), 0.0) * k * (1.0 + k)
            measured.append(Measured(nuclide, counts, r.calibration, r.live_time_s, str(path), extra, bg is None))
    except (SpectrumFileError, LibraryError, ValueError, OSError) as err:
        error_line(str(err))
        raise typer.Exit(code=2) from err
    # discriminator start: where the first source spectrum rises above 2 % of its maximum
    first = measured[0]
    e = first.calibration.energy_kev(np.arange(first.n_channels, dtype=float))
    rise = float(e[int(np.argmax(first.counts > 0.02 * first.counts.max()))])
    thr = start.threshold_kev if start.threshold_kev > 0 else max(rise - 1.0, table.min_energy_kev * 0.5, 5.0)
    nonprop = tuple(start.nonprop) + (0.0,) * (3 - len(start.nonprop))
    try:
        line_e = [e for n, _ in pairs for e, y in zip(*source_lines(n), strict=True) if e > thr and y > 0.01]
    except LibraryError as err:
        error_line(str(err))
        raise typer.Exit(code=2) from err
    span = (min(line_e), max(line_e)) if line_e else start.correction_range_kev
    start = DetectorPreset(**{**start.__dict__, "name": name, "kind": "fitted", "threshold_kev": thr,
                              "correction_range_kev": span,
                              "threshold_width_kev": max(start.threshold_width_kev, 1.0), "nonprop": nonprop,
                              "aliases": tuple(alias), "fom": {}})
    n_lines = len({n for n, _ in pairs})
    free = ONE_LINE_FREE if n_lines == 1 else MANY_LINES_FREE
    if n_lines == 2:  # two sources do not fix the slopes of efficiency and continuum with energy
        free = tuple(f for f in free if f not in ("eff1", "cont1"))
    # the window starts below the discriminator so that the empty channels there fix it
    lo = min_energy_kev if min_energy_kev is not None else max(thr - 15.0, 3.0)
    try:
        res = fit_preset(start, measured, free, max_nfev=max_nfev, min_energy_kev=lo)
    except (LibraryError, ValueError) as err:
        error_line(f"fit failed: {err}")
        raise typer.Exit(code=1) from err
    typer.echo(f"{'source':34} {'chi2/dof start':>15} {'chi2/dof fitted':>16} {'L1 fitted':>10}")
    for label, (c, l1) in res.fom.items():
        typer.echo(f"{label[:34]:34} {res.start_fom[label][0]:15.2f} {c:16.2f} {l1:10.3f}")
    p = res.preset
    dose_g = _fit_dose(model, measured, bg, doses, name) if doses else {}
    p = DetectorPreset(**{
        **p.__dict__,
        "fitted_on": f"{', '.join(f'{n}={path.name}' for n, path in pairs)}"
                     + (f"; background {background.name}" if background else "; no background (smooth terms)"),
        "notes": f"fitted by cedge spectrum fit-detector from {preset!r}; free: {', '.join(free)}",
        "fom": {label: round(c, 3) for label, (c, _) in res.fom.items()},
        "dose_weighting": dose_g,
    })
    write_preset_file([p], out, "Detector preset fitted by `cedge spectrum fit-detector` (agent/spectral/drf_fit.py).\n"
                      "Load it with CEDGE_DETECTOR_FILE=<this file> (or agent.spectral.presets.load_detector_file).")
    read_preset_file(out)  # what was written must load
    typer.echo(f"FWHM {float(np.asarray(detector_model_fwhm(p, 662.0))):.1f} keV at 662 keV, threshold "
               f"{p.threshold_kev:.1f} keV; wrote {out} (preset {p.name!r}; CEDGE_DETECTOR_FILE={out})")


def _fit_dose(model, measured: list, bg, doses: dict[str, float], name: str) -> dict:
    """The preset's ``dose_weighting`` mapping fitted to the given dose rates (prints read/true per source)."""
    import numpy as np

    from agent.cli_output import error_line
    from agent.spectral.dose import dose_weighting
    from agent.spectral.dose_fit import DoseSource, fit_dose_weighting, sensitivity_from_counts
    from agent.spectral.library import LibraryError

    sources = []
    for m in measured:
        if m.source in doses and m.source not in {s.name for s in sources}:
            s = sensitivity_from_counts(m.counts, m.live_time_s, doses[m.source])
            sources.append(DoseSource(m.source, m.counts, m.calibration, s))
    if "background" in doses:
        bc = np.asarray(bg.counts, dtype=float)
        sources.append(DoseSource("background", bc, bg.calibration,
                                  sensitivity_from_counts(bc, bg.live_time_s, doses["background"])))
    try:
        base = dose_weighting(model)
        fit = fit_dose_weighting(base, sources, name)
    except (LibraryError, ValueError) as err:
        error_line(f"dose weighting fit failed: {err}")
        raise typer.Exit(code=1) from err
    typer.echo(f"{'dose source':34} {'S cps/(uSv/h)':>14} {'read/true base':>15} {'read/true fitted':>17}")
    for s in sources:
        typer.echo(f"{s.name[:34]:34} {s.sensitivity_cps_per_usv_h:14.1f} {fit.ratio_before[s.name]:15.3f}"
                   f" {fit.ratio_after[s.name]:17.3f}" + ("  (inconsistent: down-weighted)"
                                                          if fit.robust_weights[s.name] < 0.5 else ""))
    w = fit.weighting
    return {
        "coefficients": [float(x) for x in w.coefficients],
        "e_min_keV": float(w.e_min_kev),
        "e_max_keV": float(w.e_max_kev),
        "base": base.model,
        "correction": [round(float(x), 6) for x in fit.correction],
        "fitted_on": ", ".join(f"{s.name}={doses[s.name]:g} uSv/h" for s in sources),
        "read_over_true": {s.name: round(fit.ratio_after[s.name], 4) for s in sources},
    }


def detector_model_fwhm(p, energy_kev: float) -> float:
    from agent.spectral.detector import DetectorModel

    return float(DetectorModel(p.name, p.offset_a_kev, p.fwhm_pct_661, p.power_c).fwhm_kev(energy_kev))
