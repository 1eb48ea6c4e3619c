// Checkpoints (ts/train/checkpoint.ts): a save/restore round trip of a model, AdamW and the
// generator (bit for bit); latest resolution; keeping the last k; what a killed save leaves
// behind is ignored and cleaned; corrupt weights and mismatched models are clear errors that
// change nothing.
import test from 'ava';
import { mkdtempSync, readdirSync, writeFileSync, readFileSync, existsSync, unlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randn, manualSeed, generatorState, setGeneratorState, zeros } from '../ts/graph/creation.js';
import { Tensor } from '../ts/graph/tensor.js';
import { tidy } from '../ts/graph/scope.js';
import { mean } from '../ts/graph/ops/reduce.js';
import { mul } from '../ts/graph/ops/elementwise.js';
import { Module } from '../ts/graph/module.js';
import { Linear } from '../ts/graph/nn.js';
import { AdamW } from '../ts/graph/optim/adamw.js';
import {
  saveCheckpoint, loadCheckpoint, listCheckpoints, latestCheckpoint, pruneCheckpoints, readCheckpoint, resolveCheckpoint,
} from '../ts/train/checkpoint.js';
import { readSafetensorsHeader } from '../ts/train/safetensors.js';

class Net extends Module {
  readonly a: Linear;
  readonly b: Linear;
  readonly count: Tensor;
  constructor(hidden = 5) {
    super();
    this.a = this.module('a', new Linear(3, hidden));
    this.b = this.module('b', new Linear(hidden, 2));
    this.count = this.buffer('count', zeros([1]));
  }
  forward(x: Tensor): Tensor { return this.b.forward(this.a.forward(x)); }
}

const made: string[] = [];
const fresh = () => { const d = mkdtempSync(join(tmpdir(), 'vlmkit-ckpt-')); made.push(d); return d; };
test.after.always(() => { for (const d of made) rmSync(d, { recursive: true, force: true }); });

function trained(seed: number): { net: Net; opt: AdamW } {
  manualSeed(seed);
  const net = new Net();
  const opt = new AdamW([{ params: [net.a.weight, net.b.weight], weightDecay: 0.1 }, { params: [net.a.bias!, net.b.bias!], weightDecay: 0, lr: 5e-3 }], { lr: 1e-2 });
  for (let i = 0; i < 3; i++) {
    opt.zeroGrad();
    tidy(() => { const y = net.forward(randn([4, 3])); mean(mul(y, y)).backward(); });
    opt.step();
  }
  net.count.toArray();
  return { net, opt };
}

const bits = (t: Tensor) => Buffer.from(t.toArray().buffer as ArrayBuffer, t.toArray().byteOffset, t.toArray().byteLength).toString('hex');

test('round trip: model, buffers, AdamW moments and scalars, generator, sidecar', (t) => {
  const dir = fresh();
  const { net, opt } = trained(1);
  randn([7]);  // move the generator
  const rng = generatorState();
  const info = saveCheckpoint({ dir, step: 3, model: net, optimizer: opt, config: { width: 5 }, data: { epoch: 1, cursor: 4 }, metrics: { loss: 0.25 } });
  t.is(info.step, 3);
  t.true(existsSync(info.weightsPath) && existsSync(info.sidecarPath));
  const h = readSafetensorsHeader(info.weightsPath);
  t.deepEqual(h.entries.map((e) => e.name).sort(), [
    'model.a.bias', 'model.a.weight', 'model.b.bias', 'model.b.weight', 'model.count',
    'optim.0.m', 'optim.0.v', 'optim.1.m', 'optim.1.v', 'optim.2.m', 'optim.2.v', 'optim.3.m', 'optim.3.v',
  ]);
  t.is(h.metadata.step, '3');

  manualSeed(99);
  const other = new Net();
  const opt2 = new AdamW([{ params: [other.a.weight, other.b.weight] }, { params: [other.a.bias!, other.b.bias!] }]);
  const sc = loadCheckpoint(dir, { model: other, optimizer: opt2 });
  t.deepEqual(sc.config, { width: 5 });
  t.deepEqual(sc.data, { epoch: 1, cursor: 4 });
  t.deepEqual(sc.metrics, { loss: 0.25 });
  t.deepEqual(generatorState(), rng);
  const own = net.stateDict(), got = other.stateDict();
  for (const k of Object.keys(own)) t.is(bits(got[k]!), bits(own[k]!), k);
  for (const p of net.parameters()) {
    const q = other.parameters()[net.parameters().indexOf(p)]!;
    const s = opt.stateOf(p)!, s2 = opt2.stateOf(q)!;
    t.is(s2.step, s.step);
    t.is(bits(s2.m), bits(s.m));
    t.is(bits(s2.v), bits(s.v));
  }
  t.deepEqual(opt2.paramGroups.map((g) => [g.lr, g.weightDecay]), [[1e-2, 0.1], [5e-3, 0]]);
  // The next update is the same for both.
  for (const [n, o] of [[net, opt], [other, opt2]] as const) {
    o.zeroGrad();
    tidy(() => { const y = n.forward(randn([4, 3], { seed: 5 })); mean(mul(y, y)).backward(); });
    o.step();
  }
  t.is(bits(other.a.weight), bits(net.a.weight));
});

