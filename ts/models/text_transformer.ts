// CLIP's text tower as open_clip's TextTransformer: token + learned position embeddings,
// causal pre-LN blocks, ln_final, pooling at the end-of-text token and a projection to the
// joint embedding. The end-of-text position is given (int32 [B] or numbers) or found as
// the position of the largest id in each row, as CLIP does (its EOT id is the largest).
//
// Init as open_clip's TextTransformer.init_parameters: token_embedding ~ N(0, 0.02^2),
// positional_embedding ~ N(0, 0.01^2); per block the q/k/v projections ~ N(0, width^-1),
// the attention output and MLP output projections ~ N(0, proj_std^2) with
// proj_std = width^-0.5 * (2 * layers)^-0.5, the MLP input projection ~ N(0, 1/(2 width));
// text_projection ~ N(0, width^-1). Attention biases are zero; MLP biases keep nn.Linear's default.
import { Tensor } from '../graph/tensor.js';
import { describe, randn, tensor } from '../graph/creation.js';
import { Module } from '../graph/module.js';
import { Embedding, LayerNorm, type ActivationKind } from '../graph/nn.js';
import { TransformerBlock, TransformerStack } from '../graph/transformer.js';
import { add } from '../graph/ops/elementwise.js';
import { matmul } from '../graph/ops/matmul.js';
import { indexSelect } from '../graph/ops/gather.js';
import { reshape, slice } from '../graph/ops/views.js';
import type { DType } from '../native.js';
import { activationField, dtypeField, ensure, int, nullable, num, parseConfig, probField, seedField, type Spec } from './config.js';
import { normal_, withSeed } from './init.js';

export interface TextTransformerConfig {
  /** Vocabulary size (default 256; CLIP: 49408). */
  vocabSize: number;
  /** Maximum sequence length (default 16; CLIP: 77). */
  contextLength: number;
  width: number;
  layers: number;
  heads: number;
  /** MLP hidden = floor(width * mlpRatio) (default 4). */
  mlpRatio: number;
  /** Joint embedding size of text_projection; null: no projection (default 32). */
  embedDim: number | null;
  activation: ActivationKind;
  lnEps: number;
  dropout: number;
  attnDropout: number;
  dtype: DType;
  seed: number | null;
}

export const TEXT_DEFAULTS: TextTransformerConfig = {
  vocabSize: 256, contextLength: 16, width: 64, layers: 2, heads: 4, mlpRatio: 4, embedDim: 32,
  activation: 'gelu', lnEps: 1e-5, dropout: 0, attnDropout: 0, dtype: 'float32', seed: null,
};

/** open_clip's text tower of ViT-B/16 and ViT-B/32. */
export const TEXT_PRESETS = {
  'CLIP-B': { vocabSize: 49408, contextLength: 77, width: 512, layers: 12, heads: 8, embedDim: 512 },
} as const satisfies Record<string, Partial<TextTransformerConfig>>;

const SPEC: Spec<TextTransformerConfig> = {
  vocabSize: int(1), contextLength: int(1), width: int(1), layers: int(0), heads: int(1),
  mlpRatio: num(0, Infinity, { minOpen: true }), embedDim: nullable(int(1)), activation: activationField,
  lnEps: num(0, Infinity, { minOpen: true }), dropout: probField, attnDropout: probField, dtype: dtypeField, seed: seedField,
};

export function textTransformerConfig(config: Partial<TextTransformerConfig> = {}): Readonly<TextTransformerConfig> {
  const c = parseConfig('TextTransformerConfig', SPEC, TEXT_DEFAULTS, config);
  ensure('TextTransformerConfig', c.width % c.heads === 0, 'width', `a multiple of heads (${c.heads})`, c.width);
  ensure('TextTransformerConfig', Math.floor(c.width * c.mlpRatio) >= 1, 'mlpRatio', `a ratio giving an MLP of at least 1 feature (width ${c.width})`, c.mlpRatio);
  return c;
}

export interface TextTransformerCallOptions {
  /** End-of-text position per sample (int32 [B] or numbers); default: the position of each row's largest id. */
  eotPositions?: Tensor | readonly number[] | null;
}

export interface TextTransformerOutput {
  /** The projected end-of-text token [B, embedDim] (or [B, width] without a projection). */
  pooled: Tensor;
  /** Every token after ln_final: [B, L, width]. */
  tokens: Tensor;
}

/** Checks int32 ids [B, L] with L <= maxLen and every id in [0, vocab); returns the ids' values. */
export function checkIds(op: string, name: string, ids: unknown, vocab: number, maxLen: number): Int32Array {
  if (!(ids instanceof Tensor)) throw new TypeError(`${op}: expected an int32 tensor [batch, length] for ${name} but received ${describe(ids)}`);
  if (ids.dtype !== 'int32') throw new TypeError(`${op}: expected an int32 tensor for ${name} but received a ${ids.dtype} tensor`);
  if (ids.ndim !== 2 || ids.shape[1]! > maxLen)
    throw new RangeError(`${op}: expected a tensor [batch, length <= ${maxLen}] for ${name} but received shape [${ids.shape.join(', ')}]`);
  const v = ids.toArray() as Int32Array;
  for (let i = 0; i < v.length; i++)
    if (v[i]! < 0 || v[i]! >= vocab)
      throw new RangeError(`${op}: expected ids in [0, ${vocab}) for ${name} but received ${v[i]} at [${Math.floor(i / ids.shape[1]!)}, ${i % ids.shape[1]!}]`);
  return v;
}

