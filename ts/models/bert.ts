// BERT-style bidirectional encoder as HF's BertModel, extended as BLIP's MED (multimodal
// mixture of encoder-decoder): post-LN blocks, word + position (+ token type) embeddings
// with LayerNorm and dropout, a key-padding attention mask, [CLS] pooling (the pooler's
// dense + tanh), optional cross-attention to image tokens in every k-th layer, and a
// causal decoder mode that shares every weight (`mode: 'decoder'` only switches the
// self-attention mask). BertLMHead is BertLMPredictionHead (dense + GELU + LayerNorm, then
// the vocabulary projection tied to the word embeddings plus a bias) evaluated through
// the fused LM loss (ts/objectives/lm.ts), so the [N, V] logits are never stored.
//
// Init as HF BertPreTrainedModel._init_weights: every Linear weight and embedding
// ~ N(0, initializerRange^2) (0.02), Linear biases zero, the padding id's embedding row
// zero, LayerNorm ones/zeros; the LM head's bias zero.
// step() is one incremental decoder step (causal, as mode 'decoder') over a KV cache
// (newCache(); ts/graph/kv_cache.ts), with the image tokens' cross-attention keys/values
// projected once; it returns the LM head's logits of the last new position.
// Cross-attention layers follow BLIP-2's Q-Former rule (layer i has one when
// i % crossAttentionEvery == 0; 1 gives every layer, as BLIP's MED).
import { Tensor } from '../graph/tensor.js';
import { describe, zeros } from '../graph/creation.js';
import { Module } from '../graph/module.js';
import { Dropout, Embedding, LayerNorm, Linear, type ActivationKind } from '../graph/nn.js';
import { TransformerBlock, TransformerStack } from '../graph/transformer.js';
import type { AttentionOptions } from '../graph/ops/attention.js';
import { add, gelu, tanh } from '../graph/ops/elementwise.js';
import { noGrad } from '../graph/autograd.js';
import { KVCache, checkCache, setCacheContext, transformerBlockStep, type DecoderStepOptions } from '../graph/kv_cache.js';
import { linear, matmul } from '../graph/ops/matmul.js';
import { reshape, select, slice, transpose } from '../graph/ops/views.js';
import { lmLoss, type LmLossOptions, type LmLossResult } from '../objectives/lm.js';
import type { DType } from '../native.js';
import { activationField, bool, dtypeField, ensure, int, nullable, num, oneOf, parseConfig, probField, seedField, type Spec } from './config.js';
import { constant_, normal_, withSeed } from './init.js';
import { checkIds } from './text_transformer.js';

export interface BertConfig {
  /** Vocabulary size (default 512; bert-base: 30522). */
  vocabSize: number;
  hidden: number;
  layers: number;
  heads: number;
  /** MLP hidden features (default 4 * hidden of the tiny config: 256). */
  intermediate: number;
  /** Learned positions (default 32; bert-base: 512). */
  maxPositions: number;
  /** Token type vocabulary (default 2); 0: no token type embeddings. */
  typeVocabSize: number;
  /** Id whose embedding row starts at zero (default 0); null: none. */
  padTokenId: number | null;
  activation: ActivationKind;
  lnEps: number;
  /** Dropout after the embeddings and each sub-layer (default 0.1). */
  hiddenDropout: number;
  /** Dropout on the attention probabilities (default 0.1). */
  attnDropout: number;
  /** Std of the normal init (default 0.02). */
  initializerRange: number;
  /** Cross-attention in layers i with i % k == 0; 0: none (default 0). */
  crossAttentionEvery: number;
  /** Features of the cross-attended (image) tokens; null: hidden (BLIP: the ViT width). */
  crossWidth: number | null;
  /** The [CLS] pooler (dense + tanh), as BertModel(add_pooling_layer=True) (default true). */
  pooler: boolean;
  /** A BertLMHead tied to the word embeddings, registered as 'cls' (default false). */
  lmHead: boolean;
  dtype: DType;
  seed: number | null;
}

