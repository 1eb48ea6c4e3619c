// A whole run, as `vlmkit train` and `vlmkit eval` do it: the model of the config, its loss
// (with contrastive gradient accumulation when train.accumFreq > 1), the trainer loop with
// periodic held-out evaluation, and at the end eval.json and report.html in the run folder.
import { availableParallelism } from 'node:os';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { native } from '../native.js';
import { manualSeed } from '../graph/creation.js';
import { slice } from '../graph/ops/views.js';
import type { Tensor } from '../graph/tensor.js';
import { CLIP } from '../models/clip.js';
import { ALIGN } from '../models/align.js';
import type { Batch } from '../data/loader.js';
import { train, type StepOutput, type TrainResult } from '../train/trainer.js';
import { paramGroups, type ParamGroup } from '../graph/optim/adamw.js';
import { accumulateContrastive, splitMicroBatches } from '../train/accumulate.js';
import { latestCheckpoint, loadCheckpoint, resolveCheckpoint, type CheckpointInfo } from '../train/checkpoint.js';
import { writeFileAtomic } from '../train/safetensors.js';
import type { Logger } from '../train/logger.js';
import {
  classEmbeddings, embedLoader, groupsOf, readableClassName, retrievalRecall, zeroShotAccuracy,
  type RetrievalResult, type ZeroShotResult,
} from '../train/eval.js';
import { imageDataUri, writeReport, type ReportSample } from '../train/report.js';
import { buildRunData, evalLoader, loaderSource, trainLoaderOptions, type RunData } from './data.js';
import { resolveRunConfig, type RunConfig } from './config.js';
import { DataLoader } from '../data/loader.js';

export type RunModel = CLIP | ALIGN;

/** The run's model, initialised from train.seed (or the model section's own seed). */
export function buildModel(cfg: RunConfig): RunModel {
  manualSeed(cfg.train.seed);
  return cfg.model === 'clip' ? new CLIP(cfg.clip ?? {}) : new ALIGN(cfg.align ?? {});
}

export function parameterCount(model: RunModel): number {
  return model.parameters().reduce((n, p) => n + p.size, 0);
}

/** Sets the CPU threads (null: every core); returns the count in use. */
export function setThreads(n: number | null): number {
  native.setNumThreads(n ?? Math.max(1, availableParallelism()));
  return native.getNumThreads();
}

/** Sets the float32 matmul precision of a run (config train.precision). */
export function setPrecision(p: 'highest' | 'medium'): void {
  native.setFloat32MatmulPrecision(p);
}

/** The loss of one training batch: InfoNCE of the model, accumulated over accumFreq micro-batches. */
export function makeLoss(cfg: RunConfig, model: RunModel): (b: Batch) => StepOutput {
  const k = cfg.train.accumFreq;
  const features = (b: Batch, a: number, e: number) => {
    const whole = a === 0 && e === b.captions.length;
    const cut = (t: Tensor) => (whole ? t : slice(t, 0, a, e));
    const mask = b.attentionMask ? cut(b.attentionMask) : null;
    return {
      image: model.encodeImage(cut(b.images)),
      text: model.encodeText(cut(b.texts), { eot: b.eot.subarray(a, e), attentionMask: mask }),
    };
  };
  const extra = (): Record<string, number> => (model instanceof CLIP ? { logitScale: model.scale } : { temperature: model.temperature.item() });
  return (b) => {
    const B = b.captions.length;
    if (k === 1) {
      const f = features(b, 0, B);
      const r = model.contrastiveLoss(f.image, f.text);
      return { loss: r.loss, metrics: { accI2T: r.accI2T, accT2I: r.accT2I, ...extra() }, samples: B };
    }
    const r = accumulateContrastive({
      microBatches: splitMicroBatches(B, k), features: ([a, e]) => features(b, a, e),
      loss: (i, t) => model.contrastiveLoss(i, t), shared: model.sharedParameters,
    });
    return { loss: r.loss, metrics: { ...r.metrics, ...extra() }, samples: r.samples };
  };
}

export interface Evaluation {
  step: number;
  /** Flat metrics for metrics.jsonl (fractions in [0, 1]). */
  metrics: Record<string, number>;
  retrieval: RetrievalResult | null;
  zeroShot: ZeroShotResult | null;
  captions: string[];
  keys: string[];
  groups: Int32Array;
  /** Pixels of the rows kept for the report. */
  pixels: Map<number, Float32Array | Float64Array>;
  /** Rows shown in the report. */
  reportRows: number[];
  seconds: number;
  skipped: number;
}

