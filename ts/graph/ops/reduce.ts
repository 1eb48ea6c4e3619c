// Reductions: sum / mean / max over axes (native reduce family, fixed summation order),
// sumTo (a broadcast gradient summed back to an input's shape) and sumSquares.
import { native } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe } from '../creation.js';
import { checkFloat } from '../check.js';

/** Sorted, distinct, non-negative axes; undefined or [] means every axis. */
function reduceAxes(op: string, axis: number | readonly number[] | undefined, rank: number): number[] {
  if (axis === undefined) return [...Array(rank).keys()];
  const list = typeof axis === 'number' ? [axis] : axis;
  if (!Array.isArray(list)) throw new TypeError(`${op}: expected an integer or an array of integers for axis but received ${describe(axis)}`);
  if (list.length === 0) return [...Array(rank).keys()];
  const out = list.map((a) => {
    if (typeof a !== 'number' || !Number.isInteger(a))
      throw new TypeError(`${op}: expected an integer or an array of integers for axis but received ${describe(a)}`);
    if (a < -rank || a >= rank) throw new RangeError(`${op}: expected an axis in [${-rank}, ${rank}) for axis but received ${a}`);
    return a < 0 ? a + rank : a;
  });
  out.sort((p, q) => p - q);
  for (let i = 1; i < out.length; i++)
    if (out[i] === out[i - 1]) throw new RangeError(`${op}: expected distinct axes for axis but received [${list.join(', ')}]`);
  return out;
}

function checkKeepdim(op: string, keepdim: unknown): boolean {
  if (typeof keepdim !== 'boolean') throw new TypeError(`${op}: expected a boolean for keepdim but received ${describe(keepdim)}`);
  return keepdim;
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

/** A stride-0 view of g (the reduced result, either keepdim form) broadcast back to `shape`. */
function expandBack(g: Tensor, shape: readonly number[], axes: readonly number[], keepdim: boolean): Tensor {
  const gst = g.strides;
  const st: number[] = [];
  let j = 0;
  for (let d = 0; d < shape.length; d++) {
    if (axes.includes(d)) {
      st.push(0);
      if (keepdim) j++;
    } else {
      st.push(gst[j++]!);
    }
  }
  return wrap(native.view(g.handle, [...shape], st, g.handle.offset));
}

function reduceOp(op: 'sum' | 'mean' | 'max', x: Tensor, axis: number | readonly number[] | undefined, keepdim: boolean): Tensor {
  checkFloat(op, 'x', x);
  const axes = reduceAxes(op, axis, x.ndim);
  const kd = checkKeepdim(op, keepdim);
  const emptyGroups = axes.some((a) => x.shape[a] === 0);
  const emptyOutput = x.shape.some((d, i) => d === 0 && !axes.includes(i));
  if (op === 'max' && emptyGroups && !emptyOutput)
    throw new RangeError(`max: expected non-empty reduced axes for x but received shape [${x.shape.join(', ')}]`);
  const out = wrap(native.reduce(op, x.handle, axes, kd));
  return record(out, op, [x], (g) => {
    if (op === 'max') return [wrap(native.reduceMaxBackward(x.handle, axes, kd, g.handle))];
    const e = expandBack(g, x.shape, axes, kd);
    if (op === 'sum') return [e];
    let n = 1;
    for (const a of axes) n *= x.shape[a]!;
    if (n === 0) {
      e.dispose();
      return [wrap(native.full([...x.shape], 0, x.dtype, x.device))];
    }
    const r = wrap(native.affine(e.handle, 1 / n, 0));
    e.dispose();
    return [r];
  });
}

/** Sum over `axis` (an axis, a list of axes, or all when omitted); keepdim keeps size-1 axes. */
export function sum(x: Tensor, axis?: number | readonly number[], keepdim = false): Tensor {
  return reduceOp('sum', x, axis, keepdim);
}

/** Mean over `axis` (all when omitted). The mean of an empty group is NaN. */
export function mean(x: Tensor, axis?: number | readonly number[], keepdim = false): Tensor {
  return reduceOp('mean', x, axis, keepdim);
}

/** Maximum values over `axis` (all when omitted); NaN propagates. The gradient goes to the first arg-max of each group. */
export function max(x: Tensor, axis?: number | readonly number[], keepdim = false): Tensor {
  return reduceOp('max', x, axis, keepdim);
}

/**
 * Sums g over the axes along which `shape` was broadcast to g's shape (new leading axes
 * and size-1 axes), giving a tensor of `shape`. Returns g itself when the shapes match.
 */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  checkFloat('sumTo', 'g', g);
  if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number' || !Number.isInteger(d) || d < 0))
    throw new TypeError(`sumTo: expected an array of non-negative integers for shape but received ${describe(shape)}`);
  const lead = g.ndim - shape.length;
  if (lead < 0 || shape.some((d, i) => d !== g.shape[lead + i] && d !== 1))
    throw new RangeError(`sumTo: expected a shape that broadcasts to [${g.shape.join(', ')}] for shape but received [${shape.join(', ')}]`);
  const axes: number[] = [];
  for (let i = 0; i < lead; i++) axes.push(i);
  shape.forEach((d, i) => { if (d === 1 && g.shape[lead + i] !== 1) axes.push(lead + i); });
  if (axes.length === 0) return g;  // same shape
  const r = native.reduce('sum', g.handle, axes, true);
  const out = wrap(native.view(r, [...shape], contiguousStrides(shape), 0));
  r.dispose();
  const gShape = [...g.shape];
  return record(out, 'sumTo', [g], (gy) => {
    // broadcast back: the leading axes are new, the others have size 1 in gy
    const st = gShape.map((_, d) => (d < lead || axes.includes(d) ? 0 : gy.strides[d - lead]!));
    return [wrap(native.view(gy.handle, gShape, st, gy.handle.offset))];
  });
}

/** The sum of squares of all elements, accumulated in float64 (gradient-norm clipping). */
export function sumSquares(x: Tensor): number {
  checkFloat('sumSquares', 'x', x);
  return native.sumSquares(x.handle);
}
