// Learning-rate schedules as plain functions step -> lr (step = optimizer steps taken
// so far, 0-based, as open_clip's scheduler), and applyLr to write one into an optimizer.
import { describe } from '../creation.js';

export type LrSchedule = (step: number) => number;

/** Anything with parameter groups whose lr can be set (AdamW). */
export interface HasParamGroups {
  paramGroups: { lr: number }[];
}

function checkNonNeg(op: string, name: string, v: unknown, integer: boolean): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (integer && !Number.isInteger(v)))
    throw new RangeError(`${op}: expected a ${integer ? 'non-negative integer' : 'finite number >= 0'} for ${name} but received ${describe(v)}`);
  return v;
}

function checkStep(op: string, step: unknown): number {
  return checkNonNeg(op, 'step', step, true);
}

export interface WarmupCosineOptions {
  baseLr: number;
  warmupSteps: number;
  totalSteps: number;
  /** The floor the cosine decays to (default 0). */
  minLr?: number;
}

/**
 * open_clip's cosine_lr with a floor: linear warmup baseLr * (step + 1) / warmupSteps
 * for step < warmupSteps, then minLr + (baseLr - minLr) * (1 + cos(pi * e / es)) / 2
 * with e = step - warmupSteps, es = totalSteps - warmupSteps; minLr from totalSteps on.
 */
export function warmupCosine(options: WarmupCosineOptions): LrSchedule {
  const op = 'warmupCosine';
  if (options === null || typeof options !== 'object') throw new TypeError(`${op}: expected an options object but received ${describe(options)}`);
  const baseLr = checkNonNeg(op, 'baseLr', options.baseLr, false);
  const warmup = checkNonNeg(op, 'warmupSteps', options.warmupSteps, true);
  const total = checkNonNeg(op, 'totalSteps', options.totalSteps, true);
  const minLr = checkNonNeg(op, 'minLr', options.minLr ?? 0, false);
  if (total < warmup) throw new RangeError(`${op}: expected totalSteps >= warmupSteps (${warmup}) but received ${total}`);
  if (minLr > baseLr) throw new RangeError(`${op}: expected minLr <= baseLr (${baseLr}) but received ${minLr}`);
  return (step: number) => {
    checkStep(op, step);
    if (step < warmup) return (baseLr * (step + 1)) / warmup;
    if (step >= total) return minLr;
    const e = step - warmup, es = total - warmup;
    return minLr + 0.5 * (1 + Math.cos((Math.PI * e) / es)) * (baseLr - minLr);
  };
}

/** baseLr throughout, after an optional linear warmup (open_clip's const_lr). */
export function constantLr(options: { baseLr: number; warmupSteps?: number }): LrSchedule {
  const op = 'constantLr';
  if (options === null || typeof options !== 'object') throw new TypeError(`${op}: expected an options object but received ${describe(options)}`);
  const baseLr = checkNonNeg(op, 'baseLr', options.baseLr, false);
  const warmup = checkNonNeg(op, 'warmupSteps', options.warmupSteps ?? 0, true);
  return (step: number) => {
    checkStep(op, step);
    return step < warmup ? (baseLr * (step + 1)) / warmup : baseLr;
  };
}

/** Sets lr on every parameter group of the optimizer. Returns lr. */
export function applyLr(optimizer: HasParamGroups, lr: number): number {
  if (optimizer === null || typeof optimizer !== 'object' || !Array.isArray(optimizer.paramGroups))
    throw new TypeError(`applyLr: expected an optimizer with paramGroups for optimizer but received ${describe(optimizer)}`);
  checkNonNeg('applyLr', 'lr', lr, false);
  for (const g of optimizer.paramGroups) g.lr = lr;
  return lr;
}
