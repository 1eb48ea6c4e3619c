// Vision transformer as open_clip's VisionTransformer (CLIP's image tower): patch embedding
// by a convolution with stride = patch (no bias), a class token, learned positions,
// ln_pre, pre-LN blocks, ln_post over every token, and a projection of the class token
// to the joint embedding. Returns the pooled embedding and all tokens (for BLIP's
// cross-attention and BLIP-2's Q-Former).
//
// Init as open_clip (which keeps OpenAI CLIP's): class_embedding, positional_embedding and
// proj ~ N(0, width^-1) (scale = width^-0.5 times randn); conv1 and the blocks keep
// PyTorch's defaults (open_clip's VisionTransformer.init_parameters leaves them as built:
// kaiming-uniform conv/linear, xavier-uniform attention in-projections, zero attention biases).
import { Tensor } from '../graph/tensor.js';
import { describe, randn } from '../graph/creation.js';
import { Module } from '../graph/module.js';
import { LayerNorm, type ActivationKind } from '../graph/nn.js';
import { Conv2d } from '../graph/conv_layers.js';
import { TransformerBlock, TransformerStack } from '../graph/transformer.js';
import { add } from '../graph/ops/elementwise.js';
import { matmul } from '../graph/ops/matmul.js';
import { concat, expand, permute, reshape, select } from '../graph/ops/views.js';
import type { DType } from '../native.js';
import { activationField, dtypeField, ensure, int, nullable, num, parseConfig, probField, seedField, type Spec } from './config.js';
import { withSeed } from './init.js';

export interface ViTConfig {
  /** Square input side in pixels (default 32). */
  imageSize: number;
  /** Patch side; imageSize must be a multiple (default 4). */
  patchSize: number;
  /** Input channels (default 3). */
  channels: number;
  /** Token features (default 64). */
  width: number;
  /** Number of blocks (default 2). */
  layers: number;
  /** Attention heads; width must be a multiple (default 4). */
  heads: number;
  /** MLP hidden = floor(width * mlpRatio) (default 4). */
  mlpRatio: number;
  /** Joint embedding size of the projection; null: no projection, pooled is the class token (default 32). */
  embedDim: number | null;
  /** MLP activation (default 'gelu'; OpenAI CLIP weights: 'quick_gelu'). */
  activation: ActivationKind;
  lnEps: number;
  /** Residual dropout in the blocks (default 0, as CLIP). */
  dropout: number;
  /** Attention-probability dropout (default 0). */
  attnDropout: number;
  dtype: DType;
  /** Seed of the initialisation; null draws from the global generator (default null). */
  seed: number | null;
}

export const VIT_DEFAULTS: ViTConfig = {
  imageSize: 32, patchSize: 4, channels: 3, width: 64, layers: 2, heads: 4, mlpRatio: 4, embedDim: 32,
  activation: 'gelu', lnEps: 1e-5, dropout: 0, attnDropout: 0, dtype: 'float32', seed: null,
};

/** open_clip's ViT-B/16 and ViT-B/32 (partial configs to merge over the defaults). */
export const VIT_PRESETS = {
  'ViT-B/16': { imageSize: 224, patchSize: 16, width: 768, layers: 12, heads: 12, embedDim: 512 },
  'ViT-B/32': { imageSize: 224, patchSize: 32, width: 768, layers: 12, heads: 12, embedDim: 512 },
} as const satisfies Record<string, Partial<ViTConfig>>;

const SPEC: Spec<ViTConfig> = {
  imageSize: int(1), patchSize: int(1), channels: int(1), width: int(1), layers: int(0), heads: int(1),
  mlpRatio: num(0, Infinity, { minOpen: true }), embedDim: nullable(int(1)), activation: activationField,
  lnEps: num(0, Infinity, { minOpen: true }), dropout: probField, attnDropout: probField, dtype: dtypeField, seed: seedField,
};

/** Validates a ViT config (merged over VIT_DEFAULTS). */
export function vitConfig(config: Partial<ViTConfig> = {}): Readonly<ViTConfig> {
  const c = parseConfig('ViTConfig', SPEC, VIT_DEFAULTS, config);
  ensure('ViTConfig', c.imageSize % c.patchSize === 0, 'imageSize', `a multiple of patchSize (${c.patchSize})`, c.imageSize);
  ensure('ViTConfig', c.width % c.heads === 0, 'width', `a multiple of heads (${c.heads})`, c.width);
  ensure('ViTConfig', Math.floor(c.width * c.mlpRatio) >= 1, 'mlpRatio', `a ratio giving an MLP of at least 1 feature (width ${c.width})`, c.mlpRatio);
  return c;
}

