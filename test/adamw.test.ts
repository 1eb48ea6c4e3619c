// adamw family: the fused native update against a float64 JS reference, the AdamW
// optimizer (groups, frozen params, state dict), paramGroups, LR schedules, gradient
// clipping, and the boundary of adamwStep.
import test from 'ava';
import { native } from '../ts/native.js';
import type { Tensor } from '../ts/graph/tensor.js';
import { tensor, randn, zeros, manualSeed } from '../ts/graph/creation.js';
import { tidy } from '../ts/graph/scope.js';
import { Module } from '../ts/graph/module.js';
import { AdamW, paramGroups } from '../ts/graph/optim/adamw.js';
import { warmupCosine, constantLr, applyLr } from '../ts/graph/optim/schedule.js';
import { clipGradNorm } from '../ts/graph/optim/clip.js';
import { assertClose } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

interface Hyper { lr: number; b1: number; b2: number; eps: number; wd: number }

// torch.optim.AdamW, one element at a time, in float64.
function refStep(p: Float64Array, g: ArrayLike<number>, m: Float64Array, v: Float64Array, h: Hyper, step: number): void {
  for (let i = 0; i < p.length; i++) {
    p[i] = p[i]! - h.lr * h.wd * p[i]!;
    m[i] = h.b1 * m[i]! + (1 - h.b1) * g[i]!;
    v[i] = h.b2 * v[i]! + (1 - h.b2) * g[i]! * g[i]!;
    const mhat = m[i]! / (1 - h.b1 ** step), vhat = v[i]! / (1 - h.b2 ** step);
    p[i] = p[i]! - (h.lr * mhat) / (Math.sqrt(vhat) + h.eps);
  }
}

const H: Hyper = { lr: 1e-2, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.1 };

for (const dtype of ['float64', 'float32'] as const) {
  test(`adamwStep matches the float64 reference over 6 steps (${dtype}, weight decay, parallel size)`, (t) => {
    const n = 70_001;  // above the parallel grain, odd to leave a ragged chunk
    const p = randn([n], { dtype, seed: 1 });
    const m = zeros([n], { dtype }), v = zeros([n], { dtype });
    const pr = randn([n], { dtype, seed: 1 }), mr = zeros([n], { dtype }), vr = zeros([n], { dtype });
    const P = Float64Array.from(p.toArray()), M = new Float64Array(n), V = new Float64Array(n);
    for (let step = 1; step <= 6; step++) {
      // gradients of very different scales, including exact zeros
      const g = randn([n], { dtype, seed: 100 + step, std: step % 2 ? 1 : 1e-3 });
      const ga = g.toArray();
      refStep(P, ga, M, V, H, step);
      native.adamwStep(p.handle, g.handle, m.handle, v.handle, H.lr, H.b1, H.b2, H.eps, H.wd, step);
      native.adamwStepReference(pr.handle, g.handle, mr.handle, vr.handle, H.lr, H.b1, H.b2, H.eps, H.wd, step);
      g.dispose();
    }
    const [atol, rtol] = dtype === 'float64' ? [1e-12, 1e-10] : [2e-6, 1e-5];
    assertClose(t, p.toArray(), P, atol, rtol, 'param');
    assertClose(t, m.toArray(), M, atol, rtol, 'm');
    assertClose(t, v.toArray(), V, atol * 1e-3, rtol, 'v');
    assertClose(t, p.toArray(), pr.toArray(), atol, rtol, 'fused vs native reference');
    for (const x of [p, m, v, pr, mr, vr]) x.dispose();
  });
}

test('adamwStep: the first step moves each weight by lr against the gradient sign (bias correction)', (t) => {
  const p = tensor([1, 1, 1, 1], undefined, { dtype: 'float64' });
  const g = tensor([3, -0.5, 1e-3, 0], undefined, { dtype: 'float64' });
  const m = zeros([4], { dtype: 'float64' }), v = zeros([4], { dtype: 'float64' });
  native.adamwStep(p.handle, g.handle, m.handle, v.handle, 0.1, 0.9, 0.999, 1e-12, 0, 1);
  assertClose(t, p.toArray(), [0.9, 1.1, 0.9, 1], 1e-9, 0);
  // decoupled weight decay alone: p *= 1 - lr*wd when the gradient is zero
  const q = tensor([2], undefined, { dtype: 'float64' }), z = zeros([1], { dtype: 'float64' });
  const mq = zeros([1], { dtype: 'float64' }), vq = zeros([1], { dtype: 'float64' });
  native.adamwStep(q.handle, z.handle, mq.handle, vq.handle, 0.1, 0.9, 0.999, 1e-8, 0.5, 1);
  assertClose(t, q.toArray(), [2 * (1 - 0.05)], 1e-12, 0);
  for (const x of [p, g, m, v, q, z, mq, vq]) x.dispose();
});