/** Rows shown in the report: `count` spread evenly over `n`. */
function spread(n: number, count: number): number[] {
  const c = Math.min(n, count);
  return Array.from({ length: c }, (_, i) => Math.floor((i * n) / c));
}

/** Held-out retrieval (and zero-shot classification on emoji) of the model. */
export async function evaluate(cfg: RunConfig, data: RunData, model: RunModel, step: number, options: { report?: boolean } = {}): Promise<Evaluation | null> {
  if (!data.eval) return null;
  const t0 = performance.now();
  const expected = data.eval.kind === 'map' ? data.eval.size : cfg.eval.reportSamples;
  const wanted = new Set(options.report ? spread(expected, cfg.eval.reportSamples) : []);
  const set = await embedLoader(model, evalLoader(cfg, data), { keepPixels: (row) => wanted.has(row) });
  try {
    const groups = groupsOf(set.captions);
    const retrieval = retrievalRecall(set.image, set.text, { imageGroups: groups, textGroups: groups, ks: [1, 5, 10] });
    const metrics: Record<string, number> = {};
    for (const k of [1, 5, 10]) metrics[`i2t_recall@${k}`] = retrieval.i2t[k]!;
    for (const k of [1, 5, 10]) metrics[`t2i_recall@${k}`] = retrieval.t2i[k]!;
    let zeroShot: ZeroShotResult | null = null;
    if (cfg.eval.zeroShot && data.emojiEval) {
      const e = data.emojiEval;
      const classes = e.subcategoryNames.map(readableClassName);
      const labels = Int32Array.from(set.indices, (i) => e.subcategoryIds[i]!);
      const cls = classEmbeddings(model, data.tokenizer, classes, cfg.eval.templates);
      try {
        zeroShot = zeroShotAccuracy(set.image, cls, labels);
      } finally {
        cls.dispose();
      }
      metrics.zeroshot_accuracy = zeroShot.top1;
      metrics.zeroshot_top5_accuracy = zeroShot.top5;
    }
    const reportRows = [...wanted].filter((r) => set.pixels.has(r)).sort((a, b) => a - b);
    return {
      step, metrics, retrieval, zeroShot, captions: set.captions, keys: set.keys, groups, pixels: set.pixels, reportRows,
      seconds: (performance.now() - t0) / 1000, skipped: set.skipped,
    };
  } finally {
    set.image.dispose();
    set.text.dispose();
  }
}

const pct = (v: number | undefined) => (v === undefined ? '-' : `${(100 * v).toFixed(2)}%`);

/** The result table printed at the end of a run and by `vlmkit eval`. */
export function resultTable(ev: Evaluation): string {
  const r = ev.retrieval!;
  const lines = [
    `held-out retrieval (${r.images} images, ${r.texts} captions):`,
    '                 R@1      R@5      R@10',
    `  image->text  ${pct(r.i2t[1]).padStart(7)}  ${pct(r.i2t[5]).padStart(7)}  ${pct(r.i2t[10]).padStart(7)}`,
    `  text->image  ${pct(r.t2i[1]).padStart(7)}  ${pct(r.t2i[5]).padStart(7)}  ${pct(r.t2i[10]).padStart(7)}`,
  ];
  if (ev.zeroShot) lines.push(`zero-shot classification (${ev.zeroShot.classes} emoji subcategories): top-1 ${pct(ev.zeroShot.top1)}, top-5 ${pct(ev.zeroShot.top5)}`);
  return lines.join('\n');
}

export interface RunInfo {
  outDir: string;
  model: RunModel;
  data: RunData;
  steps: number;
  wallSeconds?: number | null;
  samplesPerSec?: number | null;
  threads: number;
  checkpoint?: CheckpointInfo | null;
}

