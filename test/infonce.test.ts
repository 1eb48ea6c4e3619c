// infonce family (ts/objectives/itc.ts over native/cpu/infonce.cc): float64 gradient
// checks of every option and their combinations, the fused float32 kernel against the
// materialised float64 reference, numeric hazards, memory, determinism, the temperature
// clamps and bad input (in a child process).
import test from 'ava';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { join, dirname } from 'node:path';
import { native } from '../ts/native.js';
import { Tensor, wrap } from '../ts/graph/tensor.js';
import { randn, tensor, full } from '../ts/graph/creation.js';
import { noGrad, record } from '../ts/graph/autograd.js';
import { tidy } from '../ts/graph/scope.js';
import { transpose } from '../ts/graph/ops/views.js';
import { infoNCE, infoNCEReference, clampLogitScale, clampTemperature, type InfoNCEOptions } from '../ts/objectives/itc.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const f64 = { dtype: 'float64' as const };
const LN_1_007 = Math.log(1 / 0.07);

let seed = 100;
function rnd(shape: number[], dtype: 'float32' | 'float64' = 'float64', std = 1): Tensor {
  return randn(shape, { dtype, seed: seed++, std });
}
function leaf(shape: number[], std = 1): Tensor {
  return rnd(shape, 'float64', std).requiresGrad_();
}
function scalar(v: number, dtype: 'float32' | 'float64' = 'float64'): Tensor {
  return tensor([v], [1], { dtype }).requiresGrad_();
}
const range = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i));

// ---- gradient checks (float64) --------------------------------------------------------------

interface GradCase {
  B: number; Q?: number; D: number;
  opts: (B: number, Q: number, D: number) => Omit<InfoNCEOptions, 'logitScale' | 'temperature'>;
  temperature?: boolean;  // the divisor parametrisation instead of CLIP's log-scale
  p?: number;
  // Momentum soft targets use the current temperature but are constants of the loss
  // (LAVIS computes them under no_grad), so a finite difference in the temperature moves
  // them and the temperature is not gradchecked there; its gradient is checked against
  // the reference (same convention) in the float32-vs-reference test with every option.
  softTargets?: boolean;
  tiles?: [number, number];  // GEMM rows x columns per tile for this check (default 256 x 256)
}

function gradcase(name: string, c: GradCase): void {
  test(`gradcheck: ${name}`, (t) => {
    const Q = c.Q ?? 1;
    const image = leaf(Q > 1 ? [c.B, Q, c.D] : [c.B, c.D]);
    const text = leaf([c.B, c.D]);
    const pv = c.p ?? (c.temperature ? 0.5 : Math.log(2));
    const p = c.softTargets ? tensor([pv], [1], f64) : scalar(pv);
    const extra = c.opts(c.B, Q, c.D);
    const fn = (i: Tensor, x: Tensor, s: Tensor) =>
      infoNCE(i, x, { ...extra, ...(c.temperature ? { temperature: s } : { logitScale: s }) }).loss;
    const before = native.infonceTiles();
    if (c.tiles) native.infonceTiles(...c.tiles);
    try {
      assertGradcheck(t, fn, [image, text, p], {}, name);
    } finally {
      native.infonceTiles(...before);
    }
  });
}

const queue = (K: number, Q: number, D: number) => ({ image: rnd(Q > 1 ? [K, Q, D] : [K, D]), text: rnd([K, D]) });
const momentum = (B: number, Q: number, D: number, alpha: number) =>
  ({ image: rnd(Q > 1 ? [B, Q, D] : [B, D]), text: rnd([B, D]), alpha });

