// The data side of a run: the training and evaluation sources named by the config (the
// embedded emoji set, a manifest, WebDataset shards), the tokenizer and image transforms of
// the model, ALIGN's caption-frequency filter, and `loaderSource`, which makes a resumable
// DataLoader the trainer's data source (its state is the loader's position).
import { describe } from '../graph/creation.js';
import { Purpose, Rng, permutation } from '../data/random.js';
import { SkipCounter, type DataSource as SampleSource, type Dataset, type Sample } from '../data/source.js';
import { emojiSplit, EMOJI_TEMPLATES, type EmojiData } from '../data/emoji.js';
import { ManifestDataset } from '../data/manifest.js';
import { WebDataset } from '../data/webdataset.js';
import { imageTransform, type ImageTransform } from '../data/images.js';
import { clipTokenizer, bertTokenizer, type Tokenizer } from '../data/tokenizers.js';
import { DataLoader, type Batch, type LoaderOptions, type LoaderPosition } from '../data/loader.js';
import type { DataSource as TrainerSource } from '../train/trainer.js';
import { clipConfig } from '../models/clip.js';
import { alignConfig } from '../models/align.js';
import type { RunConfig } from './config.js';

/** The samples `indices` of another random-access source, in that order. */
export class SubsetDataset implements Dataset {
  readonly kind = 'map' as const;
  readonly size: number;
  readonly skipped?: SkipCounter;
  constructor(readonly base: Dataset, readonly indices: Int32Array) {
    for (const i of indices)
      if (!Number.isInteger(i) || i < 0 || i >= base.size) throw new RangeError(`SubsetDataset: expected indices in [0, ${base.size}) but received ${i}`);
    this.size = indices.length;
    if (base.skipped) this.skipped = base.skipped;
  }
  get(index: number): Sample | Promise<Sample> {
    return this.base.get(this.indices[index]!);
  }
  captionAt(index: number): string | readonly string[] | null {
    return this.base.captionAt ? this.base.captionAt(this.indices[index]!) : null;
  }
}

/** The string a caption filter looks at: the caption, or the first of several (a template list's plain name). */
function captionKey(c: string | readonly string[] | null): string {
  const s = c === null ? '' : typeof c === 'string' ? c : c[0] ?? '';
  return s.trim().toLowerCase().replace(/\s+/g, ' ');
}

/**
 * ALIGN's frequency filter: drops every sample whose caption is shared by more than `maxCount`
 * samples (boilerplate alt-texts). Needs a random-access source with captionAt.
 */
export function dropFrequentCaptions(source: Dataset, maxCount: number): { dataset: SubsetDataset; dropped: number } {
  const op = 'dropFrequentCaptions';
  if (!source || source.kind !== 'map' || typeof source.captionAt !== 'function')
    throw new TypeError(`${op}: expected a random-access source with captionAt() (the emoji set or a manifest) but received ${describe(source)}`);
  if (!Number.isSafeInteger(maxCount) || maxCount < 1) throw new RangeError(`${op}: expected a positive integer for maxCount but received ${describe(maxCount)}`);
  const keys: string[] = [];
  const counts = new Map<string, number>();
  for (let i = 0; i < source.size; i++) {
    const k = captionKey(source.captionAt(i));
    keys.push(k);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  const keep: number[] = [];
  keys.forEach((k, i) => { if (counts.get(k)! <= maxCount) keep.push(i); });
  return { dataset: new SubsetDataset(source, Int32Array.from(keep)), dropped: source.size - keep.length };
}

/** A data source for the trainer over DataLoaders: state() is the loader's position; setState() starts a new loader there. */
export interface LoaderSource extends TrainerSource<Batch> {
  readonly loader: DataLoader;
  close(): void;
}

/** Wraps `make(position)` (a DataLoader factory) as the trainer's resumable source; each batch is disposed when the next is asked for. */
export function loaderSource(make: (position?: LoaderPosition) => DataLoader): LoaderSource {
  let loader = make();
  let prev: Batch | null = null;
  const drop = () => { prev?.dispose(); prev = null; };
  return {
    get loader() { return loader; },
    async next() {
      drop();
      const b = await loader.next();
      if (b === null) return undefined;
      prev = b;
      return b;
    },
    state() {
      return loader.position;
    },
    setState(s: unknown) {
      const p = s as LoaderPosition;
      if (p === null || typeof p !== 'object' || !Number.isSafeInteger(p.epoch) || !Number.isSafeInteger(p.index) || p.epoch < 0 || p.index < 0)
        throw new RangeError(`loaderSource: expected a loader position { epoch, index } for state but received ${JSON.stringify(s)}`);
      drop();
      loader.close();
      loader = make({ epoch: p.epoch, index: p.index });
    },
    close() {
      drop();
      loader.close();
    },
  };
}

export interface RunData {
  /** Training samples (filters applied). */
  train: SampleSource;
  /** Evaluation samples, or null (no held-out data). */
  eval: SampleSource | null;
  /** Emoji runs: the held-out vendor's data (labels for zero-shot classification). */
  emojiEval: EmojiData | null;
  tokenizer: Tokenizer;
  trainTransform: ImageTransform;
  evalTransform: ImageTransform;
  imageSize: number;
  /** One line for logs and the report. */
  description: string;
  /** Notes for the log (filters applied, samples held out...). */
  notes: string[];
}

/** The image side and tokenizer of the run's model. */
export function modelInputs(cfg: RunConfig): { imageSize: number; tokenizer: Tokenizer } {
  if (cfg.model === 'clip') {
    const m = clipConfig(cfg.clip ?? {});
    return { imageSize: cfg.data.imageSize ?? m.vision.imageSize, tokenizer: clipTokenizer({ contextLength: m.text.contextLength }) };
  }
  const m = alignConfig(cfg.align ?? {});
  // ALIGN's 64 tokens, or fewer when the encoder has fewer positions.
  return { imageSize: cfg.data.imageSize ?? 32, tokenizer: bertTokenizer({ contextLength: Math.min(64, m.text.maxPositions) }) };
}

function isShards(s: string): boolean {
  return /\.tar(\}|$)/i.test(s) || /\{[^}]*\}\.tar/i.test(s) || s.toLowerCase().endsWith('.tar');
}

