// Batches for training and evaluation: a data source + a tokenizer + an image transform.
//
// Order. An epoch is a seeded permutation of a random-access source (or one pass of a stream,
// which shuffles itself). Every random choice for a sample (caption template, crop box,
// caption noise) comes from Rng(seed, epoch, position-in-epoch, purpose), so a batch depends
// only on (seed, epoch, position), never on timing.
//
// Resuming. `position` ({epoch, index}: samples of that epoch consumed so far, skipped ones
// included) after a batch is all a checkpoint needs: a loader built with the same options and
// that position yields exactly the batches the uninterrupted loader would have yielded next.
// A stream resumes by replaying its epoch and dropping the first `index` samples undecoded.
//
// Skipping. A missing or corrupt image, an empty caption or a filtered sample is skipped and
// counted by reason (`skipped`), and the batch is filled from the following samples. Batches
// never span epochs; `dropLast` drops an epoch's incomplete last batch.
//
// Overlap. Samples are decoded ahead (`prefetch` batches in flight); sharp decodes on its own
// threads, so reading and decoding the next batch overlaps the trainer's compute.

import { tensor } from '../graph/creation.js';
import type { Tensor } from '../graph/tensor.js';
import { decodeImage, type ImageTransform } from './images.js';
import { Purpose, Rng, permutation } from './random.js';
import { SkipCounter, SkipError, type DataSource, type Sample, type SkipReport } from './source.js';
import type { Tokenizer } from './tokenizers.js';

export interface LoaderPosition {
  epoch: number;
  /** Samples of this epoch consumed (including skipped ones). */
  index: number;
}

export interface LoaderFilters {
  /** Captions with fewer tokens (without specials) are skipped. */
  minCaptionTokens?: number;
  /** Captions with more tokens (without specials) are skipped (instead of truncated). */
  maxCaptionTokens?: number;
  /** Images whose shorter side is below this are skipped (ALIGN: 200). */
  minImageSide?: number;
  /** Images whose aspect ratio exceeds this are skipped (ALIGN: 3). */
  maxAspectRatio?: number;
}

export interface LoaderOptions {
  source: DataSource;
  tokenizer: Tokenizer;
  transform: ImageTransform;
  batchSize: number;
  /** Seeds the order and every per-sample random choice. Default 0. */
  seed?: number;
  /** Shuffle a random-access source each epoch (streams shuffle themselves). Default true. */
  shuffle?: boolean;
  /** Drop an epoch's incomplete last batch. Default true. */
  dropLast?: boolean;
  /** Stop after this many epochs (counted from 0, not from `position`). Default Infinity. */
  epochs?: number;
  /** Batches decoded ahead. Default 2. */
  prefetch?: number;
  /** Where to start (a saved `position`). Default {epoch: 0, index: 0}. */
  position?: LoaderPosition;
  /** Image dtype. Default 'float32'. */
  dtype?: 'float32' | 'float64';
  /** Also return a uint8 [B, L] attention mask tensor. Default: true for WordPiece tokenizers. */
  attentionMask?: boolean;
  /** ALIGN's noisy-data experiment: replace this fraction of captions by another sample's. Default 0. */
  captionNoise?: number;
  filters?: LoaderFilters;
  /** Data parallel over a random-access source: this rank takes positions rank, rank + worldSize, ... of each permutation. */
  rank?: number;
  worldSize?: number;
}

export interface Batch {
  /** [B, 3, size, size], normalised. */
  images: Tensor;
  /** int32 [B, contextLength]. */
  texts: Tensor;
  /** uint8 [B, contextLength], 1 = real token (when asked for). */
  attentionMask?: Tensor;
  /** Pooling position per row (CLIP's EOT, BERT's [SEP]). */
  eot: Int32Array;
  /** Tokens per row including specials. */
  lengths: Int32Array;
  captions: string[];
  /** Dataset index of each sample (random access) or its position in the epoch's stream. */
  indices: Int32Array;
  keys: string[];
  epoch: number;
  /** The loader's position after this batch: save it to resume after this step. */
  position: LoaderPosition;
  /** Disposes the tensors. */
  dispose(): void;
}

interface Task { epoch: number; at: number; index: number; sample: () => Sample | Promise<Sample>; caption?: string }
type Item =
  | { kind: 'sample'; pos: LoaderPosition; index: number; key: string; caption: string; pixels: Float32Array | Float64Array }
  | { kind: 'skip'; pos: LoaderPosition; key: string; reason: string; detail?: string }
  | { kind: 'end'; pos: LoaderPosition; epoch: number }
  | { kind: 'done' }
  | { kind: 'error'; error: unknown };

