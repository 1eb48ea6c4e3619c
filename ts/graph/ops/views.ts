// Shape ops. Most are views (no copy) built from strides; their backward maps the
// gradient back through the inverse view. concat copies; split and slice are views.
import { native } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe, aTensor } from '../creation.js';
import { sumTo } from './reduce.js';
import { sameShape, checkTensor } from '../check.js';

export function normAxis(op: string, axis: number, rank: number, name = 'axis'): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank)
    throw new RangeError(`${op}: expected an integer in [${-rank}, ${rank}) for ${name} but received ${describe(axis)}`);
  return axis < 0 ? axis + rank : axis;
}

function resolveShape(op: string, shape: readonly number[], numel: number): number[] {
  if (!Array.isArray(shape)) throw new TypeError(`${op}: expected an array of sizes for shape but received ${describe(shape)}`);
  let infer = -1;
  let known = 1;
  const out = shape.map((d, i) => {
    if (d === -1) {
      if (infer >= 0) throw new RangeError(`${op}: expected at most one -1 in shape but received [${shape.join(', ')}]`);
      infer = i;
      return -1;
    }
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`${op}: expected non-negative integer sizes in shape but received [${shape.join(', ')}]`);
    known *= d;
    return d;
  });
  if (infer >= 0) {
    if (known === 0 || numel % known !== 0)
      throw new RangeError(`${op}: cannot infer -1 in shape [${shape.join(', ')}] for ${numel} elements`);
    out[infer] = numel / known;
  } else if (known !== numel) {
    throw new RangeError(`${op}: expected a shape of ${numel} elements but received [${shape.join(', ')}] (${known} elements)`);
  }
  return out;
}

function stridesOf(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= Math.max(shape[i]!, 1);
  }
  return st;
}

function viewOf(x: Tensor, shape: number[], strides: number[], offset: number): Tensor {
  return wrap(native.view(x.handle, shape, strides, offset));
}

/** A contiguous tensor with x's values: x itself when already contiguous. */
export function contiguous(x: Tensor): Tensor {
  checkTensor('contiguous', 'x', x);
  if (x.isContiguous) return x;
  const out = wrap(native.contiguous(x.handle));
  return record(out, 'contiguous', [x], (g) => [g]);
}

/** Same data, new shape (one size may be -1); copies only when x is not contiguous. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  checkTensor('reshape', 'x', x);
  const sh = resolveShape('reshape', shape, x.size);
  if (sameShape(sh, x.shape)) return x;
  const src = x.isContiguous ? x.handle : native.contiguous(x.handle);
  const out = wrap(native.view(src, sh, stridesOf(sh), src === x.handle ? x.handle.offset : 0));
  if (src !== x.handle) src.dispose();
  return record(out, 'reshape', [x], (g) => [reshape(g, x.shape)]);
}

/** Like reshape but never copies: x must be contiguous. */
export function view(x: Tensor, shape: readonly number[]): Tensor {
  checkTensor('view', 'x', x);
  if (!x.isContiguous) throw new TypeError('view: expected a contiguous tensor for x but received a strided view (use reshape)');
  return reshape(x, shape);
}

export function flatten(x: Tensor, startAxis = 0, endAxis = -1): Tensor {
  if (x.ndim === 0) return reshape(x, [1]);
  const s = normAxis('flatten', startAxis, x.ndim, 'startAxis');
  const e = normAxis('flatten', endAxis, x.ndim, 'endAxis');
  if (e < s) throw new RangeError(`flatten: expected endAxis >= startAxis but received ${startAxis}, ${endAxis}`);
  const mid = x.shape.slice(s, e + 1).reduce((a, b) => a * b, 1);
  return reshape(x, [...x.shape.slice(0, s), mid, ...x.shape.slice(e + 1)]);
}

