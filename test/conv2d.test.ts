// conv2d family and the conv layers: forward and backward against a float64 JS
// reference (strides, padding, dilation, groups, depthwise, 1x1 and 3x3, non-square),
// float64 gradient checks (strided leaves, no bias, frozen weight), float32 vs float64,
// bitwise determinism for 1 and 2 threads, Conv2d init, MBConv forward/backward and a
// float64 gradient check of a tiny MBConv, and bad input in a child process.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { randn, rand, tensor } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { transpose, permute } from '../ts/graph/ops/views.js';
import { sum } from '../ts/graph/ops/reduce.js';
import { conv2d } from '../ts/graph/ops/conv2d.js';
import { Conv2d, MBConv, SqueezeExcite, stochasticDepth } from '../ts/graph/conv_layers.js';
import type { Tensor } from '../ts/graph/tensor.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;

interface Geo { s: [number, number]; p: [number, number]; d: [number, number]; g: number }
interface Case { N: number; C: number; H: number; W: number; O: number; KH: number; KW: number; geo: Geo; label: string }

const mk = (N: number, C: number, H: number, W: number, O: number, KH: number, KW: number,
  s: [number, number], p: [number, number], d: [number, number], g: number, label: string): Case =>
  ({ N, C, H, W, O, KH, KW, geo: { s, p, d, g }, label });

const cases: Case[] = [
  mk(2, 3, 6, 5, 4, 3, 3, [1, 1], [1, 1], [1, 1], 1, '3x3 stride 1 pad 1'),
  mk(2, 4, 7, 6, 6, 3, 3, [2, 2], [1, 1], [1, 1], 1, '3x3 stride 2 pad 1'),
  mk(3, 5, 4, 6, 7, 1, 1, [1, 1], [0, 0], [1, 1], 1, '1x1 pointwise (in-place path)'),
  mk(2, 4, 5, 5, 6, 1, 1, [2, 2], [0, 0], [1, 1], 1, '1x1 stride 2'),
  mk(1, 4, 6, 7, 4, 3, 2, [2, 1], [1, 0], [1, 1], 2, 'non-square kernel/stride/padding, groups 2'),
  mk(2, 3, 9, 8, 2, 3, 3, [1, 2], [2, 1], [2, 3], 1, 'dilation [2, 3]'),
  mk(2, 6, 6, 6, 9, 3, 3, [1, 1], [1, 1], [1, 1], 3, 'groups 3'),
  mk(2, 5, 6, 7, 5, 3, 3, [1, 1], [1, 1], [1, 1], 5, 'depthwise 3x3 stride 1'),
  mk(2, 4, 7, 6, 4, 3, 3, [2, 2], [1, 1], [1, 1], 4, 'depthwise 3x3 stride 2'),
  mk(1, 3, 5, 6, 6, 5, 3, [2, 1], [2, 1], [1, 2], 3, 'depthwise multiplier 2, 5x3, dilation'),
  mk(2, 1, 5, 5, 3, 3, 3, [1, 1], [0, 0], [1, 1], 1, 'one input channel (direct path)'),
  mk(2, 3, 4, 4, 2, 4, 4, [1, 1], [0, 0], [1, 1], 1, 'kernel as large as the input'),
  mk(2, 2, 3, 3, 3, 3, 3, [3, 3], [0, 0], [1, 1], 1, 'output 1x1'),
  mk(1, 3, 5, 6, 3, 3, 2, [1000, 7], [1, 1], [1, 2], 3, 'depthwise, strides beyond the input'),
  mk(2, 2, 5, 6, 3, 2, 3, [1000, 7], [1, 0], [1, 1], 1, 'general, strides beyond the input'),
];

function outSize(c: Case): [number, number] {
  const { s, p, d } = c.geo;
  return [Math.floor((c.H + 2 * p[0] - d[0] * (c.KH - 1) - 1) / s[0]) + 1, Math.floor((c.W + 2 * p[1] - d[1] * (c.KW - 1) - 1) / s[1]) + 1];
}