/** Rows x[b, pos[b]] of x [B, L, D] -> [B, D] (differentiable w.r.t. x). */
export function selectPositions(x: Tensor, pos: readonly number[]): Tensor {
  const [B, L, D] = x.shape as [number, number, number];
  const idx = tensor(Int32Array.from(pos, (p, b) => b * L + p), [B]);
  const out = indexSelect(reshape(x, [B * L, D]), 0, idx);
  return out;
}

/** CLIP's text tower. forward(ids int32 [B, L <= contextLength]) -> { pooled, tokens }. */
export class TextTransformer extends Module {
  readonly config: Readonly<TextTransformerConfig>;
  readonly tokenEmbedding: Embedding;
  readonly positionalEmbedding: Tensor;
  readonly transformer: TransformerStack;
  readonly lnFinal: LayerNorm;
  readonly textProjection: Tensor | null;

  constructor(config: Partial<TextTransformerConfig> = {}) {
    super();
    const c = (this.config = textTransformerConfig(config));
    const W = c.width, dtype = c.dtype;
    const built = withSeed(c.seed, () => {
      const tok = new Embedding(c.vocabSize, W, { std: 0.02, dtype });
      const pos = randn([c.contextLength, W], { dtype, std: 0.01 });
      const blocks = Array.from({ length: c.layers }, () => new TransformerBlock({
        width: W, heads: c.heads, mlpWidth: Math.floor(W * c.mlpRatio), activation: c.activation, norm: 'pre',
        dropout: c.dropout, attnDropout: c.attnDropout, lnEps: c.lnEps, dtype,
      }));
      const projStd = W ** -0.5 * (2 * Math.max(c.layers, 1)) ** -0.5, attnStd = W ** -0.5, fcStd = (2 * W) ** -0.5;
      for (const b of blocks) {
        for (const l of [b.attn.qProj, b.attn.kProj, b.attn.vProj]) normal_(l.weight, attnStd);
        normal_(b.attn.outProj.weight, projStd);
        normal_(b.mlp.fc1.weight, fcStd);
        normal_(b.mlp.fc2.weight, projStd);
      }
      const ln = new LayerNorm(W, { eps: c.lnEps, dtype });
      const proj = c.embedDim === null ? null : randn([W, c.embedDim], { dtype, std: attnStd });
      return { tok, pos, blocks, ln, proj };
    });
    this.tokenEmbedding = this.module('token_embedding', built.tok);
    this.positionalEmbedding = this.param('positional_embedding', built.pos);
    this.transformer = this.module('transformer', new TransformerStack(built.blocks));
    this.lnFinal = this.module('ln_final', built.ln);
    this.textProjection = built.proj && this.param('text_projection', built.proj);
  }

  get outputDim(): number {
    return this.config.embedDim ?? this.config.width;
  }

  forward(ids: Tensor, options: TextTransformerCallOptions = {}): TextTransformerOutput {
    const op = 'TextTransformer', c = this.config;
    const values = checkIds(op, 'ids', ids, c.vocabSize, c.contextLength);
    const [B, L] = ids.shape as [number, number];
    if (L === 0) throw new RangeError(`${op}: expected a tensor [batch, length >= 1] for ids but received shape [${ids.shape.join(', ')}]`);
    const pos = eotPositions(op, options?.eotPositions ?? null, values, B, L);
    let x = add(this.tokenEmbedding.forward(ids), slice(this.positionalEmbedding, 0, 0, L));  // [B, L, W]
    x = this.transformer.forward(x, { causal: true });
    const tokens = this.lnFinal.forward(x);
    const eot = selectPositions(tokens, pos);
    return { pooled: this.textProjection ? matmul(eot, this.textProjection) : eot, tokens };
  }
}

function eotPositions(op: string, given: Tensor | readonly number[] | null, ids: Int32Array, B: number, L: number): number[] {
  if (given === null) {  // argmax of each row (first occurrence), as CLIP's text.argmax(dim=-1)
    return Array.from({ length: B }, (_, b) => {
      let best = 0;
      for (let j = 1; j < L; j++) if (ids[b * L + j]! > ids[b * L + best]!) best = j;
      return best;
    });
  }
  let v: ArrayLike<number>;
  if (given instanceof Tensor) {
    if (given.dtype !== 'int32' || given.ndim !== 1)
      throw new TypeError(`${op}: expected an int32 tensor [${B}] or an array of integers for options.eotPositions but received ${given.dtype} shape [${given.shape.join(', ')}]`);
    v = given.toArray();
  } else if (Array.isArray(given)) {
    v = given;
  } else {
    throw new TypeError(`${op}: expected an int32 tensor [${B}] or an array of integers for options.eotPositions but received ${describe(given)}`);
  }
  if (v.length !== B) throw new RangeError(`${op}: expected ${B} positions (one per sample) for options.eotPositions but received ${v.length}`);
  return Array.from(v, (p, b) => {
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p >= L)
      throw new RangeError(`${op}: expected positions in [0, ${L}) for options.eotPositions but received ${describe(p)} at [${b}]`);
    return p;
  });
}
