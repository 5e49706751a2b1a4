// Site map in local metres: tracks, units, alarms, incident 95 % ellipses, task targets.
const COLORS = { mobile: "#4da3ff", handheld: "#3ccf6e", camerabox: "#c08cff" };

function bounds(state) {
  const xs = [], ys = [];
  const add = (x, y) => { if (x != null && y != null) { xs.push(x); ys.push(y); } };
  for (const pts of state.tracks.values()) for (const p of pts) add(p.x_m, p.y_m);
  for (const u of state.units) add(u.x_m, u.y_m);
  for (const a of state.alarms) add(a.x_m, a.y_m);
  for (const i of state.incidents) if (i.region_95) {
    const r = i.region_95; add(r.x_m - r.a_m, r.y_m - r.a_m); add(r.x_m + r.a_m, r.y_m + r.a_m);
  }
  if (!xs.length) return { x0: -50, x1: 50, y0: -50, y1: 50 };
  const pad = 10;
  return { x0: Math.min(...xs) - pad, x1: Math.max(...xs) + pad, y0: Math.min(...ys) - pad, y1: Math.max(...ys) + pad };
}

export function drawMap(canvas, state) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  const b = bounds(state);
  const s = Math.min((W - 40) / (b.x1 - b.x0), (H - 40) / (b.y1 - b.y0));
  const ox = 20 + ((W - 40) - s * (b.x1 - b.x0)) / 2, oy = 20 + ((H - 40) - s * (b.y1 - b.y0)) / 2;
  const px = (x) => ox + (x - b.x0) * s;
  const py = (y) => H - (oy + (y - b.y0) * s);  // north up
  // grid every 10 or 50 m
  const step = (b.x1 - b.x0) > 300 ? 50 : 10;
  ctx.strokeStyle = "#1d2731"; ctx.lineWidth = 1; ctx.fillStyle = "#566371"; ctx.font = "10px sans-serif";
  for (let x = Math.ceil(b.x0 / step) * step; x <= b.x1; x += step) {
    ctx.beginPath(); ctx.moveTo(px(x), 0); ctx.lineTo(px(x), H); ctx.stroke(); ctx.fillText(`${x}`, px(x) + 2, H - 4);
  }
  for (let y = Math.ceil(b.y0 / step) * step; y <= b.y1; y += step) {
    ctx.beginPath(); ctx.moveTo(0, py(y)); ctx.lineTo(W, py(y)); ctx.stroke(); ctx.fillText(`${y}`, 2, py(y) - 2);
  }
  const types = new Map(state.units.map((u) => [u.unit_id, u.unit_type]));
  // tracks (handheld paths dashed)
  for (const [unit, pts] of state.tracks) {
    if (pts.length < 2) continue;
    ctx.strokeStyle = COLORS[types.get(unit)] || "#888"; ctx.globalAlpha = 0.55; ctx.lineWidth = 1.5;
    ctx.setLineDash(types.get(unit) === "handheld" ? [4, 3] : []);
    ctx.beginPath(); ctx.moveTo(px(pts[0].x_m), py(pts[0].y_m));
    for (const p of pts.slice(1)) ctx.lineTo(px(p.x_m), py(p.y_m));
    ctx.stroke();
  }
  ctx.setLineDash([]); ctx.globalAlpha = 1;
  // incidents: 95 % region and estimate
  const drawn = [];
  for (const inc of state.incidents) {
    const r = inc.region_95; if (!r || inc.state === "merged") continue;
    ctx.strokeStyle = inc.incident_id === state.selected ? "#ffd166" : "#ffb020";
    ctx.lineWidth = inc.incident_id === state.selected ? 3 : 1.5;
    ctx.beginPath();
    ctx.ellipse(px(r.x_m), py(r.y_m), Math.max(r.a_m * s, 2), Math.max(r.b_m * s, 2), -r.angle_rad, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.beginPath(); ctx.moveTo(px(r.x_m) - 6, py(r.y_m)); ctx.lineTo(px(r.x_m) + 6, py(r.y_m));
    ctx.moveTo(px(r.x_m), py(r.y_m) - 6); ctx.lineTo(px(r.x_m), py(r.y_m) + 6); ctx.stroke();
    ctx.fillStyle = "#ffb020"; ctx.fillText(`${inc.incident_id.slice(0, 10)} h ${fmt(inc.height_m)} m`, px(r.x_m) + 8, py(r.y_m) - 8);
    drawn.push(inc.incident_id);
  }
  canvas.dataset.ellipses = drawn.join(" ");
  // task targets
  for (const t of state.tasks) {
    if (t.target_x_m == null || ["confirmed", "cleared", "cancelled", "timed_out", "rejected"].includes(t.state)) continue;
    ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 1; ctx.setLineDash([2, 2]);
    ctx.beginPath(); ctx.arc(px(t.target_x_m), py(t.target_y_m), Math.max(t.radius_m * s, 4), 0, 2 * Math.PI); ctx.stroke();
    ctx.setLineDash([]);
  }
  // alarms
  ctx.fillStyle = "#ff4d4d";
  for (const a of state.alarms) {
    if (a.x_m == null) continue;
    const x = px(a.x_m), y = py(a.y_m);
    ctx.beginPath(); ctx.moveTo(x, y - 7); ctx.lineTo(x + 6, y + 5); ctx.lineTo(x - 6, y + 5); ctx.closePath(); ctx.fill();
  }
  // units, now
  const shown = [];
  for (const u of state.units) {
    if (u.x_m == null) continue;
    ctx.fillStyle = COLORS[u.unit_type] || "#888";
    ctx.globalAlpha = u.state === "online" ? 1 : 0.4;
    ctx.beginPath(); ctx.arc(px(u.x_m), py(u.y_m), 6, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#dde3ea"; ctx.fillText(u.unit_id, px(u.x_m) + 8, py(u.y_m) + 4);
    ctx.globalAlpha = 1;
    shown.push(u.unit_id);
  }
  canvas.dataset.units = shown.join(" ");
}

export function fmt(v, d = 1) { return v == null ? "-" : Number(v).toFixed(d); }
