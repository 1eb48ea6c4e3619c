// Decoder-only causal language model, GPT-2 / OPT style (BLIP-2 stage 2's frozen LLM):
// token + learned position embeddings, dropout, causal pre-LN blocks, final LayerNorm,
// and an LM head tied to the token embedding. An optional prefix of soft-prompt
// embeddings [B, P, width] (BLIP-2 feeds the projected Q-Former outputs) goes in front of
// the token embeddings; positions then count from the prefix's first entry, as OPT's
// positions over inputs_embeds. forward returns the final hidden states; the loss is the
// fused lm_head objective (ts/objectives/lm.ts), so [N, V] logits are never stored.
//
// step() is one incremental decoding step over a KV cache (newCache(); ts/graph/kv_cache.ts):
// the new positions only, each block's keys/values kept per layer, the logits of the last one.
//
// Init as GPT-2 (HF GPT2PreTrainedModel._init_weights, nanoGPT): Linear and embedding
// weights ~ N(0, 0.02^2), biases zero, LayerNorm ones/zeros, and the residual output
// projections (attention out_proj and MLP fc2) ~ N(0, (0.02 / sqrt(2 * layers))^2).
import { Tensor } from '../graph/tensor.js';
import { describe, randn } from '../graph/creation.js';
import { Module } from '../graph/module.js';
import { Dropout, Embedding, LayerNorm, Linear, type ActivationKind } from '../graph/nn.js';
import { TransformerBlock, TransformerStack } from '../graph/transformer.js';
import { add } from '../graph/ops/elementwise.js';
import { linear, matmul } from '../graph/ops/matmul.js';
import { concat, select, slice, transpose } from '../graph/ops/views.js';
import { noGrad } from '../graph/autograd.js';
import { KVCache, checkCache, setCacheContext, transformerBlockStep, type DecoderStepOptions } from '../graph/kv_cache.js';
import { lmLoss, type LmLossOptions, type LmLossResult } from '../objectives/lm.js';
import type { DType } from '../native.js';
import { activationField, bool, dtypeField, ensure, int, num, parseConfig, probField, seedField, type Spec } from './config.js';
import { constant_, normal_, withSeed } from './init.js';
import { checkIds } from './text_transformer.js';

export interface CausalLMConfig {
  /** Vocabulary size (default 256; GPT-2: 50257). */
  vocabSize: number;
  /** Learned positions, prefix included (default 48; GPT-2: 1024). */
  maxPositions: number;
  width: number;
  layers: number;
  heads: number;
  /** MLP hidden = floor(width * mlpRatio) (default 4). */
  mlpRatio: number;
  /** MLP activation (default 'gelu_tanh', GPT-2's gelu_new; OPT: 'relu'). */
  activation: ActivationKind;
  lnEps: number;
  /** Embedding and residual dropout (default 0.1 as GPT-2). */
  dropout: number;
  /** Attention-probability dropout (default 0.1 as GPT-2). */
  attnDropout: number;
  /** Std of the normal init (default 0.02). */
  initializerRange: number;
  /** The LM head is the token embedding (default true); false: a separate lm_head weight. */
  tieWordEmbeddings: boolean;
  dtype: DType;
  seed: number | null;
}

export const CAUSAL_LM_DEFAULTS: CausalLMConfig = {
  vocabSize: 256, maxPositions: 48, width: 64, layers: 2, heads: 4, mlpRatio: 4, activation: 'gelu_tanh', lnEps: 1e-5,
  dropout: 0.1, attnDropout: 0.1, initializerRange: 0.02, tieWordEmbeddings: true, dtype: 'float32', seed: null,
};

export const CAUSAL_LM_PRESETS = {
  gpt2: { vocabSize: 50257, maxPositions: 1024, width: 768, layers: 12, heads: 12 },
  'opt-125m': { vocabSize: 50272, maxPositions: 2048, width: 768, layers: 12, heads: 12, activation: 'relu', attnDropout: 0 },
} as const satisfies Record<string, Partial<CausalLMConfig>>;

const SPEC: Spec<CausalLMConfig> = {
  vocabSize: int(1), maxPositions: int(1), width: int(1), layers: int(0), heads: int(1),
  mlpRatio: num(0, Infinity, { minOpen: true }), activation: activationField, lnEps: num(0, Infinity, { minOpen: true }),
  dropout: probField, attnDropout: probField, initializerRange: num(0), tieWordEmbeddings: bool(), dtype: dtypeField, seed: seedField,
};

