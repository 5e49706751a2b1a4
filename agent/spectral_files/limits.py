"""Size limits every spectrum reader enforces before it allocates.

Why: spectrum files come from the field, from USB sticks and e-mails. A hostile or broken file
must cost a clear error, not the unit's memory (issue 14, row 9: a 1.7 kB N42 file that expanded
to 10^8 channels took 6.4 GB). Real instruments have at most 16k channels (HPGe: 8k-16k; NaI,
CsI, LaBr3: 256-4k); 65,536 leaves room for any of them.
"""

from __future__ import annotations

from agent.spectral_files.model import SpectrumFileError

MAX_CHANNELS = 65_536
MAX_FILE_BYTES = 64 * 1024 * 1024  # a 64 MB spectrum file is already a long list-mode-like log


def check_channels(n_channels: float, source: str) -> None:
    """Raise a clear error when a spectrum claims more channels than any instrument has."""
    if n_channels > MAX_CHANNELS:
        raise SpectrumFileError(
            f"{source}: spectrum has {n_channels:.0f} channels, more than the {MAX_CHANNELS} any instrument has")
