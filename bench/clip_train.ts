// clip_train benchmark: training throughput of the default CLIP (configs/clip-tiny.json: width
// 128, ViT patch 4 on 32x32, 4 image + 3 text layers, 24 tokens, batch 128) against the same
// model in PyTorch (bench/clip_torch.py, python3-torch) on the same threads and batch.
// One step = forward, backward, AdamW step, logit-scale clamp, on a synthetic batch (the
// data pipeline is timed on its own: decoding, random-resized crops and tokenising emoji).
// Also: model FLOPs per sample (forward x 3 for a training step; attention counted dense),
// achieved GFLOP/s and their share of the machine's GEMM ceiling, measured in the same run (a
// 1024^3 float32 matmul at the same thread count), and a profile of one step by op family.
// PyTorch and vlmkit alternate for --rounds rounds (default 3) at each thread count, so
// both see the same load; the table gives the median of the rounds' medians and their ratio.
// --precision medium runs vlmkit's GEMMs in bf16 (setFloat32MatmulPrecision) and PyTorch
// under torch.autocast('cpu', bfloat16), so both sides use the same mixed precision.
//   npx tsx bench/clip_train.ts [--threads 1,2] [--batch 128] [--repeats 5] [--warmup 2] [--rounds 3] [--precision highest|medium] [--no-torch] [--no-profile]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { native } from '../ts/native.js';
import { randn, tensor, manualSeed } from '../ts/graph/creation.js';
import { tidy } from '../ts/graph/scope.js';
import { matmul } from '../ts/graph/ops/matmul.js';
import { AdamW, paramGroups } from '../ts/graph/optim/adamw.js';
import { CLIP, type ResolvedClipConfig } from '../ts/models/clip.js';
import { DEFAULT_CLIP_RUN, resolveRunConfig } from '../ts/cli/config.js';
import { buildRunData, trainLoaderOptions } from '../ts/cli/data.js';
import { DataLoader } from '../ts/data/loader.js';
import { benchDir, printTable, runTorch, timeit, torchAvailable, writeResult } from './common.js';

function arg(flag: string, dflt: string): string {
  const i = process.argv.indexOf(flag);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}
const threadList = arg('--threads', '1,2').split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0);
const B = Number(arg('--batch', String(DEFAULT_CLIP_RUN.train.batchSize)));
const repeats = Number(arg('--repeats', '5'));
const warmup = Number(arg('--warmup', '2'));
const rounds = Math.max(1, Number(arg('--rounds', '3')));
const withTorch = !process.argv.includes('--no-torch');
const withProfile = !process.argv.includes('--no-profile');
const precision = arg('--precision', 'highest') as 'highest' | 'medium';
native.setFloat32MatmulPrecision(precision);

/** Forward FLOPs per sample (multiply-adds x 2) of a CLIP: GEMMs, dense attention, patch conv, projections. */
export function clipForwardFlops(c: Readonly<ResolvedClipConfig>): { vision: number; text: number; total: number } {
  const v = c.vision, t = c.text;
  const block = (T: number, W: number, M: number) => 2 * T * (4 * W * W + 2 * W * M) + 2 * 2 * T * T * W;
  const P = (v.imageSize / v.patchSize) ** 2, Tv = P + 1;
  const vision = 2 * P * (v.channels * v.patchSize ** 2) * v.width + v.layers * block(Tv, v.width, Math.floor(v.width * v.mlpRatio)) + 2 * v.width * c.embedDim;
  const L = t.contextLength;
  const text = t.layers * block(L, t.width, Math.floor(t.width * t.mlpRatio)) + 2 * t.width * c.embedDim;
  return { vision, text, total: vision + text };
}

const cfg = resolveRunConfig({}, 'clip');
manualSeed(0);
const model = new CLIP(cfg.clip!);
const mc = model.config;
const flops = clipForwardFlops(mc);
const params = model.parameters().reduce((n, p) => n + p.size, 0);
const opt = new AdamW(paramGroups(model, { weightDecay: 0.1 }).filter((g) => g.params.length > 0).map((g) => ({ params: g.params, weightDecay: g.weightDecay })),
  { lr: 1e-3, betas: [0.9, 0.98], eps: 1e-6 });