export function causalLMConfig(config: Partial<CausalLMConfig> = {}): Readonly<CausalLMConfig> {
  const c = parseConfig('CausalLMConfig', SPEC, CAUSAL_LM_DEFAULTS, config);
  ensure('CausalLMConfig', c.width % c.heads === 0, 'width', `a multiple of heads (${c.heads})`, c.width);
  ensure('CausalLMConfig', Math.floor(c.width * c.mlpRatio) >= 1, 'mlpRatio', `a ratio giving an MLP of at least 1 feature (width ${c.width})`, c.mlpRatio);
  return c;
}

export interface CausalLMCallOptions {
  /** Soft-prompt embeddings [B, P, width] placed before the tokens (BLIP-2's projected queries). */
  prefix?: Tensor | null;
}

/** GPT/OPT-style LM. forward(ids int32 [B, T], { prefix }) -> hidden [B, P + T, width]. */
export class CausalLM extends Module {
  readonly config: Readonly<CausalLMConfig>;
  readonly wte: Embedding;
  readonly wpe: Embedding;
  readonly drop: Dropout;
  readonly blocks: TransformerStack;
  readonly lnF: LayerNorm;
  /** The untied LM head [V, width]; null when tied to wte. */
  readonly lmHeadWeight: Tensor | null;

  constructor(config: Partial<CausalLMConfig> = {}) {
    super();
    const c = (this.config = causalLMConfig(config));
    const W = c.width, dtype = c.dtype, std = c.initializerRange;
    const built = withSeed(c.seed, () => {
      const wte = new Embedding(c.vocabSize, W, { std, dtype });
      const wpe = new Embedding(c.maxPositions, W, { std, dtype });
      const blocks = Array.from({ length: c.layers }, () => new TransformerBlock({
        width: W, heads: c.heads, mlpWidth: Math.floor(W * c.mlpRatio), activation: c.activation, norm: 'pre',
        dropout: c.dropout, attnDropout: c.attnDropout, lnEps: c.lnEps, dtype,
      }));
      const residStd = std / Math.sqrt(2 * Math.max(c.layers, 1));
      for (const b of blocks) {
        for (const [, m] of b.namedModules())
          if (m instanceof Linear) {
            normal_(m.weight, m === b.attn.outProj || m === b.mlp.fc2 ? residStd : std);
            if (m.bias) constant_(m.bias, 0);
          }
      }
      const lnF = new LayerNorm(W, { eps: c.lnEps, dtype });
      const head = c.tieWordEmbeddings ? null : randn([c.vocabSize, W], { dtype, std });
      return { wte, wpe, blocks, lnF, head };
    });
    this.wte = this.module('wte', built.wte);
    this.wpe = this.module('wpe', built.wpe);
    this.drop = this.module('drop', new Dropout(c.dropout));
    this.blocks = this.module('h', new TransformerStack(built.blocks));
    this.lnF = this.module('ln_f', built.lnF);
    this.lmHeadWeight = built.head && this.param('lm_head', built.head);
  }

  /** The vocabulary projection [V, width] (the token embedding when tied). */
  get lmWeight(): Tensor {
    return this.lmHeadWeight ?? this.wte.weight;
  }

  forward(ids: Tensor, options: CausalLMCallOptions = {}): Tensor {
    const op = 'CausalLM', c = this.config;
    if (options === null || typeof options !== 'object')
      throw new TypeError(`${op}: expected an options object for options but received ${describe(options)}`);
    const prefix = options.prefix ?? null;
    const P = this.checkPrefix(op, prefix, ids);
    checkIds(op, 'ids', ids, c.vocabSize, c.maxPositions - P);
    const T = ids.shape[1]!;
    if (P + T === 0) throw new RangeError(`${op}: expected at least one token or prefix position but received shape [${ids.shape.join(', ')}] and no prefix`);
    const tok = this.wte.forward(ids);                                              // [B, T, W]
    let x = prefix === null ? tok : T === 0 ? prefix : concat([prefix, tok], 1);   // [B, P+T, W]
    x = this.drop.forward(add(x, slice(this.wpe.weight, 0, 0, P + T)));
    x = this.blocks.forward(x, { causal: true });
    return this.lnF.forward(x);
  }

