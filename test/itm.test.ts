// itm family and the ITM objective (ts/objectives/itm.ts): hard-negative mining is an exact
// sample of the masked softmax (chi-square over 20,000 seeded draws, against a JavaScript
// derivation of the probabilities), never draws a positive or a same-id sample, matches the
// materialised reference draw for draw (ragged tiles, max over queries, ids, LAVIS's weight
// floor) and does not depend on the thread count; the fused head against its float64
// reference and float64 gradient checks for [3B, H] and [3B, Q, H]; buildItmBatch; memory;
// bad input in a child process.
import test from 'ava';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { native } from '../ts/native.js';
import { Tensor } from '../ts/graph/tensor.js';
import { noGrad } from '../ts/graph/autograd.js';
import { manualSeed, randn, tensor } from '../ts/graph/creation.js';
import { contiguous, transpose, slice } from '../ts/graph/ops/views.js';
import { scale } from '../ts/graph/ops/elementwise.js';
import {
  buildItmBatch, itm, itmReference, mineHardNegatives, mineHardNegativesReference,
} from '../ts/objectives/itm.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const nativeUrl = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), '..', 'ts', 'native.ts')).href;

const arr = (t: Tensor | null) => Array.from(t!.toArray());

/** Runs fn with the mining tile set to rows x cols (and the segment table size), restoring the previous ones. */
function withTiles<T>(rows: number, cols: number, fn: () => T, segmentCells?: number): T {
  const [r0, c0, s0] = native.itmTiles();
  native.itmTiles(rows, cols, segmentCells ?? s0);
  try { return fn(); } finally { native.itmTiles(r0, c0, s0); }
}
function withThreads<T>(n: number, fn: () => T): T {
  const prev = native.getNumThreads();
  native.setNumThreads(n);
  try { return fn(); } finally { native.setNumThreads(prev); }
}

// ---- an independent JavaScript derivation of the sampling distribution ----------------

/** sim[i][j] = max_q image[i, q] . text[j] / temp. */
function jsSims(image: Float64Array, text: Float64Array, B: number, Q: number, D: number, temp: number): number[][] {
  return Array.from({ length: B }, (_, i) => Array.from({ length: B }, (_, j) => {
    let best = -Infinity;
    for (let q = 0; q < Q; q++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += image[(i * Q + q) * D + d]! * text[j * D + d]!;
      best = Math.max(best, s);
    }
    return best / temp;
  }));
}

/** Row r's sampling probabilities over the other side: masked softmax, or LAVIS's softmax + floor then masked. */
function jsProbs(sim: number[][], dir: 0 | 1, ids: number[] | null, floor: number): number[][] {
  const B = sim.length;
  return Array.from({ length: B }, (_, r) => {
    const v = Array.from({ length: B }, (_, k) => (dir === 0 ? sim[r]![k]! : sim[k]![r]!));
    const allowed = (k: number) => (ids ? ids[k] !== ids[r] : k !== r);
    const over = v.map((_, k) => floor > 0 || allowed(k));
    const m = Math.max(...v.filter((_, k) => over[k]));
    const z = v.reduce((s, x, k) => s + (over[k] ? Math.exp(x - m) : 0), 0);
    const w = v.map((x, k) => (!allowed(k) ? 0 : floor > 0 ? Math.exp(x - m) / z + floor : Math.exp(x - m)));
    const W = w.reduce((s, x) => s + x, 0);
    return w.map((x) => x / W);
  });
}

/** Upper quantile of chi-square with k degrees of freedom (Wilson-Hilferty), z the normal quantile. */
function chi2Quantile(k: number, z: number): number {
  const a = 2 / (9 * k);
  return k * (1 - a + z * Math.sqrt(a)) ** 3;
}

interface ChiCase { B: number; Q: number; D: number; temp: number; ids: number[] | null; floor: number; draws: number; seed: number }

/**
 * Draws `draws` negatives per row and direction (disjoint Philox ranges: offset k * 2B) and returns the
 * Pearson statistic summed over rows and directions, its degrees of freedom, and whether any excluded
 * column was ever drawn.
 */
