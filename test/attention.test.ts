// attention family: the fused kernel against the materialised float64 reference (every
// mask kind, cross-attention, ragged tiles, float32 at L = 100 and 197), float64 gradient
// checks, fully masked rows, dropout against the dropout family's stream, thread-count
// independence, memory (no [Lq, Lk] buffer), bad input in a child process, and the
// MultiHeadAttention module (init, gradients, a manual composition, cached prefixes).
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native, type NativeTensor } from '../ts/native.js';
import { tensor, randn, zeros, manualSeed } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { Tensor } from '../ts/graph/tensor.js';
import { tidy } from '../ts/graph/scope.js';
import { concat, contiguous, permute, reshape, slice, transpose } from '../ts/graph/ops/views.js';
import { add, mul, scale as scaleBy } from '../ts/graph/ops/elementwise.js';
import { sum } from '../ts/graph/ops/reduce.js';
import { matmul, linear } from '../ts/graph/ops/matmul.js';
import { softmax } from '../ts/graph/ops/softmax.js';
import { dropout } from '../ts/graph/ops/dropout.js';
import { attention, type AttentionOptions } from '../ts/graph/ops/attention.js';
import { MultiHeadAttention } from '../ts/graph/attention_layers.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;
type DT = 'float32' | 'float64';

const rnd = (shape: number[], seed: number, dtype: DT = 'float64', std = 1) => randn(shape, { dtype, seed, std });
const leaf = (shape: number[], seed: number, std = 1) => rnd(shape, seed, 'float64', std).requiresGrad_();
const arr = (t: Tensor | NativeTensor | null) => Float64Array.from(t instanceof Tensor ? t.toArray() : native.toArray(t!));
const u8 = (values: number[], shape: number[]) => tensor(Uint8Array.from(values), shape);
const i32 = (values: number[]) => tensor(Int32Array.from(values), [values.length]);

/** Runs fn with the kernel's tiles set to rows x cols, restoring the defaults after. */
function withTiles<T>(rows: number, cols: number, fn: () => T): T {
  const [r0, c0] = native.attentionTiles();
  native.attentionTiles(rows, cols);
  try {
    return fn();
  } finally {
    native.attentionTiles(r0, c0);
  }
}

/** The binding's options for attention()'s, as the TS op builds them (tests of the reference). */
function nativeOptions(q: Tensor, k: Tensor, o: AttentionOptions & { offset?: number }) {
  const Lq = q.shape[2]!, Lk = k.shape[2]!;
  const m = o.mask ?? null;
  const four = (t: Tensor) => native.view(t.handle, [...Array(4 - t.ndim).fill(1), ...t.shape], [...Array(4 - t.ndim).fill(0), ...t.strides], t.handle.offset);
  return {
    scale: o.scale ?? 1 / Math.sqrt(q.shape[3]!), causal: !!o.causal, causalOffset: o.causal === 'bottomRight' ? Lk - Lq : 0,
    mask: m && m.dtype === 'uint8' ? four(m) : null, bias: m && m.dtype !== 'uint8' ? four(m) : null,
    keyPadding: o.keyPadding instanceof Tensor ? o.keyPadding.handle : o.keyPadding ? i32([...o.keyPadding]).handle : null,
    dropout: o.dropout ?? 0, seed: o.seed ?? 0, offset: o.offset ?? 0,
  };
}

/**
 * Fused forward and backward (upstream gradient gout) against the float64 reference.
 * tol = [atol, rtol] for outputs and gradients.
 */
function checkAgainstReference(t: import('ava').ExecutionContext, label: string, q: Tensor, k: Tensor, v: Tensor,
  o: AttentionOptions, tol: [number, number]): void {
  tidy(() => {
    const gout = rnd([q.shape[0]!, q.shape[1]!, q.shape[2]!, v.shape[3]!], 99, q.dtype as DT);
    const ref = native.attentionReference(q.handle, k.handle, v.handle, nativeOptions(q, k, o), gout.handle);
    const [qg, kg, vg] = [q, k, v].map((x) => noGrad(() => x.detach()).requiresGrad_());
    const out = attention(qg!, kg!, vg!, o);
    out.backward(gout);
    assertClose(t, arr(out), arr(ref.out), tol[0], tol[1], `${label}: out`);
    assertClose(t, arr(qg!.grad), arr(ref.dq), tol[0], tol[1], `${label}: dq`);
    assertClose(t, arr(kg!.grad), arr(ref.dk), tol[0], tol[1], `${label}: dk`);
    assertClose(t, arr(vg!.grad), arr(ref.dv), tol[0], tol[1], `${label}: dv`);
    t.true(arr(out).every((x) => !Number.isNaN(x)), `${label}: no NaN`);
    for (const h of Object.values(ref)) h?.dispose();
  });
}

// ---- against the reference ------------------------------------------------------------------