/** Writes eval.json and report.html into the run folder. */
export async function writeRunOutputs(cfg: RunConfig, ev: Evaluation, info: RunInfo): Promise<{ report: string; evalJson: string }> {
  const out = info.outDir;
  const evalJson = join(out, 'eval.json');
  writeFileAtomic(evalJson, JSON.stringify({
    step: ev.step, metrics: ev.metrics, images: ev.retrieval?.images ?? 0, texts: ev.retrieval?.texts ?? 0,
    zeroShotClasses: ev.zeroShot?.classes ?? null, skipped: ev.skipped, seconds: ev.seconds, date: new Date().toISOString(),
  }, null, 2) + '\n');
  const size = info.data.imageSize, r = ev.retrieval!;
  const samples: ReportSample[] = [];
  for (const row of ev.reportRows) {
    const px = ev.pixels.get(row)!;
    const top: ReportSample['top'] = [];
    for (let p = 0; p < Math.min(5, r.kmax); p++) {
      const j = r.i2tTop[row * r.kmax + p]!;
      if (j < 0) break;
      top.push({ caption: ev.captions[j]!, correct: ev.groups[j] === ev.groups[row], score: r.i2tScores[row * r.kmax + p]! });
    }
    samples.push({ image: await imageDataUri(px, size, size, cfg.data.mean, cfg.data.std), caption: ev.captions[row]!, note: ev.keys[row], top });
  }
  const summary: [string, string][] = [
    ['model', `${cfg.model.toUpperCase()} '${cfg.name}', ${(parameterCount(info.model) / 1e6).toFixed(2)} M parameters`],
    ['data', info.data.description],
    ['steps', `${ev.step} of ${info.steps} (batch ${cfg.train.batchSize}${cfg.train.accumFreq > 1 ? ` in ${cfg.train.accumFreq} micro-batches` : ''})`],
  ];
  if (info.wallSeconds) summary.push(['wall time', `${(info.wallSeconds / 60).toFixed(1)} min (this process), ${info.threads} thread(s)`]);
  if (info.samplesPerSec) summary.push(['throughput', `${info.samplesPerSec.toFixed(1)} samples/s (last logging window)`]);
  if (info.checkpoint) summary.push(['checkpoint', info.checkpoint.weightsPath]);
  summary.push(['run folder', resolve(out)]);
  const report = join(out, 'report.html');
  writeReport(report, {
    title: `vlmkit ${cfg.model.toUpperCase()} run: ${cfg.name}`,
    summary,
    recall: { i2t: r.i2t, t2i: r.t2i, images: r.images, texts: r.texts },
    ...(ev.zeroShot ? { zeroShot: { top1: ev.zeroShot.top1, top5: ev.zeroShot.top5, classes: ev.zeroShot.classes, what: 'emoji subcategories (prompt ensemble)' } } : {}),
    samples,
    notes: [
      'Captions match when they are equal strings; identical captions of different images count as correct.',
      ...info.data.notes,
    ],
  }, join(out, 'curves.svg'));
  return { report, evalJson };
}

export interface TrainRunOptions {
  outDir: string;
  resume: boolean;
  logger?: Logger | false;
  /** Messages for the person running it (default: stderr). */
  log?: (s: string) => void;
  signal?: AbortSignal;
  handleSignals?: boolean;
}

export interface TrainRunResult {
  result: TrainResult;
  evaluation: Evaluation | null;
  report: string | null;
  threads: number;
}

