"""Reference fixes for the GPS benchmark: gpsd's decoding of a capture, one record per epoch.

Why gpsd: it is the decoder most Linux GNSS installations use, its regression suite holds
captures from dozens of receiver makes together with its own decoding (``test/daemon/*.log`` and
``*.log.chk``, BSD-2), and the Debian ``gpsd`` package replays any capture the same way
(``gpsfake -1 -p``: the capture's sentences interleaved with the JSON reports gpsd sends its
clients, gpsd_json(5)).  This module turns that output into per-epoch reference fixes, and can
run the real gpsd to produce it (:func:`decode_with_gpsd`) when ``gpsfake`` is installed.

One epoch, one reference: gpsd sends a TPV report whenever its state changes (before it has
learned a receiver's cycle, after nearly every sentence), so the *last* TPV carrying a given
``time`` is gpsd's complete view of that epoch.  A TPV that follows a sentence without a time of
day (``$GPGGA,,,,,,0,,...`` from a receiver without fix) is skipped: gpsd keeps the previous
epoch's time on it, but it describes no epoch.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["decode_with_gpsd", "dump_reference", "gpsd_available", "gpsd_version", "reference_epochs"]

# sentence types whose first time field is the time of day (GLL has it in field 5)
_TIME_FIELD = {"GGA": 1, "RMC": 1, "GNS": 1, "ZDA": 1, "GLL": 5}
_ADDRESS_RE = re.compile(r"^\$[A-Z]{2}([A-Z]{3}),")


def _timeless_fix_sentence(line: str) -> bool:
    """A GGA/RMC/GNS/GLL/ZDA whose time field is empty."""
    m = _ADDRESS_RE.match(line)
    if m is None or m.group(1) not in _TIME_FIELD:
        return False
    fields = line.split("*", 1)[0].split(",")
    i = _TIME_FIELD[m.group(1)]
    return i >= len(fields) or not fields[i].strip()


def reference_epochs(gpsd_output: str) -> list[dict[str, Any]]:
    """gpsfake ``-p`` / regression ``.chk`` text -> one record per epoch, in order.

    Each record: ``time`` (ISO-8601 as gpsd printed it), ``mode`` (1 no fix, 2 2D, 3 3D),
    ``status`` (gpsd prints it only from 2 = DGPS up; 5 dead reckoning, 7 time only, 8 simulator),
    ``lat``, ``lon`` (degrees) and ``alt_msl_m`` when gpsd gave them.
    """
    by_time: dict[str, dict[str, Any]] = {}
    last_sentence = ""
    for raw in gpsd_output.splitlines():
        line = raw.strip()
        if line.startswith("$"):
            last_sentence = line
            continue
        if not line.startswith('{"class":"TPV"'):
            continue
        try:
            tpv = json.loads(line)
        except json.JSONDecodeError:
            continue
        time = tpv.get("time")
        if not isinstance(time, str) or _timeless_fix_sentence(last_sentence):
            continue
        record: dict[str, Any] = {"time": time, "mode": int(tpv.get("mode", 0)), "status": tpv.get("status")}
        for key, out in (("lat", "lat"), ("lon", "lon"), ("altMSL", "alt_msl_m")):
            if isinstance(tpv.get(key), int | float):
                record[out] = tpv[key]
        by_time.pop(time, None)  # keep insertion order = order of the epoch's last report
        by_time[time] = record
    return list(by_time.values())


def dump_reference(ref: dict[str, Any]) -> str:
    """A ``*.fixes.json`` document as text: metadata indented, one epoch per line (diffable)."""
    head = {k: v for k, v in ref.items() if k != "epochs"}
    text = json.dumps(head, indent=1)[:-2]  # drop the closing "\n}"
    rows = ",\n".join("  " + json.dumps(e, separators=(",", ":")) for e in ref.get("epochs", []))
    return f'{text},\n "epochs": [\n{rows}\n ]\n}}\n' if rows else f'{text},\n "epochs": []\n}}\n'


def gpsd_available() -> bool:
    return shutil.which("gpsfake") is not None and shutil.which("gpsd") is not None


def gpsd_version() -> str | None:
    if shutil.which("gpsd") is None:
        return None
    out = subprocess.run(["gpsd", "-V"], capture_output=True, text=True, timeout=10, check=False)
    return (out.stdout or out.stderr).strip() or None


def decode_with_gpsd(capture: Path, timeout_s: float = 120.0, cycle_s: float = 0.01) -> str:
    """Replay ``capture`` through the real gpsd (``gpsfake -1 -p``), return what it reported.

    gpsfake starts a private gpsd on a pty and exits when the capture is played once; ``-s``
    at 38400 Bd keeps a few-hundred-line capture to a few seconds.  ``cycle_s`` between
    sentences gives gpsd time to report each one before the next (on a loaded machine the last
    reports could otherwise be cut off when gpsfake exits).
    """
    if not gpsd_available():
        raise FileNotFoundError("gpsfake/gpsd not installed (Debian: apt-get install gpsd gpsd-clients)")
    # gpsfake connects to the gpsd it has just started; on a loaded machine that first connect can be
    # refused before gpsd listens ("socket error [Errno 111]"): a start-up race of the tool, retried.
    for attempt in range(3):
        proc = subprocess.run(
            ["gpsfake", "-s", "38400", "-c", f"{cycle_s:g}", "-1", "-p", str(capture)],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
        if proc.returncode == 0:
            return proc.stdout
        if "Connection refused" not in proc.stderr or attempt == 2:
            break
        time.sleep(1.0)
    raise RuntimeError(f"gpsfake failed on {capture} ({proc.returncode}): {proc.stderr.strip()[-400:]}")