gradcase('CLIP log-scale, raw features', { B: 5, D: 3, opts: () => ({}) });
gradcase('CLIP log-scale, normalize in the kernel', { B: 5, D: 3, p: LN_1_007, opts: () => ({ normalize: true }) });
gradcase('temperature divisor (ALIGN/BLIP)', { B: 5, D: 3, temperature: true, opts: () => ({ normalize: true }) });
gradcase('label smoothing', { B: 6, D: 3, opts: () => ({ labelSmoothing: 0.1, normalize: true }) });
gradcase('queue', { B: 4, D: 3, opts: (_B, Q, D) => ({ queue: queue(5, Q, D) }) });
gradcase('smoothing + queue', { B: 4, D: 3, opts: (_B, Q, D) => ({ labelSmoothing: 0.1, normalize: true, queue: queue(5, Q, D) }) });
gradcase('momentum distillation', { B: 5, D: 3, temperature: true, softTargets: true, opts: (B, Q, D) => ({ normalize: true, momentum: momentum(B, Q, D, 0.4) }) });
gradcase('momentum with alpha 0', { B: 4, D: 3, opts: (B, Q, D) => ({ momentum: momentum(B, Q, D, 0) }) });
gradcase('momentum + queue', { B: 4, D: 3, temperature: true, softTargets: true, opts: (B, Q, D) => ({ normalize: true, momentum: momentum(B, Q, D, 0.4), queue: queue(6, Q, D) }) });
gradcase('max over query tokens', { B: 4, Q: 3, D: 3, opts: () => ({ normalize: true }) });
gradcase('max over queries + smoothing', { B: 4, Q: 3, D: 3, opts: () => ({ normalize: true, labelSmoothing: 0.1 }) });
gradcase('max over queries + queue + momentum', { B: 3, Q: 2, D: 3, softTargets: true, opts: (B, Q, D) => ({ normalize: true, queue: queue(3, Q, D), momentum: momentum(B, Q, D, 0.4) }) });
gradcase('id positives', { B: 6, D: 3, opts: (B) => ({ normalize: true, imageIds: range(B, (i) => i % 3) }) });
gradcase('id positives + queue ids + smoothing', { B: 5, D: 3, opts: (B, Q, D) => ({
  normalize: true, labelSmoothing: 0.1, imageIds: range(B, (i) => i % 2), queue: { ...queue(4, Q, D), ids: [1, 7, 0, 9] } }) });
gradcase('local rows x global columns', { B: 6, D: 3, opts: () => ({ normalize: true, localRows: { offset: 2, count: 3 } }) });
gradcase('local rows + ids + queue + max over queries', { B: 5, Q: 2, D: 2, opts: (B, Q, D) => ({
  normalize: true, localRows: { offset: 1, count: 3 }, imageIds: range(B, (i) => i % 2), queue: queue(3, Q, D) }) });
gradcase('B = 1', { B: 1, D: 3, opts: () => ({ normalize: true, labelSmoothing: 0.1 }) });
gradcase('D = 1', { B: 4, D: 1, opts: () => ({}) });
gradcase('B = 1, D = 1, queue', { B: 1, D: 1, opts: (_B, Q, D) => ({ queue: queue(2, Q, D) }) });
// Ragged tiles: with 3 x 2 tiles, B = 7 is not a multiple of either side, so every
// tile-boundary path (row and column statistics, diagonal and id positives crossing
// tiles, per-tile gradient products) is exercised at a size gradcheck can afford.
gradcase('B = 7 on 3 x 2 tiles (square block, smoothing)', { B: 7, D: 2, tiles: [3, 2], opts: () => ({ normalize: true, labelSmoothing: 0.1 }) });
gradcase('B = 7 on 2 x 3 tiles (ids + queue ids)', { B: 7, D: 2, tiles: [2, 3], opts: (B, Q, D) => ({
  normalize: true, imageIds: range(B, (i) => i % 3), queue: { ...queue(5, Q, D), ids: [0, 5, 1, 6, 2] } }) });
gradcase('B = 7 on 3 x 2 tiles (local rows, momentum, queue)', { B: 7, D: 2, tiles: [3, 2], softTargets: true, opts: (B, Q, D) => ({
  localRows: { offset: 1, count: 5 }, momentum: momentum(B, Q, D, 0.4), queue: queue(5, Q, D) }) });
gradcase('B = 5, Q = 3 on 4 x 5 tiles (max over queries, ragged)', { B: 5, Q: 3, D: 2, tiles: [4, 5], opts: (_B, Q, D) => ({
  normalize: true, labelSmoothing: 0.1, queue: queue(4, Q, D) }) });
// With 64 query tokens a row tile holds 4 images: 7 images make two ragged tiles on
// both sides of the t2i pass (local rows force the general path).
gradcase('Q = 64: ragged tiles on both sides', { B: 7, Q: 64, D: 2, opts: () => ({ normalize: true, localRows: { offset: 0, count: 6 } }) });

test('gradcheck: strided (transposed) leaves and a [] parameter', (t) => {
  const image = noGrad(() => transpose(rnd([3, 5]))).requiresGrad_();
  const text = noGrad(() => transpose(rnd([3, 5]))).requiresGrad_();
  t.false(image.isContiguous);
  const p = tensor(0.7, [], f64).requiresGrad_();
  assertGradcheck(t, (i, x, s) => infoNCE(i, x, { logitScale: s, normalize: true, labelSmoothing: 0.1 }).loss, [image, text, p]);
});

