// ALIGN's training graph (Jia et al. 2021, arXiv:2102.05918; as HF's AlignModel): an
// EfficientNet image tower (globally pooled features) and a BERT encoder whose [CLS] hidden
// state goes through a linear projection to the image features' size; both L2-normalised and
// compared by the normalised softmax loss with a learnable divisor temperature
// (logits = cosine / t, t initialised to 1.0) and label smoothing 0.1, i.e. the fused
// `infonce` family with `normalize: true, temperature, labelSmoothing` (ts/objectives/itc.ts).
// After each optimizer step the temperature is kept positive (clamped to [minTemperature, maxTemperature]).
//
// Configuration is data: { embedDim, vision, text, ... } merged over ALIGN_DEFAULTS (vision and
// text are EfficientNetConfig / BertConfig partials). embedDim null (default) keeps the
// EfficientNet's pooled features as the image embedding (as ALIGN); a number adds a projection
// on the image side too.
import { Tensor } from '../graph/tensor.js';
import { describe, full } from '../graph/creation.js';
import { Module } from '../graph/module.js';
import { Linear } from '../graph/nn.js';
import { l2Normalize } from '../graph/ops/normalize.js';
import { infoNCE, clampTemperature, type InfoNCEResult } from '../objectives/itc.js';
import type { DType } from '../native.js';
import { bool, dtypeField, ensure, int, nullable, num, parseConfig, seedField, type Spec, partial, nested } from './config.js';
import { withSeed } from './init.js';
import { EfficientNet, efficientNetConfig, EFFICIENTNET_B0_STAGES, type EfficientNetConfig } from './efficientnet.js';
import { BertModel, bertConfig, type BertConfig } from './bert.js';

export interface AlignConfig {
  /** Joint embedding size; null: the EfficientNet's pooled feature size (no image projection). */
  embedDim: number | null;
  /** The image tower (EfficientNetConfig partial without embedDim/dtype). */
  vision: Partial<EfficientNetConfig>;
  /** The text encoder (BertConfig partial without dtype; no pooler: [CLS] is projected directly). */
  text: Partial<BertConfig>;
  /** Initial temperature (ALIGN/HF: 1.0). */
  initTemperature: number;
  /** Learn the temperature (default true). */
  learnTemperature: boolean;
  /** Clamp range of the temperature after each step. */
  minTemperature: number;
  maxTemperature: number;
  /** Label smoothing of the normalised softmax loss (ALIGN: 0.1). */
  labelSmoothing: number;
  dtype: DType;
  seed: number | null;
}

/** A small ALIGN for 32x32 images: the tiny EfficientNet (128 features), a 3-layer BERT of width 128. */
export const ALIGN_DEFAULTS: AlignConfig = {
  embedDim: null,
  vision: {},
  text: { vocabSize: 30522, hidden: 128, layers: 3, heads: 4, intermediate: 512, maxPositions: 32, pooler: false },
  initTemperature: 1.0,
  learnTemperature: true,
  minTemperature: 0.001,
  maxTemperature: 100,
  labelSmoothing: 0.1,
  dtype: 'float32',
  seed: null,
};

/** Named sizes (partials over ALIGN_DEFAULTS). 'align-base' is ALIGN's EfficientNet-B7 + BERT-base (640-d). */
export const ALIGN_PRESETS = {
  'align-tiny': {},
  'align-small': {
    vision: { headChannels: 256, widthMultiplier: 1.5 },
    text: { vocabSize: 30522, hidden: 256, layers: 4, heads: 4, intermediate: 1024, maxPositions: 32, pooler: false },
  },
  'align-base': {
    embedDim: 640,
    vision: { stemChannels: 32, headChannels: 1280, widthMultiplier: 2.0, depthMultiplier: 3.1, stages: EFFICIENTNET_B0_STAGES },
    text: { vocabSize: 30522, hidden: 768, layers: 12, heads: 12, intermediate: 3072, maxPositions: 512, pooler: false },
  },
} as const satisfies Record<string, Partial<AlignConfig>>;


const SPEC: Spec<AlignConfig> = {
  embedDim: nullable(int(1)), vision: partial, text: partial, initTemperature: num(1e-4, 1e4), learnTemperature: bool(),
  minTemperature: num(1e-6, 1e4), maxTemperature: num(1e-6, 1e4), labelSmoothing: num(0, 1, { maxOpen: true }),
  dtype: dtypeField, seed: seedField,
};


export interface ResolvedAlignConfig extends Omit<AlignConfig, 'vision' | 'text'> {
  vision: Readonly<EfficientNetConfig>;
  text: Readonly<BertConfig>;
}

