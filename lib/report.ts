// report.html for a training run: loss, learning rate and grad-norm curves from the log history as
// inline SVG (a self-contained file: it opens offline, with no script to trust).

interface Series {
  name: string;
  points: [number, number][];
}

export function lineChart(title: string, s: Series, width = 560, height = 260): string {
  const pad = { l: 64, r: 16, t: 28, b: 36 };
  if (s.points.length === 0) return `<p>${title}: no data yet</p>`;
  const xs = s.points.map((p) => p[0]);
  const ys = s.points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const X = (x: number) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y: number) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  const path = s.points.map(([x, y], i) => `${i ? 'L' : 'M'}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
  const ticks = [0, 0.5, 1].map((f) => y0 + f * (y1 - y0));
  const fmt = (v: number) => (Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(1) : Number(v.toPrecision(3)).toString());
  return `<svg width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">
<text x="${width / 2}" y="16" text-anchor="middle" font-size="13">${title}</text>
${ticks.map((t) => `<line x1="${pad.l}" x2="${width - pad.r}" y1="${Y(t)}" y2="${Y(t)}" stroke="#ddd"/><text x="${pad.l - 6}" y="${Y(t) + 4}" text-anchor="end">${fmt(t)}</text>`).join('\n')}
<text x="${pad.l}" y="${height - 10}">${x0}</text><text x="${width - pad.r}" y="${height - 10}" text-anchor="end">step ${x1}</text>
<path d="${path}" fill="none" stroke="#1f77b4" stroke-width="1.8"/>
</svg>`;
}

/** The HTML page for a log history (rows with step and any of loss, learning_rate, grad_norm, eval metrics). */
export function reportHtml(title: string, history: Record<string, number>[], facts: Record<string, string | number> = {}): string {
  const keys = [...new Set(history.flatMap((r) => Object.keys(r)))].filter((k) => !['step', 'epoch', 'samples_per_second'].includes(k));
  const charts = keys.map((k) => lineChart(k, { name: k, points: history.filter((r) => typeof r[k] === 'number').map((r) => [r.step, r[k]]) }));
  const rows = Object.entries(facts).map(([k, v]) => `<tr><td>${k}</td><td>${String(v).replace(/</g, '&lt;')}</td></tr>`).join('');
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head>
<body style="font-family:sans-serif;max-width:1200px;margin:auto"><h2>${title}</h2><table>${rows}</table>
<div style="display:flex;flex-wrap:wrap;gap:8px">${charts.join('\n')}</div></body></html>\n`;
}
