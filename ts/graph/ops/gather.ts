// gather family: indexSelect, gather (torch.gather) and embedding, with int32 indices
// (native/ops/gather.h). Every index is checked natively before any kernel runs; a bad
// one is a RangeError naming its position. The backward is an index-add / scatter-add
// that is deterministic (no atomics; each destination sums in index order).
import { native, type NativeTensor } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { aTensor } from '../creation.js';
import { normAxis } from './views.js';
import { checkTensor } from '../check.js';

function checkIndex(op: string, name: string, index: unknown): asserts index is Tensor {
  checkTensor(op, name, index);
  if (index.dtype !== 'int32') throw new TypeError(`${op}: expected an int32 tensor for ${name} but received ${aTensor(index.dtype)}`);
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

/** h's values viewed as `shape` (same count): a view when h is contiguous, else a copy. Always a new handle. */
function reshapeHandle(h: NativeTensor, shape: number[]): NativeTensor {
  if (h.contiguous) return native.view(h, shape, stridesOf(shape), h.offset);
  const c = native.contiguous(h);
  const v = native.view(c, shape, stridesOf(shape), 0);
  c.dispose();
  return v;
}

/** x's entries at positions `index` (int32, 1-D) along `axis` (torch.index_select). */
export function indexSelect(x: Tensor, axis: number, index: Tensor): Tensor {
  const op = 'indexSelect';
  checkTensor(op, 'x', x);
  const a = normAxis(op, axis, x.ndim);
  checkIndex(op, 'index', index);
  if (index.ndim !== 1) throw new RangeError(`${op}: expected a 1-D tensor for index but received shape [${index.shape.join(', ')}]`);
  const out = wrap(native.indexSelect(x.handle, a, index.handle));
  return record(out, op, [x], (g) => [wrap(native.indexAdd([...x.shape], a, index.handle, g.handle))]);
}

/**
 * out[p] = x[p with coordinate `axis` replaced by index[p]] (torch.gather): index is
 * int32 of x's rank, no larger than x outside `axis`; the result has index's shape.
 */
export function gather(x: Tensor, axis: number, index: Tensor): Tensor {
  const op = 'gather';
  checkTensor(op, 'x', x);
  const a = normAxis(op, axis, x.ndim);
  checkIndex(op, 'index', index);
  if (index.ndim !== x.ndim)
    throw new RangeError(`${op}: expected a tensor of rank ${x.ndim} (the rank of x) for index but received shape [${index.shape.join(', ')}]`);
  const out = wrap(native.gather(x.handle, a, index.handle));
  return record(out, op, [x], (g) => [wrap(native.scatterAdd([...x.shape], a, index.handle, g.handle))]);
}

/**
 * Rows of weight [V, dim] at `ids` (int32, any shape): the result is [...ids.shape, dim].
 * The gradient is an index-add into a [V, dim] gradient. An id outside [0, V) is a
 * RangeError naming its position in ids.
 */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  const op = 'embedding';
  checkTensor(op, 'weight', weight);
  if (weight.ndim !== 2) throw new RangeError(`${op}: expected a 2-D tensor [V, dim] for weight but received shape [${weight.shape.join(', ')}]`);
  checkIndex(op, 'ids', ids);
  const [V, dim] = weight.shape as [number, number];
  const n = ids.size;
  const flatH = ids.ndim === 1 ? null : reshapeHandle(ids.handle, [n]);
  const flat = flatH ?? ids.handle;
  let rows: NativeTensor;
  try {
    rows = native.indexSelect(weight.handle, 0, flat);
  } catch (e) {
    flatH?.dispose();
    const m = e instanceof RangeError && /^indexSelect: expected indices in \[0, (\d+)\) for index but received (-?\d+) at position (\d+)$/.exec(e.message);
    if (!m) throw e;
    let p = Number(m[3]);
    let at = String(p);
    if (ids.ndim > 1) {
      const idx = new Array<number>(ids.ndim);
      for (let d = ids.ndim - 1; d >= 0; d--) { idx[d] = p % ids.shape[d]!; p = Math.floor(p / ids.shape[d]!); }
      at = `[${idx.join(', ')}]`;
    }
    throw new RangeError(`${op}: expected ids in [0, ${m[1]}) for ids but received ${m[2]} at position ${at}`);
  }
  const outShape = [...ids.shape, dim];
  const out = wrap(native.view(rows, outShape, stridesOf(outShape), 0));
  rows.dispose();
  const saved = flatH ? wrap(flatH) : ids;  // tracked by the enclosing scope like any tensor
  record(out, op, [weight], (g) => {
    const g2 = reshapeHandle(g.handle, [n, dim]);
    const gw = wrap(native.indexAdd([V, dim], 0, saved.handle, g2));
    g2.dispose();
    return [gw];
  });
  if (out._node === null && saved !== ids) saved.dispose();
  return out;
}
