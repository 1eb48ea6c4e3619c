// pool family: avgPool2d and adaptiveAvgPool2d against float64 JS references and values
// printed by PyTorch, masked mean/max sequence pooling (fully invalid rows, ties, NaN),
// float64 gradient checks for every pool (strided leaves), float32 vs float64, bitwise
// determinism for 1 and 2 threads, and bad input in a child process.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { arange, randn, tensor } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { reshape, transpose } from '../ts/graph/ops/views.js';
import { avgPool2d, adaptiveAvgPool2d, maskedMeanPool, maskedMaxPool } from '../ts/graph/ops/pool.js';
import type { Tensor } from '../ts/graph/tensor.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;
const f64 = (shape: number[], seed: number) => randn(shape, { dtype: 'float64', seed });

/** avg_pool2d with count_include_pad from the definition: planes of H x W. */
function avgRef(x: ArrayLike<number>, P: number, H: number, W: number, k: [number, number], s: [number, number], p: [number, number]) {
  const OH = Math.floor((H + 2 * p[0] - k[0]) / s[0]) + 1, OW = Math.floor((W + 2 * p[1] - k[1]) / s[1]) + 1;
  const y = new Float64Array(P * OH * OW);
  for (let q = 0; q < P; q++)
    for (let oh = 0; oh < OH; oh++)
      for (let ow = 0; ow < OW; ow++) {
        let acc = 0, count = 0;
        for (let i = 0; i < k[0]; i++)
          for (let j = 0; j < k[1]; j++) {
            const h = oh * s[0] - p[0] + i, w = ow * s[1] - p[1] + j;
            if (h >= H + p[0] || w >= W + p[1]) continue;  // outside the padded input
            count++;
            if (h >= 0 && h < H && w >= 0 && w < W) acc += x[(q * H + h) * W + w]!;
          }
        y[(q * OH + oh) * OW + ow] = acc / count;
      }
  return { y, OH, OW };
}

/** adaptive average pooling from torch's window formula. */
function adaptiveRef(x: ArrayLike<number>, P: number, H: number, W: number, OH: number, OW: number) {
  const y = new Float64Array(P * OH * OW);
  for (let q = 0; q < P; q++)
    for (let oh = 0; oh < OH; oh++)
      for (let ow = 0; ow < OW; ow++) {
        const h0 = Math.floor((oh * H) / OH), h1 = Math.ceil(((oh + 1) * H) / OH);
        const w0 = Math.floor((ow * W) / OW), w1 = Math.ceil(((ow + 1) * W) / OW);
        let acc = 0;
        for (let h = h0; h < h1; h++) for (let w = w0; w < w1; w++) acc += x[(q * H + h) * W + w]!;
        y[(q * OH + oh) * OW + ow] = acc / ((h1 - h0) * (w1 - w0));
      }
  return y;
}

test('avgPool2d matches the reference and PyTorch (count_include_pad, floor mode)', (t) => {
  // torch.nn.functional.avg_pool2d(torch.arange(35.).reshape(1, 1, 5, 7), 3, 2, 1)
  const torchY = [1.7778, 3.6667, 5.0, 4.0, 9.6667, 16.0, 18.0, 13.0, 11.1111, 17.6667, 19.0, 13.3333];
  const a = avgPool2d(reshape(arange(35), [1, 1, 5, 7]), 3, { stride: 2, padding: 1 });
  t.deepEqual(a.shape, [1, 1, 3, 4]);
  assertClose(t, a.toArray(), torchY, 1e-4, 0, 'torch values');
  for (const dtype of ['float64', 'float32'] as const) {
    const tol = dtype === 'float64' ? 1e-13 : 1e-6;
    for (const [shape, k, s, p] of [
      [[2, 3, 6, 7], [2, 2], [2, 2], [0, 0]], [[2, 3, 7, 6], [3, 3], [2, 2], [1, 1]], [[1, 2, 5, 8], [3, 2], [1, 2], [1, 1]],
      [[4, 5, 5], [5, 5], [1, 1], [2, 0]], [[1, 1, 4, 4], [4, 4], [4, 4], [0, 0]], [[2, 2, 5, 5], [2, 3], [3, 1], [1, 1]],
    ] as [number[], [number, number], [number, number], [number, number]][]) {
      const x = randn(shape, { dtype, seed: 1 });
      const H = shape[shape.length - 2]!, W = shape[shape.length - 1]!, P = x.size / (H * W);
      const ref = avgRef(x.toArray(), P, H, W, k, s, p);
      const y = avgPool2d(x, k, { stride: s, padding: p });
      t.deepEqual(y.shape, [...shape.slice(0, -2), ref.OH, ref.OW]);
      assertClose(t, y.toArray(), ref.y, tol, tol, `${dtype} [${shape}] k${k} s${s} p${p}`);
    }
  }
  t.deepEqual(avgPool2d(randn([1, 1, 6, 6]), 2).shape, [1, 1, 3, 3], 'stride defaults to the kernel');
});

