// curves.svg: training curves as one self-contained SVG (no script, no external font or
// stylesheet), from the records of metrics.jsonl: panels for the loss, the accuracies
// (every metric named acc*/recall*/top*) and the learning rate against the step, train
// series as lines and evaluation series as lines with dots. Hand-written, no dependency.
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from './safetensors.js';
import type { StepRecord, EvalRecord } from './logger.js';

export type MetricRecord = StepRecord | EvalRecord;

interface Series {
  label: string;
  points: [number, number][];
  dots: boolean;
}

interface Panel {
  title: string;
  series: Series[];
  log?: boolean;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];
const isAcc = (k: string) => /^(acc|recall|top)|accuracy|recall/i.test(k);

/** Reads metrics.jsonl; lines that do not parse (a run killed mid-write) are skipped. */
export function readMetrics(path: string): MetricRecord[] {
  if (!existsSync(path)) return [];
  const out: MetricRecord[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as MetricRecord;
      if (r && typeof r === 'object' && typeof r.step === 'number') out.push(r);
    } catch { /* a torn last line */ }
  }
  return out;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** About `count` round tick values covering [lo, hi] (1, 2, 5 times a power of ten). */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  // The round step whose tick count is closest to `count`.
  let step = mag;
  for (const m of [2, 5, 10]) if (Math.abs((hi - lo) / (m * mag) - count) < Math.abs((hi - lo) / step - count)) step = m * mag;
  const out: number[] = [];
  // Multiples of step as integers times step, rounded to step's precision (no 0.30000000000000004).
  const digits = Math.max(0, -Math.floor(Math.log10(step)) + 1);
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) out.push(Number((k * step).toFixed(Math.min(20, digits))));
  return out;
}

function tickText(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e5) return v.toExponential(0).replace('e+', 'e');
  return String(Number(v.toPrecision(3)));
}

function collect(records: readonly MetricRecord[]): Panel[] {
  const train = records.filter((r) => r.type !== 'eval');
  const evals = records.filter((r) => r.type === 'eval');
  const series = (rs: readonly MetricRecord[], key: string, label: string, dots: boolean): Series => ({
    label, dots,
    points: rs.filter((r) => typeof r[key] === 'number').map((r) => [r.step, r[key] as number]),
  });
  const keys = (rs: readonly MetricRecord[], pick: (k: string) => boolean) => {
    const ks: string[] = [];
    for (const r of rs) for (const [k, v] of Object.entries(r)) if (typeof v === 'number' && k !== 'step' && pick(k) && !ks.includes(k)) ks.push(k);
    return ks;
  };
  const loss: Series[] = [series(train, 'loss', 'train loss', false)];
  for (const k of keys(evals, (k) => /loss/i.test(k))) loss.push(series(evals, k, `eval ${k}`, true));
  const acc: Series[] = [
    ...keys(train, isAcc).map((k) => series(train, k, `train ${k}`, false)),
    ...keys(evals, isAcc).map((k) => series(evals, k, `eval ${k}`, true)),
  ];
  const panels: Panel[] = [
    { title: 'loss', series: loss },
    { title: 'accuracy', series: acc },
    { title: 'learning rate', series: [series(train, 'lr', 'lr', false)] },
  ];
  return panels
    .map((p) => ({ ...p, series: p.series.filter((s) => s.points.some(([x, y]) => Number.isFinite(x) && Number.isFinite(y))) }))
    .filter((p) => p.series.length > 0);
}

const SMOOTH_FROM = 100, MAX_POINTS = 2000;

/** Every k-th point (and the last) so that at most MAX_POINTS remain. */
function thin(points: [number, number][]): [number, number][] {
  if (points.length <= MAX_POINTS) return points;
  const k = Math.ceil(points.length / MAX_POINTS);
  const out = points.filter((_, i) => i % k === 0);
  if ((points.length - 1) % k !== 0) out.push(points[points.length - 1]!);
  return out;
}

/** Exponential moving average with a span of ~2% of the points (non-finite values skipped). */
function smooth(points: [number, number][]): [number, number][] {
  const alpha = 2 / (Math.max(2, points.length / 50) + 1);
  let m: number | null = null;
  return points.map(([x, y]) => {
    if (Number.isFinite(y)) m = m === null ? y : m + alpha * (y - m);
    return [x, m ?? NaN];
  });
}