test('float64: every mask kind agrees with the materialised reference, ragged tiles and cross-attention', (t) => {
  const B = 2, H = 3, Lq = 13, Lk = 19, D = 5;
  const q = rnd([B, H, Lq, D], 1), k = rnd([B, H, Lk, D], 2), v = rnd([B, H, Lk, 7], 3);
  const m = u8(Array.from({ length: B * Lq * Lk }, (_, i) => ((i * 7919) % 5 === 0 ? 0 : 1)), [B, 1, Lq, Lk]);
  const bias = noGrad(() => rnd([H, 1, Lk], 4, 'float64', 2));  // broadcast [1, H, 1, Lk]
  const biasInf = tensor(Float64Array.from({ length: Lq * Lk }, (_, i) => (i % 3 === 0 ? -Infinity : 0.5 * Math.sin(i))), [Lq, Lk], { dtype: 'float64' });
  const cases: [string, AttentionOptions][] = [
    ['none', {}],
    ['causal top-left', { causal: true }],
    ['causal bottom-right', { causal: 'bottomRight' }],
    ['key padding', { keyPadding: [Lk, 4] }],
    ['uint8 mask [B,1,Lq,Lk]', { mask: m }],
    ['additive bias [H,1,Lk]', { mask: bias }],
    ['additive -inf mask [Lq,Lk]', { mask: biasInf }],
    ['all combined', { causal: 'bottomRight', keyPadding: [9, Lk], mask: m, scale: 0.7 }],
    ['dropout', { dropout: 0.25, seed: 11 }],
    ['dropout + causal + padding', { dropout: 0.5, seed: 12, causal: true, keyPadding: [Lk, 11] }],
  ];
  for (const [rows, cols] of [[4, 8], [64, 128], [5, 3]])
    withTiles(rows, cols, () => {
      for (const [name, o] of cases) checkAgainstReference(t, `tiles ${rows}x${cols} ${name}`, q, k, v, o, [1e-12, 1e-10]);
    });
  // Lq > Lk with bottom-right causal: the first Lq - Lk rows see nothing.
  const q2 = rnd([1, 2, 9, 4], 5), k2 = rnd([1, 2, 4, 4], 6), v2 = rnd([1, 2, 4, 4], 7);
  withTiles(4, 4, () => checkAgainstReference(t, 'Lq > Lk bottom-right', q2, k2, v2, { causal: 'bottomRight' }, [1e-12, 1e-10]));
});

test('float32 agrees with the float64 reference at L = 100 and 197 (head dim 64), masks included', (t) => {
  for (const L of [100, 197]) {
    const q = rnd([2, 2, L, 64], 10, 'float32'), k = rnd([2, 2, L, 64], 11, 'float32'), v = rnd([2, 2, L, 64], 12, 'float32');
    checkAgainstReference(t, `L=${L}`, q, k, v, {}, [2e-5, 1e-3]);
    checkAgainstReference(t, `L=${L} causal + padding`, q, k, v, { causal: true, keyPadding: [L, L - 37] }, [2e-5, 1e-3]);
    checkAgainstReference(t, `L=${L} dropout`, q, k, v, { dropout: 0.1, seed: 3 }, [2e-5, 1e-3]);
  }
  // Peaked softmax (scores in the hundreds) and cross-attention Lq != Lk.
  const q = rnd([1, 2, 50, 32], 13, 'float32', 4), k = rnd([1, 2, 77, 32], 14, 'float32', 4), v = rnd([1, 2, 77, 16], 15, 'float32');
  checkAgainstReference(t, 'peaked cross', q, k, v, { scale: 1 }, [5e-5, 2e-3]);
});

test('float32 tile products: the AVX-512 kernel and core GEMM both agree with the float64 reference', (t) => {
  const kernels = native.attentionTileKernel() === 'avx512' ? ['avx512', 'gemm'] as const : ['gemm'] as const;
  t.throws(() => native.attentionTileKernel('fast' as 'gemm'), { instanceOf: TypeError, message: /attentionTileKernel.*'avx512' or 'gemm'/ });
  const m = u8(Array.from({ length: 2 * 70 * 41 }, (_, i) => ((i * 7919) % 6 === 0 ? 0 : 1)), [2, 1, 70, 41]);
  const cases: [string, number, number, number, number, AttentionOptions][] = [
    // [label, Lq, Lk, Dh, Dv, options]: 65 and 70 rows are one query tile (<= 64 + 16), 100 is two
    ['ViT-sized, split heads', 65, 65, 32, 32, {}],
    ['causal text', 24, 24, 32, 32, { causal: true }],
    ['ragged cross, padding, mask', 70, 41, 40, 17, { keyPadding: [41, 9], mask: m, scale: 0.3 }],
    ['two query tiles, dropout, causal', 100, 100, 64, 64, { causal: 'bottomRight', dropout: 0.2, seed: 5 }],
    ['keys past one tile', 20, 300, 16, 16, { keyPadding: [300, 130] }],
  ];
  const prev = native.attentionTileKernel();
  try {
    for (const kernel of kernels) {
      native.attentionTileKernel(kernel);
      for (const [label, Lq, Lk, Dh, Dv, o] of cases) {
        const split = (L: number, D: number, seed: number) => noGrad(() => permute(rnd([2, L, 3, D], seed, 'float32'), [0, 2, 1, 3]));
        const q = split(Lq, Dh, 60), k = split(Lk, Dh, 61), v = split(Lk, Dv, 62);
        checkAgainstReference(t, `${kernel}: ${label}`, q, k, v, o, [3e-5, 1e-3]);
      }
    }
  } finally {
    native.attentionTileKernel(prev);
  }
});

// ---- gradient checks -----------------------------------------------------------------------

