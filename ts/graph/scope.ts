// Tensor lifetimes: tidy(fn) frees every tensor made inside fn except those it
// returns (and those kept); the finalizer of the native handle is the last resort.
import type { Tensor } from './tensor.js';

const stack: Set<Tensor>[] = [];

/** Registers a new tensor with the innermost open scope. */
export function track(t: Tensor): void {
  const s = stack[stack.length - 1];
  if (s) {
    s.add(t);
    t._scope = s;
  }
}

/** Removes t from its scope so no tidy() frees it (parameters, gradients, results kept across steps). */
export function keep<T extends Tensor>(t: T): T {
  t._scope?.delete(t);
  t._scope = null;
  return t;
}

function collect(value: unknown, out: Set<Tensor>, seen: Set<unknown>, isTensor: (v: unknown) => v is Tensor): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if (isTensor(value)) {
    out.add(value);
    return;
  }
  if (Array.isArray(value)) for (const v of value) collect(v, out, seen, isTensor);
  else if (value instanceof Map) for (const v of value.values()) collect(v, out, seen, isTensor);
  else if (Object.getPrototypeOf(value) === Object.prototype)
    for (const v of Object.values(value as Record<string, unknown>)) collect(v, out, seen, isTensor);
}

let isTensorFn: (v: unknown) => v is Tensor = (_v): _v is Tensor => false;
export function setTensorCheck(f: (v: unknown) => v is Tensor): void {
  isTensorFn = f;
}

/**
 * Runs fn and disposes every tensor created inside it, except the tensors found in
 * its result (arrays, plain objects and Maps are searched) and kept ones. The
 * survivors move to the enclosing scope. fn must be synchronous.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  stack.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    stack.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  stack.pop();
  if (result instanceof Promise) {
    throw new TypeError('tidy: expected a synchronous function but it returned a Promise');
  }
  const survivors = new Set<Tensor>();
  collect(result, survivors, new Set(), isTensorFn);
  const parent = stack[stack.length - 1] ?? null;
  for (const t of scope) {
    if (survivors.has(t)) {
      t._scope = parent;
      parent?.add(t);
    } else {
      t.dispose();
    }
  }
  return result;
}

/** Number of open tidy scopes (for tests). */
export function scopeDepth(): number {
  return stack.length;
}