// A module with names that exercise the no-decay rule.
class Toy extends Module {
  fc: Leaf;
  constructor() {
    super();
    manualSeed(3);
    this.param('proj', randn([4, 3]));
    this.param('logit_scale', zeros([]));
    this.module('ln_1', new Leaf([[ 'weight', [4] ], [ 'bias', [4] ]]));
    this.module('token_embedding', new Leaf([[ 'weight', [10, 4] ]]));
    this.fc = this.module('fc', new Leaf([[ 'weight', [3, 4] ], [ 'bias', [3] ]]));
    this.module('blocks', new Leaf([[ 'temperature_w', [2, 2] ], [ 'attn_w', [2, 2] ]]));
  }
}
class Leaf extends Module {
  constructor(shapes: [string, number[]][]) {
    super();
    for (const [n, s] of shapes) this.param(n, randn(s));
  }
}
class LayerNormish extends Module {
  constructor() { super(); this.param('gain', randn([2, 2])); }
}

test('paramGroups: biases, norms, embeddings, 0/1-D and logit_scale/temperature go to no-decay', (t) => {
  const toy = new Toy();
  const [decay, none] = paramGroups(toy, { weightDecay: 0.2 });
  t.deepEqual(decay!.names.sort(), ['blocks.attn_w', 'fc.weight', 'proj']);
  t.deepEqual(none!.names.sort(), ['blocks.temperature_w', 'fc.bias', 'ln_1.bias', 'ln_1.weight', 'logit_scale', 'token_embedding.weight']);
  t.is(decay!.weightDecay, 0.2);
  t.is(none!.weightDecay, 0);
  // by owner class name, and a custom rule
  class Holder extends Module { constructor() { super(); this.module('g', new LayerNormish()); this.param('w', randn([2, 2])); } }
  const h = new Holder();
  t.deepEqual(paramGroups(h)[1]!.names, ['g.gain']);
  t.deepEqual(paramGroups(h, { noDecay: (name) => name === 'w' })[1]!.names, ['w']);
  // frozen parameters are left out
  toy.fc.freeze();
  const all = paramGroups(toy).flatMap((g) => g.names);
  t.false(all.includes('fc.weight'));
  t.false(all.includes('fc.bias'));
  toy.dispose();
  h.dispose();
});

test('AdamW: matches the reference per group, skips null grads, frozen params hold no state', (t) => {
  const a = randn([5, 3], { dtype: 'float64', seed: 1 }).requiresGrad_();
  const b = randn([3], { dtype: 'float64', seed: 2 }).requiresGrad_();
  const frozen = randn([2], { dtype: 'float64', seed: 3 }).requiresGrad_(false);
  const noGradYet = randn([2], { dtype: 'float64', seed: 4 }).requiresGrad_();
  const opt = new AdamW([{ params: [a, frozen] }, { params: [b, noGradYet], weightDecay: 0, lr: 0.05 }], { lr: 0.01, weightDecay: 0.1 });
  t.is(opt.paramGroups[0]!.weightDecay, 0.1);
  t.deepEqual(opt.paramGroups[1]!.betas, [0.9, 0.999]);
  const A = Float64Array.from(a.toArray()), B = Float64Array.from(b.toArray());
  const mA = new Float64Array(15), vA = new Float64Array(15), mB = new Float64Array(3), vB = new Float64Array(3);
  const F0 = frozen.toArray(), N0 = noGradYet.toArray();
  for (let step = 1; step <= 4; step++) {
    const ga = randn([5, 3], { dtype: 'float64', seed: 10 + step }), gb = randn([3], { dtype: 'float64', seed: 20 + step });
    a.grad = ga;
    b.grad = gb;
    frozen.grad?.dispose();
    frozen.grad = randn([2], { dtype: 'float64', seed: 5 });  // a stale grad on a frozen param is ignored
    refStep(A, ga.toArray(), mA, vA, { ...H, lr: 0.01, wd: 0.1 }, step);
    refStep(B, gb.toArray(), mB, vB, { ...H, lr: 0.05, wd: 0 }, step);
    opt.step();
    opt.zeroGrad();
    t.true(a.grad === null);
    t.true(ga.disposed);
  }
  assertClose(t, a.toArray(), A, 1e-12, 1e-10, 'a');
  assertClose(t, b.toArray(), B, 1e-12, 1e-10, 'b');
  t.is(opt.stateOf(a)!.step, 4);
  assertClose(t, opt.stateOf(a)!.v.toArray(), vA, 1e-15, 1e-10, 'v of a');
  t.is(opt.stateOf(frozen), undefined);
  t.is(opt.stateOf(noGradYet), undefined);
  t.deepEqual([...frozen.toArray()], [...F0]);
  t.deepEqual([...noGradYet.toArray()], [...N0]);
  // a parameter that gets its first grad later starts at step 1
  noGradYet.grad = tensor([1, -1], undefined, { dtype: 'float64' });
  opt.step();
  t.is(opt.stateOf(noGradYet)!.step, 1);
  assertClose(t, noGradYet.toArray(), [N0[0]! - 0.05, N0[1]! + 0.05], 1e-7, 0);
  opt.dispose();
  for (const x of [a, b, frozen, noGradYet]) { x.grad?.dispose(); x.dispose(); }
});

