// conv2d family: 2-D convolution over NCHW images (native/ops/conv2d.h) with stride,
// zero padding, dilation and groups (depthwise included), as torch.nn.functional.conv2d.
// The backward gives dx, dweight and dbias in one native call; dweight and dbias are
// reduced in a fixed order (the same on any thread count).
import { native } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe, aTensor } from '../creation.js';
import { checkTensor } from '../check.js';

/** A size per spatial axis: one number for both, or [h, w]. */
export type Size2 = number | readonly [number, number];

export interface Conv2dOptions {
  stride?: Size2;    // default 1
  padding?: Size2;   // default 0 (zero padding on both sides)
  dilation?: Size2;  // default 1
  groups?: number;   // default 1; C and O must be multiples of it (groups = C: depthwise)
}


/** [h, w] from a number or a pair of integers >= min. */
function pair(op: string, name: string, v: unknown, min: number): [number, number] {
  const ok = (e: unknown): e is number => typeof e === 'number' && Number.isInteger(e) && e >= min && e <= 2 ** 30;
  if (typeof v === 'number') {
    if (!ok(v)) throw new RangeError(`${op}: expected an integer >= ${min} or a pair [h, w] of them for ${name} but received ${describe(v)}`);
    return [v, v];
  }
  if (!Array.isArray(v)) throw new TypeError(`${op}: expected an integer >= ${min} or a pair [h, w] of them for ${name} but received ${describe(v)}`);
  if (v.length !== 2 || !ok(v[0]) || !ok(v[1]))
    throw new RangeError(`${op}: expected an integer >= ${min} or a pair [h, w] of them for ${name} but received [${v.map(String).join(', ')}]`);
  return [v[0], v[1]];
}

/**
 * 2-D cross-correlation, as torch.nn.functional.conv2d: x [N, C, H, W], weight
 * [O, C/groups, KH, KW], bias [O] -> [N, O, OH, OW] with
 * OH = floor((H + 2*padding - dilation*(KH-1) - 1) / stride) + 1 (likewise OW).
 */
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor | null, options: Conv2dOptions = {}): Tensor {
  const op = 'conv2d';
  checkTensor(op, 'x', x);
  if (x.dtype !== 'float32' && x.dtype !== 'float64')
    throw new TypeError(`${op}: expected a float32 or float64 tensor for x but received ${aTensor(x.dtype)}`);
  if (x.ndim !== 4) throw new RangeError(`${op}: expected a 4-d tensor [N, C, H, W] for x but received shape [${x.shape.join(', ')}]`);
  checkTensor(op, 'weight', weight);
  if (weight.dtype !== x.dtype)
    throw new TypeError(`${op}: expected ${aTensor(x.dtype)} (the dtype of x) for weight but received ${aTensor(weight.dtype)}`);
  if (weight.device !== x.device)
    throw new TypeError(`${op}: expected a ${x.device} tensor (the device of x) for weight but received a ${weight.device} tensor`);
  if (weight.ndim !== 4)
    throw new RangeError(`${op}: expected a 4-d tensor [O, C/groups, KH, KW] for weight but received shape [${weight.shape.join(', ')}]`);
  if (options === null || typeof options !== 'object')
    throw new TypeError(`${op}: expected an options object for options but received ${describe(options)}`);
  const stride = pair(op, 'stride', options.stride ?? 1, 1);
  const padding = pair(op, 'padding', options.padding ?? 0, 0);
  const dilation = pair(op, 'dilation', options.dilation ?? 1, 1);
  const groups = options.groups ?? 1;
  if (typeof groups !== 'number' || !Number.isInteger(groups) || groups < 1)
    throw new RangeError(`${op}: expected an integer >= 1 for groups but received ${describe(groups)}`);
  const [, C, H, W] = x.shape as [number, number, number, number];
  const [O, Cg, KH, KW] = weight.shape as [number, number, number, number];
  if (C % groups !== 0) throw new RangeError(`${op}: expected a divisor of the input channels (${C}) for groups but received ${describe(groups)}`);
  if (O % groups !== 0)
    throw new RangeError(`${op}: expected a divisor of the output channels (${O}, weight.shape[0]) for groups but received ${describe(groups)}`);
  if (Cg * groups !== C)
    throw new RangeError(`${op}: expected shape [${O}, ${C / groups}, KH, KW] (x has ${C} channels, groups ${groups}) for weight but received shape [${weight.shape.join(', ')}]`);
  const eh = dilation[0] * (KH - 1) + 1, ew = dilation[1] * (KW - 1) + 1;
  const ph = H + 2 * padding[0], pw = W + 2 * padding[1];
  if (eh > ph || ew > pw)
    throw new RangeError(`${op}: expected a dilated kernel no larger than the padded input (${ph}x${pw}) for weight but received a dilated kernel of ${eh}x${ew}`);
  let b: Tensor | null = null;
  if (bias !== undefined && bias !== null) {
    checkTensor(op, 'bias', bias);
    if (bias.dtype !== x.dtype)
      throw new TypeError(`${op}: expected ${aTensor(x.dtype)} (the dtype of x) for bias but received ${aTensor(bias.dtype)}`);
    if (bias.ndim !== 1 || bias.shape[0] !== O)
      throw new RangeError(`${op}: expected shape [${O}] for bias but received shape [${bias.shape.join(', ')}]`);
    b = bias;
  }

  const y = wrap(native.conv2d(x.handle, weight.handle, b?.handle ?? null, stride, padding, dilation, groups));
  const inputs = b ? [x, weight, b] : [x, weight];
  return record(y, op, inputs, (g, needs) => {
    const r = native.conv2dBackward(x.handle, weight.handle, g.handle, stride, padding, dilation, groups,
      needs[0]!, needs[1]!, b !== null && needs[2]!);
    const out: (Tensor | null)[] = [r.dx ? wrap(r.dx) : null, r.dweight ? wrap(r.dweight) : null];
    if (b) out.push(r.dbias ? wrap(r.dbias) : null);
    return out;
  });
}
