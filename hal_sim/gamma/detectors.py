"""Catalogue of the simulated detectors: crystal geometry, housing, threshold, timing, gain drift.

Geometry is what the model names say (NaI 2x4x16 in log, 3x3/2x2/1x1 in right cylinders, 1 cm3
CsI and CZT cubes). Where the name does not fix it, the choice is stated: LaBr3 is the common
1.5x1.5 in handheld crystal (e.g. Saint-Gobain BrilLanCe-380 38x38 mm); the D3S-class CsI is taken
as ~31 cm3 (2.5 x 2.5 x 5 cm), an assumption; HPGe 40 % is a 62 x 60 mm coaxial crystal (a 40 %
relative-efficiency detector is ~180 cm3, Knoll 4th ed. sec. 12.V).

Temperature coefficients of gain (pulse height per degC near 20 degC):
* NaI(Tl) + PMT: -0.3 %/degC (light yield of NaI(Tl) falls ~0.2-0.3 %/degC above room temperature:
  Saint-Gobain "Efficiency and temperature response of NaI(Tl)" note; Moszynski et al., NIM A 567
  (2006) 31; the brief's design value).
* CsI(Tl) + SiPM with the RadiaCode's bias compensation: -0.1 %/degC residual (CsI(Tl) light yield is
  flat within ~0.1 %/degC at 10-30 degC, Valentine et al., IEEE TNS 40 (1993) 1267).
* LaBr3(Ce): -0.1 %/degC (scintillator ~0.01 %/degC; the PMT dominates. Moszynski et al. 2006).
* CZT, HPGe: charge-collection devices, negligible (0 here).

Dead times are typical per-event processing times (Knoll ch. 4; digital MCAs with pile-up
rejection): scintillators 2-5 us, HPGe 10 us.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from hal_sim.gamma.materials import Material, get_material
from hal_sim.gamma.resolution import GadResolution, resolution_table

INCH_CM = 2.54


@dataclass(frozen=True)
class Crystal:
    """A right cylinder (diameter x length, irradiated on a flat face) or a box (width x height
    face toward the source, ``depth`` along the source direction)."""

    material: str
    shape: str  # "cylinder" | "box"
    width_cm: float  # cylinder: diameter
    height_cm: float  # cylinder: = diameter (unused)
    depth_cm: float

    @property
    def front_area_cm2(self) -> float:
        if self.shape == "cylinder":
            return float(np.pi * self.width_cm**2 / 4)
        return self.width_cm * self.height_cm

    @property
    def volume_cm3(self) -> float:
        return self.front_area_cm2 * self.depth_cm

    @property
    def surface_cm2(self) -> float:
        if self.shape == "cylinder":
            return float(2 * self.front_area_cm2 + np.pi * self.width_cm * self.depth_cm)
        w, h, d = self.width_cm, self.height_cm, self.depth_cm
        return 2 * (w * h + w * d + h * d)

    @property
    def mean_chord_cm(self) -> float:
        """Cauchy mean chord 4V/S of a convex body under isotropic irradiation."""
        return 4 * self.volume_cm3 / self.surface_cm2

    @property
    def lateral_half_size_cm(self) -> float:
        return 0.5 * min(self.width_cm, self.height_cm)

    @property
    def medium(self) -> Material:
        return get_material(self.material)


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    crystal: Crystal
    resolution: GadResolution
    window_material: str
    window_g_cm2: float
    threshold_kev: float  # lower-level discriminator (50 % point)
    threshold_width_kev: float
    dead_time_s: float
    gain_tc_per_degc: float  # relative pulse-height change per degC
    reference_temperature_c: float = 20.0
    backscatter_fraction: float = 0.03  # photons back-scattered into the crystal by its mounting, per direct photon
    # light-yield non-proportionality of a fitted preset: recorded/true energy - 1 = sum_k p_k ln(E/662)^k
    # (applied by simulated_base_spectrum when it maps onto a measured calibration)
    nonprop: tuple[float, ...] = ()


def _cyl(material: str, d_in: float, l_in: float) -> Crystal:
    return Crystal(material, "cylinder", d_in * INCH_CM, d_in * INCH_CM, l_in * INCH_CM)


@functools.cache
def detector_catalog() -> dict[str, DetectorSpec]:
    res = resolution_table()
    czt = res["CZT 1 cm3"]
    nai = {"window_material": "aluminium", "dead_time_s": 3e-6, "gain_tc_per_degc": -0.003}
    specs = [
        DetectorSpec("NaI 2x4x16 in log", Crystal("NaI", "box", 16 * INCH_CM, 4 * INCH_CM, 2 * INCH_CM),
                     res["NaI 2x4x16 in log"], window_g_cm2=0.27, threshold_kev=30.0, threshold_width_kev=4.0,
                     backscatter_fraction=0.05, **nai),
        DetectorSpec("NaI 3x3 in", _cyl("NaI", 3, 3), res["NaI 3x3 in"], window_g_cm2=0.135,
                     threshold_kev=25.0, threshold_width_kev=3.0, **nai),
        DetectorSpec("NaI 2x2 in", _cyl("NaI", 2, 2), res["NaI 2x2 in"], window_g_cm2=0.135,
                     threshold_kev=25.0, threshold_width_kev=3.0, **nai),
        DetectorSpec("NaI 1x1 in", _cyl("NaI", 1, 1), res["NaI 1x1 in"], window_g_cm2=0.135,
                     threshold_kev=25.0, threshold_width_kev=3.0, **nai),
        DetectorSpec("CsI(Tl) small handheld (D3S class)", Crystal("CsI", "box", 2.5, 5.0, 2.5),
                     res["CsI(Tl) small handheld (D3S class)"], window_material="polyethylene",
                     window_g_cm2=0.25, threshold_kev=25.0, threshold_width_kev=3.0, dead_time_s=5e-6,
                     gain_tc_per_degc=-0.001),
        DetectorSpec("CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)", Crystal("CsI", "box", 1.0, 1.0, 1.0),
                     res["CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)"], window_material="polyethylene",
                     window_g_cm2=0.2, threshold_kev=12.0, threshold_width_kev=2.0, dead_time_s=5e-6,
                     gain_tc_per_degc=-0.001, backscatter_fraction=0.02),
        DetectorSpec("LaBr3", _cyl("LaBr3", 1.5, 1.5), res["LaBr3"], window_material="aluminium",
                     window_g_cm2=0.135, threshold_kev=20.0, threshold_width_kev=2.0, dead_time_s=1e-6,
                     gain_tc_per_degc=-0.001),
        DetectorSpec("CZT 1 cm3", Crystal("CZT", "box", 1.0, 1.0, 1.0), czt, window_material="polyethylene",
                     window_g_cm2=0.1, threshold_kev=20.0, threshold_width_kev=2.0, dead_time_s=2e-6,
                     gain_tc_per_degc=0.0, backscatter_fraction=0.02),
        DetectorSpec("HPGe 40%", Crystal("Ge", "cylinder", 6.2, 6.2, 6.0), res["HPGe 40%"],
                     window_material="aluminium", window_g_cm2=0.27, threshold_kev=10.0, threshold_width_kev=1.0,
                     dead_time_s=10e-6, gain_tc_per_degc=0.0),
    ]
    cat = {s.name: s for s in specs}
    cat["CZT"] = DetectorSpec(**{**cat["CZT 1 cm3"].__dict__, "name": "CZT"})
    return cat


def preset_detector(name: str) -> DetectorSpec | None:
    """A detector preset of the agent (agent/spectral/presets.py) as a simulated detector: the catalogue
    crystal it names (``crystal``, else its ``base``) with the preset's fitted resolution, discriminator,
    extra back-scatter and non-proportionality. The preset's peak tail, continuum/efficiency corrections
    and room scatter are corrections *to* this physics model and are not simulated. None if unknown."""
    try:
        from agent.spectral.presets import presets
    except ImportError:  # pragma: no cover - the agent ships with the simulator
        return None
    p = presets().get(name)
    if p is None:
        return None
    cat = detector_catalog()
    crystal = p.crystal or p.base
    if crystal not in cat:
        raise ValueError(f"preset {name!r}: its crystal {crystal!r} is not a simulated detector")
    base = cat[crystal]
    return DetectorSpec(**{
        **base.__dict__, "name": p.name,
        "resolution": GadResolution(p.offset_a_kev, p.fwhm_pct_661, p.power_c),
        "threshold_kev": p.threshold_kev if p.threshold_kev > 0 else base.threshold_kev,
        "threshold_width_kev": p.threshold_width_kev if p.threshold_kev > 0 else base.threshold_width_kev,
        "backscatter_fraction": base.backscatter_fraction + p.backscatter,
        "nonprop": tuple(p.nonprop),
    })


def get_detector(model: str) -> DetectorSpec:
    """A catalogue detector, or an agent detector preset mapped onto its catalogue crystal."""
    cat = detector_catalog()
    if model in cat:
        return cat[model]
    spec = preset_detector(model)
    if spec is None:
        raise ValueError(f"unknown detector model {model!r}; known: {', '.join(cat)} (and the agent's presets)")
    return spec