function chiSquare(c: ChiCase, dtype: 'float64' | 'float32' = 'float64') {
  const image = randn(c.Q > 1 ? [c.B, c.Q, c.D] : [c.B, c.D], { seed: c.seed, dtype, std: 0.7 });
  const text = randn([c.B, c.D], { seed: c.seed + 1, dtype, std: 0.7 });
  const sim = jsSims(Float64Array.from(image.toArray()), Float64Array.from(text.toArray()), c.B, c.Q, c.D, c.temp);
  const probs = [jsProbs(sim, 0, c.ids, c.floor), jsProbs(sim, 1, c.ids, c.floor)];
  const counts = [0, 1].map(() => Array.from({ length: c.B }, () => new Array<number>(c.B).fill(0)));
  const idsT = c.ids ? tensor(Int32Array.from(c.ids), [c.B]) : null;
  for (let k = 0; k < c.draws; k++) {
    const r = native.itmMine(image.handle, text.handle, c.temp, idsT?.handle ?? null, c.seed, k * 2 * c.B, c.floor);
    const nt = native.toArray(r.negativeText), ni = native.toArray(r.negativeImage);
    for (let i = 0; i < c.B; i++) {
      counts[0]![i]![nt[i]!]! += 1;
      counts[1]![i]![ni[i]!]! += 1;
    }
    r.negativeText.dispose();
    r.negativeImage.dispose();
  }
  let stat = 0, dof = 0, excludedDrawn = 0, minExpected = Infinity;
  for (const d of [0, 1])
    for (let i = 0; i < c.B; i++) {
      let cells = 0;
      for (let j = 0; j < c.B; j++) {
        const p = probs[d]![i]![j]!, n = counts[d]![i]![j]!;
        if (p === 0) { excludedDrawn += n; continue; }
        const e = p * c.draws;
        minExpected = Math.min(minExpected, e);
        stat += (n - e) ** 2 / e;
        cells++;
      }
      dof += cells - 1;
    }
  return { stat, dof, excludedDrawn, minExpected, probs, counts, image, text, idsT };
}

const Z_001 = 3.090232;  // upper 0.1% point of the standard normal

test('mining is an exact sample of the masked softmax (chi-square, 20,000 draws, significance 0.001)', (t) => {
  const c = { B: 6, Q: 1, D: 3, temp: 1.5, ids: null, floor: 0, draws: 20000, seed: 11 };
  const r = withTiles(4, 3, () => chiSquare(c));  // ragged tiles: 2 row tiles x 2 column tiles
  t.true(r.minExpected >= 5, `expected counts >= 5 (min ${r.minExpected})`);
  t.is(r.excludedDrawn, 0, 'a positive was drawn');
  const crit = chi2Quantile(r.dof, Z_001);
  t.log(`chi-square ${r.stat.toFixed(2)}, dof ${r.dof}, 0.1% critical value ${crit.toFixed(2)}`);
  t.true(r.stat < crit, `chi-square ${r.stat.toFixed(2)} >= ${crit.toFixed(2)} (dof ${r.dof})`);
  // The materialised reference returns the same probabilities as the JavaScript derivation.
  const ref = mineHardNegativesReference(r.image, r.text, { temperature: c.temp, seed: 1 }, true);
  assertClose(t, arr(ref.probI2T), r.probs[0]!.flat(), 1e-12, 1e-10, 'probI2T');
  assertClose(t, arr(ref.probT2I), r.probs[1]!.flat(), 1e-12, 1e-10, 'probT2I');
});

test('mining with image ids, query tokens and LAVIS\'s weight floor (chi-square, 20,000 draws)', (t) => {
  const ids = [3, 3, 7, 1, 1, 1, 9];
  const c = { B: 7, Q: 3, D: 4, temp: 0.8, ids, floor: 0.05, draws: 20000, seed: 21 };
  const r = withTiles(6, 5, () => chiSquare(c));
  t.true(r.minExpected >= 5, `expected counts >= 5 (min ${r.minExpected})`);
  t.is(r.excludedDrawn, 0, 'a same-id sample was drawn');
  const crit = chi2Quantile(r.dof, Z_001);
  t.log(`chi-square ${r.stat.toFixed(2)}, dof ${r.dof}, 0.1% critical value ${crit.toFixed(2)}`);
  t.true(r.stat < crit, `chi-square ${r.stat.toFixed(2)} >= ${crit.toFixed(2)} (dof ${r.dof})`);
  // A floor changes the distribution: the exact masked softmax differs from it by far more than noise.
  const exact = chiSquare({ ...c, floor: 0, draws: 1 });
  const diff = Math.max(...exact.probs[0]!.flat().map((p, k) => Math.abs(p - r.probs[0]!.flat()[k]!)));
  t.true(diff > 0.01, `floor changes the probabilities (max diff ${diff})`);
});

