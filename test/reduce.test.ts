// reduce family: sum / mean / max against float64 JS references over every axis subset
// (keepdim, negative axes, strided views, size-1 and empty shapes), each kernel schedule
// (rows, columns, chunks), first-arg-max gradients, gradient checks, sumTo, sumSquares,
// determinism across thread counts, and bad input in a child process.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { Tensor, wrap } from '../ts/graph/tensor.js';
import { tensor, rand, randn, full } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { transpose, slice, permute } from '../ts/graph/ops/views.js';
import { mul } from '../ts/graph/ops/elementwise.js';
import { sum, mean, max, sumTo, sumSquares } from '../ts/graph/ops/reduce.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

type Op = 'sum' | 'mean' | 'max';
const fns = { sum, mean, max };

/** Reference reduction of row-major data in float64: [values, output shape]. */
function reduceRef(op: Op, data: ArrayLike<number>, shape: number[], axes: number[], keepdim: boolean): [number[], number[]] {
  const rank = shape.length;
  const red = axes.length === 0 ? [...Array(rank).keys()] : axes.map((a) => (a < 0 ? a + rank : a));
  const kept = [...Array(rank).keys()].filter((d) => !red.includes(d));
  const outShape = keepdim ? shape.map((d, i) => (red.includes(i) ? 1 : d)) : kept.map((d) => shape[d]!);
  const m = kept.reduce((p, d) => p * shape[d]!, 1);
  const acc = new Array<number>(m).fill(op === 'max' ? -Infinity : 0);
  const cnt = new Array<number>(m).fill(0);
  const total = shape.reduce((p, q) => p * q, 1);
  for (let lin = 0; lin < total; lin++) {
    const idx: number[] = [];
    let r = lin;
    for (let d = rank - 1; d >= 0; d--) { idx[d] = r % shape[d]!; r = Math.floor(r / shape[d]!); }
    const o = kept.reduce((p, d) => p * shape[d]! + idx[d]!, 0);
    const v = data[lin]!;
    if (op === 'max') acc[o] = Number.isNaN(v) || Number.isNaN(acc[o]!) ? NaN : Math.max(acc[o]!, v);
    else acc[o] = acc[o]! + v;
    cnt[o]!++;
  }
  const n = red.reduce((p, d) => p * shape[d]!, 1);
  return [op === 'mean' ? acc.map((v) => v / n) : acc, outShape];
}

function subsets(rank: number): number[][] {
  const out: number[][] = [];
  for (let mask = 1; mask < 1 << rank; mask++) out.push([...Array(rank).keys()].filter((d) => mask & (1 << d)));
  return out;
}

for (const dtype of ['float64', 'float32'] as const) {
  test(`sum / mean / max over every axis subset of [3, 4, 5], keepdim and negative axes (${dtype})`, (t) => {
    const x = randn([3, 4, 5], { dtype, seed: 1 });
    const xv = x.toArray();
    const tol = dtype === 'float64' ? 1e-14 : 1e-6;
    for (const op of ['sum', 'mean', 'max'] as Op[]) {
      for (const axes of subsets(3)) {
        for (const keepdim of [false, true]) {
          const neg = axes.map((a) => a - 3);
          const y = fns[op](x, neg.length === 1 ? neg[0] : neg, keepdim);
          const [ref, shape] = reduceRef(op, xv, [3, 4, 5], axes, keepdim);
          t.deepEqual([...y.shape], shape, `${op} ${axes} ${keepdim}`);
          assertClose(t, y.toArray(), ref, tol, tol, `${op} [${axes}] keepdim=${keepdim}`);
        }
      }
      // no axis: everything, a 0-d result
      const all = fns[op](x);
      t.deepEqual([...all.shape], []);
      assertClose(t, all.toArray(), reduceRef(op, xv, [3, 4, 5], [], false)[0], tol, tol, `${op} all`);
    }
  });
}