/** Straight from the definition: y, and for upstream gy the gradients dx, dw, db (float64). */
function reference(c: Case, x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number> | null, gy: ArrayLike<number> | null) {
  const { N, C, H, W, O, KH, KW } = c;
  const { s, p, d, g } = c.geo;
  const [OH, OW] = outSize(c);
  const Cg = C / g, Og = O / g;
  const y = new Float64Array(N * O * OH * OW);
  const dx = new Float64Array(N * C * H * W), dw = new Float64Array(O * Cg * KH * KW), db = new Float64Array(O);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      const grp = Math.floor(o / Og);
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++) {
          const yi = ((n * O + o) * OH + oh) * OW + ow;
          let acc = b ? b[o]! : 0;
          const gv = gy ? gy[yi]! : 0;
          db[o] += gv;
          for (let ci = 0; ci < Cg; ci++)
            for (let i = 0; i < KH; i++)
              for (let j = 0; j < KW; j++) {
                const ih = oh * s[0] - p[0] + i * d[0], iw = ow * s[1] - p[1] + j * d[1];
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const xi = ((n * C + grp * Cg + ci) * H + ih) * W + iw, wi = ((o * Cg + ci) * KH + i) * KW + j;
                acc += x[xi]! * w[wi]!;
                dx[xi] += gv * w[wi]!;
                dw[wi] += gv * x[xi]!;
              }
          y[yi] = acc;
        }
    }
  return { y, dx, dw, db, shape: [N, O, OH, OW] };
}

const opts = (c: Case) => ({ stride: c.geo.s, padding: c.geo.p, dilation: c.geo.d, groups: c.geo.g });
const wShape = (c: Case) => [c.O, c.C / c.geo.g, c.KH, c.KW];

test('forward and backward match a float64 reference (strides, padding, dilation, groups, depthwise)', (t) => {
  for (const dtype of ['float64', 'float32'] as const) {
    const tol = dtype === 'float64' ? [1e-12, 1e-10] : [1e-5, 1e-4];
    cases.forEach((c, k) => {
      const x = randn([c.N, c.C, c.H, c.W], { dtype, seed: 10 + k });
      const w = randn(wShape(c), { dtype, seed: 40 + k });
      const b = randn([c.O], { dtype, seed: 70 + k });
      const [OH, OW] = outSize(c);
      const gy = randn([c.N, c.O, OH, OW], { dtype, seed: 100 + k });
      const ref = reference(c, x.toArray(), w.toArray(), b.toArray(), gy.toArray());
      const y = conv2d(x, w, b, opts(c));
      t.deepEqual(y.shape, ref.shape, c.label);
      assertClose(t, y.toArray(), ref.y, tol[0], tol[1], `${dtype} ${c.label} y`);
      const noBias = reference(c, x.toArray(), w.toArray(), null, null);
      assertClose(t, conv2d(x, w, null, opts(c)).toArray(), noBias.y, tol[0], tol[1], `${dtype} ${c.label} y without bias`);
      const r = native.conv2dBackward(x.handle, w.handle, gy.handle, [...c.geo.s], [...c.geo.p], [...c.geo.d], c.geo.g, true, true, true);
      assertClose(t, native.toArray(r.dx!), ref.dx, tol[0], tol[1], `${dtype} ${c.label} dx`);
      assertClose(t, native.toArray(r.dweight!), ref.dw, tol[0], tol[1], `${dtype} ${c.label} dweight`);
      assertClose(t, native.toArray(r.dbias!), ref.db, tol[0], tol[1], `${dtype} ${c.label} dbias`);
      const only = native.conv2dBackward(x.handle, w.handle, gy.handle, [...c.geo.s], [...c.geo.p], [...c.geo.d], c.geo.g, true, false, false);
      t.is(only.dweight, null);
      t.deepEqual(native.toArray(only.dx!), native.toArray(r.dx!), `${c.label}: dx does not depend on which other gradients are asked`);
    });
  }
});

