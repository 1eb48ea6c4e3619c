// ITC, the image-text contrastive objective (InfoNCE) of CLIP, ALIGN, BLIP and BLIP-2,
// as one differentiable op over the fused `infonce` family (native/ops/infonce.h):
// the B x B logits are never stored, in the forward or the backward. Also the
// temperature clamps the papers apply after each optimizer step.
import { native, type NativeTensor } from '../native.js';
import { noGrad, record } from '../graph/autograd.js';
import { Tensor, wrap } from '../graph/tensor.js';
import { describe, aTensor } from '../graph/creation.js';
import { sameShape, shapeStr, isFloat } from '../graph/check.js';

const OP = 'infoNCE';

export interface InfoNCEOptions {
  /** CLIP's learnable log-scale s: logits = exp(s) * sim (open_clip initialises s = ln(1/0.07)). */
  logitScale?: Tensor | number;
  /** ALIGN/BLIP's learnable temperature t: logits = sim / t. Give exactly one of logitScale, temperature. */
  temperature?: Tensor | number;
  /** L2-normalise image (each query token), text, momentum and queue features inside the kernel (differentiable). Default false. */
  normalize?: boolean;
  /** Label smoothing eps in [0, 1]: targets (1 - eps) y + eps / N over the N columns (ALIGN and BLIP-2 use 0.1). */
  labelSmoothing?: number;
  /**
   * Momentum distillation (ALBEF/BLIP): momentum features of the batch, [B, (Q,) D] and [B, D]. The columns become
   * [momentum features; queue] and the targets alpha * softmax(momentum row . columns * scale) + (1 - alpha) * hard.
   * No gradient flows into them.
   */
  momentum?: { image: Tensor; text: Tensor; alpha: number };
  /** K extra negative columns per modality (BLIP's feature queues): image [K, (Q,) D], text [K, D]; ids int32 [K] when imageIds are given. No gradient. */
  queue?: { image: Tensor; text: Tensor; ids?: Tensor | Int32Array | readonly number[] };
  /** int32 image ids [B]: every sample with the same id is a positive, targets spread uniformly over them (BLIP-2 fine-tuning). */
  imageIds?: Tensor | Int32Array | readonly number[];
  /** This worker's rows [offset, offset + count) of the global batch against all columns (data parallel). */
  localRows?: { offset: number; count: number };
}

export interface InfoNCEResult {
  /** The scalar loss 1/2 (mean CE_i2t + mean CE_t2i), differentiable w.r.t. image, text and the temperature. */
  loss: Tensor;
  /** Top-1 accuracy of the rows: image to text, text to image (the arg-max column is a positive). */
  accI2T: number;
  accT2I: number;
}

type NativeOptions = Parameters<typeof native.infonceForward>[3];

const KNOWN = new Set(['logitScale', 'temperature', 'normalize', 'labelSmoothing', 'momentum', 'queue', 'imageIds', 'localRows']);

function features(name: string, x: unknown, image: Tensor, shape: readonly number[] | null): Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`${OP}: expected a tensor for ${name} but received ${describe(x)}`);
  if (x.dtype !== image.dtype) throw new TypeError(`${OP}: expected ${aTensor(image.dtype)} (the dtype of image) for ${name} but received ${aTensor(x.dtype)}`);
  if (x.device !== image.device) throw new TypeError(`${OP}: expected a ${image.device} tensor (the device of image) for ${name} but received a ${x.device} tensor`);
  if (shape && !sameShape(x.shape, shape)) throw new RangeError(`${OP}: expected shape ${shapeStr(shape)} for ${name} but received shape ${shapeStr(x.shape)}`);
  return x;
}

function idsTensor(name: string, v: unknown, n: number, device: Tensor['device']): Tensor {
  let t: Tensor;
  if (v instanceof Tensor) {
    if (v.dtype !== 'int32') throw new TypeError(`${OP}: expected an int32 tensor for ${name} but received ${aTensor(v.dtype)}`);
    t = v;
  } else if (v instanceof Int32Array || (Array.isArray(v) && v.every((x) => Number.isInteger(x) && Math.abs(x) <= 2147483647))) {
    const arr = v instanceof Int32Array ? v : Int32Array.from(v as number[]);
    t = wrap(native.fromData(arr, [arr.length], 'int32', device));
  } else {
    throw new TypeError(`${OP}: expected an int32 tensor, an Int32Array or an array of integers for ${name} but received ${describe(v)}`);
  }
  if (!sameShape(t.shape, [n])) throw new RangeError(`${OP}: expected shape [${n}] for ${name} but received shape ${shapeStr(t.shape)}`);
  return t;
}

