// normalize family: l2Normalize against a float64 JS reference on every axis,
// gradient checks (both sides of the eps clamp, strided leaves, size-1 dims), zero
// vectors, float32 vs float64, overflow-prone values, and bad input in a child process.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { tensor, randn, zeros } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { transpose } from '../ts/graph/ops/views.js';
import { l2Normalize } from '../ts/graph/ops/normalize.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;

function reference(data: ArrayLike<number>, shape: readonly number[], axis: number, eps: number): Float64Array {
  const a = axis < 0 ? axis + shape.length : axis;
  const outer = shape.slice(0, a).reduce((p, d) => p * d, 1);
  const n = shape[a]!;
  const inner = shape.slice(a + 1).reduce((p, d) => p * d, 1);
  const out = new Float64Array(data.length);
  for (let o = 0; o < outer; o++) {
    for (let k = 0; k < inner; k++) {
      const at = (i: number) => (o * n + i) * inner + k;
      let s = 0;
      for (let i = 0; i < n; i++) s += data[at(i)]! ** 2;
      const d = Math.max(Math.sqrt(s), eps);
      for (let i = 0; i < n; i++) out[at(i)] = data[at(i)]! / d;
    }
  }
  return out;
}

test('matches a float64 reference on every axis, both dtypes, strided input', (t) => {
  for (const dtype of ['float64', 'float32'] as const) {
    const shape = [3, 4, 5];
    const x = randn(shape, { dtype, seed: 1 });
    const tol = dtype === 'float64' ? [1e-14, 1e-13] : [1e-7, 1e-6];
    for (const axis of [0, 1, 2, -1]) {
      assertClose(t, l2Normalize(x, axis).toArray(), reference(x.toArray(), shape, axis, 1e-12), tol[0], tol[1], `${dtype} axis ${axis}`);
    }
    const wide = randn([2, 40, 37], { dtype, seed: 2 });
    assertClose(t, l2Normalize(wide, 1).toArray(), reference(wide.toArray(), [2, 40, 37], 1, 1e-12), tol[0], tol[1], `${dtype} tiled lanes`);
  }
  const xt = transpose(randn([6, 4], { dtype: 'float64', seed: 3 }));
  t.false(xt.isContiguous);
  assertClose(t, l2Normalize(xt).toArray(), reference(xt.toArray(), [4, 6], -1, 1e-12), 1e-14, 1e-13, 'transposed');
});

test('gradients match central differences (both sides of the clamp, strided leaves, size-1 dims)', (t) => {
  const leaf = (shape: number[], seed: number) => randn(shape, { dtype: 'float64', seed }).requiresGrad_();
  assertGradcheck(t, (x) => l2Normalize(x), [leaf([3, 4], 10)], {}, 'last axis');
  assertGradcheck(t, (x) => l2Normalize(x, 0), [leaf([3, 4], 11)], {}, 'axis 0');
  assertGradcheck(t, (x) => l2Normalize(x, 1), [leaf([2, 3, 4], 12)], {}, 'middle axis');
  const xt = noGrad(() => transpose(randn([5, 3], { dtype: 'float64', seed: 13 }))).requiresGrad_();
  assertGradcheck(t, (x) => l2Normalize(x), [xt], {}, 'transposed leaf');
  assertGradcheck(t, (x) => l2Normalize(x, 1), [leaf([4, 1], 14)], {}, 'lanes of one element');
  assertGradcheck(t, (x) => l2Normalize(x), [leaf([1, 5], 15)], {}, 'one lane');
  // Rows 0 and 2 have norms well below eps = 1 (the clamp is active), row 1 well above.
  const mixed = tensor([[0.1, -0.2, 0.3], [2, 1, -3], [0, 0.05, 0]], undefined, { dtype: 'float64' }).requiresGrad_();
  assertGradcheck(t, (x) => l2Normalize(x, -1, 1), [mixed], {}, 'clamped and unclamped rows');
});

test('a zero vector gives zeros and a finite gradient (gy / eps)', (t) => {
  for (const dtype of ['float32', 'float64'] as const) {
    const x = zeros([2, 3], { dtype }).requiresGrad_();
    const y = l2Normalize(x, -1, 1e-6);
    t.true(y.toArray().every((v) => v === 0), dtype);
    y.backward(tensor([[1, 2, 3], [4, 5, 6]], undefined, { dtype }));
    assertClose(t, x.grad!.toArray(), [1e6, 2e6, 3e6, 4e6, 5e6, 6e6], 0, 1e-6, `${dtype} gradient`);
  }
  const d = zeros([3], { dtype: 'float64' }).requiresGrad_();
  l2Normalize(d).backward(tensor([1, 1, 1], undefined, { dtype: 'float64' }));
  t.true(d.grad!.toArray().every(Number.isFinite), 'default eps: finite');
});

