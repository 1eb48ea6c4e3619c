// Contrastive gradient accumulation (ts/train/accumulate.ts): k micro-batches give the
// gradients of one big batch (float64, 1e-10), with the fused infoNCE and with a contrastive
// loss composed from plain ops; the logit scale counted once; dropout masks replayed.
import test from 'ava';
import { tensor, randn, manualSeed, generatorState, setGeneratorState, full } from '../ts/graph/creation.js';
import { Tensor } from '../ts/graph/tensor.js';
import { tidy } from '../ts/graph/scope.js';
import { native } from '../ts/native.js';
import { concat, slice, transpose } from '../ts/graph/ops/views.js';
import { matmul } from '../ts/graph/ops/matmul.js';
import { exp, mul, add, neg, scale } from '../ts/graph/ops/elementwise.js';
import { mean } from '../ts/graph/ops/reduce.js';
import { logSoftmax } from '../ts/graph/ops/softmax.js';
import { gather } from '../ts/graph/ops/gather.js';
import { l2Normalize } from '../ts/graph/ops/normalize.js';
import { dropout } from '../ts/graph/ops/dropout.js';
import { Module } from '../ts/graph/module.js';
import { Linear } from '../ts/graph/nn.js';
import { infoNCE } from '../ts/objectives/itc.js';
import { accumulateContrastive, splitMicroBatches } from '../ts/train/accumulate.js';

const f64 = { dtype: 'float64' as const };

class TwoTower extends Module {
  readonly image: Linear;
  readonly text: Linear;
  readonly logitScale: Tensor;
  constructor(readonly drop = 0) {
    super();
    this.image = this.module('image', new Linear(5, 4, f64));
    this.text = this.module('text', new Linear(6, 4, f64));
    this.logitScale = this.param('logitScale', full([], Math.log(1 / 0.07), f64));
  }
  features(x: Tensor, y: Tensor): { image: Tensor; text: Tensor } {
    const i = this.image.forward(x);
    return { image: this.drop ? dropout(i, this.drop) : i, text: this.text.forward(y) };
  }
}

// Symmetric CLIP loss from plain ops (independent of the fused kernel).
function composedLoss(image: Tensor, text: Tensor, logitScale: Tensor): Tensor {
  const B = image.shape[0]!;
  const logits = mul(matmul(l2Normalize(image), transpose(l2Normalize(text))), exp(logitScale));
  const labels = tensor(Int32Array.from({ length: B }, (_, i) => i), [B, 1]);
  const ce = (l: Tensor) => neg(mean(gather(logSoftmax(l, 1), 1, labels)));
  return scale(add(ce(logits), ce(transpose(logits))), 0.5);
}
const fusedLoss = (image: Tensor, text: Tensor, logitScale: Tensor) => infoNCE(image, text, { logitScale, normalize: true }).loss;

function gradsOf(m: Module): Map<string, Float64Array> {
  return new Map(m.namedParameters().map(([n, p]) => [n, Float64Array.from(p.grad!.toArray())]));
}

function maxDiff(a: Map<string, Float64Array>, b: Map<string, Float64Array>): number {
  let d = 0;
  for (const [k, x] of a) {
    const y = b.get(k)!;
    for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!) / Math.max(1, Math.abs(y[i]!)));
  }
  return d;
}

function setup(seed: number, B: number, drop = 0) {
  manualSeed(seed);
  const model = new TwoTower(drop);
  const x = randn([B, 5], f64), y = randn([B, 6], f64);
  return { model, x, y };
}

type LossFn = (i: Tensor, t: Tensor, s: Tensor) => Tensor;

function bigBatch(model: TwoTower, x: Tensor, y: Tensor, loss: LossFn): { loss: number; grads: Map<string, Float64Array> } {
  model.zeroGrad();
  const v = tidy(() => {
    const f = model.features(x, y);
    const l = loss(f.image, f.text, model.logitScale);
    l.backward();
    return l.item();
  });
  return { loss: v, grads: gradsOf(model) };
}

function accumulated(model: TwoTower, x: Tensor, y: Tensor, loss: LossFn, k: number, shared = true) {
  model.zeroGrad();
  const mbs = splitMicroBatches(x.shape[0]!, k).map(([a, b]) => ({ x: slice(x, 0, a, b), y: slice(y, 0, a, b) }));
  const r = tidy(() => accumulateContrastive({
    microBatches: mbs,
    features: (mb) => model.features(mb.x, mb.y),
    loss: (i, t) => loss(i, t, model.logitScale),
    shared: shared ? [model.logitScale] : [],
  }));
  return { ...r, grads: gradsOf(model) };
}

for (const [name, loss] of [['infoNCE', fusedLoss], ['composed from plain ops', composedLoss]] as const) {
  test(`2 micro-batches give the big batch's gradients (${name}, float64)`, (t) => {
    const { model, x, y } = setup(1, 8);
    const big = bigBatch(model, x, y, loss);
    const acc = accumulated(model, x, y, loss, 2);
    t.is(acc.samples, 8);
    t.true(Math.abs(acc.loss - big.loss) <= 1e-12, `${acc.loss} vs ${big.loss}`);
    const d = maxDiff(acc.grads, big.grads);
    t.true(d <= 1e-10, `max relative difference ${d}`);
    // and the gradients are not trivially small
    t.true([...big.grads.get('image.weight')!].some((v) => Math.abs(v) > 1e-3));
    t.true(Math.abs(big.grads.get('logitScale')![0]!) > 1e-4);
    // The naive way (a separate loss per micro-batch) is measurably different.
    model.zeroGrad();
    for (const [a, b] of splitMicroBatches(8, 2)) tidy(() => {
      const f = model.features(slice(x, 0, a, b), slice(y, 0, a, b));
      loss(f.image, f.text, model.logitScale).backward();
    });
    t.true(maxDiff(gradsOf(model), big.grads) > 1e-3);
  });
}

