// nn layers: PyTorch-style init (reproducible from manualSeed), forward values, float64
// gradient checks through Linear / LayerNorm / Embedding / MLP / Sequential, Dropout modes,
// paramGroups on real layers, the end-to-end training test (a two-layer MLP learns
// two spirals with AdamW), and the leak test of a long training loop.
import test from 'ava';
import { native } from '../ts/native.js';
import type { Tensor } from '../ts/graph/tensor.js';
import { tensor, randn, manualSeed, ones } from '../ts/graph/creation.js';
import { tidy } from '../ts/graph/scope.js';
import { noGrad } from '../ts/graph/autograd.js';
import { transpose } from '../ts/graph/ops/views.js';
import { mean } from '../ts/graph/ops/reduce.js';
import { neg } from '../ts/graph/ops/elementwise.js';
import { gather } from '../ts/graph/ops/gather.js';
import { logSoftmax } from '../ts/graph/ops/softmax.js';
import { Linear, Embedding, LayerNorm, Dropout, Activation, Sequential, MLP, type ActivationKind } from '../ts/graph/nn.js';
import { AdamW, paramGroups } from '../ts/graph/optim/adamw.js';
import { warmupCosine, applyLr } from '../ts/graph/optim/schedule.js';
import { clipGradNorm } from '../ts/graph/optim/clip.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';

function stats(a: ArrayLike<number>): { mean: number; variance: number; min: number; max: number } {
  let s = 0, s2 = 0, min = Infinity, max = -Infinity;
  for (let i = 0; i < a.length; i++) { s += a[i]!; s2 += a[i]! * a[i]!; min = Math.min(min, a[i]!); max = Math.max(max, a[i]!); }
  const m = s / a.length;
  return { mean: m, variance: s2 / a.length - m * m, min, max };
}

