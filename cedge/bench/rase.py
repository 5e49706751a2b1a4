"""``cedge bench rase``: identification on a real instrument's base spectra, the way RASE tests a RIID.

Method (RASE, the Replicative Assessment of Spectroscopic Equipment, LLNL; the ANSI N42.48-style
injection testing it automates): a *base spectrum* is a high-statistics measurement of one source
with the background removed, plus its sensitivity S (cps per uSv/h at the detector). A test
spectrum at dose rate D above a background D_bg for a dwell T is a Poisson draw of

    mu = shape_src * S_src * D * T  +  shape_bg * S_bg * D_bg * T

(shape = base counts normalised to 1). The identifier gets that spectrum and a separately drawn
background measurement (1200 s by default), as a fielded instrument has one. Every base spectrum
of one detector is channel-aligned with the others, as RASE requires; the sample carries the
source file's energy calibration.

What is scored, per grid cell (dose rate x dwell) and nuclide, over fixed-seed trials:
* ``pid``: the true nuclide is among those reported (RASE's probability of identification);
* false identifications: any other nuclide reported; on background-only samples, any nuclide;
* SNM false alarms: an SNM (U-233, U-235, Pu-239, Np-237) named when none is present;
* out of library: each source is also run with its own entry removed from the library
  (leave-one-out), so every base spectrum is once an "unknown" source. The answer should then be
  "unknown / unidentified lines", and never SNM;
* dose rate: the source's H*(10) rate from the spectrum (G(E) on the spectrum minus G(E) on the
  background measurement) against the dose rate D it was drawn at (``dose_rel_error_*``), and the
  whole spectrum's H*(10) against D + D_bg (``dose_total_rel_error_*``: a scintillator's G(E) sees no
  cosmic-ray dose, part of every natural background's H*(10));
* the same grid on the project's *simulated* spectra of the same nuclides in the same detector
  model: the gap between simulated and real identification is the simulator's honesty figure.

Nuclide names come from the file name (RASE's ``<detector>_<nuclide>.n42``: ``VABCD_M001_Tc99M``
-> ``Tc-99m``; ``Bgnd`` is the background), the sensitivity from ``RASE_Sensitivity`` or a
``--sensitivity NUCLIDE=CPS_PER_USVH`` option.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from agent.hal.interfaces import EnergyCalibration, SpectrumReading
from cedge.bench.results import save_results

SEED = 20_261_207  # benchmark seed; identifier settings were tuned on TUNE_SEED only
TUNE_SEED = 7_770_001
DOSE_RATES_USV_H = (0.1, 0.3, 1.0)
DWELLS_S = (30.0, 120.0)
BACKGROUND_USV_H = 0.08
BACKGROUND_MEASUREMENT_S = 1200.0
SNM = frozenset({"U-233", "U-235", "Pu-239", "Np-237"})
# Names accepted for a base spectrum besides its own (RASE's "correct ID" tables do the same): the RASE
# Cm-244 source shows the lines of Cm-243 (277.6, 228.2, 209.8 keV, Pu K x-rays), its usual companion.
ACCEPTED_NAMES = {"Cm-244": frozenset({"Cm-243"})}
# Companions really in the source, so naming them is not a false identification (but not the answer
# either): the RASE Eu-154 spectrum has Eu-152's own 344, 779, 964, 1112 and 1408 keV peaks.
COMPANIONS = {"Eu-154": frozenset({"Eu-152"})}
DEFAULT_BASE_DIR = Path(__file__).resolve().parents[3] / "shared" / "spectra" / "rase_generic_nai"
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # sample times do not matter to the analysis


# =========================================================================== base spectra
@dataclass(frozen=True)
class BaseSpectrum:
    """One base spectrum: a shape (counts, clipped >= 0) and its sensitivity."""

    nuclide: str
    counts: np.ndarray
    live_time_s: float
    sensitivity_cps_per_usv_h: float
    calibration: EnergyCalibration
    path: str

    @property
    def shape(self) -> np.ndarray:
        c = np.clip(np.asarray(self.counts, dtype=float), 0.0, None)  # background-subtracted: tiny negatives
        return c / c.sum()


@dataclass
class BaseSet:
    sources: dict[str, BaseSpectrum]
    background: BaseSpectrum
    skipped: dict[str, str] = field(default_factory=dict)


def nuclide_from_name(stem: str) -> str | None:
    """'VABCD_M001_Tc99M' -> 'Tc-99m', 'Cs137' -> 'Cs-137', 'Bgnd' -> 'background'."""
    token = stem.split("_")[-1]
    if token.lower() in ("bgnd", "bkg", "background", "bg"):
        return "background"
    m = re.fullmatch(r"([A-Za-z]{1,2})-?(\d{1,3})([mM]?)", token)
    if not m:
        return None
    return f"{m.group(1).capitalize()}-{m.group(2)}{'m' if m.group(3) else ''}"


def _rase_sensitivity(path: Path) -> float | None:
    """The ``RASE_Sensitivity`` element of a RASE base-spectrum file, if present."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(r"<RASE_Sensitivity>\s*([0-9.eE+-]+)\s*</RASE_Sensitivity>", text)
    return float(m.group(1)) if m else None


