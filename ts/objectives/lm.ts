// LM objective: next-token cross-entropy through the vocabulary projection, with label
// smoothing and an ignore index, on the fused `lm_head` kernel family
// (native/ops/lm_head.h). The N x V logits are never materialised: the kernel walks
// row blocks and vocabulary tiles with an online logsumexp. When the call is recorded
// for autograd (and the loss is reduced) the gradients are computed in the same pass as
// the loss, as Liger-Kernel does, and backward() only scales them by the upstream
// gradient; otherwise backward recomputes the logits tile by tile from the saved lse.
import { native } from '../native.js';
import { isGradEnabled, record } from '../graph/autograd.js';
import { Tensor, wrap } from '../graph/tensor.js';
import { describe, aTensor } from '../graph/creation.js';
import { keep } from '../graph/scope.js';
import { contiguous, reshape } from '../graph/ops/views.js';
import { shapeStr, isFloat } from '../graph/check.js';

export type LmReduction = 'mean' | 'sum' | 'none';

export interface LmLossOptions {
  /** Output bias [V] of the projection (same dtype as hidden). */
  bias?: Tensor | null;
  /** eps in [0, 1): weight of the uniform distribution mixed into the target (default 0). */
  labelSmoothing?: number;
  /** Target id that marks a position to skip (padding, prompt, query tokens); default -100. */
  ignoreIndex?: number;
  /** 'mean' over non-ignored tokens (default), 'sum', or 'none' (per token, shaped like targets, 0 where ignored). */
  reduction?: LmReduction;
  /** @internal rows per block (0 = automatic); tests use small blocks. */
  rowChunk?: number;
  /** @internal vocabulary entries per tile (0 = automatic); tests use small tiles. */
  vocabChunk?: number;
}

export interface LmLossResult {
  /** The loss: a scalar for 'mean' / 'sum', per token for 'none'. Differentiable. */
  loss: Tensor;
  /** Fraction of non-ignored tokens whose first arg-max logit is the target (0 when none). */
  accuracy: number;
  /** Number of non-ignored tokens. */
  tokens: number;
}

const REDUCTIONS: readonly string[] = ['mean', 'sum', 'none'];
const INT32_MIN = -2147483648, INT32_MAX = 2147483647;

function checkTensor(name: string, x: unknown): asserts x is Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`lmLoss: expected a tensor for ${name} but received ${describe(x)}`);
  if (x.disposed) throw new TypeError(`lmLoss: expected a live tensor for ${name} but received a disposed tensor`);
}

/** The row-major multi-index of flat position i in shape. */
function position(i: number, shape: readonly number[]): string {
  if (shape.length <= 1) return String(i);
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return shapeStr(idx);
}

/**
 * Causal-LM cross-entropy of the vocabulary projection of `hidden`, fused (family `lm_head`).
 *
 * With h_i the rows of hidden [..., H], W = weight [V, H], b = bias [V], t_i = targets[...]:
 *
 *   z_ij = h_i · W_j + b_j,   lse_i = log Σ_j exp z_ij,
 *   loss_i = (1 − ε) (lse_i − z_{i,t_i}) + ε · (1/V) Σ_j (lse_i − z_ij)
 *          = lse_i − (1 − ε) z_{i,t_i} − (ε / V) Σ_j z_ij,
 *
 * which is `torch.nn.functional.cross_entropy(h @ W.T + b, t, label_smoothing=ε,
 * ignore_index=ignoreIndex)`. Positions whose target is `ignoreIndex` contribute nothing;
 * 'mean' divides by the number of the others (and is 0, with zero gradients, when every
 * position is ignored). Gradients flow to hidden, weight and bias; a weight tied to the
 * token embedding simply receives both contributions. The N × V logits never exist: the
 * memory is one block of rows × V logits plus per-thread tiles.
 *
 * When recorded (grad enabled and an input requires grad) with 'mean' or 'sum', the
 * gradients are computed together with the loss (3 GEMMs per logit instead of 4) and held
 * until backward(); evaluate under `noGrad` to get the loss alone (1 GEMM per logit).
 *
 * @param hidden float32/float64 [..., H] final hidden states (N = product of the leading dims)
 * @param weight [V, H] vocabulary projection (e.g. the token embedding, when tied)
 * @param targets int32, shaped like hidden without its last dimension; ids in [0, V) or ignoreIndex
 * @returns `{ loss, accuracy, tokens }`
 */
