// The run configuration of `vlmkit train`: one JSON object with four sections,
//   { model: 'clip' | 'align', clip | align: <model config>, data: {...}, train: {...}, eval: {...} }
// merged key by key over the defaults of its model (DEFAULT_CLIP_RUN / DEFAULT_ALIGN_RUN, the same
// as configs/clip-tiny.json and configs/align-tiny.json), then command-line flags on top. Everything
// is validated before any work starts; errors name the key path ('train.batchSize') and say what
// was expected and what was received.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe } from '../graph/creation.js';
import { arrayOf, bool, int, nullable, num, object, oneOf, parseConfig, type Field, type Spec } from '../models/config.js';
import { clipConfig, type ClipConfig } from '../models/clip.js';
import { alignConfig, type AlignConfig } from '../models/align.js';
import { EMOJI_VENDORS, type EmojiVendor } from '../data/emoji.js';
import { EMOJI_ZERO_SHOT_TEMPLATES } from '../train/eval.js';

export type ModelKind = 'clip' | 'align';

export interface DataFilters {
  /** Skip captions with fewer tokens (without specials). */
  minCaptionTokens: number | null;
  /** Skip captions with more tokens (without specials). */
  maxCaptionTokens: number | null;
  /** ALIGN's frequency filter: drop samples whose caption is shared by more than this many images. */
  maxCaptionFrequency: number | null;
  /** Skip images whose shorter side is below this (ALIGN: 200). */
  minImageSide: number | null;
  /** Skip images whose longer/shorter side ratio exceeds this (ALIGN: 3). */
  maxAspectRatio: number | null;
}

export interface DataSection {
  /** 'emoji' (the embedded data set), a .csv/.tsv/.jsonl manifest, or WebDataset shards (.tar, brace patterns). */
  source: string;
  /** Emoji: the vendor evaluated on, never trained on. */
  heldOut: EmojiVendor;
  /** Emoji: augment training captions with templates ('an emoji of {}', ...). */
  templates: boolean;
  /** Evaluation data for user sources (manifest or shards); null: hold out `evalSize` samples of a manifest. */
  evalSource: string | null;
  /** Samples held out of a manifest for evaluation when there is no evalSource (0: no evaluation). */
  evalSize: number;
  /** Image side in pixels; null: the model's (CLIP: vision.imageSize; ALIGN: 32). */
  imageSize: number | null;
  /** Random-resized-crop area fraction range (training). */
  scale: [number, number];
  /** Random-resized-crop aspect ratio range (training). */
  ratio: [number, number];
  interpolation: 'bicubic' | 'bilinear';
  mean: [number, number, number];
  std: [number, number, number];
  /** Replace this fraction of training captions by random other captions (ALIGN's noise experiment). */
  captionNoise: number;
  filters: DataFilters;
  /** Manifest columns (open_clip's --csv-img-key, --csv-caption-key, --csv-separator). */
  csvImgKey: string;
  csvCaptionKey: string;
  csvSeparator: string | null;
  /** WebDataset shuffle buffer in samples. */
  shuffleBuffer: number;
  /** Batches decoded ahead. */
  prefetch: number;
}

export interface TrainSection {
  steps: number;
  batchSize: number;
  /** Micro-batches per step (contrastive gradient accumulation, open_clip's --accum-freq). */
  accumFreq: number;
  lr: number;
  minLr: number;
  warmupSteps: number;
  weightDecay: number;
  betas: [number, number];
  eps: number;
  /** Clip the gradients' 2-norm (null: no clipping). */
  clipGradNorm: number | null;
  /** Learning-rate multiplier of the learnable temperature (CLIP's log-scale, ALIGN's divisor temperature). */
  temperatureLrScale: number;
  seed: number;
  /** CPU threads; null: every core. */
  threads: number | null;
  /**
   * Float32 matmul precision (vlm.setFloat32MatmulPrecision): 'highest' (float32) or 'medium'
   * (bf16 operands with float32 accumulation for the contrastive loss and large products),
   * as open_clip's --precision amp_bf16 for the GEMMs only.
   */
  precision: 'highest' | 'medium';
  logEvery: number;
  /** Evaluate every this many steps (0: only at the end). */
  evalEvery: number;
  /** Save a checkpoint every this many steps (0: only at the end). */
  checkpointEvery: number;
  keepCheckpoints: number;
}