/** Reorders axes (a view). */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  checkTensor('permute', 'x', x);
  if (!Array.isArray(dims) || dims.length !== x.ndim)
    throw new RangeError(`permute: expected a permutation of ${x.ndim} axes for dims but received ${describe(dims)}`);
  const d = dims.map((a) => normAxis('permute', a, x.ndim, 'dims'));
  if (new Set(d).size !== d.length) throw new RangeError(`permute: expected each axis once in dims but received [${dims.join(', ')}]`);
  const st = x.strides;
  const out = viewOf(x, d.map((i) => x.shape[i]!), d.map((i) => st[i]!), x.handle.offset);
  const inv = new Array<number>(d.length);
  d.forEach((p, i) => { inv[p] = i; });
  return record(out, 'permute', [x], (g) => [permute(g, inv)]);
}

export function transpose(x: Tensor, axis0 = -2, axis1 = -1): Tensor {
  checkTensor('transpose', 'x', x);
  const a = normAxis('transpose', axis0, x.ndim, 'axis0'), b = normAxis('transpose', axis1, x.ndim, 'axis1');
  const dims = [...Array(x.ndim).keys()];
  dims[a] = b;
  dims[b] = a;
  return permute(x, dims);
}

export function unsqueeze(x: Tensor, axis: number): Tensor {
  checkTensor('unsqueeze', 'x', x);
  const a = normAxis('unsqueeze', axis, x.ndim + 1);
  const sh = [...x.shape];
  sh.splice(a, 0, 1);
  const st = x.strides;
  st.splice(a, 0, a < x.ndim ? st[a]! * x.shape[a]! : 1);
  const out = viewOf(x, sh, st, x.handle.offset);
  return record(out, 'unsqueeze', [x], (g) => [reshape(g, x.shape)]);
}

export function squeeze(x: Tensor, axis?: number): Tensor {
  checkTensor('squeeze', 'x', x);
  const keep = x.shape.map((d, i) => (axis === undefined ? d !== 1 : i !== normAxis('squeeze', axis, x.ndim) || d !== 1));
  const out = viewOf(x, x.shape.filter((_, i) => keep[i]), x.strides.filter((_, i) => keep[i]), x.handle.offset);
  return record(out, 'squeeze', [x], (g) => [reshape(g, x.shape)]);
}

/** Broadcasts size-1 axes (and new leading axes) to `shape` without copying; -1 keeps a size. */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  checkTensor('expand', 'x', x);
  if (!Array.isArray(shape) || shape.length < x.ndim)
    throw new RangeError(`expand: expected a shape of at least ${x.ndim} axes but received ${describe(shape)}`);
  const lead = shape.length - x.ndim;
  const st = x.strides;
  const outShape: number[] = [];
  const outStrides: number[] = [];
  shape.forEach((d, i) => {
    const j = i - lead;
    const have = j >= 0 ? x.shape[j]! : 1;
    const want = d === -1 && j >= 0 ? have : d;
    if (!Number.isInteger(want) || want < 0 || (have !== 1 && have !== want))
      throw new RangeError(`expand: cannot expand shape [${x.shape.join(', ')}] to [${shape.join(', ')}]`);
    outShape.push(want);
    outStrides.push(j >= 0 && have === want ? st[j]! : 0);
  });
  if (sameShape(outShape, x.shape)) return x;
  const out = viewOf(x, outShape, outStrides, x.handle.offset);
  return record(out, 'expand', [x], (g) => [sumTo(g, x.shape)]);
}

/** x[start:end:step] along one axis (a view). Negative start/end count from the end. */
export function slice(x: Tensor, axis: number, start: number, end?: number, step = 1): Tensor {
  checkTensor('slice', 'x', x);
  const a = normAxis('slice', axis, x.ndim);
  const n = x.shape[a]!;
  if (!Number.isInteger(step) || step <= 0) throw new RangeError(`slice: expected a positive integer for step but received ${describe(step)}`);
  const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
  if (!Number.isInteger(start) || (end !== undefined && !Number.isInteger(end)))
    throw new TypeError(`slice: expected integers for start and end but received ${describe(start)}, ${describe(end)}`);
  const s = clamp(start), e = Math.max(clamp(end ?? n), s);
  const len = Math.ceil((e - s) / step);
  const st = x.strides;
  const sh = [...x.shape];
  sh[a] = len;
  const outSt = [...st];
  outSt[a] = st[a]! * step;
  const out = viewOf(x, sh, outSt, x.handle.offset + (len > 0 ? s * st[a]! : 0));
  return record(out, 'slice', [x], (g) => {
    const gx = wrap(native.full([...x.shape], 0, g.dtype, g.device));
    if (len > 0) {
      const gst = stridesOf(x.shape);
      const dstSt = [...gst];
      dstSt[a] = gst[a]! * step;
      const dst = native.view(gx.handle, sh, dstSt, s * gst[a]!);
      native.copy(dst, g.handle);
      dst.dispose();
    }
    return [gx];
  });
}

