// CLIP's training graph (Radford et al. 2021, arXiv:2103.00020; as open_clip's CLIP): a ViT
// image tower and a causal text transformer, each projected to the joint embedding, features
// L2-normalised, and the symmetric InfoNCE loss with a learnable log-scale temperature
// (logits = exp(logit_scale) * cosine; init ln(1/0.07), clamped to at most ln 100 after each
// optimizer step). The loss calls the fused `infonce` family with `normalize: true`, so the
// normalisation and the B x B logits live inside the kernel (ts/objectives/itc.ts).
//
// Configuration is data: one JSON object { embedDim, vision, text, ... } merged over
// CLIP_DEFAULTS (vision/text are ViTConfig/TextTransformerConfig partials; their embedDim
// comes from the top level). CLIP_PRESETS name a few sizes.
import { Tensor } from '../graph/tensor.js';
import { describe, full } from '../graph/creation.js';
import { Module } from '../graph/module.js';
import { l2Normalize } from '../graph/ops/normalize.js';
import { infoNCE, clampLogitScale, type InfoNCEResult } from '../objectives/itc.js';
import type { DType } from '../native.js';
import { bool, dtypeField, ensure, int, num, parseConfig, seedField, type Spec, partial, nested } from './config.js';
import { withSeed } from './init.js';
import { VisionTransformer, vitConfig, type ViTConfig } from './vit.js';
import { TextTransformer, textTransformerConfig, type TextTransformerConfig } from './text_transformer.js';

export interface ClipConfig {
  /** Joint embedding size (both projections). */
  embedDim: number;
  /** The image tower (ViTConfig without embedDim/dtype/seed, which come from here). */
  vision: Partial<ViTConfig>;
  /** The text tower (TextTransformerConfig without embedDim/dtype/seed). */
  text: Partial<TextTransformerConfig>;
  /** Initial log-scale (open_clip: ln(1/0.07)). */
  initLogitScale: number;
  /** Clamp of the log-scale after each step (open_clip: ln 100). */
  maxLogitScale: number;
  /** Learn the log-scale (default true); false keeps it at initLogitScale. */
  learnLogitScale: boolean;
  dtype: DType;
  /** Seed of the initialisation (null: the global generator). */
  seed: number | null;
}

/**
 * A small CLIP for the 32x32 emoji: width 128, ViT patch 4, 4 image and 3 text layers, 24 tokens.
 * QuickGELU as OpenAI's CLIP (x * sigmoid(1.702 x)): about half the cost of the erf GELU here.
 */
export const CLIP_DEFAULTS: ClipConfig = {
  embedDim: 128,
  vision: { imageSize: 32, patchSize: 4, width: 128, layers: 4, heads: 4, mlpRatio: 4, activation: 'quick_gelu' },
  text: { vocabSize: 50259, contextLength: 24, width: 128, layers: 3, heads: 4, mlpRatio: 4, activation: 'quick_gelu' },
  initLogitScale: Math.log(1 / 0.07),
  maxLogitScale: Math.log(100),
  learnLogitScale: true,
  dtype: 'float32',
  seed: null,
};

/** Named sizes (partials over CLIP_DEFAULTS). 'ViT-B/32' is open_clip's ViT-B-32 (224 px, 77 tokens). */
export const CLIP_PRESETS = {
  'clip-tiny': {},
  'clip-small': {
    embedDim: 256,
    vision: { imageSize: 32, patchSize: 4, width: 256, layers: 6, heads: 8 },
    text: { vocabSize: 50259, contextLength: 24, width: 256, layers: 4, heads: 8 },
  },
  'ViT-B/32': {
    embedDim: 512,
    vision: { imageSize: 224, patchSize: 32, width: 768, layers: 12, heads: 12 },
    text: { vocabSize: 50259, contextLength: 77, width: 512, layers: 12, heads: 8 },
  },
} as const satisfies Record<string, Partial<ClipConfig>>;

// vision/text are checked by their towers' own validation (unknown keys included) in clipConfig.

const SPEC: Spec<ClipConfig> = {
  embedDim: int(1), vision: partial, text: partial, initLogitScale: num(-20, 20), maxLogitScale: num(-20, 20),
  learnLogitScale: bool(), dtype: dtypeField, seed: seedField,
};


export interface ResolvedClipConfig extends Omit<ClipConfig, 'vision' | 'text'> {
  vision: Readonly<ViTConfig>;
  text: Readonly<TextTransformerConfig>;
}

