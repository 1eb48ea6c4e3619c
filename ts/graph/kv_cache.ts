// decode family (native/ops/decode.h), TypeScript side: the KV cache of a stack of
// TransformerBlocks and one incremental step of a block over it.
//
// KVCache holds, per layer, self-attention keys and values [rows, heads, maxLength, headDim]
// preallocated to the maximum length: a step of T positions writes them in place at
// [length, length + T) and attends to [0, length + T) (native decodeAttention); reorder()
// gathers beam rows in place (native kvCacheReorder), never reallocating. Cross-attention
// keys/values of the fixed context (image or query states) are projected once, by the first
// step that gets a context, and kept with their mask. A step may mark some of its new ids as
// padding (HF's attention_mask, e.g. left-padded prompts): the cache then keeps a key mask
// over its positions (padding is never attended to) and each row's count of real positions,
// from which the position ids of new tokens follow (HF's cumsum(mask) - 1).
//
// transformerBlockStep mirrors TransformerBlock.forward (pre- or post-LN, optional
// cross-attention, MLP) on the new positions only; with a causal mask it gives the same
// hidden states as a full forward over all positions so far. Inference only (no gradients:
// the cache is written in place).
import { native, type DType } from '../native.js';
import { Tensor, wrap } from './tensor.js';
import { keep } from './scope.js';
import { aTensor, describe, tensor, zeros } from './creation.js';
import type { KeyValue } from './attention_layers.js';
import type { MultiHeadAttention } from './attention_layers.js';
import type { TransformerBlock } from './transformer.js';
import type { LayerNorm } from './nn.js';
import { add } from './ops/elementwise.js';
import { slice } from './ops/views.js';

/** What a decoder's step() takes besides the new ids and the cache. */
export interface DecoderStepOptions {
  /** Soft-prompt embeddings [B, P, width] in front of the ids (first step only; BLIP-2 stage 2). */
  prefix?: Tensor | null;
  /** Cross-attention context [B, Lc, crossWidth] (image or query states); read once, by the first step given one. */
  context?: Tensor | null;
  /** uint8 [B, Lc], 1 = attend (default all); stored with the context. */
  contextMask?: Tensor | null;
  /**
   * Padding of the new ids: uint8 or int32 [B, T] of 0/1, 0 = padding (HF's attention_mask over the
   * ids, e.g. left-padded prompts). Padding positions are never attended to, and the position ids
   * of the real ones count real positions only (HF's cumsum(mask) - 1, continued over the steps; a
   * soft prefix is real). Kept by the cache; default: every new id is real.
   */
  attentionMask?: Tensor | null;
}

export interface KVCacheConfig {
  /** Rows (batch * beams). */
  batch: number;
  layers: number;
  heads: number;
  headDim: number;
  /** Positions preallocated (prefix + prompt + generated). */
  maxLength: number;
  dtype?: DType;
}

/** A contiguous copy that the cache owns (never the caller's tensor), outside every scope. */
function ownCopy(t: Tensor): Tensor {
  const out = keep(wrap(native.empty([...t.shape], t.dtype, 'cpu')));
  native.copy(out.handle, t.handle);
  return out;
}

function checkInt(op: string, name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
    throw new RangeError(`${op}: expected an integer >= ${min} for ${name} but received ${describe(v)}`);
  return v;
}

/** Per-layer self-attention keys/values [batch, heads, maxLength, headDim], filled up to `length`. */
export class KVCache {
  readonly batch: number;
  readonly layers: number;
  readonly heads: number;
  readonly headDim: number;
  readonly maxLength: number;
  readonly dtype: DType;
  readonly keys: Tensor[];
  readonly values: Tensor[];
  /** Cross-attention keys/values per layer ([batch, heads, Lc, headDim], contiguous), or null. */
  readonly cross: (KeyValue | null)[];
  /** The context's key mask (uint8 [batch, Lc], 1 = attend), or null for all. */
  crossMask: Tensor | null = null;
  /** The self-attention key mask (uint8 [batch, maxLength], 0 = padding), or null while no position is padding. */
  selfMask: Tensor | null = null;
  private len = 0;
  private hasContext = false;
  // once some position is padding: selfMask's host copy and, per row, the real positions so far
  private maskHost: Uint8Array | null = null;
  private real: Int32Array | null = null;