test('gradients match central differences (groups, stride, padding, dilation, depthwise, strided leaves)', (t) => {
  const f64 = (shape: number[], seed: number) => randn(shape, { dtype: 'float64', seed });
  const pick = [0, 1, 4, 5, 6, 7, 9];
  for (const k of pick) {
    const c = cases[k]!;
    const x = f64([c.N, c.C, c.H, c.W], 200 + k).requiresGrad_();
    const w = f64(wShape(c), 230 + k).requiresGrad_();
    const b = f64([c.O], 260 + k).requiresGrad_();
    assertGradcheck(t, (x, w, b) => conv2d(x, w, b, opts(c)), [x, w, b], {}, c.label);
  }
  // a transposed input (H and W swapped in memory) and a permuted weight, no bias
  const c = cases[4]!;
  const xt = noGrad(() => transpose(f64([c.N, c.C, c.W, c.H], 300), 2, 3)).requiresGrad_();
  const wt = noGrad(() => permute(f64([c.KH, c.O, c.C / c.geo.g, c.KW], 301), [1, 2, 0, 3])).requiresGrad_();
  t.false(xt.isContiguous);
  t.false(wt.isContiguous);
  assertGradcheck(t, (x, w) => conv2d(x, w, null, opts(c)), [xt, wt], {}, 'strided x and weight');
  // weight without grad (frozen): only dx and dbias
  const frozen = f64([4, 3, 3, 3], 302);
  assertGradcheck(t, (x, b) => conv2d(x, frozen, b, { padding: 1 }), [f64([1, 3, 4, 4], 303).requiresGrad_(), f64([4], 304).requiresGrad_()], {}, 'frozen weight');
  // input without grad (the first layer): only weight gradients
  const img = f64([2, 3, 5, 5], 305);
  assertGradcheck(t, (w) => conv2d(img, w, null, { stride: 2, padding: 1 }), [f64([2, 3, 3, 3], 306).requiresGrad_()], {}, 'weight only');
  // 1x1 spatial input
  assertGradcheck(t, (x, w, b) => conv2d(x, w, b), [f64([3, 4, 1, 1], 307).requiresGrad_(), f64([2, 4, 1, 1], 308).requiresGrad_(), f64([2], 309).requiresGrad_()], {}, '1x1 images');
});

test('float32 agrees with float64 at larger sizes (general and depthwise paths)', (t) => {
  for (const [c, label] of [
    [mk(4, 16, 16, 16, 24, 3, 3, [1, 1], [1, 1], [1, 1], 1, ''), 'general 3x3'],
    [mk(4, 32, 12, 12, 16, 1, 1, [1, 1], [0, 0], [1, 1], 1, ''), 'pointwise'],
    [mk(4, 24, 16, 16, 24, 5, 5, [2, 2], [2, 2], [1, 1], 24, ''), 'depthwise 5x5 stride 2'],
  ] as [Case, string][]) {
    const x64 = randn([c.N, c.C, c.H, c.W], { dtype: 'float64', seed: 1 });
    const w64 = randn(wShape(c), { dtype: 'float64', seed: 2, std: 0.2 });
    const [OH, OW] = outSize(c);
    const g64 = randn([c.N, c.O, OH, OW], { dtype: 'float64', seed: 3 });
    const to32 = (v: Tensor) => tensor(Float32Array.from(v.toArray()), [...v.shape]);
    const x32 = to32(x64), w32 = to32(w64), g32 = to32(g64);
    const g = c.geo;
    const a: [number[], number[], number[], number] = [[...g.s], [...g.p], [...g.d], g.g];
    assertClose(t, native.toArray(native.conv2d(x32.handle, w32.handle, null, ...a)), native.toArray(native.conv2d(x64.handle, w64.handle, null, ...a)), 1e-4, 1e-4, `${label} y`);
    const r32 = native.conv2dBackward(x32.handle, w32.handle, g32.handle, ...a, true, true, true);
    const r64 = native.conv2dBackward(x64.handle, w64.handle, g64.handle, ...a, true, true, true);
    assertClose(t, native.toArray(r32.dx!), native.toArray(r64.dx!), 1e-4, 1e-4, `${label} dx`);
    assertClose(t, native.toArray(r32.dweight!), native.toArray(r64.dweight!), 1e-3, 1e-4, `${label} dweight`);
    assertClose(t, native.toArray(r32.dbias!), native.toArray(r64.dbias!), 1e-3, 1e-4, `${label} dbias`);
  }
});

