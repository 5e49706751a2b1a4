"""Valid and hostile inputs the fuzz benchmark starts from, built with the project's own writers.

Why built rather than stored: a seed that drifts from the current schema would only fuzz the
first validation error; making them with ``make_envelope`` and the N42 writer keeps them valid.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from agent import wire_schema as ws

T_UTC = "2026-11-27T08:00:00.000Z"
N42_NS = "http://physics.nist.gov/N42/2011/N42"
#: Issue 14, row 9: 1.7 kB claiming 10^8 zero channels (took 27 s and 6.4 GB before the limit).
BOMB_2012 = (f'<?xml version="1.0"?><RadInstrumentData xmlns="{N42_NS}"><EnergyCalibration id="ec">'
             "<CoefficientValues>0 3</CoefficientValues></EnergyCalibration><RadMeasurement id=\"m\">"
             "<MeasurementClassCode>Foreground</MeasurementClassCode><RealTimeDuration>PT1S</RealTimeDuration>"
             '<Spectrum id="s" energyCalibrationReference="ec"><LiveTimeDuration>PT1S</LiveTimeDuration>'
             '<ChannelData compressionCode="CountedZeroes">0 100000000</ChannelData></Spectrum></RadMeasurement>'
             "</RadInstrumentData>").encode()


def valid_envelopes() -> list[tuple[str, bytes]]:
    """One valid uplink payload of every kind."""
    pos = ws.Position(lat_deg=51.95, lon_deg=4.05, alt_m=5.0, x_m=1.0, y_m=2.0, z_m=1.5, fix_quality=1, hdop=0.9)
    bodies: dict[str, ws.BaseModel] = {
        "birth": ws.Birth(unit_type="mobile", profile="p", software_version="0.1", site="yard",
                          sensors={"gamma": ws.SensorHealth(state="ok")}),
        "death": ws.Death(),
        "health": ws.Health(uptime_s=1.0, cpu_pct=2.0, mem_rss_mb=50.0, outbox_pending=0, queue_depth={"m": 1},
                            loop_lag_ms=0.1, sensors={}, position=pos),
        "measurement": ws.Measurement(interval_s=1.0, live_time_s=0.98, gross_counts=1000, gross_cps=1020.4,
                                      background_cps=1000.0, dose_rate_usv_h=0.1, detector_model="NaI",
                                      position=pos, speed_m_s=2.0, spectrum=[0, 3, 10, 4, 0, 0, 1],
                                      energy_calibration_kev=[0.5, 2.9, 4e-5]),
        "alarm": ws.Alarm(alarm_id="A1", detector="gross", significance_sigma=6.0, peak_cps=2000.0,
                          background_cps=1000.0, t_peak_utc=T_UTC, position=pos, threshold_sigma=5.0,
                          nuclides=[ws.Nuclide(name="Cs-137", confidence=0.9)], dose_rate_usv_h=0.3),
        "task_event": ws.TaskEvent(task_id="T1", cmd_id="c1", state="confirmed", position=pos,
                                   result=ws.TaskResult(dwell_s=60.0, gross_cps=900.0, background_cps=300.0,
                                                        net_cps=600.0, significance_sigma=40.0)),
        "vitals": ws.Vitals(track_id="t1", heart_rate_bpm=72.0, hr_quality=0.9, evidence={"hr_bpm_z": 2.5},
                            ibi_ms=[830.0, 812.0]),
    }
    out = []
    for kind, body in bodies.items():
        seq = 0 if kind in ws.SESSION_KINDS else 7
        out.append((kind, ws.encode(ws.make_envelope(kind, "mob-1", "a" * 32, seq, T_UTC, 12.5, True, body))))
    return out


def deep_envelope(levels: int) -> bytes:
    """A measurement envelope whose detector model is a list nested ``levels`` deep (issue 14, row 11)."""
    payload = dict(valid_envelopes())["measurement"].decode()
    return payload.replace('"detector_model":"NaI"', '"detector_model":' + "[" * levels + "1" + "]" * levels).encode()


def our_n42() -> bytes:
    """A small N42.42-2012 file from our writer (CountedZeroes runs included)."""
    from agent.hal.interfaces import EnergyCalibration, SpectrumReading
    from agent.spectral_files import SpectrumFile, SpectrumMeasurement, to_n42_bytes

    counts = np.zeros(128, dtype=np.int64)
    counts[5:40] = np.arange(1, 36)
    counts[90] = 250
    reading = SpectrumReading(counts, 59.5, 60.0, EnergyCalibration((0.5, 2.9, 4e-5)),
                              datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), 0.0, "NaI 2x2 in")
    return to_n42_bytes(SpectrumFile((SpectrumMeasurement(reading, "Foreground"),)))
