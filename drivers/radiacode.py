"""RadiaCode-10x/110 pocket spectrometer over USB (pyusb), speaking the device's binary protocol.

Protocol source (read, not guessed): the Python library ``cdump/radiacode`` (MIT):
``radiacode/radiacode.py`` (request framing, init sequence, ``read_request``), ``radiacode/types.py``
(``COMMAND``, ``VS``, ``VSFR`` ids), ``radiacode/transports/usb.py`` (USB ids, endpoints, read
loop), ``radiacode/decoders/spectrum.py`` (spectrum formats 0 and 1), ``radiacode/decoders/
databuf.py`` (``DATA_BUF`` records), ``radiacode/bytes_buffer.py`` (length-prefixed strings) and
``radiacode.rules`` (udev rule: 0483:f123, manufacturer "AngioScan").

Wire format, as that library implements it:

* USB 0483:f123, bulk OUT endpoint 0x01, bulk IN endpoint 0x81.  A request is
  ``<u32 length> <u16 command> <u8 0> <u8 0x80 + seq>`` + arguments, ``seq`` counting 0..31; the
  response is ``<u32 length>`` + the same 4-byte header echoed + payload, read in chunks of up to
  256 bytes until ``length`` bytes have arrived.  A header that does not echo the request (a late
  answer to an earlier, timed-out request) is how a lost exchange shows; the driver then drains the
  IN endpoint and retries once.
* Virtual strings (``RD_VIRT_STRING`` + VS id) answer ``<u32 retcode=1> <u32 length>`` + bytes; some
  firmware appends one extra NUL (the library's "HACK", reproduced here).
* ``VS.SPECTRUM``: ``<u32 duration_s> <f32 a0> <f32 a1> <f32 a2>`` + counts.  Format 0: one u32 per
  channel.  Format 1 (``SpecFormatVersion=1`` in the ``VS.CONFIGURATION`` text): groups of
  ``<u16: count << 4 | vlen>`` followed by ``count`` values - vlen 0: zero; 1: u8 absolute; 2, 3, 4,
  5: signed 8/16/24/32-bit difference to the previous channel.
* ``VS.DATA_BUF``: records ``<u8 seq> <u8 eid> <u8 gid> <i32 t (10 ms)>`` + group payload;
  RealTimeData (0, 0) carries ``<f32 count_rate> <f32 dose_rate> ...``; RareData (0, 3) the
  temperature as ``(u16 - 2000) / 100`` degC.

Dose-rate unit: the RealTimeData float times 1e4 is uSv/h - the library's ``narodmon.py`` example
publishes ``1e6 x dose_rate`` as uR/h (1 uSv = 100 uR) and other ports of the library use the same
1e4 factor to match the device display; it is the device's own estimate (the agent computes H*(10)
from the spectrum regardless).

Why difference cumulative spectra: the device accumulates one spectrum since its last reset and
reports its duration; reading it every ``interval_s`` and subtracting the previous read gives the
counts of that interval with nothing lost when a poll fails - the next good poll covers the gap
(its real time says so).  A spectrum whose duration or total went down was reset on the device
(button, app, power cycle): it becomes the new baseline and the driver waits one more interval.

Times: ``duration`` has 1 s resolution, so real time is the host-clock spacing of the two polls
(USB round trip ~ms).  The RadiaCode does not report dead time: ``live_time_s = real_time_s``;
at pocket-detector rates (< 10^4 cps, dead time of order microseconds) the error is < 1 %.

Detector models by serial-number prefix (RC-101/102/103: 10x10x10 mm CsI(Tl); RC-103G: GAGG(Ce)
of the same size; RC-110: larger CsI(Tl), about 3 cm3 by vendor figures, not verified here).  The
analysis catalogue holds one pocket entry, "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)"; all of
them map to it unless ``detector_model`` overrides, and ``describe()`` names the real crystal.

Assumed, not in the sources: the USB iSerialNumber string equals the device serial "RC-10x-xxxxxx"
(the library's examples pass that form as ``serial_number`` to ``usb.core.find``).
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import re
import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import numpy as np

from agent.hal.interfaces import (
    DeviceContext,
    DeviceDataError,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    EnergyCalibration,
    GammaSpectrometer,
    SensorState,
    SpectrumReading,
)

log = logging.getLogger(__name__)

USB_VID = 0x0483  # transports/usb.py, radiacode.rules
USB_PID = 0xF123
EP_OUT = 0x01
EP_IN = 0x81
READ_CHUNK = 256  # transports/usb.py reads up to 256 bytes per transfer
DOSE_RATE_TO_USV_H = 1.0e4  # RealTimeData.dose_rate x 1e4 = uSv/h (see module docstring)
MIN_FIRMWARE = (4, 8)  # radiacode.py: "Incompatible firmware version ..., >=4.8 required"
DEFAULT_DETECTOR_MODEL = "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)"


class COMMAND(IntEnum):
    """radiacode/types.py ``COMMAND``."""

    GET_STATUS = 0x0005
    SET_EXCHANGE = 0x0007
    GET_VERSION = 0x000A
    GET_SERIAL = 0x000B
    FW_IMAGE_GET_INFO = 0x0012
    FW_SIGNATURE = 0x0101
    RD_HW_CONFIG = 0x0807
    RD_VIRT_SFR = 0x0824
    WR_VIRT_SFR = 0x0825
    RD_VIRT_STRING = 0x0826
    WR_VIRT_STRING = 0x0827
    RD_VIRT_SFR_BATCH = 0x082A
    WR_VIRT_SFR_BATCH = 0x082B
    RD_FLASH = 0x081C
    SET_TIME = 0x0A04


class VS(IntEnum):
    """radiacode/types.py ``VS`` (virtual strings)."""

    CONFIGURATION = 2
    FW_DESCRIPTOR = 3
    SERIAL_NUMBER = 8
    TEXT_MESSAGE = 0xF
    MEM_SNAPSHOT = 0xE0
    DATA_BUF = 0x100
    SFR_FILE = 0x101
    SPECTRUM = 0x200
    ENERGY_CALIB = 0x202
    SPEC_ACCUM = 0x205


class VSFR(IntEnum):
    """The radiacode/types.py ``VSFR`` (virtual special-function registers) this driver uses."""

    DEVICE_TIME = 0x0504
    TEMP_degC = 0x8024


# serial prefix -> (model name, crystal, analysis-catalogue detector model)
MODELS: dict[str, tuple[str, str, str]] = {
    "RC-101": ("RadiaCode-101", "CsI(Tl) 10x10x10 mm", DEFAULT_DETECTOR_MODEL),
    "RC-102": ("RadiaCode-102", "CsI(Tl) 10x10x10 mm", DEFAULT_DETECTOR_MODEL),
    "RC-103": ("RadiaCode-103", "CsI(Tl) 10x10x10 mm", DEFAULT_DETECTOR_MODEL),
    "RC-103G": ("RadiaCode-103G", "GAGG(Ce) 10x10x10 mm", DEFAULT_DETECTOR_MODEL),
    "RC-110": ("RadiaCode-110", "CsI(Tl) about 3 cm3", DEFAULT_DETECTOR_MODEL),
}
_SERIAL_RE = re.compile(r"^(RC-\d{3}[A-Z]?)-")
_MAX_STALE = 3  # late answers skipped before giving up on a request
_MAX_ANSWER = 1 << 20  # no answer is near 1 MiB (a format-0 spectrum is 4 kB)


def _name(command: int) -> str:
    try:
        return COMMAND(command).name
    except ValueError:
        return f"command 0x{command:04x}"


# --------------------------------------------------------------------------- errors
class RadiaCodeProtocolError(DeviceDataError):
    """Bytes from the device that do not decode; ``kind`` names the counter."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- pure codec
