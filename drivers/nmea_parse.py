"""Pure NMEA 0183 input layers: bytes -> sentences -> counted reports.  No I/O, no threads.

Why a module of its own: the parsing layers are what a reviewer checks against the standard and
what other tools (log replay, ``cedge bench gps``, the emulator's round-trip tests, an offline
track importer) reuse without pulling in pyserial or a reader thread.  :mod:`drivers.nmea_gps`
composes them with a serial port.

* :class:`NmeaLineSplitter` - bytes -> candidate sentences.  Resynchronises on ``$`` (NMEA 0183
  sec. 5.3: every sentence starts with ``$`` and ends with ``<CR><LF>``), so garbage, truncated
  sentences and overlong lines cost only themselves.
* :class:`NmeaDecoder` - candidate sentence -> report (:mod:`drivers.nmea_sentences`), counting
  every line that is not used: rejected lines per reason (checksum, truncated ...), ignored
  sentences per kind (proprietary, non-standard, unused types such as GSV), unusable fields.
  Nothing is logged here: a receiver chattering proprietary sentences is normal, and the counts
  are what health reports and the benchmark show.
* The epoch merging lives in :mod:`drivers.nmea_epoch`, the rollover guard in
  :mod:`drivers.gps_week_rollover`; both are re-exported here.
"""

from __future__ import annotations

import re
from typing import Any

from drivers.gps_week_rollover import WeekRolloverGuard
from drivers.nmea_epoch import NmeaEpochAssembler
from drivers.nmea_sentences import (
    KNOT_M_S,
    MAX_LINE_BYTES,
    REJECT_REASONS,
    GgaReport,
    GllReport,
    GnsReport,
    Ignored,
    NmeaError,
    NmeaReport,
    RmcReport,
    ZdaReport,
    nmea_checksum,
    parse_line,
    parse_sentence,
)

__all__ = [
    "KNOT_M_S",
    "MAX_LINE_BYTES",
    "REJECT_REASONS",
    "GgaReport",
    "GllReport",
    "GnsReport",
    "Ignored",
    "NmeaDecoder",
    "NmeaEpochAssembler",
    "NmeaError",
    "NmeaLineSplitter",
    "NmeaReport",
    "RmcReport",
    "WeekRolloverGuard",
    "ZdaReport",
    "nmea_checksum",
    "parse_line",
    "parse_sentence",
]

_END_RE = re.compile(rb"[\r\n$]")
MAX_IGNORE_KINDS = 64  # distinct ignore reasons kept; more are counted under "other"


# --------------------------------------------------------------------------- line splitter
class NmeaLineSplitter:
    """Feed raw bytes as they arrive, get back complete candidate sentences (``$`` ... without CR/LF).

    Why not ``readline()``: a receiver that powers up mid-sentence, a UART framing error or a
    USB buffer overrun leaves half sentences and binary junk in the stream.  Resynchronising on
    ``$`` means one bad sentence never swallows the next good one, and nothing unbounded is kept.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        self._discarding = False  # inside an overlong line: drop until the next terminator or '$'
        self.garbage_bytes = 0  # bytes outside any sentence (CR/LF between sentences not counted)
        self.truncated = 0  # sentences cut off by the start of the next one
        self.overlong_lines = 0

    def reset(self) -> None:
        """Forget a partial line (after the port was reopened the stream starts afresh)."""
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        lines: list[bytes] = []
        while buf:
            if self._discarding:
                m = _END_RE.search(buf)
                if m is None:
                    buf.clear()
                    break
                del buf[: m.start()]
                self._discarding = False
            start = buf.find(b"$")
            if start < 0:
                self.garbage_bytes += _count_noise(buf)
                buf.clear()
                break
            if start:
                self.garbage_bytes += _count_noise(buf[:start])
                del buf[:start]
            m = _END_RE.search(buf, 1)
            if m is None:  # incomplete: keep for the next read unless it is already too long
                if len(buf) > self.max_line_bytes:
                    self.overlong_lines += 1
                    buf.clear()
                    self._discarding = True
                break
            end = m.start()
            if buf[end : end + 1] == b"$":
                self.truncated += 1
                del buf[:end]
                continue
            line = bytes(buf[:end])
            del buf[: end + 1]
            if len(line) > self.max_line_bytes:
                self.overlong_lines += 1
                continue
            lines.append(line)
        return lines


def _count_noise(chunk: bytes | bytearray) -> int:
    """Bytes outside sentences that are not just line terminators."""
    return len(chunk) - chunk.count(b"\r") - chunk.count(b"\n")


# --------------------------------------------------------------------------- decoder
class NmeaDecoder:
    """Candidate sentence -> report or None, with every unused line counted by reason.

    ``rejected`` counts lines thrown away (:data:`~drivers.nmea_sentences.REJECT_REASONS`),
    ``ignored`` well-formed sentences we do not use (``proprietary``, ``non_standard`` or the
    formatter such as ``GSV``), ``field_errors`` sentences kept with an unusable field (per field
    name), ``unchecked`` sentences accepted without a checksum.  All dicts are bounded.
    """

    def __init__(self) -> None:
        self.sentences_ok = 0  # used or ignored (well-formed)
        self.unchecked = 0
        self.rejected: dict[str, int] = {}
        self.ignored: dict[str, int] = {}
        self.field_errors: dict[str, int] = {}

    def decode(self, line: bytes | bytearray | str) -> NmeaReport | None:
        """The report of a used sentence; None for an ignored or rejected one (counted)."""
        return self.classify(line)[0]

    def classify(self, line: bytes | bytearray | str) -> tuple[NmeaReport | None, NmeaError | None]:
        """(report, None) for a used sentence, (None, None) for an ignored one, (None, error) for
        a rejected one - each counted.  Never raises."""
        try:
            out = parse_line(line)
        except NmeaError as err:
            self.rejected[err.kind] = self.rejected.get(err.kind, 0) + 1
            return None, err
        self.sentences_ok += 1
        if (b"*" if isinstance(line, bytes | bytearray) else "*") not in line:
            self.unchecked += 1
        if isinstance(out, Ignored):
            key = out.reason if (out.reason in self.ignored or len(self.ignored) < MAX_IGNORE_KINDS) else "other"
            self.ignored[key] = self.ignored.get(key, 0) + 1
            return None, None
        for name in out.field_errors:
            self.field_errors[name] = self.field_errors.get(name, 0) + 1
        return out, None

    def counts(self) -> dict[str, Any]:
        return {
            "sentences_ok": self.sentences_ok,
            "unchecked_sentences": self.unchecked,
            "rejected_lines": dict(self.rejected),
            "ignored_sentences": dict(self.ignored),
            "field_errors": dict(self.field_errors),
        }
