// The operator console page: log in, load the state, follow the live events, act.
import { api, ApiError, setCsrf } from "./api.js";
import { drawMap, fmt } from "./map.js";
import { drawSpectrum, drawWaterfall } from "./spectrum.js";

const $ = (sel) => document.querySelector(sel);
const TRACK_POINTS = 600;  // per unit, newest kept
const state = { units: [], alarms: [], incidents: [], tasks: [], timeline: [], vitals: [], cctvAlerts: [], tracks: new Map(),
                selected: null, session: null, spectrumFor: null };
window.consoleState = state;  // for the browser tests and for curious operators (read-only use)

function el(tag, text, cls) { const e = document.createElement(tag); if (text != null) e.textContent = text; if (cls) e.className = cls; return e; }
function hhmmss(t) { return t ? String(t).split("T")[1]?.slice(0, 8) ?? t : "-"; }
function showError(err) { $("#action-error").textContent = err ? (err.message || String(err)) : ""; }

function addPositions(rows) {
  for (const p of rows) {
    let pts = state.tracks.get(p.unit_id);
    if (!pts) { pts = []; state.tracks.set(p.unit_id, pts); }
    pts.push(p);
    if (pts.length > TRACK_POINTS) pts.splice(0, pts.length - TRACK_POINTS);
  }
}

function render() {
  drawMap($("#map"), state);
  const may = state.session?.may || [];
  // units
  const ub = $("#units tbody"); ub.replaceChildren();
  for (const u of state.units) {
    const tr = el("tr", null, u.state); tr.dataset.unit = u.unit_id;
    const sensors = u.sensors ? Object.entries(u.sensors).map(([k, v]) => `${k}:${v?.state ?? v?.status ?? "?"}`).join(" ") : "-";
    for (const v of [u.unit_id, u.unit_type, u.state, hhmmss(u.last_seen_utc), u.x_m == null ? "-" : `${fmt(u.x_m)}, ${fmt(u.y_m)}`,
                     u.outbox_pending ?? "-", sensors, u.task_id || "-"]) tr.append(el("td", v));
    ub.append(tr);
  }
  // alarms, newest first
  const ab = $("#alarms tbody"); ab.replaceChildren();
  for (const a of [...state.alarms].reverse()) {
    const tr = el("tr", null, a.acked ? "acked" : "unacked"); tr.dataset.alarm = a.alarm_id;
    for (const v of [a.alarm_id.slice(0, 12), a.unit_id, hhmmss(a.t_peak_utc), fmt(a.significance_sigma),
                     (a.nuclides || []).map((n) => n.name).join(", ") || "-", (a.incident_id || "-").slice(0, 10)]) tr.append(el("td", v));
    const td = el("td");
    if (a.acked) td.append(el("span", `ack ${a.acked.split(" ")[0]}`, "note"));
    else if (may.includes("ack_alarm")) {
      const b = el("button", "Acknowledge", "ack"); b.dataset.ack = a.alarm_id;
      b.addEventListener("click", () => act(`/api/alarms/${encodeURIComponent(a.alarm_id)}/ack`, {}));
      td.append(b);
    }
    tr.append(td); ab.append(tr);
  }
  // incidents
  const ib = $("#incidents tbody"); ib.replaceChildren();
  for (const i of state.incidents) {
    const tr = el("tr", null, i.incident_id === state.selected ? "selected" : ""); tr.dataset.incident = i.incident_id;
    const r = i.region_95;
    for (const v of [i.incident_id.slice(0, 12), i.state, i.est_x_m == null ? "-" : `${fmt(i.est_x_m)}, ${fmt(i.est_y_m)}, ${fmt(i.height_m)}`,
                     r ? `${fmt(r.a_m)} x ${fmt(r.b_m)}` : "-", i.nuclides.map((n) => n.name).join(", ") || "-", i.task_id || "-"]) tr.append(el("td", v));
    tr.addEventListener("click", () => selectIncident(i.incident_id));
    ib.append(tr);
  }
  // tasks
  const tb = $("#tasks tbody"); tb.replaceChildren();
  for (const t of state.tasks) {
    const tr = el("tr"); tr.dataset.task = t.task_id; tr.dataset.state = t.state;
    for (const v of [t.task_id, (t.incident_id || "-").slice(0, 10), t.state, t.unit_id || "-",
                     `${fmt(t.target_x_m)}, ${fmt(t.target_y_m)}`, fmt(t.radius_m), hhmmss(t.state_since_utc)]) tr.append(el("td", v));
    tb.append(tr);
  }
  // camera boxes
  const vb = $("#vitals tbody"); vb.replaceChildren();
  for (const v of state.vitals) {
    const tr = el("tr", null, v.alert ? "unacked" : ""); tr.dataset.track = `${v.unit_id}/${v.track_id}`;
    for (const c of [v.unit_id, v.track_id, hhmmss(v.t_utc), v.heart_rate_bpm == null ? "-" : `${fmt(v.heart_rate_bpm, 0)} bpm`,
                     v.respiration_rate_bpm == null ? "-" : `${fmt(v.respiration_rate_bpm, 0)} /min`,
                     v.blink_rate_per_min == null ? "-" : `${fmt(v.blink_rate_per_min, 0)} /min`,
                     fmt(v.abnormal_score, 2) + (v.alert ? " ALERT" : ""), v.why || "-"]) tr.append(el("td", c));
    vb.append(tr);
  }
  // hall CCTV alerts, newest first
  const cb = $("#cctv-alerts tbody"); cb.replaceChildren();
  for (const a of [...state.cctvAlerts].reverse().slice(0, 50)) {
    const tr = el("tr", null, "unacked"); tr.dataset.alert = a.alert_id;
    for (const c of [hhmmss(a.t_raised_utc), a.rule, a.zones.join(", ") || "-", a.trajectory_ids.join(", ") || "-",
                     `${hhmmss(a.t_start_utc)} - ${hhmmss(a.t_end_utc)}`]) tr.append(el("td", c));
    cb.append(tr);
  }
  // timeline, newest first
  const tl = $("#timeline"); tl.replaceChildren();
  for (const e of [...state.timeline].reverse().slice(0, 200)) tl.append(el("li", `${hhmmss(e.t_utc)}  ${e.text}`, e.kind));
  renderIncidentPanel();
}

