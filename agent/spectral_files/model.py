"""What a spectrum file holds, independent of its format.

Why one model for all formats: N42.42, IAEA SPE and RadiaCode XML all carry "one or more spectra with
live/real time and an energy calibration, from one instrument"; N42 adds dose rates and analysis
results (nuclides, alarms). Readers return this model, the N42 writer takes it, so converting a
format is read + write and the analysis never sees a format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from agent.hal.interfaces import SpectrumReading

MEASUREMENT_CLASSES = ("Foreground", "Background", "Calibration", "IntrinsicActivity", "NotSpecified")


class SpectrumFileError(ValueError):
    """A spectrum file could not be read or written; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class InstrumentInfo:
    manufacturer: str = "unknown"
    model: str = "unknown"
    serial: str | None = None
    class_code: str = "Radionuclide Identifier"  # N42 RadInstrumentClassCode enumeration
    detector_kind: str = "Other"  # N42 RadDetectorKindCode: NaI, CsI, LaBr3, HPGe ...
    detector_description: str | None = None
    versions: tuple[tuple[str, str], ...] = (("Software", "customs-edge"),)


@dataclass(frozen=True, slots=True)
class SpectrumMeasurement:
    """One spectrum of the file with its role (foreground/background) and context."""

    reading: SpectrumReading
    measurement_class: str = "Foreground"
    start_utc: datetime | None = None
    remark: str = ""
    detector_name: str | None = None  # which detector of a multi-detector instrument
    sample: int | None = None  # time slice of a multi-detector file (N42 RadMeasurement, SpecUtils sample number)
    derived: bool = False  # a spectrum the instrument computed (sum, background-subtracted): never summed again
    summed_from: int = 1  # how many raw spectra this one is the sum of (see agent.spectral_files.combine)


@dataclass(frozen=True, slots=True)
class NuclideResult:
    """One identified (or explicitly not identified) nuclide as N42 ``Nuclide`` carries it."""

    name: str
    confidence_pct: float
    category: str = ""
    identified: bool = True
    activity_kbq: float | None = None  # N42 NuclideActivityValue is in kBq


@dataclass(frozen=True, slots=True)
class AlarmResult:
    category: str  # N42 RadAlarmCategoryCode: Gamma, Neutron, Isotope, Other ...
    description: str = ""
    t_utc: datetime | None = None


@dataclass(frozen=True, slots=True)
class AnalysisRecord:
    """Results of an analysis of (some of) the file's measurements."""

    algorithm_name: str = "customs-edge spectral"
    algorithm_version: str = "0.1"
    start_utc: datetime | None = None
    status: str = "Success"  # N42 AnalysisResultStatusCode: Success / Failure
    description: str = ""
    nuclides: tuple[NuclideResult, ...] = ()
    alarms: tuple[AlarmResult, ...] = ()
    dose_rate_usv_h: float | None = None
    dose_rate_uncertainty_usv_h: float | None = None
    background_dose_rate_usv_h: float | None = None
    reduced_chi_square: float | None = None


@dataclass(frozen=True, slots=True)
class SpectrumFile:
    measurements: tuple[SpectrumMeasurement, ...]
    instrument: InstrumentInfo = field(default_factory=InstrumentInfo)
    analyses: tuple[AnalysisRecord, ...] = ()
    source: str = ""  # path or description of where it was read from

    def raw(self, measurement_class: str) -> list[SpectrumMeasurement]:
        """The raw (not derived) spectra of one role, in file order."""
        return [m for m in self.measurements if m.measurement_class == measurement_class and not m.derived]

    def foreground(self) -> SpectrumMeasurement:
        """The spectrum to analyse.

        Which: the raw Foreground spectra; else those whose role the file leaves open (NotSpecified);
        else a derived foreground (a file holding only sums); else the first spectrum. Several
        spectra (detectors of a portal, time slices) are *summed*, not picked: see
        :mod:`agent.spectral_files.combine` for why and for how live time is counted.
        """
        if not self.measurements:
            raise SpectrumFileError(f"{self.source or 'spectrum file'}: holds no spectrum")
        from agent.spectral_files.combine import sum_measurements

        for chosen in (
            self.raw("Foreground"),
            self.raw("NotSpecified"),
            [m for m in self.measurements if m.measurement_class in ("Foreground", "NotSpecified")][:1],
        ):
            if chosen:
                return sum_measurements(chosen)
        return self.measurements[0]

    def background(self) -> SpectrumMeasurement | None:
        """The file's own background: the sum of its raw Background spectra, else a derived one, else None."""
        from agent.spectral_files.combine import sum_measurements

        chosen = self.raw("Background") or [
            m for m in self.measurements if m.measurement_class == "Background"][:1]
        return sum_measurements(chosen) if chosen else None