test('latest resolution, keeping the last k, and explicit steps or paths', (t) => {
  const dir = fresh();
  const { net, opt } = trained(2);
  for (const s of [10, 20, 30, 40]) saveCheckpoint({ dir, step: s, model: net, optimizer: opt, keep: 2 });
  t.deepEqual(listCheckpoints(dir).map((c) => c.step), [30, 40]);
  t.deepEqual(readdirSync(dir).sort(), ['step-30.json', 'step-30.safetensors', 'step-40.json', 'step-40.safetensors']);
  t.is(latestCheckpoint(dir)!.step, 40);
  t.is(resolveCheckpoint(dir).step, 40);
  t.is(resolveCheckpoint(dir, 30).step, 30);
  t.is(resolveCheckpoint(join(dir, 'step-30.json')).step, 30);
  t.is(resolveCheckpoint(join(dir, 'step-30.safetensors')).step, 30);
  t.is(loadCheckpoint(dir, { step: 30 }).step, 30);
  t.throws(() => resolveCheckpoint(dir, 20), { instanceOf: RangeError, message: /no checkpoint|for step 20.*steps: 30, 40/ });
  t.throws(() => resolveCheckpoint(fresh()), { instanceOf: RangeError, message: /found none/ });
  t.is(latestCheckpoint(join(dir, 'nope')), null);
  t.deepEqual(listCheckpoints(join(dir, 'nope')), []);
});

test('a save killed half way is ignored: weights without sidecar, temp files; then cleaned', (t) => {
  const dir = fresh();
  const { net, opt } = trained(3);
  saveCheckpoint({ dir, step: 5, model: net, optimizer: opt });
  const good = readFileSync(join(dir, 'step-5.safetensors'));
  // What a kill leaves: the next weights written but no sidecar, and a torn temp file of a dead process.
  writeFileSync(join(dir, 'step-10.safetensors'), good.subarray(0, 100));
  writeFileSync(join(dir, '.step-10.json.tmp-999999999-abc'), '{"format": "vlmkit-ch');
  writeFileSync(join(dir, 'step-7.safetensors'), good);  // older orphan
  t.deepEqual(listCheckpoints(dir).map((c) => c.step), [5]);
  t.is(loadCheckpoint(dir, { model: new Net(), optimizer: null, restoreRng: false }).step, 5);
  // The next save of step 10 replaces the torn weights; pruning removes the dead process's temp file and old orphans.
  saveCheckpoint({ dir, step: 10, model: net, optimizer: opt, keep: 5 });
  t.deepEqual(readdirSync(dir).sort(), ['step-10.json', 'step-10.safetensors', 'step-5.json', 'step-5.safetensors']);
  t.is(readCheckpoint(dir).sidecar.step, 10);
  t.deepEqual(pruneCheckpoints(dir, 1).map((p) => p.split('/').pop()), ['step-5.json', 'step-5.safetensors']);
});

test('corrupt weights or a mismatched model are errors that change nothing', (t) => {
  const dir = fresh();
  const { net, opt } = trained(4);
  const info = saveCheckpoint({ dir, step: 1, model: net, optimizer: opt });
  // Wrong model shape: the optimizer, the model and the generator stay as they were.
  manualSeed(7);
  const wide = new Net(6);
  const opt2 = new AdamW(wide.parameters());
  const before = bits(wide.a.weight);
  setGeneratorState({ seed: 7, offset: 123 });
  t.throws(() => loadCheckpoint(dir, { model: wide, optimizer: opt2 }), { instanceOf: RangeError, message: /expected shape \[6, 3\] for 'a.weight' but the checkpoint has \[5, 3\]/ });
  t.is(bits(wide.a.weight), before);
  t.is(opt2.stateOf(wide.a.weight), undefined);
  t.deepEqual(generatorState(), { seed: 7, offset: 123 });
  // Missing keys.
  class Small extends Module { constructor() { super(); this.module('a', new Linear(3, 5)); } }
  t.throws(() => loadCheckpoint(dir, { model: new Small() }), { instanceOf: RangeError, message: /it has unexpected 'count', 'b.weight', 'b.bias'/ });
  t.notThrows(() => loadCheckpoint(dir, { model: new Small(), strict: false, restoreRng: false }));
  // One flipped byte in the weights.
  const w = readFileSync(info.weightsPath);
  w[w.length - 3] ^= 0x10;
  writeFileSync(info.weightsPath, w);
  t.throws(() => loadCheckpoint(dir, { model: new Net() }), { instanceOf: RangeError, message: /to match its sidecar/ });
  // A sidecar that is not ours.
  writeFileSync(info.sidecarPath, '{"format": "other"}');
  t.throws(() => loadCheckpoint(dir, { model: new Net() }), { instanceOf: RangeError, message: /format 'vlmkit-checkpoint'/ });
  unlinkSync(info.sidecarPath);
  t.is(latestCheckpoint(dir), null);
  // Bad arguments.
  t.throws(() => saveCheckpoint({ dir, step: -1, model: net }), { instanceOf: RangeError, message: /non-negative integer for step/ });
  t.throws(() => saveCheckpoint({ dir, step: 1, model: {} as Module }), { instanceOf: TypeError, message: /Module for model/ });
  t.throws(() => saveCheckpoint({ dir, step: 1, model: net, keep: 0 }), { instanceOf: RangeError, message: /positive integer for keep/ });
});
