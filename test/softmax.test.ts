// softmax family: forward against a float64 JS reference on every axis, gradient
// checks (axes, strided leaves, size-1 dims), float32 vs float64, numeric hazards,
// thread-count independence, and bad input in a child process.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { tensor, randn } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { transpose, slice } from '../ts/graph/ops/views.js';
import { softmax, logSoftmax } from '../ts/graph/ops/softmax.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;

/** float64 softmax / log-softmax of row-major data of `shape` along `axis`. */
function reference(data: ArrayLike<number>, shape: readonly number[], axis: number, log: boolean): Float64Array {
  const a = axis < 0 ? axis + shape.length : axis;
  const outer = shape.slice(0, a).reduce((p, d) => p * d, 1);
  const n = shape[a]!;
  const inner = shape.slice(a + 1).reduce((p, d) => p * d, 1);
  const out = new Float64Array(data.length);
  for (let o = 0; o < outer; o++) {
    for (let k = 0; k < inner; k++) {
      const at = (i: number) => (o * n + i) * inner + k;
      let m = -Infinity;
      for (let i = 0; i < n; i++) m = Math.max(m, data[at(i)]!);
      let s = 0;
      for (let i = 0; i < n; i++) s += Math.exp(data[at(i)]! - m);
      for (let i = 0; i < n; i++) out[at(i)] = log ? data[at(i)]! - m - Math.log(s) : Math.exp(data[at(i)]! - m) / s;
    }
  }
  return out;
}

const leaf = (shape: number[], seed: number, std = 1) =>
  randn(shape, { dtype: 'float64', seed, std }).requiresGrad_();

test('softmax and logSoftmax match a float64 reference on every axis, both dtypes', (t) => {
  const shape = [3, 4, 5];
  for (const dtype of ['float64', 'float32'] as const) {
    const x = randn(shape, { dtype, seed: 1, std: 3 });
    const xs = x.toArray();
    for (const axis of [0, 1, 2, -1, -3]) {
      const tol = dtype === 'float64' ? [1e-13, 1e-12] : [1e-6, 1e-5];
      assertClose(t, softmax(x, axis).toArray(), reference(xs, shape, axis, false), tol[0], tol[1], `${dtype} softmax axis ${axis}`);
      assertClose(t, logSoftmax(x, axis).toArray(), reference(xs, shape, axis, true), tol[0], tol[1], `${dtype} logSoftmax axis ${axis}`);
    }
  }
});

test('lanes with inner > 1 (tiled path, partial tiles) and strided inputs match the reference', (t) => {
  for (const [shape, axis] of [[[2, 37, 50], 1], [[3, 1850], 0], [[2, 3, 17, 5], 2]] as [number[], number][]) {
    const x = randn(shape, { dtype: 'float64', seed: 2 });
    assertClose(t, softmax(x, axis).toArray(), reference(x.toArray(), shape, axis, false), 1e-13, 1e-12, `[${shape}] axis ${axis}`);
    assertClose(t, logSoftmax(x, axis).toArray(), reference(x.toArray(), shape, axis, true), 1e-13, 1e-12, `[${shape}] axis ${axis} log`);
  }
  const base = randn([5, 7], { dtype: 'float32', seed: 3 });
  const xt = transpose(base);  // [7, 5], strided
  t.false(xt.isContiguous);
  const dense = xt.toArray();
  for (const axis of [0, 1]) {
    assertClose(t, softmax(xt, axis).toArray(), reference(dense, [7, 5], axis, false), 1e-6, 1e-5, `transposed axis ${axis}`);
  }
});