test('the chi-square test has power: a wrong temperature is rejected', (t) => {
  // Draws at temperature 0.5 scored against the probabilities of temperature 0.6.
  const c = { B: 6, Q: 1, D: 3, temp: 0.5, ids: null, floor: 0, draws: 5000, seed: 11 };
  const drawn = chiSquare(c);
  const sim = jsSims(Float64Array.from(drawn.image.toArray()), Float64Array.from(drawn.text.toArray()), 6, 1, 3, 0.6);
  const wrong = jsProbs(sim, 0, null, 0);
  const counts = drawn.counts[0]!;
  let stat = 0, dof = 0;
  for (let i = 0; i < 6; i++) {
    for (let j = 0; j < 6; j++) {
      const p = wrong[i]![j]!;
      if (p === 0) continue;
      stat += (counts[i]![j]! - p * c.draws) ** 2 / (p * c.draws);
    }
    dof += 4;
  }
  t.true(stat > chi2Quantile(dof, Z_001), `chi-square ${stat.toFixed(1)} should exceed ${chi2Quantile(dof, Z_001).toFixed(1)}`);
});

test('fused mining draws exactly what the materialised reference draws (tiles, queries, ids, floor)', (t) => {
  const cases: { B: number; Q: number; D: number; tiles: number[]; ids: number[] | null; floor: number; cells?: number }[] = [
    { B: 13, Q: 1, D: 8, tiles: [5, 4], ids: null, floor: 0 },
    { B: 13, Q: 3, D: 8, tiles: [5, 4], ids: null, floor: 0 },
    { B: 29, Q: 4, D: 5, tiles: [7, 9], ids: Array.from({ length: 29 }, (_, i) => i % 5), floor: 0 },
    { B: 29, Q: 1, D: 5, tiles: [3, 2], ids: Array.from({ length: 29 }, (_, i) => Math.floor(i / 3)), floor: 1e-4 },
    { B: 40, Q: 2, D: 6, tiles: [256, 256], ids: null, floor: 0.02 },
    // a small segment table: segments of 4 to 18 column tiles, the last one shorter
    { B: 31, Q: 1, D: 4, tiles: [4, 3], ids: null, floor: 0, cells: 12 },
    { B: 31, Q: 2, D: 4, tiles: [4, 3], ids: Array.from({ length: 31 }, (_, i) => i % 7), floor: 0.03, cells: 7 },
  ];
  for (const c of cases) {
    for (const dtype of ['float64', 'float32'] as const) {
      const image = randn(c.Q > 1 ? [c.B, c.Q, c.D] : [c.B, c.D], { seed: c.B + c.Q, dtype });
      const text = randn([c.B, c.D], { seed: c.B + 100, dtype });
      let same = 0, total = 0;
      withTiles(c.tiles[0]!, c.tiles[1]!, () => {
        for (let s = 0; s < 30; s++) {
          const opts = { temperature: 0.3, seed: 5, offset: s * 2 * c.B, weightFloor: c.floor, ...(c.ids ? { imageIds: c.ids } : {}) };
          const a = mineHardNegatives(image, text, opts);
          const b = mineHardNegativesReference(image, text, opts);
          const x = [...arr(a.negativeText), ...arr(a.negativeImage)], y = [...arr(b.negativeText), ...arr(b.negativeImage)];
          x.forEach((v, i) => { total++; if (v === y[i]) same++; });
          for (const [i, j] of arr(a.negativeText).entries()) {
            if (c.ids ? c.ids[i] === c.ids[j] : i === j) t.fail(`image ${i} drew its own text ${j}`);
          }
          for (const [j, i] of arr(a.negativeImage).entries()) {
            if (c.ids ? c.ids[i] === c.ids[j] : i === j) t.fail(`text ${j} drew its own image ${i}`);
          }
        }
      }, c.cells);
      // float64: identical draws; float32: the tile GEMMs may round differently from the whole GEMM.
      const want = dtype === 'float64' ? total : Math.floor(0.99 * total);
      t.true(same >= want, `${JSON.stringify(c)} ${dtype}: ${same}/${total} draws agree`);
    }
  }
});

