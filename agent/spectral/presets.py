"""Detector presets: a parametric response of a *real* detector, built on a physics response table.

Why parametric corrections on a physics table: a detector response function is characterised from
a handful of check-source spectra (InterSpec's "Detector Response Function" tool and GADRAS's DRF
fitting work this way). A few measured lines cannot fix a 52-bin continuum per energy, but they do
fix the handful of quantities in which a real unit differs from an ideal crystal of its size:

* resolution FWHM(E), GADRAS "GAD" form (a, b, c) (:mod:`agent.spectral.detector`);
* lower-level discriminator (50 % point, erf width) and so the low-energy roll-off;
* light-yield non-proportionality (NaI/CsI low-energy peaks a few % above a linear calibration,
  Knoll 4th ed. sec. 8.II.B);
* an exponential low-energy peak tail (light/charge collection, window scatter);
* relative efficiency ``exp(e1 L + e2 L^2)``, L = ln(E/300 keV) (housing, crystal depth, dead layers);
* continuum strength ``exp(k0 + k1 L)`` relative to the full-energy peak (peak-to-total: crystal size
  and the multiple-scatter shelf);
* photons back-scattered into the crystal from 90-180 deg by the housing and surroundings (the
  back-scatter peak near E0 / (1 + 2 E0 / 511 keV), Knoll 4th ed. sec. 10.III.A), on top of the base table;
* multiply scattered photons from the surroundings, log-uniform from 30 keV up to the 180 deg
  back-scatter energy (the slowing-down spectrum of Fano, Spencer & Berger 1959 is roughly 1/E there),
  absorbed with the base table's full-energy probability: a property of the measurement set-up more
  than of the crystal, kept because calibration spectra and the unit's field spectra share it;
* a scale on the K x-ray escape peak (iodine ~29 keV in NaI/CsI).

The base table is a simulator-fitted table of the same crystal (``data/detector_response.csv``); the
preset's table, with these terms applied, is an ordinary :class:`ResponseTable`, so identification
works unchanged. Presets live in ``data/detector_presets.yaml`` (each states what it was fitted on)
and in user files written by ``cedge spectrum fit-detector`` (loaded with :func:`load_detector_file`
or the ``CEDGE_DETECTOR_FILE`` environment variable, paths separated by ``os.pathsep``).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from agent.safe_yaml import YamlError, load_yaml_file
from agent.spectral.library import LibraryError

PRESET_FILE = Path(__file__).parent / "data" / "detector_presets.yaml"
ENV_DETECTOR_FILE = "CEDGE_DETECTOR_FILE"
_ME_C2_KEV = 510.99895


@dataclass(frozen=True)
class DetectorPreset:
    """One detector's parametric response (see module docstring for the terms)."""

    name: str
    base: str  # physics response table (detector_response.csv) the corrections apply to
    kind: str = "physics"  # "fitted" (to measured spectra) | "physics" (simulator model only)
    offset_a_kev: float = 0.0
    fwhm_pct_661: float = 7.0
    power_c: float = 0.5
    threshold_kev: float = 0.0
    threshold_width_kev: float = 1.0
    nonprop: tuple[float, ...] = ()
    tail_fraction: float = 0.0
    tail_length_sigma: float = 1.0
    efficiency: tuple[float, float] = (0.0, 0.0)  # e1, e2 of exp(e1 L + e2 L^2), L = ln(E/300)
    continuum: tuple[float, float] = (0.0, 0.0)  # k0, k1 of exp(k0 + k1 L)
    backscatter: float = 0.0  # extra back-scattered photons per photon on the face
    room_scatter: float = 0.0  # multiply scattered photons (surroundings) per photon on the face
    escape_scale: float = 1.0
    # energies of the lines the corrections were fitted on: efficiency/continuum corrections are held
    # at their end values outside (a quadratic in ln E must not be extrapolated)
    correction_range_kev: tuple[float, float] = (15.0, 3000.0)
    crystal: str = ""  # hal_sim catalogue detector with the same crystal ("" = base)
    aliases: tuple[str, ...] = ()
    fitted_on: str = ""
    notes: str = ""
    fom: dict[str, float] = field(default_factory=dict)
    # G(E) fitted to measured dose rates (``fit-detector --dose-rate``): {coefficients: [a_k of
    # G = sum a_k ln(E/1000 keV)^k, (uSv/h) per (count/s)], e_min_keV:, e_max_keV:, fitted_on:, ...};
    # empty: the base crystal's G(E) (agent.spectral.dose.dose_weighting)
    dose_weighting: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["dose_weighting"]:
            del d["dose_weighting"]  # files without a G(E) stay as they were
        for k in _TUPLE_FIELDS:
            d[k] = [float(x) if not isinstance(x, str) else x for x in d[k]]
        return d


