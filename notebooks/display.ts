// Display helpers for the notebooks (tslab kernel): Plotly charts, HTML tables of danfo DataFrames and a
// live SVG curve. Compiled by tslab itself (CommonJS, its bundled TypeScript), so it imports no library
// code: the notebooks load tevatron-ts (../lib/index.ts) themselves.
//
// tslab has no DOM, so a chart is HTML: a <div>, the figure as JSON in a <script type="application/json">
// (what test/notebooks.test.ts reads back from the executed notebook), and a script that draws it with
// plotly.js. The plotly.js bundle (plotly.js-basic-dist-min: scatter, bar, pie; about 1.2 MB) is inlined
// into the first chart of a kernel session only, so an executed notebook stays small and opens offline.
// Jupyter runs those scripts only in trusted notebooks (`jupyter trust`, or run the cells yourself).
import * as fs from 'fs';
import * as tslab from 'tslab';

/** A Plotly trace: { type: 'scatter' | 'bar' | 'pie', x, y, name, mode, ... }. */
export type Trace = Record<string, unknown>;
/** A Plotly layout: { title, xaxis: { title }, yaxis: { type: 'log' }, barmode, ... }. */
export type Layout = Record<string, unknown>;

let plotlyInlined = false;
let counter = 0;

function plotlyBundle(): string {
  const file = require.resolve('plotly.js-basic-dist-min');
  // `</script>` inside the bundle would end the inline script early.
  return fs.readFileSync(file, 'utf8').replace(/<\/script/gi, '<\\/script');
}

/** JSON that is safe inside a <script> element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

/** plotly.js 3+ wants `title: { text }`; plain strings are accepted here for brevity. */
function withTitleObjects(layout: Layout): Layout {
  const out: Layout = {};
  for (const [k, v] of Object.entries(layout)) {
    if (k === 'title' && typeof v === 'string') out[k] = { text: v };
    else if (/^[xy]axis\d*$/.test(k) && v && typeof v === 'object' && typeof (v as Layout).title === 'string') out[k] = { ...(v as Layout), title: { text: (v as Layout).title } };
    else out[k] = v;
  }
  return out;
}

/** The HTML of a Plotly chart (with the plotly.js bundle when `withBundle`). */
export function plotHtml(data: Trace[], layout: Layout = {}, withBundle = true): string {
  const id = `tevatron-plot-${process.pid}-${++counter}`;
  const margin = { t: 48, r: layout.yaxis2 ? 80 : 24, b: 48, l: 72 };
  const figure = { data, layout: { height: 360, margin, ...withTitleObjects(layout) } };
  return [
    withBundle ? `<script type="text/javascript">${plotlyBundle()}</script>` : '',
    `<div class="tevatron-plot" id="${id}" style="width:100%;max-width:860px"></div>`,
    `<script type="application/json" class="tevatron-figure" data-for="${id}">${scriptJson(figure)}</script>`,
    `<script type="text/javascript">(function () {
  var fig = JSON.parse(document.querySelector('script[data-for="${id}"]').textContent);
  function draw() { window.Plotly.newPlot("${id}", fig.data, fig.layout, { displaylogo: false, responsive: true }); }
  if (window.Plotly) draw(); else { var tries = 0; var t = setInterval(function () { if (window.Plotly || ++tries > 100) { clearInterval(t); if (window.Plotly) draw(); } }, 50); }
})();</script>`,
  ].join('\n');
}

/** Shows a Plotly chart as the cell's output. */
export function plot(data: Trace[], layout: Layout = {}): void {
  tslab.display.html(plotHtml(data, layout, !plotlyInlined));
  plotlyInlined = true;
}

/**
 * A histogram as a trace (the basic plotly.js bundle has no histogram type): `values` counted in `bins` equal
 * bins over `range` (values outside go to the end bins), drawn as a step line so several overlay cleanly.
 * `percent` plots the share of values instead of counts.
 */
export function histogram(values: number[], name: string, bins = 30, range?: [number, number], percent = false): Trace {
  const [lo, hi] = range ?? [Math.min(...values), Math.max(...values)];
  const width = (hi - lo) / bins || 1;
  const counts = new Array(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.max(0, Math.floor((v - lo) / width)))]++;
  return {
    type: 'scatter', mode: 'lines', line: { shape: 'hvh', width: 2 }, name,
    x: counts.map((_, i) => lo + (i + 0.5) * width),
    y: percent ? counts.map((c) => (100 * c) / values.length) : counts,
  };
}

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function cell(v: unknown, digits: number): string {
  if (typeof v === 'number') {
    if (Number.isInteger(v) || !Number.isFinite(v)) return String(v);
    return Math.abs(v) < 10 ** -digits ? v.toExponential(2) : v.toFixed(digits);
  }
  return escape(String(v));
}

