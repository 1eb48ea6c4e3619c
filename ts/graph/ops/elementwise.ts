// Elementwise ops (native elementwise family): unary activations whose backward is the
// native unaryBackward, broadcasting binary arithmetic (numpy rules; the backward sums
// each gradient back to its input's shape with sumTo), and scalar forms. A number may
// stand for either operand of a binary op; it takes the tensor operand's dtype.
import { native, type BinaryOp, type UnaryOp } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe, aTensor } from '../creation.js';
import { sumTo } from './reduce.js';
import { checkFloat } from '../check.js';

export type Operand = Tensor | number;

function checkFinite(op: string, name: string, v: unknown): number {
  if (typeof v !== 'number') throw new TypeError(`${op}: expected a number for ${name} but received ${describe(v)}`);
  if (!Number.isFinite(v)) throw new RangeError(`${op}: expected a finite number for ${name} but received ${describe(v)}`);
  return v;
}

/** A new handle on g's storage: two inputs never receive the same gradient object. */
function alias(g: Tensor): Tensor {
  return wrap(native.view(g.handle, [...g.shape], g.strides, g.handle.offset));
}

/** sumTo(t, shape), disposing t when a new tensor was made from it. */
function reduceTo(t: Tensor, shape: readonly number[]): Tensor {
  const r = sumTo(t, shape);
  if (r !== t) t.dispose();
  return r;
}

// ---- unary ---------------------------------------------------------------------------

// Ops whose backward reads y = op(x) rather than x.
const usesY = new Set<UnaryOp>(['exp', 'sqrt', 'tanh', 'sigmoid']);

function unaryOp(name: string, op: UnaryOp, x: Tensor): Tensor {
  checkFloat(name, 'x', x);
  const out = wrap(native.unary(op, x.handle));
  return record(out, name, [x], (g) => [
    wrap(native.unaryBackward(op, x.handle, usesY.has(op) ? out.handle : x.handle, g.handle)),
  ]);
}

export const neg = (x: Tensor): Tensor => unaryOp('neg', 'neg', x);
export const exp = (x: Tensor): Tensor => unaryOp('exp', 'exp', x);
/** Natural log; log(0) = -inf, log(x < 0) = NaN. */
export const log = (x: Tensor): Tensor => unaryOp('log', 'log', x);
export const sqrt = (x: Tensor): Tensor => unaryOp('sqrt', 'sqrt', x);
export const tanh = (x: Tensor): Tensor => unaryOp('tanh', 'tanh', x);
export const sigmoid = (x: Tensor): Tensor => unaryOp('sigmoid', 'sigmoid', x);
/** max(x, 0); the gradient at 0 is 0. */
export const relu = (x: Tensor): Tensor => unaryOp('relu', 'relu', x);
/** x * sigmoid(1.702 x) (CLIP's activation). */
export const quickGelu = (x: Tensor): Tensor => unaryOp('quickGelu', 'quick_gelu', x);
/** x * sigmoid(x). */
export const silu = (x: Tensor): Tensor => unaryOp('silu', 'silu', x);
/** |x|; the gradient at 0 is 0. */
export const abs = (x: Tensor): Tensor => unaryOp('abs', 'abs', x);

/** x Phi(x) with the exact normal CDF (approximate 'none'), or the tanh approximation. */
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  if (approximate !== 'none' && approximate !== 'tanh')
    throw new TypeError(`gelu: expected 'none' or 'tanh' for approximate but received ${describe(approximate)}`);
  return unaryOp('gelu', approximate === 'none' ? 'gelu' : 'gelu_tanh', x);
}

/** c * x for a finite number c. */
export function scale(x: Tensor, c: number): Tensor {
  checkFloat('scale', 'x', x);
  checkFinite('scale', 'c', c);
  const out = wrap(native.affine(x.handle, c, 0));
  return record(out, 'scale', [x], (g) => [wrap(native.affine(g.handle, c, 0))]);
}

// ---- binary --------------------------------------------------------------------------

