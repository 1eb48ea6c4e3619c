// lm_head benchmark: the LM loss forward + backward (gradients to hidden and weight) at
// N = 4096 tokens, H = 768, V in {30522, 50272}, label smoothing 0.1, float32:
//   fused      native lmHeadForwardBackward (row blocks x vocabulary tiles, no N x V logits)
//   lmLoss     the same through ts/objectives/lm.ts with autograd (loss.backward())
//   naive      native lmHeadNaive: all N x V logits materialised, whole-matrix GEMMs
//   torch      F.cross_entropy(h @ W.T, t, label_smoothing) + backward (python3-torch)
// Memory columns: "loss mem" is vlmkit's native peak (memory()) above the inputs and the
// gradients it returns; "RSS" is the process's peak resident set above what was resident
// before the step (host block cache emptied first), less the gradients (PyTorch's is
// measured the same way). Timings run with the block cache warm, as in training.
// Goals: fused loss memory < 5% of the naive N x V float32 logits; >= 3x PyTorch's speed.
// PyTorch runs (same threads) right before vlmkit at each V, so both see similar load.
// --precision medium runs float32 GEMMs in bf16 (setFloat32MatmulPrecision) and PyTorch under
// torch.autocast('cpu', bfloat16): the same mixed precision on both sides.
//   npx tsx bench/lm_head.ts [--vocab 30522,50272] [--tokens 4096] [--hidden 768] [--repeats 2] [--threads 2] [--precision highest|medium]
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { native } from '../ts/native.js';
import { randn, tensor } from '../ts/graph/creation.js';
import { tidy } from '../ts/graph/scope.js';
import { lmLoss } from '../ts/objectives/lm.js';
import { benchDir, mib, printTable, runTorch, timeit, torchAvailable, writeResult } from './common.js';

function argList(flag: string, dflt: number[]): number[] {
  const i = process.argv.indexOf(flag);
  if (i < 0 || !process.argv[i + 1]) return dflt;
  return process.argv[i + 1]!.split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0);
}

const vocabs = argList('--vocab', [30522, 50272]);
const N = argList('--tokens', [4096])[0]!;
const H = argList('--hidden', [768])[0]!;
const repeats = argList('--repeats', [2])[0]!;
const warmup = 1;
const eps = 0.1;
const threads = argList('--threads', [native.getNumThreads()])[0]!;
native.setNumThreads(threads);
const pi = process.argv.indexOf('--precision');
const precision = (pi >= 0 ? process.argv[pi + 1] : 'highest') as 'highest' | 'medium';
native.setFloat32MatmulPrecision(precision);
const precLabel = precision === 'medium' ? 'bf16 GEMMs (matmul precision medium; PyTorch autocast bfloat16)' : 'float32';

// ---- peak resident memory (Linux: VmHWM, reset through /proc/self/clear_refs) ----------

function status(field: string): number {
  const m = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}
function resetHwm(): boolean {
  try { writeFileSync('/proc/self/clear_refs', '5'); return true; } catch { return false; }
}

interface Measure { median: number; min: number; times: number[]; lossMem: number; rss: number; loss: number }

/**
 * Times `step` (which returns the loss and frees what it made) and measures, on one extra
 * call, the native peak and the RSS high-water mark above the state before it.
 */
function measure(step: () => number, gradBytes: number): Measure {
  const tm = timeit(() => { step(); }, { warmup, repeats });
  (globalThis as { gc?: () => void }).gc?.();
  native.emptyCache();  // cached free blocks would hide the step's resident growth
  native.resetPeak();
  const live = native.memory().cpu.liveBytes;
  const rss0 = status('VmRSS');
  const canReset = resetHwm();
  const loss = step();
  const lossMem = native.memory().cpu.peakBytes - live - gradBytes;
  const rss = canReset ? status('VmHWM') - rss0 - gradBytes : NaN;
  return { median: tm.median, min: tm.min, times: tm.times, lossMem, rss, loss };
}

const rows: (string | number)[][] = [];
const data: Record<string, unknown>[] = [];
interface TorchPoint { vocab: number; median_s: number; min_s: number; times: number[]; loss: number; rss_above_inputs_bytes: number | null }
let torchVersion: string | null = null;
const haveTorch = torchAvailable();
if (!haveTorch) console.log('PyTorch: not installed (apt-get install python3-torch for the side-by-side)');

/** PyTorch at one vocabulary size, run right before vlmkit's paths at that size (the machine is shared: close in time, similar load). */
function torchAt(V: number): TorchPoint | null {
  if (!haveTorch) return null;
  const script = `ARGS = ${JSON.stringify({ tokens: N, hidden: H, vocab: [V], smoothing: eps, threads, warmup, repeats, bf16: precision === 'medium' ? 1 : 0 })}\n` +
    readFileSync(join(benchDir, 'lm_head_torch.py'), 'utf8');
  const out = runTorch(script) as { torch: string; results: TorchPoint[] } | null;
  torchVersion = out?.torch ?? null;
  return out?.results[0] ?? null;
}

