// matmul family (native/ops/matmul.h): `matmul` with torch.matmul's rules (1-D
// operands promoted then squeezed, batch dims broadcast) and `linear` (x W^T + b,
// the bias fused into the GEMM). Backward runs the native matmul with transpose flags,
// so no transposed copy is ever made in TypeScript; a batch that one operand
// broadcasts is summed inside a single GEMM where that operand is a plain matrix,
// else by sumTo.
import { native, type NativeTensor, type UnaryOp } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe, aTensor } from '../creation.js';
import { sumTo } from './reduce.js';
import { sameShape, shapeStr } from '../check.js';

type NT = NativeTensor;

function checkOperand(op: string, name: string, x: unknown, ref?: Tensor, refName?: string): asserts x is Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`${op}: expected a tensor for ${name} but received ${describe(x)}`);
  if (x.disposed) throw new TypeError(`${op}: expected a live tensor for ${name} but received a disposed tensor`);
  if (ref && x.device !== ref.device)
    throw new TypeError(`${op}: expected a ${ref.device} tensor (the device of ${refName}) for ${name} but received a ${x.device} tensor`);
  if (ref && x.dtype !== ref.dtype)
    throw new TypeError(`${op}: expected ${aTensor(ref.dtype)} (the dtype of ${refName}) for ${name} but received ${aTensor(x.dtype)}`);
  if (x.dtype !== 'float32' && x.dtype !== 'float64')
    throw new TypeError(`${op}: expected a float32 or float64 tensor for ${name} but received ${aTensor(x.dtype)}`);
}

function contiguousStrides(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= Math.max(shape[i]!, 1);
  }
  return st;
}

/** A view of h with a size-1 axis inserted at `axis` (any stride works for size 1). */
function unsqueezeHandle(h: NT, axis: number): NT {
  const shape = [...h.shape], strides = [...h.strides];
  shape.splice(axis, 0, 1);
  strides.splice(axis, 0, 1);
  return native.view(h, shape, strides, h.offset);
}

/**
 * h [..., C] as a 2-D [rows, C] handle: a view when the leading axes merge into one
 * stride, else a contiguous copy. Always a new handle (the caller disposes it).
 */
function rows2d(h: NT): NT {
  const d = h.shape.length, c = h.shape[d - 1]!;
  let rows = 1, rs = Math.max(c, 1), expect = -1, ok = true;
  for (let i = d - 2; i >= 0; i--) {
    const n = h.shape[i]!, s = h.strides[i]!;
    rows *= n;
    if (n === 1) continue;
    if (expect < 0) rs = s;
    else if (s !== expect) ok = false;
    expect = s * n;
  }
  if (ok) return native.view(h, [rows, c], [rs, h.strides[d - 1]!], h.offset);
  const own = native.contiguous(h);
  const v = native.view(own, [rows, c], [Math.max(c, 1), 1], 0);
  own.dispose();
  return v;
}

/** The gradient for an operand of shape `shape` from its full-batch gradient `full` (disposed here when reduced). */
function reduceTo(full: NT, shape: readonly number[]): Tensor {
  const t = wrap(full);
  if (sameShape(full.shape, shape)) return t;
  const r = sumTo(t, shape);
  t.dispose();
  return r;
}

/** t's values in `shape` (same element count): a view when t is contiguous; disposes t. */
function reshapeOwned(t: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(t.shape, shape)) return t;
  const h = t.handle;
  const c = h.contiguous ? h : native.contiguous(h);
  const v = native.view(c, [...shape], contiguousStrides(shape), c === h ? h.offset : 0);
  if (c !== h) c.dispose();
  t.dispose();
  return wrap(v);
}

