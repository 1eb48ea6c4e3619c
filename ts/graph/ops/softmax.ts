// softmax family: softmax and log-softmax along any axis (native/ops/softmax.h).
// Numerically stable (the lane maximum is subtracted first); the backward reads the
// saved output only. A lane that is entirely -inf gives zeros from softmax and -inf
// from logSoftmax (PyTorch gives NaN), so fully masked rows stay finite.
import { native } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe } from '../creation.js';
import { normAxis } from './views.js';

function run(op: 'softmax' | 'logSoftmax', x: Tensor, axis: number): Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`${op}: expected a tensor for x but received ${describe(x)}`);
  if (x.dtype !== 'float32' && x.dtype !== 'float64')
    throw new TypeError(`${op}: expected a float32 or float64 tensor for x but received ${x.dtype === 'int32' ? 'an' : 'a'} ${x.dtype} tensor`);
  const a = normAxis(op, axis, x.ndim);
  const log = op === 'logSoftmax';
  const y = wrap(native.softmax(x.handle, a, log));
  return record(y, op, [x], (g) => [wrap(native.softmaxBackward(y.handle, g.handle, a, log))]);
}

/** exp(x) / sum(exp(x)) along `axis` (default the last). */
export function softmax(x: Tensor, axis = -1): Tensor {
  return run('softmax', x, axis);
}

/** x - logsumexp(x) along `axis` (default the last); finite for large |x|. */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return run('logSoftmax', x, axis);
}