export interface EvalSection {
  batchSize: number;
  /** Zero-shot classification into emoji subcategories (emoji data only). */
  zeroShot: boolean;
  /** Prompt templates of the zero-shot classes ('{}' = class name). */
  templates: string[];
  /** Held-out images shown in report.html. */
  reportSamples: number;
}

export interface RunConfig {
  model: ModelKind;
  /** A name for logs and the report (the named config's). */
  name: string;
  /** The model config (CLIP's or ALIGN's), merged over the model's defaults. */
  clip?: Partial<ClipConfig>;
  align?: Partial<AlignConfig>;
  data: DataSection;
  train: TrainSection;
  eval: EvalSection;
}

const DATA_DEFAULTS: DataSection = {
  source: 'emoji', heldOut: 'facebook', templates: true, evalSource: null, evalSize: 1000, imageSize: null,
  scale: [0.7, 1.0], ratio: [3 / 4, 4 / 3], interpolation: 'bicubic',
  mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711],
  captionNoise: 0,
  filters: { minCaptionTokens: null, maxCaptionTokens: null, maxCaptionFrequency: null, minImageSide: null, maxAspectRatio: null },
  csvImgKey: 'filepath', csvCaptionKey: 'title', csvSeparator: null, shuffleBuffer: 1000, prefetch: 2,
};

const EVAL_DEFAULTS: EvalSection = { batchSize: 512, zeroShot: true, templates: [...EMOJI_ZERO_SHOT_TEMPLATES], reportSamples: 48 };

/** The default run: `vlmkit train clip` (configs/clip-tiny.json). */
export const DEFAULT_CLIP_RUN: RunConfig = {
  model: 'clip',
  name: 'clip-tiny',
  clip: {
    embedDim: 128,
    vision: { imageSize: 32, patchSize: 4, width: 128, layers: 4, heads: 4, mlpRatio: 4, activation: 'quick_gelu' },
    text: { vocabSize: 50259, contextLength: 24, width: 128, layers: 3, heads: 4, mlpRatio: 4, activation: 'quick_gelu' },
  },
  data: DATA_DEFAULTS,
  train: {
    // 700 x 128 = 90k samples, 8 epochs of the three training vendors: ~6-7 minutes on 2 idle cores.
    steps: 700, batchSize: 128, accumFreq: 1, lr: 1e-3, minLr: 1e-5, warmupSteps: 100, weightDecay: 0.1, betas: [0.9, 0.98], eps: 1e-6,
    clipGradNorm: null, temperatureLrScale: 1, seed: 0, threads: null, precision: 'highest', logEvery: 10, evalEvery: 350, checkpointEvery: 350, keepCheckpoints: 2,
  },
  eval: EVAL_DEFAULTS,
};

/** The default ALIGN run: `vlmkit train align` (configs/align-tiny.json). */
export const DEFAULT_ALIGN_RUN: RunConfig = {
  model: 'align',
  name: 'align-tiny',
  align: {
    embedDim: null,
    vision: {},
    text: { vocabSize: 30522, hidden: 128, layers: 3, heads: 4, intermediate: 512, maxPositions: 32, pooler: false },
  },
  data: { ...DATA_DEFAULTS },
  train: {
    steps: 1500, batchSize: 128, accumFreq: 1, lr: 1e-3, minLr: 1e-5, warmupSteps: 100, weightDecay: 0.1, betas: [0.9, 0.98], eps: 1e-6,
    // ALIGN's temperature starts at 1.0: a larger step lets it fall within a short run.
    clipGradNorm: null, temperatureLrScale: 10, seed: 0, threads: null, precision: 'highest', logEvery: 10, evalEvery: 500, checkpointEvery: 500, keepCheckpoints: 2,
  },
  eval: EVAL_DEFAULTS,
};

export const DEFAULT_RUNS: Record<ModelKind, RunConfig> = { clip: DEFAULT_CLIP_RUN, align: DEFAULT_ALIGN_RUN };

