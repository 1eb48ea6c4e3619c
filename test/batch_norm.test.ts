// batch_norm family and BatchNorm2d: forward, saved statistics and running-buffer updates
// against a float64 JS reference (training and eval), hand-computed running values,
// gradient checks in both modes (affine or not, ranks 2..4, strided leaves, size-1 dims),
// float32 vs float64, bitwise determinism for 1 and 2 threads, the module's buffers and
// modes, and bad input in a child process.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { ones, rand, randn, tensor, zeros, full } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { permute, slice } from '../ts/graph/ops/views.js';
import { batchNorm } from '../ts/graph/ops/batch_norm.js';
import { BatchNorm2d } from '../ts/graph/conv_layers.js';
import type { Tensor } from '../ts/graph/tensor.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;

/** float64 batch norm of x [N, C, S] from the definition, plus the running update and backward for gy. */
function reference(x: ArrayLike<number>, N: number, C: number, S: number, w: ArrayLike<number> | null, b: ArrayLike<number> | null,
  rm: ArrayLike<number>, rv: ArrayLike<number>, training: boolean, momentum: number, eps: number, gy: ArrayLike<number>) {
  const M = N * S;
  const at = (n: number, c: number, s: number) => (n * C + c) * S + s;
  const out = { y: new Float64Array(x.length), mean: new Float64Array(C), rstd: new Float64Array(C), rm: new Float64Array(C),
    rv: new Float64Array(C), dx: new Float64Array(x.length), dw: new Float64Array(C), db: new Float64Array(C) };
  for (let c = 0; c < C; c++) {
    let m = 0, v = 0;
    if (training) {
      for (let n = 0; n < N; n++) for (let s = 0; s < S; s++) m += x[at(n, c, s)]!;
      m /= M;
      for (let n = 0; n < N; n++) for (let s = 0; s < S; s++) v += (x[at(n, c, s)]! - m) ** 2;
      v /= M;
      out.rm[c] = (1 - momentum) * rm[c]! + momentum * m;
      out.rv[c] = (1 - momentum) * rv[c]! + momentum * v * M / (M - 1);
    } else {
      m = rm[c]!;
      v = rv[c]!;
      out.rm[c] = rm[c]!;
      out.rv[c] = rv[c]!;
    }
    const rs = 1 / Math.sqrt(v + eps), wc = w ? w[c]! : 1;
    out.mean[c] = m;
    out.rstd[c] = rs;
    let sg = 0, sgx = 0;
    for (let n = 0; n < N; n++)
      for (let s = 0; s < S; s++) {
        const i = at(n, c, s), xh = (x[i]! - m) * rs;
        out.y[i] = xh * wc + (b ? b[c]! : 0);
        sg += gy[i]!;
        sgx += gy[i]! * xh;
      }
    out.dw[c] = sgx;
    out.db[c] = sg;
    for (let n = 0; n < N; n++)
      for (let s = 0; s < S; s++) {
        const i = at(n, c, s), xh = (x[i]! - m) * rs;
        out.dx[i] = training ? wc * rs * (gy[i]! - sg / M - xh * sgx / M) : wc * rs * gy[i]!;
      }
  }
  return out;
}

const f64 = (shape: number[], seed: number, std = 1, mean = 0) => randn(shape, { dtype: 'float64', seed, std, mean });

