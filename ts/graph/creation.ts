// Making tensors: from JS data, constants, ranges and the seeded generator.
import { native, type DType, type Device } from '../native.js';
import { Tensor, wrap, type TypedArray } from './tensor.js';

export interface CreateOptions {
  dtype?: DType;
  device?: Device;
  requiresGrad?: boolean;
}

type Nested = number | boolean | Nested[];

function checkShape(op: string, shape: readonly number[]): number[] {
  if (!Array.isArray(shape)) throw new TypeError(`${op}: expected an array of sizes for shape but received ${describe(shape)}`);
  return [...shape];
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'string') return `the string '${v.length > 40 ? v.slice(0, 40) + '...' : v}'`;
  if (typeof v === 'number' || typeof v === 'boolean') return `the ${typeof v} ${v}`;
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (v instanceof Tensor) return `a tensor of shape [${v.shape.join(', ')}]`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  return `a value of type ${typeof v}`;
}

/** "a float32 tensor" / "an int32 tensor": the phrase error messages use for a dtype. */
export function aTensor(dtype: string): string {
  return `${dtype === 'int32' ? 'an' : 'a'} ${dtype} tensor`;
}

function inferShape(data: Nested): number[] {
  const shape: number[] = [];
  let cur: Nested = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    if (cur.length === 0) break;
    cur = cur[0]!;
  }
  return shape;
}

function flatten(data: Nested, shape: number[], depth: number, out: number[]): void {
  if (depth === shape.length) {
    if (typeof data === 'boolean') out.push(data ? 1 : 0);
    else if (typeof data === 'number') out.push(data);
    else throw new TypeError(`tensor: expected a number at depth ${depth} of the nested data but received ${describe(data)}`);
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[depth])
    throw new RangeError(`tensor: expected a ragged-free nested array (length ${shape[depth]} at depth ${depth}) but received ${describe(data)}`);
  for (const d of data) flatten(d, shape, depth + 1, out);
}

function typedFor(dtype: DType, values: ArrayLike<number>): TypedArray {
  switch (dtype) {
    case 'float32': return Float32Array.from(values);
    case 'float64': return Float64Array.from(values);
    case 'int32': return Int32Array.from(values);
    case 'uint8': return Uint8Array.from(values);
  }
}

function dtypeOfArray(a: ArrayBufferView): DType | null {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Uint8Array || a instanceof Uint8ClampedArray) return 'uint8';
  return null;
}

/**
 * A tensor from a number, nested arrays or a typed array (copied into native memory).
 * With a typed array and no dtype, the dtype is the array's; otherwise float32.
 */
export function tensor(data: Nested | ArrayBufferView, shape?: readonly number[], options: CreateOptions = {}): Tensor {
  const device = options.device ?? 'cpu';
  let dtype = options.dtype;
  let flat: TypedArray;
  let sh: number[];
  if (ArrayBuffer.isView(data)) {
    const own = dtypeOfArray(data);
    if (own === null) throw new TypeError(`tensor: expected a Float32Array, Float64Array, Int32Array or Uint8Array for data but received ${describe(data)}`);
    dtype ??= own;
    const arr = data as unknown as TypedArray;
    flat = dtype === own ? arr : typedFor(dtype, arr);
    sh = shape ? checkShape('tensor', shape) : [arr.length];
  } else {
    dtype ??= 'float32';
    const inferred = inferShape(data as Nested);
    const values: number[] = [];
    flatten(data as Nested, inferred, 0, values);
    flat = typedFor(dtype, values);
    sh = shape ? checkShape('tensor', shape) : inferred;
  }
  const t = wrap(native.fromData(flat, sh, dtype, device));
  if (options.requiresGrad) t.requiresGrad_(true);
  return t;
}

export function full(shape: readonly number[], value: number, options: CreateOptions = {}): Tensor {
  const t = wrap(native.full(checkShape('full', shape), value, options.dtype ?? 'float32', options.device ?? 'cpu'));
  if (options.requiresGrad) t.requiresGrad_(true);
  return t;
}
export const zeros = (shape: readonly number[], options: CreateOptions = {}) => full(shape, 0, options);
export const ones = (shape: readonly number[], options: CreateOptions = {}) => full(shape, 1, options);
export const zerosLike = (t: Tensor, options: CreateOptions = {}) => full(t.shape, 0, { dtype: t.dtype, device: t.device, ...options });
export const onesLike = (t: Tensor, options: CreateOptions = {}) => full(t.shape, 1, { dtype: t.dtype, device: t.device, ...options });

/** [start, end) in steps of step, like numpy.arange; arange(n) is [0, n). */
export function arange(start: number, end?: number, step = 1, options: CreateOptions = {}): Tensor {
  if (end === undefined) { end = start; start = 0; }
  for (const [n, v] of [['start', start], ['end', end], ['step', step]] as const)
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new TypeError(`arange: expected a finite number for ${n} but received ${describe(v)}`);
  if (step === 0) throw new RangeError('arange: expected a non-zero number for step but received 0');
  const count = Math.max(0, Math.ceil((end - start) / step));
  return wrap(native.arange(start, step, count, options.dtype ?? 'float32'));
}

// ---- the seeded generator -----------------------------------------------------------
// Philox is counter-based: each draw takes a fresh range of counters, so a stream
// is a function of (seed, offset) alone, on any thread count.
const generator = { seed: 0, offset: 0 };

/** Seeds the global generator (like torch.manual_seed). */
export function manualSeed(seed: number): void {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`manualSeed: expected a non-negative safe integer for seed but received ${describe(seed)}`);
  generator.seed = seed;
  generator.offset = 0;
}

/** Takes `count` counters from the global generator: returns [seed, offset]. */
export function nextRandom(count: number): [number, number] {
  const at = generator.offset;
  generator.offset += Math.ceil(count / 4) * 4 + 4;
  return [generator.seed, at];
}

/** The generator's state, for checkpoints. */
export function generatorState(): { seed: number; offset: number } {
  return { ...generator };
}
export function setGeneratorState(s: { seed: number; offset: number }): void {
  generator.seed = s.seed;
  generator.offset = s.offset;
}

export interface RandomOptions extends CreateOptions {
  /** A fixed seed: the result then does not touch the global generator. */
  seed?: number;
}

function draw(kind: 'normal' | 'uniform', shape: readonly number[], a: number, b: number, options: RandomOptions): Tensor {
  const sh = checkShape(kind === 'normal' ? 'randn' : 'rand', shape);
  let n = 1;
  for (const d of sh) n *= d;
  const [seed, offset] = options.seed !== undefined ? [options.seed, 0] : nextRandom(n);
  const t = wrap(native.random(kind, sh, options.dtype ?? 'float32', seed, offset, a, b));
  if (options.requiresGrad) t.requiresGrad_(true);
  return t;
}

/** Standard normal samples (times std, plus mean). */
export function randn(shape: readonly number[], options: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  return draw('normal', shape, options.mean ?? 0, options.std ?? 1, options);
}

/** Uniform samples in [low, high), default [0, 1). */
export function rand(shape: readonly number[], options: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  return draw('uniform', shape, options.low ?? 0, options.high ?? 1, options);
}
