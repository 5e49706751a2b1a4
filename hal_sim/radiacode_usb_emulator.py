"""A RadiaCode on a fake USB bus: a pyusb backend whose device answers the real protocol frames.

Why a pyusb backend and not a mock of the driver's transport: :mod:`drivers.radiacode` then runs
unchanged - ``usb.core.find`` enumerates, reads the device descriptor and the serial-number string
descriptor through control transfers, ``Device.write``/``read`` go through pyusb's interface
claiming and endpoint lookup to ``bulk_write``/``bulk_read`` here - and every byte the driver sends
is parsed as the device would parse it.  Faults are injected where they happen in the field: a
garbled or late answer, an answer cut short, no answer, a spectrum reset on the device, a power
cycle, an unplug/replug.

Protocol as implemented by ``cdump/radiacode`` (``radiacode/radiacode.py``, ``radiacode/types.py``,
``radiacode/transports/usb.py``, ``radiacode/decoders/spectrum.py``, ``radiacode/decoders/databuf.py``);
the request/response frames, command and virtual-string ids, the spectrum header and both count
formats, the DATA_BUF record layout and the 0483:f123 ids come from there.  The format-1 encoder
is the exact inverse of the library's decoder; which of two equally short encodings the real
firmware picks is not known, so the encoder chooses the shortest per value (u8 absolute only when
no 1-byte difference fits) and groups runs of equal width - any choice decodes to the same counts.

Assumed, not in those sources (the driver does not depend on them): the payload of the
``SET_EXCHANGE``/``SET_TIME`` answers (empty here), the text of ``VS.CONFIGURATION`` beyond the
``SpecFormatVersion=`` line (a short stand-in with the section names the library's tests look
for), the USB product string and descriptor layout (one vendor-class interface, two 64-byte bulk
endpoints), the answer to an unknown command (header echo, empty payload) and the DATA_BUF
cadence (one RealTimeData record per read, a RareData record every 30 s).

Physics: a spectrum source ``t_s -> expected counts per second in each of the 1024 channels``;
the device's cumulative spectrum advances by Poisson samples (seeded) whenever it is looked at,
in steps of at most 1 s.  The dose rate it reports is count rate / sensitivity (vendor figure for
Cs-137, default 30 cps per uSv/h for the RC-102) - a stand-in for the firmware's own algorithm.
Every spectrum served is recorded (:meth:`RadiaCodeSim.served`): the ground truth of a test.
"""

from __future__ import annotations

import array
import errno
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import usb.backend
import usb.core

USB_VID = 0x0483
USB_PID = 0xF123
EP_OUT = 0x01
EP_IN = 0x81
N_CHANNELS = 1024

CMD_GET_STATUS = 0x0005
CMD_SET_EXCHANGE = 0x0007
CMD_GET_VERSION = 0x000A
CMD_GET_SERIAL = 0x000B
CMD_FW_SIGNATURE = 0x0101
CMD_WR_VIRT_SFR = 0x0825
CMD_RD_VIRT_STRING = 0x0826
CMD_WR_VIRT_STRING = 0x0827
CMD_RD_VIRT_SFR_BATCH = 0x082A
CMD_SET_TIME = 0x0A04

VS_CONFIGURATION = 2
VS_SERIAL_NUMBER = 8
VS_TEXT_MESSAGE = 0xF
VS_DATA_BUF = 0x100
VS_SPECTRUM = 0x200
VS_ENERGY_CALIB = 0x202
VS_SPEC_ACCUM = 0x205
VSFR_DEVICE_TIME = 0x0504

SpectrumSource = Callable[[float], np.ndarray]  # t_s -> expected counts/s per channel (1024,)

# libusb error codes and the errno pyusb's libusb1 backend attaches to them
_LIBUSB_ERROR_IO, _LIBUSB_ERROR_NO_DEVICE, _LIBUSB_ERROR_TIMEOUT = -1, -4, -7