test('strided inputs: transposed, permuted, stepped slices and stride-0 views', (t) => {
  noGrad(() => {
    const base = randn([6, 8, 10], { dtype: 'float64', seed: 2 });
    const views: [string, Tensor][] = [
      ['transpose', transpose(base, 0, 2)],
      ['permute', permute(base, [1, 2, 0])],
      ['slice', slice(slice(base, 2, 1, 10, 3), 0, 0, 6, 2)],
      ['broadcast', wrap(native.view(base.handle, [6, 5, 10], [80, 0, 1], 0))],
    ];
    for (const [label, v] of views) {
      const vv = v.toArray();  // row-major values of the view
      for (const op of ['sum', 'mean', 'max'] as Op[])
        for (const axes of subsets(3)) {
          const [ref] = reduceRef(op, vv, [...v.shape], axes, false);
          assertClose(t, fns[op](v, axes).toArray(), ref, 1e-13, 1e-13, `${label} ${op} [${axes}]`);
        }
    }
  });
});

test('each schedule: long rows, wide columns (several blocks), one big chunked reduction', (t) => {
  // rows: [3, 70000] over the last axis; columns: [50, 600] over axis 0 (600 > one 256-wide block);
  // chunks: all of [300, 700] (> 2 chunks of 32768)
  const cases: [number[], number[] | undefined][] = [[[3, 70000], [1]], [[50, 600], [0]], [[300, 700], undefined], [[40, 3, 300], [0, 1]]];
  for (const [shape, axes] of cases) {
    const x = rand(shape, { dtype: 'float64', seed: 3, low: -1, high: 2 });
    const xv = x.toArray();
    for (const op of ['sum', 'mean', 'max'] as Op[]) {
      const [ref] = reduceRef(op, xv, shape, axes ?? [], false);
      assertClose(t, fns[op](x, axes).toArray(), ref, 1e-10, 1e-12, `${op} [${shape}] over ${axes}`);
      // float32 input accumulates in float64 across blocks: close to the float64 sum of the same values
      const x32 = wrap(native.cast(x.handle, 'float32'));
      const [ref32] = reduceRef(op, x32.toArray(), shape, axes ?? [], false);
      assertClose(t, fns[op](x32, axes).toArray(), ref32, 1e-5, 1e-6, `${op} float32 [${shape}] over ${axes}`);
    }
  }
});

test('size-1 dims, 0-d tensors and empty tensors', (t) => {
  const s = tensor(2.5, undefined, { dtype: 'float64' });
  t.is(sum(s).item(), 2.5);
  t.is(max(s).item(), 2.5);
  t.deepEqual([...sum(s).shape], []);
  const one = tensor([1, 2, 3], [1, 3, 1], { dtype: 'float64' });
  t.deepEqual([...sum(one, [0, 2]).toArray()], [1, 2, 3]);
  t.deepEqual([...mean(one, 1, true).shape], [1, 1, 1]);
  t.is(mean(one, 1, true).item(), 2);
  const e = full([0, 3], 1, { dtype: 'float64' });
  t.deepEqual([...sum(e, 0).toArray()], [0, 0, 0]);
  t.true([...mean(e, 0).toArray()].every(Number.isNaN));
  t.deepEqual([...sum(e, 1).shape], [0]);
  t.deepEqual([...max(e, 1).shape], [0]);
  t.is(sum(e).item(), 0);
  t.throws(() => max(e, 0), { instanceOf: RangeError, message: /^max: expected non-empty reduced axes for x but received shape \[0, 3\]$/ });
});

test('max propagates NaN; float32 and float64 agree', (t) => {
  const x = tensor([[1, NaN, 3], [4, 5, 6]], undefined, { dtype: 'float64' });
  const m = max(x, 1).toArray();
  t.true(Number.isNaN(m[0]!));
  t.is(m[1], 6);
  t.true(Number.isNaN(max(x).item()));
  const big = randn([1000, 131], { dtype: 'float64', seed: 4 });
  const big32 = wrap(native.cast(big.handle, 'float32'));
  for (const op of ['sum', 'mean', 'max'] as Op[])
    for (const axes of [[0], [1], [0, 1]])
      assertClose(t, fns[op](big32, axes).toArray(), fns[op](big, axes).toArray(), 1e-4, 1e-5, `${op} ${axes}`);
});

