// Gradient clipping by total norm (torch.nn.utils.clip_grad_norm_): the norm over all
// gradients together, accumulated in float64; grads are scaled in place when it exceeds
// maxNorm. A NaN/Inf norm is returned and the grads are left untouched (never scaled by NaN).
import { native, type NativeTensor } from '../../native.js';
import { Tensor } from '../tensor.js';
import { describe } from '../creation.js';

export interface ClipGradNormOptions {
  /** Throw a RangeError when the total norm is NaN or infinite (default false: just return it). */
  errorIfNonfinite?: boolean;
}

// A new flat, contiguous handle onto g's values (a view when g is contiguous); dispose it.
function flat(g: Tensor): NativeTensor {
  const src = g.isContiguous ? g.handle : native.contiguous(g.handle);
  const h = native.view(src, [g.size], [1], src.offset);
  if (src !== g.handle) src.dispose();
  return h;
}

// The p-norm of one gradient raised to p (p finite), or its max |g| (p = Infinity).
function partial(g: Tensor, p: number): number {
  if (g.size === 0) return 0;
  if (p === 2) return native.sumSquares(g.handle);
  const h = flat(g);
  const a = native.unary('abs', h);
  h.dispose();
  let r: NativeTensor;
  if (p === Infinity) r = native.reduce('max', a, [0], false);
  else {
    const q = native.powScalar(a, p);
    r = native.reduce('sum', q, [0], false);
    q.dispose();
  }
  a.dispose();
  const v = native.toArray(r)[0]!;
  r.dispose();
  return v;
}

/**
 * Clips the gradients of `params` (null grads skipped) so that their total normType-norm
 * is at most maxNorm; returns the total norm before clipping. normType: any p > 0 or Infinity.
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number, normType = 2, options: ClipGradNormOptions = {}): number {
  const op = 'clipGradNorm';
  if (params === null || typeof params !== 'object' || !(Symbol.iterator in params))
    throw new TypeError(`${op}: expected an array of tensors for params but received ${describe(params)}`);
  if (typeof maxNorm !== 'number' || !Number.isFinite(maxNorm) || maxNorm < 0)
    throw new RangeError(`${op}: expected a finite number >= 0 for maxNorm but received ${describe(maxNorm)}`);
  if (typeof normType !== 'number' || !(normType > 0))
    throw new RangeError(`${op}: expected a number > 0 or Infinity for normType but received ${describe(normType)}`);
  const grads: Tensor[] = [];
  let i = 0;
  for (const p of params) {
    if (!(p instanceof Tensor)) throw new TypeError(`${op}: expected a tensor for params[${i}] but received ${describe(p)}`);
    if (p.grad !== null) {
      if (p.grad.disposed) throw new TypeError(`${op}: expected a live gradient for params[${i}] but received a disposed tensor`);
      grads.push(p.grad);
    }
    i++;
  }
  let total: number;
  if (normType === Infinity) {
    total = 0;
    for (const g of grads) {
      const m = partial(g, Infinity);
      total = Number.isNaN(m) || Number.isNaN(total) ? NaN : Math.max(total, m);
    }
  } else {
    let acc = 0;
    for (const g of grads) acc += partial(g, normType);
    total = normType === 2 ? Math.sqrt(acc) : acc ** (1 / normType);
  }
  if (!Number.isFinite(total)) {
    if (options.errorIfNonfinite)
      throw new RangeError(`${op}: expected finite gradients but the total ${normType}-norm is ${total}`);
    return total;
  }
  const coef = maxNorm / (total + 1e-6);
  if (coef < 1) for (const g of grads) native.scaleInPlace(g.handle, coef);
  return total;
}
