"""Offline: fit the G(E) of the "NaI generic (RASE)" preset to RASE sensitivities of its check sources.

Each RASE base spectrum carries ``RASE_Sensitivity`` (cps per uSv/h at the detector), what a technician
measures with a source of known dose rate. :func:`agent.spectral.dose_fit.fit_dose_weighting` corrects the
base crystal's G(E) ("NaI 2x2 in", fitted to the simulator) so that the check sources (Am-241, Co-57,
Cs-137, Co-60, and the background file as a source with its own sensitivity) read their dose; all other
RASE nuclides are held out. Writes the preset's row of ``agent/spectral/data/dose_weighting.csv``
(``dose.py`` prefers a row with the preset's own name) and prints, per nuclide, the dose read from the
noise-free base spectrum at 1 uSv/h / the true dose, before (base G(E)) and after, plus the total error at
D + 0.08 uSv/h background for D = 0.1, 0.3, 1 uSv/h (the RASE benchmark's grid, noise-free).

    python -m cedge.spectral_tools.fit_dose_rase [--base-dir DIR] [--dry-run] [--markdown]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from agent.spectral.dose import DoseWeighting, dose_weightings
from agent.spectral.dose_fit import DEFAULT_RIDGE, DEFAULT_ROBUST_SCALE, DoseSource, dose_ratio, fit_dose_weighting

PRESET = "NaI generic (RASE)"
BASE = "NaI 2x2 in"
CHECK_SOURCES = ("Am-241", "Co-57", "Cs-137", "Co-60")
BACKGROUND_USV_H = 0.08
DOSES_USV_H = (0.1, 0.3, 1.0)
DATA_CSV = Path(__file__).resolve().parents[2] / "agent" / "spectral" / "data" / "dose_weighting.csv"
DEFAULT_BASE_DIR = Path(__file__).resolve().parents[3] / "shared" / "spectra" / "rase_generic_nai"


def load_rase(base_dir: Path) -> dict[str, DoseSource]:
    """Every RASE base spectrum of ``base_dir`` as a DoseSource ('background' for the Bgnd file)."""
    from cedge.bench.rase import load_base_set

    bs = load_base_set(base_dir)
    out = {n: DoseSource(n, b.counts, b.calibration, b.sensitivity_cps_per_usv_h) for n, b in bs.sources.items()}
    b = bs.background
    out["background"] = DoseSource("background", b.counts, b.calibration, b.sensitivity_cps_per_usv_h)
    return out


def total_errors(ratio: float, ratio_bg: float) -> list[float]:
    """|read - true| / true at D + background, per benchmark dose D (noise-free)."""
    return [abs(d * ratio + BACKGROUND_USV_H * ratio_bg - (d + BACKGROUND_USV_H)) / (d + BACKGROUND_USV_H)
            for d in DOSES_USV_H]


def write_row(row: dict[str, float | str], max_rel_error: float, comment: str, path: Path = DATA_CSV) -> None:
    """Replace (or append) the row of ``row['detector']`` and its ``# <name>:`` comment lines."""
    name = str(row["detector"])
    lines = path.read_text(encoding="utf-8").splitlines()
    header_i = next(i for i, line in enumerate(lines) if line.startswith("detector,"))
    fields = lines[header_i].split(",")
    kept = [line for line in lines if not line.startswith(f"{name},") and not line.startswith(f"# {name}:")]
    values = {**row, "max_rel_error": max_rel_error}
    text = ",".join(f"{values[f]:.8g}" if isinstance(values[f], float) else str(values.get(f, "")) for f in fields)
    kept += [f"# {name}: {c}" for c in comment.splitlines()] + [text]
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")


#: Candidate ridge weights on the shape terms (c1, c2) of the correction: from the default (a free
#: quadratic in ln E) to a pure scale factor (the base crystal's G(E) shape kept, its level fitted).
RIDGE_CANDIDATES = (DEFAULT_RIDGE, 3.0, 30.0, 1000.0)


