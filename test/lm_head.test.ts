// lm_head family and the LM objective (ts/objectives/lm.ts): the float64 reference
// against a JavaScript re-derivation of torch's label-smoothed cross-entropy; the fused
// kernels (forward, forward+backward, backward from lse) against the reference with
// chunks that do not divide N or V; float64 gradient checks (smoothing, bias, ignored
// positions, 'none', strided inputs, a tied embedding, a weight used twice); float32
// against float64; determinism; all-ignored batches; out-of-range targets; memory;
// bad input in a child process.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native, type NativeTensor } from '../ts/native.js';
import { Tensor } from '../ts/graph/tensor.js';
import { record, noGrad } from '../ts/graph/autograd.js';
import { tidy } from '../ts/graph/scope.js';
import { randn, tensor } from '../ts/graph/creation.js';
import { transpose, slice } from '../ts/graph/ops/views.js';
import { embedding } from '../ts/graph/ops/gather.js';
import { lmLoss, type LmLossOptions } from '../ts/objectives/lm.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const f64 = (shape: number[], seed: number, requiresGrad = true, std = 1) =>
  randn(shape, { dtype: 'float64', seed, requiresGrad, std });
const ids = (values: number[], shape?: number[]) => tensor(Int32Array.from(values), shape ?? [values.length]);
/** Targets in [0, V) from a fixed pattern, with every `ignoreEvery`-th position ignored. */
const targetsFor = (n: number, V: number, ignoreEvery = 0) =>
  ids(Array.from({ length: n }, (_, i) => (ignoreEvery && i % ignoreEvery === ignoreEvery - 1 ? -100 : (i * 7 + 3) % V)));
const arr = (t: Tensor | null) => Float64Array.from(t!.toArray());
/** Frees every native tensor in a binding result. */
const disposeAll = (r: object) => { for (const v of Object.values(r)) if (v && typeof v === 'object') (v as NativeTensor).dispose(); };

/** Scalar a + b as a recorded op (the test's own add: no elementwise op needed). */
function add(a: Tensor, b: Tensor): Tensor {
  const out = tensor(new Float64Array([a.item() + b.item()]), [], { dtype: 'float64' });
  return record(out, 'testAdd', [a, b], (g) => [g, g]);
}

// ---- an independent JavaScript derivation of torch's formula --------------------------

/** torch.nn.functional.cross_entropy(h W^T + b, t, label_smoothing=eps, ignore_index, reduction='none'). */
function jsLoss(h: Float64Array, w: Float64Array, b: Float64Array | null, t: Int32Array, H: number, V: number, eps: number, ignore: number,
  argmax: number[] = []): number[] {
  const out: number[] = [];
  for (let i = 0; i < t.length; i++) {
    if (t[i] === ignore) { out.push(0); argmax.push(-1); continue; }
    const z = Array.from({ length: V }, (_, j) => {
      let s = b ? b[j]! : 0;
      for (let k = 0; k < H; k++) s += h[i * H + k]! * w[j * H + k]!;
      return s;
    });
    const m = Math.max(...z);
    argmax.push(z.indexOf(m));
    const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
    const logp = z.map((v) => v - lse);
    const nll = -logp[t[i]!]!;
    const smooth = -logp.reduce((s, v) => s + v, 0) / V;
    out.push((1 - eps) * nll + eps * smooth);
  }
  return out;
}

test('the float64 reference matches torch\'s label-smoothed cross-entropy, re-derived in JS', (t) => {
  const N = 7, H = 5, V = 11;
  const h = f64([N, H], 1, false), w = f64([V, H], 2, false), b = f64([V], 3, false);
  const tg = targetsFor(N, V, 3);
  for (const eps of [0, 0.1, 0.5]) {
    const expect = jsLoss(arr(h), arr(w), arr(b), tg.toArray() as Int32Array, H, V, eps, -100);
    const r = native.lmHeadReference(h.handle, w.handle, b.handle, tg.handle, -100, eps, 'none', [false, false, false]);
    assertClose(t, native.toArray(r.loss), expect, 1e-12, 1e-12, `eps ${eps}`);
    const m = native.lmHeadReference(h.handle, w.handle, b.handle, tg.handle, -100, eps, 'mean', [false, false, false]);
    t.is(m.valid, 5);
    assertClose(t, native.toArray(m.loss), [expect.reduce((s, v) => s + v, 0) / 5], 1e-12, 1e-12, `mean eps ${eps}`);
  }
});

