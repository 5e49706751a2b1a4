"""Fuzz targets for ``cedge bench fuzz``: one parser each, its documented error the only allowed exit.

Run as ``python -m cedge.bench.fuzz_targets TARGET [libFuzzer flags] CORPUS_DIR``: atheris
(Google's coverage-guided fuzzer for Python, a libFuzzer front end) instruments our modules as they
are imported, then mutates the corpus towards new coverage. libFuzzer ends the process when the
time is up or at the first crash, which is why every target runs in a process of its own.

A *crash* is any exception other than the parser's documented error: :class:`WireError` for the
wire schema, :class:`SpectrumFileError` for the N42 reader, :class:`NmeaError` for the NMEA parser.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from datetime import UTC, datetime

TARGETS = ("wire", "n42", "nmea")
_NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
_KINDS = ("birth", "death", "health", "measurement", "alarm", "task_event", "vitals")


def _target(name: str) -> Callable[[bytes], None]:
    """The one-input function for ``name``; our packages are imported here, instrumented by the caller."""
    if name == "wire":
        from agent.wire_schema import WireError, decode_command, decode_uplink, uplink_topic

        def wire(data: bytes) -> None:
            if not data:
                return
            selector, payload = data[0], data[1:]
            try:
                if selector == 255:
                    decode_command(payload)
                else:
                    decode_uplink(uplink_topic("mob-1", _KINDS[selector % len(_KINDS)]), payload, now_utc=_NOW)
            except WireError as err:
                if not err.reason:
                    raise AssertionError("WireError without a reason code") from err

        return wire
    if name == "n42":
        from agent.spectral_files import SpectrumFileError
        from agent.spectral_files.n42 import parse_n42

        def n42(data: bytes) -> None:
            with contextlib.suppress(SpectrumFileError):
                parse_n42(data, "fuzz.n42")

        return n42
    if name == "nmea":
        from drivers.nmea_parse import NmeaError, NmeaLineSplitter, parse_sentence

        def nmea(data: bytes) -> None:
            for line in NmeaLineSplitter().feed(data) or [data]:
                with contextlib.suppress(NmeaError):
                    parse_sentence(line)

        return nmea
    raise SystemExit(f"unknown fuzz target {name!r} (have: {', '.join(TARGETS)})")


def main() -> None:  # pragma: no cover - runs under atheris in a subprocess of `cedge bench fuzz`
    import atheris

    name = sys.argv[1]
    with atheris.instrument_imports(include=["agent", "drivers"]):
        one_input = _target(name)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    main()
