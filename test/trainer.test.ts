// The trainer (ts/train/trainer.ts): a tiny MLP (with dropout, so the generator matters) on
// synthetic data from a resumable source written here. Resuming after a simulated kill
// (an exception) and after a real one (SIGKILL of a child process) gives the same losses,
// bit for bit, as the uninterrupted run; run-folder files; clean stops; accumulation through
// the trainer; the logger and curves.svg.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Writable } from 'node:stream';
import { setGeneratorState, manualSeed, randn, full } from '../ts/graph/creation.js';
import { Tensor } from '../ts/graph/tensor.js';
import { slice } from '../ts/graph/ops/views.js';
import { Module } from '../ts/graph/module.js';
import { Linear } from '../ts/graph/nn.js';
import { infoNCE } from '../ts/objectives/itc.js';
import { train, resumableBatches, epochPermutation, type TrainResult } from '../ts/train/trainer.js';
import { accumulateContrastive } from '../ts/train/accumulate.js';
import { createLogger } from '../ts/train/logger.js';
import { renderCurves, readMetrics, niceTicks } from '../ts/train/plots.js';
import { latestCheckpoint, listCheckpoints } from '../ts/train/checkpoint.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const mod = (p: string) => JSON.stringify(pathToFileURL(join(root, p)).href);

// The run, as a module: imported here, and run as a script by the child processes.
const RUN = `
import { Module } from ${mod('ts/graph/module.js')};
import { Linear, Dropout } from ${mod('ts/graph/nn.js')};
import { tensor, randn, manualSeed } from ${mod('ts/graph/creation.js')};
import { relu, neg } from ${mod('ts/graph/ops/elementwise.js')};
import { mean } from ${mod('ts/graph/ops/reduce.js')};
import { logSoftmax } from ${mod('ts/graph/ops/softmax.js')};
import { gather } from ${mod('ts/graph/ops/gather.js')};
import { indexSelect } from ${mod('ts/graph/ops/gather.js')};
import { noGrad } from ${mod('ts/graph/autograd.js')};
import { clampLogitScale } from ${mod('ts/objectives/itc.js')};
import { train } from ${mod('ts/train/trainer.js')};

export class Net extends Module {
  constructor() {
    super();
    this.fc1 = this.module('fc1', new Linear(4, 16));
    this.drop = this.module('drop', new Dropout(0.2));
    this.fc2 = this.module('fc2', new Linear(16, 3));
    this.scale = this.param('scale', tensor([1], []));   // clamped after each step by a hook
  }
  forward(x) { return this.fc2.forward(this.drop.forward(relu(this.fc1.forward(x)))); }
}

// 48 samples, 3 classes; the source shuffles each epoch with its own LCG and resumes from { epoch, cursor, lcg }.
export class Source {
  constructor(batch = 8) {
    this.x = randn([48, 4], { seed: 11 });
    const v = this.x.toArray();
    this.y = Int32Array.from({ length: 48 }, (_, i) => (v[4 * i] + v[4 * i + 1] > 0 ? 1 : 0) + (v[4 * i + 2] > 0.5 ? 1 : 0));
    this.batch = batch; this.epoch = 0; this.cursor = 0; this.lcg = 12345; this.perm = this.shuffle();
  }
  shuffle() {
    const p = Array.from({ length: 48 }, (_, i) => i);
    let s = this.lcg;
    for (let i = 47; i > 0; i--) { s = (s * 1103515245 + 12345) % 2147483648; const j = s % (i + 1); [p[i], p[j]] = [p[j], p[i]]; }
    return p;
  }
  next() {
    if (this.cursor + this.batch > 48) { this.epoch++; this.cursor = 0; this.lcg = (this.lcg * 69069 + 1) % 2147483648; this.perm = this.shuffle(); }
    const idx = this.perm.slice(this.cursor, this.cursor + this.batch);
    this.cursor += this.batch;
    return { x: indexSelect(this.x, 0, tensor(Int32Array.from(idx))), y: tensor(Int32Array.from(idx.map((i) => this.y[i])), [idx.length, 1]) };
  }
  state() { return { epoch: this.epoch, cursor: this.cursor, lcg: this.lcg }; }
  setState(s) { this.epoch = s.epoch; this.cursor = s.cursor; this.lcg = s.lcg; this.perm = this.shuffle(); }
}

export function run({ dir, steps = 12, resume = false, initSeed = 1, killAt = null, throwAt = null, checkpointEvery = 4, signal, logger = false }) {
  manualSeed(initSeed);
  const model = new Net();
  return train({
    model, data: new Source(), steps, outDir: dir, resume, seed: 7, checkpointEvery, keepCheckpoints: 2,
    optimizer: { lr: 0.05, weightDecay: 0.01 }, schedule: { warmupSteps: 3, minLr: 0.001 }, clipGradNorm: 1.0,
    evalEvery: 5, eval: ({ model }) => ({ scale: model.scale.item() }), logger, signal, config: { model: 'tiny' },
    batchSize: 8,
    loss: (b) => {
      const logp = logSoftmax(model.forward(b.x), 1);
      const acc = noGrad(() => { const p = logp.toArray(); let ok = 0; const y = b.y.toArray();
        for (let i = 0; i < y.length; i++) { let best = 0; for (let c = 1; c < 3; c++) if (p[3 * i + c] > p[3 * i + best]) best = c; ok += best === y[i] ? 1 : 0; }
        return ok / y.length; });
      return { loss: neg(mean(gather(logp, 1, b.y))), metrics: { acc } };
    },
    afterStep: [({ step }) => { clampLogitScale(model.scale, 0.5); if (step + 1 === killAt) process.kill(process.pid, 'SIGKILL'); if (step + 1 === throwAt) throw new Error('simulated kill'); }],
  }).then((r) => ({ ...r, model }));
}

if (process.argv[2]) {
  const o = JSON.parse(process.argv[2]);
  run(o).then((r) => { console.log(JSON.stringify({ step: r.step, stopped: r.stopped, resumedFrom: r.resumedFrom })); });
}
`;