test('gradients match central differences under each mask kind (float64)', (t) => {
  withTiles(3, 4, () => {
    const B = 2, H = 2, Lq = 5, Lk = 7, D = 3;
    const q = leaf([B, H, Lq, D], 20), k = leaf([B, H, Lk, D], 21), v = leaf([B, H, Lk, D], 22);
    const qs = leaf([B, H, Lk, D], 23);  // self-attention
    const m = u8([1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 1, 1], [Lq, Lk]);
    const bias = tensor(Float64Array.from({ length: H * Lq * Lk }, (_, i) => (i % 4 === 1 ? -Infinity : Math.cos(i))), [1, H, Lq, Lk], { dtype: 'float64' });
    const f = (o: AttentionOptions) => (a: Tensor, b: Tensor, c: Tensor) => attention(a, b, c, o);
    assertGradcheck(t, f({}), [q, k, v], {}, 'no mask, cross');
    assertGradcheck(t, f({ causal: true }), [qs, k, v], {}, 'causal self');
    assertGradcheck(t, f({ causal: 'bottomRight' }), [q, k, v], {}, 'causal bottom-right cross');
    assertGradcheck(t, f({ keyPadding: [3, 0] }), [q, k, v], {}, 'key padding with an empty sample');
    assertGradcheck(t, f({ mask: m }), [q, k, v], {}, 'uint8 mask with fully masked rows');
    assertGradcheck(t, f({ mask: bias }), [q, k, v], {}, 'additive mask with -inf');
    assertGradcheck(t, f({ dropout: 0.3, seed: 5 }), [q, k, v], {}, 'dropout');
    assertGradcheck(t, f({ causal: true, keyPadding: [4, 6], mask: m, dropout: 0.2, seed: 6, scale: 0.9 }), [q, k, v], {}, 'all combined');
  });
});

test('gradients for strided leaves, size-1 dims and partial requiresGrad', (t) => {
  // Heads split by permute (unit last stride: read in place) and a transposed leaf (copied).
  const qp = noGrad(() => permute(rnd([2, 4, 3, 5], 30), [0, 2, 1, 3])).requiresGrad_();  // [2, 3, 4, 5]
  t.false(qp.isContiguous);
  const kt = noGrad(() => transpose(rnd([2, 3, 5, 6], 31))).requiresGrad_();  // [2, 3, 6, 5], last stride != 1
  const v = leaf([2, 3, 6, 2], 32);
  assertGradcheck(t, (a, b, c) => attention(a, b, c, { causal: 'bottomRight' }), [qp, kt, v], {}, 'strided leaves');
  assertGradcheck(t, (a, b, c) => attention(a, b, c), [leaf([1, 1, 1, 4], 33), leaf([1, 1, 1, 4], 34), leaf([1, 1, 1, 1], 35)], {}, 'all size 1');
  assertGradcheck(t, (a, b, c) => attention(a, b, c, { keyPadding: [2] }), [leaf([1, 1, 3, 2], 36), leaf([1, 1, 4, 2], 37), leaf([1, 1, 4, 3], 38)], {}, 'one head');
  const k = rnd([1, 2, 4, 3], 39), vv = rnd([1, 2, 4, 3], 40);  // constants
  assertGradcheck(t, (a) => attention(a, k, vv, { causal: true }), [leaf([1, 2, 4, 3], 41)], {}, 'q only');
  const q = rnd([1, 2, 4, 3], 42);
  assertGradcheck(t, (b) => attention(q, b, vv), [leaf([1, 2, 4, 3], 43)], {}, 'k only');
});