/** Trains the run of `cfg` into outDir (resuming when asked), then evaluates and writes the report. */
export async function trainRun(cfg: RunConfig, o: TrainRunOptions): Promise<TrainRunResult> {
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const threads = setThreads(cfg.train.threads);
  setPrecision(cfg.train.precision);
  const data = await buildRunData(cfg);
  const model = buildModel(cfg);
  log(`${cfg.model.toUpperCase()} '${cfg.name}': ${(parameterCount(model) / 1e6).toFixed(2)} M parameters, ${threads} thread(s)`);
  log(`data: ${data.description}`);
  for (const n of data.notes) log(`note: ${n}`);
  const source = loaderSource((position) => new DataLoader({ ...trainLoaderOptions(cfg, data), ...(position ? { position } : {}) }));
  let last: Evaluation | null = null;
  const t = cfg.train;
  let result: TrainResult;
  try {
    result = await train<Batch>({
      model, data: source, steps: t.steps, loss: makeLoss(cfg, model),
      optimizer: {
        lr: t.lr, weightDecay: t.weightDecay, betas: t.betas, eps: t.eps,
        // open_clip's groups (no decay for gains, biases, embeddings, the temperature); the temperature at its own lr
        paramGroups: (m) => {
          const temp = new Set(model.sharedParameters);
          const groups: ParamGroup[] = paramGroups(m, { weightDecay: t.weightDecay }).map((g) => ({ params: g.params.filter((p) => !temp.has(p)), weightDecay: g.weightDecay }));
          if (temp.size && t.temperatureLrScale !== 1) groups.push({ params: [...temp], weightDecay: 0, lr: t.lr * t.temperatureLrScale });
          else if (temp.size) groups[1]!.params.push(...temp);
          return groups.filter((g) => g.params.length > 0);
        },
      },
      schedule: { kind: 'cosine', warmupSteps: t.warmupSteps, minLr: t.minLr },
      clipGradNorm: t.clipGradNorm, afterStep: () => model.afterStep(),
      evalEvery: data.eval ? (t.evalEvery > 0 ? t.evalEvery : t.steps) : 0,
      ...(data.eval ? {
        eval: async ({ step }: { step: number }) => {
          last = await evaluate(cfg, data, model, step, { report: step === t.steps });
          return last!.metrics;
        },
      } : {}),
      checkpointEvery: t.checkpointEvery, keepCheckpoints: t.keepCheckpoints, outDir: o.outDir, resume: o.resume, seed: t.seed,
      logEvery: t.logEvery, config: cfg, batchSize: t.batchSize, ...(o.logger !== undefined ? { logger: o.logger } : {}),
      ...(o.signal ? { signal: o.signal } : {}), handleSignals: o.handleSignals ?? false,
    });
  } finally {
    const skipped = source.loader.skipped;
    if (skipped.total > 0) log(`skipped ${skipped.total} training sample(s): ${Object.entries(skipped.reasons).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    source.close();
  }
  let evaluation: Evaluation | null = last;
  let report: string | null = null;
  if (data.eval && result.stopped !== 'interrupted') {
    if (evaluation === null || (evaluation as Evaluation).step !== result.step || (evaluation as Evaluation).reportRows.length === 0 && cfg.eval.reportSamples > 0)
      evaluation = await evaluate(cfg, data, model, result.step, { report: true });
    const samplesPerSec = typeof result.last?.samplesPerSec === 'number' ? result.last.samplesPerSec : null;
    report = (await writeRunOutputs(cfg, evaluation!, {
      outDir: o.outDir, model, data, steps: t.steps, wallSeconds: result.seconds, samplesPerSec, threads, checkpoint: result.checkpoint,
    })).report;
  }
  return { result, evaluation, report, threads };
}

/** The run config saved in a run folder's config.json (as the trainer wrote it). */
export function readRunConfig(runDir: string): RunConfig {
  const path = join(runDir, 'config.json');
  if (!existsSync(path)) throw new RangeError(`vlmkit: expected a run folder with config.json but '${runDir}' has none`);
  let saved: { config?: unknown };
  try {
    saved = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new SyntaxError(`vlmkit: expected valid JSON in '${path}' but it does not parse: ${(e as Error).message}`);
  }
  if (saved === null || typeof saved !== 'object' || saved.config === null || typeof saved.config !== 'object')
    throw new TypeError(`vlmkit: expected '${path}' to hold { config: <run config> } (written by vlmkit train) but it does not`);
  return resolveRunConfig(saved.config);
}

/** `vlmkit eval RUN_DIR`: the newest (or a given) checkpoint of a run, evaluated on its held-out data. */
export async function evalRun(runDir: string, o: { step?: number; threads?: number | null; log?: (s: string) => void } = {}): Promise<{ evaluation: Evaluation; report: string; checkpoint: CheckpointInfo }> {
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const cfg = readRunConfig(runDir);
  if (!latestCheckpoint(runDir)) throw new RangeError(`vlmkit eval: expected a checkpoint in '${runDir}' but found none (has the run saved one yet?)`);
  const threads = setThreads(o.threads ?? cfg.train.threads);
  setPrecision(cfg.train.precision);
  const data = await buildRunData(cfg);
  if (!data.eval) throw new RangeError(`vlmkit eval: expected evaluation data for the run in '${runDir}' but its config has none (data.evalSource)`);
  const model = buildModel(cfg);
  const sc = loadCheckpoint(runDir, { model, restoreRng: false, step: o.step ?? 'latest' });
  log(`evaluating ${cfg.model.toUpperCase()} '${cfg.name}' at step ${sc.step} on ${data.description}`);
  const ev = (await evaluate(cfg, data, model, sc.step, { report: true }))!;
  const info = resolveCheckpoint(runDir, sc.step);
  const { report } = await writeRunOutputs(cfg, ev, { outDir: runDir, model, data, steps: cfg.train.steps, threads, checkpoint: info });
  return { evaluation: ev, report, checkpoint: info };
}