test('the same seed gives the same negatives on 1 and 2 threads; another seed, other negatives', (t) => {
  for (const [B, Q, tiles, cells] of [[700, 1, [256, 256], 65536], [301, 3, [48, 40], 100]] as const) {
    const image = randn(Q > 1 ? [B, Q, 16] : [B, 16], { seed: 3 }), text = randn([B, 16], { seed: 4 });
    const ids = Array.from({ length: B }, (_, i) => i % 50);
    const run = (n: number, seed: number) => withThreads(n, () => withTiles(tiles[0], tiles[1], () => {
      const r = mineHardNegatives(image, text, { temperature: 0.07, imageIds: ids, seed });
      return [...arr(r.negativeText), ...arr(r.negativeImage)];
    }, cells));
    const one = run(1, 99), two = run(2, 99);
    t.deepEqual(two, one, `B = ${B}: 1 vs 2 threads`);
    t.notDeepEqual(run(2, 100), one, 'another seed');
    t.true(one.every((v) => Number.isInteger(v) && v >= 0 && v < B), 'indices in range');
    one.slice(0, B).forEach((j, i) => { if (ids[i] === ids[j]) t.fail(`image ${i} drew same-id text ${j}`); });
  }
});

test('small valid batches: B = 2, and two id groups, leave one choice or one group', (t) => {
  const image = randn([2, 3], { seed: 1 }), text = randn([2, 3], { seed: 2 });
  for (let s = 0; s < 5; s++) {
    const r = mineHardNegatives(image, text, { temperature: 0.5, seed: s });
    t.deepEqual(arr(r.negativeText), [1, 0]);
    t.deepEqual(arr(r.negativeImage), [1, 0]);
  }
  const ids = [4, 4, 4, 9, 9];
  const im5 = randn([5, 2, 3], { seed: 3 }), tx5 = randn([5, 3], { seed: 4 });
  for (let s = 0; s < 20; s++) {
    const r = mineHardNegatives(im5, tx5, { temperature: 0.05, imageIds: ids, seed: s });
    arr(r.negativeText).forEach((j, i) => t.not(ids[j], ids[i]));
    arr(r.negativeImage).forEach((i, j) => t.not(ids[i], ids[j]));
  }
});

test('without a seed mining takes 2B counters of the global generator (manualSeed)', (t) => {
  const image = randn([10, 4], { seed: 1 }), text = randn([10, 4], { seed: 2 });
  const draw = () => { const r = mineHardNegatives(image, text, { temperature: 1 }); return [...arr(r.negativeText), ...arr(r.negativeImage)]; };
  manualSeed(5);
  const a = draw(), b = draw();
  manualSeed(5);
  t.deepEqual(draw(), a, 'reseeding repeats the draws');
  t.notDeepEqual(b, a, 'consecutive calls draw afresh');
  // The global generator at (5, 0) is the fixed seed 5, offset 0.
  const fixed = mineHardNegatives(image, text, { temperature: 1, seed: 5, offset: 0 });
  t.deepEqual([...arr(fixed.negativeText), ...arr(fixed.negativeImage)], a);
});

test('a temperature tensor, strided features and requiresGrad inputs are accepted (nothing recorded)', (t) => {
  const image = noGrad(() => transpose(randn([6, 9], { seed: 1, dtype: 'float64' }), 0, 1)).requiresGrad_();
  const text = randn([9, 6], { seed: 2, dtype: 'float64', requiresGrad: true });
  const temp = tensor(new Float64Array([0.2]), [1], { dtype: 'float64' });
  const a = mineHardNegatives(image, text, { temperature: temp, seed: 3 });
  const b = mineHardNegatives(noGrad(() => contiguous(image)), text, { temperature: 0.2, seed: 3 });
  t.deepEqual(arr(a.negativeText), arr(b.negativeText));
  t.false(a.negativeText.requiresGrad);
  t.is(a.negativeImage.dtype, 'int32');
  t.deepEqual(a.negativeImage.shape, [9]);
});

test('mining memory stays O(B): no B x B buffer (B = 2048)', (t) => {
  const B = 2048, D = 32;
  const image = randn([B, D], { seed: 1 }), text = randn([B, D], { seed: 2 });
  native.resetPeak();
  const live = native.memory().cpu.liveBytes;
  const r = mineHardNegatives(image, text, { temperature: 0.1, seed: 1 });
  const extra = native.memory().cpu.peakBytes - live;
  t.true(extra < 4 << 20, `extra ${extra} bytes (a B x B float32 matrix is ${B * B * 4})`);
  r.negativeText.dispose();
  r.negativeImage.dispose();
  native.resetPeak();
  const ref = mineHardNegativesReference(image, text, { temperature: 0.1, seed: 1 });
  t.true(native.memory().cpu.peakBytes - live >= 2 * B * B * 4, 'the reference does materialise B x B');
  ref.negativeText.dispose();
  ref.negativeImage.dispose();
});

// ---- the head --------------------------------------------------------------------------

const f64 = (shape: number[], seed: number, std = 1) => randn(shape, { dtype: 'float64', seed, requiresGrad: true, std });