function renderIncidentPanel() {
  const inc = state.incidents.find((i) => i.incident_id === state.selected);
  $("#incident-panel").hidden = !inc;
  if (!inc) return;
  $("#incident-title").textContent = `Incident ${inc.incident_id} (${inc.state})`;
  const r = inc.region_95;
  $("#incident-summary").textContent = inc.est_x_m == null ? "no estimate yet" :
    `estimate (${fmt(inc.est_x_m)}, ${fmt(inc.est_y_m)}) m, height ${fmt(inc.height_m)} m` +
    (inc.height_sigma_m != null ? ` ± ${fmt(inc.height_sigma_m)}` : "") +
    (r ? `; 95 % region ${fmt(r.a_m)} x ${fmt(r.b_m)} m (${r.source})` : "") +
    `; nuclides ${inc.nuclides.map((n) => `${n.name} ${fmt(n.confidence, 2)}`).join(", ") || "none"}` +
    (inc.ambiguous ? "; AMBIGUOUS (two candidate spots)" : "") + `; passes ${inc.passes}`;
  const base = `/api/incidents/${encodeURIComponent(inc.incident_id)}/export?format=`;
  $("#export-n42").href = base + "n42"; $("#export-html").href = base + "html";
  const sel = $("#dispatch-unit"), keep = sel.value;
  sel.replaceChildren(...state.units.filter((u) => u.unit_type === "handheld")
    .map((u) => { const o = el("option", `${u.unit_id} (${u.state})`); o.value = u.unit_id; return o; }));
  if (keep) sel.value = keep;
  const task = state.tasks.find((t) => t.task_id === inc.task_id);
  $("#cancel-task-button").disabled = !task || !["open", "dispatched", "accepted", "on_site", "measuring"].includes(task.state);
}

async function selectIncident(id) {
  state.selected = id;
  render();
  const inc = state.incidents.find((i) => i.incident_id === id);
  // the incident's strongest alarm with identified nuclides, else its first alarm
  const named = state.alarms.filter((a) => a.incident_id === id && (a.nuclides || []).length)
    .sort((a, b) => b.significance_sigma - a.significance_sigma);
  const alarmId = named[0]?.alarm_id ?? inc?.alarm_ids?.[0];
  const canvas = $("#spectrum");
  if (!alarmId) { drawSpectrum(canvas, null); drawWaterfall($("#waterfall"), null); return; }
  try {
    const spec = await api(`/api/alarms/${encodeURIComponent(alarmId)}/spectrum`);
    state.spectrumFor = alarmId;
    drawSpectrum(canvas, spec);
    const wf = await api(`/api/alarms/${encodeURIComponent(alarmId)}/waterfall`);
    drawWaterfall($("#waterfall"), wf, spec.lines);
    $("#waterfall-note").textContent = `waterfall: ${wf.rows.length} spectra of ${wf.unit_id} along its track, ` +
      `2 min before to 1 min after the alarm, newest at the top; colour: log counts per second per energy bin`;
    $("#spectrum-note").textContent = `alarm ${alarmId} from ${spec.unit_id}: ${spec.spectra_summed} spectra, ` +
      `${fmt(spec.live_time_s)} s live (blue); ` + (spec.background ? `background ${spec.background_spectra} spectra scaled ` +
      `to the same live time (grey)` : "no background spectra stored (the unit sends spectra only in alarm)") +
      `; red: lines of the identified nuclides`;
  } catch (err) { showError(err); }
}

