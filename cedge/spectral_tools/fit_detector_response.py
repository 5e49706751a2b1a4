"""Offline: fit the agent's detector response tables (``data/detector_response.csv``).

Why offline and from monoenergetic responses: a detector response function is characterised
once per detector model from its response to single photon energies (measured with calibration
sources and/or computed by transport codes), then used for *any* nuclide. Here the monoenergetic
responses come from the project's simulator (``hal_sim.gamma``, imported only inside ``fit_model`` so
the agent never depends on it). Nuclide spectra are never used, so the identifier is not tuned to
the test sources.

For each model and each of 48 energies E0 (15-3000 keV, log-spaced) the simulated counts per photon
on the detector face are fitted, by non-negative weighted least squares above the discriminator,
with: Gaussians (model FWHM) for the full-energy, K x-ray escape and pair escape peaks, and the
52 edge-normalised continuum bins of :mod:`agent.spectral.response`, each a box blurred by the
resolution. Run::

    python -m cedge.spectral_tools.fit_detector_response [--out agent/spectral/data/detector_response.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from scipy.special import ndtr

from agent.spectral.detector import detector_model
from agent.spectral.library import read_data_csv
from agent.spectral.response import ME_C2_KEV, N_CONTINUUM, PEAK_FIELDS, continuum_segments_kev

DATA_DIR = Path(__file__).resolve().parents[2] / "agent" / "spectral" / "data"
ENERGIES_KEV = np.geomspace(15.0, 3000.0, 48)

# Mean K x-ray energy of the crystal's heavy element(s), intensity-weighted K-alpha/K-beta
# (X-ray Data Booklet, LBNL 2009, table 1-2): I 29.1, Cs 31.3 (CsI ~30.0), La 33.9, Cd/Te ~26, Ge 10.0.
XRAY_ESCAPE_KEV = {"NaI": 29.1, "CsI(Tl)": 30.0, "LaBr3": 33.9, "CZT": 26.0, "HPGe": 10.0}


def physics_models() -> list[str]:
    """The simulator's detector models (detector_resolution.csv); presets are derived from these."""
    return [r["detector"] for r in read_data_csv("detector_resolution.csv")]


def _gauss_cols(edges: np.ndarray, centres_kev: np.ndarray, sigma_kev: np.ndarray) -> np.ndarray:
    """(n_channels, n_centres) probability that a deposit at each centre lands in each channel."""
    z = (edges[:, None] - centres_kev[None, :]) / sigma_kev[None, :]
    return np.diff(ndtr(z), axis=0)


def design_matrix(e0: float, edges: np.ndarray, model_name: str, xray_kev: float) -> tuple[np.ndarray, list[str]]:
    model = detector_model(model_name)
    cols, names = [], []
    peak_pos = {
        "peak": e0,
        "escape": e0 - xray_kev if e0 > xray_kev + 5 else None,
        "single_escape": e0 - ME_C2_KEV if e0 > 2 * ME_C2_KEV else None,
        "double_escape": e0 - 2 * ME_C2_KEV if e0 > 2 * ME_C2_KEV else None,
    }
    for name in PEAK_FIELDS:
        pe = peak_pos[name]
        if pe is None:
            cols.append(np.zeros(edges.size - 1))
        else:
            cols.append(_gauss_cols(edges, np.array([pe]), model.sigma_kev(np.array([max(pe, 5.0)])))[:, 0])
        names.append(name)
    seg = continuum_segments_kev(e0)
    for k in range(N_CONTINUUM):
        pts = seg[k] + (np.arange(8) + 0.5) / 8 * (seg[k + 1] - seg[k])
        g = _gauss_cols(edges, pts, model.sigma_kev(np.maximum(pts, 5.0)))
        cols.append(g.mean(axis=1))
        names.append(f"c{k:02d}")
    return np.array(cols).T, names


