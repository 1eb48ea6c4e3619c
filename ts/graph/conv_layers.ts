// Convolutional layers as Modules, initialised as PyTorch's defaults from the seeded
// generator: Conv2d, BatchNorm2d, ConvBnAct (conv -> BN -> activation, torchvision's
// Conv2dNormActivation), SqueezeExcite and MBConv (EfficientNet's inverted residual
// block), plus stochasticDepth (per-sample drop path). The math lives in
// ts/graph/ops/{conv2d,batch_norm,pool}.ts.
import type { DType } from '../native.js';
import { Tensor } from './tensor.js';
import { describe, ones, rand, tensor, zeros } from './creation.js';
import { noGrad } from './autograd.js';
import { Module } from './module.js';
import type { Layer } from './nn.js';
import { conv2d, type Size2 } from './ops/conv2d.js';
import { batchNorm } from './ops/batch_norm.js';
import { adaptiveAvgPool2d } from './ops/pool.js';
import { add, mul, relu, sigmoid, silu, gelu } from './ops/elementwise.js';

function checkSize(op: string, name: string, v: unknown, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
    throw new RangeError(`${op}: expected an integer >= ${min} for ${name} but received ${describe(v)}`);
  return v;
}

function checkPair(op: string, name: string, v: unknown, min: number): [number, number] {
  if (typeof v === 'number') return [checkSize(op, name, v, min), v];
  if (Array.isArray(v) && v.length === 2) return [checkSize(op, `${name}[0]`, v[0], min), checkSize(op, `${name}[1]`, v[1], min)];
  throw new TypeError(`${op}: expected an integer or a pair [h, w] of integers for ${name} but received ${describe(v)}`);
}

function checkDtype(op: string, d: unknown): DType {
  if (d !== 'float32' && d !== 'float64') throw new TypeError(`${op}: expected 'float32' or 'float64' for dtype but received ${describe(d)}`);
  return d;
}

function checkProb(op: string, name: string, v: unknown, closed = true): number {
  if (typeof v !== 'number' || !(v >= 0 && (closed ? v <= 1 : v < 1)))
    throw new RangeError(`${op}: expected a number in [0, 1${closed ? ']' : ')'} for ${name} but received ${describe(v)}`);
  return v;
}

export interface Conv2dLayerOptions {
  stride?: Size2;     // default 1
  padding?: Size2;    // default 0
  dilation?: Size2;   // default 1
  groups?: number;    // default 1
  bias?: boolean;     // default true
  dtype?: DType;      // default float32
}

/**
 * 2-D convolution layer (as nn.Conv2d): weight [out, in/groups, kh, kw], bias [out].
 * Init as nn.Conv2d: kaiming_uniform with a = sqrt(5), i.e. weight and bias
 * ~ U(-1/sqrt(fanIn), 1/sqrt(fanIn)) with fanIn = in/groups * kh * kw.
 */
export class Conv2d extends Module implements Layer {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(inChannels: number, outChannels: number, kernelSize: Size2, options: Conv2dLayerOptions = {}) {
    super();
    const op = 'Conv2d';
    this.inChannels = checkSize(op, 'inChannels', inChannels);
    this.outChannels = checkSize(op, 'outChannels', outChannels);
    this.kernelSize = checkPair(op, 'kernelSize', kernelSize, 1);
    this.stride = checkPair(op, 'stride', options.stride ?? 1, 1);
    this.padding = checkPair(op, 'padding', options.padding ?? 0, 0);
    this.dilation = checkPair(op, 'dilation', options.dilation ?? 1, 1);
    this.groups = checkSize(op, 'groups', options.groups ?? 1);
    if (inChannels % this.groups !== 0 || outChannels % this.groups !== 0)
      throw new RangeError(`${op}: expected a divisor of inChannels (${inChannels}) and outChannels (${outChannels}) for groups but received ${describe(this.groups)}`);
    const dtype = checkDtype(op, options.dtype ?? 'float32');
    const [kh, kw] = this.kernelSize;
    const bound = 1 / Math.sqrt((inChannels / this.groups) * kh * kw);
    this.weight = this.param('weight', rand([outChannels, inChannels / this.groups, kh, kw], { dtype, low: -bound, high: bound }));
    this.bias = options.bias ?? true ? this.param('bias', rand([outChannels], { dtype, low: -bound, high: bound })) : null;
  }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups });
  }

  protected override extraRepr(): string {
    return `${this.inChannels}, ${this.outChannels}, kernel=[${this.kernelSize.join(', ')}], stride=[${this.stride.join(', ')}], ` +
      `padding=[${this.padding.join(', ')}]${this.groups > 1 ? `, groups=${this.groups}` : ''}, bias=${this.bias !== null}`;
  }
}