test('gradcheck: the loss composes with other recorded ops (scaled sum of two losses)', (t) => {
  const image = leaf([4, 3]), text = leaf([4, 3]), p = scalar(0.3);
  const fn = (i: Tensor, x: Tensor, s: Tensor) => {
    const a = infoNCE(i, x, { logitScale: s }).loss;
    const b = infoNCE(x, i, { logitScale: s, labelSmoothing: 0.2 }).loss;
    return sumOf(a, b);  // both losses' gradients meet in the same leaves
  };
  assertGradcheck(t, fn, [image, text, p]);
});

// a + b as a recorded op, without depending on other families' TS files.
function sumOf(a: Tensor, b: Tensor): Tensor {
  const out = wrap(native.binary('add', a.handle, b.handle));
  return record(out, 'add', [a, b], (g) => [g, g]);
}

// ---- values -----------------------------------------------------------------------------------

test('value: matches the formula written out by hand for B = 2', (t) => {
  const I = [[1, 0], [0, 2]], T = [[1, 1], [0, 1]], s = 1.5;
  const L = I.map((a) => T.map((b) => s * (a[0]! * b[0]! + a[1]! * b[1]!)));  // [[1.5, 0], [3, 3]]
  const lse = (v: number[]) => Math.log(v.reduce((acc, x) => acc + Math.exp(x), 0));
  const col = (j: number) => L.map((r) => r[j]!);
  const i2t = (lse(L[0]!) - L[0]![0]! + lse(L[1]!) - L[1]![1]!) / 2;
  const t2i = (lse(col(0)) - L[0]![0]! + lse(col(1)) - L[1]![1]!) / 2;
  const r = infoNCE(tensor(I, undefined, f64), tensor(T, undefined, f64), { logitScale: Math.log(s) });
  t.true(Math.abs(r.loss.item() - (i2t + t2i) / 2) < 1e-12, `${r.loss.item()} vs ${(i2t + t2i) / 2}`);
  // i2t: row 0 picks column 0 (right); row 1 ties 3 = 3 and picks the first column (wrong).
  t.is(r.accI2T, 0.5);
  // t2i: text 0 sees [1.5, 3] and picks image 1 (wrong); text 1 sees [0, 3] (right).
  t.is(r.accT2I, 0.5);
});

test('accuracy: identical normalised pairs give 1, and ids count any positive', (t) => {
  const x = rnd([50, 8]);
  const r = infoNCE(x, x, { logitScale: LN_1_007, normalize: true });
  t.is(r.accI2T, 1);
  t.is(r.accT2I, 1);
  // text j equals image (j + 1) mod B, so image i's best text is i - 1: one-hot accuracy 0.
  const shifted = tensor(Float64Array.from([...x.toArray().slice(8), ...x.toArray().slice(0, 8)]), [50, 8]);
  t.is(infoNCE(x, shifted, { logitScale: 0, normalize: true }).accI2T, 0);
  // ids floor(i / 2): i - 1 shares image i's id exactly when i is odd, so half the rows are right.
  const r2 = infoNCE(x, shifted, { logitScale: 3, normalize: true, imageIds: range(50, (i) => Math.floor(i / 2)) });
  t.is(r2.accI2T, 0.5);
});

test('accuracy: ties go to the first column, across vector lanes and tiles', (t) => {
  // Every logit equal: each row's arg-max is column 0, so only row 0 is right.
  const same = full([40, 4], 0.5, f64);
  for (const tiles of [[256, 256], [3, 5]] as const) {
    const before = native.infonceTiles();
    native.infonceTiles(...tiles);
    try {
      const r = infoNCE(same, same, { logitScale: 1 });
      t.is(r.accI2T, 1 / 40, `tiles ${tiles}`);
      t.is(r.accT2I, 1 / 40, `tiles ${tiles}`);
    } finally {
      native.infonceTiles(...before);
    }
  }
});

