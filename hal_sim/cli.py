"""``cedge sim ...``: wire-level device emulators for hardware-in-the-loop rigs and driver debugging.

    cedge sim gps --link /tmp/gps0 --rate-hz 1 --speed 8       NMEA 0183 receiver driving the yard lanes
    cedge sim ogd --link /tmp/ogd0 --source Cs-137             Open Gamma Detector (firmware 4.2 protocol)

Each command opens a pseudo-terminal, prints its path and serves until Ctrl-C; point a unit's YAML
(``driver: nmea`` / ``driver: open_gamma``, ``port: /tmp/gps0``) at the printed path or the
``--link`` symlink and the real drivers run against it.  The RadiaCode emulator is a pyusb
backend (:mod:`hal_sim.radiacode_usb_emulator`), usable in-process only, so it has no command here.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from pathlib import Path

import numpy as np
import typer

app = typer.Typer(help="Wire-level device emulators (pseudo-terminals).", no_args_is_help=True)

# Lanes of the packaged demo yard (configs/scenarios/demo_yard.yaml: origin 51.95 N 4.05 E, lane
# route in local metres east/north), so a gps rig drives where the demo's containers stand.
_YARD_ORIGIN = (51.9500, 4.0500)
_YARD_LANES_M = [(0.0, 7.2), (140.0, 7.2), (140.0, 31.2), (0.0, 31.2)]


def _stop_on_sigterm() -> threading.Event:
    """systemd and ``kill`` stop with SIGTERM: close the pty and remove the link as Ctrl-C does."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def _yard_route(origin_lat: float, origin_lon: float) -> list[tuple[float, float]]:
    from agent.geo import LocalFrame

    frame = LocalFrame(origin_lat, origin_lon, 0.0)
    return [frame.to_geodetic(x, y, 0.0)[:2] for x, y in _YARD_LANES_M]


@app.command()
def gps(
    link: Path | None = typer.Option(None, "--link", help="Also create this symlink to the pty (udev-like)."),
    rate_hz: float = typer.Option(1.0, "--rate-hz", min=0.1, max=50.0, help="Epochs per second."),
    speed: float = typer.Option(8.0, "--speed", min=0.0, help="Vehicle speed along the route, m/s."),
    origin_lat: float = typer.Option(_YARD_ORIGIN[0], help="Route origin latitude (deg)."),
    origin_lon: float = typer.Option(_YARD_ORIGIN[1], help="Route origin longitude (deg)."),
    alt_m: float = typer.Option(3.0, help="Antenna altitude above MSL, m."),
) -> None:
    """NMEA 0183 GPS (u-blox-like RMC/VTG/GGA/GSA) driving the demo-yard lanes; prints the pty path."""
    from hal_sim.nmea_emulator import NmeaEmulator, route_source, serve_forever

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    emulator = NmeaEmulator(route_source(_yard_route(origin_lat, origin_lon), speed, alt_m), rate_hz=rate_hz,
                            noise_sentences=True, link_path=link)
    where = os.path.realpath(emulator.port) + (f" (link {link})" if link else "")
    print(f"NMEA 0183 on {where}, {rate_hz:g} Hz; Ctrl-C to stop", flush=True)
    serve_forever(emulator, _stop_on_sigterm())


