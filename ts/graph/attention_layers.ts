// Attention layers as Modules: MultiHeadAttention (self and cross), the projections
// around the fused `attention` op (ts/graph/ops/attention.ts). Initialised as
// torch.nn.MultiheadAttention: xavier_uniform q/k/v projections (one [3E, E] matrix when
// the key and value features equal dim, else one matrix each), zero biases, and the
// output projection with nn.Linear's default weights and a zero bias.
import type { DType } from '../native.js';
import { native } from '../native.js';
import { Tensor } from './tensor.js';
import { noGrad } from './autograd.js';
import { describe, rand, zeros } from './creation.js';
import { Module } from './module.js';
import { Linear } from './nn.js';
import { attention, type AttentionOptions } from './ops/attention.js';
import { concat, permute, reshape } from './ops/views.js';

export interface MultiHeadAttentionOptions {
  /** Biases on the four projections (default true). */
  bias?: boolean;
  /** Dropout on the attention probabilities in training mode (default 0). */
  dropout?: number;
  /** Features of the key input (default dim): cross-attention to another modality. */
  kdim?: number;
  /** Features of the value input (default kdim). */
  vdim?: number;
  dtype?: DType;
}

/** Head-split keys and values, [batch, heads, length, headDim]. */
export interface KeyValue {
  key: Tensor;
  value: Tensor;
}

export interface MultiHeadAttentionCallOptions {
  causal?: AttentionOptions['causal'];
  /** uint8 (1 = may attend) or additive float mask, broadcastable to [batch, heads, Lq, Lk] (Lk counts the prefix). */
  mask?: Tensor | null;
  /** Valid key counts per sample (int32 [batch]); with a prefix they count the prefix too. */
  keyPadding?: AttentionOptions['keyPadding'];
  /**
   * Cached keys/values (from keyValue() of an earlier pass, e.g. BLIP-2 ITG reusing the query
   * states of the ITC pass) placed in front of this call's keys and values.
   */
  prefix?: KeyValue | null;
  /** Added to the output inside the output projection's pass (a block's skip connection). */
  residual?: Tensor | null;
}

function checkSize(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
    throw new RangeError(`MultiHeadAttention: expected an integer >= 1 for ${name} but received ${describe(v)}`);
  return v;
}

function checkInput(name: string, x: unknown, features: number, batch?: number): asserts x is Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`MultiHeadAttention: expected a tensor for ${name} but received ${describe(x)}`);
  if (x.ndim !== 3 || x.shape[2] !== features || (batch !== undefined && x.shape[0] !== batch))
    throw new RangeError(`MultiHeadAttention: expected a tensor [${batch ?? 'batch'}, length, ${features}] for ${name} but received shape [${x.shape.join(', ')}]`);
}

/** Overwrites a parameter in place with U(-bound, bound) from the seeded generator (0: zeros). */
function fill(p: Tensor, bound: number): void {
  noGrad(() => {
    const src = bound === 0 ? zeros(p.shape, { dtype: p.dtype }) : rand(p.shape, { dtype: p.dtype, low: -bound, high: bound });
    native.copy(p.handle, src.handle);
    src.dispose();
  });
}

/**
 * Multi-head attention (as torch.nn.MultiheadAttention with batch_first): x [batch, Lq, dim]
 * attends to context [batch, Lk, kdim] (x itself when omitted) through heads of dim/heads
 * features; returns [batch, Lq, dim]. Sub-modules q_proj, k_proj, v_proj, out_proj.
 */
export class MultiHeadAttention extends Module {
  readonly dim: number;
  readonly heads: number;
  readonly headDim: number;
  readonly kdim: number;
  readonly vdim: number;
  readonly dropout: number;
  readonly qProj: Linear;
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly outProj: Linear;