export interface BatchNorm2dOptions {
  eps?: number;                 // default 1e-5
  momentum?: number;            // default 0.1
  affine?: boolean;             // default true: weight (ones) and bias (zeros)
  trackRunningStats?: boolean;  // default true: buffers runningMean (zeros) and runningVar (ones)
  dtype?: DType;
}

/**
 * Batch normalisation over the channels of [N, C, H, W] (as nn.BatchNorm2d). In training
 * mode (module.training) it normalises with the batch statistics and updates the running
 * buffers; in eval mode it uses them. Without running statistics it always uses the batch's.
 */
export class BatchNorm2d extends Module implements Layer {
  readonly numFeatures: number;
  readonly eps: number;
  readonly momentum: number;
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;
  readonly runningMean: Tensor | null;
  readonly runningVar: Tensor | null;

  constructor(numFeatures: number, options: BatchNorm2dOptions = {}) {
    super();
    const op = 'BatchNorm2d';
    this.numFeatures = checkSize(op, 'numFeatures', numFeatures);
    this.eps = options.eps ?? 1e-5;
    if (typeof this.eps !== 'number' || !Number.isFinite(this.eps) || this.eps < 0)
      throw new RangeError(`${op}: expected a finite number >= 0 for eps but received ${describe(this.eps)}`);
    this.momentum = checkProb(op, 'momentum', options.momentum ?? 0.1);
    const dtype = checkDtype(op, options.dtype ?? 'float32');
    const affine = options.affine ?? true;
    this.weight = affine ? this.param('weight', ones([numFeatures], { dtype })) : null;
    this.bias = affine ? this.param('bias', zeros([numFeatures], { dtype })) : null;
    const track = options.trackRunningStats ?? true;
    this.runningMean = track ? this.buffer('runningMean', zeros([numFeatures], { dtype })) : null;
    this.runningVar = track ? this.buffer('runningVar', ones([numFeatures], { dtype })) : null;
  }

  forward(x: Tensor): Tensor {
    if (!(x instanceof Tensor) || x.ndim !== 4)
      throw new RangeError(`BatchNorm2d: expected a 4-d tensor [N, C, H, W] for x but received ${x instanceof Tensor ? `shape [${x.shape.join(', ')}]` : describe(x)}`);
    const training = this.training || this.runningMean === null;
    return batchNorm(x, this.runningMean, this.runningVar, this.weight, this.bias, { training, momentum: this.momentum, eps: this.eps });
  }

  protected override extraRepr(): string {
    return `${this.numFeatures}, eps=${this.eps}, momentum=${this.momentum}, affine=${this.weight !== null}`;
  }
}

/** Activations the conv blocks use ('silu' is EfficientNet's swish). */
export type ConvActivation = 'silu' | 'relu' | 'gelu' | 'sigmoid' | null;

function activate(kind: ConvActivation, x: Tensor): Tensor {
  switch (kind) {
    case 'silu': return silu(x);
    case 'relu': return relu(x);
    case 'gelu': return gelu(x);
    case 'sigmoid': return sigmoid(x);
    default: return x;
  }
}

function checkActivation(op: string, a: unknown): ConvActivation {
  if (a === null || a === 'silu' || a === 'relu' || a === 'gelu' || a === 'sigmoid') return a;
  throw new TypeError(`${op}: expected 'silu', 'relu', 'gelu', 'sigmoid' or null for activation but received ${describe(a)}`);
}