  constructor(config: KVCacheConfig) {
    const op = 'KVCache';
    if (config === null || typeof config !== 'object') throw new TypeError(`${op}: expected a config object for config but received ${describe(config)}`);
    this.batch = checkInt(op, 'config.batch', config.batch, 1);
    this.layers = checkInt(op, 'config.layers', config.layers, 0);
    this.heads = checkInt(op, 'config.heads', config.heads, 1);
    this.headDim = checkInt(op, 'config.headDim', config.headDim, 1);
    this.maxLength = checkInt(op, 'config.maxLength', config.maxLength, 1);
    const dtype = config.dtype ?? 'float32';
    if (dtype !== 'float32' && dtype !== 'float64') throw new TypeError(`${op}: expected 'float32' or 'float64' for config.dtype but received ${describe(dtype)}`);
    this.dtype = dtype;
    const shape = [this.batch, this.heads, this.maxLength, this.headDim];
    this.keys = [];
    this.values = [];
    for (let i = 0; i < this.layers; i++) {
      this.keys.push(keep(zeros(shape, { dtype })));
      this.values.push(keep(zeros(shape, { dtype })));
    }
    this.cross = Array.from({ length: this.layers }, () => null);
  }

  /** Positions filled so far. */
  get length(): number {
    return this.len;
  }

  /** Whether a context (cross-attention states) has been stored. */
  get hasCross(): boolean {
    return this.hasContext;
  }

  /** Views [batch, heads, length, headDim] of layer's keys and values (MultiHeadAttention's `prefix`). */
  keyValue(layer: number): KeyValue {
    this.checkLayer(layer);
    return { key: slice(this.keys[layer]!, 2, 0, this.len), value: slice(this.values[layer]!, 2, 0, this.len) };
  }

  /** Marks `count` more positions as filled (after every layer wrote them). */
  advance(count: number): void {
    checkInt('KVCache.advance', 'count', count, 0);
    if (this.len + count > this.maxLength)
      throw new RangeError(`KVCache.advance: expected at most ${this.maxLength - this.len} more positions (maxLength ${this.maxLength}) for count but received ${count}`);
    this.len += count;
  }

  /**
   * Records the padding of a step's new positions — `prefix` real ones, then T ids whose padding
   * is `mask` (DecoderStepOptions.attentionMask: [batch, T] of 0/1, 0 = padding; null = all real)
   * — and returns their position ids int32 [batch, prefix + T]: per row, the count of real
   * positions before each (pads get 0). Returns null while no position has been padding: the
   * positions are then the plain [length, length + prefix + T). Call before the step's layers
   * run (they read selfMask) and before advance(); `op` names the step in errors.
   */
  stepPositions(op: string, mask: Tensor | null | undefined, prefix: number, T: number): Tensor | null {
    const N = this.batch, pos = this.len, S = prefix + T, Lmax = this.maxLength;
    let m: ArrayLike<number> | null = null;
    if (mask !== null && mask !== undefined) {
      const want = `a uint8 or int32 tensor [${N}, ${T}] of 0/1 (0 = padding)`;
      if (!(mask instanceof Tensor)) throw new TypeError(`${op}: expected ${want} for options.attentionMask but received ${describe(mask)}`);
      if (mask.disposed) throw new TypeError(`${op}: expected a live tensor for options.attentionMask but received a disposed tensor`);
      if (mask.dtype !== 'uint8' && mask.dtype !== 'int32')
        throw new TypeError(`${op}: expected ${want} for options.attentionMask but received ${aTensor(mask.dtype)}`);
      if (mask.ndim !== 2 || mask.shape[0] !== N || mask.shape[1] !== T)
        throw new RangeError(`${op}: expected ${want} for options.attentionMask but received shape [${mask.shape.join(', ')}]`);
      const a = mask.toArray() as Uint8Array | Int32Array;
      const bad = a.findIndex((x) => x !== 0 && x !== 1);
      if (bad >= 0)
        throw new RangeError(`${op}: expected ${want} for options.attentionMask but received ${a[bad]} at [${Math.floor(bad / T)}, ${bad % T}]`);
      if (a.includes(0)) m = a;
    }
    if (m === null && this.real === null) return null;
    if (this.real === null || this.maskHost === null) {
      this.real = new Int32Array(N).fill(pos);
      this.maskHost = new Uint8Array(N * Lmax).fill(1);
    }
    const ids = new Int32Array(N * S);
    for (let n = 0; n < N; n++) {
      let c = this.real[n]!;
      for (let j = 0; j < S; j++) {
        const on = j < prefix || m === null || m[n * T + j - prefix] === 1;
        this.maskHost[n * Lmax + pos + j] = on ? 1 : 0;
        ids[n * S + j] = on ? c++ : 0;
      }
      this.real[n] = c;
    }
    if (m !== null || this.selfMask === null) this.uploadMask();
    return tensor(ids, [N, S], { dtype: 'int32' });
  }

