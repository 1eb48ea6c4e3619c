// Checkpoints: `<dir>/step-<n>.safetensors` holds the tensors (model parameters and buffers
// under "model.<name>", AdamW moments under "optim.<i>.m" / "optim.<i>.v", i the parameter's
// position in the optimizer's groups) and `<dir>/step-<n>.json`, the sidecar, everything else:
// step, config, the optimizer's scalar state, the generator state, the data position, metrics,
// and the weights file's size and SHA-256. Both are written atomically (temporary file in the
// same directory, fsync, rename, fsync of the directory) and the sidecar last: a checkpoint
// exists only once its sidecar does, so a run killed while saving leaves the previous ones intact.
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { join, resolve, basename, dirname } from 'node:path';
import { Tensor } from '../graph/tensor.js';
import { Module } from '../graph/module.js';
import { AdamW, type AdamWStateDict } from '../graph/optim/adamw.js';
import { describe, generatorState, setGeneratorState } from '../graph/creation.js';
import { saveSafetensors, loadSafetensors, writeFileAtomic, fsyncDir } from './safetensors.js';

export const CHECKPOINT_FORMAT = 'vlmkit-checkpoint';
export const CHECKPOINT_VERSION = 1;

export interface GeneratorState { seed: number; offset: number }

/** The optimizer's state that is not a tensor. */
export interface OptimizerScalars {
  kind: 'AdamW';
  paramGroups: AdamWStateDict['paramGroups'];
  /** Update count of each parameter that has moments, by position. */
  steps: Record<string, number>;
}

/** The JSON sidecar of a checkpoint. */
export interface CheckpointSidecar {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  step: number;
  /** The tensors file (a name in the same directory), its size and SHA-256. */
  weights: { file: string; bytes: number; sha256: string };
  /** Names of the model tensors, in state-dict order. */
  modelKeys: string[];
  optimizer: OptimizerScalars | null;
  rng: GeneratorState;
  config?: unknown;
  /** Where the data source stands (what its state() returned). */
  data?: unknown;
  metrics?: unknown;
  extra?: unknown;
  savedAt: string;
}

export interface CheckpointInfo {
  step: number;
  weightsPath: string;
  sidecarPath: string;
}

export interface SaveCheckpointOptions {
  dir: string;
  step: number;
  model: Module;
  optimizer?: AdamW | null;
  config?: unknown;
  data?: unknown;
  metrics?: unknown;
  extra?: unknown;
  /** Generator state to record (default: the global generator's now). */
  rng?: GeneratorState;
  /** Keep only the newest k checkpoints (default: keep all). */
  keep?: number;
}

const NAME = /^step-(\d+)\.(json|safetensors)$/;
const TEMP = /^\.step-\d+\.(json|safetensors)\.tmp-(\d+)-/;

export function checkpointPaths(dir: string, step: number): CheckpointInfo {
  return { step, weightsPath: join(dir, `step-${step}.safetensors`), sidecarPath: join(dir, `step-${step}.json`) };
}

function checkDir(op: string, dir: unknown): string {
  if (typeof dir !== 'string' || dir === '') throw new TypeError(`${op}: expected a directory path for dir but received ${describe(dir)}`);
  return dir;
}

function checkStep(op: string, step: unknown): number {
  if (typeof step !== 'number' || !Number.isSafeInteger(step) || step < 0)
    throw new RangeError(`${op}: expected a non-negative integer for step but received ${describe(step)}`);
  return step;
}

