// AdamW (torch.optim.AdamW): decoupled weight decay, bias-corrected moments, one fused
// native update per parameter tensor (native/cpu/adamw.cc). Parameter groups carry
// their own lr / weightDecay / betas / eps; schedules write `group.lr` (schedule.ts).
import { native } from '../../native.js';
import { Tensor, wrap } from '../tensor.js';
import { keep } from '../scope.js';
import { describe, aTensor } from '../creation.js';
import { Module } from '../module.js';
import { sameShape } from '../check.js';

export interface ParamGroup {
  params: Tensor[];
  lr?: number;
  weightDecay?: number;
  betas?: readonly [number, number];
  eps?: number;
}

export interface AdamWOptions {
  lr?: number;                          // default 1e-3
  betas?: readonly [number, number];    // default [0.9, 0.999]
  eps?: number;                         // default 1e-8
  weightDecay?: number;                 // default 0.01
}

/** A group with every setting resolved; `lr` (and the others) may be changed between steps. */
export interface AdamWGroup {
  params: Tensor[];
  lr: number;
  weightDecay: number;
  betas: [number, number];
  eps: number;
}

export interface AdamWParamState {
  /** Number of updates applied to this parameter (1-based in the next update). */
  step: number;
  m: Tensor;
  v: Tensor;
}

/** For checkpoints: state by parameter position (groups in order, then params in order). */
export interface AdamWStateDict {
  state: Record<number, AdamWParamState>;
  paramGroups: { lr: number; weightDecay: number; betas: [number, number]; eps: number; params: number[] }[];
}

function checkSettings(op: string, s: { lr: number; weightDecay: number; betas: readonly number[]; eps: number }, where: string): void {
  const bad = (name: string, expected: string, v: unknown): never => {
    throw new RangeError(`${op}: expected ${expected} for ${where}${name} but received ${describe(v)}`);
  };
  if (typeof s.lr !== 'number' || !Number.isFinite(s.lr) || s.lr < 0) bad('lr', 'a finite number >= 0', s.lr);
  if (typeof s.weightDecay !== 'number' || !Number.isFinite(s.weightDecay) || s.weightDecay < 0)
    bad('weightDecay', 'a finite number >= 0', s.weightDecay);
  if (typeof s.eps !== 'number' || !Number.isFinite(s.eps) || s.eps <= 0) bad('eps', 'a finite number > 0', s.eps);
  if (!Array.isArray(s.betas) || s.betas.length !== 2) bad('betas', 'a pair [beta1, beta2]', s.betas);
  s.betas.forEach((b, i) => {
    if (typeof b !== 'number' || !(b >= 0 && b < 1)) bad(`betas[${i}]`, 'a number in [0, 1)', b);
  });
}

export class AdamW {
  readonly paramGroups: AdamWGroup[];
  private readonly state = new Map<Tensor, AdamWParamState>();

  constructor(params: Tensor[] | ParamGroup[], options: AdamWOptions = {}) {
    const defaults = {
      lr: options.lr ?? 1e-3,
      betas: options.betas ?? [0.9, 0.999],
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? 0.01,
    };
    checkSettings('AdamW', defaults, 'options.');
    if (!Array.isArray(params)) throw new TypeError(`AdamW: expected an array of tensors or parameter groups for params but received ${describe(params)}`);
    const groups: ParamGroup[] = params.length > 0 && params.every((p) => p instanceof Tensor)
      ? [{ params: params as Tensor[] }] : (params as ParamGroup[]);
    const seen = new Set<Tensor>();
    this.paramGroups = groups.map((g, gi) => {
      if (g === null || typeof g !== 'object' || !Array.isArray(g.params))
        throw new TypeError(`AdamW: expected a tensor or a group { params: Tensor[] } for params[${gi}] but received ${describe(g)}`);
      const group: AdamWGroup = {
        params: [...g.params],
        lr: g.lr ?? defaults.lr,
        weightDecay: g.weightDecay ?? defaults.weightDecay,
        betas: [...(g.betas ?? defaults.betas)] as [number, number],
        eps: g.eps ?? defaults.eps,
      };
      checkSettings('AdamW', group, `params[${gi}].`);
      group.params.forEach((p, pi) => {
        if (!(p instanceof Tensor)) throw new TypeError(`AdamW: expected a tensor for params[${gi}].params[${pi}] but received ${describe(p)}`);
        if (p.dtype !== 'float32' && p.dtype !== 'float64')
          throw new TypeError(`AdamW: expected a float32 or float64 tensor for params[${gi}].params[${pi}] but received ${aTensor(p.dtype)}`);
        if (!p.isLeaf) throw new TypeError(`AdamW: expected a leaf tensor for params[${gi}].params[${pi}] but received the result of an op`);
        if (seen.has(p)) throw new RangeError(`AdamW: expected each parameter in one group only but params[${gi}].params[${pi}] appears twice`);
        seen.add(p);
      });
      return group;
    });
    if (seen.size === 0) throw new RangeError('AdamW: expected at least one parameter but received an empty parameter list');
  }