export interface ConvBnActOptions {
  stride?: number;                 // default 1
  groups?: number;                 // default 1
  dilation?: number;               // default 1
  activation?: ConvActivation;     // default 'silu'; null: none
  bnEps?: number;                  // default 1e-5
  bnMomentum?: number;             // default 0.1
  dtype?: DType;
}

/**
 * conv (no bias, 'same'-style padding floor((k-1)/2)*dilation) -> BatchNorm2d -> activation,
 * as torchvision's Conv2dNormActivation. Sub-modules: conv, bn.
 */
export class ConvBnAct extends Module implements Layer {
  readonly conv: Conv2d;
  readonly bn: BatchNorm2d;
  readonly activation: ConvActivation;

  constructor(inChannels: number, outChannels: number, kernelSize: number, options: ConvBnActOptions = {}) {
    super();
    const op = 'ConvBnAct';
    const k = checkSize(op, 'kernelSize', kernelSize);
    const dilation = checkSize(op, 'dilation', options.dilation ?? 1);
    this.activation = checkActivation(op, options.activation === undefined ? 'silu' : options.activation);
    this.conv = this.module('conv', new Conv2d(inChannels, outChannels, k, {
      stride: options.stride ?? 1, padding: Math.floor((k - 1) / 2) * dilation, dilation, groups: options.groups ?? 1,
      bias: false, dtype: options.dtype,
    }));
    this.bn = this.module('bn', new BatchNorm2d(outChannels, { eps: options.bnEps, momentum: options.bnMomentum, dtype: options.dtype }));
  }

  forward(x: Tensor): Tensor {
    return activate(this.activation, this.bn.forward(this.conv.forward(x)));
  }
}

export interface SqueezeExciteOptions {
  activation?: ConvActivation;  // after the reduce conv; default 'silu' (EfficientNet)
  dtype?: DType;
}

/**
 * Squeeze-and-excitation (as torchvision's SqueezeExcitation in EfficientNet): global
 * average pool -> 1x1 conv reduce (fc1) -> activation -> 1x1 conv expand (fc2) ->
 * sigmoid -> x scaled per channel.
 */
export class SqueezeExcite extends Module implements Layer {
  readonly fc1: Conv2d;
  readonly fc2: Conv2d;
  readonly activation: ConvActivation;

  constructor(channels: number, squeezeChannels: number, options: SqueezeExciteOptions = {}) {
    super();
    this.activation = checkActivation('SqueezeExcite', options.activation === undefined ? 'silu' : options.activation);
    this.fc1 = this.module('fc1', new Conv2d(channels, squeezeChannels, 1, { dtype: options.dtype }));
    this.fc2 = this.module('fc2', new Conv2d(squeezeChannels, channels, 1, { dtype: options.dtype }));
  }

  forward(x: Tensor): Tensor {
    const s = adaptiveAvgPool2d(x, [1, 1]);
    const scale = sigmoid(this.fc2.forward(activate(this.activation, this.fc1.forward(s))));
    return mul(x, scale);
  }
}

/**
 * Stochastic depth in "row" mode (torchvision.ops.stochastic_depth): in training each
 * sample of x [N, ...] is zeroed with probability p and the kept ones are scaled by
 * 1/(1-p). The identity when p = 0 or not training. Draws from the global generator.
 */
export function stochasticDepth(x: Tensor, p: number, training = true): Tensor {
  const op = 'stochasticDepth';
  if (!(x instanceof Tensor)) throw new TypeError(`${op}: expected a tensor for x but received ${describe(x)}`);
  if (x.ndim < 1) throw new RangeError(`${op}: expected a tensor [N, ...] for x but received shape []`);
  checkProb(op, 'p', p);
  if (!training || p === 0) return x;
  const survival = 1 - p;
  const n = x.shape[0]!;
  const u = noGrad(() => rand([n], { dtype: 'float64' }));
  const draws = u.toArray();
  u.dispose();
  const keep = new Float64Array(n);
  for (let i = 0; i < n; i++) keep[i] = draws[i]! < survival ? 1 / survival : 0;
  const shape = [n, ...x.shape.slice(1).map(() => 1)];
  const mask = tensor(x.dtype === 'float64' ? keep : Float32Array.from(keep), shape);
  return mul(x, mask);
}

