// Module: a tree of named parameters, buffers and sub-modules (as torch.nn.Module).
// A parameter is a leaf Tensor with requiresGrad, registered under a name and kept
// out of tidy scopes; there is no Parameter subclass. Registration is explicit:
//   this.weight = this.param('weight', randn([out, inp]));
//   this.fc1 = this.module('fc1', new Linear(4, 8));
// Names nest with dots ('fc1.weight'), as in PyTorch state dicts.
import { native } from '../native.js';
import { Tensor } from './tensor.js';
import { keep } from './scope.js';
import { describe, aTensor } from './creation.js';
import { sameShape } from './check.js';

/** name -> tensor, in registration order (what stateDict() returns and loadStateDict() takes). */
export type StateDict = Record<string, Tensor>;

export interface LoadStateDictOptions {
  /** Missing or unexpected keys are an error (default true); otherwise they are reported. */
  strict?: boolean;
}

export interface LoadStateDictResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

function checkName(op: string, name: unknown): asserts name is string {
  if (typeof name !== 'string' || name === '' || name.includes('.'))
    throw new TypeError(`${op}: expected a non-empty name without '.' for name but received ${describe(name)}`);
}

export class Module {
  /** Training mode (dropout active). Set through train()/eval(). */
  training = true;
  private readonly _params = new Map<string, Tensor>();
  private readonly _buffers = new Map<string, Tensor>();
  private readonly _modules = new Map<string, Module>();

  /**
   * Registers t as the parameter `name`: it becomes a leaf that requires grad and is
   * kept out of tidy scopes. Returns t.
   */
  param(name: string, t: Tensor): Tensor {
    checkName('param', name);
    if (!(t instanceof Tensor)) throw new TypeError(`param: expected a tensor for ${name} but received ${describe(t)}`);
    if (t.disposed) throw new TypeError(`param: expected a live tensor for ${name} but received a disposed tensor`);
    if (!t.isLeaf) throw new TypeError(`param: expected a leaf tensor for ${name} (create it under noGrad or detach() it) but received the result of an op`);
    if (t.dtype !== 'float32' && t.dtype !== 'float64')
      throw new TypeError(`param: expected a float32 or float64 tensor for ${name} but received ${aTensor(t.dtype)}`);
    if (!t.isContiguous) throw new TypeError(`param: expected a contiguous tensor for ${name} but received a strided view`);
    this.checkFree('param', name, this._params);
    t.requiresGrad_(true);
    this._params.set(name, keep(t));
    return t;
  }

  /** Registers t as the buffer `name` (saved in stateDict, never trained). Returns t. */
  buffer(name: string, t: Tensor): Tensor {
    checkName('buffer', name);
    if (!(t instanceof Tensor)) throw new TypeError(`buffer: expected a tensor for ${name} but received ${describe(t)}`);
    if (t.disposed) throw new TypeError(`buffer: expected a live tensor for ${name} but received a disposed tensor`);
    this.checkFree('buffer', name, this._buffers);
    this._buffers.set(name, keep(t));
    return t;
  }

  /** Registers m as the sub-module `name`. Returns m. */
  module<M extends Module>(name: string, m: M): M {
    checkName('module', name);
    if (!(m instanceof Module)) throw new TypeError(`module: expected a Module for ${name} but received ${describe(m)}`);
    this.checkFree('module', name, this._modules);
    this._modules.set(name, m);
    return m;
  }

  private checkFree(op: string, name: string, own: Map<string, unknown>): void {
    for (const [kind, map] of [['parameter', this._params], ['buffer', this._buffers], ['module', this._modules]] as const)
      if (map !== own && map.has(name))
        throw new TypeError(`${op}: expected a new name but '${name}' is already a ${kind} of ${this.constructor.name}`);
  }

  /** Direct sub-modules with their names. */
  namedChildren(): [string, Module][] {
    return [...this._modules];
  }