for (const V of vocabs) {
  const logitsBytes = N * V * 4;
  const gradBytes = (N * H + V * H) * 4;
  const flops = 3 * 2 * N * H * V;  // logits, d(hidden), d(weight)
  const h = randn([N, H], { seed: 1 }), w = randn([V, H], { seed: 2, std: 0.02 });
  const tr = torchAt(V);
  const ids = Int32Array.from({ length: N }, (_, i) => (i * 2654435761) % V);
  const t = tensor(ids, [N]);
  const args = [h.handle, w.handle, null, t.handle] as const;
  const need = [true, true, false];
  const free = (r: object) => { for (const v of Object.values(r)) if (v && typeof v === 'object') (v as { dispose(): void }).dispose(); };

  const fused = measure(() => {
    const r = native.lmHeadForwardBackward(...args, -100, eps, 'mean', need, 0, 0);
    const l = native.toArray(r.loss)[0]!;
    free(r);
    return l;
  }, gradBytes);

  h.requiresGrad_();
  w.requiresGrad_();
  const viaTs = measure(() => tidy(() => {
    const { loss } = lmLoss(h, w, t, { labelSmoothing: eps });
    const l = loss.item();
    loss.backward();
    for (const x of [h, w]) { x.grad?.dispose(); x.grad = null; }
    return l;
  }), gradBytes);
  h.requiresGrad_(false);
  w.requiresGrad_(false);

  const naive = measure(() => {
    const r = native.lmHeadNaive(...args, -100, eps, 'mean', need);
    const l = native.toArray(r.loss)[0]!;
    free(r);
    return l;
  }, gradBytes);

  const gf = (s: number) => flops / s / 1e9;
  const line = (name: string, m: { median: number; min: number; lossMem: number | null; rss: number | null; loss: number }) => [
    name, V, m.median, m.min, gf(m.median), m.lossMem === null ? '-' : mib(m.lossMem),
    m.lossMem === null ? '-' : `${((100 * m.lossMem) / logitsBytes).toFixed(2)}%`,
    m.rss === null || Number.isNaN(m.rss) ? '-' : mib(m.rss),
    tr ? `${(tr.median_s / m.median).toFixed(2)}x` : '-',
    tr ? `${(tr.min_s / m.min).toFixed(2)}x` : '-',
    m.loss,
  ];
  rows.push(line('fused', fused));
  rows.push(line('lmLoss (TS, autograd)', { ...viaTs, lossMem: null }));
  rows.push(line('naive (N x V logits)', naive));
  if (tr) rows.push(line(`torch ${torchVersion}`, { median: tr.median_s, min: tr.min_s, lossMem: null, rss: tr.rss_above_inputs_bytes, loss: tr.loss }));
  data.push({
    loadAverage1mAfter: loadavg()[0],
    vocab: V, tokens: N, hidden: H, threads, labelSmoothing: eps, logitsBytes, gradBytes,
    fused, lmLoss: { ...viaTs, lossMem: undefined }, naive, torch: tr,
    goals: {
      lossMemoryFractionOfLogits: fused.lossMem / logitsBytes,
      speedupVsTorch: tr ? tr.median_s / fused.median : null,
      speedupVsTorchBestRuns: tr ? tr.min_s / fused.min : null,
    },
  });
  for (const x of [h, w, t]) x.dispose();
}

const title = `lm_head: loss forward + backward, N = ${N}, H = ${H}, label smoothing ${eps}, ${precLabel}, ${threads} thread(s)`;
const columns = ['path', 'V', 'median s', 'min s', 'GFLOP/s', 'loss mem MiB', '% of logits', 'RSS MiB', 'torch/this (median)', '(min)', 'loss'];
printTable(title, columns, rows);
console.log('\nloss mem: native peak above inputs and returned gradients; RSS: peak resident above the start of the step, less the gradients.');
console.log(`load average (1 min) at the end: ${loadavg()[0]!.toFixed(2)} on ${threads} thread(s); the machine is shared, so compare rows of one run.`);
console.log(`GFLOP/s counts 3 GEMMs of 2*N*H*V each; goals: fused loss memory < 5% of the ${N} x V logits, >= 3x PyTorch.`);
writeResult(precision === 'medium' ? 'lm_head_bf16' : 'lm_head', { precision, tables: [{ title, columns, rows }], results: data, torch: torchVersion ? { version: torchVersion, threads } : null });
