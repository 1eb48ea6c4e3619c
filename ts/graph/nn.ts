// Basic layers as Modules, initialised as PyTorch's defaults from the seeded generator
// (so manualSeed(s) makes a model reproducible): Linear, Embedding, LayerNorm, Dropout,
// Activation, Sequential and a two-layer MLP. The math lives in ts/graph/ops/*.
import type { DType } from '../native.js';
import { Tensor } from './tensor.js';
import { describe, ones, rand, randn, zeros } from './creation.js';
import { Module } from './module.js';
import { linear, linearActivation } from './ops/matmul.js';
import { layerNorm } from './ops/layer_norm.js';
import { embedding } from './ops/gather.js';
import { dropout } from './ops/dropout.js';
import { add, gelu, quickGelu, relu, silu } from './ops/elementwise.js';

/** A module that maps one tensor to one tensor (what Sequential chains). */
export interface Layer extends Module {
  forward(x: Tensor): Tensor;
}

function checkSize(op: string, name: string, v: unknown, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
    throw new RangeError(`${op}: expected an integer >= ${min} for ${name} but received ${describe(v)}`);
  return v;
}

function checkDtype(op: string, d: unknown): DType {
  if (d !== 'float32' && d !== 'float64') throw new TypeError(`${op}: expected 'float32' or 'float64' for dtype but received ${describe(d)}`);
  return d;
}

export interface LinearOptions {
  bias?: boolean;     // default true
  dtype?: DType;      // default float32
}

/**
 * y = x W^T + b with W [out, in] (as nn.Linear). Init as nn.Linear: kaiming_uniform
 * with a = sqrt(5), i.e. W, b ~ U(-1/sqrt(in), 1/sqrt(in)).
 */
export class Linear extends Module implements Layer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(inFeatures: number, outFeatures: number, options: LinearOptions = {}) {
    super();
    this.inFeatures = checkSize('Linear', 'inFeatures', inFeatures);
    this.outFeatures = checkSize('Linear', 'outFeatures', outFeatures);
    const dtype = checkDtype('Linear', options.dtype ?? 'float32');
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = this.param('weight', rand([outFeatures, inFeatures], { dtype, low: -bound, high: bound }));
    this.bias = options.bias ?? true ? this.param('bias', rand([outFeatures], { dtype, low: -bound, high: bound })) : null;
  }

  /** x W^T + b; with `residual` (the output's shape), residual + x W^T + b in one pass. */
  forward(x: Tensor, residual?: Tensor | null): Tensor {
    return linear(x, this.weight, this.bias, residual);
  }

  protected override extraRepr(): string {
    return `in=${this.inFeatures}, out=${this.outFeatures}, bias=${this.bias !== null}`;
  }
}

export interface EmbeddingOptions {
  /** Std of the normal init: PyTorch's nn.Embedding default is 1 (CLIP uses 0.02). */
  std?: number;
  dtype?: DType;
}

/** A lookup table [num, dim]: forward(ids) gathers rows for int32 ids of any shape. */
export class Embedding extends Module implements Layer {
  readonly numEmbeddings: number;
  readonly dim: number;
  readonly weight: Tensor;

  constructor(numEmbeddings: number, dim: number, options: EmbeddingOptions = {}) {
    super();
    this.numEmbeddings = checkSize('Embedding', 'numEmbeddings', numEmbeddings);
    this.dim = checkSize('Embedding', 'dim', dim);
    const std = options.std ?? 1;
    if (typeof std !== 'number' || !Number.isFinite(std) || std < 0)
      throw new RangeError(`Embedding: expected a finite number >= 0 for std but received ${describe(std)}`);
    this.weight = this.param('weight', randn([numEmbeddings, dim], { dtype: checkDtype('Embedding', options.dtype ?? 'float32'), std }));
  }

  forward(ids: Tensor): Tensor {
    return embedding(this.weight, ids);
  }

