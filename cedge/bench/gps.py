"""``cedge bench gps``: real receiver captures through the NMEA driver, against gpsd's decoding.

Every capture in the captures directory (default ``tests/data/gps``: receivers from u-blox,
SiRF, MediaTek, Garmin, Trimble, Septentrio, Hemisphere, Quectel, Magellan, SkyTraq, Telit ...,
taken from gpsd's regression suite; see the README there) comes with reference fixes
(``<capture>.fixes.json``): gpsd 3.22's decoding of the same bytes, one record per epoch
(:mod:`cedge.bench.gps_reference`), or for the cases written from the NMEA 0183 sentence
definitions, the fixes the standard implies.

Each capture is replayed twice:

* through the parsing layers (:class:`drivers.nmea_parse.NmeaLineSplitter` ->
  :class:`~drivers.nmea_parse.NmeaDecoder` -> :class:`drivers.nmea_epoch.NmeaEpochAssembler`),
  as a log importer would;
* through the device as a receiver talks to it: written into a pseudo-terminal, read by
  :class:`drivers.nmea_gps.NmeaGpsReceiver` with pyserial and its reader thread, fixes collected
  with a listener (``--pty``, default on).

Matching.  A reference fix is an epoch gpsd reports with mode 2 or 3 and a time, except status 5
(dead reckoning), 7 (time only) and 8 (simulator), which are not measured positions and are
counted apart.  It is matched when the driver's last fix for the same UTC time of day (to the
millisecond) is valid and within :data:`POSITION_TOLERANCE_DEG` in latitude and longitude.  Time
of day, not the full date, because gpsd 3.22 moves every date before 2017 forward by 1024 weeks
(its week-rollover heuristic, timebase.c), so old captures carry dates up to 2036 in the reference;
dates are compared modulo 1024 weeks and reported apart (``dates_agree_share``).  The tolerance,
1e-6 degree (0.11 m of latitude), is below one unit of the coarsest position resolution in the
captures (0.0001 minute = 1.7e-6 degree) and far above rounding (gpsd prints 9 decimals): a match
means the same sentence's coordinates were decoded, not merely a nearby point.

``fixes_false``: epochs where the driver reports a valid fix and gpsd reported the epoch without
one (or in simulator / dead-reckoning status) - the direction that puts wrong positions on
measurements.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.hal.interfaces import Clock, DeviceContext, GnssFix
from drivers.gps_week_rollover import GPS_WEEK_ROLLOVER, WeekRolloverGuard
from drivers.nmea_parse import NmeaDecoder, NmeaEpochAssembler, NmeaLineSplitter

DEFAULT_CAPTURES = Path(__file__).resolve().parents[2] / "tests" / "data" / "gps"
POSITION_TOLERANCE_DEG = 1e-6
TARGET_SHARE = 0.99
EXCLUDED_STATUS = {5: "dead_reckoning", 7: "time_only", 8: "simulator"}
PTY_CHUNK_BYTES = 256
PTY_TIMEOUT_S = 60.0


@dataclass
class Capture:
    name: str
    path: Path
    epochs: list[dict[str, Any]]
    recorded: date | None
    meta: dict[str, Any] = field(default_factory=dict)

    def data(self) -> bytes:
        """The capture's sentences; gpsfake comment lines (``#``) are not receiver output."""
        raw = self.path.read_bytes()
        return b"".join(line for line in raw.splitlines(keepends=True) if not line.startswith(b"#"))


def load_captures(directory: Path) -> list[Capture]:
    """Every ``*.fixes.json`` with its capture file, sorted by name."""
    if not directory.is_dir():
        raise NotADirectoryError(f"captures directory {directory} does not exist")
    out = []
    for ref_path in sorted(directory.glob("*.fixes.json")):
        ref = json.loads(ref_path.read_text(encoding="utf-8"))
        recorded = ref.get("recorded_utc_date")
        out.append(Capture(
            name=ref_path.name.removesuffix(".fixes.json"),
            path=directory / ref["capture"],
            epochs=list(ref["epochs"]),
            recorded=date.fromisoformat(recorded) if recorded else None,
            meta={k: ref.get(k) for k in ("receiver", "source", "reference", "dates_exact")},
        ))
    if not out:
        raise FileNotFoundError(f"no *.fixes.json captures in {directory}")
    return out


