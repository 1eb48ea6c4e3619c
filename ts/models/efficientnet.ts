// EfficientNet-style CNN (ALIGN's image tower), as the EfficientNet paper (Tan & Le 2019)
// and torchvision's efficientnet.py: stem 3x3 stride-2 conv + BN + SiLU, MBConv stages
// (expand ratio, 3x3 or 5x5 depthwise, stride, squeeze-excite 0.25 of the block input),
// head 1x1 conv + BN + SiLU, global average pool, and an optional linear projection.
// Widths scale by round_filters (multiple of 8, never 10% below the scaled width) and
// depths by round_repeats (ceil(depth * repeats)); drop path (stochastic depth) grows
// linearly with the block index, as torchvision.
//
// Init as torchvision's EfficientNet: conv weights kaiming_normal(fan_out), conv biases
// zero, BN ones/zeros; the projection (a Linear) ~ U(-1/sqrt(out), 1/sqrt(out)), bias zero.
// BN eps 1e-3 and momentum 0.01 as the TF reference and HF's ALIGN vision config
// (batch_norm_eps 1e-3, TF momentum 0.99).
import { Tensor } from '../graph/tensor.js';
import { describe } from '../graph/creation.js';
import { Module } from '../graph/module.js';
import { Linear } from '../graph/nn.js';
import { Conv2d, ConvBnAct, MBConv } from '../graph/conv_layers.js';
import { adaptiveAvgPool2d } from '../graph/ops/pool.js';
import { reshape } from '../graph/ops/views.js';
import type { DType } from '../native.js';
import { arrayOf, dtypeField, int, nullable, num, object, oneOf, parseConfig, probField, seedField, type Spec } from './config.js';
import { constant_, kaimingNormalFanOut_, uniform_, withSeed } from './init.js';

export interface EfficientNetStage {
  /** Expanded channels = input * expandRatio (1: no expansion conv). */
  expandRatio: number;
  /** Depthwise kernel: 3 or 5. */
  kernelSize: number;
  /** Stride of the stage's first block: 1 or 2. */
  stride: number;
  /** Output channels before the width multiplier. */
  channels: number;
  /** Blocks before the depth multiplier. */
  repeats: number;
}

export interface EfficientNetConfig {
  inChannels: number;
  /** Stem output channels before the width multiplier (default 16; B0: 32). */
  stemChannels: number;
  stages: readonly EfficientNetStage[];
  /** Head 1x1 conv channels before the width multiplier (default 128; B0: 1280). */
  headChannels: number;
  widthMultiplier: number;
  depthMultiplier: number;
  /** Channel counts are rounded to multiples of this (default 8). */
  divisor: number;
  /** Squeeze channels = max(1, floor(block input * seRatio)) (default 0.25). */
  seRatio: number;
  /** Final drop-path probability; block i of n gets dropPathRate * i / n (default 0.2, as torchvision). */
  dropPathRate: number;
  /** Linear projection of the pooled features to this size; null: none (default null). */
  embedDim: number | null;
  bnEps: number;
  bnMomentum: number;
  dtype: DType;
  seed: number | null;
}

/** EfficientNet-B0's stages (the paper's Table 1); the multipliers give B1..B7. */
export const EFFICIENTNET_B0_STAGES: readonly EfficientNetStage[] = [
  { expandRatio: 1, kernelSize: 3, stride: 1, channels: 16, repeats: 1 },
  { expandRatio: 6, kernelSize: 3, stride: 2, channels: 24, repeats: 2 },
  { expandRatio: 6, kernelSize: 5, stride: 2, channels: 40, repeats: 2 },
  { expandRatio: 6, kernelSize: 3, stride: 2, channels: 80, repeats: 3 },
  { expandRatio: 6, kernelSize: 5, stride: 1, channels: 112, repeats: 3 },
  { expandRatio: 6, kernelSize: 5, stride: 2, channels: 192, repeats: 4 },
  { expandRatio: 6, kernelSize: 3, stride: 1, channels: 320, repeats: 1 },
];

