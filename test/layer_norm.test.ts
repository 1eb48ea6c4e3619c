// layer_norm family: forward and saved statistics against a float64 JS reference,
// gradient checks (affine or not, several normalized shapes, strided leaves, size-1
// dims), float32 vs float64, constant rows, deterministic dweight/dbias, bad input.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { tensor, randn, full } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { transpose, slice } from '../ts/graph/ops/views.js';
import { layerNorm } from '../ts/graph/ops/layer_norm.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;

interface Ref { y: Float64Array; mean: Float64Array; rstd: Float64Array; dx: Float64Array; dw: Float64Array; db: Float64Array }

/** float64 layer norm over rows of C, and its backward for upstream gy (straight from the definition). */
function reference(x: ArrayLike<number>, C: number, w: ArrayLike<number> | null, b: ArrayLike<number> | null,
  eps: number, gy: ArrayLike<number>): Ref {
  const R = x.length / C;
  const r: Ref = { y: new Float64Array(x.length), mean: new Float64Array(R), rstd: new Float64Array(R), dx: new Float64Array(x.length), dw: new Float64Array(C), db: new Float64Array(C) };
  for (let i = 0; i < R; i++) {
    let m = 0;
    for (let j = 0; j < C; j++) m += x[i * C + j]!;
    m /= C;
    let v = 0;
    for (let j = 0; j < C; j++) v += (x[i * C + j]! - m) ** 2;
    v /= C;
    const rs = 1 / Math.sqrt(v + eps);
    r.mean[i] = m;
    r.rstd[i] = rs;
    let a = 0, bb = 0;
    for (let j = 0; j < C; j++) {
      const xh = (x[i * C + j]! - m) * rs;
      r.y[i * C + j] = xh * (w ? w[j]! : 1) + (b ? b[j]! : 0);
      const dn = gy[i * C + j]! * (w ? w[j]! : 1);
      a += dn;
      bb += dn * xh;
      r.dw[j] += gy[i * C + j]! * xh;
      r.db[j] += gy[i * C + j]!;
    }
    a /= C;
    bb /= C;
    for (let j = 0; j < C; j++) {
      const xh = (x[i * C + j]! - m) * rs;
      r.dx[i * C + j] = (gy[i * C + j]! * (w ? w[j]! : 1) - a - xh * bb) * rs;
    }
  }
  return r;
}

const f64 = (shape: number[], seed: number, std = 1, mean = 0) => randn(shape, { dtype: 'float64', seed, std, mean });

test('forward, mean and rstd match a float64 reference (affine variants, multi-dim normalized shapes)', (t) => {
  for (const dtype of ['float64', 'float32'] as const) {
    const tol = dtype === 'float64' ? [1e-12, 1e-10] : [2e-6, 2e-5];
    for (const [shape, ns, affine] of [
      [[4, 6], [6], 'both'], [[2, 3, 4], [3, 4], 'both'], [[5, 7], [7], 'none'], [[3, 8], [8], 'weight'], [[3, 8], [8], 'bias'],
    ] as [number[], number[], string][]) {
      const x = randn(shape, { dtype, seed: 1, std: 2, mean: 0.5 });
      const w = affine === 'both' || affine === 'weight' ? randn(ns, { dtype, seed: 2 }) : null;
      const b = affine === 'both' || affine === 'bias' ? randn(ns, { dtype, seed: 3 }) : null;
      const C = ns.reduce((p, d) => p * d, 1);
      const ref = reference(x.toArray(), C, w?.toArray() ?? null, b?.toArray() ?? null, 1e-5, new Float64Array(x.size));
      const y = layerNorm(x, ns, w, b);
      t.deepEqual(y.shape, shape);
      assertClose(t, y.toArray(), ref.y, tol[0], tol[1], `${dtype} [${shape}] ${affine}`);
      const r = native.layerNorm(x.handle, w?.handle ?? null, b?.handle ?? null, C, 1e-5);
      t.deepEqual(r.mean.shape, [x.size / C]);
      assertClose(t, native.toArray(r.mean), ref.mean, tol[0], tol[1], `${dtype} mean`);
      assertClose(t, native.toArray(r.rstd), ref.rstd, tol[0], tol[1], `${dtype} rstd`);
    }
  }
  const scalarNs = layerNorm(randn([2, 5], { seed: 4 }), 5);
  t.deepEqual(scalarNs.shape, [2, 5], 'normalizedShape as a number');
});

