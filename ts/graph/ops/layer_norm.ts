// layer_norm family: layer normalisation over the trailing dims (native/ops/layer_norm.h).
// The forward returns y and keeps the per-row mean and rstd for the backward, which
// gives dx, dweight and dbias in one native pass (dweight/dbias in a fixed order).
import { native, type NativeTensor } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe, aTensor } from '../creation.js';

function stridesOf(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= Math.max(shape[i]!, 1);
  }
  return st;
}

/** A fresh contiguous handle viewed as `shape` (same element count); the raw handle is released. */
function reshaped(h: NativeTensor, shape: number[]): Tensor {
  const v = native.view(h, shape, stridesOf(shape), 0);
  h.dispose();
  return wrap(v);
}

function checkParam(name: string, p: unknown, x: Tensor, ns: number[]): Tensor | null {
  if (p === undefined || p === null) return null;
  if (!(p instanceof Tensor)) throw new TypeError(`layerNorm: expected a tensor or null for ${name} but received ${describe(p)}`);
  if (p.dtype !== x.dtype) throw new TypeError(`layerNorm: expected ${aTensor(x.dtype)} (the dtype of x) for ${name} but received ${aTensor(p.dtype)}`);
  if (p.ndim !== ns.length || p.shape.some((d, i) => d !== ns[i]))
    throw new RangeError(`layerNorm: expected shape [${ns.join(', ')}] (normalizedShape) for ${name} but received shape [${p.shape.join(', ')}]`);
  return p;
}

/**
 * Layer normalisation over the trailing dims given by `normalizedShape`:
 * y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance (as
 * torch.nn.functional.layer_norm). weight and bias, when given, have shape normalizedShape.
 */
export function layerNorm(x: Tensor, normalizedShape: readonly number[] | number, weight?: Tensor | null,
  bias?: Tensor | null, eps = 1e-5): Tensor {
  const op = 'layerNorm';
  if (!(x instanceof Tensor)) throw new TypeError(`${op}: expected a tensor for x but received ${describe(x)}`);
  if (x.dtype !== 'float32' && x.dtype !== 'float64')
    throw new TypeError(`${op}: expected a float32 or float64 tensor for x but received ${x.dtype === 'int32' ? 'an' : 'a'} ${x.dtype} tensor`);
  const ns = typeof normalizedShape === 'number' ? [normalizedShape] : Array.isArray(normalizedShape) ? [...normalizedShape] : null;
  if (ns === null || ns.length === 0 || ns.some((d) => !Number.isInteger(d) || d < 1))
    throw new RangeError(`${op}: expected a positive integer or a non-empty array of them for normalizedShape but received ${describe(normalizedShape)}`);
  const lead = x.ndim - ns.length;
  if (lead < 0 || ns.some((d, i) => d !== x.shape[lead + i]))
    throw new RangeError(`${op}: expected a tensor whose trailing dims are [${ns.join(', ')}] for x but received shape [${x.shape.join(', ')}]`);
  const w = checkParam('weight', weight, x, ns);
  const b = checkParam('bias', bias, x, ns);
  if (typeof eps !== 'number') throw new TypeError(`${op}: expected a number for eps but received ${describe(eps)}`);
  if (!Number.isFinite(eps) || eps < 0) throw new RangeError(`${op}: expected a finite non-negative number for eps but received ${describe(eps)}`);
  const size = ns.reduce((p, d) => p * d, 1);

  const r = native.layerNorm(x.handle, w?.handle ?? null, b?.handle ?? null, size, eps);
  const y = wrap(r.y), mean = wrap(r.mean), rstd = wrap(r.rstd);
  const inputs = [x];
  if (w) inputs.push(w);
  if (b) inputs.push(b);
  const wi = w ? 1 : -1, bi = b ? (w ? 2 : 1) : -1;
  record(y, op, inputs, (g, needs, into) => {
    const params = (wi >= 0 && needs[wi]!) || (bi >= 0 && needs[bi]!);
    const acc = needs[0] ? into[0] ?? null : null;  // dx added into x's pending gradient
    const gr = native.layerNormBackward(x.handle, w?.handle ?? null, mean.handle, rstd.handle, g.handle, size, params, acc?.handle ?? null);
    const grads: (Tensor | null)[] = [acc ?? (needs[0] ? wrap(gr.dx!) : (gr.dx!.dispose(), null))];
    const dw = gr.dweight, db = gr.dbias;
    if (wi >= 0) grads.push(needs[wi] && dw ? reshaped(dw, ns) : (dw?.dispose(), null));
    else dw?.dispose();
    if (bi >= 0) grads.push(needs[bi] && db ? reshaped(db, ns) : (db?.dispose(), null));
    else db?.dispose();
    return grads;
  });
  if (y._node === null) {  // nothing will run the backward: free the statistics now
    mean.dispose();
    rstd.dispose();
  }
  return y;
}