test('forward, saved statistics, running updates and backward match a float64 reference (both modes)', (t) => {
  for (const dtype of ['float64', 'float32'] as const) {
    const tol = dtype === 'float64' ? [1e-12, 1e-10] : [3e-6, 3e-5];
    for (const [shape, affine] of [[[4, 3, 5, 6], true], [[3, 5], true], [[2, 4, 7], false], [[5, 2, 1, 3], true]] as [number[], boolean][]) {
      for (const training of [true, false]) {
        const N = shape[0]!, C = shape[1]!, S = shape.slice(2).reduce((p, d) => p * d, 1);
        const x = randn(shape, { dtype, seed: 1, std: 2, mean: 0.7 });
        const w = affine ? randn([C], { dtype, seed: 2 }) : null, b = affine ? randn([C], { dtype, seed: 3 }) : null;
        const rm = randn([C], { dtype, seed: 4 }), rv = rand([C], { dtype, seed: 5, low: 0.5, high: 2 });
        const gy = randn(shape, { dtype, seed: 6 });
        const ref = reference(x.toArray(), N, C, S, w?.toArray() ?? null, b?.toArray() ?? null, rm.toArray(), rv.toArray(), training, 0.1, 1e-5, gy.toArray());
        const label = `${dtype} [${shape}] ${training ? 'training' : 'eval'}${affine ? '' : ' no affine'}`;
        const r = native.batchNorm(x.handle, rm.handle, rv.handle, w?.handle ?? null, b?.handle ?? null, training, 0.1, 1e-5);
        assertClose(t, native.toArray(r.y), ref.y, tol[0], tol[1], `${label} y`);
        assertClose(t, native.toArray(r.mean), ref.mean, tol[0], tol[1], `${label} mean`);
        assertClose(t, native.toArray(r.rstd), ref.rstd, tol[0], tol[1], `${label} rstd`);
        assertClose(t, rm.toArray(), ref.rm, tol[0], tol[1], `${label} running mean`);
        assertClose(t, rv.toArray(), ref.rv, tol[0], tol[1], `${label} running var`);
        const g = native.batchNormBackward(x.handle, w?.handle ?? null, r.mean, r.rstd, gy.handle, training, true, true, true);
        assertClose(t, native.toArray(g.dx!), ref.dx, tol[0], tol[1], `${label} dx`);
        assertClose(t, native.toArray(g.dweight!), ref.dw, tol[0] * 10, tol[1], `${label} dweight`);
        assertClose(t, native.toArray(g.dbias!), ref.db, tol[0] * 10, tol[1], `${label} dbias`);
      }
    }
  }
});

test('running statistics: the values torch gives, strided buffers, no buffers in training', (t) => {
  // one channel holding 1, 2, 3, 4: mean 2.5, biased var 1.25, unbiased 5/3
  const x = tensor([[[1, 2]], [[3, 4]]], undefined, { dtype: 'float64' });  // [2, 1, 2]
  const rm = zeros([1], { dtype: 'float64' }), rv = ones([1], { dtype: 'float64' });
  const y = batchNorm(x, rm, rv, null, null, { training: true, momentum: 0.1 });
  assertClose(t, rm.toArray(), [0.25], 1e-15, 0, 'running mean 0.9 * 0 + 0.1 * 2.5');
  assertClose(t, rv.toArray(), [0.9 + 0.1 * 5 / 3], 1e-15, 0, 'running var 0.9 * 1 + 0.1 * 5/3');
  const rs = 1 / Math.sqrt(1.25 + 1e-5);
  assertClose(t, y.toArray(), [-1.5 * rs, -0.5 * rs, 0.5 * rs, 1.5 * rs], 1e-14, 0, 'normalised with the biased variance');
  batchNorm(x, rm, rv, null, null, { training: true, momentum: 0.5 });
  assertClose(t, rm.toArray(), [0.5 * 0.25 + 0.5 * 2.5], 1e-15, 0, 'second update with momentum 0.5');
  // eval: uses the running statistics and leaves them alone
  const e = batchNorm(x, rm, rv, null, null, { training: false });
  const m = rm.toArray()[0]!, v = rv.toArray()[0]!;
  assertClose(t, e.toArray(), [1, 2, 3, 4].map((u) => (u - m) / Math.sqrt(v + 1e-5)), 1e-14, 0, 'eval output');
  t.deepEqual(rm.toArray(), Float64Array.from([m]));
  // strided running buffers (every other element of a longer tensor) are updated in place
  const big = f64([2, 3, 4], 7);
  const storeM = zeros([6], { dtype: 'float64' }), storeV = ones([6], { dtype: 'float64' });
  const sm = slice(storeM, 0, 0, 6, 2), sv = slice(storeV, 0, 1, 6, 2);
  t.false(sm.isContiguous);
  batchNorm(big, sm, sv, null, null, { training: true });
  const ref = reference(big.toArray(), 2, 3, 4, null, null, [0, 0, 0], [1, 1, 1], true, 0.1, 1e-5, new Float64Array(24));
  const allM = storeM.toArray(), allV = storeV.toArray();
  assertClose(t, [allM[0]!, allM[2]!, allM[4]!], ref.rm, 1e-14, 0, 'strided running mean');
  assertClose(t, [allV[1]!, allV[3]!, allV[5]!], ref.rv, 1e-14, 0, 'strided running var');
  t.deepEqual([allM[1], allM[3], allM[5], allV[0], allV[2], allV[4]], [0, 0, 0, 1, 1, 1], 'neighbours untouched');
  // training without running buffers
  const y2 = batchNorm(big, null, null, null, null, { training: true });
  assertClose(t, y2.toArray(), ref.y, 1e-12, 1e-10, 'no running buffers');
});

