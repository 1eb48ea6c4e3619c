// ITM, the image-text matching objective of ALBEF, BLIP and BLIP-2, on the `itm` kernel
// family (native/ops/itm.h): hard-negative mining from the contrastive similarities
// (tiled; the B x B similarities are never stored), the 3B-row batch order, and the fused
// 2-way head with its cross-entropy (forward and backward in one pass).
import { native } from '../native.js';
import { isGradEnabled, noGrad, record } from '../graph/autograd.js';
import { Tensor, wrap } from '../graph/tensor.js';
import { describe, nextRandom, aTensor } from '../graph/creation.js';
import { indexSelect } from '../graph/ops/gather.js';
import { concat } from '../graph/ops/views.js';
import { shapeStr, isFloat, checkTensor } from '../graph/check.js';

const MINE = 'mineHardNegatives';
const HEAD = 'itm';
const BATCH = 'buildItmBatch';
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

export interface MineHardNegativesOptions {
  /** The contrastive temperature t (a divisor: weights are softmax(sim / t)); a number or a one-element tensor (BLIP's learnable temp). */
  temperature: number | Tensor;
  /** int32 image ids [B]: every sample sharing image i's id is excluded from i's negatives (and from its text's). */
  imageIds?: Tensor | Int32Array | readonly number[];
  /** A fixed seed: the draws are Philox elements (seed, offset .. offset + 2B). Without it, 2B counters of the global generator (manualSeed). */
  seed?: number;
  /** Philox element offset with `seed` (default 0). */
  offset?: number;
  /**
   * f >= 0 added to the (unmasked) softmax weights before the positives are zeroed, as LAVIS's blip_pretrain.py
   * (f = 1e-4). Default 0: the exact masked softmax, as LAVIS's BLIP-2 Q-Former (masked_fill(-10000) then softmax).
   */
  weightFloor?: number;
}

export interface HardNegatives {
  /** int32 [B]: the negative text drawn for image i. */
  negativeText: Tensor;
  /** int32 [B]: the negative image drawn for text j. */
  negativeImage: Tensor;
}

const MINE_KEYS = new Set(['temperature', 'imageIds', 'seed', 'offset', 'weightFloor']);

function safeInteger(op: string, name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`${op}: expected an integer for ${name} but received ${describe(v)}`);
  if (v < 0 || v > MAX_SAFE) throw new RangeError(`${op}: expected an integer in [0, ${MAX_SAFE}] for ${name} but received ${describe(v)}`);
  return v;
}

function idsTensor(v: unknown, B: number, device: Tensor['device']): Tensor {
  const name = 'options.imageIds';
  if (v instanceof Tensor) {
    checkTensor(MINE, name, v);
    if (v.dtype !== 'int32') throw new TypeError(`${MINE}: expected an int32 tensor for ${name} but received ${aTensor(v.dtype)}`);
    if (v.ndim !== 1 || v.shape[0] !== B) throw new RangeError(`${MINE}: expected shape [${B}] for ${name} but received shape ${shapeStr(v.shape)}`);
    return v;
  }
  if (v instanceof Int32Array || (Array.isArray(v) && v.every((x) => Number.isInteger(x) && Math.abs(x) <= 2147483647))) {
    const arr = v instanceof Int32Array ? v : Int32Array.from(v as number[]);
    if (arr.length !== B) throw new RangeError(`${MINE}: expected shape [${B}] for ${name} but received shape [${arr.length}]`);
    return wrap(native.fromData(arr, [arr.length], 'int32', device));
  }
  throw new TypeError(`${MINE}: expected an int32 tensor, an Int32Array or an array of integers for ${name} but received ${describe(v)}`);
}