  constructor(dim: number, heads: number, options: MultiHeadAttentionOptions = {}) {
    super();
    this.dim = checkSize('dim', dim);
    this.heads = checkSize('heads', heads);
    if (dim % heads !== 0)
      throw new RangeError(`MultiHeadAttention: expected dim divisible by heads (${heads}) for dim but received ${describe(dim)}`);
    this.headDim = dim / heads;
    if (options === null || typeof options !== 'object')
      throw new TypeError(`MultiHeadAttention: expected an options object for options but received ${describe(options)}`);
    this.kdim = checkSize('kdim', options.kdim ?? dim);
    this.vdim = checkSize('vdim', options.vdim ?? this.kdim);
    const p = options.dropout ?? 0;
    if (typeof p !== 'number' || !(p >= 0 && p < 1))
      throw new RangeError(`MultiHeadAttention: expected a number in [0, 1) for dropout but received ${describe(p)}`);
    this.dropout = p;
    const lin = { bias: options.bias ?? true, dtype: options.dtype };
    this.qProj = this.module('q_proj', new Linear(dim, dim, lin));
    this.kProj = this.module('k_proj', new Linear(this.kdim, dim, lin));
    this.vProj = this.module('v_proj', new Linear(this.vdim, dim, lin));
    this.outProj = this.module('out_proj', new Linear(dim, dim, lin));
    // torch: xavier_uniform_ on in_proj_weight [3E, E] (fan_in E, fan_out 3E), or on each of
    // q/k/v_proj_weight [E, in] when kdim or vdim differ from E; biases zero.
    const same = this.kdim === dim && this.vdim === dim;
    const xavier = (fanIn: number, fanOut: number) => Math.sqrt(6 / (fanIn + fanOut));
    fill(this.qProj.weight, same ? xavier(dim, 3 * dim) : xavier(dim, dim));
    fill(this.kProj.weight, same ? xavier(dim, 3 * dim) : xavier(this.kdim, dim));
    fill(this.vProj.weight, same ? xavier(dim, 3 * dim) : xavier(this.vdim, dim));
    for (const l of [this.qProj, this.kProj, this.vProj, this.outProj]) if (l.bias) fill(l.bias, 0);
  }

  /** [batch, L, dim] -> [batch, heads, L, headDim] (a view). */
  private split(t: Tensor): Tensor {
    return permute(reshape(t, [t.shape[0]!, t.shape[1]!, this.heads, this.headDim]), [0, 2, 1, 3]);
  }

  /**
   * Projected, head-split keys and values of `context` ([batch, Lk, kdim], used for both; or
   * { key, value } inputs when kdim and vdim differ): [batch, heads, Lk, headDim] each. This is
   * what `prefix` takes, to reuse a pass's keys and values in a later call.
   */
  keyValue(context: Tensor | KeyValue): KeyValue {
    let ki: unknown, vi: unknown;
    if (context instanceof Tensor) ki = vi = context;
    else if (context !== null && typeof context === 'object') ({ key: ki, value: vi } = context);
    else throw new TypeError(`MultiHeadAttention: expected a tensor or { key, value } for context but received ${describe(context)}`);
    checkInput(context instanceof Tensor ? 'context' : 'context.key', ki, this.kdim);
    checkInput(context instanceof Tensor ? 'context' : 'context.value', vi, this.vdim, ki.shape[0]);
    if (vi.shape[1] !== ki.shape[1])
      throw new RangeError(`MultiHeadAttention: expected context.value of length ${ki.shape[1]} (that of context.key) but received shape [${vi.shape.join(', ')}]`);
    return { key: this.split(this.kProj.forward(ki)), value: this.split(this.vProj.forward(vi)) };
  }

  /**
   * x [batch, Lq, dim] attends to `context` (self-attention when omitted or null) ->
   * [batch, Lq, dim]. Masks as attention(); dropout on the probabilities in training mode.
   */
  forward(x: Tensor, context?: Tensor | KeyValue | null, options: MultiHeadAttentionCallOptions = {}): Tensor {
    checkInput('x', x, this.dim);
    if (options === null || typeof options !== 'object')
      throw new TypeError(`MultiHeadAttention: expected an options object for options but received ${describe(options)}`);
    const [B, Lq] = [x.shape[0]!, x.shape[1]!];
    const q = this.split(this.qProj.forward(x));
    let { key, value } = this.keyValue(context ?? x);
    if (key.shape[0] !== B)
      throw new RangeError(`MultiHeadAttention: expected a context of batch ${B} (that of x) but received batch ${key.shape[0]}`);
    const prefix = options.prefix ?? null;
    if (prefix !== null) {
      const ok = (t: unknown): t is Tensor => t instanceof Tensor && t.ndim === 4 && t.shape[0] === B && t.shape[1] === this.heads && t.shape[3] === this.headDim;
      if (typeof prefix !== 'object' || !ok(prefix.key) || !ok(prefix.value) || prefix.key.shape[2] !== prefix.value.shape[2])
        throw new RangeError(`MultiHeadAttention: expected { key, value } tensors [${B}, ${this.heads}, P, ${this.headDim}] for options.prefix but received ${describe(prefix)}`);
      key = concat([prefix.key, key], 2);
      value = concat([prefix.value, value], 2);
    }
    const o = attention(q, key, value, {
      causal: options.causal, mask: options.mask, keyPadding: options.keyPadding,
      dropout: this.training ? this.dropout : 0,
    });
    return this.outProj.forward(reshape(permute(o, [0, 2, 1, 3]), [B, Lq, this.dim]), options.residual);
  }

  protected override extraRepr(): string {
    return `dim=${this.dim}, heads=${this.heads}` + (this.kdim !== this.dim || this.vdim !== this.dim ? `, kdim=${this.kdim}, vdim=${this.vdim}` : '') +
      (this.dropout ? `, dropout=${this.dropout}` : '');
  }
}