test('gradients match central differences (training and eval, affine variants, strided leaves, size-1 dims)', (t) => {
  for (const training of [true, false]) {
    const mode = training ? 'training' : 'eval';
    const stats = () => [f64([3], 20), rand([3], { dtype: 'float64', seed: 21, low: 0.5, high: 2 })] as [Tensor, Tensor];
    const x = f64([4, 3, 2, 3], 22, 1.5).requiresGrad_();
    const w = f64([3], 23).requiresGrad_(), b = f64([3], 24).requiresGrad_();
    let [rm, rv] = stats();
    assertGradcheck(t, (x, w, b) => batchNorm(x, rm, rv, w, b, { training }), [x, w, b], {}, `${mode} affine`);
    [rm, rv] = stats();
    assertGradcheck(t, (x) => batchNorm(x, rm, rv, null, null, { training, eps: 1e-3 }), [x], {}, `${mode} no affine`);
    [rm, rv] = stats();
    const frozenW = f64([3], 25);
    assertGradcheck(t, (x, b) => batchNorm(x, rm, rv, frozenW, b, { training }), [x, b], {}, `${mode} frozen weight`);
    [rm, rv] = stats();
    assertGradcheck(t, (w, b) => batchNorm(x.detach(), rm, rv, w, b, { training }), [w, b], {}, `${mode} parameters only`);
    [rm, rv] = stats();
    assertGradcheck(t, (x, w, b) => batchNorm(x, rm, rv, w, b, { training }), [f64([5, 3], 26).requiresGrad_(), w, b], {}, `${mode} [N, C]`);
    [rm, rv] = stats();
    const xs = noGrad(() => permute(f64([3, 2, 4, 1], 27), [2, 0, 1, 3])).requiresGrad_();  // [4, 3, 2, 1], strided
    t.false(xs.isContiguous);
    assertGradcheck(t, (x, w, b) => batchNorm(x, rm, rv, w, b, { training }), [xs, w, b], {}, `${mode} strided x with a size-1 dim`);
    [rm, rv] = stats();
    const ws = noGrad(() => slice(f64([6], 28), 0, 0, 6, 2)).requiresGrad_();
    assertGradcheck(t, (x, w) => batchNorm(x, rm, rv, w, null, { training }), [x, ws], {}, `${mode} strided weight`);
  }
});