function fmt(v: unknown): string {
  if (typeof v === 'number' || typeof v === 'boolean') return `the ${typeof v} ${v}`;
  if (typeof v === 'string') return `the string '${v}'`;
  if (v === null || v === undefined) return String(v);
  return `a value of type ${typeof v}`;
}

function pickCaption(c: string | readonly string[] | null | undefined, rng: Rng): string {
  if (c === null || c === undefined) return '';
  if (typeof c === 'string') return c;
  if (c.length === 0) return '';
  return c[c.length === 1 ? 0 : rng.int(c.length)] ?? '';
}

export class DataLoader implements AsyncIterable<Batch> {
  readonly batchSize: number;
  readonly seed: number;
  private readonly o: Required<Omit<LoaderOptions, 'filters' | 'position' | 'attentionMask'>> & { filters: LoaderFilters; attentionMask: boolean };
  private pos: LoaderPosition;
  private readonly start: LoaderPosition;
  private readonly skips = new SkipCounter();
  private readonly queue: Promise<Item>[] = [];
  private tasks: AsyncGenerator<Task | { end: number }> | null = null;
  private finished = false;
  private usableThisEpoch = 0;
  // Whether this loader saw the current epoch from its first sample (else an empty rest is fine).
  private wholeEpoch: boolean;