/** Validates an ALIGN config merged over ALIGN_DEFAULTS (vision and text merged key by key). */
export function alignConfig(config: unknown = {}): Readonly<ResolvedAlignConfig> {
  const op = 'ALIGNConfig';
  const c = parseConfig(op, SPEC, ALIGN_DEFAULTS, config);
  for (const [k, sub, keys] of [['vision', c.vision, ['embedDim', 'dtype']], ['text', c.text, ['dtype']]] as const)
    for (const bad of keys)
      if (bad in sub) throw new TypeError(`${op}: expected ${bad} at the top level, not in ${k} but received ${describe((sub as Record<string, unknown>)[bad])} for ${k}.${bad}`);
  const vision = nested(op, 'vision', () => efficientNetConfig({ ...ALIGN_DEFAULTS.vision, ...c.vision, embedDim: c.embedDim, dtype: c.dtype }));
  const text = nested(op, 'text', () => bertConfig({ ...ALIGN_DEFAULTS.text, ...c.text, lmHead: false, dtype: c.dtype }));
  ensure(op, text.crossAttentionEvery === 0, 'text.crossAttentionEvery', '0 (ALIGN\'s text encoder has no cross-attention)', text.crossAttentionEvery);
  ensure(op, c.minTemperature <= c.maxTemperature, 'minTemperature', `at most maxTemperature (${c.maxTemperature})`, c.minTemperature);
  ensure(op, c.initTemperature >= c.minTemperature && c.initTemperature <= c.maxTemperature, 'initTemperature',
    `a number in [minTemperature, maxTemperature] = [${c.minTemperature}, ${c.maxTemperature}]`, c.initTemperature);
  return Object.freeze({ ...c, vision, text });
}

export interface AlignBatch {
  images: Tensor;
  /** int32 [B, L] WordPiece ids ([CLS] first). */
  texts: Tensor;
  /** uint8 [B, L], 1 = a real token. */
  attentionMask?: Tensor | null;
}

/** ALIGN: forward(images, texts, { attentionMask }) -> { image, text } joint-space features (not normalised). */
export class ALIGN extends Module {
  readonly config: Readonly<ResolvedAlignConfig>;
  readonly visual: EfficientNet;
  readonly textModel: BertModel;
  readonly textProjection: Linear;
  /** The learnable divisor temperature (scalar). */
  readonly temperature: Tensor;

  constructor(config: unknown = {}) {
    super();
    const c = (this.config = alignConfig(config));
    const built = withSeed(c.seed, () => {
      const visual = new EfficientNet(c.vision);
      const text = new BertModel(c.text);
      const proj = new Linear(c.text.hidden, visual.outputDim, { dtype: c.dtype });
      return { visual, text, proj };
    });
    this.visual = this.module('vision_model', built.visual);
    this.textModel = this.module('text_model', built.text);
    this.textProjection = this.module('text_projection', built.proj);
    this.temperature = this.param('temperature', full([], c.initTemperature, { dtype: c.dtype }));
    if (!c.learnTemperature) this.temperature.requiresGrad_(false);
  }

  get embedDim(): number {
    return this.visual.outputDim;
  }

  encodeImage(images: Tensor, options: { normalize?: boolean } = {}): Tensor {
    const f = this.visual.forward(images).pooled;
    return options.normalize ? l2Normalize(f, -1) : f;
  }

  /** Projected [CLS] hidden state [B, embedDim]; `eot` is accepted (and ignored) for a common encoder interface. */
  encodeText(texts: Tensor, options: { attentionMask?: Tensor | null; eot?: unknown; normalize?: boolean } = {}): Tensor {
    const out = this.textModel.forward(texts, { attentionMask: options.attentionMask ?? null });
    const f = this.textProjection.forward(out.cls);
    return options.normalize ? l2Normalize(f, -1) : f;
  }

  forward(images: Tensor, texts: Tensor, options: { attentionMask?: Tensor | null } = {}): { image: Tensor; text: Tensor } {
    return { image: this.encodeImage(images), text: this.encodeText(texts, options) };
  }

  contrastiveLoss(image: Tensor, text: Tensor): InfoNCEResult {
    return infoNCE(image, text, { temperature: this.temperature, normalize: true, labelSmoothing: this.config.labelSmoothing });
  }

  loss(batch: AlignBatch): InfoNCEResult {
    if (batch === null || typeof batch !== 'object') throw new TypeError(`ALIGN.loss: expected a batch { images, texts, attentionMask? } but received ${describe(batch)}`);
    const f = this.forward(batch.images, batch.texts, { attentionMask: batch.attentionMask ?? null });
    return this.contrastiveLoss(f.image, f.text);
  }

  get sharedParameters(): Tensor[] {
    return this.temperature.requiresGrad ? [this.temperature] : [];
  }

  /** After each optimizer step: keep the temperature in [minTemperature, maxTemperature]. */
  afterStep(): void {
    clampTemperature(this.temperature, this.config.minTemperature, this.config.maxTemperature);
  }
}
