// matmul family, float32 matmul precision ('highest' / 'medium', as PyTorch's
// set_float32_matmul_precision): 'medium' must equal the float64 product of the
// bf16-rounded operands (so the operands really are rounded and the sums really are
// float32), on every GEMM route (thin, deep, transposed, strided, alpha/beta through
// linear's bias and attention's scale, the fused kernels' tile GEMMs run from several
// threads at once); 'highest' and float64 stay exact; bad values are clear errors.
// The precision is process-wide, so this file runs serially and restores it.
import test, { type ExecutionContext } from 'ava';
import { native } from '../ts/native.js';
import { Tensor } from '../ts/graph/tensor.js';
import { randn, tensor } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { transpose, slice, contiguous } from '../ts/graph/ops/views.js';
import { matmul, linear } from '../ts/graph/ops/matmul.js';
import { infoNCE } from '../ts/objectives/itc.js';
import { lmLoss } from '../ts/objectives/lm.js';
import { attention } from '../ts/graph/ops/attention.js';
import { mul } from '../ts/graph/ops/elementwise.js';
import '../ts/graph/methods.js';
import { errorsInChild } from './helpers/child.js';

const bf16 = native.buildInfo().bf16Matmul;

/** Round-to-nearest-even float32 -> bfloat16 -> float64, as the kernel does. */
function roundBf16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  const v = u[0]!;
  u[0] = ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) << 16;
  return f[0]!;
}

/** C[M,N] = alpha * A[M,K] B[K,N] + bias, in float64, optionally rounding A and B to bf16 first. */
function ref(a: Float32Array | Float64Array, b: Float32Array | Float64Array, M: number, K: number, N: number, round: boolean,
  alpha = 1, bias?: ArrayLike<number>): Float64Array {
  const r = (x: number) => (round ? roundBf16(x) : x);
  const ar = Float64Array.from(a, r), br = Float64Array.from(b, r);
  const c = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += ar[i * K + k]! * br[k * N + j]!;
      c[i * N + j] = alpha * s + (bias ? bias[j]! : 0);
    }
  return c;
}

/** Largest |x - y| relative to the largest |y|. */
function relErr(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let d = 0, m = 0;
  for (let i = 0; i < y.length; i++) {
    d = Math.max(d, Math.abs(x[i]! - y[i]!));
    m = Math.max(m, Math.abs(y[i]!));
  }
  return d / m;
}

function withPrecision<T>(p: 'highest' | 'medium', f: () => T): T {
  const prev = native.getFloat32MatmulPrecision();
  native.setFloat32MatmulPrecision(p);
  try {
    return f();
  } finally {
    native.setFloat32MatmulPrecision(prev);
  }
}

const contiguousData = (t: Tensor) => contiguous(t).toArray() as Float32Array | Float64Array;

test.serial('the default is highest; set and get round-trip; high keeps float32', (t) => {
  t.is(native.getFloat32MatmulPrecision(), 'highest');
  native.setFloat32MatmulPrecision('medium');
  t.is(native.getFloat32MatmulPrecision(), 'medium');
  native.setFloat32MatmulPrecision('high');
  t.is(native.getFloat32MatmulPrecision(), 'highest');
  native.setFloat32MatmulPrecision('highest');
  t.is(typeof bf16, 'boolean');
});

// Shapes that take each route: sgemm (M, N large), the float32 primitive (thin M) and
// the bf16 primitive for the large ones under 'medium'. Only products with
// M, N >= 192 and M N K >= 4M run in bf16 (elsewhere rounding the operands costs more
// than it saves); the others must equal 'highest' exactly.
const roundsBf16 = (M: number, K: number, N: number) => bf16 && M >= 192 && N >= 192 && M * K * N >= 4 * 2 ** 20;
const shapes: Array<[number, number, number]> = [[300, 128, 256], [200, 300, 200], [16, 256, 1100], [70, 20, 33], [1, 7, 5]];