test('outputs and gradients are bitwise identical for 1 and 2 threads', (t) => {
  const prev = native.getNumThreads();
  const run = (c: Case) => {
    const x = randn([c.N, c.C, c.H, c.W], { seed: 5 }), w = randn(wShape(c), { seed: 6 }), b = randn([c.O], { seed: 7 });
    const [OH, OW] = outSize(c);
    const gy = randn([c.N, c.O, OH, OW], { seed: 8 });
    const g = c.geo;
    const a: [number[], number[], number[], number] = [[...g.s], [...g.p], [...g.d], g.g];
    const r = native.conv2dBackward(x.handle, w.handle, gy.handle, ...a, true, true, true);
    return [native.conv2d(x.handle, w.handle, b.handle, ...a), r.dx!, r.dweight!, r.dbias!].map((h) => native.toArray(h));
  };
  try {
    for (const c of [mk(5, 8, 9, 9, 12, 3, 3, [1, 1], [1, 1], [1, 1], 1, ''), mk(3, 8, 8, 8, 8, 1, 1, [1, 1], [0, 0], [1, 1], 2, ''),
      mk(5, 12, 9, 9, 12, 3, 3, [2, 2], [1, 1], [1, 1], 12, '')]) {
      native.setNumThreads(1);
      const one = run(c);
      native.setNumThreads(2);
      const two = run(c);
      for (let i = 0; i < one.length; i++) t.deepEqual(two[i], one[i], `groups ${c.geo.g} output ${i}`);
    }
  } finally {
    native.setNumThreads(prev);
  }
});

test('Conv2d layer: shapes, nn.Conv2d init bounds, forward equals conv2d', (t) => {
  const m = new Conv2d(6, 8, 3, { stride: 2, padding: 1, groups: 2 });
  t.deepEqual(m.weight.shape, [8, 3, 3, 3]);
  t.deepEqual(m.bias!.shape, [8]);
  const bound = 1 / Math.sqrt(3 * 9);
  const wv = m.weight.toArray();
  t.true(wv.every((v) => Math.abs(v) <= bound), 'weight inside U(-1/sqrt(fanIn), 1/sqrt(fanIn))');
  t.true(Math.max(...wv) > 0.8 * bound && Math.min(...wv) < -0.8 * bound, 'weight spans the bound');
  t.true(m.bias!.toArray().every((v) => Math.abs(v) <= bound));
  t.deepEqual(Object.keys(m.stateDict()), ['weight', 'bias']);
  const x = randn([2, 6, 9, 9], { seed: 1 });
  const y = m.forward(x);
  t.deepEqual(y.shape, [2, 8, 5, 5]);
  t.deepEqual(y.toArray(), conv2d(x, m.weight, m.bias, { stride: 2, padding: 1, groups: 2 }).toArray());
  t.is(new Conv2d(3, 4, [1, 3], { bias: false }).bias, null);
  t.throws(() => new Conv2d(6, 8, 3, { groups: 4 }), { instanceOf: RangeError, message: /Conv2d: expected a divisor of inChannels \(6\) and outChannels \(8\) for groups/ });
});

