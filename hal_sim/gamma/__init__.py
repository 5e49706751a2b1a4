"""Physics-grade gamma-ray detector simulator used by the simulated spectrometers.

Public API::

    from hal_sim.gamma import DetectorResponse, NUCLIDES
    resp = DetectorResponse.for_model("NaI 2x4x16 in log", n_channels=1024, max_energy_kev=3000.0)
    rate = resp.source_rate_spectrum("Cs-137", 1e6, 5.0, [("iron", 1.6), ("water", 20.0)])
    bkg = resp.background_rate_spectrum(0.08)
    counts, live_s = resp.sample((rate + bkg) * 1.0, 1.0, rng, temperature_c=25.0)
    h = resp.true_dose_rate_usv_h("Cs-137", 1e6, 5.0)
    # an agent detector preset (fitted to a real unit) on a measured spectrum's calibration:
    base = simulated_base_spectrum("Cs-137", "NaI generic (RASE)", calibration, 1024)

Modules: nuclides (line library), materials (NIST attenuation), resolution (GADRAS FWHM form),
detectors (catalogue), efficiency (geometry, intrinsic), crystal_response (deposit physics),
transport (air, slabs, GP build-up, scatter, Pb x-rays), dose (ICRP 74), background (K/U/Th,
cosmic), counting (gain drift, dead time, Poisson), response (the cached DetectorResponse).
"""

from hal_sim.gamma.detectors import DetectorSpec, detector_catalog, get_detector
from hal_sim.gamma.materials import get_material, known_materials
from hal_sim.gamma.nuclides import NUCLIDES, Nuclide, get_nuclide
from hal_sim.gamma.response import DetectorResponse, simulated_base_spectrum

__all__ = [
    "NUCLIDES",
    "DetectorResponse",
    "DetectorSpec",
    "Nuclide",
    "detector_catalog",
    "get_detector",
    "get_material",
    "get_nuclide",
    "known_materials",
    "simulated_base_spectrum",
]


def known_models() -> list[str]:
    """Detector model names accepted by DetectorResponse.for_model."""
    return list(detector_catalog())
