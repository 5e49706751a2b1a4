"""``cedge spectrum fit-detector``: fit a detector preset to a technician's own check-source spectra.

Like InterSpec's detector-response-function fit from check sources: start from a preset or physics
model (``--preset``), measure a background and one spectrum per check source, and the few preset
parameters that those lines constrain are fitted (:mod:`agent.spectral.drf_fit`). The background,
scaled by live time, is subtracted from each source spectrum (its variance kept); without one, smooth
continuum terms stand in for it. The result is a YAML preset file the agent loads at run time
(``CEDGE_DETECTOR_FILE=my_detector.yaml`` or :func:`agent.spectral.presets.load_detector_file`), then
``--detector "<name>"`` or the device's reported name (via ``aliases``) selects it.
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


def fit_detector(
    source: list[str] = typer.Option(..., "--source", "-s", help="NUCLIDE=FILE, one per check source (repeat)"),
    preset: str = typer.Option("NaI 2x2 in", "--preset", help="preset or detector model to start from"),
    background: Path | None = typer.Option(None, "--background", help="background spectrum file (same unit)"),
    name: str = typer.Option("My detector", "--name", help="name of the new preset"),
    out: Path = typer.Option(Path("my_detector.yaml"), "--out", help="preset file to write (YAML)"),
    alias: list[str] = typer.Option([], "--alias", help="device/file names that should select it (repeat)"),
    min_energy_kev: float | None = typer.Option(None, help="lowest energy fitted (default: 15 keV below the rise)"),
    max_nfev: int = typer.Option(80, help="maximum model evaluations of the least-squares fit"),
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
    p = DetectorPreset(**{
        **p.__dict__,
        "fitted_on": f"{', '.join(f'{n}={path.name}' for n, path in pairs)}"
                     + (f"; background {background.name}" if background else "; no background (smooth terms)"),
        "notes": f"fitted by cedge spectrum fit-detector from {preset!r}; free: {', '.join(free)}",
        "fom": {label: round(c, 3) for label, (c, _) in res.fom.items()},
    })
    write_preset_file([p], out, "Detector preset fitted by `cedge spectrum fit-detector` (agent/spectral/drf_fit.py).\n"
                      "Load it with CEDGE_DETECTOR_FILE=<this file> (or agent.spectral.presets.load_detector_file).")
    read_preset_file(out)  # what was written must load
    typer.echo(f"FWHM {float(np.asarray(detector_model_fwhm(p, 662.0))):.1f} keV at 662 keV, threshold "
               f"{p.threshold_kev:.1f} keV; wrote {out} (preset {p.name!r}; CEDGE_DETECTOR_FILE={out})")


def detector_model_fwhm(p, energy_kev: float) -> float:
    from agent.spectral.detector import DetectorModel

    return float(DetectorModel(p.name, p.offset_a_kev, p.fwhm_pct_661, p.power_c).fwhm_kev(energy_kev))