// ---- fused kernels against the reference ----------------------------------------------

test('fused forward, forward+backward and backward-from-lse equal the reference (chunks not dividing N or V)', (t) => {
  const N = 13, H = 6, V = 37;
  const h = f64([N, H], 4, false), w = f64([V, H], 5, false), b = f64([V], 6, false);
  const tg = targetsFor(N, V, 4);
  const all = [true, true, true];
  for (const eps of [0, 0.1]) {
    for (const [rc, vc] of [[4, 8], [5, 37], [0, 0], [1, 1], [13, 36]]) {
      tidy(() => {
        const label = `eps ${eps} rowChunk ${rc} vocabChunk ${vc}`;
        const ref = native.lmHeadReference(h.handle, w.handle, b.handle, tg.handle, -100, eps, 'mean', all);
        const fb = native.lmHeadForwardBackward(h.handle, w.handle, b.handle, tg.handle, -100, eps, 'mean', all, rc, vc);
        const fw = native.lmHeadForward(h.handle, w.handle, b.handle, tg.handle, -100, eps, 'none', rc, vc);
        const bw = native.lmHeadBackward(h.handle, w.handle, b.handle, tg.handle, fw.lse, null, 1, -100, eps, 'mean', all, rc, vc);
        const refRows = native.lmHeadReference(h.handle, w.handle, b.handle, tg.handle, -100, eps, 'none', [false, false, false]);
        assertClose(t, native.toArray(fb.loss), native.toArray(ref.loss), 1e-12, 1e-12, `${label} loss`);
        assertClose(t, native.toArray(fw.loss), native.toArray(refRows.loss), 1e-12, 1e-12, `${label} per-token loss`);
        t.is(fb.correct, ref.correct, label);
        t.is(fw.correct, ref.correct, label);
        t.deepEqual([...native.toArray(fb.lse)], [...native.toArray(fw.lse)], `${label} lse of both paths`);
        for (const k of ['dHidden', 'dWeight', 'dBias'] as const) {
          assertClose(t, native.toArray(fb[k]!), native.toArray(ref[k]!), 1e-13, 1e-10, `${label} ${k} fused`);
          assertClose(t, native.toArray(bw[k]!), native.toArray(ref[k]!), 1e-13, 1e-10, `${label} ${k} from lse`);
        }
        for (const x of [ref, fb, fw, bw, refRows]) disposeAll(x);
      });
    }
  }
});

test('lmLoss: value, per-token losses shaped like targets, accuracy and token count', (t) => {
  const B = 2, T = 4, H = 4, V = 6;
  const w = f64([V, H], 7, false);
  // Each hidden row is 2 x a weight row, so its arg-max is (almost surely) that row.
  const pick = [0, 3, 5, 1, 2, 2, 4, 0];
  const wv = arr(w);
  const h = tensor(Float64Array.from({ length: B * T * H }, (_, i) => 2 * wv[pick[Math.floor(i / H)]! * H + (i % H)]!), [B, T, H], { dtype: 'float64' });
  const tg = ids([0, 1, -100, 1, 2, 3, -100, 0], [B, T]);
  const r = lmLoss(h, w, tg, { labelSmoothing: 0.2 });
  const rows = lmLoss(h, w, tg, { labelSmoothing: 0.2, reduction: 'none' });
  const sum = lmLoss(h, w, tg, { labelSmoothing: 0.2, reduction: 'sum' });
  t.deepEqual(rows.loss.shape, [B, T]);
  const argmax: number[] = [];
  const expect = jsLoss(arr(h), wv, null, tg.toArray() as Int32Array, H, V, 0.2, -100, argmax);
  assertClose(t, rows.loss.toArray(), expect, 1e-12, 1e-12, 'per token');
  t.is(rows.loss.toArray()[2], 0);
  assertClose(t, [r.loss.item()], [expect.reduce((s, v) => s + v, 0) / 6], 1e-12, 1e-12, 'mean');
  assertClose(t, [sum.loss.item()], [expect.reduce((s, v) => s + v, 0)], 1e-12, 1e-12, 'sum');
  t.is(r.tokens, 6);
  const tv = tg.toArray();
  const right = argmax.filter((a, i) => tv[i] !== -100 && a === tv[i]).length;
  t.true(right > 0 && right < 6, `right ${right}`);
  t.is(r.accuracy, right / 6);
  t.deepEqual(r.loss.shape, []);
});