test('AdamW: stateDict/loadStateDict resumes exactly; schedules write group lr', (t) => {
  const mk = () => [randn([4, 2], { seed: 7 }).requiresGrad_(), randn([2], { seed: 8 }).requiresGrad_()];
  const ps = mk(), qs = mk();
  const sched = warmupCosine({ baseLr: 0.1, warmupSteps: 2, totalSteps: 10 });
  const opt1 = new AdamW([{ params: [ps[0]!] }, { params: [ps[1]!], weightDecay: 0 }]);
  const grads = (k: number, xs: Tensor[]) => xs.forEach((x, i) => { x.grad?.dispose(); x.grad = randn([...x.shape], { seed: 50 + 3 * k + i }); });
  for (let k = 0; k < 3; k++) { applyLr(opt1, sched(k)); grads(k, ps); opt1.step(); }
  const saved = opt1.stateDict();
  t.deepEqual(Object.keys(saved.state), ['0', '1']);
  t.is(saved.state[0]!.step, 3);
  t.is(saved.paramGroups[1]!.weightDecay, 0);
  // a fresh optimizer over equal params, with different settings, restored from the dict
  for (const [q, p] of qs.map((q, i) => [q, ps[i]!] as const)) native.copy(q.handle, p.handle);
  const opt2 = new AdamW([{ params: [qs[0]!] }, { params: [qs[1]!] }], { lr: 5, weightDecay: 0.5 });
  opt2.loadStateDict(saved);
  t.is(opt2.paramGroups[0]!.lr, sched(2));
  t.is(opt2.paramGroups[1]!.weightDecay, 0);
  t.not(opt2.stateOf(qs[0]!)!.m, saved.state[0]!.m, 'moments are copied, not shared');
  for (let k = 3; k < 6; k++) {
    applyLr(opt1, sched(k)); grads(k, ps); opt1.step();
    applyLr(opt2, sched(k)); grads(k, qs); opt2.step();
  }
  for (let i = 0; i < 2; i++) t.deepEqual([...qs[i]!.toArray()], [...ps[i]!.toArray()], `param ${i} after resume`);
  t.throws(() => opt2.loadStateDict({ ...saved, paramGroups: saved.paramGroups.slice(0, 1) }), { instanceOf: RangeError, message: /expected 2 parameter groups but received 1/ });
  const badShape = { ...saved, state: { 0: { step: 1, m: zeros([2]), v: zeros([2]) } } };
  t.throws(() => opt2.loadStateDict(badShape), { instanceOf: RangeError, message: /expected shape \[4, 2\] for state\[0\]\.m but received shape \[2\]/ });
  badShape.state[0].m.dispose(); badShape.state[0].v.dispose();
  t.throws(() => new AdamW([ps[0]!, ps[0]!]), { instanceOf: RangeError, message: /one group only/ });
  t.throws(() => new AdamW([]), { instanceOf: RangeError, message: /at least one parameter/ });
  t.throws(() => new AdamW(ps, { betas: [0.9, 1] }), { instanceOf: RangeError, message: /betas\[1\]/ });
  t.throws(() => new AdamW(ps, { lr: NaN }), { instanceOf: RangeError, message: /expected a finite number >= 0 for options\.lr but received the number NaN/ });
  opt1.dispose(); opt2.dispose();
  for (const x of [...ps, ...qs]) { x.grad?.dispose(); x.dispose(); }
});

