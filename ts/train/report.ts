// report.html: what a person opens after a run. One self-contained file (no script, no
// external resource): the run's summary, the recall@k table (both directions) and zero-shot
// accuracy, the training curves (curves.svg inlined), and held-out images (PNG data: URIs
// made with sharp) each with its caption and its top-5 retrieved captions, the correct ones
// marked.
import sharp from 'sharp';
import { existsSync, readFileSync } from 'node:fs';
import { describe } from '../graph/creation.js';
import { writeFileAtomic } from './safetensors.js';

export interface ReportRetrieved {
  caption: string;
  correct: boolean;
  /** Cosine similarity, when known. */
  score?: number;
}

export interface ReportSample {
  /** A data: URI (imageDataUri) or any URL. */
  image: string;
  caption: string;
  /** The best captions retrieved for the image, best first. */
  top: ReportRetrieved[];
  /** e.g. the sample's key or class. */
  note?: string;
}

export interface ReportInput {
  title: string;
  /** Label/value pairs shown at the top (model, data, steps, wall time...). */
  summary: [string, string][];
  /** Recall@k in [0, 1] by k, both directions. */
  recall?: { i2t: Record<number, number>; t2i: Record<number, number>; images: number; texts: number };
  zeroShot?: { top1: number; top5: number; classes: number; what?: string };
  /** Raw SVG text of the training curves. */
  curvesSvg?: string | null;
  samples: ReportSample[];
  notes?: string[];
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

const pct = (v: number) => `${(100 * v).toFixed(2)}%`;

/**
 * A PNG data: URI of one image from normalised planar pixels [3, H, W] (the loader's output):
 * the normalisation is undone with `mean`/`std`, values rounded and clamped to 0..255.
 */
export async function imageDataUri(pixels: Float32Array | Float64Array, width: number, height: number,
  mean: readonly number[], std: readonly number[]): Promise<string> {
  const op = 'imageDataUri';
  if (!(pixels instanceof Float32Array || pixels instanceof Float64Array)) throw new TypeError(`${op}: expected a Float32Array or Float64Array for pixels but received ${describe(pixels)}`);
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || pixels.length !== 3 * width * height)
    throw new RangeError(`${op}: expected 3 * width * height = ${3 * width * height} values for pixels but received ${pixels.length}`);
  const plane = width * height, rgb = Buffer.alloc(3 * plane);
  for (let c = 0; c < 3; c++)
    for (let p = 0; p < plane; p++) {
      const v = Math.round((pixels[c * plane + p]! * std[c]! + mean[c]!) * 255);
      rgb[p * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  const png = await sharp(rgb, { raw: { width, height, channels: 3 } }).png().toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}

const CSS = `
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse} td,th{padding:4px 10px;text-align:left;border-bottom:1px solid #eee}
th{background:#f6f6f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
.summary td:first-child{color:#666}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;display:flex;gap:8px;background:#fff}
.card img{width:64px;height:64px;image-rendering:pixelated;border:1px solid #eee;flex:none}
.card .cap{font-weight:600;font-size:13px;margin-bottom:3px}
.card ol{margin:0;padding-left:18px;font-size:12px} .card li{margin:1px 0}
.ok{color:#137333;font-weight:600} .ok::after{content:" \\2713"} .no{color:#666}
.note{color:#888;font-size:11px} .muted{color:#666;font-size:13px}
.curves svg{max-width:100%;height:auto}
`;

/** The HTML text of a report. */
export function renderReport(input: ReportInput): string {
  const o: string[] = [];
  o.push('<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">', `<title>${esc(input.title)}</title>`, `<style>${CSS}</style>`, '</head><body>');
  o.push(`<h1>${esc(input.title)}</h1>`);
  o.push('<table class="summary">');
  for (const [k, v] of input.summary) o.push(`<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`);
  o.push('</table>');
  if (input.recall) {
    const r = input.recall;
    const ks = [...new Set([...Object.keys(r.i2t), ...Object.keys(r.t2i)].map(Number))].sort((a, b) => a - b);
    o.push('<h2>Retrieval on the held-out set</h2>');
    o.push(`<p class="muted">${r.images} images, ${r.texts} captions; a retrieved caption counts as correct when it is the image's own caption (identical captions count).</p>`);
    o.push(`<table><tr><th>direction</th>${ks.map((k) => `<th>recall@${k}</th>`).join('')}</tr>`);
    o.push(`<tr><td>image &rarr; text</td>${ks.map((k) => `<td class="num">${r.i2t[k] === undefined ? '' : pct(r.i2t[k]!)}</td>`).join('')}</tr>`);
    o.push(`<tr><td>text &rarr; image</td>${ks.map((k) => `<td class="num">${r.t2i[k] === undefined ? '' : pct(r.t2i[k]!)}</td>`).join('')}</tr>`);
    o.push(`<tr><td class="note">chance</td>${ks.map((k) => `<td class="num note">${pct(Math.min(1, k / r.texts))}</td>`).join('')}</tr>`);
    o.push('</table>');
  }
  if (input.zeroShot) {
    const z = input.zeroShot;
    o.push('<h2>Zero-shot classification</h2>');
    o.push(`<table><tr><th>${esc(z.what ?? 'classes')}</th><th>top-1</th><th>top-5</th><th>chance (top-1)</th></tr>`);
    o.push(`<tr><td>${z.classes} classes</td><td class="num">${pct(z.top1)}</td><td class="num">${pct(z.top5)}</td><td class="num note">${pct(1 / z.classes)}</td></tr></table>`);
  }
  if (input.curvesSvg) {
    // Inline SVG: strip an XML prolog, keep the markup (written by ts/train/plots.ts, no script).
    const svg = input.curvesSvg.replace(/^<\?xml[^>]*>\s*/, '').replace(/<script[\s\S]*?<\/script>/gi, '');
    o.push('<h2>Training curves</h2>', `<div class="curves">${svg}</div>`);
  }
  if (input.samples.length) {
    o.push('<h2>Held-out images and their top-5 retrieved captions</h2>');
    o.push('<div class="grid">');
    for (const s of input.samples) {
      o.push('<div class="card">');
      o.push(`<img src="${esc(s.image)}" alt="${esc(s.caption)}">`);
      o.push('<div>');
      o.push(`<div class="cap">${esc(s.caption)}</div>`);
      if (s.note) o.push(`<div class="note">${esc(s.note)}</div>`);
      o.push('<ol>');
      for (const t of s.top)
        o.push(`<li class="${t.correct ? 'ok' : 'no'}">${esc(t.caption)}${t.score !== undefined ? ` <span class="note">${t.score.toFixed(3)}</span>` : ''}</li>`);
      o.push('</ol></div></div>');
    }
    o.push('</div>');
  }
  if (input.notes?.length) {
    o.push('<h2>Notes</h2><ul>');
    for (const n of input.notes) o.push(`<li class="muted">${esc(n)}</li>`);
    o.push('</ul>');
  }
  o.push(`<p class="note">written by vlmkit on ${esc(new Date().toISOString())}</p>`);
  o.push('</body></html>');
  return o.join('\n') + '\n';
}

/** Writes report.html atomically; curves are read from `curvesPath` when given and present. */
export function writeReport(path: string, input: ReportInput, curvesPath?: string): void {
  const curves = input.curvesSvg ?? (curvesPath && existsSync(curvesPath) ? readFileSync(curvesPath, 'utf8') : null);
  writeFileAtomic(path, renderReport({ ...input, curvesSvg: curves }));
}