function numberIn(name: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number') throw new TypeError(`${OP}: expected a number for ${name} but received ${describe(v)}`);
  if (!Number.isFinite(v) || v < lo || v > hi) throw new RangeError(`${OP}: expected a finite number in [${lo}, ${hi}] for ${name} but received ${describe(v)}`);
  return v;
}

function integerIn(name: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`${OP}: expected an integer for ${name} but received ${describe(v)}`);
  if (v < lo || v > hi) throw new RangeError(`${OP}: expected an integer in [${lo}, ${hi}] for ${name} but received ${describe(v)}`);
  return v;
}

interface Checked {
  param: Tensor;
  native: NativeOptions;
}

/** Validates everything (same messages as the native boundary) and builds the native options. */
function check(image: unknown, text: unknown, options: InfoNCEOptions): Checked {
  if (!(image instanceof Tensor)) throw new TypeError(`${OP}: expected a tensor for image but received ${describe(image)}`);
  if (!isFloat(image)) throw new TypeError(`${OP}: expected a float32 or float64 tensor for image but received ${aTensor(image.dtype)}`);
  if (image.ndim !== 2 && image.ndim !== 3)
    throw new RangeError(`${OP}: expected a tensor of rank 2 [B, D] or 3 [B, Q, D] for image but received shape ${shapeStr(image.shape)}`);
  if (image.size === 0) throw new RangeError(`${OP}: expected a non-empty tensor for image but received shape ${shapeStr(image.shape)}`);
  const B = image.shape[0]!, D = image.shape[image.ndim - 1]!;
  const t = features('text', text, image, null);
  if (t.ndim !== 2)
    throw new RangeError(`${OP}: expected a tensor of rank 2 [B, D] (only image may carry query tokens) for text but received shape ${shapeStr(t.shape)}`);
  if (!sameShape(t.shape, [B, D])) throw new RangeError(`${OP}: expected shape ${shapeStr([B, D])} for text but received shape ${shapeStr(t.shape)}`);

  if (options === null || typeof options !== 'object' || Array.isArray(options))
    throw new TypeError(`${OP}: expected an options object for options but received ${describe(options)}`);
  for (const k of Object.keys(options))
    if (!KNOWN.has(k)) throw new TypeError(`${OP}: expected one of ${[...KNOWN].join(', ')} for an option name but received '${k}'`);

  // The temperature parametrisation.
  const hasScale = options.logitScale !== undefined, hasTemp = options.temperature !== undefined;
  if (hasScale === hasTemp)
    throw new TypeError(`${OP}: expected exactly one of options.logitScale and options.temperature but received ${hasScale ? 'both' : 'neither'}`);
  const mode = hasScale ? 'logit_scale' : 'temperature';
  const pname = hasScale ? 'options.logitScale' : 'options.temperature';
  const pv = hasScale ? options.logitScale : options.temperature;
  let param: Tensor;
  if (typeof pv === 'number') {
    if (!Number.isFinite(pv)) throw new RangeError(`${OP}: expected a finite number for ${pname} but received ${describe(pv)}`);
    if (!hasScale && !(pv >= 1e-30 && pv <= 1e30))
      throw new RangeError(`${OP}: expected a positive temperature in [1e-30, 1e30] for ${pname} but received ${describe(pv)}`);
    if (hasScale && !(pv >= -69 && pv <= 69)) throw new RangeError(`${OP}: expected a log-scale in [-69, 69] for ${pname} but received ${describe(pv)}`);
    param = wrap(native.full([], pv, image.dtype, image.device));
  } else if (pv instanceof Tensor) {
    if (pv.dtype !== image.dtype) throw new TypeError(`${OP}: expected ${aTensor(image.dtype)} (the dtype of image) for ${pname} but received ${aTensor(pv.dtype)}`);
    if (pv.size !== 1) throw new RangeError(`${OP}: expected a tensor with one element for ${pname} but received shape ${shapeStr(pv.shape)}`);
    param = pv;  // its value is checked natively (finite, in range)
  } else {
    throw new TypeError(`${OP}: expected a tensor or a number for ${pname} but received ${describe(pv)}`);
  }

  const normalize = options.normalize ?? false;
  if (typeof normalize !== 'boolean') throw new TypeError(`${OP}: expected a boolean for options.normalize but received ${describe(normalize)}`);
  const labelSmoothing = options.labelSmoothing === undefined ? 0 : numberIn('options.labelSmoothing', options.labelSmoothing, 0, 1);

  const ids = options.imageIds === undefined ? null : idsTensor('options.imageIds', options.imageIds, B, image.device);

  let queueImage: Tensor | null = null, queueText: Tensor | null = null, queueIds: Tensor | null = null;
  if (options.queue !== undefined) {
    const q = options.queue as unknown;
    if (q === null || typeof q !== 'object') throw new TypeError(`${OP}: expected an object { image, text } for options.queue but received ${describe(q)}`);
    const { image: qi, text: qt, ids: qids } = options.queue;
    queueImage = features('options.queue.image', qi, image, null);
    if (queueImage.ndim !== image.ndim)
      throw new RangeError(`${OP}: expected a tensor of rank ${image.ndim} (as image) for options.queue.image but received shape ${shapeStr(queueImage.shape)}`);
    const K = queueImage.shape[0]!;
    features('options.queue.image', qi, image, image.ndim === 3 ? [K, image.shape[1]!, D] : [K, D]);
    queueText = features('options.queue.text', qt, image, [K, D]);
    if (qids !== undefined) {
      if (ids === null) throw new TypeError(`${OP}: expected an int32 tensor (queue ids need batch ids) for options.imageIds but received null`);
      queueIds = idsTensor('options.queue.ids', qids, K, image.device);
    }
  }

  let momentumImage: Tensor | null = null, momentumText: Tensor | null = null, alpha = 0;
  if (options.momentum !== undefined) {
    const m = options.momentum as unknown;
    if (m === null || typeof m !== 'object') throw new TypeError(`${OP}: expected an object { image, text, alpha } for options.momentum but received ${describe(m)}`);
    momentumImage = features('options.momentum.image', options.momentum.image, image, image.shape);
    momentumText = features('options.momentum.text', options.momentum.text, image, t.shape);
    alpha = numberIn('options.momentum.alpha', options.momentum.alpha, 0, 1);
  }

  let rowOffset = 0, rowCount = B;
  if (options.localRows !== undefined) {
    const lr = options.localRows as unknown;
    if (lr === null || typeof lr !== 'object') throw new TypeError(`${OP}: expected an object { offset, count } for options.localRows but received ${describe(lr)}`);
    rowOffset = integerIn('options.localRows.offset', options.localRows.offset, 0, B - 1);
    rowCount = integerIn('options.localRows.count', options.localRows.count, 1, B - rowOffset);
  }

  const h = (x: Tensor | null): NativeTensor | null => (x ? x.handle : null);
  return {
    param,
    native: {
      mode, normalize, labelSmoothing, imageIds: h(ids), queueImage: h(queueImage), queueText: h(queueText),
      queueIds: h(queueIds), momentumImage: h(momentumImage), momentumText: h(momentumText), alpha, rowOffset, rowCount,
    },
  };
}