for (const [M, K, N] of shapes) {
  test.serial(`medium ${M}x${K}x${N}: the float64 product of bf16-rounded operands; highest stays float32-exact`, (t) => {
    const a = randn([M, K]), b = randn([K, N]);
    const ad = contiguousData(a), bd = contiguousData(b);
    const hi = withPrecision('highest', () => matmul(a, b).toArray() as Float32Array);
    const md = withPrecision('medium', () => matmul(a, b).toArray() as Float32Array);
    const exact = ref(ad, bd, M, K, N, false);
    t.true(relErr(hi, exact) < 1e-5, `highest rel err ${relErr(hi, exact)}`);
    if (!roundsBf16(M, K, N)) {
      t.deepEqual(md, hi, bf16 ? 'a small product stays float32' : 'medium falls back to float32 where bf16 is not native');
      return;
    }
    const rounded = ref(ad, bd, M, K, N, true);
    t.true(relErr(md, rounded) < 1e-5, `medium vs bf16-rounded reference: ${relErr(md, rounded)}`);
    if (K > 4) t.true(relErr(md, exact) > 1e-5, 'medium differs from the float32 product (the operands were rounded)');
    t.true(relErr(md, exact) < 3e-2, `medium stays within bf16 accuracy: ${relErr(md, exact)}`);
  });
}

test.serial('medium: transposed and strided operands, batched, and linear with bias', (t) => {
  const M = 200, K = 300, N = 200;
  // a transposed view and a column slice: strides the GEMM must honour
  const at = randn([K, M]), bw = randn([N, K + 9]);
  const a = transpose(at, 0, 1), b = transpose(slice(bw, 1, 3, K + 3), 0, 1);
  const ad = contiguousData(a), bd = contiguousData(b);
  const bias = randn([N]);
  const y = withPrecision('medium', () => noGrad(() => linear(a, transpose(b, 0, 1), bias)).toArray() as Float32Array);
  const want = ref(ad, bd, M, K, N, roundsBf16(M, K, N), 1, bias.toArray() as Float32Array);
  t.true(relErr(y, want) < 1e-5, `linear: ${relErr(y, want)}`);
  const x3 = randn([3, 20, K]), w3 = randn([3, K, 30]);
  const y3 = withPrecision('medium', () => matmul(x3, w3).toArray() as Float32Array);
  const xd = contiguousData(x3), wd = contiguousData(w3);
  for (let i = 0; i < 3; i++) {
    // 20 x 300 x 30 per batch: small, so float32 under medium
    const want3 = ref(xd.subarray(i * 20 * K, (i + 1) * 20 * K), wd.subarray(i * K * 30, (i + 1) * K * 30), 20, K, 30, false);
    t.true(relErr(y3.subarray(i * 600, (i + 1) * 600), want3) < 1e-5, `batch ${i}`);
  }
});

test.serial('medium: linear backward rounds g, W and x once and gives the bf16-rounded products', (t) => {
  const R = 300, I = 200, O = 200;  // both products have M, N >= 192 and >= 4M multiply-adds
  const x = randn([R, I]).requiresGrad_(), w = randn([O, I]).requiresGrad_(), b = randn([O]).requiresGrad_();
  const gy = randn([R, O]);
  withPrecision('medium', () => {
    const y = linear(x, w, b);
    y.backward(gy);
  });
  const gd = contiguousData(gy), wd = contiguousData(w), xd = contiguousData(x);
  // dx [R, I] = g [R, O] W [O, I]; dW [O, I] = g^T [O, R] x [R, I]
  const gT = new Float32Array(O * R);
  for (let r = 0; r < R; r++) for (let o = 0; o < O; o++) gT[o * R + r] = gd[r * O + o]!;
  const wantDx = ref(gd, wd, R, O, I, roundsBf16(R, O, I)), wantDw = ref(gT, xd, O, R, I, roundsBf16(O, R, I));
  t.true(relErr(x.grad!.toArray() as Float32Array, wantDx) < 1e-5, `dx: ${relErr(x.grad!.toArray() as Float32Array, wantDx)}`);
  t.true(relErr(w.grad!.toArray() as Float32Array, wantDw) < 1e-5, `dW: ${relErr(w.grad!.toArray() as Float32Array, wantDw)}`);
  const db = b.grad!.toArray() as Float32Array;
  let s0 = 0;
  for (let r = 0; r < R; r++) s0 += gd[r * O]!;
  t.true(Math.abs(db[0]! - s0) < 1e-4, 'the bias gradient stays a float32 column sum');
});

test.serial('medium never touches float64', (t) => {
  const a = randn([40, 300], { dtype: 'float64' }), b = randn([300, 50], { dtype: 'float64' });
  const y = withPrecision('medium', () => matmul(a, b).toArray() as Float64Array);
  const want = ref(contiguousData(a), contiguousData(b), 40, 300, 50, false);
  t.true(relErr(y, want) < 1e-13, `float64 under medium: ${relErr(y, want)}`);
});

