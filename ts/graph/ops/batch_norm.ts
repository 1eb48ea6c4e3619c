// batch_norm family: batch normalisation over the channel axis 1 of [N, C, ...]
// (native/ops/batch_norm.h), as torch.nn.functional.batch_norm. Training mode uses the
// batch statistics and updates the running buffers in place (no gradient flows through
// them); eval mode uses the running statistics. The forward keeps the mean/rstd it used
// for the backward, which gives dx, dweight and dbias in one native call.
import { native } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe, aTensor } from '../creation.js';

export interface BatchNormOptions {
  /** Batch statistics (and running-buffer updates) when true; running statistics when false (default, as torch). */
  training?: boolean;
  /** running = (1 - momentum) * running + momentum * batch; default 0.1. */
  momentum?: number;
  /** Added to the variance; default 1e-5. */
  eps?: number;
}


function channelArg(op: string, name: string, t: unknown, x: Tensor, C: number): Tensor | null {
  if (t === undefined || t === null) return null;
  if (!(t instanceof Tensor)) throw new TypeError(`${op}: expected a tensor or null for ${name} but received ${describe(t)}`);
  if (t.disposed) throw new TypeError(`${op}: expected a live tensor for ${name} but received a disposed tensor`);
  if (t.dtype !== x.dtype) throw new TypeError(`${op}: expected ${aTensor(x.dtype)} (the dtype of x) for ${name} but received ${aTensor(t.dtype)}`);
  if (t.device !== x.device) throw new TypeError(`${op}: expected a ${x.device} tensor (the device of x) for ${name} but received a ${t.device} tensor`);
  if (t.ndim !== 1 || t.shape[0] !== C) throw new RangeError(`${op}: expected shape [${C}] for ${name} but received shape [${t.shape.join(', ')}]`);
  return t;
}

/**
 * y = (x - mean) / sqrt(var + eps) * weight + bias per channel of x [N, C, ...].
 * Training: mean/var of the batch (biased var), and runningMean/runningVar (when given)
 * become (1 - momentum) * running + momentum * batch, with the unbiased variance.
 * Eval: runningMean/runningVar are required and used.
 */
export function batchNorm(x: Tensor, runningMean: Tensor | null | undefined, runningVar: Tensor | null | undefined,
  weight?: Tensor | null, bias?: Tensor | null, options: BatchNormOptions = {}): Tensor {
  const op = 'batchNorm';
  if (!(x instanceof Tensor)) throw new TypeError(`${op}: expected a tensor for x but received ${describe(x)}`);
  if (x.disposed) throw new TypeError(`${op}: expected a live tensor for x but received a disposed tensor`);
  if (x.dtype !== 'float32' && x.dtype !== 'float64')
    throw new TypeError(`${op}: expected a float32 or float64 tensor for x but received ${aTensor(x.dtype)}`);
  if (x.ndim < 2) throw new RangeError(`${op}: expected a tensor [N, C, ...] of rank at least 2 for x but received shape [${x.shape.join(', ')}]`);
  if (options === null || typeof options !== 'object')
    throw new TypeError(`${op}: expected an options object for options but received ${describe(options)}`);
  const training = options.training ?? false;
  if (typeof training !== 'boolean') throw new TypeError(`${op}: expected a boolean for options.training but received ${describe(training)}`);
  const momentum = options.momentum ?? 0.1, eps = options.eps ?? 1e-5;
  if (typeof momentum !== 'number') throw new TypeError(`${op}: expected a number for momentum but received ${describe(momentum)}`);
  if (!(momentum >= 0 && momentum <= 1)) throw new RangeError(`${op}: expected a finite number in [0, 1] for momentum but received ${describe(momentum)}`);
  if (typeof eps !== 'number') throw new TypeError(`${op}: expected a number for eps but received ${describe(eps)}`);
  if (!Number.isFinite(eps) || eps < 0) throw new RangeError(`${op}: expected a finite non-negative number for eps but received ${describe(eps)}`);
  const C = x.shape[1]!;
  const rm = channelArg(op, 'runningMean', runningMean, x, C);
  const rv = channelArg(op, 'runningVar', runningVar, x, C);
  if (!training && (!rm || !rv))
    throw new TypeError(`${op}: expected a tensor (eval mode normalises with the running statistics) for ${rm ? 'runningVar' : 'runningMean'} but received ${describe(rm ? runningVar : runningMean)}`);
  if (!rm !== !rv)
    throw new TypeError(`${op}: expected a tensor when the other running buffer is given for ${rm ? 'runningVar' : 'runningMean'} but received ${describe(rm ? runningVar : runningMean)}`);
  if (training && x.size / Math.max(C, 1) < 2)
    throw new RangeError(`${op}: expected more than 1 value per channel in training mode for x but received shape [${x.shape.join(', ')}]`);
  const w = channelArg(op, 'weight', weight, x, C);
  const b = channelArg(op, 'bias', bias, x, C);

  const r = native.batchNorm(x.handle, rm?.handle ?? null, rv?.handle ?? null, w?.handle ?? null, b?.handle ?? null,
    training, momentum, eps);
  const y = wrap(r.y), mean = wrap(r.mean), rstd = wrap(r.rstd);
  const inputs = [x];
  if (w) inputs.push(w);
  if (b) inputs.push(b);
  const wi = w ? 1 : -1, bi = b ? (w ? 2 : 1) : -1;
  record(y, op, inputs, (g, needs) => {
    const gr = native.batchNormBackward(x.handle, w?.handle ?? null, mean.handle, rstd.handle, g.handle, training,
      needs[0]!, wi >= 0 && needs[wi]!, bi >= 0 && needs[bi]!);
    const grads: (Tensor | null)[] = [gr.dx ? wrap(gr.dx) : null];
    if (wi >= 0) grads.push(gr.dweight ? wrap(gr.dweight) : null);
    if (bi >= 0) grads.push(gr.dbias ? wrap(gr.dbias) : null);
    return grads;
  });
  if (y._node === null) {  // nothing will run the backward: free the statistics now
    mean.dispose();
    rstd.dispose();
  }
  return y;
}