test('split-projection heads: out and gradients come back over [B, L, H, D] storage, equal to the contiguous case', (t) => {
  // q, k, v as MultiHeadAttention makes them: [B, L, H, D] permuted to [B, H, L, D].
  const B = 2, H = 3, Lq = 9, Lk = 11, D = 4;
  const split = (L: number, seed: number) => noGrad(() => permute(rnd([B, L, H, D], seed), [0, 2, 1, 3]));
  const q = split(Lq, 50), k = split(Lk, 51), v = split(Lk, 52);
  const cases: [string, AttentionOptions][] = [
    ['none', {}], ['causal', { causal: 'bottomRight' }], ['key padding with an empty sample', { keyPadding: [Lk, 0] }],
    ['dropout', { dropout: 0.3, seed: 4 }],
  ];
  // 2x3 tiles: several key chunks per (batch, head), so the dQ partial sums are used too.
  for (const [rows, cols] of [[2, 3], [64, 128]])
    withTiles(rows, cols, () => {
      for (const [name, o] of cases) {
        checkAgainstReference(t, `split tiles ${rows}x${cols} ${name}`, q, k, v, o, [1e-12, 1e-10]);
        tidy(() => {
          const opts = nativeOptions(q, k, o);
          const r = native.attentionForward(q.handle, k.handle, v.handle, opts);
          t.deepEqual(r.out.strides, [Lq * H * D, D, H * D, 1], `${name}: out over [B, Lq, H, D]`);
          const g = rnd([B, H, Lq, D], 53);
          const gr = native.attentionBackward(q.handle, k.handle, v.handle, r.out, r.lse, g.handle, opts, [true, true, true]);
          t.deepEqual(gr.dq!.strides, [Lq * H * D, D, H * D, 1], `${name}: dq over [B, Lq, H, D]`);
          t.deepEqual(gr.dk!.strides, [Lk * H * D, D, H * D, 1], `${name}: dk over [B, Lk, H, D]`);
          // The same values as from contiguous inputs (whose results stay contiguous).
          const [qc, kc, vc] = [q, k, v].map((x) => contiguous(x));
          const rc = native.attentionForward(qc!.handle, kc!.handle, vc!.handle, opts);
          t.deepEqual(rc.out.strides, [H * Lq * D, Lq * D, D, 1]);
          const gc = native.attentionBackward(qc!.handle, kc!.handle, vc!.handle, rc.out, rc.lse, g.handle, opts, [true, true, true]);
          t.deepEqual(arr(r.out), arr(rc.out), `${name}: out`);
          for (const key of ['dq', 'dk', 'dv'] as const) t.deepEqual(arr(gr[key]), arr(gc[key]), `${name}: ${key}`);
          for (const h of [r.out, r.lse, gr.dq, gr.dk, gr.dv, rc.out, rc.lse, gc.dq, gc.dk, gc.dv]) h?.dispose();
        });
      }
    });
  // Merging heads after attention is then a view, not a copy: MultiHeadAttention's
  // forward and backward make no contiguous copy of an activation.
  t.true(tidy(() => permute(attention(q, k, v), [0, 2, 1, 3]).isContiguous), 'attention output permuted back is contiguous');
  const mha = new MultiHeadAttention(H * D, H);
  const x = rnd([B, Lq, H * D], 54, 'float32');  // no grad: only the parameters' (2-D, 1-D) are leaves
  const n = native as unknown as Record<string, (...a: unknown[]) => unknown>;
  const orig = n.contiguous!;
  const copied: number[][] = [];
  n.contiguous = (h: unknown, ...rest: unknown[]) => {
    copied.push([...(h as NativeTensor).shape]);
    return orig(h, ...rest);
  };
  try {
    tidy(() => sum(mha.forward(x)).backward());
  } finally {
    n.contiguous = orig;
  }
  t.deepEqual(copied.filter((s) => s.length > 2), [], 'no activation copied');
});
test('fully masked rows give exact zeros and zero gradients, never NaN', (t) => {
  for (const dtype of ['float32', 'float64'] as DT[]) {
    const q = rnd([2, 1, 4, 8], 50, dtype).requiresGrad_(), k = rnd([2, 1, 6, 8], 51, dtype).requiresGrad_();
    const v = rnd([2, 1, 6, 8], 52, dtype).requiresGrad_();
    // Row 1 masked by the uint8 mask, sample 1 has no keys, row 3 only -inf additive... via causal offset.
    const m = u8([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 4, 6]);
    const out = attention(q, k, v, { mask: m, keyPadding: [6, 0], causal: true });
    const o = arr(out);
    t.true(o.every(Number.isFinite), `${dtype} finite output`);
    t.true(o.slice(8, 16).every((x) => x === 0), `${dtype} masked row is zero`);
    t.true(o.slice(32).every((x) => x === 0), `${dtype} empty sample is zero`);
    t.true(o.slice(0, 8).some((x) => x !== 0), `${dtype} visible row is not zero`);
    sum(mul(out, rnd([2, 1, 4, 8], 53, dtype))).backward();
    for (const [n, x] of [['q', q], ['k', k], ['v', v]] as const) t.true(arr(x.grad).every(Number.isFinite), `${dtype} finite d${n}`);
    t.true(arr(q.grad).slice(8, 16).every((x) => x === 0), `${dtype} zero dq for the masked row`);
    t.true(arr(k.grad).slice(48).every((x) => x === 0) && arr(v.grad).slice(48).every((x) => x === 0), `${dtype} zero dk, dv for sample 1`);
    // An all -inf additive mask also gives zeros.
    const z = attention(q, k, v, { mask: tensor(new Float64Array(24).fill(-Infinity), [4, 6], { dtype }) });
    t.true(arr(z).every((x) => x === 0), `${dtype} all -inf additive mask gives zeros`);
  }
  // Degenerate lengths.
  const none = attention(rnd([1, 2, 3, 4], 54), rnd([1, 2, 0, 4], 55), rnd([1, 2, 0, 5], 56));
  t.deepEqual(none.shape, [1, 2, 3, 5]);
  t.true(arr(none).every((x) => x === 0), 'Lk = 0 gives zeros');
  t.deepEqual(attention(rnd([1, 2, 0, 4], 57), rnd([1, 2, 3, 4], 58), rnd([1, 2, 3, 5], 59)).shape, [1, 2, 0, 5]);
  // NaN propagates in its row.
  const qn = tensor(Float32Array.from({ length: 8 }, (_, i) => (i === 0 ? NaN : i / 10)), [1, 1, 2, 4]);
  const on = arr(attention(qn, rnd([1, 1, 3, 4], 60, 'float32'), rnd([1, 1, 3, 4], 61, 'float32')));
  t.true(on.slice(0, 4).every(Number.isNaN) && on.slice(4).every(Number.isFinite), `NaN stays in its row: ${on}`);
});

