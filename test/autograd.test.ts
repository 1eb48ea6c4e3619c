// The autograd engine: accumulation, fan-out, retained graphs, noGrad, detach,
// frozen leaves; and gradient checks of every view op.
import test from 'ava';
import { native } from '../ts/native.js';
import { noGrad } from '../ts/graph/autograd.js';
import { tidy } from '../ts/graph/scope.js';
import { tensor, randn } from '../ts/graph/creation.js';
import { reshape, permute, transpose, contiguous, slice, select, concat, split, stack, expand, squeeze, unsqueeze, flatten } from '../ts/graph/ops/views.js';
import { add, mul } from '../ts/graph/ops/elementwise.js';
import { sum } from '../ts/graph/ops/reduce.js';
import { linear } from '../ts/graph/ops/matmul.js';
import { layerNorm } from '../ts/graph/ops/layer_norm.js';
import { Tensor } from '../ts/graph/tensor.js';
import { assertGradcheck } from './helpers/assert.js';

const f64 = (shape: number[], seed: number) => randn(shape, { dtype: 'float64', seed, requiresGrad: true });

test('backward through views routes each gradient element to its source', (t) => {
  const x = tensor([[1, 2, 3], [4, 5, 6]], undefined, { dtype: 'float64', requiresGrad: true });
  const y = reshape(permute(x, [1, 0]), [6]);  // x^T flattened: 1 4 2 5 3 6
  y.backward(tensor([10, 40, 20, 50, 30, 60], undefined, { dtype: 'float64' }));
  t.deepEqual([...x.grad!.toArray()], [10, 20, 30, 40, 50, 60]);
});

test('gradients accumulate across backward calls and through fan-out', (t) => {
  const x = tensor([1, 2, 3], undefined, { dtype: 'float64', requiresGrad: true });
  const y = concat([x, x, slice(x, 0, 1)], 0);  // x used three times
  const g = tensor([1, 1, 1, 2, 2, 2, 5, 5], undefined, { dtype: 'float64' });
  y.backward(g, { retainGraph: true });
  t.deepEqual([...x.grad!.toArray()], [3, 8, 8]);
  y.backward(g);
  t.deepEqual([...x.grad!.toArray()], [6, 16, 16]);
  t.throws(() => y.backward(g), { message: /already freed/ });
});

test('a leaf used twice through aliasing views gets independent gradient storage', (t) => {
  const a = tensor([1, 2], undefined, { dtype: 'float64', requiresGrad: true });
  const b = tensor([3, 4], undefined, { dtype: 'float64', requiresGrad: true });
  const y = concat([reshape(a, [2]), b], 0);
  y.backward(tensor([1, 2, 3, 4], undefined, { dtype: 'float64' }));
  y.dispose();
  const y2 = concat([a, b], 0);
  y2.backward(tensor([1, 1, 1, 1], undefined, { dtype: 'float64' }));
  t.deepEqual([...a.grad!.toArray()], [2, 3]);
  t.deepEqual([...b.grad!.toArray()], [4, 5]);
});

test('a fresh gradient is taken over into .grad; a shared one is copied, so grads never alias', (t) => {
  const x = tensor([1, 2, 3], undefined, { dtype: 'float64', requiresGrad: true });
  const fresh = randn([3], { dtype: 'float64', seed: 1 });
  t.true(fresh.handle.soleOwner);
  const view = reshape(fresh, [3, 1]);
  t.false(fresh.handle.soleOwner, 'a second handle onto the storage');
  t.false(slice(randn([4], { dtype: 'float64', seed: 2 }), 0, 1, 3).handle.soleOwner, 'a view of part of a storage');
  view.dispose();
  // The seed belongs to the caller: copied, and later accumulation leaves it unchanged.
  const seed = tensor([1, 1, 1], undefined, { dtype: 'float64' });
  reshape(x, [3]).backward(seed);
  reshape(x, [3]).backward(seed);
  t.deepEqual([...x.grad!.toArray()], [2, 2, 2]);
  t.deepEqual([...seed.toArray()], [1, 1, 1]);
  // Two leaves fed the same gradient storage (an add's backward aliases g) each own theirs.
  const a = tensor([1, 2], undefined, { dtype: 'float64', requiresGrad: true });
  const b = tensor([3, 4], undefined, { dtype: 'float64', requiresGrad: true });
  add(mul(a, 1), mul(b, 1)).backward(tensor([5, 6], undefined, { dtype: 'float64' }));
  native.axpy(a.grad!.handle, a.grad!.handle, 1);
  t.deepEqual([...a.grad!.toArray()], [10, 12]);
  t.deepEqual([...b.grad!.toArray()], [5, 6]);
  // A linear layer's weight gradient is fresh: stored as it came, contiguous.
  const w = randn([4, 3], { dtype: 'float64', seed: 3, requiresGrad: true });
  sum(linear(randn([5, 3], { dtype: 'float64', seed: 4 }), w)).backward();
  t.true(w.grad!.isContiguous);
  t.true(w.grad!.handle.soleOwner);
});