test('itm gradchecks in float64: [3B, H], [3B, Q, H], strided, size-1 dims', (t) => {
  const loss = (x: Tensor, w: Tensor, b: Tensor) => itm(x, w, b).loss;
  assertGradcheck(t, loss, [f64([9, 5], 1), f64([2, 5], 2), f64([2], 3)], {}, '[3B, H]');
  assertGradcheck(t, loss, [f64([6, 4, 3], 4), f64([2, 3], 5), f64([2], 6)], {}, '[3B, Q, H]');
  assertGradcheck(t, loss, [f64([3, 1, 1], 7), f64([2, 1], 8), f64([2], 9)], {}, 'B = Q = H = 1');
  const xs = noGrad(() => transpose(randn([4, 6], { seed: 10, dtype: 'float64' }), 0, 1)).requiresGrad_();
  const ws = noGrad(() => slice(randn([2, 8], { seed: 11, dtype: 'float64' }), 1, 0, 8, 2)).requiresGrad_();
  assertGradcheck(t, loss, [xs, ws, f64([2], 12)], {}, 'transposed features, sliced weight');
  const xq = noGrad(() => transpose(randn([3, 6, 2], { seed: 13, dtype: 'float64' }), 0, 1)).requiresGrad_();
  assertGradcheck(t, loss, [xq, f64([2, 2], 14), f64([2], 15)], {}, 'strided [3B, Q, H]');
  // Only some inputs require grad.
  assertGradcheck(t, loss, [randn([9, 5], { seed: 16, dtype: 'float64' }), f64([2, 5], 17), f64([2], 18)], {}, 'weight and bias only');
});

test('itm: loss, accuracy and the fused gradients against the float64 reference and a JS derivation', (t) => {
  const N = 12, Q = 3, H = 4;
  const x = f64([N, Q, H], 1), w = f64([2, H], 2), b = f64([2], 3);
  const r = itm(x, w, b);
  r.loss.backward();  // upstream 1: the gradients of the forward pass are used as they are
  const ref = itmReference(x, w, b);
  // JavaScript: logits averaged over the queries, cross-entropy with labels [1 x B, 0 x 2B].
  const X = arr(x), W = arr(w), Bv = arr(b);
  let js = 0, correct = 0;
  for (let n = 0; n < N; n++) {
    const z = [0, 1].map((k) => {
      let s = 0;
      for (let q = 0; q < Q; q++) for (let h = 0; h < H; h++) s += (W[k * H + h]! * X[(n * Q + q) * H + h]!) / Q;
      return s + Bv[k]!;
    });
    const y = n < N / 3 ? 1 : 0;
    const m = Math.max(...z);
    js += (m + Math.log(Math.exp(z[0]! - m) + Math.exp(z[1]! - m)) - z[y]!) / N;
    if ((z[1]! > z[0]! ? 1 : 0) === y) correct++;
  }
  t.true(Math.abs(r.loss.item() - js) < 1e-12, `loss ${r.loss.item()} vs ${js}`);
  t.true(Math.abs(ref.loss - js) < 1e-12);
  t.is(r.accuracy, correct / N);
  t.is(ref.accuracy, correct / N);
  assertClose(t, arr(x.grad), arr(ref.dFeatures), 1e-14, 1e-12, 'dFeatures');
  assertClose(t, arr(w.grad), arr(ref.dWeight), 1e-14, 1e-12, 'dWeight');
  assertClose(t, arr(b.grad), arr(ref.dBias), 1e-14, 1e-12, 'dBias');
  // An upstream gradient of 2.5 recomputes the gradients scaled.
  for (const p of [x, w, b]) { p.grad?.dispose(); p.grad = null; }
  scale(itm(x, w, b).loss, 2.5).backward();
  assertClose(t, arr(w.grad), arr(ref.dWeight).map((v) => 2.5 * v), 1e-14, 1e-12, 'scaled dWeight');
  assertClose(t, arr(x.grad), arr(ref.dFeatures).map((v) => 2.5 * v), 1e-14, 1e-12, 'scaled dFeatures');
});

