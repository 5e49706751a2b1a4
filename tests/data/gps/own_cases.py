"""Writes the ``own_*`` captures and their expected fixes from the NMEA 0183 v4.10 sentence definitions.

Run ``python tests/data/gps/own_cases.py`` to regenerate.  The expected fixes are stated here,
from the positions and modes each sentence is given, not computed by the driver: latitude =
degrees + minutes / 60 of the ddmm.mmmm text written into the sentence.  Reference records use
gpsd's vocabulary (mode 1 no fix, 2/3 fix; status 5 dead reckoning, 8 simulator) so the bench
scores them like gpsd's references; ``dates_exact`` asks the bench to compare full dates, not
dates modulo 1024 weeks.

Cases:

* ``own_gns_only`` - a multi-GNSS receiver sending only GNS, GLL and ZDA (no GGA, no RMC): per
  constellation mode strings ("AAN" = GPS and GLONASS fixes, Galileo not used; "NA" = GLONASS
  only, still a fix), one epoch with no fix.
* ``own_gga_zda`` - GGA + ZDA (timing receivers), ZDA after GGA in each epoch, across midnight
  (the date comes from the same epoch's ZDA; 23:59:59 -> 00:00:00 changes it).
* ``own_gll_zda`` - GLL-timed fixes with ZDA first in each epoch; one epoch with status V.
* ``own_placeholders`` - start-up without a fix: empty fields, the no-fix placeholder latitude
  ``8960.0000`` (the time still counts), 99.99 DOP; proprietary and non-standard lines
  ($GYOACC, $SNRSTAT, $LOG108, $PUBX) mixed in; then fixes.
* ``own_simulator`` - simulator mode (GGA quality 8, RMC mode S) and estimated / dead-reckoning
  mode (GGA quality 6, RMC mode E): positions that are not fixes.
* ``own_rollover`` - a receiver hit by the 2019-04-06 GPS week rollover: RMC dated 220899
  (1999-08-22) while the unit's clock reads 2019-04-07; fixes must be dated 2019-04-07.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
from cedge.bench.gps_reference import dump_reference  # noqa: E402

HEADER = "# {name}: written from the NMEA 0183 v4.10 sentence definitions (tests/data/gps/own_cases.py)\n"


def cs(body: str) -> str:
    x = 0
    for ch in body.encode("ascii"):
        x ^= ch
    return f"${body}*{x:02X}\r\n"


def dm_lat(deg: int, minutes: str) -> tuple[str, float]:
    """('4807.1234', 48.118723...) from degrees and the minutes text."""
    return f"{deg:02d}{minutes}", deg + float(minutes) / 60.0


def dm_lon(deg: int, minutes: str) -> tuple[str, float]:
    return f"{deg:03d}{minutes}", deg + float(minutes) / 60.0


def hms(t: datetime) -> str:
    return f"{t:%H%M%S}.{t.microsecond // 10000:02d}"


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write(name: str, lines: list[str], epochs: list[dict], recorded: str, notes: str) -> None:
    (HERE / f"{name}.nmea").write_text(HEADER.format(name=name) + "".join(lines), encoding="ascii", newline="")
    ref = {
        "capture": f"{name}.nmea",
        "receiver": {"make": "written from the standard", "model": "NMEA 0183 v4.10", "exercises": notes},
        "source": {"project": "customs-edge", "path": "tests/data/gps/own_cases.py", "licence": "project licence"},
        "recorded_utc_date": recorded,
        "reference": "expected fixes written from the NMEA 0183 v4.10 sentence definitions",
        "dates_exact": True,
        "epochs": epochs,
    }
    (HERE / f"{name}.fixes.json").write_text(dump_reference(ref), encoding="utf-8")


def gns_only() -> None:
    t0 = datetime(2024, 3, 5, 10, 15, 0, tzinfo=UTC)
    lines, epochs = [], []
    for i in range(8):
        t = t0 + timedelta(seconds=i)
        lat_s, lat = dm_lat(52, f"{21.6802 + 0.0011 * i:07.4f}")
        lon_s, lon = dm_lon(4, f"{53.1230 + 0.0017 * i:07.4f}")
        mode = {3: "NA", 5: "NN"}.get(i, "AAN")
        if mode == "NN":
            lines.append(cs(f"GNGNS,{hms(t)},,,,,NNN,00,,,,,,V"))
            lines.append(cs(f"GNGLL,,,,,{hms(t)},V,N"))
            epochs.append({"time": iso(t), "mode": 1, "status": None})
        else:
            lines.append(cs(f"GNGNS,{hms(t)},{lat_s},N,{lon_s},E,{mode},11,0.9,12.3,47.1,,,V"))
            lines.append(cs(f"GNGLL,{lat_s},N,{lon_s},E,{hms(t)},A,A"))
            epochs.append({"time": iso(t), "mode": 3, "status": None, "lat": lat, "lon": lon, "alt_msl_m": 12.3})
        lines.append(cs(f"GNZDA,{hms(t)},{t:%d},{t:%m},{t:%Y},00,00"))
    write("own_gns_only", lines, epochs, "2024-03-05", "GNS + GLL + ZDA only; GLONASS-only mode NA; an NNN epoch")


def gga_zda() -> None:
    t0 = datetime(2023, 12, 31, 23, 59, 56, tzinfo=UTC)
    lines, epochs = [], []
    for i in range(8):
        t = t0 + timedelta(seconds=i)
        lat_s, lat = dm_lat(33, f"{48.6070 + 0.0003 * i:07.4f}")
        lon_s, lon = dm_lon(118, f"{21.1240 - 0.0002 * i:07.4f}")
        lines.append(cs(f"GPGGA,{hms(t)},{lat_s},S,{lon_s},W,2,09,0.8,49.1,M,-32.4,M,3.0,0138"))
        lines.append(cs(f"GPZDA,{hms(t)},{t:%d},{t:%m},{t:%Y},00,00"))
        epochs.append({"time": iso(t), "mode": 3, "status": 2, "lat": -lat, "lon": -lon, "alt_msl_m": 49.1})
    write("own_gga_zda", lines, epochs, "2024-01-01", "GGA + ZDA, ZDA after GGA, across midnight and new year")


def gll_zda() -> None:
    t0 = datetime(2022, 7, 14, 6, 0, 0, 500000, tzinfo=UTC)
    lines, epochs = [], []
    for i in range(7):
        t = t0 + timedelta(seconds=i)
        lat_s, lat = dm_lat(1, f"{17.5500 + 0.0100 * i:07.4f}")
        lon_s, lon = dm_lon(36, f"{49.0100:07.4f}")
        lines.append(cs(f"GPZDA,{hms(t)},{t:%d},{t:%m},{t:%Y},03,00"))
        if i == 4:
            lines.append(cs(f"GPGLL,{lat_s},S,{lon_s},E,{hms(t)},V,N"))
            epochs.append({"time": iso(t), "mode": 1, "status": None})
        else:
            lines.append(cs(f"GPGLL,{lat_s},S,{lon_s},E,{hms(t)},A,D"))
            epochs.append({"time": iso(t), "mode": 2, "status": 2, "lat": -lat, "lon": lon})
    write("own_gll_zda", lines, epochs, "2022-07-14",
          "GLL-timed fixes, ZDA first; a status V epoch; local zone +3 ignored")


def placeholders() -> None:
    t0 = datetime(2025, 2, 1, 8, 30, 0, tzinfo=UTC)
    lines, epochs = [], []
    for i in range(8):
        t = t0 + timedelta(seconds=i)
        lines.append(cs("GYOACC,1.25,0.75"))  # non-standard address
        lines.append("$SNRSTAT,3,42,38,40\r\n")  # non-standard, no checksum
        if i < 3:
            lines.append(cs(f"GPRMC,{hms(t)},V,,,,,,,{t:%d%m%y},,,N"))
            lines.append(cs(f"GPGGA,{hms(t)},8960.0000,N,00000.0000,E,0,00,99.99,,M,,M,,"))
            epochs.append({"time": iso(t), "mode": 1, "status": None})
        else:
            lat_s, lat = dm_lat(59, f"{19.3456 + 0.0002 * i:07.4f}")
            lon_s, lon = dm_lon(18, f"{4.1234:07.4f}")
            lines.append(cs(f"GPRMC,{hms(t)},A,{lat_s},N,{lon_s},E,0.12,,{t:%d%m%y},,,A"))
            lines.append(cs(f"GPGGA,{hms(t)},{lat_s},N,{lon_s},E,1,07,1.4,,M,,M,,"))
            epochs.append({"time": iso(t), "mode": 2, "status": None, "lat": lat, "lon": lon})
        lines.append("$LOG108,boot=1,fw=2.3\r\n")
        lines.append(cs(f"PUBX,00,{hms(t)},5919.3456,N,01804.1234,E,0.0,NF,0,0,0,0,0,0,0,0,0,0,0"))
    write("own_placeholders", lines, epochs, "2025-02-01",
          "no-fix start-up: empty fields, 8960.0000 placeholder latitude, 99.99 DOP; $GYOACC, $SNRSTAT, "
          "$LOG108, $PUBX ignored")


def simulator() -> None:
    t0 = datetime(2021, 9, 9, 14, 0, 0, tzinfo=UTC)
    lines, epochs = [], []
    for i in range(9):
        t = t0 + timedelta(seconds=i)
        lat_s, lat = dm_lat(40, f"{23.8600 + 0.0060 * i:07.4f}")
        lon_s, lon = dm_lon(3, f"{39.1630:07.4f}")
        if i < 3:  # simulator
            q, mode, status, st = 8, "S", "A", 8
        elif i < 6:  # estimated (dead reckoning): a tunnel
            q, mode, status, st = 6, "E", "A", 5
        else:  # real fixes again
            q, mode, status, st = 1, "A", "A", None
        lines.append(cs(f"GPRMC,{hms(t)},{status},{lat_s},N,{lon_s},W,10.8,0.0,{t:%d%m%y},2.5,W,{mode}"))
        lines.append(cs(f"GPGGA,{hms(t)},{lat_s},N,{lon_s},W,{q},09,2.0,695.7,M,51.6,M,,"))
        epochs.append({"time": iso(t), "mode": 3, "status": st, "lat": lat, "lon": -lon, "alt_msl_m": 695.7})
    write("own_simulator", lines, epochs, "2021-09-09",
          "simulator (GGA 8, mode S) and dead reckoning (GGA 6, mode E) are not fixes")


def rollover() -> None:
    true0 = datetime(2019, 4, 7, 0, 2, 31, tzinfo=UTC)
    shown0 = true0 - timedelta(weeks=1024)  # what the receiver says: 1999-08-22
    assert shown0.date().isoformat() == "1999-08-22"
    lines, epochs = [], []
    for i in range(5):
        t, shown = true0 + timedelta(seconds=i), shown0 + timedelta(seconds=i)
        lat_s, lat = dm_lat(48, f"{29.0005:07.4f}")
        lon_s, lon = dm_lon(0, f"{22.0016 + 0.0001 * i:07.4f}")
        lines.append(cs(f"GPRMC,{hms(shown)},A,{lat_s},N,{lon_s},E,0.16,212.28,{shown:%d%m%y},,,A"))
        lines.append(cs(f"GPGGA,{hms(shown)},{lat_s},N,{lon_s},E,1,06,1.2,88.0,M,47.0,M,,"))
        epochs.append({"time": iso(t), "mode": 3, "status": None, "lat": lat, "lon": lon, "alt_msl_m": 88.0})
    write("own_rollover", lines, epochs, "2019-04-07", "RMC dated 1999-08-22 after the 2019-04-06 week rollover")


if __name__ == "__main__":
    for case in (gns_only, gga_zda, gll_zda, placeholders, simulator, rollover):
        case()