test('fused float32 matches the float64 reference at B = 1000 and 3000 (loss, gradients, accuracy)', (t) => {
  for (const B of [1000, 3000]) {
    tidy(() => {
      const D = 32;
      const image = rnd([B, D], 'float32').requiresGrad_();
      const text = rnd([B, D], 'float32').requiresGrad_();
      const p = scalar(LN_1_007, 'float32');
      const r = infoNCE(image, text, { logitScale: p, normalize: true });
      r.loss.backward();
      const i64 = wrap(native.cast(image.handle, 'float64')), t64 = wrap(native.cast(text.handle, 'float64'));
      const ref = infoNCEReference(i64, t64, { logitScale: LN_1_007, normalize: true });
      t.true(Math.abs(r.loss.item() - ref.loss) < 1e-5 * Math.abs(ref.loss), `B=${B} loss ${r.loss.item()} vs ${ref.loss}`);
      t.true(Math.abs(r.accI2T - ref.accI2T) <= 2 / B && Math.abs(r.accT2I - ref.accT2I) <= 2 / B, `B=${B} accuracy`);
      const gmax = (a: ArrayLike<number>) => { let m = 0; for (let k = 0; k < a.length; k++) m = Math.max(m, Math.abs(a[k]!)); return m; };
      const dI = ref.dImage.toArray(), dT = ref.dText.toArray();
      assertClose(t, image.grad!.toArray(), dI, 2e-4 * gmax(dI), 1e-3, `B=${B} d(image)`);
      assertClose(t, text.grad!.toArray(), dT, 2e-4 * gmax(dT), 1e-3, `B=${B} d(text)`);
      t.true(Math.abs(p.grad!.item() - ref.dParam) < 1e-4 * Math.max(1, Math.abs(ref.dParam)), `B=${B} d(logitScale) ${p.grad!.item()} vs ${ref.dParam}`);
    });
  }
});

test('fused float32 matches the reference with every option at once (B = 1000, Q = 4)', (t) => {
  tidy(() => {
    const B = 1000, Q = 4, D = 16, K = 300;
    const image = rnd([B, Q, D], 'float32').requiresGrad_();
    const text = rnd([B, D], 'float32').requiresGrad_();
    const tau = scalar(0.07, 'float32');
    const mk = (x: Tensor) => wrap(native.cast(x.handle, 'float64'));
    const ids = Int32Array.from(range(B, (i) => Math.floor(i / 3)));
    const qids = Int32Array.from(range(K, (i) => i * 7));
    const qi = rnd([K, Q, D], 'float32'), qt = rnd([K, D], 'float32');
    const mi = rnd([B, Q, D], 'float32'), mt = rnd([B, D], 'float32');
    const o = (c: (x: Tensor) => Tensor): InfoNCEOptions => ({
      normalize: true, labelSmoothing: 0.1, imageIds: ids, queue: { image: c(qi), text: c(qt), ids: qids },
      momentum: { image: c(mi), text: c(mt), alpha: 0.4 }, localRows: { offset: 100, count: 700 },
    });
    const r = infoNCE(image, text, { ...o((x) => x), temperature: tau });
    r.loss.backward();
    const ref = infoNCEReference(mk(image), mk(text), { ...o(mk), temperature: 0.07 });
    t.true(Math.abs(r.loss.item() - ref.loss) < 1e-5 * Math.abs(ref.loss), `loss ${r.loss.item()} vs ${ref.loss}`);
    t.true(Math.abs(r.accI2T - ref.accI2T) <= 2 / 700 && Math.abs(r.accT2I - ref.accT2I) <= 2 / 700);
    const gmax = (a: ArrayLike<number>) => { let m = 0; for (let k = 0; k < a.length; k++) m = Math.max(m, Math.abs(a[k]!)); return m; };
    const dI = ref.dImage.toArray(), dT = ref.dText.toArray();
    assertClose(t, image.grad!.toArray(), dI, 2e-4 * gmax(dI), 1e-3, 'd(image)');
    assertClose(t, text.grad!.toArray(), dT, 2e-4 * gmax(dT), 1e-3, 'd(text)');
    t.true(Math.abs(tau.grad!.item() - ref.dParam) < 1e-4 * Math.max(1, Math.abs(ref.dParam)), `d(tau) ${tau.grad!.item()} vs ${ref.dParam}`);
  });
});

test('the vectorised float32 exp is accurate to 1e-6 relative', (t) => {
  const lo = native.infonceExpError(-87, 0, 1_000_003);
  const hi = native.infonceExpError(0, 88, 100_003);
  t.true(lo < 1e-6, `max relative error on [-87, 0]: ${lo}`);
  t.true(hi < 1e-6, `max relative error on [0, 88]: ${hi}`);
});

test('deterministic: two runs give bitwise equal loss and gradients', (t) => {
  const image = rnd([600, 16], 'float32'), text = rnd([600, 16], 'float32');
  const run = () => tidy(() => {
    const i = image.detach().requiresGrad_(), x = text.detach().requiresGrad_();
    const r = infoNCE(i, x, { logitScale: LN_1_007, normalize: true, labelSmoothing: 0.1 });
    r.loss.backward();
    return [r.loss.item(), Array.from(i.grad!.toArray()), Array.from(x.grad!.toArray())] as const;
  });
  t.deepEqual(run(), run());
});