test('itm in float32 (fused) agrees with the float64 reference; no gradients when not recording', (t) => {
  for (const shape of [[150, 33], [60, 4, 33]]) {
    const H = shape[shape.length - 1]!;
    const x = randn(shape, { seed: 1, requiresGrad: true }), w = randn([2, H], { seed: 2, std: 0.2, requiresGrad: true });
    const b = randn([2], { seed: 3, requiresGrad: true });
    const r = itm(x, w, b);
    r.loss.backward();
    const toF64 = (v: Tensor) => tensor(Float64Array.from(v.toArray()), [...v.shape], { dtype: 'float64' });
    const ref = itmReference(toF64(x), toF64(w), toF64(b));
    t.true(Math.abs(r.loss.item() - ref.loss) < 1e-6 * Math.max(1, ref.loss), `loss ${r.loss.item()} vs ${ref.loss}`);
    t.is(r.accuracy, ref.accuracy);
    assertClose(t, arr(x.grad), arr(ref.dFeatures), 1e-8, 1e-5, 'dFeatures');
    assertClose(t, arr(w.grad), arr(ref.dWeight), 1e-7, 1e-5, 'dWeight');
    assertClose(t, arr(b.grad), arr(ref.dBias), 1e-7, 1e-5, 'dBias');
    const plain = noGrad(() => itm(x, w, b));
    t.false(plain.loss.requiresGrad);
    t.is(plain.loss.item(), r.loss.item());
  }
});

test('itm gradients do not depend on the thread count', (t) => {
  const x = randn([6000, 2, 128], { seed: 1 }), w = randn([2, 128], { seed: 2 }), b = randn([2], { seed: 3 });
  const run = (n: number) => withThreads(n, () => {
    const r = native.itmHead(x.handle, w.handle, b.handle, 1, [true, true, true]);
    return [native.toArray(r.loss), native.toArray(r.dFeatures!), native.toArray(r.dWeight!), native.toArray(r.dBias!)].map((a) => Array.from(a));
  });
  t.deepEqual(run(2), run(1));
});

// ---- the batch -----------------------------------------------------------------------