  private uploadMask(): void {
    this.selfMask?.dispose();
    this.selfMask = keep(wrap(native.fromData(this.maskHost!, [this.batch, this.maxLength], 'uint8', 'cpu')));
  }

  /**
   * Stores each layer's cross-attention keys/values (projected by its block) and the context
   * mask. Called once, by the first step that has a context.
   */
  setContext(states: (KeyValue | null)[], mask: Tensor | null): void {
    if (states.length !== this.layers) throw new RangeError(`KVCache.setContext: expected ${this.layers} entries for states but received ${states.length}`);
    this.disposeCross();
    states.forEach((kv, i) => {
      this.cross[i] = kv && { key: ownCopy(kv.key), value: ownCopy(kv.value) };
    });
    this.crossMask = mask && ownCopy(mask);
    this.hasContext = true;
  }

  /**
   * Reorders rows in place: row i becomes the old row index[i] (int32 tensor or numbers in
   * [0, batch), repeats allowed), over the filled positions. Cross-attention states follow
   * unless `cross` is false (beam search: beams of one sample share its context, and the
   * index never leaves the sample, so they are already right). The self-attention padding and
   * real-position counts always follow.
   */
  reorder(index: Tensor | ArrayLike<number>, options: { cross?: boolean } = {}): void {
    const op = 'KVCache.reorder';
    let idx: Tensor;
    let own = false;
    if (index instanceof Tensor) idx = index;
    else if (index !== null && typeof index === 'object' && typeof (index as ArrayLike<number>).length === 'number') {
      const arr = Int32Array.from(index as ArrayLike<number>);
      if (arr.length !== this.batch || !Array.from(index as ArrayLike<number>).every((x, i) => x === arr[i]))
        throw new RangeError(`${op}: expected ${this.batch} integer row indices for index but received ${describe(index)}`);
      idx = wrap(native.fromData(arr, [arr.length], 'int32', 'cpu'));
      own = true;
    } else throw new TypeError(`${op}: expected an int32 tensor or an array of row indices for index but received ${describe(index)}`);
    try {
      native.kvCacheReorder([...this.keys, ...this.values].map((t) => t.handle), idx.handle, this.len);
      if (this.real && this.maskHost) {
        const from = idx.toArray() as Int32Array, L = this.maxLength;
        const mask = new Uint8Array(this.maskHost.length), real = new Int32Array(this.batch);
        from.forEach((r, i) => {
          mask.set(this.maskHost!.subarray(r * L, (r + 1) * L), i * L);
          real[i] = this.real![r]!;
        });
        this.maskHost = mask;
        this.real = real;
        this.uploadMask();
      }
      if ((options.cross ?? true) && this.hasContext) {
        const cross = this.cross.flatMap((kv) => (kv ? [kv.key, kv.value] : []));
        if (cross.length) native.kvCacheReorder(cross.map((t) => t.handle), idx.handle, cross[0]!.shape[2]!);
        if (this.crossMask) {
          const m = this.crossMask;
          const g = wrap(native.indexSelect(m.handle, 0, idx.handle));
          native.copy(m.handle, g.handle);
          g.dispose();
        }
      }
    } finally {
      if (own) idx.dispose();
    }
  }

  /** Frees every tensor of the cache. */
  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t.dispose();
    this.selfMask?.dispose();
    this.selfMask = null;
    this.disposeCross();
  }

  private disposeCross(): void {
    this.cross.forEach((kv, i) => {
      kv?.key.dispose();
      kv?.value.dispose();
      this.cross[i] = null;
    });
    this.crossMask?.dispose();
    this.crossMask = null;
  }

  private checkLayer(layer: number): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.layers)
      throw new RangeError(`KVCache: expected a layer in [0, ${this.layers}) for layer but received ${describe(layer)}`);
  }
}

/**
 * x [N, T, dim] attends, through attn's projections, to `key`/`value` [N, heads, Lk, headDim]
 * over keys [0, length) -> [N, T, dim]. causal: new query t sees keys j <= length - T + t.
 */
export function decodeAttentionStep(attn: MultiHeadAttention, x: Tensor, key: Tensor, value: Tensor, length: number,
  causal: boolean, keyMask: Tensor | null = null): Tensor {
  const q = attn.qProj.forward(x);
  const o = wrap(native.decodeAttention(q.handle, key.handle, value.handle,
    { length, causal, scale: 1 / Math.sqrt(attn.headDim), keyMask: keyMask?.handle ?? null }));
  return attn.outProj.forward(o);
}