# --------------------------------------------------------------------------- spectrum codec
def encode_counts_v1(counts: np.ndarray) -> bytes:
    """Inverse of decoders/spectrum.py ``decode_counts_v1`` (format 1: RLE groups of deltas)."""
    values = [int(v) for v in np.asarray(counts, dtype=np.int64)]
    widths: list[int] = []
    last = 0
    for v in values:
        d = v - last
        if v == 0:
            w = 0
        elif -128 <= d <= 127:
            w = 2
        elif 0 <= v <= 255:
            w = 1
        elif -32768 <= d <= 32767:
            w = 3
        elif -(1 << 23) <= d < (1 << 23):
            w = 4
        else:
            w = 5
        widths.append(w)
        last = v
    out = bytearray()
    i = 0
    last = 0
    while i < len(values):
        w = widths[i]
        j = i
        while j < len(values) and widths[j] == w and j - i < 0x0FFF:
            j += 1
        out += struct.pack("<H", ((j - i) << 4) | w)
        for v in values[i:j]:
            d = v - last
            if w == 1:
                out += struct.pack("<B", v)
            elif w == 2:
                out += struct.pack("<b", d)
            elif w == 3:
                out += struct.pack("<h", d)
            elif w == 4:
                out += struct.pack("<i", d)[:3]  # 24-bit two's complement, little-endian
            elif w == 5:
                out += struct.pack("<i", d)
            last = v
        i = j
    return bytes(out)


def encode_spectrum(duration_s: int, coefficients: tuple[float, float, float], counts: np.ndarray,
                    format_version: int) -> bytes:
    """``VS.SPECTRUM`` payload: ``<u32 duration> <f32 a0 a1 a2>`` + counts (format 0 or 1)."""
    head = struct.pack("<Ifff", int(duration_s), *coefficients)
    if format_version == 0:
        return head + np.asarray(counts, dtype="<u4").tobytes()
    return head + encode_counts_v1(counts)


def flat_source(cps: float = 6.0) -> SpectrumSource:
    """Background-like test field: an exponential continuum of ``cps`` counts/s in 1024 channels
    (a pocket 1 cm3 CsI(Tl) counts ~6 cps at 0.05 uSv/h)."""
    shape = np.exp(-np.arange(N_CHANNELS) / 150.0)
    shape[:4] = 0.0  # below the device's low-energy threshold
    shape *= cps / shape.sum()
    return lambda t_s: shape


@dataclass(frozen=True, slots=True)
class ServedSpectrum:
    """One ``VS.SPECTRUM`` answer as the device built it: the ground truth."""

    t_mono_s: float
    duration_s: int
    counts: np.ndarray  # cumulative since the last spectrum reset
    coefficients: tuple[float, float, float]


