// pool family (native/ops/pool.h): avgPool2d (count_include_pad, floor mode, as torch's
// defaults), adaptiveAvgPool2d (torch's window bounds; [1, 1] is global pooling), and
// mean / max pooling over a sequence under a validity mask. Each backward is one native
// call; max pooling keeps the index of the position it took.
import { native } from '../../native.js';
import { record } from '../autograd.js';
import { Tensor, wrap } from '../tensor.js';
import { describe, aTensor } from '../creation.js';
import { checkFloat } from '../check.js';


function checkImage(op: string, x: unknown): asserts x is Tensor {
  checkFloat(op, 'x', x);
  if (x.ndim !== 3 && x.ndim !== 4)
    throw new RangeError(`${op}: expected a tensor [N, C, H, W] or [C, H, W] for x but received shape [${x.shape.join(', ')}]`);
  if (x.shape[x.ndim - 1]! < 1 || x.shape[x.ndim - 2]! < 1)
    throw new RangeError(`${op}: expected an image with H, W >= 1 for x but received shape [${x.shape.join(', ')}]`);
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

export interface AvgPool2dOptions {
  stride?: number | readonly [number, number];   // default: the kernel size
  padding?: number | readonly [number, number];  // default 0; at most half the kernel
}

/**
 * Average pooling over the last two dims of x [N, C, H, W] or [C, H, W], as
 * torch.nn.functional.avg_pool2d with count_include_pad (padded zeros count in the
 * divisor) and floor mode: OH = floor((H + 2*padding - kernel) / stride) + 1.
 */
export function avgPool2d(x: Tensor, kernel: number | readonly [number, number], options: AvgPool2dOptions = {}): Tensor {
  const op = 'avgPool2d';
  checkImage(op, x);
  const k = pair(op, 'kernel', kernel, 1);
  if (options === null || typeof options !== 'object')
    throw new TypeError(`${op}: expected an options object for options but received ${describe(options)}`);
  const s = pair(op, 'stride', options.stride ?? k, 1);
  const p = pair(op, 'padding', options.padding ?? 0, 0);
  if (2 * p[0] > k[0] || 2 * p[1] > k[1])
    throw new RangeError(`${op}: expected at most half the kernel size (kernel [${k.join(', ')}]) for padding but received [${p.join(', ')}]`);
  const H = x.shape[x.ndim - 2]!, W = x.shape[x.ndim - 1]!;
  if (k[0] > H + 2 * p[0] || k[1] > W + 2 * p[1])
    throw new RangeError(`${op}: expected a kernel no larger than the padded input (${H + 2 * p[0]}x${W + 2 * p[1]}) for kernel but received [${k.join(', ')}]`);
  const inShape = [...x.shape];
  const y = wrap(native.avgPool2d(x.handle, k, s, p));
  return record(y, op, [x], (g) => [wrap(native.avgPool2dBackward(g.handle, inShape, k, s, p))]);
}

/**
 * Adaptive average pooling to outputSize [OH, OW] (a number means square), as
 * torch.nn.functional.adaptive_avg_pool2d: output row i averages input rows
 * floor(i*H/OH) .. ceil((i+1)*H/OH) - 1 (likewise columns). [1, 1] is global pooling.
 */
export function adaptiveAvgPool2d(x: Tensor, outputSize: number | readonly [number, number]): Tensor {
  const op = 'adaptiveAvgPool2d';
  checkImage(op, x);
  const o = pair(op, 'outputSize', outputSize, 1);
  const inShape = [...x.shape];
  const y = wrap(native.adaptiveAvgPool2d(x.handle, o));
  return record(y, op, [x], (g) => [wrap(native.adaptiveAvgPool2dBackward(g.handle, inShape))]);
}

function checkSequence(op: string, x: unknown, mask: unknown): [Tensor, Tensor | null] {
  checkFloat(op, 'x', x);
  if (x.ndim !== 3) throw new RangeError(`${op}: expected a tensor [B, L, D] for x but received shape [${x.shape.join(', ')}]`);
  if (mask === undefined || mask === null) return [x, null];
  if (!(mask instanceof Tensor)) throw new TypeError(`${op}: expected a uint8 tensor or null for mask but received ${describe(mask)}`);
  if (mask.disposed) throw new TypeError(`${op}: expected a live tensor for mask but received a disposed tensor`);
  if (mask.dtype !== 'uint8') throw new TypeError(`${op}: expected a uint8 tensor for mask but received ${aTensor(mask.dtype)}`);
  if (mask.device !== x.device) throw new TypeError(`${op}: expected a ${x.device} tensor (the device of x) for mask but received a ${mask.device} tensor`);
  if (mask.ndim !== 2 || mask.shape[0] !== x.shape[0] || mask.shape[1] !== x.shape[1])
    throw new RangeError(`${op}: expected shape [${x.shape[0]}, ${x.shape[1]}] for mask but received shape [${mask.shape.join(', ')}]`);
  return [x, mask];
}

/**
 * Mean of x [B, L, D] over the valid positions of each row -> [B, D]. mask is uint8
 * [B, L] with nonzero = valid (omitted: all valid); a row with no valid position gives zeros.
 */
export function maskedMeanPool(x: Tensor, mask?: Tensor | null): Tensor {
  const op = 'maskedMeanPool';
  const [X, M] = checkSequence(op, x, mask);
  const L = X.shape[1]!;
  const y = wrap(native.maskedMeanPool(X.handle, M?.handle ?? null));
  return record(y, op, [X], (g) => [wrap(native.maskedMeanPoolBackward(g.handle, M?.handle ?? null, L))]);
}

/**
 * Max of x [B, L, D] over the valid positions of each row -> [B, D] (NaN propagates;
 * ties take the first position). The gradient goes to the position taken only; a row
 * with no valid position gives zeros and no gradient.
 */
export function maskedMaxPool(x: Tensor, mask?: Tensor | null): Tensor {
  const op = 'maskedMaxPool';
  const [X, M] = checkSequence(op, x, mask);
  const L = X.shape[1]!;
  const r = native.maskedMaxPool(X.handle, M?.handle ?? null);
  const y = wrap(r.y), index = wrap(r.index);
  record(y, op, [X], (g) => [wrap(native.maskedMaxPoolBackward(g.handle, index.handle, L))]);
  if (y._node === null) index.dispose();
  return y;
}