class Reader:
    """Sequential little-endian reader (radiacode/bytes_buffer.py ``BytesBuffer``)."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    def size(self) -> int:
        return len(self._data) - self._pos

    def data(self) -> bytes:
        return self._data[self._pos:]

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        n = struct.calcsize(fmt)
        if self._pos + n > len(self._data):
            raise RadiaCodeProtocolError(
                "short", f"{n} bytes needed for {fmt!r}, only {len(self._data) - self._pos} left")
        self._pos += n
        return struct.unpack_from(fmt, self._data, self._pos - n)

    def string(self) -> str:
        (n,) = self.unpack("<B")
        return self.unpack(f"<{n}s")[0].decode("ascii", "replace")


def build_request(command: int, seq: int, args: bytes = b"") -> tuple[bytes, bytes]:
    """(frame to write, 4-byte header the response must echo); radiacode.py ``execute``."""
    header = struct.pack("<HBB", int(command), 0, 0x80 + (seq % 32))
    body = header + args
    return struct.pack("<I", len(body)) + body, header


def decode_counts_v0(r: Reader) -> list[int]:
    """Format 0: one u32 per channel (decoders/spectrum.py ``decode_counts_v0``)."""
    n = r.size() // 4
    if r.size() % 4:
        raise RadiaCodeProtocolError("spectrum", f"format-0 spectrum body of {r.size()} bytes is not u32s")
    return list(r.unpack(f"<{n}I")) if n else []


def decode_counts_v1(r: Reader) -> list[int]:
    """Format 1: run-length groups of absolute / delta values (decoders/spectrum.py ``decode_counts_v1``)."""
    out: list[int] = []
    last = 0
    while r.size() > 0:
        (u16,) = r.unpack("<H")
        cnt, vlen = (u16 >> 4) & 0x0FFF, u16 & 0x0F
        for _ in range(cnt):
            if vlen == 0:
                v = 0
            elif vlen == 1:
                v = r.unpack("<B")[0]
            elif vlen == 2:
                v = last + r.unpack("<b")[0]
            elif vlen == 3:
                v = last + r.unpack("<h")[0]
            elif vlen == 4:
                a, b, c = r.unpack("<BBb")
                v = last + ((c << 16) | (b << 8) | a)
            elif vlen == 5:
                v = last + r.unpack("<i")[0]
            else:
                raise RadiaCodeProtocolError("spectrum", f"unsupported vlen={vlen} in a format-1 spectrum")
            last = v
            out.append(v)
    return out


@dataclass(frozen=True, slots=True)
class DeviceSpectrum:
    """One ``VS.SPECTRUM`` answer: cumulative counts since the device's last spectrum reset."""

    duration_s: int
    coefficients_kev: tuple[float, float, float]
    counts: np.ndarray  # int64


