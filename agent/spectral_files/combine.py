"""Sum several spectra of one file into the one spectrum the analysis sees.

Why: a portal monitor writes one spectrum per gamma panel and per time slice, a handheld may
write several foreground acquisitions; identification wants one spectrum with all the counts.
The choice (documented in :meth:`SpectrumFile.foreground`): *sum* every raw (non-derived)
spectrum of the wanted role, all detectors and all time slices, rather than pick one panel,
because every panel saw the same item and the sum has the best statistics.

Times follow SpecUtils' ``sum_measurements``: live and real times add up over every summed
spectrum, detectors included, so counts / live time of the sum is the *mean rate of one
detector*, the rate a single-detector response model (``agent.spectral.detector``) expects.
Spectra on a different energy binning are rebinned onto the first one's channels by energy,
sharing each channel's counts in proportion to overlap (counts are conserved, but no longer
integers).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from agent.spectral_files.model import SpectrumFileError, SpectrumMeasurement


def rebin_counts(counts: np.ndarray, edges_kev: np.ndarray, new_edges_kev: np.ndarray) -> np.ndarray:
    """Counts on ``edges_kev`` (n+1) redistributed onto ``new_edges_kev`` (m+1), uniform within a channel."""
    cumulative = np.concatenate(([0.0], np.cumsum(np.asarray(counts, dtype=float))))
    if np.any(np.diff(edges_kev) <= 0):
        raise SpectrumFileError("energy calibration is not increasing over the channels; cannot rebin")
    at_new = np.interp(new_edges_kev, edges_kev, cumulative)
    return np.diff(at_new)


def sum_measurements(measurements: list[SpectrumMeasurement]) -> SpectrumMeasurement:
    """One measurement holding the sum of ``measurements`` (see the module docstring for the rules)."""
    if not measurements:
        raise SpectrumFileError("no spectrum to sum")
    if len(measurements) == 1:
        return measurements[0]
    first = measurements[0]
    ref = first.reading
    ref_edges = ref.calibration.edges_kev(ref.n_channels)
    total = np.zeros(ref.n_channels)
    exact = True
    for m in measurements:
        r = m.reading
        same = r.n_channels == ref.n_channels and r.calibration == ref.calibration
        if same:
            total += np.asarray(r.counts, dtype=float)
        else:
            exact = False
            total += rebin_counts(r.counts, r.calibration.edges_kev(r.n_channels), ref_edges)
    integer = exact and all(np.issubdtype(np.asarray(m.reading.counts).dtype, np.integer) for m in measurements)
    counts = np.rint(total).astype(np.int64) if integer else total
    starts = [m.start_utc for m in measurements if m.start_utc is not None]
    detectors = sorted({m.detector_name for m in measurements if m.detector_name})
    reading = replace(
        ref,
        counts=counts,
        live_time_s=float(sum(m.reading.live_time_s for m in measurements)),
        real_time_s=float(sum(m.reading.real_time_s for m in measurements)),
        t_utc=max(m.reading.t_utc for m in measurements),
        dose_rate_usv_h=None,
    )
    remark = f"sum of {len(measurements)} spectra" + (f" (detectors {', '.join(detectors)})" if detectors else "")
    return SpectrumMeasurement(
        reading=reading,
        measurement_class=first.measurement_class,
        start_utc=min(starts) if starts else None,
        remark=remark,
        detector_name="+".join(detectors) if len(detectors) > 1 else (detectors[0] if detectors else None),
        summed_from=len(measurements),
    )