/** Validates a CLIP config merged over CLIP_DEFAULTS (vision and text merged key by key). */
export function clipConfig(config: unknown = {}): Readonly<ResolvedClipConfig> {
  const op = 'CLIPConfig';
  const c = parseConfig(op, SPEC, CLIP_DEFAULTS, config);
  for (const [k, sub] of [['vision', c.vision], ['text', c.text]] as const)
    for (const bad of ['embedDim', 'dtype'])
      if (bad in sub) throw new TypeError(`${op}: expected ${bad} at the top level, not in ${k} (both towers share it) but received ${describe(sub[bad as keyof typeof sub])} for ${k}.${bad}`);
  const vision = nested(op, 'vision', () => vitConfig({ ...CLIP_DEFAULTS.vision, ...c.vision, embedDim: c.embedDim, dtype: c.dtype }));
  const text = nested(op, 'text', () => textTransformerConfig({ ...CLIP_DEFAULTS.text, ...c.text, embedDim: c.embedDim, dtype: c.dtype }));
  ensure(op, c.initLogitScale <= c.maxLogitScale, 'initLogitScale', `at most maxLogitScale (${c.maxLogitScale})`, c.initLogitScale);
  return Object.freeze({ ...c, vision, text });
}

export interface ClipBatch {
  /** [B, 3, imageSize, imageSize] normalised pixels. */
  images: Tensor;
  /** int32 [B, L <= contextLength] token ids. */
  texts: Tensor;
  /** End-of-text position per row (default: each row's largest id, CLIP's EOT). */
  eot?: Int32Array | readonly number[] | null;
}

/** CLIP: forward(images, texts) -> { image, text } joint-space features (not normalised). */
export class CLIP extends Module {
  readonly config: Readonly<ResolvedClipConfig>;
  readonly visual: VisionTransformer;
  readonly transformer: TextTransformer;
  /** The learnable log-scale (scalar), 'logit_scale' as open_clip. */
  readonly logitScale: Tensor;

  constructor(config: unknown = {}) {
    super();
    const c = (this.config = clipConfig(config));
    const built = withSeed(c.seed, () => ({
      visual: new VisionTransformer(c.vision),
      text: new TextTransformer(c.text),
    }));
    this.visual = this.module('visual', built.visual);
    this.transformer = this.module('text', built.text);
    this.logitScale = this.param('logit_scale', full([], c.initLogitScale, { dtype: c.dtype }));
    if (!c.learnLogitScale) this.logitScale.requiresGrad_(false);
  }

  get embedDim(): number {
    return this.config.embedDim;
  }

  /** Image features [B, embedDim]; L2-normalised when `normalize`. */
  encodeImage(images: Tensor, options: { normalize?: boolean } = {}): Tensor {
    const f = this.visual.forward(images).pooled;
    return options.normalize ? l2Normalize(f, -1) : f;
  }

  /** Text features [B, embedDim] pooled at the end-of-text token; L2-normalised when `normalize`. */
  encodeText(texts: Tensor, options: { eot?: Int32Array | readonly number[] | null; normalize?: boolean } = {}): Tensor {
    const eot = options.eot ?? null;
    const f = this.transformer.forward(texts, { eotPositions: eot === null ? null : Array.from(eot) }).pooled;
    return options.normalize ? l2Normalize(f, -1) : f;
  }

  forward(images: Tensor, texts: Tensor, options: { eot?: Int32Array | readonly number[] | null } = {}): { image: Tensor; text: Tensor } {
    return { image: this.encodeImage(images), text: this.encodeText(texts, options) };
  }

  /** The contrastive loss of already computed features (normalised inside the kernel). */
  contrastiveLoss(image: Tensor, text: Tensor): InfoNCEResult {
    return infoNCE(image, text, { logitScale: this.logitScale, normalize: true });
  }

  /** Symmetric InfoNCE of a batch: { loss, accI2T, accT2I }. */
  loss(batch: ClipBatch): InfoNCEResult {
    if (batch === null || typeof batch !== 'object') throw new TypeError(`CLIP.loss: expected a batch { images, texts, eot? } but received ${describe(batch)}`);
    const f = this.forward(batch.images, batch.texts, { eot: batch.eot ?? null });
    return this.contrastiveLoss(f.image, f.text);
  }

  /** The parameters the loss reads directly (their gradient is taken once under accumulation). */
  get sharedParameters(): Tensor[] {
    return this.logitScale.requiresGrad ? [this.logitScale] : [];
  }

  /** After each optimizer step: clamp the log-scale to maxLogitScale (open_clip). */
  afterStep(): void {
    clampLogitScale(this.logitScale, this.config.maxLogitScale);
  }

  /** exp(logit_scale), the current inverse temperature. */
  get scale(): number {
    return Math.exp(this.logitScale.item());
  }
}
