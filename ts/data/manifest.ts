// User data as a manifest: CSV, TSV or JSONL rows naming an image file and its caption,
// like open_clip's CsvDataset (--csv-img-key, --csv-caption-key, --csv-separator).
// Image paths are relative to the manifest's folder unless absolute (or `root` is given).
// Rows are read once; images are read and decoded by the loader when a sample is drawn.
// A malformed row (bad JSON, missing column) is skipped and counted here; a missing or
// corrupt image and an empty caption are skipped and counted by the loader.

import { readFileSync } from 'node:fs';
import { dirname, extname, isAbsolute, resolve } from 'node:path';
import { SkipCounter, type Dataset, type Sample } from './source.js';

export interface ManifestOptions {
  /** 'csv' | 'tsv' | 'jsonl'; default from the extension (.csv, .tsv/.tab, .jsonl/.ndjson). */
  format?: 'csv' | 'tsv' | 'jsonl';
  /** Column (or JSON key) of the image path; default 'filepath' (open_clip). */
  imageKey?: string;
  /** Column (or JSON key) of the caption; default 'title' (open_clip). In JSONL it may hold a list of captions. */
  captionKey?: string;
  /** Field separator for CSV/TSV; default ',' for csv and '\t' for tsv. */
  separator?: string;
  /** Folder that relative image paths start from; default the manifest's folder. */
  root?: string;
}

interface Row { path: string; caption: string | string[]; line: number }

/** RFC 4180 fields: quotes around fields, "" for a quote, separators and newlines inside quotes. */
export function parseDelimited(text: string, separator: string): { rows: string[][]; lines: number[] } {
  const rows: string[][] = [], lines: number[] = [];
  let field = '', row: string[] = [], inQuotes = false, line = 1, rowLine = 1, fieldStarted = false;
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inQuotes) {
      if (ch === '"') {
        if (text[i + 1] === '"') { field += '"'; i++; } else inQuotes = false;
      } else {
        if (ch === '\n') line++;
        field += ch;
      }
      continue;
    }
    if (ch === '"' && !fieldStarted) { inQuotes = true; fieldStarted = true; continue; }
    if (text.startsWith(separator, i)) { row.push(field); field = ''; fieldStarted = false; i += separator.length - 1; continue; }
    if (ch === '\r' && text[i + 1] === '\n') continue;
    if (ch === '\n' || ch === '\r') {
      row.push(field);
      if (!(row.length === 1 && row[0] === '')) { rows.push(row); lines.push(rowLine); }
      row = []; field = ''; fieldStarted = false; line++; rowLine = line;
      continue;
    }
    field += ch; fieldStarted = true;
  }
  if (field !== '' || row.length > 0) { row.push(field); rows.push(row); lines.push(rowLine); }
  return { rows, lines };
}

function formatOf(path: string, format: ManifestOptions['format']): 'csv' | 'tsv' | 'jsonl' {
  if (format !== undefined) {
    if (format !== 'csv' && format !== 'tsv' && format !== 'jsonl') throw new RangeError(`manifestDataset: expected 'csv', 'tsv' or 'jsonl' for options.format but received ${JSON.stringify(format)}`);
    return format;
  }
  const ext = extname(path).toLowerCase();
  if (ext === '.csv') return 'csv';
  if (ext === '.tsv' || ext === '.tab') return 'tsv';
  if (ext === '.jsonl' || ext === '.ndjson') return 'jsonl';
  throw new RangeError(`manifestDataset: expected a .csv, .tsv or .jsonl manifest (or options.format) but received '${path}'`);
}

/** A manifest as a random-access data source. */
export class ManifestDataset implements Dataset {
  readonly kind = 'map' as const;
  readonly size: number;
  readonly skipped = new SkipCounter();
  readonly format: 'csv' | 'tsv' | 'jsonl';
  private readonly rows: Row[] = [];

