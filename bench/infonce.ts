// Benchmark of the infonce family (fused contrastive loss), CLIP configuration:
// normalised features, logits = exp(s) * I T^T, symmetric cross-entropy, D = 512,
// float32, forward + backward. Side by side:
//   fused  - the infonce kernel (what infoNCE in ts/objectives/itc.ts calls): tiles,
//            online logsumexp, O(B) memory
//   naive  - the same loss from plain graph ops (l2Normalize, matmul, logSoftmax,
//            gather, mean), materialising the B x B logits as open_clip does (B <= 16384)
//   torch  - open_clip's ClipLoss in Debian's PyTorch, same threads (bench/infonce_torch.py)
// GFLOP/s count 8 B^2 D (one GEMM forward, three backward). Memory: peak native bytes
// above inputs and gradients (vlm memory()), and peak RSS above the RSS before the step
// (RSS includes the gradients when their pages are fresh, and misses memory the
// allocator reuses from earlier steps). The machine is shared, so GEMM speed is measured
// next to each size and "% GEMM" is against that.
// --precision medium runs float32 GEMMs in bf16 (setFloat32MatmulPrecision) and PyTorch under
// torch.autocast('cpu', bfloat16): the same mixed precision on both sides.
// Usage: tsx bench/infonce.ts [--sizes 1024,4096,16384,65536] [--naive-max 16384] [--precision highest|medium] [--no-torch]
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { Tensor, wrap } from '../ts/graph/tensor.js';
import { tidy } from '../ts/graph/scope.js';
import { randn, tensor } from '../ts/graph/creation.js';
import { matmul } from '../ts/graph/ops/matmul.js';
import { logSoftmax } from '../ts/graph/ops/softmax.js';
import { gather } from '../ts/graph/ops/gather.js';
import { mean } from '../ts/graph/ops/reduce.js';
import { add, exp, mul } from '../ts/graph/ops/elementwise.js';
import { l2Normalize } from '../ts/graph/ops/normalize.js';
import { transpose } from '../ts/graph/ops/views.js';
import { benchDir, mib, printTable, runTorch, timeit, torchAvailable, writeResult } from './common.js';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};
const SIZES = arg('--sizes', '1024,4096,16384,65536').split(',').map(Number);
const PRECISION = arg('--precision', 'highest') as 'highest' | 'medium';
native.setFloat32MatmulPrecision(PRECISION);
const PREC_LABEL = PRECISION === 'medium' ? 'bf16 GEMMs (matmul precision medium; PyTorch autocast bfloat16)' : 'float32';
const NAIVE_MAX = Number(arg('--naive-max', '16384'));
const WITH_TORCH = !args.includes('--no-torch');
const D = 512;
const LOG_SCALE = Math.log(1 / 0.07);
const threads = native.getNumThreads();

// ---- peak measurements ----------------------------------------------------------------------

function statusKiB(key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : 0;
}
/** Runs fn once, returning peak native bytes and peak RSS bytes above what was live before. */
function peaks(fn: () => void): { nativeBytes: number; rssBytes: number } {
  const live = native.memory().cpu.liveBytes;
  native.resetPeak();
  try { writeFileSync('/proc/self/clear_refs', '5'); } catch { /* VmHWM then is the process peak */ }
  const rss0 = statusKiB('VmRSS');
  fn();
  return { nativeBytes: native.memory().cpu.peakBytes - live, rssBytes: (statusKiB('VmHWM') - rss0) * 1024 };
}

// ---- the two vlmkit paths --------------------------------------------------------------------

interface Inputs { image: Tensor; text: Tensor; scale: Tensor }

function inputs(B: number): Inputs {
  return {
    image: randn([B, D], { seed: 1 }).requiresGrad_(),
    text: randn([B, D], { seed: 2 }).requiresGrad_(),
    scale: tensor(LOG_SCALE, []).requiresGrad_(),
  };
}
function clearGrads(x: Inputs): void {
  for (const t of [x.image, x.text, x.scale]) { t.grad?.dispose(); t.grad = null; }
}