// ---- numeric hazards ---------------------------------------------------------------------------

function finiteAll(t: import('ava').ExecutionContext, label: string, ...arrays: ArrayLike<number>[]): void {
  for (const a of arrays) for (let k = 0; k < a.length; k++) if (!Number.isFinite(a[k]!)) { t.fail(`${label}: element ${k} is ${a[k]}`); return; }
  t.pass();
}

for (const dtype of ['float32', 'float64'] as const) {
  test(`hazard (${dtype}): scale 100 with nearly identical embeddings`, (t) => {
    const B = 300, D = 16;
    const base = rnd([1, D], dtype);
    const noise = rnd([B, D], dtype, 1e-6);
    const rows = wrap(native.binary('add', noise.handle, base.handle));
    const image = rows.detach().requiresGrad_(), text = wrap(native.contiguous(rows.handle)).requiresGrad_();
    const p = scalar(Math.log(100), dtype);
    const r = infoNCE(image, text, { logitScale: p, normalize: true });
    r.loss.backward();
    finiteAll(t, 'loss and gradients', [r.loss.item()], image.grad!.toArray(), text.grad!.toArray(), [p.grad!.item()]);
    t.true(Math.abs(r.loss.item() - Math.log(B)) < 0.05, `loss ${r.loss.item()} ~ ln B = ${Math.log(B)}`);
  });

  test(`hazard (${dtype}): a zero embedding with normalisation`, (t) => {
    const image0 = rnd([6, 4], dtype);
    const z = full([1, 4], 0, { dtype });
    native.copy(native.view(image0.handle, [1, 4], [4, 1], 8), z.handle);  // row 2 = 0
    const image = image0.requiresGrad_(), text = rnd([6, 4], dtype).requiresGrad_();
    const r = infoNCE(image, text, { logitScale: LN_1_007, normalize: true });
    r.loss.backward();
    finiteAll(t, 'zero row', [r.loss.item()], image.grad!.toArray(), text.grad!.toArray());
  });

  test(`hazard (${dtype}): very different magnitudes`, (t) => {
    const image = wrap(native.affine(rnd([40, 8], dtype).handle, 1e4, 0)).requiresGrad_();
    const text = wrap(native.affine(rnd([40, 8], dtype).handle, 1e-4, 0)).requiresGrad_();
    const rn = infoNCE(image, text, { logitScale: LN_1_007, normalize: true });
    rn.loss.backward();
    finiteAll(t, 'normalised', [rn.loss.item()], image.grad!.toArray(), text.grad!.toArray());
    // Normalisation makes the loss scale-free: the same as with unit-scale inputs.
    const ref = infoNCEReference(wrap(native.affine(image.handle, 1e-4, 0)), wrap(native.affine(text.handle, 1e4, 0)),
      { logitScale: LN_1_007, normalize: true });
    t.true(Math.abs(rn.loss.item() - ref.loss) < 1e-4 * ref.loss, `${rn.loss.item()} vs ${ref.loss}`);
    // Raw logits in the hundreds stay finite through the online logsumexp.
    const big = infoNCE(wrap(native.affine(image.handle, 1e-3, 0)), wrap(native.affine(text.handle, 1e3, 0)), { logitScale: 0 });
    finiteAll(t, 'raw large logits', [big.loss.item()]);
  });
}

// ---- memory ---------------------------------------------------------------------------------

test('memory: fused forward + backward at B = 4096 stays far below one B x B matrix', (t) => {
  const B = 4096, D = 64;
  const image = rnd([B, D], 'float32').requiresGrad_(), text = rnd([B, D], 'float32').requiresGrad_();
  const before = native.memory().cpu.liveBytes;
  native.resetPeak();
  tidy(() => {
    const r = infoNCE(image, text, { logitScale: LN_1_007, normalize: true, labelSmoothing: 0.1 });
    r.loss.backward();
  });
  const peak = native.memory().cpu.peakBytes - before;
  const grads = 2 * B * D * 4;
  t.true(peak - grads < 8 << 20, `peak above inputs and gradients: ${((peak - grads) / 2 ** 20).toFixed(2)} MiB (B x B float32: 64 MiB)`);
  image.grad?.dispose();
  text.grad?.dispose();
});

// ---- clamps and autograd plumbing ---------------------------------------------------------------------