// ---- gradient checks -------------------------------------------------------------------

const N = 6, H = 5, V = 11;
const small: LmLossOptions = { rowChunk: 4, vocabChunk: 4 };  // 2 row blocks, 3 tiles (the last partial)

test('gradcheck: plain mean cross-entropy', (t) => {
  const h = f64([N, H], 10), w = f64([V, H], 11);
  const tg = targetsFor(N, V);
  assertGradcheck(t, (a, b) => lmLoss(a!, b!, tg, small).loss, [h, w]);
});

test('gradcheck: label smoothing, bias, ignored positions, sum', (t) => {
  const h = f64([N, H], 12), w = f64([V, H], 13), b = f64([V], 14);
  const tg = targetsFor(N, V, 3);
  assertGradcheck(t, (a, c, d) => lmLoss(a!, c!, tg, { ...small, bias: d!, labelSmoothing: 0.1, reduction: 'sum' }).loss, [h, w, b]);
  assertGradcheck(t, (a, c, d) => lmLoss(a!, c!, tg, { ...small, bias: d!, labelSmoothing: 0.3 }).loss, [h, w, b]);
});

test('gradcheck: reduction none over [B, T] (backward from the saved lse with per-token gradients)', (t) => {
  const h = f64([2, 3, H], 15), w = f64([V, H], 16), b = f64([V], 17);
  const tg = ids([1, -100, 10, 4, 0, 7], [2, 3]);
  assertGradcheck(t, (a, c, d) => lmLoss(a!, c!, tg, { ...small, bias: d!, labelSmoothing: 0.1, reduction: 'none' }).loss, [h, w, b]);
});

test('gradcheck: strided hidden and weight, size-1 hidden, a different ignore index', (t) => {
  const hT = noGrad(() => transpose(f64([H, N], 18, false))).requiresGrad_();  // [N, H] view with strides [1, N]
  const wS = noGrad(() => slice(f64([V, 2 * H], 19, false), 1, 0, 2 * H, 2)).requiresGrad_();  // every other column
  const tg = ids([3, 7, 0, 5, 10, 1]);
  assertGradcheck(t, (a, b) => lmLoss(a!, b!, tg, { ...small, ignoreIndex: 7, labelSmoothing: 0.05 }).loss, [hT, wS]);
  const h1 = f64([1, 1], 20), w1 = f64([3, 1], 21);
  assertGradcheck(t, (a, b) => lmLoss(a!, b!, ids([2]), { labelSmoothing: 0.2 }).loss, [h1, w1]);
});

test('gradcheck: a tied embedding (the projection weight also embeds the input ids)', (t) => {
  const w = f64([V, H], 22, true, 0.7), b = f64([V], 23);
  const input = ids([1, 4, 9, 4, 2, 0]);
  const tg = ids([4, 9, -100, 2, 0, 6]);
  assertGradcheck(t, (c, d) => lmLoss(embedding(c!, input), c!, tg, { ...small, bias: d!, labelSmoothing: 0.1 }).loss, [w, b]);
});

test('gradcheck: one weight in two losses (gradients accumulate), frozen weight', (t) => {
  const h1 = f64([N, H], 24), h2 = f64([4, H], 25), w = f64([V, H], 26);
  const t1 = targetsFor(N, V, 4), t2 = ids([10, 0, -100, 3]);
  assertGradcheck(t, (a, b, c) => add(lmLoss(a!, c!, t1, small).loss, lmLoss(b!, c!, t2, { ...small, labelSmoothing: 0.2 }).loss), [h1, h2, w]);
  const frozen = f64([V, H], 27, false);
  assertGradcheck(t, (a) => lmLoss(a!, frozen, t1, small).loss, [h1]);
  const l = lmLoss(h1, frozen, t1, small).loss;
  l.backward();
  t.is(frozen.grad, null);
  t.truthy(h1.grad);
  h1.grad!.dispose();
  h1.grad = null;
});