test('max gradient goes to the first arg-max of each group (ties)', (t) => {
  const x = tensor([[1, 3, 3], [2, 2, 1]], undefined, { dtype: 'float64', requiresGrad: true });
  max(x, 1).backward(tensor([10, 20], undefined, { dtype: 'float64' }));
  t.deepEqual([...x.grad!.toArray()], [0, 10, 0, 20, 0, 0]);
  x.grad = null;
  max(x, 0, true).backward(tensor([[1, 2, 3]], undefined, { dtype: 'float64' }));
  t.deepEqual([...x.grad!.toArray()], [0, 2, 3, 1, 0, 0]);
  x.grad = null;
  const y = tensor([[5, 1], [5, 5]], undefined, { dtype: 'float64', requiresGrad: true });
  max(y).backward();
  t.deepEqual([...y.grad!.toArray()], [1, 0, 0, 0]);
  // on a transposed input the order is that of the view
  const z = noGrad(() => transpose(tensor([[7, 7], [1, 7]], undefined, { dtype: 'float64' }))).requiresGrad_();
  max(z, 1).backward(tensor([1, 1], undefined, { dtype: 'float64' }));
  t.deepEqual([...z.grad!.toArray()], [1, 0, 1, 0]);  // z = [[7, 1], [7, 7]]
});

function leaf(shape: number[], seed: number): Tensor {
  return rand(shape, { dtype: 'float64', low: -2, high: 2, seed }).requiresGrad_();
}

test('gradcheck: sum, mean, max over axes, keepdim, strided and size-1 leaves', (t) => {
  const strided = noGrad(() => transpose(rand([4, 3, 2], { dtype: 'float64', seed: 5 }), 0, 2)).requiresGrad_();
  t.false(strided.isContiguous);
  const leaves: [string, Tensor][] = [['contiguous', leaf([2, 3, 4], 6)], ['strided', strided], ['size-1', leaf([3, 1, 4], 7)]];
  for (const [label, x] of leaves)
    for (const op of ['sum', 'mean', 'max'] as Op[])
      for (const axes of [undefined, 0, -1, [0, 2], [1]] as (number | number[] | undefined)[])
        for (const keepdim of [false, true])
          assertGradcheck(t, (u) => fns[op](u, axes, keepdim), [x], {}, `${label} ${op} ${JSON.stringify(axes)} ${keepdim}`);
  // a reduction in the middle of a graph, with a broadcast product after it
  const a = leaf([3, 4], 8), w = leaf([4], 9);
  assertGradcheck(t, (u, v) => sum(mul(max(u, 0, true), v)), [a, w], {}, 'max then mul');
  assertGradcheck(t, (u, v) => mean(mul(u, v), 1), [a, w], {}, 'mul then mean');
});

test('sumTo sums broadcast axes back to a shape and is differentiable', (t) => {
  const g = tensor([...Array(24).keys()], [2, 3, 4], { dtype: 'float64' });
  const gv = g.toArray();
  const shapes: number[][] = [[3, 1], [4], [], [1, 1, 4], [2, 1, 1], [3, 4], [1, 3, 4]];
  for (const shape of shapes) {
    const r = sumTo(g, shape);
    t.deepEqual([...r.shape], shape);
    const lead = 3 - shape.length;
    const axes = [...Array(3).keys()].filter((d) => d < lead || shape[d - lead] === 1);
    const [ref] = reduceRef('sum', gv, [2, 3, 4], axes, false);
    assertClose(t, r.toArray(), axes.length ? ref : [...gv], 0, 1e-15, `sumTo [${shape}]`);
  }
  t.is(sumTo(g, [2, 3, 4]), g);
  t.throws(() => sumTo(g, [5]), { instanceOf: RangeError, message: /^sumTo: expected a shape that broadcasts to \[2, 3, 4\] for shape but received \[5\]$/ });
  t.throws(() => sumTo(g, [1, 2, 3, 4]), { instanceOf: RangeError });
  const x = leaf([2, 3, 4], 10);
  assertGradcheck(t, (u) => sumTo(u, [3, 1]), [x], {}, 'sumTo [3, 1]');
  assertGradcheck(t, (u) => sumTo(u, [4]), [x], {}, 'sumTo [4]');
});