test('dropout uses the dropout family\'s Philox stream over [B, H, Lq, Lk]', (t) => {
  const q = rnd([2, 2, 9, 4], 70), k = rnd([2, 2, 11, 4], 71), v = rnd([2, 2, 11, 3], 72);
  withTiles(4, 4, () => {
    const fused = attention(q, k, v, { dropout: 0.4, seed: 123 });
    const probs = softmax(scaleBy(matmul(q, transpose(k)), 0.5));
    const composed = matmul(dropout(probs, 0.4, { seed: 123 }), v);
    assertClose(t, arr(fused), arr(composed), 1e-12, 1e-10, 'fused vs softmax -> dropout -> matmul');
    const other = attention(q, k, v, { dropout: 0.4, seed: 124 });
    t.notDeepEqual(arr(other), arr(fused), 'another seed, another mask');
    t.deepEqual(arr(attention(q, k, v, { dropout: 0.4, seed: 123 })), arr(fused), 'same seed, same result');
  });
});

test('results do not depend on the thread count (float32, forward and backward)', (t) => {
  const prev = native.getNumThreads();
  const cases: [number[], number[], AttentionOptions][] = [
    [[2, 2, 150, 32], [2, 2, 150, 32], { causal: true, keyPadding: [150, 99] }],  // few (b, h): chunked dq
    [[4, 8, 70, 16], [4, 8, 40, 16], { dropout: 0.2, seed: 9 }],                  // many (b, h)
  ];
  const run = () => cases.map(([qs, ks, o], c) => tidy(() => {
    const q = rnd(qs, 80 + c, 'float32').requiresGrad_(), k = rnd(ks, 81 + c, 'float32').requiresGrad_();
    const v = rnd(ks, 82 + c, 'float32').requiresGrad_();
    const out = attention(q, k, v, o);
    out.backward(rnd(qs, 83 + c, 'float32'));
    return [arr(out), arr(q.grad), arr(k.grad), arr(v.grad)];
  }));
  try {
    native.setNumThreads(1);
    const one = run();
    native.setNumThreads(2);
    const two = run(), again = run();
    t.deepEqual(two, one, '1 vs 2 threads, bitwise');
    t.deepEqual(again, two, 'repeat, bitwise');
  } finally {
    native.setNumThreads(prev);
  }
});

test('the fused kernel never allocates an [Lq, Lk] buffer', (t) => {
  const L = 1024, q = rnd([1, 2, L, 8], 90, 'float32'), k = rnd([1, 2, L, 8], 91, 'float32'), v = rnd([1, 2, L, 8], 92, 'float32');
  const g = rnd([1, 2, L, 8], 93, 'float32');
  const scores = 2 * L * L * 4;  // bytes of one float32 score tensor
  tidy(() => {
    native.resetPeak();
    const base = native.memory().cpu.liveBytes;
    const f = native.attentionForward(q.handle, k.handle, v.handle, nativeOptions(q, k, { causal: true }));
    const b = native.attentionBackward(q.handle, k.handle, v.handle, f.out, f.lse, g.handle, nativeOptions(q, k, { causal: true }), [true, true, true]);
    const peak = native.memory().cpu.peakBytes - base;
    t.true(peak < scores / 4, `peak ${peak} B above the inputs, one score tensor is ${scores} B`);
    for (const h of [f.out, f.lse, b.dq, b.dk, b.dv]) h?.dispose();
  });
});

// ---- bad input -------------------------------------------------------------------------------