def _recording_clock(capture: Capture) -> datetime:
    """What a unit's clock read while recording: noon of the capture's date (2000-01-01 when the
    capture does not say).  Deterministic: the bench does not depend on today's date."""
    day = capture.recorded or date(2000, 1, 1)
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)


def _guard(capture: Capture) -> WeekRolloverGuard:
    now = _recording_clock(capture)
    return WeekRolloverGuard(clock=lambda: now)


# --------------------------------------------------------------------------- replays
def replay_parser(capture: Capture) -> tuple[list[GnssFix], NmeaDecoder]:
    """Bytes -> splitter -> decoder -> epoch assembler, as an offline importer would."""
    splitter, decoder = NmeaLineSplitter(), NmeaDecoder()
    assembler = NmeaEpochAssembler(_guard(capture))
    fixes: list[GnssFix] = []
    t = 0.0
    for line in splitter.feed(capture.data() + b"\r\n"):
        t += 0.01
        report = decoder.decode(line)
        if report is not None:
            fixes.extend(assembler.feed(report, t))
    last = assembler.flush(t)
    if last is not None:
        fixes.append(last)
    return fixes, decoder


class _ReplayClock(Clock):
    """Real monotonic time, UTC pinned to the capture's recording date (for the rollover guard)."""

    def __init__(self, utc: datetime) -> None:
        self._utc = utc

    def monotonic_s(self) -> float:
        return time.monotonic()

    def utc_now(self) -> datetime:
        return self._utc

    def sleep(self, duration_s: float) -> None:
        time.sleep(duration_s)


def replay_pty(capture: Capture, timeout_s: float = PTY_TIMEOUT_S) -> tuple[list[GnssFix], dict[str, Any]]:
    """Write the capture into a pseudo-terminal read by :class:`NmeaGpsReceiver`; its fixes.

    The driver opens the pty's slave path with pyserial like a USB-UART; the bench writes in
    small chunks from another thread (a receiver's bytes arrive in arbitrary pieces).  Done when
    every byte was read and the last epoch was flushed by the driver's quiet-line timeout.
    """
    from drivers.nmea_gps import NmeaGpsReceiver

    data = capture.data() + b"\r\n"
    master, slave = os.openpty()
    try:
        import tty

        tty.setraw(slave)  # no echo, no line discipline: bytes as a UART delivers them
        clock = _ReplayClock(_recording_clock(capture))
        fixes: list[GnssFix] = []
        lock = threading.Lock()

        def collect(fix: GnssFix) -> None:
            with lock:
                fixes.append(fix)

        dev = NmeaGpsReceiver(os.ttyname(slave), baudrate=115200, context=DeviceContext("bench", clock=clock),
                              stale_after_s=3600.0, exclusive=False, epoch_flush_s=0.3)
        dev.add_fix_listener(collect)
        with dev:
            def write() -> None:
                for i in range(0, len(data), PTY_CHUNK_BYTES):
                    os.write(master, data[i : i + PTY_CHUNK_BYTES])

            writer = threading.Thread(target=write, name="bench-gps-writer", daemon=True)
            writer.start()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                stats = dev.stats()
                if stats["bytes_read"] >= len(data) and not stats["epoch_pending"]:
                    break
                time.sleep(0.02)
            writer.join(timeout=1.0)
            stats = dev.stats()
        with lock:
            return list(fixes), stats
    finally:
        os.close(master)
        os.close(slave)


# --------------------------------------------------------------------------- matching
def _tod_ms(t: datetime) -> int:
    return round((t.hour * 3600 + t.minute * 60 + t.second) * 1000 + t.microsecond / 1000)