test('fan-out through linear and layerNorm accumulates into the pending gradient in place (no adds), with the same gradients', (t) => {
  // h feeds three linears (q, k, v as in attention) and a layerNorm; the residual add feeds x twice.
  const x = randn([6, 5], { dtype: 'float64', seed: 11, requiresGrad: true });
  const ws = [12, 13, 14].map((s) => randn([4, 5], { dtype: 'float64', seed: s, requiresGrad: true }));
  const lw = randn([5], { dtype: 'float64', seed: 15, requiresGrad: true });
  const cy = randn([6, 4], { dtype: 'float64', seed: 16 }), cz = randn([6, 5], { dtype: 'float64', seed: 17 });
  const f = (xx: Tensor, a: Tensor, b: Tensor, c: Tensor, w: Tensor) => {
    const h = mul(xx, 1.5);
    const y = add(add(linear(h, a), linear(h, b)), linear(h, c));
    return add(sum(mul(y, cy)), sum(mul(add(layerNorm(h, 5, w), layerNorm(h, 5)), cz)));
  };
  assertGradcheck(t, f, [x, ...ws, lw] as [Tensor, Tensor, Tensor, Tensor, Tensor], {}, 'fan-out');
  const n = native as unknown as Record<string, (...a: unknown[]) => unknown>;
  const orig = n.binary!;
  const adds: string[] = [];
  n.binary = (op: unknown, ...rest: unknown[]) => {
    adds.push(String(op));
    return orig(op, ...rest);
  };
  try {
    tidy(() => f(x, ws[0]!, ws[1]!, ws[2]!, lw).backward());
  } finally {
    n.binary = orig;
  }
  // the forward's four adds (mul by a number is affine, not binary) and nothing in the backward
  t.deepEqual(adds.filter((o) => o === 'add'), ['add', 'add', 'add', 'add'], 'no add of gradients in the backward');
});

test('backward needs a scalar or a gradient of the right shape', (t) => {
  const x = tensor([1, 2], undefined, { dtype: 'float64', requiresGrad: true });
  const y = reshape(x, [2, 1]);
  t.throws(() => y.backward(), { instanceOf: RangeError, message: /scalar/ });
  t.throws(() => y.backward(tensor([1, 2], undefined, { dtype: 'float64' })), { instanceOf: RangeError, message: /gradient of shape \[2, 1\]/ });
  const s = select(x, 0, 1);
  s.backward();
  t.deepEqual([...x.grad!.toArray()], [0, 1]);
});

test('noGrad records nothing; detach cuts the graph; frozen leaves get no gradient', (t) => {
  const x = tensor([1, 2], undefined, { dtype: 'float64', requiresGrad: true });
  const frozen = tensor([5, 6], undefined, { dtype: 'float64' });
  const y = noGrad(() => reshape(x, [2, 1]));
  t.false(y.requiresGrad);
  t.is(y._node, null);
  const d = x.detach();
  t.false(d.requiresGrad);
  const z = concat([x, d, frozen], 0);
  t.true(z.requiresGrad);
  z.backward(tensor([1, 1, 1, 1, 1, 1], undefined, { dtype: 'float64' }));
  t.deepEqual([...x.grad!.toArray()], [1, 1]);
  t.is(frozen.grad, null);
  t.is(d.grad, null);
  t.throws(() => concat([frozen, frozen], 0).backward(tensor([1, 1, 1, 1], undefined, { dtype: 'float64' })), { instanceOf: TypeError, message: /does not require grad/ });
});

test('retainGrad keeps an intermediate gradient', (t) => {
  const x = tensor([1, 2, 3, 4], undefined, { dtype: 'float64', requiresGrad: true });
  const m = reshape(x, [2, 2]).retainGrad();
  transpose(m).backward(tensor([[1, 2], [3, 4]], undefined, { dtype: 'float64' }));
  t.deepEqual([...m.grad!.toArray()], [1, 3, 2, 4]);
  t.deepEqual([...x.grad!.toArray()], [1, 3, 2, 4]);
});

test('backward inside tidy frees intermediates but keeps leaf gradients', (t) => {
  const x = tensor([1, 2, 3, 4], undefined, { dtype: 'float64', requiresGrad: true });
  const step = (i: number) => tidy(() => {
    const y = concat([transpose(reshape(x, [2, 2])), reshape(x, [2, 2])], 0);
    y.backward(randn([4, 2], { dtype: 'float64', seed: i }));
  });
  step(0);  // creates x.grad
  const before = native.memory().cpu.liveBytes;
  for (let i = 1; i < 100; i++) step(i);
  t.false(x.grad!.disposed);
  t.is(native.memory().cpu.liveBytes, before);
});

test('gradcheck: reshape, permute, transpose, contiguous, flatten', (t) => {
  assertGradcheck(t, (x) => reshape(permute(x, [2, 0, 1]), [4, 6]), [f64([2, 3, 4], 1)], {}, 'reshape/permute');
  assertGradcheck(t, (x) => contiguous(transpose(x, 0, 2)), [f64([2, 1, 3], 2)], {}, 'transpose');
  assertGradcheck(t, (x) => flatten(x, 1), [f64([2, 2, 2], 3)], {}, 'flatten');
});

test('gradcheck: slice with steps, select, squeeze, unsqueeze', (t) => {
  assertGradcheck(t, (x) => slice(x, 1, 1, 5, 2), [f64([3, 6], 4)], {}, 'slice step');
  assertGradcheck(t, (x) => select(x, 0, -1), [f64([3, 2], 5)], {}, 'select');
  assertGradcheck(t, (x) => unsqueeze(squeeze(x), 0), [f64([1, 3, 1], 6)], {}, 'squeeze');
});

test('gradcheck: concat, stack, split on non-contiguous leaves', (t) => {
  const a = noGrad(() => transpose(randn([3, 2], { dtype: 'float64', seed: 7 }))).requiresGrad_();
  const b = f64([2, 4], 8);
  assertGradcheck(t, (p, q) => concat([p, q, p], 1), [a, b], {}, 'concat');
  assertGradcheck(t, (p) => stack([p, p], 2), [a], {}, 'stack');
  assertGradcheck(t, (q) => split(q, [1, 3], 1)[1]!, [b], {}, 'split');
});

test('gradcheck: expand sums the gradient back over broadcast axes', (t) => {
  assertGradcheck(t, (x) => expand(x, [4, 3, 2]), [f64([3, 1], 9)], {}, 'expand');
});