/**
 * Draws the hard negatives of image-text matching (ALBEF, Li et al. 2021, arXiv:2107.07651; BLIP,
 * Li et al. 2022, arXiv:2201.12086; BLIP-2, Li et al. 2023, arXiv:2301.12597), on the `itm` kernel family.
 *
 * With sim(i, j) = image_i . text_j / t (for imageFeatures [B, Q, D]: max_q image_{i,q} . text_j, as
 * BLIP-2), image i draws a negative text j and text j a negative image i with
 *
 *   P(j | image i) = exp sim(i, j) / sum_{k allowed} exp sim(i, k),   P(i | text j) = exp sim(i, j) / sum_{k allowed} exp sim(k, j),
 *
 * where "allowed" excludes the pair itself and, with imageIds, every sample with the same id (the
 * exact masked softmax; see `weightFloor` for LAVIS's +1e-4 variant). Pass features as the ITC
 * objective sees them (normalised, as BLIP does). BLIP mines in the local batch, BLIP-2 in the
 * gathered global batch: pass whichever batch the negatives should come from.
 *
 * The draws are inverse-CDF samples from two passes over similarity tiles (row normaliser, then the
 * CDF walk) with one uniform per row from the counter-based generator: never a B x B buffer, and the
 * same negatives for the same seed on any thread count. Not differentiable (the features are read only).
 * B = 1, or ids that are all equal (a row without any negative), are RangeErrors.
 *
 * @returns int32 index tensors [B]: `negativeText[i]` for image i, `negativeImage[j]` for text j.
 */
export function mineHardNegatives(imageFeatures: Tensor, textFeatures: Tensor, options: MineHardNegativesOptions): HardNegatives {
  checkTensor(MINE, 'imageFeatures', imageFeatures);
  checkTensor(MINE, 'textFeatures', textFeatures);
  const image = imageFeatures, text = textFeatures;
  if (!isFloat(image)) throw new TypeError(`${MINE}: expected a float32 or float64 tensor for imageFeatures but received ${aTensor(image.dtype)}`);
  if (image.ndim !== 2 && image.ndim !== 3)
    throw new RangeError(`${MINE}: expected a tensor of rank 2 [B, D] or 3 [B, Q, D] for imageFeatures but received shape ${shapeStr(image.shape)}`);
  if (image.size === 0) throw new RangeError(`${MINE}: expected a non-empty tensor for imageFeatures but received shape ${shapeStr(image.shape)}`);
  const B = image.shape[0]!, D = image.shape[image.ndim - 1]!;
  if (text.dtype !== image.dtype)
    throw new TypeError(`${MINE}: expected ${aTensor(image.dtype)} (the dtype of imageFeatures) for textFeatures but received ${aTensor(text.dtype)}`);
  if (text.device !== image.device)
    throw new TypeError(`${MINE}: expected a ${image.device} tensor (the device of imageFeatures) for textFeatures but received a ${text.device} tensor`);
  if (text.ndim !== 2 || text.shape[0] !== B || text.shape[1] !== D)
    throw new RangeError(`${MINE}: expected shape ${shapeStr([B, D])} for textFeatures but received shape ${shapeStr(text.shape)}`);
  if (B < 2)
    throw new RangeError(`${MINE}: expected a batch of at least 2 samples (a negative is another sample of the batch) for imageFeatures but received shape ${shapeStr(image.shape)}`);

  if (options === null || typeof options !== 'object' || Array.isArray(options))
    throw new TypeError(`${MINE}: expected an options object for options but received ${describe(options)}`);
  for (const k of Object.keys(options))
    if (!MINE_KEYS.has(k)) throw new TypeError(`${MINE}: expected one of ${[...MINE_KEYS].join(', ')} for an option name but received '${k}'`);

  let temperature: number;
  const tv = options.temperature as unknown;
  if (typeof tv === 'number') temperature = tv;
  else if (tv instanceof Tensor) {
    checkTensor(MINE, 'options.temperature', tv);
    if (tv.size !== 1) throw new RangeError(`${MINE}: expected a tensor with one element for options.temperature but received shape ${shapeStr(tv.shape)}`);
    temperature = noGrad(() => tv.item());
  } else {
    throw new TypeError(`${MINE}: expected a number or a one-element tensor for options.temperature but received ${describe(tv)}`);
  }
  if (!Number.isFinite(temperature) || !(temperature >= 1e-30 && temperature <= 1e30))
    throw new RangeError(`${MINE}: expected a finite positive temperature in [1e-30, 1e30] for options.temperature but received ${describe(temperature)}`);

  const floor = options.weightFloor ?? 0;
  if (typeof floor !== 'number') throw new TypeError(`${MINE}: expected a number for options.weightFloor but received ${describe(floor)}`);
  if (!Number.isFinite(floor) || floor < 0 || floor > 1)
    throw new RangeError(`${MINE}: expected a finite number in [0, 1] for options.weightFloor but received ${describe(floor)}`);

  let seed: number, offset: number;
  if (options.seed !== undefined) {
    seed = safeInteger(MINE, 'options.seed', options.seed);
    offset = options.offset === undefined ? 0 : safeInteger(MINE, 'options.offset', options.offset);
  } else {
    if (options.offset !== undefined)
      throw new TypeError(`${MINE}: expected options.seed alongside options.offset but received ${describe(options.seed)}`);
    [seed, offset] = nextRandom(2 * B);
  }

  const ids = options.imageIds === undefined ? null : idsTensor(options.imageIds, B, image.device);
  const r = native.itmMine(image.handle, text.handle, temperature, ids?.handle ?? null, seed, offset, floor);
  if (ids !== null && !(options.imageIds instanceof Tensor)) ids.dispose();
  return { negativeText: wrap(r.negativeText), negativeImage: wrap(r.negativeImage) };
}

