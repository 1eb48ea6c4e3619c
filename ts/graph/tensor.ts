// Tensor: a TypeScript handle on native storage, with autograd state.
import { native, type NativeTensor, type DType, type Device } from '../native.js';
import { isGradEnabled, noGrad, type GradNode } from './autograd.js';
import { setTensorCheck, track, keep } from './scope.js';

export type { DType, Device } from '../native.js';
export type TypedArray = Float32Array | Float64Array | Int32Array | Uint8Array;

export interface BackwardOptions {
  /** Keep the graph's saved tensors so backward() can run through it again. */
  retainGraph?: boolean;
}

export class Tensor {
  /** The native handle. Ops pass it to the binding. */
  readonly handle: NativeTensor;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: Device;
  /** Whether gradients flow into this tensor. Set on leaves (parameters); ops set it on results. */
  requiresGrad: boolean;
  /** The accumulated gradient of a leaf (or of a tensor that called retainGrad()). */
  grad: Tensor | null = null;
  /** @internal the op that produced this tensor, when recorded */
  _node: GradNode | null = null;
  /** @internal the tidy scope holding this tensor */
  _scope: Set<Tensor> | null = null;
  /** @internal keep .grad on a non-leaf */
  _retainGrad = false;

  constructor(handle: NativeTensor, requiresGrad = false) {
    this.handle = handle;
    this.shape = Object.freeze(handle.shape);
    this.dtype = handle.dtype;
    this.device = handle.device;
    this.requiresGrad = requiresGrad;
    track(this);
  }

  get ndim(): number { return this.shape.length; }
  get size(): number { let n = 1; for (const d of this.shape) n *= d; return n; }
  get strides(): number[] { return this.handle.strides; }
  get isContiguous(): boolean { return this.handle.contiguous; }
  get disposed(): boolean { return this.handle.disposed; }
  /** A leaf is a tensor not produced by a recorded op (inputs, parameters). */
  get isLeaf(): boolean { return this._node === null; }