test('gradients match central differences (axes, strided leaves, size-1 dims)', (t) => {
  assertGradcheck(t, (x) => softmax(x), [leaf([3, 5], 10)], {}, 'softmax last axis');
  assertGradcheck(t, (x) => softmax(x, 0), [leaf([4, 3], 11)], {}, 'softmax axis 0');
  assertGradcheck(t, (x) => logSoftmax(x, 1), [leaf([2, 3, 4], 12)], {}, 'logSoftmax middle axis');
  assertGradcheck(t, (x) => logSoftmax(x), [leaf([3, 4], 13, 4)], {}, 'logSoftmax last axis');
  const tr = noGrad(() => transpose(randn([4, 3], { dtype: 'float64', seed: 14 }))).requiresGrad_();
  t.false(tr.isContiguous);
  assertGradcheck(t, (x) => softmax(x, -1), [tr], {}, 'transposed leaf');
  assertGradcheck(t, (x) => logSoftmax(x, 0), [tr], {}, 'transposed leaf, log, axis 0');
  const sl = noGrad(() => slice(randn([3, 8], { dtype: 'float64', seed: 15 }), 1, 0, 8, 2)).requiresGrad_();
  t.false(sl.isContiguous);
  assertGradcheck(t, (x) => softmax(x), [sl], {}, 'sliced leaf');
  assertGradcheck(t, (x) => softmax(x, 1), [leaf([1, 4, 1], 16)], {}, 'size-1 outer and inner');
  assertGradcheck(t, (x) => softmax(x, 1), [leaf([3, 1], 17)], {}, 'lane of length 1');
  assertGradcheck(t, (x) => logSoftmax(x, 1), [leaf([3, 1], 18)], {}, 'log lane of length 1');
});

test('float32 agrees with float64 on realistic rows (forward and backward)', (t) => {
  for (const shape of [[32, 768], [4, 4096]]) {
    const x64 = randn(shape, { dtype: 'float64', seed: 20, std: 4 });
    const g64 = randn(shape, { dtype: 'float64', seed: 21 });
    const x32 = tensor(Float32Array.from(x64.toArray()), shape);
    const g32 = tensor(Float32Array.from(g64.toArray()), shape);
    for (const log of [false, true]) {
      const y64 = native.softmax(x64.handle, -1, log), y32 = native.softmax(x32.handle, -1, log);
      assertClose(t, native.toArray(y32), native.toArray(y64), log ? 2e-5 : 1e-7, 2e-5, `[${shape}] forward log=${log}`);
      const d64 = native.softmaxBackward(y64, g64.handle, -1, log), d32 = native.softmaxBackward(y32, g32.handle, -1, log);
      assertClose(t, native.toArray(d32), native.toArray(d64), 1e-5, 1e-4, `[${shape}] backward log=${log}`);
    }
  }
});

test('numeric hazards: huge differences, -inf masks, all -inf rows, NaN', (t) => {
  for (const dtype of ['float32', 'float64'] as const) {
    t.deepEqual([...softmax(tensor([1000, -1000], undefined, { dtype })).toArray()], [1, 0], dtype);
    t.deepEqual([...logSoftmax(tensor([1000, -1000], undefined, { dtype })).toArray()], [0, -2000], dtype);
    const big = [...logSoftmax(tensor([1e30, 0, -1e30], undefined, { dtype })).toArray()];
    t.true(big.every(Number.isFinite), `${dtype} logSoftmax of ±1e30 is finite: ${big}`);
    t.is(big[0], 0);
    // -inf entries get exactly zero probability; a fully masked row gives zeros / -inf.
    const masked = tensor([[0, -Infinity, 0], [-Infinity, -Infinity, -Infinity]], undefined, { dtype });
    t.deepEqual([...softmax(masked).toArray()], [0.5, 0, 0.5, 0, 0, 0], `${dtype} masked softmax`);
    t.deepEqual([...logSoftmax(masked).toArray()], [-Math.LN2, -Infinity, -Math.LN2, -Infinity, -Infinity, -Infinity].map((v) => (dtype === 'float32' ? Math.fround(v) : v)), `${dtype} masked logSoftmax`);
    const nan = [...softmax(tensor([[1, NaN, 2], [1, 2, 3]], undefined, { dtype })).toArray()];
    t.true(nan.slice(0, 3).every(Number.isNaN), `${dtype} NaN propagates in its row`);
    t.true(nan.slice(3).every(Number.isFinite), `${dtype} other rows unaffected`);
  }
  // The gradient through masked entries and fully masked rows is zero, never NaN.
  const x = tensor([[0, -Infinity, 1], [-Infinity, -Infinity, -Infinity]], undefined, { dtype: 'float64' }).requiresGrad_();
  softmax(x).backward(tensor([[1, 2, 3], [4, 5, 6]], undefined, { dtype: 'float64' }));
  const g = [...x.grad!.toArray()];
  t.true(g.every(Number.isFinite), `finite gradient ${g}`);
  t.true(g[1] === 0 && g.slice(3).every((v) => v === 0), `zero gradient where masked: ${g}`);
});