test('gradients match central differences (affine variants, strided leaves, size-1 dims)', (t) => {
  const x = f64([3, 5], 10, 1.5).requiresGrad_();
  const w = f64([5], 11).requiresGrad_(), b = f64([5], 12).requiresGrad_();
  assertGradcheck(t, (x, w, b) => layerNorm(x, 5, w, b), [x, w, b], {}, 'weight and bias');
  assertGradcheck(t, (x) => layerNorm(x, [5]), [x], {}, 'no affine');
  assertGradcheck(t, (x, w) => layerNorm(x, 5, w), [x, w], {}, 'weight only');
  assertGradcheck(t, (x, b) => layerNorm(x, 5, null, b), [x, b], {}, 'bias only');
  const frozenW = f64([5], 13);
  assertGradcheck(t, (x, b) => layerNorm(x, 5, frozenW, b), [x, b], {}, 'weight without grad, bias with grad');
  const x3 = f64([2, 2, 3], 14).requiresGrad_();
  const w3 = f64([2, 3], 15).requiresGrad_(), b3 = f64([2, 3], 16).requiresGrad_();
  assertGradcheck(t, (x, w, b) => layerNorm(x, [2, 3], w, b, 1e-3), [x3, w3, b3], {}, 'normalized shape [2, 3]');
  const xt = noGrad(() => transpose(f64([5, 4], 17))).requiresGrad_();
  t.false(xt.isContiguous);
  const w4 = noGrad(() => slice(f64([10, 1], 18), 0, 0, 10, 2)).requiresGrad_();  // [5, 1], row stride 2
  t.false(w4.isContiguous);
  assertGradcheck(t, (x, w) => layerNorm(x, [5, 1], w), [noGrad(() => transpose(f64([1, 5, 4], 19), 0, 2)).requiresGrad_(), w4], {}, 'strided x and weight');
  assertGradcheck(t, (x) => layerNorm(x, 5), [xt], {}, 'transposed leaf');
  assertGradcheck(t, (x, w, b) => layerNorm(x, 1, w, b), [f64([4, 1], 20).requiresGrad_(), f64([1], 21).requiresGrad_(), f64([1], 22).requiresGrad_()], {}, 'rows of one element');
  assertGradcheck(t, (x, w, b) => layerNorm(x, 6, w, b), [f64([1, 6], 23).requiresGrad_(), f64([6], 24).requiresGrad_(), f64([6], 25).requiresGrad_()], {}, 'one row');
});