test('float32 agrees with float64 at a larger size; constant channels stay finite', (t) => {
  const shape = [16, 8, 12, 12];
  const x64 = f64(shape, 30, 3, 2), w64 = f64([8], 31), b64 = f64([8], 32), g64 = f64(shape, 33);
  const to32 = (v: Tensor) => tensor(Float32Array.from(v.toArray()), [...v.shape]);
  const x32 = to32(x64), w32 = to32(w64), b32 = to32(b64), g32 = to32(g64);
  const ref = reference(x64.toArray(), 16, 8, 144, w64.toArray(), b64.toArray(), new Float64Array(8), new Float64Array(8).fill(1), true, 0.1, 1e-5, g64.toArray());
  const r = native.batchNorm(x32.handle, null, null, w32.handle, b32.handle, true, 0.1, 1e-5);
  assertClose(t, native.toArray(r.y), ref.y, 1e-5, 1e-4, 'y');
  const g = native.batchNormBackward(x32.handle, w32.handle, r.mean, r.rstd, g32.handle, true, true, true, true);
  assertClose(t, native.toArray(g.dx!), ref.dx, 1e-4, 1e-3, 'dx');
  assertClose(t, native.toArray(g.dweight!), ref.dw, 2e-3, 1e-4, 'dweight');
  assertClose(t, native.toArray(g.dbias!), ref.db, 2e-3, 1e-4, 'dbias');
  for (const dtype of ['float32', 'float64'] as const) {
    const c = full([4, 2, 3], 5.5, { dtype }).requiresGrad_();
    const bb = randn([2], { dtype, seed: 34 }).requiresGrad_();
    const y = batchNorm(c, null, null, null, bb, { training: true });
    const bs = bb.toArray();
    t.true(y.toArray().every((v, i) => v === bs[Math.floor(i / 3) % 2]), `${dtype} constant channel gives exactly the bias`);
    y.backward(randn([4, 2, 3], { dtype, seed: 35 }));
    t.true(c.grad!.toArray().every(Number.isFinite), `${dtype} finite dx`);
  }
});

test('outputs and gradients are bitwise identical for 1 and 2 threads', (t) => {
  const prev = native.getNumThreads();
  const x = randn([9, 12, 10, 10], { seed: 40 }), w = randn([12], { seed: 41 }), b = randn([12], { seed: 42 }), gy = randn([9, 12, 10, 10], { seed: 43 });
  const run = (training: boolean) => {
    const rm = zeros([12]), rv = ones([12]);
    const r = native.batchNorm(x.handle, rm.handle, rv.handle, w.handle, b.handle, training, 0.1, 1e-5);
    const g = native.batchNormBackward(x.handle, w.handle, r.mean, r.rstd, gy.handle, training, true, true, true);
    return [r.y, r.mean, r.rstd, rm.handle, rv.handle, g.dx!, g.dweight!, g.dbias!].map((h) => native.toArray(h));
  };
  try {
    for (const training of [true, false]) {
      native.setNumThreads(1);
      const one = run(training);
      native.setNumThreads(2);
      const two = run(training);
      for (let i = 0; i < one.length; i++) t.deepEqual(two[i], one[i], `${training ? 'training' : 'eval'} output ${i}`);
    }
  } finally {
    native.setNumThreads(prev);
  }
});

