// decode family: the KV cache (writes, in-place beam reorder), the incremental attention step
// against the attention family's float64 reference, the logits processors and selection
// kernels (repetition penalty, argmax, top-k / top-p sampling against the nucleus
// distribution, beam candidates, the warpers and sampled beam candidates of beam sampling
// against softmax without replacement), and generate() on real decoders: cached greedy equals
// arg-max decoding by full recomputation (CausalLM with a soft prefix, the BERT/MED decoder
// with cross-attention), beam search with as many beams as sequences equals exhaustive
// search, top-k = 1 sampling equals greedy, seeded sampling repeats, repetition penalty and
// minLength as HF; bad input in a child process.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { tensor, randn, manualSeed } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { Tensor, wrap } from '../ts/graph/tensor.js';
import { tidy } from '../ts/graph/scope.js';
import { permute, reshape, select, slice } from '../ts/graph/ops/views.js';
import { KVCache, transformerBlockStep } from '../ts/graph/kv_cache.js';
import { CausalLM } from '../ts/models/causal_lm.js';
import { BertModel } from '../ts/models/bert.js';
import { generate, type GenerateOptions } from '../ts/models/generate.js';
import { assertClose } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;
type DT = 'float32' | 'float64';
const arr = (t: Tensor) => Float64Array.from(t.toArray());
const ints = (t: Tensor) => Array.from(t.toArray() as Int32Array);
const ids32 = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), [rows.length, rows[0]!.length], { dtype: 'int32' });
const rowsOf = (t: Tensor): number[][] => {
  const a = ints(t), w = t.shape[1]!;
  return Array.from({ length: t.shape[0]! }, (_, i) => a.slice(i * w, (i + 1) * w));
};

// ---- the cache -------------------------------------------------------------------------------

test('kvCacheWrite puts [N, T, H*Dh] rows at the right positions; other positions untouched', (t) => {
  const N = 2, H = 3, L = 6, Dh = 4, T = 2, pos = 3;
  const cache = new KVCache({ batch: N, layers: 1, heads: H, headDim: Dh, maxLength: L, dtype: 'float64' });
  const k = randn([N, T, H * Dh], { dtype: 'float64', seed: 1 });
  // v as a strided view: columns of a wider projection (a unit last stride, row stride 2E)
  const wide = randn([N, T, 2 * H * Dh], { dtype: 'float64', seed: 2 });
  const v = slice(wide, 2, H * Dh, 2 * H * Dh);
  native.kvCacheWrite(cache.keys[0]!.handle, cache.values[0]!.handle, k.handle, v.handle, pos);
  const ck = arr(cache.keys[0]!), cv = arr(cache.values[0]!), ka = arr(k), wa = arr(wide);
  let ok = true;
  for (let n = 0; n < N; n++) for (let h = 0; h < H; h++) for (let p = 0; p < L; p++) for (let d = 0; d < Dh; d++) {
    const at = ((n * H + h) * L + p) * Dh + d, tt = p - pos;
    const ek = tt >= 0 && tt < T ? ka[(n * T + tt) * H * Dh + h * Dh + d]! : 0;
    const ev = tt >= 0 && tt < T ? wa[(n * T + tt) * 2 * H * Dh + H * Dh + h * Dh + d]! : 0;
    if (ck[at] !== ek || cv[at] !== ev) ok = false;
  }
  t.true(ok);
  cache.advance(pos + T);
  t.deepEqual(cache.keyValue(0).key.shape, [N, H, pos + T, Dh]);
  cache.dispose();
});

test('kvCacheReorder gathers rows in place (repeats, chains, cycles) over the filled positions only', (t) => {
  const N = 7, H = 2, L = 5, Dh = 3, len = 4;
  for (const index of [[2, 2, 0, 5, 4, 3, 1], [1, 2, 3, 4, 5, 6, 0], [0, 0, 0, 0, 0, 0, 0], [6, 5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5, 6]]) {
    for (const dtype of ['float32', 'float64'] as DT[]) {
      const c = randn([N, H, L, Dh], { dtype, seed: 3 });
      const before = arr(c);
      native.kvCacheReorder([c.handle], tensor(Int32Array.from(index), [N], { dtype: 'int32' }).handle, len);
      const after = arr(c);
      let ok = true;
      for (let n = 0; n < N; n++) for (let h = 0; h < H; h++) for (let p = 0; p < L; p++) for (let d = 0; d < Dh; d++) {
        const src = p < len ? index[n]! : n;
        if (after[((n * H + h) * L + p) * Dh + d] !== before[((src * H + h) * L + p) * Dh + d]) ok = false;
      }
      t.true(ok, `${dtype} index ${index}`);
    }
  }
});

test('KVCache.reorder moves keys, values and (unless cross: false) the context states and mask', (t) => {
  const cache = new KVCache({ batch: 3, layers: 2, heads: 1, headDim: 2, maxLength: 4, dtype: 'float64' });
  for (let i = 0; i < 2; i++) {
    const k = tensor(Float64Array.from({ length: 3 * 2 * 2 }, (_, j) => 100 * i + j), [3, 2, 2], { dtype: 'float64' });
    native.kvCacheWrite(cache.keys[i]!.handle, cache.values[i]!.handle, k.handle, k.handle, 0);
  }
  cache.advance(2);
  const kv = { key: tensor(Float64Array.from([1, 1, 2, 2, 3, 3]), [3, 1, 1, 2], { dtype: 'float64' }), value: tensor(Float64Array.from([4, 4, 5, 5, 6, 6]), [3, 1, 1, 2], { dtype: 'float64' }) };
  cache.setContext([kv, null], tensor(Uint8Array.from([1, 0, 1]), [3, 1]));
  cache.reorder([2, 0, 0], { cross: false });
  const k1 = arr(cache.keys[1]!);  // [3, 1, 4, 2]: feature 0 of positions 0 and 1 per row
  t.deepEqual([0, 1, 2].flatMap((n) => [k1[n * 8]!, k1[n * 8 + 2]!]), [108, 110, 100, 102, 100, 102]);
  t.deepEqual(Array.from(arr(cache.cross[0]!.key)), [1, 1, 2, 2, 3, 3], 'cross: false leaves the context');
  cache.reorder([2, 0, 0]);
  t.deepEqual(Array.from(arr(cache.cross[0]!.key)), [3, 3, 1, 1, 1, 1]);
  t.deepEqual(Array.from(arr(cache.cross[0]!.value)), [6, 6, 4, 4, 4, 4]);
  t.deepEqual(Array.from(cache.crossMask!.toArray()), [1, 1, 1]);
  t.deepEqual(Array.from(arr(kv.key)), [1, 1, 2, 2, 3, 3], "the caller's context is copied, never changed");
  cache.dispose();
});