test('sumSquares: float64 accumulation, strided input, empty input', (t) => {
  const x = randn([123, 77], { dtype: 'float32', seed: 11, std: 3 });
  const ref = [...x.toArray()].reduce((s, v) => s + v * v, 0);
  t.true(Math.abs(sumSquares(x) - ref) <= 1e-12 * ref, `${sumSquares(x)} vs ${ref}`);
  const tr = noGrad(() => transpose(x));
  t.true(Math.abs(sumSquares(tr) - ref) <= 1e-12 * ref);
  // large values would lose digits in float32: 1e4^2 * 2^20 adds exactly in float64
  const big = full([1 << 20], 1e4 + 1);
  t.is(sumSquares(big), (1e4 + 1) ** 2 * (1 << 20));
  t.is(sumSquares(full([0, 5], 1)), 0);
  t.is(sumSquares(tensor([3, 4], undefined, { dtype: 'float64' })), 25);
});

test('results are bitwise identical with 1 and 2 threads', (t) => {
  const before = native.getNumThreads();
  try {
    const x = randn([400, 300], { seed: 12 });
    const tr = noGrad(() => transpose(x));
    const run = () => [
      sum(x).item(), mean(x, 0).toArray(), sum(x, 1).toArray(), max(x, 0).toArray(), sum(tr, 1).toArray(),
      sumSquares(x), mean(randn([5, 70000], { seed: 13 }), 1).toArray(),
    ];
    native.setNumThreads(1);
    const one = run();
    native.setNumThreads(2);
    const two = run();
    one.forEach((r, i) => t.deepEqual(r, two[i], `result ${i}`));
    t.deepEqual(run(), two);
  } finally {
    native.setNumThreads(before);
  }
});

