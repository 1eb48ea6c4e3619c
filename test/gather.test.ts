// gather family: indexSelect, gather and embedding against JS references, gradient
// checks (repeated indices, strided leaves, size-1 dims), deterministic index-add /
// scatter-add for any thread count, and every index checked at the boundary.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { tensor, randn } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { transpose, slice } from '../ts/graph/ops/views.js';
import { indexSelect, gather, embedding } from '../ts/graph/ops/gather.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;
const ints = (data: number[] | number[][] | number[][][], shape?: number[]) => tensor(data, shape, { dtype: 'int32' });

/** Row-major strides and multi-index helpers for the references. */
function stridesOf(shape: readonly number[]): number[] {
  const st: number[] = [];
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) { st[i] = acc; acc *= shape[i]!; }
  return st;
}
function unravel(flat: number, shape: readonly number[]): number[] {
  const at: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) { at[d] = flat % shape[d]!; flat = Math.floor(flat / shape[d]!); }
  return at;
}
const ravel = (at: number[], st: number[]) => at.reduce((s, v, d) => s + v * st[d]!, 0);

function refIndexSelect(x: ArrayLike<number>, shape: number[], axis: number, index: number[]): Float64Array {
  const outShape = [...shape];
  outShape[axis] = index.length;
  const n = outShape.reduce((p, d) => p * d, 1), st = stridesOf(shape);
  return Float64Array.from({ length: n }, (_, i) => {
    const at = unravel(i, outShape);
    at[axis] = index[at[axis]!]!;
    return x[ravel(at, st)]!;
  });
}

function refGather(x: ArrayLike<number>, shape: number[], axis: number, index: ArrayLike<number>, ishape: number[]): Float64Array {
  const st = stridesOf(shape);
  return Float64Array.from({ length: index.length }, (_, i) => {
    const at = unravel(i, ishape);
    at[axis] = index[i]!;
    return x[ravel(at, st)]!;
  });
}

function refScatterAdd(shape: number[], axis: number, index: ArrayLike<number>, ishape: number[], src: ArrayLike<number>): Float64Array {
  const out = new Float64Array(shape.reduce((p, d) => p * d, 1)), st = stridesOf(shape);
  for (let i = 0; i < index.length; i++) {
    const at = unravel(i, ishape);
    at[axis] = index[i]!;
    out[ravel(at, st)] += src[i]!;
  }
  return out;
}

test('indexSelect matches a reference on every axis, any dtype, strided x', (t) => {
  const shape = [3, 4, 5];
  const x = randn(shape, { dtype: 'float64', seed: 1 });
  for (const [axis, index] of [[0, [2, 0, 2]], [1, [3, 3, 1, 0, 2]], [2, [4]], [-1, []]] as [number, number[]][]) {
    const a = axis < 0 ? axis + 3 : axis;
    const y = indexSelect(x, axis, ints(index));
    t.deepEqual(Array.from(y.toArray()), Array.from(refIndexSelect(x.toArray(), shape, a, index)), `axis ${axis}`);
  }
  const xi = ints([[1, 2, 3], [4, 5, 6]]);
  t.deepEqual(Array.from(indexSelect(xi, 1, ints([2, 0])).toArray()), [3, 1, 6, 4], 'int32 x');
  const xt = transpose(randn([5, 4], { seed: 2 }));
  t.deepEqual(Array.from(indexSelect(xt, 1, ints([4, 1])).toArray()), Array.from(refIndexSelect(xt.toArray(), [4, 5], 1, [4, 1])), 'strided x');
});

test('gather matches torch.gather semantics (index smaller than x, strided x)', (t) => {
  const shape = [3, 4, 5];
  const x = randn(shape, { dtype: 'float64', seed: 3 });
  const cases: [number, number[][][]][] = [
    [0, [[[2, 0, 1, 1, 0]], [[0, 0, 2, 1, 1]]]],  // [2, 1, 5]
    [1, [[[3, 0], [1, 1], [0, 2]]]],                // [1, 3, 2]
    [2, [[[4, 4, 0, 1, 2, 3]], [[0, 0, 0, 0, 0, 0]], [[1, 2, 3, 4, 0, 1]]]],  // [3, 1, 6]
  ];
  for (const [axis, idx] of cases) {
    const index = ints(idx);
    const y = gather(x, axis, index);
    t.deepEqual(y.shape, index.shape);
    t.deepEqual(Array.from(y.toArray()), Array.from(refGather(x.toArray(), shape, axis, index.toArray(), [...index.shape])), `axis ${axis}`);
  }
  const xt = transpose(randn([4, 3], { seed: 4 }));  // [3, 4] strided
  const index = ints([[3, 0], [1, 1], [2, 0]]);
  t.deepEqual(Array.from(gather(xt, 1, index).toArray()), Array.from(refGather(xt.toArray(), [3, 4], 1, index.toArray(), [3, 2])), 'strided x');
});