def monoenergetic_response(resp, energies_kev: np.ndarray) -> np.ndarray:
    """(n_energies, n_channels) counts per photon on the detector face, from the simulator.

    The simulator has no public call for this yet; its per-line column builder is used (the
    public name is tried first so this keeps working when one is added).
    """
    e = np.atleast_1d(np.asarray(energies_kev, dtype=float))
    for name in ("line_response", "_line_columns"):
        fn = getattr(resp, name, None)
        if fn is not None:
            out = np.asarray(fn(e))
            return out if out.shape[0] == e.size else out.T
    return np.array([resp._line_column(float(x)) for x in e])


def fit_model(model_name: str, n_channels: int = 4096, max_energy_kev: float = 3100.0) -> list[dict[str, float | str]]:
    from hal_sim.gamma import DetectorResponse  # offline tool: the simulator stands in for the lab

    resp = DetectorResponse.for_model(model_name, n_channels=n_channels, max_energy_kev=max_energy_kev)
    spec = resp.spec
    edges = resp.edges_kev
    centres = resp.centers_kev
    min_e = spec.threshold_kev + 3.0 * spec.threshold_width_kev
    family = next((k for k in XRAY_ESCAPE_KEV if model_name.startswith(k)), "NaI")
    xray = XRAY_ESCAPE_KEV[family]
    rows = []
    columns = monoenergetic_response(resp, ENERGIES_KEV)  # per photon on the face (direct + backscatter)
    for e0, col in zip(ENERGIES_KEV, columns, strict=True):
        mask = (centres >= min_e) & (centres <= max_energy_kev - 50)
        a, names = design_matrix(float(e0), edges, model_name, xray)
        # continuum bins that lie below the discriminator are seen only through their resolution
        # tails: unconstrained, NNLS would put arbitrary weight there. They are fixed at zero.
        seg = continuum_segments_kev(float(e0))
        guard = min_e + 0.5 * float(detector_model(model_name).fwhm_kev(min_e))
        for k in range(N_CONTINUUM):
            if seg[k + 1] < guard:
                a[:, len(PEAK_FIELDS) + k] = 0.0
        # weights of a high-statistics measurement (1e7 photons): Poisson-like, with a floor
        sd = np.sqrt(np.maximum(col, 1e-3 * col.max()) / 1e7)
        coef, _ = nnls(a[mask] / sd[mask, None], col[mask] / sd[mask], maxiter=2000)
        row: dict[str, float | str] = {"detector": model_name, "energy_keV": float(e0)}
        row.update({n: float(c) for n, c in zip(names, coef, strict=True)})
        row["xray_escape_keV"] = xray
        row["min_energy_keV"] = min_e
        fitted = a @ coef
        row["_rel_residual"] = float(np.abs(fitted - col)[mask].sum() / max(col[mask].sum(), 1e-12))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR / "detector_response.csv")
    parser.add_argument("--models", nargs="*", default=None)
    args = parser.parse_args(argv)
    models = args.models or physics_models()
    fields = ["detector", "energy_keV", *PEAK_FIELDS, *(f"c{k:02d}" for k in range(N_CONTINUUM)),
              "xray_escape_keV", "min_energy_keV"]
    lines = [
        "# Detector response tables (counts per photon on the detector face) fitted by",
        "# cedge/spectral_tools/fit_detector_response.py to monoenergetic responses of the hal_sim.gamma",
        "# detector models.",
        "# peak/escape/single_escape/double_escape: sharp deposits; c00-c39: continuum in E_dep/T_max bins;",
        "# c40-c51: continuum between Compton edge and E0 (see agent/spectral/response.py).",
        ",".join(fields),
    ]
    for m in models:
        rows = fit_model(m)
        worst = max(r["_rel_residual"] for r in rows)
        print(f"{m}: {len(rows)} energies, worst relative L1 residual {worst:.3f}")
        for r in rows:
            lines.append(",".join(f"{r[f]:.6g}" if isinstance(r[f], float) else str(r[f]) for f in fields))
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