test('upstream gradients scale the precomputed gradients; a retained graph recomputes them', (t) => {
  const h = f64([N, H], 28), w = f64([V, H], 29), b = f64([V], 30);
  const tg = targetsFor(N, V, 5);
  const opts = { ...small, bias: b, labelSmoothing: 0.1 };
  const ref = native.lmHeadReference(h.handle, w.handle, b.handle, tg.handle, -100, 0.1, 'mean', [true, true, true]);
  const l = lmLoss(h, w, tg, opts).loss;
  l.backward(tensor(new Float64Array([3]), [], { dtype: 'float64' }), { retainGraph: true });
  const scaled = (x: Float64Array | Float32Array | Int32Array | Uint8Array, s: number) => Array.from(x, (v) => v * s);
  assertClose(t, h.grad!.toArray(), scaled(native.toArray(ref.dHidden!), 3), 1e-13, 1e-10, 'dHidden x3');
  assertClose(t, w.grad!.toArray(), scaled(native.toArray(ref.dWeight!), 3), 1e-13, 1e-10, 'dWeight x3');
  l.backward();  // the saved gradients were consumed: recomputed from lse
  assertClose(t, h.grad!.toArray(), scaled(native.toArray(ref.dHidden!), 4), 1e-13, 1e-10, 'dHidden x4');
  assertClose(t, b.grad!.toArray(), scaled(native.toArray(ref.dBias!), 4), 1e-13, 1e-10, 'dBias x4');
  // The gradients precomputed inside a scope that freed them are recomputed too.
  for (const x of [h, w, b]) { x.grad!.dispose(); x.grad = null; }
  const l2 = tidy(() => lmLoss(h, w, tg, opts).loss);
  l2.backward();
  assertClose(t, w.grad!.toArray(), native.toArray(ref.dWeight!), 1e-13, 1e-10, 'dWeight after tidy');
});

// ---- float32, determinism, edge cases ---------------------------------------------------

test('float32 fused forward+backward agrees with the float64 reference (default chunks, V not a multiple of the tile)', (t) => {
  const n = 300, hd = 48, v = 1000;
  const h32 = randn([n, hd], { seed: 31 }), w32 = randn([v, hd], { seed: 32, std: 0.3 }), b32 = randn([v], { seed: 33 });
  const tg = targetsFor(n, v, 7);
  const all = [true, true, true];
  const ref = native.lmHeadReference(h32.handle, w32.handle, b32.handle, tg.handle, -100, 0.1, 'mean', all);
  const fb = native.lmHeadForwardBackward(h32.handle, w32.handle, b32.handle, tg.handle, -100, 0.1, 'mean', all, 0, 0);
  const fw = native.lmHeadForward(h32.handle, w32.handle, b32.handle, tg.handle, -100, 0.1, 'mean', 0, 0);
  t.is(native.toArray(fb.loss).constructor, Float32Array);
  assertClose(t, native.toArray(fb.loss), native.toArray(ref.loss), 1e-5, 1e-5, 'loss');
  assertClose(t, native.toArray(fw.loss), native.toArray(ref.loss), 1e-5, 1e-5, 'forward-only loss');
  t.is(fb.correct, ref.correct);
  // gradients of a mean over ~257 tokens are ~1e-3 per element
  assertClose(t, native.toArray(fb.dHidden!), native.toArray(ref.dHidden!), 1e-7, 1e-3, 'dHidden');
  assertClose(t, native.toArray(fb.dWeight!), native.toArray(ref.dWeight!), 1e-7, 1e-3, 'dWeight');
  assertClose(t, native.toArray(fb.dBias!), native.toArray(ref.dBias!), 1e-7, 1e-3, 'dBias');
  const nv = native.lmHeadNaive(h32.handle, w32.handle, b32.handle, tg.handle, -100, 0.1, 'mean', all);
  assertClose(t, native.toArray(nv.loss), native.toArray(ref.loss), 1e-5, 1e-5, 'naive loss');
  assertClose(t, native.toArray(nv.dWeight!), native.toArray(ref.dWeight!), 1e-7, 1e-3, 'naive dWeight');
});