/** x[..., index, ...]: drops the axis (a view). */
export function select(x: Tensor, axis: number, index: number): Tensor {
  const a = normAxis('select', axis, x.ndim);
  const n = x.shape[a]!;
  if (!Number.isInteger(index) || index < -n || index >= n)
    throw new RangeError(`select: expected an index in [${-n}, ${n}) for index but received ${describe(index)}`);
  const i = index < 0 ? index + n : index;
  return squeeze(slice(x, a, i, i + 1), a);
}

/** Joins tensors of equal shape but for `axis` (a copy). */
export function concat(tensors: readonly Tensor[], axis = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0)
    throw new RangeError(`concat: expected a non-empty array of tensors but received ${describe(tensors)}`);
  tensors.forEach((t, i) => checkTensor('concat', `tensors[${i}]`, t));
  const first = tensors[0]!;
  const a = normAxis('concat', axis, first.ndim);
  let total = 0;
  tensors.forEach((t, i) => {
    if (t.ndim !== first.ndim || t.shape.some((d: number, j: number) => j !== a && d !== first.shape[j]))
      throw new RangeError(`concat: expected tensors[${i}] to match [${first.shape.join(', ')}] except on axis ${a} but received [${t.shape.join(', ')}]`);
    if (t.dtype !== first.dtype) throw new TypeError(`concat: expected ${aTensor(first.dtype)} for tensors[${i}] but received ${aTensor(t.dtype)}`);
    total += t.shape[a]!;
  });
  const sh = [...first.shape];
  sh[a] = total;
  const out = wrap(native.empty(sh, first.dtype, first.device));
  const st = stridesOf(sh);
  let at = 0;
  for (const t of tensors) {
    const part = [...sh];
    part[a] = t.shape[a]!;
    const dst = native.view(out.handle, part, st, at * st[a]!);
    native.copy(dst, t.handle);
    dst.dispose();
    at += t.shape[a]!;
  }
  return record(out, 'concat', [...tensors], (g) => {
    let from = 0;
    return tensors.map((t) => {
      const gi = slice(g, a, from, from + t.shape[a]!);
      from += t.shape[a]!;
      return gi;
    });
  });
}

/** Stacks equal-shaped tensors along a new axis. */
export function stack(tensors: readonly Tensor[], axis = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0)
    throw new RangeError(`stack: expected a non-empty array of tensors but received ${describe(tensors)}`);
  const a = normAxis('stack', axis, tensors[0]!.ndim + 1);
  return concat(tensors.map((t) => unsqueeze(t, a)), a);
}

/** Splits along axis into pieces of `sizes` (an array) or of equal size `sizes` (the last may be smaller); views. */
export function split(x: Tensor, sizes: number | readonly number[], axis = 0): Tensor[] {
  checkTensor('split', 'x', x);
  const a = normAxis('split', axis, x.ndim);
  const n = x.shape[a]!;
  let parts: number[];
  if (typeof sizes === 'number') {
    if (!Number.isInteger(sizes) || sizes <= 0) throw new RangeError(`split: expected a positive integer size but received ${describe(sizes)}`);
    parts = [];
    for (let i = 0; i < n; i += sizes) parts.push(Math.min(sizes, n - i));
  } else {
    parts = [...sizes];
    if (parts.some((p) => !Number.isInteger(p) || p < 0) || parts.reduce((s, p) => s + p, 0) !== n)
      throw new RangeError(`split: expected non-negative sizes summing to ${n} but received [${parts.join(', ')}]`);
  }
  let from = 0;
  return parts.map((p) => {
    const t = slice(x, a, from, from + p);
    from += p;
    return t;
  });
}