test('3 uneven micro-batches; 1 micro-batch; the same with the fused loss', (t) => {
  const { model, x, y } = setup(2, 8);
  const big = bigBatch(model, x, y, fusedLoss);
  for (const k of [1, 3, 8]) {
    const acc = accumulated(model, x, y, fusedLoss, k);
    t.true(maxDiff(acc.grads, big.grads) <= 1e-10, `k=${k}: ${maxDiff(acc.grads, big.grads)}`);
  }
});

test("without `shared` the logit scale's gradient is counted k times (why it exists)", (t) => {
  const { model, x, y } = setup(3, 6);
  const big = bigBatch(model, x, y, composedLoss);
  const acc = accumulated(model, x, y, composedLoss, 3, false);
  const g = big.grads.get('logitScale')![0]!;
  t.true(Math.abs(acc.grads.get('logitScale')![0]! - 3 * g) <= 1e-10 * Math.max(1, Math.abs(g)));
  t.true(model.logitScale.requiresGrad);
});

test('dropout: the recomputation replays the first pass masks (gradients of the same big-batch graph)', (t) => {
  const { model, x, y } = setup(4, 8, 0.3);
  const mbs = splitMicroBatches(8, 2).map(([a, b]) => ({ x: slice(x, 0, a, b), y: slice(y, 0, a, b) }));
  const start = generatorState();
  // Reference: both micro-batches' features with gradients, drawn in the same order, one loss.
  model.zeroGrad();
  const refLoss = tidy(() => {
    const f = mbs.map((mb) => model.features(mb.x, mb.y));
    const l = fusedLoss(concat(f.map((q) => q.image)), concat(f.map((q) => q.text)), model.logitScale);
    l.backward();
    return l.item();
  });
  const ref = gradsOf(model);
  const end = generatorState();
  setGeneratorState(start);
  model.zeroGrad();
  const r = tidy(() => accumulateContrastive({
    microBatches: mbs, features: (mb) => model.features(mb.x, mb.y),
    loss: (i, tx) => infoNCE(i, tx, { logitScale: model.logitScale, normalize: true }), shared: [model.logitScale],
  }));
  t.true(Math.abs(r.loss - refLoss) <= 1e-12);
  t.true(typeof r.metrics.accI2T === 'number' && r.metrics.accI2T >= 0 && r.metrics.accI2T <= 1);
  t.true(maxDiff(gradsOf(model), ref) <= 1e-10, `${maxDiff(gradsOf(model), ref)}`);
  t.deepEqual(generatorState(), end);  // the generator ends where one pass would leave it
});

test('no tensor leaks; bad arguments', (t) => {
  const { model, x, y } = setup(5, 4);
  const mbs = [{ x: slice(x, 0, 0, 2), y: slice(y, 0, 0, 2) }, { x: slice(x, 0, 2, 4), y: slice(y, 0, 2, 4) }];
  const run = () => accumulateContrastive({ microBatches: mbs, features: (mb) => model.features(mb.x, mb.y), loss: (i, tx) => fusedLoss(i, tx, model.logitScale), shared: [model.logitScale] });
  model.zeroGrad();
  run();  // warm-up (grads allocated)
  model.zeroGrad();
  const before = native.memory().cpu.liveBytes;
  run();
  model.zeroGrad();
  t.is(native.memory().cpu.liveBytes, before);
  t.throws(() => accumulateContrastive({ microBatches: [], features: () => ({ image: x, text: y }), loss: () => x }), { instanceOf: RangeError, message: /non-empty array for microBatches/ });
  t.throws(() => accumulateContrastive({ microBatches: [1], features: () => ({ image: x }) as never, loss: () => x }), { instanceOf: TypeError, message: /\{ image: Tensor, text: Tensor \} for microBatches\[0\]/ });
  t.throws(() => accumulateContrastive({ microBatches: [1], features: () => ({ image: x, text: slice(y, 0, 0, 2) }), loss: () => x }), { instanceOf: RangeError, message: /as many image as text rows/ });
  t.throws(() => accumulateContrastive({ microBatches: [1], features: () => ({ image: x, text: y }), loss: () => x }), { instanceOf: TypeError, message: /scalar tensor/ });
  t.throws(() => splitMicroBatches(3, 4), { instanceOf: RangeError });
  t.deepEqual(splitMicroBatches(8, 3), [[0, 3], [3, 6], [6, 8]]);
  // A throwing loss restores the shared parameters' flags.
  t.throws(() => accumulateContrastive({
    microBatches: mbs, features: (mb) => model.features(mb.x, mb.y), shared: [model.logitScale],
    loss: (i, tx) => { if (!model.logitScale.requiresGrad) throw new Error('boom'); return fusedLoss(i, tx, model.logitScale); },
  }), { message: 'boom' });
  t.true(model.logitScale.requiresGrad);
});
