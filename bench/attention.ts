// attention benchmark: forward + backward (gradients to q, k, v) of multi-head scaled-dot-
// product attention at batch 32, heads 8, head dim 64, L in {64, 197, 256, 1024}, float32,
// self-attention without a mask:
//   vlmkit   the fused kernel (native attentionForward + attentionBackward): tiles with an
//            online softmax, the [B, H, L, L] scores never stored, backward by recomputation
//   naive    the materialised path from the plain native ops: matmul(q*scale, k^T), softmax,
//            matmul(P, v); backward matmuls + softmaxBackward, each intermediate freed as soon
//            as an autograd engine would free it
//   torch    the same math in PyTorch with autograd (python3-torch; F.scaled_dot_product_attention
//            when the installed version has it), same thread count, run right before vlmkit
// GFLOP/s counts 4·B·H·L²·D for the forward and 2.5x that for the backward (flash-attention's
// convention, 14·B·H·L²·D in all) for every path, so the ratios are time ratios. "peak MiB" is
// the native peak (memory()) above the inputs (q, k, v, dO) during one forward + backward,
// gradients included. Goals at L = 1024: vlmkit peak < 1/4 of naive's and speed >= naive's.
//   npx tsx bench/attention.ts [--sizes 64,197,256,1024] [--batch 32] [--heads 8] [--dim 64] [--threads 2]
import { native, type NativeTensor } from '../ts/native.js';
import { randn } from '../ts/graph/creation.js';
import { mib, printTable, runTorch, timeit, torchAvailable, writeResult } from './common.js';

function argList(flag: string, dflt: number[]): number[] {
  const i = process.argv.indexOf(flag);
  if (i < 0 || !process.argv[i + 1]) return dflt;
  return process.argv[i + 1]!.split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0);
}

const sizes = argList('--sizes', [64, 197, 256, 1024]);
const B = argList('--batch', [32])[0]!;
const H = argList('--heads', [8])[0]!;
const D = argList('--dim', [64])[0]!;
const threads = argList('--threads', [native.getNumThreads()])[0]!;
native.setNumThreads(threads);
const scale = 1 / Math.sqrt(D);
const repeatsFor = (L: number) => (L >= 1024 ? 2 : L >= 256 ? 3 : 5);
const flops = (L: number) => 14 * B * H * L * L * D;
const free = (...hs: (NativeTensor | null)[]) => { for (const h of hs) h?.dispose(); };

const options = { scale, causal: false, causalOffset: 0, mask: null, bias: null, keyPadding: null, dropout: 0, seed: 0, offset: 0 };

interface In { q: NativeTensor; k: NativeTensor; v: NativeTensor; g: NativeTensor }

const fused = {
  fwd(x: In): void {
    const f = native.attentionForward(x.q, x.k, x.v, options);
    free(f.out, f.lse);
  },
  fwdBwd(x: In): void {
    const f = native.attentionForward(x.q, x.k, x.v, options);
    const b = native.attentionBackward(x.q, x.k, x.v, f.out, f.lse, x.g, options, [true, true, true]);
    free(f.out, f.lse, b.dq, b.dk, b.dv);
  },
};

const naive = {
  fwdBwd(x: In): void {
    const qs = native.affine(x.q, scale, 0);
    const s = native.matmul(qs, x.k, false, true);
    const p = native.softmax(s, -1, false);
    free(s);
    const out = native.matmul(p, x.v, false, false);
    const dv = native.matmul(p, x.g, true, false);
    const dp = native.matmul(x.g, x.v, false, true);
    const ds = native.softmaxBackward(p, dp, -1, false);
    free(dp, p);
    const dq = native.matmul(ds, x.k, false, false);
    native.scaleInPlace(dq, scale);
    const dk = native.matmul(ds, qs, true, false);
    free(ds, qs, out, dv, dq, dk);
  },
};

/** Median/min seconds of fn, and the native peak above the live bytes before one extra call. */
function measure(fn: () => void, repeats: number): { median: number; min: number; peak: number } {
  const t = timeit(fn, { warmup: 1, repeats });
  native.resetPeak();
  const live = native.memory().cpu.liveBytes;
  fn();
  return { median: t.median, min: t.min, peak: native.memory().cpu.peakBytes - live };
}