# --------------------------------------------------------------------------- the device firmware
class RadiaCodeSim:
    """The device: protocol state machine, cumulative spectrum, fault injection."""

    def __init__(
        self,
        serial: str = "RC-102-000115",
        source: SpectrumSource | None = None,
        seed: int = 0,
        calibration: tuple[float, float, float] = (-6.2, 2.43, 0.000385),
        format_version: int = 1,
        firmware: tuple[int, int] = (4, 14),
        boot_firmware: tuple[int, int] = (4, 9),
        sensitivity_cps_per_usv_h: float = 30.0,
        temperature_c: float = 24.5,
        clock: Callable[[], float] = time.monotonic,
        product: str | None = None,
    ) -> None:
        if format_version not in (0, 1):
            raise ValueError(f"format_version must be 0 or 1, got {format_version}")
        self.serial = serial
        parts = serial.split("-")
        self.product = product or (f"RadiaCode-{parts[1]}" if len(parts) >= 3 else "RadiaCode")
        self.source = source or flat_source()
        self.calibration = tuple(float(np.float32(c)) for c in calibration)
        self.format_version = format_version
        self.firmware = firmware
        self.boot_firmware = boot_firmware
        self.sensitivity = float(sensitivity_cps_per_usv_h)
        self.temperature_c = float(temperature_c)
        self.clock = clock
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        t = clock()
        self._t_boot = t
        self._t_last = t
        self._t_reset = t
        self._spectrum = np.zeros(N_CHANNELS, dtype=np.int64)
        self._accum = np.zeros(N_CHANNELS, dtype=np.int64)
        self._last_rate_cps = 0.0
        self._device_time0 = t
        self._databuf_seq = 0
        self._last_rare: float | None = None
        self._served: list[ServedSpectrum] = []
        self._faults: list[str] = []
        self.requests: list[tuple[int, int]] = []  # (command, seq byte) of every request seen
        self.counts = {"requests": 0, "spectra_served": 0, "faults_fired": 0, "unknown_commands": 0,
                       "bad_frames": 0}

    # -- physics
    def _advance(self) -> None:
        t = self.clock()
        while self._t_last < t:
            step = min(1.0, t - self._t_last)
            rate = np.clip(np.nan_to_num(np.asarray(self.source(self._t_last + 0.5 * step - self._t_boot),
                                                    dtype=float)), 0.0, None)
            if rate.shape != (N_CHANNELS,):
                raise ValueError(f"spectrum source returned shape {rate.shape}, expected ({N_CHANNELS},)")
            n = self._rng.poisson(rate * step).astype(np.int64)
            self._spectrum += n
            self._accum += n
            self._last_rate_cps = float(rate.sum())
            self._t_last += step

    # -- operator actions / faults
    def reset_spectrum(self) -> None:
        """The user cleared the spectrum on the device (or in the app)."""
        with self._lock:
            self._advance()
            self._spectrum[:] = 0
            self._t_reset = self.clock()

    def power_cycle(self) -> None:
        """Switched off and on: spectrum and its duration start again."""
        with self._lock:
            self._advance()
            self._spectrum[:] = 0
            self._accum[:] = 0
            self._t_reset = self._t_boot = self._device_time0 = self.clock()

    def inject(self, fault: str, count: int = 1) -> None:
        """Arm ``count`` faults for the next answers: ``garbage`` (the answer's header bytes are
        noise), ``truncated`` (the answer stops half way), ``silence`` (no answer), ``late`` (the
        answer is held back and delivered before the next one, as after a host-side time-out)."""
        if fault not in ("garbage", "truncated", "silence", "late"):
            raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            self._faults.extend([fault] * int(count))

    def served(self) -> list[ServedSpectrum]:
        with self._lock:
            return list(self._served)

    # -- protocol
    def handle(self, frame: bytes) -> bytes | None:
        """One complete request frame (with its u32 length) -> the complete answer frame."""
        with self._lock:
            self.counts["requests"] += 1
            if len(frame) < 8:
                self.counts["bad_frames"] += 1
                return None
            header = frame[4:8]
            command, _zero, seq = struct.unpack("<HBB", header)
            self.requests.append((command, seq))
            payload = self._dispatch(command, frame[8:])
            body = header + payload
            return struct.pack("<I", len(body)) + body

    def _dispatch(self, command: int, args: bytes) -> bytes:
        if command in (CMD_SET_EXCHANGE, CMD_SET_TIME):
            return b""
        if command == CMD_GET_VERSION:
            bmaj, bmin = self.boot_firmware
            tmaj, tmin = self.firmware
            return (struct.pack("<HH", bmin, bmaj) + _lstr("Mar  4 2024") +
                    struct.pack("<HH", tmin, tmaj) + _lstr("Jan 16 2025\x00\x00"))
        if command == CMD_GET_SERIAL:
            words = [0x3A1B2C3D, 0x00470025, int(self.serial[-6:]) if self.serial[-6:].isdigit() else 1]
            return struct.pack("<I", 4 * len(words)) + struct.pack(f"<{len(words)}I", *words)
        if command == CMD_GET_STATUS:
            return struct.pack("<I", 0)
        if command == CMD_FW_SIGNATURE:
            return struct.pack("<I", 0x5A5AA5A5) + _lstr("rc-102.bin") + _lstr(self.product)
        if command == CMD_WR_VIRT_SFR:
            if len(args) >= 4 and struct.unpack_from("<I", args)[0] == VSFR_DEVICE_TIME:
                self._device_time0 = self.clock()
            return struct.pack("<I", 1)
        if command == CMD_WR_VIRT_STRING:
            vs, n = struct.unpack_from("<II", args) if len(args) >= 8 else (0, 0)
            if vs == VS_SPECTRUM and n == 0:
                self.reset_spectrum()
            elif vs == VS_ENERGY_CALIB and n == 12:
                self.calibration = struct.unpack_from("<fff", args, 8)
            return struct.pack("<I", 1)
        if command == CMD_RD_VIRT_SFR_BATCH:
            n = struct.unpack_from("<I", args)[0] if len(args) >= 4 else 0
            return struct.pack("<I", (1 << n) - 1) + b"\x00\x00\x00\x00" * n
        if command == CMD_RD_VIRT_STRING:
            vs = struct.unpack_from("<I", args)[0] if len(args) >= 4 else -1
            data = self._virtual_string(vs)
            if data is None:
                return struct.pack("<II", 0, 0)
            extra = b"\x00" if vs == VS_CONFIGURATION else b""  # the firmware quirk radiacode.py works around
            return struct.pack("<II", 1, len(data)) + data + extra
        self.counts["unknown_commands"] += 1
        return b""

    def _virtual_string(self, vs: int) -> bytes | None:
        if vs == VS_CONFIGURATION:
            text = (f"[DeviceParams]\r\nDeviceName={self.product}\r\n"
                    f"SpecFormatVersion={self.format_version}\r\n"
                    "SpecChannels=1024\r\n[[GRP_RareData]]\r\nCHN_ChargeLevel=H,0.01,%\r\n"
                    "CHN_Temperature=H,0.01,degC,-20\r\n")
            return text.encode("cp1251")
        if vs == VS_SERIAL_NUMBER:
            return self.serial.encode("ascii")
        if vs == VS_TEXT_MESSAGE:
            return b""
        if vs == VS_ENERGY_CALIB:
            return struct.pack("<fff", *self.calibration)
        if vs in (VS_SPECTRUM, VS_SPEC_ACCUM):
            self._advance()
            t = self.clock()
            counts = self._spectrum if vs == VS_SPECTRUM else self._accum
            duration = int(t - (self._t_reset if vs == VS_SPECTRUM else self._t_boot))
            if vs == VS_SPECTRUM:
                self._served.append(ServedSpectrum(t, duration, counts.copy(), self.calibration))
                self.counts["spectra_served"] += 1
            return encode_spectrum(duration, self.calibration, counts, self.format_version)
        if vs == VS_DATA_BUF:
            return self._data_buf()
        return None

    def _record(self, gid: int, payload: bytes) -> bytes:
        ts = int(round((self.clock() - self._device_time0) * 100))  # 10 ms units since DEVICE_TIME=0
        rec = struct.pack("<BBBi", self._databuf_seq, 0, gid, ts) + payload
        self._databuf_seq = (self._databuf_seq + 1) % 256
        return rec

    def _data_buf(self) -> bytes:
        self._advance()
        cps = self._last_rate_cps
        dose_usv_h = cps / self.sensitivity if self.sensitivity > 0 else 0.0
        out = self._record(0, struct.pack("<ffHHHB", cps, dose_usv_h / 1e4, 50, 150, 0, 0))  # RealTimeData
        t = self.clock()
        if self._last_rare is None or t - self._last_rare >= 30.0:
            self._last_rare = t
            temp = int(round(self.temperature_c * 100 + 2000))
            rare = struct.pack("<IfHHH", int(t - self._t_boot), 0.0, temp, 8500, 0)
            out += self._record(3, rare)  # RareData: duration, dose, temperature, charge, flags
        return out

    def pop_fault(self) -> str | None:
        with self._lock:
            if not self._faults:
                return None
            self.counts["faults_fired"] += 1
            return self._faults.pop(0)


