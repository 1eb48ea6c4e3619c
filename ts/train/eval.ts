// Evaluation of dual encoders (CLIP, ALIGN): image->text and text->image recall@k on a
// held-out set, and zero-shot classification with prompt templates (CLIP's recipe: each
// class embedding is the normalised mean of its templates' normalised text embeddings).
//
// Memory: similarities are computed in tiles (a block of query rows against a block of
// columns, one GEMM each) and each query keeps a running top-k over the column blocks, so
// the N x M similarity matrix is never held: O((N + M) D + rows x columns of one tile).
// Ties keep the lower column index, so the ranking is a pure function of the scores and
// does not depend on the tile sizes.
//
// Positives: a query's positives are the items of its group (`imageGroups` / `textGroups`),
// so identical captions of different images count as correct (the emoji set has a few:
// "man in tuxedo" names two emoji). Without groups, item i of one side matches item i of the other.
import { Tensor } from '../graph/tensor.js';
import { describe, tensor, aTensor } from '../graph/creation.js';
import { tidy } from '../graph/scope.js';
import { noGrad } from '../graph/autograd.js';
import { matmul } from '../graph/ops/matmul.js';
import { l2Normalize } from '../graph/ops/normalize.js';
import { slice, transpose } from '../graph/ops/views.js';
import type { Module } from '../graph/module.js';
import type { Batch, DataLoader } from '../data/loader.js';
import type { Tokenizer } from '../data/tokenizers.js';

/** What the evaluation needs of a model: its two encoders. */
export interface DualEncoder {
  encodeImage(images: Tensor, options?: { normalize?: boolean }): Tensor;
  encodeText(texts: Tensor, options?: { eot?: Int32Array | readonly number[] | null; attentionMask?: Tensor | null; normalize?: boolean }): Tensor;
}

function checkMatrix(op: string, name: string, x: unknown): Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`${op}: expected a float tensor [N, D] for ${name} but received ${describe(x)}`);
  if (x.dtype !== 'float32' && x.dtype !== 'float64') throw new TypeError(`${op}: expected a float32 or float64 tensor for ${name} but received ${aTensor(x.dtype)}`);
  if (x.ndim !== 2 || x.shape[0] === 0) throw new RangeError(`${op}: expected a tensor [N >= 1, D] for ${name} but received shape [${x.shape.join(', ')}]`);
  return x;
}

function checkGroups(op: string, name: string, g: unknown, n: number): Int32Array {
  if (g === undefined || g === null) return Int32Array.from({ length: n }, (_, i) => i);
  if (!(g instanceof Int32Array) && !Array.isArray(g)) throw new TypeError(`${op}: expected an Int32Array or an array of integers for ${name} but received ${describe(g)}`);
  if (g.length !== n) throw new RangeError(`${op}: expected ${n} entries (one per row) for ${name} but received ${g.length}`);
  const out = Int32Array.from(g as ArrayLike<number>);
  for (let i = 0; i < n; i++) if (out[i] !== (g as ArrayLike<number>)[i]) throw new RangeError(`${op}: expected 32-bit integers for ${name} but received ${describe((g as ArrayLike<number>)[i])} at [${i}]`);
  return out;
}

function checkChunk(op: string, name: string, v: unknown, dflt: number): number {
  const x = v ?? dflt;
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 1) throw new RangeError(`${op}: expected a positive integer for ${name} but received ${describe(x)}`);
  return x;
}

export interface TopKOptions {
  /** Query rows per tile (default 256). */
  rowChunk?: number;
  /** Key columns per tile (default 1024). */
  colChunk?: number;
}

export interface TopKResult {
  k: number;
  /** [N, k] column indices, best first (-1 past the number of keys). */
  indices: Int32Array;
  /** [N, k] their scores. */
  scores: Float64Array;
}

/**
 * The k best keys of every query by dot product (queries [N, D] . keys [M, D]^T), in tiles of
 * rowChunk x colChunk: the full N x M scores are never stored. Ties: the lower index first.
 */