def leave_one_out_error(base: DoseWeighting, check: list[DoseSource], ridge: float,
                        robust_scale: float | None) -> dict[str, float]:
    """|ln(read/true)| of each consistent check source predicted by a fit to the others.

    Why: three consistent check sources (Am-241, Cs-137, Co-60; the robust fit rejects Co-57 and the
    background) fix a quadratic correction exactly, so its fit error says nothing about the
    energies between them.  Leaving one source out measures how the correction's shape predicts an
    energy it was not fitted to; the ridge with the smallest mean error is kept.  Only check sources
    take part: the held-out RASE nuclides never steer the choice (Hastie, Tibshirani & Friedman, The
    Elements of Statistical Learning, 2nd ed., 7.10: cross-validation for model selection)."""
    full = fit_dose_weighting(base, check, PRESET, ridge=ridge, robust_scale=robust_scale)
    consistent = [s for s in check if full.robust_weights[s.name] > 0.5]
    out: dict[str, float] = {}
    for left in consistent:
        # the others that the full fit found consistent: with one of three left out, the two sources it
        # rejected would otherwise out-vote the remaining two
        rest = [s for s in consistent if s.name != left.name]
        fit = fit_dose_weighting(base, rest, PRESET, ridge=ridge, robust_scale=robust_scale)
        out[left.name] = abs(float(np.log(dose_ratio(fit.weighting, left))))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-dir", type=Path, default=DEFAULT_BASE_DIR)
    parser.add_argument("--ridge", type=float, default=None,
                        help="ridge on the correction's shape terms (default: chosen by leave-one-out over the "
                             f"check sources among {', '.join(f'{r:g}' for r in RIDGE_CANDIDATES)})")
    parser.add_argument("--robust-scale", type=float, default=DEFAULT_ROBUST_SCALE, help="0: plain least squares")
    parser.add_argument("--dry-run", action="store_true", help="do not write dose_weighting.csv")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)

    rase = load_rase(args.base_dir)
    table = dose_weightings()
    base: DoseWeighting = table[BASE]
    check = [rase[n] for n in (*CHECK_SOURCES, "background")]
    robust = args.robust_scale or None
    ridge = args.ridge
    if ridge is None:
        loo = {r: leave_one_out_error(base, check, r, robust) for r in RIDGE_CANDIDATES}
        for r, errs in loo.items():
            print(f"ridge {r:g}: leave-one-out |ln(read/true)| " + ", ".join(f"{k} {v:.3f}" for k, v in errs.items())
                  + f"; mean {np.mean(list(errs.values())):.3f}")
        ridge = min(RIDGE_CANDIDATES, key=lambda r: float(np.mean(list(loo[r].values()))))
        print(f"ridge chosen by leave-one-out: {ridge:g}")
    fit = fit_dose_weighting(base, check, PRESET, ridge=ridge, robust_scale=robust)
    c0, c1, c2 = fit.correction
    lo, hi = np.exp(fit.l_range) * 662.0
    print(f"correction exp({c0:.4f} + {c1:.4f} L + {c2:.4f} L^2), L = ln(E/662 keV) held in {lo:.0f}-{hi:.0f} keV;"
          f" polynomial vs product: worst {100 * fit.projection_error:.1f} %")
    print("robust weights: " + ", ".join(f"{k} {v:.3f}" for k, v in fit.robust_weights.items()))
    bg_before, bg_after = dose_ratio(base, rase["background"]), dose_ratio(fit.weighting, rase["background"])
    rows = []
    for name, s in sorted(rase.items(), key=lambda kv: (kv[0] not in (*CHECK_SOURCES, "background"), kv[0])):
        before, after = dose_ratio(base, s), dose_ratio(fit.weighting, s)
        role = "fitted" if name in (*CHECK_SOURCES, "background") else "held out"
        if name == "background":
            tb, ta = [abs(before - 1.0)], [abs(after - 1.0)]
        else:
            tb, ta = total_errors(before, bg_before), total_errors(after, bg_after)
        rows.append((name, role, before, after, tb, ta))
    if args.markdown:
        print("| nuclide | role | read/true before | read/true after | error at D+0.08 before (0.1/0.3/1) "
              "| after (0.1/0.3/1) |\n|---|---|---|---|---|---|")
    for name, role, before, after, tb, ta in rows:
        fb = "/".join(f"{100 * x:.0f}" for x in tb)
        fa = "/".join(f"{100 * x:.0f}" for x in ta)
        if args.markdown:
            print(f"| {name} | {role} | {before:.3f} | {after:.3f} | {fb} % | {fa} % |")
        else:
            print(f"{name:11} {role:9} read/true {before:6.3f} -> {after:6.3f}   total error % {fb:>11} -> {fa:>11}")
    all_b = [x for r in rows if r[0] != "background" for x in r[4]]
    all_a = [x for r in rows if r[0] != "background" for x in r[5]]
    print(f"noise-free total error over nuclides x (0.1, 0.3, 1 uSv/h): p50 {np.percentile(all_b, 50):.3f} -> "
          f"{np.percentile(all_a, 50):.3f}, p90 {np.percentile(all_b, 90):.3f} -> {np.percentile(all_a, 90):.3f}")
    consistent = [abs(fit.ratio_after[s.name] - 1.0) for s in check if fit.robust_weights[s.name] > 0.5]
    worst = float(max(consistent)) if consistent else float("nan")
    if not args.dry_run:
        rejected = [k for k, v in fit.robust_weights.items() if v <= 0.5]
        comment = (f"fitted by cedge/spectral_tools/fit_dose_rase.py to RASE sensitivities (RASE_Sensitivity) of "
                   f"check sources {', '.join(CHECK_SOURCES)} + background;\n"
                   f"{BASE} G(E) x exp({c0:.4f} + {c1:.4f} L + {c2:.4f} L^2), L = ln(E/662 keV) held in "
                   f"{lo:.0f}-{hi:.0f} keV (ridge {ridge:g}, chosen by leave-one-out over the check sources); "
                   f"robust fit down-weighted {', '.join(rejected) or 'none'} "
                   f"(inconsistent with the others);\nmax_rel_error = worst error on the check sources that kept "
                   f"their weight; see docs/detector_presets.md")
        write_row(fit.row(), worst, comment)
        print(f"wrote row {PRESET!r} to {DATA_CSV}")


if __name__ == "__main__":
    main()