/**
 * The image-text contrastive loss (InfoNCE), fused: CLIP (Radford et al. 2021, arXiv:2103.00020), ALIGN
 * (Jia et al. 2021, arXiv:2102.05918), BLIP's ITC with momentum distillation and queues (Li et al. 2022,
 * arXiv:2201.12086, after ALBEF arXiv:2107.07651) and BLIP-2's max-over-queries ITC (Li et al. 2023,
 * arXiv:2301.12597). Calls the `infonce` kernel family; the B x B logits are never materialised.
 *
 * With sim(i, j) = image_i . text_j (cosines when `normalize`; for a rank-3 image [B, Q, D],
 * max_q image_{i,q} . text_j) and logits s = exp(logitScale) * sim or sim / temperature:
 *
 *   L = 1/2 ( mean_i CE(s_i2t(i, :), y_i) + mean_j CE(s_t2i(j, :), y_j) ),   CE(s, y) = logsumexp(s) - sum_k y_k s_k
 *
 * where the i2t row i runs over the columns [text of the batch; text queue] and the t2i row j over
 * [images of the batch; image queue], and the targets are
 *   y = (1 - eps) * [ (1 - alpha) * hard + alpha * softmax(momentum similarities * scale) ] + eps / N,
 * hard being one-hot at the paired column, or uniform over the columns sharing the row's image id.
 * Momentum features replace the batch columns (as LAVIS's blip_pretrain); momentum and queue
 * tensors are constants. With `localRows`, image and text are the global (gathered) batch and
 * only rows [offset, offset + count) are this worker's, the means running over those rows.
 *
 * Gradients flow to image, text and the temperature tensor. After each optimizer step apply
 * `clampLogitScale` (CLIP, at most ln 100) or `clampTemperature` (BLIP, [0.001, 0.5]).
 */