test('schedules: warmupCosine and constantLr at known steps', (t) => {
  const s = warmupCosine({ baseLr: 1, warmupSteps: 4, totalSteps: 14, minLr: 0.1 });
  const close = (a: number, b: number, msg: string) => t.true(Math.abs(a - b) < 1e-12, `${msg}: ${a} vs ${b}`);
  close(s(0), 0.25, 'first warmup step');
  close(s(3), 1, 'last warmup step');
  close(s(4), 1, 'cosine start');
  close(s(9), 0.1 + 0.9 * 0.5, 'cosine midpoint');
  close(s(14), 0.1, 'end');
  close(s(100), 0.1, 'past the end');
  const s0 = warmupCosine({ baseLr: 2, warmupSteps: 0, totalSteps: 4 });
  close(s0(0), 2, 'no warmup');
  close(s0(1), 2 * 0.5 * (1 + Math.cos(Math.PI / 4)), 'quarter');
  const c = constantLr({ baseLr: 0.5, warmupSteps: 2 });
  close(c(0), 0.25, 'const warmup'); close(c(1), 0.5, 'const'); close(c(1000), 0.5, 'const late');
  t.throws(() => warmupCosine({ baseLr: 1, warmupSteps: 5, totalSteps: 4 }), { instanceOf: RangeError, message: /totalSteps >= warmupSteps/ });
  t.throws(() => s(-1), { instanceOf: RangeError, message: /non-negative integer for step/ });
  t.throws(() => s(1.5), { instanceOf: RangeError });
});

test('clipGradNorm: the total 2-norm (and inf-norm) over all grads; scales only above maxNorm', (t) => {
  const a = zeros([2, 2]).requiresGrad_(), b = zeros([3]).requiresGrad_(), c = zeros([1]).requiresGrad_();
  const setGrads = () => {
    a.grad?.dispose(); b.grad?.dispose();
    a.grad = tensor([[1, -2], [3, 0]]);
    b.grad = tensor([-4, 5, 6]);
  };
  setGrads();
  const norm = Math.sqrt(1 + 4 + 9 + 16 + 25 + 36);  // c has no grad: skipped
  t.true(Math.abs(clipGradNorm([a, b, c], 100) - norm) < 1e-6);
  assertClose(t, b.grad!.toArray(), [-4, 5, 6], 0, 0, 'untouched below maxNorm');
  const before = clipGradNorm([a, b, c], 1);
  t.true(Math.abs(before - norm) < 1e-6);
  const k = 1 / (norm + 1e-6);
  assertClose(t, a.grad!.toArray(), [k, -2 * k, 3 * k, 0], 1e-7, 1e-6, 'a scaled');
  assertClose(t, b.grad!.toArray(), [-4 * k, 5 * k, 6 * k], 1e-7, 1e-6, 'b scaled');
  t.true(Math.abs(clipGradNorm([a, b], 1e9) - 1) < 1e-5, 'norm is now 1');
  setGrads();
  t.true(Math.abs(clipGradNorm([a, b], 1e9, Infinity) - 6) < 1e-6, 'inf-norm');
  t.true(Math.abs(clipGradNorm([a, b], 1e9, 1) - 21) < 1e-5, '1-norm');
  // a non-finite norm is reported and nothing is scaled
  b.grad!.dispose();
  b.grad = tensor([NaN, 1, 1]);
  t.true(Number.isNaN(clipGradNorm([a, b], 1)));
  assertClose(t, a.grad!.toArray(), [1, -2, 3, 0], 0, 0, 'not scaled by NaN');
  t.throws(() => clipGradNorm([a, b], 1, 2, { errorIfNonfinite: true }), { instanceOf: RangeError, message: /total 2-norm is NaN/ });
  b.grad!.dispose();
  b.grad = tensor([Infinity, 1, 1]);
  t.is(clipGradNorm([a, b], 1), Infinity);
  t.throws(() => clipGradNorm([a], -1), { instanceOf: RangeError, message: /maxNorm/ });
  for (const x of [a, b, c]) { x.grad?.dispose(); x.dispose(); }
});