function torchAt(L: number): { median: number; min: number; version: string; sdpa: boolean } | null {
  if (!torchAvailable()) return null;
  const script = `
import json, time, math, torch
import torch.nn.functional as F
torch.set_num_threads(${threads})
torch.manual_seed(0)
B, H, L, D, reps = ${B}, ${H}, ${L}, ${D}, ${repeatsFor(L)}
q, k, v = (torch.randn(B, H, L, D, requires_grad=True) for _ in range(3))
g = torch.randn(B, H, L, D)
sdpa = hasattr(F, 'scaled_dot_product_attention')
def step():
    if sdpa:
        o = F.scaled_dot_product_attention(q, k, v)
    else:
        p = torch.softmax(torch.matmul(q * (1.0 / math.sqrt(D)), k.transpose(-2, -1)), -1)
        o = torch.matmul(p, v)
    o.backward(g)
    q.grad = k.grad = v.grad = None
step()
ts = []
for _ in range(reps):
    t0 = time.perf_counter(); step(); ts.append(time.perf_counter() - t0)
ts.sort(); n = len(ts)
print(json.dumps({"median": ts[n // 2] if n % 2 else 0.5 * (ts[n // 2 - 1] + ts[n // 2]), "min": ts[0], "version": torch.__version__, "sdpa": sdpa}))
`;
  return runTorch(script);
}

interface Row { L: number; fwd_s: number; vlmkit: ReturnType<typeof measure>; naive: ReturnType<typeof measure>; torch: ReturnType<typeof torchAt> }
const results: Row[] = [];
for (const L of sizes) {
  const tr = torchAt(L);
  const x: In = {
    q: randn([B, H, L, D], { seed: 1 }).handle, k: randn([B, H, L, D], { seed: 2 }).handle,
    v: randn([B, H, L, D], { seed: 3 }).handle, g: randn([B, H, L, D], { seed: 4 }).handle,
  };
  const reps = repeatsFor(L);
  const fwd = timeit(() => fused.fwd(x), { warmup: 1, repeats: reps });
  const vm = measure(() => fused.fwdBwd(x), reps);
  const nv = measure(() => naive.fwdBwd(x), reps);
  free(x.q, x.k, x.v, x.g);
  results.push({ L, fwd_s: fwd.median, vlmkit: vm, naive: nv, torch: tr });
  console.log(`L=${L}: vlmkit ${(vm.median * 1e3).toFixed(1)} ms, naive ${(nv.median * 1e3).toFixed(1)} ms` +
    (tr ? `, torch ${(tr.median * 1e3).toFixed(1)} ms` : ''));
}

const torchName = results.find((r) => r.torch)?.torch;
const columns = ['L', 'vlmkit fwd ms', 'vlmkit fwd+bwd ms', 'vlmkit GFLOP/s', 'naive fwd+bwd ms', 'naive GFLOP/s',
  ...(torchName ? ['torch fwd+bwd ms', 'torch GFLOP/s'] : []),
  'vlmkit peak MiB', 'naive peak MiB', 'peak vlmkit/naive', 'speed vs naive', ...(torchName ? ['speed vs torch'] : [])];
const rows = results.map((r) => [
  r.L, r.fwd_s * 1e3, r.vlmkit.median * 1e3, flops(r.L) / r.vlmkit.median / 1e9, r.naive.median * 1e3, flops(r.L) / r.naive.median / 1e9,
  ...(torchName ? (r.torch ? [r.torch.median * 1e3, flops(r.L) / r.torch.median / 1e9] : ['-', '-']) : []),
  mib(r.vlmkit.peak), mib(r.naive.peak), `${(r.vlmkit.peak / r.naive.peak).toFixed(3)}`,
  `${(r.naive.median / r.vlmkit.median).toFixed(2)}x`,
  ...(torchName ? [r.torch ? `${(r.torch.median / r.vlmkit.median).toFixed(2)}x` : '-'] : []),
]);
const title = `float32 attention forward+backward, batch ${B}, heads ${H}, head dim ${D}, ${threads} thread(s); ` +
  `median of ${sizes.map(repeatsFor).join('/')} runs` +
  (torchName ? `; torch ${torchName.version} (${torchName.sdpa ? 'scaled_dot_product_attention' : 'matmul + softmax + matmul, no SDPA in this version'})` : '; PyTorch not installed');
printTable(title, columns, rows);
writeResult('attention', { tables: [{ title, columns, rows }], results, config: { B, H, D, threads, tiles: native.attentionTiles() } });