const L = mc.text.contextLength;
const images = randn([B, 3, mc.vision.imageSize, mc.vision.imageSize], { seed: 1 });
const ids = new Int32Array(B * L);
const eot = new Int32Array(B);
for (let b = 0; b < B; b++) {
  eot[b] = 3 + ((b * 7919) % (L - 3));
  for (let j = 0; j < L; j++) ids[b * L + j] = j === 0 ? 50257 : j < eot[b]! ? 1 + ((b * 31 + j * 17) % 3000) : j === eot[b] ? 50258 : 0;
}
const texts = tensor(ids, [B, L], { dtype: 'int32' });

function step(): number {
  opt.zeroGrad();
  const loss = tidy(() => {
    const r = model.loss({ images, texts, eot });
    r.loss.backward();
    return r.loss.item();
  });
  opt.step();
  model.afterStep();
  return loss;
}

function gemmCeiling(): number {
  const n = 1024;
  const a = randn([n, n], { seed: 2 }), b = randn([n, n], { seed: 3 });
  const tm = timeit(() => tidy(() => { matmul(a, b); }), { warmup: 2, repeats: 7 });
  a.dispose(); b.dispose();
  return (2 * n ** 3) / tm.min / 1e9;
}

console.log(`CLIP '${cfg.name}': ${(params / 1e6).toFixed(2)} M parameters; forward ${(flops.total / 1e6).toFixed(1)} MFLOP/sample (vision ${(flops.vision / 1e6).toFixed(1)}, text ${(flops.text / 1e6).toFixed(1)}); training step = 3 x forward`);
console.log(`batch ${B}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')} (2 cores; timings on a shared machine vary)`);

const rows: (string | number)[][] = [];
const results: Record<string, unknown>[] = [];
let torchVersion: string | null = null;
for (const threads of threadList) {
  native.setNumThreads(threads);
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1]!;
  const torchRounds: { median: number; min: number; torch: string; params: number }[] = [];
  const ours: ReturnType<typeof timeit>[] = [];
  for (let round = 0; round < rounds; round++) {
    if (withTorch && torchAvailable()) {
      const args = JSON.stringify({ vision: mc.vision, text: mc.text, embedDim: mc.embedDim, batch: B, threads, warmup, repeats, bf16: precision === 'medium' });
      const script = `import json\nARGS = json.loads(${JSON.stringify(args)})\n` +
        readFileSync(join(benchDir, 'clip_torch.py'), 'utf8');
      const r = runTorch(script);
      if (r) torchRounds.push(r);
      torchVersion = r?.torch ?? torchVersion;
    }
    ours.push(timeit(() => { step(); }, { warmup, repeats }));
  }
  const torch = torchRounds.length > 0
    ? { ...torchRounds[0]!, median: median(torchRounds.map((r) => r.median)), min: Math.min(...torchRounds.map((r) => r.min)), rounds: torchRounds.map((r) => r.median) }
    : null;
  const tm = { median: median(ours.map((r) => r.median)), min: Math.min(...ours.map((r) => r.min)), times: ours.flatMap((r) => r.times), rounds: ours.map((r) => r.median) };
  const ceiling = gemmCeiling();
  const sps = B / tm.median;
  const gflops = (3 * flops.total * sps) / 1e9;
  const torchSps = torch ? B / torch.median : NaN;
  rows.push([threads, tm.median * 1000, sps, B / tm.min, gflops, ceiling, 100 * gflops / ceiling,
    torch ? torch.median * 1000 : '-', torch ? torchSps : '-', torch ? sps / torchSps : '-']);
  results.push({ threads, rounds, vlmkit: { median: tm.median, min: tm.min, rounds: tm.rounds, times: tm.times, samplesPerSec: sps, gflops }, gemmCeilingGflops: ceiling, torch, load: loadavg()[0] });
}
const title = `CLIP training step (${cfg.name}: ${(params / 1e6).toFixed(2)} M params, ${(3 * flops.total / 1e6).toFixed(0)} MFLOP/sample), batch ${B}, median of ${rounds} alternating rounds of ${repeats} steps, ` +
  (precision === 'medium' ? 'bf16 GEMMs (vlmkit matmul precision medium; PyTorch autocast bfloat16)' : 'float32');