async function act(path, body) {
  showError(null);
  try { await api(path, { method: "POST", body }); await reload(); }
  catch (err) { showError(err); if (err instanceof ApiError && err.status === 401) start(); }
}

async function reload() {
  const [units, alarms, incidents, tasks, timeline, positions, vitals, cctvAlerts] = await Promise.all([
    api("/api/units"), api("/api/alarms"), api("/api/incidents"), api("/api/tasks"), api("/api/timeline"),
    api("/api/positions"), api("/api/vitals"), api("/api/cctv_alerts")]);
  Object.assign(state, { units, alarms, incidents, tasks, timeline, vitals, cctvAlerts });
  state.tracks = new Map(); addPositions(positions);
  state.loaded = true;
  render();
}

let source = null;
function follow() {
  if (source) source.close();
  source = new EventSource("/api/events");
  const live = $("#live");
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  let pending = false;
  const later = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; render(); }); } };
  const on = (kind, fn) => source.addEventListener(kind, (ev) => { fn(JSON.parse(ev.data)); later(); });
  on("hello", () => reload().catch(showError));  // after a (re)connect: nothing missed in between
  on("units", (rows) => { state.units = rows; });
  on("positions", addPositions);
  on("alarms", (rows) => { state.alarms = [...state.alarms, ...rows].slice(-500); refreshTimeline(); });
  on("alarms_acked", (rows) => { state.alarms = rows; });
  on("tasks", (rows) => { state.tasks = rows; refreshTimeline(); });
  on("incidents", (rows) => { state.incidents = rows; });
  on("vitals", (rows) => { state.vitals = rows; });
  on("cctv_alerts", (rows) => { state.cctvAlerts = rows; refreshTimeline(); });
  on("actions", () => refreshTimeline());
  on("resync", () => reload().catch(showError));
}

let timelineTimer = null;
function refreshTimeline() {
  clearTimeout(timelineTimer);
  timelineTimer = setTimeout(async () => {
    try { [state.timeline, state.cctvAlerts] = await Promise.all([api("/api/timeline"), api("/api/cctv_alerts")]); render(); }
    catch (e) { showError(e); }
  }, 300);
}

async function start() {
  try {
    state.session = await api("/api/session");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { $("#console").hidden = true; $("#login").hidden = false; return; }
    throw err;
  }
  setCsrf(state.session.csrf);
  document.body.className = state.session.role;
  $("#who").textContent = `${state.session.user} (${state.session.role})`;
  $("#login").hidden = true; $("#console").hidden = false;
  try { state.site = await api("/api/site"); } catch (err) { showError(err); }
  // one full load, when the live stream says hello (so nothing stored in between is missed); if the
  // stream cannot open, load anyway after 3 s so the page is never empty
  state.loaded = false;
  follow();
  setTimeout(() => { if (!state.loaded) reload().catch(showError); }, 3000);
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  try {
    await api("/api/login", { method: "POST", body: { name: $("#login-name").value, password: $("#login-password").value } });
    $("#login-password").value = "";
    await start();
  } catch (err) { $("#login-error").textContent = err.message; }
});
$("#logout").addEventListener("click", async () => {
  try { await api("/api/logout", { method: "POST" }); } catch (err) { /* session already gone */ }
  if (source) source.close();
  location.reload();
});
$("#map").addEventListener("site-image", () => render());  // the site's background image has loaded
$("#track-colour").addEventListener("change", (ev) => { state.trackColour = ev.target.value; render(); });
$("#dispatch-button").addEventListener("click", () => {
  const unit = $("#dispatch-unit").value;
  const inc = state.incidents.find((i) => i.incident_id === state.selected);
  if (!unit || !inc) return showError(new Error("choose an incident and a handheld"));
  act("/api/dispatch", { unit_id: unit, incident_id: inc.incident_id });
});
$("#cancel-task-button").addEventListener("click", () => {
  const inc = state.incidents.find((i) => i.incident_id === state.selected);
  if (inc?.task_id) act(`/api/tasks/${encodeURIComponent(inc.task_id)}/cancel`, undefined);
});
$("#close-incident-button").addEventListener("click", () => {
  const note = $("#close-note").value.trim();
  if (!note) return showError(new Error("write a note before closing the incident"));
  act(`/api/incidents/${encodeURIComponent(state.selected)}/close`, { note });
});

start().catch(showError);
