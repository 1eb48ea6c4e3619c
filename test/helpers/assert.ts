// Shared assertions: closeness of arrays and gradient checks with useful messages.
import type { ExecutionContext } from 'ava';
import { gradcheck, type GradcheckOptions } from '../../ts/graph/gradcheck.js';
import type { Tensor } from '../../ts/graph/tensor.js';

/** Every |a - e| <= atol + rtol * |e|; reports the worst element. */
export function assertClose(t: ExecutionContext, actual: ArrayLike<number>, expected: ArrayLike<number>,
  atol = 1e-5, rtol = 1e-4, label = ''): void {
  t.is(actual.length, expected.length, `${label} length`);
  let worst = -1, excess = -Infinity;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!, e = expected[i]!;
    const x = Number.isNaN(a) !== Number.isNaN(e) ? Infinity : Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (x > excess) { excess = x; worst = i; }
  }
  t.true(excess <= 0, `${label} worst element ${worst}: got ${actual[worst]} expected ${expected[worst]}`);
}

/** Runs gradcheck and fails the test with its message. */
export function assertGradcheck(t: ExecutionContext, fn: (...x: Tensor[]) => Tensor, inputs: Tensor[],
  options: GradcheckOptions = {}, label = ''): void {
  const r = gradcheck(fn, inputs, options);
  t.true(r.ok, `${label} ${r.message}`);
}