test('float32 agrees with float64 (forward and the one-pass backward; vector tails, no weight)', (t) => {
  // C = 37 leaves a 5-wide vector tail; the last case has no weight or bias.
  for (const [R, C, affine] of [[64, 768, true], [50, 37, true], [33, 128, false]] as const) {
    const x64 = f64([R, C], 30, 3, 1), w64 = f64([C], 31), b64 = f64([C], 32), g64 = f64([R, C], 33);
    const ref = reference(x64.toArray(), C, affine ? w64.toArray() : null, affine ? b64.toArray() : null, 1e-5, g64.toArray());
    const to32 = (x: ReturnType<typeof f64>) => tensor(Float32Array.from(x.toArray()), [...x.shape]);
    const x32 = to32(x64), w32 = affine ? to32(w64) : null, b32 = affine ? to32(b64) : null, g32 = to32(g64);
    const f = native.layerNorm(x32.handle, w32?.handle ?? null, b32?.handle ?? null, C, 1e-5);
    assertClose(t, native.toArray(f.y), ref.y, 1e-5, 1e-4, `y C=${C}`);
    assertClose(t, native.toArray(f.mean), ref.mean, 1e-6, 1e-5, `mean C=${C}`);
    assertClose(t, native.toArray(f.rstd), ref.rstd, 1e-6, 1e-5, `rstd C=${C}`);
    const bw = native.layerNormBackward(x32.handle, w32?.handle ?? null, f.mean, f.rstd, g32.handle, C, true);
    assertClose(t, native.toArray(bw.dx!), ref.dx, 1e-4, 1e-3, `dx C=${C}`);
    assertClose(t, native.toArray(bw.dweight!), ref.dw, 1e-4, 1e-4, `dweight C=${C}`);
    assertClose(t, native.toArray(bw.dbias!), ref.db, 1e-4, 1e-4, `dbias C=${C}`);
    const only = native.layerNormBackward(x32.handle, w32?.handle ?? null, f.mean, f.rstd, g32.handle, C, false);
    t.is(only.dweight, null);
    t.deepEqual(native.toArray(only.dx!), native.toArray(bw.dx!), 'dx does not depend on weightGrads');
    // dxInto: dx is added into it in place and returned as null; the weight grads are unchanged.
    const into = to32(f64([R, C], 34)), before = into.toArray();
    const acc = native.layerNormBackward(x32.handle, w32?.handle ?? null, f.mean, f.rstd, g32.handle, C, true, into.handle);
    t.is(acc.dx, null);
    const want = Float32Array.from(native.toArray(bw.dx!), (v, i) => v + before[i]!);
    t.deepEqual(into.toArray(), want, 'dx added into dxInto (float32, the same rounding)');
    t.deepEqual(native.toArray(acc.dweight!), native.toArray(bw.dweight!));
  }
});

test('numeric hazards: constant rows and large offsets stay finite and accurate', (t) => {
  for (const dtype of ['float32', 'float64'] as const) {
    const x = full([3, 16], 7.25, { dtype }).requiresGrad_();
    const w = randn([16], { dtype, seed: 40 }).requiresGrad_(), b = randn([16], { dtype, seed: 41 }).requiresGrad_();
    const y = layerNorm(x, 16, w, b);
    const ys = y.toArray(), bs = b.toArray();
    t.true(ys.every((v, i) => v === bs[i % 16]), `${dtype} constant row gives exactly the bias`);
    y.backward(randn([3, 16], { dtype, seed: 42 }));
    for (const g of [x.grad!, w.grad!, b.grad!]) t.true(g.toArray().every(Number.isFinite), `${dtype} finite gradients`);
  }
  // Rows far from zero: two-pass float64 statistics keep float32 accurate.
  const base = randn([4, 512], { dtype: 'float64', seed: 43 }).toArray();
  const shifted = Float64Array.from(base, (v) => v + 1e4);
  const ref = reference(shifted, 512, null, null, 1e-5, new Float64Array(shifted.length));
  assertClose(t, layerNorm(tensor(Float32Array.from(shifted), [4, 512]), 512).toArray(), ref.y, 2e-3, 1e-3, 'offset 1e4 in float32');
});

test('dweight and dbias are bitwise identical for 1 and 2 threads', (t) => {
  const prev = native.getNumThreads();
  const x = randn([700, 96], { seed: 50 }), w = randn([96], { seed: 51 }), g = randn([700, 96], { seed: 52 });
  const f = native.layerNorm(x.handle, w.handle, null, 96, 1e-5);
  const run = () => {
    const r = native.layerNormBackward(x.handle, w.handle, f.mean, f.rstd, g.handle, 96, true);
    return [native.toArray(r.dx!), native.toArray(r.dweight!), native.toArray(r.dbias!), native.toArray(native.layerNorm(x.handle, w.handle, null, 96, 1e-5).y)];
  };
  try {
    native.setNumThreads(1);
    const one = run();
    native.setNumThreads(2);
    const two = run();
    for (let i = 0; i < one.length; i++) t.deepEqual(two[i], one[i], `output ${i}`);
  } finally {
    native.setNumThreads(prev);
  }
});

