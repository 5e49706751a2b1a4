// Site map in local metres: tracks, units, alarms, incident 95 % ellipses, task targets.
const COLORS = { mobile: "#4da3ff", handheld: "#3ccf6e", camerabox: "#c08cff" };

function bounds(state) {
  const xs = [], ys = [];
  const add = (x, y) => { if (x != null && y != null) { xs.push(x); ys.push(y); } };
  for (const pts of state.tracks.values()) for (const p of pts) add(p.x_m, p.y_m);
  for (const u of state.units) add(u.x_m, u.y_m);
  for (const a of state.alarms) add(a.x_m, a.y_m);
  for (const c of state.site?.columns || []) { add(c.x0_m, c.y0_m); add(c.x1_m, c.y1_m); }
  const im = state.site?.image;
  if (im) { add(im.x0_m, im.y0_m); add(im.x1_m, im.y1_m); }
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
  drawSitePlan(ctx, state, px, py, canvas);
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
  const mode = state.trackColour || "unit";
  if (mode === "unit") {
    // tracks in the unit type's colour (handheld paths dashed)
    for (const [unit, pts] of state.tracks) {
      if (pts.length < 2) continue;
      ctx.strokeStyle = COLORS[types.get(unit)] || "#888"; ctx.globalAlpha = 0.55; ctx.lineWidth = 1.5;
      ctx.setLineDash(types.get(unit) === "handheld" ? [4, 3] : []);
      ctx.beginPath(); ctx.moveTo(px(pts[0].x_m), py(pts[0].y_m));
      for (const p of pts.slice(1)) ctx.lineTo(px(p.x_m), py(p.y_m));
      ctx.stroke();
    }
  } else {
    drawColouredTracks(ctx, state, mode, px, py);
  }
  ctx.setLineDash([]); ctx.globalAlpha = 1;
  // handheld guidance: from each handheld with an active task to its target, with the distance
  const guided = [];
  const byId = new Map(state.units.map((u) => [u.unit_id, u]));
  for (const t of state.tasks) {
    const u = byId.get(t.unit_id);
    if (!u || u.x_m == null || t.target_x_m == null || !ACTIVE.includes(t.state)) continue;
    const d = Math.hypot(t.target_x_m - u.x_m, t.target_y_m - u.y_m);
    const bearing = (Math.atan2(t.target_x_m - u.x_m, t.target_y_m - u.y_m) * 180 / Math.PI + 360) % 360;
    ctx.strokeStyle = "#3ccf6e"; ctx.lineWidth = 2; ctx.setLineDash([8, 4]);
    ctx.beginPath(); ctx.moveTo(px(u.x_m), py(u.y_m)); ctx.lineTo(px(t.target_x_m), py(t.target_y_m)); ctx.stroke();
    ctx.setLineDash([]); ctx.fillStyle = "#3ccf6e";
    ctx.fillText(`${u.unit_id}: ${d.toFixed(0)} m, ${bearing.toFixed(0)}°`, (px(u.x_m) + px(t.target_x_m)) / 2 + 6,
                 (py(u.y_m) + py(t.target_y_m)) / 2 - 6);
    guided.push(`${u.unit_id}->${t.task_id}:${d.toFixed(0)}`);
  }
  canvas.dataset.guidance = guided.join(" ");
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

// The site plan under everything: the background image the site supplies (placed by its local-metre
// bounds), then each container column's footprint, darker for higher stacks, labelled by row.
let siteImage = null;
function drawSitePlan(ctx, state, px, py, canvas) {
  const im = state.site?.image;
  if (im) {
    if (!siteImage) {
      siteImage = new Image();
      siteImage.onload = () => { canvas.dispatchEvent(new Event("site-image")); };
      siteImage.src = im.url;
    }
    if (siteImage.complete && siteImage.naturalWidth) {
      ctx.globalAlpha = 0.6;
      ctx.drawImage(siteImage, px(im.x0_m), py(im.y1_m), px(im.x1_m) - px(im.x0_m), py(im.y0_m) - py(im.y1_m));
      ctx.globalAlpha = 1;
      canvas.dataset.siteImage = "drawn";
    }
  }
  const cols = state.site?.columns || [];
  const maxTiers = Math.max(1, ...cols.map((c) => c.tiers));
  const labelled = new Set();
  for (const c of cols) {
    const x = px(c.x0_m), y = py(c.y1_m), w = px(c.x1_m) - x, h = py(c.y0_m) - y;
    ctx.fillStyle = `rgba(120, 140, 160, ${0.12 + 0.25 * c.tiers / maxTiers})`;
    ctx.fillRect(x, y, w, h);
    ctx.strokeStyle = "#3d5063"; ctx.lineWidth = 1; ctx.strokeRect(x, y, w, h);
    if (!labelled.has(c.row)) {
      labelled.add(c.row);
      ctx.fillStyle = "#8a96a3"; ctx.fillText(`row ${c.row} (${c.tiers} high)`, x, y - 3);
    }
  }
  canvas.dataset.siteColumns = String(cols.length);
}

const ACTIVE = ["open", "dispatched", "accepted", "on_site", "measuring"];

// Track colour scales.  "rate": gross count rate, log scale from the lowest to the highest rate
// shown.  "excess": the count rate's excess over the unit's own background in sigma,
// (gross - background) / sqrt(background / live time) (Poisson), 0..10: what the alarm detector sees.
const RAMP = ["#2c7bb6", "#00a6ca", "#00ccbc", "#90eb9d", "#ffff8c", "#f9d057", "#f29e2e", "#e76818", "#d7191c"];
export function trackValue(p, mode) {
  if (p.gross_cps == null) return null;
  if (mode === "rate") return p.gross_cps;
  if (p.background_cps == null) return null;
  return (p.gross_cps - p.background_cps) / Math.sqrt(Math.max(p.background_cps, 1) / (p.live_time_s || 1));
}

function drawColouredTracks(ctx, state, mode, px, py) {
  let lo = Infinity, hi = -Infinity;
  if (mode === "rate") {
    for (const pts of state.tracks.values()) for (const p of pts) if (p.gross_cps > 0) { lo = Math.min(lo, p.gross_cps); hi = Math.max(hi, p.gross_cps); }
    lo = Math.log10(Math.max(lo, 1)); hi = Math.log10(Math.max(hi, 10));
    if (hi - lo < 0.3) hi = lo + 0.3;
  } else { lo = 0; hi = 10; }
  const bin = (v) => {
    const x = mode === "rate" ? Math.log10(Math.max(v, 1)) : v;
    return Math.max(0, Math.min(RAMP.length - 1, Math.floor((x - lo) / (hi - lo) * RAMP.length)));
  };
  // one path per colour: 60 000 points at 1 Hz stay cheap to draw
  const paths = RAMP.map(() => new Path2D());
  for (const pts of state.tracks.values()) {
    for (let i = 1; i < pts.length; i++) {
      const v = trackValue(pts[i], mode);
      if (v == null) continue;
      const path = paths[bin(v)];
      path.moveTo(px(pts[i - 1].x_m), py(pts[i - 1].y_m)); path.lineTo(px(pts[i].x_m), py(pts[i].y_m));
    }
  }
  ctx.lineWidth = 3; ctx.globalAlpha = 0.9;
  paths.forEach((path, k) => { ctx.strokeStyle = RAMP[k]; ctx.stroke(path); });
  // the scale
  const W = ctx.canvas.width;
  RAMP.forEach((c, k) => { ctx.fillStyle = c; ctx.fillRect(W - 20 - (RAMP.length - k) * 14, 8, 14, 8); });
  ctx.fillStyle = "#dde3ea"; ctx.globalAlpha = 1;
  const lab = (x) => mode === "rate" ? `${(10 ** x).toFixed(0)} cps` : `${x} σ`;
  ctx.fillText(lab(lo), W - 20 - RAMP.length * 14, 28); ctx.fillText(lab(hi), W - 50, 28);
  ctx.canvas.dataset.trackColour = `${mode}:${lab(lo)}..${lab(hi)}`;
}

export function fmt(v, d = 1) { return v == null ? "-" : Number(v).toFixed(d); }