const pair = (lo: number, hi: number, opts: { minOpen?: boolean } = {}): Field<[number, number]> => (op, key, v) => {
  const a = arrayOf(num(lo, hi, opts))(op, key, v);
  if (a.length !== 2 || a[0]! > a[1]!) throw new RangeError(`${op}: expected a pair [low, high] with low <= high for ${key} but received ${describe(v)}`);
  return [a[0]!, a[1]!];
};
const triple = (lo: number, opts: { minOpen?: boolean } = {}): Field<[number, number, number]> => (op, key, v) => {
  const a = arrayOf(num(lo, Infinity, opts))(op, key, v);
  if (a.length !== 3) throw new RangeError(`${op}: expected 3 numbers for ${key} but received ${describe(v)}`);
  return [a[0]!, a[1]!, a[2]!];
};
const str = (nonEmpty = true): Field<string> => (op, key, v) => {
  if (typeof v !== 'string' || (nonEmpty && v.length === 0)) throw new TypeError(`${op}: expected a ${nonEmpty ? 'non-empty ' : ''}string for ${key} but received ${describe(v)}`);
  return v;
};
const template: Field<string> = (op, key, v) => {
  const s = str()(op, key, v);
  if (!s.includes('{}')) throw new RangeError(`${op}: expected a template containing '{}' for ${key} but received ${describe(v)}`);
  return s;
};
const anyObject: Field<Record<string, unknown>> = (op, key, v) => {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new TypeError(`${op}: expected a plain object for ${key} but received ${describe(v)}`);
  return v as Record<string, unknown>;
};

const FILTER_SPEC: Spec<DataFilters> = {
  minCaptionTokens: nullable(int(0)), maxCaptionTokens: nullable(int(1)), maxCaptionFrequency: nullable(int(1)),
  minImageSide: nullable(int(1)), maxAspectRatio: nullable(num(1)),
};

const DATA_SPEC: Spec<DataSection> = {
  source: str(), heldOut: oneOf(...EMOJI_VENDORS), templates: bool(), evalSource: nullable(str()), evalSize: int(0), imageSize: nullable(int(1, 4096)),
  scale: pair(0, 1, { minOpen: true }), ratio: pair(0, Infinity, { minOpen: true }), interpolation: oneOf('bicubic', 'bilinear'),
  mean: triple(-Infinity), std: triple(0, { minOpen: true }), captionNoise: num(0, 1),
  filters: object(FILTER_SPEC, DATA_DEFAULTS.filters), csvImgKey: str(), csvCaptionKey: str(), csvSeparator: nullable(str()),
  shuffleBuffer: int(0), prefetch: int(0, 64),
};

const TRAIN_SPEC: Spec<TrainSection> = {
  steps: int(1), batchSize: int(2), accumFreq: int(1), lr: num(0, 10, { minOpen: true }), minLr: num(0, 10), warmupSteps: int(0),
  weightDecay: num(0, 10), betas: pair(0, 1), eps: num(0, 1, { minOpen: true }), clipGradNorm: nullable(num(0, Infinity, { minOpen: true })),
  temperatureLrScale: num(0, 1000),
  seed: int(0, 2 ** 31 - 1), threads: nullable(int(1, 1024)), precision: oneOf('highest', 'medium'), logEvery: int(1), evalEvery: int(0), checkpointEvery: int(0), keepCheckpoints: int(1),
};

const EVAL_SPEC: Spec<EvalSection> = {
  batchSize: int(1), zeroShot: bool(), templates: arrayOf(template, 1), reportSamples: int(0, 1000),
};

interface RawRun { model: ModelKind; name: string; clip: Record<string, unknown> | null; align: Record<string, unknown> | null; data: DataSection; train: TrainSection; eval: EvalSection }