function userSource(cfg: RunConfig, path: string): Dataset | WebDataset {
  const d = cfg.data;
  if (isShards(path)) return new WebDataset(path, { shuffleBuffer: d.shuffleBuffer });
  const opts = { imageKey: d.csvImgKey, captionKey: d.csvCaptionKey, ...(d.csvSeparator !== null ? { separator: d.csvSeparator } : {}) };
  return new ManifestDataset(path, opts);
}

/** Builds the run's data from its (validated) config. */
export async function buildRunData(cfg: RunConfig): Promise<RunData> {
  const d = cfg.data;
  const { imageSize, tokenizer } = modelInputs(cfg);
  const common = { size: imageSize, interpolation: d.interpolation, mean: d.mean, std: d.std } as const;
  const trainTransform = imageTransform({ ...common, train: true, scale: d.scale, ratio: d.ratio });
  const evalTransform = imageTransform({ ...common, train: false });
  const notes: string[] = [];
  let train: SampleSource, evalSrc: SampleSource | null = null, emojiEval: EmojiData | null = null, description: string;
  if (d.source === 'emoji') {
    const split = await emojiSplit({ heldOut: d.heldOut, templates: d.templates ? EMOJI_TEMPLATES : null });
    train = split.train;
    evalSrc = split.eval;
    emojiEval = split.eval.data;
    const trainVendors = [...new Set(split.train.data.vendors)].join(', ');
    description = `emoji (emoji-datasource): train ${split.train.size} pairs (${trainVendors}), held out ${split.eval.size} (${d.heldOut})`;
  } else {
    const src = userSource(cfg, d.source);
    train = src;
    if (d.evalSource !== null) {
      evalSrc = userSource(cfg, d.evalSource);
    } else if (src.kind === 'map' && d.evalSize > 0) {
      const n = Math.min(d.evalSize, Math.floor(src.size / 10));
      if (n > 0) {
        const perm = permutation(src.size, new Rng(cfg.train.seed, 0x5eed, Purpose.shuffle));
        evalSrc = new SubsetDataset(src, perm.slice(0, n).sort());
        train = new SubsetDataset(src, perm.slice(n).sort());
        notes.push(`held out ${n} of ${src.size} manifest rows for evaluation (data.evalSize; give data.evalSource to choose)`);
      }
    }
    if (evalSrc === null) notes.push('no evaluation data (give --eval-data or data.evalSource): retrieval is not evaluated');
    description = src.kind === 'map' ? `${d.source}: ${train.kind === 'map' ? train.size : '?'} training pairs` : `${d.source}: ${(src as WebDataset).shards.length} shard(s), streamed`;
    if (evalSrc) description += evalSrc.kind === 'map' ? `, ${evalSrc.size} held out` : `, evaluation on ${d.evalSource}`;
  }
  if (d.filters.maxCaptionFrequency !== null) {
    if (train.kind !== 'map') throw new TypeError(`vlmkit train: expected a random-access source (emoji or a manifest) for data.filters.maxCaptionFrequency but received WebDataset shards`);
    const r = dropFrequentCaptions(train, d.filters.maxCaptionFrequency);
    train = r.dataset;
    notes.push(`caption frequency filter (> ${d.filters.maxCaptionFrequency} images): dropped ${r.dropped} training samples`);
    if (r.dataset.size === 0) throw new RangeError(`vlmkit train: expected training samples after data.filters.maxCaptionFrequency ${d.filters.maxCaptionFrequency} but every sample was dropped`);
  }
  return { train, eval: evalSrc, emojiEval, tokenizer, trainTransform, evalTransform, imageSize, description, notes };
}

/** Loader options of the run's training data (without position). */
export function trainLoaderOptions(cfg: RunConfig, data: RunData): LoaderOptions {
  const f = cfg.data.filters;
  const filters: NonNullable<LoaderOptions['filters']> = {};
  if (f.minCaptionTokens !== null) filters.minCaptionTokens = f.minCaptionTokens;
  if (f.maxCaptionTokens !== null) filters.maxCaptionTokens = f.maxCaptionTokens;
  if (f.minImageSide !== null) filters.minImageSide = f.minImageSide;
  if (f.maxAspectRatio !== null) filters.maxAspectRatio = f.maxAspectRatio;
  return {
    source: data.train, tokenizer: data.tokenizer, transform: data.trainTransform, batchSize: cfg.train.batchSize,
    seed: cfg.train.seed, shuffle: true, dropLast: true, prefetch: cfg.data.prefetch, captionNoise: cfg.data.captionNoise, filters,
  };
}

/** A one-epoch, in-order loader over the evaluation data. */
export function evalLoader(cfg: RunConfig, data: RunData): DataLoader {
  if (!data.eval) throw new TypeError('evalLoader: expected evaluation data but the run has none');
  return new DataLoader({
    source: data.eval, tokenizer: data.tokenizer, transform: data.evalTransform, batchSize: cfg.eval.batchSize,
    seed: cfg.train.seed, shuffle: false, dropLast: false, epochs: 1, prefetch: 1,
  });
}