def decode_spectrum(payload: bytes, format_version: int) -> DeviceSpectrum:
    """decoders/spectrum.py ``decode_RC_VS_SPECTRUM``, with the checks a driver needs."""
    if format_version not in (0, 1):
        raise RadiaCodeProtocolError("spectrum", f"unsupported spectrum format version {format_version}")
    r = Reader(payload)
    duration, a0, a1, a2 = r.unpack("<Ifff")
    values = decode_counts_v0(r) if format_version == 0 else decode_counts_v1(r)
    counts = np.asarray(values, dtype=np.int64)
    if counts.size and int(counts.min()) < 0:
        raise RadiaCodeProtocolError("spectrum", f"negative count in channel {int(np.argmin(counts))}")
    if not all(np.isfinite((a0, a1, a2))):
        raise RadiaCodeProtocolError("spectrum", f"non-finite calibration {(a0, a1, a2)}")
    return DeviceSpectrum(int(duration), (float(a0), float(a1), float(a2)), counts)


@dataclass(frozen=True, slots=True)
class DataBufSummary:
    """What the driver takes from ``VS.DATA_BUF``: the newest dose rate and temperature."""

    records: int
    count_rate_cps: float | None
    dose_rate_usv_h: float | None
    temperature_c: float | None


# payload sizes of the DATA_BUF groups (decoders/databuf.py), eid 0
_DATABUF_FIXED = {0: "<ffHHHB", 1: "<ff", 2: "<IffHH", 3: "<IfHHH", 4: "<IffHH", 5: "<IffHH", 6: "<HHH",
                  7: "<BBH", 8: "<fH", 9: "<fH"}