_TUPLE_FIELDS = ("nonprop", "efficiency", "continuum", "aliases", "correction_range_kev")


def preset_from_dict(d: dict) -> DetectorPreset:
    known = DetectorPreset.__dataclass_fields__
    unknown = set(d) - set(known)
    if unknown:
        raise LibraryError(f"detector preset {d.get('name')!r}: unknown fields {sorted(unknown)}")
    if not d.get("name") or not d.get("base"):
        raise LibraryError(f"detector preset needs 'name' and 'base', got {d!r}")
    kw = dict(d)
    kw["dose_weighting"] = _check_dose_weighting(d["name"], kw.get("dose_weighting"))
    for k in _TUPLE_FIELDS:
        if k in kw and kw[k] is not None:
            kw[k] = tuple(kw[k])
    kw["fom"] = dict(kw.get("fom") or {})
    return DetectorPreset(**kw)


def _check_dose_weighting(name: str, g: object) -> dict:
    """A preset's ``dose_weighting`` mapping, validated (numbers, e_min < e_max); {} if absent."""
    if not g:
        return {}
    try:
        coef = [float(x) for x in g["coefficients"]]  # type: ignore[index]
        e_min, e_max = float(g["e_min_keV"]), float(g["e_max_keV"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError) as err:
        raise LibraryError(f"detector preset {name!r}: dose_weighting needs numeric 'coefficients', 'e_min_keV',"
                           f" 'e_max_keV' ({err!r})") from err
    if not coef or not np.all(np.isfinite(coef)) or not 0 < e_min < e_max:
        raise LibraryError(f"detector preset {name!r}: invalid dose_weighting {g!r}")
    return {**dict(g), "coefficients": coef, "e_min_keV": e_min, "e_max_keV": e_max}  # type: ignore[call-overload]


def read_preset_file(path: Path | str) -> list[DetectorPreset]:
    """Presets in a YAML file: ``{presets: [ {name:, base:, ...}, ... ]}`` (or one mapping)."""
    p = Path(path)
    try:
        data = load_yaml_file(p)  # bounded: size, alias expansion, depth
    except YamlError as err:
        raise LibraryError(f"cannot read detector preset file: {err}") from err
    items = data.get("presets", [data]) if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise LibraryError(f"{p}: expected a list of presets (mappings)")
    try:
        return [preset_from_dict(x) for x in items]
    except LibraryError as err:
        raise LibraryError(f"{p}: {err}") from err
    except (TypeError, ValueError) as err:
        raise LibraryError(f"{p}: invalid detector preset: {err}") from err


def write_preset_file(presets: list[DetectorPreset], path: Path | str, header: str = "") -> None:
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    body = yaml.safe_dump({"presets": [p.to_dict() for p in presets]}, sort_keys=False, width=110)
    Path(path).write_text("\n".join(lines) + ("\n" if lines else "") + body, encoding="utf-8")


_user: dict[str, DetectorPreset] = {}


@functools.cache
def _builtin_and_env() -> dict[str, DetectorPreset]:
    out = {p.name: p for p in read_preset_file(PRESET_FILE)} if PRESET_FILE.exists() else {}
    for part in os.environ.get(ENV_DETECTOR_FILE, "").split(os.pathsep):
        if part.strip():
            out.update({p.name: p for p in read_preset_file(part.strip())})
    return out


def presets() -> dict[str, DetectorPreset]:
    """All presets: built-in, then ``CEDGE_DETECTOR_FILE``, then files loaded at run time."""
    return {**_builtin_and_env(), **_user}


def clear_caches() -> None:
    """Forget derived models/tables/templates (after presets changed)."""
    from agent.spectral import detector, dose, response

    _builtin_and_env.cache_clear()
    detector.detector_models.cache_clear()
    dose.preset_dose_weighting.cache_clear()
    pipeline = sys.modules.get("agent.spectral.pipeline")  # its per-model G(E) cache, if loaded
    if pipeline is not None and hasattr(getattr(pipeline, "_weighting", None), "cache_clear"):
        pipeline._weighting.cache_clear()
    preset_table_cached.cache_clear()
    response.templates_for.cache_clear()


def load_detector_file(path: Path | str) -> list[str]:
    """Register the presets of a user file (e.g. from ``cedge spectrum fit-detector``); returns their names."""
    loaded = read_preset_file(path)
    for p in loaded:
        _user[p.name] = p
    clear_caches()
    return [p.name for p in loaded]


def backscatter_deposits(energy_kev: float, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Energies and Klein-Nishina weights (sum 1) of photons scattered through 90-180 deg."""
    cth = -((np.arange(n) + 0.5) / n)
    k = energy_kev / _ME_C2_KEV
    r = 1.0 / (1.0 + k * (1.0 - cth))
    kn = r * r * (r + 1.0 / r - (1.0 - cth * cth))
    return energy_kev * r, kn / kn.sum()


def apply_preset(base, preset: DetectorPreset):
    """The preset's ResponseTable: the base table with the preset's terms applied."""
    from agent.spectral.response import ResponseTable, continuum_segments_kev

    e = base.energies_kev
    lg = np.log(np.clip(e, *preset.correction_range_kev) / 300.0)
    e1, e2 = preset.efficiency
    eff = np.exp(e1 * lg + e2 * lg * lg)
    k0, k1 = preset.continuum
    kc = np.exp(k0 + k1 * lg)
    peaks = {f: v * eff for f, v in base.peaks.items()}
    peaks["escape"] = peaks["escape"] * preset.escape_scale
    cont = base.continuum * (eff * kc)[:, None]
    if preset.backscatter > 0:
        cont = cont.copy()
        for i, e0 in enumerate(e):
            e_bs, w = backscatter_deposits(float(e0))
            full = np.array([base.peak("peak", float(x)) for x in e_bs]) * eff[i]
            seg = continuum_segments_kev(float(e0))
            idx = np.clip(np.searchsorted(seg, e_bs) - 1, 0, cont.shape[1] - 1)
            np.add.at(cont[i], idx, preset.backscatter * w * full)
    if preset.room_scatter > 0:
        cont = cont.copy()
        for i, e0 in enumerate(e):
            top = float(e0) / (1.0 + 2.0 * float(e0) / _ME_C2_KEV)
            if top <= 31.0:
                continue
            e_ms = np.geomspace(30.0, top, 16)
            full = np.array([base.peak("peak", float(x)) for x in e_ms]) * eff[i] / e_ms.size
            seg = continuum_segments_kev(float(e0))
            idx = np.clip(np.searchsorted(seg, e_ms) - 1, 0, cont.shape[1] - 1)
            np.add.at(cont[i], idx, preset.room_scatter * full)
    thr_min = preset.threshold_kev + 2.5 * preset.threshold_width_kev if preset.threshold_kev > 0 else 0.0
    return ResponseTable(
        model=preset.name,
        energies_kev=e,
        peaks=peaks,
        continuum=cont,
        xray_escape_kev=base.xray_escape_kev,
        min_energy_kev=max(base.min_energy_kev if preset.threshold_kev <= 0 else 0.0, thr_min, 15.0),
        threshold_kev=preset.threshold_kev,
        threshold_width_kev=preset.threshold_width_kev,
        nonprop=tuple(preset.nonprop),
        tail_fraction=preset.tail_fraction,
        tail_length_sigma=preset.tail_length_sigma,
    )


@functools.lru_cache(maxsize=64)
def preset_table_cached(name: str):
    from agent.spectral.response import response_tables

    p = presets()[name]
    tables = response_tables()
    if p.base not in tables:
        raise LibraryError(f"preset {name!r}: no base response table {p.base!r} (have: {', '.join(tables)})")
    return apply_preset(tables[p.base], p)


def preset_table(preset: DetectorPreset):
    """Table of a preset object (not cached; used while fitting)."""
    from agent.spectral.response import response_tables

    return apply_preset(response_tables()[preset.base], preset)


def with_params(preset: DetectorPreset, **changes) -> DetectorPreset:
    return replace(preset, **changes)