test.serial('medium in the fused infoNCE kernel: close to highest, gradients too, and deterministic', (t) => {
  // B = 600 spans several row tiles, so tile GEMMs run from both threads at once.
  const B = 600, D = 256;
  const img = randn([B, D]).requiresGrad_(), txt = randn([B, D]).requiresGrad_();
  const run = () => {
    img.grad = null;
    txt.grad = null;
    const { loss } = infoNCE(img, txt, { logitScale: Math.log(1 / 0.07), normalize: true });
    loss.backward();
    return { loss: loss.item(), g: img.grad!.toArray() as Float32Array };
  };
  const hi = withPrecision('highest', run);
  const m1 = withPrecision('medium', run);
  const m2 = withPrecision('medium', run);
  t.is(m1.loss, m2.loss, 'the same loss twice');
  t.deepEqual(m1.g, m2.g, 'the same gradient twice');
  t.true(Math.abs(m1.loss - hi.loss) / hi.loss < 5e-3, `loss ${m1.loss} vs ${hi.loss}`);
  t.true(relErr(m1.g, hi.g) < 5e-2, `gradient rel err ${relErr(m1.g, hi.g)}`);
  if (bf16) t.not(m1.loss, hi.loss, 'medium really ran in bf16');
});

/** Runs f under 'highest' once and 'medium' twice; checks closeness, determinism and that bf16 really ran. */
function compareFused(t: ExecutionContext, name: string, f: () => { loss: number; g: Float32Array }, lossTol: number, gradTol: number) {
  const hi = withPrecision('highest', f);
  const m1 = withPrecision('medium', f);
  const m2 = withPrecision('medium', f);
  t.is(m1.loss, m2.loss, `${name}: the same loss twice`);
  t.deepEqual(m1.g, m2.g, `${name}: the same gradient twice`);
  t.true(Math.abs(m1.loss - hi.loss) <= lossTol * Math.abs(hi.loss), `${name}: loss ${m1.loss} vs ${hi.loss}`);
  t.true(relErr(m1.g, hi.g) < gradTol, `${name}: gradient rel err ${relErr(m1.g, hi.g)}`);
  if (bf16) t.not(m1.loss, hi.loss, `${name}: medium really ran in bf16`);
}

test.serial('medium in the fused lm_head kernel (vocabulary tiles, bias, smoothing); attention stays float32', (t) => {
  const N = 300, H = 96, V = 1500;  // V spans several vocabulary tiles; N several row blocks
  const hidden = randn([N, H]).requiresGrad_(), weight = randn([V, H], { std: 0.1 }).requiresGrad_();
  const bias = randn([V], { std: 0.1 });
  const ids = new Int32Array(N);
  for (let i = 0; i < N; i++) ids[i] = i % 7 === 0 ? -100 : (i * 131) % V;
  const targets = tensor(ids, [N], { dtype: 'int32' });
  compareFused(t, 'lm_head', () => {
    hidden.grad = null;
    weight.grad = null;
    const { loss } = lmLoss(hidden, weight, targets, { bias, labelSmoothing: 0.1, ignoreIndex: -100 });
    loss.backward();
    const gw = weight.grad!.toArray() as Float32Array, gh = hidden.grad!.toArray() as Float32Array;
    return { loss: loss.item(), g: Float32Array.from([...gh, ...gw]) };
  }, 5e-3, 5e-2);
  // attention's per-tile products are small, so they stay float32 under medium
  const q = randn([2, 4, 70, 32]).requiresGrad_(), k = randn([2, 4, 90, 32]), v = randn([2, 4, 90, 32]);
  const att = () => {
    q.grad = null;
    const o = attention(q, k, v, { causal: 'bottomRight' });
    const loss = mul(o, o).sum();
    loss.backward();
    return { loss: loss.item(), g: q.grad!.toArray() as Float32Array };
  };
  t.deepEqual(withPrecision('medium', att), withPrecision('highest', att), 'attention: medium equals highest');
});

test('bad precision values are clear errors', (t) => {
  const { result, errors } = errorsInChild([
    ['word', "vlm.setFloat32MatmulPrecision('low')"],
    ['number', 'vlm.setFloat32MatmulPrecision(3)'],
  ]);
  t.is(result.status, 0, result.stderr);
  t.is(errors.word!.name, 'RangeError');
  t.regex(errors.word!.message, /setFloat32MatmulPrecision: expected 'highest', 'high' or 'medium' for precision but received 'low'/);
  t.is(errors.number!.name, 'TypeError');
  t.regex(errors.number!.message, /setFloat32MatmulPrecision: expected a string for precision but received/);
});