test('clampLogitScale and clampTemperature clamp in place', (t) => {
  const s = scalar(6);
  clampLogitScale(s);
  t.is(s.item(), Math.log(100));
  const s2 = scalar(1);
  clampLogitScale(s2);
  t.is(s2.item(), 1);
  const tau = scalar(0.9, 'float32');
  clampTemperature(tau);
  t.is(tau.item(), Math.fround(0.5));
  const tau2 = scalar(1e-5);
  clampTemperature(tau2);
  t.is(tau2.item(), 0.001);
  t.throws(() => clampTemperature(tau2, 0.5, 0.1), { instanceOf: RangeError });
  t.throws(() => clampLogitScale(rnd([2])), { instanceOf: RangeError, message: /one element for param/ });
});

test('gradients only where asked: a number temperature and a constant text', (t) => {
  const image = leaf([5, 3]), text = rnd([5, 3]);
  const r = infoNCE(image, text, { temperature: 0.1, normalize: true });
  r.loss.backward();
  t.truthy(image.grad);
  t.is(text.grad, null);
  t.deepEqual(image.grad!.shape, [5, 3]);
  const m = rnd([5, 3]);
  const r2 = infoNCE(image, text, { logitScale: 1, momentum: { image: m, text: m, alpha: 0.5 } });
  t.true(Number.isFinite(r2.loss.item()));
});

test('momentum with alpha 0 is plain cross-entropy against the momentum columns (LAVIS)', (t) => {
  // i2t rows: image against momentum text; t2i rows: text against momentum image.
  const B = 6, D = 4;
  const image = rnd([B, D]), text = rnd([B, D]), mi = rnd([B, D]), mt = rnd([B, D]);
  const withM = infoNCE(image, text, { logitScale: 1, momentum: { image: mi, text: mt, alpha: 0 } }).loss.item();
  const expected = 0.5 * (lossRows(image, mt) + lossRows(text, mi));
  t.true(Math.abs(withM - expected) < 1e-12, `${withM} vs ${expected}`);
});

// Mean cross-entropy of the rows of e * rows . cols^T against the diagonal, by hand in JS.
function lossRows(rows: Tensor, cols: Tensor): number {
  const a = rows.toArray(), b = cols.toArray();
  const B = rows.shape[0]!, D = rows.shape[1]!;
  let sum = 0;
  for (let i = 0; i < B; i++) {
    const row: number[] = [];
    for (let j = 0; j < B; j++) {
      let d = 0;
      for (let k = 0; k < D; k++) d += a[i * D + k]! * b[j * D + k]!;
      row.push(Math.E * d);
    }
    const m = Math.max(...row);
    sum += m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0)) - row[i]!;
  }
  return sum / B;
}

// ---- bad input -----------------------------------------------------------------------------------