export function topKSimilar(queries: Tensor, keys: Tensor, k: number, options: TopKOptions = {}): TopKResult {
  const op = 'topKSimilar';
  const q = checkMatrix(op, 'queries', queries), c = checkMatrix(op, 'keys', keys);
  if (q.shape[1] !== c.shape[1]) throw new RangeError(`${op}: expected keys with ${q.shape[1]} features (as queries) but received shape [${c.shape.join(', ')}]`);
  if (q.dtype !== c.dtype) throw new TypeError(`${op}: expected ${aTensor(q.dtype)} (the dtype of queries) for keys but received ${aTensor(c.dtype)}`);
  if (typeof k !== 'number' || !Number.isSafeInteger(k) || k < 1) throw new RangeError(`${op}: expected a positive integer for k but received ${describe(k)}`);
  const R = checkChunk(op, 'options.rowChunk', options.rowChunk, 256), C = checkChunk(op, 'options.colChunk', options.colChunk, 1024);
  const N = q.shape[0]!, M = c.shape[0]!;
  const indices = new Int32Array(N * k).fill(-1);
  const scores = new Float64Array(N * k).fill(-Infinity);
  noGrad(() => {
    for (let r0 = 0; r0 < N; r0 += R) {
      const r1 = Math.min(N, r0 + R);
      for (let c0 = 0; c0 < M; c0 += C) {
        const c1 = Math.min(M, c0 + C), w = c1 - c0;
        const s = tidy(() => matmul(slice(q, 0, r0, r1), transpose(slice(c, 0, c0, c1))).toArray()) as Float32Array | Float64Array;
        for (let i = r0; i < r1; i++) {
          const base = i * k, row = (i - r0) * w;
          let worst = scores[base + k - 1]!;
          for (let j = 0; j < w; j++) {
            const v = s[row + j]!;
            if (!(v > worst)) continue;  // ties keep the earlier (lower) index; NaN never enters
            let p = k - 1;
            while (p > 0 && v > scores[base + p - 1]!) {
              scores[base + p] = scores[base + p - 1]!;
              indices[base + p] = indices[base + p - 1]!;
              p--;
            }
            scores[base + p] = v;
            indices[base + p] = c0 + j;
            worst = scores[base + k - 1]!;
          }
        }
      }
    }
  });
  return { k, indices, scores };
}

export interface RetrievalOptions extends TopKOptions {
  /** Group of each image row: a text is a positive of an image when their groups are equal (default: row i matches row i). */
  imageGroups?: Int32Array | readonly number[];
  textGroups?: Int32Array | readonly number[];
  /** The k of recall@k (default [1, 5, 10]). */
  ks?: readonly number[];
}

export interface RetrievalResult {
  /** Image -> text recall@k (fraction of images with a positive text among their k best). */
  i2t: Record<number, number>;
  /** Text -> image recall@k. */
  t2i: Record<number, number>;
  /** [N, kmax] best text rows of each image (for reports). */
  i2tTop: Int32Array;
  /** [N, kmax] their similarities. */
  i2tScores: Float64Array;
  /** [M, kmax] best image rows of each text. */
  t2iTop: Int32Array;
  kmax: number;
  /** Images and texts evaluated. */
  images: number;
  texts: number;
}

function recallAt(top: TopKResult, qGroups: Int32Array, kGroups: Int32Array, ks: readonly number[]): Record<number, number> {
  const N = qGroups.length, out: Record<number, number> = {};
  const firstHit = new Int32Array(N).fill(-1);
  for (let i = 0; i < N; i++)
    for (let p = 0; p < top.k; p++) {
      const j = top.indices[i * top.k + p]!;
      if (j >= 0 && kGroups[j] === qGroups[i]) { firstHit[i] = p; break; }
    }
  for (const k of ks) {
    let hits = 0;
    for (let i = 0; i < N; i++) if (firstHit[i]! >= 0 && firstHit[i]! < k) hits++;
    out[k] = hits / N;
  }
  return out;
}

/**
 * Recall@k both ways between image [N, D] and text [M, D] embeddings (normalise them first
 * for cosine similarity), in tiles with a running top-k per row.
 */
export function retrievalRecall(image: Tensor, text: Tensor, options: RetrievalOptions = {}): RetrievalResult {
  const op = 'retrievalRecall';
  checkMatrix(op, 'image', image);
  checkMatrix(op, 'text', text);
  if (options === null || typeof options !== 'object') throw new TypeError(`${op}: expected an options object but received ${describe(options)}`);
  const ks = options.ks ?? [1, 5, 10];
  if (!Array.isArray(ks) || ks.length === 0 || !ks.every((k) => Number.isSafeInteger(k) && k >= 1))
    throw new RangeError(`${op}: expected a non-empty array of positive integers for options.ks but received ${describe(ks)}`);
  const N = image.shape[0]!, M = text.shape[0]!;
  const ig = checkGroups(op, 'options.imageGroups', options.imageGroups, N);
  const tg = checkGroups(op, 'options.textGroups', options.textGroups, M);
  const kmax = Math.max(...ks);
  const tiles = { rowChunk: options.rowChunk, colChunk: options.colChunk };
  const i2t = topKSimilar(image, text, Math.min(kmax, M), tiles);
  const t2i = topKSimilar(text, image, Math.min(kmax, N), tiles);
  return {
    i2t: recallAt(i2t, ig, tg, ks), t2i: recallAt(t2i, tg, ig, ks),
    i2tTop: i2t.indices, i2tScores: i2t.scores, t2iTop: t2i.indices, kmax: Math.min(kmax, M), images: N, texts: M,
  };
}

