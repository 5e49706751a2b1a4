"""Size limits every spectrum reader enforces before it allocates.

Why: spectrum files come from the field, from USB sticks and e-mails. A hostile or broken file
must cost a clear error, not the unit's memory (issue 14, row 9: a 1.7 kB N42 file that expanded
to 10^8 channels took 6.4 GB). Real instruments have at most 16k channels (HPGe: 8k-16k; NaI,
CsI, LaBr3: 256-4k); 65,536 leaves room for any of them.

A limit breach raises :class:`SpectrumFileLimitError`, a :class:`SpectrumFileError` that
``read_spectrum_file`` never answers by trying another reader (SpecUtils would expand the same
bomb in C++, out of reach of any Python check).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from agent.spectral_files.model import SpectrumFileError

MAX_CHANNELS = 65_536
MAX_FILE_BYTES = 64 * 1024 * 1024  # a 64 MB spectrum file is already a long list-mode-like log
MAX_DURATION_S = 10 * 365.25 * 86400  # live/real time: ten years is longer than any measurement
MAX_CHANNEL_COUNT = 2.0**53  # counts in one channel: exact as a double, fits int64 (10^6 cps for 285 years)


class SpectrumFileLimitError(SpectrumFileError):
    """The file claims more than any instrument produces (channels, bytes): refused, not parsed further."""


def check_channels(n_channels: float, source: str) -> None:
    """Raise a clear error when a spectrum claims more channels than any instrument has."""
    if n_channels > MAX_CHANNELS:
        raise SpectrumFileLimitError(
            f"{source}: spectrum has {n_channels:.0f} channels, more than the {MAX_CHANNELS} any instrument has")


def check_file_size(n_bytes: int, source: str) -> None:
    """Raise a clear error for a file too large to be one spectrum file (checked before reading it)."""
    if n_bytes > MAX_FILE_BYTES:
        raise SpectrumFileLimitError(
            f"{source}: file is {n_bytes / 1e6:.0f} MB, more than the {MAX_FILE_BYTES // (1024 * 1024)} MB"
            " a spectrum file may have")


def counted_zeroes_runs(values: np.ndarray) -> np.ndarray:
    """Indices of the zeros that start a run in N42 'CountedZeroes' data (each is followed by its length)."""
    zero_at = np.flatnonzero(np.asarray(values) == 0)
    starts: list[int] = []
    skip_until = -1
    for i in zero_at:  # a zero's count is the next value; counts are never themselves run starts
        if i <= skip_until:
            continue
        starts.append(int(i))
        skip_until = i + 1
    return np.asarray(starts, dtype=int)


def counted_zeroes_length(values: np.ndarray, source: str) -> int:
    """Channels that CountedZeroes data expands to, computed without expanding it; checked against the limit."""
    values = np.asarray(values, dtype=float)
    starts = counted_zeroes_runs(values)
    if starts.size and starts[-1] + 1 >= values.size:
        raise SpectrumFileError(f"{source}: CountedZeroes data ends with a 0 and no count")
    runs = values[starts + 1] if starts.size else np.zeros(0)
    if np.any(runs < 0) or not np.all(np.isfinite(runs)) or np.any(runs != np.rint(runs)):
        raise SpectrumFileError(f"{source}: CountedZeroes run length is not a non-negative integer")
    total = values.size - 2 * starts.size + float(runs.sum())
    check_channels(total, source)
    return int(total)


def check_counts(values: np.ndarray, source: str, allow_negative: bool = False) -> None:
    """Channel contents must be finite, below 2^53, and non-negative unless the spectrum is derived (net)."""
    values = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(values)):
        raise SpectrumFileError(f"{source}: channel data holds non-finite values (NaN or Inf)")
    if np.any(np.abs(values) > MAX_CHANNEL_COUNT):
        raise SpectrumFileError(f"{source}: channel data holds a count above 2^53, more than any detector records")
    if not allow_negative and np.any(values < 0):
        raise SpectrumFileError(f"{source}: channel data holds negative counts")


def check_duration(seconds: float, source: str, what: str) -> float:
    """A live or real time: finite, >= 0 and at most ten years (so start + duration is a date)."""
    if not np.isfinite(seconds) or not 0 <= seconds <= MAX_DURATION_S:
        raise SpectrumFileError(f"{source}: {what} {seconds!r} s is not a duration in 0 .. 10 years")
    return float(seconds)


@contextlib.contextmanager
def malformed_values(source: str) -> Iterator[None]:
    """Turn a value that does not convert (text where a number belongs, a year 99999, an integer of
    5,000 digits) into a :class:`SpectrumFileError` naming the file: a reader's only failure mode
    for a bad file is that error, never a traceback. Errors raised by helpers that do not know the
    file (a bad xsd:duration, a bad date) get its name put in front."""
    try:
        yield
    except SpectrumFileError as err:
        if source in str(err):
            raise
        raise type(err)(f"{source}: {err}") from err
    except (ValueError, OverflowError, TypeError, IndexError, KeyError, ZeroDivisionError) as err:
        raise SpectrumFileError(f"{source}: malformed value ({type(err).__name__}: {str(err)[:200]})") from err


def read_capped(path: str | Path, source: str) -> bytes:
    """A whole spectrum file's bytes, refusing files over :data:`MAX_FILE_BYTES` before reading them."""
    p = Path(path)
    try:
        check_file_size(p.stat().st_size, source)
        with p.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise SpectrumFileError(f"{source}: cannot read: {err.strerror or err}") from err
    check_file_size(len(data), source)
    return data