export const BERT_DEFAULTS: BertConfig = {
  vocabSize: 512, hidden: 64, layers: 2, heads: 4, intermediate: 256, maxPositions: 32, typeVocabSize: 2, padTokenId: 0,
  activation: 'gelu', lnEps: 1e-12, hiddenDropout: 0.1, attnDropout: 0.1, initializerRange: 0.02,
  crossAttentionEvery: 0, crossWidth: null, pooler: true, lmHead: false, dtype: 'float32', seed: null,
};

/** bert-base-uncased, and BLIP's MED text encoder/decoder on ViT-B (cross-attention in every layer). */
export const BERT_PRESETS = {
  'bert-base': { vocabSize: 30522, hidden: 768, layers: 12, heads: 12, intermediate: 3072, maxPositions: 512 },
  'blip-med-base': {
    vocabSize: 30524, hidden: 768, layers: 12, heads: 12, intermediate: 3072, maxPositions: 512,
    crossAttentionEvery: 1, crossWidth: 768, pooler: false,
  },
} as const satisfies Record<string, Partial<BertConfig>>;

const SPEC: Spec<BertConfig> = {
  vocabSize: int(1), hidden: int(1), layers: int(0), heads: int(1), intermediate: int(1), maxPositions: int(1),
  typeVocabSize: int(0), padTokenId: nullable(int(0)), activation: activationField, lnEps: num(0, Infinity, { minOpen: true }),
  hiddenDropout: probField, attnDropout: probField, initializerRange: num(0), crossAttentionEvery: int(0),
  crossWidth: nullable(int(1)), pooler: bool(), lmHead: bool(), dtype: dtypeField, seed: seedField,
};

export function bertConfig(config: Partial<BertConfig> = {}): Readonly<BertConfig> {
  const c = parseConfig('BertConfig', SPEC, BERT_DEFAULTS, config);
  ensure('BertConfig', c.hidden % c.heads === 0, 'hidden', `a multiple of heads (${c.heads})`, c.hidden);
  if (c.padTokenId !== null) ensure('BertConfig', c.padTokenId < c.vocabSize, 'padTokenId', `an id below vocabSize (${c.vocabSize}) or null`, c.padTokenId);
  return c;
}

export type BertMode = 'encoder' | 'decoder';

export interface BertCallOptions {
  /** 'encoder' (bidirectional, default) or 'decoder' (causal self-attention; same weights). */
  mode?: BertMode;
  /** int32 [B, L] token types (default all 0). */
  tokenTypeIds?: Tensor | null;
  /** uint8 [B, L], 1 = a real token, 0 = padding (HF's attention_mask). */
  attentionMask?: Tensor | null;
  /** Valid token counts per sample (right padding), instead of attentionMask. */
  lengths?: AttentionOptions['keyPadding'];
  /** Image tokens [B, Le, crossWidth] for the cross-attention layers; without them those layers skip it (BLIP's 'text' mode). */
  encoderHiddenStates?: Tensor | null;
  /** uint8 [B, Le], 1 = attend (default all). */
  encoderAttentionMask?: Tensor | null;
  /** First position id (default 0), for a continuation after cached tokens. */
  positionOffset?: number;
}

export interface BertOutput {
  /** Last hidden states [B, L, hidden]. */
  hidden: Tensor;
  /** The [CLS] (first) token's hidden state [B, hidden]. */
  cls: Tensor;
  /** The pooler output tanh(dense(cls)) [B, hidden], or null without a pooler. */
  pooled: Tensor | null;
}

function checkMask(op: string, name: string, m: unknown, B: number, L: number): Tensor {
  if (!(m instanceof Tensor) || m.dtype !== 'uint8')
    throw new TypeError(`${op}: expected a uint8 tensor [${B}, ${L}] for ${name} but received ${m instanceof Tensor ? `a ${m.dtype} tensor` : describe(m)}`);
  if (m.ndim !== 2 || m.shape[0] !== B || m.shape[1] !== L)
    throw new RangeError(`${op}: expected a uint8 tensor [${B}, ${L}] for ${name} but received shape [${m.shape.join(', ')}]`);
  return reshape(m, [B, 1, 1, L]);
}