function broadcastShape(a: readonly number[], b: readonly number[]): number[] | null {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[i - (n - a.length)] ?? 1, db = b[i - (n - b.length)] ?? 1;
    if (da !== db && da !== 1 && db !== 1) return null;
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Checks the operands and turns a number into a 0-d tensor like the other operand (made: true). */
function operands(op: string, a: unknown, b: unknown, [na, nb]: [string, string]): [Tensor, Tensor, boolean] {
  const aNum = typeof a === 'number', bNum = typeof b === 'number';
  if (aNum && bNum) throw new TypeError(`${op}: expected a tensor for ${na} or ${nb} but received ${describe(a)} and ${describe(b)}`);
  if (!aNum && !(a instanceof Tensor)) throw new TypeError(`${op}: expected a tensor or a number for ${na} but received ${describe(a)}`);
  if (!bNum && !(b instanceof Tensor)) throw new TypeError(`${op}: expected a tensor or a number for ${nb} but received ${describe(b)}`);
  if (!aNum) checkFloat(op, na, a);
  if (!bNum) checkFloat(op, nb, b);
  if (aNum) {
    const bt = b as Tensor;
    return [wrap(native.full([], checkFinite(op, na, a), bt.dtype, bt.device)), bt, true];
  }
  const at = a as Tensor;
  if (bNum) return [at, wrap(native.full([], checkFinite(op, nb, b), at.dtype, at.device)), true];
  const bt = b as Tensor;
  if (bt.dtype !== at.dtype) throw new TypeError(`${op}: expected ${aTensor(at.dtype)} (the dtype of ${na}) for ${nb} but received ${aTensor(bt.dtype)}`);
  if (bt.device !== at.device) throw new TypeError(`${op}: expected a ${at.device} tensor (the device of ${na}) for ${nb} but received a ${bt.device} tensor`);
  if (broadcastShape(at.shape, bt.shape) === null)
    throw new RangeError(`${op}: expected a shape that broadcasts with [${at.shape.join(', ')}] (the shape of ${na}) for ${nb} but received [${bt.shape.join(', ')}]`);
  return [at, bt, false];
}

type BinaryGrad = (g: Tensor, a: Tensor, b: Tensor, out: Tensor, needs: boolean[]) => [Tensor | null, Tensor | null];

function binaryOp(name: string, op: BinaryOp, a: unknown, b: unknown, grad: BinaryGrad, names: [string, string] = ['a', 'b']): Tensor {
  const [A, B, made] = operands(name, a, b, names);
  const out = wrap(native.binary(op, A.handle, B.handle));
  record(out, name, [A, B], (g, needs) => grad(g, A, B, out, needs));
  // a scalar operand made here is only kept when the graph needs it
  if (made && out._node === null) (typeof a === 'number' ? A : B).dispose();
  return out;
}

const bin = (op: BinaryOp, x: Tensor, y: Tensor): Tensor => wrap(native.binary(op, x.handle, y.handle));

/** bin(op, x, y), disposing x (an intermediate). */
function binThen(op: BinaryOp, x: Tensor, y: Tensor): Tensor {
  const r = bin(op, x, y);
  x.dispose();
  return r;
}

function affineOf(x: Tensor, alpha: number, beta: number): Tensor {
  return wrap(native.affine(x.handle, alpha, beta));
}

/** a + b (broadcast). */
export function add(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number' && a instanceof Tensor) return shift('add', a, 'a', 1, checkFinite('add', 'b', b));
  if (typeof a === 'number' && b instanceof Tensor) return shift('add', b, 'b', 1, checkFinite('add', 'a', a));
  return binaryOp('add', 'add', a, b, (g, A, B, _o, needs) => {
    const ga = needs[0] ? sumTo(g, A.shape) : null;
    let gb = needs[1] ? sumTo(g, B.shape) : null;
    if (gb !== null && gb === ga) gb = alias(gb);
    return [ga, gb];
  });
}

/** a - b (broadcast). */
export function sub(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number' && a instanceof Tensor) return shift('sub', a, 'a', 1, -checkFinite('sub', 'b', b));
  if (typeof a === 'number' && b instanceof Tensor) return shift('sub', b, 'b', -1, checkFinite('sub', 'a', a));
  return binaryOp('sub', 'sub', a, b, (g, A, B, _o, needs) => [
    needs[0] ? sumTo(g, A.shape) : null,
    needs[1] ? reduceTo(affineOf(g, -1, 0), B.shape) : null,
  ]);
}

/** alpha * x + beta for a tensor x (argument `name`) and a checked scalar operand: add/sub/mul with a number. */
function shift(op: string, x: Tensor, name: string, alpha: number, beta: number): Tensor {
  checkFloat(op, name, x);
  const out = wrap(native.affine(x.handle, alpha, beta));
  return record(out, op, [x], (g) => [alpha === 1 ? g : affineOf(g, alpha, 0)]);
}

/** a * b (broadcast). */
export function mul(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number' && a instanceof Tensor) return shift('mul', a, 'a', checkFinite('mul', 'b', b), 0);
  if (typeof a === 'number' && b instanceof Tensor) return shift('mul', b, 'b', checkFinite('mul', 'a', a), 0);
  return binaryOp('mul', 'mul', a, b, (g, A, B, _o, needs) => [
    needs[0] ? reduceTo(bin('mul', g, B), A.shape) : null,
    needs[1] ? reduceTo(bin('mul', g, A), B.shape) : null,
  ]);
}

/** a / b (broadcast). */
export function div(a: Operand, b: Operand): Tensor {
  return binaryOp('div', 'div', a, b, (g, A, B, out, needs) => [
    needs[0] ? reduceTo(bin('div', g, B), A.shape) : null,
    // d(a/b)/db = -(a/b) / b
    needs[1] ? reduceTo(affineOfThen(binThen('div', bin('mul', g, out), B), -1), B.shape) : null,
  ]);
}

function affineOfThen(x: Tensor, alpha: number): Tensor {
  const r = affineOf(x, alpha, 0);
  x.dispose();
  return r;
}

/**
 * x ** p. A number p uses the native scalar power (exact for 0, 1, 2, 3, 0.5, -0.5, -1);
 * a tensor p broadcasts. The gradient w.r.t. a tensor exponent is g * x^p * log(x),
 * NaN where x <= 0.
 */
export function pow(x: Operand, p: Operand): Tensor {
  if (typeof p === 'number' && x instanceof Tensor) {
    checkFloat('pow', 'x', x);
    checkFinite('pow', 'p', p);
    const out = wrap(native.powScalar(x.handle, p));
    return record(out, 'pow', [x], (g) => [wrap(native.powScalarBackward(x.handle, p, g.handle))]);
  }
  return binaryOp('pow', 'pow', x, p, (g, A, B, out, needs) => {
    let ga: Tensor | null = null, gb: Tensor | null = null;
    if (needs[0]) {
      const bm1 = affineOf(B, 1, -1);
      const pw = bin('pow', A, bm1);
      bm1.dispose();
      ga = reduceTo(binThen('mul', binThen('mul', pw, B), g), A.shape);
    }
    if (needs[1]) {
      const l = wrap(native.unary('log', A.handle));
      gb = reduceTo(binThen('mul', binThen('mul', l, out), g), B.shape);
    }
    return [ga, gb];
  }, ['x', 'p']);
}

/** Masks of g where a > b and where b > a (broadcast shape). */
function orderMasks(g: Tensor, A: Tensor, B: Tensor): [Tensor, Tensor] {
  const d = bin('sub', A, B);
  const nd = affineOf(d, -1, 0);
  const gt = wrap(native.unaryBackward('relu', d.handle, d.handle, g.handle));
  const lt = wrap(native.unaryBackward('relu', nd.handle, nd.handle, g.handle));
  d.dispose();
  nd.dispose();
  return [gt, lt];
}

/** 0.5 * (g + p - q) */
function half(g: Tensor, p: Tensor, q: Tensor): Tensor {
  const s = bin('add', g, p);
  const r = binThen('sub', s, q);
  const h = affineOf(r, 0.5, 0);
  r.dispose();
  return h;
}

function extremum(name: 'maximum' | 'minimum', a: Operand, b: Operand): Tensor {
  // The larger (smaller) operand gets the gradient; ties split it evenly, like torch.
  return binaryOp(name, name, a, b, (g, A, B, _o, needs) => {
    const [gt, lt] = orderMasks(g, A, B);
    const [win, lose] = name === 'maximum' ? [gt, lt] : [lt, gt];
    const ga = needs[0] ? reduceTo(half(g, win, lose), A.shape) : null;
    const gb = needs[1] ? reduceTo(half(g, lose, win), B.shape) : null;
    gt.dispose();
    lt.dispose();
    return [ga, gb];
  });
}

/** Elementwise max(a, b) (broadcast); NaN propagates. */
export const maximum = (a: Operand, b: Operand): Tensor => extremum('maximum', a, b);
/** Elementwise min(a, b) (broadcast); NaN propagates. */
export const minimum = (a: Operand, b: Operand): Tensor => extremum('minimum', a, b);
