// attention family: fused multi-head scaled-dot-product attention (native/ops/attention.h).
// The [batch, heads, Lq, Lk] score matrix is never stored: the native kernel works in
// tiles with an online softmax and keeps the row logsumexp for the backward, which
// recomputes the score tiles (flash-attention). Differentiable w.r.t. q, k and v.
//
// Cached keys/values (a prefix, e.g. BLIP-2's ITG attending to the query states of the
// ITC pass): concatenate them in front of k and v along the length axis
// (`concat([cachedK, k], 2)`) and say with the mask which queries see which keys;
// causal: 'bottomRight' aligns the causal diagonal to the end of such a longer key list.
import { native, type NativeTensor } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe, nextRandom, tensor, aTensor } from '../creation.js';

export interface AttentionOptions {
  /**
   * Causal masking. true or 'topLeft' is torch's scaled_dot_product_attention(is_causal=True):
   * query i sees keys j <= i. 'bottomRight' aligns the diagonal to the last key (query i sees
   * j <= i + Lk - Lq), for queries that follow cached keys. Default false.
   */
  causal?: boolean | 'topLeft' | 'bottomRight';
  /**
   * A uint8 mask (nonzero = may attend) or an additive float mask (q's dtype; -inf blocks),
   * broadcastable to [batch, heads, Lq, Lk]: each dim 1 or full, missing leading dims count
   * as 1 (so [Lq, Lk] works). An additive mask is treated as a constant (no gradient).
   */
  mask?: Tensor | null;
  /** Valid key counts per sample (int32 [batch] or numbers, each in [0, Lk]): keys j >= len[b] are masked. */
  keyPadding?: Tensor | readonly number[] | null;
  /** Dropout probability on the attention probabilities, in [0, 1). Default 0. */
  dropout?: number;
  /** Score scale; default 1 / sqrt(headDim). */
  scale?: number;
  /** A fixed dropout seed (offset 0); without it the counters come from the global generator (manualSeed). */
  seed?: number;
}

const OP = 'attention';

function checkQKV(name: string, x: unknown, ref?: Tensor): asserts x is Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`${OP}: expected a tensor for ${name} but received ${describe(x)}`);
  if (x.disposed) throw new TypeError(`${OP}: expected a live tensor for ${name} but received a disposed tensor`);
  if (x.dtype !== 'float32' && x.dtype !== 'float64')
    throw new TypeError(`${OP}: expected a float32 or float64 tensor for ${name} but received ${aTensor(x.dtype)}`);
  if (ref && x.dtype !== ref.dtype)
    throw new TypeError(`${OP}: expected ${aTensor(ref.dtype)} (the dtype of q) for ${name} but received ${aTensor(x.dtype)}`);
  if (x.ndim !== 4)
    throw new RangeError(`${OP}: expected a tensor [batch, heads, length, headDim] for ${name} but received shape [${x.shape.join(', ')}]`);
}

/** A view of t with leading size-1 dims up to rank 4 (outside the graph: masks get no gradient). */
function rank4(t: Tensor): Tensor {
  const h = t.handle, pad = 4 - h.shape.length;
  return wrap(native.view(h, [...Array(pad).fill(1), ...h.shape], [...Array(pad).fill(0), ...h.strides], h.offset));
}

