// elementwise family: forward values against float64 JS references (broadcasting,
// scalars, strided views, size-1 and empty shapes, numeric hazards), float32 against
// float64, gradient checks for every op, determinism, and bad input in a child process.
import test from 'ava';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { native, type UnaryOp } from '../ts/native.js';
import { Tensor, wrap } from '../ts/graph/tensor.js';
import { tensor, randn, rand, full } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { tidy } from '../ts/graph/scope.js';
import { transpose, slice, reshape, select } from '../ts/graph/ops/views.js';
import {
  add, sub, mul, div, pow, maximum, minimum, neg, scale, exp, log, sqrt, tanh, sigmoid, relu, gelu, quickGelu, silu, abs,
} from '../ts/graph/ops/elementwise.js';
import { sum } from '../ts/graph/ops/reduce.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

// ---- float64 references ----------------------------------------------------------------

// erfc to ~1e-15 relative: Taylor series of erf below 1.5, Lentz continued fraction above.
function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return 2 - erfc(-x);
  if (x === Infinity) return 0;
  if (x < 1.5) {
    let term = x, s = x;
    for (let n = 1; n < 200; n++) {
      term *= (-x * x) / n;
      const add = term / (2 * n + 1);
      s += add;
      if (Math.abs(add) < 1e-18 * Math.abs(s)) break;
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * s;
  }
  // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
  let f = x, c = x, d = 0;
  for (let n = 1; n < 5000; n++) {
    const an = n / 2;
    d = x + an * d;
    d = 1 / d;
    c = x + an / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
}
const sig = (x: number) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
const timesOrZero = (x: number, s: number) => (s === 0 ? -0 : x * s);
const unaryRef: Record<UnaryOp, (x: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  tanh: Math.tanh,
  sigmoid: sig,
  relu: (x) => (x < 0 ? 0 : x),
  gelu: (x) => timesOrZero(x, 0.5 * erfc(-x / Math.SQRT2)),
  // 0.5 x (1 + tanh u) written as x sigmoid(2u), which has no cancellation in the left tail
  gelu_tanh: (x) => timesOrZero(x, sig(2 * Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
  quick_gelu: (x) => timesOrZero(x, sig(1.702 * x)),
  silu: (x) => timesOrZero(x, sig(x)),
  abs: Math.abs,
};
const unaryOps = Object.keys(unaryRef) as UnaryOp[];
const unaryTs: Record<UnaryOp, (x: Tensor) => Tensor> = {
  neg, exp, log, sqrt, tanh, sigmoid, relu, gelu, gelu_tanh: (x) => gelu(x, 'tanh'), quick_gelu: quickGelu, silu, abs,
};

const binaryRef = {
  add: (a: number, b: number) => a + b,
  sub: (a: number, b: number) => a - b,
  mul: (a: number, b: number) => a * b,
  div: (a: number, b: number) => a / b,
  pow: (a: number, b: number) => a ** b,
  maximum: (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b)),
  minimum: (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b)),
};
type BinName = keyof typeof binaryRef;
const binaryTs: Record<BinName, (a: Tensor | number, b: Tensor | number) => Tensor> = { add, sub, mul, div, pow, maximum, minimum };

/** Numpy broadcasting of flat row-major arrays. */
function broadcastRef(a: ArrayLike<number>, as: number[], b: ArrayLike<number>, bs: number[], f: (x: number, y: number) => number) {
  const n = Math.max(as.length, bs.length);
  const pa = [...Array(n - as.length).fill(1), ...as], pb = [...Array(n - bs.length).fill(1), ...bs];
  const os = pa.map((d, i) => (d === 1 ? pb[i]! : d));
  const total = os.reduce((p, q) => p * q, 1);
  const out = new Float64Array(total);
  const idxOf = (shape: number[], idx: number[]) => idx.reduce((acc, v, i) => acc * shape[i]! + (shape[i] === 1 ? 0 : v), 0);
  for (let lin = 0; lin < total; lin++) {
    const idx: number[] = [];
    let r = lin;
    for (let d = n - 1; d >= 0; d--) { idx[d] = r % os[d]!; r = Math.floor(r / os[d]!); }
    out[lin] = f(a[idxOf(pa, idx)]!, b[idxOf(pb, idx)]!);
  }
  return { shape: os, data: out };
}

const hazards = [0, -0, 1e-30, -1e-30, 1e-8, -1e-8, 0.3, -0.3, 0.62, 0.63, -0.7, 1, -1, 2.5, -3, 5, -6, 9, -9.5, 15, -15,
  30, -30, 50, -50, 87, -87, 88.5, 89, -100, -104, 500, -500, 1000, -1000, Infinity, -Infinity, NaN];
const grid = [...Array(161).keys()].map((i) => -20 + i * 0.25);
const inputs = [...hazards, ...grid];

function closeOrBothNaN(a: number, e: number, atol: number, rtol: number): boolean {
  if (Number.isNaN(e)) return Number.isNaN(a);
  if (!Number.isFinite(e)) return a === e;
  return Math.abs(a - e) <= atol + rtol * Math.abs(e);
}

// ---- forward ---------------------------------------------------------------------------

for (const dtype of ['float64', 'float32'] as const) {
  test(`unary ops match float64 references with numeric hazards (${dtype})`, (t) => {
    const x = tensor(inputs, undefined, { dtype });
    const xs = x.toArray();  // rounded to the dtype
    // float32 kernels: within a few ulp; the far tails of gelu use a 1e-7-relative erfc
    const [atol, rtol] = dtype === 'float64' ? [1e-300, 1e-13] : [1e-37, 2e-6];
    for (const op of unaryOps) {
      const y = unaryTs[op](x).toArray();
      let bad = '';
      xs.forEach((v, i) => {
        let e = unaryRef[op](v);
        if (dtype === 'float32') e = Math.fround(e);
        // an argument rounded inside the kernel (u, 1.702x) is amplified by exp in the tails
        const eps = dtype === 'float64' ? 2.2e-16 : 1.2e-7;
        const arg = op === 'gelu_tanh' ? 1.6 * (v + 0.044715 * v ** 3) : op === 'quick_gelu' ? 1.702 * v : 0;
        const tailTol = (op === 'gelu' && v < -5 ? 1e-4 : 0) + (Number.isFinite(arg) ? 4 * eps * Math.abs(arg) : 0);
        if (!closeOrBothNaN(y[i]!, e, atol, rtol + tailTol) && !bad) bad = `${op}(${v}) = ${y[i]} expected ${e}`;
      });
      t.is(bad, '', bad);
    }
  });

  test(`binary ops broadcast [3,1,4] with [2,1] and match references (${dtype})`, (t) => {
    const av = [...Array(12).keys()].map((i) => 0.5 + i * 0.37), bv = [1.25, -0.75];
    const a = tensor(av, [3, 1, 4], { dtype }), b = tensor(bv, [2, 1], { dtype });
    const bpos = tensor([1.25, 0.75], [2, 1], { dtype });
    for (const op of Object.keys(binaryRef) as BinName[]) {
      const bb = op === 'pow' ? bpos : b;
      const out = binaryTs[op](a, bb);
      const ref = broadcastRef(a.toArray(), [3, 1, 4], bb.toArray(), [2, 1], binaryRef[op]);
      t.deepEqual([...out.shape], ref.shape);
      assertClose(t, out.toArray(), ref.data, 1e-12, dtype === 'float64' ? 1e-14 : 1e-6, op);
      // and the other way round
      const rev = binaryTs[op](bb, a);
      const rref = broadcastRef(bb.toArray(), [2, 1], a.toArray(), [3, 1, 4], binaryRef[op]);
      assertClose(t, rev.toArray(), rref.data, 1e-12, dtype === 'float64' ? 1e-14 : 1e-6, `${op} reversed`);
    }
  });
}

test('binary ops take scalar operands on either side', (t) => {
  const x = tensor([0.5, 1.5, -2, 4], undefined, { dtype: 'float64' });
  const xv = [...x.toArray()];
  const cases: [string, Tensor, number[]][] = [
    ['x + 2', add(x, 2), xv.map((v) => v + 2)],
    ['2 + x', add(2, x), xv.map((v) => v + 2)],
    ['x - 2', sub(x, 2), xv.map((v) => v - 2)],
    ['2 - x', sub(2, x), xv.map((v) => 2 - v)],
    ['x * 3', mul(x, 3), xv.map((v) => v * 3)],
    ['3 * x', mul(3, x), xv.map((v) => v * 3)],
    ['x / 3', div(x, 3), xv.map((v) => v / 3)],
    ['3 / x', div(3, x), xv.map((v) => 3 / v)],
    ['x ** 2', pow(x, 2), xv.map((v) => v ** 2)],
    ['x ** 3', pow(x, 3), xv.map((v) => v ** 3)],
    ['x ** -1', pow(x, -1), xv.map((v) => 1 / v)],
    ['x ** 0', pow(x, 0), xv.map(() => 1)],
    ['x ** 1.7', pow(x, 1.7), xv.map((v) => v ** 1.7)],
    ['2 ** x', pow(2, x), xv.map((v) => 2 ** v)],
    ['max(x, 1)', maximum(x, 1), xv.map((v) => Math.max(v, 1))],
    ['min(1, x)', minimum(1, x), xv.map((v) => Math.min(v, 1))],
    ['scale(x, -0.5)', scale(x, -0.5), xv.map((v) => -0.5 * v)],
  ];
  for (const [label, y, e] of cases) {
    t.is(y.dtype, 'float64', label);
    assertClose(t, y.toArray(), e, 1e-14, 1e-14, label);
  }
  // x / 3 is a true division, not x * (1/3)
  t.deepEqual([...div(x, 3).toArray()], xv.map((v) => v / 3));
  // sqrt(-1) and pow(-1, 0.5) are NaN; x ** 0.5 is sqrt
  const q = tensor([4, 2, -1], undefined, { dtype: 'float64' });
  const s = pow(q, 0.5).toArray();
  t.is(s[0], 2);
  t.is(s[1], Math.sqrt(2));
  t.true(Number.isNaN(s[2]!));
});

test('strided inputs: transposed, sliced with a step and broadcast (stride-0) views', (t) => {
  noGrad(() => {
    const base = tensor([...Array(24).keys()].map((i) => i * 0.1 - 1), [4, 6], { dtype: 'float64' });
    const bv = [...base.toArray()];
    const tr = transpose(base);  // [6, 4], strides [1, 6]
    const trRef = [...Array(24).keys()].map((i) => bv[(i % 4) * 6 + Math.floor(i / 4)]!);
    assertClose(t, exp(tr).toArray(), trRef.map(Math.exp), 1e-15, 1e-14, 'exp transposed');
    const sl = slice(base, 1, 1, 6, 2);  // [4, 3], columns 1, 3, 5
    const slRef = [0, 1, 2, 3].flatMap((r) => [1, 3, 5].map((c) => bv[r * 6 + c]!));
    assertClose(t, tanh(sl).toArray(), slRef.map(Math.tanh), 1e-15, 1e-14, 'tanh sliced');
    // binary with a transposed and a sliced operand
    const other = tensor([...Array(12).keys()].map((i) => i + 1), [3, 4], { dtype: 'float64' });
    const trSl = transpose(sl);  // [3, 4] with strides [2, 6]
    const ref = [0, 1, 2].flatMap((c) => [0, 1, 2, 3].map((r) => slRef[r * 3 + c]! * (c * 4 + r + 1)));
    assertClose(t, mul(trSl, other).toArray(), ref, 1e-15, 1e-14, 'mul strided');
    assertClose(t, mul(other, trSl).toArray(), ref, 1e-15, 1e-14, 'mul strided reversed');
    // stride-0 broadcast view as an operand
    const row = tensor([1, 2, 3, 4], [1, 4], { dtype: 'float64' });
    const bc = wrap(native.view(row.handle, [3, 4], [0, 1], 0));
    assertClose(t, sub(other, bc).toArray(), [...Array(12).keys()].map((i) => i + 1 - (i % 4 + 1)), 0, 0, 'stride-0');
  });
});

test('size-1 dims, 0-d tensors and empty tensors', (t) => {
  const s = tensor(2.5, undefined, { dtype: 'float64' });
  const y = mul(s, s);
  t.deepEqual([...y.shape], []);
  t.is(y.item(), 6.25);
  const a = tensor([1, 2, 3], [1, 3, 1], { dtype: 'float64' });
  const b = tensor([10, 20], [2, 1, 1, 1], { dtype: 'float64' });
  const c = add(a, b);
  t.deepEqual([...c.shape], [2, 1, 3, 1]);
  t.deepEqual([...c.toArray()], [11, 12, 13, 21, 22, 23]);
  const e = full([0, 3], 1, { dtype: 'float64' });
  const f = add(e, tensor([1, 2, 3], undefined, { dtype: 'float64' }));
  t.deepEqual([...f.shape], [0, 3]);
  t.is(f.toArray().length, 0);
  t.deepEqual([...exp(e).shape], [0, 3]);
  t.deepEqual([...add(full([2, 0], 1), full([1, 1], 2)).shape], [2, 0]);
});

test('numeric hazards: stable sigmoid/silu, log(0) = -inf, NaN propagates (both dtypes)', (t) => {
  for (const dtype of ['float32', 'float64'] as const) {
    const x = tensor([1000, -1000, 0, NaN, -Infinity, Infinity], undefined, { dtype });
    const sg = sigmoid(x).toArray();
    t.deepEqual([...sg.slice(0, 3)], [1, 0, 0.5], dtype);
    t.true(Number.isNaN(sg[3]!));
    const sl = silu(x).toArray();
    t.is(sl[0], 1000);
    t.true(Object.is(sl[1], -0), `silu(-1000) = ${sl[1]}`);
    t.true(Object.is(sl[4], -0), `silu(-inf) = ${sl[4]}`);
    t.is(sl[5], Infinity);
    const th = tanh(x).toArray();
    t.deepEqual([th[0], th[1], th[4], th[5]], [1, -1, -1, 1]);
    const lg = log(tensor([0, -1, 1, Infinity], undefined, { dtype })).toArray();
    t.is(lg[0], -Infinity);
    t.true(Number.isNaN(lg[1]!));
    t.is(lg[2], 0);
    t.is(lg[3], Infinity);
    const ex = exp(tensor([1000, -1000, 88, -87], undefined, { dtype })).toArray();
    t.is(ex[0], Infinity);
    t.is(ex[1], 0);
    t.true(Number.isFinite(ex[2]!) && ex[3]! > 0, dtype);
    const gl = gelu(tensor([-Infinity, Infinity, -40], undefined, { dtype })).toArray();
    t.true(Object.is(gl[0], -0) && gl[1] === Infinity && Object.is(gl[2], -0), `${gl}`);
    // relative accuracy in the tails (tiny but not flushed)
    const tail = tensor([-80, -30], undefined, { dtype });
    assertClose(t, sigmoid(tail).toArray(), [-80, -30].map((v) => Math.fround(sig(v))), 0, 1e-5, `sigmoid tail ${dtype}`);
    assertClose(t, silu(tail).toArray(), [-80, -30].map((v) => Math.fround(v * sig(v))), 0, 1e-5, `silu tail ${dtype}`);
    assertClose(t, gelu(tensor([-8, -6], undefined, { dtype })).toArray(), [-8, -6].map(unaryRef.gelu), 0, 1e-4, `gelu tail ${dtype}`);
    const mx = maximum(tensor([NaN, 1], undefined, { dtype }), tensor([0, NaN], undefined, { dtype })).toArray();
    t.true(Number.isNaN(mx[0]!) && Number.isNaN(mx[1]!));
  }
});

test('float32 sigmoid / silu / quick_gelu: contiguous runs (AVX-512 kernels where the CPU has them) and strided runs agree on hazards and every tail length', (t) => {
  // Row r of a [n, 2] tensor's column 0 is strided (scalar path); the same values contiguous take the vector path.
  const vals = [...hazards, ...grid.slice(0, 41)];
  for (const n of [1, 5, 15, 16, 17, 33, vals.length]) {
    const v = vals.slice(0, n);
    const flat = tensor(v, undefined, { dtype: 'float32' });
    const pairs = tensor(v.flatMap((x) => [x, 0]), [n, 2], { dtype: 'float32' });
    const col = select(pairs, 1, 0);
    const g = tensor(v.map((_, i) => 0.5 + (i % 7) * 0.25), undefined, { dtype: 'float32' });
    for (const op of ['sigmoid', 'silu', 'quick_gelu'] as UnaryOp[]) {
      const a = native.toArray(native.unary(op, flat.handle)), b = native.toArray(native.unary(op, col.handle));
      let bad = '';
      v.forEach((x, i) => { if (!closeOrBothNaN(a[i]!, b[i]!, 1e-37, 3e-7) && !bad) bad = `${op}(${x}): ${a[i]} vs ${b[i]}`; });
      t.is(bad, '', `n=${n} ${bad}`);
      t.true(v.every((x, i) => x !== -Infinity || op === 'sigmoid' || Object.is(a[i], -0)), `${op}(-inf) = -0`);
      if (op === 'sigmoid') continue;
      const da = native.toArray(native.unaryBackward(op, flat.handle, flat.handle, g.handle));
      const db = native.toArray(native.unaryBackward(op, col.handle, col.handle, g.handle));
      v.forEach((x, i) => { if (!closeOrBothNaN(da[i]!, db[i]!, 1e-30, 3e-7) && !bad) bad = `${op}'(${x}): ${da[i]} vs ${db[i]}`; });
      t.is(bad, '', `n=${n} backward ${bad}`);
    }
  }
});

test('float32 kernels agree with float64 on random inputs (contiguous and strided)', (t) => {
  const x64 = randn([64, 33], { dtype: 'float64', std: 4, seed: 7 });
  const x32 = wrap(native.cast(x64.handle, 'float32'));
  const pos64 = wrap(native.unary('abs', x64.handle)), pos32 = wrap(native.cast(pos64.handle, 'float32'));
  for (const op of unaryOps) {
    const [a, b] = op === 'log' || op === 'sqrt' ? [pos32, pos64] : [x32, x64];
    for (const strided of [false, true]) {
      const a2 = strided ? transpose(a) : a, b2 = strided ? transpose(b) : b;
      const y32 = unaryTs[op](a2).toArray(), y64 = unaryTs[op](b2).toArray();
      assertClose(t, y32, y64, 1e-6, 2e-6, `${op}${strided ? ' strided' : ''}`);
      // gradients too, through the native backward
      const g64 = randn([...b2.shape], { dtype: 'float64', seed: 3 });
      const g32 = wrap(native.cast(g64.handle, 'float32'));
      const y32t = wrap(native.unary(op, a2.handle)), y64t = wrap(native.unary(op, b2.handle));
      assertClose(t, native.toArray(native.unaryBackward(op, a2.handle, y32t.handle, g32.handle)),
        native.toArray(native.unaryBackward(op, b2.handle, y64t.handle, g64.handle)), 1e-5, 1e-5, `${op} backward`);
    }
  }
  const y64 = randn([33], { dtype: 'float64', seed: 9 }), y32 = wrap(native.cast(y64.handle, 'float32'));
  for (const op of ['add', 'sub', 'mul', 'div', 'maximum', 'minimum'] as const)
    assertClose(t, binaryTs[op](x32, y32).toArray(), binaryTs[op](x64, y64).toArray(), 1e-5, 1e-5, op);
  assertClose(t, pow(pos32, y32).toArray(), pow(pos64, y64).toArray(), 1e-5, 1e-4, 'pow');
});

// ---- gradients ---------------------------------------------------------------------------

function leaf(shape: number[], seed: number, lo = -2, hi = 2): Tensor {
  return rand(shape, { dtype: 'float64', low: lo, high: hi, seed }).requiresGrad_();
}

/** A non-contiguous float64 leaf: the transpose of a [cols, rows] tensor. */
function transposedLeaf(rows: number, cols: number, seed: number, lo = -2, hi = 2): Tensor {
  return noGrad(() => transpose(rand([cols, rows], { dtype: 'float64', low: lo, high: hi, seed }))).requiresGrad_();
}

test('gradcheck: every unary op (contiguous, transposed and size-1 leaves)', (t) => {
  for (const op of unaryOps) {
    const positive = op === 'log' || op === 'sqrt';
    const [lo, hi] = positive ? [0.2, 3] : [-3, 3];
    // keep relu/abs away from their kink at 0
    const away = (x: Tensor) => (op === 'relu' || op === 'abs' ? noGrad(() => {
      const v = [...x.toArray()].map((u) => (Math.abs(u) < 0.1 ? u + 0.3 : u));
      native.copy(x.handle, tensor(v, [...x.shape], { dtype: 'float64' }).handle);
      return x;
    }) : x);
    for (const x of [leaf([2, 3], 11, lo, hi), transposedLeaf(3, 2, 12, lo, hi), leaf([1, 4, 1], 13, lo, hi)])
      assertGradcheck(t, (u) => unaryTs[op](u), [away(x)], {}, op);
  }
  // tails: large |x| where the stable forms matter
  const big = tensor([-30, -12, 12, 30], undefined, { dtype: 'float64' }).requiresGrad_();
  for (const op of ['sigmoid', 'silu', 'quick_gelu', 'gelu', 'gelu_tanh', 'tanh'] as UnaryOp[])
    assertGradcheck(t, (u) => unaryTs[op](u), [big], {}, `${op} tails`);
});

test('gradcheck: binary ops with broadcasting [3,1,4] x [2,1]', (t) => {
  for (const op of Object.keys(binaryRef) as BinName[]) {
    const a = op === 'pow' ? leaf([3, 1, 4], 21, 0.5, 2) : leaf([3, 1, 4], 21);
    // keep b away from 0 for div and from a for maximum/minimum
    const b = op === 'div' || op === 'pow' ? leaf([2, 1], 22, 0.5, 2) : op === 'maximum' || op === 'minimum' ? noGrad(() =>
      tensor([2.5, -2.5], [2, 1], { dtype: 'float64' })).requiresGrad_() : leaf([2, 1], 22);
    assertGradcheck(t, (u, v) => binaryTs[op](u, v), [a, b], {}, op);
    assertGradcheck(t, (u, v) => binaryTs[op](u, v), [b, op === 'pow' ? leaf([3, 1, 4], 23, -1, 1) : a], {}, `${op} reversed`);
  }
  // maximum/minimum where each side wins somewhere
  const p = leaf([3, 4], 31), q = leaf([4], 32);
  noGrad(() => {
    const pv = p.toArray(), qv = q.toArray();
    let minGap = Infinity;
    pv.forEach((v, i) => { minGap = Math.min(minGap, Math.abs(v - qv[i % 4]!)); });
    t.true(minGap > 1e-4, 'no near-ties in the random draw');
  });
  assertGradcheck(t, maximum, [p, q], {}, 'maximum mixed');
  assertGradcheck(t, minimum, [p, q], {}, 'minimum mixed');
});

test('gradcheck: strided leaves, scalar operands, the same tensor twice', (t) => {
  const a = transposedLeaf(4, 4, 41), b = noGrad(() => slice(rand([4, 8], { dtype: 'float64', seed: 42, low: 0.5, high: 2 }), 1, 0, 8, 2)).requiresGrad_();
  t.false(a.isContiguous);
  t.false(b.isContiguous);
  assertGradcheck(t, (u, v) => mul(u, v), [a, b], {}, 'mul strided');
  assertGradcheck(t, (u, v) => div(u, v), [a, b], {}, 'div strided');
  assertGradcheck(t, (u, v) => add(u, v), [a, b], {}, 'add strided');
  const x = leaf([2, 3], 43, 0.5, 2);
  const scalarCases: [string, (u: Tensor) => Tensor][] = [
    ['x + 2', (u) => add(u, 2)], ['2 + x', (u) => add(2, u)], ['x - 2', (u) => sub(u, 2)], ['2 - x', (u) => sub(2, u)],
    ['x * 3', (u) => mul(u, 3)], ['3 * x', (u) => mul(3, u)], ['x / 3', (u) => div(u, 3)], ['3 / x', (u) => div(3, u)],
    ['x ** 2.5', (u) => pow(u, 2.5)], ['x ** 2', (u) => pow(u, 2)], ['x ** 3', (u) => pow(u, 3)], ['x ** 0.5', (u) => pow(u, 0.5)],
    ['x ** -1', (u) => pow(u, -1)], ['x ** 0', (u) => pow(u, 0)], ['2 ** x', (u) => pow(2, u)],
    ['max(x, 1.1)', (u) => maximum(u, 1.1)], ['min(1.1, x)', (u) => minimum(1.1, u)], ['scale', (u) => scale(u, -1.5)],
    ['x + x', (u) => add(u, u)], ['x * x', (u) => mul(u, u)], ['x - x', (u) => sub(u, u)], ['x / x', (u) => div(u, u)],
  ];
  for (const [label, f] of scalarCases) assertGradcheck(t, f, [x], {}, label);
});

test('maximum / minimum split the gradient evenly at ties (like torch)', (t) => {
  const a = tensor([1, 2, 3], undefined, { dtype: 'float64', requiresGrad: true });
  const b = tensor([1, 5, 0], undefined, { dtype: 'float64', requiresGrad: true });
  sum(maximum(a, b)).backward();
  t.deepEqual([...a.grad!.toArray()], [0.5, 0, 1]);
  t.deepEqual([...b.grad!.toArray()], [0.5, 1, 0]);
  a.grad = null;
  b.grad = null;
  sum(minimum(a, b)).backward();
  t.deepEqual([...a.grad!.toArray()], [0.5, 1, 0]);
  t.deepEqual([...b.grad!.toArray()], [0.5, 0, 1]);
});

test('relu / abs have zero gradient at 0; add gives each broadcast input the summed gradient', (t) => {
  const x = tensor([-1, 0, 2], undefined, { dtype: 'float64', requiresGrad: true });
  sum(add(relu(x), abs(x))).backward();
  t.deepEqual([...x.grad!.toArray()], [-1, 0, 2]);
  const a = tensor([1, 2, 3], [3, 1], { dtype: 'float64', requiresGrad: true });
  const b = tensor([1, 2, 3, 4], [4], { dtype: 'float64', requiresGrad: true });
  sum(add(a, b)).backward();
  t.deepEqual([...a.grad!.toArray()], [4, 4, 4]);
  t.deepEqual([...b.grad!.toArray()], [3, 3, 3, 3]);
});

// ---- in-place helpers, determinism, memory ----------------------------------------------

test('native affine, axpy and scaleInPlace', (t) => {
  for (const dtype of ['float32', 'float64'] as const) {
    const x = tensor([1, -2, 3, 4, 5, 6], [2, 3], { dtype });
    t.deepEqual([...native.toArray(native.affine(x.handle, 2, -1))], [1, -5, 5, 7, 9, 11]);
    const dst = tensor([1, 1, 1, 1, 1, 1], [3, 2], { dtype });
    native.axpy(dst.handle, transpose(x).handle, 0.5);  // strided src
    t.deepEqual([...dst.toArray()], [1.5, 3, 0, 3.5, 2.5, 4]);
    native.scaleInPlace(dst.handle, -2);
    t.deepEqual([...dst.toArray()], [-3, -6, -0, -7, -5, -8]);
  }
});

test('results are identical with 1 and 2 threads', (t) => {
  const before = native.getNumThreads();
  try {
    const x = randn([300, 257], { seed: 5, std: 3 });
    const y = randn([257], { seed: 6 });
    const run = () => tidy(() => [gelu(x), silu(x), exp(x), add(x, y), mul(x, y)].map((r) => r.toArray()));
    native.setNumThreads(1);
    const one = run();
    native.setNumThreads(2);
    const two = run();
    one.forEach((r, i) => t.deepEqual(r, two[i]));
  } finally {
    native.setNumThreads(before);
  }
});

test('backward frees its intermediates: only the leaf gradients stay allocated', (t) => {
  const a = leaf([64, 1], 51), b = leaf([1, 32], 52, 0.5, 2);
  const l = sum(add(maximum(mul(a, b), div(a, b)), sub(pow(b, a), mul(2, a))));
  const before = native.memory().cpu.liveBytes;
  l.backward();
  const grown = native.memory().cpu.liveBytes - before;
  // a garbage collection during backward can only lower this
  t.true(grown <= (64 + 32) * 8, `live bytes grew by ${grown}`);
  t.truthy(a.grad && b.grad);
});

// ---- bad input ------------------------------------------------------------------------

test('bad input raises TypeError / RangeError naming op and argument (child process)', (t) => {
  const nativeUrl = pathToFileURL(join(process.cwd(), 'ts', 'native.ts')).href;
  const pre = `const { native } = await import(${JSON.stringify(nativeUrl)}); const x = vlm.ones([2, 3]); const d = vlm.ones([2, 3], { dtype: 'float64' });`;
  const cases: [string, string][] = [
    ['dtype mismatch', `${pre} vlm.add(x, d)`],
    ['no broadcast', `${pre} vlm.mul(x, vlm.ones([4]))`],
    ['disposed', `${pre} const z = vlm.ones([2]); z.dispose(); vlm.exp(z)`],
    ['disposed operand', `${pre} const z = vlm.ones([3]); z.dispose(); vlm.add(x, z)`],
    ['number for tensor', `${pre} vlm.exp(5)`],
    ['two numbers', `${pre} vlm.add(1, 2)`],
    ['string operand', `${pre} vlm.sub(x, 'a')`],
    ['int32 tensor', `${pre} vlm.relu(vlm.tensor([1, 2], undefined, { dtype: 'int32' }))`],
    ['NaN scale', `${pre} vlm.scale(x, NaN)`],
    ['NaN pow', `${pre} vlm.pow(x, NaN)`],
    ['Infinity add', `${pre} vlm.add(x, Infinity)`],
    ['gelu approximate', `${pre} vlm.gelu(x, 'fast')`],
    ['native unknown unary', `${pre} native.unary('cosh', x.handle)`],
    ['native unknown binary', `${pre} native.binary('mod', x.handle, x.handle)`],
    ['native op not a string', `${pre} native.unary(3, x.handle)`],
    ['native b not a tensor', `${pre} native.binary('add', x.handle, 'str')`],
    ['native dtype mismatch', `${pre} native.binary('add', x.handle, d.handle)`],
    ['native no broadcast', `${pre} native.binary('add', x.handle, vlm.ones([5]).handle)`],
    ['native affine NaN', `${pre} native.affine(x.handle, NaN, 0)`],
    ['native affine string', `${pre} native.affine(x.handle, 1, '0')`],
    ['native backward shape', `${pre} native.unaryBackward('exp', x.handle, x.handle, vlm.ones([3, 2]).handle)`],
    ['native axpy strided dst', `${pre} native.axpy(vlm.transpose(x).handle, vlm.ones([3, 2]).handle, 1)`],
    ['native axpy shape', `${pre} native.axpy(x.handle, vlm.ones([3]).handle, 1)`],
    ['native scaleInPlace Infinity', `${pre} native.scaleInPlace(x.handle, Infinity)`],
    ['native disposed', `${pre} const z = vlm.ones([2]); const h = z.handle; z.dispose(); native.unary('exp', h)`],
    ['native missing args', `${pre} native.binary('add')`],
  ];
  const { result, errors } = errorsInChild(cases);
  t.is(result.status, 0, result.stderr);
  const expect: Record<string, [string, RegExp]> = {
    'dtype mismatch': ['TypeError', /^add: expected a float32 tensor \(the dtype of a\) for b but received a float64 tensor$/],
    'no broadcast': ['RangeError', /^mul: expected a shape that broadcasts with \[2, 3\] \(the shape of a\) for b but received \[4\]$/],
    'disposed': ['TypeError', /^exp: expected a live tensor for x but received a disposed tensor$/],
    'disposed operand': ['TypeError', /^add: expected a live tensor for b but received a disposed tensor$/],
    'number for tensor': ['TypeError', /^exp: expected a tensor for x but received the number 5$/],
    'two numbers': ['TypeError', /^add: expected a tensor for a or b but received the number 1 and the number 2$/],
    'string operand': ['TypeError', /^sub: expected a tensor or a number for b but received the string 'a'$/],
    'int32 tensor': ['TypeError', /^relu: expected a float32 or float64 tensor for x but received an int32 tensor$/],
    'NaN scale': ['RangeError', /^scale: expected a finite number for c but received the number NaN$/],
    'NaN pow': ['RangeError', /^pow: expected a finite number for p but received the number NaN$/],
    'Infinity add': ['RangeError', /^add: expected a finite number for b but received the number Infinity$/],
    'gelu approximate': ['TypeError', /^gelu: expected 'none' or 'tanh' for approximate but received the string 'fast'$/],
    'native unknown unary': ['TypeError', /^unary: expected one of 'neg', .*'abs' for op but received the string 'cosh'$/],
    'native unknown binary': ['TypeError', /^binary: expected one of 'add', .*'minimum' for op but received the string 'mod'$/],
    'native op not a string': ['TypeError', /^unary: expected one of .* for op but received the number 3$/],
    'native b not a tensor': ['TypeError', /^binary: expected a tensor for b but received the string 'str'$/],
    'native dtype mismatch': ['TypeError', /^binary: expected a float32 tensor \(the dtype of a\) for b but received a float64 tensor$/],
    'native no broadcast': ['RangeError', /^binary: expected a shape that broadcasts with \[2, 3\] \(the shape of a\) for b but received shape \[5\]$/],
    'native affine NaN': ['RangeError', /^affine: expected a finite number for alpha but received the number nan$/i],
    'native affine string': ['TypeError', /^affine: expected a number for beta but received the string '0'$/],
    'native backward shape': ['RangeError', /^unaryBackward: expected shape \[2, 3\] for gy but received shape \[3, 2\]$/],
    'native axpy strided dst': ['TypeError', /^axpy: expected a contiguous tensor for dst/],
    'native axpy shape': ['RangeError', /^axpy: expected shape \[2, 3\] for src but received shape \[3\]$/],
    'native scaleInPlace Infinity': ['RangeError', /^scaleInPlace: expected a finite number for s but received the number (inf|Infinity)$/],
    'native disposed': ['TypeError', /^unary: expected a live tensor for x but received a disposed tensor$/],
    'native missing args': ['TypeError', /^binary: expected a tensor for a but received undefined$/],
  };
  for (const [label, [name, re]] of Object.entries(expect)) {
    const e = errors[label];
    t.truthy(e, `${label}: no result`);
    if (!e) continue;
    t.is(e.name, name, `${label}: ${e.message}`);
    t.regex(e.message, re, label);
  }
});

test('reshape of a broadcast result keeps values (sanity for later ops)', (t) => {
  const a = tensor([1, 2, 3], [3, 1], { dtype: 'float64' });
  const b = tensor([10, 20], [2], { dtype: 'float64' });
  t.deepEqual([...reshape(add(a, b), [6]).toArray()], [11, 21, 12, 22, 13, 23]);
});
