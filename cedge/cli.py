"""`cedge`: one command for technicians, operators and engineers.

    cedge agent run|status|check-config|devices     on a unit
    cedge controller run|units|alarms|tasks|stats   at the fleet controller
    cedge demo [--json]                             the whole workflow on one machine
    cedge site init|enroll|revoke|show              site CA, unit certificates, broker config and ACL
    cedge sim gps ...                               wire-level emulators for hardware-in-the-loop rigs
    cedge spectrum analyze|simulate ...             spectra files (N42, SPE, RadiaCode XML)
    cedge camera analyze ...                        recorded videos
    cedge bench spectra|camera|fuzz|flood [--json]  benchmarks (fixed seeds; fuzzing; row-13 flood)
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import typer

from agent.cli import app as agent_app
from agent.cli_output import console as make_console
from agent.cli_output import fail
from agent.exit_codes import EXIT_MISSING_EXTRA
from agent.optional_deps import MissingExtra, explain

app = typer.Typer(help="customs-edge: screening units and their fleet controller.", no_args_is_help=True)
app.add_typer(agent_app, name="agent", help="Run and inspect the agent on this unit.")


def _version_text() -> str:
    """``customs-edge X.Y.Z (Python a.b.c; extras: ...)``: what a technician reads off a unit."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from agent.optional_deps import installed_extras

    try:
        ver = version("customs-edge")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from agent import __version__ as ver
    return f"customs-edge {ver} (Python {platform.python_version()}; extras: {', '.join(installed_extras()) or 'none'})"


def _show_version(value: bool) -> None:
    if value:
        print(_version_text())
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version, the Python and the installed extras, and exit."),
) -> None:
    """customs-edge: screening units and their fleet controller."""