function isPlain(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Deep merge of plain objects (arrays and other values replace). */
export function mergeDeep<T>(base: T, over: unknown): T {
  if (!isPlain(base) || !isPlain(over)) return (over === undefined ? base : over) as T;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = k in out ? mergeDeep(out[k], v) : v;
  return out as T;
}

/**
 * Validates a run config: `user` merged over the defaults of its model (user.model, else `model`).
 * The model section is checked by clipConfig/alignConfig. Throws TypeError/RangeError naming the key.
 */
export function resolveRunConfig(user: unknown, model?: ModelKind): RunConfig {
  const op = 'vlmkit config';
  if (user !== undefined && !isPlain(user)) throw new TypeError(`${op}: expected a JSON object but received ${describe(user)}`);
  const u = (user ?? {}) as Record<string, unknown>;
  const kind = (u.model ?? model ?? 'clip') as ModelKind;
  if (kind !== 'clip' && kind !== 'align') throw new RangeError(`${op}: expected 'clip' or 'align' for model but received ${describe(u.model)}`);
  if (model !== undefined && u.model !== undefined && u.model !== model)
    throw new RangeError(`${op}: expected a config for '${model}' (the command's model) but the config file says model '${String(u.model)}'`);
  const other = kind === 'clip' ? 'align' : 'clip';
  if (u[other] !== undefined) throw new TypeError(`${op}: expected no '${other}' section in a '${kind}' config but received one`);
  const merged = mergeDeep(DEFAULT_RUNS[kind], { ...u, model: kind }) as unknown as Record<string, unknown>;
  const spec: Spec<RawRun> = {
    model: oneOf('clip', 'align'), name: str(), clip: nullable(anyObject), align: nullable(anyObject),
    data: object(DATA_SPEC), train: object(TRAIN_SPEC), eval: object(EVAL_SPEC),
  };
  const r = parseConfig(op, spec, { clip: null, align: null } as unknown as RawRun, merged);
  // The model section: validated by the model's own config (unknown keys are errors there too).
  // Model errors name the key from the top of the run config (clip.vision.patchSize).
  const inModel = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if (!(e instanceof TypeError || e instanceof RangeError)) throw e;
      const msg = e.message.replace(/^\w+: /, `${op}: `).replace(/ for (\w)/, ` for ${kind}.$1`).replace(/the unknown key '/, `the unknown key '${kind}.`);
      throw e instanceof RangeError ? new RangeError(msg) : new TypeError(msg);
    }
  };
  if (kind === 'clip') {
    const m = inModel(() => clipConfig(r.clip ?? {}));
    if (r.data.imageSize !== null && r.data.imageSize !== m.vision.imageSize)
      throw new RangeError(`${op}: expected data.imageSize to be null or clip.vision.imageSize (${m.vision.imageSize}) but received ${r.data.imageSize}`);
  } else inModel(() => alignConfig(r.align ?? {}));
  const t = r.train;
  if (t.batchSize % t.accumFreq !== 0 || t.batchSize / t.accumFreq < 2)
    throw new RangeError(`${op}: expected train.batchSize to be a multiple of train.accumFreq (${t.accumFreq}) with at least 2 samples per micro-batch but received ${t.batchSize}`);
  if (t.minLr > t.lr) throw new RangeError(`${op}: expected train.minLr at most train.lr (${t.lr}) but received ${t.minLr}`);
  const f = r.data.filters;
  if (f.minCaptionTokens !== null && f.maxCaptionTokens !== null && f.minCaptionTokens > f.maxCaptionTokens)
    throw new RangeError(`${op}: expected data.filters.minCaptionTokens at most data.filters.maxCaptionTokens (${f.maxCaptionTokens}) but received ${f.minCaptionTokens}`);
  const out: RunConfig = JSON.parse(JSON.stringify({ ...r, clip: undefined, align: undefined }));
  if (kind === 'clip') out.clip = JSON.parse(JSON.stringify(r.clip ?? {}));
  else out.align = JSON.parse(JSON.stringify(r.align ?? {}));
  return out;
}

/** The package root (holds configs/ and bench/ in a checkout): two levels above this file (ts/cli or dist/cli). */
export function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/** The named configs shipped in configs/ (file names without .json). */
export function namedConfigs(): string[] {
  const dir = join(packageRoot(), 'configs');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => basename(f, '.json')).sort();
}

/**
 * Reads `--config`: a path to a JSON file, or the name of one in configs/ (clip-tiny, clip-small, ...).
 * Returns the parsed object (not yet validated) and where it came from.
 */
export function readConfigFile(nameOrPath: string): { config: Record<string, unknown>; path: string } {
  const op = 'vlmkit config';
  let path = nameOrPath;
  if (!existsSync(path)) {
    const named = join(packageRoot(), 'configs', `${nameOrPath}.json`);
    if (/^[\w.-]+$/.test(nameOrPath) && existsSync(named)) path = named;
    else {
      const names = namedConfigs();
      throw new RangeError(`${op}: expected a JSON file or a named config${names.length ? ` (${names.join(', ')})` : ''} for --config but received '${nameOrPath}' (no such file)`);
    }
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`${op}: cannot read '${path}': ${(e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`${op}: expected valid JSON in '${path}' but it does not parse: ${(e as Error).message}`);
  }
  if (!isPlain(v)) throw new TypeError(`${op}: expected a JSON object in '${path}' but received ${describe(v)}`);
  return { config: v, path };
}