/** Saves model (+ optimizer) state and the sidecar; then prunes to the newest `keep`. */
export function saveCheckpoint(options: SaveCheckpointOptions): CheckpointInfo {
  const op = 'saveCheckpoint';
  if (options === null || typeof options !== 'object') throw new TypeError(`${op}: expected an options object but received ${describe(options)}`);
  const dir = checkDir(op, options.dir);
  const step = checkStep(op, options.step);
  if (!(options.model instanceof Module)) throw new TypeError(`${op}: expected a Module for model but received ${describe(options.model)}`);
  const opt = options.optimizer ?? null;
  if (opt !== null && !(opt instanceof AdamW)) throw new TypeError(`${op}: expected an AdamW or null for optimizer but received ${describe(opt)}`);
  if (options.keep !== undefined && (!Number.isSafeInteger(options.keep) || options.keep < 1))
    throw new RangeError(`${op}: expected a positive integer for keep but received ${describe(options.keep)}`);
  const rng = options.rng ?? generatorState();

  const tensors = new Map<string, Tensor>();
  const modelKeys: string[] = [];
  for (const [k, t] of Object.entries(options.model.stateDict())) {
    tensors.set(`model.${k}`, t);
    modelKeys.push(k);
  }
  let optimizer: OptimizerScalars | null = null;
  if (opt) {
    const sd = opt.stateDict();
    const steps: Record<string, number> = {};
    for (const [i, s] of Object.entries(sd.state)) {
      tensors.set(`optim.${i}.m`, s.m);
      tensors.set(`optim.${i}.v`, s.v);
      steps[i] = s.step;
    }
    optimizer = { kind: 'AdamW', paramGroups: sd.paramGroups, steps };
  }

  mkdirSync(dir, { recursive: true });
  const info = checkpointPaths(dir, step);
  const w = saveSafetensors(info.weightsPath, tensors, { format: CHECKPOINT_FORMAT, step: String(step) });
  const sidecar: CheckpointSidecar = {
    format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step,
    weights: { file: basename(info.weightsPath), bytes: w.bytes, sha256: w.sha256 },
    modelKeys, optimizer, rng: { seed: rng.seed, offset: rng.offset },
    ...(options.config !== undefined ? { config: options.config } : {}),
    ...(options.data !== undefined ? { data: options.data } : {}),
    ...(options.metrics !== undefined ? { metrics: options.metrics } : {}),
    ...(options.extra !== undefined ? { extra: options.extra } : {}),
    savedAt: new Date().toISOString(),
  };
  writeFileAtomic(info.sidecarPath, JSON.stringify(sidecar, null, 1) + '\n');
  if (options.keep !== undefined) pruneCheckpoints(dir, options.keep);
  return info;
}

/** The complete checkpoints in dir (weights and sidecar both present), oldest first. */
export function listCheckpoints(dir: string): CheckpointInfo[] {
  checkDir('listCheckpoints', dir);
  if (!existsSync(dir)) return [];
  const files = new Set(readdirSync(dir));
  const out: CheckpointInfo[] = [];
  for (const f of files) {
    const m = NAME.exec(f);
    if (!m || m[2] !== 'json') continue;
    const step = Number(m[1]);
    if (!Number.isSafeInteger(step) || f !== `step-${step}.json`) continue;  // no leading zeros
    if (files.has(`step-${step}.safetensors`)) out.push(checkpointPaths(dir, step));
  }
  return out.sort((a, b) => a.step - b.step);
}

/** The newest complete checkpoint in dir, or null. */
export function latestCheckpoint(dir: string): CheckpointInfo | null {
  const all = listCheckpoints(dir);
  return all.length ? all[all.length - 1]! : null;
}

function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Keeps the newest `keep` complete checkpoints; removes older ones (sidecar first, so a
 * half-removed one is never taken for complete), weights files without a sidecar older than
 * the newest checkpoint, and temporary files left by dead processes. Returns the removed paths.
 */
export function pruneCheckpoints(dir: string, keep: number): string[] {
  checkDir('pruneCheckpoints', dir);
  if (!Number.isSafeInteger(keep) || keep < 1) throw new RangeError(`pruneCheckpoints: expected a positive integer for keep but received ${describe(keep)}`);
  const all = listCheckpoints(dir);
  const removed: string[] = [];
  const rm = (p: string) => {
    try {
      unlinkSync(p);
      removed.push(p);
    } catch { /* already gone */ }
  };
  for (const c of all.slice(0, Math.max(0, all.length - keep))) {
    rm(c.sidecarPath);
    rm(c.weightsPath);
  }
  const newest = all.length ? all[all.length - 1]!.step : -1;
  const complete = new Set(all.map((c) => c.step));
  for (const f of readdirSync(dir)) {
    const m = NAME.exec(f);
    if (m && m[2] === 'safetensors' && !complete.has(Number(m[1])) && Number(m[1]) < newest) rm(join(dir, f));
    const t = TEMP.exec(f);
    if (t && !pidAlive(Number(t[2]))) rm(join(dir, f));
  }
  if (removed.length) fsyncDir(dir);
  return removed;
}

// ---- reading and restoring ------------------------------------------------------------------