def _lstr(text: str) -> bytes:
    """Length-prefixed string (bytes_buffer.py ``unpack_string``)."""
    raw = text.encode("ascii")
    return struct.pack("<B", len(raw)) + raw


# --------------------------------------------------------------------------- USB descriptors
@dataclass
class _DeviceDescriptor:
    idVendor: int
    idProduct: int
    bus: int
    address: int
    bLength: int = 18
    bDescriptorType: int = 1
    bcdUSB: int = 0x0200
    bDeviceClass: int = 0
    bDeviceSubClass: int = 0
    bDeviceProtocol: int = 0
    bMaxPacketSize0: int = 64
    bcdDevice: int = 0x0200
    iManufacturer: int = 1
    iProduct: int = 2
    iSerialNumber: int = 3
    bNumConfigurations: int = 1
    port_number: int = 1
    port_numbers: tuple[int, ...] = (1,)
    speed: int = 2  # full speed


@dataclass
class _ConfigDescriptor:
    bLength: int = 9
    bDescriptorType: int = 2
    wTotalLength: int = 32
    bNumInterfaces: int = 1
    bConfigurationValue: int = 1
    iConfiguration: int = 0
    bmAttributes: int = 0x80
    bMaxPower: int = 50
    extra_descriptors: tuple[int, ...] = ()


@dataclass
class _InterfaceDescriptor:
    bLength: int = 9
    bDescriptorType: int = 4
    bInterfaceNumber: int = 0
    bAlternateSetting: int = 0
    bNumEndpoints: int = 2
    bInterfaceClass: int = 0xFF
    bInterfaceSubClass: int = 0
    bInterfaceProtocol: int = 0
    iInterface: int = 0
    extra_descriptors: tuple[int, ...] = ()


@dataclass
class _EndpointDescriptor:
    bEndpointAddress: int
    bLength: int = 7
    bDescriptorType: int = 5
    bmAttributes: int = 2  # bulk
    wMaxPacketSize: int = 64
    bInterval: int = 0
    bRefresh: int = 0
    bSynchAddress: int = 0
    extra_descriptors: tuple[int, ...] = ()