/** What the naive mining path returns (tests, benchmarks). */
export interface HardNegativesReference extends HardNegatives {
  /** float64 [B, B] row-normalised sampling probabilities, image rows over texts (when asked). */
  probI2T: Tensor | null;
  /** float64 [B, B], text rows over images (when asked). */
  probT2I: Tensor | null;
}

/**
 * The naive path of `mineHardNegatives` (same arguments, `seed` required): materialises the B x B
 * similarities and weights (LAVIS's softmax + multinomial, with the same uniforms), optionally returning
 * the probabilities. For tests and benchmarks only.
 */
export function mineHardNegativesReference(imageFeatures: Tensor, textFeatures: Tensor, options: MineHardNegativesOptions,
  returnProbs = false): HardNegativesReference {
  if (options?.seed === undefined) throw new TypeError(`${MINE}: expected a fixed options.seed for the reference but received undefined`);
  checkTensor(MINE, 'imageFeatures', imageFeatures);
  checkTensor(MINE, 'textFeatures', textFeatures);
  const B = imageFeatures.shape[0] ?? 0;
  const tv = options.temperature as unknown;
  const temperature = tv instanceof Tensor ? noGrad(() => tv.item()) : (tv as number);
  const ids = options.imageIds === undefined ? null : idsTensor(options.imageIds, B, imageFeatures.device);
  const r = native.itmMineReference(imageFeatures.handle, textFeatures.handle, temperature, ids?.handle ?? null,
    options.seed, options.offset ?? 0, options.weightFloor ?? 0, returnProbs);
  if (ids !== null && !(options.imageIds instanceof Tensor)) ids.dispose();
  return {
    negativeText: wrap(r.negativeText), negativeImage: wrap(r.negativeImage),
    probI2T: r.probI2T ? wrap(r.probI2T) : null, probT2I: r.probT2I ? wrap(r.probT2I) : null,
  };
}

/** The 3B-row ITM batch: which text and which image each row pairs, and the gathered tensors. */
export interface ItmBatch<I extends Record<string, Tensor>, T extends Record<string, Tensor>> {
  /** int32 [3B]: [0..B), [0..B), negativeText — texts [pos, pos, neg]. */
  textIndex: Tensor;
  /** int32 [3B]: [0..B), negativeImage, [0..B) — images [pos, neg, pos]. */
  imageIndex: Tensor;
  /** int32 [3B]: 1 for the B positives, then 0 for the 2B negatives (the labels `itm` uses). */
  labels: Tensor;
  /** Each given image-side tensor [B, ...] gathered by imageIndex along axis 0 (differentiable). */
  image: I;
  /** Each given text-side tensor [B, ...] gathered by textIndex along axis 0 (differentiable). */
  text: T;
}

/**
 * Builds the ITM batch of ALBEF/BLIP/BLIP-2 from mined negatives, in LAVIS's order: rows [0, B) are
 * the positive pairs (text i, image i), rows [B, 2B) pair text j with its negative image, rows [2B, 3B)
 * pair image i with its negative text:
 *
 *   texts  = [text_0..B-1, text_0..B-1, text_{negativeText}]
 *   images = [image_0..B-1, image_{negativeImage}, image_0..B-1]
 *
 * The model runs its multimodal encoder on (texts[n], images[n]) and hands the 3B outputs to `itm`.
 * Pass `{ image: { embeds }, text: { ids, mask } }` to gather those tensors here (indexSelect on axis 0,
 * so gradients flow back into the embeddings).
 */