_DATABUF_SAMPLES = {1: 8, 2: 16, 3: 14}  # eid 1: <u16 n> <u32 dt_ms> + n x size


def decode_data_buf(payload: bytes) -> DataBufSummary:
    """Walk the DATA_BUF records as decoders/databuf.py does; stop at an unknown group or a
    sequence jump (the library does the same), keeping what was decoded before it."""
    r = Reader(payload)
    n = 0
    cps = dose = temp = None
    next_seq: int | None = None
    while r.size() >= 7:
        seq, eid, gid, _ts = r.unpack("<BBBi")
        if next_seq is not None and seq != next_seq:
            break
        next_seq = (seq + 1) % 256
        if eid == 0 and gid in _DATABUF_FIXED:
            fields = r.unpack(_DATABUF_FIXED[gid])
            if gid == 0:
                cps, dose = float(fields[0]), float(fields[1]) * DOSE_RATE_TO_USV_H
            elif gid == 3:
                temp = (fields[2] - 2000) / 100.0
        elif eid == 1 and gid in _DATABUF_SAMPLES:
            samples, _dt_ms = r.unpack("<HI")
            r.unpack(f"<{_DATABUF_SAMPLES[gid] * samples}x")
        else:
            break
        n += 1
    return DataBufSummary(n, cps, dose, temp)


def parse_firmware(payload: bytes) -> tuple[tuple[int, int, str], tuple[int, int, str]]:
    """``GET_VERSION``: boot and target (major, minor, date); radiacode.py ``fw_version``."""
    r = Reader(payload)
    boot_minor, boot_major = r.unpack("<HH")
    boot_date = r.string()
    target_minor, target_major = r.unpack("<HH")
    target_date = r.string()
    return (boot_major, boot_minor, boot_date), (target_major, target_minor, target_date.strip("\x00"))


def model_for_serial(serial: str) -> tuple[str, str, str] | None:
    m = _SERIAL_RE.match(serial)
    return MODELS.get(m.group(1)) if m else None


