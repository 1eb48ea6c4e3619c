// Native tensors: creation, dtypes, round trips, views, copies, the seeded generator.
import test from 'ava';
import { native } from '../ts/native.js';
import { Tensor } from '../ts/graph/tensor.js';
import { tensor, zeros, ones, full, arange, randn, rand, manualSeed, zerosLike } from '../ts/graph/creation.js';
import { reshape, permute, transpose, contiguous, slice, select, concat, split, stack, expand, squeeze, unsqueeze, flatten, view } from '../ts/graph/ops/views.js';

test('tensor() from nested arrays infers the shape and keeps the values', (t) => {
  const x = tensor([[1, 2, 3], [4, 5, 6]]);
  t.deepEqual([...x.shape], [2, 3]);
  t.is(x.dtype, 'float32');
  t.deepEqual([...x.toArray()], [1, 2, 3, 4, 5, 6]);
  x.dispose();
});

test('tensor() from typed arrays takes their dtype; explicit dtype converts', (t) => {
  const a = tensor(new Float64Array([1.5, 2.5]));
  t.is(a.dtype, 'float64');
  const b = tensor(new Int32Array([1, 2, 3, 4]), [2, 2]);
  t.is(b.dtype, 'int32');
  t.deepEqual([...b.shape], [2, 2]);
  const c = tensor([1.7, 2.2], undefined, { dtype: 'int32' });
  t.deepEqual([...c.toArray()], [1, 2]);
  const u = tensor([0, 255, 7], undefined, { dtype: 'uint8' });
  t.deepEqual([...u.toArray()], [0, 255, 7]);
  const s = tensor(3.25);
  t.deepEqual([...s.shape], []);
  t.is(s.item(), 3.25);
});

test('tensor() rejects ragged arrays and wrong sizes', (t) => {
  t.throws(() => tensor([[1, 2], [3]]), { instanceOf: RangeError });
  t.throws(() => tensor(new Float32Array(5), [2, 3]), { instanceOf: RangeError, message: /6 elements for shape \[2, 3\]/ });
  t.throws(() => tensor(['a' as unknown as number]), { instanceOf: TypeError });
});

test('zeros, ones, full, arange and *Like', (t) => {
  t.deepEqual([...zeros([2, 2]).toArray()], [0, 0, 0, 0]);
  t.deepEqual([...ones([3], { dtype: 'float64' }).toArray()], [1, 1, 1]);
  t.deepEqual([...full([2], 7, { dtype: 'int32' }).toArray()], [7, 7]);
  t.deepEqual([...arange(5).toArray()], [0, 1, 2, 3, 4]);
  t.deepEqual([...arange(1, 2, 0.25, { dtype: 'float64' }).toArray()], [1, 1.25, 1.5, 1.75]);
  t.deepEqual([...arange(3, 0, -1).toArray()], [3, 2, 1]);
  const z = zerosLike(tensor([[1, 2]], undefined, { dtype: 'float64' }));
  t.is(z.dtype, 'float64');
  t.deepEqual([...z.shape], [1, 2]);
  t.throws(() => arange(0, 1, 0), { instanceOf: RangeError });
});

test('empty tensors and rank-0 tensors round-trip', (t) => {
  const e = zeros([0, 3]);
  t.is(e.size, 0);
  t.is(e.toArray().length, 0);
  t.is(contiguous(transpose(e)).size, 0);
  t.throws(() => e.item(), { instanceOf: RangeError });
});

test('randn and rand are reproducible from a seed and have the right moments', (t) => {
  const a = Array.from(randn([10000], { seed: 7, dtype: 'float64' }).toArray());
  const b = Array.from(randn([10000], { seed: 7, dtype: 'float64' }).toArray());
  t.deepEqual(a, b);
  const mean = a.reduce((s, v) => s + v, 0) / a.length;
  const variance = a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length;
  t.true(Math.abs(mean) < 0.05, `mean ${mean}`);
  t.true(Math.abs(variance - 1) < 0.05, `variance ${variance}`);
  const u = Array.from(rand([10000], { seed: 3, low: 2, high: 4 }).toArray());
  t.true(u.every((v) => v >= 2 && v < 4));
  const um = u.reduce((s, v) => s + v, 0) / u.length;
  t.true(Math.abs(um - 3) < 0.05);
});

test('the global generator advances and manualSeed restarts it', (t) => {
  manualSeed(42);
  const a = randn([5]).toArray();
  const b = randn([5]).toArray();
  t.notDeepEqual(a, b);
  manualSeed(42);
  t.deepEqual(randn([5]).toArray(), a);
  t.deepEqual(randn([5]).toArray(), b);
});

