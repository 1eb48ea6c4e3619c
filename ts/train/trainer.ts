// The training loop: AdamW with parameter groups, an lr schedule, gradient-norm clipping,
// after-step hooks (e.g. clamping CLIP's logit scale), periodic evaluation and checkpoints,
// metrics.jsonl / config.json / curves.svg in the run folder, and resume. Resuming from a
// checkpoint restores everything the next steps depend on (parameters and buffers, AdamW
// moments and step counts, the global generator, the data position, the logging window), so
// the losses after resuming are bitwise those of the uninterrupted run on the same machine and
// thread count (kernels reduce in a fixed order for a fixed thread count). Each step runs under tidy; the loop yields to the event loop between steps so
// signals (Ctrl-C: checkpoint, then stop) and terminal redraws get through.
import { existsSync, mkdirSync, appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tensor } from '../graph/tensor.js';
import { Module } from '../graph/module.js';
import { tidy } from '../graph/scope.js';
import { noGrad } from '../graph/autograd.js';
import { describe, manualSeed, generatorState, setGeneratorState } from '../graph/creation.js';
import { AdamW, paramGroups as defaultParamGroups, type AdamWOptions, type ParamGroup } from '../graph/optim/adamw.js';
import { warmupCosine, constantLr, type LrSchedule } from '../graph/optim/schedule.js';
import { clipGradNorm as clipNorm } from '../graph/optim/clip.js';
import { saveCheckpoint, latestCheckpoint, loadCheckpoint, type CheckpointInfo } from './checkpoint.js';
import { writeFileAtomic } from './safetensors.js';
import { createLogger, silentLogger, type Logger, type StepRecord, type EvalRecord } from './logger.js';
import { readMetrics, writeCurves, type MetricRecord } from './plots.js';

// ---- data -----------------------------------------------------------------------------------

/**
 * A resumable source of batches. `state()` must describe the position after the batches
 * returned so far (not after any prefetched ones) as JSON; `setState()` goes back to it.
 * `next()` returns undefined when the data is exhausted.
 */
export interface DataSource<B> {
  next(): B | undefined | Promise<B | undefined>;
  state(): unknown;
  setState(state: unknown): void;
}

export interface ResumableBatchesOptions<B> {
  /** Number of samples. */
  size: number;
  batchSize: number;
  /** Reshuffle every epoch (default true), with this seed (default 0). */
  shuffle?: boolean;
  seed?: number;
  /** Drop the last incomplete batch of an epoch (default true). */
  dropLast?: boolean;
  /** Stop after this many epochs (default: never). */
  epochs?: number;
  /** Builds a batch from sample indices. */
  get: (indices: number[]) => B | Promise<B>;
}

/** splitmix32: a small, well-mixed integer hash to seed the shuffle of one epoch. */
function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** The permutation of [0, n) of one epoch (Fisher-Yates over a mulberry32 stream). */
export function epochPermutation(n: number, seed: number, epoch: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  let s = mix32(mix32(seed >>> 0) ^ mix32(epoch + 0x632be5ab));
  const rnd = () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    const t = p[i]!; p[i] = p[j]!; p[j] = t;
  }
  return p;
}

