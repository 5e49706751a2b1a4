// An alarm's spectrum (counts per channel, log scale) against its background, identified lines marked.
function energy(cal, ch) { return cal ? cal.reduce((e, c, k) => e + c * ch ** k, 0) : ch; }

export function drawSpectrum(canvas, spec) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 50, B = 28, T = 10, R = 10;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px sans-serif";
  canvas.dataset.lines = "";
  if (!spec || !spec.counts) {
    ctx.fillStyle = "#8a96a3"; ctx.fillText("no spectrum stored for this alarm", L, H / 2);
    return;
  }
  const cal = spec.energy_calibration_kev, n = spec.counts.length;
  const eMax = energy(cal, n), eMin = Math.max(0, energy(cal, 0));
  const yMax = Math.log10(Math.max(10, ...spec.counts, ...(spec.background || [0])) * 1.5);
  const X = (e) => L + (e - eMin) / (eMax - eMin) * (W - L - R);
  const Y = (c) => H - B - Math.log10(Math.max(c, 0) + 1) / yMax * (H - B - T);
  ctx.strokeStyle = "#3d5063"; ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, H - B); ctx.lineTo(W - R, H - B); ctx.stroke();
  ctx.fillStyle = "#8a96a3";
  for (let e = 0; e <= eMax; e += eMax > 2000 ? 500 : 200) { ctx.fillText(`${e}`, X(e) - 8, H - B + 14); }
  ctx.fillText("keV", W - R - 24, H - 4);
  for (let p = 0; p <= yMax; p++) { ctx.fillText(`1e${p}`, 4, Y(10 ** p - 1) + 4); }
  const trace = (arr, color) => {
    ctx.strokeStyle = color; ctx.lineWidth = 1; ctx.beginPath();
    arr.forEach((c, ch) => { const x = X(energy(cal, ch)), y = Y(c); ch ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
    ctx.stroke();
  };
  if (spec.background) trace(spec.background, "#8a96a3");
  trace(spec.counts, "#4da3ff");
  const marked = [];
  ctx.setLineDash([3, 3]);
  for (const line of spec.lines) {
    if (line.yield < 0.05) continue;
    const x = X(line.energy_kev);
    ctx.strokeStyle = "#ff4d4d"; ctx.beginPath(); ctx.moveTo(x, T); ctx.lineTo(x, H - B); ctx.stroke();
    ctx.fillStyle = "#ff9a9a"; ctx.fillText(`${line.nuclide} ${line.energy_kev.toFixed(0)} keV`, x + 3, T + 12 + 12 * (marked.length % 3));
    marked.push(`${line.nuclide}@${line.energy_kev.toFixed(1)}`);
  }
  ctx.setLineDash([]);
  canvas.dataset.lines = marked.join(" ");
}

// A waterfall of one unit's spectra along its track: time down (newest at the top), energy across,
// colour = log of counts per second in each energy bin; the identified lines marked at the top.
export function drawWaterfall(canvas, wf, lines) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 50, B = 20, T = 6, R = 10;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px sans-serif";
  canvas.dataset.rows = "0";
  if (!wf || !wf.rows.length) {
    ctx.fillStyle = "#8a96a3"; ctx.fillText("no spectra stored around this alarm", L, H / 2);
    return;
  }
  const rows = wf.rows, n = rows.length, bins = wf.bins;
  let hi = -Infinity;
  const v = rows.map((r) => r.cps_per_bin.map((c) => { const x = Math.log10(c + 0.01); hi = Math.max(hi, x); return x; }));
  const lo = -2;
  const img = ctx.createImageData(W - L - R, H - B - T);
  const iw = img.width, ih = img.height;
  for (let y = 0; y < ih; y++) {
    const row = v[n - 1 - Math.floor(y / ih * n)];  // newest at the top
    for (let x = 0; x < iw; x++) {
      const f = Math.max(0, Math.min(1, (row[Math.floor(x / iw * bins)] - lo) / (hi - lo || 1)));
      const k = 4 * (y * iw + x);
      // dark blue -> cyan -> yellow -> red
      img.data[k] = Math.round(255 * Math.min(1, Math.max(0, 2 * f - 0.6)));
      img.data[k + 1] = Math.round(255 * Math.min(1, 2 * f) * (f > 0.85 ? (1 - f) / 0.15 : 1));
      img.data[k + 2] = Math.round(255 * Math.max(0, 0.5 - f) * 2 * 0.8 + 40 * (1 - f));
      img.data[k + 3] = 255;
    }
  }
  ctx.putImageData(img, L, T);
  ctx.fillStyle = "#8a96a3";
  const X = (e) => L + e / wf.e_max_kev * iw;
  for (let e = 0; e <= wf.e_max_kev; e += wf.e_max_kev > 2000 ? 500 : 200) ctx.fillText(`${e}`, X(e) - 8, H - 6);
  const hhmmss = (t) => String(t).split("T")[1]?.slice(0, 8) ?? t;
  ctx.fillText(hhmmss(rows[n - 1].t_utc), 2, T + 10); ctx.fillText(hhmmss(rows[0].t_utc), 2, H - B);
  ctx.strokeStyle = "#ff4d4d"; ctx.setLineDash([2, 4]);
  for (const line of lines || []) {
    if (line.yield < 0.05) continue;
    ctx.beginPath(); ctx.moveTo(X(line.energy_kev), T); ctx.lineTo(X(line.energy_kev), T + ih); ctx.stroke();
  }
  ctx.setLineDash([]);
  canvas.dataset.rows = String(n);
}