const work = mkdtempSync(join(tmpdir(), 'vlmkit-train-'));
test.after.always(() => rmSync(work, { recursive: true, force: true }));
const script = join(work, 'run.ts');
writeFileSync(script, RUN);
type Run = (o: Record<string, unknown>) => Promise<TrainResult & { model: Module }>;
const load = async () => (await import(pathToFileURL(script).href)) as { run: Run };

/** The fields that must match bitwise between runs (not throughput or wall time). */
function curve(dir: string): unknown[] {
  return readMetrics(join(dir, 'metrics.jsonl')).map((r) => {
    const { samplesPerSec, stepsPerSec, elapsed, ...rest } = r as Record<string, unknown>;
    void samplesPerSec; void stepsPerSec; void elapsed;
    return rest;
  });
}
const paramsHex = (m: Module) => m.parameters().map((p) => Buffer.from(p.toArray().buffer as ArrayBuffer).toString('hex')).join('|');

test.serial('resume after a simulated kill (exception) continues bit for bit', async (t) => {
  const { run } = await load();
  const full = join(work, 'full'), cut = join(work, 'cut');
  const a = await run({ dir: full });
  t.is(a.step, 12);
  t.is(a.stopped, 'completed');
  await t.throwsAsync(run({ dir: cut, throwAt: 6 }), { message: 'simulated kill' });
  t.is(latestCheckpoint(cut)!.step, 4);
  t.is(curve(cut).length, 6);  // the killed run logged steps 1..5 and the eval at 5 (it died in step 6)
  setGeneratorState({ seed: 999, offset: 64 });   // the resumed run must restore it
  const b = await run({ dir: cut, resume: true, initSeed: 12345 });   // different init: everything comes from the checkpoint
  t.is(b.resumedFrom, 4);
  t.is(b.step, 12);
  const ca = curve(full), cb = curve(cut);
  t.is(ca.length, 12 + 3);   // 12 steps, evals at 5, 10, 12
  t.deepEqual(cb, ca);
  t.is(paramsHex(b.model), paramsHex(a.model));
  // The losses are not constant (the comparison means something) and training helps.
  const losses = ca.filter((r) => (r as { type: string }).type === 'train').map((r) => (r as { loss: number }).loss);
  t.true(new Set(losses).size === losses.length);
  t.true(losses.slice(-3).reduce((s, v) => s + v, 0) < losses.slice(0, 3).reduce((s, v) => s + v, 0));
});