/** A checkpoint directory (its latest), a directory and a step, or a path to either file. */
export function resolveCheckpoint(where: string | CheckpointInfo, step?: number | 'latest'): CheckpointInfo {
  const op = 'resolveCheckpoint';
  if (where !== null && typeof where === 'object' && typeof where.sidecarPath === 'string') return where;
  if (typeof where !== 'string' || where === '') throw new TypeError(`${op}: expected a checkpoint directory or file path but received ${describe(where)}`);
  const m = NAME.exec(basename(where));
  if (m) return checkpointPaths(dirname(where), Number(m[1]));
  if (!existsSync(where) || !statSync(where).isDirectory())
    throw new RangeError(`${op}: expected a checkpoint directory or a step-<n>.json / step-<n>.safetensors file but '${where}' is neither`);
  if (step === undefined || step === 'latest') {
    const c = latestCheckpoint(where);
    if (!c) throw new RangeError(`${op}: expected a checkpoint (step-<n>.json with its step-<n>.safetensors) in '${where}' but found none`);
    return c;
  }
  checkStep(op, step);
  const c = listCheckpoints(where).find((x) => x.step === step);
  if (!c) throw new RangeError(`${op}: expected a complete checkpoint for step ${step} in '${where}' but found none (steps: ${listCheckpoints(where).map((x) => x.step).join(', ') || 'none'})`);
  return c;
}

/** Parses and checks a sidecar file. */
export function readSidecar(path: string): CheckpointSidecar {
  let s: CheckpointSidecar;
  try {
    s = JSON.parse(readFileSync(path, 'utf8')) as CheckpointSidecar;
  } catch (e) {
    throw new RangeError(`readSidecar: expected a JSON checkpoint sidecar in '${path}' but it does not parse (${(e as Error).message})`);
  }
  const bad = (what: string, v: unknown): never => {
    throw new RangeError(`readSidecar: expected ${what} in '${path}' but received ${describe(v)}`);
  };
  if (s === null || typeof s !== 'object') bad('a JSON object', s);
  if (s.format !== CHECKPOINT_FORMAT) bad(`format '${CHECKPOINT_FORMAT}'`, s.format);
  if (s.version !== CHECKPOINT_VERSION) bad(`version ${CHECKPOINT_VERSION}`, s.version);
  if (!Number.isSafeInteger(s.step) || s.step < 0) bad('a non-negative integer step', s.step);
  if (!s.weights || typeof s.weights.file !== 'string' || typeof s.weights.sha256 !== 'string') bad('weights { file, bytes, sha256 }', s.weights);
  if (!s.rng || !Number.isSafeInteger(s.rng.seed) || !Number.isSafeInteger(s.rng.offset)) bad('rng { seed, offset }', s.rng);
  if (!Array.isArray(s.modelKeys)) bad('modelKeys', s.modelKeys);
  return s;
}

export interface LoadedCheckpoint {
  info: CheckpointInfo;
  sidecar: CheckpointSidecar;
  /** Model tensors by state-dict name (the caller owns and disposes them). */
  model: Map<string, Tensor>;
  /** Optimizer state as AdamW.loadStateDict takes it, or null (tensors owned by the caller). */
  optimizer: AdamWStateDict | null;
}

/** Reads a checkpoint without applying it; verifies the weights against the sidecar's SHA-256. */
export function readCheckpoint(where: string | CheckpointInfo, step?: number | 'latest'): LoadedCheckpoint {
  const info = resolveCheckpoint(where, step);
  const sidecar = readSidecar(info.sidecarPath);
  const weightsPath = join(dirname(info.sidecarPath), sidecar.weights.file);
  const file = loadSafetensors(weightsPath);
  const model = new Map<string, Tensor>();
  const moments = new Map<string, { m?: Tensor; v?: Tensor }>();
  try {
    if (file.sha256 !== sidecar.weights.sha256 || file.bytes !== sidecar.weights.bytes)
      throw new RangeError(`readCheckpoint: expected '${weightsPath}' to match its sidecar (${sidecar.weights.bytes} bytes, sha256 ${sidecar.weights.sha256.slice(0, 12)}…) but it has ${file.bytes} bytes, sha256 ${file.sha256.slice(0, 12)}…`);
    for (const [name, t] of file.tensors) {
      const om = /^optim\.(\d+)\.(m|v)$/.exec(name);
      if (name.startsWith('model.')) model.set(name.slice(6), t);
      else if (om) {
        const e = moments.get(om[1]!) ?? {};
        e[om[2] as 'm' | 'v'] = t;
        moments.set(om[1]!, e);
      } else throw new RangeError(`readCheckpoint: expected tensor names 'model.<name>' or 'optim.<i>.m|v' in '${weightsPath}' but received '${name}'`);
    }
    let optimizer: AdamWStateDict | null = null;
    if (sidecar.optimizer) {
      const state: AdamWStateDict['state'] = {};
      for (const [i, n] of Object.entries(sidecar.optimizer.steps)) {
        const e = moments.get(i);
        if (!e?.m || !e.v) throw new RangeError(`readCheckpoint: expected optim.${i}.m and optim.${i}.v in '${weightsPath}' but one is missing`);
        state[Number(i)] = { step: n, m: e.m, v: e.v };
      }
      for (const i of moments.keys())
        if (!(i in sidecar.optimizer.steps)) throw new RangeError(`readCheckpoint: expected no optimizer state for parameter ${i} (the sidecar has none) but '${weightsPath}' holds it`);
      optimizer = { state, paramGroups: sidecar.optimizer.paramGroups };
    } else if (moments.size) {
      throw new RangeError(`readCheckpoint: expected no optimizer tensors (the sidecar has no optimizer) but '${weightsPath}' holds some`);
    }
    return { info, sidecar, model, optimizer };
  } catch (e) {
    for (const t of file.tensors.values()) t.dispose();
    throw e;
  }
}