test("the cache's keyValue() views are MultiHeadAttention's prefix: a block over them equals transformerBlockStep", (t) => {
  const lm = new CausalLM({ vocabSize: 9, maxPositions: 12, width: 12, layers: 1, heads: 3, initializerRange: 0.5, dtype: 'float64', seed: 2 }).eval();
  const block = lm.blocks.blocks[0]!;
  const cache = lm.newCache(2, 8);
  lm.step(ids32([[1, 2, 3], [4, 5, 6]]), cache);
  const x = randn([2, 2, 12], { dtype: 'float64', seed: 3 });
  const viaPrefix = noGrad(() => block.forward(x, { causal: 'bottomRight', prefix: cache.keyValue(0) }));
  const viaStep = noGrad(() => transformerBlockStep(block, x, cache, 0));
  assertClose(t, arr(viaStep), arr(viaPrefix), 1e-12, 1e-12);
  cache.dispose();
});

// ---- the attention step ------------------------------------------------------------------------

test('decodeAttention equals the float64 attention reference (causal over the cache, key mask, strided keys)', (t) => {
  const N = 3, H = 2, Dh = 5, E = H * Dh, Lk = 9;
  for (const dtype of ['float64', 'float32'] as DT[]) {
    for (const [T, length, causal, masked] of [[1, 6, true, false], [3, 7, true, false], [4, 9, false, true], [1, 1, true, false], [2, 5, true, true]] as const) {
      tidy(() => {
        const q = randn([N, T, E], { dtype, seed: 10 + T });
        // keys/values as the head-split view of a projection [N, Lk, E] (non-contiguous strides)
        const k = permute(reshape(randn([N, Lk, E], { dtype, seed: 11 }), [N, Lk, H, Dh]), [0, 2, 1, 3]);
        const v = randn([N, H, Lk, Dh], { dtype, seed: 12 });
        const maskVals = Uint8Array.from({ length: N * Lk }, (_, i) => (masked ? (i % 3 === 1 ? 0 : 1) : 1));
        if (masked) maskVals.fill(0, 0, Lk);  // row 0 sees no key: zeros
        const keyMask = masked ? tensor(maskVals, [N, Lk]) : null;
        const out = wrap(native.decodeAttention(q.handle, k.handle, v.handle, { length, causal, scale: 0.7, keyMask: keyMask?.handle ?? null }));
        const q4 = permute(reshape(q, [N, T, H, Dh]), [0, 2, 1, 3]);
        const m4 = keyMask ? slice(reshape(keyMask, [N, 1, 1, Lk]), 3, 0, length) : null;
        const ref = native.attentionReference(q4.handle, slice(k, 2, 0, length).handle, slice(v, 2, 0, length).handle, {
          scale: 0.7, causal, causalOffset: length - T, mask: m4?.handle ?? null, bias: null, keyPadding: null, dropout: 0, seed: 0, offset: 0,
        });
        const refOut = permute(wrap(ref.out), [0, 2, 1, 3]);  // [N, T, H, Dh]
        assertClose(t, arr(out), arr(reshape(refOut, [N, T, E])), dtype === 'float64' ? 1e-12 : 1e-5, 1e-5, `${dtype} T=${T} length=${length} causal=${causal} mask=${masked}`);
        wrap(ref.lse).dispose();
        return null;
      });
    }
  }
});

test('decodeAttention and sampling do not depend on the thread count', (t) => {
  const q = randn([16, 1, 64], { seed: 1 }), k = randn([16, 4, 40, 16], { seed: 2 }), v = randn([16, 4, 40, 16], { seed: 3 });
  const logits = randn([64, 300], { seed: 4, std: 2 });
  const run = () => [
    arr(wrap(native.decodeAttention(q.handle, k.handle, v.handle, { length: 33, causal: true, scale: 0.25, keyMask: null }))),
    ints(wrap(native.decodeSample(logits.handle, { temperature: 1, topK: 20, topP: 0.9, minKeep: 1, seed: 5, offset: 0 }))),
  ];
  const before = native.getNumThreads();
  try {
    native.setNumThreads(1);
    const a = run();
    native.setNumThreads(2);
    const b = run();
    t.deepEqual(a, b);
  } finally {
    native.setNumThreads(before);
  }
});

// ---- processors and selection --------------------------------------------------------------------

test('decodeProcessLogits: HF repetition penalty (each id once), log_softmax first for beams, suppressed ids', (t) => {
  const logits = tensor(Float64Array.from([1, -1, 2, 0.5, 3, -2]), [1, 6], { dtype: 'float64' });
  const hist = tensor(Int32Array.from([0, 1, 1, -1, 5, 0]), [1, 6], { dtype: 'int32' });
  const sup = tensor(Int32Array.from([4]), [1], { dtype: 'int32' });
  const out = wrap(native.decodeProcessLogits(logits.handle, { logSoftmax: false, history: hist.handle, repetitionPenalty: 2, suppress: sup.handle }));
  t.deepEqual(Array.from(arr(out)), [0.5, -2, 2, 0.5, -Infinity, -4]);
  const ls = wrap(native.decodeProcessLogits(logits.handle, { logSoftmax: true, history: hist.handle, repetitionPenalty: 2, suppress: null }));
  const x = [1, -1, 2, 0.5, 3, -2], lse = Math.log(x.reduce((s, v) => s + Math.exp(v), 0));
  const lp = x.map((v) => v - lse);
  assertClose(t, arr(ls), lp.map((v, i) => ([0, 1, 5].includes(i) ? v * 2 : v)), 1e-12, 1e-12);
  t.deepEqual(Array.from(arr(logits)), x, 'input untouched');
  const f32 = wrap(native.decodeProcessLogits(tensor(Float32Array.from([3, -3]), [1, 2]).handle, { logSoftmax: false, history: tensor(Int32Array.from([0, 1]), [1, 2], { dtype: 'int32' }).handle, repetitionPenalty: 1.5, suppress: null }));
  assertClose(t, arr(f32), [2, -4.5], 1e-6, 0);
});