def _ref_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def match(epochs: list[dict[str, Any]], fixes: list[GnssFix], dates_exact: bool = False) -> dict[str, Any]:
    """Score a replay's fixes against a capture's reference epochs (see the module docstring).

    ``dates_exact``: the reference dates are true dates (cases written from the standard), so
    dates must be equal, not only equal modulo 1024 weeks.
    """
    ours: dict[int, GnssFix] = {}
    for fix in fixes:
        if fix.t_utc is not None:
            ours[_tod_ms(fix.t_utc)] = fix  # last fix of the epoch
    n_ref = n_matched = n_false = n_dates = n_dates_ok = 0
    excluded: Counter[str] = Counter()
    misses: list[dict[str, Any]] = []
    for ep in epochs:
        ref_t = _ref_time(ep["time"])
        fix = ours.get(_tod_ms(ref_t))
        is_fix = ep["mode"] >= 2 and ep.get("status") not in EXCLUDED_STATUS
        if ep["mode"] >= 2 and not is_fix:
            excluded[EXCLUDED_STATUS[ep["status"]]] += 1
        if not is_fix:
            if fix is not None and fix.valid:
                n_false += 1
                misses.append({"time": ep["time"], "why": "driver reports a fix, gpsd does not",
                               "driver": [fix.lat_deg, fix.lon_deg, fix.quality.name]})
            continue
        n_ref += 1
        ok = (fix is not None and fix.valid and "lat" in ep and "lon" in ep
              and abs(fix.lat_deg - ep["lat"]) <= POSITION_TOLERANCE_DEG
              and abs(fix.lon_deg - ep["lon"]) <= POSITION_TOLERANCE_DEG)
        if ok:
            n_matched += 1
            assert fix is not None and fix.t_utc is not None
            n_dates += 1
            delta = fix.t_utc - ref_t
            n_dates_ok += delta == timedelta(0) if dates_exact else delta % GPS_WEEK_ROLLOVER == timedelta(0)
        elif len(misses) < 5:
            misses.append({"time": ep["time"], "reference": [ep.get("lat"), ep.get("lon")],
                           "driver": None if fix is None else [fix.lat_deg, fix.lon_deg, fix.quality.name]})
    return {"fixes_reference": n_ref, "fixes_matched": n_matched, "fixes_false": n_false,
            "dates_compared": n_dates, "dates_agree": n_dates_ok, "reference_excluded": dict(excluded),
            "misses": misses}