/** Epoch-shuffled batches of sample indices with a resumable position { epoch, cursor }. */
export function resumableBatches<B>(options: ResumableBatchesOptions<B>): DataSource<B> {
  const op = 'resumableBatches';
  if (options === null || typeof options !== 'object') throw new TypeError(`${op}: expected an options object but received ${describe(options)}`);
  const { size, batchSize, get } = options;
  if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`${op}: expected a positive integer for size but received ${describe(size)}`);
  if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > size)
    throw new RangeError(`${op}: expected an integer in [1, ${size}] for batchSize but received ${describe(batchSize)}`);
  if (typeof get !== 'function') throw new TypeError(`${op}: expected a function for get but received ${describe(get)}`);
  const shuffle = options.shuffle ?? true, seed = options.seed ?? 0, dropLast = options.dropLast ?? true;
  const epochs = options.epochs ?? Infinity;
  let epoch = 0, cursor = 0;
  let perm: Int32Array | null = null, permEpoch = -1;
  const order = () => {
    if (permEpoch !== epoch) {
      perm = shuffle ? epochPermutation(size, seed, epoch) : Int32Array.from({ length: size }, (_, i) => i);
      permEpoch = epoch;
    }
    return perm!;
  };
  return {
    next() {
      if (epoch >= epochs) return undefined;
      const left = size - cursor;
      if (left === 0 || (dropLast && left < batchSize)) {
        epoch++;
        cursor = 0;
        if (epoch >= epochs) return undefined;
      }
      const n = Math.min(batchSize, size - cursor);
      const idx = Array.from(order().subarray(cursor, cursor + n));
      cursor += n;
      return get(idx);
    },
    state() {
      return { epoch, cursor };
    },
    setState(s: unknown) {
      const st = s as { epoch?: unknown; cursor?: unknown };
      if (st === null || typeof st !== 'object' || !Number.isSafeInteger(st.epoch) || !Number.isSafeInteger(st.cursor) ||
        (st.epoch as number) < 0 || (st.cursor as number) < 0 || (st.cursor as number) > size)
        throw new RangeError(`${op}: expected { epoch, cursor } with cursor in [0, ${size}] for state but received ${JSON.stringify(s)}`);
      epoch = st.epoch as number;
      cursor = st.cursor as number;
    },
  };
}

// ---- options --------------------------------------------------------------------------------

/** What the loss function returns for one batch. */
export interface StepOutput {
  /** The scalar loss: the trainer calls backward() on it. A number means the gradients are already in .grad (accumulateContrastive). */
  loss: Tensor | number;
  /** Numbers to log (accuracies...), averaged over the logging window. */
  metrics?: Record<string, number>;
  /** Samples in the batch, for samples/s (else the batchSize option). */
  samples?: number;
}

export interface StepContext {
  /** Optimizer steps done before this one (0-based index of this step). */
  step: number;
  lr: number;
  model: Module;
  optimizer: AdamW;
}

export type AfterStepHook = (ctx: StepContext & { metrics: Record<string, number> }) => void;

export interface OptimizerSettings extends AdamWOptions {
  /** Parameter groups (default: decay / no-decay groups of the model, as open_clip). */
  paramGroups?: ParamGroup[] | ((model: Module) => ParamGroup[]);
}

/** warmupCosine from the optimizer's lr over the run's steps. */
export interface ScheduleSettings {
  kind?: 'cosine' | 'constant';
  warmupSteps?: number;
  minLr?: number;
}

export interface TrainOptions<B> {
  model: Module;
  /** Forward (and loss) for one batch; runs under tidy with gradients on. */
  loss: (batch: B, ctx: StepContext) => StepOutput | Tensor;
  data: DataSource<B>;
  /** Total optimizer steps of the run (a resumed run continues up to this). */
  steps: number;
  /** AdamW settings, or an AdamW of your own (over the model's parameters). */
  optimizer?: AdamW | OptimizerSettings;
  /** An lr function of the step, or cosine/constant settings (default: cosine, no warmup, to 0). */
  schedule?: LrSchedule | ScheduleSettings;
  /** Clip the gradients' total 2-norm to this (default: no clipping). */
  clipGradNorm?: number | null;
  /** Run under noGrad after each optimizer step. */
  afterStep?: AfterStepHook | AfterStepHook[];
  evalEvery?: number;
  /** Evaluation (model in eval mode; its synchronous part under noGrad): metric name -> number. */
  eval?: (ctx: { step: number; model: Module }) => Record<string, number> | Promise<Record<string, number>>;
  /** Save a checkpoint every this many steps (default: only at the end); 0: never. */
  checkpointEvery?: number;
  /** Keep the newest k checkpoints (default 3). */
  keepCheckpoints?: number;
  /** The run folder (config.json, metrics.jsonl, checkpoints, curves.svg); null: nothing written. */
  outDir?: string | null;
  /** Continue from the newest checkpoint in outDir (a fresh start when there is none). */
  resume?: boolean;
  /** Seeds the global generator at a fresh start (default: leave it as it is). */
  seed?: number;
  /** Log (and write a metrics.jsonl line) every this many steps (default 1). */
  logEvery?: number;
  /** Where progress goes (default: a progress bar on a terminal, plain lines otherwise); false: nowhere. */
  logger?: Logger | false;
  /** Saved in config.json and in each checkpoint. */
  config?: unknown;
  /** Samples per batch, for samples/s, when the loss does not say. */
  batchSize?: number | ((batch: B) => number);
  /** Stop cleanly (checkpoint, then return) when this is aborted. */
  signal?: AbortSignal;
  /** Stop cleanly on SIGINT/SIGTERM (a second one kills as usual). Default false. */
  handleSignals?: boolean;
  /** Write curves.svg at each checkpoint and at the end (default true with an outDir). */
  plot?: boolean;
}