test('decodeArgmax takes the first maximum; decodeBeamCandidates ranks beam score + log-prob per batch', (t) => {
  const s = tensor(Float32Array.from([1, 3, 3, 0, -Infinity, -Infinity, 2, 2]), [2, 4]);
  t.deepEqual(ints(wrap(native.decodeArgmax(s.handle))), [1, 2]);
  // Long rows (the float32 vector path): ties, NaN, the maximum in the tail, no number at all,
  // all -inf; the same answers in float64 (scalar path) and from a plain JS scan.
  const V = 37, rows: number[][] = [];
  const base = Array.from({ length: V }, (_, i) => Math.sin(i) * 3);
  rows.push(base);                                                   // plain
  rows.push(base.map((v, i) => (i === 9 || i === 30 ? 7 : v)));      // a tie: the first wins
  rows.push(base.map((v, i) => (i % 5 === 0 ? NaN : v)));            // NaN never wins
  rows.push(base.map((v, i) => (i === 35 ? 9 : v)));                 // in the tail after the last 8-block
  rows.push(base.map(() => NaN));                                    // no number: 0
  rows.push(base.map((v, i) => (i < 3 ? NaN : -Infinity)));          // all -inf after NaNs: the first -inf
  const jsArgmax = (r: number[]) => {
    let best = 0, bv = -Infinity, found = false;
    r.forEach((v, i) => { if (v > bv || (!found && v === bv)) { bv = v; best = i; found = true; } });
    return best;
  };
  const want = rows.map(jsArgmax);
  t.deepEqual(want, [want[0]!, 9, want[2]!, 35, 0, 3]);
  for (const dtype of ['float32', 'float64'] as const) {
    const m = tensor(dtype === 'float32' ? Float32Array.from(rows.flat()) : Float64Array.from(rows.flat()), [rows.length, V], { dtype });
    t.deepEqual(ints(wrap(native.decodeArgmax(m.handle))), want, dtype);
  }
  // 2 batches x 2 beams, V = 3
  const lp = tensor(Float64Array.from([-1, -2, -3, -0.5, -0.1, -4, -2, -1, -3, -1, -2, -0.2]), [4, 3], { dtype: 'float64' });
  const bs = tensor(Float64Array.from([0, -1, -Infinity, 0]), [4], { dtype: 'float64' });
  const r = native.decodeBeamCandidates(lp.handle, bs.handle, 2, 4);
  assertClose(t, arr(wrap(r.scores)), [-1, -1.1, -1.5, -2, -0.2, -1, -2, -Infinity], 1e-12, 0);
  t.deepEqual(ints(wrap(r.tokens)), [0, 1, 0, 1, 2, 0, 1, 0]);
  t.deepEqual(ints(wrap(r.beams)), [0, 1, 1, 0, 1, 1, 1, 0]);
});

/** softmax(x / temp) restricted by HF's top-k then top-p, as a probability per token. */
function nucleus(x: number[], temp: number, topK: number, topP: number): number[] {
  const y = x.map((v) => v / temp);
  let keep = y.map(() => true);
  if (topK > 0 && topK < y.length) {
    const kth = [...y].sort((a, b) => b - a)[topK - 1]!;
    keep = y.map((v) => v >= kth);
  }
  const m = Math.max(...y);
  const w = y.map((v, i) => (keep[i] ? Math.exp(v - m) : 0));
  if (topP < 1) {
    const z = w.reduce((a, b) => a + b, 0);
    const order = w.map((_, i) => i).filter((i) => keep[i]).sort((a, b) => y[b]! - y[a]! || a - b);
    let before = 0;
    const kept = new Set<number>();
    for (const i of order) {
      if (before >= topP * z && kept.size >= 1) break;
      kept.add(i);
      before += w[i]!;
    }
    for (let i = 0; i < w.length; i++) if (!kept.has(i)) w[i] = 0;
  }
  const z = w.reduce((a, b) => a + b, 0);
  return w.map((v) => v / z);
}

// chi-square critical values at p = 0.001 for df = 1..12
const CHI2_999 = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26, 32.91];

function chiSquare(t: import('ava').ExecutionContext, draws: number[], p: number[], label: string): void {
  const counts = p.map(() => 0);
  for (const d of draws) counts[d]!++;
  let chi = 0, df = -1;
  p.forEach((pi, i) => {
    if (pi === 0) {
      t.is(counts[i], 0, `${label}: token ${i} is outside the filtered set but was drawn`);
      return;
    }
    const e = pi * draws.length;
    chi += (counts[i]! - e) ** 2 / e;
    df++;
  });
  if (df >= 1) t.true(chi < CHI2_999[df - 1]!, `${label}: chi-square ${chi.toFixed(2)} with ${df} dof`);
}

test('decodeSample frequencies match the temperature / top-k / top-p distribution (chi-square)', (t) => {
  const x = [2, 1.5, 1, 0.5, 0, -0.5, -1, -2, -3, -4];
  const N = 6000;
  const logits = tensor(Float32Array.from({ length: N * x.length }, (_, i) => x[i % x.length]!), [N, x.length]);
  for (const [temp, topK, topP] of [[1, 0, 1], [0.8, 0, 0.75], [1.3, 0, 0.9], [1, 4, 1], [0.7, 5, 0.8], [1, 0, 0.05]] as const) {
    const draws = ints(wrap(native.decodeSample(logits.handle, { temperature: temp, topK, topP, minKeep: 1, seed: 42, offset: 7 })));
    chiSquare(t, draws, nucleus(x, temp, topK, topP), `T=${temp} k=${topK} p=${topP}`);
  }
  // top-k keeps ties with the k-th score (HF removes only scores below it)
  const tie = tensor(Float64Array.from({ length: 3000 * 4 }, (_, i) => [3, 2, 2, 1][i % 4]!), [3000, 4], { dtype: 'float64' });
  const d = ints(wrap(native.decodeSample(tie.handle, { temperature: 1, topK: 2, topP: 1, minKeep: 1, seed: 1, offset: 0 })));
  chiSquare(t, d, nucleus([3, 2, 2, 1], 1, 2, 1), 'tie at k');
  t.true(d.includes(2));
  // a wide nucleus on a large vocabulary (the partial selection widens past 64 and 256 tokens)
  const V = 1000, rows = 1500;
  const wide = randn([1, V], { seed: 9, std: 0.3 });
  const wx = Array.from(arr(wide));
  const big = tensor(Float32Array.from({ length: rows * V }, (_, i) => wx[i % V]!), [rows, V]);
  const wd = ints(wrap(native.decodeSample(big.handle, { temperature: 1, topK: 0, topP: 0.6, minKeep: 1, seed: 3, offset: 0 })));
  const p = nucleus(wx, 1, 0, 0.6);
  const kept = p.filter((v) => v > 0).length;
  t.true(kept > 300, `nucleus of ${kept} tokens`);
  t.true(wd.every((tok) => p[tok]! > 0), 'every draw is inside the nucleus');
});