test('bad input raises TypeError / RangeError naming op and argument (child process)', (t) => {
  const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;
  const pre = `const { native } = await import(${JSON.stringify(nativeUrl)}); const x = vlm.ones([2, 3]);`;
  const cases: [string, string][] = [
    ['axis out of range', `${pre} vlm.sum(x, 2)`],
    ['negative axis out of range', `${pre} vlm.mean(x, [-3])`],
    ['duplicate axes', `${pre} vlm.max(x, [1, -1])`],
    ['fractional axis', `${pre} vlm.sum(x, 0.5)`],
    ['NaN axis', `${pre} vlm.sum(x, NaN)`],
    ['string axis', `${pre} vlm.sum(x, 'rows')`],
    ['keepdim not boolean', `${pre} vlm.mean(x, 0, 'yes')`],
    ['not a tensor', `${pre} vlm.sum([1, 2])`],
    ['disposed', `${pre} const z = vlm.ones([2]); z.dispose(); vlm.max(z)`],
    ['int32', `${pre} vlm.sum(vlm.tensor([1, 2], undefined, { dtype: 'int32' }))`],
    ['max of empty', `${pre} vlm.max(vlm.zeros([0]))`],
    ['sumTo shape', `${pre} vlm.sumTo(x, [4])`],
    ['sumTo not a shape', `${pre} vlm.sumTo(x, 'x')`],
    ['sumSquares not a tensor', `${pre} vlm.sumSquares(3)`],
    ['native unknown op', `${pre} native.reduce('prod', x.handle, [], false)`],
    ['native axis range', `${pre} native.reduce('sum', x.handle, [5], false)`],
    ['native duplicate axes', `${pre} native.reduce('sum', x.handle, [0, 0], false)`],
    ['native NaN axis', `${pre} native.reduce('sum', x.handle, [NaN], false)`],
    ['native axes not array', `${pre} native.reduce('sum', x.handle, 1, false)`],
    ['native keepdim', `${pre} native.reduce('sum', x.handle, [], 1)`],
    ['native max empty', `${pre} native.reduce('max', vlm.zeros([3, 0]).handle, [1], false)`],
    ['native backward gy shape', `${pre} native.reduceMaxBackward(x.handle, [1], false, vlm.ones([3]).handle)`],
    ['native backward dtype', `${pre} native.reduceMaxBackward(x.handle, [1], false, vlm.ones([2], { dtype: 'float64' }).handle)`],
    ['native sumSquares', `${pre} native.sumSquares({})`],
    ['native axis of 0-d', `${pre} native.reduce('sum', vlm.tensor(1).handle, [0], false)`],
  ];
  const { result, errors } = errorsInChild(cases);
  t.is(result.status, 0, result.stderr);
  const expect: Record<string, [string, RegExp]> = {
    'axis out of range': ['RangeError', /^sum: expected an axis in \[-2, 2\) for axis but received 2$/],
    'negative axis out of range': ['RangeError', /^mean: expected an axis in \[-2, 2\) for axis but received -3$/],
    'duplicate axes': ['RangeError', /^max: expected distinct axes for axis but received \[1, -1\]$/],
    'fractional axis': ['TypeError', /^sum: expected an integer or an array of integers for axis but received the number 0.5$/],
    'NaN axis': ['TypeError', /^sum: expected an integer .* but received the number NaN$/],
    'string axis': ['TypeError', /^sum: expected an integer or an array of integers for axis but received the string 'rows'$/],
    'keepdim not boolean': ['TypeError', /^mean: expected a boolean for keepdim but received the string 'yes'$/],
    'not a tensor': ['TypeError', /^sum: expected a tensor for x but received an array of length 2$/],
    'disposed': ['TypeError', /^max: expected a live tensor for x but received a disposed tensor$/],
    'int32': ['TypeError', /^sum: expected a float32 or float64 tensor for x but received an int32 tensor$/],
    'max of empty': ['RangeError', /^max: expected non-empty reduced axes for x but received shape \[0\]$/],
    'sumTo shape': ['RangeError', /^sumTo: expected a shape that broadcasts to \[2, 3\] for shape but received \[4\]$/],
    'sumTo not a shape': ['TypeError', /^sumTo: expected an array of non-negative integers for shape but received the string 'x'$/],
    'sumSquares not a tensor': ['TypeError', /^sumSquares: expected a tensor for x but received the number 3$/],
    'native unknown op': ['TypeError', /^reduce: expected one of 'sum', 'mean', 'max' for op but received the string 'prod'$/],
    'native axis range': ['RangeError', /^reduce: expected an axis in \[-2, 2\) for axes but received 5$/],
    'native duplicate axes': ['RangeError', /^reduce: expected distinct axes for axes but received axes \[0, 0\]/],
    'native NaN axis': ['TypeError', /^reduce: expected an array of integers for axes but received an array holding the number nan$/i],
    'native axes not array': ['TypeError', /^reduce: expected an array of integers for axes but received the number 1$/],
    'native keepdim': ['TypeError', /^reduce: expected a boolean for keepdim but received the number 1$/],
    'native max empty': ['RangeError', /^reduce: expected non-empty reduced axes for 'max' for x but received shape \[3, 0\]$/],
    'native backward gy shape': ['RangeError', /^reduceMaxBackward: expected shape \[2\] for gy but received shape \[3\]$/],
    'native backward dtype': ['TypeError', /^reduceMaxBackward: expected a float32 tensor \(the dtype of x\) for gy but received a float64 tensor$/],
    'native sumSquares': ['TypeError', /^sumSquares: expected a tensor for x but received an object$/],
    'native axis of 0-d': ['RangeError', /^reduce: expected an axis in \[0, 0\) for axes but received 0$/],
  };
  for (const [label, [name, re]] of Object.entries(expect)) {
    const e = errors[label];
    t.truthy(e, `${label}: no result`);
    if (!e) continue;
    t.is(e.name, name, `${label}: ${e.message}`);
    t.regex(e.message, re, label);
  }
});
