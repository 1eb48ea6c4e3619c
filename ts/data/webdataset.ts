// WebDataset tar shards, as img2dataset writes them: consecutive tar entries sharing a key
// (the name up to the first dot of its base name) form a sample, e.g. 000000012.jpg +
// 000000012.txt + 000000012.json. Shards are streamed with tar-stream (never loaded whole),
// their order is shuffled per epoch, samples pass through a seeded shuffle buffer, and a
// pattern like "shards/{000..009}.tar" names several shards.

import { createReadStream } from 'node:fs';
import { pipeline, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import * as tar from 'tar-stream';
import { Purpose, Rng, permutation } from './random.js';
import { SkipCounter, type Sample, type StreamDataset } from './source.js';

/**
 * Brace expansion as the shell (and WebDataset) do it: "{000..009}" is a zero-padded range,
 * "{a,b}" a list; several groups multiply. "shards/{00..02}.tar" -> shards/00.tar, ...
 */
export function expandBraces(pattern: string): string[] {
  const open = pattern.indexOf('{');
  if (open < 0) return [pattern];
  // The matching close brace (groups may nest in lists).
  let depth = 0, close = -1;
  for (let i = open; i < pattern.length; i++) {
    if (pattern[i] === '{') depth++;
    else if (pattern[i] === '}' && --depth === 0) { close = i; break; }
  }
  if (close < 0) throw new RangeError(`expandBraces: expected a closing '}' in the pattern but received '${pattern}'`);
  const head = pattern.slice(0, open), body = pattern.slice(open + 1, close), tail = pattern.slice(close + 1);
  let items: string[];
  const range = /^(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?$/.exec(body);
  if (range) {
    const [a, b] = [range[1]!, range[2]!];
    const step = range[3] ? Number(range[3]) : 1;
    if (step <= 0) throw new RangeError(`expandBraces: expected a positive step in '{${body}}' but received ${step}`);
    const from = Number(a), to = Number(b);
    const width = (a.length > 1 && a.startsWith('0')) || (b.length > 1 && b.startsWith('0')) ? Math.max(a.length, b.length) : 0;
    const count = Math.floor(Math.abs(to - from) / step) + 1;
    if (count > 1_000_000) throw new RangeError(`expandBraces: expected at most 1000000 items in '{${body}}' but received ${count}`);
    items = [];
    for (let k = 0; k < count; k++) {
      const v = from <= to ? from + k * step : from - k * step;
      items.push(width ? String(Math.abs(v)).padStart(width - (v < 0 ? 1 : 0), '0').replace(/^/, v < 0 ? '-' : '') : String(v));
    }
  } else {
    // Split on top-level commas.
    items = [];
    let d = 0, cur = '';
    for (const ch of body) {
      if (ch === '{') d++;
      if (ch === '}') d--;
      if (ch === ',' && d === 0) { items.push(cur); cur = ''; } else cur += ch;
    }
    items.push(cur);
    if (items.length === 1) return expandBraces(head + '\u0000' + body + '\u0001' + tail).map((s) => s.replace('\u0000', '{').replace('\u0001', '}'));
    items = items.flatMap(expandBraces);
  }
  const rest = expandBraces(tail);
  return items.flatMap((it) => rest.map((r) => head + it + r));
}

export interface WebDatasetOptions {
  /** Shuffle buffer size in samples; 0 keeps the shards' order. Default 1000. */
  shuffleBuffer?: number;
  /** Shuffle the order of shards each epoch. Default true. */
  shuffleShards?: boolean;
  /** Image extensions, first match wins. Default jpg, jpeg, png, webp. */
  imageExtensions?: readonly string[];
  /** Caption extensions, first match wins; a .json is read for `jsonCaptionKey` when no text file is there. Default txt, text, caption. */
  textExtensions?: readonly string[];
  /** Key of the caption in key.json (img2dataset writes 'caption'). */
  jsonCaptionKey?: string;
  /** Data-parallel reading: this rank reads shards rank, rank + worldSize, ... of the shuffled list. */
  rank?: number;
  worldSize?: number;
}

/** Splits a tar entry name into sample key and extension (WebDataset's convention). */
export function splitKey(name: string): { key: string; ext: string } {
  const slash = name.lastIndexOf('/');
  const dot = name.indexOf('.', slash + 1);
  return dot < 0 ? { key: name, ext: '' } : { key: name.slice(0, dot), ext: name.slice(dot + 1).toLowerCase() };
}

async function readAll(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c);
  return Buffer.concat(chunks);
}

/** WebDataset shards as a streaming data source. */
export class WebDataset implements StreamDataset {
  readonly kind = 'stream' as const;
  readonly shards: readonly string[];
  readonly skipped = new SkipCounter();
  private readonly opts: Required<Omit<WebDatasetOptions, 'rank' | 'worldSize'>> & { rank: number; worldSize: number };

  constructor(shards: string | readonly string[], options: WebDatasetOptions = {}) {
    const op = 'webDataset';
    const list = typeof shards === 'string' ? expandBraces(shards) : [...shards].flatMap((s) => expandBraces(s));
    if (list.length === 0 || !list.every((s) => typeof s === 'string' && s.length > 0))
      throw new TypeError(`${op}: expected a shard path, a brace pattern or a list of them for shards but received ${JSON.stringify(shards)}`);
    this.shards = list;
    const shuffleBuffer = options.shuffleBuffer ?? 1000;
    if (!Number.isInteger(shuffleBuffer) || shuffleBuffer < 0) throw new RangeError(`${op}: expected a non-negative integer for options.shuffleBuffer but received ${JSON.stringify(shuffleBuffer)}`);
    const worldSize = options.worldSize ?? 1, rank = options.rank ?? 0;
    if (!Number.isInteger(worldSize) || worldSize < 1) throw new RangeError(`${op}: expected a positive integer for options.worldSize but received ${JSON.stringify(worldSize)}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new RangeError(`${op}: expected an integer in [0, ${worldSize}) for options.rank but received ${JSON.stringify(rank)}`);
    const lower = (xs: readonly string[]) => xs.map((x) => x.toLowerCase().replace(/^\./, ''));
    this.opts = {
      shuffleBuffer, shuffleShards: options.shuffleShards ?? true, rank, worldSize,
      imageExtensions: lower(options.imageExtensions ?? ['jpg', 'jpeg', 'png', 'webp']),
      textExtensions: lower(options.textExtensions ?? ['txt', 'text', 'caption']),
      jsonCaptionKey: options.jsonCaptionKey ?? 'caption',
    };
  }

  /** The samples of one shard in tar order (reads are counted into `skipped` on shard errors). */
  async *readShard(path: string): AsyncGenerator<Sample> {
    const extract = tar.extract();
    const source = createReadStream(path);
    const parts: Readable[] = [source];
    if (/\.(tgz|gz)$/i.test(path)) parts.push(createGunzip());
    let failure: Error | null = null;
    pipeline([...parts, extract] as unknown as [Readable, Readable], (err) => { if (err) failure = err; });
    let key: string | null = null;
    let files = new Map<string, Buffer>();
    const flush = (): Sample | null => (key === null ? null : this.toSample(path, key, files));
    try {
      for await (const entry of extract) {
        const h = entry.header;
        if (h.type !== 'file' || h.name.split('/').pop()!.startsWith('__') && h.name.endsWith('__')) { entry.resume(); continue; }
        const { key: k, ext } = splitKey(h.name);
        const body = await readAll(entry as unknown as AsyncIterable<Buffer>);
        if (k !== key) {
          const s = flush();
          if (s) yield s;
          key = k; files = new Map();
        }
        files.set(ext, body);
      }
      const s = flush();
      if (s) yield s;
    } catch (e) {
      failure ??= e as Error;
    } finally {
      source.destroy();
      extract.destroy();
    }
    if (failure) {
      const code = (failure as NodeJS.ErrnoException).code;
      this.skipped.add(code === 'ENOENT' ? 'missing shard' : 'corrupt shard', path, (failure as Error).message);
    }
  }

  private toSample(shard: string, key: string, files: Map<string, Buffer>): Sample {
    const name = `${shard}:${key}`;
    let bytes: Buffer | undefined;
    for (const e of this.opts.imageExtensions) if ((bytes = files.get(e))) break;
    let caption: string | null = null;
    for (const e of this.opts.textExtensions) {
      const t = files.get(e);
      if (t) { caption = t.toString('utf8'); break; }
    }
    if (caption === null && files.has('json')) {
      try {
        const meta = JSON.parse(files.get('json')!.toString('utf8')) as Record<string, unknown>;
        const c = meta[this.opts.jsonCaptionKey];
        if (typeof c === 'string') caption = c;
      } catch { /* no caption from a broken json */ }
    }
    if (!bytes) return { image: null, caption, key: name, error: 'missing image' };
    return { image: { bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), name: key }, caption, key: name };
  }

  /** The shards this rank reads in an epoch, in order. */
  shardOrder(epoch: number, seed: number): string[] {
    let order = [...this.shards];
    if (this.opts.shuffleShards) {
      const p = permutation(order.length, new Rng(seed, epoch, Purpose.shards));
      order = Array.from(p, (i) => this.shards[i]!);
    }
    return order.filter((_, i) => i % this.opts.worldSize === this.opts.rank);
  }

  /** One epoch: shards in shuffled order through a seeded shuffle buffer. */
  async *stream(epoch: number, seed: number): AsyncGenerator<Sample> {
    const size = this.opts.shuffleBuffer;
    const rng = new Rng(seed, epoch, Purpose.buffer);
    const buffer: Sample[] = [];
    for (const shard of this.shardOrder(epoch, seed)) {
      for await (const s of this.readShard(shard)) {
        if (size <= 1) { yield s; continue; }
        if (buffer.length < size) { buffer.push(s); continue; }
        const j = rng.int(size);
        const out = buffer[j]!;
        buffer[j] = s;
        yield out;
      }
    }
    while (buffer.length > 0) {
      const j = rng.int(buffer.length);
      const out = buffer[j]!;
      buffer[j] = buffer[buffer.length - 1]!;
      buffer.pop();
      yield out;
    }
  }
}

export const webDataset = (shards: string | readonly string[], options: WebDatasetOptions = {}) => new WebDataset(shards, options);