test('results do not depend on the thread count', (t) => {
  const prev = native.getNumThreads();
  const x = randn([256, 768], { seed: 30 });
  const x2 = randn([64, 9, 40], { seed: 31 });
  const g = randn([256, 768], { seed: 32 });
  const run = () => {
    const y = native.softmax(x.handle, -1, false);
    return [native.toArray(y), native.toArray(native.softmax(x2.handle, 1, true)), native.toArray(native.softmaxBackward(y, g.handle, -1, false))];
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
  const { result, errors } = errorsInChild([
    ['axis', 'vlm.softmax(vlm.tensor([1, 2]), 1)'],
    ['axis log', 'vlm.logSoftmax(vlm.tensor([[1, 2]]), -3)'],
    ['int x', "vlm.softmax(vlm.tensor([1, 2], undefined, { dtype: 'int32' }))"],
    ['not tensor', 'vlm.softmax([1, 2])'],
    ['disposed', 'const d = vlm.tensor([1, 2]); d.dispose(); vlm.softmax(d)'],
    ['native axis', `${N}.softmax(vlm.tensor([1, 2]).handle, 0.5, false)`],
    ['native log flag', `${N}.softmax(vlm.tensor([1, 2]).handle, 0, 'yes')`],
    ['native gy shape', `${N}.softmaxBackward(vlm.tensor([1, 2]).handle, vlm.tensor([1, 2, 3]).handle, 0, false)`],
    ['native gy dtype', `${N}.softmaxBackward(vlm.tensor([1, 2]).handle, vlm.tensor([1, 2], undefined, { dtype: 'float64' }).handle, 0, true)`],
    ['native scalar', `${N}.softmax(vlm.tensor(new Float32Array([1]), []).handle, 0, false)`],
  ]);
  t.is(result.status, 0, result.stderr);
  t.deepEqual(errors['axis'], { name: 'RangeError', message: 'softmax: expected an integer in [-1, 1) for axis but received the number 1' });
  t.deepEqual(errors['axis log'], { name: 'RangeError', message: 'logSoftmax: expected an integer in [-2, 2) for axis but received the number -3' });
  t.deepEqual(errors['int x'], { name: 'TypeError', message: 'softmax: expected a float32 or float64 tensor for x but received an int32 tensor' });
  t.is(errors['not tensor']!.name, 'TypeError');
  t.regex(errors['not tensor']!.message, /^softmax: expected a tensor for x but received an array/);
  t.deepEqual(errors['disposed'], { name: 'TypeError', message: 'softmax: expected a live tensor for x but received a disposed tensor' });
  t.deepEqual(errors['native axis'], { name: 'TypeError', message: 'softmax: expected an integer for axis but received the number 0.5' });
  t.deepEqual(errors['native log flag'], { name: 'TypeError', message: "softmax: expected a boolean for log but received the string 'yes'" });
  t.deepEqual(errors['native gy shape'], { name: 'RangeError', message: 'softmaxBackward: expected shape [2] for gy but received shape [3]' });
  t.deepEqual(errors['native gy dtype'], { name: 'TypeError', message: 'logSoftmaxBackward: expected a float32 tensor (the dtype of y) for gy but received a float64 tensor' });
  t.deepEqual(errors['native scalar'], { name: 'RangeError', message: 'softmax: expected an axis in [0, 0) for axis but received 0' });
});