test('bad input: each a clear TypeError/RangeError, no crash (child process)', (t) => {
  const here = dirname(fileURLToPath(import.meta.url));
  const itc = pathToFileURL(join(here, '..', 'ts', 'objectives', 'itc.ts')).href;
  const nat = pathToFileURL(join(here, '..', 'ts', 'native.ts')).href;
  const setup = `globalThis.itc = await import(${JSON.stringify(itc)}); globalThis.nat = (await import(${JSON.stringify(nat)})).native;` +
    `globalThis.r = (s, d = 'float32') => vlm.randn(s, { dtype: d, seed: 1 });` +
    `globalThis.o = (B, extra = {}) => ({ mode: 'logit_scale', normalize: false, labelSmoothing: 0, imageIds: null, queueImage: null, queueText: null, queueIds: null, momentumImage: null, momentumText: null, alpha: 0, rowOffset: 0, rowCount: B, ...extra });` +
    `throw new Error('setup done')`;
  const cases: [string, string][] = [
    ['setup', setup],
    ['mismatched B', `itc.infoNCE(r([4, 3]), r([5, 3]), { logitScale: 1 })`],
    ['mismatched D', `itc.infoNCE(r([4, 3]), r([4, 2]), { logitScale: 1 })`],
    ['Q for text', `itc.infoNCE(r([4, 2, 3]), r([4, 2, 3]), { logitScale: 1 })`],
    ['queue with another D', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, queue: { image: r([6, 2]), text: r([6, 2]) } })`],
    ['queue text with another K', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, queue: { image: r([6, 3]), text: r([5, 3]) } })`],
    ['NaN temperature number', `itc.infoNCE(r([4, 3]), r([4, 3]), { temperature: NaN })`],
    ['NaN temperature tensor', `itc.infoNCE(r([4, 3]), r([4, 3]), { temperature: vlm.full([1], NaN) })`],
    ['negative temperature', `itc.infoNCE(r([4, 3]), r([4, 3]), { temperature: vlm.full([], -0.1) })`],
    ['ids of the wrong length', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, imageIds: [0, 1, 2] })`],
    ['ids not int32', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, imageIds: vlm.zeros([4]) })`],
    ['both parametrisations', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, temperature: 0.1 })`],
    ['neither parametrisation', `itc.infoNCE(r([4, 3]), r([4, 3]), {})`],
    ['int32 image', `itc.infoNCE(vlm.zeros([4, 3], { dtype: 'int32' }), r([4, 3]), { logitScale: 1 })`],
    ['dtype mix', `itc.infoNCE(r([4, 3]), r([4, 3], 'float64'), { logitScale: 1 })`],
    ['param dtype', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: vlm.full([], 1, { dtype: 'float64' }) })`],
    ['param two elements', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: vlm.zeros([2]) })`],
    ['smoothing out of range', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, labelSmoothing: 1.5 })`],
    ['alpha NaN', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, momentum: { image: r([4, 3]), text: r([4, 3]), alpha: NaN } })`],
    ['momentum shape', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, momentum: { image: r([3, 3]), text: r([4, 3]), alpha: 0.4 } })`],
    ['local rows out of range', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, localRows: { offset: 3, count: 2 } })`],
    ['local rows not integer', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, localRows: { offset: 0.5, count: 2 } })`],
    ['unknown option', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, labelSmothing: 0.1 })`],
    ['queue ids without ids', `itc.infoNCE(r([4, 3]), r([4, 3]), { logitScale: 1, queue: { image: r([2, 3]), text: r([2, 3]), ids: [1, 2] } })`],
    ['disposed text', `{ const x = r([4, 3]); x.dispose(); itc.infoNCE(r([4, 3]), x, { logitScale: 1 }); }`],
    ['empty image', `itc.infoNCE(r([0, 3]), r([0, 3]), { logitScale: 1 })`],
    // The native boundary on its own (what a caller of the raw binding meets).
    ['native: mismatched D', `nat.infonceForward(r([4, 3]).handle, r([4, 2]).handle, vlm.full([], 1).handle, o(4))`],
    ['native: Q for text', `nat.infonceForward(r([4, 3]).handle, r([4, 1, 3]).handle, vlm.full([], 1).handle, o(4))`],
    ['native: NaN temperature', `nat.infonceForward(r([4, 3]).handle, r([4, 3]).handle, vlm.full([], NaN).handle, o(4, { mode: 'temperature' }))`],
    ['native: ids length', `nat.infonceForward(r([4, 3]).handle, r([4, 3]).handle, vlm.full([], 1).handle, o(4, { imageIds: vlm.zeros([3], { dtype: 'int32' }).handle }))`],
    ['native: queue D', `nat.infonceForward(r([4, 3]).handle, r([4, 3]).handle, vlm.full([], 1).handle, o(4, { queueImage: r([5, 2]).handle, queueText: r([5, 2]).handle }))`],
    ['native: half a queue', `nat.infonceForward(r([4, 3]).handle, r([4, 3]).handle, vlm.full([], 1).handle, o(4, { queueImage: r([5, 3]).handle }))`],
    ['native: rows past B', `nat.infonceForward(r([4, 3]).handle, r([4, 3]).handle, vlm.full([], 1).handle, o(4, { rowOffset: 2, rowCount: 3 }))`],
    ['native: bad mode', `nat.infonceForward(r([4, 3]).handle, r([4, 3]).handle, vlm.full([], 1).handle, o(4, { mode: 'kelvin' }))`],
    ['native: options not an object', `nat.infonceForward(r([4, 3]).handle, r([4, 3]).handle, vlm.full([], 1).handle, 7)`],
    ['native: saved of another shape', `nat.infonceBackward(r([4, 3]).handle, r([4, 3]).handle, vlm.full([], 1).handle, o(4), vlm.zeros([2, 3, 3], { dtype: 'float64' }).handle, 1, true, true, true)`],
    ['native: saved float32', `nat.infonceBackward(r([4, 3]).handle, r([4, 3]).handle, vlm.full([], 1).handle, o(4), vlm.zeros([2, 3, 4]).handle, 1, true, true, true)`],
  ];
  const { result, errors } = errorsInChild(cases);
  t.is(result.status, 0, `child exited with ${result.status} ${result.signal ?? ''}: ${result.stderr.slice(-2000)}`);
  t.is(errors['setup']?.message, 'setup done', JSON.stringify(errors['setup']));
  const expect: Record<string, [string, RegExp]> = {
    'mismatched B': ['RangeError', /^infoNCE: expected shape \[4, 3\] for text but received shape \[5, 3\]$/],
    'mismatched D': ['RangeError', /^infoNCE: expected shape \[4, 3\] for text but received shape \[4, 2\]$/],
    'Q for text': ['RangeError', /^infoNCE: expected a tensor of rank 2 \[B, D\] \(only image may carry query tokens\) for text but received shape \[4, 2, 3\]$/],
    'queue with another D': ['RangeError', /^infoNCE: expected shape \[6, 3\] for options.queue.image but received shape \[6, 2\]$/],
    'queue text with another K': ['RangeError', /^infoNCE: expected shape \[6, 3\] for options.queue.text but received shape \[5, 3\]$/],
    'NaN temperature number': ['RangeError', /^infoNCE: expected a finite number for options.temperature but received the number NaN$/],
    'NaN temperature tensor': ['RangeError', /^infoNCE: expected a finite value for options.temperature but received a tensor holding nan$/],
    'negative temperature': ['RangeError', /^infoNCE: expected a positive temperature in \[1e-30, 1e30\] for options.temperature/],
    'ids of the wrong length': ['RangeError', /^infoNCE: expected shape \[4\] for options.imageIds but received shape \[3\]$/],
    'ids not int32': ['TypeError', /^infoNCE: expected an int32 tensor for options.imageIds but received a float32 tensor$/],
    'both parametrisations': ['TypeError', /exactly one of options.logitScale and options.temperature but received both/],
    'neither parametrisation': ['TypeError', /exactly one of options.logitScale and options.temperature but received neither/],
    'int32 image': ['TypeError', /^infoNCE: expected a float32 or float64 tensor for image but received an int32 tensor$/],
    'dtype mix': ['TypeError', /^infoNCE: expected a float32 tensor \(the dtype of image\) for text but received a float64 tensor$/],
    'param dtype': ['TypeError', /for options.logitScale but received a float64 tensor/],
    'param two elements': ['RangeError', /one element for options.logitScale but received shape \[2\]/],
    'smoothing out of range': ['RangeError', /^infoNCE: expected a finite number in \[0, 1\] for options.labelSmoothing but received the number 1.5$/],
    'alpha NaN': ['RangeError', /for options.momentum.alpha but received the number NaN/],
    'momentum shape': ['RangeError', /^infoNCE: expected shape \[4, 3\] for options.momentum.image but received shape \[3, 3\]$/],
    'local rows out of range': ['RangeError', /^infoNCE: expected an integer in \[1, 1\] for options.localRows.count but received the number 2$/],
    'local rows not integer': ['TypeError', /^infoNCE: expected an integer for options.localRows.offset/],
    'unknown option': ['TypeError', /for an option name but received 'labelSmothing'/],
    'queue ids without ids': ['TypeError', /queue ids need batch ids/],
    'disposed text': ['TypeError', /disposed/],
    'empty image': ['RangeError', /non-empty tensor for image/],
    'native: mismatched D': ['RangeError', /^infoNCE: expected shape \[4, 3\] for text but received shape \[4, 2\]$/],
    'native: Q for text': ['RangeError', /only image may carry query tokens\) for text but received shape \[4, 1, 3\]$/],
    'native: NaN temperature': ['RangeError', /^infoNCE: expected a finite value for options.temperature but received a tensor holding nan$/],
    'native: ids length': ['RangeError', /^infoNCE: expected shape \[4\] for options.imageIds but received shape \[3\]$/],
    'native: queue D': ['RangeError', /^infoNCE: expected shape \[5, 3\] for options.queue.image but received shape \[5, 2\]$/],
    'native: half a queue': ['TypeError', /^infoNCE: expected a tensor \(a queue needs both modalities\) for options.queue.text but received null$/],
    'native: rows past B': ['RangeError', /^infoNCE: expected an integer in \[1, 2\] for options.localRows.count but received the number 3$/],
    'native: bad mode': ['TypeError', /^infoNCE: expected 'logit_scale' or 'temperature' for options.mode but received the string 'kelvin'$/],
    'native: options not an object': ['TypeError', /^infoNCE: expected an options object for options but received the number 7$/],
    'native: saved of another shape': ['RangeError', /^infoNCE: expected shape \[2, 3, 4\] for saved but received shape \[2, 3, 3\]$/],
    'native: saved float32': ['TypeError', /^infoNCE: expected a float64 tensor for saved but received a float32 tensor$/],
  };
  for (const [label, [name, re]] of Object.entries(expect)) {
    const e = errors[label];
    t.is(e?.name, name, `${label}: ${JSON.stringify(e)}`);
    t.regex(e?.message ?? '', re, label);
  }
});