def _physics_source(detector: str, background_usv_h: float, nuclide: str | None, activity_mbq: float,
                    closest_m: float, speed_m_s: float, pass_every_s: float,
                    kev_per_adc_ch: float):  # noqa: ANN202 - returns a spectrum source
    """Expected counts/s on the OGD's 4096 ADC channels from the hal_sim gamma model.

    The model's 1024-channel rate density (counts/s/keV) is interpolated onto the ADC channel
    energies E_i = kev_per_adc_ch * i, so the driver's nominal calibration reads true energies.  A
    source passes every ``pass_every_s`` at ``speed_m_s`` with closest approach ``closest_m``;
    between passes the rate follows d0^2 / (d0^2 + v^2 t^2) (air attenuation change ignored).
    """
    from hal_sim.gamma import DetectorResponse
    from hal_sim.ogd_emulator import ADC_BINS

    top_kev = kev_per_adc_ch * ADC_BINS
    resp = DetectorResponse.for_model(detector, n_channels=1024, max_energy_kev=min(top_kev, 20000.0))
    adc_kev = kev_per_adc_ch * np.arange(ADC_BINS, dtype=float)

    def to_adc(rate: np.ndarray) -> np.ndarray:
        density = rate / resp.widths_kev
        on_adc = np.interp(adc_kev, resp.centers_kev, density, left=0.0, right=0.0)
        return np.clip(on_adc, 0.0, None) * kev_per_adc_ch

    bkg = to_adc(resp.background_rate_spectrum(background_usv_h))
    src = (to_adc(resp.source_rate_spectrum(nuclide, activity_mbq * 1e6, closest_m))
           if nuclide else np.zeros(ADC_BINS))

    def source(t_s: float) -> np.ndarray:
        if not nuclide or speed_m_s <= 0:
            return bkg + src
        tau = (t_s % pass_every_s) - 0.5 * pass_every_s
        return bkg + src * closest_m**2 / (closest_m**2 + (speed_m_s * tau) ** 2)

    return source


@app.command()
def ogd(
    link: Path | None = typer.Option(None, "--link", help="Also create this symlink to the pty (/tmp/ogd0)."),
    rate_hz: float = typer.Option(1.0, "--rate-hz", min=0.05, max=20.0,
                                  help="Output lines per second (the firmware's OUT_REFRESH is 1 s)."),
    speed: float = typer.Option(8.0, "--speed", min=0.0, help="Source pass-by speed, m/s (0: static)."),
    detector: str = typer.Option("NaI 2x2 in", help="Detector model of the hal_sim gamma catalogue."),
    background_usv_h: float = typer.Option(0.08, help="Natural background H*(10) rate, uSv/h."),
    source: str | None = typer.Option("Cs-137", help="Nuclide passing by ('' for background only)."),
    activity_mbq: float = typer.Option(10.0, help="Source activity, MBq."),
    closest_m: float = typer.Option(5.0, help="Closest approach of the source, m."),
    pass_every_s: float = typer.Option(60.0, help="One pass every this many seconds."),
    kev_per_adc_ch: float = typer.Option(0.75, help="keV per ADC channel (the driver's nominal value)."),
    dead_time_us: float = typer.Option(24.0, help="Dead time per pulse the emulated firmware reports, us."),
    seed: int = typer.Option(0, help="Random seed of the Poisson counts."),
    synthetic: bool = typer.Option(False, help="Synthetic spectrum instead of the gamma model (fast start)."),
) -> None:
    """Open Gamma Detector (firmware 4.2 serial protocol, 4096 ADC channels); prints the pty path."""
    from hal_sim.ogd_emulator import OgdEmulator, serve_forever, synthetic_source

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not math.isfinite(pass_every_s) or pass_every_s <= 0:
        raise typer.BadParameter("--pass-every-s must be > 0")
    if synthetic:
        src = synthetic_source(pass_period_s=pass_every_s if speed > 0 else None, closest_m=closest_m,
                               speed_m_s=max(speed, 1e-9))
    else:
        try:
            src = _physics_source(detector, background_usv_h, source or None, activity_mbq, closest_m, speed,
                                  pass_every_s, kev_per_adc_ch)
        except (ValueError, KeyError) as err:
            raise typer.BadParameter(str(err)) from err
    emulator = OgdEmulator(src, period_s=1.0 / rate_hz, seed=seed, dead_time_us=dead_time_us,
                           link_path=link)
    where = emulator.pty_path + (f" (link {link})" if link else "")
    print(f"Open Gamma Detector on {where}, {rate_hz:g} lines/s, {detector}; Ctrl-C to stop", flush=True)
    serve_forever(emulator, _stop_on_sigterm())