def load_base_set(base_dir: Path, sensitivities: dict[str, float] | None = None) -> BaseSet:
    """Every readable spectrum file of ``base_dir`` with a nuclide name and a sensitivity."""
    from agent.spectral_files import SpectrumFileError, read_spectrum_file

    sensitivities = sensitivities or {}
    sources: dict[str, BaseSpectrum] = {}
    background = None
    skipped: dict[str, str] = {}
    files = sorted(p for p in Path(base_dir).iterdir() if p.is_file() and not p.name.upper().startswith(
        ("COPYRIGHT", "LICENSE", "NOTICE", "README")))
    if not files:
        raise FileNotFoundError(f"no base spectra in {base_dir}")
    for p in files:
        nuc = nuclide_from_name(p.stem)
        if nuc is None:
            skipped[p.name] = "no nuclide in the file name"
            continue
        try:
            doc = read_spectrum_file(p)
        except SpectrumFileError as err:
            skipped[p.name] = str(err)
            continue
        sens = sensitivities.get(nuc, _rase_sensitivity(p))
        if sens is None or sens <= 0:
            skipped[p.name] = "no sensitivity (RASE_Sensitivity or --sensitivity)"
            continue
        r = doc.foreground().reading
        base = BaseSpectrum(nuc, np.asarray(r.counts, dtype=float), r.live_time_s, sens, r.calibration, str(p))
        if nuc == "background":
            background = base
        else:
            sources[nuc] = base
    if background is None:
        raise FileNotFoundError(f"no background base spectrum (…_Bgnd.n42) in {base_dir}")
    return BaseSet(sources, background, skipped)


# =========================================================================== simulated base spectra
def simulated_base_set(real: BaseSet, model: str) -> BaseSet:
    """The project's simulator's spectra of the same nuclides and detector, in the real files' channels.

    Each simulated source spectrum (1 MBq at 1 m, unshielded; ``hal_sim.gamma.simulated_base_spectrum``
    of the detector preset) and the simulated natural background are put on the real base spectrum's
    energy calibration and given the real file's sensitivity, so real and simulated samples carry the
    same counts and differ only in shape.
    """
    from hal_sim.gamma import DetectorResponse, simulated_base_spectrum
    from hal_sim.gamma.response import rebin_to_calibration

    skipped: dict[str, str] = {}
    sources = {}
    for nuc, base in real.sources.items():
        try:
            counts = simulated_base_spectrum(nuc, model, base.calibration, base.counts.size)
        except (KeyError, ValueError) as err:
            skipped[nuc] = f"not in the simulator: {err}"
            continue
        sources[nuc] = BaseSpectrum(nuc, counts, 1.0, base.sensitivity_cps_per_usv_h, base.calibration, "simulated")
    bgr = real.background
    top_kev = float(np.clip(float(bgr.calibration.edges_kev(bgr.counts.size)[-1]) * 1.02, 100.0, 20000.0))
    resp = DetectorResponse.for_model(model, n_channels=2048, max_energy_kev=top_kev)
    bg = np.maximum(rebin_to_calibration(resp, resp.background_rate_spectrum(BACKGROUND_USV_H), bgr.calibration,
                                         bgr.counts.size), 0.0)
    background = BaseSpectrum("background", bg, 1.0, bgr.sensitivity_cps_per_usv_h, bgr.calibration, "simulated")
    return BaseSet(sources, background, skipped)