/** A tiny network for 32x32 inputs: 32 -> 16 (stem) -> 16 -> 8 -> 4 -> 2. */
export const EFFICIENTNET_TINY_STAGES: readonly EfficientNetStage[] = [
  { expandRatio: 1, kernelSize: 3, stride: 1, channels: 8, repeats: 1 },
  { expandRatio: 4, kernelSize: 3, stride: 2, channels: 16, repeats: 2 },
  { expandRatio: 4, kernelSize: 5, stride: 2, channels: 24, repeats: 1 },
  { expandRatio: 4, kernelSize: 3, stride: 2, channels: 32, repeats: 1 },
];

export const EFFICIENTNET_DEFAULTS: EfficientNetConfig = {
  inChannels: 3, stemChannels: 16, stages: EFFICIENTNET_TINY_STAGES, headChannels: 128,
  widthMultiplier: 1, depthMultiplier: 1, divisor: 8, seRatio: 0.25, dropPathRate: 0.2, embedDim: null,
  bnEps: 1e-3, bnMomentum: 0.01, dtype: 'float32', seed: null,
};

/** (widthMultiplier, depthMultiplier) of B0..B7 (the paper; resolutions 224..600). */
export const EFFICIENTNET_PRESETS = {
  b0: { stemChannels: 32, headChannels: 1280, stages: EFFICIENTNET_B0_STAGES, widthMultiplier: 1.0, depthMultiplier: 1.0 },
  b3: { stemChannels: 32, headChannels: 1280, stages: EFFICIENTNET_B0_STAGES, widthMultiplier: 1.2, depthMultiplier: 1.4 },
  b7: { stemChannels: 32, headChannels: 1280, stages: EFFICIENTNET_B0_STAGES, widthMultiplier: 2.0, depthMultiplier: 3.1 },
} as const;

const STAGE_SPEC: Spec<EfficientNetStage> = {
  expandRatio: int(1), kernelSize: oneOf(3, 5), stride: oneOf(1, 2), channels: int(1), repeats: int(1),
};

const SPEC: Spec<EfficientNetConfig> = {
  inChannels: int(1), stemChannels: int(1), stages: arrayOf(object(STAGE_SPEC), 1), headChannels: int(1),
  widthMultiplier: num(0, Infinity, { minOpen: true }), depthMultiplier: num(0, Infinity, { minOpen: true }),
  divisor: int(1), seRatio: num(0, 1), dropPathRate: probField, embedDim: nullable(int(1)),
  bnEps: num(0, Infinity, { minOpen: true }), bnMomentum: num(0, 1), dtype: dtypeField, seed: seedField,
};

export function efficientNetConfig(config: Partial<EfficientNetConfig> = {}): Readonly<EfficientNetConfig> {
  return parseConfig('EfficientNetConfig', SPEC, EFFICIENTNET_DEFAULTS, config);
}

/**
 * The paper's round_filters (torchvision's _make_divisible): channels * width rounded to
 * the nearest multiple of divisor, at least divisor, and bumped up one step when rounding
 * lost more than 10%.
 */
export function roundFilters(channels: number, widthMultiplier: number, divisor = 8): number {
  const v = channels * widthMultiplier;
  let n = Math.max(divisor, Math.floor((v + divisor / 2) / divisor) * divisor);
  if (n < 0.9 * v) n += divisor;
  return n;
}

/** The paper's round_repeats: ceil(depthMultiplier * repeats). */
export function roundRepeats(repeats: number, depthMultiplier: number): number {
  return Math.ceil(depthMultiplier * repeats);
}

export interface EfficientNetOutput {
  /** Globally average-pooled head features [B, headChannels'] (projected to embedDim when set). */
  pooled: Tensor;
  /** The head's feature map [B, headChannels', h, w]. */
  features: Tensor;
}