export function buildItmBatch<I extends Record<string, Tensor> = Record<string, never>,
  T extends Record<string, Tensor> = Record<string, never>>(
  negatives: HardNegatives, gather: { image?: I; text?: T } = {}): ItmBatch<I, T> {
  if (negatives === null || typeof negatives !== 'object')
    throw new TypeError(`${BATCH}: expected { negativeText, negativeImage } for negatives but received ${describe(negatives)}`);
  const { negativeText: nt, negativeImage: ni } = negatives;
  checkTensor(BATCH, 'negatives.negativeText', nt);
  checkTensor(BATCH, 'negatives.negativeImage', ni);
  for (const [name, t] of [['negatives.negativeText', nt], ['negatives.negativeImage', ni]] as const) {
    if (t.dtype !== 'int32') throw new TypeError(`${BATCH}: expected an int32 tensor for ${name} but received ${aTensor(t.dtype)}`);
    if (t.ndim !== 1) throw new RangeError(`${BATCH}: expected a 1-D tensor for ${name} but received shape ${shapeStr(t.shape)}`);
  }
  const B = nt.shape[0]!;
  if (ni.shape[0] !== B) throw new RangeError(`${BATCH}: expected shape [${B}] (as negatives.negativeText) for negatives.negativeImage but received shape ${shapeStr(ni.shape)}`);
  if (gather === null || typeof gather !== 'object') throw new TypeError(`${BATCH}: expected an object { image?, text? } for gather but received ${describe(gather)}`);
  const ar = wrap(native.arange(0, 1, B, 'int32'));
  const textIndex = noGrad(() => concat([ar, ar, nt]));
  const imageIndex = noGrad(() => concat([ar, ni, ar]));
  ar.dispose();
  const ones = wrap(native.full([B], 1, 'int32', 'cpu')), zeros = wrap(native.full([2 * B], 0, 'int32', 'cpu'));
  const labels = noGrad(() => concat([ones, zeros]));
  ones.dispose();
  zeros.dispose();
  const pick = (side: 'image' | 'text', index: Tensor, src: Record<string, Tensor> | undefined) => {
    const out: Record<string, Tensor> = {};
    if (src === undefined) return out;
    if (src === null || typeof src !== 'object') throw new TypeError(`${BATCH}: expected an object of tensors for gather.${side} but received ${describe(src)}`);
    for (const [k, t] of Object.entries(src)) {
      checkTensor(BATCH, `gather.${side}.${k}`, t);
      if (t.ndim < 1 || t.shape[0] !== B)
        throw new RangeError(`${BATCH}: expected a tensor of shape [${B}, ...] for gather.${side}.${k} but received shape ${shapeStr(t.shape)}`);
      out[k] = indexSelect(t, 0, index);
    }
    return out;
  };
  return { textIndex, imageIndex, labels, image: pick('image', imageIndex, gather.image) as I, text: pick('text', textIndex, gather.text) as T };
}

export interface ItmResult {
  /** The scalar mean cross-entropy over the 3B rows, differentiable w.r.t. features, weight and bias. */
  loss: Tensor;
  /** Fraction of the 3B rows classified correctly (arg-max of the two logits, first on ties). */
  accuracy: number;
}