test('resume after a real kill (SIGKILL of a child process) continues bit for bit', (t) => {
  const child = (o: Record<string, unknown>) => spawnSync(process.execPath, ['--import', 'tsx', script, JSON.stringify(o)], {
    cwd: root, encoding: 'utf8', timeout: 120_000,
  });
  const full = join(work, 'child-full'), cut = join(work, 'child-cut');
  const a = child({ dir: full });
  t.is(a.status, 0, a.stderr);
  const k = child({ dir: cut, killAt: 10 });
  t.is(k.signal, 'SIGKILL', k.stderr);
  t.deepEqual(listCheckpoints(cut).map((c) => c.step), [4, 8]);
  const r = child({ dir: cut, resume: true, initSeed: 3 });
  t.is(r.status, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop()!), { step: 12, stopped: 'completed', resumedFrom: 8 });
  t.deepEqual(curve(cut), curve(full));
  t.is(curve(full).length, 15);
});

test('run folder: metrics.jsonl, config.json, checkpoints kept, curves.svg; a used folder needs resume', async (t) => {
  const { run } = await load();
  const dir = join(work, 'files');
  await run({ dir });
  const lines = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const first = lines[0];
  t.is(first.type, 'train');
  t.is(first.step, 1);
  for (const k of ['loss', 'lr', 'acc', 'gradNorm', 'samplesPerSec', 'stepsPerSec', 'elapsed']) t.is(typeof first[k], 'number', k);
  // warmup over 3 steps from lr 0.05: steps 0, 1, 2 get 0.05 * (s + 1) / 3
  const lrs = lines.filter((l) => l.type === 'train').map((l) => l.lr);
  [0.05 / 3, 0.1 / 3, 0.05].forEach((v, i) => t.true(Math.abs(lrs[i] - v) < 1e-15, `lr at step ${i}`));
  t.true(lrs[3] === 0.05 && lrs[4] < 0.05 && lrs[11] >= 0.001 && lrs[10] > lrs[11]);   // then cosine down to minLr
  t.deepEqual(lines.filter((l) => l.type === 'eval').map((l) => l.step), [5, 10, 12]);
  t.true(lines.filter((l) => l.type === 'eval').every((l) => l.scale <= 0.5));   // the after-step hook ran
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  t.deepEqual(cfg.config, { model: 'tiny' });
  t.is(cfg.train.steps, 12);
  t.is(cfg.train.optimizer.groups.length, 2);   // decay and no-decay groups
  t.deepEqual(cfg.train.optimizer.groups.map((g: { weightDecay: number }) => g.weightDecay), [0.01, 0]);
  t.deepEqual(listCheckpoints(dir).map((c) => c.step), [8, 12]);
  const svg = readFileSync(join(dir, 'curves.svg'), 'utf8');
  t.true(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  for (const s of ['>loss<', '>accuracy<', '>learning rate<', 'train acc', '<path d="M']) t.true(svg.includes(s), s);
  await t.throwsAsync(run({ dir }), { instanceOf: RangeError, message: /holds checkpoints \(latest: step 12\); pass resume: true/ });
  // Resuming a finished run does nothing more.
  const again = await run({ dir, resume: true });
  t.is(again.step, 12);
  t.is(again.resumedFrom, 12);
});

test('an abort stops cleanly with a checkpoint, and resuming from it matches too', async (t) => {
  const { run } = await load();
  const dir = join(work, 'abort');
  const ac = new AbortController();
  let seen = 0;
  const logger = { start() {}, progress(s: number) { seen = s; if (s === 6) ac.abort(); }, record() {}, eval() {}, info() {}, end() {} };
  const a = await run({ dir, signal: ac.signal, logger, checkpointEvery: 100 });
  t.is(a.stopped, 'interrupted');
  t.is(a.step, 6);
  t.is(seen, 6);
  t.deepEqual(listCheckpoints(dir).map((c) => c.step), [6]);
  await run({ dir, resume: true, checkpointEvery: 100 });
  t.deepEqual(curve(dir), curve(join(work, 'full')));
});

test('resumableBatches: epochs, shuffling, exhaustion and resume', async (t) => {
  const src = resumableBatches({ size: 10, batchSize: 4, seed: 3, get: (i) => i });
  const seen: number[][] = [];
  for (let i = 0; i < 5; i++) seen.push((await src.next())!);
  t.deepEqual(seen.map((b) => b.length), [4, 4, 4, 4, 4]);   // last incomplete batch dropped
  t.deepEqual([...seen[0]!, ...seen[1]!].sort((a, b) => a - b).length, 8);
  t.notDeepEqual(seen[0], seen[2]);
  const st = src.state();
  t.deepEqual(st, { epoch: 2, cursor: 4 });
  const next = await src.next();
  const other = resumableBatches({ size: 10, batchSize: 4, seed: 3, get: (i) => i });
  other.setState(st);
  t.deepEqual(await other.next(), next);
  t.deepEqual([...epochPermutation(10, 3, 1)].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const once = resumableBatches({ size: 5, batchSize: 2, epochs: 1, shuffle: false, dropLast: false, get: (i) => i });
  t.deepEqual([await once.next(), await once.next(), await once.next(), await once.next()], [[0, 1], [2, 3], [4], undefined]);
  t.throws(() => other.setState({ epoch: 0, cursor: 11 }), { instanceOf: RangeError, message: /cursor in \[0, 10\]/ });
  t.throws(() => resumableBatches({ size: 3, batchSize: 4, get: (i) => i }), { instanceOf: RangeError });
});

test('the trainer with contrastive accumulation (loss as a number) matches the big batch', async (t) => {
  class Towers extends Module {
    readonly i: Linear; readonly x: Linear; readonly s: Tensor;
    constructor() {
      super();
      this.i = this.module('i', new Linear(5, 4, { dtype: 'float64' }));
      this.x = this.module('x', new Linear(6, 4, { dtype: 'float64' }));
      this.s = this.param('s', full([], Math.log(10), { dtype: 'float64' }));
    }
  }
  const X = randn([8, 5], { dtype: 'float64', seed: 1 }), Y = randn([8, 6], { dtype: 'float64', seed: 2 });
  const data = () => ({ next: () => ({ x: X, y: Y }), state: () => null, setState: () => {} });
  const go = async (k: number) => {
    manualSeed(5);
    const m = new Towers();
    await train({
      model: m, data: data(), steps: 3, logger: false, optimizer: { lr: 0.01 },
      loss: (b) => {
        const n = 8 / k;
        const mbs = Array.from({ length: k }, (_, j) => ({ x: slice(b.x, 0, j * n, (j + 1) * n), y: slice(b.y, 0, j * n, (j + 1) * n) }));
        const r = accumulateContrastive({
          microBatches: mbs, features: (mb) => ({ image: m.i.forward(mb.x), text: m.x.forward(mb.y) }),
          loss: (im, tx) => infoNCE(im, tx, { logitScale: m.s, normalize: true }), shared: [m.s],
        });
        return { loss: r.loss, samples: r.samples };
      },
    });
    return m.parameters().map((p) => [...p.toArray()]).flat();
  };
  const one = await go(1), two = await go(2);
  t.true(one.every((v, i) => Math.abs(v - two[i]!) <= 1e-9), 'parameters after 3 steps');
});

test('bad options are clear errors before any work', async (t) => {
  const m = new Linear(2, 2);
  const data = { next: () => undefined, state: () => null, setState: () => {} };
  const base = { model: m, data, steps: 1, logger: false as const, loss: () => full([], 0) };
  await t.throwsAsync(train({ ...base, steps: -1 }), { instanceOf: RangeError, message: /integer >= 0 for steps/ });
  await t.throwsAsync(train({ ...base, model: {} as Module }), { instanceOf: TypeError, message: /Module for model/ });
  await t.throwsAsync(train({ ...base, data: {} as typeof data }), { instanceOf: TypeError, message: /data source/ });
  await t.throwsAsync(train({ ...base, evalEvery: 2 }), { instanceOf: TypeError, message: /eval function/ });
  await t.throwsAsync(train({ ...base, clipGradNorm: -1 }), { instanceOf: RangeError, message: /clipGradNorm/ });
  await t.throwsAsync(train({ ...base, resume: true }), { instanceOf: TypeError, message: /outDir to resume/ });
  const r = await train(base);
  t.is(r.stopped, 'exhausted');
  t.is(r.step, 0);
});

class Sink extends Writable {
  text = '';
  isTTY: boolean;
  columns = 200;
  constructor(tty: boolean) { super(); this.isTTY = tty; }
  override _write(c: Buffer, _e: string, cb: () => void) { this.text += c.toString(); cb(); }
}

test('logger: plain lines off a terminal, a bar redrawn in place on one', (t) => {
  const rec = { type: 'train' as const, step: 5, loss: 1.23456, lr: 0.001, acc: 0.5, samplesPerSec: 321.7 };
  const plain = new Sink(false);
  const lp = createLogger({ stream: plain });
  lp.start({ startStep: 0, totalSteps: 10, resumed: false });
  lp.progress(5, 10, 65);
  lp.record(rec);
  lp.eval({ type: 'eval', step: 5, recallI2T1: 0.25 });
  lp.end({ step: 10, stopped: 'completed', seconds: 3 });
  t.false(plain.text.includes('\r'));
  t.true(plain.text.includes('step 5/10 | loss 1.235 | acc 0.5 | lr 1.00e-3 | 321.7 samples/s | ETA 1m05s\n'), plain.text);
  t.true(plain.text.includes('eval @ step 5: recallI2T1 0.25\n'));
  const tty = new Sink(true);
  const lt = createLogger({ stream: tty, redrawMs: 0 });
  lt.start({ startStep: 0, totalSteps: 10, resumed: true });
  lt.record(rec);
  lt.progress(5, 10, 65);
  lt.info('hello');
  lt.end({ step: 10, stopped: 'completed', seconds: 3 });
  t.true(tty.text.includes('\r\x1b[2Kstep 5/10 [##########..........] 50% | loss 1.235 | acc 0.5 | lr 1.00e-3 | 321.7 samples/s | ETA 1m05s'), JSON.stringify(tty.text));
  t.true(tty.text.includes('\r\x1b[2Khello\n'));
  t.true(tty.text.startsWith('\r\x1b[2Kresuming at step 0 of 10'));
});

test('curves: panels only for what exists, breaks at non-finite values, nice ticks', (t) => {
  const tk = niceTicks(0, 1, 5);
  t.is(tk.length, 6);
  t.is(tk[0], 0);
  t.true(Math.abs(tk[5]! - 1) < 1e-12);
  t.deepEqual(niceTicks(3, 47, 4), [10, 20, 30, 40]);
  t.deepEqual(niceTicks(0.001, 0.0042, 3), [0.001, 0.002, 0.003, 0.004]);
  const svg = renderCurves([
    { type: 'train', step: 1, loss: 2, lr: 0.1 }, { type: 'train', step: 2, loss: NaN, lr: 0.1 }, { type: 'train', step: 3, loss: 1, lr: 0.05 },
    { type: 'eval', step: 3, loss: 1.5, recall1: 0.2 },
  ]);
  t.true(svg.includes('>eval recall1<') && svg.includes('>eval loss<') && svg.includes('>train loss<'));
  t.false(svg.includes('NaN'));
  t.is((svg.match(/<path d="M[^"]*M/g) ?? []).length, 1);  // the NaN breaks the train-loss line in two
  t.true(renderCurves([]).includes('no metrics yet'));
});
