// Transformer blocks as Modules: TransformerBlock (self-attention, an optional
// cross-attention sub-layer, MLP; pre-LN as CLIP/GPT-2 or post-LN as BERT) and
// TransformerStack (a list of blocks run in order). The towers in ts/models compose them.
//
//   pre-LN  (open_clip ResidualAttentionBlock, GPT-2 Block):
//     x = x + drop(attn(ln_1(x)));  [x = x + drop(cross_attn(ln_cross(x), ctx))];  x = x + drop(mlp(ln_2(x)))
//   post-LN (HF BertLayer: attention.output.LayerNorm, crossattention, output.LayerNorm):
//     x = ln_1(x + drop(attn(x)));  [x = ln_cross(x + drop(cross_attn(x, ctx)))];  x = ln_2(x + drop(mlp(x)))
//
// Sub-module names: ln_1, attn, [ln_cross, cross_attn], ln_2, mlp (fc1, fc2). The block keeps
// its self-attention keys/values per layer reachable (`attn.keyValue`, the `prefix` call
// option) so an incremental decoder step over a KV cache can be added on top.
import type { DType } from '../native.js';
import { Tensor } from './tensor.js';
import { describe } from './creation.js';
import { Module } from './module.js';
import { Dropout, LayerNorm, MLP, type ActivationKind } from './nn.js';
import { MultiHeadAttention, type KeyValue, type MultiHeadAttentionCallOptions } from './attention_layers.js';
import { add } from './ops/elementwise.js';
import { activationField, dtypeField, ensure, int, nullable, num, oneOf, bool, parseConfig, probField, type Spec } from '../models/config.js';

export interface TransformerBlockConfig {
  width: number;
  heads: number;
  /** Hidden features of the MLP; null: 4 * width. */
  mlpWidth?: number | null;
  /** MLP activation (default 'gelu'; CLIP's OpenAI weights use 'quick_gelu', GPT-2 'gelu_tanh'). */
  activation?: ActivationKind;
  /** 'pre' (default) or 'post' layer norm. */
  norm?: 'pre' | 'post';
  /** Adds a cross-attention sub-layer between self-attention and the MLP (default false). */
  crossAttention?: boolean;
  /** Features of the cross-attention context (default: width). */
  crossWidth?: number | null;
  /** Dropout on each sub-layer's output before the residual add (default 0). */
  dropout?: number;
  /** Dropout on the attention probabilities (default 0). */
  attnDropout?: number;
  /** LayerNorm epsilon (default 1e-5; BERT uses 1e-12). */
  lnEps?: number;
  /** Biases on the linear layers (default true). */
  bias?: boolean;
  dtype?: DType;
}

const BLOCK_DEFAULTS: Required<TransformerBlockConfig> = {
  width: 0, heads: 0, mlpWidth: null, activation: 'gelu', norm: 'pre', crossAttention: false, crossWidth: null,
  dropout: 0, attnDropout: 0, lnEps: 1e-5, bias: true, dtype: 'float32',
};

const BLOCK_SPEC: Spec<Required<TransformerBlockConfig>> = {
  width: int(1), heads: int(1), mlpWidth: nullable(int(1)), activation: activationField, norm: oneOf('pre', 'post'),
  crossAttention: bool(), crossWidth: nullable(int(1)), dropout: probField, attnDropout: probField,
  lnEps: num(0, Infinity, { minOpen: true }), bias: bool(), dtype: dtypeField,
};

export interface TransformerBlockCallOptions {
  /** Causal self-attention (see attention()). */
  causal?: MultiHeadAttentionCallOptions['causal'];
  /** Self-attention mask: uint8 (1 = may attend) or additive, broadcastable to [B, heads, L, L (+ prefix)]. */
  mask?: Tensor | null;
  /** Self-attention valid key counts per sample (int32 [B] or numbers). */
  keyPadding?: MultiHeadAttentionCallOptions['keyPadding'];
  /** Cached self-attention keys/values placed in front of this call's (a KV cache). */
  prefix?: KeyValue | null;
  /** Cross-attention context [B, Lc, crossWidth]; without it the cross-attention sub-layer is skipped. */
  context?: Tensor | null;
  /** Cross-attention mask, broadcastable to [B, heads, L, Lc]. */
  contextMask?: Tensor | null;
  /** Cross-attention valid context counts per sample. */
  contextKeyPadding?: MultiHeadAttentionCallOptions['keyPadding'];
}

/**
 * One transformer layer on x [B, L, width] -> [B, L, width]. Initialised as its parts'
 * PyTorch defaults (MultiHeadAttention as torch's, MLP as nn.Linear); towers re-initialise
 * as their references do.
 */