/** HF BertLMPredictionHead: transform (dense, GELU, LayerNorm) then the tied projection + bias. */
export class BertLMHead extends Module {
  readonly dense: Linear;
  readonly layerNorm: LayerNorm;
  readonly bias: Tensor;
  private readonly tied: Embedding;

  constructor(config: Readonly<BertConfig>, wordEmbeddings: Embedding) {
    super();
    const { hidden, dtype } = config;
    this.dense = this.module('dense', new Linear(hidden, hidden, { dtype }));
    this.layerNorm = this.module('LayerNorm', new LayerNorm(hidden, { eps: config.lnEps, dtype }));
    this.bias = this.param('bias', zeros([config.vocabSize], { dtype }));
    this.tied = wordEmbeddings;
  }

  /** The vocabulary projection [V, hidden] (the word embeddings). */
  get weight(): Tensor {
    return this.tied.weight;
  }

  /** The transformed hidden states [..., hidden] that the tied projection reads. */
  forward(hidden: Tensor): Tensor {
    return this.layerNorm.forward(gelu(this.dense.forward(hidden)));
  }

  /** Logits [..., V] (materialised: for small checks and decoding; training uses loss()). */
  logits(hidden: Tensor): Tensor {
    return add(matmul(this.forward(hidden), transpose(this.weight)), this.bias);
  }

  /** The fused LM loss of the head on hidden [..., hidden] against int32 targets [...] (ignoreIndex -100 by default). */
  loss(hidden: Tensor, targets: Tensor, options: Omit<LmLossOptions, 'bias'> = {}): LmLossResult {
    return lmLoss(this.forward(hidden), this.weight, targets, { ...options, bias: this.bias });
  }
}

/** BERT / BLIP MED. forward(ids int32 [B, L], options) -> { hidden, cls, pooled }. */
export class BertModel extends Module {
  readonly config: Readonly<BertConfig>;
  readonly wordEmbeddings: Embedding;
  readonly positionEmbeddings: Embedding;
  readonly tokenTypeEmbeddings: Embedding | null;
  readonly embLayerNorm: LayerNorm;
  readonly embDropout: Dropout;
  readonly encoder: TransformerStack;
  readonly poolerDense: Linear | null;
  readonly lmHead: BertLMHead | null;

  constructor(config: Partial<BertConfig> = {}) {
    super();
    const c = (this.config = bertConfig(config));
    const H = c.hidden, dtype = c.dtype, std = c.initializerRange;
    const built = withSeed(c.seed, () => {
      const emb = (n: number) => new Embedding(n, H, { std, dtype });
      const word = emb(c.vocabSize), pos = emb(c.maxPositions), type = c.typeVocabSize > 0 ? emb(c.typeVocabSize) : null;
      if (c.padTokenId !== null) constant_(slice(word.weight.detach(), 0, c.padTokenId, c.padTokenId + 1), 0);
      const ln = new LayerNorm(H, { eps: c.lnEps, dtype });
      const blocks = Array.from({ length: c.layers }, (_, i) => new TransformerBlock({
        width: H, heads: c.heads, mlpWidth: c.intermediate, activation: c.activation, norm: 'post',
        crossAttention: c.crossAttentionEvery > 0 && i % c.crossAttentionEvery === 0, crossWidth: c.crossWidth ?? H,
        dropout: c.hiddenDropout, attnDropout: c.attnDropout, lnEps: c.lnEps, dtype,
      }));
      const pooler = c.pooler ? new Linear(H, H, { dtype }) : null;
      const linears: Linear[] = [];
      for (const b of blocks) for (const [, m] of b.namedModules()) if (m instanceof Linear) linears.push(m);
      if (pooler) linears.push(pooler);
      const head = c.lmHead ? new BertLMHead(c, word) : null;
      if (head) linears.push(head.dense);
      for (const l of linears) {
        normal_(l.weight, std);
        if (l.bias) constant_(l.bias, 0);
      }
      return { word, pos, type, ln, blocks, pooler, head };
    });
    this.wordEmbeddings = this.module('word_embeddings', built.word);
    this.positionEmbeddings = this.module('position_embeddings', built.pos);
    this.tokenTypeEmbeddings = built.type && this.module('token_type_embeddings', built.type);
    this.embLayerNorm = this.module('LayerNorm', built.ln);
    this.embDropout = this.module('dropout', new Dropout(c.hiddenDropout));
    this.encoder = this.module('encoder', new TransformerStack(built.blocks));
    this.poolerDense = built.pooler && this.module('pooler', built.pooler);
    this.lmHead = built.head && this.module('cls', built.head);
  }