test('decodeSample: the same seed and offset give the same draws; minKeep keeps at least that many', (t) => {
  const logits = randn([32, 50], { seed: 5, std: 3 });
  const draw = (seed: number, offset: number) => ints(wrap(native.decodeSample(logits.handle, { temperature: 1, topK: 0, topP: 1, minKeep: 1, seed, offset })));
  t.deepEqual(draw(7, 0), draw(7, 0));
  t.notDeepEqual(draw(7, 0), draw(8, 0));
  t.notDeepEqual(draw(7, 0), draw(7, 32));
  // topP tiny keeps the arg-max only, unless minKeep asks for more
  const x = tensor(Float64Array.from({ length: 2000 * 3 }, (_, i) => [5, 0, -5][i % 3]!), [2000, 3], { dtype: 'float64' });
  const one = ints(wrap(native.decodeSample(x.handle, { temperature: 1, topK: 0, topP: 0.01, minKeep: 1, seed: 1, offset: 0 })));
  t.true(one.every((v) => v === 0));
  const two = ints(wrap(native.decodeSample(x.handle, { temperature: 1, topK: 0, topP: 0.01, minKeep: 2, seed: 1, offset: 0 })));
  t.true(two.includes(1) && !two.includes(2));
});

test('decodeProcessLogits warp (beam sampling): scores / temperature, the tokens top-k / top-p drop at -inf', (t) => {
  const x = [2, 1.5, 1, 0.5, 0, -0.5, -1, -2, -3, -4];
  const logits = tensor(Float64Array.from([...x, ...[...x].reverse()]), [2, 10], { dtype: 'float64' });
  for (const [temp, topK, topP, minKeep] of [[1, 0, 1, 1], [0.5, 3, 1, 1], [2, 0, 0.7, 1], [0.8, 5, 0.6, 1], [1, 1, 1, 2], [1, 0, 0.01, 3]] as const) {
    const out = arr(wrap(native.decodeProcessLogits(logits.handle, {
      logSoftmax: false, history: null, repetitionPenalty: 1, suppress: null, warp: { temperature: temp, topK, topP, minKeep },
    })));
    // the kept set: the nucleus of the filters, widened to the minKeep best
    const p = nucleus(x, temp, Math.max(topK, topK > 0 ? minKeep : 0), topP);
    const kept = p.map((v) => v > 0);
    if (kept.filter(Boolean).length < minKeep) [0, 1, 2].slice(0, minKeep).forEach((i) => { kept[i] = true; });
    const want = x.map((v, i) => (kept[i] ? v / temp : -Infinity));
    t.deepEqual(Array.from(out.slice(0, 10)), want, `T=${temp} k=${topK} p=${topP} minKeep=${minKeep}`);
    t.deepEqual(Array.from(out.slice(10)), [...want].reverse(), 'per row');
  }
});

test('decodeBeamCandidates with sample: draws without replacement from softmax(beam score + score) per batch (chi-square)', (t) => {
  // 2 beams x V = 3 per batch: 6 candidates, one -inf; many identical batches, each its own stream
  const lp = [-0.2, -1.5, -Infinity, -0.7, -1, -2.5], bsc = [0, -0.4];
  const s = lp.map((v, i) => v + bsc[Math.floor(i / 3)]!);
  const m = Math.max(...s), w = s.map((v) => Math.exp(v - m)), z = w.reduce((a, b) => a + b, 0), p = w.map((v) => v / z);
  const B = 6000;
  const scores = tensor(Float64Array.from({ length: B * 6 }, (_, i) => lp[i % 6]!), [2 * B, 3], { dtype: 'float64' });
  const beamScores = tensor(Float64Array.from({ length: 2 * B }, (_, i) => bsc[i % 2]!), [2 * B], { dtype: 'float64' });
  const draw = (count: number, seed: number) => {
    const r = native.decodeBeamCandidates(scores.handle, beamScores.handle, 2, count, { seed, offset: 5 });
    const tokens = ints(wrap(r.tokens));
    return { scores: arr(wrap(r.scores)), flat: ints(wrap(r.beams)).map((b, i) => b * 3 + tokens[i]!) };
  };
  const one = draw(1, 3);
  chiSquare(t, one.flat, p, 'first draw');
  t.deepEqual(Array.from(one.scores), one.flat.map((f) => s[f]!), 'the drawn candidates carry their scores');
  // two draws: the unordered pair {i, j} has probability p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j)
  const two = draw(2, 4);
  const pairs: number[] = [], pp: number[] = [];
  for (let i = 0; i < 6; i++) for (let j = i + 1; j < 6; j++) pp.push(p[i]! * p[j]! / (1 - p[i]!) + p[j]! * p[i]! / (1 - p[j]!));
  const pairIndex = (i: number, j: number) => { let k = 0; for (let a = 0; a < 6; a++) for (let b = a + 1; b < 6; b++) { if (a === Math.min(i, j) && b === Math.max(i, j)) return k; k++; } return -1; };
  let distinct = true, sorted = true;
  for (let b = 0; b < B; b++) {
    const [f0, f1] = [two.flat[2 * b]!, two.flat[2 * b + 1]!];
    distinct &&= f0 !== f1;
    sorted &&= two.scores[2 * b]! >= two.scores[2 * b + 1]!;
    pairs.push(pairIndex(f0, f1));
  }
  t.true(distinct, 'without replacement');
  t.true(sorted, 'sorted best first');
  chiSquare(t, pairs, pp, 'pairs');
  // -inf only when nothing else is left; the same seed and offset repeat, another seed does not
  const all = draw(6, 1);
  t.true(all.flat.every((f, i) => (i % 6 === 5) === (f === 2)), 'the -inf candidate comes last');
  t.deepEqual(draw(2, 4).flat, two.flat);
  t.notDeepEqual(draw(2, 5).flat, two.flat);
});

// ---- generate on real decoders -------------------------------------------------------------------

interface RefOptions { maxLength: number; minLength?: number; eos?: number[]; pad?: number; repetitionPenalty?: number }

/** HF greedy search by full recomputation: lastLogits(rows) gives each row's next-token logits. */
function referenceGreedy(lastLogits: (rows: number[][]) => Float64Array[], prompt: number[][], o: RefOptions): number[][] {
  const seqs = prompt.map((r) => [...r]);
  const eos = o.eos ?? [], pad = o.pad ?? eos[0] ?? 0, pen = o.repetitionPenalty ?? 1;
  const alive = seqs.map(() => true);
  for (;;) {
    const logits = lastLogits(seqs);
    seqs.forEach((s, n) => {
      const x = Array.from(logits[n]!);
      if (pen !== 1) for (const id of new Set(s)) x[id] = x[id]! < 0 ? x[id]! * pen : x[id]! / pen;
      if (s.length < (o.minLength ?? 0)) for (const e of eos) x[e] = -Infinity;
      let best = 0;
      for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
      const tok = alive[n] ? best : pad;
      s.push(tok);
      if (alive[n] && eos.includes(tok)) alive[n] = false;
    });
    if (!alive.some(Boolean) || seqs[0]!.length >= o.maxLength) return seqs;
  }
}