// The kernel itself: forward, then backward with every gradient, outputs freed. (Through
// infoNCE + backward() the time is the same, but autograd keeps an owned copy of each
// gradient in .grad, an O(B D) cost of the graph rather than of the loss.)
const fusedOptions = (B: number) => ({
  mode: 'logit_scale' as const, normalize: true, labelSmoothing: 0, imageIds: null, queueImage: null, queueText: null,
  queueIds: null, momentumImage: null, momentumText: null, alpha: 0, rowOffset: 0, rowCount: B,
});
function fusedStep(x: Inputs): number {
  const o = fusedOptions(x.image.shape[0]!);
  const f = native.infonceForward(x.image.handle, x.text.handle, x.scale.handle, o);
  const g = native.infonceBackward(x.image.handle, x.text.handle, x.scale.handle, o, f.saved, 1, true, true, true);
  const loss = native.toArray(f.loss)[0]!;
  for (const h of [f.loss, f.saved, g.dImage, g.dText, g.dParam]) h?.dispose();
  return loss;
}

function naiveStep(x: Inputs, labels: { rows: Tensor; cols: Tensor }): number {
  const loss = tidy(() => {
    const i = l2Normalize(x.image, -1), t = l2Normalize(x.text, -1);
    const logits = mul(matmul(i, transpose(t)), exp(x.scale));            // [B, B]
    const i2t = mean(gather(logSoftmax(logits, 1), 1, labels.rows));      // diag of row log-softmax
    const t2i = mean(gather(logSoftmax(logits, 0), 0, labels.cols));      // diag of column log-softmax
    const l = mul(add(i2t, t2i), -0.5);
    l.backward();
    return l.item();
  });
  clearGrads(x);
  return loss;
}

/** GEMM GFLOP/s now, at the shape of the loss's GEMMs (median of 3): the yardstick next to each size. */
function gemmNow(): number {
  const a = native.random('normal', [4096, D], 'float32', 1, 0, 0, 1);
  const b = native.random('normal', [D, 4096], 'float32', 2, 0, 0, 1);
  const t = timeit(() => native.matmul(a, b, false, false).dispose(), { warmup: 1, repeats: 3 });
  a.dispose();
  b.dispose();
  return (2 * 4096 * 4096 * D) / t.median / 1e9;
}

function gemmGflops(): { shape: string; gflops: number }[] {
  const out: { shape: string; gflops: number }[] = [];
  for (const [M, N, K] of [[4096, 4096, 512], [2048, 2048, 2048]] as const) {
    const a = native.random('normal', [M, K], 'float32', 1, 0, 0, 1);
    const b = native.random('normal', [K, N], 'float32', 2, 0, 0, 1);
    const t = timeit(() => native.matmul(a, b, false, false).dispose(), { warmup: 2, repeats: 7 });
    out.push({ shape: `${M}x${K} . ${K}x${N}`, gflops: (2 * M * N * K) / t.median / 1e9 });
    a.dispose();
    b.dispose();
  }
  return out;
}

// ---- run ------------------------------------------------------------------------------------------

console.log(`infonce benchmark: D = ${D}, ${PREC_LABEL}, ${threads} threads, GEMM ${native.buildInfo().gemm}`);
const gemm = gemmGflops();
const gemmPeak = Math.max(...gemm.map((g) => g.gflops));
for (const g of gemm) console.log(`machine GEMM ${g.shape}: ${g.gflops.toFixed(1)} GFLOP/s`);

interface PathResult { median: number; min: number; times: number[]; gflops: number; nativeMiB: number; rssMiB: number; loss: number }
const rows: { B: number; gemmAdjacent: number; fused: PathResult; naive: PathResult | null; naiveError?: string }[] = [];

/** warmup untimed steps, then `repeats` timed ones; the first timed step also records the memory peaks. */
function measure(step: () => number, warmup: number, repeats: number, flops: number, gradBytes: number): PathResult {
  for (let k = 0; k < warmup; k++) step();
  let loss = 0, first = 0;
  const pk = peaks(() => {
    const t0 = process.hrtime.bigint();
    loss = step();
    first = Number(process.hrtime.bigint() - t0) / 1e9;
  });
  const rest = repeats > 1 ? timeit(step, { warmup: 0, repeats: repeats - 1 }).times : [];
  const times = [first, ...rest];
  const sorted = [...times].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return {
    median, min: sorted[0]!, times, gflops: flops / median / 1e9,
    nativeMiB: mib(pk.nativeBytes - gradBytes), rssMiB: mib(pk.rssBytes), loss,
  };
}