test('init: Linear is U(-1/sqrt(in), 1/sqrt(in)) as nn.Linear; Embedding N(0, 1); LayerNorm ones/zeros', (t) => {
  manualSeed(0);
  const lin = new Linear(256, 128);
  t.deepEqual(lin.weight.shape, [128, 256]);
  const w = stats(lin.weight.toArray()), b = stats(lin.bias!.toArray());
  const bound = 1 / 16;
  t.true(w.min >= -bound && w.max <= bound && w.max > 0.99 * bound && w.min < -0.99 * bound, `weight range ${w.min}..${w.max}`);
  t.true(Math.abs(w.mean) < 2e-3, `weight mean ${w.mean}`);
  t.true(Math.abs(w.variance / (bound * bound / 3) - 1) < 0.03, `weight variance ${w.variance}`);
  t.true(b.min >= -bound && b.max <= bound);
  const emb = new Embedding(1000, 64);
  const e = stats(emb.weight.toArray());
  t.true(Math.abs(e.mean) < 0.01 && Math.abs(Math.sqrt(e.variance) - 1) < 0.02, `embedding std ${Math.sqrt(e.variance)}`);
  const clipEmb = new Embedding(100, 64, { std: 0.02 });
  t.true(Math.abs(Math.sqrt(stats(clipEmb.weight.toArray()).variance) / 0.02 - 1) < 0.05);
  const ln = new LayerNorm([2, 3], { dtype: 'float64' });
  t.deepEqual([...ln.weight!.toArray()], [1, 1, 1, 1, 1, 1]);
  t.deepEqual([...ln.bias!.toArray()], [0, 0, 0, 0, 0, 0]);
  t.is(ln.weight!.dtype, 'float64');
  t.is(new Linear(3, 2, { bias: false }).bias, null);
  t.deepEqual(new LayerNorm(4, { elementwiseAffine: false }).parameters(), []);
  // reproducible from the seed
  manualSeed(42);
  const a = new MLP(4, 8, 3, 'gelu');
  manualSeed(42);
  const c = new MLP(4, 8, 3, 'gelu');
  for (const [k, v] of Object.entries(a.stateDict())) t.deepEqual([...c.stateDict()[k]!.toArray()], [...v.toArray()], k);
  t.deepEqual(Object.keys(a.stateDict()), ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']);
  t.throws(() => new Linear(0, 3), { instanceOf: RangeError, message: /^Linear: expected an integer >= 1 for inFeatures but received the number 0$/ });
  t.throws(() => new Activation('tanh' as ActivationKind), { instanceOf: TypeError, message: /'gelu', 'gelu_tanh', 'quick_gelu', 'silu', 'relu'/ });
  t.throws(() => new Dropout(1), { instanceOf: RangeError, message: /\[0, 1\) for p/ });
  for (const m of [lin, emb, clipEmb, ln, a, c]) m.dispose();
});

test('Linear forward is x W^T + b over leading dims', (t) => {
  const lin = new Linear(3, 2, { dtype: 'float64' });
  const W = lin.weight.toArray(), B = lin.bias!.toArray();
  const xs = [[1, 2, 3], [-1, 0.5, 0], [0, 0, 2], [4, -3, 1]];
  const x = tensor(xs, undefined, { dtype: 'float64' });
  const y = tidy(() => lin.forward(x).toArray());
  const want = xs.flatMap((r) => [0, 1].map((o) => r.reduce((s, v, i) => s + v * W[o * 3 + i]!, B[o]!)));
  assertClose(t, y, want, 1e-12, 1e-12);
  x.dispose(); lin.dispose();
});

function gradcheckModule(t: import('ava').ExecutionContext, label: string, m: { forward(x: Tensor): Tensor; parameters(): Tensor[] }, x: Tensor): void {
  assertGradcheck(t, (xi) => m.forward(xi), [x, ...m.parameters()], {}, label);
}

test('gradcheck (float64) through Linear, LayerNorm, Embedding, every MLP activation and Sequential', (t) => {
  manualSeed(7);
  const f64 = { dtype: 'float64' as const };
  // Linear on a non-contiguous 3-D input (batch dims broadcast against the weight)
  const lin = new Linear(4, 3, f64);
  const xT = noGrad(() => transpose(randn([2, 4, 3], f64), 1, 2)).requiresGrad_();
  gradcheckModule(t, 'Linear', lin, xT);
  // LayerNorm over two trailing dims, a size-1 leading dim; non-trivial affine params
  const ln = new LayerNorm([2, 3], f64);
  noGrad(() => { native.copy(ln.weight!.handle, randn([2, 3], f64).handle); native.copy(ln.bias!.handle, randn([2, 3], f64).handle); });
  gradcheckModule(t, 'LayerNorm', ln, randn([1, 4, 2, 3], f64).requiresGrad_());
  // Embedding: gradient into the table, with repeated ids
  const emb = new Embedding(5, 3, f64);
  const ids = tensor([[0, 3, 3], [4, 0, 1]], undefined, { dtype: 'int32' });
  assertGradcheck(t, () => emb.forward(ids), [emb.weight], {}, 'Embedding');
  for (const act of ['gelu', 'gelu_tanh', 'quick_gelu', 'silu', 'relu'] as const) {
    const mlp = new MLP(3, 5, 2, act, f64);
    gradcheckModule(t, `MLP ${act}`, mlp, randn([4, 3], f64).requiresGrad_());
    mlp.dispose();
  }
  const seq = new Sequential(new Linear(3, 4, f64), new LayerNorm(4, f64), new Activation('silu'), new Linear(4, 2, { ...f64, bias: false }));
  t.deepEqual(seq.namedParameters().map(([n]) => n), ['0.weight', '0.bias', '1.weight', '1.bias', '3.weight']);
  gradcheckModule(t, 'Sequential', seq, randn([3, 3], f64).requiresGrad_());
  for (const m of [lin, ln, emb, seq]) m.dispose();
});

test('Dropout follows module.training; MLP in eval mode is deterministic', (t) => {
  const d = new Dropout(0.25);
  const x = ones([4000]);
  const y = d.forward(x);
  const v = y.toArray();
  let zeros = 0;
  for (const e of v) { if (e === 0) zeros++; else t.true(Math.abs(e - 1 / 0.75) < 1e-6) }
  t.true(Math.abs(zeros / 4000 - 0.25) < 0.03, `dropped ${zeros / 4000}`);
  d.eval();
  t.is(d.forward(x), x, 'identity in eval mode');
  const mlp = new MLP(4, 16, 2, 'relu', { dropout: 0.5 });
  const inp = randn([3, 4]);
  mlp.eval();
  const a = tidy(() => mlp.forward(inp).toArray()), b = tidy(() => mlp.forward(inp).toArray());
  t.deepEqual([...a], [...b]);
  mlp.train();
  const c = tidy(() => mlp.forward(inp).toArray());
  t.notDeepEqual([...a], [...c]);
  for (const z of [x, y, inp]) z.dispose();
  d.dispose(); mlp.dispose();
});

test('paramGroups on real layers: embeddings, norms and biases go to no-decay', (t) => {
  const model = new Sequential(new Embedding(10, 4), new LayerNorm(4), new Linear(4, 4), new MLP(4, 8, 4));
  const [decay, none] = paramGroups(model, { weightDecay: 0.05 });
  t.deepEqual(decay!.names, ['2.weight', '3.fc1.weight', '3.fc2.weight']);
  t.deepEqual(none!.names, ['0.weight', '1.weight', '1.bias', '2.bias', '3.fc1.bias', '3.fc2.bias']);
  const opt = new AdamW(paramGroups(model, { weightDecay: 0.05 }), { lr: 1e-3 });
  t.deepEqual(opt.paramGroups.map((g) => g.weightDecay), [0.05, 0]);
  opt.dispose(); model.dispose();
});

// Two interleaved spirals (one turn each), deterministic.
function spirals(n: number): { x: Tensor; y: Tensor; labels: Int32Array } {
  const xs = new Float32Array(2 * n * 2), labels = new Int32Array(2 * n);
  for (let c = 0; c < 2; c++)
    for (let i = 0; i < n; i++) {
      const r = 0.1 + (0.9 * i) / n, th = 2 * Math.PI * (i / n) + c * Math.PI + 0.15 * Math.sin(37.0 * i + c);
      const k = c * n + i;
      xs[2 * k] = r * Math.cos(th) * 2;
      xs[2 * k + 1] = r * Math.sin(th) * 2;
      labels[k] = c;
    }
  return { x: tensor(xs, [2 * n, 2]), y: tensor(labels, [2 * n, 1]), labels };
}

// Mean cross-entropy of logits [N, C] against int32 labels [N, 1].
function crossEntropy(logits: Tensor, labels: Tensor): Tensor {
  return neg(mean(gather(logSoftmax(logits, -1), 1, labels)));
}

test('end to end: a two-layer MLP trained with AdamW separates two spirals', (t) => {
  manualSeed(1);
  const { x, y, labels } = spirals(100);
  const model = new MLP(2, 64, 2, 'relu');
  const opt = new AdamW(paramGroups(model, { weightDecay: 1e-4 }), { lr: 0.02 });
  const steps = 400;
  const lrAt = warmupCosine({ baseLr: 0.02, warmupSteps: 20, totalSteps: steps, minLr: 0.002 });
  const first = tidy(() => crossEntropy(model.forward(x), y).item());
  let last = first;
  for (let s = 0; s < steps; s++) {
    last = tidy(() => {
      const loss = crossEntropy(model.forward(x), y);
      loss.backward();
      return loss.item();
    });
    clipGradNorm(model.parameters(), 5);
    applyLr(opt, lrAt(s));
    opt.step();
    opt.zeroGrad();
  }
  const acc = tidy(() => {
    model.eval();
    const logits = model.forward(x).toArray();
    let ok = 0;
    for (let i = 0; i < labels.length; i++) if ((logits[2 * i + 1]! > logits[2 * i]! ? 1 : 0) === labels[i]) ok++;
    return ok / labels.length;
  });
  t.log(`loss ${first.toFixed(3)} -> ${last.toFixed(4)}, training accuracy ${acc}`);
  t.true(first > 0.6, `initial loss ${first}`);
  t.true(last < 0.15 && last < first / 5, `final loss ${last}`);
  t.true(acc >= 0.97, `accuracy ${acc}`);
  opt.dispose(); model.dispose(); x.dispose(); y.dispose();
});

// Serial: first, so no finalizer of other tests' garbage changes the count.
test.serial('no leak: 10,000 training steps of a tiny model inside tidy keep live bytes flat', (t) => {
  manualSeed(2);
  const lin = new Linear(3, 2);
  const x = randn([4, 3]);
  const opt = new AdamW(lin.parameters(), { lr: 1e-4 });
  const stepOnce = () => {
    tidy(() => mean(lin.forward(x)).backward());
    clipGradNorm(lin.parameters(), 1);
    opt.step();
    opt.zeroGrad();
  };
  stepOnce();  // the optimizer state exists from here on
  const before = native.memory().cpu.liveBytes;
  for (let i = 0; i < 10_000; i++) stepOnce();
  t.is(native.memory().cpu.liveBytes, before);
  opt.dispose(); lin.dispose(); x.dispose();
  t.true(native.memory().cpu.liveBytes < before);
});