/**
 * Class embeddings for zero-shot classification, as CLIP: for each class, the texts of every
 * template ('{}' = the class name) are encoded and normalised, averaged, and normalised again.
 * Returns [C, D].
 */
export function classEmbeddings(model: DualEncoder, tokenizer: Tokenizer, classNames: readonly string[], templates: readonly string[],
  options: { batchSize?: number } = {}): Tensor {
  const op = 'classEmbeddings';
  if (!Array.isArray(classNames) || classNames.length === 0 || !classNames.every((c) => typeof c === 'string'))
    throw new TypeError(`${op}: expected a non-empty array of strings for classNames but received ${describe(classNames)}`);
  if (!Array.isArray(templates) || templates.length === 0 || !templates.every((t) => typeof t === 'string' && t.includes('{}')))
    throw new TypeError(`${op}: expected a non-empty array of strings containing '{}' for templates but received ${describe(templates)}`);
  const bs = checkChunk(op, 'options.batchSize', options.batchSize, 256);
  const texts = classNames.flatMap((c) => templates.map((t) => t.replace('{}', c)));
  const T = templates.length, C = classNames.length;
  return noGrad(() => {
    let D = 0, dtype: 'float32' | 'float64' = 'float32';
    let sums: Float64Array | null = null;
    for (let a = 0; a < texts.length; a += bs) {
      const part = texts.slice(a, a + bs);
      const vals = tidy(() => encodeTexts(model, tokenizer, part).toArray()) as Float32Array | Float64Array;
      D = vals.length / part.length;
      dtype = vals instanceof Float64Array ? 'float64' : 'float32';
      sums ??= new Float64Array(C * D);
      for (let r = 0; r < part.length; r++) {
        const cls = Math.floor((a + r) / T);
        for (let d = 0; d < D; d++) sums[cls * D + d]! += vals[r * D + d]!;
      }
    }
    return tidy(() => l2Normalize(tensor(dtype === 'float64' ? sums! : Float32Array.from(sums!), [C, D], { dtype }), -1));
  });
}

/** Normalised text embeddings of raw strings [n, D] (tokenised here). */
export function encodeTexts(model: DualEncoder, tokenizer: Tokenizer, texts: readonly string[]): Tensor {
  const tb = tokenizer.encodeBatch(texts);
  return tidy(() => {
    const ids = tensor(tb.ids, [tb.batchSize, tb.contextLength], { dtype: 'int32' });
    const mask = tokenizer.kind === 'bert-wordpiece' ? tensor(tb.attentionMask, [tb.batchSize, tb.contextLength], { dtype: 'uint8' }) : null;
    return model.encodeText(ids, { eot: tb.eot, attentionMask: mask, normalize: true });
  });
}

export interface ZeroShotResult {
  /** Top-1 and top-5 accuracy over the images. */
  top1: number;
  top5: number;
  /** Predicted class (top-1) of each image. */
  predictions: Int32Array;
  classes: number;
}

/** Zero-shot classification of normalised image embeddings [N, D] against class embeddings [C, D]. */
export function zeroShotAccuracy(image: Tensor, classes: Tensor, labels: Int32Array | readonly number[], options: TopKOptions = {}): ZeroShotResult {
  const op = 'zeroShotAccuracy';
  checkMatrix(op, 'image', image);
  checkMatrix(op, 'classes', classes);
  const N = image.shape[0]!, C = classes.shape[0]!;
  const y = checkGroups(op, 'labels', labels, N);
  for (let i = 0; i < N; i++) if (y[i]! < 0 || y[i]! >= C) throw new RangeError(`${op}: expected labels in [0, ${C}) but received ${y[i]} at [${i}]`);
  const k = Math.min(5, C);
  const top = topKSimilar(image, classes, k, options);
  let t1 = 0, t5 = 0;
  const predictions = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    predictions[i] = top.indices[i * k]!;
    if (predictions[i] === y[i]) t1++;
    for (let p = 0; p < k; p++) if (top.indices[i * k + p] === y[i]) { t5++; break; }
  }
  return { top1: t1 / N, top5: t5 / N, predictions, classes: C };
}

