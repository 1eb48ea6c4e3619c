// Define-by-run autograd: each differentiable op records its inputs and a backward
// closure; Tensor.backward() walks the recorded graph in reverse topological order.
import type { Tensor } from './tensor.js';

/**
 * Returns one gradient per input (null where not needed); `needs[i]` says whether input i wants one.
 * `into[i]`, where not null, is a gradient already pending for input i that nothing else
 * references (contiguous, the input's shape and dtype): a backward may add its gradient into it
 * in place and return that very tensor, which saves the engine an add (linear and layerNorm do).
 */
export type BackwardFn = (grad: Tensor, needs: boolean[], into: (Tensor | null)[]) => (Tensor | null | undefined)[];

export interface GradNode {
  name: string;
  inputs: Tensor[];
  backward: BackwardFn | null;  // null once the graph has been freed
}

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn without recording any graph (evaluation, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Runs fn with recording on, even inside noGrad. */
export function enableGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/**
 * Attaches a backward to `out` when recording is on and some input requires grad.
 * The closure may return `grad` itself or views of it; anything else it returns
 * must be a fresh tensor. Returns `out`.
 */
export function record(out: Tensor, name: string, inputs: Tensor[], backward: BackwardFn): Tensor {
  if (!gradEnabled) return out;
  let any = false;
  for (const t of inputs) if (t.requiresGrad) { any = true; break; }
  if (!any) return out;
  out.requiresGrad = true;
  out._node = { name, inputs, backward };
  return out;
}