test('float32 agrees with float64; huge and tiny values do not overflow', (t) => {
  const x64 = randn([64, 512], { dtype: 'float64', seed: 20, std: 3 });
  const g64 = randn([64, 512], { dtype: 'float64', seed: 21 });
  const x32 = tensor(Float32Array.from(x64.toArray()), [64, 512]), g32 = tensor(Float32Array.from(g64.toArray()), [64, 512]);
  const y64 = native.l2Normalize(x64.handle, -1, 1e-12), y32 = native.l2Normalize(x32.handle, -1, 1e-12);
  assertClose(t, native.toArray(y32), native.toArray(y64), 1e-7, 1e-5, 'forward');
  assertClose(t, native.toArray(native.l2NormalizeBackward(x32.handle, y32, g32.handle, -1, 1e-12)),
    native.toArray(native.l2NormalizeBackward(x64.handle, y64, g64.handle, -1, 1e-12)), 1e-6, 1e-4, 'backward');
  const huge = l2Normalize(tensor([3e37, 4e37, 0])).toArray();  // squares overflow float32
  assertClose(t, huge, [0.6, 0.8, 0], 1e-7, 1e-6, 'huge float32');
  const tiny = l2Normalize(tensor([3e-20, 4e-20], undefined, { dtype: 'float64' }), -1, 1e-30).toArray();
  assertClose(t, tiny, [0.6, 0.8], 1e-15, 1e-12, 'tiny with small eps');
});

test('bad input is a clear TypeError/RangeError, never a crash', (t) => {
  const N = `(await import(${JSON.stringify(nativeUrl)})).native`;
  const { result, errors } = errorsInChild([
    ['axis', 'vlm.l2Normalize(vlm.ones([2, 3]), 2)'],
    ['nan eps', 'vlm.l2Normalize(vlm.ones([2, 3]), -1, NaN)'],
    ['negative eps', 'vlm.l2Normalize(vlm.ones([2, 3]), -1, -1e-12)'],
    ['int x', "vlm.l2Normalize(vlm.ones([2, 3], { dtype: 'int32' }))"],
    ['disposed', 'const d = vlm.ones([2]); d.dispose(); vlm.l2Normalize(d)'],
    ['native eps', `${N}.l2Normalize(vlm.ones([2]).handle, 0, Infinity)`],
    ['native y shape', `${N}.l2NormalizeBackward(vlm.ones([2]).handle, vlm.ones([3]).handle, vlm.ones([2]).handle, 0, 1e-12)`],
    ['native gy dtype', `${N}.l2NormalizeBackward(vlm.ones([2]).handle, vlm.ones([2]).handle, vlm.ones([2], { dtype: 'float64' }).handle, 0, 1e-12)`],
  ]);
  t.is(result.status, 0, result.stderr);
  t.deepEqual(errors['axis'], { name: 'RangeError', message: 'l2Normalize: expected an integer in [-2, 2) for axis but received the number 2' });
  t.deepEqual(errors['nan eps'], { name: 'RangeError', message: 'l2Normalize: expected a finite non-negative number for eps but received the number NaN' });
  t.deepEqual(errors['negative eps'], { name: 'RangeError', message: 'l2Normalize: expected a finite non-negative number for eps but received the number -1e-12' });
  t.deepEqual(errors['int x'], { name: 'TypeError', message: 'l2Normalize: expected a float32 or float64 tensor for x but received an int32 tensor' });
  t.deepEqual(errors['disposed'], { name: 'TypeError', message: 'l2Normalize: expected a live tensor for x but received a disposed tensor' });
  t.deepEqual(errors['native eps'], { name: 'RangeError', message: 'l2Normalize: expected a finite non-negative number for eps but received the number Infinity' });
  t.deepEqual(errors['native y shape'], { name: 'RangeError', message: 'l2NormalizeBackward: expected shape [2] for y but received shape [3]' });
  t.deepEqual(errors['native gy dtype'], { name: 'TypeError', message: 'l2NormalizeBackward: expected a float32 tensor (the dtype of x) for gy but received a float64 tensor' });
});