/**
 * Matrix product with torch.matmul's rules: a [..., M, K] · b [..., K, N] -> [..., M, N]
 * with the batch dims broadcast; a 1-D a is a row [1, K] and a 1-D b a column [K, 1],
 * the added axis removed from the result (two 1-D operands give a scalar).
 * float32 or float64, same dtype for both; inputs may be strided views.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  checkOperand('matmul', 'a', a);
  checkOperand('matmul', 'b', b, a, 'a');
  if (a.ndim < 1) throw new RangeError(`matmul: expected a tensor of rank at least 1 for a but received shape ${shapeStr(a.shape)}`);
  if (b.ndim < 1) throw new RangeError(`matmul: expected a tensor of rank at least 1 for b but received shape ${shapeStr(b.shape)}`);
  const a1 = a.ndim === 1, b1 = b.ndim === 1;
  const K = a.shape[a.ndim - 1]!;
  const Kb = b1 ? b.shape[0]! : b.shape[b.ndim - 2]!;
  if (K !== Kb)
    throw new RangeError(`matmul: expected b with ${K} rows (the last dim of a of shape ${shapeStr(a.shape)}) for b but received shape ${shapeStr(b.shape)}`);
  const ah = a1 ? unsqueezeHandle(a.handle, 0) : a.handle;
  const bh = b1 ? unsqueezeHandle(b.handle, 1) : b.handle;
  let full: NT;
  try {
    full = native.matmul(ah, bh, false, false);
  } finally {
    if (a1) ah.dispose();
    if (b1) bh.dispose();
  }
  // Drop the axes that the 1-D promotions added.
  let outH = full;
  if (a1 || b1) {
    const shape = [...full.shape];
    if (b1) shape.pop();
    if (a1) shape.splice(shape.length - (b1 ? 1 : 2), 1);
    outH = native.view(full, shape, contiguousStrides(shape), 0);
    full.dispose();
  }
  const out = wrap(outH);
  return record(out, 'matmul', [a, b], (g, needs) => {
    // g back to [batch..., M, N]
    let gh = g.handle;
    const own: NT[] = [];
    if (a1) { gh = unsqueezeHandle(gh, gh.shape.length - (b1 ? 0 : 1)); own.push(gh); }
    if (b1) { gh = unsqueezeHandle(gh, gh.shape.length); own.push(gh); }
    const A = a1 ? unsqueezeHandle(a.handle, 0) : a.handle;
    const B = b1 ? unsqueezeHandle(b.handle, 1) : b.handle;
    if (a1) own.push(A);
    if (b1) own.push(B);
    try {
      const aShape = A.shape, bShape = B.shape;
      const batched = gh.shape.length > 2;
      let ga: Tensor | null = null, gb: Tensor | null = null;
      if (needs[0]) {
        if (batched && aShape.length === 2) {
          // a shared by every batch: ga = sum_i g_i b_i^T = G' B'^T with G' [M, batch*N], B' [K, batch*N]
          const n = gh.shape.length;
          const perm = [n - 2, ...Array.from({ length: n - 2 }, (_, i) => i), n - 1];
          const gp = native.view(gh, perm.map((i) => gh.shape[i]!), perm.map((i) => gh.strides[i]!), gh.offset);
          const bx = native.view(B, gh.shape.slice(0, n - 2).concat(bShape.slice(-2)),
            bcastStrides(B, gh.shape.slice(0, n - 2)), B.offset);  // b expanded to the full batch
          const bp = native.view(bx, perm.map((i) => bx.shape[i]!), perm.map((i) => bx.strides[i]!), bx.offset);
          const g2 = rows2dT(gp), b2 = rows2dT(bp);
          ga = wrap(native.matmul(g2, b2, false, true));
          for (const h of [gp, bx, bp, g2, b2]) h.dispose();
        } else {
          ga = reduceTo(native.matmul(gh, B, false, true), aShape);
        }
        if (a1) ga = reshapeOwned(ga, a.shape);
      }
      if (needs[1]) {
        if (batched && bShape.length === 2) {
          // b shared by every batch: gb = sum_i a_i^T g_i = A_rows^T G_rows, one GEMM over all rows
          const n = gh.shape.length;
          const ax = native.view(A, gh.shape.slice(0, n - 2).concat(aShape.slice(-2)),
            bcastStrides(A, gh.shape.slice(0, n - 2)), A.offset);
          const a2 = rows2d(ax), g2 = rows2d(gh);
          gb = wrap(native.matmul(a2, g2, true, false));
          for (const h of [ax, a2, g2]) h.dispose();
        } else {
          gb = reduceTo(native.matmul(A, gh, true, false), bShape);
        }
        if (b1) gb = reshapeOwned(gb, b.shape);
      }
      return [ga, gb];
    } finally {
      for (const h of own) h.dispose();
    }
  });
}

/** Strides of h [..., R, C] expanded to batch shape `batch` (broadcast axes get stride 0). */
function bcastStrides(h: NT, batch: number[]): number[] {
  const hb = h.shape.length - 2, lead = batch.length - hb;
  const st = batch.map((_, i) => (i >= lead && h.shape[i - lead] !== 1 ? h.strides[i - lead]! : 0));
  return st.concat(h.strides.slice(-2));
}

/** h [R, ..., C] as a 2-D [R, rest] handle (copied contiguous unless it already is). */
function rows2dT(h: NT): NT {
  const r = h.shape[0]!, rest = h.shape.slice(1).reduce((p, d) => p * d, 1);
  const own = h.contiguous ? null : native.contiguous(h);
  const src = own ?? h;
  const v = native.view(src, [r, rest], [Math.max(rest, 1), 1], own ? 0 : h.offset);
  own?.dispose();
  return v;
}