test('buildItmBatch: LAVIS\'s order, gathered tensors and their gradients', (t) => {
  const negatives = { negativeText: tensor(Int32Array.from([2, 0, 3, 1]), [4]), negativeImage: tensor(Int32Array.from([1, 3, 0, 2]), [4]) };
  const embeds = f64([4, 2, 3], 1);
  const ids = tensor(Int32Array.from([10, 11, 12, 13, 20, 21, 22, 23]), [4, 2]);
  const batch = buildItmBatch(negatives, { image: { embeds }, text: { ids } });
  t.deepEqual(arr(batch.textIndex), [0, 1, 2, 3, 0, 1, 2, 3, 2, 0, 3, 1]);
  t.deepEqual(arr(batch.imageIndex), [0, 1, 2, 3, 1, 3, 0, 2, 0, 1, 2, 3]);
  t.deepEqual(arr(batch.labels), [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
  t.deepEqual(batch.text.ids.shape, [12, 2]);
  t.deepEqual(arr(batch.text.ids).slice(16), [20, 21, 10, 11, 22, 23, 12, 13]);
  t.deepEqual(batch.image.embeds.shape, [12, 2, 3]);
  // image 0 appears in rows 0, 6 (as text 2's negative) and 8: three times its upstream gradient.
  batch.image.embeds.backward(tensor(new Float64Array(72).fill(1), [12, 2, 3], { dtype: 'float64' }));
  t.deepEqual(arr(embeds.grad).slice(0, 6), [3, 3, 3, 3, 3, 3]);
  const counts = [0, 1, 2, 3].map((i) => arr(batch.imageIndex).filter((v) => v === i).length);
  t.deepEqual([0, 1, 2, 3].map((i) => arr(embeds.grad)[i * 6]), counts);
  // End to end: mined negatives feed the batch, the head's 3B rows are the batch's rows.
  const image = randn([5, 8], { seed: 1 }), text = randn([5, 8], { seed: 2 });
  const mined = mineHardNegatives(image, text, { temperature: 0.1, seed: 1 });
  const b2 = buildItmBatch(mined, { image: { image }, text: { text } });
  const features = noGrad(() => tensor(Float32Array.from(arr(b2.image.image).map((v, k) => v * arr(b2.text.text)[k]!)), [15, 8]));
  const r = itm(features, randn([2, 8], { seed: 3 }), randn([2], { seed: 4 }));
  t.true(Number.isFinite(r.loss.item()));
});

// ---- bad input ---------------------------------------------------------------------------

test('bad input is a clear TypeError/RangeError, never a crash', (t) => {
  const N = `(await import(${JSON.stringify(nativeUrl)})).native`;
  const setup = `const img = vlm.randn([4, 3], { seed: 1 }), txt = vlm.randn([4, 3], { seed: 2 });
const M = vlm.objectives.mineHardNegatives, H = vlm.objectives.itm;
const x = vlm.randn([6, 5]), w = vlm.randn([2, 5]), b = vlm.randn([2]);`;
  const { result, errors } = errorsInChild([
    ['text size', 'M(img, vlm.randn([4, 4]), { temperature: 1, seed: 1 })'],
    ['text rows', 'M(img, vlm.randn([5, 3]), { temperature: 1, seed: 1 })'],
    ['text dtype', "M(img, vlm.randn([4, 3], { dtype: 'float64' }), { temperature: 1, seed: 1 })"],
    ['ids length', 'M(img, txt, { temperature: 1, seed: 1, imageIds: [1, 2, 3] })'],
    ['ids dtype', 'M(img, txt, { temperature: 1, seed: 1, imageIds: vlm.zeros([4]) })'],
    ['ids all equal', 'M(img, txt, { temperature: 1, seed: 1, imageIds: [7, 7, 7, 7] })'],
    ['temp NaN', 'M(img, txt, { temperature: NaN, seed: 1 })'],
    ['temp inf', 'M(img, txt, { temperature: Infinity, seed: 1 })'],
    ['temp 0', 'M(img, txt, { temperature: 0, seed: 1 })'],
    ['temp missing', 'M(img, txt, { seed: 1 })'],
    ['B = 1', 'M(vlm.randn([1, 3]), vlm.randn([1, 3]), { temperature: 1, seed: 1 })'],
    ['rank 4', 'M(vlm.randn([4, 1, 1, 3]), txt, { temperature: 1, seed: 1 })'],
    ['int image', "M(vlm.zeros([4, 3], { dtype: 'int32' }), txt, { temperature: 1, seed: 1 })"],
    ['seed', 'M(img, txt, { temperature: 1, seed: -1 })'],
    ['floor', 'M(img, txt, { temperature: 1, seed: 1, weightFloor: 2 })'],
    ['unknown option', 'M(img, txt, { temperature: 1, seed: 1, temp: 2 })'],
    ['overflow', 'M(vlm.full([4, 3], 1e18), vlm.full([4, 3], 1e18), { temperature: 1e-30, seed: 1 })'],
    ['native NaN feature', `${N}.itmMine(vlm.tensor([[1, 2], [NaN, 0]]).handle, vlm.ones([2, 2]).handle, 1, null, 0, 0, 0)`],
    ['native B = 1', `${N}.itmMine(vlm.ones([1, 2]).handle, vlm.ones([1, 2]).handle, 1, null, 0, 0, 0)`],
    ['native temp', `${N}.itmMine(img.handle, txt.handle, -Infinity, null, 0, 0, 0)`],
    ['native ids', `${N}.itmMine(img.handle, txt.handle, 1, vlm.tensor(Int32Array.from([1, 2])).handle, 0, 0, 0)`],
    ['native ids equal', `${N}.itmMine(img.handle, txt.handle, 1, vlm.tensor(Int32Array.from([0, 0, 0, 0])).handle, 0, 0, 0)`],
    ['native text', `${N}.itmMine(img.handle, vlm.ones([4, 2]).handle, 1, null, 0, 0, 0)`],
    ['native offset', `${N}.itmMine(img.handle, txt.handle, 1, null, 0, -1, 0)`],
    ['native not a tensor', `${N}.itmMine({}, txt.handle, 1, null, 0, 0, 0)`],
    ['head rows', 'H(vlm.randn([7, 5]), w, b)'],
    ['head weight', 'H(x, vlm.randn([3, 5]), b)'],
    ['head bias', "H(x, w, vlm.randn([2], { dtype: 'float64' }))"],
    ['head rank', 'H(vlm.randn([6]), w, b)'],
    ['head disposed', 'const d = vlm.randn([6, 5]); d.dispose(); H(d, w, b)'],
    ['native head rows', `${N}.itmHead(vlm.randn([4, 5]).handle, w.handle, b.handle, 1, [true, true, true])`],
    ['native head weight', `${N}.itmHead(x.handle, vlm.randn([2, 4]).handle, b.handle, 1, [true, true, true])`],
    ['native head needs', `${N}.itmHead(x.handle, w.handle, b.handle, 1, [true, 1, true])`],
    ['native head empty', `${N}.itmHead(vlm.randn([0, 5]).handle, w.handle, b.handle, 1, [true, true, true])`],
  ], setup);
  t.is(result.status, 0, result.stderr);
  const is = (label: string, name: string, message: RegExp | string) => {
    const e = errors[label];
    t.truthy(e, `${label}: no result`);
    if (!e) return;
    t.is(e.name, name, `${label}: ${e.message}`);
    if (typeof message === 'string') t.is(e.message, message, label);
    else t.regex(e.message, message, label);
  };
  is('text size', 'RangeError', 'mineHardNegatives: expected shape [4, 3] for textFeatures but received shape [4, 4]');
  is('text rows', 'RangeError', 'mineHardNegatives: expected shape [4, 3] for textFeatures but received shape [5, 3]');
  is('text dtype', 'TypeError', 'mineHardNegatives: expected a float32 tensor (the dtype of imageFeatures) for textFeatures but received a float64 tensor');
  is('ids length', 'RangeError', 'mineHardNegatives: expected shape [4] for options.imageIds but received shape [3]');
  is('ids dtype', 'TypeError', 'mineHardNegatives: expected an int32 tensor for options.imageIds but received a float32 tensor');
  is('ids all equal', 'RangeError', 'mineHardNegatives: expected ids that leave every sample a negative (not all the same id) for options.imageIds but received every id equal to 7');
  is('temp NaN', 'RangeError', 'mineHardNegatives: expected a finite positive temperature in [1e-30, 1e30] for options.temperature but received the number NaN');
  is('temp inf', 'RangeError', /^mineHardNegatives: expected a finite positive temperature .* for options.temperature but received the number Infinity$/);
  is('temp 0', 'RangeError', /for options.temperature but received the number 0$/);
  is('temp missing', 'TypeError', 'mineHardNegatives: expected a number or a one-element tensor for options.temperature but received undefined');
  is('B = 1', 'RangeError', 'mineHardNegatives: expected a batch of at least 2 samples (a negative is another sample of the batch) for imageFeatures but received shape [1, 3]');
  is('rank 4', 'RangeError', /^mineHardNegatives: expected a tensor of rank 2 \[B, D\] or 3 \[B, Q, D\] for imageFeatures/);
  is('int image', 'TypeError', /^mineHardNegatives: expected a float32 or float64 tensor for imageFeatures but received an? int32 tensor$/);
  is('seed', 'RangeError', /^mineHardNegatives: expected an integer in \[0, 9007199254740991\] for options.seed but received the number -1$/);
  is('floor', 'RangeError', 'mineHardNegatives: expected a finite number in [0, 1] for options.weightFloor but received the number 2');
  is('unknown option', 'TypeError', /^mineHardNegatives: expected one of temperature, imageIds, seed, offset, weightFloor for an option name but received 'temp'$/);
  is('overflow', 'RangeError', 'mineHardNegatives: expected similarities that stay finite after dividing by options.temperature for imageFeatures but received a non-finite similarity in the row of image 0');
  is('native NaN feature', 'RangeError', 'mineHardNegatives: expected finite values for imageFeatures but received NaN at position [1, 0]');
  is('native B = 1', 'RangeError', /^mineHardNegatives: expected a batch of at least 2 samples/);
  is('native temp', 'RangeError', /for options.temperature but received the number -Infinity$/);
  is('native ids', 'RangeError', 'mineHardNegatives: expected shape [4] for options.imageIds but received shape [2]');
  is('native ids equal', 'RangeError', /every id equal to 0$/);
  is('native text', 'RangeError', /^mineHardNegatives: expected shape \[4, 3\] for textFeatures/);
  is('native offset', 'RangeError', /^mineHardNegatives: expected an integer in \[0, 9007199254740991\] for options.offset but received the number -1$/);
  is('native not a tensor', 'TypeError', 'mineHardNegatives: expected a tensor for imageFeatures but received an object');
  is('head rows', 'RangeError', 'itm: expected 3B rows (B positives, then B text negatives and B image negatives) for features but received shape [7, 5]');
  is('head weight', 'RangeError', 'itm: expected shape [2, 5] for weight but received shape [3, 5]');
  is('head bias', 'TypeError', 'itm: expected a float32 tensor (the dtype of features) for bias but received a float64 tensor');
  is('head rank', 'RangeError', /^itm: expected a tensor of rank 2 \[3B, H\] or 3 \[3B, Q, H\] for features/);
  is('head disposed', 'TypeError', 'itm: expected a live tensor for features but received a disposed tensor');
  is('native head rows', 'RangeError', /^itm: expected 3B rows .* for features but received shape \[4, 5\]$/);
  is('native head weight', 'RangeError', /^itm: expected shape \[2, 5\] for weight/);
  is('native head needs', 'TypeError', /^itm: expected an array of 3 booleans \[features, weight, bias\] for needs but received the number 1 at index 1$/);
  is('native head empty', 'RangeError', /^itm: expected a non-empty tensor for features/);
});
