// Gradient checking by float64 central differences (as torch.autograd.gradcheck).
// The analytic side is one backward() with a random upstream gradient r, i.e. the
// vector-Jacobian product J^T r; the numeric side perturbs each input element by
// ±eps and differentiates <r, f(x)>. A random r checks every output at once.
import { native } from '../native.js';
import { Tensor, wrap } from './tensor.js';
import { tidy } from './scope.js';
import { rand } from './creation.js';

export interface GradcheckOptions {
  eps?: number;   // default 1e-6
  atol?: number;  // default 1e-5
  rtol?: number;  // default 1e-3
  seed?: number;  // seed of the random upstream gradient
  /** Also check that a zero upstream gradient gives zero input gradients (default true). */
  checkZero?: boolean;
}

export interface GradcheckWorst {
  input: number;
  index: number;
  analytic: number;
  numeric: number;
}

export interface GradcheckReport {
  ok: boolean;
  maxAbsError: number;
  worst: GradcheckWorst | null;
  message: string;
}

function storageOffsetOf(x: Tensor, flat: number): number {
  const st = x.strides;
  let off = x.handle.offset;
  for (let d = x.ndim - 1; d >= 0; d--) {
    const n = x.shape[d]!;
    off += (flat % n) * st[d]!;
    flat = Math.floor(flat / n);
  }
  return off;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/**
 * Compares the analytic gradient of fn at `inputs` with central differences. Inputs
 * that require grad are checked and must be float64 leaves (they may be strided
 * views, but not overlapping ones).
 */
export function gradcheck(fn: (...inputs: Tensor[]) => Tensor, inputs: Tensor[], options: GradcheckOptions = {}): GradcheckReport {
  const eps = options.eps ?? 1e-6, atol = options.atol ?? 1e-5, rtol = options.rtol ?? 1e-3;
  const checked = inputs.map((x, i) => {
    if (!(x instanceof Tensor)) throw new TypeError(`gradcheck: expected a tensor for inputs[${i}]`);
    if (x.requiresGrad && x.dtype !== 'float64') throw new TypeError(`gradcheck: expected a float64 tensor for inputs[${i}] but received ${x.dtype}`);
    if (x.requiresGrad && !x.isLeaf) throw new TypeError(`gradcheck: expected a leaf tensor for inputs[${i}]`);
    return x.requiresGrad;
  });
  if (!checked.some(Boolean)) throw new TypeError('gradcheck: expected at least one input that requires grad');
  for (const x of inputs) { x.grad?.dispose(); x.grad = null; }

  // Analytic: J^T r.
  const r = tidy(() => {
    const out = fn(...inputs);
    if (out.dtype !== 'float64') throw new TypeError(`gradcheck: expected fn to return a float64 tensor but it returned ${out.dtype}`);
    const rt = rand([...out.shape], { dtype: 'float64', low: -1, high: 1, seed: options.seed ?? 1234 });
    out.backward(rt);
    return rt.toArray() as Float64Array;
  });
  const analytic = inputs.map((x) => (x.grad ? (x.grad.toArray() as Float64Array) : null));

  const f = (): number => tidy(() => dot(fn(...inputs).toArray(), r));
  let worst: GradcheckWorst | null = null;
  let worstExcess = -Infinity;
  let maxAbs = 0;
  const scratch = new Float64Array(1);
  inputs.forEach((x, k) => {
    if (!checked[k]) return;
    const values = x.toArray() as Float64Array;
    const a = analytic[k];
    for (let j = 0; j < x.size; j++) {
      const at = native.view(x.handle, [], [], storageOffsetOf(x, j));
      const set = (v: number) => {
        scratch[0] = v;
        const s = native.fromData(scratch, [], 'float64', x.device);
        native.copy(at, s);
        s.dispose();
      };
      const v0 = values[j]!;
      set(v0 + eps);
      const fp = f();
      set(v0 - eps);
      const fm = f();
      set(v0);
      at.dispose();
      const numeric = (fp - fm) / (2 * eps);
      const an = a ? a[j]! : 0;
      const err = Math.abs(an - numeric);
      maxAbs = Math.max(maxAbs, err);
      const excess = err - (atol + rtol * Math.abs(numeric));
      if (excess > worstExcess || Number.isNaN(err)) {
        worstExcess = Number.isNaN(err) ? Infinity : excess;
        worst = { input: k, index: j, analytic: an, numeric };
      }
    }
  });
  let ok = worstExcess <= 0;
  let message = ok ? `gradcheck passed (max abs error ${maxAbs.toExponential(2)})`
    : `gradcheck failed: input ${worst!.input} element ${worst!.index}: analytic ${worst!.analytic} vs numeric ${worst!.numeric}`;

  if (ok && (options.checkZero ?? true)) {
    for (const x of inputs) { x.grad?.dispose(); x.grad = null; }
    tidy(() => {
      const out = fn(...inputs);
      out.backward(wrap(native.full([...out.shape], 0, 'float64', out.device)));
    });
    for (const [k, x] of inputs.entries()) {
      if (!checked[k] || !x.grad) continue;
      const g = x.grad.toArray();
      const bad = g.findIndex((v) => v !== 0);
      if (bad >= 0) {
        ok = false;
        message = `gradcheck failed: a zero upstream gradient gave ${g[bad]} at input ${k} element ${bad}`;
        break;
      }
    }
  }
  for (const x of inputs) { x.grad?.dispose(); x.grad = null; }
  return { ok, maxAbsError: maxAbs, worst, message };
}