const tinyLM = (dtype: DT = 'float64', extra: Partial<ConstructorParameters<typeof CausalLM>[0]> = {}) =>
  new CausalLM({ vocabSize: 13, maxPositions: 24, width: 16, layers: 2, heads: 2, initializerRange: 0.4, dtype, seed: 3, ...extra }).eval();

function lmLast(lm: CausalLM, prefix: Tensor | null = null) {
  return (rows: number[][]): Float64Array[] => noGrad(() => tidy(() => {
    const h = lm.forward(ids32(rows), { prefix });
    const lg = arr(lm.logits(select(h, 1, h.shape[1]! - 1)));
    const V = lm.config.vocabSize;
    return rows.map((_, n) => lg.slice(n * V, (n + 1) * V));
  }));
}

test('CausalLM: cached step logits equal the full forward at every step; greedy equals full recomputation', (t) => {
  const lm = tinyLM();
  const prompt = [[1, 2], [3, 4], [5, 5]];
  const cache = lm.newCache(3, 10);
  const seqs = prompt.map((r) => [...r]);
  let next = ids32(prompt);
  for (let step = 0; step < 6; step++) {
    const got = arr(lm.step(next, cache));
    const want = lmLast(lm)(seqs);
    assertClose(t, got, want.flatMap((r) => Array.from(r)), 1e-10, 1e-10, `step ${step}`);
    const toks = seqs.map((s, n) => { const r = want[n]!; let b = 0; for (let i = 1; i < r.length; i++) if (r[i]! > r[b]!) b = i; s.push(b); return b; });
    next = ids32(toks.map((x) => [x]));
  }
  t.is(cache.length, 7);
  cache.dispose();
  const out = generate(lm, ids32(prompt), { maxLength: 11 });
  t.deepEqual(rowsOf(out.sequences), referenceGreedy(lmLast(lm), prompt, { maxLength: 11 }));
  t.deepEqual(out.lengths, [11, 11, 11]);
  t.is(out.sequenceScores, null);
});

test('CausalLM with a soft-prompt prefix (BLIP-2 stage 2): greedy equals full recomputation; float32 step logits close', (t) => {
  const lm = tinyLM();
  const prefix = randn([2, 3, 16], { dtype: 'float64', seed: 4 });
  const prompt = [[7], [8]];
  const out = generate(lm, { inputIds: ids32(prompt), prefix }, { maxLength: 9 });
  t.deepEqual(rowsOf(out.sequences), referenceGreedy(lmLast(lm, prefix), prompt, { maxLength: 9 }));
  // no prompt at all: the first token comes from the prefix alone
  const bare = generate(lm, { prefix }, { maxNewTokens: 4 });
  t.deepEqual(bare.sequences.shape, [2, 4]);
  const rows = rowsOf(bare.sequences);
  const h = noGrad(() => lm.forward(ids32(rows.map((r) => r.slice(0, 3))), { prefix }));
  const lg = arr(lm.logits(select(h, 1, 5)));
  rows.forEach((r, n) => {
    const x = lg.slice(n * 13, (n + 1) * 13);
    t.is(r[3], x.indexOf(Math.max(...x)), `row ${n} last token`);
  });
  // float32: the cached path agrees with the fused full forward to float32 rounding
  const lm32 = tinyLM('float32');
  const c32 = lm32.newCache(2, 8);
  const p32 = randn([2, 3, 16], { seed: 4 });
  const got = arr(lm32.step(ids32([[1, 2], [3, 4]]), c32, { prefix: p32 }));
  const want = arr(noGrad(() => lm32.logits(select(lm32.forward(ids32([[1, 2], [3, 4]]), { prefix: p32 }), 1, 4))));
  assertClose(t, got, want, 1e-5, 1e-4, 'float32');
  c32.dispose();
});

const tinyMED = (dtype: DT = 'float64') => new BertModel({
  vocabSize: 11, hidden: 16, layers: 3, heads: 2, intermediate: 32, maxPositions: 16, crossAttentionEvery: 2, crossWidth: 12,
  lmHead: true, pooler: false, initializerRange: 0.3, dtype, seed: 5,
}).eval();

function medLast(med: BertModel, img: Tensor, mask: Tensor | null) {
  return (rows: number[][]): Float64Array[] => noGrad(() => tidy(() => {
    const h = med.forward(ids32(rows), { mode: 'decoder', encoderHiddenStates: img, encoderAttentionMask: mask }).hidden;
    const lg = arr(med.lmHead!.logits(select(h, 1, h.shape[1]! - 1)));
    return rows.map((_, n) => lg.slice(n * 11, (n + 1) * 11));
  }));
}

test('BERT/MED decoder with cross-attention (BLIP captioner): cached greedy equals full recomputation', (t) => {
  const med = tinyMED();
  const img = randn([3, 5, 12], { dtype: 'float64', seed: 6, std: 2 });
  const mask = tensor(Uint8Array.from([1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 0]), [3, 5]);
  const prompt = [[1, 4], [1, 5], [1, 6]];
  const opts = { maxLength: 10, eosTokenId: 2, padTokenId: 0 };
  const out = generate(med, { inputIds: ids32(prompt), context: img, contextMask: mask }, opts);
  const ref = referenceGreedy(medLast(med, img, mask), prompt, { maxLength: 10, eos: [2], pad: 0 });
  t.deepEqual(rowsOf(out.sequences).map((r) => r.slice(0, ref[0]!.length)), ref);
  // step logits against the full forward, first step and one more
  const cache = med.newCache(3, 6);
  const a = arr(med.step(ids32(prompt), cache, { context: img, contextMask: mask }));
  assertClose(t, a, medLast(med, img, mask)(prompt).flatMap((r) => Array.from(r)), 1e-10, 1e-10, 'prefill');
  const b = arr(med.step(ids32([[3], [3], [7]]), cache));
  assertClose(t, b, medLast(med, img, mask)([[1, 4, 3], [1, 5, 3], [1, 6, 7]]).flatMap((r) => Array.from(r)), 1e-10, 1e-10, 'step');
  cache.dispose();
  // training mode is restored and dropout is off while generating
  med.train();
  const again = generate(med, { inputIds: ids32(prompt), context: img, contextMask: mask }, opts);
  t.deepEqual(rowsOf(again.sequences), rowsOf(out.sequences));
  t.true(med.training && med.encoder.blocks[0]!.drop.training);
});

