// Configuration is data: every tower takes a plain JSON object, merged over its defaults
// and validated here on construction. Errors name the tower, the key (with its path for
// nested keys, e.g. 'stages[1].kernelSize'), what was expected and what was received:
//   ViTConfig: expected an integer >= 1 for patchSize but received the number 0
// Unknown keys are errors too (a misspelt key would otherwise be ignored silently).
import { describe } from '../graph/creation.js';

/** Checks one value; throws a TypeError (wrong kind) or RangeError (out of range) naming `key`. */
export type Field<T = unknown> = (op: string, key: string, v: unknown) => T;

const fail = (kind: 'type' | 'range', op: string, key: string, expected: string, v: unknown): never => {
  const msg = `${op}: expected ${expected} for ${key} but received ${describe(v)}`;
  throw kind === 'type' ? new TypeError(msg) : new RangeError(msg);
};

/** An integer in [min, max]. */
export function int(min = 1, max = Infinity): Field<number> {
  const expected = max === Infinity ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`;
  return (op, key, v) => {
    if (typeof v !== 'number') return fail('type', op, key, expected, v);
    if (!Number.isInteger(v) || v < min || v > max) return fail('range', op, key, expected, v);
    return v;
  };
}

/** A finite number in [min, max] (or [min, max) when maxOpen; (min, max] when minOpen). */
export function num(min = -Infinity, max = Infinity, opts: { minOpen?: boolean; maxOpen?: boolean } = {}): Field<number> {
  const lo = opts.minOpen ? '(' : '[', hi = opts.maxOpen ? ')' : ']';
  const expected = max === Infinity && min === -Infinity ? 'a finite number'
    : max === Infinity ? `a finite number ${opts.minOpen ? '>' : '>='} ${min}`
    : `a number in ${lo}${min}, ${max}${hi}`;
  return (op, key, v) => {
    if (typeof v !== 'number') return fail('type', op, key, expected, v);
    const ok = Number.isFinite(v) && (opts.minOpen ? v > min : v >= min) && (opts.maxOpen ? v < max : v <= max);
    if (!ok) return fail('range', op, key, expected, v);
    return v;
  };
}

export function bool(): Field<boolean> {
  return (op, key, v) => (typeof v === 'boolean' ? v : fail('type', op, key, 'a boolean', v));
}

/** One of the listed literals. */
export function oneOf<T extends string | number | boolean>(...values: readonly T[]): Field<T> {
  const expected = `one of ${values.map((x) => (typeof x === 'string' ? `'${x}'` : String(x))).join(', ')}`;
  return (op, key, v) => ((values as readonly unknown[]).includes(v) ? (v as T) : fail('type', op, key, expected, v));
}

/** null, or a value the inner field accepts. */
export function nullable<T>(inner: Field<T>): Field<T | null> {
  return (op, key, v) => (v === null ? null : inner(op, key, v));
}

/** An array (at least minLength long) whose items the inner field accepts; errors name 'key[i]'. */
export function arrayOf<T>(inner: Field<T>, minLength = 0): Field<T[]> {
  return (op, key, v) => {
    if (!Array.isArray(v)) return fail('type', op, key, `an array${minLength ? ` of at least ${minLength} item(s)` : ''}`, v);
    if (v.length < minLength) return fail('range', op, key, `an array of at least ${minLength} item(s)`, v);
    return v.map((x, i) => inner(op, `${key}[${i}]`, x));
  };
}

export type Spec<T> = { [K in keyof T]-?: Field<T[K]> };

/** A nested object checked against `spec` with `defaults` for missing keys; errors name 'key.sub'. */
export function object<T extends object>(spec: Spec<T>, defaults: Partial<T> = {}): Field<T> {
  return (op, key, v) => parseWith(op, spec, defaults, v, key);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function parseWith<T extends object>(op: string, spec: Spec<T>, defaults: Partial<T>, user: unknown, path: string): T {
  const where = path ? `${path}.` : '';
  if (user === undefined) user = {};
  if (!isPlainObject(user)) return fail('type', op, path || 'config', 'a plain object', user);
  const known = Object.keys(spec);
  for (const k of Object.keys(user))
    if (!known.includes(k))
      throw new TypeError(`${op}: expected one of the keys ${known.map((x) => `'${x}'`).join(', ')} but received the unknown key '${where}${k}'`);
  const out: Record<string, unknown> = {};
  for (const k of known) {
    const v = Object.prototype.hasOwnProperty.call(user, k) && user[k] !== undefined ? user[k] : (defaults as Record<string, unknown>)[k];
    if (v === undefined) throw new TypeError(`${op}: expected a value for the required key '${where}${k}' but received undefined`);
    out[k] = (spec as Record<string, Field>)[k]!(op, `${where}${k}`, v);
  }
  return out as T;
}

/**
 * The validated configuration: `user` (a plain object, may be omitted) merged over
 * `defaults`, every key checked by its field. Returns a fresh, deeply frozen plain object.
 */
export function parseConfig<T extends object>(op: string, spec: Spec<T>, defaults: T, user?: unknown): Readonly<T> {
  return deepFreeze(parseWith(op, spec, defaults, user, ''));
}

/** Throws a RangeError naming `key` when a cross-key condition does not hold. */
export function ensure(op: string, ok: boolean, key: string, expected: string, v: unknown): void {
  if (!ok) fail('range', op, key, expected, v);
}

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object') {
    for (const x of Object.values(v as object)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/** The dtypes a tower may be built in. */
export const dtypeField = oneOf('float32', 'float64');
/** A seed for the initialisation (null: draw from the global generator). */
export const seedField = nullable(int(0, Number.MAX_SAFE_INTEGER));
/** A probability usable for dropout: [0, 1). */
export const probField = num(0, 1, { maxOpen: true });
/** The MLP activations of the transformer blocks. */
export const activationField = oneOf('gelu', 'gelu_tanh', 'quick_gelu', 'silu', 'relu');

/** A sub-config given as a plain object (merged and validated by its tower's own parser). */
export const partial: Field<Record<string, unknown>> = (op, key, v) => {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new TypeError(`${op}: expected a plain object for ${key} but received ${describe(v)}`);
  return { ...(v as Record<string, unknown>) };
};

/** Re-throws a tower's config error naming the key under `where` (vision.patchSize). */
export function nested<T>(op: string, where: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (!(e instanceof Error)) throw e;
    const msg = e.message.replace(/^\w+: /, `${op}: `).replace(/ for (\w)/, ` for ${where}.$1`).replace(/the unknown key '/, `the unknown key '${where}.`);
    throw e instanceof RangeError ? new RangeError(msg) : new TypeError(msg);
  }
}