export interface MBConvOptions {
  expandRatio?: number;       // default 1 (no expansion conv); expanded channels = in * expandRatio
  kernelSize?: number;        // depthwise kernel, default 3
  stride?: number;            // depthwise stride, default 1
  seRatio?: number;           // squeeze channels = max(1, floor(in * seRatio)); default 0.25; 0: no SE
  stochasticDepth?: number;   // drop-path probability on the residual branch; default 0 (off)
  bnEps?: number;             // default 1e-5
  bnMomentum?: number;        // default 0.1
  dtype?: DType;
}

/**
 * EfficientNet's MBConv (inverted residual) block, as torchvision's MBConv:
 * [expand 1x1 conv + BN + SiLU] -> depthwise kxk conv + BN + SiLU -> squeeze-excite ->
 * project 1x1 conv + BN, plus the input when stride is 1 and in == out (after
 * stochastic depth on the branch in training). Sub-modules: expand (absent when
 * expandRatio is 1), depthwise, se (absent when seRatio is 0), project.
 */
export class MBConv extends Module implements Layer {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly expandedChannels: number;
  readonly useResidual: boolean;
  readonly stochasticDepthProb: number;
  readonly expand: ConvBnAct | null;
  readonly depthwise: ConvBnAct;
  readonly se: SqueezeExcite | null;
  readonly project: ConvBnAct;

  constructor(inChannels: number, outChannels: number, options: MBConvOptions = {}) {
    super();
    const op = 'MBConv';
    this.inChannels = checkSize(op, 'inChannels', inChannels);
    this.outChannels = checkSize(op, 'outChannels', outChannels);
    const ratio = options.expandRatio ?? 1;
    if (typeof ratio !== 'number' || !(ratio >= 1) || !Number.isInteger(inChannels * ratio))
      throw new RangeError(`${op}: expected a number >= 1 with inChannels * expandRatio an integer for expandRatio but received ${describe(ratio)}`);
    const k = checkSize(op, 'kernelSize', options.kernelSize ?? 3);
    const stride = checkSize(op, 'stride', options.stride ?? 1);
    const seRatio = checkProb(op, 'seRatio', options.seRatio ?? 0.25);
    this.stochasticDepthProb = checkProb(op, 'stochasticDepth', options.stochasticDepth ?? 0, false);
    this.expandedChannels = inChannels * ratio;
    this.useResidual = stride === 1 && inChannels === outChannels;
    const bn = { bnEps: options.bnEps, bnMomentum: options.bnMomentum, dtype: options.dtype };
    const e = this.expandedChannels;
    this.expand = e !== inChannels ? this.module('expand', new ConvBnAct(inChannels, e, 1, { ...bn, activation: 'silu' })) : null;
    this.depthwise = this.module('depthwise', new ConvBnAct(e, e, k, { ...bn, stride, groups: e, activation: 'silu' }));
    this.se = seRatio > 0
      ? this.module('se', new SqueezeExcite(e, Math.max(1, Math.floor(inChannels * seRatio)), { dtype: options.dtype }))
      : null;
    this.project = this.module('project', new ConvBnAct(e, outChannels, 1, { ...bn, activation: null }));
  }

  forward(x: Tensor): Tensor {
    let h = this.expand ? this.expand.forward(x) : x;
    h = this.depthwise.forward(h);
    if (this.se) h = this.se.forward(h);
    h = this.project.forward(h);
    if (!this.useResidual) return h;
    return add(stochasticDepth(h, this.stochasticDepthProb, this.training), x);
  }

  protected override extraRepr(): string {
    return `${this.inChannels} -> ${this.expandedChannels} -> ${this.outChannels}`;
  }
}