/**
 * Scaled-dot-product attention softmax(q k^T * scale + masks) v, fused (flash-attention
 * style): q [batch, heads, Lq, headDim], k [batch, heads, Lk, headDim], v [batch, heads, Lk, Dv]
 * -> [batch, heads, Lq, Dv]. Masks combine (a key is visible when every mask allows it); a
 * query row that sees no key gives zeros (and zero gradients), never NaN. Self-attention has
 * Lq = Lk; cross-attention any Lq, Lk. q, k, v may be strided views (e.g. heads split by
 * permute) and are read in place when their last dim is contiguous.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  checkQKV('q', q);
  checkQKV('k', k, q);
  checkQKV('v', v, q);
  if (options === null || typeof options !== 'object')
    throw new TypeError(`${OP}: expected an options object for options but received ${describe(options)}`);
  const Lq = q.shape[2]!, Lk = k.shape[2]!, Dh = q.shape[3]!;

  const causal = options.causal ?? false;
  if (causal !== true && causal !== false && causal !== 'topLeft' && causal !== 'bottomRight')
    throw new TypeError(`${OP}: expected a boolean, 'topLeft' or 'bottomRight' for options.causal but received ${describe(causal)}`);
  const causalOffset = causal === 'bottomRight' ? Lk - Lq : 0;

  const scale = options.scale ?? (Dh > 0 ? 1 / Math.sqrt(Dh) : 1);
  if (typeof scale !== 'number') throw new TypeError(`${OP}: expected a number for options.scale but received ${describe(scale)}`);
  if (!Number.isFinite(scale)) throw new RangeError(`${OP}: expected a finite number for options.scale but received ${describe(scale)}`);

  const p = options.dropout ?? 0;
  if (typeof p !== 'number') throw new TypeError(`${OP}: expected a number for options.dropout but received ${describe(p)}`);
  if (!(p >= 0 && p < 1)) throw new RangeError(`${OP}: expected a probability in [0, 1) for options.dropout but received ${describe(p)}`);
  if (options.seed !== undefined && (!Number.isSafeInteger(options.seed) || options.seed < 0))
    throw new RangeError(`${OP}: expected a non-negative safe integer for options.seed but received ${describe(options.seed)}`);

  // Everything made here lives as long as the output's graph (tidy scopes free it with the output).
  let maskT: Tensor | null = null, biasT: Tensor | null = null;
  const mask = options.mask ?? null;
  if (mask !== null) {
    if (!(mask instanceof Tensor)) throw new TypeError(`${OP}: expected a tensor or null for options.mask but received ${describe(mask)}`);
    if (mask.disposed) throw new TypeError(`${OP}: expected a live tensor for options.mask but received a disposed tensor`);
    if (mask.dtype !== 'uint8' && mask.dtype !== q.dtype)
      throw new TypeError(`${OP}: expected a uint8 (1 = may attend) or ${q.dtype} (additive) tensor for options.mask but received ${aTensor(mask.dtype)}`);
    const full = [q.shape[0]!, q.shape[1]!, Lq, Lk];
    const lead = 4 - mask.ndim;
    if (lead < 0 || mask.shape.some((d, i) => d !== 1 && d !== full[lead + i]))
      throw new RangeError(`${OP}: expected a tensor broadcastable to [${full.join(', ')}] (each dim 1 or full, missing leading dims 1) for options.mask but received shape [${mask.shape.join(', ')}]`);
    if (mask.dtype === 'uint8') maskT = rank4(mask);
    else biasT = rank4(mask);
  }

  let lensT: Tensor | null = null, ownLens: Tensor | null = null;
  const kp = options.keyPadding ?? null;
  if (kp !== null) {
    if (kp instanceof Tensor) {
      if (kp.dtype !== 'int32')
        throw new TypeError(`${OP}: expected an int32 tensor or an array of integers for options.keyPadding but received ${aTensor(kp.dtype)}`);
      lensT = kp;
    } else if (Array.isArray(kp) && kp.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= -(2 ** 31) && x < 2 ** 31)) {
      ownLens = lensT = tensor(kp as number[], [kp.length], { dtype: 'int32' });
    } else {
      throw new TypeError(`${OP}: expected an int32 tensor or an array of integers for options.keyPadding but received ${describe(kp)}`);
    }
  }

  const [seed, offset] = p === 0 ? [0, 0] : options.seed !== undefined ? [options.seed, 0] : nextRandom(q.shape[0]! * q.shape[1]! * Lq * Lk);
  const opts = {
    scale, causal: causal !== false, causalOffset, mask: maskT?.handle ?? null, bias: biasT?.handle ?? null,
    keyPadding: lensT?.handle ?? null, dropout: p, seed, offset,
  };
  const free = () => {
    maskT?.dispose();
    biasT?.dispose();
    ownLens?.dispose();
  };
  let r: { out: NativeTensor; lse: NativeTensor };
  try {
    r = native.attentionForward(q.handle, k.handle, v.handle, opts);
  } catch (e) {
    free();
    throw e;
  }
  const out = wrap(r.out), lse = wrap(r.lse);
  record(out, OP, [q, k, v], (g, needs) => {
    const gr = native.attentionBackward(q.handle, k.handle, v.handle, out.handle, lse.handle, g.handle, opts,
      [needs[0]!, needs[1]!, needs[2]!]);
    return [gr.dq && wrap(gr.dq), gr.dk && wrap(gr.dk), gr.dv && wrap(gr.dv)];
  });
  if (out._node === null) {  // nothing will run the backward: free what it would have read
    lse.dispose();
    free();
  }
  return out;
}