  constructor(options: LoaderOptions) {
    const op = 'dataLoader';
    if (typeof options !== 'object' || options === null) throw new TypeError(`${op}: expected an options object but received ${fmt(options)}`);
    const { source, tokenizer, transform } = options;
    if (!source || (source.kind !== 'map' && source.kind !== 'stream')) throw new TypeError(`${op}: expected a Dataset or StreamDataset for options.source but received ${fmt(source)}`);
    if (!tokenizer || typeof tokenizer.encodeBatch !== 'function') throw new TypeError(`${op}: expected a Tokenizer for options.tokenizer but received ${fmt(tokenizer)}`);
    if (!transform || typeof transform.apply !== 'function') throw new TypeError(`${op}: expected an ImageTransform (imageTransform()) for options.transform but received ${fmt(transform)}`);
    const int = (name: string, v: unknown, lo: number, dflt: number) => {
      const x = v === undefined ? dflt : v;
      if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < lo) throw new RangeError(`${op}: expected an integer >= ${lo} for options.${name} but received ${fmt(x)}`);
      return x;
    };
    const batchSize = int('batchSize', options.batchSize, 1, NaN);
    const seed = int('seed', options.seed, 0, 0);
    const prefetch = int('prefetch', options.prefetch, 0, 2);
    const worldSize = int('worldSize', options.worldSize, 1, 1);
    const rank = int('rank', options.rank, 0, 0);
    if (rank >= worldSize) throw new RangeError(`${op}: expected an integer in [0, ${worldSize}) for options.rank but received ${fmt(rank)}`);
    const epochs = options.epochs ?? Infinity;
    if (typeof epochs !== 'number' || !(epochs === Infinity || (Number.isSafeInteger(epochs) && epochs >= 1))) throw new RangeError(`${op}: expected a positive integer or Infinity for options.epochs but received ${fmt(epochs)}`);
    const captionNoise = options.captionNoise ?? 0;
    if (typeof captionNoise !== 'number' || !(captionNoise >= 0 && captionNoise <= 1)) throw new RangeError(`${op}: expected a number in [0, 1] for options.captionNoise but received ${fmt(captionNoise)}`);
    if (captionNoise > 0 && source.kind === 'map' && typeof source.captionAt !== 'function') throw new TypeError(`${op}: expected a source with captionAt() for options.captionNoise > 0 but the source has none`);
    for (const k of ['shuffle', 'dropLast', 'attentionMask'] as const)
      if (options[k] !== undefined && typeof options[k] !== 'boolean') throw new TypeError(`${op}: expected a boolean for options.${k} but received ${fmt(options[k])}`);
    const dtype = options.dtype ?? 'float32';
    if (dtype !== 'float32' && dtype !== 'float64') throw new RangeError(`${op}: expected 'float32' or 'float64' for options.dtype but received ${fmt(dtype)}`);
    const filters = options.filters ?? {};
    for (const [k, v] of Object.entries(filters))
      if (!['minCaptionTokens', 'maxCaptionTokens', 'minImageSide', 'maxAspectRatio'].includes(k) || (v !== undefined && (typeof v !== 'number' || !(v >= 0))))
        throw new RangeError(`${op}: expected minCaptionTokens, maxCaptionTokens, minImageSide or maxAspectRatio with a non-negative number in options.filters but received ${k}: ${fmt(v)}`);
    const position = options.position ?? { epoch: 0, index: 0 };
    if (typeof position !== 'object' || position === null || !Number.isSafeInteger(position.epoch) || position.epoch < 0 || !Number.isSafeInteger(position.index) || position.index < 0)
      throw new RangeError(`${op}: expected {epoch, index} with non-negative integers for options.position but received ${JSON.stringify(position)}`);
    this.batchSize = batchSize;
    this.seed = seed;
    this.o = {
      source, tokenizer, transform, batchSize, seed, prefetch, rank, worldSize, epochs, captionNoise, dtype, filters,
      shuffle: options.shuffle ?? true, dropLast: options.dropLast ?? true,
      attentionMask: options.attentionMask ?? tokenizer.kind === 'bert-wordpiece',
    };
    this.start = { ...position };
    this.pos = { ...position };
    this.wholeEpoch = position.index === 0;
  }

  /** Where the next batch starts; save it with a checkpoint. */
  get position(): LoaderPosition { return { ...this.pos }; }

  /** Skipped samples by reason: the source's own (malformed rows, broken shards) and the loader's. */
  get skipped(): SkipReport {
    const own = this.skips.report();
    return this.o.source.skipped ? SkipCounter.merge(this.o.source.skipped.report(), own) : own;
  }

  /** Samples per epoch for a random-access source (this rank's share), else undefined. */
  get epochSize(): number | undefined {
    const s = this.o.source;
    if (s.kind !== 'map') return undefined;
    return Math.floor((s.size - this.o.rank + this.o.worldSize - 1) / this.o.worldSize);
  }

  /** Full batches per epoch for a random-access source without skips. */
  get batchesPerEpoch(): number | undefined {
    const n = this.epochSize;
    if (n === undefined) return undefined;
    return this.o.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  // The sequence of samples, epoch after epoch, from `start`; sequential, so caption noise
  // drawn here is deterministic.
  private async *taskStream(): AsyncGenerator<Task | { end: number }> {
    const { source, seed, shuffle, rank, worldSize, epochs, captionNoise } = this.o;
    for (let epoch = this.start.epoch; epoch < epochs; epoch++) {
      const from = epoch === this.start.epoch ? this.start.index : 0;
      if (source.kind === 'map') {
        const n = source.size;
        const perm = shuffle ? permutation(n, new Rng(seed, epoch, Purpose.shuffle)) : Int32Array.from({ length: n }, (_, i) => i);
        const order = worldSize === 1 ? perm : perm.filter((_, i) => i % worldSize === rank);
        for (let at = from; at < order.length; at++) {
          const index = order[at]!;
          const task: Task = { epoch, at, index, sample: () => source.get(index) };
          if (captionNoise > 0) {
            const r = new Rng(seed, epoch, at, Purpose.noise);
            if (r.next() < captionNoise) task.caption = pickCaption(source.captionAt!(r.int(n)), r);
          }
          yield task;
        }
      } else {
        const recent: string[] = [];
        let at = 0;
        for await (const s of source.stream(epoch, seed)) {
          const i = at++;
          if (captionNoise > 0) {
            const c = pickCaption(s.caption, new Rng(seed, epoch, i, Purpose.caption));
            const r = new Rng(seed, epoch, i, Purpose.noise);
            const replace = r.next() < captionNoise && recent.length > 0;
            const task: Task = { epoch, at: i, index: i, sample: () => s };
            if (replace) task.caption = recent[r.int(recent.length)]!;
            if (c) { if (recent.length < 1024) recent.push(c); else recent[r.int(1024)] = c; }
            if (i >= from) yield task;
          } else if (i >= from) {
            yield { epoch, at: i, index: i, sample: () => s };
          }
        }
      }
      yield { end: epoch };
    }
  }

  private async process(task: Task): Promise<Item> {
    const pos = { epoch: task.epoch, index: task.at + 1 };
    let key = String(task.index);
    try {
      const s = await task.sample();
      key = s.key;
      if (s.error) throw new SkipError(s.error);
      const { tokenizer, transform, filters, seed } = this.o;
      const caption = (task.caption ?? pickCaption(s.caption, new Rng(seed, task.epoch, task.at, Purpose.caption))).trim();
      if (caption.length === 0) throw new SkipError('empty caption');
      if (filters.minCaptionTokens !== undefined || filters.maxCaptionTokens !== undefined) {
        const n = tokenizer.tokenize(caption).length;
        if (filters.minCaptionTokens !== undefined && n < filters.minCaptionTokens) throw new SkipError('caption too short', `${n} tokens`);
        if (filters.maxCaptionTokens !== undefined && n > filters.maxCaptionTokens) throw new SkipError('caption too long', `${n} tokens`);
      }
      if (!s.image) throw new SkipError('missing image');
      const decodeOpts = { ...transform.decode };
      if (filters.minImageSide !== undefined) decodeOpts.minSide = filters.minImageSide;
      if (filters.maxAspectRatio !== undefined) decodeOpts.maxAspectRatio = filters.maxAspectRatio;
      const img = await decodeImage(s.image, decodeOpts);
      const per = 3 * transform.size * transform.size;
      const pixels = this.o.dtype === 'float64' ? new Float64Array(per) : new Float32Array(per);
      await transform.applyAsync(img, transform.train ? new Rng(seed, task.epoch, task.at, Purpose.crop) : undefined, pixels, 0);
      return { kind: 'sample', pos, index: task.index, key, caption, pixels };
    } catch (e) {
      if (e instanceof SkipError) return e.message !== e.reason ? { kind: 'skip', pos, key, reason: e.reason, detail: e.message } : { kind: 'skip', pos, key, reason: e.reason };
      return { kind: 'error', error: e };
    }
  }

  // Keeps (prefetch + 1) batches of samples in flight, in order.
  private fill(): void {
    if (this.finished) return;
    this.tasks ??= this.taskStream();
    const window = (this.o.prefetch + 1) * this.batchSize;
    while (this.queue.length < window) {
      this.queue.push(this.tasks.next().then(
        (r): Item | Promise<Item> => (r.done ? { kind: 'done' } : 'end' in r.value ? { kind: 'end', epoch: r.value.end, pos: { epoch: r.value.end + 1, index: 0 } } : this.process(r.value)),
        (error): Item => ({ kind: 'error', error })));
    }
  }

  /** The next batch, or null when the epochs are done. */
  async next(): Promise<Batch | null> {
    if (this.finished) return null;
    const B = this.batchSize;
    let items: Extract<Item, { kind: 'sample' }>[] = [];
    let epoch = this.pos.epoch;
    while (items.length < B) {
      this.fill();
      const it = await this.queue.shift()!;
      if (it.kind === 'error') { this.close(); throw it.error; }
      if (it.kind === 'done') {
        this.close();
        if (items.length > 0 && !this.o.dropLast) break;
        return null;
      }
      this.pos = it.pos;
      if (it.kind === 'skip') { this.skips.add(it.reason, it.key, it.detail); continue; }
      if (it.kind === 'end') {
        if (this.usableThisEpoch === 0 && this.wholeEpoch) {
          this.close();
          const r = this.skipped;
          throw new Error(`dataLoader: epoch ${it.epoch} produced no usable sample (skipped ${r.total}: ${JSON.stringify(r.reasons)})`);
        }
        this.usableThisEpoch = 0;
        this.wholeEpoch = true;
        if (items.length > 0 && !this.o.dropLast) break;
        items = [];
        epoch = it.pos.epoch;
        continue;
      }
      this.usableThisEpoch++;
      epoch = it.pos.epoch;
      items.push(it);
    }
    this.fill();
    return this.assemble(items, epoch);
  }

  private assemble(items: Extract<Item, { kind: 'sample' }>[], epoch: number): Batch {
    const n = items.length, s = this.o.transform.size, per = 3 * s * s;
    const buf = this.o.dtype === 'float64' ? new Float64Array(n * per) : new Float32Array(n * per);
    items.forEach((it, i) => buf.set(it.pixels, i * per));
    const captions = items.map((it) => it.caption);
    const tb = this.o.tokenizer.encodeBatch(captions);
    const images = tensor(buf, [n, 3, s, s], { dtype: this.o.dtype });
    const texts = tensor(tb.ids, [n, tb.contextLength], { dtype: 'int32' });
    const attentionMask = this.o.attentionMask ? tensor(tb.attentionMask, [n, tb.contextLength], { dtype: 'uint8' }) : undefined;
    const batch: Batch = {
      images, texts, eot: tb.eot, lengths: tb.lengths, captions,
      indices: Int32Array.from(items, (it) => it.index), keys: items.map((it) => it.key),
      epoch, position: this.position,
      dispose() { images.dispose(); texts.dispose(); attentionMask?.dispose(); },
    };
    if (attentionMask) batch.attentionMask = attentionMask;
    return batch;
  }

  /** Stops reading (closes open shards); further next() calls return null. */
  close(): void {
    if (this.finished) return;
    this.finished = true;
    this.queue.length = 0;
    const t = this.tasks;
    this.tasks = null;
    if (t) void t.return(undefined).catch(() => undefined);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Batch> {
    try {
      for (;;) {
        const b = await this.next();
        if (b === null) return;
        yield b;
      }
    } finally {
      this.close();
    }
  }
}

export const dataLoader = (options: LoaderOptions) => new DataLoader(options);