export interface EmbeddedSet {
  /** Normalised image embeddings [n, D] (the caller disposes). */
  image: Tensor;
  /** Normalised text embeddings [n, D] of each sample's caption. */
  text: Tensor;
  captions: string[];
  keys: string[];
  /** Source index of each row (dataset index, or position in a stream). */
  indices: Int32Array;
  /** The normalised pixels [3, S, S] of the rows listed in `keepPixels` (for reports). */
  pixels: Map<number, Float32Array | Float64Array>;
  /** Samples the loader skipped (missing or corrupt images, empty captions). */
  skipped: number;
}

export interface EmbedOptions {
  /** Rows (in source order) whose pixels to keep, by row number. */
  keepPixels?: (row: number) => boolean;
  /** Stop after this many samples. */
  limit?: number;
}

/**
 * Embeds every sample of an evaluation loader (shuffle off, one epoch, last batch kept) with
 * the model in eval mode; each row's caption is the one the loader picked.
 */
export async function embedLoader(model: DualEncoder & Module, loader: DataLoader, options: EmbedOptions = {}): Promise<EmbeddedSet> {
  const wasTraining = model.training;
  model.eval();
  const imgChunks: (Float32Array | Float64Array)[] = [], txtChunks: (Float32Array | Float64Array)[] = [];
  const captions: string[] = [], keys: string[] = [], indices: number[] = [];
  const pixels = new Map<number, Float32Array | Float64Array>();
  let D = 0, dtype: 'float32' | 'float64' = 'float32';
  try {
    for (;;) {
      const b: Batch | null = await loader.next();
      if (b === null) break;
      try {
        const n = b.captions.length;
        const [iv, tv] = noGrad(() => tidy(() => {
          const im = model.encodeImage(b.images, { normalize: true });
          const tx = model.encodeText(b.texts, { eot: b.eot, attentionMask: b.attentionMask ?? null, normalize: true });
          return [im.toArray(), tx.toArray()] as (Float32Array | Float64Array)[];
        }));
        D = iv!.length / n;
        dtype = iv instanceof Float64Array ? 'float64' : 'float32';
        imgChunks.push(iv!); txtChunks.push(tv!);
        if (options.keepPixels) {
          const per = b.images.size / n;
          let pv: Float32Array | Float64Array | null = null;
          for (let r = 0; r < n; r++) {
            const row = captions.length + r;
            if (!options.keepPixels(row)) continue;
            pv ??= b.images.toArray() as Float32Array | Float64Array;
            pixels.set(row, pv.slice(r * per, (r + 1) * per));
          }
        }
        captions.push(...b.captions); keys.push(...b.keys); indices.push(...b.indices);
      } finally {
        b.dispose();
      }
      if (options.limit !== undefined && captions.length >= options.limit) { loader.close(); break; }
    }
  } finally {
    if (wasTraining) model.train();
  }
  const n = captions.length;
  if (n === 0) throw new RangeError(`embedLoader: expected at least one usable evaluation sample but the loader produced none (skipped ${loader.skipped.total})`);
  const join = (chunks: (Float32Array | Float64Array)[]) => {
    const out = dtype === 'float64' ? new Float64Array(n * D) : new Float32Array(n * D);
    let at = 0;
    for (const c of chunks) { out.set(c, at); at += c.length; }
    return tensor(out, [n, D], { dtype });
  };
  return { image: join(imgChunks), text: join(txtChunks), captions, keys, indices: Int32Array.from(indices), pixels, skipped: loader.skipped.total };
}

/** Group ids from strings: equal strings get equal ids (first-seen order). */
export function groupsOf(values: readonly string[]): Int32Array {
  const ids = new Map<string, number>();
  return Int32Array.from(values, (v) => {
    let g = ids.get(v);
    if (g === undefined) { g = ids.size; ids.set(v, g); }
    return g;
  });
}

/** Prompt templates for zero-shot classification of the emoji subcategories. */
export const EMOJI_ZERO_SHOT_TEMPLATES: readonly string[] = [
  '{}',
  'an emoji of {}',
  'a {} emoji',
  'an icon of {}',
  'a picture of {}',
];

/** A readable class name from an emoji subcategory ('face-smiling' -> 'face smiling'). */
export function readableClassName(name: string): string {
  return name.replace(/[-_&]+/g, ' ').replace(/\s+/g, ' ').trim().toLowerCase();
}