test('bad input is a clear TypeError/RangeError, never a crash', (t) => {
  const setup = `const N = (await import(${JSON.stringify(nativeUrl)})).native;
const q = vlm.randn([2, 3, 4, 8]), k = vlm.randn([2, 3, 5, 8]), v = vlm.randn([2, 3, 5, 6]);
const A = (o, qq = q, kk = k, vv = v) => vlm.attention(qq, kk, vv, o);
const O = { scale: 1, causal: false, causalOffset: 0, mask: null, bias: null, keyPadding: null, dropout: 0, seed: 0, offset: 0 };
const f = N.attentionForward(q.handle, k.handle, v.handle, O);`;
  const { result, errors } = errorsInChild([
    ['Dh', 'A({}, q, vlm.randn([2, 3, 5, 7]))'],
    ['B', 'A({}, q, vlm.randn([1, 3, 5, 8]))'],
    ['H', 'A({}, q, k, vlm.randn([2, 2, 5, 6]))'],
    ['v length', 'A({}, q, k, vlm.randn([2, 3, 4, 6]))'],
    ['rank', 'A({}, vlm.randn([3, 4, 8]))'],
    ['q dtype', 'A({}, vlm.tensor(Int32Array.from([1, 2, 3, 4]), [1, 1, 1, 4]))'],
    ['k dtype', 'A({}, q, vlm.randn([2, 3, 5, 8], { dtype: "float64" }))'],
    ['not tensor', 'A({}, [1, 2])'],
    ['mask shape', 'A({ mask: vlm.tensor(new Uint8Array(2 * 3 * 4 * 4).fill(1), [2, 3, 4, 4]) })'],
    ['mask shape 2d', 'A({ mask: vlm.tensor(new Uint8Array(6).fill(1), [2, 3]) })'],
    ['mask rank', 'A({ mask: vlm.tensor(new Uint8Array(20).fill(1), [1, 1, 1, 4, 5]) })'],
    ['mask int32', 'A({ mask: vlm.tensor(new Int32Array(20), [4, 5]) })'],
    ['bias dtype', 'A({ mask: vlm.randn([4, 5], { dtype: "float64" }) })'],
    ['mask object', 'A({ mask: [[1]] })'],
    ['padding high', 'A({ keyPadding: [5, 6] })'],
    ['padding negative', 'A({ keyPadding: [-1, 2] })'],
    ['padding length', 'A({ keyPadding: [1, 2, 3] })'],
    ['padding dtype', 'A({ keyPadding: vlm.randn([2]) })'],
    ['padding fraction', 'A({ keyPadding: [1.5, 2] })'],
    ['scale NaN', 'A({ scale: NaN })'],
    ['scale string', 'A({ scale: "1" })'],
    ['dropout 1', 'A({ dropout: 1 })'],
    ['dropout negative', 'A({ dropout: -0.1 })'],
    ['dropout NaN', 'A({ dropout: NaN })'],
    ['seed', 'A({ dropout: 0.1, seed: -1 })'],
    ['causal', 'A({ causal: "yes" })'],
    ['disposed', '{ const d = vlm.randn([2, 3, 5, 8]); d.dispose(); A({}, q, d); }'],
    ['native scale', 'N.attentionForward(q.handle, k.handle, v.handle, { ...O, scale: NaN })'],
    ['native dropout', 'N.attentionForward(q.handle, k.handle, v.handle, { ...O, dropout: 1 })'],
    ['native options', 'N.attentionForward(q.handle, k.handle, v.handle, null)'],
    ['native mask dtype', 'N.attentionForward(q.handle, k.handle, v.handle, { ...O, mask: vlm.randn([1, 1, 4, 5]).handle })'],
    ['native mask rank', 'N.attentionForward(q.handle, k.handle, v.handle, { ...O, mask: vlm.tensor(new Uint8Array(20), [4, 5]).handle })'],
    ['native causalOffset', 'N.attentionForward(q.handle, k.handle, v.handle, { ...O, causalOffset: 0.5 })'],
    ['native headDim 0', 'N.attentionForward(vlm.randn([2, 3, 4, 0]).handle, vlm.randn([2, 3, 5, 0]).handle, v.handle, O)'],
    ['native lse shape', 'N.attentionBackward(q.handle, k.handle, v.handle, f.out, q.handle, f.out, O, [true, true, true])'],
    ['native gradOut dtype', 'N.attentionBackward(q.handle, k.handle, v.handle, f.out, f.lse, vlm.randn([2, 3, 4, 6], { dtype: "float64" }).handle, O, [true, true, true])'],
    ['native needs', 'N.attentionBackward(q.handle, k.handle, v.handle, f.out, f.lse, f.out, O, [true, true])'],
    ['native tiles', 'N.attentionTiles(0, 8)'],
    ['native padding dtype', 'N.attentionForward(q.handle, k.handle, v.handle, { ...O, keyPadding: vlm.randn([2]).handle })'],
    ['native bias dtype', 'N.attentionForward(q.handle, k.handle, v.handle, { ...O, bias: vlm.randn([1, 1, 4, 5], { dtype: "float64" }).handle })'],
  ], setup);
  t.is(result.status, 0, result.stderr);
  const is = (label: string, name: string, message: string) => t.deepEqual(errors[label], { name, message }, label);
  is('Dh', 'RangeError', 'attention: expected a tensor [2, 3, Lk, 8] (batch, heads and headDim of q) for k but received shape [2, 3, 5, 7]');
  is('B', 'RangeError', 'attention: expected a tensor [2, 3, Lk, 8] (batch, heads and headDim of q) for k but received shape [1, 3, 5, 8]');
  is('H', 'RangeError', 'attention: expected a tensor [2, 3, 5, Dv] (batch, heads and length of k) for v but received shape [2, 2, 5, 6]');
  is('v length', 'RangeError', 'attention: expected a tensor [2, 3, 5, Dv] (batch, heads and length of k) for v but received shape [2, 3, 4, 6]');
  is('rank', 'RangeError', 'attention: expected a tensor [batch, heads, length, headDim] for q but received shape [3, 4, 8]');
  is('q dtype', 'TypeError', 'attention: expected a float32 or float64 tensor for q but received an int32 tensor');
  is('k dtype', 'TypeError', 'attention: expected a float32 tensor (the dtype of q) for k but received a float64 tensor');
  t.regex(errors['not tensor']!.message, /^attention: expected a tensor for q but received an array/);
  is('mask shape', 'RangeError', 'attention: expected a tensor broadcastable to [2, 3, 4, 5] (each dim 1 or full, missing leading dims 1) for options.mask but received shape [2, 3, 4, 4]');
  is('mask shape 2d', 'RangeError', 'attention: expected a tensor broadcastable to [2, 3, 4, 5] (each dim 1 or full, missing leading dims 1) for options.mask but received shape [2, 3]');
  is('mask rank', 'RangeError', 'attention: expected a tensor broadcastable to [2, 3, 4, 5] (each dim 1 or full, missing leading dims 1) for options.mask but received shape [1, 1, 1, 4, 5]');
  is('mask int32', 'TypeError', 'attention: expected a uint8 (1 = may attend) or float32 (additive) tensor for options.mask but received an int32 tensor');
  is('bias dtype', 'TypeError', 'attention: expected a uint8 (1 = may attend) or float32 (additive) tensor for options.mask but received a float64 tensor');
  t.is(errors['mask object']!.name, 'TypeError');
  is('padding high', 'RangeError', 'attention: expected key lengths in [0, 5] (the length of k) for options.keyPadding but received 6 at index 1');
  is('padding negative', 'RangeError', 'attention: expected key lengths in [0, 5] (the length of k) for options.keyPadding but received -1 at index 0');
  is('padding length', 'RangeError', 'attention: expected shape [2] for options.keyPadding but received shape [3]');
  is('padding dtype', 'TypeError', 'attention: expected an int32 tensor or an array of integers for options.keyPadding but received a float32 tensor');
  is('native padding dtype', 'TypeError', 'attention: expected an int32 tensor for options.keyPadding but received a float32 tensor');
  t.is(errors['padding fraction']!.name, 'TypeError');
  is('scale NaN', 'RangeError', 'attention: expected a finite number for options.scale but received the number NaN');
  is('scale string', 'TypeError', "attention: expected a number for options.scale but received the string '1'");
  is('dropout 1', 'RangeError', 'attention: expected a probability in [0, 1) for options.dropout but received the number 1');
  is('dropout negative', 'RangeError', 'attention: expected a probability in [0, 1) for options.dropout but received the number -0.1');
  is('dropout NaN', 'RangeError', 'attention: expected a probability in [0, 1) for options.dropout but received the number NaN');
  is('seed', 'RangeError', 'attention: expected a non-negative safe integer for options.seed but received the number -1');
  t.is(errors['causal']!.name, 'TypeError');
  is('disposed', 'TypeError', 'attention: expected a live tensor for k but received a disposed tensor');
  is('native scale', 'RangeError', 'attention: expected a finite number for options.scale but received the number NaN');
  is('native dropout', 'RangeError', 'attention: expected a probability in [0, 1) for options.dropout but received the number 1');
  is('native options', 'TypeError', 'attention: expected an options object for options but received null');
  is('native mask dtype', 'TypeError', 'attention: expected a uint8 tensor (1 = may attend) for options.mask but received a float32 tensor');
  t.is(errors['native mask rank']!.name, 'RangeError');
  is('native causalOffset', 'TypeError', 'attention: expected an integer for options.causalOffset but received the number 0.5');
  is('native headDim 0', 'RangeError', 'attention: expected a tensor [batch, heads, Lq, headDim] with headDim >= 1 for q but received shape [2, 3, 4, 0]');
  is('native lse shape', 'RangeError', 'attentionBackward: expected shape [2, 3, 4] for lse but received shape [2, 3, 4, 8]');
  is('native gradOut dtype', 'TypeError', 'attentionBackward: expected a float32 tensor (the dtype of q) for gradOut but received a float64 tensor');
  is('native needs', 'TypeError', 'attentionBackward: expected an array of 3 booleans [q, k, v] for needs but received an array of length 2');
  is('native bias dtype', 'TypeError', 'attention: expected a float32 tensor (the dtype of q) for options.bias but received a float64 tensor');
  is('native tiles', 'RangeError', 'attentionTiles: expected an integer in [1, 4096] for rows but received the number 0');
});