  /** The values as a typed array of the tensor's dtype, row-major. */
  toArray(): TypedArray { return native.toArray(this.handle); }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new RangeError(`item: expected a tensor with one element but received shape [${this.shape.join(', ')}]`);
    return this.toArray()[0]!;
  }

  /** Frees the native storage now (when no other view shares it). Idempotent. */
  dispose(): void {
    if (!this.handle.disposed) this.handle.dispose();
    this._scope?.delete(this);
    this._scope = null;
    this._node = null;
  }

  /** A new tensor sharing storage, outside the graph. */
  detach(): Tensor {
    const h = this.handle;
    return new Tensor(native.view(h, h.shape, h.strides, h.offset), false);
  }

  /** Marks this tensor as a leaf that accumulates gradients. Returns this. */
  requiresGrad_(flag = true): this {
    if (!this.isLeaf && !flag) throw new TypeError('requiresGrad_: only a leaf tensor can stop requiring grad; use detach()');
    if (flag && this.dtype !== 'float32' && this.dtype !== 'float64')
      throw new TypeError(`requiresGrad_: expected a float32 or float64 tensor but received ${this.dtype}`);
    this.requiresGrad = flag;
    return this;
  }

  /** Keep .grad on this intermediate tensor during backward(). */
  retainGrad(): this {
    this._retainGrad = true;
    return this;
  }

  toString(): string {
    return `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }

  /**
   * Computes gradients of this tensor w.r.t. every leaf that requires grad and adds
   * them into the leaves' .grad. A non-scalar tensor needs `grad` (dL/dthis).
   */
  backward(grad?: Tensor, options: BackwardOptions = {}): void {
    if (!this.requiresGrad) throw new TypeError('backward: this tensor does not require grad (no input to it requires grad, or it was made under noGrad)');
    if (grad === undefined && this.size !== 1)
      throw new RangeError(`backward: expected a scalar (one element) or an explicit gradient but the tensor has shape [${this.shape.join(', ')}]`);
    if (grad !== undefined && (grad.shape.length !== this.shape.length || grad.shape.some((d, i) => d !== this.shape[i])))
      throw new RangeError(`backward: expected a gradient of shape [${this.shape.join(', ')}] but received [${grad.shape.join(', ')}]`);
    noGrad(() => runBackward(this, grad, options.retainGraph ?? false));
  }
}

setTensorCheck((v): v is Tensor => v instanceof Tensor);

/** Wraps a fresh native handle. */
export function wrap(h: NativeTensor, requiresGrad = false): Tensor {
  return new Tensor(h, requiresGrad);
}

// ---- the backward pass ---------------------------------------------------------------

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  const stack: [Tensor, number][] = [[root, 0]];
  visited.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    const [t, i] = top;
    const inputs = t._node?.inputs ?? [];
    if (i < inputs.length) {
      top[1] = i + 1;
      const c = inputs[i]!;
      if (c.requiresGrad && !visited.has(c)) {
        visited.add(c);
        stack.push([c, 0]);
      }
    } else {
      order.push(t);
      stack.pop();
    }
  }
  return order.reverse();  // root first
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function runBackward(root: Tensor, seed: Tensor | undefined, retainGraph: boolean): void {
  const order = topoOrder(root);
  const pending = new Map<Tensor, Tensor>();   // gradient flowing into each non-processed tensor
  const stored = new Set<Tensor>();            // gradients that now live in some .grad
  const seedT = seed ? (seed.dtype === root.dtype ? seed : wrap(native.cast(seed.handle, root.dtype)))
                     : wrap(native.full([...root.shape], 1, root.dtype, root.device));
  pending.set(root, seedT);

  // Adds g into a leaf's .grad; the stored gradient is always an owned, contiguous tensor
  // (later backward() calls accumulate into .grad in place).
  const toLeaf = (leaf: Tensor, g: Tensor): void => {
    if (leaf.grad === null || leaf.grad.disposed) {
      // A fresh gradient that nothing else references is taken over; one that shares
      // storage with other gradients or views, or is still pending elsewhere, is copied.
      const adopt = leaf._node === null && g !== seed && g.handle.soleOwner && !stored.has(g) && ![...pending.values()].includes(g);
      const own = adopt ? g : wrap(native.contiguous(g.handle));
      leaf.grad = keep(own);
      stored.add(own);
    } else {
      native.axpy(leaf.grad.handle, g.handle, 1);
    }
  };

  for (const t of order) {
    const g = pending.get(t);
    if (!g) continue;
    pending.delete(t);
    const node = t._node;
    if (node === null) {
      if (t.requiresGrad) toLeaf(t, g);
      // (another input may still be waiting on the same gradient object)
      if (g !== seed && !stored.has(g) && ![...pending.values()].includes(g)) g.dispose();
      continue;
    }
    if (t._retainGrad) toLeaf(t, g);
    if (!node.backward)
      throw new Error(`backward: the graph through '${node.name}' was already freed by an earlier backward(); pass { retainGraph: true } to the first call`);
    const needs = node.inputs.map((x) => x.requiresGrad);
    // Pending gradients a backward may accumulate into in place: owned by nothing else.
    const into = node.inputs.map((x, i) => {
      const p = needs[i] ? pending.get(x) : undefined;
      if (p === undefined || p === seed || p === g || stored.has(p) || !p.handle.soleOwner || p.dtype !== x.dtype) return null;
      let n = 0;
      for (const v of pending.values()) if (v === p) n++;
      return n === 1 && node.inputs.indexOf(x) === i ? p : null;
    });
    const grads = node.backward(g, needs, into);
    if (!retainGraph) node.backward = null;
    const fresh = new Set<Tensor>([g]);
    for (let i = 0; i < node.inputs.length; i++) {
      const gi = grads[i];
      if (!needs[i] || !gi) continue;
      const x = node.inputs[i]!;
      if (!sameShape(gi.shape, x.shape))
        throw new Error(`backward: '${node.name}' produced a gradient of shape [${gi.shape.join(', ')}] for an input of shape [${x.shape.join(', ')}]`);
      const prev = pending.get(x);
      if (gi === prev) continue;  // accumulated in place (into)
      if (prev === undefined) {
        pending.set(x, gi);
      } else {
        pending.set(x, wrap(native.binary('add', prev.handle, gi.handle)));
        fresh.add(prev);
        fresh.add(gi);
      }
    }
    // Free every gradient handle that nobody holds any more (storage shared with a
    // live view stays alive through the view).
    const held = new Set<Tensor>(pending.values());
    for (const f of fresh) if (f !== seed && !held.has(f) && !stored.has(f)) f.dispose();
  }
  for (const g of pending.values()) if (g !== seed && !stored.has(g)) g.dispose();
  if (seedT !== seed && !stored.has(seedT)) seedT.dispose();
}

export { isGradEnabled };
