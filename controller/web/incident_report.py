"""An incident as one self-contained HTML file: the map and the spectra, for the file and the e-mail.

Why server-side SVG and no script: the report leaves the control room (to the customs' case file,
to a reach-back analyst) and must open anywhere, offline, years later, without the console; an
HTML file with inline SVG drawings and inline CSS has no dependency and runs no code.  Every value
that came from a unit (ids, nuclide names, notes) is HTML-escaped.

Contents: the estimate (x, y, height, 95 % region, method, nuclides), a map in local metres (the
tracks of the units in the incident's time window, the alarm points, the 95 % ellipse, the task's
target and the handheld's path), each alarm's spectrum against its background with the identified
nuclides' lines (same data as ``GET /api/alarms/{id}/spectrum``), the task history and the operator
actions on the incident.  The N42.42 export (``controller.incident_export``) carries the raw data.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from typing import Any

from controller.store import Store
from controller.web import queries

__all__ = ["render_incident_report"]

TRACK_MARGIN_S = 300.0  # tracks from this long before the first alarm to this long after the last
MAX_TRACK_POINTS = 20_000
MAX_SPECTRA = 6
_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]


def _e(v: Any) -> str:
    return html.escape("-" if v is None else str(v), quote=True)


def _f(v: Any, d: int = 1) -> str:
    return "-" if v is None else f"{float(v):.{d}f}"


def _map_svg(inc: dict[str, Any], alarms: list[dict[str, Any]], tracks: dict[str, list[tuple[float, float]]],
             types: dict[str, str], task: dict[str, Any] | None, w: int = 760, h: int = 520) -> str:
    r = inc.get("region_95")
    pts = [(a["x_m"], a["y_m"]) for a in alarms if a.get("x_m") is not None]
    if r:
        pts += [(r["x_m"] - r["a_m"], r["y_m"] - r["a_m"]), (r["x_m"] + r["a_m"], r["y_m"] + r["a_m"])]
    if task and task.get("target_x_m") is not None:
        pts.append((task["target_x_m"], task["target_y_m"]))
    if not pts:
        pts = [p for t in tracks.values() for p in t] or [(0.0, 0.0)]
    pad = 40.0
    x0, x1 = min(p[0] for p in pts) - pad, max(p[0] for p in pts) + pad
    y0, y1 = min(p[1] for p in pts) - pad, max(p[1] for p in pts) + pad
    s = min((w - 40) / (x1 - x0), (h - 40) / (y1 - y0))
    px = lambda x: 20 + (x - x0) * s  # noqa: E731
    py = lambda y: h - 20 - (y - y0) * s  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="#fbfbfb"/>']
    step = 50 if (x1 - x0) > 300 else 10
    for gx in range(int(math.ceil(x0 / step)) * step, int(x1) + 1, step):
        out.append(f'<line x1="{px(gx):.1f}" y1="0" x2="{px(gx):.1f}" y2="{h}" stroke="#e3e3e3"/>'
                   f'<text x="{px(gx) + 2:.1f}" y="{h - 4}" fill="#888">{gx}</text>')
    for gy in range(int(math.ceil(y0 / step)) * step, int(y1) + 1, step):
        out.append(f'<line x1="0" y1="{py(gy):.1f}" x2="{w}" y2="{py(gy):.1f}" stroke="#e3e3e3"/>'
                   f'<text x="2" y="{py(gy) - 2:.1f}" fill="#888">{gy}</text>')
    for k, (unit, t) in enumerate(sorted(tracks.items())):
        if len(t) < 2:
            continue
        dash = ' stroke-dasharray="5 3"' if types.get(unit) == "handheld" else ""
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in t)
        out.append(f'<polyline points="{path}" fill="none" stroke="{_COLORS[k % len(_COLORS)]}" stroke-width="1.5"'
                   f' opacity="0.8"{dash}><title>{_e(unit)}</title></polyline>'
                   f'<text x="{px(t[-1][0]) + 4:.1f}" y="{py(t[-1][1]):.1f}">{_e(unit)}</text>')
    if r:
        out.append(f'<ellipse cx="{px(r["x_m"]):.1f}" cy="{py(r["y_m"]):.1f}" rx="{max(r["a_m"] * s, 2):.1f}" '
                   f'ry="{max(r["b_m"] * s, 2):.1f}" fill="#ffb020" fill-opacity="0.15" stroke="#e08a00" '
                   f'stroke-width="2" transform="rotate({-math.degrees(r["angle_rad"]):.2f} {px(r["x_m"]):.1f} '
                   f'{py(r["y_m"]):.1f})"><title>95 % region</title></ellipse>'
                   f'<path d="M{px(r["x_m"]) - 7:.1f},{py(r["y_m"]):.1f}h14M{px(r["x_m"]):.1f},'
                   f'{py(r["y_m"]) - 7:.1f}v14" stroke="#a05a00" stroke-width="2"/>')
    if task and task.get("target_x_m") is not None:
        out.append(f'<circle cx="{px(task["target_x_m"]):.1f}" cy="{py(task["target_y_m"]):.1f}" '
                   f'r="{max(float(task.get("radius_m") or 0) * s, 4):.1f}" fill="none" stroke="#333" '
                   f'stroke-dasharray="3 3"><title>task target</title></circle>')
    for a in alarms:
        if a.get("x_m") is None:
            continue
        x, y = px(a["x_m"]), py(a["y_m"])
        out.append(f'<path d="M{x:.1f},{y - 8:.1f}L{x + 7:.1f},{y + 5:.1f}L{x - 7:.1f},{y + 5:.1f}Z" fill="#d62728">'
                   f'<title>alarm {_e(a["alarm_id"])}</title></path>')
    out.append(f'<text x="{w - 150}" y="16" fill="#555">local metres, north up</text></svg>')
    return "".join(out)


def _spectrum_svg(spec: dict[str, Any], w: int = 760, h: int = 300) -> str:
    counts, back = spec.get("counts"), spec.get("background")
    if not counts:
        return "<p>No spectra stored for this alarm.</p>"
    cal = spec.get("energy_calibration_kev") or [0.0, 1.0]
    energy = lambda ch: sum(c * ch ** k for k, c in enumerate(cal))  # noqa: E731
    e_max = energy(len(counts))
    top = math.log10(max(max(counts), max(back or [1]), 1) * 2)
    px = lambda e: 50 + (w - 60) * e / e_max  # noqa: E731
    py = lambda v: h - 30 - (h - 50) * math.log10(max(v, 0.5) * 2) / top  # noqa: E731

    def line(values: list[float], color: str, label: str) -> str:
        pts = " ".join(f"{px(energy(i + 0.5)):.1f},{py(v):.1f}" for i, v in enumerate(values))
        return (f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1">'
                f'<title>{label}</title></polyline>')

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="#fbfbfb"/>']
    for e in range(0, int(e_max) + 1, 500):
        out.append(f'<line x1="{px(e):.1f}" y1="{h - 30}" x2="{px(e):.1f}" y2="{h - 25}" stroke="#555"/>'
                   f'<text x="{px(e) - 10:.1f}" y="{h - 12}">{e}</text>')
    out.append(f'<text x="{w / 2 - 30:.0f}" y="{h - 1}">energy, keV</text>'
               f'<text x="4" y="14">counts per channel (log)</text>')
    if back:
        out.append(line(back, "#999", "background, scaled to the alarm's live time"))
    out.append(line(counts, "#1f77b4", "alarm spectrum"))
    for ln in spec.get("lines") or []:
        x = px(ln["energy_kev"])
        out.append(f'<line x1="{x:.1f}" y1="20" x2="{x:.1f}" y2="{h - 30}" stroke="#d62728" stroke-dasharray="4 2"/>'
                   f'<text x="{x + 3:.1f}" y="{30 + 12 * (round(ln["energy_kev"]) % 3)}" fill="#d62728">'
                   f'{_e(ln["nuclide"])} {ln["energy_kev"]:.1f}</text>')
    out.append("</svg>")
    return "".join(out)


def render_incident_report(store: Store, incident_id: str, exported_by: str) -> str | None:
    """The report as one HTML string, or None if the incident is unknown."""
    inc = next((i for i in queries.list_incidents(store) if i["incident_id"] == incident_id), None)
    raw = store.get_incident(incident_id)
    if inc is None or raw is None:
        return None
    alarms = store.query("SELECT alarm_id, unit_id, t_peak_utc, t_epoch_s, significance_sigma, peak_cps, "
                         "background_cps, x_m, y_m, nuclides FROM alarms WHERE incident_id = ? ORDER BY id",
                         (incident_id,))
    t_lo = (raw.get("first_alarm_epoch_s") or min((a["t_epoch_s"] for a in alarms), default=0.0)) - TRACK_MARGIN_S
    t_hi = (raw.get("last_alarm_epoch_s") or max((a["t_epoch_s"] for a in alarms), default=0.0)) + TRACK_MARGIN_S
    task = store.get_task(inc["task_id"]) if inc.get("task_id") else None
    tracks: dict[str, list[tuple[float, float]]] = {}
    for p in store.query("SELECT unit_id, x_m, y_m FROM measurements WHERE t_epoch_s BETWEEN ? AND ? "
                         "AND x_m IS NOT NULL ORDER BY id LIMIT ?", (t_lo, t_hi, MAX_TRACK_POINTS)):
        tracks.setdefault(p["unit_id"], []).append((float(p["x_m"]), float(p["y_m"])))
    types = {u["unit_id"]: u["unit_type"] for u in store.list_units()}
    spectra = [s for s in (queries.alarm_spectrum(store, a["alarm_id"]) for a in alarms[:MAX_SPECTRA]) if s]
    actions = store.query('SELECT t_utc, "user", role, action, target, state, result FROM web_actions '
                          "WHERE target = ? OR target IN (SELECT alarm_id FROM alarms WHERE incident_id = ?) "
                          "OR (target = ? AND ? != '') ORDER BY id",
                          (incident_id, incident_id, inc.get("task_id") or "", inc.get("task_id") or ""))
    r = inc.get("region_95") or {}
    t = task or {}
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    nucl = ", ".join(f"{_e(n['name'])} ({float(n['confidence']):.2f})" for n in inc["nuclides"]) or "none identified"
    rows = "".join(f"<tr><td>{_e(a['alarm_id'])}</td><td>{_e(a['unit_id'])}</td><td>{_e(a['t_peak_utc'])}</td>"
                   f"<td>{_f(a['significance_sigma'])}</td><td>{_f(a['peak_cps'], 0)}</td>"
                   f"<td>{_f(a['background_cps'], 0)}</td><td>{_f(a['x_m'])}, {_f(a['y_m'])}</td></tr>"
                   for a in alarms)
    hist = "".join(f"<li>{_e(h.get('t_utc'))} {_e(h.get('event') or h.get('state'))} {_e(h.get('unit_id') or '')}"
                   f"{(' - ' + _e(h['reason'])) if h.get('reason') else ''}</li>" for h in (task or {}).get("history")
                   or [])
    acts = "".join(f"<li>{_e(a['t_utc'])} {_e(a['user'])} ({_e(a['role'])}) {_e(a['action'])} {_e(a['target'])}: "
                   f"{_e(a['state'])}{(' - ' + _e(a['result'])) if a.get('result') else ''}</li>" for a in actions)
    specs = "".join(f"<h3>Alarm {_e(s['alarm_id'])} ({_e(s['unit_id'])}, peak {_e(s['t_peak_utc'])})</h3>"
                    f"{_spectrum_svg(s)}<p class=n>{s['spectra_summed']} spectra, {_f(s['live_time_s'])} s live "
                    f"(blue); background: {s['background_spectra']} spectra scaled to the same live time (grey); "
                    "red: lines of the identified nuclides.</p>" for s in spectra)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Incident {_e(incident_id)}</title>
<style>body{{font-family:sans-serif;max-width:800px;margin:1em auto;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}.n{{color:#555;font-size:12px}}</style></head><body>
<h1>Incident {_e(incident_id)}</h1>
<p class=n>customs-edge incident report, exported {now} by {_e(exported_by)}. Positions in local site metres
(x east, y north). Raw data: the N42.42-2012 export of the same incident.</p>
<table>
<tr><th>state</th><td>{_e(inc['state'])}</td></tr>
<tr><th>created / updated (UTC)</th><td>{_e(inc['created_utc'])} / {_e(inc['updated_utc'])}</td></tr>
<tr><th>estimate x, y m</th><td>{_f(inc['est_x_m'])}, {_f(inc['est_y_m'])}</td></tr>
<tr><th>height m</th><td>{_f(inc['height_m'])} (1 sigma {_f(inc['height_sigma_m'])})</td></tr>
<tr><th>95 % region</th><td>{'ellipse ' + _f(r.get('a_m')) + ' x ' + _f(r.get('b_m')) + ' m (' + _e(r.get('source'))
                             + ')' if r else 'none'}</td></tr>
<tr><th>method</th><td>{_e(inc['method'])}{' (ambiguous)' if inc['ambiguous'] else ''}</td></tr>
<tr><th>nuclides</th><td>{nucl}</td></tr>
<tr><th>passes / units</th><td>{_e(inc['passes'])} / {_e(inc['units'])}</td></tr>
<tr><th>task</th><td>{_e(inc['task_id'])} {_e(t.get('state') or '')} {_e(t.get('unit_id') or '')}</td></tr>
</table>
<h2>Map</h2>{_map_svg(inc, alarms, tracks, types, task)}
<h2>Alarms</h2><table><tr><th>alarm</th><th>unit</th><th>peak (UTC)</th><th>sigma</th><th>peak cps</th>
<th>background cps</th><th>x, y m</th></tr>{rows}</table>
<h2>Spectra</h2>{specs or '<p>No alarm spectra.</p>'}
<h2>Task history</h2><ol>{hist or '<li>no task</li>'}</ol>
<h2>Operator actions</h2><ol>{acts or '<li>none</li>'}</ol>
</body></html>
"""