/** Checks that `cache` fits a stack of `blocks` and rows x [N, T, width]. */
export function checkCache(op: string, cache: unknown, blocks: readonly TransformerBlock[], x: { batch: number; steps: number; dtype: DType }): KVCache {
  if (!(cache instanceof KVCache)) throw new TypeError(`${op}: expected a KVCache (from newCache()) for cache but received ${describe(cache)}`);
  const a = blocks[0]?.attn;
  if (cache.layers !== blocks.length || (a && (cache.heads !== a.heads || cache.headDim !== a.headDim)) || cache.dtype !== x.dtype)
    throw new RangeError(`${op}: expected a cache of ${blocks.length} layers, ${a?.heads ?? '?'} heads of ${a?.headDim ?? '?'} and ${x.dtype} (this model's, from newCache()) for cache but received one of ${cache.layers} layers, ${cache.heads} heads of ${cache.headDim} and ${cache.dtype}`);
  if (cache.batch !== x.batch)
    throw new RangeError(`${op}: expected inputs of ${cache.batch} rows (the cache's batch) but received ${x.batch}`);
  if (cache.length + x.steps > cache.maxLength)
    throw new RangeError(`${op}: expected at most ${cache.maxLength - cache.length} new positions (cache maxLength ${cache.maxLength}, ${cache.length} filled) but received ${x.steps}`);
  return cache;
}

/**
 * Stores the cross-attention keys/values of `context` [N, Lc, crossWidth] for every block that
 * has cross-attention (once per cache), with its uint8 mask [N, Lc] (1 = attend) if any.
 */
export function setCacheContext(op: string, cache: KVCache, blocks: readonly TransformerBlock[], context: Tensor, mask: Tensor | null): void {
  const cw = blocks.find((b) => b.crossAttn)?.crossAttn!.kdim;
  if (cw === undefined) throw new TypeError(`${op}: expected no options.context (the model has no cross-attention layers) but received ${describe(context)}`);
  if (!(context instanceof Tensor) || context.ndim !== 3 || context.shape[0] !== cache.batch || context.shape[2] !== cw)
    throw new RangeError(`${op}: expected a tensor [${cache.batch}, length, ${cw}] for options.context but received ${context instanceof Tensor ? `shape [${context.shape.join(', ')}]` : describe(context)}`);
  if (context.dtype !== cache.dtype)
    throw new TypeError(`${op}: expected a ${cache.dtype} tensor (the model's dtype) for options.context but received ${aTensor(context.dtype)}`);
  const Lc = context.shape[1]!;
  if (mask !== null) {
    if (!(mask instanceof Tensor) || mask.dtype !== 'uint8')
      throw new TypeError(`${op}: expected a uint8 tensor [${cache.batch}, ${Lc}] for options.contextMask but received ${mask instanceof Tensor ? aTensor(mask.dtype) : describe(mask)}`);
    if (mask.ndim !== 2 || mask.shape[0] !== cache.batch || mask.shape[1] !== Lc)
      throw new RangeError(`${op}: expected a uint8 tensor [${cache.batch}, ${Lc}] for options.contextMask but received shape [${mask.shape.join(', ')}]`);
  }
  cache.setContext(blocks.map((b) => (b.crossAttn ? b.crossAttn.keyValue(context) : null)), mask);
}

/**
 * One TransformerBlock on the new positions x [N, T, width] over layer `layer` of the cache:
 * writes their keys/values at [cache.length, cache.length + T) and returns [N, T, width].
 * The caller advances the cache once every layer has run.
 */
export function transformerBlockStep(block: TransformerBlock, x: Tensor, cache: KVCache, layer: number): Tensor {
  const T = x.shape[1]!, pos = cache.length, attn = block.attn;
  const pre = block.config.norm === 'pre';
  const sub = (h: Tensor, ln: LayerNorm, f: (u: Tensor) => Tensor): Tensor =>
    pre ? add(h, block.drop.forward(f(ln.forward(h)))) : ln.forward(add(h, block.drop.forward(f(h))));
  const keys = cache.keys[layer]!, values = cache.values[layer]!;
  let h = sub(x, block.ln1, (u) => {
    const k = attn.kProj.forward(u), v = attn.vProj.forward(u);
    native.kvCacheWrite(keys.handle, values.handle, k.handle, v.handle, pos);
    return decodeAttentionStep(attn, u, keys, values, pos + T, true, cache.selfMask);
  });
  const cross = cache.cross[layer];
  if (block.crossAttn && cross)
    h = sub(h, block.lnCross!, (u) => decodeAttentionStep(block.crossAttn!, u, cross.key, cross.value, cross.key.shape[2]!, false, cache.crossMask));
  return sub(h, block.ln2, (u) => block.mlp.forward(u));
}