export class TransformerBlock extends Module {
  readonly config: Readonly<Required<TransformerBlockConfig>>;
  readonly ln1: LayerNorm;
  readonly attn: MultiHeadAttention;
  readonly lnCross: LayerNorm | null;
  readonly crossAttn: MultiHeadAttention | null;
  readonly ln2: LayerNorm;
  readonly mlp: MLP;
  readonly drop: Dropout;

  constructor(config: TransformerBlockConfig) {
    super();
    const c = parseConfig('TransformerBlock', BLOCK_SPEC, BLOCK_DEFAULTS, config);
    ensure('TransformerBlock', c.width % c.heads === 0, 'width', `a multiple of heads (${c.heads})`, c.width);
    this.config = c;
    const ln = { eps: c.lnEps, dtype: c.dtype };
    const mha = { bias: c.bias, dropout: c.attnDropout, dtype: c.dtype };
    this.ln1 = this.module('ln_1', new LayerNorm(c.width, ln));
    this.attn = this.module('attn', new MultiHeadAttention(c.width, c.heads, mha));
    if (c.crossAttention) {
      this.lnCross = this.module('ln_cross', new LayerNorm(c.width, ln));
      const kdim = c.crossWidth ?? c.width;
      this.crossAttn = this.module('cross_attn', new MultiHeadAttention(c.width, c.heads, { ...mha, kdim, vdim: kdim }));
    } else {
      this.lnCross = null;
      this.crossAttn = null;
    }
    this.ln2 = this.module('ln_2', new LayerNorm(c.width, ln));
    this.mlp = this.module('mlp', new MLP(c.width, c.mlpWidth ?? 4 * c.width, c.width, c.activation, { bias: c.bias, dtype: c.dtype }));
    this.drop = this.module('drop', new Dropout(c.dropout));
  }

  get width(): number {
    return this.config.width;
  }

  forward(x: Tensor, options: TransformerBlockCallOptions = {}): Tensor {
    if (!(x instanceof Tensor) || x.ndim !== 3 || x.shape[2] !== this.width)
      throw new RangeError(`TransformerBlock: expected a tensor [batch, length, ${this.width}] for x but received ${x instanceof Tensor ? `shape [${x.shape.join(', ')}]` : describe(x)}`);
    if (options === null || typeof options !== 'object')
      throw new TypeError(`TransformerBlock: expected an options object for options but received ${describe(options)}`);
    const self: MultiHeadAttentionCallOptions = { causal: options.causal, mask: options.mask, keyPadding: options.keyPadding, prefix: options.prefix };
    const ctx = options.context ?? null;
    const cross: MultiHeadAttentionCallOptions = { mask: options.contextMask, keyPadding: options.contextKeyPadding };
    const pre = this.config.norm === 'pre';
    // one residual sub-layer, pre- or post-normalised; without dropout after it the skip
    // connection is added inside the sub-layer's last linear (f's residual)
    const sub = (h: Tensor, ln: LayerNorm, f: (u: Tensor, residual?: Tensor) => Tensor): Tensor => {
      const u = pre ? ln.forward(h) : h;
      const y = this.drop.active ? add(h, this.drop.forward(f(u))) : f(u, h);
      return pre ? y : ln.forward(y);
    };

    let h = sub(x, this.ln1, (u, r) => this.attn.forward(u, null, { ...self, residual: r }));
    if (this.crossAttn && ctx !== null) h = sub(h, this.lnCross!, (u, r) => this.crossAttn!.forward(u, ctx, { ...cross, residual: r }));
    return sub(h, this.ln2, (u, r) => this.mlp.forward(u, r));
  }
}

/**
 * Blocks run in order (registered as '0', '1', ... as open_clip's `resblocks` and HF's
 * `layer`), each with the same call options.
 */
export class TransformerStack extends Module {
  readonly blocks: TransformerBlock[];

  constructor(blocks: TransformerBlock[]) {
    super();
    if (!Array.isArray(blocks)) throw new TypeError(`TransformerStack: expected an array of TransformerBlock for blocks but received ${describe(blocks)}`);
    blocks.forEach((b, i) => {
      if (!(b instanceof TransformerBlock)) throw new TypeError(`TransformerStack: expected a TransformerBlock for blocks[${i}] but received ${describe(b)}`);
      this.module(String(i), b);
    });
    this.blocks = [...blocks];
  }

  get length(): number {
    return this.blocks.length;
  }

  forward(x: Tensor, options: TransformerBlockCallOptions = {}): Tensor {
    let h = x;
    for (const b of this.blocks) h = b.forward(h, options);
    return h;
  }
}