test('bad input is a clear TypeError/RangeError, never a crash', (t) => {
  const N = `(await import(${JSON.stringify(nativeUrl)})).native`;
  const x = 'vlm.randn([2, 4])';
  const { result, errors } = errorsInChild([
    ['weight shape', `vlm.layerNorm(${x}, 4, vlm.ones([3]))`],
    ['bias dtype', `vlm.layerNorm(${x}, 4, null, vlm.ones([4], { dtype: 'float64' }))`],
    ['trailing', `vlm.layerNorm(${x}, [1, 2, 4])`],
    ['trailing mismatch', `vlm.layerNorm(${x}, 5)`],
    ['shape type', `vlm.layerNorm(${x}, 'four')`],
    ['nan eps', `vlm.layerNorm(${x}, 4, null, null, NaN)`],
    ['negative eps', `vlm.layerNorm(${x}, 4, null, null, -1)`],
    ['int x', "vlm.layerNorm(vlm.tensor([1, 2], undefined, { dtype: 'int32' }), 2)"],
    ['disposed weight', `const w = vlm.ones([4]); w.dispose(); vlm.layerNorm(${x}, 4, w)`],
    ['native size', `${N}.layerNorm(${x}.handle, null, null, 3, 1e-5)`],
    ['native nan eps', `${N}.layerNorm(${x}.handle, null, null, 4, NaN)`],
    ['native weight', `${N}.layerNorm(${x}.handle, vlm.ones([5]).handle, null, 4, 1e-5)`],
    ['native mean', `const xx = ${x}; const f = ${N}.layerNorm(xx.handle, null, null, 4, 1e-5); ${N}.layerNormBackward(xx.handle, null, f.rstd, vlm.ones([3]).handle, xx.handle, 4, true)`],
    ['native gy', `const xx = ${x}; const f = ${N}.layerNorm(xx.handle, null, null, 4, 1e-5); ${N}.layerNormBackward(xx.handle, null, f.mean, f.rstd, vlm.ones([4, 2]).handle, 4, false)`],
  ]);
  t.is(result.status, 0, result.stderr);
  t.deepEqual(errors['weight shape'], { name: 'RangeError', message: 'layerNorm: expected shape [4] (normalizedShape) for weight but received shape [3]' });
  t.deepEqual(errors['bias dtype'], { name: 'TypeError', message: 'layerNorm: expected a float32 tensor (the dtype of x) for bias but received a float64 tensor' });
  t.deepEqual(errors['trailing'], { name: 'RangeError', message: 'layerNorm: expected a tensor whose trailing dims are [1, 2, 4] for x but received shape [2, 4]' });
  t.deepEqual(errors['trailing mismatch'], { name: 'RangeError', message: 'layerNorm: expected a tensor whose trailing dims are [5] for x but received shape [2, 4]' });
  t.is(errors['shape type']!.name, 'RangeError');
  t.deepEqual(errors['nan eps'], { name: 'RangeError', message: 'layerNorm: expected a finite non-negative number for eps but received the number NaN' });
  t.deepEqual(errors['negative eps'], { name: 'RangeError', message: 'layerNorm: expected a finite non-negative number for eps but received the number -1' });
  t.deepEqual(errors['int x'], { name: 'TypeError', message: 'layerNorm: expected a float32 or float64 tensor for x but received an int32 tensor' });
  t.deepEqual(errors['disposed weight'], { name: 'TypeError', message: 'layerNorm: expected a live tensor for weight but received a disposed tensor' });
  t.deepEqual(errors['native size'], { name: 'RangeError', message: 'layerNorm: expected the product of trailing dims of x (shape [2, 4]) for size but received 3' });
  t.deepEqual(errors['native nan eps'], { name: 'RangeError', message: 'layerNorm: expected a finite non-negative number for eps but received the number NaN' });
  t.deepEqual(errors['native weight'], { name: 'RangeError', message: 'layerNorm: expected a tensor of 4 elements (the normalized shape) for weight but received shape [5]' });
  t.deepEqual(errors['native mean'], { name: 'RangeError', message: 'layerNormBackward: expected a tensor of 2 elements (one per row) for rstd but received shape [3]' });
  t.deepEqual(errors['native gy'], { name: 'RangeError', message: 'layerNormBackward: expected shape [2, 4] for gy but received shape [4, 2]' });
});