/** ALIGN's image tower. forward(pixels [B, inChannels, H, W]) -> { pooled, features }. */
export class EfficientNet extends Module {
  readonly config: Readonly<EfficientNetConfig>;
  readonly stem: ConvBnAct;
  readonly blocks: MBConv[];
  readonly head: ConvBnAct;
  readonly proj: Linear | null;
  /** Channels of the head (after rounding). */
  readonly featureDim: number;

  constructor(config: Partial<EfficientNetConfig> = {}) {
    super();
    const c = (this.config = efficientNetConfig(config));
    const rf = (ch: number) => roundFilters(ch, c.widthMultiplier, c.divisor);
    const bn = { bnEps: c.bnEps, bnMomentum: c.bnMomentum, dtype: c.dtype };
    const stemOut = rf(c.stemChannels);
    this.featureDim = rf(c.headChannels);
    const built = withSeed(c.seed, () => {
      const stem = new ConvBnAct(c.inChannels, stemOut, 3, { ...bn, stride: 2, activation: 'silu' });
      const plan: { in: number; out: number; stage: EfficientNetStage; stride: number }[] = [];
      let cin = stemOut;
      for (const s of c.stages) {
        const out = rf(s.channels);
        for (let r = 0; r < roundRepeats(s.repeats, c.depthMultiplier); r++) {
          plan.push({ in: cin, out, stage: s, stride: r === 0 ? s.stride : 1 });
          cin = out;
        }
      }
      const blocks = plan.map((p, i) => new MBConv(p.in, p.out, {
        ...bn, expandRatio: p.stage.expandRatio, kernelSize: p.stage.kernelSize, stride: p.stride, seRatio: c.seRatio,
        stochasticDepth: (c.dropPathRate * i) / plan.length,
      }));
      const head = new ConvBnAct(cin, this.featureDim, 1, { ...bn, activation: 'silu' });
      const proj = c.embedDim === null ? null : new Linear(this.featureDim, c.embedDim, { dtype: c.dtype });
      // torchvision's init: every conv kaiming_normal(fan_out) with zero bias; BN already ones/zeros
      for (const m of [stem, ...blocks, head])
        for (const [, sub] of m.namedModules())
          if (sub instanceof Conv2d) {
            kaimingNormalFanOut_(sub.weight);
            if (sub.bias) constant_(sub.bias, 0);
          }
      if (proj) {
        const r = 1 / Math.sqrt(proj.outFeatures);
        uniform_(proj.weight, -r, r);
        constant_(proj.bias!, 0);
      }
      return { stem, blocks, head, proj };
    });
    this.stem = this.module('stem', built.stem);
    this.blocks = built.blocks;
    const list = this.module('blocks', new Module());
    built.blocks.forEach((b, i) => list.module(String(i), b));
    this.head = this.module('head', built.head);
    this.proj = built.proj && this.module('proj', built.proj);
  }

  /** Features of `pooled`. */
  get outputDim(): number {
    return this.config.embedDim ?? this.featureDim;
  }

  forward(pixels: Tensor): EfficientNetOutput {
    const c = this.config;
    if (!(pixels instanceof Tensor) || pixels.ndim !== 4 || pixels.shape[1] !== c.inChannels)
      throw new RangeError(`EfficientNet: expected a tensor [batch, ${c.inChannels}, height, width] for pixels but received ${pixels instanceof Tensor ? `shape [${pixels.shape.join(', ')}]` : describe(pixels)}`);
    if (pixels.dtype !== c.dtype)
      throw new TypeError(`EfficientNet: expected a ${c.dtype} tensor (the tower's dtype) for pixels but received a ${pixels.dtype} tensor`);
    let x = this.stem.forward(pixels);
    for (const b of this.blocks) x = b.forward(x);
    const features = this.head.forward(x);
    const pooled = reshape(adaptiveAvgPool2d(features, 1), [features.shape[0]!, this.featureDim]);
    return { pooled: this.proj ? this.proj.forward(pooled) : pooled, features };
  }
}
