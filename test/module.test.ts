// Module: registration and dotted names, tied weights, buffers, state dicts (round
// trip and every error), train/eval, zeroGrad, freeze, lifetimes (tidy, dispose).
import test from 'ava';
import { native } from '../ts/native.js';
import { Tensor } from '../ts/graph/tensor.js';
import { randn, zeros, tensor, manualSeed, full } from '../ts/graph/creation.js';
import { tidy } from '../ts/graph/scope.js';
import { noGrad } from '../ts/graph/autograd.js';
import { concat, reshape } from '../ts/graph/ops/views.js';
import { Module } from '../ts/graph/module.js';

class Inner extends Module {
  readonly w: Tensor;
  readonly b: Tensor;
  constructor(n: number) {
    super();
    this.w = this.param('w', randn([n, 2]));
    this.b = this.param('b', zeros([n]));
    this.buffer('count', zeros([1]));
  }
}

class Outer extends Module {
  readonly first: Inner;
  readonly second: Inner;
  readonly scale: Tensor;
  constructor() {
    super();
    this.scale = this.param('scale', full([], 2));
    this.first = this.module('first', new Inner(3));
    this.second = this.module('second', new Inner(4));
  }
}

const vals = (t: Tensor) => [...t.toArray()];

test('named parameters, buffers and state dict use dotted names in registration order', (t) => {
  manualSeed(0);
  const m = new Outer();
  t.deepEqual(m.namedParameters().map(([n]) => n), ['scale', 'first.w', 'first.b', 'second.w', 'second.b']);
  t.deepEqual(m.parameters(), [m.scale, m.first.w, m.first.b, m.second.w, m.second.b]);
  t.deepEqual(m.namedBuffers().map(([n]) => n), ['first.count', 'second.count']);
  t.is(m.buffers().length, 2);
  t.deepEqual(Object.keys(m.stateDict()), ['scale', 'first.w', 'first.b', 'first.count', 'second.w', 'second.b', 'second.count']);
  t.is(m.stateDict()['second.w'], m.second.w);
  t.deepEqual(m.namedModules().map(([n]) => n), ['', 'first', 'second']);
  t.is(m.numParameters(), 1 + 6 + 3 + 8 + 4);
  t.true(m.parameters().every((p) => p.requiresGrad && p.isLeaf));
  t.false(m.buffers().some((b) => b.requiresGrad));
  t.regex(m.toString(), /Outer\(\n {2}\(first\): Inner\(\)\n {2}\(second\): Inner\(\)\n\)/);
  m.dispose();
});

test('a tied weight is one parameter but appears under both names in the state dict', (t) => {
  class Tied extends Module {
    constructor() {
      super();
      const a = this.module('a', new Inner(2));
      const b = this.module('b', new Module());
      b.param('w', a.w);
    }
  }
  const m = new Tied();
  t.deepEqual(m.namedParameters().map(([n]) => n), ['a.w', 'a.b']);
  t.true('b.w' in m.stateDict());
  m.dispose();
});

test('registration checks names and tensors', (t) => {
  const m = new Module();
  m.param('x', zeros([2]));
  t.throws(() => m.buffer('x', zeros([2])), { instanceOf: TypeError, message: /^buffer: expected a new name but 'x' is already a parameter of Module$/ });
  t.throws(() => m.param('a.b', zeros([2])), { instanceOf: TypeError, message: /without '\.'/ });
  t.throws(() => m.param('', zeros([2])), { instanceOf: TypeError });
  t.throws(() => m.param('i', tensor([1, 2], undefined, { dtype: 'int32' })), { instanceOf: TypeError, message: /float32 or float64 tensor for i but received an int32 tensor/ });
  const leaf = randn([2]).requiresGrad_();
  const nonLeaf = reshape(leaf, [2, 1]);
  t.throws(() => m.param('v', nonLeaf), { instanceOf: TypeError, message: /expected a leaf tensor for v/ });
  const d = zeros([1]); d.dispose();
  t.throws(() => m.param('d', d), { instanceOf: TypeError, message: /live tensor/ });
  t.throws(() => m.module('sub', {} as Module), { instanceOf: TypeError, message: /expected a Module for sub/ });
  m.dispose(); leaf.dispose(); nonLeaf.dispose();
});

// Serial: first, so no finalizer of other tests' garbage changes the count.
test.serial('parameters made inside tidy survive it; dispose() frees everything', (t) => {
  const before = native.memory().cpu.liveBytes;
  const m = tidy(() => { const o = new Outer(); randn([100]); return o; });
  t.false(m.first.w.disposed);
  t.false(m.buffers()[0]!.disposed);
  t.true(native.memory().cpu.liveBytes > before);
  m.first.w.grad = zeros([3, 2]);
  m.dispose();
  t.true(m.first.w.disposed && m.second.b.disposed && m.buffers().every((b) => b.disposed));
  t.is(native.memory().cpu.liveBytes, before);
});