test('deterministic: identical bits on repeat; loss and lse identical on 1 and 2 threads', (t) => {
  const n = 70, hd = 16, v = 300;
  const h = randn([n, hd], { seed: 34 }), w = randn([v, hd], { seed: 35 });
  const tg = targetsFor(n, v, 6);
  const run = () => native.lmHeadForwardBackward(h.handle, w.handle, null, tg.handle, -100, 0.1, 'mean', [true, true, false], 16, 64);
  const threads = native.getNumThreads();
  try {
    const a = run(), b = run();
    t.deepEqual([...native.toArray(a.dWeight!)], [...native.toArray(b.dWeight!)]);
    t.deepEqual([...native.toArray(a.dHidden!)], [...native.toArray(b.dHidden!)]);
    native.setNumThreads(1);
    const c = run();
    t.deepEqual([...native.toArray(a.lse)], [...native.toArray(c.lse)]);
    t.deepEqual([...native.toArray(a.loss)], [...native.toArray(c.loss)]);
    assertClose(t, native.toArray(c.dHidden!), native.toArray(a.dHidden!), 1e-7, 1e-4, 'dHidden 1 vs n threads');
  } finally {
    native.setNumThreads(threads);
  }
});

test('an all-ignored batch gives loss 0, accuracy 0 and zero gradients (not NaN)', (t) => {
  for (const dtype of ['float32', 'float64'] as const) {
    const h = randn([4, 3], { dtype, seed: 36, requiresGrad: true }), w = randn([5, 3], { dtype, seed: 37, requiresGrad: true });
    const b = randn([5], { dtype, seed: 38, requiresGrad: true });
    const tg = ids([-100, -100, -100, -100]);
    for (const reduction of ['mean', 'sum', 'none'] as const) {
      const r = lmLoss(h, w, tg, { bias: b, labelSmoothing: 0.1, reduction });
      t.deepEqual([...r.loss.toArray()], reduction === 'none' ? [0, 0, 0, 0] : [0]);
      t.is(r.accuracy, 0);
      t.is(r.tokens, 0);
      if (reduction === 'none') r.loss.backward(randn([4], { dtype, seed: 39 }));
      else r.loss.backward();
      for (const x of [h, w, b]) {
        t.true(x.grad!.toArray().every((v) => v === 0), `${dtype} ${reduction}`);
        x.grad!.dispose();
        x.grad = null;
      }
    }
  }
  const empty = lmLoss(randn([0, 3], { seed: 40 }), randn([5, 3], { seed: 41 }), tensor(new Int32Array(0), [0]));
  t.is(empty.loss.item(), 0);
});

test('a target outside [0, V) is a RangeError naming its position', (t) => {
  const h = randn([2, 3, 4], { seed: 42 }), w = randn([5, 4], { seed: 43 });
  t.throws(() => lmLoss(h, w, ids([0, 1, 2, 3, 5, 4], [2, 3])), {
    instanceOf: RangeError,
    message: 'lmLoss: expected token ids in [0, 5) or the ignore index -100 for targets but received 5 at position [1, 1]',
  });
  t.throws(() => lmLoss(h, w, ids([0, 1, 2, -1, 4, 4], [2, 3]), { ignoreIndex: 0 }), { instanceOf: RangeError, message: /received -1 at position \[1, 0\]$/ });
  const h2 = randn([3, 4], { seed: 44 });
  t.throws(() => native.lmHeadForward(h2.handle, w.handle, null, ids([0, -100, 9]).handle, -100, 0, 'mean', 0, 0), {
    instanceOf: RangeError,
    message: 'lmHeadForward: expected token ids in [0, 5) or the ignore index -100 for targets but received 9 at position 2',
  });
});

test('the fused loss holds far less memory than the N x V logits', (t) => {
  const n = 512, hd = 32, v = 6000;
  const h = randn([n, hd], { seed: 45 }), w = randn([v, hd], { seed: 46 });
  const tg = targetsFor(n, v);
  const logitsBytes = n * v * 4, gradBytes = (n * hd + v * hd) * 4;
  const measure = (f: () => { [k: string]: unknown }) => {
    native.resetPeak();
    const base = native.memory().cpu.liveBytes;
    const r = f();
    const peak = native.memory().cpu.peakBytes - base;
    disposeAll(r);
    return peak - gradBytes;
  };
  const fused = measure(() => native.lmHeadForwardBackward(h.handle, w.handle, null, tg.handle, -100, 0.1, 'mean', [true, true, false], 0, 0));
  const naive = measure(() => native.lmHeadNaive(h.handle, w.handle, null, tg.handle, -100, 0.1, 'mean', [true, true, false]));
  t.true(naive >= logitsBytes, `naive ${naive}`);
  t.true(fused < logitsBytes * 0.3, `fused ${fused} vs logits ${logitsBytes}`);  // one 128-row block + tiles
  const fwd = measure(() => native.lmHeadForward(h.handle, w.handle, null, tg.handle, -100, 0.1, 'mean', 0, 0));
  t.true(fwd < logitsBytes * 0.1, `forward ${fwd}`);
});