/** Checks linear's operands (op names the caller in errors); returns the output features. */
function checkLinear(op: string, x: Tensor, weight: Tensor, bias: Tensor | null | undefined): number {
  checkOperand(op, 'x', x);
  checkOperand(op, 'weight', weight, x, 'x');
  if (x.ndim < 1) throw new RangeError(`${op}: expected a tensor of rank at least 1 for x but received shape ${shapeStr(x.shape)}`);
  if (weight.ndim !== 2) throw new RangeError(`${op}: expected a tensor of rank 2 for weight but received shape ${shapeStr(weight.shape)}`);
  const inF = x.shape[x.ndim - 1]!, outF = weight.shape[0]!;
  if (weight.shape[1] !== inF)
    throw new RangeError(`${op}: expected a shape [out, ${inF}] (in = the last dim of x of shape ${shapeStr(x.shape)}) for weight but received shape ${shapeStr(weight.shape)}`);
  if (bias !== undefined && bias !== null) {
    checkOperand(op, 'bias', bias, x, 'x');
    if (bias.ndim !== 1 || bias.shape[0] !== outF)
      throw new RangeError(`${op}: expected shape [${outF}] for bias but received shape ${shapeStr(bias.shape)}`);
  }
  return outF;
}

/**
 * y = x W^T + b, as torch.nn.functional.linear: x [..., in], weight [out, in],
 * bias [out] (optional) -> [..., out]. One GEMM with the bias fused; backward is one
 * GEMM each for dx and dweight (all leading dims of x flattened into rows).
 * `residual` ([..., out], optional) is added to the result in the same pass
 * (residual + x W^T + b, a transformer's skip connection without a separate add).
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, residual?: Tensor | null): Tensor {
  const outF = checkLinear('linear', x, weight, bias);
  const hasBias = bias !== undefined && bias !== null;
  const hasRes = residual !== undefined && residual !== null;
  if (hasRes) {
    checkOperand('linear', 'residual', residual, x, 'x');
    const ys = [...x.shape.slice(0, -1), outF];
    if (!sameShape(residual.shape, ys))
      throw new RangeError(`linear: expected shape ${shapeStr(ys)} (the output's) for residual but received shape ${shapeStr(residual.shape)}`);
  }
  const out = wrap(native.linear(x.handle, weight.handle, hasBias ? bias.handle : null, hasRes ? residual.handle : null));
  const inputs = hasBias ? [x, weight, bias] : [x, weight];
  if (hasRes) inputs.push(residual);
  return record(out, 'linear', inputs, (g, needs, into) => {
    const acc = needs[0] ? into[0] ?? null : null;  // dx added into x's pending gradient
    const r = native.linearBackward(x.handle, weight.handle, g.handle, needs[0]!, needs[1]!, hasBias && needs[2]!, acc?.handle ?? null);
    const grads = [acc ?? (r.dx ? wrap(r.dx) : null), r.dweight ? wrap(r.dweight) : null];
    if (hasBias) grads.push(r.dbias ? wrap(r.dbias) : null);
    // d residual = g, as a new handle (two inputs never receive the same gradient object)
    if (hasRes) grads.push(needs[grads.length] ? wrap(native.view(g.handle, [...g.shape], g.strides, g.handle.offset)) : null);
    return grads;
  });
}

const ACTS = new Set<UnaryOp>(['gelu', 'gelu_tanh', 'quick_gelu', 'silu', 'relu']);

/**
 * act(x W^T + b) for an activation act ('gelu', 'gelu_tanh', 'quick_gelu', 'silu' or
 * 'relu'): linear then the activation as one node, which keeps the pre-activation for its
 * backward. A sigmoid-gated act (QuickGELU, SiLU) is applied to each row chunk of the
 * GEMM's output while it is in L2 (float32, AVX-512), saving a pass over the result.
 */
export function linearActivation(x: Tensor, weight: Tensor, bias: Tensor | null | undefined, act: UnaryOp): Tensor {
  checkLinear('linearActivation', x, weight, bias);
  if (!ACTS.has(act))
    throw new TypeError(`linearActivation: expected one of ${[...ACTS].map((a) => `'${a}'`).join(', ')} for act but received ${describe(act)}`);
  const hasBias = bias !== undefined && bias !== null;
  const r = native.linearActivation(x.handle, weight.handle, hasBias ? bias.handle : null, act);
  const pre = wrap(r.pre), out = wrap(r.out);
  const inputs = hasBias ? [x, weight, bias] : [x, weight];
  record(out, 'linearActivation', inputs, (g, needs, into) => {
    const dpre = native.unaryBackward(act, pre.handle, pre.handle, g.handle);
    const acc = needs[0] ? into[0] ?? null : null;  // dx added into x's pending gradient
    const rr = native.linearBackward(x.handle, weight.handle, dpre, needs[0]!, needs[1]!, hasBias && needs[2]!, acc?.handle ?? null);
    dpre.dispose();
    const grads = [acc ?? (rr.dx ? wrap(rr.dx) : null), rr.dweight ? wrap(rr.dweight) : null];
    if (hasBias) grads.push(rr.dbias ? wrap(rr.dbias) : null);
    return grads;
  });
  if (out._node === null) pre.dispose();  // nothing will run the backward
  return out;
}