test('BatchNorm2d: buffers in the state dict, train/eval modes, options', (t) => {
  const m = new BatchNorm2d(3, { dtype: 'float64' });
  t.deepEqual(Object.keys(m.stateDict()), ['weight', 'bias', 'runningMean', 'runningVar']);
  t.deepEqual(m.parameters().length, 2, 'running statistics are buffers, not parameters');
  t.deepEqual([...m.weight!.toArray()], [1, 1, 1]);
  t.deepEqual([...m.bias!.toArray()], [0, 0, 0]);
  t.deepEqual([...m.runningMean!.toArray()], [0, 0, 0]);
  t.deepEqual([...m.runningVar!.toArray()], [1, 1, 1]);
  const x = f64([4, 3, 2, 2], 50, 2, 1);
  const ref = reference(x.toArray(), 4, 3, 4, null, null, [0, 0, 0], [1, 1, 1], true, 0.1, 1e-5, new Float64Array(48));
  const y = m.forward(x);
  assertClose(t, y.toArray(), ref.y, 1e-12, 1e-10, 'training output');
  assertClose(t, m.runningMean!.toArray(), ref.rm, 1e-14, 0, 'running mean updated');
  m.eval();
  const before = m.runningVar!.toArray().slice();
  const e = m.forward(x);
  t.deepEqual(m.runningVar!.toArray(), before, 'eval leaves the buffers');
  const evalRef = reference(x.toArray(), 4, 3, 4, null, null, ref.rm, ref.rv, false, 0.1, 1e-5, new Float64Array(48));
  assertClose(t, e.toArray(), evalRef.y, 1e-12, 1e-10, 'eval output uses the running statistics');
  // freezing: no gradients into weight/bias, input gradient still flows
  m.freeze();
  const xg = f64([4, 3, 2, 2], 51).requiresGrad_();
  m.forward(xg).backward(f64([4, 3, 2, 2], 52));
  t.is(m.weight!.grad, null);
  t.truthy(xg.grad);
  const plain = new BatchNorm2d(3, { affine: false, trackRunningStats: false });
  t.deepEqual(Object.keys(plain.stateDict()), []);
  plain.eval();
  const p = plain.forward(randn([2, 3, 2, 2], { seed: 53 }));
  t.deepEqual(p.shape, [2, 3, 2, 2], 'without running statistics eval mode uses the batch');
  t.throws(() => m.forward(randn([2, 3], { dtype: 'float64' })), { instanceOf: RangeError, message: /BatchNorm2d: expected a 4-d tensor/ });
});