function checkHead(features: unknown, weight: unknown, bias: unknown): void {
  checkTensor(HEAD, 'features', features);
  checkTensor(HEAD, 'weight', weight);
  checkTensor(HEAD, 'bias', bias);
  const x = features;
  if (!isFloat(x)) throw new TypeError(`${HEAD}: expected a float32 or float64 tensor for features but received ${aTensor(x.dtype)}`);
  if (x.ndim !== 2 && x.ndim !== 3)
    throw new RangeError(`${HEAD}: expected a tensor of rank 2 [3B, H] or 3 [3B, Q, H] for features but received shape ${shapeStr(x.shape)}`);
  if (x.size === 0) throw new RangeError(`${HEAD}: expected a non-empty tensor for features but received shape ${shapeStr(x.shape)}`);
  if (x.shape[0]! % 3 !== 0)
    throw new RangeError(`${HEAD}: expected 3B rows (B positives, then B text negatives and B image negatives) for features but received shape ${shapeStr(x.shape)}`);
  const H = x.shape[x.ndim - 1]!;
  for (const [name, t, shape] of [['weight', weight, [2, H]], ['bias', bias, [2]]] as const) {
    if (t.dtype !== x.dtype) throw new TypeError(`${HEAD}: expected ${aTensor(x.dtype)} (the dtype of features) for ${name} but received ${aTensor(t.dtype)}`);
    if (t.device !== x.device) throw new TypeError(`${HEAD}: expected a ${x.device} tensor (the device of features) for ${name} but received a ${t.device} tensor`);
    if (t.ndim !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      throw new RangeError(`${HEAD}: expected shape ${shapeStr(shape)} for ${name} but received shape ${shapeStr(t.shape)}`);
  }
}

/**
 * The ITM loss of ALBEF (arXiv:2107.07651), BLIP (arXiv:2201.12086) and BLIP-2 (arXiv:2301.12597): a
 * 2-way linear head on the multimodal outputs of the 3B rows built by `buildItmBatch` (B positives,
 * then 2B negatives) and its cross-entropy, fused forward and backward (`itm` kernel family):
 *
 *   z_n = mean_q (W x_{n,q} + b)  (Q = 1 for features [3B, H], BLIP's [ENC] token; BLIP-2 averages the
 *         logits of its Q query outputs, features [3B, Q, H]),
 *   L = 1/(3B) sum_n (logsumexp(z_n) - z_{n, y_n}),   y_n = 1 for n < B, else 0
 *
 * i.e. `F.cross_entropy(itm_head(x).mean(1), labels)`. Gradients flow to features, weight [2, H] and
 * bias [2]. When recorded, the gradients are computed in the same pass as the loss and held until
 * backward (which only uses them as they are for an upstream gradient of 1, and recomputes otherwise).
 */
export function itm(features: Tensor, weight: Tensor, bias: Tensor): ItmResult {
  checkHead(features, weight, bias);
  const N = features.shape[0]!;
  const inputs = [features, weight, bias];
  const needs = inputs.map((t) => t.requiresGrad);
  const recording = isGradEnabled() && needs.some(Boolean);
  const r = native.itmHead(features.handle, weight.handle, bias.handle, 1, recording ? needs : [false, false, false]);
  const loss = wrap(r.loss);
  if (recording) {
    let saved: (Tensor | null)[] | null = [r.dFeatures, r.dWeight, r.dBias].map((x) => (x ? wrap(x) : null));
    record(loss, HEAD, inputs, (g, need) => {
      const grads = saved;
      saved = null;
      const s = g.item();
      if (grads !== null && s === 1 && need.every((n, i) => !n || (grads[i] && !grads[i]!.disposed))) {
        return grads.map((x, i) => {
          if (x && !need[i]) { x.dispose(); return null; }
          return x;
        });
      }
      for (const x of grads ?? []) x?.dispose();
      const d = native.itmHead(features.handle, weight.handle, bias.handle, s, need.slice(0, 3));
      d.loss.dispose();
      return [d.dFeatures, d.dWeight, d.dBias].map((x) => (x ? wrap(x) : null));
    });
  }
  return { loss, accuracy: r.correct / N };
}

/** What the float64 reference head returns. */
export interface ItmReferenceResult {
  loss: number;
  accuracy: number;
  dFeatures: Tensor;
  dWeight: Tensor;
  dBias: Tensor;
}

/** The slow float64 path of `itm` (per-query logits materialised): loss, accuracy and every gradient. Tests only. */
export function itmReference(features: Tensor, weight: Tensor, bias: Tensor): ItmReferenceResult {
  checkHead(features, weight, bias);
  const r = native.itmHeadReference(features.handle, weight.handle, bias.handle);
  return { loss: r.loss, accuracy: r.correct / features.shape[0]!, dFeatures: wrap(r.dFeatures), dWeight: wrap(r.dWeight), dBias: wrap(r.dBias) };
}
