// dropout family: identity cases, p = 1, keep rate and scaling, the mask as a pure
// function of (seed, offset + index) (thread counts, dtypes, strides, offsets, the
// global generator), gradients, and bad input in a child process.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { tensor, randn, ones, manualSeed } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { transpose } from '../ts/graph/ops/views.js';
import { dropout } from '../ts/graph/ops/dropout.js';
import { assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;
const zeroPattern = (a: ArrayLike<number>) => Array.from(a, (v) => (v === 0 ? 0 : 1));

test('p = 0 and training = false return x itself; p = 1 gives zeros and zero gradients', (t) => {
  const x = randn([3, 4], { seed: 1 }).requiresGrad_();
  t.is(dropout(x, 0), x);
  t.is(dropout(x, 0.5, { training: false }), x);
  const y = dropout(x, 1, { seed: 3 });
  t.true(y.toArray().every((v) => v === 0));
  y.backward(ones([3, 4]));
  t.true(x.grad!.toArray().every((v) => v === 0));
});

test('keeps about 1 - p of the elements and scales them by 1/(1-p)', (t) => {
  const n = 200000;
  for (const p of [0.1, 0.5, 0.9]) {
    const y = dropout(ones([n], { dtype: 'float64' }), p, { seed: 7 }).toArray();
    let kept = 0;
    for (const v of y) {
      if (v !== 0) {
        kept++;
        if (v !== 1 / (1 - p)) { t.fail(`kept value ${v} for p = ${p}`); return; }
      }
    }
    const rate = kept / n, sd = Math.sqrt(p * (1 - p) / n);
    t.true(Math.abs(rate - (1 - p)) < 5 * sd, `p = ${p}: kept ${rate}`);
  }
});

test('the mask is a function of (seed, offset + index) only: threads, dtypes, strides, offsets', (t) => {
  const prev = native.getNumThreads();
  const x = randn([300, 257], { seed: 10 });
  let one: ArrayLike<number>, two: ArrayLike<number>;
  try {
    native.setNumThreads(1);
    one = dropout(x, 0.3, { seed: 11 }).toArray();
    native.setNumThreads(2);
    two = dropout(x, 0.3, { seed: 11 }).toArray();
  } finally {
    native.setNumThreads(prev);
  }
  t.deepEqual(two, one, 'same result for 1 and 2 threads');
  t.notDeepEqual(zeroPattern(dropout(x, 0.3, { seed: 12 }).toArray()), zeroPattern(one), 'another seed, another mask');
  const x64 = tensor(Float64Array.from(x.toArray()), [300, 257]);
  t.deepEqual(zeroPattern(dropout(x64, 0.3, { seed: 11 }).toArray()), zeroPattern(one), 'same mask in float64');
  // A strided input is masked in its logical (row-major) order.
  const xt = transpose(randn([40, 30], { seed: 13 }));
  t.false(xt.isContiguous);
  const dense = tensor(xt.toArray() as Float32Array, [30, 40]);
  t.deepEqual(dropout(xt, 0.4, { seed: 14 }).toArray(), dropout(dense, 0.4, { seed: 14 }).toArray());
  // Element i under offset k is element i + k under offset 0, across Philox's 4-lane blocks.
  const n = 101;
  const base = native.toArray(native.dropout(ones([n + 7]).handle, 0.5, 99, 0));
  for (const k of [1, 2, 3, 5, 7]) {
    const shifted = native.toArray(native.dropout(ones([n]).handle, 0.5, 99, k));
    t.deepEqual(Array.from(shifted), Array.from(base.subarray(k, k + n)), `offset ${k}`);
  }
});

test('without a seed the global generator gives fresh, reproducible masks', (t) => {
  const x = ones([1000]);
  manualSeed(5);
  const a = dropout(x, 0.5).toArray(), b = dropout(x, 0.5).toArray();
  manualSeed(5);
  const a2 = dropout(x, 0.5).toArray();
  t.deepEqual(a2, a, 'same after reseeding');
  t.notDeepEqual(b, a, 'consecutive calls differ');
});

test('backward applies the same mask (gradcheck in float64, and g equals y / x)', (t) => {
  const x = randn([4, 9], { dtype: 'float64', seed: 20 }).requiresGrad_();
  assertGradcheck(t, (x) => dropout(x, 0.4, { seed: 21 }), [x], {}, 'contiguous');
  const xt = noGrad(() => transpose(randn([5, 3], { dtype: 'float64', seed: 22 }))).requiresGrad_();
  assertGradcheck(t, (x) => dropout(x, 0.6, { seed: 23 }), [xt], {}, 'transposed leaf');
  const o = ones([2, 50], { dtype: 'float64' }).requiresGrad_();
  manualSeed(9);
  const y = dropout(o, 0.5);
  y.backward(ones([2, 50], { dtype: 'float64' }));
  t.deepEqual(o.grad!.toArray(), y.toArray(), 'the backward regenerates the forward mask (global generator)');
});

test('bad input is a clear TypeError/RangeError, never a crash', (t) => {
  const N = `(await import(${JSON.stringify(nativeUrl)})).native`;
  const { result, errors } = errorsInChild([
    ['p > 1', 'vlm.dropout(vlm.ones([3]), 1.5)'],
    ['p < 0', 'vlm.dropout(vlm.ones([3]), -0.1)'],
    ['p NaN', 'vlm.dropout(vlm.ones([3]), NaN)'],
    ['p string', "vlm.dropout(vlm.ones([3]), '0.5')"],
    ['int x', "vlm.dropout(vlm.ones([3], { dtype: 'int32' }), 0.5)"],
    ['seed', 'vlm.dropout(vlm.ones([3]), 0.5, { seed: -1 })'],
    ['training', "vlm.dropout(vlm.ones([3]), 0.5, { training: 'yes' })"],
    ['disposed', 'const d = vlm.ones([3]); d.dispose(); vlm.dropout(d, 0.5, { seed: 1 })'],
    ['native p', `${N}.dropout(vlm.ones([3]).handle, 2, 0, 0)`],
    ['native offset', `${N}.dropout(vlm.ones([3]).handle, 0.5, 0, -4)`],
    ['native seed', `${N}.dropoutBackward(vlm.ones([3]).handle, 0.5, 1.5, 0)`],
  ]);
  t.is(result.status, 0, result.stderr);
  t.deepEqual(errors['p > 1'], { name: 'RangeError', message: 'dropout: expected a probability in [0, 1] for p but received the number 1.5' });
  t.deepEqual(errors['p < 0'], { name: 'RangeError', message: 'dropout: expected a probability in [0, 1] for p but received the number -0.1' });
  t.deepEqual(errors['p NaN'], { name: 'RangeError', message: 'dropout: expected a probability in [0, 1] for p but received the number NaN' });
  t.deepEqual(errors['p string'], { name: 'TypeError', message: "dropout: expected a number for p but received the string '0.5'" });
  t.deepEqual(errors['int x'], { name: 'TypeError', message: 'dropout: expected a float32 or float64 tensor for x but received an int32 tensor' });
  t.deepEqual(errors['seed'], { name: 'RangeError', message: 'dropout: expected a non-negative safe integer for options.seed but received the number -1' });
  t.is(errors['training']!.name, 'TypeError');
  t.deepEqual(errors['disposed'], { name: 'TypeError', message: 'dropout: expected a live tensor for x but received a disposed tensor' });
  t.deepEqual(errors['native p'], { name: 'RangeError', message: 'dropout: expected a probability in [0, 1] for p but received the number 2' });
  t.is(errors['native offset']!.name, 'RangeError');
  t.regex(errors['native offset']!.message, /^dropout: expected an integer in \[0, 9007199254740991\] for offset/);
  t.deepEqual(errors['native seed'], { name: 'TypeError', message: 'dropoutBackward: expected an integer for seed but received the number 1.5' });
});