export interface TrainResult {
  /** Optimizer steps done in total. */
  step: number;
  stopped: 'completed' | 'interrupted' | 'exhausted';
  resumedFrom: number | null;
  /** The last logged record, and the last evaluation. */
  last: StepRecord | null;
  lastEval: EvalRecord | null;
  checkpoint: CheckpointInfo | null;
  optimizer: AdamW;
  seconds: number;
}

// Sums over the logging window (saved in checkpoints so a resumed run logs the same averages).
interface Window {
  steps: number;
  loss: number;
  metrics: Record<string, number>;
  samples: number;
  seconds: number;
  gradNorm: number;
}
const emptyWindow = (): Window => ({ steps: 0, loss: 0, metrics: {}, samples: 0, seconds: 0, gradNorm: 0 });

function checkCount(op: string, name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)
    throw new RangeError(`${op}: expected an integer >= ${min} for ${name} but received ${describe(v)}`);
  return v;
}

function buildOptimizer(op: string, model: Module, o: AdamW | OptimizerSettings | undefined): { opt: AdamW; baseLr: number } {
  if (o instanceof AdamW) {
    const own = new Set(model.parameters());
    for (const g of o.paramGroups) for (const p of g.params)
      if (!own.has(p)) throw new RangeError(`${op}: expected the optimizer's parameters to belong to the model but one of shape [${p.shape.join(', ')}] does not`);
    return { opt: o, baseLr: o.paramGroups[0]!.lr };
  }
  const s = o ?? {};
  if (s === null || typeof s !== 'object') throw new TypeError(`${op}: expected an AdamW or AdamW settings for optimizer but received ${describe(s)}`);
  const { paramGroups: pg, ...settings } = s;
  let groups: ParamGroup[];
  if (typeof pg === 'function') groups = pg(model);
  else if (pg !== undefined) groups = pg;
  else groups = defaultParamGroups(model, { weightDecay: settings.weightDecay ?? 0.01 }).filter((g) => g.params.length > 0)
    .map((g) => ({ params: g.params, weightDecay: g.weightDecay }));
  const opt = new AdamW(groups, settings);
  return { opt, baseLr: settings.lr ?? 1e-3 };
}

function buildSchedule(op: string, s: LrSchedule | ScheduleSettings | undefined, baseLr: number, steps: number): LrSchedule {
  if (typeof s === 'function') return s;
  const o = s ?? {};
  if (o === null || typeof o !== 'object') throw new TypeError(`${op}: expected an lr function or { kind, warmupSteps, minLr } for schedule but received ${describe(o)}`);
  const kind = o.kind ?? 'cosine';
  if (kind === 'constant') return constantLr({ baseLr, warmupSteps: o.warmupSteps ?? 0 });
  if (kind !== 'cosine') throw new RangeError(`${op}: expected 'cosine' or 'constant' for schedule.kind but received ${describe(kind)}`);
  return warmupCosine({ baseLr, warmupSteps: Math.min(o.warmupSteps ?? 0, steps), totalSteps: steps, minLr: o.minLr ?? 0 });
}

/** JSON with non-finite numbers as null (JSON has no NaN). */
function jsonLine(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'number' && !Number.isFinite(x) ? null : x));
}