def _needs_extra(name: str, help_text: str, missing: MissingExtra) -> None:
    """Stand in for a sub-application whose optional packages are not installed: any use of it
    prints one line naming the extra to install, and exits with EXIT_MISSING_EXTRA."""

    def _missing(ctx: typer.Context) -> None:
        fail(missing, EXIT_MISSING_EXTRA)

    app.command(name, help=f"{help_text} [needs: pip install 'customs-edge[{missing.extra}]']",
                add_help_option=False,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(_missing)

# Sub-applications of the other packages, added when their package is installed in this build.
_OPTIONAL_APPS = {
    "controller": ("controller.cli", "Fleet controller: run it, list units, alarms and tasks."),
    "spectrum": ("agent.cli_spectrum", "Analyse and simulate gamma spectra files."),
    "camera": ("agent.cli_camera", "Analyse recorded camera videos."),
    "sim": ("hal_sim.cli", "Simulated devices and wire-level emulators."),
    "cctv": ("cedge.cctv_cli", "AI CCTV: people tracking on MOTChallenge files and recorded hall videos."),
}
for _name, (_module, _help) in _OPTIONAL_APPS.items():
    try:
        app.add_typer(importlib.import_module(_module).app, name=_name, help=_help)
    except ImportError as _err:
        # installed by role (pyproject extras): `cedge camera` on a gamma unit names the extra to add
        _missing = explain(_err, f"cedge {_name}")
        if _missing is not None:
            _needs_extra(_name, _help, _missing)
        elif not _err.name or not _err.name.startswith(_module.split(".")[0]):
            raise

from cedge.site.cli import app as site_app  # noqa: E402  (after the optional apps, like bench below)

app.add_typer(site_app, name="site", help="Site CA, enrolment and revocation of units, broker config and ACL.")

bench_app = typer.Typer(help="Benchmarks (fixed seeds, JSON out).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@app.command()
def demo(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object with the results."),
    scenario: Path | None = typer.Option(None, help="Scenario YAML (default: the packaged demo yard)."),
    out: Path | None = typer.Option(None, help="Work directory to keep (logs, databases, picture)."),
    rate: float | None = typer.Option(None, help="Simulated seconds per wall second (default: scenario)."),
    timeout_s: float = typer.Option(240.0, help="Give up after this many wall-clock seconds."),
    broker_host: str | None = typer.Option(None, help="Use this broker instead of a private Mosquitto."),
    broker_port: int | None = typer.Option(None, help="Port of --broker-host."),
    site: Path | None = typer.Option(None, help="Site directory (`cedge site init`) whose certificates the "
                                     "fleet uses; needed with --broker-host (default: a new site in the work dir)."),
    hold: float = typer.Option(0.0, "--hold", help="Keep the operator console up this many seconds after the "
                               "scenario ends."),
) -> None:
    """Run broker, controller, 2 mobile units, 2 handhelds and a camera box on a simulated yard,
    over TLS with a certificate per process, the site ACL and signed commands."""
    from agent.cli_output import fail
    from agent.optional_deps import require
    from cedge.demo import print_summary, run_demo
    from hal_sim.scenario import packaged_scenario_path

    # the fleet's processes (controller with console, gamma units, camera box, simulated world): a
    # missing package is named here in one line, before any process starts and dies in its log
    for module in ("numba", "lxml", "cv2", "starlette", "uvicorn", "skimage"):
        try:
            require(module, "cedge demo (the whole fleet on one machine)")
        except MissingExtra as err:
            fail(err, EXIT_MISSING_EXTRA)
    if broker_host and site is None:
        fail("--broker-host needs --site DIR: the site (cedge site init) whose CA that broker trusts", 2)
    console = make_console(stderr=True)
    path = scenario or packaged_scenario_path("demo_yard")
    summary = run_demo(path, out, rate=rate, timeout_s=timeout_s, console=console, quiet=json_out,
                       broker_host=broker_host, broker_port=broker_port, site_dir=site, hold_s=hold)
    if json_out:
        print(json.dumps(summary, default=str))
    else:
        print_summary(summary, make_console())
    ok = any(t["state"] == "confirmed" for t in summary["tasks"])
    raise typer.Exit(0 if ok else 1)


@bench_app.command("spectra")
def bench_spectra(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quick: bool = typer.Option(False, help="Small grid for CI."),
    out: Path | None = typer.Option(None, help="Directory for the JSON and PNG figures."),
) -> None:
    """Identification, dose, anomaly-detection and speed benchmark of the spectral pipeline."""
    from cedge.bench.spectra import run_bench

    result = run_bench(json_out=json_out, quick=quick, out_dir=str(out) if out else None)
    if json_out:
        print(json.dumps(result, default=float))


@bench_app.command("rase")
def bench_rase(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    base_dir: Path | None = typer.Option(None, "--base-dir", help="Base spectra (default: the shared RASE NaI set)."),
    detector: str | None = typer.Option(None, help="Detector model or preset of the base spectra."),
    quick: bool = typer.Option(False, help="Few trials per cell, for CI."),
    trials: int | None = typer.Option(None, help="Samples per cell (default 20; quick: 4)."),
    sensitivity: list[str] = typer.Option([], help="NUCLIDE=CPS_PER_USVH where a file has no RASE_Sensitivity."),
    simulate: bool = typer.Option(True, "--simulate/--no-simulate", help="Also run the grid on simulated spectra."),
    out: Path | None = typer.Option(None, help="Directory for the JSON and the PNG figure."),
    seed: int | None = typer.Option(None, help="Random seed (default: the benchmark seed; tune on another)."),
) -> None:
    """Identification on real base spectra, RASE-style (PID, false IDs, SNM alarms, unknowns, dose, speed)."""
    from agent.cli_output import fail
    from cedge.bench.rase import run_bench

    sens: dict[str, float] = {}
    for item in sensitivity:
        name, _, value = item.partition("=")
        try:
            sens[name.strip()] = float(value)
        except ValueError:
            fail(f"--sensitivity wants NUCLIDE=CPS_PER_USVH, got {item!r}", 2)
    try:
        result = run_bench(base_dir, detector, json_out=json_out, quick=quick, out_dir=out, trials=trials,
                           sensitivities=sens, simulate=simulate, **({"seed": seed} if seed is not None else {}))
    except (FileNotFoundError, NotADirectoryError) as err:
        fail(err, 1)
    if json_out:
        print(json.dumps(result, default=float))
    else:
        keys = ("detector", "pid_in_library", "pid_in_library_0p1_120s", "false_id_rate_background",
                "snm_false_alarm_rate", "unknown_rate_out_of_library", "dose_rel_error_p90", "sim_pid_in_library",
                "sim_real_gap", "ms_per_spectrum_p50", "seconds_total")
        for k in keys:
            print(f"{k}: {result.get(k)}")


@bench_app.command("camera")
def bench_camera(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quick: bool = typer.Option(False, help="Few clips for CI."),
    out: Path | None = typer.Option(None, help="Directory for the JSON and PNG figures."),
) -> None:
    """Heart rate, respiration, blink and abnormal-state benchmark of the camera pipeline."""
    from cedge.bench.camera import run_bench

    result = run_bench(json_out=json_out, quick=quick, out_dir=str(out) if out else None)
    if json_out:
        print(json.dumps(result, default=float))


@bench_app.command("cctv")
def bench_cctv(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quick: bool = typer.Option(False, help="One short hall, for CI."),
    out: Path | None = typer.Option(None, help="Directory for bench_cctv.json and bench_cctv.png."),
    seed: int | None = typer.Option(None, help="Hall seed (default: the benchmark seed; tune on another)."),
    full: bool = typer.Option(False, help="A 600 s scripted hall (adds the 300 s restroom stay) instead of 420 s."),
    workers: int = typer.Option(2, min=1, max=16, help="Processes (cameras run in parallel)."),
) -> None:
    """Issue 19: per-camera and cross-camera tracking, behaviour alerts and speed, with the plain baseline."""
    from cedge.bench.cctv import run_bench

    result = run_bench(json_out=json_out, quick=quick, out_dir=out, full=full, workers=workers,
                       **({"seed": seed} if seed is not None else {}))
    if json_out:
        print(json.dumps(result, default=float))


@bench_app.command("gps")
def bench_gps(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    captures: Path | None = typer.Option(None, "--captures", help="Captures + *.fixes.json (default: tests/data/gps)."),
    pty: bool = typer.Option(True, "--pty/--no-pty", help="Also replay every capture over a pseudo-terminal."),
) -> None:
    """Real receiver captures through the NMEA driver, matched against gpsd's fixes."""
    from agent.cli_output import fail
    from cedge.bench.gps import run_bench, summary_lines

    try:
        result = run_bench(captures, pty=pty)
    except (FileNotFoundError, NotADirectoryError) as err:
        fail(err, 1)
    if json_out:
        print(json.dumps(result, default=str))
    else:
        print("\n".join(summary_lines(result)))


@bench_app.command("fuzz")
def bench_fuzz(
    seconds: float = typer.Option(20.0, "--seconds", min=1, help="Fuzzing time per target (wire, n42, nmea)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    out: Path | None = typer.Option(None, help="Directory for bench_fuzz.json."),
) -> None:
    """Coverage-guided fuzzing (atheris) of the wire schema, the N42 reader and the NMEA parser; crashes."""
    from cedge.bench.fuzz import run_bench

    result = run_bench(seconds=seconds, json_out=json_out, out_dir=out)
    if json_out:
        print(json.dumps(result, default=str))
    else:
        print(f"mode: {result['mode']}")
        for t in result["targets"]:
            print(f"{t['target']}: {t['executions']} executions ({t.get('exec_per_s')}/s), "
                  f"coverage {t.get('coverage_edges', '-')}, features {t.get('features', '-')}, crashes {t['crashes']}")
        for name, h in result["hostile_inputs"].items():
            print(f"{name}: refused as {h['refused_as']} in {h['ms_median']} ms")
    raise typer.Exit(1 if result["crashes_total"] else 0)


@bench_app.command("flood")
def bench_flood(
    messages: int = typer.Option(100, "--messages", min=1, help="Messages per case."),
    size_mb: float = typer.Option(10.0, "--mb", min=0.01, help="Size of each message, MB."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Issue 14 row 13: a real controller and Mosquitto flooded with large messages; peak RSS of both."""
    from cedge.bench.flood import run_bench

    result = run_bench(messages=messages, size_mb=size_mb, json_out=json_out)
    if json_out:
        print(json.dumps(result, default=str))
    else:
        for c in result["cases"]:
            print(f"{c['case']}: controller peak {c['controller_peak_rss_mb']} MB, broker peak "
                  f"{c['broker_peak_rss_mb']} MB, rejects {c['controller_rejects']}, stored after "
                  f"{c['stored_after_flood']}, tracebacks {c['controller_tracebacks']}: "
                  f"{'PASS' if c['pass'] else 'FAIL'}")
    raise typer.Exit(0 if result["pass"] else 1)


@bench_app.command("console")
def bench_console(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    units: int = typer.Option(100, min=1, max=2000, help="Simulated mobile units."),
    rate_hz: float = typer.Option(1.0, "--rate-hz", min=0.1, max=10.0, help="Measurements per unit per second."),
    browsers: int = typer.Option(10, min=1, max=50, help="Console pages connected (each its own session)."),
    duration_s: float = typer.Option(60.0, "--duration-s", min=10.0, help="Measured window with the console."),
    page_loads: int = typer.Option(20, "--page-loads", min=1, help="Fresh page loads timed during the window."),
    baseline_s: float = typer.Option(20.0, "--baseline-s", min=0.0, help="Same load without the console (0: skip)."),
    seed: int | None = typer.Option(None, help="Fleet seed (default: the benchmark seed)."),
    out: Path | None = typer.Option(None, help="Directory for bench_console.json and bench_console.png."),
) -> None:
    """Issue 18: console update latency, page load and server CPU with N units and M browsers (Chromium)."""
    from cedge.bench.console import BENCH_SEED, run_bench, summary_lines

    result = run_bench(units=units, rate_hz=rate_hz, browsers=browsers, duration_s=duration_s, page_loads=page_loads,
                       seed=BENCH_SEED if seed is None else seed, baseline_s=baseline_s, json_out=json_out,
                       out_dir=out)
    print(json.dumps(result, default=float) if json_out else "\n".join(summary_lines(result)))
    raise typer.Exit(0 if result["passed"] else 1)


@app.command("localize")
def localize_cmd(
    files: list[Path] = typer.Argument(..., help="N42.42-2012 survey files (one RadMeasurement per interval)."),
    site: Path | None = typer.Option(None, "--site", help="Site YAML (container rows and stacks, configs/sites/)."),
    detector: str | None = typer.Option(None, "--detector", help="Detector model or preset (default: the file's)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    position_at: str = typer.Option("mid", "--position-at", help="Where the files' positions were taken in each "
                                    "interval when they do not say: mid, end or start."),
    height_m: float | None = typer.Option(None, "--height-m", help="Detector height where the files give none."),
    gnss_sigma_m: float = typer.Option(1.0, "--gnss-sigma-m", min=0.0, help="GNSS 1-sigma of geographic positions "
                                       "(0 for surveyed or RTK positions; local positions count as exact)."),
) -> None:
    """Locate radioactive sources (3D) from recorded mobile-survey files."""
    from cedge.localize_cli import run_cli

    raise typer.Exit(run_cli(files, site, detector, json_out, position_at, height_m, gnss_sigma_m))


@bench_app.command("ingest")
def bench_ingest(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quick: bool = typer.Option(False, "--quick", help="200 units, 2000 messages per case (a smoke run)."),
    units: int = typer.Option(1000, "--units", min=1, max=100_000, help="Simulated units."),
    rounds: int = typer.Option(6, "--messages-per-unit", min=1, help="Measurements per unit per case."),
    out: Path | None = typer.Option(None, help="Directory for bench_ingest.json and bench_ingest.png."),
) -> None:
    """Issue 20: messages/s into one controller on SQLite, one and two on PostgreSQL, vs. the broker alone;
    publish-to-stored latency at half the maximum rate."""
    from cedge.bench.ingest import run_bench

    run_bench(units=units, rounds=rounds, json_out=json_out, out_dir=out, quick=quick)


@bench_app.command("localize")
def bench_localize(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quick: bool = typer.Option(False, help="Two scenarios per family and a 2-minute drive, for CI."),
    out: Path | None = typer.Option(None, help="Directory for the JSON, the per-scenario records and the PNG."),
    cache: Path | None = typer.Option(None, help="Directory caching the simulated drives between runs."),
    seed: int | None = typer.Option(None, help="Scenario seed (default: the benchmark seed; tune on another)."),
) -> None:
    """3D localization in container stacks against the truth, the Cramer-Rao bound and a plain baseline."""
    from cedge.bench.localize import run_bench

    kw = {"seed": seed} if seed is not None else {}
    result = run_bench(json_out=json_out, quick=quick, out_dir=out, cache_dir=cache, **kw)
    if json_out:
        print(json.dumps(result, default=float))
    else:
        for k, v in result.items():
            if not isinstance(v, dict | list):
                print(f"{k}: {v}")


def main() -> None:
    """Entry point of the `cedge` script: a missing optional package becomes one error line naming its extra."""
    try:
        sys.exit(app())
    except ImportError as err:
        missing = explain(err, "cedge " + " ".join(a for a in sys.argv[1:3] if not a.startswith("-")))
        if missing is None:
            raise
        from agent.cli_output import error_line

        error_line(missing)
        sys.exit(EXIT_MISSING_EXTRA)