test('embedding returns [...ids.shape, dim] rows', (t) => {
  const w = randn([6, 3], { dtype: 'float64', seed: 5 });
  const ws = w.toArray();
  const ids = ints([[5, 0, 5], [2, 2, 1]]);
  const y = embedding(w, ids);
  t.deepEqual(y.shape, [2, 3, 3]);
  t.deepEqual(Array.from(y.toArray()), [5, 0, 5, 2, 2, 1].flatMap((r) => Array.from(ws.subarray(r * 3, r * 3 + 3))));
  t.deepEqual(embedding(w, ints([4])).shape, [1, 3]);
  const idsT = transpose(ints([[1, 2], [3, 4], [5, 0]]));  // strided ids [2, 3]
  t.deepEqual(Array.from(embedding(w, idsT).toArray()), [1, 3, 5, 2, 4, 0].flatMap((r) => Array.from(ws.subarray(r * 3, r * 3 + 3))));
});

test('gradients match central differences (repeated indices, strided leaves, size-1 dims)', (t) => {
  const leaf = (shape: number[], seed: number) => randn(shape, { dtype: 'float64', seed }).requiresGrad_();
  assertGradcheck(t, (x) => indexSelect(x, 0, ints([1, 1, 0, 2])), [leaf([3, 4], 10)], {}, 'indexSelect axis 0, repeats');
  assertGradcheck(t, (x) => indexSelect(x, 1, ints([2, 0, 2])), [leaf([2, 3, 2], 11)], {}, 'indexSelect middle axis');
  const xt = noGrad(() => transpose(randn([4, 3], { dtype: 'float64', seed: 12 }))).requiresGrad_();
  assertGradcheck(t, (x) => indexSelect(x, 1, ints([3, 3])), [xt], {}, 'indexSelect strided leaf');
  assertGradcheck(t, (x) => indexSelect(x, 0, ints([0, 0, 0])), [leaf([1, 3], 13)], {}, 'indexSelect size-1 axis');
  assertGradcheck(t, (x) => gather(x, 1, ints([[0, 0, 2], [1, 2, 1]])), [leaf([2, 3], 14)], {}, 'gather axis 1, repeats');
  assertGradcheck(t, (x) => gather(x, 0, ints([[1, 0], [1, 1], [0, 1]])), [leaf([2, 3], 15)], {}, 'gather axis 0, index narrower than x');
  assertGradcheck(t, (x) => gather(x, 0, ints([[2, 0, 1]])), [xt], {}, 'gather strided leaf');
  assertGradcheck(t, (x) => gather(x, 2, ints([[[0], [0]]])), [leaf([1, 2, 1], 16)], {}, 'gather size-1 dims');
  assertGradcheck(t, (w) => embedding(w, ints([[3, 1, 3], [0, 3, 3]])), [leaf([4, 5], 17)], {}, 'embedding 2-D ids, repeats');
  const ws = noGrad(() => slice(randn([8, 3], { dtype: 'float64', seed: 18 }), 0, 0, 8, 2)).requiresGrad_();
  assertGradcheck(t, (w) => embedding(w, ints([2, 2, 0])), [ws], {}, 'embedding strided weight');
});