// Serial: runs before the other tests, so no finalizer of their garbage changes the count.
test.serial('the optimizer step leaks nothing: 10,000 steps inside tidy keep live bytes flat', (t) => {
  const p = randn([8, 4], { seed: 1 }).requiresGrad_();
  const opt = new AdamW([p], { lr: 1e-3 });
  const g = () => { p.grad?.dispose(); p.grad = randn([8, 4], { seed: 2 }); };
  g(); opt.step(); opt.zeroGrad();  // creates the state
  const before = native.memory().cpu.liveBytes;
  for (let i = 0; i < 10_000; i++) tidy(() => { g(); opt.step(); opt.zeroGrad(); });
  t.is(native.memory().cpu.liveBytes, before);
  opt.dispose(); p.dispose();
});

const nativeUrl = new URL('../ts/native.ts', import.meta.url).href;
const setup = `const n = (await import(${JSON.stringify(nativeUrl)})).native;
const T = (len, dt = 'float32') => n.full([len], 0, dt, 'cpu');
const p = T(4), g = T(4), m = T(4), v = T(4);
const d = T(4); d.dispose();
const step = (args) => n.adamwStep(...args);
const ok = [p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, 1];
const w = (i, x) => { const a = [...ok]; a[i] = x; return a; };`;

const cases: [string, string, string, RegExp][] = [
  ['grad shape', `step(w(1, T(5)))`, 'RangeError', /^adamwStep: expected shape \[4\] \(the shape of param\) for grad but received shape \[5\]$/],
  ['v shape', `step(w(3, n.full([2, 2], 0, 'float32', 'cpu')))`, 'RangeError', /for v but received shape \[2, 2\]/],
  ['m dtype', `step(w(2, T(4, 'float64')))`, 'TypeError', /^adamwStep: expected a float32 tensor \(the dtype of param\) for m but received a float64 tensor$/],
  ['int param', `step([n.full([4], 0, 'int32', 'cpu'), g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0, 1])`, 'TypeError', /float32 or float64 tensor for param/],
  ['strided grad', `step(w(1, n.view(T(8), [4], [2], 0)))`, 'TypeError', /contiguous tensor for grad/],
  ['NaN lr', `step(w(4, NaN))`, 'RangeError', /^adamwStep: expected a finite number for lr but received the number nan$/i],
  ['negative lr', `step(w(4, -1))`, 'RangeError', /a number >= 0 for lr/],
  ['beta1 = 1', `step(w(5, 1))`, 'RangeError', /^adamwStep: expected a number in \[0, 1\) for beta1 but received the number 1$/],
  ['beta2 > 1', `step(w(6, 1.5))`, 'RangeError', /for beta2/],
  ['eps = 0', `step(w(7, 0))`, 'RangeError', /a number > 0 for eps/],
  ['Infinity weightDecay', `step(w(8, Infinity))`, 'RangeError', /finite number for weightDecay/],
  ['step 0', `step(w(9, 0))`, 'RangeError', /integer in \[1, .*\] for step/],
  ['step 1.5', `step(w(9, 1.5))`, 'TypeError', /an integer for step/],
  ['disposed grad', `step(w(1, d))`, 'TypeError', /^adamwStep: expected a live tensor for grad but received a disposed tensor$/],
  ['m aliases param', `step(w(2, p))`, 'RangeError', /for m but received a view sharing storage with param/],
  ['missing arguments', `n.adamwStep(p, g, m, v)`, 'TypeError', /a number for lr but received undefined/],
  ['not a tensor', `step(w(0, {}))`, 'TypeError', /a tensor for param but received an object/],
];

test('adamwStep rejects bad input with specific errors and never crashes', (t) => {
  const { result, errors } = errorsInChild(cases.map(([l, e]) => [l, e]), setup);
  t.is(result.status, 0, `child exited with ${result.status} ${result.signal ?? ''}: ${result.stderr.slice(-2000)}`);
  for (const [label, , name, message] of cases) {
    const e = errors[label];
    t.truthy(e, `${label}: no result`);
    if (!e) continue;
    t.is(e.name, name, `${label}: ${e.message}`);
    t.regex(e.message, message, label);
  }
});