/** Every continuation of `prompt` up to maxLength (ending at eos or at maxLength), scored as HF's hypotheses. */
function exhaustive(logprobs: (prefix: number[]) => number[], prompt: number[], V: number, maxLength: number, eos: number | null, lp: number) {
  let best: { ids: number[]; score: number } | null = null;
  let count = 0;
  const visit = (ids: number[], score: number) => {
    count++;
    if (best === null || score > best.score) best = { ids, score };
  };
  const extend = (prefix: number[], sum: number) => {
    const l = logprobs(prefix);
    for (let tk = 0; tk < V; tk++) {
      const s = sum + l[tk]!;
      if (tk === eos) visit([...prefix, tk], s / prefix.length ** lp);
      else if (prefix.length + 1 === maxLength) visit([...prefix, tk], s / maxLength ** lp);
      else extend([...prefix, tk], s);
    }
  };
  extend(prompt, 0);
  return { best: best!, count };
}

test('beam search with as many beams as sequences equals exhaustive search (V = 5, 3 new tokens)', (t) => {
  const V = 5;
  const lm = new CausalLM({ vocabSize: V, maxPositions: 8, width: 8, layers: 1, heads: 2, initializerRange: 0.8, dtype: 'float64', seed: 11 }).eval();
  const memo = new Map<string, number[]>();
  const logprobs = (prefix: number[]) => {
    const key = prefix.join(',');
    if (!memo.has(key)) {
      const x = Array.from(lmLast(lm)([prefix])[0]!);
      const m = Math.max(...x), lse = m + Math.log(x.reduce((s, v) => s + Math.exp(v - m), 0));
      memo.set(key, x.map((v) => v - lse));
    }
    return memo.get(key)!;
  };
  const prompts = [[1], [3]];
  for (const [eos, lp, es] of [[0, 1, false], [0, 2, true], [0, 0, 'never'], [4, 0.5, false], [null, 1, false]] as const) {
    const refs = prompts.map((p) => exhaustive(logprobs, p, V, 4, eos, lp));
    const numBeams = Math.max(...refs.map((r) => r.count));
    const out = generate(lm, ids32(prompts), { maxLength: 4, numBeams, eosTokenId: eos, lengthPenalty: lp, earlyStopping: es });
    const rows = rowsOf(out.sequences);
    refs.forEach((r, b) => {
      t.deepEqual(rows[b]!.slice(0, out.lengths[b]), r.best.ids, `eos ${eos} lp ${lp} sample ${b} (${r.count} sequences)`);
      assertClose(t, [arr(out.sequenceScores!)[b]!], [r.best.score], 1e-9, 1e-9, `score eos ${eos} lp ${lp}`);
    });
  }
});

test('beam search: samples of a batch are independent (cache reorder stays per sample); BERT decoder with context', (t) => {
  const med = tinyMED();
  const img = randn([2, 5, 12], { dtype: 'float64', seed: 8, std: 2 });
  const o: GenerateOptions = { maxLength: 9, numBeams: 3, eosTokenId: 2, padTokenId: 0, minLength: 4, repetitionPenalty: 1.3 };
  const both = generate(med, { inputIds: ids32([[1], [1]]), context: img }, o);
  for (let b = 0; b < 2; b++) {
    const one = generate(med, { inputIds: ids32([[1]]), context: slice(img, 0, b, b + 1) }, o);
    t.deepEqual(rowsOf(one.sequences)[0]!.slice(0, one.lengths[0]), rowsOf(both.sequences)[b]!.slice(0, both.lengths[b]), `sample ${b}`);
    assertClose(t, arr(one.sequenceScores!), [arr(both.sequenceScores!)[b]!], 1e-12, 1e-12);
  }
  const rows = rowsOf(both.sequences);
  rows.forEach((r, b) => t.false(r.slice(0, 3).includes(2), `no EOS before minLength in sample ${b}`));
});

test('sampling: topK = 1 equals greedy; the same seed gives the same samples; manualSeed drives unseeded runs', (t) => {
  const lm = tinyLM('float32');
  const prompt = ids32([[1], [2], [3]]);
  const greedy = rowsOf(generate(lm, prompt, { maxLength: 10 }).sequences);
  t.deepEqual(rowsOf(generate(lm, prompt, { maxLength: 10, doSample: true, topK: 1, temperature: 0.7, seed: 1 }).sequences), greedy);
  const s = (o: GenerateOptions) => rowsOf(generate(lm, prompt, { maxLength: 12, doSample: true, topK: 0, temperature: 2, ...o }).sequences);
  t.deepEqual(s({ seed: 9 }), s({ seed: 9 }));
  t.notDeepEqual(s({ seed: 9 }), s({ seed: 10 }));
  manualSeed(123);
  const a = s({});
  manualSeed(123);
  t.deepEqual(s({}), a);
  t.notDeepEqual(s({}), a);
});

test('repetition penalty, minLength and per-sample finishing behave as HF (greedy reference)', (t) => {
  const lm = tinyLM();
  const prompt = [[1, 2], [3, 4], [5, 6], [7, 8]];
  const plain = referenceGreedy(lmLast(lm), prompt, { maxLength: 12 });
  // an EOS that greedy decoding meets early in some rows: the most frequent generated token
  const counts = new Map<number, number>();
  for (const r of plain) for (const x of r.slice(2, 5)) counts.set(x, (counts.get(x) ?? 0) + 1);
  const eos = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
  for (const o of [{ repetitionPenalty: 1.8 }, { minLength: 6 }, { repetitionPenalty: 0.7, minLength: 4 }, {}] as const) {
    const out = generate(lm, ids32(prompt), { maxLength: 12, eosTokenId: eos, padTokenId: 12, ...o });
    const ref = referenceGreedy(lmLast(lm), prompt, { maxLength: 12, eos: [eos], pad: 12, ...o });
    const got = rowsOf(out.sequences);
    t.deepEqual(got.map((r) => r.slice(0, ref[0]!.length)), ref, JSON.stringify(o));
    got.forEach((r, n) => {
      const at = r.indexOf(eos, 2);
      if (at >= 0) {
        t.is(out.lengths[n], at + 1);
        t.true(r.slice(at + 1).every((x) => x === 12), 'padded after EOS');
        t.true(at >= ((o as { minLength?: number }).minLength ?? 0), 'no EOS before minLength');
      }
    });
  }
  const withPen = rowsOf(generate(lm, ids32(prompt), { maxLength: 12, repetitionPenalty: 1.8 }).sequences);
  t.notDeepEqual(withPen, plain, 'the penalty changes the output');
});