test('adaptiveAvgPool2d matches the reference and PyTorch (global, non-dividing, upsampling windows)', (t) => {
  // torch.nn.functional.adaptive_avg_pool2d(torch.arange(35.).reshape(1, 1, 5, 7), (3, 2))
  const a = adaptiveAvgPool2d(reshape(arange(35), [1, 1, 5, 7]), [3, 2]);
  assertClose(t, a.toArray(), [5, 8, 15.5, 18.5, 26, 29], 1e-6, 0, 'torch values');
  for (const dtype of ['float64', 'float32'] as const) {
    const tol = dtype === 'float64' ? 1e-13 : 1e-6;
    for (const [shape, o] of [
      [[2, 3, 4, 4], [1, 1]], [[2, 3, 5, 7], [3, 2]], [[1, 2, 3, 3], [5, 4]], [[3, 6, 8], [2, 3]], [[1, 1, 7, 1], [3, 1]], [[2, 2, 4, 6], [4, 6]],
    ] as [number[], [number, number]][]) {
      const x = randn(shape, { dtype, seed: 2 });
      const H = shape[shape.length - 2]!, W = shape[shape.length - 1]!, P = x.size / (H * W);
      const y = adaptiveAvgPool2d(x, o);
      t.deepEqual(y.shape, [...shape.slice(0, -2), ...o]);
      assertClose(t, y.toArray(), adaptiveRef(x.toArray(), P, H, W, o[0], o[1]), tol, tol, `${dtype} [${shape}] -> ${o}`);
    }
  }
  t.deepEqual(adaptiveAvgPool2d(randn([2, 3, 5, 5]), 2).shape, [2, 3, 2, 2], 'a number means square');
});

