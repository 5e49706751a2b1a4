"""A GNSS receiver that speaks real NMEA 0183 bytes on a pseudo-terminal.

Why a pty and not a mock: the driver under test (:mod:`drivers.nmea_gps`) then runs exactly as on
a vehicle - pyserial opens a tty path, a reader thread blocks in ``read``, bytes arrive in
arbitrary chunks - and every fault a real receiver shows on a flaky USB-UART link can be
injected at the byte level: line noise, sentences cut short, corrupted checksums, fix loss,
silence, and the port vanishing (USB re-enumeration) and coming back under a stable symlink
(what a udev rule gives ``/dev/gps0``).

The output mimics a u-blox receiver at its default configuration (u-blox M8 Receiver
Description UBX-13003221, sec. 31.2): per epoch RMC, VTG, GGA, GSA in that order, NMEA 2.3
fields (RMC with mode indicator), ``hhmmss.ss`` times, ``ddmm.mmmmm`` coordinates, and on fix
loss empty position fields with RMC status ``V`` / mode ``N`` and GGA quality 0 while time and
date keep coming from the receiver's RTC.  Sentences are rendered with pynmea2, whose
``render()`` is the exact inverse of the ``parse()`` the driver uses, so checksums and framing
come from the same table.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pynmea2

from agent.geo import LocalFrame
from agent.hal.interfaces import FixQuality
from hal_sim.pty_port import PtyEmulator, serve_until_stopped

log = logging.getLogger(__name__)

KNOT_M_S = 1852.0 / 3600.0  # international knot in m/s (exact)

# (lat_deg, lon_deg, alt_m above MSL, speed_m_s, course_deg, fix quality 0..8)
PositionSample = tuple[float, float, float, float, float, int]
PositionSource = Callable[[float], PositionSample]

# GGA quality -> RMC/VTG mode indicator (NMEA 2.3)
_MODE_FOR_QUALITY = {1: "A", 2: "D", 3: "P", 4: "R", 5: "F", 6: "E", 7: "M", 8: "S"}


# --------------------------------------------------------------------------- position sources
def stationary(
    lat_deg: float = 48.1173, lon_deg: float = 11.516666, alt_m: float = 545.4, quality: int = 1
) -> PositionSource:
    """A receiver standing still (default: the classic GGA example position near Munich)."""

    def source(t_s: float) -> PositionSample:
        return (lat_deg, lon_deg, alt_m, 0.0, 0.0, quality)

    return source


def route_source(
    points: Sequence[tuple[float, float]], speed_m_s: float, alt_m: float = 0.0, loop: bool = True
) -> PositionSource:
    """Drive along a polyline of (lat, lon) points at constant speed.

    Distances are walked in the local ENU tangent plane of the first point (:class:`LocalFrame`),
    which is exact to millimetres over yard- and town-scale routes; course is the ENU heading.
    At the end the vehicle either turns back to the start (``loop``) or stops there.
    """
    if len(points) < 2:
        raise ValueError(f"route needs at least 2 points, got {len(points)}")
    if speed_m_s < 0:
        raise ValueError(f"speed_m_s must be >= 0, got {speed_m_s}")
    frame = LocalFrame(points[0][0], points[0][1], alt_m)
    enu = [frame.to_enu(lat, lon, alt_m)[:2] for lat, lon in points]
    if loop:
        enu.append(enu[0])
    legs = [(a, b, math.hypot(b[0] - a[0], b[1] - a[1])) for a, b in zip(enu[:-1], enu[1:], strict=True)]
    total_m = sum(length for *_, length in legs)
    if total_m <= 0:
        raise ValueError("route has zero length")

    def source(t_s: float) -> PositionSample:
        s = speed_m_s * max(t_s, 0.0)
        moving = speed_m_s > 0
        if loop:
            s %= total_m
        elif s >= total_m:
            s, moving = total_m, False
        for i, (a, b, length) in enumerate(legs):
            if s <= length or i == len(legs) - 1:
                f = s / length if length > 0 else 0.0
                x, y = a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])
                course = math.degrees(math.atan2(b[0] - a[0], b[1] - a[1])) % 360.0
                lat, lon, _ = frame.to_geodetic(x, y, 0.0)
                return (lat, lon, alt_m, speed_m_s if moving else 0.0, course, 1)
            s -= length
        raise AssertionError("unreachable")  # pragma: no cover

    return source


# --------------------------------------------------------------------------- sentence rendering
def _dm(value_deg: float, deg_digits: int) -> str:
    """Signed degrees -> d(d)dmm.mmmmm (u-blox high-precision-off format, 5 decimals of minutes)."""
    total_min = round(abs(value_deg) * 60.0, 5)
    deg = int(total_min // 60)
    minutes = total_min - deg * 60
    return f"{deg:0{deg_digits}d}{minutes:08.5f}"


def _hms(t: datetime) -> str:
    return f"{t:%H%M%S}.{t.microsecond // 10_000:02d}"


def render_gga(
    talker: str, t_utc: datetime, lat_deg: float | None, lon_deg: float | None, alt_m: float | None,
    quality: int, num_satellites: int, hdop: float | None, geoid_sep_m: float = 47.0,
) -> str:
    if quality == 0 or lat_deg is None or lon_deg is None:
        data = [_hms(t_utc), "", "", "", "", "0", f"{num_satellites:02d}", "99.99", "", "", "", "", "", ""]
    else:
        data = [
            _hms(t_utc), _dm(lat_deg, 2), "N" if lat_deg >= 0 else "S", _dm(lon_deg, 3),
            "E" if lon_deg >= 0 else "W", str(quality), f"{num_satellites:02d}",
            "" if hdop is None else f"{hdop:.2f}", "" if alt_m is None else f"{alt_m:.1f}", "M",
            f"{geoid_sep_m:.1f}", "M", "", "",
        ]
    return pynmea2.GGA(talker, "GGA", data).render(newline=True)


def render_rmc(
    talker: str, t_utc: datetime, lat_deg: float | None, lon_deg: float | None,
    speed_m_s: float | None, course_deg: float | None, quality: int,
) -> str:
    date = f"{t_utc:%d%m%y}"
    if quality == 0 or lat_deg is None or lon_deg is None:
        data = [_hms(t_utc), "V", "", "", "", "", "", "", date, "", "", "N"]
    else:
        data = [
            _hms(t_utc), "A", _dm(lat_deg, 2), "N" if lat_deg >= 0 else "S", _dm(lon_deg, 3),
            "E" if lon_deg >= 0 else "W", "" if speed_m_s is None else f"{speed_m_s / KNOT_M_S:.3f}",
            "" if course_deg is None else f"{course_deg % 360.0:.2f}", date, "", "",
            _MODE_FOR_QUALITY.get(quality, "A"),
        ]
    return pynmea2.RMC(talker, "RMC", data).render(newline=True)


def render_vtg(talker: str, speed_m_s: float | None, course_deg: float | None, quality: int) -> str:
    if quality == 0 or speed_m_s is None:
        data = ["", "T", "", "M", "", "N", "", "K", "N"]
    else:
        data = [
            "" if course_deg is None else f"{course_deg % 360.0:.2f}", "T", "", "M",
            f"{speed_m_s / KNOT_M_S:.3f}", "N", f"{speed_m_s * 3.6:.3f}", "K",
            _MODE_FOR_QUALITY.get(quality, "A"),
        ]
    return pynmea2.VTG(talker, "VTG", data).render(newline=True)


def render_gsa(talker: str, quality: int, sv_ids: Sequence[int], hdop: float) -> str:
    ids = [f"{sv:02d}" for sv in sv_ids[:12]] + [""] * (12 - min(len(sv_ids), 12))
    if quality == 0:
        data = ["A", "1", *[""] * 12, "99.99", "99.99", "99.99"]
    else:
        data = ["A", "3", *ids, f"{hdop * 1.6:.2f}", f"{hdop:.2f}", f"{hdop * 1.3:.2f}"]
    return pynmea2.GSA(talker, "GSA", data).render(newline=True)


# --------------------------------------------------------------------------- emulator
@dataclass(frozen=True, slots=True)
class EmittedEpoch:
    """What the emulator told the world at one epoch: the ground truth tests compare against."""

    t_s: float  # seconds since start_utc, quantised to the 10 ms of hhmmss.ss
    t_utc: datetime
    lat_deg: float
    lon_deg: float
    alt_m: float
    speed_m_s: float
    course_deg: float
    quality: FixQuality


class NmeaEmulator(PtyEmulator):
    """Simulated NMEA 0183 receiver on a pty.  ``port`` is the path a driver opens.

    ``link_path`` makes ``port`` a symlink to the current pty slave; :meth:`disconnect` /
    :meth:`reconnect` then model a USB receiver unplugged and replugged (new pty, same path).
    Writes are non-blocking: like a real UART, a receiver nobody listens to drops bytes instead
    of stalling (``stats()['bytes_dropped']``).  :meth:`pause` is a receiver reset or a loose
    cable: no bytes at all, epochs pass silently (``stats()['epochs_silent']``).
    """

    thread_name = "nmea-emulator"
    log_name = "nmea emulator"

    def __init__(
        self,
        source: PositionSource | None = None,
        rate_hz: float = 1.0,
        talker: str = "GP",
        noise_sentences: bool = False,
        link_path: str | Path | None = None,
        start_utc: datetime | None = None,
        num_satellites: int = 9,
        hdop: float = 0.9,
        geoid_sep_m: float = 47.0,
    ) -> None:
        if not 0 < rate_hz <= 50:
            raise ValueError(f"rate_hz must be in (0, 50], got {rate_hz}")
        if len(talker) != 2 or not talker.isalpha():
            raise ValueError(f"talker must be two letters (GP, GN, GL ...), got {talker!r}")
        super().__init__(link_path, counters=(
            "epochs", "epochs_silent", "bytes_written", "bytes_dropped", "injected_garbage_bytes",
            "injected_truncated", "injected_bad_checksum",
        ))
        self.source = source or stationary()
        self.rate_hz = float(rate_hz)
        self.talker = talker.upper()
        self.noise_sentences = noise_sentences
        now = datetime.now(UTC)
        self.start_utc = (start_utc or now.replace(microsecond=0)).astimezone(UTC)
        self.num_satellites = num_satellites
        self.hdop = hdop
        self.geoid_sep_m = geoid_sep_m
        self._history: deque[EmittedEpoch] = deque(maxlen=4096)
        self._history_lock = threading.Lock()
        self._fix_lost = False
        self._t0_mono: float | None = None
        self._next_epoch = 0
        self._open_pty()

    # -- fault injection (line noise and silence: see PtyEmulator)
    def inject_truncated(self, with_newline: bool = False) -> None:
        """The first half of a GGA, then (by default) straight on with the next sentence, as after
        a UART overrun; ``with_newline`` ends the stub with CRLF instead (no checksum survives)."""
        sentence = self._render_epoch_gga(self._current_utc())
        stub = sentence[: max(8, sentence.index("*") // 2)]
        self._counts["injected_truncated"] += 1
        self._write((stub + ("\r\n" if with_newline else "")).encode("ascii"))

    def inject_bad_checksum(self) -> None:
        """A complete GGA whose checksum does not match (one bit flipped in transit)."""
        sentence = self._render_epoch_gga(self._current_utc()).rstrip("\r\n")
        star = sentence.rindex("*")
        bad = int(sentence[star + 1 :], 16) ^ 0x5A
        self._counts["injected_bad_checksum"] += 1
        self._write(f"{sentence[: star + 1]}{bad:02X}\r\n".encode("ascii"))

    def set_fix_lost(self, lost: bool) -> None:
        """Tunnel / urban canyon: the receiver keeps talking but has no position."""
        self._fix_lost = bool(lost)

    def emitted(self) -> list[EmittedEpoch]:
        """Snapshot of the last (up to 4096) epochs sent, oldest first: the ground truth."""
        with self._history_lock:
            return list(self._history)

    def truth_at(self, t_utc: datetime, tolerance_s: float = 0.005) -> EmittedEpoch | None:
        """The epoch the emulator sent with this UTC time, if still among :meth:`emitted`."""
        for epoch in reversed(self.emitted()):
            if abs((epoch.t_utc - t_utc).total_seconds()) <= tolerance_s:
                return epoch
        return None

    # -- output
    def _current_utc(self) -> datetime:
        t0 = self._t0_mono
        return self._quantised_utc(0.0 if t0 is None else time.monotonic() - t0)

    def _quantised_utc(self, t_s: float) -> datetime:
        """UTC of an epoch, rounded to the 10 ms that ``hhmmss.ss`` can carry."""
        return self.start_utc + timedelta(milliseconds=10 * round(t_s * 100))

    def _sample(self, t_utc: datetime) -> EmittedEpoch:
        t_s = (t_utc - self.start_utc).total_seconds()
        lat, lon, alt, speed, course, qual = self.source(t_s)
        quality = FixQuality(0 if self._fix_lost else int(qual))
        return EmittedEpoch(t_s, t_utc, float(lat), float(lon), float(alt), float(speed),
                            float(course) % 360.0, quality)

    def _render_epoch_gga(self, t_utc: datetime) -> str:
        e = self._sample(t_utc)
        return render_gga(self.talker, t_utc, e.lat_deg, e.lon_deg, e.alt_m, int(e.quality),
                          self.num_satellites if e.quality else 0, self.hdop, self.geoid_sep_m)

    def _emit_epoch(self, t_utc: datetime) -> None:
        e = self._sample(t_utc)
        q = int(e.quality)
        sats = self.num_satellites if q else 0
        parts = [render_rmc(self.talker, t_utc, e.lat_deg, e.lon_deg, e.speed_m_s, e.course_deg, q)]
        if self.noise_sentences:
            parts.append(render_vtg(self.talker, e.speed_m_s, e.course_deg, q))
        parts.append(render_gga(self.talker, t_utc, e.lat_deg, e.lon_deg, e.alt_m, q, sats, self.hdop,
                                self.geoid_sep_m))
        if self.noise_sentences:
            parts.append(render_gsa(self.talker, q, [2, 5, 9, 12, 15, 18, 21, 25, 29][:sats], self.hdop))
        with self._history_lock:
            self._history.append(e)
        self._write("".join(parts).encode("ascii"))

    def _run(self) -> None:
        k = self._next_epoch  # a restarted emulator carries on where it stopped, as a receiver clock does
        t0 = self._t0_mono = time.monotonic() - k / self.rate_hz
        while not self._stop.is_set():
            t_s = k / self.rate_hz
            delay = t0 + t_s - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if self._paused():
                self._counts["epochs_silent"] += 1
            else:
                try:
                    self._emit_epoch(self._quantised_utc(t_s))
                    self._counts["epochs"] += 1
                except Exception:  # a broken position source must not kill the receiver thread
                    log.exception("nmea emulator: epoch at t=%.2f s failed", t_s)
            k += 1
            self._next_epoch = k


def serve_forever(emulator: NmeaEmulator, stop: threading.Event | None = None) -> None:
    """Run ``emulator`` until Ctrl-C (or ``stop`` is set), then close it.  For ``cedge sim gps``."""
    emulator.start()
    log.info("NMEA emulator on %s at %g Hz", emulator.port, emulator.rate_hz)
    serve_until_stopped(emulator, stop)


def run_emulator(
    route_points: Sequence[tuple[float, float]], speed_m_s: float = 8.0, rate_hz: float = 1.0,
    link_path: str | Path | None = None, alt_m: float = 0.0,
) -> None:
    """Drive a route and serve it as NMEA until Ctrl-C; prints the port to open."""
    emulator = NmeaEmulator(route_source(route_points, speed_m_s, alt_m), rate_hz=rate_hz,
                            noise_sentences=True, link_path=link_path)
    print(f"NMEA 0183 on {emulator.port} ({rate_hz:g} Hz); Ctrl-C to stop", flush=True)
    serve_forever(emulator)