  /** The moments and step count of p, or undefined before its first update (and while frozen from the start). */
  stateOf(p: Tensor): AdamWParamState | undefined {
    return this.state.get(p);
  }

  /**
   * One update of every parameter that has a gradient. Parameters whose grad is null
   * or that no longer require grad (frozen) are skipped and get no state.
   */
  step(): void {
    for (const g of this.paramGroups) {
      for (const p of g.params) {
        if (!p.requiresGrad || p.grad === null) continue;
        let s = this.state.get(p);
        if (!s) {
          s = {
            step: 0,
            m: keep(wrap(native.full([...p.shape], 0, p.dtype, p.device))),
            v: keep(wrap(native.full([...p.shape], 0, p.dtype, p.device))),
          };
          this.state.set(p, s);
        }
        native.adamwStep(p.handle, p.grad.handle, s.m.handle, s.v.handle, g.lr, g.betas[0], g.betas[1], g.eps,
          g.weightDecay, s.step + 1);
        s.step += 1;
      }
    }
  }

  /** Frees every parameter's gradient and sets it to null. */
  zeroGrad(): void {
    for (const g of this.paramGroups)
      for (const p of g.params) {
        p.grad?.dispose();
        p.grad = null;
      }
  }

  /** The settings and per-parameter state. The m/v tensors are the optimizer's own: save, do not dispose. */
  stateDict(): AdamWStateDict {
    const state: Record<number, AdamWParamState> = {};
    const paramGroups: AdamWStateDict['paramGroups'] = [];
    let i = 0;
    for (const g of this.paramGroups) {
      const idx: number[] = [];
      for (const p of g.params) {
        const s = this.state.get(p);
        if (s) state[i] = { step: s.step, m: s.m, v: s.v };
        idx.push(i++);
      }
      paramGroups.push({ lr: g.lr, weightDecay: g.weightDecay, betas: [...g.betas], eps: g.eps, params: idx });
    }
    return { state, paramGroups };
  }

  /**
   * Restores settings and state saved by stateDict() for the same parameter layout.
   * Moments are copied into fresh tensors the optimizer owns. Checks everything first.
   */
  loadStateDict(dict: AdamWStateDict): void {
    if (dict === null || typeof dict !== 'object' || !Array.isArray(dict.paramGroups) || dict.state === null || typeof dict.state !== 'object')
      throw new TypeError(`AdamW.loadStateDict: expected { state, paramGroups } for dict but received ${describe(dict)}`);
    if (dict.paramGroups.length !== this.paramGroups.length)
      throw new RangeError(`AdamW.loadStateDict: expected ${this.paramGroups.length} parameter groups but received ${dict.paramGroups.length}`);
    const flat: Tensor[] = [];
    dict.paramGroups.forEach((sg, gi) => {
      const g = this.paramGroups[gi]!;
      if (!Array.isArray(sg.params) || sg.params.length !== g.params.length)
        throw new RangeError(`AdamW.loadStateDict: expected ${g.params.length} parameters in group ${gi} but received ${describe(sg.params)}`);
      checkSettings('AdamW.loadStateDict', { lr: sg.lr, weightDecay: sg.weightDecay, betas: sg.betas, eps: sg.eps }, `paramGroups[${gi}].`);
      flat.push(...g.params);
    });
    const restored = new Map<Tensor, { step: number; m: Tensor; v: Tensor }>();
    for (const [key, s] of Object.entries(dict.state)) {
      const i = Number(key);
      if (!Number.isInteger(i) || i < 0 || i >= flat.length)
        throw new RangeError(`AdamW.loadStateDict: expected state keys in [0, ${flat.length}) but received '${key}'`);
      const p = flat[i]!;
      if (!Number.isInteger(s?.step) || s.step < 0)
        throw new RangeError(`AdamW.loadStateDict: expected a non-negative integer for state[${i}].step but received ${describe(s?.step)}`);
      for (const k of ['m', 'v'] as const) {
        const t = s[k];
        if (!(t instanceof Tensor) || t.disposed)
          throw new TypeError(`AdamW.loadStateDict: expected a live tensor for state[${i}].${k} but received ${describe(t)}`);
        if (!sameShape(t.shape, p.shape))
          throw new RangeError(`AdamW.loadStateDict: expected shape [${p.shape.join(', ')}] for state[${i}].${k} but received shape [${t.shape.join(', ')}]`);
        if (t.dtype !== p.dtype)
          throw new TypeError(`AdamW.loadStateDict: expected ${aTensor(p.dtype)} for state[${i}].${k} but received ${aTensor(t.dtype)}`);
      }
      restored.set(p, s);
    }
    // Everything checked: replace.
    dict.paramGroups.forEach((sg, gi) => {
      const g = this.paramGroups[gi]!;
      g.lr = sg.lr;
      g.weightDecay = sg.weightDecay;
      g.betas = [sg.betas[0], sg.betas[1]];
      g.eps = sg.eps;
    });
    this.disposeState();
    for (const [p, s] of restored)
      this.state.set(p, { step: s.step, m: keep(wrap(native.contiguous(s.m.handle))), v: keep(wrap(native.contiguous(s.v.handle))) });
  }

