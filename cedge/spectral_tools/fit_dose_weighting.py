"""Offline: fit the spectrum-to-dose G(E) function of each detector model (``data/dose_weighting.csv``).

Condition (Moriuchi's G(E) method): for monoenergetic photons of energy E0 at unit fluence rate,
``sum_ch R_ch(E0) G(E_ch) = h*(10)(E0) [uSv/h per photon/cm2/s]`` where R is the counts per second
per channel (counts per photon on the face x face area) and h*(10) the ICRP 74 coefficient
(Publication 74, table A.21, interpolated log-log). G(E) = sum_k a_k ln(E/1 MeV)^k is found by
least squares in *relative* error over 40 energies from just above the discriminator to 3 MeV.
The monoenergetic responses come from the simulator (imported inside ``fit_model`` only).

    python -m cedge.spectral_tools.fit_dose_weighting [--degree 6]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from agent.spectral.library import read_data_csv
from cedge.spectral_tools.fit_detector_response import DATA_DIR, monoenergetic_response, physics_models

PSV_CM2_TO_USV_H = 3600.0 * 1e-6  # (pSv cm2) x (photons/cm2/s) -> uSv/h


def icrp74_hstar10_psv_cm2(energy_kev: np.ndarray) -> np.ndarray:
    rows = read_data_csv("icrp74_photon_conversion.csv")
    e = np.log([float(r["energy_keV"]) for r in rows])
    h = np.log([float(r["hstar10_per_fluence_pSv_cm2"]) for r in rows])
    return np.exp(np.interp(np.log(energy_kev), e, h))


def fit_model(model_name: str, degree: int = 6) -> tuple[dict[str, float | str], float]:
    from hal_sim.gamma import DetectorResponse  # offline tool: the simulator stands in for the lab

    resp = DetectorResponse.for_model(model_name, n_channels=1024, max_energy_kev=3000.0)
    spec = resp.spec
    # weights start at the discriminator's 50 % point: photons just above it (e.g. Am-241's 26 keV)
    # are partly recorded and carry dose; the fit energies start one discriminator width higher
    e_min = spec.threshold_kev
    e_max = 3000.0
    energies = np.geomspace(e_min + spec.threshold_width_kev, 2950.0, 48)
    area = spec.crystal.front_area_cm2
    resp_rows = monoenergetic_response(resp, energies) * area  # counts/s per unit fluence rate
    target = icrp74_hstar10_psv_cm2(energies) * PSV_CM2_TO_USV_H
    centres = resp.centers_kev
    inside = (centres >= e_min) & (centres <= e_max)
    x = np.log(np.clip(centres, e_min, e_max) / 1000.0)
    basis = np.array([np.where(inside, x**k, 0.0) for k in range(degree + 1)]).T  # (n_ch, degree+1)
    a = (resp_rows @ basis) / target[:, None]
    coef, *_ = np.linalg.lstsq(a, np.ones_like(target), rcond=None)
    rel = a @ coef - 1.0
    row: dict[str, float | str] = {"detector": model_name, "e_min_keV": e_min, "e_max_keV": e_max}
    row.update({f"a{k}": float(c) for k, c in enumerate(coef)})
    return row, float(np.max(np.abs(rel)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR / "dose_weighting.csv")
    parser.add_argument("--degree", type=int, default=6)
    parser.add_argument("--models", nargs="*", default=None)
    args = parser.parse_args(argv)
    fields = ["detector", "e_min_keV", "e_max_keV", *(f"a{k}" for k in range(args.degree + 1)), "max_rel_error"]
    lines = [
        "# Spectrum-to-dose G(E) functions, G = sum a_k ln(E/1000 keV)^k in (uSv/h) per (count/s), per detector model.",
        "# Fitted by cedge/spectral_tools/fit_dose_weighting.py to ICRP 74 h*(10) (Publication 74, table A.21)",
        "# using the monoenergetic responses of the hal_sim.gamma detector models; max_rel_error = worst",
        "# monoenergetic error.",
        ",".join(fields),
    ]
    models = args.models or physics_models()
    # rows this run does not refit (e.g. a preset fitted to measured sensitivities by fit_dose_rase.py)
    # are kept with their "# <name>:" comment lines
    old = args.out.read_text(encoding="utf-8").splitlines() if args.out.exists() else []
    others = {line.split(",", 1)[0] for line in old if line and not line.startswith(("#", "detector,"))} - set(models)
    for m in models:
        row, err = fit_model(m, args.degree)
        row["max_rel_error"] = err
        print(f"{m}: worst monoenergetic relative error {err:.3f}")
        lines.append(",".join(f"{row[f]:.8g}" if isinstance(row[f], float) else str(row[f]) for f in fields))
    lines += [line for line in old if any(line.startswith((f"{o},", f"# {o}:")) for o in others)]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