  /** Which layers have a cross-attention sub-layer. */
  get crossAttentionLayers(): number[] {
    return this.encoder.blocks.flatMap((b, i) => (b.crossAttn ? [i] : []));
  }

  /** A KV cache for `batch` rows and up to `maxLength` positions (at most maxPositions). */
  newCache(batch: number, maxLength: number): KVCache {
    const c = this.config;
    if (typeof maxLength !== 'number' || !Number.isInteger(maxLength) || maxLength < 1 || maxLength > c.maxPositions)
      throw new RangeError(`BertModel.newCache: expected an integer in [1, ${c.maxPositions}] (maxPositions) for maxLength but received ${describe(maxLength)}`);
    return new KVCache({ batch, layers: c.layers, heads: c.heads, headDim: c.hidden / c.heads, maxLength, dtype: c.dtype });
  }

  /**
   * One incremental decoder step (causal, no gradients; needs the LM head): ids int32 [B, T] at
   * positions [cache.length, cache.length + T) over the cache, which grows by T; options.context
   * (image tokens [B, Le, crossWidth], HF's encoder_hidden_states) and contextMask are read by the
   * first step that gets them. Returns the LM head's logits [B, V] of the last new position,
   * equal to forward(all ids, { mode: 'decoder' }) then lmHead.logits (in eval mode).
   * options.attentionMask [B, T] marks padding ids (never attended to; positions count real ids only).
   */
  step(ids: Tensor, cache: KVCache, options: DecoderStepOptions = {}): Tensor {
    const op = 'BertModel.step', c = this.config;
    if (options === null || typeof options !== 'object')
      throw new TypeError(`${op}: expected an options object for options but received ${describe(options)}`);
    if (this.lmHead === null) throw new TypeError(`${op}: expected a model with an LM head (config lmHead: true) but received one without`);
    if (options.prefix != null) throw new TypeError(`${op}: expected no options.prefix (BertModel takes no soft prompt) but received ${describe(options.prefix)}`);
    checkIds(op, 'ids', ids, c.vocabSize, c.maxPositions);
    const [B, T] = ids.shape as [number, number];
    if (T === 0) throw new RangeError(`${op}: expected a tensor [batch, length >= 1] for ids but received shape [${ids.shape.join(', ')}]`);
    checkCache(op, cache, this.encoder.blocks, { batch: B, steps: T, dtype: c.dtype });
    if (options.context != null && !cache.hasCross) setCacheContext(op, cache, this.encoder.blocks, options.context, options.contextMask ?? null);
    return noGrad(() => {
      const pos = cache.length;
      const positions = cache.stepPositions(op, options.attentionMask, 0, T);
      let x = add(this.wordEmbeddings.forward(ids),
        positions ? this.positionEmbeddings.forward(positions) : slice(this.positionEmbeddings.weight, 0, pos, pos + T));
      if (this.tokenTypeEmbeddings) x = add(x, select(this.tokenTypeEmbeddings.weight, 0, 0));
      x = this.embDropout.forward(this.embLayerNorm.forward(x));
      this.encoder.blocks.forEach((b, i) => { x = transformerBlockStep(b, x, cache, i); });
      cache.advance(T);
      const head = this.lmHead!;  // logits() with the bias fused into the projection's GEMM
      return linear(head.forward(select(x, 1, T - 1)), head.weight, head.bias);
    });
  }