for (const B of SIZES) {
  const flops = 8 * B * B * D;
  const gradBytes = 2 * B * D * 4 + 4;  // d(image), d(text), d(scale)
  const x = inputs(B);
  const big = B >= 16384;
  // The machine is shared: GEMM speed is measured just before and after, as the yardstick.
  const g0 = gemmNow();
  const fused = measure(() => fusedStep(x), big ? 0 : 2, B >= 65536 ? 1 : big ? 3 : 5, flops, gradBytes);
  const gemmAdjacent = (g0 + gemmNow()) / 2;
  console.log(`fused  B=${B}: ${fused.median.toFixed(3)} s, ${fused.gflops.toFixed(1)} GFLOP/s ` +
    `(${(100 * fused.gflops / gemmAdjacent).toFixed(0)}% of GEMM measured alongside: ${gemmAdjacent.toFixed(1)}), ` +
    `+${fused.nativeMiB} MiB native, +${fused.rssMiB} MiB RSS, loss ${fused.loss.toFixed(4)}`);
  let naive: PathResult | null = null;
  let naiveError: string | undefined;
  if (B <= NAIVE_MAX) {
    const idx = Int32Array.from({ length: B }, (_, k) => k);
    const labels = { rows: wrap(native.fromData(idx, [B, 1], 'int32', 'cpu')), cols: wrap(native.fromData(idx, [1, B], 'int32', 'cpu')) };
    try {
      naive = measure(() => naiveStep(x, labels), big ? 0 : 1, big ? 1 : 3, flops, gradBytes);
      console.log(`naive  B=${B}: ${naive.median.toFixed(3)} s, ${naive.gflops.toFixed(1)} GFLOP/s, +${naive.nativeMiB} MiB native, ` +
        `+${naive.rssMiB} MiB RSS, loss ${naive.loss.toFixed(4)}`);
    } catch (e) {
      naiveError = String((e as Error).message ?? e);
      console.log(`naive  B=${B}: failed: ${naiveError}`);
    }
    labels.rows.dispose();
    labels.cols.dispose();
  }
  x.image.dispose();
  x.text.dispose();
  x.scale.dispose();
  rows.push({ B, gemmAdjacent, fused, naive, ...(naiveError ? { naiveError } : {}) });
}

let torch: any = null;
if (WITH_TORCH && torchAvailable()) {
  const sizes = SIZES.filter((b) => b <= NAIVE_MAX);
  const script = `SIZES = ${JSON.stringify(sizes)}\nD = ${D}\nTHREADS = ${threads}\nREPEATS = 3\nBF16 = ${PRECISION === 'medium' ? 'True' : 'False'}\n` +
    readFileSync(join(benchDir, 'infonce_torch.py'), 'utf8');
  torch = runTorch(script);
} else if (WITH_TORCH) {
  console.log('PyTorch: not installed');
}
const torchRow = (B: number) => (torch?.rows as any[] | undefined)?.find((r) => r.B === B) ?? null;

const table = {
  title: `infonce forward+backward, D = ${D}, ${PREC_LABEL}, ${threads} threads (GEMM at start ${gemmPeak.toFixed(0)} GFLOP/s; % GEMM is against the GEMM measured alongside each size)`,
  columns: ['B', 'fused s', 'GFLOP/s', 'GEMM GF/s', '% GEMM', 'MiB native', 'MiB RSS', 'naive s', 'naive MiB', 'x naive', 'torch s', 'torch MiB RSS', 'x torch'],
  rows: rows.map(({ B, gemmAdjacent, fused, naive }) => {
    const tr = torchRow(B);
    return [B, fused.median, fused.gflops, gemmAdjacent, 100 * fused.gflops / gemmAdjacent, fused.nativeMiB, fused.rssMiB,
      naive ? naive.median : '-', naive ? naive.nativeMiB : '-', naive ? naive.median / fused.median : '-',
      tr ? tr.median : '-', tr ? tr.peakRssMiB : '-', tr ? tr.median / fused.median : '-'];
  }),
};
printTable(table.title, table.columns, table.rows);

writeResult(PRECISION === 'medium' ? 'infonce_bf16' : 'infonce', {
  tables: [table],
  D, dtype: 'float32', precision: PRECISION, threads, flopsPerStep: '8 B^2 D', gemm, gemmPeakGflops: gemmPeak,
  rows: rows.map((r) => ({ ...r, torch: torchRow(r.B) })),
  torch: torch ? { version: torch.torch, threads: torch.threads } : null,
});