const columns = ['threads', 'step ms', 'samples/s', 'best samples/s', 'GFLOP/s', 'GEMM ceiling GFLOP/s', '% of ceiling', 'torch step ms', 'torch samples/s', 'vs torch'];
printTable(title, columns, rows);

// The data pipeline alone: emoji decode (cached), random-resized crop, templates, BPE.
const data = await buildRunData(cfg);
const loader = new DataLoader({ ...trainLoaderOptions(cfg, data), batchSize: B });
await loader.next().then((b) => b?.dispose());
const t0 = performance.now();
const nb = 8;
for (let i = 0; i < nb; i++) (await loader.next())?.dispose();
const loaderSps = (nb * B) / ((performance.now() - t0) / 1000);
loader.close();
console.log(`\ndata pipeline alone (one JS thread; overlaps the step's native work only between steps): ${loaderSps.toFixed(0)} samples/s`);

// Where one step's time goes, by op family (native calls timed from JS; nested calls count once).
let profile: { family: string; ms: number; calls: number; share: number }[] = [];
if (withProfile) {
  native.setNumThreads(threadList[threadList.length - 1]!);
  const FAMILIES: [RegExp, string][] = [
    [/^linear/, 'linear (GEMM)'], [/^matmul/, 'matmul (GEMM)'], [/^attention/, 'attention'], [/^unary/, 'activations (unary)'],
    [/^layerNorm/, 'layer_norm'], [/^(binary|affine|powScalar)/, 'elementwise (binary)'], [/^(contiguous|copy|cast)/, 'copies (contiguous)'],
    [/^adamw/, 'AdamW'], [/^infonce/, 'infonce'], [/^conv2d/, 'conv2d (patches)'], [/^(index|gather|embedding)/, 'gather / embedding'],
    [/^reduce/, 'reductions'], [/^l2Normalize/, 'normalize'],
  ];
  const fam = (k: string) => FAMILIES.find(([re]) => re.test(k))?.[1] ?? 'other';
  const acc = new Map<string, { ms: number; calls: number }>();
  const n = native as unknown as Record<string, unknown>;
  const originals = new Map<string, (...a: unknown[]) => unknown>();
  let depth = 0;
  for (const k of Object.keys(n)) {
    const f = n[k];
    if (typeof f !== 'function') continue;
    originals.set(k, f as (...a: unknown[]) => unknown);
    n[k] = function (this: unknown, ...a: unknown[]) {
      if (depth > 0) return (f as (...x: unknown[]) => unknown).apply(this, a);
      depth++;
      const s = performance.now();
      try { return (f as (...x: unknown[]) => unknown).apply(this, a); } finally {
        depth--;
        const e = acc.get(fam(k)) ?? { ms: 0, calls: 0 };
        e.ms += performance.now() - s; e.calls++;
        acc.set(fam(k), e);
      }
    };
  }
  step();
  acc.clear();
  const S = 3, ps = performance.now();
  for (let i = 0; i < S; i++) step();
  const total = (performance.now() - ps) / S;
  for (const [k, f] of originals) n[k] = f;
  const nativeMs = [...acc.values()].reduce((a, e) => a + e.ms, 0) / S;
  profile = [...acc].map(([family, e]) => ({ family, ms: e.ms / S, calls: e.calls / S, share: (100 * e.ms) / S / total })).sort((a, b) => b.ms - a.ms);
  profile.push({ family: 'JS (graph, autograd, tidy)', ms: total - nativeMs, calls: 0, share: (100 * (total - nativeMs)) / total });
  printTable(`one step by op family (${threadList[threadList.length - 1]} threads, mean of ${S}; step ${total.toFixed(0)} ms)`, ['family', 'ms', 'calls', '% of step'],
    profile.map((p) => [p.family, p.ms, p.calls, p.share]));
}

writeResult(precision === 'medium' ? 'clip_train_bf16' : 'clip_train', {
  precision,
  tables: [{ title, columns, rows }],
  model: { name: cfg.name, params, forwardFlopsPerSample: flops, config: mc },
  batch: B, results, dataPipelineSamplesPerSec: loaderSps, profile,
  torch: torchVersion ? { version: torchVersion } : null,
});
