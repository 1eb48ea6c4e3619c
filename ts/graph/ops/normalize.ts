// normalize family: L2 normalisation along an axis (native/ops/normalize.h).
import { native } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe } from '../creation.js';
import { normAxis } from './views.js';

/**
 * x / max(||x||_2, eps) along `axis` (torch.nn.functional.normalize with p = 2).
 * A zero vector gives zeros, with the finite gradient gy / eps.
 */
export function l2Normalize(x: Tensor, axis = -1, eps = 1e-12): Tensor {
  const op = 'l2Normalize';
  if (!(x instanceof Tensor)) throw new TypeError(`${op}: expected a tensor for x but received ${describe(x)}`);
  if (x.dtype !== 'float32' && x.dtype !== 'float64')
    throw new TypeError(`${op}: expected a float32 or float64 tensor for x but received ${x.dtype === 'int32' ? 'an' : 'a'} ${x.dtype} tensor`);
  const a = normAxis(op, axis, x.ndim);
  if (typeof eps !== 'number') throw new TypeError(`${op}: expected a number for eps but received ${describe(eps)}`);
  if (!Number.isFinite(eps) || eps < 0) throw new RangeError(`${op}: expected a finite non-negative number for eps but received ${describe(eps)}`);
  const y = wrap(native.l2Normalize(x.handle, a, eps));
  return record(y, op, [x], (g) => [wrap(native.l2NormalizeBackward(x.handle, y.handle, g.handle, a, eps))]);
}