/** Anything with danfo's DataFrame shape: column names and row-major values. */
export interface TableLike {
  columns: string[];
  values: unknown[][] | unknown[];
  index?: (string | number)[];
}

/** An HTML table of a danfo DataFrame (numbers with `digits` decimals; long text cut at `maxChars`). */
export function tableHtml(df: TableLike, opts: { digits?: number; maxChars?: number; index?: boolean; caption?: string } = {}): string {
  const digits = opts.digits ?? 3;
  const max = opts.maxChars ?? 160;
  const rows = (df.values as unknown[]).map((r) => (Array.isArray(r) ? r : [r]));
  const showIndex = opts.index ?? false;
  const clip = (v: unknown) => (typeof v === 'string' && v.length > max ? `${v.slice(0, max - 1)}…` : v);
  const head = `<tr>${showIndex ? '<th></th>' : ''}${df.columns.map((c) => `<th>${escape(c)}</th>`).join('')}</tr>`;
  const body = rows
    .map((r, i) => `<tr>${showIndex ? `<th>${escape(String(df.index?.[i] ?? i))}</th>` : ''}${r.map((v) => `<td style="text-align:${typeof v === 'number' ? 'right' : 'left'}">${cell(clip(v), digits)}</td>`).join('')}</tr>`)
    .join('\n');
  const caption = opts.caption ? `<caption style="caption-side:top;text-align:left">${escape(opts.caption)}</caption>` : '';
  return `<table class="tevatron-table">${caption}<thead>${head}</thead><tbody>${body}</tbody></table>`;
}

/** Shows a DataFrame as an HTML table. */
export function table(df: TableLike, opts: { digits?: number; maxChars?: number; index?: boolean; caption?: string } = {}): void {
  tslab.display.html(tableHtml(df, opts));
}

/**
 * A line chart as inline SVG (no script, so it renders while a cell is still running and in untrusted
 * notebooks): the live training curve.
 */
export function svgLines(title: string, series: { name: string; x: number[]; y: number[] }[], width = 620, height = 240): string {
  const colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728'];
  const pad = { l: 52, r: 110, t: 26, b: 30 };
  const xs = series.flatMap((s) => s.x);
  const ys = series.flatMap((s) => s.y).filter(Number.isFinite);
  if (ys.length === 0) return `<p>${escape(title)}: waiting for the first log line…</p>`;
  const [x0, x1] = [Math.min(...xs), Math.max(Math.max(...xs), Math.min(...xs) + 1)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const X = (x: number) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y: number) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  const fmt = (v: number) => Number(v.toPrecision(3)).toString();
  const grid = [0, 0.5, 1].map((f) => y0 + f * (y1 - y0))
    .map((t) => `<line x1="${pad.l}" x2="${width - pad.r}" y1="${Y(t)}" y2="${Y(t)}" stroke="#ddd"/><text x="${pad.l - 6}" y="${Y(t) + 4}" text-anchor="end">${fmt(t)}</text>`);
  const lines = series.map((s, i) => {
    const d = s.x.map((x, j) => `${j ? 'L' : 'M'}${X(x).toFixed(1)},${Y(s.y[j]).toFixed(1)}`).join(' ');
    const last = s.y.length ? fmt(s.y[s.y.length - 1]) : '';
    return `<path d="${d}" fill="none" stroke="${colors[i % colors.length]}" stroke-width="1.8"/>` +
      `<text x="${width - pad.r + 8}" y="${pad.t + 14 * (i + 1)}" fill="${colors[i % colors.length]}">${escape(s.name)} ${last}</text>`;
  });
  return `<svg class="tevatron-live" width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">
<text x="${pad.l}" y="16" font-size="13">${escape(title)}</text>
${grid.join('\n')}
<text x="${pad.l}" y="${height - 8}">${x0}</text><text x="${width - pad.r}" y="${height - 8}" text-anchor="end">step ${x1}</text>
${lines.join('\n')}
</svg>`;
}