  forward(ids: Tensor, options: BertCallOptions = {}): BertOutput {
    const op = 'BertModel', c = this.config;
    if (options === null || typeof options !== 'object')
      throw new TypeError(`${op}: expected an options object for options but received ${describe(options)}`);
    const offset = options.positionOffset ?? 0;
    if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0)
      throw new RangeError(`${op}: expected an integer >= 0 for options.positionOffset but received ${describe(offset)}`);
    checkIds(op, 'ids', ids, c.vocabSize, c.maxPositions - offset);
    const [B, L] = ids.shape as [number, number];
    if (L === 0) throw new RangeError(`${op}: expected a tensor [batch, length >= 1] for ids but received shape [${ids.shape.join(', ')}]`);
    const mode = options.mode ?? 'encoder';
    oneOf('encoder', 'decoder')(op, 'options.mode', mode);

    // embeddings: word + position (+ token type) -> LayerNorm -> dropout
    let x = add(this.wordEmbeddings.forward(ids), slice(this.positionEmbeddings.weight, 0, offset, offset + L));
    if (this.tokenTypeEmbeddings) {
      const tt = options.tokenTypeIds ?? null;
      if (tt === null) x = add(x, select(this.tokenTypeEmbeddings.weight, 0, 0));
      else {
        if (!(tt instanceof Tensor) || tt.ndim !== 2 || tt.shape[0] !== B || tt.shape[1] !== L)
          throw new RangeError(`${op}: expected an int32 tensor [${B}, ${L}] for options.tokenTypeIds but received ${tt instanceof Tensor ? `shape [${tt.shape.join(', ')}]` : describe(tt)}`);
        checkIds(op, 'options.tokenTypeIds', tt, c.typeVocabSize, L);
        x = add(x, this.tokenTypeEmbeddings.forward(tt));
      }
    }
    x = this.embDropout.forward(this.embLayerNorm.forward(x));

    const am = options.attentionMask ?? null;
    if (am !== null && options.lengths != null)
      throw new TypeError(`${op}: expected either options.attentionMask or options.lengths but received both`);
    const mask = am === null ? null : checkMask(op, 'options.attentionMask', am, B, L);
    const ctx = options.encoderHiddenStates ?? null;
    let contextMask: Tensor | null = null;
    if (ctx !== null) {
      const kw = c.crossWidth ?? c.hidden;
      if (!(ctx instanceof Tensor) || ctx.ndim !== 3 || ctx.shape[0] !== B || ctx.shape[2] !== kw)
        throw new RangeError(`${op}: expected a tensor [${B}, length, ${kw}] for options.encoderHiddenStates but received ${ctx instanceof Tensor ? `shape [${ctx.shape.join(', ')}]` : describe(ctx)}`);
      if (this.crossAttentionLayers.length === 0)
        throw new TypeError(`${op}: expected no options.encoderHiddenStates (the model has no cross-attention layers: crossAttentionEvery is 0) but received ${describe(ctx)}`);
      const em = options.encoderAttentionMask ?? null;
      if (em !== null) contextMask = checkMask(op, 'options.encoderAttentionMask', em, B, ctx.shape[1]!);
    }
    const hidden = this.encoder.forward(x, {
      causal: mode === 'decoder', mask, keyPadding: options.lengths ?? null, context: ctx, contextMask,
    });
    const cls = select(hidden, 1, 0);
    return { hidden, cls, pooled: this.poolerDense ? tanh(this.poolerDense.forward(cls)) : null };
  }
}