test('masked mean and max pooling: valid positions only, fully invalid rows give zeros, ties and NaN', (t) => {
  const B = 3, L = 4, D = 5;
  for (const dtype of ['float64', 'float32'] as const) {
    const x = randn([B, L, D], { dtype, seed: 3 });
    const maskRows = [[1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]];
    const mask = tensor(Uint8Array.from(maskRows.flat()), [B, L]);
    const xs = x.toArray();
    const mean = new Float64Array(B * D), max = new Float64Array(B * D);
    for (let b = 0; b < B; b++)
      for (let d = 0; d < D; d++) {
        const vals = maskRows[b]!.flatMap((m, l) => (m ? [xs[(b * L + l) * D + d]!] : []));
        mean[b * D + d] = vals.length ? vals.reduce((p, v) => p + v, 0) / vals.length : 0;
        max[b * D + d] = vals.length ? Math.max(...vals) : 0;
      }
    const tol = dtype === 'float64' ? 1e-14 : 1e-6;
    assertClose(t, maskedMeanPool(x, mask).toArray(), mean, tol, tol, `${dtype} masked mean`);
    assertClose(t, maskedMaxPool(x, mask).toArray(), max, 0, 0, `${dtype} masked max`);
    // no mask: plain mean / max over L
    const all = Array.from({ length: B * D }, (_, i) => {
      const b = Math.floor(i / D), d = i % D;
      const v = Array.from({ length: L }, (_, l) => xs[(b * L + l) * D + d]!);
      return [v.reduce((p, e) => p + e, 0) / L, Math.max(...v)];
    });
    assertClose(t, maskedMeanPool(x).toArray(), all.map((r) => r[0]!), tol, tol, `${dtype} mean, no mask`);
    assertClose(t, maskedMaxPool(x, null).toArray(), all.map((r) => r[1]!), 0, 0, `${dtype} max, no mask`);
  }
  // gradients: the fully invalid row gets none; max sends it to the first of tied maxima
  const x = tensor([[[1, 5], [3, 5], [3, 2]], [[7, 7], [8, 8], [9, 9]]], undefined, { dtype: 'float64' }).requiresGrad_();
  const mask = tensor(Uint8Array.from([1, 1, 1, 0, 0, 0]), [2, 3]);
  maskedMaxPool(x, mask).backward(tensor([[10, 20], [30, 40]], undefined, { dtype: 'float64' }));
  t.deepEqual([...x.grad!.toArray()], [0, 20, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  x.grad = null;
  maskedMeanPool(x, mask).backward(tensor([[3, 6], [30, 40]], undefined, { dtype: 'float64' }));
  t.deepEqual([...x.grad!.toArray()], [1, 2, 1, 2, 1, 2, 0, 0, 0, 0, 0, 0]);
  // NaN in a valid position propagates to the max; NaN in an invalid one does not
  const n = tensor([[[1], [NaN], [2]]], undefined, { dtype: 'float64' });
  t.true(Number.isNaN(maskedMaxPool(n).toArray()[0]!));
  t.is(maskedMaxPool(n, tensor(Uint8Array.from([1, 0, 1]), [1, 3])).toArray()[0], 2);
  // any nonzero mask byte counts as valid
  t.deepEqual([...maskedMeanPool(n, tensor(Uint8Array.from([255, 0, 7]), [1, 3])).toArray()], [1.5]);
});

test('gradients match central differences for every pool (strided leaves, masks)', (t) => {
  const x = f64([2, 2, 5, 6], 10).requiresGrad_();
  assertGradcheck(t, (x) => avgPool2d(x, 3, { stride: 2, padding: 1 }), [x], {}, 'avgPool2d k3 s2 p1');
  assertGradcheck(t, (x) => avgPool2d(x, [2, 3], { stride: [1, 2], padding: [1, 0] }), [x], {}, 'avgPool2d non-square, overlapping');
  assertGradcheck(t, (x) => adaptiveAvgPool2d(x, [3, 4]), [x], {}, 'adaptive 3x4 (overlapping windows)');
  assertGradcheck(t, (x) => adaptiveAvgPool2d(x, 1), [x], {}, 'global pooling');
  const xt = noGrad(() => transpose(f64([2, 2, 6, 5], 11), 2, 3)).requiresGrad_();
  t.false(xt.isContiguous);
  assertGradcheck(t, (x) => avgPool2d(x, 2), [xt], {}, 'avgPool2d strided leaf');
  assertGradcheck(t, (x) => adaptiveAvgPool2d(x, [2, 7]), [xt], {}, 'adaptive strided leaf, upsampling columns');
  const s = f64([3, 4, 5], 12).requiresGrad_();
  const mask = tensor(Uint8Array.from([1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0]), [3, 4]);
  assertGradcheck(t, (x) => maskedMeanPool(x, mask), [s], {}, 'masked mean with an empty row');
  assertGradcheck(t, (x) => maskedMeanPool(x), [s], {}, 'mean without mask');
  assertGradcheck(t, (x) => maskedMaxPool(x, mask), [s], {}, 'masked max with an empty row');
  const st = noGrad(() => transpose(f64([3, 5, 4], 13), 1, 2)).requiresGrad_();
  assertGradcheck(t, (x) => maskedMaxPool(x, mask), [st], {}, 'masked max strided leaf');
  assertGradcheck(t, (x) => maskedMeanPool(x, mask), [st], {}, 'masked mean strided leaf');
});

test('float32 agrees with float64, and results are bitwise identical for 1 and 2 threads', (t) => {
  const x64 = f64([8, 16, 14, 14], 20);
  const to32 = (v: Tensor) => tensor(Float32Array.from(v.toArray()), [...v.shape]);
  const x32 = to32(x64);
  assertClose(t, avgPool2d(x32, 3, { stride: 2, padding: 1 }).toArray(), avgPool2d(x64, 3, { stride: 2, padding: 1 }).toArray(), 1e-6, 1e-5, 'avg');
  assertClose(t, adaptiveAvgPool2d(x32, 1).toArray(), adaptiveAvgPool2d(x64, 1).toArray(), 1e-6, 1e-5, 'global');
  const prev = native.getNumThreads();
  const s = randn([16, 33, 40], { seed: 21 }), m = tensor(Uint8Array.from({ length: 16 * 33 }, (_, i) => (i * 7) % 5 ? 1 : 0), [16, 33]);
  const g2 = randn([8, 16, 7, 7], { seed: 22 }), gs = randn([16, 40], { seed: 23 });
  const run = () => {
    const mx = native.maskedMaxPool(s.handle, m.handle);
    return [
      native.avgPool2d(x32.handle, [3, 3], [2, 2], [1, 1]), native.avgPool2dBackward(g2.handle, [8, 16, 14, 14], [3, 3], [2, 2], [1, 1]),
      native.adaptiveAvgPool2d(x32.handle, [5, 3]), native.adaptiveAvgPool2dBackward(g2.handle, [8, 16, 12, 9]),
      native.maskedMeanPool(s.handle, m.handle), native.maskedMeanPoolBackward(gs.handle, m.handle, 33),
      mx.y, mx.index, native.maskedMaxPoolBackward(gs.handle, mx.index, 33),
    ].map((h) => native.toArray(h));
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
  const img = 'vlm.randn([2, 3, 5, 5])', seq = 'vlm.randn([2, 4, 3])';
  const { result, errors } = errorsInChild([
    ['mask shape', `vlm.maskedMeanPool(${seq}, vlm.ones([2, 3], { dtype: 'uint8' }))`],
    ['mask shape max', `vlm.maskedMaxPool(${seq}, vlm.ones([4, 2], { dtype: 'uint8' }))`],
    ['mask dtype', `vlm.maskedMaxPool(${seq}, vlm.ones([2, 4]))`],
    ['seq rank', `vlm.maskedMeanPool(vlm.randn([2, 4]))`],
    ['pad > k/2', `vlm.avgPool2d(${img}, 2, { padding: 2 })`],
    ['negative padding', `vlm.avgPool2d(${img}, 3, { padding: -1 })`],
    ['kernel too large', `vlm.avgPool2d(${img}, [7, 2])`],
    ['zero kernel', `vlm.avgPool2d(${img}, 0)`],
    ['image rank', `vlm.avgPool2d(vlm.randn([5, 5]), 2)`],
    ['output size', `vlm.adaptiveAvgPool2d(${img}, [0, 1])`],
    ['output size type', `vlm.adaptiveAvgPool2d(${img}, null)`],
    ['native mask', `${N}.maskedMeanPool(${seq}.handle, vlm.ones([2, 5], { dtype: 'uint8' }).handle)`],
    ['native mask dtype', `${N}.maskedMaxPool(${seq}.handle, vlm.ones([2, 4], { dtype: 'int32' }).handle)`],
    ['native index', `${N}.maskedMaxPoolBackward(vlm.randn([2, 3]).handle, vlm.tensor([0, 1, 4, -1, 0, 2], [2, 3], { dtype: 'int32' }).handle, 4)`],
    ['native index -2', `${N}.maskedMaxPoolBackward(vlm.randn([2, 3]).handle, vlm.tensor([0, 1, 2, -2, 0, 2], [2, 3], { dtype: 'int32' }).handle, 4)`],
    ['native pad', `${N}.avgPool2d(${img}.handle, [2, 2], [1, 1], [0, 2])`],
    ['native kernel', `${N}.avgPool2d(${img}.handle, [6, 6], [1, 1], [0, 0])`],
    ['native avg gy', `${N}.avgPool2dBackward(vlm.randn([2, 3, 3, 3]).handle, [2, 3, 5, 5], [2, 2], [2, 2], [0, 0])`],
    ['native adaptive gy', `${N}.adaptiveAvgPool2dBackward(vlm.randn([2, 4, 1, 1]).handle, [2, 3, 5, 5])`],
    ['native adaptive huge', `${N}.adaptiveAvgPool2d(${img}.handle, [1073741824, 1073741824])`],
  ]);
  t.is(result.status, 0, result.stderr);
  t.deepEqual(errors['mask shape'], { name: 'RangeError', message: 'maskedMeanPool: expected shape [2, 4] for mask but received shape [2, 3]' });
  t.deepEqual(errors['mask shape max'], { name: 'RangeError', message: 'maskedMaxPool: expected shape [2, 4] for mask but received shape [4, 2]' });
  t.deepEqual(errors['mask dtype'], { name: 'TypeError', message: 'maskedMaxPool: expected a uint8 tensor for mask but received a float32 tensor' });
  t.deepEqual(errors['seq rank'], { name: 'RangeError', message: 'maskedMeanPool: expected a tensor [B, L, D] for x but received shape [2, 4]' });
  t.deepEqual(errors['pad > k/2'], { name: 'RangeError', message: 'avgPool2d: expected at most half the kernel size (kernel [2, 2]) for padding but received [2, 2]' });
  t.deepEqual(errors['negative padding'], { name: 'RangeError', message: 'avgPool2d: expected an integer >= 0 or a pair [h, w] of them for padding but received the number -1' });
  t.deepEqual(errors['kernel too large'], { name: 'RangeError', message: 'avgPool2d: expected a kernel no larger than the padded input (5x5) for kernel but received [7, 2]' });
  t.deepEqual(errors['zero kernel'], { name: 'RangeError', message: 'avgPool2d: expected an integer >= 1 or a pair [h, w] of them for kernel but received the number 0' });
  t.deepEqual(errors['image rank'], { name: 'RangeError', message: 'avgPool2d: expected a tensor [N, C, H, W] or [C, H, W] for x but received shape [5, 5]' });
  t.deepEqual(errors['output size'], { name: 'RangeError', message: 'adaptiveAvgPool2d: expected an integer >= 1 or a pair [h, w] of them for outputSize but received [0, 1]' });
  t.deepEqual(errors['output size type'], { name: 'TypeError', message: 'adaptiveAvgPool2d: expected an integer >= 1 or a pair [h, w] of them for outputSize but received null' });
  t.deepEqual(errors['native mask'], { name: 'RangeError', message: 'maskedMeanPool: expected shape [2, 4] for mask but received shape [2, 5]' });
  t.is(errors['native mask dtype']!.name, 'TypeError');
  t.regex(errors['native mask dtype']!.message, /^maskedMaxPool: expected a uint8 tensor for mask but received an? int32 tensor$/);
  t.deepEqual(errors['native index'], { name: 'RangeError', message: 'maskedMaxPoolBackward: expected positions in [-1, 4) for index but received 4 at [0, 2]' });
  t.deepEqual(errors['native index -2'], { name: 'RangeError', message: 'maskedMaxPoolBackward: expected positions in [-1, 4) for index but received -2 at [1, 0]' });
  t.deepEqual(errors['native pad'], { name: 'RangeError', message: 'avgPool2d: expected at most half the kernel size (kernel [2, 2]) for padding but received [0, 2]' });
  t.deepEqual(errors['native kernel'], { name: 'RangeError', message: 'avgPool2d: expected a kernel no larger than the padded input (5x5) for kernel but received [6, 6]' });
  t.deepEqual(errors['native avg gy'], { name: 'RangeError', message: 'avgPool2dBackward: expected shape [2, 3, 2, 2] for gy but received shape [2, 3, 3, 3]' });
  t.deepEqual(errors['native adaptive gy'], { name: 'RangeError', message: 'adaptiveAvgPool2dBackward: expected a gradient whose leading dims match inputShape [2, 3, 5, 5] and OH, OW >= 1 for gy but received shape [2, 4, 1, 1]' });
  t.deepEqual(errors['native adaptive huge'], { name: 'RangeError', message: 'adaptiveAvgPool2d: expected an output of at most 2^40 elements for outputSize but received an output of shape [2, 3, 1073741824, 1073741824]' });
});