test('loadStateDict copies in place and round-trips; the loaded module computes the same', (t) => {
  manualSeed(1);
  const a = new Outer();
  manualSeed(2);
  const b = new Outer();
  t.notDeepEqual(vals(a.first.w), vals(b.first.w));
  const seven = full([1], 7);
  noGrad(() => native.copy(a.first.buffers()[0]!.handle, seven.handle));
  seven.dispose();
  const wRef = b.first.w;
  const res = b.loadStateDict(a.stateDict());
  t.deepEqual(res, { missingKeys: [], unexpectedKeys: [] });
  t.is(b.first.w, wRef, 'same tensor object (optimizers keep their references)');
  for (const [k, v] of Object.entries(a.stateDict())) t.deepEqual(vals(b.stateDict()[k]!), vals(v), k);
  t.deepEqual(vals(b.first.buffers()[0]!), [7]);
  // a Map works too
  b.loadStateDict(new Map(Object.entries(a.stateDict())));
  a.dispose(); b.dispose();
});

test('loadStateDict reports missing/unexpected keys, shape and dtype mismatches, and copies nothing on error', (t) => {
  manualSeed(3);
  const m = new Outer();
  const w0 = vals(m.first.w);
  const sd = { ...m.stateDict() };
  const donor = randn([3, 2], { seed: 9 });
  delete (sd as Record<string, Tensor>)['second.b'];
  const extra = zeros([1]);
  const e1 = t.throws(() => m.loadStateDict({ ...sd, 'first.w': donor, 'third.w': extra }), { instanceOf: RangeError })!;
  t.regex(e1.message, /^loadStateDict: the state dict does not match Outer:\n {2}missing key\(s\): 'second\.b'\n {2}unexpected key\(s\): 'third\.w'$/);
  t.deepEqual(vals(m.first.w), w0, 'nothing copied');
  // non-strict: reports and loads the rest
  const r = m.loadStateDict({ ...sd, 'first.w': donor, 'third.w': extra }, { strict: false });
  t.deepEqual(r, { missingKeys: ['second.b'], unexpectedKeys: ['third.w'] });
  t.deepEqual(vals(m.first.w), vals(donor));
  const bad = zeros([2, 3]);
  t.throws(() => m.loadStateDict({ ...m.stateDict(), 'first.w': bad }),
    { instanceOf: RangeError, message: "loadStateDict: expected shape [3, 2] for 'first.w' but received shape [2, 3]" });
  const f64 = zeros([3, 2], { dtype: 'float64' });
  t.throws(() => m.loadStateDict({ ...m.stateDict(), 'first.w': f64 }),
    { instanceOf: TypeError, message: "loadStateDict: expected a float32 tensor for 'first.w' but received a float64 tensor" });
  t.throws(() => m.loadStateDict({ ...m.stateDict(), scale: 3 as unknown as Tensor }), { instanceOf: TypeError, message: /expected a tensor for 'scale' but received the number 3/ });
  t.throws(() => m.loadStateDict(null as unknown as Record<string, Tensor>), { instanceOf: TypeError });
  for (const x of [donor, extra, bad, f64]) x.dispose();
  m.dispose();
});

test('train()/eval() set the mode recursively', (t) => {
  const m = new Outer();
  t.true(m.training && m.first.training);
  t.is(m.eval(), m);
  t.false(m.training || m.first.training || m.second.training);
  m.first.train();
  t.true(m.first.training);
  t.false(m.training);
  m.train();
  t.true(m.second.training);
  m.dispose();
});

test('freeze(): frozen parameters get no gradient; zeroGrad() frees and clears grads', (t) => {
  const m = new Outer();
  m.second.freeze();
  t.false(m.second.w.requiresGrad);
  const loss = () => {
    const flat = concat(m.parameters().map((p) => reshape(p, [-1])));
    flat.backward(full([flat.shape[0]!], 1));
  };
  tidy(loss);
  t.truthy(m.first.w.grad);
  t.deepEqual(vals(m.first.w.grad!), [1, 1, 1, 1, 1, 1]);
  t.is(m.second.w.grad, null);
  t.is(m.second.b.grad, null);
  t.is(m.numParameters(true), 1 + 6 + 3);
  const g = m.first.w.grad!;
  m.zeroGrad();
  t.true(g.disposed);
  t.true(m.parameters().every((p) => p.grad === null));
  m.second.unfreeze();
  tidy(loss);
  t.truthy(m.second.w.grad);
  // freezing frees a grad already held
  const held = m.second.w.grad!;
  m.freeze();
  t.true(held.disposed);
  t.is(m.second.w.grad, null);
  m.dispose();
});