// ---- MultiHeadAttention ------------------------------------------------------------------------

test('MultiHeadAttention: init as torch.nn.MultiheadAttention, shapes, state dict names', (t) => {
  const mha = new MultiHeadAttention(64, 8);
  t.deepEqual(Object.keys(mha.stateDict()), ['q_proj.weight', 'q_proj.bias', 'k_proj.weight', 'k_proj.bias', 'v_proj.weight', 'v_proj.bias', 'out_proj.weight', 'out_proj.bias']);
  const maxAbs = (x: Tensor) => arr(x).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const xav = Math.sqrt(6 / (64 + 3 * 64));
  for (const l of [mha.qProj, mha.kProj, mha.vProj]) {
    t.true(maxAbs(l.weight) <= xav && maxAbs(l.weight) > 0.95 * xav, `xavier bound ${xav}: ${maxAbs(l.weight)}`);
    t.is(maxAbs(l.bias!), 0);
  }
  t.true(maxAbs(mha.outProj.weight) <= 1 / 8 && maxAbs(mha.outProj.weight) > 0.95 / 8, 'out_proj keeps nn.Linear init');
  t.is(maxAbs(mha.outProj.bias!), 0);
  const cross = new MultiHeadAttention(16, 2, { kdim: 6, vdim: 10, bias: false });
  t.deepEqual(cross.kProj.weight.shape, [16, 6]);
  t.deepEqual(cross.vProj.weight.shape, [16, 10]);
  t.is(cross.qProj.bias, null);
  t.true(maxAbs(cross.kProj.weight) <= Math.sqrt(6 / 22));
  const y = cross.forward(rnd([2, 3, 16], 1, 'float32'), { key: rnd([2, 7, 6], 2, 'float32'), value: rnd([2, 7, 10], 3, 'float32') });
  t.deepEqual(y.shape, [2, 3, 16]);
  t.throws(() => cross.forward(rnd([2, 3, 16], 1, 'float32'), rnd([2, 7, 6], 2, 'float32')), { instanceOf: RangeError });
  t.throws(() => new MultiHeadAttention(10, 3), { instanceOf: RangeError, message: /divisible by heads/ });
});