export interface ViTOutput {
  /** The projected class token [B, embedDim] (or [B, width] without a projection). */
  pooled: Tensor;
  /** Every token after ln_post, class token first: [B, 1 + patches, width]. */
  tokens: Tensor;
}

/** CLIP's image tower. forward(pixels [B, channels, imageSize, imageSize]) -> { pooled, tokens }. */
export class VisionTransformer extends Module {
  readonly config: Readonly<ViTConfig>;
  readonly gridSize: number;
  readonly conv1: Conv2d;
  readonly classEmbedding: Tensor;
  readonly positionalEmbedding: Tensor;
  readonly lnPre: LayerNorm;
  readonly transformer: TransformerStack;
  readonly lnPost: LayerNorm;
  readonly proj: Tensor | null;

  constructor(config: Partial<ViTConfig> = {}) {
    super();
    const c = (this.config = vitConfig(config));
    this.gridSize = c.imageSize / c.patchSize;
    const W = c.width, dtype = c.dtype, scale = W ** -0.5;
    const built = withSeed(c.seed, () => {
      const conv1 = new Conv2d(c.channels, W, c.patchSize, { stride: c.patchSize, bias: false, dtype });
      const cls = randn([W], { dtype, std: scale });
      const pos = randn([this.gridSize ** 2 + 1, W], { dtype, std: scale });
      const lnPre = new LayerNorm(W, { eps: c.lnEps, dtype });
      const blocks = Array.from({ length: c.layers }, () => new TransformerBlock({
        width: W, heads: c.heads, mlpWidth: Math.floor(W * c.mlpRatio), activation: c.activation, norm: 'pre',
        dropout: c.dropout, attnDropout: c.attnDropout, lnEps: c.lnEps, dtype,
      }));
      const lnPost = new LayerNorm(W, { eps: c.lnEps, dtype });
      const proj = c.embedDim === null ? null : randn([W, c.embedDim], { dtype, std: scale });
      return { conv1, cls, pos, lnPre, blocks, lnPost, proj };
    });
    this.conv1 = this.module('conv1', built.conv1);
    this.classEmbedding = this.param('class_embedding', built.cls);
    this.positionalEmbedding = this.param('positional_embedding', built.pos);
    this.lnPre = this.module('ln_pre', built.lnPre);
    this.transformer = this.module('transformer', new TransformerStack(built.blocks));
    this.lnPost = this.module('ln_post', built.lnPost);
    this.proj = built.proj && this.param('proj', built.proj);
  }

  /** Features of `pooled`. */
  get outputDim(): number {
    return this.config.embedDim ?? this.config.width;
  }

  forward(pixels: Tensor): ViTOutput {
    const c = this.config;
    if (!(pixels instanceof Tensor) || pixels.ndim !== 4 || pixels.shape[1] !== c.channels || pixels.shape[2] !== c.imageSize || pixels.shape[3] !== c.imageSize)
      throw new RangeError(`VisionTransformer: expected a tensor [batch, ${c.channels}, ${c.imageSize}, ${c.imageSize}] for pixels but received ${pixels instanceof Tensor ? `shape [${pixels.shape.join(', ')}]` : describe(pixels)}`);
    if (pixels.dtype !== c.dtype)
      throw new TypeError(`VisionTransformer: expected a ${c.dtype} tensor (the tower's dtype) for pixels but received a ${pixels.dtype} tensor`);
    const B = pixels.shape[0]!, W = c.width, P = this.gridSize ** 2;
    const patches = permute(reshape(this.conv1.forward(pixels), [B, W, P]), [0, 2, 1]);        // [B, P, W]
    const cls = expand(reshape(this.classEmbedding, [1, 1, W]), [B, 1, W]);
    let x = add(concat([cls, patches], 1), this.positionalEmbedding);                          // [B, 1+P, W]
    x = this.lnPre.forward(x);
    x = this.transformer.forward(x);
    const tokens = this.lnPost.forward(x);
    const first = select(tokens, 1, 0);                                                       // [B, W]
    return { pooled: this.proj ? matmul(first, this.proj) : first, tokens };
  }
}