class _Slot:
    """One device on the fake bus: descriptors, its firmware, the bytes in flight."""

    def __init__(self, sim: RadiaCodeSim, address: int) -> None:
        self.sim = sim
        self.descriptor = _DeviceDescriptor(USB_VID, USB_PID, bus=1, address=address)
        self.attached = True
        self.generation = 0  # bumps on every replug: old handles die
        self.rx = bytearray()  # request bytes received so far
        self.tx: list[bytes] = []  # answers queued for the IN endpoint, one transfer each
        self.held: bytes | None = None  # a 'late' answer
        self.cond = threading.Condition()

    def strings(self) -> dict[int, str]:
        return {1: "AngioScan", 2: self.sim.product, 3: self.sim.serial}


@dataclass
class _Handle:
    slot: _Slot
    generation: int


def _usb_error(code: int, text: str) -> usb.core.USBError:
    err_no = {_LIBUSB_ERROR_IO: errno.EIO, _LIBUSB_ERROR_NO_DEVICE: errno.ENODEV,
              _LIBUSB_ERROR_TIMEOUT: errno.ETIMEDOUT}[code]
    if code == _LIBUSB_ERROR_TIMEOUT:
        return usb.core.USBTimeoutError(text, code, err_no)
    return usb.core.USBError(text, code, err_no)


