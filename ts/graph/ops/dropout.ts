// dropout family: inverted dropout (native/ops/dropout.h). The keep-mask is a pure
// function of (seed, offset + element index) through Philox: the backward regenerates
// it, nothing is stored, and the same seed gives the same mask on any thread count.
import { native } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe, nextRandom } from '../creation.js';

export interface DropoutOptions {
  /** When false, dropout is the identity (evaluation). Default true. */
  training?: boolean;
  /** A fixed seed (offset 0); without it the counters come from the global generator (manualSeed). */
  seed?: number;
}

/**
 * Zeroes each element with probability p and scales the kept ones by 1/(1-p).
 * p = 0 or training = false returns x itself; p = 1 gives zeros.
 */
export function dropout(x: Tensor, p: number, options: DropoutOptions = {}): Tensor {
  const op = 'dropout';
  if (!(x instanceof Tensor)) throw new TypeError(`${op}: expected a tensor for x but received ${describe(x)}`);
  if (x.dtype !== 'float32' && x.dtype !== 'float64')
    throw new TypeError(`${op}: expected a float32 or float64 tensor for x but received ${x.dtype === 'int32' ? 'an' : 'a'} ${x.dtype} tensor`);
  if (typeof p !== 'number') throw new TypeError(`${op}: expected a number for p but received ${describe(p)}`);
  if (!(p >= 0 && p <= 1)) throw new RangeError(`${op}: expected a probability in [0, 1] for p but received ${describe(p)}`);
  if (options === null || typeof options !== 'object')
    throw new TypeError(`${op}: expected an options object for options but received ${describe(options)}`);
  const training = options.training ?? true;
  if (typeof training !== 'boolean') throw new TypeError(`${op}: expected a boolean for options.training but received ${describe(training)}`);
  if (options.seed !== undefined && (!Number.isSafeInteger(options.seed) || options.seed < 0))
    throw new RangeError(`${op}: expected a non-negative safe integer for options.seed but received ${describe(options.seed)}`);
  if (!training || p === 0) return x;
  const [seed, offset] = options.seed !== undefined ? [options.seed, 0] : nextRandom(x.size);
  const y = wrap(native.dropout(x.handle, p, seed, offset));
  return record(y, op, [x], (g) => [wrap(native.dropoutBackward(g.handle, p, seed, offset))]);
}