  protected override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.dim}`;
  }
}

export interface LayerNormOptions {
  eps?: number;                 // default 1e-5
  elementwiseAffine?: boolean;  // default true: weight (ones) and bias (zeros)
  bias?: boolean;               // default true (when affine)
  dtype?: DType;
}

/** Normalises over the trailing dims `normalizedShape` (as nn.LayerNorm). */
export class LayerNorm extends Module implements Layer {
  readonly normalizedShape: number[];
  readonly eps: number;
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;

  constructor(normalizedShape: number | readonly number[], options: LayerNormOptions = {}) {
    super();
    const shape = typeof normalizedShape === 'number' ? [normalizedShape] : normalizedShape;
    if (!Array.isArray(shape) || shape.length === 0)
      throw new TypeError(`LayerNorm: expected a size or a non-empty array of sizes for normalizedShape but received ${describe(normalizedShape)}`);
    this.normalizedShape = shape.map((d, i) => checkSize('LayerNorm', `normalizedShape[${i}]`, d));
    this.eps = options.eps ?? 1e-5;
    if (typeof this.eps !== 'number' || !(this.eps > 0) || !Number.isFinite(this.eps))
      throw new RangeError(`LayerNorm: expected a finite number > 0 for eps but received ${describe(this.eps)}`);
    const dtype = checkDtype('LayerNorm', options.dtype ?? 'float32');
    const affine = options.elementwiseAffine ?? true;
    this.weight = affine ? this.param('weight', ones(this.normalizedShape, { dtype })) : null;
    this.bias = affine && (options.bias ?? true) ? this.param('bias', zeros(this.normalizedShape, { dtype })) : null;
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.normalizedShape, this.weight ?? undefined, this.bias ?? undefined, this.eps);
  }

  protected override extraRepr(): string {
    return `[${this.normalizedShape.join(', ')}], eps=${this.eps}`;
  }
}

/** Zeroes elements with probability p and scales the rest by 1/(1-p), in training mode only. */
export class Dropout extends Module implements Layer {
  readonly p: number;

  constructor(p = 0.5) {
    super();
    if (typeof p !== 'number' || !(p >= 0 && p < 1)) throw new RangeError(`Dropout: expected a number in [0, 1) for p but received ${describe(p)}`);
    this.p = p;
  }

  /** Whether forward() drops anything (p > 0 in training mode). */
  get active(): boolean {
    return this.p !== 0 && this.training;
  }

  forward(x: Tensor): Tensor {
    return this.active ? dropout(x, this.p, { training: true }) : x;
  }

  protected override extraRepr(): string {
    return `p=${this.p}`;
  }
}

/** 'gelu' is the exact (erf) GELU, as nn.GELU(); 'gelu_tanh' its tanh approximation; 'quick_gelu' x*sigmoid(1.702x) (CLIP). */
export type ActivationKind = 'gelu' | 'gelu_tanh' | 'quick_gelu' | 'silu' | 'relu';
const ACTIVATIONS: Record<ActivationKind, (x: Tensor) => Tensor> = {
  gelu: (x) => gelu(x, 'none'),
  gelu_tanh: (x) => gelu(x, 'tanh'),
  quick_gelu: (x) => quickGelu(x),
  silu: (x) => silu(x),
  relu: (x) => relu(x),
};

/** A parameter-free activation as a layer. */
export class Activation extends Module implements Layer {
  readonly kind: ActivationKind;
  private readonly fn: (x: Tensor) => Tensor;

  constructor(kind: ActivationKind) {
    super();
    if (!Object.prototype.hasOwnProperty.call(ACTIVATIONS, kind))
      throw new TypeError(`Activation: expected one of ${Object.keys(ACTIVATIONS).map((k) => `'${k}'`).join(', ')} for kind but received ${describe(kind)}`);
    this.kind = kind;
    this.fn = ACTIVATIONS[kind];
  }

  forward(x: Tensor): Tensor {
    return this.fn(x);
  }

  protected override extraRepr(): string {
    return this.kind;
  }
}

/** Layers applied in order; registered as '0', '1', ... (as nn.Sequential). */
export class Sequential extends Module implements Layer {
  readonly layers: Layer[];

  constructor(...layers: Layer[]) {
    super();
    layers.forEach((l, i) => {
      if (!(l instanceof Module) || typeof (l as Partial<Layer>).forward !== 'function')
        throw new TypeError(`Sequential: expected a Module with forward() for layers[${i}] but received ${describe(l)}`);
      this.module(String(i), l);
    });
    this.layers = [...layers];
  }

  forward(x: Tensor): Tensor {
    let y = x;
    for (const l of this.layers) y = l.forward(y);
    return y;
  }
}

export interface MLPOptions {
  bias?: boolean;     // default true
  dtype?: DType;      // default float32
  /** Dropout after the activation and after fc2 (default 0: none), as timm's Mlp. */
  dropout?: number;
}

/** fc1 -> activation -> [dropout] -> fc2 -> [dropout]: the transformer MLP block. */
export class MLP extends Module implements Layer {
  readonly fc1: Linear;
  readonly act: Activation;
  readonly fc2: Linear;
  readonly drop: Dropout;

  constructor(inFeatures: number, hidden: number, outFeatures: number, activation: ActivationKind = 'gelu', options: MLPOptions = {}) {
    super();
    const lin = { bias: options.bias, dtype: options.dtype };
    this.fc1 = this.module('fc1', new Linear(inFeatures, hidden, lin));
    this.act = this.module('act', new Activation(activation));
    this.fc2 = this.module('fc2', new Linear(hidden, outFeatures, lin));
    this.drop = this.module('drop', new Dropout(options.dropout ?? 0));
  }

  /**
   * fc2(act(fc1 x)), dropout after each when training; with `residual`, residual + that
   * (added inside fc2's pass when no dropout follows fc2).
   */
  forward(x: Tensor, residual?: Tensor | null): Tensor {
    // fc1 and the activation as one node (linearActivation: the activation in fc1's pass)
    const h = this.drop.forward(linearActivation(x, this.fc1.weight, this.fc1.bias, this.act.kind));
    if (residual && !this.drop.active) return this.fc2.forward(h, residual);
    const y = this.drop.forward(this.fc2.forward(h));
    return residual ? add(residual, y) : y;
  }
}