/** The SVG text of the curves in `records` (a note instead of panels when there is nothing to plot). */
export function renderCurves(records: readonly MetricRecord[], options: { title?: string; width?: number } = {}): string {
  const W = options.width ?? 760, PH = 230, top = 40, gap = 30;
  const L = 70, R = 200, T = 28, B = 36;   // plot margins inside a panel (legend on the right)
  const panels = collect(records);
  const H = top + Math.max(1, panels.length) * (PH + gap);
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  o.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  o.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">${esc(options.title ?? 'training curves')}</text>`);
  if (!panels.length) o.push(`<text x="${W / 2}" y="${top + 40}" text-anchor="middle" fill="#666">no metrics yet</text>`);
  panels.forEach((p, pi) => {
    const y0 = top + pi * (PH + gap);
    const x1 = L, x2 = W - R, y1 = y0 + T, y2 = y0 + PH - B;
    const pts = p.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
    for (const [x, y] of pts) {
      xmin = Math.min(xmin, x); xmax = Math.max(xmax, x);
      ymin = Math.min(ymin, y); ymax = Math.max(ymax, y);
    }
    if (xmax === xmin) { xmin -= 1; xmax += 1; }
    if (ymax === ymin) { const d = Math.abs(ymin) * 0.1 || 1; ymin -= d; ymax += d; }
    const pad = (ymax - ymin) * 0.05;
    ymin -= pad; ymax += pad;
    if (p.title !== 'loss' && ymin < 0 && pts.every((q) => q[1] >= 0)) ymin = 0;
    const sx = (x: number) => x1 + ((x - xmin) / (xmax - xmin)) * (x2 - x1);
    const sy = (y: number) => y2 - ((y - ymin) / (ymax - ymin)) * (y2 - y1);
    o.push(`<g>`);
    o.push(`<text x="${x1}" y="${y0 + 18}" font-size="13" font-weight="bold">${esc(p.title)}</text>`);
    for (const t of niceTicks(ymin, ymax, 5)) {
      const y = sy(t).toFixed(1);
      o.push(`<line x1="${x1}" y1="${y}" x2="${x2}" y2="${y}" stroke="#e5e5e5"/>`);
      o.push(`<text x="${x1 - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" fill="#444">${tickText(t)}</text>`);
    }
    for (const t of niceTicks(xmin, xmax, 6)) {
      const x = sx(t).toFixed(1);
      o.push(`<line x1="${x}" y1="${y2}" x2="${x}" y2="${y2 + 4}" stroke="#444"/>`);
      o.push(`<text x="${x}" y="${y2 + 16}" text-anchor="middle" fill="#444">${tickText(t)}</text>`);
    }
    o.push(`<rect x="${x1}" y="${y1}" width="${x2 - x1}" height="${y2 - y1}" fill="none" stroke="#444"/>`);
    o.push(`<text x="${(x1 + x2) / 2}" y="${y2 + 31}" text-anchor="middle" fill="#444">step</text>`);
    p.series.forEach((s, si) => {
      const color = COLORS[si % COLORS.length]!;
      // A break in the line wherever a value is not finite.
      const line = (points: [number, number][], extra: string) => {
        let path = '', pen = false;
        for (const [x, y] of points) {
          if (!Number.isFinite(x) || !Number.isFinite(y)) { pen = false; continue; }
          path += `${pen ? 'L' : 'M'}${sx(x).toFixed(1)} ${sy(y).toFixed(1)}`;
          pen = true;
        }
        o.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="1.5" stroke-linejoin="round"${extra}/>`);
      };
      if (!s.dots && s.points.length > SMOOTH_FROM && s.label !== 'lr') {
        // Many noisy steps: the raw values faint (thinned to at most MAX_POINTS), a moving average on top.
        line(thin(s.points), ' stroke-opacity="0.25"');
        line(thin(smooth(s.points)), '');
      } else line(thin(s.points), '');
      if (s.dots) for (const [x, y] of s.points) if (Number.isFinite(x) && Number.isFinite(y))
        o.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${color}"/>`);
      const ly = y1 + 8 + si * 18;
      o.push(`<line x1="${x2 + 14}" y1="${ly}" x2="${x2 + 36}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
      o.push(`<text x="${x2 + 42}" y="${ly}" dominant-baseline="middle">${esc(s.label)}</text>`);
    });
    o.push(`</g>`);
  });
  o.push(`</svg>`);
  return o.join('\n') + '\n';
}

/** Writes curves.svg (atomically) from records or from a metrics.jsonl path. */
export function writeCurves(path: string, records: readonly MetricRecord[] | string, options: { title?: string } = {}): void {
  const rs = typeof records === 'string' ? readMetrics(records) : records;
  writeFileAtomic(path, renderCurves(rs, options));
}
