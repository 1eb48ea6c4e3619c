// ViT-tiny benchmark (towers issue): forward+backward samples/s of a ViT on 32x32 images,
// patch 4, width 256, 6 layers, 4 heads, and its share of the machine's GEMM ceiling
// (model FLOPs / time / the GEMM GFLOP/s measured in the same run at 1024^3).
//   npm run bench -- vit                       batch 32, 1 and 2 threads
//   npx tsx bench/vit.ts --batch 64 --threads 1
import { native } from '../ts/native.js';
import { tidy } from '../ts/graph/scope.js';
import { randn, manualSeed } from '../ts/graph/creation.js';
import { matmul } from '../ts/graph/ops/matmul.js';
import { sum } from '../ts/graph/ops/reduce.js';
import { VisionTransformer } from '../ts/models/vit.js';
import { printTable, timeit, writeResult } from './common.js';

function arg(flag: string, dflt: number[]): number[] {
  const i = process.argv.indexOf(flag);
  return i < 0 || !process.argv[i + 1] ? dflt : process.argv[i + 1]!.split(',').map(Number);
}
const [batch] = arg('--batch', [32]);
const threads = arg('--threads', [1, 2]);
const cfg = { imageSize: 32, patchSize: 4, channels: 3, width: 256, layers: 6, heads: 4, mlpRatio: 4, embedDim: 256 };

// Model FLOPs per sample, forward (multiply-add = 2 FLOPs): patch embedding, per layer
// the qkv/out projections, attention scores and mixing, and the MLP; backward = 2x forward.
const tokens = (cfg.imageSize / cfg.patchSize) ** 2 + 1;
const w = cfg.width;
const perLayer = 2 * tokens * (4 * w * w) + 2 * 2 * tokens * tokens * w + 2 * tokens * (2 * w * cfg.mlpRatio * w);
const patch = 2 * (tokens - 1) * cfg.channels * cfg.patchSize ** 2 * w;
const fwdFlops = patch + cfg.layers * perLayer + 2 * w * cfg.embedDim;
const stepFlops = 3 * fwdFlops * batch!;

manualSeed(0);
const model = new VisionTransformer(cfg);
const rows: (string | number)[][] = [];
const data: Record<string, unknown>[] = [];
const prev = native.getNumThreads();
for (const nt of threads) {
  native.setNumThreads(nt);
  const gemm = tidy(() => {
    const a = randn([1024, 1024]), b = randn([1024, 1024]);
    const t = timeit(() => tidy(() => { matmul(a, b); }), { warmup: 2, repeats: 7 });
    return (2 * 1024 ** 3) / t.median / 1e9;
  });
  const x = randn([batch!, 3, 32, 32]);
  const step = () => tidy(() => {
    const { pooled } = model.forward(x);
    sum(pooled).backward();
  });
  const t = timeit(step, { warmup: 1, repeats: 5 });
  model.zeroGrad();
  x.dispose();
  const samples = batch! / t.median;
  const gflops = stepFlops / t.median / 1e9;
  rows.push([nt, batch!, t.median * 1e3, samples, gflops, gemm, `${((gflops / gemm) * 100).toFixed(1)}%`]);
  data.push({ threads: nt, batch, stepSeconds: t.median, samplesPerSecond: samples, gflops, gemmGflops: gemm });
}
native.setNumThreads(prev);
const title = `ViT-tiny forward+backward (32x32, patch 4, width 256, 6 layers, 4 heads; ${(stepFlops / batch! / 1e9).toFixed(3)} GFLOP per sample)`;
const columns = ['threads', 'batch', 'step ms', 'samples/s', 'model GFLOP/s', 'GEMM GFLOP/s (1024^3)', 'share of GEMM'];
printTable(title, columns, rows);
writeResult('vit', { config: cfg, fwdFlopsPerSample: fwdFlops, results: data, tables: [{ title, columns, rows }] });