  /** Frees the moments (the parameters are not touched). */
  dispose(): void {
    this.disposeState();
  }

  private disposeState(): void {
    for (const s of this.state.values()) {
      s.m.dispose();
      s.v.dispose();
    }
    this.state.clear();
  }
}

// ---- parameter groups with and without weight decay ----------------------------------

/** (name, parameter, the module that registered it) -> true to exempt from weight decay. */
export type NoDecayRule = (name: string, p: Tensor, owner: Module) => boolean;

/**
 * The default rule, open_clip's `exclude` widened to embeddings: 0-/1-D tensors
 * (biases, norm gains, scalars such as logit_scale), every parameter of a norm or
 * embedding module (by class name), and names with a 'bias' leaf, a module segment
 * starting with ln/bn or containing 'norm', 'embed', 'logit_scale'/'logitScale' or 'temperature'.
 */
export const defaultNoDecay: NoDecayRule = (name, p, owner) => {
  if (p.ndim < 2) return true;
  if (/norm|embed/i.test(owner.constructor.name)) return true;
  const parts = name.split('.');
  const leaf = parts[parts.length - 1]!;
  if (/bias$/i.test(leaf)) return true;
  if (parts.slice(0, -1).some((s) => /^(ln|bn)/i.test(s) || /norm/i.test(s))) return true;
  return /embed|logit_scale|logitscale|temperature/i.test(name);
};

export interface ParamGroupsOptions {
  /** Weight decay of the decayed group (default 0.01, AdamW's). */
  weightDecay?: number;
  /** Which parameters get no decay (default defaultNoDecay). */
  noDecay?: NoDecayRule;
  /** Leave frozen parameters out (default true). */
  trainableOnly?: boolean;
}

/**
 * Splits a module's parameters into [decay group, no-decay group (weightDecay 0)],
 * as open_clip's `exclude` rule. Group objects carry `names` for inspection.
 */
export function paramGroups(module: Module, options: ParamGroupsOptions = {}): (ParamGroup & { names: string[] })[] {
  if (!(module instanceof Module)) throw new TypeError(`paramGroups: expected a Module for module but received ${describe(module)}`);
  const weightDecay = options.weightDecay ?? 0.01;
  if (typeof weightDecay !== 'number' || !Number.isFinite(weightDecay) || weightDecay < 0)
    throw new RangeError(`paramGroups: expected a finite number >= 0 for weightDecay but received ${describe(weightDecay)}`);
  const rule = options.noDecay ?? defaultNoDecay;
  const trainableOnly = options.trainableOnly ?? true;
  // The owner of each parameter: the module whose own registry holds it.
  const owner = new Map<Tensor, Module>();
  for (const [, m] of module.namedModules())
    for (const [, p] of m.namedParameters(false)) if (!owner.has(p)) owner.set(p, m);
  const decay: ParamGroup & { names: string[] } = { params: [], names: [], weightDecay };
  const none: ParamGroup & { names: string[] } = { params: [], names: [], weightDecay: 0 };
  for (const [name, p] of module.namedParameters()) {
    if (trainableOnly && !p.requiresGrad) continue;
    const g = rule(name, p, owner.get(p) ?? module) ? none : decay;
    g.params.push(p);
    g.names.push(name);
  }
  return [decay, none];
}