test('random streams do not depend on the thread count', (t) => {
  const prev = native.getNumThreads();
  try {
    native.setNumThreads(1);
    const one = randn([100003], { seed: 11 }).toArray();
    native.setNumThreads(2);
    const two = randn([100003], { seed: 11 }).toArray();
    t.deepEqual(one, two);
  } finally {
    native.setNumThreads(prev);
  }
});

test('views share storage and index correctly', (t) => {
  const x = tensor([[1, 2, 3], [4, 5, 6]]);
  t.deepEqual([...transpose(x).toArray()], [1, 4, 2, 5, 3, 6]);
  t.false(transpose(x).isContiguous);
  t.deepEqual([...permute(reshape(x, [2, 3, 1]), [2, 1, 0]).shape], [1, 3, 2]);
  t.deepEqual([...slice(x, 1, 1).toArray()], [2, 3, 5, 6]);
  t.deepEqual([...slice(x, 1, 0, 3, 2).toArray()], [1, 3, 4, 6]);
  t.deepEqual([...slice(x, 1, -2, -1).toArray()], [2, 5]);
  t.deepEqual([...select(x, 0, 1).toArray()], [4, 5, 6]);
  t.deepEqual([...select(x, 1, -1).toArray()], [3, 6]);
  t.deepEqual([...expand(tensor([1, 2, 3]), [2, 3]).toArray()], [1, 2, 3, 1, 2, 3]);
  t.deepEqual([...expand(tensor([[1], [2]]), [2, 2]).toArray()], [1, 1, 2, 2]);
  t.deepEqual([...unsqueeze(x, 1).shape], [2, 1, 3]);
  t.deepEqual([...squeeze(unsqueeze(x, 0)).shape], [2, 3]);
  t.deepEqual([...flatten(x).shape], [6]);
  t.deepEqual([...reshape(transpose(x), [-1]).toArray()], [1, 4, 2, 5, 3, 6]);
  t.throws(() => view(transpose(x), [6]), { instanceOf: TypeError, message: /contiguous/ });
  t.throws(() => reshape(x, [4, -1]), { instanceOf: RangeError });
  t.throws(() => expand(x, [3, 3]), { instanceOf: RangeError });
});

test('concat, stack and split', (t) => {
  const a = tensor([[1, 2], [3, 4]]);
  const b = tensor([[5, 6]]);
  t.deepEqual([...concat([a, b], 0).toArray()], [1, 2, 3, 4, 5, 6]);
  t.deepEqual([...concat([a, transpose(a)], 1).toArray()], [1, 2, 1, 3, 3, 4, 2, 4]);
  t.deepEqual([...stack([a, a], 1).shape], [2, 2, 2]);
  const parts = split(arange(7), 3);
  t.deepEqual(parts.map((p) => [...p.toArray()]), [[0, 1, 2], [3, 4, 5], [6]]);
  const uneven = split(arange(6), [1, 5]);
  t.deepEqual(uneven.map((p) => p.size), [1, 5]);
  t.throws(() => concat([a, tensor([[1, 2, 3]])], 0), { instanceOf: RangeError });
  t.throws(() => split(arange(6), [1, 2]), { instanceOf: RangeError });
});

test('native copy broadcasts and casts; view bounds are checked', (t) => {
  const dst = zeros([2, 3], { dtype: 'float64' });
  native.copy(dst.handle, tensor([1, 2, 3], undefined, { dtype: 'int32' }).handle);
  t.deepEqual([...dst.toArray()], [1, 2, 3, 1, 2, 3]);
  t.throws(() => native.view(dst.handle, [7], [1], 0), { instanceOf: RangeError, message: /inside the storage of 6 elements/ });
  t.throws(() => native.view(dst.handle, [2], [-1], 0), { instanceOf: RangeError });
  const ok = native.view(dst.handle, [3], [-1], 2);
  t.deepEqual([...native.toArray(ok)], [3, 2, 1]);
});

test('disposed tensors are errors, not crashes; dispose is idempotent', (t) => {
  const x = tensor([1, 2]);
  x.dispose();
  x.dispose();
  t.true(x.disposed);
  t.throws(() => x.toArray(), { instanceOf: TypeError, message: 'toArray: expected a live tensor for tensor but received a disposed tensor' });
  t.throws(() => new (native as unknown as { NativeTensor: new () => unknown }).NativeTensor(), { instanceOf: TypeError });
  t.true(x instanceof Tensor);
});