# =========================================================================== one sample
def _reading(counts: np.ndarray, live_s: float, cal: EnergyCalibration, model: str) -> SpectrumReading:
    return SpectrumReading(counts.astype(np.int64), float(live_s), float(live_s), cal, _EPOCH, 0.0, model)


def draw(base: BaseSpectrum, background: BaseSpectrum, dose_usv_h: float, dwell_s: float,
         rng: np.random.Generator) -> np.ndarray:
    """Counts of one test spectrum (Poisson), as RASE draws it."""
    mu = background.shape * background.sensitivity_cps_per_usv_h * BACKGROUND_USV_H * dwell_s
    if dose_usv_h > 0:
        mu = mu + base.shape * base.sensitivity_cps_per_usv_h * dose_usv_h * dwell_s
    return rng.poisson(mu)


@dataclass(frozen=True)
class Outcome:
    reported: tuple[str, ...]
    unknown: bool
    dose_usv_h: float | None
    ms: float
    top_confidence: float = 0.0
    confidences: tuple[tuple[str, float], ...] = ()
    unexplained_z: float = 0.0
    unexplained_share: float = 0.0
    net_dose_usv_h: float | None = None


class _Analyser:
    """One pipeline per (energy calibration, background measurement), as a fielded unit has one.

    A unit measures its background once and analyses every spectrum against it; the benchmark
    draws ``n_backgrounds`` independent 1200 s backgrounds per calibration and gives each sample one
    of them at random. The pipelines never learn from the samples (``learn=False``).
    """

    def __init__(self, bases: BaseSet, model: str, rng: np.random.Generator, n_backgrounds: int = 4) -> None:
        self.bases, self.model, self.rng, self.n = bases, model, rng, n_backgrounds
        self._pipes: dict[tuple, list] = {}

    def _pipelines(self, cal: EnergyCalibration) -> list:
        from agent.spectral.pipeline import SpectrumPipeline

        key = tuple(cal.coefficients_kev)
        if key not in self._pipes:
            bgb = self.bases.background
            pipes = []
            for _ in range(self.n):
                bg = self.rng.poisson(bgb.shape * bgb.sensitivity_cps_per_usv_h * BACKGROUND_USV_H
                                      * BACKGROUND_MEASUREMENT_S)
                pipe = SpectrumPipeline(find_peaks=False, learn=False)
                pipe.set_background(_reading(bg, BACKGROUND_MEASUREMENT_S, cal, self.model))
                pipes.append(pipe)
            self._pipes[key] = pipes
        return self._pipes[key]

    def __call__(self, counts: np.ndarray, dwell_s: float, cal: EnergyCalibration,
                 exclude: tuple[str, ...] = ()) -> Outcome:
        pipes = self._pipelines(cal)
        pipe = pipes[int(self.rng.integers(len(pipes)))]
        pipe.library_exclude = exclude
        res = pipe.analyze(_reading(counts, dwell_s, cal, self.model))
        ident = res.identification
        return Outcome(tuple(ident.names()), bool(ident.unknown), res.dose_rate_usv_h, res.elapsed_ms,
                       max((n.confidence for n in ident.nuclides), default=0.0),
                       tuple((n.name, n.confidence) for n in ident.nuclides), float(ident.unexplained_z),
                       float(ident.unexplained_share), res.net_dose_rate_usv_h)