  /** This module and every descendant, depth first, with dotted names ('' for this one). */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [n, m] of this._modules) out.push(...m.namedModules(prefix ? `${prefix}.${n}` : n));
    return out;
  }

  /**
   * Every parameter with its dotted name; a tensor registered twice (tied weights)
   * appears once. With recurse false, only this module's own.
   */
  namedParameters(recurse = true): [string, Tensor][] {
    const seen = new Set<Tensor>();
    const out: [string, Tensor][] = [];
    for (const [prefix, m] of recurse ? this.namedModules() : [['', this] as [string, Module]])
      for (const [n, p] of m._params) {
        if (seen.has(p)) continue;
        seen.add(p);
        out.push([prefix ? `${prefix}.${n}` : n, p]);
      }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  namedBuffers(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [prefix, m] of this.namedModules())
      for (const [n, b] of m._buffers) out.push([prefix ? `${prefix}.${n}` : n, b]);
    return out;
  }

  buffers(): Tensor[] {
    return this.namedBuffers().map(([, b]) => b);
  }

  /** Total number of parameter elements (trainable only when asked). */
  numParameters(trainableOnly = false): number {
    let n = 0;
    for (const p of this.parameters()) if (!trainableOnly || p.requiresGrad) n += p.size;
    return n;
  }

  /**
   * Every parameter and buffer by dotted name (tied weights under each name). The
   * tensors are the module's own: read or save them, do not dispose them.
   */
  stateDict(): StateDict {
    const out: StateDict = {};
    for (const [prefix, m] of this.namedModules()) {
      const at = (n: string) => (prefix ? `${prefix}.${n}` : n);
      for (const [n, p] of m._params) out[at(n)] = p;
      for (const [n, b] of m._buffers) out[at(n)] = b;
    }
    return out;
  }

  /**
   * Copies values from `dict` into this module's parameters and buffers, in place (so
   * references held by optimizers stay valid). Everything is checked before anything
   * is copied: missing/unexpected keys (when strict), shapes (RangeError) and dtypes (TypeError).
   */
  loadStateDict(dict: StateDict | Map<string, Tensor>, options: LoadStateDictOptions = {}): LoadStateDictResult {
    const strict = options.strict ?? true;
    const who = this.constructor.name;
    if (dict === null || typeof dict !== 'object')
      throw new TypeError(`loadStateDict: expected an object or Map of tensors for dict but received ${describe(dict)}`);
    const entries = dict instanceof Map ? dict : new Map(Object.entries(dict));
    const own = this.stateDict();
    const missingKeys = Object.keys(own).filter((k) => !entries.has(k));
    const unexpectedKeys = [...entries.keys()].filter((k) => !(k in own));
    if (strict && (missingKeys.length || unexpectedKeys.length)) {
      const lines = [`loadStateDict: the state dict does not match ${who}:`];
      if (missingKeys.length) lines.push(`  missing key(s): ${missingKeys.map((k) => `'${k}'`).join(', ')}`);
      if (unexpectedKeys.length) lines.push(`  unexpected key(s): ${unexpectedKeys.map((k) => `'${k}'`).join(', ')}`);
      throw new RangeError(lines.join('\n'));
    }
    const pairs: [Tensor, Tensor][] = [];
    for (const [k, dst] of Object.entries(own)) {
      const src = entries.get(k);
      if (src === undefined) continue;
      if (!(src instanceof Tensor)) throw new TypeError(`loadStateDict: expected a tensor for '${k}' but received ${describe(src)}`);
      if (src.disposed) throw new TypeError(`loadStateDict: expected a live tensor for '${k}' but received a disposed tensor`);
      if (!sameShape(src.shape, dst.shape))
        throw new RangeError(`loadStateDict: expected shape [${dst.shape.join(', ')}] for '${k}' but received shape [${src.shape.join(', ')}]`);
      if (src.dtype !== dst.dtype)
        throw new TypeError(`loadStateDict: expected ${aTensor(dst.dtype)} for '${k}' but received ${aTensor(src.dtype)}`);
      pairs.push([dst, src]);
    }
    for (const [dst, src] of pairs) if (dst !== src) native.copy(dst.handle, src.handle);
    return { missingKeys, unexpectedKeys };
  }

  /** Sets training mode on this module and all descendants. Returns this. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  /** Evaluation mode (dropout off). Returns this. */
  eval(): this {
    return this.train(false);
  }

  /** Frees every parameter's gradient and sets it to null. */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Stops gradients into every parameter (frees any held grad). Returns this. */
  freeze(): this {
    for (const p of this.parameters()) {
      p.requiresGrad_(false);
      p.grad?.dispose();
      p.grad = null;
    }
    return this;
  }

  /** Lets gradients flow into every parameter again. Returns this. */
  unfreeze(): this {
    for (const p of this.parameters()) p.requiresGrad_(true);
    return this;
  }

  /** Frees every parameter, gradient and buffer of this module and its descendants. */
  dispose(): void {
    for (const [, m] of this.namedModules()) {
      for (const p of m._params.values()) {
        p.grad?.dispose();
        p.grad = null;
        p.dispose();
      }
      for (const b of m._buffers.values()) b.dispose();
    }
  }

  toString(): string {
    const lines = this.namedChildren().map(([n, m]) => `  (${n}): ${m.toString().split('\n').join('\n  ')}`);
    return lines.length ? `${this.constructor.name}(\n${lines.join('\n')}\n)` : `${this.constructor.name}(${this.extraRepr()})`;
  }

  /** Extra text for toString() of leaf modules (e.g. sizes). */
  protected extraRepr(): string {
    return '';
  }
}