  private checkPrefix(op: string, prefix: Tensor | null, ids: unknown): number {
    const c = this.config;
    if (prefix === null) return 0;
    if (!(prefix instanceof Tensor) || prefix.ndim !== 3 || prefix.shape[2] !== c.width || (ids instanceof Tensor && prefix.shape[0] !== ids.shape[0]))
      throw new RangeError(`${op}: expected a tensor [${ids instanceof Tensor ? ids.shape[0] : 'batch'}, length, ${c.width}] for options.prefix but received ${prefix instanceof Tensor ? `shape [${prefix.shape.join(', ')}]` : describe(prefix)}`);
    if (prefix.dtype !== c.dtype)
      throw new TypeError(`${op}: expected a ${c.dtype} tensor (the model's dtype) for options.prefix but received a ${prefix.dtype} tensor`);
    return prefix.shape[1]!;
  }

  /** A KV cache for `batch` rows and up to `maxLength` positions (prefix included; at most maxPositions). */
  newCache(batch: number, maxLength: number): KVCache {
    const c = this.config;
    if (typeof maxLength !== 'number' || !Number.isInteger(maxLength) || maxLength < 1 || maxLength > c.maxPositions)
      throw new RangeError(`CausalLM.newCache: expected an integer in [1, ${c.maxPositions}] (maxPositions) for maxLength but received ${describe(maxLength)}`);
    return new KVCache({ batch, layers: c.layers, heads: c.heads, headDim: c.width / c.heads, maxLength, dtype: c.dtype });
  }

  /**
   * One incremental decoding step (no gradients): the new positions — the soft-prompt `prefix`
   * [B, P, width] (first step) then ids int32 [B, T] — run over the cache, which grows by P + T;
   * returns the logits [B, V] of the last new position. Equal to forward() over every position
   * so far (in eval mode). options.attentionMask [B, T] marks padding ids (left-padded prompts):
   * never attended to, and skipped by the position ids of the real ones (HF's cumsum(mask) - 1).
   */
  step(ids: Tensor, cache: KVCache, options: DecoderStepOptions = {}): Tensor {
    const op = 'CausalLM.step', c = this.config;
    if (options === null || typeof options !== 'object')
      throw new TypeError(`${op}: expected an options object for options but received ${describe(options)}`);
    const prefix = options.prefix ?? null;
    const P = this.checkPrefix(op, prefix, ids);
    checkIds(op, 'ids', ids, c.vocabSize, c.maxPositions);
    const [B, T] = ids.shape as [number, number];
    if (P + T === 0) throw new RangeError(`${op}: expected at least one token or prefix position but received shape [${ids.shape.join(', ')}] and no prefix`);
    checkCache(op, cache, this.blocks.blocks, { batch: B, steps: P + T, dtype: c.dtype });
    if (options.context != null) setCacheContext(op, cache, this.blocks.blocks, options.context, options.contextMask ?? null);
    return noGrad(() => {
      const pos = cache.length;
      const positions = cache.stepPositions(op, options.attentionMask, P, T);
      const tok = T === 0 ? null : this.wte.forward(ids);
      let x = prefix === null ? tok! : tok === null ? prefix : concat([prefix, tok], 1);
      x = this.drop.forward(add(x, positions ? this.wpe.forward(positions) : slice(this.wpe.weight, 0, pos, pos + P + T)));
      this.blocks.blocks.forEach((b, i) => { x = transformerBlockStep(b, x, cache, i); });
      cache.advance(P + T);
      return linear(this.lnF.forward(select(x, 1, P + T - 1)), this.lmWeight);
    });
  }

  /** Logits [..., V] of hidden states (materialised: for small checks and decoding; training uses loss()). */
  logits(hidden: Tensor): Tensor {
    return matmul(hidden, transpose(this.lmWeight));
  }

  /**
   * The fused next-token loss of hidden [..., width] against int32 targets [...] (already
   * shifted; ignoreIndex, default -100, marks prefix and padding positions).
   */
  loss(hidden: Tensor, targets: Tensor, options: LmLossOptions = {}): LmLossResult {
    return lmLoss(hidden, this.lmWeight, targets, options);
  }
}
