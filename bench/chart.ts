// A grouped bar chart as standalone SVG, for the benchmark figures in the README.

export interface BarGroup {
  label: string;
  /** One value per series; null draws no bar. */
  values: (number | null)[];
}

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b'];

export function barChart(title: string, yLabel: string, series: string[], groups: BarGroup[], width = 640, height = 300): string {
  const pad = { l: 56, r: 12, t: 52, b: 44 };
  const max = Math.max(...groups.flatMap((g) => g.values.filter((x): x is number => x !== null)), 1e-9);
  const plotW = width - pad.l - pad.r;
  const plotH = height - pad.t - pad.b;
  const groupW = plotW / groups.length;
  const barW = (groupW * 0.8) / series.length;
  const Y = (v: number) => pad.t + plotH - (v / max) * plotH;
  const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  const parts = [
    `<svg width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="16" text-anchor="middle" font-size="13">${title}</text>`,
    `<text x="14" y="${pad.t + plotH / 2}" transform="rotate(-90 14 ${pad.t + plotH / 2})" text-anchor="middle">${yLabel}</text>`,
    `<line x1="${pad.l}" x2="${width - pad.r}" y1="${Y(0)}" y2="${Y(0)}" stroke="#999"/>`,
  ];
  let x = pad.l;
  series.forEach((s, i) => {
    parts.push(`<rect x="${x}" y="24" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/><text x="${x + 14}" y="33">${s}</text>`);
    x += 30 + 6.2 * s.length; // about 6.2 px per character at 11 px
  });
  groups.forEach((g, gi) => {
    const x0 = pad.l + gi * groupW + groupW * 0.1;
    g.values.forEach((v, si) => {
      if (v === null) return;
      const x = x0 + si * barW;
      parts.push(`<rect x="${x.toFixed(1)}" y="${Y(v).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(Y(0) - Y(v)).toFixed(1)}" fill="${COLORS[si % COLORS.length]}"/>`);
      parts.push(`<text x="${(x + barW / 2 - 1).toFixed(1)}" y="${(Y(v) - 3).toFixed(1)}" text-anchor="middle" font-size="10">${fmt(v)}</text>`);
    });
    parts.push(`<text x="${(pad.l + gi * groupW + groupW / 2).toFixed(1)}" y="${height - pad.b + 16}" text-anchor="middle">${g.label}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
