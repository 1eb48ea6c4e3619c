// Argument checks shared by the TypeScript ops, in the boundary's one error format:
//   "<op>: expected <what> for <argument> but received <got>"
// (native/binding/args.h checks the same things again below; these run first so the
// message names the user-facing argument).
import { Tensor } from './tensor.js';
import { describe, aTensor } from './creation.js';

export { describe, aTensor };

export function shapeStr(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function isFloat(t: Tensor): boolean {
  return t.dtype === 'float32' || t.dtype === 'float64';
}

/** x is a live tensor. */
export function checkTensor(op: string, name: string, x: unknown): asserts x is Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`${op}: expected a tensor for ${name} but received ${describe(x)}`);
  if (x.disposed) throw new TypeError(`${op}: expected a live tensor for ${name} but received a disposed tensor`);
}

/** x is a live float32 or float64 tensor. */
export function checkFloat(op: string, name: string, x: unknown): asserts x is Tensor {
  checkTensor(op, name, x);
  if (!isFloat(x)) throw new TypeError(`${op}: expected a float32 or float64 tensor for ${name} but received ${aTensor(x.dtype)}`);
}