// ---- bad input ---------------------------------------------------------------------------------

test('bad input is a clear TypeError/RangeError, never a crash', (t) => {
  const setup = `const N = (await import(${JSON.stringify(nativeUrl)})).native;
const ck = vlm.zeros([2, 2, 4, 3]), cv = vlm.zeros([2, 2, 4, 3]), k = vlm.randn([2, 1, 6]);
const q = vlm.randn([2, 1, 6]);
const A = { length: 2, causal: true, scale: 1, keyMask: null };
const s = vlm.randn([2, 5]);
const S = { temperature: 1, topK: 0, topP: 1, minKeep: 1, seed: 0, offset: 0 };
const i32 = (a, sh) => vlm.tensor(Int32Array.from(a), sh ?? [a.length], { dtype: 'int32' });
const lm = new vlm.models.CausalLM({ vocabSize: 9, maxPositions: 8, width: 8, layers: 1, heads: 2 });
const ids = i32([1, 2, 3, 4], [2, 2]);`;
  const { result, errors } = errorsInChild([
    ['write rows', 'N.kvCacheWrite(ck.handle, cv.handle, vlm.randn([3, 1, 6]).handle, k.handle, 0)'],
    ['write position', 'N.kvCacheWrite(ck.handle, cv.handle, k.handle, k.handle, 4)'],
    ['write too long', 'N.kvCacheWrite(ck.handle, cv.handle, vlm.randn([2, 5, 6]).handle, vlm.randn([2, 5, 6]).handle, 0)'],
    ['write dtype', 'N.kvCacheWrite(ck.handle, cv.handle, vlm.randn([2, 1, 6], { dtype: "float64" }).handle, k.handle, 0)'],
    ['write cache view', 'N.kvCacheWrite(vlm.transpose(ck, 1, 2).handle, cv.handle, k.handle, k.handle, 0)'],
    ['write same cache', 'N.kvCacheWrite(ck.handle, ck.handle, k.handle, k.handle, 0)'],
    ['reorder index', 'N.kvCacheReorder([ck.handle], i32([0, 2]).handle, 1)'],
    ['reorder index dtype', 'N.kvCacheReorder([ck.handle], vlm.randn([2]).handle, 1)'],
    ['reorder length', 'N.kvCacheReorder([ck.handle], i32([0, 0]).handle, 5)'],
    ['reorder caches', 'N.kvCacheReorder(ck.handle, i32([0, 0]).handle, 1)'],
    ['reorder twice', 'N.kvCacheReorder([ck.handle, ck.handle], i32([0, 0]).handle, 1)'],
    ['attn length', 'N.decodeAttention(q.handle, ck.handle, cv.handle, { ...A, length: 5 })'],
    ['attn causal length', 'N.decodeAttention(vlm.randn([2, 3, 6]).handle, ck.handle, cv.handle, { ...A, length: 2 })'],
    ['attn features', 'N.decodeAttention(vlm.randn([2, 1, 5]).handle, ck.handle, cv.handle, A)'],
    ['attn mask', 'N.decodeAttention(q.handle, ck.handle, cv.handle, { ...A, keyMask: vlm.tensor(new Uint8Array(6), [2, 3]).handle })'],
    ['attn mask dtype', 'N.decodeAttention(q.handle, ck.handle, cv.handle, { ...A, keyMask: vlm.randn([2, 4]).handle })'],
    ['attn scale', 'N.decodeAttention(q.handle, ck.handle, cv.handle, { ...A, scale: Infinity })'],
    ['process history id', 'N.decodeProcessLogits(s.handle, { logSoftmax: false, history: i32([1, 5], [2, 1]).handle, repetitionPenalty: 2, suppress: null })'],
    ['process penalty', 'N.decodeProcessLogits(s.handle, { logSoftmax: false, history: null, repetitionPenalty: 0, suppress: null })'],
    ['process suppress', 'N.decodeProcessLogits(s.handle, { logSoftmax: false, history: null, repetitionPenalty: 1, suppress: i32([-1]).handle })'],
    ['argmax dtype', 'N.decodeArgmax(i32([1, 2], [1, 2]).handle)'],
    ['argmax empty', 'N.decodeArgmax(vlm.zeros([2, 0]).handle)'],
    ['sample topP', 'N.decodeSample(s.handle, { ...S, topP: 0 })'],
    ['sample temperature', 'N.decodeSample(s.handle, { ...S, temperature: 0 })'],
    ['sample seed', 'N.decodeSample(s.handle, { ...S, seed: -1 })'],
    ['beam divisor', 'N.decodeBeamCandidates(vlm.randn([3, 5]).handle, vlm.zeros([3], { dtype: "float64" }).handle, 2, 2)'],
    ['beam count', 'N.decodeBeamCandidates(s.handle, vlm.zeros([2], { dtype: "float64" }).handle, 2, 11)'],
    ['beam scores dtype', 'N.decodeBeamCandidates(s.handle, vlm.zeros([2]).handle, 2, 2)'],
    ['gen topP', 'vlm.generate(lm, ids, { topP: 0, doSample: true })'],
    ['gen temperature', 'vlm.generate(lm, ids, { temperature: -1 })'],
    ['gen beams', 'vlm.generate(lm, ids, { numBeams: 0 })'],
    ['gen return sequences', 'vlm.generate(lm, ids, { numBeams: 2, numReturnSequences: 3 })'],
    ['gen unknown', 'vlm.generate(lm, ids, { max_length: 5 })'],
    ['gen eos', 'vlm.generate(lm, ids, { eosTokenId: "2" })'],
    ['gen eos range', 'vlm.generate(lm, ids, { eosTokenId: 9, maxLength: 6 })'],
    ['gen maxLength', 'vlm.generate(lm, ids, { maxLength: 2 })'],
    ['gen no start', 'vlm.generate(lm, null, {})'],
    ['gen model', 'vlm.generate({}, ids)'],
    ['gen ids dtype', 'vlm.generate(lm, vlm.randn([2, 2]))'],
    ['gen batch', 'vlm.generate(lm, { inputIds: ids, prefix: vlm.randn([3, 1, 8]) })'],
    ['gen context', 'vlm.generate(lm, { inputIds: ids, context: vlm.randn([2, 3, 8]) }, { maxLength: 6 })'],
    ['gen positions', 'vlm.generate(lm, ids, { maxLength: 30 })'],
    ['step cache', 'lm.step(ids, {})'],
    ['step batch', 'lm.step(ids, lm.newCache(3, 4))'],
    ['step overflow', '{ const c = lm.newCache(2, 3); lm.step(ids, c); lm.step(ids, c); }'],
    ['step id', 'lm.step(i32([1, 9], [2, 1]), lm.newCache(2, 4))'],
  ], setup);
  t.is(result.status, 0, result.stderr);
  if (process.env.DECODE_DEBUG) console.log(errors);
  const is = (label: string, name: string, message: string | RegExp) => {
    const e = errors[label];
    t.is(e?.name, name, `${label}: ${e?.message}`);
    if (typeof message === 'string') t.is(e?.message, message, label);
    else t.regex(e?.message ?? '', message, label);
  };
  is('write rows', 'RangeError', 'kvCacheWrite: expected a tensor [2, T, 6] (rows and heads * headDim of the cache) for k but received shape [3, 1, 6]');
  is('write position', 'RangeError', 'kvCacheWrite: expected an integer in [0, 3] for position but received the number 4');
  is('write too long', 'RangeError', 'kvCacheWrite: expected at most maxLength (4) positions for k but received shape [2, 5, 6]');
  is('write dtype', 'TypeError', /^kvCacheWrite: expected a float32 tensor .* for k but received a float64 tensor$/);
  is('write cache view', 'TypeError', 'kvCacheWrite: expected a contiguous tensor for cacheK but received a strided view (call .contiguous() first)');
  is('write same cache', 'RangeError', 'kvCacheWrite: expected a tensor that does not share memory with cacheK for cacheV but received an overlapping view');
  is('reorder index', 'RangeError', 'kvCacheReorder: expected row indices in [0, 2) for index but received 2 at index 1');
  is('reorder index dtype', 'TypeError', /^kvCacheReorder: expected an int32 tensor for index/);
  is('reorder length', 'RangeError', 'kvCacheReorder: expected an integer in [0, 4] for length but received the number 5');
  is('reorder caches', 'TypeError', /^kvCacheReorder: expected an array of tensors for caches but received/);
  is('reorder twice', 'RangeError', /^kvCacheReorder: expected a tensor that shares no memory with the other caches for caches\[1\]/);
  is('attn length', 'RangeError', 'decodeAttention: expected an integer in [0, 4] for options.length but received the number 5');
  is('attn causal length', 'RangeError', 'decodeAttention: expected at least the 3 new positions of q when causal for options.length but received the number 2');
  is('attn features', 'RangeError', 'decodeAttention: expected a tensor [2, heads, Lk, headDim] with heads * headDim = 5 (rows and features of q) for k but received shape [2, 2, 4, 3]');
  is('attn mask', 'RangeError', 'decodeAttention: expected a uint8 tensor [2 or 1, 4] for options.keyMask but received shape [2, 3]');
  is('attn mask dtype', 'TypeError', 'decodeAttention: expected a uint8 tensor (1 = may attend) for options.keyMask but received a float32 tensor');
  is('attn scale', 'RangeError', 'decodeAttention: expected a finite number for options.scale but received the number Infinity');
  is('process history id', 'RangeError', /^decodeProcessLogits: expected ids in \[-2147483648, 5\) \(negative ids are skipped\) for options.history but received 5 at index \[1, 0\]$/);
  is('process penalty', 'RangeError', 'decodeProcessLogits: expected a finite number > 0 for options.repetitionPenalty but received the number 0');
  is('process suppress', 'RangeError', 'decodeProcessLogits: expected ids in [0, 5) for options.suppress but received -1 at index 0');
  is('argmax dtype', 'TypeError', /^decodeArgmax: expected a float32 or float64 tensor for scores/);
  is('argmax empty', 'RangeError', 'decodeArgmax: expected a tensor [rows, vocab >= 1] for scores but received shape [2, 0]');
  is('sample topP', 'RangeError', 'decodeSample: expected a number in (0, 1] for options.topP but received the number 0');
  is('sample temperature', 'RangeError', 'decodeSample: expected a finite number > 0 for options.temperature but received the number 0');
  is('sample seed', 'RangeError', /^decodeSample: expected an integer in \[0, \d+\] for options.seed but received the number -1$/);
  is('beam divisor', 'RangeError', 'decodeBeamCandidates: expected a divisor of the 3 rows of scores for beams but received the number 2');
  is('beam count', 'RangeError', 'decodeBeamCandidates: expected an integer in [1, 10] for count but received the number 11');
  is('beam scores dtype', 'TypeError', 'decodeBeamCandidates: expected a float64 tensor for beamScores but received a float32 tensor');
  is('gen topP', 'RangeError', 'generate: expected a number in (0, 1] for options.topP but received the number 0');
  is('gen temperature', 'RangeError', 'generate: expected a finite number > 0 for options.temperature but received the number -1');
  is('gen beams', 'RangeError', 'generate: expected an integer in [1, 4096] for options.numBeams but received the number 0');
  is('gen return sequences', 'RangeError', 'generate: expected at most numBeams (2) for options.numReturnSequences (beam search returns its best hypotheses) but received 3');
  is('gen unknown', 'TypeError', /^generate: expected one of maxLength, .* for an option name but received 'max_length'$/);
  is('gen eos', 'TypeError', "generate: expected an id or an array of ids for options.eosTokenId but received the string '2'");
  is('gen eos range', 'RangeError', 'generate: expected ids below the vocabulary size (9) for options.eosTokenId but received 9');
  is('gen maxLength', 'RangeError', 'generate: expected options.maxLength above the prompt length (2) but received 2');
  is('gen no start', 'TypeError', 'generate: expected inputs.inputIds, inputs.prefix or options.bosTokenId to start from but received none');
  is('gen model', 'TypeError', /^generate: expected a decoder with newCache\(\) and step\(\) .* for model but received/);
  is('gen ids dtype', 'TypeError', 'generate: expected an int32 tensor [batch, length] for inputs.inputIds but received a float32 tensor of shape [2, 2]');
  is('gen batch', 'RangeError', 'generate: expected a batch of 2 (that of inputs.inputIds) for inputs.prefix but received 3');
  is('gen context', 'TypeError', /^CausalLM.step: expected no options.context \(the model has no cross-attention layers\)/);
  is('gen positions', 'RangeError', 'CausalLM.newCache: expected an integer in [1, 8] (maxPositions) for maxLength but received the number 29');
  is('step cache', 'TypeError', /^CausalLM.step: expected a KVCache \(from newCache\(\)\) for cache but received/);
  is('step batch', 'RangeError', 'CausalLM.step: expected inputs of 3 rows (the cache\'s batch) but received 2');
  is('step overflow', 'RangeError', 'CausalLM.step: expected at most 1 new positions (cache maxLength 3, 2 filled) but received 2');
  is('step id', 'RangeError', 'CausalLM.step: expected ids in [0, 9) for ids but received 9 at [1, 0]');
});
