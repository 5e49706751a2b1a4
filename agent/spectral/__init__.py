"""On-device gamma spectroscopy: identification, dose rate, peaks, calibration tracking, anomalies.

Modules, one concept each: ``library`` (nuclide lines, embedded data), ``detector`` (resolution
models), ``response`` (detector response and templates), ``binning`` (resolution-matched bins),
``fitting`` (Poisson non-negative fits), ``peaks`` (matched-filter peak search), ``calibration``
(gain tracking on K-40/Tl-208/Bi-214), ``identify`` (template-fit identification), ``dose``
(G(E) H*(10)), ``anomaly`` (moving-detector NMF anomaly detection), ``pipeline`` (one call per
spectrum). The offline fitting tools live in ``cedge.spectral_tools`` (they use the simulator);
``presets`` (detector presets fitted to measured spectra) and ``drf_fit`` (fitting them) are on-device.
"""

from agent.spectral.identify import IdentificationResult, Identifier, IdentifierSettings, NuclideID
from agent.spectral.pipeline import SpectrumAnalysis, SpectrumPipeline, analyze, to_analysis_record

__all__ = [
    "IdentificationResult",
    "Identifier",
    "IdentifierSettings",
    "NuclideID",
    "SpectrumAnalysis",
    "SpectrumPipeline",
    "analyze",
    "to_analysis_record",
]