test('index-add and scatter-add match references and are identical for 1 and 2 threads', (t) => {
  const prev = native.getNumThreads();
  const V = 50, N = 300;
  const idsArr = Array.from({ length: N }, (_, i) => (i * 37 + (i >> 3)) % V);
  const ids = ints(idsArr);
  const cases: { name: string; run: () => ArrayLike<number>; ref: Float64Array; tol: number }[] = [];
  for (const dim of [700, 3]) {  // chunked over columns; split over destination rows
    for (const dtype of ['float32', 'float64'] as const) {
      const src = randn([N, dim], { dtype, seed: dim });
      const s = src.toArray();
      const ref = new Float64Array(V * dim);
      idsArr.forEach((r, j) => { for (let k = 0; k < dim; k++) ref[r * dim + k] += s[j * dim + k]!; });
      cases.push({ name: `indexAdd dim ${dim} ${dtype}`, run: () => native.toArray(native.indexAdd([V, dim], 0, ids.handle, src.handle)), ref, tol: dtype === 'float32' ? 1e-5 : 1e-12 });
    }
  }
  const index = ints([[[0, 2, 2, 1], [1, 1, 0, 0]], [[2, 2, 2, 2], [0, 1, 2, 0]]]);
  const src3 = randn([2, 2, 4], { dtype: 'float64', seed: 60 });
  for (const axis of [0, 1, 2]) {
    const shape = [3, 3, 3];
    const idx = Array.from(index.toArray(), (v) => Math.min(v, shape[axis]! - 1));
    const ix = ints(idx, [2, 2, 4]);
    const outShape = [...shape];
    outShape[2] = axis === 2 ? 3 : 4;
    cases.push({ name: `scatterAdd axis ${axis}`, run: () => native.toArray(native.scatterAdd(outShape, axis, ix.handle, src3.handle)),
      ref: refScatterAdd(outShape, axis, ix.toArray(), [2, 2, 4], src3.toArray()), tol: 1e-14 });
  }
  try {
    for (const c of cases) {
      native.setNumThreads(1);
      const one = c.run();
      native.setNumThreads(2);
      const two = c.run();
      t.deepEqual(Array.from(two), Array.from(one), `${c.name}: thread count`);
      assertClose(t, one, c.ref, c.tol, c.tol, c.name);
    }
  } finally {
    native.setNumThreads(prev);
  }
  const big = randn([5, 4, 3], { dtype: 'float64', seed: 61 });  // src larger than index: only its leading block is used
  const ix = ints([[[1], [0]]]);
  assertClose(t, native.toArray(native.scatterAdd([2, 2, 1], 0, ix.handle, big.handle)),
    refScatterAdd([2, 2, 1], 0, ix.toArray(), [1, 2, 1], [big.toArray()[0]!, big.toArray()[3]!]), 0, 0, 'src larger than index');
});