export interface LoadCheckpointOptions {
  step?: number | 'latest';
  model?: Module;
  optimizer?: AdamW | null;
  /** Restore the global generator's state (default true). */
  restoreRng?: boolean;
  /** Missing or unexpected model keys are an error (default true). */
  strict?: boolean;
}

/**
 * Loads a checkpoint into a model, an optimizer and the global generator (each when given /
 * asked). Everything is read and checked before anything is changed. Returns the sidecar.
 */
export function loadCheckpoint(where: string | CheckpointInfo, options: LoadCheckpointOptions = {}): CheckpointSidecar {
  const op = 'loadCheckpoint';
  if (options.model !== undefined && !(options.model instanceof Module))
    throw new TypeError(`${op}: expected a Module for model but received ${describe(options.model)}`);
  const opt = options.optimizer ?? null;
  if (opt !== null && !(opt instanceof AdamW)) throw new TypeError(`${op}: expected an AdamW for optimizer but received ${describe(opt)}`);
  const c = readCheckpoint(where, options.step);
  try {
    if (opt && !c.optimizer) throw new RangeError(`${op}: expected optimizer state in '${c.info.sidecarPath}' but the checkpoint has none`);
    // The model's checks run first (keys, shapes, dtypes) so that a mismatch changes nothing;
    // AdamW.loadStateDict checks everything before it replaces anything.
    if (options.model) checkModel(op, options.model, c.model, options.strict ?? true, c.info.weightsPath);
    if (opt && c.optimizer) opt.loadStateDict(c.optimizer);
    if (options.model) options.model.loadStateDict(c.model, { strict: options.strict ?? true });
    if (options.restoreRng ?? true) setGeneratorState(c.sidecar.rng);
    return c.sidecar;
  } finally {
    for (const t of c.model.values()) t.dispose();
    if (c.optimizer) for (const s of Object.values(c.optimizer.state)) { s.m.dispose(); s.v.dispose(); }
  }
}

function checkModel(op: string, model: Module, saved: Map<string, Tensor>, strict: boolean, file: string): void {
  const own = model.stateDict();
  if (strict) {
    const missing = Object.keys(own).filter((k) => !saved.has(k));
    const unexpected = [...saved.keys()].filter((k) => !(k in own));
    if (missing.length || unexpected.length)
      throw new RangeError(`${op}: expected the checkpoint '${file}' to match ${model.constructor.name} but` +
        (missing.length ? ` it lacks ${missing.map((k) => `'${k}'`).join(', ')}` : '') +
        (missing.length && unexpected.length ? ' and' : '') +
        (unexpected.length ? ` it has unexpected ${unexpected.map((k) => `'${k}'`).join(', ')}` : ''));
  }
  for (const [k, dst] of Object.entries(own)) {
    const src = saved.get(k);
    if (!src) continue;
    if (src.shape.length !== dst.shape.length || src.shape.some((d, i) => d !== dst.shape[i]))
      throw new RangeError(`${op}: expected shape [${dst.shape.join(', ')}] for '${k}' but the checkpoint has [${src.shape.join(', ')}]`);
    if (src.dtype !== dst.dtype) throw new TypeError(`${op}: expected a ${dst.dtype} tensor for '${k}' but the checkpoint has ${src.dtype}`);
  }
}

/** Absolute path of a checkpoint's sidecar (for logs). */
export function describeCheckpoint(c: CheckpointInfo): string {
  return resolve(c.sidecarPath);
}