export function lmLoss(hidden: Tensor, weight: Tensor, targets: Tensor, options: LmLossOptions = {}): LmLossResult {
  checkTensor('hidden', hidden);
  checkTensor('weight', weight);
  checkTensor('targets', targets);
  if (options === null || typeof options !== 'object')
    throw new TypeError(`lmLoss: expected an options object for options but received ${describe(options)}`);
  const bias = options.bias ?? null;
  if (bias !== null) checkTensor('bias', bias);
  const eps = options.labelSmoothing ?? 0;
  const ignoreIndex = options.ignoreIndex ?? -100;
  const reduction = options.reduction ?? 'mean';
  const rowChunk = options.rowChunk ?? 0, vocabChunk = options.vocabChunk ?? 0;

  if (!isFloat(hidden)) throw new TypeError(`lmLoss: expected a float32 or float64 tensor for hidden but received ${aTensor(hidden.dtype)}`);
  if (hidden.ndim < 1) throw new RangeError(`lmLoss: expected a tensor of shape [..., H] for hidden but received shape ${shapeStr(hidden.shape)}`);
  const H = hidden.shape[hidden.ndim - 1]!;
  if (H < 1) throw new RangeError(`lmLoss: expected a hidden size of at least 1 for hidden but received shape ${shapeStr(hidden.shape)}`);
  if (weight.dtype !== hidden.dtype)
    throw new TypeError(`lmLoss: expected ${aTensor(hidden.dtype)} (the dtype of hidden) for weight but received ${aTensor(weight.dtype)}`);
  if (weight.ndim !== 2 || weight.shape[1] !== H || weight.shape[0]! < 1)
    throw new RangeError(`lmLoss: expected shape [V, ${H}] with V >= 1 (hidden is ${shapeStr(hidden.shape)}) for weight but received shape ${shapeStr(weight.shape)}`);
  const V = weight.shape[0]!;
  if (bias !== null) {
    if (bias.dtype !== hidden.dtype)
      throw new TypeError(`lmLoss: expected ${aTensor(hidden.dtype)} (the dtype of hidden) for bias but received ${aTensor(bias.dtype)}`);
    if (bias.ndim !== 1 || bias.shape[0] !== V)
      throw new RangeError(`lmLoss: expected shape [${V}] for bias but received shape ${shapeStr(bias.shape)}`);
  }
  if (targets.dtype !== 'int32') throw new TypeError(`lmLoss: expected an int32 tensor for targets but received ${aTensor(targets.dtype)}`);
  const lead = hidden.shape.slice(0, -1);
  if (targets.ndim !== lead.length || targets.shape.some((d, i) => d !== lead[i]))
    throw new RangeError(`lmLoss: expected shape ${shapeStr(lead)} (hidden without its last dimension) for targets but received shape ${shapeStr(targets.shape)}`);
  for (const [name, t] of [['weight', weight], ['targets', targets], ['bias', bias]] as const)
    if (t !== null && t.device !== hidden.device)
      throw new TypeError(`lmLoss: expected a ${hidden.device} tensor (the device of hidden) for ${name} but received a ${t.device} tensor`);
  if (typeof eps !== 'number' || !(eps >= 0 && eps < 1))
    throw new RangeError(`lmLoss: expected a number in [0, 1) for labelSmoothing but received ${describe(eps)}`);
  if (typeof ignoreIndex !== 'number' || !Number.isInteger(ignoreIndex) || ignoreIndex < INT32_MIN || ignoreIndex > INT32_MAX)
    throw new TypeError(`lmLoss: expected a 32-bit integer for ignoreIndex but received ${describe(ignoreIndex)}`);
  if (typeof reduction !== 'string' || !REDUCTIONS.includes(reduction))
    throw new TypeError(`lmLoss: expected 'mean', 'sum' or 'none' for reduction but received ${describe(reduction)}`);
  for (const [name, v] of [['rowChunk', rowChunk], ['vocabChunk', vocabChunk]] as const)
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 2 ** 30)
      throw new RangeError(`lmLoss: expected an integer in [0, 2^30] for ${name} but received ${describe(v)}`);
  const ids = targets.toArray();
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i]!;
    if (v !== ignoreIndex && (v < 0 || v >= V))
      throw new RangeError(`lmLoss: expected token ids in [0, ${V}) or the ignore index ${ignoreIndex} for targets but received ${v} at position ${position(i, targets.shape)}`);
  }

  const N = ids.length;
  const h = hidden.ndim === 2 ? hidden : reshape(hidden, [N, H]);
  const t = targets.ndim === 1 ? targets : reshape(targets, [N]);
  const w = contiguous(weight);
  const inputs = bias ? [h, w, bias] : [h, w];
  const needs = [h.requiresGrad, w.requiresGrad, bias?.requiresGrad ?? false];
  const recording = isGradEnabled() && needs.some(Boolean);
  const args = [h.handle, w.handle, bias?.handle ?? null, t.handle] as const;

  // Gradients from the saved lse (tile recomputation): row i scaled by scale * rowGrad[i].
  const backwardFrom = (lse: Tensor, rowGrad: Tensor | null, scale: number, need: boolean[]): (Tensor | null)[] => {
    const r = native.lmHeadBackward(...args, lse.handle, rowGrad?.handle ?? null, scale, ignoreIndex, eps, reduction,
      [need[0]!, need[1]!, need[2] ?? false], rowChunk, vocabChunk);
    return [r.dHidden, r.dWeight, r.dBias].slice(0, inputs.length).map((x) => (x ? wrap(x) : null));
  };

  let loss: Tensor;
  let valid: number, correct: number;
  if (recording && reduction !== 'none') {
    const r = native.lmHeadForwardBackward(...args, ignoreIndex, eps, reduction, needs, rowChunk, vocabChunk);
    valid = r.valid;
    correct = r.correct;
    // lse is tiny ([N]) and lets a second backward (retainGraph) or a backward after the
    // precomputed gradients were freed by a scope recompute them: kept out of scopes.
    const lse = keep(wrap(r.lse));
    let saved: (Tensor | null)[] | null = [r.dHidden, r.dWeight, r.dBias].slice(0, inputs.length).map((x) => (x ? wrap(x) : null));
    loss = record(wrap(r.loss), 'lmLoss', inputs, (g, need) => {
      let grads = saved;
      saved = null;
      if (grads === null || need.some((n, i) => n && (!grads![i] || grads![i]!.disposed))) {
        for (const x of grads ?? []) x?.dispose();
        grads = backwardFrom(lse, null, 1, need);
      }
      const s = g.item();
      for (let i = 0; i < grads.length; i++) {
        const x = grads[i];
        if (!x) continue;
        if (!need[i]) { x.dispose(); grads[i] = null; continue; }
        if (Number.isFinite(s)) {
          if (s !== 1) native.scaleInPlace(x.handle, s);
        } else {  // a non-finite upstream gradient propagates as NaN
          grads[i] = wrap(native.full([...x.shape], NaN, x.dtype, x.device));
          x.dispose();
        }
      }
      return grads;
    });
  } else {
    const r = native.lmHeadForward(...args, ignoreIndex, eps, reduction, rowChunk, vocabChunk);
    valid = r.valid;
    correct = r.correct;
    const lse = wrap(r.lse);
    loss = wrap(r.loss);
    if (recording) {
      keep(lse);  // needed by backward, which may run outside the caller's scope
      loss = record(loss, 'lmLoss', inputs, (g, need) => backwardFrom(lse, g, 1, need));
    } else {
      lse.dispose();
    }
    if (reduction === 'none' && targets.ndim !== 1) loss = reshape(loss, targets.shape);
  }
  return { loss, accuracy: valid > 0 ? correct / valid : 0, tokens: valid };
}
