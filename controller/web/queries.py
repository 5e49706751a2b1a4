"""What the console shows, read from the controller's store (a read connection of its own).

Every function takes the store and returns JSON-ready rows; the HTTP layer (controller.web.api) and
the live push (controller.web.sse) share them, so a pushed row and a fetched row are the same shape.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import numpy as np

from controller.store import Store, epoch_s

__all__ = ["alarm_spectrum", "list_actions", "list_alarms", "list_incidents", "positions_after", "timeline",
           "unit_rows", "vitals_rows", "watermarks", "waterfall"]

_UNIT_COLS = ("unit_id", "unit_type", "state", "state_since_utc", "last_seen_utc", "x_m", "y_m", "z_m",
              "available", "task_id", "sensors", "outbox_pending", "messages", "software_version", "boot_id")
CHI2_2DOF_95 = 5.991  # 95 % quantile of chi-square with 2 degrees of freedom: the 95 % ellipse scale


def unit_rows(store: Store) -> list[dict[str, Any]]:
    return [{k: u.get(k) for k in _UNIT_COLS} for u in store.list_units()]


def list_alarms(store: Store, limit: int = 200, after_id: int = 0) -> list[dict[str, Any]]:
    rows = store.query(
        "SELECT a.id, a.alarm_id, a.unit_id, a.t_peak_utc, a.significance_sigma, a.peak_cps, a.background_cps, "
        "a.x_m, a.y_m, a.nuclides, a.dose_rate_usv_h, a.incident_id, a.delivery, "
        "(SELECT w.\"user\" || ' ' || w.t_utc FROM web_actions w WHERE w.action = 'ack_alarm' "
        " AND w.target = a.alarm_id ORDER BY w.id LIMIT 1) AS acked "
        "FROM alarms a WHERE a.id > ? ORDER BY a.id DESC LIMIT ?", (after_id, limit))
    return rows[::-1]


def _region_95(inc: dict[str, Any]) -> dict[str, Any] | None:
    """The 95 % region of the estimate as an ellipse in local metres (centre, semi-axes, angle).

    The localization's own 1-sigma ellipse (``ellipse_major_m``/``minor``/``angle_deg``, from the
    fit's covariance) scaled by sqrt(5.991), the 95 % contour of a 2-D Gaussian; without it (the
    fallback estimate) a circle of that scale times ``sigma_xy_m``."""
    if inc.get("est_x_m") is None:
        return None
    est = inc.get("estimate") or {}
    scale = math.sqrt(CHI2_2DOF_95)
    if est.get("ellipse_major_m") is not None and est.get("ellipse_minor_m") is not None:
        return {"x_m": inc["est_x_m"], "y_m": inc["est_y_m"], "a_m": scale * float(est["ellipse_major_m"]),
                "b_m": scale * float(est["ellipse_minor_m"]),
                "angle_rad": math.radians(float(est.get("ellipse_angle_deg") or 0.0)), "source": "fit ellipse"}
    sigma = inc.get("sigma_xy_m")
    if sigma is None:
        return None
    r = scale * float(sigma)
    return {"x_m": inc["est_x_m"], "y_m": inc["est_y_m"], "a_m": r, "b_m": r, "angle_rad": 0.0,
            "source": "sigma_xy circle"}


def list_incidents(store: Store) -> list[dict[str, Any]]:
    out = []
    for inc in store.list_incidents():
        alarms = inc.get("alarms") or []
        names: dict[str, float] = {}
        for a in store.query("SELECT nuclides FROM alarms WHERE incident_id = ?", (inc["incident_id"],)):
            for n in a.get("nuclides") or []:
                names[n["name"]] = max(names.get(n["name"], 0.0), float(n.get("confidence") or 0.0))
        est = inc.get("estimate") or {}
        out.append({
            "incident_id": inc["incident_id"], "state": inc["state"], "created_utc": inc["created_utc"],
            "updated_utc": inc["updated_utc"], "passes": inc["passes"], "units": inc.get("units"),
            "alarm_ids": [a.get("alarm_id") for a in alarms if isinstance(a, dict)],
            "est_x_m": inc.get("est_x_m"), "est_y_m": inc.get("est_y_m"), "est_z_m": inc.get("est_z_m"),
            "sigma_xy_m": inc.get("sigma_xy_m"), "ambiguous": bool(inc.get("ambiguous")),
            "height_m": inc.get("est_z_m"), "height_sigma_m": est.get("sigma_z_m"),
            "method": est.get("method"), "region_95": _region_95(inc), "candidates": est.get("candidates"),
            "nuclides": [{"name": k, "confidence": v} for k, v in sorted(names.items(), key=lambda kv: -kv[1])],
            "task_id": inc.get("task_id"),
        })
    return out


def vitals_rows(store: Store) -> list[dict[str, Any]]:
    """Camera boxes: the newest message of each (unit, track), numbers only, with the cues behind an alert."""
    from controller.console import evidence_summary

    cols = ("unit_id", "track_id", "t_utc", "heart_rate_bpm", "hr_quality", "respiration_rate_bpm",
            "blink_rate_per_min", "abnormal_score", "alert")
    return [{**{k: v.get(k) for k in cols}, "why": evidence_summary(v.get("evidence")) if v.get("alert") else ""}
            for v in store.list_vitals(latest_per_track=True)]


def list_actions(store: Store, after_id: int = 0, limit: int = 200) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM web_actions WHERE id > ? ORDER BY id DESC LIMIT ?", (after_id, limit))[::-1]


def positions_after(store: Store, after_id: int, since_epoch_s: float | None = None,
                    limit: int = 5000) -> list[dict[str, Any]]:
    """Unit positions from measurements (mobile and handheld tracks), oldest first."""
    sql = ("SELECT id, unit_id, t_epoch_s, received_utc, x_m, y_m, gross_cps, background_cps, live_time_s "
           "FROM measurements "
           "WHERE id > ? AND x_m IS NOT NULL")
    params: list[Any] = [after_id]
    if since_epoch_s is not None:
        sql += " AND t_epoch_s >= ?"
        params.append(since_epoch_s)
    return store.query(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])[::-1]


def watermarks(store: Store) -> dict[str, Any]:
    """Cheap change detectors polled by the live push: newest ids and update times."""
    row = store.query(
        "SELECT (SELECT MAX(id) FROM alarms) AS alarms, (SELECT MAX(id) FROM measurements) AS measurements, "
        "(SELECT MAX(id) FROM health) AS health, (SELECT MAX(id) FROM vitals) AS vitals, "
        " (SELECT MAX(last_seen_utc) || MAX(state_since_utc) FROM units) "
        "AS units, (SELECT MAX(updated_utc) FROM tasks) AS tasks, (SELECT MAX(updated_utc) FROM incidents) "
        "AS incidents, (SELECT MAX(id) || ':' || COUNT(done_utc) FROM web_actions) AS actions, "
        "(SELECT MAX(stored_utc) || ':' || COUNT(*) FROM cctv_alerts) AS cctv_alerts")[0]
    return {k: (v or 0) for k, v in row.items()}


def cctv_alert_rows(store: Store, limit: int = 200) -> list[dict[str, Any]]:
    """The hall CCTV's behaviour alerts (controller.cctv), newest last, with a one-line text for the
    operator; the evidence (trajectories, dwell) is left out of the list: it is up to
    ``cctv.max_evidence_bytes`` per alert and the console only names what to look at."""
    out = []
    for a in store.list_cctv_alerts(limit=limit):
        zones = [str(z) for z in (a.get("zones") or [])]
        people = [str(t) for t in (a.get("trajectory_ids") or [])]
        where = f" in {', '.join(zones)}" if zones else ""
        out.append({"alert_id": a["alert_id"], "rule": a["rule"], "zones": zones, "trajectory_ids": people,
                    "t_start_utc": a["t_start_utc"], "t_end_utc": a["t_end_utc"], "t_raised_utc": a["t_raised_utc"],
                    "text": f"CCTV {a['rule']}{where}: {len(people)} traveller{'s' if len(people) != 1 else ''} "
                            f"(alert {a['alert_id']})"})
    return out


def timeline(store: Store, limit: int = 300) -> list[dict[str, Any]]:
    """Alarms, task transitions, hall CCTV alerts, unit states (changes, births, deaths) and operator
    actions, newest last."""
    events: list[dict[str, Any]] = []
    for a in store.query("SELECT alarm_id, unit_id, t_peak_utc, significance_sigma FROM alarms ORDER BY id DESC "
                         "LIMIT ?", (limit,)):
        events.append({"t_utc": a["t_peak_utc"], "kind": "alarm", "unit_id": a["unit_id"],
                       "text": f"alarm {a['alarm_id']} {a['significance_sigma']:.1f} sigma"})
    for t in store.list_tasks():
        for h in t.get("history") or []:
            what = h.get("event") or h.get("state")
            events.append({"t_utc": h.get("t_utc"), "kind": "task", "unit_id": h.get("unit_id"),
                           "text": f"task {t['task_id']} {what}" + (f": {h['reason']}" if h.get("reason") else "")})
    for w in list_actions(store, limit=limit):
        events.append({"t_utc": w["t_utc"], "kind": "action", "unit_id": None,
                       "text": f"{w['user']} {w['action']} {w['target']}: {w['state']}"
                               + (f" ({w['result']})" if w.get("result") else "")})
    for c in cctv_alert_rows(store, limit=limit):
        events.append({"t_utc": c["t_raised_utc"], "kind": "cctv", "unit_id": None, "text": c["text"]})
    # unit states: the changes the console recorded (controller.web.sse), births and deaths from the
    # store's session ledger, and the current state of a unit with no recorded change
    changed: set[str] = set()
    for c in store.query("SELECT t_utc, unit_id, state, previous FROM web_unit_states ORDER BY id DESC LIMIT ?",
                         (limit,)):
        changed.add(c["unit_id"])
        events.append({"t_utc": c["t_utc"], "kind": "unit", "unit_id": c["unit_id"],
                       "text": f"{c['unit_id']} {c['previous'] + ' -> ' if c['previous'] else ''}{c['state']}"})
    for b in store.query("SELECT unit_id, boot_id, kind, CASE WHEN clock_valid = 1 THEN t_utc ELSE received_utc "
                         "END AS t FROM sessions ORDER BY id DESC LIMIT ?", (limit,)):
        events.append({"t_utc": b["t"], "kind": "unit", "unit_id": b["unit_id"],
                       "text": f"{b['unit_id']} {b['kind']} (boot {str(b['boot_id'])[:12]})"})
    for u in store.list_units():
        if u["unit_id"] not in changed:
            events.append({"t_utc": u["state_since_utc"], "kind": "unit", "unit_id": u["unit_id"],
                           "text": f"{u['unit_id']} {u['state']}"})
    events = [e for e in events if e["t_utc"]]
    events.sort(key=lambda e: epoch_s(e["t_utc"]) or 0.0)
    return events[-limit:]


def _lines(nuclides: list[dict[str, Any]], e_max_kev: float) -> list[dict[str, Any]]:
    from agent.spectral.library import LibraryError, default_library

    lib, out = default_library(), []
    for n in nuclides:
        try:
            src = lib[n["name"]]
        except LibraryError:
            continue
        energies, yields = src.lines_above(0.02)
        for e, y in zip(energies, yields, strict=True):
            if e <= e_max_kev:
                out.append({"nuclide": n["name"], "energy_kev": round(float(e), 3), "yield": round(float(y), 4)})
    return out


def alarm_spectrum(store: Store, alarm_id: str, window_s: float = 15.0,
                   background_s: tuple[float, float] = (600.0, 30.0)) -> dict[str, Any] | None:
    """The alarm's spectrum, its background and the lines of the nuclides the unit identified.

    Spectrum: the alarming unit's spectra from ``window_s`` before the peak to ``window_s`` after
    the alarm was sent, summed (units send spectra while an alarm episode is active, which may
    start after the gross-count peak).  Background: the same unit's spectra 600..30 s before the
    peak, scaled to the alarm's live time; none when the unit sends spectra only in alarm.
    None if the alarm is unknown."""
    rows = store.query("SELECT * FROM alarms WHERE alarm_id = ? ORDER BY id LIMIT 1", (alarm_id,))
    if not rows:
        return None
    a = rows[0]
    t = a.get("t_peak_epoch_s") or a.get("t_epoch_s")
    t_sent = max(a.get("t_epoch_s") or t, t)
    sel = ("SELECT spectrum, energy_calibration_kev, live_time_s FROM measurements WHERE unit_id = ? "
           "AND spectrum IS NOT NULL AND t_epoch_s BETWEEN ? AND ? ORDER BY id LIMIT 2000")
    fg = store.query(sel, (a["unit_id"], t - window_s, t_sent + window_s))
    # background: only spectra whose gross rate was within 3 sigma of the unit's own background
    # estimate then, so an earlier alarm episode's spectra never pose as background
    bg = [r for r in store.query(sel.replace("SELECT spectrum,", "SELECT gross_cps, background_cps, spectrum,"),
                                 (a["unit_id"], t - background_s[0], t - background_s[1]))
          if r.get("background_cps") is not None and r.get("gross_cps") is not None
          and r["gross_cps"] - r["background_cps"]
          <= 3.0 * math.sqrt(max(r["background_cps"], 1.0) / max(r.get("live_time_s") or 1.0, 1e-3))]

    def total(rs: list[dict[str, Any]]) -> tuple[np.ndarray | None, float]:
        if not rs:
            return None, 0.0
        n = max(len(r["spectrum"]) for r in rs)
        acc = np.zeros(n)
        for r in rs:
            acc[: len(r["spectrum"])] += r["spectrum"]
        return acc, float(sum(r.get("live_time_s") or 0.0 for r in rs))

    spec, live = total(fg)
    back, back_live = total(bg)
    if back is not None and spec is not None and back_live > 0 and live > 0:
        back = back[: len(spec)] * (live / back_live)
    cal = (fg or bg or [{}])[0].get("energy_calibration_kev") or None
    n_ch = len(spec) if spec is not None else 0
    e_max = float(np.polyval(cal[::-1], n_ch)) if cal and n_ch else 3000.0
    return {
        "alarm_id": alarm_id, "unit_id": a["unit_id"], "t_peak_utc": a["t_peak_utc"],
        "nuclides": a.get("nuclides") or [], "energy_calibration_kev": cal,
        "live_time_s": live, "spectra_summed": len(fg),
        "counts": spec.astype(int).tolist() if spec is not None else None,
        "background": np.round(back, 3).tolist() if back is not None else None,
        "background_live_time_s": back_live, "background_spectra": len(bg),
        "lines": _lines(a.get("nuclides") or [], e_max),
    }


def db_error_text(err: sqlite3.Error) -> str:
    return f"database error: {err}"


WATERFALL_BINS = 128
WATERFALL_MAX_ROWS = 600


def waterfall(store: Store, unit_id: str, t0_epoch_s: float, t1_epoch_s: float,
              bins: int = WATERFALL_BINS) -> dict[str, Any]:
    """A unit's spectra along its track as a waterfall: one row per measurement (oldest first), counts
    rebinned onto ``bins`` equal energy bins from 0 to the highest calibrated energy, with the row's
    time, position and gross rate - the display mobile systems give the driver and the analyst.

    Rebinning: each channel's counts go to the bin holding the channel's centre energy (the unit's
    own polynomial calibration), so rows with different calibrations line up in energy."""
    rows = store.query("SELECT t_utc, t_epoch_s, x_m, y_m, gross_cps, live_time_s, spectrum, energy_calibration_kev "
                       "FROM measurements WHERE unit_id = ? AND spectrum IS NOT NULL AND t_epoch_s BETWEEN ? AND ? "
                       "ORDER BY t_epoch_s LIMIT ?", (unit_id, t0_epoch_s, t1_epoch_s, WATERFALL_MAX_ROWS))
    e_max = 0.0
    prepared = []
    for r in rows:
        counts = np.asarray(r["spectrum"], dtype=float)
        cal = r.get("energy_calibration_kev") or [0.0, 3.0]
        energies = np.polyval(np.asarray(cal, dtype=float)[::-1], np.arange(counts.size) + 0.5)
        e_max = max(e_max, float(energies[-1]) if counts.size else 0.0)
        prepared.append((r, counts, energies))
    e_max = e_max or 3000.0
    edges = np.linspace(0.0, e_max, bins + 1)
    out = []
    for r, counts, energies in prepared:
        binned, _ = np.histogram(energies, bins=edges, weights=counts)
        live = float(r.get("live_time_s") or 1.0)
        out.append({"t_utc": r["t_utc"], "x_m": r.get("x_m"), "y_m": r.get("y_m"), "gross_cps": r.get("gross_cps"),
                    "cps_per_bin": np.round(binned / live, 3).tolist()})
    return {"unit_id": unit_id, "bins": bins, "e_max_kev": e_max, "rows": out}