class RadiaCodeUsbBackend(usb.backend.IBackend):
    """pyusb backend serving :class:`RadiaCodeSim` devices: ``usb.core.find(..., backend=this)``.

    Bulk reads block up to their time-out as libusb does (capped by ``max_block_s`` so a test of
    silence does not wait 3 s); each read returns at most one answer (a device ends every answer
    with a short packet, which completes the host's transfer).
    """

    def __init__(self, *devices: RadiaCodeSim, max_block_s: float | None = None) -> None:
        super().__init__()
        self.max_block_s = max_block_s
        self._slots = [_Slot(d, address=i + 2) for i, d in enumerate(devices)]
        self.transfers = {"bulk_write": 0, "bulk_read": 0, "ctrl": 0}

    # -- bus management (test hooks)
    def _slot(self, sim: RadiaCodeSim) -> _Slot:
        for s in self._slots:
            if s.sim is sim:
                return s
        raise KeyError(f"device {sim.serial} is not on this bus")

    def unplug(self, sim: RadiaCodeSim) -> None:
        s = self._slot(sim)
        with s.cond:
            s.attached = False
            s.generation += 1
            s.rx.clear()
            s.tx.clear()
            s.held = None
            s.cond.notify_all()

    def plug(self, sim: RadiaCodeSim) -> None:
        s = self._slot(sim)
        with s.cond:
            s.attached = True
            s.descriptor.address += 10  # a replugged device gets a new address

    # -- enumeration and descriptors
    def enumerate_devices(self) -> list[_Slot]:
        return [s for s in self._slots if s.attached]

    def get_parent(self, dev: _Slot) -> None:
        return None

    def get_device_descriptor(self, dev: _Slot) -> _DeviceDescriptor:
        return dev.descriptor

    def get_configuration_descriptor(self, dev: _Slot, config: int) -> _ConfigDescriptor:
        if config != 0:
            raise IndexError("configuration index out of range")
        return _ConfigDescriptor()

    def get_interface_descriptor(self, dev: _Slot, intf: int, alt: int, config: int) -> _InterfaceDescriptor:
        if config != 0 or intf != 0 or alt != 0:
            raise IndexError("interface index out of range")
        return _InterfaceDescriptor()

    def get_endpoint_descriptor(self, dev: _Slot, ep: int, intf: int, alt: int,
                                config: int) -> _EndpointDescriptor:
        if config != 0 or intf != 0 or alt != 0 or ep not in (0, 1):
            raise IndexError("endpoint index out of range")
        return _EndpointDescriptor(EP_OUT if ep == 0 else EP_IN)

    # -- handles
    def _check(self, handle: _Handle) -> _Slot:
        s = handle.slot
        if not s.attached or s.generation != handle.generation:
            raise _usb_error(_LIBUSB_ERROR_NO_DEVICE, "No such device (it may have been disconnected)")
        return s

    def open_device(self, dev: _Slot) -> _Handle:
        if not dev.attached:
            raise _usb_error(_LIBUSB_ERROR_NO_DEVICE, "No such device (it may have been disconnected)")
        return _Handle(dev, dev.generation)

    def close_device(self, dev_handle: _Handle) -> None:
        pass

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        self._check(dev_handle)

    def get_configuration(self, dev_handle: _Handle) -> int:
        self._check(dev_handle)
        return 1

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._check(dev_handle)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        self._check(dev_handle)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        pass

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._check(dev_handle)

    def reset_device(self, dev_handle: _Handle) -> None:
        self._check(dev_handle)

    # -- transfers
    def ctrl_transfer(self, dev_handle: _Handle, bmRequestType: int, bRequest: int, wValue: int,  # noqa: N803
                      wIndex: int, data: array.array, timeout: int) -> int:
        """Standard GET_DESCRIPTOR (string) only: what ``Device.serial_number`` needs."""
        s = self._check(dev_handle)
        self.transfers["ctrl"] += 1
        if bmRequestType & 0x80 and bRequest == 0x06 and wValue >> 8 == 3:
            index = wValue & 0xFF
            if index == 0:
                desc = bytes([4, 3]) + struct.pack("<H", 0x0409)
            else:
                text = s.strings().get(index)
                if text is None:
                    raise _usb_error(_LIBUSB_ERROR_IO, "Pipe error (no such string descriptor)")
                raw = text.encode("utf-16-le")
                desc = bytes([2 + len(raw), 3]) + raw
            n = min(len(desc), len(data) * data.itemsize)
            memoryview(data).cast("B")[:n] = desc[:n]
            return n
        raise _usb_error(_LIBUSB_ERROR_IO, "Pipe error (request not supported by the emulator)")

    def bulk_write(self, dev_handle: _Handle, ep: int, intf: int, data: array.array, timeout: int) -> int:
        s = self._check(dev_handle)
        self.transfers["bulk_write"] += 1
        raw = bytes(data)
        with s.cond:
            s.rx += raw
            while len(s.rx) >= 4:
                (length,) = struct.unpack_from("<I", s.rx)
                if len(s.rx) < 4 + length:
                    break
                frame = bytes(s.rx[: 4 + length])
                del s.rx[: 4 + length]
                self._answer(s, frame)
            s.cond.notify_all()
        return len(raw)

    def _answer(self, s: _Slot, frame: bytes) -> None:
        reply = s.sim.handle(frame)
        if reply is None:
            return
        fault = s.sim.pop_fault()
        if s.held is not None:  # a late answer goes out before the current one
            s.tx.append(s.held)
            s.held = None
        if fault == "silence":
            return
        if fault == "late":
            s.held = reply
            return
        if fault == "garbage":
            noise = bytes(np.random.default_rng(len(frame)).integers(0, 256, 4, dtype=np.uint8))
            reply = reply[:4] + noise + reply[8:]
        elif fault == "truncated":
            reply = reply[: max(5, len(reply) // 2)]
        s.tx.append(reply)

    def bulk_read(self, dev_handle: _Handle, ep: int, intf: int, buff: array.array, timeout: int) -> int:
        s = self._check(dev_handle)
        self.transfers["bulk_read"] += 1
        wait_s = (timeout / 1000.0) if timeout else 5.0
        if self.max_block_s is not None:
            wait_s = min(wait_s, self.max_block_s)
        deadline = time.monotonic() + wait_s
        with s.cond:
            while not s.tx:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _usb_error(_LIBUSB_ERROR_TIMEOUT, "Operation timed out")
                s.cond.wait(remaining)
                self._check(dev_handle)
            chunk = s.tx[0]
            n = min(len(chunk), len(buff) * buff.itemsize)
            memoryview(buff).cast("B")[:n] = chunk[:n]
            if n < len(chunk):
                s.tx[0] = chunk[n:]
            else:
                s.tx.pop(0)
            return n


def attach(*devices: RadiaCodeSim, max_block_s: float | None = None) -> RadiaCodeUsbBackend:
    """A fake USB bus holding ``devices``; pass it as ``backend=`` to the driver or usb.core.find."""
    return RadiaCodeUsbBackend(*devices, max_block_s=max_block_s)


def describe_bus(backend: RadiaCodeUsbBackend) -> list[dict[str, Any]]:
    """What ``lsusb`` would show: for logs and the CLI."""
    return [{"vid": f"{s.descriptor.idVendor:04x}", "pid": f"{s.descriptor.idProduct:04x}",
             "serial": s.sim.serial, "product": s.sim.product} for s in backend.enumerate_devices()]