test('MultiHeadAttention agrees with a manual composition of linear/matmul/softmax (outputs and gradients)', (t) => {
  const dim = 12, heads = 3, hd = 4, B = 2, Lq = 5, Lk = 6;
  const mha = new MultiHeadAttention(dim, heads, { dtype: 'float64', kdim: 8 });
  noGrad(() => { for (const l of [mha.qProj, mha.kProj, mha.vProj, mha.outProj]) native.copy(l.bias!.handle, rnd([dim], 7).handle); });
  const x = leaf([B, Lq, dim], 100), ctx = leaf([B, Lk, 8], 101);
  const lens = [6, 3];
  const r = rnd([B, Lq, dim], 102);
  const fused = mha.forward(x, ctx, { keyPadding: lens, causal: 'bottomRight' });
  sum(mul(fused, r)).backward();
  const grads = [x, ctx, ...mha.parameters()].map((p) => arr(p.grad));
  for (const p of [x, ctx, ...mha.parameters()]) { p.grad?.dispose(); p.grad = null; }
  // Manual: additive -inf mask from the lengths and the bottom-right diagonal.
  const maskData = new Float64Array(B * Lq * Lk);
  for (let b = 0; b < B; b++) for (let i = 0; i < Lq; i++) for (let j = 0; j < Lk; j++)
    maskData[(b * Lq + i) * Lk + j] = j < lens[b]! && j <= i + Lk - Lq ? 0 : -Infinity;
  const maskT = tensor(maskData, [B, 1, Lq, Lk], { dtype: 'float64' });
  const split = (y: Tensor, L: number) => permute(reshape(y, [B, L, heads, hd]), [0, 2, 1, 3]);
  const q = split(linear(x, mha.qProj.weight, mha.qProj.bias), Lq);
  const k = split(linear(ctx, mha.kProj.weight, mha.kProj.bias), Lk);
  const v = split(linear(ctx, mha.vProj.weight, mha.vProj.bias), Lk);
  const p = softmax(add(scaleBy(matmul(q, transpose(k)), 1 / Math.sqrt(hd)), maskT));
  const o = reshape(permute(matmul(p, v), [0, 2, 1, 3]), [B, Lq, dim]);
  const manual = linear(o, mha.outProj.weight, mha.outProj.bias);
  assertClose(t, arr(fused), arr(manual), 1e-12, 1e-10, 'output');
  sum(mul(manual, r)).backward();
  [x, ctx, ...mha.parameters()].forEach((pp, i) => assertClose(t, grads[i]!, arr(pp.grad), 1e-12, 1e-10, `gradient ${i}`));
});

test('MultiHeadAttention: gradient check on a tiny float64 instance (self, cross, dropout)', (t) => {
  const mha = new MultiHeadAttention(4, 2, { dtype: 'float64', dropout: 0.3 });
  noGrad(() => { for (const l of [mha.qProj, mha.kProj, mha.vProj]) native.copy(l.bias!.handle, rnd([4], 8).handle); });
  const x = leaf([2, 3, 4], 110), ctx = leaf([2, 4, 4], 111);
  mha.eval();
  assertGradcheck(t, (a) => mha.forward(a, null, { causal: true, keyPadding: [3, 2] }), [x, ...mha.parameters()], {}, 'self, causal + padding');
  assertGradcheck(t, (a, c) => mha.forward(a, c, { mask: u8([1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1], [3, 4]) }), [x, ctx, ...mha.parameters()], {}, 'cross, mask with an empty row');
  // Dropout in training mode, with a fixed generator state per call so the mask repeats.
  mha.train();
  assertGradcheck(t, (a) => { manualSeed(5); return mha.forward(a); }, [x, ...mha.parameters()], {}, 'training dropout');
  manualSeed(5);
  const a = arr(mha.forward(x));
  mha.eval();
  t.notDeepEqual(a, arr(mha.forward(x)), 'dropout is on in training mode only');
});

test('MultiHeadAttention with a cached prefix equals attention over the concatenated sequence (BLIP-2 ITG)', (t) => {
  // Q query tokens then T text tokens. Full pass: queries see queries; text sees all queries
  // and earlier text (multimodal causal). Prefix pass: text attends to the cached query
  // keys/values plus its own, bottom-right causal.
  const Q = 4, T = 5, dim = 8;
  const mha = new MultiHeadAttention(dim, 2, { dtype: 'float64' });
  const queries = rnd([2, Q, dim], 120), text = rnd([2, T, dim], 121);
  const m = new Uint8Array((Q + T) * (Q + T));
  for (let i = 0; i < Q + T; i++) for (let j = 0; j < Q + T; j++) m[i * (Q + T) + j] = (i < Q ? j < Q : j <= i) ? 1 : 0;
  const full = mha.forward(concat([queries, text], 1), null, { mask: u8([...m], [Q + T, Q + T]) });
  const cached = mha.keyValue(queries);
  const viaPrefix = mha.forward(text, null, { prefix: cached, causal: 'bottomRight' });
  assertClose(t, arr(viaPrefix), arr(slice(full, 1, Q, Q + T)), 1e-12, 1e-10, 'text rows');
  t.deepEqual(cached.key.shape, [2, 2, Q, 4]);
  t.throws(() => mha.forward(text, null, { prefix: { key: cached.key, value: zeros([2, 2, Q + 1, 4], { dtype: 'float64' }) } }), { instanceOf: RangeError });
});