test('bad input is a clear TypeError/RangeError, never a crash', (t) => {
  const N = `(await import(${JSON.stringify(nativeUrl)})).native`;
  const x = 'vlm.randn([4, 3, 2, 2])';
  const rm = 'vlm.zeros([3])', rv = 'vlm.ones([3])';
  const { result, errors } = errorsInChild([
    ['nan eps', `vlm.batchNorm(${x}, ${rm}, ${rv}, null, null, { eps: NaN })`],
    ['nan momentum', `vlm.batchNorm(${x}, ${rm}, ${rv}, null, null, { training: true, momentum: NaN })`],
    ['momentum > 1', `vlm.batchNorm(${x}, ${rm}, ${rv}, null, null, { training: true, momentum: 1.5 })`],
    ['channel mismatch', `vlm.batchNorm(${x}, vlm.zeros([4]), ${rv})`],
    ['weight mismatch', `vlm.batchNorm(${x}, ${rm}, ${rv}, vlm.ones([2]))`],
    ['eval without stats', `vlm.batchNorm(${x}, null, null)`],
    ['one running buffer', `vlm.batchNorm(${x}, ${rm}, null, null, null, { training: true })`],
    ['one value per channel', `vlm.batchNorm(vlm.randn([1, 3, 1, 1]), ${rm}, ${rv}, null, null, { training: true })`],
    ['rank 1', `vlm.batchNorm(vlm.randn([3]), ${rm}, ${rv})`],
    ['dtype', `vlm.batchNorm(${x}, vlm.zeros([3], { dtype: 'float64' }), ${rv})`],
    ['training type', `vlm.batchNorm(${x}, ${rm}, ${rv}, null, null, { training: 1 })`],
    ['native nan eps', `${N}.batchNorm(${x}.handle, ${rm}.handle, ${rv}.handle, null, null, false, 0.1, NaN)`],
    ['native nan momentum', `${N}.batchNorm(${x}.handle, ${rm}.handle, ${rv}.handle, null, null, true, NaN, 1e-5)`],
    ['native channels', `${N}.batchNorm(${x}.handle, vlm.zeros([4]).handle, ${rv}.handle, null, null, false, 0.1, 1e-5)`],
    ['native eval no stats', `${N}.batchNorm(${x}.handle, null, null, null, null, false, 0.1, 1e-5)`],
    ['native one value', `${N}.batchNorm(vlm.randn([1, 3]).handle, null, null, null, null, true, 0.1, 1e-5)`],
    ['native gy', `const xx = ${x}; const r = ${N}.batchNorm(xx.handle, null, null, null, null, true, 0.1, 1e-5); ${N}.batchNormBackward(xx.handle, null, r.mean, r.rstd, vlm.randn([4, 3, 2]).handle, true, true, true, true)`],
    ['native mean', `const xx = ${x}; ${N}.batchNormBackward(xx.handle, null, vlm.zeros([2]).handle, vlm.ones([3]).handle, xx.handle, true, true, true, true)`],
  ]);
  t.is(result.status, 0, result.stderr);
  t.deepEqual(errors['nan eps'], { name: 'RangeError', message: 'batchNorm: expected a finite non-negative number for eps but received the number NaN' });
  t.deepEqual(errors['nan momentum'], { name: 'RangeError', message: 'batchNorm: expected a finite number in [0, 1] for momentum but received the number NaN' });
  t.deepEqual(errors['momentum > 1'], { name: 'RangeError', message: 'batchNorm: expected a finite number in [0, 1] for momentum but received the number 1.5' });
  t.deepEqual(errors['channel mismatch'], { name: 'RangeError', message: 'batchNorm: expected shape [3] for runningMean but received shape [4]' });
  t.deepEqual(errors['weight mismatch'], { name: 'RangeError', message: 'batchNorm: expected shape [3] for weight but received shape [2]' });
  t.deepEqual(errors['eval without stats'], { name: 'TypeError', message: 'batchNorm: expected a tensor (eval mode normalises with the running statistics) for runningMean but received null' });
  t.deepEqual(errors['one running buffer'], { name: 'TypeError', message: 'batchNorm: expected a tensor when the other running buffer is given for runningVar but received null' });
  t.deepEqual(errors['one value per channel'], { name: 'RangeError', message: 'batchNorm: expected more than 1 value per channel in training mode for x but received shape [1, 3, 1, 1]' });
  t.deepEqual(errors['rank 1'], { name: 'RangeError', message: 'batchNorm: expected a tensor [N, C, ...] of rank at least 2 for x but received shape [3]' });
  t.deepEqual(errors['dtype'], { name: 'TypeError', message: 'batchNorm: expected a float32 tensor (the dtype of x) for runningMean but received a float64 tensor' });
  t.deepEqual(errors['training type'], { name: 'TypeError', message: 'batchNorm: expected a boolean for options.training but received the number 1' });
  t.deepEqual(errors['native nan eps'], { name: 'RangeError', message: 'batchNorm: expected a finite non-negative number for eps but received the number NaN' });
  t.deepEqual(errors['native nan momentum'], { name: 'RangeError', message: 'batchNorm: expected a finite number in [0, 1] for momentum but received the number NaN' });
  t.deepEqual(errors['native channels'], { name: 'RangeError', message: 'batchNorm: expected shape [3] for runningMean but received shape [4]' });
  t.deepEqual(errors['native eval no stats'], { name: 'TypeError', message: 'batchNorm: expected a tensor (eval mode normalises with the running statistics) for runningMean but received null' });
  t.deepEqual(errors['native one value'], { name: 'RangeError', message: 'batchNorm: expected more than 1 value per channel in training mode for x but received shape [1, 3]' });
  t.deepEqual(errors['native gy'], { name: 'RangeError', message: 'batchNormBackward: expected shape [4, 3, 2, 2] for gy but received shape [4, 3, 2]' });
  t.deepEqual(errors['native mean'], { name: 'RangeError', message: 'batchNormBackward: expected shape [3] for mean but received shape [2]' });
});