// ---- bad input --------------------------------------------------------------------------

test('bad input: clear errors, never a crash (child process)', (t) => {
  const lm = JSON.stringify(pathToFileURL(join(root, 'ts', 'objectives', 'lm.ts')).href);
  const nat = JSON.stringify(pathToFileURL(join(root, 'ts', 'native.ts')).href);
  const setup = `globalThis.L = (await import(${lm})).lmLoss; globalThis.N = (await import(${nat})).native;
    globalThis.h = vlm.randn([4, 3]); globalThis.w = vlm.randn([5, 3]); globalThis.tg = vlm.tensor(Int32Array.from([0, 1, 2, 3]));
    globalThis.d = vlm.randn([4, 3], { dtype: 'float64' }); throw new Error('setup done')`;
  const { result, errors } = errorsInChild([
    ['setup', setup],
    ['hidden array', 'L([1, 2], w, tg)'],
    ['hidden int', 'L(tg, w, tg)'],
    ['weight H', 'L(h, vlm.randn([5, 4]), tg)'],
    ['weight dtype', 'L(h, vlm.randn([5, 3], { dtype: "float64" }), tg)'],
    ['targets dtype', 'L(h, w, vlm.randn([4]))'],
    ['targets shape', 'L(h, w, vlm.tensor(Int32Array.from([0, 1, 2])))'],
    ['bias shape', 'L(h, w, tg, { bias: vlm.randn([4]) })'],
    ['bias dtype', 'L(d, vlm.randn([5, 3], { dtype: "float64" }), tg, { bias: vlm.randn([5]) })'],
    ['smoothing NaN', 'L(h, w, tg, { labelSmoothing: NaN })'],
    ['smoothing 1', 'L(h, w, tg, { labelSmoothing: 1 })'],
    ['smoothing negative', 'L(h, w, tg, { labelSmoothing: -0.1 })'],
    ['smoothing string', 'L(h, w, tg, { labelSmoothing: "0.1" })'],
    ['ignore fraction', 'L(h, w, tg, { ignoreIndex: 1.5 })'],
    ['reduction', 'L(h, w, tg, { reduction: "avg" })'],
    ['disposed', '{ const x = vlm.randn([4, 3]); x.dispose(); L(x, w, tg); }'],
    ['native weight strided', 'N.lmHeadForward(h.handle, N.view(w.handle, [5, 3], [1, 5], 0), null, tg.handle, -100, 0, "mean", 0, 0)'],
    ['native hidden rank', 'N.lmHeadForward(N.empty([2, 2, 3], "float32", "cpu"), w.handle, null, tg.handle, -100, 0, "mean", 0, 0)'],
    ['native empty vocab', 'N.lmHeadForward(h.handle, N.empty([0, 3], "float32", "cpu"), null, tg.handle, -100, 0, "mean", 0, 0)'],
    ['native smoothing', 'N.lmHeadForward(h.handle, w.handle, null, tg.handle, -100, NaN, "mean", 0, 0)'],
    ['native chunk', 'N.lmHeadForward(h.handle, w.handle, null, tg.handle, -100, 0, "mean", -1, 0)'],
    ['native chunk too big', 'N.lmHeadForward(h.handle, N.empty([2048, 3], "float32", "cpu"), null, tg.handle, -100, 0, "mean", 2 ** 30, 0)'],
    ['native needs', 'N.lmHeadForwardBackward(h.handle, w.handle, null, tg.handle, -100, 0, "mean", [true], 0, 0)'],
    ['native reduction', 'N.lmHeadForwardBackward(h.handle, w.handle, null, tg.handle, -100, 0, "none", [true, true, false], 0, 0)'],
    ['native lse', 'N.lmHeadBackward(h.handle, w.handle, null, tg.handle, N.empty([3], "float32", "cpu"), null, 1, -100, 0, "mean", [true, true, false], 0, 0)'],
    ['native gradScale', 'N.lmHeadBackward(h.handle, w.handle, null, tg.handle, N.empty([4], "float32", "cpu"), null, Infinity, -100, 0, "mean", [true, true, false], 0, 0)'],
    ['native target', 'N.lmHeadNaive(h.handle, w.handle, null, vlm.tensor(Int32Array.from([0, 1, -7, 3])).handle, -100, 0, "mean", [true, true, false])'],
    ['native ignore', 'N.lmHeadReference(h.handle, w.handle, null, tg.handle, 2 ** 31, 0, "mean", [true, true, false])'],
  ]);
  t.is(result.status, 0, result.stderr);
  const expect: Record<string, [string, RegExp]> = {
    'hidden array': ['TypeError', /^lmLoss: expected a tensor for hidden but received an array of length 2$/],
    'hidden int': ['TypeError', /^lmLoss: expected a float32 or float64 tensor for hidden but received an int32 tensor$/],
    'weight H': ['RangeError', /^lmLoss: expected shape \[V, 3\] with V >= 1 \(hidden is \[4, 3\]\) for weight but received shape \[5, 4\]$/],
    'weight dtype': ['TypeError', /^lmLoss: expected a float32 tensor \(the dtype of hidden\) for weight but received a float64 tensor$/],
    'targets dtype': ['TypeError', /^lmLoss: expected an int32 tensor for targets but received a float32 tensor$/],
    'targets shape': ['RangeError', /^lmLoss: expected shape \[4\] \(hidden without its last dimension\) for targets but received shape \[3\]$/],
    'bias shape': ['RangeError', /^lmLoss: expected shape \[5\] for bias but received shape \[4\]$/],
    'bias dtype': ['TypeError', /^lmLoss: expected a float64 tensor \(the dtype of hidden\) for bias but received a float32 tensor$/],
    'smoothing NaN': ['RangeError', /^lmLoss: expected a number in \[0, 1\) for labelSmoothing but received the number NaN$/],
    'smoothing 1': ['RangeError', /for labelSmoothing but received the number 1$/],
    'smoothing negative': ['RangeError', /for labelSmoothing but received the number -0.1$/],
    'smoothing string': ['RangeError', /for labelSmoothing but received the string '0.1'$/],
    'ignore fraction': ['TypeError', /^lmLoss: expected a 32-bit integer for ignoreIndex but received the number 1.5$/],
    'reduction': ['TypeError', /^lmLoss: expected 'mean', 'sum' or 'none' for reduction but received the string 'avg'$/],
    'disposed': ['TypeError', /^lmLoss: expected a live tensor for hidden but received a disposed tensor$/],
    'native weight strided': ['TypeError', /^lmHeadForward: expected a contiguous tensor for weight/],
    'native hidden rank': ['RangeError', /^lmHeadForward: expected a tensor of rank 2 for hidden but received shape \[2, 2, 3\]$/],
    'native empty vocab': ['RangeError', /^lmHeadForward: expected shape \[V, 3\] with 1 <= V/],
    'native smoothing': ['RangeError', /^lmHeadForward: expected a number in \[0, 1\) for labelSmoothing but received the number nan$/i],
    'native chunk': ['RangeError', /^lmHeadForward: expected an integer in \[0, \d+\] for rowChunk but received the number -1$/],
    'native chunk too big': ['RangeError', /^lmHeadForward: expected rowChunk x V <= 2\^40 \(V = 2048\) for rowChunk but received the number 1073741824$/],
    'native needs': ['TypeError', /^lmHeadForwardBackward: expected an array of 3 booleans \[hidden, weight, bias\] for needs/],
    'native reduction': ['TypeError', /^lmHeadForwardBackward: expected 'mean' or 'sum' for reduction but received the string 'none'$/],
    'native lse': ['RangeError', /^lmHeadBackward: expected shape \[4\] for lse but received shape \[3\]$/],
    'native gradScale': ['RangeError', /^lmHeadBackward: expected a finite number for gradScale/],
    'native target': ['RangeError', /^lmHeadNaive: expected token ids in \[0, 5\) or the ignore index -100 for targets but received -7 at position 2$/],
    'native ignore': ['RangeError', /^lmHeadReference: expected an integer in \[-2147483648, 2147483647\] for ignoreIndex/],
  };
  for (const [label, [name, message]] of Object.entries(expect)) {
    const e = errors[label];
    t.truthy(e, `${label}: no result`);
    if (!e) continue;
    t.is(e.name, name, `${label}: ${e.message}`);
    t.regex(e.message, message, label);
  }
});