# =========================================================================== the grid
def run_grid(bases: BaseSet, model: str, trials: int, seed: int, in_library: set[str], progress=None,
             label: str = "real", leave_one_out: bool = True, background_trials: int = 0) -> dict[str, Any]:
    """Every nuclide x dose x dwell cell, ``trials`` samples each; returns raw tallies."""
    rng = np.random.default_rng(seed)
    analyse = _Analyser(bases, model, np.random.default_rng(seed + 17))
    cells: list[dict[str, Any]] = []
    n_work = len(bases.sources) * len(DOSE_RATES_USV_H) * len(DWELLS_S) * trials * (2 if leave_one_out else 1)
    n_work += background_trials * len(DWELLS_S)
    task = progress.add_task(f"RASE grid ({label})", total=n_work) if progress is not None else None

    for nuc, base in bases.sources.items():
        for dose in DOSE_RATES_USV_H:
            for dwell in DWELLS_S:
                rec: dict[str, Any] = {
                    "nuclide": nuc, "dose_usv_h": dose, "dwell_s": dwell, "in_library": nuc in in_library,
                    "trials": trials, "correct": 0, "false_ids": 0, "snm": 0, "unknown": 0, "dose_rel_err": [],
                    "dose_total_rel_err": [], "ms": [], "names": {}, "conf": [], "z": [], "share": []}
                for _ in range(trials):
                    out = analyse(draw(base, bases.background, dose, dwell, rng), dwell, base.calibration)
                    ok_names = {nuc} | ACCEPTED_NAMES.get(nuc, frozenset())
                    rec["correct"] += any(n in ok_names for n in out.reported)
                    rec["conf"] += list(out.confidences)
                    rec["z"].append(out.unexplained_z)
                    rec["share"].append(out.unexplained_share)
                    rec["false_ids"] += any(n not in ok_names | COMPANIONS.get(nuc, frozenset())
                                            for n in out.reported)
                    rec["snm"] += any(n in SNM for n in out.reported) and nuc not in SNM
                    rec["unknown"] += out.unknown
                    for n in out.reported:
                        rec["names"][n] = rec["names"].get(n, 0) + 1
                    if out.dose_usv_h is not None:
                        true = dose + BACKGROUND_USV_H
                        rec["dose_total_rel_err"].append(abs(out.dose_usv_h - true) / true)
                    if out.net_dose_usv_h is not None:  # the source's own H*(10) rate: spectrum minus background
                        rec["dose_rel_err"].append(abs(out.net_dose_usv_h - dose) / dose)
                    rec["ms"].append(out.ms)
                    if task is not None:
                        progress.advance(task)
                cells.append(rec)
                if not leave_one_out:
                    continue
                loo: dict[str, Any] = {"nuclide": nuc, "dose_usv_h": dose, "dwell_s": dwell, "trials": trials,
                                       "unknown": 0, "snm": 0, "named": 0, "names": {}, "z": [], "share": []}
                for _ in range(trials):
                    out = analyse(draw(base, bases.background, dose, dwell, rng), dwell, base.calibration,
                                  exclude=(nuc, *ACCEPTED_NAMES.get(nuc, ())))
                    loo["unknown"] += out.unknown
                    loo["z"].append(out.unexplained_z)
                    loo["share"].append(out.unexplained_share)
                    loo["snm"] += any(n in SNM for n in out.reported) and nuc not in SNM
                    loo["named"] += bool(out.reported) and not out.unknown
                    for n in out.reported:
                        loo["names"][n] = loo["names"].get(n, 0) + 1
                    if task is not None:
                        progress.advance(task)
                rec["leave_one_out"] = loo
    background = {"trials": 0, "false": 0, "snm": 0, "unknown": 0, "names": {}}
    cal = bases.background.calibration
    for dwell in DWELLS_S:
        for _ in range(background_trials):
            counts = draw(bases.background, bases.background, 0.0, dwell, rng)
            out = analyse(counts, dwell, cal)
            background["trials"] += 1
            background["false"] += bool(out.reported)
            background["snm"] += any(n in SNM for n in out.reported)
            background["unknown"] += out.unknown
            for n in out.reported:
                background["names"][n] = background["names"].get(n, 0) + 1
            if task is not None:
                progress.advance(task)
    return {"cells": cells, "background": background}