/** Keeps the metrics.jsonl lines of steps <= step (a resumed run rewrites what came after). */
function truncateMetrics(path: string, step: number): MetricRecord[] {
  const kept = readMetrics(path).filter((r) => r.step <= step);
  writeFileAtomic(path, kept.map((r) => jsonLine(r) + '\n').join(''));
  return kept;
}

const tick = () => new Promise<void>((r) => setImmediate(r));

/** Trains `model` for `steps` optimizer steps. See TrainOptions. */
export async function train<B>(options: TrainOptions<B>): Promise<TrainResult> {
  const op = 'train';
  if (options === null || typeof options !== 'object') throw new TypeError(`${op}: expected an options object but received ${describe(options)}`);
  const { model, data } = options;
  if (!(model instanceof Module)) throw new TypeError(`${op}: expected a Module for model but received ${describe(model)}`);
  if (typeof options.loss !== 'function') throw new TypeError(`${op}: expected a function for loss but received ${describe(options.loss)}`);
  if (data === null || typeof data !== 'object' || typeof data.next !== 'function' || typeof data.state !== 'function' || typeof data.setState !== 'function')
    throw new TypeError(`${op}: expected a data source { next(), state(), setState() } for data but received ${describe(data)}`);
  const steps = checkCount(op, 'steps', options.steps, 0);
  const logEvery = checkCount(op, 'logEvery', options.logEvery ?? 1, 1);
  const evalEvery = options.evalEvery === undefined ? 0 : checkCount(op, 'evalEvery', options.evalEvery, 0);
  const ckptEvery = options.checkpointEvery === undefined ? 0 : checkCount(op, 'checkpointEvery', options.checkpointEvery, 0);
  const ckptAtEnd = options.checkpointEvery !== 0;
  const keep = checkCount(op, 'keepCheckpoints', options.keepCheckpoints ?? 3, 1);
  if (evalEvery > 0 && typeof options.eval !== 'function') throw new TypeError(`${op}: expected an eval function with evalEvery ${evalEvery} but received ${describe(options.eval)}`);
  const clip = options.clipGradNorm ?? null;
  if (clip !== null && (typeof clip !== 'number' || !Number.isFinite(clip) || clip <= 0))
    throw new RangeError(`${op}: expected a finite number > 0 (or null) for clipGradNorm but received ${describe(clip)}`);
  const hooks = options.afterStep === undefined ? [] : Array.isArray(options.afterStep) ? options.afterStep : [options.afterStep];
  if (hooks.some((h) => typeof h !== 'function')) throw new TypeError(`${op}: expected functions for afterStep but received ${describe(options.afterStep)}`);
  if (options.seed !== undefined && (!Number.isSafeInteger(options.seed) || options.seed < 0))
    throw new RangeError(`${op}: expected a non-negative safe integer for seed but received ${describe(options.seed)}`);
  const outDir = options.outDir ?? null;
  if (outDir !== null && (typeof outDir !== 'string' || outDir === '')) throw new TypeError(`${op}: expected a directory path (or null) for outDir but received ${describe(outDir)}`);
  if (options.resume && outDir === null) throw new TypeError(`${op}: expected an outDir to resume from but received none`);
  const bs = options.batchSize;
  if (bs !== undefined && typeof bs !== 'function' && (!Number.isSafeInteger(bs) || bs < 1))
    throw new RangeError(`${op}: expected a positive integer or a function for batchSize but received ${describe(bs)}`);
  const logger = options.logger === false ? silentLogger : options.logger ?? createLogger();
  const plot = (options.plot ?? true) && outDir !== null;

  const { opt, baseLr } = buildOptimizer(op, model, options.optimizer);
  // Each group follows the schedule in proportion to its initial lr.
  const lrScale = opt.paramGroups.map((g) => (baseLr > 0 ? g.lr / baseLr : 1));
  const schedule = buildSchedule(op, options.schedule, baseLr, steps);
  const params = opt.paramGroups.flatMap((g) => g.params);

  const metricsPath = outDir ? join(outDir, 'metrics.jsonl') : null;
  let step = 0;
  let resumedFrom: number | null = null;
  let win = emptyWindow();
  let last: StepRecord | null = null;
  let lastEval: EvalRecord | null = null;

  const trainConfig = {
    steps, logEvery, evalEvery, checkpointEvery: ckptEvery, keepCheckpoints: keep, clipGradNorm: clip, seed: options.seed ?? null,
    optimizer: { kind: 'AdamW', groups: opt.paramGroups.map((g) => ({ lr: g.lr, weightDecay: g.weightDecay, betas: g.betas, eps: g.eps, tensors: g.params.length })) },
    schedule: typeof options.schedule === 'function' ? 'custom' : { kind: 'cosine', ...(options.schedule ?? {}) },
  };

  if (outDir !== null) {
    mkdirSync(outDir, { recursive: true });
    const ckpt = latestCheckpoint(outDir);
    if (ckpt && !options.resume)
      throw new RangeError(`${op}: expected an empty run folder but '${outDir}' holds checkpoints (latest: step ${ckpt.step}); pass resume: true to continue it or choose another outDir`);
    if (ckpt && options.resume) {
      const sc = loadCheckpoint(ckpt, { model, optimizer: opt });
      data.setState(sc.data);
      step = sc.step;
      resumedFrom = sc.step;
      const m = (sc.metrics ?? {}) as { window?: Window; last?: StepRecord | null; lastEval?: EvalRecord | null };
      if (m.window) win = m.window;
      last = m.last ?? null;
      lastEval = m.lastEval ?? null;
      truncateMetrics(metricsPath!, step);
    } else {
      if (options.seed !== undefined) manualSeed(options.seed);
      writeFileAtomic(metricsPath!, '');
    }
    const cfgPath = join(outDir, 'config.json');
    const cfg = { config: options.config ?? null, train: trainConfig };
    if (resumedFrom !== null && existsSync(cfgPath)) {
      let before: unknown = null;
      try { before = JSON.parse(readFileSync(cfgPath, 'utf8')); } catch { /* rewritten below */ }
      if (jsonLine(before) !== jsonLine(cfg)) logger.info(`note: the configuration differs from the one '${cfgPath}' was started with; using the new one`);
    }
    writeFileAtomic(cfgPath, JSON.stringify(cfg, null, 2) + '\n');
  } else if (options.seed !== undefined) {
    manualSeed(options.seed);
  }

  // Clean stop on request.
  let stopRequested = false;
  const onSignal = () => {
    if (stopRequested) process.exit(130);
    stopRequested = true;
    logger.info('stopping after this step (again to quit at once)');
  };
  const onAbort = () => { stopRequested = true; };
  if (options.handleSignals) { process.on('SIGINT', onSignal); process.on('SIGTERM', onSignal); }
  options.signal?.addEventListener('abort', onAbort);
  if (options.signal?.aborted) stopRequested = true;

  // The run's own generator stream: set before and taken back after each step's synchronous
  // part, so random draws elsewhere between steps (an async data pipeline, another run in the
  // same process) never shift it.
  let rng = generatorState();
  let checkpoint: CheckpointInfo | null = outDir ? latestCheckpoint(outDir) : null;
  const save = () => {
    if (outDir === null) return;
    checkpoint = saveCheckpoint({
      dir: outDir, step, model, optimizer: opt, config: { config: options.config ?? null, train: trainConfig },
      data: data.state(), metrics: { window: win, last, lastEval }, keep, rng,
    });
    if (plot) writeCurves(join(outDir, 'curves.svg'), metricsPath!);
  };
  const emit = (r: MetricRecord) => {
    if (metricsPath) appendFileSync(metricsPath, jsonLine(r) + '\n');
  };

  const t0 = Date.now();
  let stepSeconds: number | null = null;   // moving average, for the ETA
  let stopped: TrainResult['stopped'] = 'completed';
  logger.start({ startStep: step, totalSteps: steps, resumed: resumedFrom !== null, outDir });
  model.train();
  try {
    while (step < steps) {
      if (stopRequested) { stopped = 'interrupted'; break; }
      const ts = performance.now();
      const lr = schedule(step);
      opt.paramGroups.forEach((g, i) => { g.lr = lr * lrScale[i]!; });
      const batch = await data.next();
      if (batch === undefined) { stopped = 'exhausted'; break; }
      const ctx: StepContext = { step, lr, model, optimizer: opt };
      setGeneratorState(rng);
      opt.zeroGrad();
      const out = tidy(() => {
        const r = options.loss(batch, ctx);
        const o: StepOutput = r instanceof Tensor ? { loss: r } : r;
        if (o === null || typeof o !== 'object' || (!(o.loss instanceof Tensor) && typeof o.loss !== 'number'))
          throw new TypeError(`${op}: expected the loss function to return a scalar tensor or { loss, metrics? } but received ${describe(o)}`);
        let value: number;
        if (o.loss instanceof Tensor) {
          if (o.loss.size !== 1) throw new RangeError(`${op}: expected a scalar loss but received shape [${o.loss.shape.join(', ')}]`);
          value = o.loss.item();
          o.loss.backward();
        } else value = o.loss;
        return { value, metrics: { ...(o.metrics ?? {}) }, samples: o.samples };
      });
      const gradNorm = clip !== null ? clipNorm(params, clip) : null;
      opt.step();
      step += 1;
      const metrics = out.metrics;
      if (hooks.length) noGrad(() => { for (const h of hooks) h({ ...ctx, metrics }); });
      opt.zeroGrad();
      rng = generatorState();

      const samples = out.samples ?? (typeof bs === 'function' ? bs(batch) : bs);
      const dt = (performance.now() - ts) / 1000;
      stepSeconds = stepSeconds === null ? dt : 0.9 * stepSeconds + 0.1 * dt;
      win.steps += 1;
      win.loss += out.value;
      win.seconds += dt;
      if (samples !== undefined) win.samples += samples;
      if (gradNorm !== null) win.gradNorm += gradNorm;
      for (const [k, v] of Object.entries(metrics)) win.metrics[k] = (win.metrics[k] ?? 0) + v;
      if (step % logEvery === 0 || step === steps) {
        const n = win.steps;
        const rec: StepRecord = { type: 'train', step, loss: win.loss / n, lr };
        for (const [k, v] of Object.entries(win.metrics)) rec[k] = v / n;
        if (gradNorm !== null) rec.gradNorm = win.gradNorm / n;
        if (win.seconds > 0) {
          if (win.samples > 0) rec.samplesPerSec = win.samples / win.seconds;
          rec.stepsPerSec = n / win.seconds;
        }
        rec.elapsed = (Date.now() - t0) / 1000;
        last = rec;
        emit(rec);
        logger.record(rec);
        win = emptyWindow();
      }
      logger.progress(step, steps, stepSeconds * (steps - step));
      if (evalEvery > 0 && (step % evalEvery === 0 || step === steps)) {
        model.eval();
        setGeneratorState(rng);
        try {
          const res = await noGrad(() => options.eval!({ step, model }));
          lastEval = { type: 'eval', step, ...res };
        } finally {
          model.train();
          rng = generatorState();
        }
        emit(lastEval);
        logger.eval(lastEval);
      }
      if (ckptEvery > 0 && step % ckptEvery === 0 && step < steps) save();
      await tick();
    }
    if (ckptAtEnd && outDir !== null && (checkpoint === null || (checkpoint as CheckpointInfo).step !== step)) save();
    else if (plot) writeCurves(join(outDir!, 'curves.svg'), metricsPath!);
  } catch (e) {
    logger.end({ step, stopped: 'failed', seconds: (Date.now() - t0) / 1000 });
    throw e;
  } finally {
    if (options.handleSignals) { process.off('SIGINT', onSignal); process.off('SIGTERM', onSignal); }
    options.signal?.removeEventListener('abort', onAbort);
    opt.zeroGrad();
    setGeneratorState(rng);
  }
  const seconds = (Date.now() - t0) / 1000;
  logger.end({ step, stopped, seconds });
  return { step, stopped, resumedFrom, last, lastEval, checkpoint, optimizer: opt, seconds };
}