test('SqueezeExcite and stochasticDepth', (t) => {
  const se = new SqueezeExcite(8, 2, { dtype: 'float64' });
  t.deepEqual(Object.keys(se.stateDict()), ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']);
  const x = randn([2, 8, 3, 3], { dtype: 'float64', seed: 1 });
  const y = se.forward(x);
  // reference: per (n, c) the scale sigmoid(W2 silu(W1 mean + b1) + b2)
  const xs = x.toArray(), ys = y.toArray();
  const w1 = se.fc1.weight.toArray(), b1 = se.fc1.bias!.toArray(), w2 = se.fc2.weight.toArray(), b2 = se.fc2.bias!.toArray();
  const expect = new Float64Array(xs.length);
  for (let n = 0; n < 2; n++) {
    const mean = Array.from({ length: 8 }, (_, c) => { let s = 0; for (let k = 0; k < 9; k++) s += xs[(n * 8 + c) * 9 + k]!; return s / 9; });
    const h = [0, 1].map((j) => { let s = b1[j]!; for (let c = 0; c < 8; c++) s += w1[j * 8 + c]! * mean[c]!; return s / (1 + Math.exp(-s)); });
    for (let c = 0; c < 8; c++) {
      const z = b2[c]! + w2[c * 2]! * h[0]! + w2[c * 2 + 1]! * h[1]!;
      const sc = 1 / (1 + Math.exp(-z));
      for (let k = 0; k < 9; k++) expect[(n * 8 + c) * 9 + k] = xs[(n * 8 + c) * 9 + k]! * sc;
    }
  }
  assertClose(t, ys, expect, 1e-12, 1e-10, 'squeeze-excite');
  // stochastic depth: identity when off; rows are either 0 or x / (1 - p) in training
  const v = randn([64, 3, 2, 2], { seed: 2 });
  t.is(stochasticDepth(v, 0.5, false), v);
  t.is(stochasticDepth(v, 0), v);
  const d = stochasticDepth(v, 0.5).toArray(), vs = v.toArray();
  let dropped = 0;
  for (let n = 0; n < 64; n++) {
    const row = Array.from({ length: 12 }, (_, k) => d[n * 12 + k]!);
    if (row.every((e) => e === 0)) dropped++;
    else row.forEach((e, k) => t.true(Math.abs(e - 2 * vs[n * 12 + k]!) < 1e-6));
  }
  t.true(dropped > 10 && dropped < 54, `dropped ${dropped} of 64 rows at p = 0.5`);
});

test('MBConv: structure, forward/backward on a tiny input, running statistics update in training', (t) => {
  const m = new MBConv(4, 4, { expandRatio: 2, kernelSize: 3 });
  t.is(m.expandedChannels, 8);
  t.true(m.useResidual);
  const keys = Object.keys(m.stateDict());
  for (const k of ['expand.conv.weight', 'expand.bn.runningMean', 'depthwise.conv.weight', 'se.fc1.weight', 'se.fc2.bias', 'project.bn.runningVar'])
    t.true(keys.includes(k), k);
  t.deepEqual(m.depthwise.conv.weight.shape, [8, 1, 3, 3]);
  t.deepEqual(m.se!.fc1.weight.shape, [1, 8, 1, 1], 'squeeze channels = max(1, in / 4)');
  const x = randn([2, 4, 6, 6], { seed: 3 }).requiresGrad_();
  const before = m.project.bn.runningMean!.toArray().slice();
  const y = m.forward(x);
  t.deepEqual(y.shape, [2, 4, 6, 6]);
  sum(y).backward();
  for (const [name, p] of m.namedParameters()) {
    t.truthy(p.grad, `${name} has a gradient`);
    t.true(p.grad!.toArray().every(Number.isFinite), `${name} finite`);
  }
  t.deepEqual(x.grad!.shape, [2, 4, 6, 6]);
  t.notDeepEqual(m.project.bn.runningMean!.toArray(), before, 'training updates the running mean');
  // eval mode: no running-stat update, deterministic output
  m.eval();
  const rm = m.project.bn.runningMean!.toArray().slice();
  const e1 = m.forward(x).toArray(), e2 = m.forward(x).toArray();
  t.deepEqual(e1, e2);
  t.deepEqual(m.project.bn.runningMean!.toArray(), rm);
  // stride 2, in != out: no residual, no expansion, no SE
  const down = new MBConv(4, 6, { kernelSize: 5, stride: 2, seRatio: 0 });
  t.false(down.useResidual);
  t.is(down.expand, null);
  t.is(down.se, null);
  t.deepEqual(down.forward(randn([2, 4, 7, 7], { seed: 4 })).shape, [2, 6, 4, 4]);
});

test('a tiny float64 MBConv passes a gradient check in eval mode (and in training mode)', (t) => {
  const m = new MBConv(3, 3, { expandRatio: 2, kernelSize: 3, dtype: 'float64' });
  // non-trivial running statistics and affine parameters
  noGrad(() => {
    let s = 50;
    for (const [name, b] of m.namedBuffers()) {
      const v = name.endsWith('runningVar') ? rand([...b.shape], { dtype: 'float64', seed: s++, low: 0.5, high: 1.5 }) : randn([...b.shape], { dtype: 'float64', seed: s++, std: 0.3 });
      native.copy(b.handle, v.handle);
    }
    for (const [name, p] of m.namedParameters())
      if (name.includes('bn.')) native.copy(p.handle, rand([...p.shape], { dtype: 'float64', seed: s++, low: 0.5, high: 1.5 }).handle);
  });
  const x = randn([2, 3, 4, 4], { dtype: 'float64', seed: 9 }).requiresGrad_();
  const params = m.parameters();
  m.eval();
  assertGradcheck(t, (x) => m.forward(x), [x, ...params], {}, 'MBConv eval');
  m.train();
  assertGradcheck(t, (x) => m.forward(x), [x, ...params], {}, 'MBConv training (batch statistics)');
});

test('bad input is a clear TypeError/RangeError, never a crash', (t) => {
  const N = `(await import(${JSON.stringify(nativeUrl)})).native`;
  const x = 'vlm.randn([2, 4, 5, 5])';
  const w = 'vlm.randn([6, 4, 3, 3])';
  const { result, errors } = errorsInChild([
    ['channels', `vlm.conv2d(${x}, vlm.randn([6, 3, 3, 3]))`],
    ['groups divide', `vlm.conv2d(${x}, vlm.randn([6, 1, 3, 3]), null, { groups: 3 })`],
    ['groups out', `vlm.conv2d(${x}, vlm.randn([6, 2, 3, 3]), null, { groups: 4 })`],
    ['kernel too large', `vlm.conv2d(${x}, vlm.randn([6, 4, 7, 3]), null, { padding: [0, 1] })`],
    ['dilated too large', `vlm.conv2d(${x}, ${w}, null, { dilation: 3 })`],
    ['negative padding', `vlm.conv2d(${x}, ${w}, null, { padding: -1 })`],
    ['zero stride', `vlm.conv2d(${x}, ${w}, null, { stride: [1, 0] })`],
    ['stride type', `vlm.conv2d(${x}, ${w}, null, { stride: '2' })`],
    ['bias shape', `vlm.conv2d(${x}, ${w}, vlm.randn([4]))`],
    ['weight dtype', `vlm.conv2d(${x}, vlm.randn([6, 4, 3, 3], { dtype: 'float64' }))`],
    ['rank', `vlm.conv2d(vlm.randn([4, 5, 5]), ${w})`],
    ['int x', `vlm.conv2d(vlm.tensor([1, 2, 3, 4], [1, 1, 2, 2], { dtype: 'int32' }), vlm.randn([1, 1, 1, 1]))`],
    ['layer groups', `new vlm.Conv2d(4, 6, 3, { groups: 4 })`],
    ['native channels', `${N}.conv2d(${x}.handle, vlm.randn([6, 3, 3, 3]).handle, null, [1, 1], [0, 0], [1, 1], 1)`],
    ['native groups', `${N}.conv2d(${x}.handle, vlm.randn([6, 1, 3, 3]).handle, null, [1, 1], [0, 0], [1, 1], 3)`],
    ['native kernel', `${N}.conv2d(${x}.handle, vlm.randn([6, 4, 6, 6]).handle, null, [1, 1], [0, 0], [1, 1], 1)`],
    ['native negative padding', `${N}.conv2d(${x}.handle, ${w}.handle, null, [1, 1], [-1, 0], [1, 1], 1)`],
    ['native pair length', `${N}.conv2d(${x}.handle, ${w}.handle, null, [1], [0, 0], [1, 1], 1)`],
    ['native huge padding', `${N}.conv2d(${x}.handle, ${w}.handle, null, [1, 1], [1000000000, 1000000000], [1, 1], 1)`],
    ['native gy', `${N}.conv2dBackward(${x}.handle, ${w}.handle, vlm.randn([2, 6, 4, 4]).handle, [1, 1], [0, 0], [1, 1], 1, true, true, true)`],
    ['native bias', `${N}.conv2d(${x}.handle, ${w}.handle, vlm.randn([5]).handle, [1, 1], [0, 0], [1, 1], 1)`],
    ['native groups zero', `${N}.conv2d(${x}.handle, ${w}.handle, null, [1, 1], [0, 0], [1, 1], 0)`],
  ]);
  t.is(result.status, 0, result.stderr);
  t.deepEqual(errors['channels'], { name: 'RangeError', message: 'conv2d: expected shape [6, 4, KH, KW] (x has 4 channels, groups 1) for weight but received shape [6, 3, 3, 3]' });
  t.deepEqual(errors['groups divide'], { name: 'RangeError', message: 'conv2d: expected a divisor of the input channels (4) for groups but received the number 3' });
  t.deepEqual(errors['groups out'], { name: 'RangeError', message: 'conv2d: expected a divisor of the output channels (6, weight.shape[0]) for groups but received the number 4' });
  t.deepEqual(errors['kernel too large'], { name: 'RangeError', message: 'conv2d: expected a dilated kernel no larger than the padded input (5x7) for weight but received a dilated kernel of 7x3' });
  t.deepEqual(errors['dilated too large'], { name: 'RangeError', message: 'conv2d: expected a dilated kernel no larger than the padded input (5x5) for weight but received a dilated kernel of 7x7' });
  t.deepEqual(errors['negative padding'], { name: 'RangeError', message: 'conv2d: expected an integer >= 0 or a pair [h, w] of them for padding but received the number -1' });
  t.deepEqual(errors['zero stride'], { name: 'RangeError', message: 'conv2d: expected an integer >= 1 or a pair [h, w] of them for stride but received [1, 0]' });
  t.deepEqual(errors['stride type'], { name: 'TypeError', message: "conv2d: expected an integer >= 1 or a pair [h, w] of them for stride but received the string '2'" });
  t.deepEqual(errors['bias shape'], { name: 'RangeError', message: 'conv2d: expected shape [6] for bias but received shape [4]' });
  t.deepEqual(errors['weight dtype'], { name: 'TypeError', message: 'conv2d: expected a float32 tensor (the dtype of x) for weight but received a float64 tensor' });
  t.deepEqual(errors['rank'], { name: 'RangeError', message: 'conv2d: expected a 4-d tensor [N, C, H, W] for x but received shape [4, 5, 5]' });
  t.deepEqual(errors['int x'], { name: 'TypeError', message: 'conv2d: expected a float32 or float64 tensor for x but received an int32 tensor' });
  t.is(errors['layer groups']!.name, 'RangeError');
  t.deepEqual(errors['native channels'], { name: 'RangeError', message: 'conv2d: expected shape [6, 4, KH, KW] (x has 4 channels, groups 1) for weight but received shape [6, 3, 3, 3]' });
  t.deepEqual(errors['native groups'], { name: 'RangeError', message: 'conv2d: expected a divisor of the input channels (4) for groups but received the number 3' });
  t.deepEqual(errors['native kernel'], { name: 'RangeError', message: 'conv2d: expected a dilated kernel no larger than the padded input (5x5) for weight but received a dilated kernel of 6x6' });
  t.deepEqual(errors['native negative padding'], { name: 'RangeError', message: 'conv2d: expected integers in [0, 1073741824] for padding but received [-1, 0]' });
  t.deepEqual(errors['native pair length'], { name: 'RangeError', message: 'conv2d: expected an array of 2 integers [h, w] for stride but received an array of length 1' });
  t.deepEqual(errors['native huge padding'], { name: 'RangeError', message: 'conv2d: expected an output of at most 2^40 elements for padding but received an output of shape [2, 6, 2000000003, 2000000003]' });
  t.deepEqual(errors['native gy'], { name: 'RangeError', message: 'conv2dBackward: expected shape [2, 6, 3, 3] for gy but received shape [2, 6, 4, 4]' });
  t.deepEqual(errors['native bias'], { name: 'RangeError', message: 'conv2d: expected shape [6] for bias but received shape [5]' });
  t.deepEqual(errors['native groups zero'], { name: 'RangeError', message: 'conv2d: expected an integer in [1, 1099511627776] for groups but received the number 0' });
});