test('bad input is a clear TypeError/RangeError naming the position, never a crash', (t) => {
  const N = `(await import(${JSON.stringify(nativeUrl)})).native`;
  const ids = (v: string) => `vlm.tensor(${v}, undefined, { dtype: 'int32' })`;
  const w = 'vlm.randn([1000, 4])';
  const flat = `Array.from({ length: 20 }, (_, i) => i === 17 ? 1000 : i)`;
  const { result, errors } = errorsInChild([
    ['id too large', `vlm.embedding(${w}, ${ids(flat)})`],
    ['id negative 2-D', `vlm.embedding(${w}, ${ids('[[1, 2, 3], [4, 5, -1]]')})`],
    ['float ids', `vlm.embedding(${w}, vlm.tensor([1, 2]))`],
    ['disposed ids', `const d = ${ids('[[1]]')}; d.dispose(); vlm.embedding(${w}, d)`],
    ['weight rank', `vlm.embedding(vlm.randn([10]), ${ids('[1]')})`],
    ['disposed weight', `const d = ${w}; d.dispose(); vlm.embedding(d, ${ids('[1]')})`],
    ['select index', `vlm.indexSelect(vlm.randn([3, 4]), 1, ${ids('[0, 4]')})`],
    ['select index rank', `vlm.indexSelect(vlm.randn([3, 4]), 1, ${ids('[[0]]')})`],
    ['select axis', `vlm.indexSelect(vlm.randn([3, 4]), 2, ${ids('[0]')})`],
    ['gather value', `vlm.gather(vlm.randn([3, 4]), 0, ${ids('[[0, 1], [2, 3]]')})`],
    ['gather rank', `vlm.gather(vlm.randn([3, 4]), 0, ${ids('[0, 1]')})`],
    ['gather too wide', `vlm.gather(vlm.randn([3, 4]), 0, ${ids('[[0, 1, 0, 1, 0]]')})`],
    ['gather float index', 'vlm.gather(vlm.randn([3, 4]), 0, vlm.randn([1, 4]))'],
    ['native index dtype', `${N}.indexSelect(vlm.randn([3]).handle, 0, vlm.randn([2]).handle)`],
    ['native indexAdd src', `${N}.indexAdd([5, 2], 0, ${ids('[1, 2, 3]')}.handle, vlm.randn([2, 2]).handle)`],
    ['native indexAdd value', `${N}.indexAdd([5, 2], 0, ${ids('[1, 5]')}.handle, vlm.randn([2, 2]).handle)`],
    ['native scatterAdd value', `${N}.scatterAdd([2, 3], 1, ${ids('[[0, 1], [3, 0]]')}.handle, vlm.randn([2, 2]).handle)`],
    ['native scatterAdd src', `${N}.scatterAdd([2, 3], 1, ${ids('[[0, 1], [2, 0]]')}.handle, vlm.randn([2, 1]).handle)`],
    ['native scatterAdd int src', `${N}.scatterAdd([2, 3], 1, ${ids('[[0, 1], [2, 0]]')}.handle, ${ids('[[0, 1], [2, 0]]')}.handle)`],
  ]);
  t.is(result.status, 0, result.stderr);
  t.deepEqual(errors['id too large'], { name: 'RangeError', message: 'embedding: expected ids in [0, 1000) for ids but received 1000 at position 17' });
  t.deepEqual(errors['id negative 2-D'], { name: 'RangeError', message: 'embedding: expected ids in [0, 1000) for ids but received -1 at position [1, 2]' });
  t.deepEqual(errors['float ids'], { name: 'TypeError', message: 'embedding: expected an int32 tensor for ids but received a float32 tensor' });
  t.deepEqual(errors['weight rank'], { name: 'RangeError', message: 'embedding: expected a 2-D tensor [V, dim] for weight but received shape [10]' });
  t.deepEqual(errors['disposed weight'], { name: 'TypeError', message: 'embedding: expected a live tensor for weight but received a disposed tensor' });
  t.deepEqual(errors['disposed ids'], { name: 'TypeError', message: 'embedding: expected a live tensor for ids but received a disposed tensor' });
  t.deepEqual(errors['select index'], { name: 'RangeError', message: 'indexSelect: expected indices in [0, 4) for index but received 4 at position 1' });
  t.deepEqual(errors['select index rank'], { name: 'RangeError', message: 'indexSelect: expected a 1-D tensor for index but received shape [1, 1]' });
  t.deepEqual(errors['select axis'], { name: 'RangeError', message: 'indexSelect: expected an integer in [-2, 2) for axis but received the number 2' });
  t.deepEqual(errors['gather value'], { name: 'RangeError', message: 'gather: expected indices in [0, 3) for index but received 3 at position [1, 1]' });
  t.deepEqual(errors['gather rank'], { name: 'RangeError', message: 'gather: expected a tensor of rank 2 (the rank of x) for index but received shape [2]' });
  t.deepEqual(errors['gather too wide'], { name: 'RangeError', message: "gather: expected a shape no larger than x's shape [3, 4] outside axis 0 for index but received shape [1, 5]" });
  t.deepEqual(errors['gather float index'], { name: 'TypeError', message: 'gather: expected an int32 tensor for index but received a float32 tensor' });
  t.deepEqual(errors['native index dtype'], { name: 'TypeError', message: 'indexSelect: expected an int32 tensor for index but received a float32 tensor' });
  t.deepEqual(errors['native indexAdd src'], { name: 'RangeError', message: 'indexAdd: expected shape [3, 2] for src but received shape [2, 2]' });
  t.deepEqual(errors['native indexAdd value'], { name: 'RangeError', message: 'indexAdd: expected indices in [0, 5) for index but received 5 at position 1' });
  t.deepEqual(errors['native scatterAdd value'], { name: 'RangeError', message: 'scatterAdd: expected indices in [0, 3) for index but received 3 at position [1, 0]' });
  t.deepEqual(errors['native scatterAdd src'], { name: 'RangeError', message: 'scatterAdd: expected a tensor at least as large as index [2, 2] in every dim for src but received shape [2, 1]' });
  t.is(errors['native scatterAdd int src']!.name, 'TypeError');
});