  constructor(readonly path: string, options: ManifestOptions = {}) {
    const op = 'manifestDataset';
    if (typeof path !== 'string' || path.length === 0) throw new TypeError(`${op}: expected a file path for path but received ${typeof path}`);
    this.format = formatOf(path, options.format);
    const imageKey = options.imageKey ?? 'filepath', captionKey = options.captionKey ?? 'title';
    for (const [n, v] of [['imageKey', imageKey], ['captionKey', captionKey]] as const)
      if (typeof v !== 'string' || v.length === 0) throw new TypeError(`${op}: expected a column name for options.${n} but received ${JSON.stringify(v)}`);
    const root = options.root ?? dirname(resolve(path));
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new Error(`${op}: cannot read the manifest '${path}': ${(e as Error).message}`);
    }
    const abs = (p: string) => (isAbsolute(p) ? p : resolve(root, p));

    if (this.format === 'jsonl') {
      text.split(/\r?\n/).forEach((lineText, i) => {
        if (lineText.trim() === '') return;
        let obj: unknown;
        try { obj = JSON.parse(lineText); } catch { this.skipped.add('malformed row', `line ${i + 1}`, 'invalid JSON'); return; }
        if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) { this.skipped.add('malformed row', `line ${i + 1}`, 'not a JSON object'); return; }
        const rec = obj as Record<string, unknown>;
        const p = rec[imageKey], c = rec[captionKey];
        if (typeof p !== 'string' || p.length === 0) { this.skipped.add('malformed row', `line ${i + 1}`, `no string '${imageKey}'`); return; }
        let caption: string | string[];
        if (typeof c === 'string') caption = c;
        else if (Array.isArray(c) && c.every((x) => typeof x === 'string')) caption = c as string[];
        else if (c === undefined || c === null) caption = '';
        else { this.skipped.add('malformed row', `line ${i + 1}`, `'${captionKey}' is neither a string nor a list of strings`); return; }
        this.rows.push({ path: abs(p), caption, line: i + 1 });
      });
    } else {
      const separator = options.separator ?? (this.format === 'csv' ? ',' : '\t');
      if (typeof separator !== 'string' || separator.length === 0 || separator.includes('"') || separator.includes('\n'))
        throw new RangeError(`${op}: expected a non-empty separator without quotes or newlines for options.separator but received ${JSON.stringify(separator)}`);
      const { rows, lines } = parseDelimited(text, separator);
      if (rows.length === 0) throw new RangeError(`${op}: expected a header row in '${path}' but the file is empty`);
      const header = rows[0]!.map((h) => h.trim());
      const pi = header.indexOf(imageKey), ci = header.indexOf(captionKey);
      if (pi < 0 || ci < 0)
        throw new RangeError(`${op}: expected columns '${imageKey}' and '${captionKey}' (options.imageKey, options.captionKey) in the header of '${path}' but received [${header.join(', ')}]`);
      for (let r = 1; r < rows.length; r++) {
        const row = rows[r]!;
        const p = row[pi];
        if (p === undefined || row.length !== header.length) { this.skipped.add('malformed row', `line ${lines[r]}`, `${row.length} fields, header has ${header.length}`); continue; }
        if (p.trim() === '') { this.skipped.add('malformed row', `line ${lines[r]}`, 'empty image path'); continue; }
        this.rows.push({ path: abs(p.trim()), caption: row[ci] ?? '', line: lines[r]! });
      }
    }
    this.size = this.rows.length;
  }

  captionAt(index: number): string | readonly string[] {
    return this.rows[index]!.caption;
  }
  get(index: number): Sample {
    const r = this.rows[index]!;
    return { image: { path: r.path }, caption: r.caption, key: `${this.path}:${r.line}` };
  }
  /** The image path of a row (absolute). */
  imagePath(index: number): string {
    return this.rows[index]!.path;
  }
}

export const manifestDataset = (path: string, options: ManifestOptions = {}) => new ManifestDataset(path, options);
