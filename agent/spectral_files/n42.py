"""ANSI N42.42-2012 (namespace ``http://physics.nist.gov/N42/2011/N42``) reader and writer, with lxml.

Why N42.42: it is the data format US DHS/DNDO and IEC 62755 require of radiation detection
instruments, so a spectrum, its energy calibration, the instrument's dose rate and our analysis
(nuclide IDs with confidence, alarms, H*(10)) can go to any reach-back analyst's software
(InterSpec, GADRAS, vendor tools) unchanged. Element order and enumerations follow the NIST schema
(version 0.0.54, 2012); tests validate written files against it.

Reader scope: every RadMeasurement/Spectrum (counted-zeroes compression, polynomial or
energy-boundary calibrations), DoseRate, and AnalysisResults (nuclides, alarms, dose).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from lxml import etree

from agent.hal.interfaces import EnergyCalibration, SpectrumReading, utc_iso
from agent.spectral_files.limits import (
    check_channels,
    check_counts,
    check_duration,
    counted_zeroes_length,
    counted_zeroes_runs,
    malformed_values,
    read_capped,
)
from agent.spectral_files.model import (
    MEASUREMENT_CLASSES,
    AlarmResult,
    AnalysisRecord,
    InstrumentInfo,
    NuclideResult,
    SpectrumFile,
    SpectrumFileError,
    SpectrumMeasurement,
)
from agent.spectral_files.n42_names import schema_safe_name

N42_NS = "http://physics.nist.gov/N42/2011/N42"
_XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<y>\d+(?:\.\d*)?)Y)?(?:(?P<mo>\d+(?:\.\d*)?)M)?(?:(?P<d>\d+(?:\.\d*)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d*)?)H)?(?:(?P<mi>\d+(?:\.\d*)?)M)?(?:(?P<s>\d+(?:\.\d*)?)S)?)?$"
)
_DETECTOR_KINDS = ("HPGe", "NaI", "LaBr3", "CZT", "CdTe", "CsI", "BGO", "SrI2", "CLYC", "PVT", "GMT", "He3")


# --------------------------------------------------------------------------- small converters
def parse_duration_s(text: str) -> float:
    """xsd:duration ('PT613S', 'PT1H2M3.5S', 'P1DT2H') -> seconds (years/months as 365.25/30.44 d)."""
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT"):
        raise SpectrumFileError(f"bad xsd:duration {text!r}")
    g = {k: float(v) if v else 0.0 for k, v in match.groupdict().items() if k != "sign"}
    seconds = (
        g["y"] * 365.25 * 86400 + g["mo"] * 30.436875 * 86400 + g["d"] * 86400
        + g["h"] * 3600 + g["mi"] * 60 + g["s"]
    )
    return -seconds if match.group("sign") else seconds


def format_duration(seconds: float) -> str:
    """Seconds -> xsd:duration 'PT12.345S' (N42 files in the wild use seconds only)."""
    if seconds < 0:
        raise SpectrumFileError(f"negative duration {seconds}")
    return f"PT{seconds:.6f}".rstrip("0").rstrip(".") + "S"


def parse_datetime_utc(text: str) -> datetime:
    """xsd:dateTime -> aware UTC datetime; a time without zone is taken as UTC (as RadiaCode writes)."""
    t = text.strip().replace("Z", "+00:00")
    try:
        value = datetime.fromisoformat(t)
    except ValueError as err:
        raise SpectrumFileError(f"bad xsd:dateTime {text!r}") from err
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def expand_counted_zeroes(values: np.ndarray, source: str = "<bytes>") -> np.ndarray:
    """N42 'CountedZeroes' compression: a 0 is followed by the number of zero channels it stands for.

    The expanded size is checked *before* anything is allocated: a 1.7 kB file claiming 10^8
    zeros must get a clear error, not 6 GB of memory (issue 14, row 9).
    """
    values = np.asarray(values, dtype=float)
    total = counted_zeroes_length(values, source)  # raises before allocating for a bomb
    starts = counted_zeroes_runs(values).tolist()
    out = np.zeros(int(total))
    pos = 0
    i = 0
    start_set = set(starts)
    n = values.size
    while i < n:
        if i in start_set:
            pos += int(values[i + 1])
            i += 2
        else:
            out[pos] = values[i]
            pos += 1
            i += 1
    return out


def file_calibration(coefficients: list[float] | tuple[float, ...] | np.ndarray) -> EnergyCalibration:
    """Energy calibration from a file's polynomial, which gives the *lower edge* of each channel.

    One convention for every file format, the one SpecUtils and InterSpec (Sandia) use when they
    read N42 and SPE polynomials: E(ch) is the energy of the lower edge of channel ch (0-based).
    Inside the project :class:`EnergyCalibration` gives channel *centres*, so the polynomial is
    shifted by half a channel: centre(ch) = lower_edge(ch + 0.5).
    """
    c = np.asarray(coefficients, dtype=float)
    if c.size == 0 or not np.all(np.isfinite(c)):
        raise SpectrumFileError(f"energy calibration coefficients are missing or not finite: {list(c)[:6]}")
    return EnergyCalibration(tuple(float(v) for v in _shift_polynomial(c, 0.5)))


def file_coefficients(calibration: EnergyCalibration) -> tuple[float, ...]:
    """The lower-edge polynomial a file carries for an internal (channel-centre) calibration."""
    return tuple(float(v) for v in _shift_polynomial(np.asarray(calibration.coefficients_kev, dtype=float), -0.5))


def _shift_polynomial(c: np.ndarray, shift: float) -> np.ndarray:
    """Coefficients of q(x) = p(x + shift)."""
    p = np.polynomial.Polynomial(c)
    q = p(np.polynomial.Polynomial([shift, 1.0]))
    out = np.zeros(c.size)
    out[: q.coef.size] = q.coef[: c.size]
    return out


def compress_counted_zeroes(counts: np.ndarray) -> list[str]:
    out: list[str] = []
    zeros = 0
    for v in counts:
        if v == 0:
            zeros += 1
            continue
        if zeros:
            out += ["0", str(zeros)]
            zeros = 0
        out.append(_fmt_number(v))
    if zeros:
        out += ["0", str(zeros)]
    return out


def _fmt_number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _local(el: etree._Element) -> str:
    """Local name of an element; also for tags with an undeclared vendor prefix ('InterSpec:DetectorType')."""
    return el.tag.rpartition("}")[2].rpartition(":")[2] if isinstance(el.tag, str) else ""


def parse_xml(data: bytes, source: str) -> etree._Element:
    """Parse XML strictly, except for prefixes used without a declaration.

    SpecUtils/InterSpec write ``<InterSpec:DetectorType>`` without declaring ``InterSpec`` (0.0.11);
    such a file is complete, only a vendor element's prefix is unbound, so it is read (lxml's
    recovery keeps the element under its prefixed name). Any other error, truncation above all,
    is refused: libxml2 goes on after a namespace error, so a truncated file still shows its
    parser error here.
    """
    options = {"resolve_entities": False, "no_network": True, "huge_tree": True}
    parser = etree.XMLParser(**options)
    try:
        return etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as err:
        errors = list(parser.error_log)  # this parse's errors (the exception's log may hold older ones)
        if errors and all(e.domain_name == "NAMESPACE" for e in errors):
            root = etree.fromstring(data, parser=etree.XMLParser(recover=True, **options))
            if root is not None:
                return root
        raise SpectrumFileError(f"{source}: not well-formed XML: {err}") from err


def _children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str) and _local(c) == name]


def _child(el: etree._Element, name: str) -> etree._Element | None:
    found = _children(el, name)
    return found[0] if found else None


def _text(el: etree._Element, name: str, default: str | None = None) -> str | None:
    c = _child(el, name)
    return c.text.strip() if c is not None and c.text is not None else default


def _numbers(text: str | None) -> np.ndarray:
    if not text or not text.strip():
        return np.zeros(0)
    try:
        return np.array([float(t) for t in text.split()])
    except ValueError as err:
        raise SpectrumFileError(f"non-numeric value in list {text[:40]!r}...") from err


# --------------------------------------------------------------------------- reader
def _calibration(el: etree._Element, n_channels: int | None) -> EnergyCalibration:
    coeffs = _numbers(_text(el, "CoefficientValues"))
    if coeffs.size:
        return file_calibration(coeffs)
    for name, is_edges in (("EnergyBoundaryValues", True), ("EnergyValues", False)):
        values = _numbers(_text(el, name))
        if values.size >= 3:
            # EnergyBoundaryValues are lower edges (n or n+1 values); EnergyValues are centres
            if is_edges:
                edges = values if values.size > (n_channels or 0) else np.append(values, 2 * values[-1] - values[-2])
                centres = 0.5 * (edges[1:] + edges[:-1])
            else:
                centres = values
            ch = np.arange(centres.size, dtype=float)
            fit = np.polynomial.polynomial.polyfit(ch, centres, deg=min(3, centres.size - 1))
            return EnergyCalibration(tuple(float(c) for c in fit))
    raise SpectrumFileError(f"EnergyCalibration {el.get('id')!r} has no coefficients or energies")


def _read_analysis(el: etree._Element) -> AnalysisRecord:
    nuclides = []
    nar = _child(el, "NuclideAnalysisResults")
    chi2 = None
    if nar is not None:
        chi2_text = _text(nar, "NuclideAnalysisReducedChiSquareValue")
        chi2 = float(chi2_text) if chi2_text else None
        for nuc in _children(nar, "Nuclide"):
            conf = _text(nuc, "NuclideIDConfidenceValue")
            act = _text(nuc, "NuclideActivityValue")
            nuclides.append(
                NuclideResult(
                    name=_text(nuc, "NuclideName", "") or "",
                    confidence_pct=float(conf) if conf else float("nan"),
                    category=_text(nuc, "NuclideCategoryDescription", "") or "",
                    identified=(_text(nuc, "NuclideIdentifiedIndicator", "true") or "true") in ("true", "1"),
                    activity_kbq=float(act) if act else None,
                )
            )
    alarms = []
    for alarm in _children(el, "RadAlarm"):
        t = _text(alarm, "RadAlarmDateTime")
        alarms.append(
            AlarmResult(
                category=_text(alarm, "RadAlarmCategoryCode", "Other") or "Other",
                description=_text(alarm, "RadAlarmDescription", "") or "",
                t_utc=parse_datetime_utc(t) if t else None,
            )
        )
    dose = _child(el, "DoseAnalysisResults")

    def _dose_value(name: str) -> float | None:
        if dose is None:
            return None
        v = _text(dose, name)
        return float(v) if v else None

    version = _child(el, "AnalysisAlgorithmVersion")
    start = _text(el, "AnalysisStartDateTime")
    return AnalysisRecord(
        algorithm_name=_text(el, "AnalysisAlgorithmName", "") or "",
        algorithm_version=(
            (_text(version, "AnalysisAlgorithmComponentVersion", "") or "") if version is not None else ""
        ),
        start_utc=parse_datetime_utc(start) if start else None,
        status=_text(el, "AnalysisResultStatusCode", "Success") or "Success",
        description=_text(el, "AnalysisResultDescription", "") or "",
        nuclides=tuple(nuclides),
        alarms=tuple(alarms),
        dose_rate_usv_h=_dose_value("AverageDoseRateValue"),
        dose_rate_uncertainty_usv_h=_dose_value("AverageDoseRateUncertaintyValue"),
        background_dose_rate_usv_h=_dose_value("BackgroundDoseRateValue"),
        reduced_chi_square=chi2,
    )


def _model_name(info: etree._Element | None) -> str:
    """The instrument model; the exact name from RadInstrumentDescription when the writer had to make
    RadInstrumentModelName schema-safe (see :mod:`agent.spectral_files.n42_names`)."""
    if info is None:
        return "unknown"
    model = _text(info, "RadInstrumentModelName", "unknown") or "unknown"
    description = _text(info, "RadInstrumentDescription")
    if description and description != model and schema_safe_name(description) == model:
        return description
    return model


def parse_n42(data: bytes, source: str = "<bytes>") -> SpectrumFile:
    """Parse N42.42-2012 (or -2006) XML bytes into a :class:`SpectrumFile`; a bad file raises
    :class:`SpectrumFileError` only (values that do not convert included)."""
    with malformed_values(source):
        return _parse_n42(data, source)


def _parse_n42(data: bytes, source: str) -> SpectrumFile:
    root = parse_xml(data, source)
    if _local(root) == "N42InstrumentData":
        from agent.spectral_files.n42_2006 import parse_n42_2006

        return parse_n42_2006(root, source)
    if _local(root) != "RadInstrumentData":
        raise SpectrumFileError(f"{source}: root element is {_local(root)!r}, not N42 RadInstrumentData")
    if etree.QName(root).namespace not in (N42_NS, None):
        raise SpectrumFileError(
            f"{source}: namespace {etree.QName(root).namespace!r} is not N42.42-2011/2012 ({N42_NS})"
        )

    info = _child(root, "RadInstrumentInformation")
    detectors = {d.get("id"): d for d in _children(root, "RadDetectorInformation")}
    first_det = next(iter(detectors.values()), None)
    instrument = InstrumentInfo(
        manufacturer=(_text(info, "RadInstrumentManufacturerName", "unknown") if info is not None else "unknown")
        or "unknown",
        model=_model_name(info),
        serial=_text(info, "RadInstrumentIdentifier") if info is not None else None,
        class_code=(_text(info, "RadInstrumentClassCode", "Other") if info is not None else "Other") or "Other",
        detector_kind=(_text(first_det, "RadDetectorKindCode", "Other") if first_det is not None else "Other")
        or "Other",
        detector_description=_text(first_det, "RadDetectorDescription") if first_det is not None else None,
        versions=tuple(
            (_text(v, "RadInstrumentComponentName", "") or "", _text(v, "RadInstrumentComponentVersion", "") or "")
            for v in (_children(info, "RadInstrumentVersion") if info is not None else [])
        ),
    )
    calibrations = {c.get("id"): c for c in _children(root, "EnergyCalibration")}

    measurements = []
    # DerivedData (sums, background-subtracted spectra the instrument computed) has RadMeasurement's
    # layout; kept, but flagged so foreground()/background() never add them to the raw spectra again.
    blocks = [(rm, False) for rm in _children(root, "RadMeasurement")]
    blocks += [(dd, True) for dd in _children(root, "DerivedData")]
    for sample, (rm, derived) in enumerate(blocks, start=1):
        mclass = _text(rm, "MeasurementClassCode", "NotSpecified") or "NotSpecified"
        start_text = _text(rm, "StartDateTime")
        start = parse_datetime_utc(start_text) if start_text else None
        real_text = _text(rm, "RealTimeDuration")
        real_s = parse_duration_s(real_text) if real_text else None
        dose_values = [
            float(v) for d in _children(rm, "DoseRate") if (v := _text(d, "DoseRateValue")) is not None
        ]
        remark = " ".join(r.text.strip() for r in _children(rm, "Remark") if r.text)
        for sp in _children(rm, "Spectrum"):
            cd = _child(sp, "ChannelData")
            if cd is None:
                raise SpectrumFileError(f"{source}: Spectrum {sp.get('id')!r} has no ChannelData")
            values = _numbers(cd.text)
            if (cd.get("compressionCode") or "None") == "CountedZeroes":
                values = expand_counted_zeroes(values, source)
            check_channels(values.size, source)
            if values.size == 0:
                raise SpectrumFileError(f"{source}: Spectrum {sp.get('id')!r} has empty ChannelData")
            check_counts(values, source, allow_negative=derived)  # derived data may be net (negative) counts
            live_text = _text(sp, "LiveTimeDuration")
            live_s = parse_duration_s(live_text) if live_text else real_s
            if live_s is None:
                raise SpectrumFileError(f"{source}: Spectrum {sp.get('id')!r} has no live or real time")
            cal_ref = sp.get("energyCalibrationReference")
            if cal_ref not in calibrations:
                raise SpectrumFileError(
                    f"{source}: Spectrum {sp.get('id')!r} refers to unknown calibration {cal_ref!r}"
                )
            det_el = detectors.get(sp.get("radDetectorInformationReference"))
            det_name = _text(det_el, "RadDetectorName") if det_el is not None else None
            model_name = det_name or instrument.model
            real = check_duration(real_s if real_s is not None else live_s, source, "RealTimeDuration")
            live_s = check_duration(live_s, source, "LiveTimeDuration")
            end = (start + timedelta(seconds=real)) if start is not None else datetime.now(UTC)
            reading = SpectrumReading(
                counts=np.rint(values).astype(np.int64) if np.all(values == np.rint(values)) else values,
                live_time_s=float(live_s),
                real_time_s=float(real),
                calibration=_calibration(calibrations[cal_ref], values.size),
                t_utc=end,
                t_mono_s=0.0,
                detector_model=model_name,
                dose_rate_usv_h=dose_values[0] if dose_values else None,
            )
            measurements.append(
                SpectrumMeasurement(
                    reading=reading,
                    measurement_class=mclass if mclass in MEASUREMENT_CLASSES else "NotSpecified",
                    start_utc=start,
                    remark=remark,
                    detector_name=det_name,
                    sample=sample,
                    derived=derived,
                )
            )
    analyses = tuple(_read_analysis(a) for a in _children(root, "AnalysisResults"))
    return SpectrumFile(tuple(measurements), instrument, analyses, source)


def read_n42(path: str | Path) -> SpectrumFile:
    return parse_n42(read_capped(path, str(path)), str(path))


# --------------------------------------------------------------------------- writer
def _el(parent: etree._Element, name: str, text: str | None = None, **attrs: str) -> etree._Element:
    e = etree.SubElement(parent, f"{{{N42_NS}}}{name}", {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        e.text = text
    return e


def _kind_code(model: str, given: str) -> str:
    if given in _DETECTOR_KINDS:
        return given
    low = model.lower()
    for kind in _DETECTOR_KINDS:
        if kind.lower() in low:
            return kind
    return "CsI" if "radiacode" in low else "Other"


def build_n42(doc: SpectrumFile, creator: str = "customs-edge") -> etree._ElementTree:
    """Build an N42.42-2012 document (valid against the NIST schema) from a :class:`SpectrumFile`."""
    if not doc.measurements:
        raise SpectrumFileError("cannot write an N42 file without a spectrum")
    root = etree.Element(f"{{{N42_NS}}}RadInstrumentData", nsmap={None: N42_NS, "xsi": _XSI_NS})
    root.set("n42DocUUID", str(uuid.uuid4()))
    _el(root, "RadInstrumentDataCreatorName", schema_safe_name(creator, "customs-edge"))

    ins = doc.instrument
    info = _el(root, "RadInstrumentInformation", id="rii-1")
    _el(info, "RadInstrumentManufacturerName", schema_safe_name(ins.manufacturer))
    if ins.serial:
        _el(info, "RadInstrumentIdentifier", schema_safe_name(ins.serial))
    model_name = schema_safe_name(ins.model)
    _el(info, "RadInstrumentModelName", model_name)
    if model_name != (ins.model or "unknown"):  # the exact name where the schema allows free text
        _el(info, "RadInstrumentDescription", ins.model)
    _el(info, "RadInstrumentClassCode", ins.class_code)
    for name, version in ins.versions or (("Software", "customs-edge"),):
        v = _el(info, "RadInstrumentVersion")
        _el(v, "RadInstrumentComponentName", schema_safe_name(name))
        _el(v, "RadInstrumentComponentVersion", schema_safe_name(version))

    # One RadDetectorInformation per distinct detector model.
    det_ids: dict[str, str] = {}
    for m in doc.measurements:
        model = m.detector_name or m.reading.detector_model or "unknown"
        if model in det_ids:
            continue
        det_id = f"det-{len(det_ids) + 1}"
        det_ids[model] = det_id
        det = _el(root, "RadDetectorInformation", id=det_id)
        _el(det, "RadDetectorName", model)
        _el(det, "RadDetectorCategoryCode", "Gamma")
        _el(det, "RadDetectorKindCode", _kind_code(model, ins.detector_kind))
        if ins.detector_description:
            _el(det, "RadDetectorDescription", ins.detector_description)

    cal_ids: dict[tuple[float, ...], str] = {}
    for m in doc.measurements:
        coeffs = file_coefficients(m.reading.calibration)
        if coeffs not in cal_ids:
            cal_ids[coeffs] = f"ec-{len(cal_ids) + 1}"
            ec = _el(root, "EnergyCalibration", id=cal_ids[coeffs])
            _el(ec, "CoefficientValues", " ".join(repr(c) for c in coeffs))

    rm_ids = []
    for i, m in enumerate(doc.measurements, start=1):
        r = m.reading
        rm_id = f"rm-{i}"
        rm_ids.append(rm_id)
        rm = _el(root, "RadMeasurement", id=rm_id)
        if m.remark:
            _el(rm, "Remark", m.remark)
        if m.measurement_class not in MEASUREMENT_CLASSES:
            raise SpectrumFileError(f"measurement class {m.measurement_class!r} not in {MEASUREMENT_CLASSES}")
        _el(rm, "MeasurementClassCode", m.measurement_class)
        start = m.start_utc or (r.t_utc - timedelta(seconds=r.real_time_s))
        _el(rm, "StartDateTime", utc_iso(start))
        _el(rm, "RealTimeDuration", format_duration(r.real_time_s))
        model = m.detector_name or r.detector_model or "unknown"
        sp = _el(
            rm,
            "Spectrum",
            id=f"{rm_id}-sp",
            energyCalibrationReference=cal_ids[file_coefficients(r.calibration)],
            radDetectorInformationReference=det_ids[model],
        )
        _el(sp, "LiveTimeDuration", format_duration(r.live_time_s))
        counts = np.asarray(r.counts)
        if counts.ndim != 1 or counts.size == 0 or np.any(counts < 0) or not np.all(np.isfinite(counts)):
            raise SpectrumFileError(f"measurement {i}: counts must be a non-empty 1-D array of finite values >= 0")
        _el(sp, "ChannelData", " ".join(compress_counted_zeroes(counts)), compressionCode="CountedZeroes")
        if r.dose_rate_usv_h is not None:
            dr = _el(rm, "DoseRate", id=f"{rm_id}-dr", radDetectorInformationReference=det_ids[model])
            _el(dr, "DoseRateValue", f"{max(r.dose_rate_usv_h, 0.0):.6g}")

    first_det = next(iter(det_ids.values()))
    for a in doc.analyses:
        ar = _el(root, "AnalysisResults", radMeasurementReferences=" ".join(rm_ids))
        if a.start_utc is not None:
            _el(ar, "AnalysisStartDateTime", utc_iso(a.start_utc))
        _el(ar, "AnalysisAlgorithmName", a.algorithm_name or "unknown")
        v = _el(ar, "AnalysisAlgorithmVersion")
        _el(v, "AnalysisAlgorithmComponentName", "identification")
        _el(v, "AnalysisAlgorithmComponentVersion", schema_safe_name(a.algorithm_version))
        _el(ar, "AnalysisResultStatusCode", a.status if a.status in ("Success", "Failure") else "Failure")
        if a.description:
            _el(ar, "AnalysisResultDescription", a.description)
        for alarm in a.alarms:
            al = _el(ar, "RadAlarm", radDetectorInformationReferences=first_det)
            if alarm.t_utc is not None:
                _el(al, "RadAlarmDateTime", utc_iso(alarm.t_utc))
            _el(al, "RadAlarmCategoryCode", alarm.category)
            if alarm.description:
                _el(al, "RadAlarmDescription", alarm.description)
        if a.nuclides or a.reduced_chi_square is not None:
            nar = _el(ar, "NuclideAnalysisResults")
            for n in a.nuclides:
                nuc = _el(nar, "Nuclide")
                _el(nuc, "NuclideIdentifiedIndicator", "true" if n.identified else "false")
                _el(nuc, "NuclideName", schema_safe_name(n.name))
                if n.activity_kbq is not None:
                    _el(nuc, "NuclideActivityValue", f"{max(n.activity_kbq, 0.0):.6g}")
                conf = n.confidence_pct if np.isfinite(n.confidence_pct) else 0.0
                _el(nuc, "NuclideIDConfidenceValue", f"{min(max(conf, 0.0), 100.0):.2f}")
                if n.category:
                    _el(nuc, "NuclideCategoryDescription", n.category)
            if a.reduced_chi_square is not None:
                _el(nar, "NuclideAnalysisReducedChiSquareValue", f"{a.reduced_chi_square:.6g}")
        if a.dose_rate_usv_h is not None:
            dar = _el(ar, "DoseAnalysisResults")
            _el(dar, "AverageDoseRateValue", f"{max(a.dose_rate_usv_h, 0.0):.6g}")
            if a.dose_rate_uncertainty_usv_h is not None:
                _el(dar, "AverageDoseRateUncertaintyValue", f"{max(a.dose_rate_uncertainty_usv_h, 0.0):.6g}")
            if a.background_dose_rate_usv_h is not None:
                _el(dar, "BackgroundDoseRateValue", f"{max(a.background_dose_rate_usv_h, 0.0):.6g}")
    return etree.ElementTree(root)


def to_n42_bytes(doc: SpectrumFile, creator: str = "customs-edge") -> bytes:
    return etree.tostring(build_n42(doc, creator), xml_declaration=True, encoding="UTF-8", pretty_print=True)


def write_n42(doc: SpectrumFile, path: str | Path, creator: str = "customs-edge") -> Path:
    p = Path(path)
    data = to_n42_bytes(doc, creator)
    try:
        p.write_bytes(data)
    except OSError as err:
        raise SpectrumFileError(f"{p}: cannot write: {err.strerror}") from err
    return p