def _rate(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def _merge_names(records) -> dict[str, dict[str, int]]:
    """nuclide -> {name reported: times}, summed over the records' cells."""
    out: dict[str, dict[str, int]] = {}
    for x in records:
        d = out.setdefault(x["nuclide"], {})
        for n, k in x["names"].items():
            d[n] = d.get(n, 0) + k
    return out


def _pcts(values: list[float], qs: tuple[int, ...]) -> list[float] | None:
    return [round(float(np.percentile(values, q)), 2) for q in qs] if values else None


def summarise(grid: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, from the raw tallies of :func:`run_grid`."""
    cells = grid["cells"]
    inlib = [c for c in cells if c["in_library"]]
    hi = [c for c in inlib if c["dose_usv_h"] >= 0.3]
    lo120 = [c for c in inlib if c["dose_usv_h"] == 0.1 and c["dwell_s"] == 120.0]
    pid_by_nuclide: dict[str, dict[str, float | None]] = {}
    for c in cells:
        d = pid_by_nuclide.setdefault(c["nuclide"], {})
        d[f"{c['dose_usv_h']:g}uSv_{c['dwell_s']:g}s"] = _rate(c["correct"], c["trials"])
    for nuc, d in pid_by_nuclide.items():
        mine = [c for c in cells if c["nuclide"] == nuc]
        d["all"] = _rate(sum(c["correct"] for c in mine), sum(c["trials"] for c in mine))
    non_snm_samples = sum(c["trials"] for c in cells if c["nuclide"] not in SNM)
    snm_alarms = sum(c["snm"] for c in cells if c["nuclide"] not in SNM)
    bg = grid["background"]
    loo = [c["leave_one_out"] for c in cells if "leave_one_out" in c and c["dose_usv_h"] >= 0.3]
    loo_snm = sum(x["snm"] for x in loo)
    snm_den = non_snm_samples + bg["trials"] + sum(x["trials"] for x in loo)
    dose_err = [e for c in cells for e in c["dose_rel_err"]]
    dose_tot = [e for c in cells for e in c["dose_total_rel_err"]]
    ms = [m for c in cells for m in c["ms"]]
    confusions: dict[str, dict[str, int]] = {}
    for c in cells:
        for n, k in c["names"].items():
            if n != c["nuclide"] and n not in ACCEPTED_NAMES.get(c["nuclide"], ()) \
                    and n not in COMPANIONS.get(c["nuclide"], ()):
                confusions.setdefault(c["nuclide"], {})[n] = confusions.setdefault(c["nuclide"], {}).get(n, 0) + k
    # reliability: of the names reported at confidence c, the share that were right (ideally ~c)
    pairs = [(conf, name == c["nuclide"] or name in ACCEPTED_NAMES.get(c["nuclide"], ())
              or name in COMPANIONS.get(c["nuclide"], ()))
             for c in inlib for name, conf in c["conf"]]
    calib = []
    for c_lo, c_hi in ((0.5, 0.7), (0.7, 0.9), (0.9, 0.99), (0.99, 1.01)):
        sel = [(p, ok) for p, ok in pairs if c_lo <= p < c_hi]
        if sel:
            calib.append({"confidence": f"{c_lo:g}-{min(c_hi, 1.0):g}", "names": len(sel),
                          "mean_confidence": round(float(np.mean([p for p, _ in sel])), 4),
                          "share_right": round(float(np.mean([ok for _, ok in sel])), 4)})
    ece = sum(abs(b["mean_confidence"] - b["share_right"]) * b["names"] for b in calib) / max(len(pairs), 1)
    return {
        "confidence_calibration": calib,
        "expected_calibration_error": round(ece, 4),
        "pid_by_nuclide": pid_by_nuclide,
        "pid_in_library": _rate(sum(c["correct"] for c in hi), sum(c["trials"] for c in hi)),
        "pid_in_library_0p1_120s": _rate(sum(c["correct"] for c in lo120), sum(c["trials"] for c in lo120)),
        "pid_in_library_all": _rate(sum(c["correct"] for c in inlib), sum(c["trials"] for c in inlib)),
        "false_id_rate_sources": _rate(sum(c["false_ids"] for c in inlib), sum(c["trials"] for c in inlib)),
        "false_id_rate_background": _rate(bg["false"], bg["trials"]),
        "background_names": bg["names"],
        "snm_false_alarm_rate": _rate(snm_alarms + bg["snm"] + loo_snm, snm_den),
        "snm_false_alarms": snm_alarms + bg["snm"] + loo_snm,
        "unknown_rate_in_library": _rate(sum(c["unknown"] for c in hi), sum(c["trials"] for c in hi)),
        "unexplained_z_in_library_p50_p90_p99": _pcts([z for c in hi for z in c["z"]], (50, 90, 99)),
        "unexplained_z_out_of_library_p10_p50": _pcts([z for x in loo for z in x["z"]], (10, 50)),
        "unexplained_share_in_library_p50_p90_p99": _pcts([z for c in hi for z in c["share"]], (50, 90, 99)),
        "unexplained_share_out_of_library_p10_p25_p50": _pcts([z for x in loo for z in x["share"]], (10, 25, 50)),
        "unknown_rate_out_of_library": _rate(sum(x["unknown"] for x in loo), sum(x["trials"] for x in loo)),
        "out_of_library_named_as_snm": loo_snm,
        "out_of_library_names": _merge_names(x for x in loo),
        "unknown_by_nuclide": {n: _rate(sum(x["unknown"] for x in loo if x["nuclide"] == n),
                                        sum(x["trials"] for x in loo if x["nuclide"] == n))
                               for n in sorted({x["nuclide"] for x in loo})},
        "dose_rel_error_p50": round(float(np.percentile(dose_err, 50)), 4) if dose_err else None,
        "dose_rel_error_p90": round(float(np.percentile(dose_err, 90)), 4) if dose_err else None,
        # per nuclide: the error is systematic (the G(E) and the RASE sensitivities), so the p90 above is
        # set by the one or two nuclides whose reading is off, which this names
        "dose_rel_error_p90_by_nuclide": {
            n: round(float(np.percentile(errs, 90)), 4)
            for n in sorted({c["nuclide"] for c in cells})
            if (errs := [e for c in cells if c["nuclide"] == n for e in c["dose_rel_err"]])},
        "dose_total_rel_error_p50": round(float(np.percentile(dose_tot, 50)), 4) if dose_tot else None,
        "dose_total_rel_error_p90": round(float(np.percentile(dose_tot, 90)), 4) if dose_tot else None,
        "ms_per_spectrum_p50": round(float(np.percentile(ms, 50)), 3) if ms else None,
        "ms_per_spectrum_p99": round(float(np.percentile(ms, 99)), 3) if ms else None,
        "confusions": confusions,
    }


# =========================================================================== figure
def write_figure(result: dict[str, Any], out_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = result["pid_by_nuclide"]
    sim = result.get("sim", {}).get("pid_by_nuclide", {})
    names = sorted(real)
    keys = [f"{d:g}uSv_{t:g}s" for d in DOSE_RATES_USV_H for t in DWELLS_S]
    fig, ax = plt.subplots(figsize=(11, 5.4))
    x = np.arange(len(names))
    for k, key in enumerate(keys):
        vals = [real[n].get(key) or 0.0 for n in names]
        ax.bar(x + (k - len(keys) / 2) * 0.13, vals, 0.13, label=f"real {key.replace('_', ', ')}")
    if sim:
        sv = [sim.get(n, {}).get("all") for n in names]
        ax.plot(x, [v if v is not None else np.nan for v in sv], "k_", ms=18, mew=2, label="simulated (all cells)")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel("probability of identification")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"RASE benchmark, {result['detector']}: PID in library (>= 0.3 uSv/h) "
                 f"{result['pid_in_library']}, sim {result.get('sim_pid_in_library')}")
    ax.legend(fontsize=7, ncol=7, loc="upper center", bbox_to_anchor=(0.5, -0.28))
    fig.tight_layout()
    path = out_dir / "rase_pid.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# =========================================================================== entry point
def run_bench(base_dir: Path | None = None, detector: str | None = None, json_out: bool = False,
              quick: bool = False, out_dir: Path | None = None, trials: int | None = None,
              sensitivities: dict[str, float] | None = None, simulate: bool = True,
              seed: int = SEED) -> dict[str, Any]:
    """Run the RASE-style benchmark and return one flat-ish dict (the CLI prints it as JSON)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from agent.spectral.detector import DEFAULT_MODEL
    from agent.spectral.library import default_library

    t0 = time.perf_counter()
    base_dir = Path(base_dir) if base_dir is not None else DEFAULT_BASE_DIR
    model = detector or _default_detector() or DEFAULT_MODEL
    bases = load_base_set(base_dir, sensitivities)
    lib = set(default_library().names)
    n = trials or (4 if quick else 20)
    result: dict[str, Any] = {"bench": "rase", "base_dir": str(base_dir), "detector": model, "seed": seed,
                              "trials_per_cell": n, "dose_rates_usv_h": list(DOSE_RATES_USV_H),
                              "dwells_s": list(DWELLS_S), "background_usv_h": BACKGROUND_USV_H,
                              "background_measurement_s": BACKGROUND_MEASUREMENT_S,
                              "nuclides": sorted(bases.sources), "in_library": sorted(lib & set(bases.sources)),
                              "skipped_files": bases.skipped,
                              "accepted_names": {k: sorted(v) for k, v in ACCEPTED_NAMES.items()},
                              "companions_not_false": {k: sorted(v) for k, v in COMPANIONS.items()}}
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False, disable=json_out and not console.is_terminal
                  ) as progress:
        grid = run_grid(bases, model, n, seed, lib, progress, "real", True, background_trials=5 * n)
        result.update(summarise(grid))
        if simulate:
            sim_bases = simulated_base_set(bases, model)
            sgrid = run_grid(sim_bases, model, n, seed + 1, lib, progress, "simulated", False,
                             background_trials=0)
            s = summarise(sgrid)
            common = [c for c in grid["cells"] if c["in_library"] and c["dose_usv_h"] >= 0.3
                      and c["nuclide"] in sim_bases.sources]
            result["sim"] = {"pid_by_nuclide": s["pid_by_nuclide"], "confusions": s["confusions"],
                             "skipped": sim_bases.skipped, "simulator_model": model}
            result["sim_pid_in_library"] = s["pid_in_library"]
            real_common = _rate(sum(c["correct"] for c in common), sum(c["trials"] for c in common))
            result["real_pid_in_library_common"] = real_common
            if s["pid_in_library"] is not None and real_common is not None:
                result["sim_real_gap"] = round(s["pid_in_library"] - real_common, 4)
            result["sim_dose_rel_error_p90"] = s["dose_rel_error_p90"]
    result["seconds_total"] = round(time.perf_counter() - t0, 1)
    if out_dir is not None:
        save_results(result, out_dir, "rase", lambda out: write_figure(result, out), figures_key="figure")
    return result


def _default_detector() -> str | None:
    """The fitted preset of the RASE generic NaI instrument, when this build has it."""
    from agent.spectral.detector import detector_models

    for name in detector_models():
        if "rase" in name.lower():
            return name
    return None