export function infoNCE(image: Tensor, text: Tensor, options: InfoNCEOptions): InfoNCEResult {
  const c = check(image, text, options);
  const param = c.param;
  const r = native.infonceForward(image.handle, text.handle, param.handle, c.native);
  const loss = wrap(r.loss);
  const saved = wrap(r.saved);
  record(loss, OP, [image, text, param], (g, needs) => {
    const gl = g.item();
    const d = native.infonceBackward(image.handle, text.handle, param.handle, c.native, saved.handle, gl,
      needs[0]!, needs[1]!, needs[2]!);
    return [d.dImage ? wrap(d.dImage) : null, d.dText ? wrap(d.dText) : null, wrap(d.dParam)];
  });
  return { loss, accI2T: r.accI2T, accT2I: r.accT2I };
}

/** What the materialised reference returns (gradients for an upstream gradient of 1). */
export interface InfoNCEReferenceResult {
  loss: number;
  accI2T: number;
  accT2I: number;
  dImage: Tensor;
  dText: Tensor;
  dParam: number;
}

/**
 * The slow obvious path of `infoNCE` (same options): materialises every logit and target
 * matrix, in the inputs' dtype. For tests and benchmarks only.
 */
export function infoNCEReference(image: Tensor, text: Tensor, options: InfoNCEOptions): InfoNCEReferenceResult {
  const c = check(image, text, options);
  const r = native.infonceReference(image.handle, text.handle, c.param.handle, c.native);
  return { loss: r.loss, accI2T: r.accI2T, accT2I: r.accT2I, dImage: wrap(r.dImage), dText: wrap(r.dText), dParam: r.dParam };
}

function clampParam(op: string, param: unknown, lo: number, hi: number): Tensor {
  if (!(param instanceof Tensor)) throw new TypeError(`${op}: expected a tensor for param but received ${describe(param)}`);
  if (!isFloat(param)) throw new TypeError(`${op}: expected a float32 or float64 tensor for param but received ${aTensor(param.dtype)}`);
  if (param.size !== 1) throw new RangeError(`${op}: expected a tensor with one element for param but received shape ${shapeStr(param.shape)}`);
  noGrad(() => {
    const v = param.item();
    const c = Math.min(Math.max(v, lo), hi);
    if (c !== v && !Number.isNaN(v)) {
      const src = native.full([...param.shape], c, param.dtype, param.device);
      native.copy(param.handle, src);
      src.dispose();
    }
  });
  return param;
}

/** Clamps CLIP's log-scale parameter in place to at most `max` (ln 100, as open_clip after each step). Returns param. */
export function clampLogitScale(param: Tensor, max = Math.log(100)): Tensor {
  if (typeof max !== 'number' || !Number.isFinite(max))
    throw new RangeError(`clampLogitScale: expected a finite number for max but received ${describe(max)}`);
  return clampParam('clampLogitScale', param, -Infinity, max);
}

/** Clamps a temperature parameter in place to [min, max] (BLIP: [0.001, 0.5]). Returns param. */
export function clampTemperature(param: Tensor, min = 0.001, max = 0.5): Tensor {
  for (const [n, v] of [['min', min], ['max', max]] as const)
    if (typeof v !== 'number' || !Number.isFinite(v))
      throw new RangeError(`clampTemperature: expected a finite number for ${n} but received ${describe(v)}`);
  if (!(min > 0) || min > max)
    throw new RangeError(`clampTemperature: expected 0 < min <= max but received min ${min}, max ${max}`);
  return clampParam('clampTemperature', param, min, max);
}