def _share(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _add(total: Counter[str], part: dict[str, int]) -> None:
    total.update(part)


# --------------------------------------------------------------------------- the bench
def run_bench(captures_dir: Path | None = None, pty: bool = True, pty_only: list[str] | None = None) -> dict[str, Any]:
    """Replay every capture (parser; and over a pty unless ``pty`` is False); one JSON-able dict.

    ``pty_only`` limits the pty replays to the named captures (the test replays one).
    """
    t0 = time.perf_counter()
    captures = load_captures(captures_dir or DEFAULT_CAPTURES)
    per: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    ignored: Counter[str] = Counter()
    field_errors: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    pty_totals: Counter[str] = Counter()
    pty_identical = 0
    for cap in captures:
        fixes, decoder = replay_parser(cap)
        exact = bool(cap.meta.get("dates_exact"))
        score = match(cap.epochs, fixes, exact)
        counts = decoder.counts()
        for key in ("fixes_reference", "fixes_matched", "fixes_false", "dates_compared", "dates_agree"):
            totals[key] += score[key]
        _add(rejected, counts["rejected_lines"])
        _add(ignored, counts["ignored_sentences"])
        _add(field_errors, counts["field_errors"])
        _add(excluded, score["reference_excluded"])
        row: dict[str, Any] = {
            "capture": cap.name,
            "receiver": (cap.meta.get("receiver") or {}).get("make"),
            "fixes_reference": score["fixes_reference"],
            "fixes_matched": score["fixes_matched"],
            "share": _share(score["fixes_matched"], score["fixes_reference"]),
            "fixes_false": score["fixes_false"],
            "fixes_valid_driver": sum(1 for f in fixes if f.valid),
            "rejected_lines": counts["rejected_lines"],
        }
        if score["misses"]:
            row["misses"] = score["misses"]
        if pty and (pty_only is None or cap.name in pty_only):
            pty_fixes, _stats = replay_pty(cap)
            pscore = match(cap.epochs, pty_fixes, exact)
            for key in ("fixes_reference", "fixes_matched", "fixes_false"):
                pty_totals[key] += pscore[key]
            pty_totals["captures"] += 1
            same = _last_per_epoch(pty_fixes) == _last_per_epoch(fixes)
            pty_identical += same
            row["pty_share"] = _share(pscore["fixes_matched"], pscore["fixes_reference"])
            row["pty_identical_to_parser"] = same
        per.append(row)
    share = _share(totals["fixes_matched"], totals["fixes_reference"])
    result: dict[str, Any] = {
        "bench": "gps",
        "captures": len(captures),
        "receiver_makes": sorted({r["receiver"] for r in per if r["receiver"]}),
        "fixes_reference": totals["fixes_reference"],
        "fixes_matched": totals["fixes_matched"],
        "fixes_matched_share": share,
        "target_share": TARGET_SHARE,
        "meets_target": share is not None and share >= TARGET_SHARE,
        "fixes_false": totals["fixes_false"],
        "reference_excluded": dict(excluded),
        "dates_agree_share": _share(totals["dates_agree"], totals["dates_compared"]),
        "rejected_lines": dict(sorted(rejected.items())),
        "ignored_sentences": dict(sorted(ignored.items())),
        "field_errors": dict(sorted(field_errors.items())),
        "position_tolerance_deg": POSITION_TOLERANCE_DEG,
        "pty": None if not pty else {
            "captures": pty_totals["captures"],
            "fixes_reference": pty_totals["fixes_reference"],
            "fixes_matched": pty_totals["fixes_matched"],
            "fixes_matched_share": _share(pty_totals["fixes_matched"], pty_totals["fixes_reference"]),
            "fixes_false": pty_totals["fixes_false"],
            "identical_to_parser_replay": pty_identical,
        },
        "per_capture": per,
        "seconds_total": round(time.perf_counter() - t0, 2),
    }
    return result


def _last_per_epoch(fixes: list[GnssFix]) -> dict[Any, tuple[Any, ...]]:
    """The fixes a replay ends with, per epoch, without arrival times (for pty vs parser)."""
    out: dict[Any, tuple[Any, ...]] = {}
    for f in fixes:
        key = f.t_utc if f.t_utc is not None else None
        if key is None:
            continue
        out[key] = (f.lat_deg, f.lon_deg, f.alt_m, f.quality, f.num_satellites, f.hdop, f.speed_m_s, f.course_deg)
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable lines for the terminal (the JSON has everything)."""
    lines = [
        f"captures: {result['captures']} ({', '.join(result['receiver_makes'])})",
        f"fixes matched: {result['fixes_matched']} / {result['fixes_reference']} = "
        f"{result['fixes_matched_share']} (target >= {result['target_share']})",
        f"false fixes: {result['fixes_false']}; reference epochs excluded: {result['reference_excluded']}",
        f"dates agree (mod 1024 weeks): {result['dates_agree_share']}",
        f"rejected lines: {result['rejected_lines']}",
    ]
    if result["pty"]:
        p = result["pty"]
        lines.append(f"over a pty: {p['fixes_matched']} / {p['fixes_reference']} = {p['fixes_matched_share']} "
                     f"({p['identical_to_parser_replay']} of {p['captures']} captures identical to the parser replay)")
    for row in result["per_capture"]:
        if row["share"] is not None and row["share"] < 1.0 or row["fixes_false"]:
            lines.append(f"  {row['capture']}: {row['fixes_matched']}/{row['fixes_reference']} "
                         f"false {row['fixes_false']}")
    return lines