# --------------------------------------------------------------------------- the device
class RadiaCodeSpectrometer(GammaSpectrometer):
    """RadiaCode over USB; ``backend`` is a pyusb backend (tests inject the hal_sim emulator)."""

    def __init__(
        self,
        context: DeviceContext | None = None,
        name: str = "radiacode",
        serial_number: str | None = None,
        interval_s: float = 1.0,
        backend: Any = None,
        detector_model: str | None = None,
        response_timeout_s: float = 3.0,
        read_data_buf: bool = True,
        max_gap_s: float = 60.0,
    ) -> None:
        super().__init__(name=name, context=context)
        if not interval_s > 0:
            raise DeviceUnavailable(f"gamma {name}: interval_s={interval_s} (must be > 0)")
        if not response_timeout_s > 0:
            raise DeviceUnavailable(f"gamma {name}: response_timeout_s={response_timeout_s} (must be > 0)")
        self.serial_number = serial_number
        self.interval_s = float(interval_s)
        self.backend = backend
        self.response_timeout_ms = int(response_timeout_s * 1000)
        self.read_data_buf = read_data_buf
        self.max_gap_s = float(max_gap_s)
        self._override_model = detector_model
        self._dev: Any = None
        self._usb: Any = None  # the usb.core module, imported at open
        self._seq = 0
        self._format_version = 0
        self._n_channels = 1024
        self.device_serial: str | None = None
        self.hw_serial: str | None = None
        self.model_name: str | None = None
        self.crystal: str | None = None
        self.firmware: str | None = None
        self.boot_firmware: str | None = None
        self.temperature_c: float | None = None
        self._base: DeviceSpectrum | None = None
        self._base_mono: float | None = None
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "requests", "readings", "timeouts", "header_mismatches", "resyncs", "decode_errors",
                "usb_errors", "disconnects", "reconnects", "spectrum_resets", "databuf_errors",
                "drained_bytes",
            ),
            0,
        )

    # -- properties
    @property
    def n_channels(self) -> int:
        return self._n_channels

    @property
    def detector_model(self) -> str:
        if self._override_model:
            return self._override_model
        known = model_for_serial(self.device_serial or "")
        return known[2] if known else DEFAULT_DETECTOR_MODEL

    def stats(self) -> dict[str, Any]:
        return dict(self._counts, connected=self._dev is not None,
                    spectrum_format_version=self._format_version)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            model=self.model_name,
            detector_model=self.detector_model,
            crystal=self.crystal,
            serial=self.device_serial,
            hw_serial=self.hw_serial,
            firmware=self.firmware,
            boot_firmware=self.boot_firmware,
            usb_id=f"{USB_VID:04x}:{USB_PID:04x}",
            n_channels=self._n_channels,
            interval_s=self.interval_s,
            spectrum_format_version=self._format_version,
            calibration_kev=list(self._base.coefficients_kev) if self._base is not None else None,
            dead_time="not reported by the device (live time = real time)",
            stats=self.stats(),
        )
        return info

    # -- time
    def _now(self) -> float:
        clock = self.context.clock if self.context is not None else None
        return clock.monotonic_s() if clock is not None else time.monotonic()

    def _utc(self) -> datetime:
        clock = self.context.clock if self.context is not None else None
        return clock.utc_now() if clock is not None else datetime.now(UTC)

    # -- USB transport (transports/usb.py)
    def _import_usb(self) -> Any:
        try:
            import usb.core
        except ImportError as err:
            raise DeviceUnavailable(
                f"gamma {self.name}: pyusb is not installed (pip install pyusb); cannot talk to a RadiaCode"
            ) from err
        return usb.core

    def _find(self) -> Any:
        usb_core = self._usb
        match: dict[str, Any] = {"idVendor": USB_VID, "idProduct": USB_PID}
        if self.serial_number:
            match["serial_number"] = self.serial_number
        try:
            dev = usb_core.find(backend=self.backend, **match)
        except usb_core.NoBackendError as err:
            raise DeviceUnavailable(f"gamma {self.name}: no libusb backend for pyusb ({err}); "
                                    "install libusb-1.0") from err
        except (usb_core.USBError, ValueError) as err:  # string descriptors need access rights
            raise DeviceUnavailable(
                f"gamma {self.name}: cannot read RadiaCode USB descriptors ({err}); install the udev rule "
                "(SUBSYSTEMS==\"usb\", ATTRS{idVendor}==\"0483\", ATTRS{idProduct}==\"f123\", "
                "TAG+=\"uaccess\")"
            ) from err
        if dev is None:
            which = f" with serial {self.serial_number}" if self.serial_number else ""
            raise DeviceUnavailable(
                f"gamma {self.name}: no RadiaCode{which} on USB ({USB_VID:04x}:{USB_PID:04x}); check the "
                "cable (a charge-only cable shows nothing) and that the device is switched on")
        return dev

    def _is_timeout(self, err: BaseException) -> bool:
        return isinstance(err, self._usb.USBTimeoutError)

    def _drain(self, timeout_ms: int = 50, max_reads: int = 64) -> None:
        """Discard whatever sits in the IN endpoint (transports/usb.py does this at open)."""
        for _ in range(max_reads):
            try:
                data = self._dev.read(EP_IN, READ_CHUNK, timeout=timeout_ms)
            except self._usb.USBError as err:
                if self._is_timeout(err):
                    return
                raise
            self._counts["drained_bytes"] += len(data)
            if not data:
                return

    def _exchange(self, command: int, args: bytes = b"") -> Reader:
        """One request/response; raises DeviceTimeout, RadiaCodeProtocolError or usb errors.

        Answers whose header does not echo this request (late answers to an earlier request that
        timed out) are discarded, up to ``_MAX_STALE`` of them: that is what the sequence number
        in the header is for.
        """
        frame, header = build_request(command, self._seq, args)
        self._seq = (self._seq + 1) % 32
        self._counts["requests"] += 1
        self._dev.write(EP_OUT, frame, timeout=self.response_timeout_ms)
        for _ in range(_MAX_STALE + 1):
            data = self._read_answer(command)
            if data[:4] == header:
                return Reader(data[4:])
            self._counts["header_mismatches"] += 1
            log.debug("gamma %s: discarding answer %s while waiting for %s", self.name, data[:4].hex(),
                      header.hex())
        raise RadiaCodeProtocolError(
            "header", f"no answer echoing request {header.hex()} among {_MAX_STALE + 1} answers")

    def _read_answer(self, command: int) -> bytes:
        """One length-prefixed answer from the IN endpoint (transports/usb.py ``execute``)."""
        try:
            data = b""
            for _ in range(3):  # the library retries zero-length reads three times
                data = bytes(self._dev.read(EP_IN, READ_CHUNK, timeout=self.response_timeout_ms))
                if data:
                    break
            if len(data) < 8:
                raise RadiaCodeProtocolError("short", f"answer of {len(data)} bytes to {_name(command)}")
            (length,) = struct.unpack_from("<I", data)
            if not 4 <= length <= _MAX_ANSWER:
                raise RadiaCodeProtocolError("header", f"implausible answer length {length}")
            data = data[4:]
            while len(data) < length:
                chunk = bytes(self._dev.read(EP_IN, length - len(data), timeout=self.response_timeout_ms))
                if not chunk:
                    raise RadiaCodeProtocolError("short", f"answer stopped at {len(data)} of {length} bytes")
                data += chunk
        except self._usb.USBError as err:
            if self._is_timeout(err):
                self._counts["timeouts"] += 1
                raise DeviceTimeout(
                    f"gamma {self.name}: no complete answer to {_name(command)} within "
                    f"{self.response_timeout_ms} ms") from err
            raise
        return data[:length]

    def _execute(self, command: int, args: bytes = b"") -> Reader:
        """:meth:`_exchange` with one resynchronisation: drain stale answers and retry."""
        try:
            return self._exchange(command, args)
        except (RadiaCodeProtocolError, DeviceTimeout) as err:
            self._counts["resyncs"] += 1
            log.warning("gamma %s: %s; draining and retrying once", self.name, err)
            self._drain()
            return self._exchange(command, args)

    def _read_vs(self, vs: VS) -> bytes:
        """``RD_VIRT_STRING``; radiacode.py ``read_request`` including its trailing-NUL workaround."""
        r = self._execute(COMMAND.RD_VIRT_STRING, struct.pack("<I", int(vs)))
        retcode, flen = r.unpack("<II")
        if retcode != 1:
            raise RadiaCodeProtocolError("retcode", f"{vs.name}: device returned retcode {retcode}")
        body = r.data()
        if len(body) == flen + 1 and body[-1:] == b"\x00":
            body = body[:-1]
        if len(body) != flen:
            raise RadiaCodeProtocolError("short", f"{vs.name}: {len(body)} bytes, header says {flen}")
        return body

    def _write_vsfr(self, vsfr: VSFR, value: int) -> None:
        r = self._execute(COMMAND.WR_VIRT_SFR, struct.pack("<II", int(vsfr), value))
        (retcode,) = r.unpack("<I")
        if retcode != 1:
            raise RadiaCodeProtocolError("retcode", f"write {vsfr.name}: retcode {retcode}")

    # -- life cycle
    def _open(self) -> None:
        self._usb = self._import_usb()
        serial_before = self.device_serial
        self._connect()
        if self.device_serial != serial_before or not self._gap_is_bridgeable():
            self._base = None  # another device, or too long away: start afresh
        if self._base is None:
            self._take_baseline()

    def _gap_is_bridgeable(self) -> bool:
        """Keep the old baseline across a re-open only for short outages: the first reading then
        covers the gap (nothing lost) without becoming an hours-long spectrum."""
        return self._base_mono is not None and self._now() - self._base_mono <= self.max_gap_s

    def _connect(self) -> None:
        """find + the library's init sequence (radiacode.py ``RadiaCode.__init__``)."""
        self._dev = self._find()
        try:
            self._drain(timeout_ms=100)
            self._seq = 0
            self._execute(COMMAND.SET_EXCHANGE, b"\x01\xff\x12\xff")
            now = dt.datetime.now()
            self._execute(COMMAND.SET_TIME, struct.pack("<BBBBBBBB", now.day, now.month, now.year - 2000, 0,
                                                        now.second, now.minute, now.hour, 0))
            self._write_vsfr(VSFR.DEVICE_TIME, 0)
            boot, target = parse_firmware(self._execute(COMMAND.GET_VERSION).data())
            self.boot_firmware = f"{boot[0]}.{boot[1]} ({boot[2]})"
            self.firmware = f"{target[0]}.{target[1]} ({target[2]})"
            if (target[0], target[1]) < MIN_FIRMWARE:
                raise DeviceUnavailable(
                    f"gamma {self.name}: RadiaCode firmware {target[0]}.{target[1]} is too old for this "
                    f"protocol (>= {MIN_FIRMWARE[0]}.{MIN_FIRMWARE[1]} needed); update the device")
            config = self._read_vs(VS.CONFIGURATION).decode("cp1251", "replace")
            self._format_version = 0
            for line in config.splitlines():
                if line.startswith("SpecFormatVersion"):
                    self._format_version = int(line.split("=", 1)[1].strip())
                    break
            self.device_serial = self._read_vs(VS.SERIAL_NUMBER).decode("ascii", "replace").strip("\x00 ")
            self.hw_serial = self._hw_serial()
        except DeviceError:
            self._dispose()
            raise
        except (self._usb.USBError, ValueError, struct.error) as err:
            self._dispose()
            raise DeviceUnavailable(f"gamma {self.name}: RadiaCode did not initialise: {err}") from err
        known = model_for_serial(self.device_serial or "")
        self.model_name, self.crystal = (known[0], known[1]) if known else (None, None)
        if known is None:
            log.warning("gamma %s: unknown RadiaCode model for serial %r; using %s", self.name,
                        self.device_serial, self.detector_model)

    def _hw_serial(self) -> str | None:
        r = self._execute(COMMAND.GET_SERIAL)
        (n,) = r.unpack("<I")
        if n % 4 or n > 64:
            return None
        return "-".join(f"{v:08X}" for v in r.unpack(f"<{n // 4}I"))

    def _dispose(self) -> None:
        dev, self._dev = self._dev, None
        if dev is not None:
            try:
                import usb.util

                usb.util.dispose_resources(dev)
            except Exception as err:  # a vanished device may fail to release
                log.debug("gamma %s: dispose failed: %s", self.name, err)

    def _close(self) -> None:
        self._dispose()

    # -- reading
    def _poll_spectrum(self) -> tuple[DeviceSpectrum, float]:
        payload = self._read_vs(VS.SPECTRUM)
        t = self._now()
        try:
            spec = decode_spectrum(payload, self._format_version)
        except RadiaCodeProtocolError:
            self._counts["decode_errors"] += 1
            raise
        if self._base is not None and spec.counts.size != self._base.counts.size:
            self._counts["decode_errors"] += 1
            raise RadiaCodeProtocolError(
                "spectrum", f"spectrum of {spec.counts.size} channels after {self._base.counts.size}")
        return spec, t

    def _take_baseline(self) -> None:
        spec, t = self._poll_spectrum()
        self._base, self._base_mono = spec, t
        self._n_channels = int(spec.counts.size)

    def _poll_data_buf(self) -> DataBufSummary | None:
        if not self.read_data_buf:
            return None
        try:
            return decode_data_buf(self._read_vs(VS.DATA_BUF))
        except (RadiaCodeProtocolError, DeviceTimeout) as err:
            self._counts["databuf_errors"] += 1
            log.debug("gamma %s: DATA_BUF unreadable: %s", self.name, err)
            return None

    def _handle_usb_error(self, err: BaseException) -> DeviceError:
        self._counts["usb_errors"] += 1
        code = getattr(err, "errno", None)
        if code in (errno.ENODEV, errno.EIO, errno.EPIPE, errno.ENOENT, errno.ESHUTDOWN, None):
            self._counts["disconnects"] += 1
            self._dispose()
            return DeviceUnavailable(
                f"gamma {self.name}: RadiaCode {self.device_serial} lost from USB ({err})")
        return DeviceError(f"gamma {self.name}: USB error {err}")

    def read_spectrum(self, timeout_s: float) -> SpectrumReading:
        if self._state in (SensorState.NOT_OPENED, SensorState.CLOSED):
            raise DeviceError(f"gamma {self.name}: read_spectrum on a device that is {self._state.value}")
        if self._usb is None:
            raise DeviceUnavailable(f"gamma {self.name}: not open (pyusb unavailable or open() failed)")
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            try:
                return self._read_locked(timeout_s, deadline)
            except self._usb.USBError as err:
                raise self._handle_usb_error(err) from err

    def _read_locked(self, timeout_s: float, deadline: float) -> SpectrumReading:
        while True:
            if self._dev is None:
                self._reconnect()
            if self._base is None or self._base_mono is None:
                self._take_baseline()
            base, base_mono = self._base, self._base_mono
            assert base is not None and base_mono is not None
            wait_s = base_mono + self.interval_s - self._now()
            if wait_s > 0:
                if time.monotonic() + wait_s > deadline:
                    time.sleep(max(0.0, deadline - time.monotonic()))
                    raise DeviceTimeout(f"gamma {self.name}: interval of {self.interval_s:g} s does not "
                                        f"end within the {timeout_s:g} s time-out")
                time.sleep(wait_s)
            spec, t = self._poll_spectrum()
            extra = self._poll_data_buf()
            reset = (spec.duration_s < base.duration_s or int(spec.counts.sum()) < int(base.counts.sum())
                     or bool((spec.counts < base.counts).any()))
            self._base, self._base_mono = spec, t
            if extra is not None and extra.temperature_c is not None:
                self.temperature_c = extra.temperature_c
            if reset:
                # reset at an unknown moment since the last poll: take it as the new baseline
                self._counts["spectrum_resets"] += 1
                log.warning("gamma %s: spectrum was reset on the device (duration %d -> %d s); "
                            "waiting one more interval", self.name, base.duration_s, spec.duration_s)
                continue
            self._counts["readings"] += 1
            real_s = t - base_mono
            return SpectrumReading(
                counts=spec.counts - base.counts,
                live_time_s=real_s,  # dead time is not reported by the device
                real_time_s=real_s,
                calibration=EnergyCalibration(spec.coefficients_kev),
                t_utc=self._utc(),
                t_mono_s=t,
                detector_model=self.detector_model,
                dose_rate_usv_h=None if extra is None else extra.dose_rate_usv_h,
                temperature_c=self.temperature_c,
            )

    def _reconnect(self) -> None:
        """Find the device again after an unplug; the cumulative baseline is kept, so if the device
        kept counting the next difference covers the gap (a power cycle shows as a reset)."""
        self._connect()
        if not self._gap_is_bridgeable():
            self._base = None
        self._counts["reconnects"] += 1
        log.info("gamma %s: RadiaCode %s reconnected", self.name, self.device_serial)
