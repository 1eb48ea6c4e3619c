// itm benchmark: hard-negative mining (one negative text per image and one negative image
// per text, from the masked softmax of sim / temperature) at B in {256, 4096, 65536},
// D = 256, float32, temperature 0.07:
//   fused   native itmMine: similarity tiles, two passes (row normaliser, inverse CDF), no B x B buffer
//   naive   native itmMineReference: both B x B similarity matrices and weights materialised
//           (LAVIS's softmax + multinomial), the same uniforms, so its draws must agree
//   torch   softmax(sim with the positives at -10000) + torch.multinomial(weights, 1) on the
//           whole matrix at once, for both directions (python3-torch), where B x B fits
// "extra MiB" is the native peak (memory()) above the inputs during the call, outputs included;
// for PyTorch, the peak resident set above what was resident before the call.
// Goal: B = 65,536 with under 32 MiB of extra memory.
//   npx tsx bench/itm.ts [--sizes 256,4096,65536] [--dim 256] [--repeats 3]
import { native } from '../ts/native.js';
import { randn } from '../ts/graph/creation.js';
import { mib, printTable, runTorch, timeit, torchAvailable, writeResult } from './common.js';

function argList(flag: string, dflt: number[]): number[] {
  const i = process.argv.indexOf(flag);
  if (i < 0 || !process.argv[i + 1]) return dflt;
  return process.argv[i + 1]!.split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0);
}

const sizes = argList('--sizes', [256, 4096, 65536]);
const D = argList('--dim', [256])[0]!;
const repeats = argList('--repeats', [3])[0]!;
const temperature = 0.07;
const threads = native.getNumThreads();
const naiveLimit = 1 << 30;      // bytes of B x B float32 matrices the naive paths may allocate (x 2 directions)
const goalBytes = 32 * 1048576;

const TORCH = `
import json, re, statistics, time
import torch
torch.set_num_threads(ARGS["threads"])
def hwm_kib():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s+(\\d+)", f.read()).group(1))
def rss_kib():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\\s+(\\d+)", f.read()).group(1))
def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
out = []
for B in ARGS["sizes"]:
    g = torch.Generator().manual_seed(0)
    D = ARGS["dim"]
    img = torch.randn(B, D, generator=g) / D ** 0.5
    txt = torch.randn(B, D, generator=g) / D ** 0.5
    def step():
        with torch.no_grad():
            sim_i2t = img @ txt.t() / ARGS["temp"]
            sim_t2i = txt @ img.t() / ARGS["temp"]
            sim_i2t.fill_diagonal_(-10000)
            sim_t2i.fill_diagonal_(-10000)
            w_i2t = torch.softmax(sim_i2t, dim=1)
            w_t2i = torch.softmax(sim_t2i, dim=1)
            neg_text = torch.multinomial(w_i2t, 1, generator=g).squeeze(1)
            neg_image = torch.multinomial(w_t2i, 1, generator=g).squeeze(1)
            return int(neg_text[0]) + int(neg_image[0])
    step()
    times = []
    for _ in range(ARGS["repeats"] if B <= 4096 else 1):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    base = rss_kib()
    can = reset_hwm()
    step()
    peak = hwm_kib() if can else None
    out.append({"B": B, "median_s": statistics.median(times), "min_s": min(times), "times": times,
                "extra_bytes": None if peak is None else (peak - base) * 1024})
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": out}))
`;

interface Measure { median: number; min: number; times: number[]; extra: number }

/** Times `call` (which frees what it returns) and measures the native peak above the inputs on one more call. */
function measure(call: () => void, reps: number): Measure {
  const tm = timeit(call, { warmup: reps > 1 ? 1 : 0, repeats: reps });
  native.resetPeak();
  const live = native.memory().cpu.liveBytes;
  call();
  return { median: tm.median, min: tm.min, times: tm.times, extra: native.memory().cpu.peakBytes - live };
}

const torchSizes = sizes.filter((B) => 4 * B * B * 4 <= 4 * naiveLimit);  // two similarity and two weight matrices
let torchOut: { torch: string; threads: number; results: { B: number; median_s: number; min_s: number; times: number[]; extra_bytes: number | null }[] } | null = null;
if (torchAvailable() && torchSizes.length) {
  torchOut = runTorch(`ARGS = ${JSON.stringify({ sizes: torchSizes, dim: D, temp: temperature, threads, repeats })}\n${TORCH}`);
} else if (!torchAvailable()) {
  console.log('PyTorch: not installed (apt-get install python3-torch for the side-by-side)');
}

const rows: (string | number)[][] = [];
const data: Record<string, unknown>[] = [];
for (const B of sizes) {
  const image = randn([B, D], { seed: 1, std: 1 / Math.sqrt(D) });
  const text = randn([B, D], { seed: 2, std: 1 / Math.sqrt(D) });
  const reps = B >= 65536 ? 1 : repeats;
  const matrixBytes = B * B * 4;
  const fusedDraws: Int32Array[] = [];
  const fused = measure(() => {
    const r = native.itmMine(image.handle, text.handle, temperature, null, 7, 0, 0);
    if (fusedDraws.length === 0) fusedDraws.push(native.toArray(r.negativeText) as Int32Array, native.toArray(r.negativeImage) as Int32Array);
    r.negativeText.dispose();
    r.negativeImage.dispose();
  }, reps);
  const flops = 2 * 2 * B * B * D;  // pass 1 of both directions (pass 2 recomputes one segment per row)
  rows.push(['fused', B, fused.median, fused.min, flops / fused.median / 1e9, mib(fused.extra), mib(matrixBytes), '-', '-']);
  const entry: Record<string, unknown> = { B, dim: D, threads, temperature, matrixBytes, fused, goalMet: B < 65536 ? null : fused.extra < goalBytes };

  if (2 * matrixBytes <= naiveLimit) {
    let agree = NaN;
    const naive = measure(() => {
      const r = native.itmMineReference(image.handle, text.handle, temperature, null, 7, 0, 0, false);
      if (Number.isNaN(agree)) {
        const a = native.toArray(r.negativeText), b = native.toArray(r.negativeImage);
        let same = 0;
        for (let i = 0; i < B; i++) same += (a[i] === fusedDraws[0]![i] ? 1 : 0) + (b[i] === fusedDraws[1]![i] ? 1 : 0);
        agree = same / (2 * B);
      }
      r.negativeText.dispose();
      r.negativeImage.dispose();
    }, reps);
    rows.push(['naive (B x B)', B, naive.median, naive.min, flops / naive.median / 1e9, mib(naive.extra), mib(matrixBytes),
      `${(naive.median / fused.median).toFixed(2)}x`, `${(100 * agree).toFixed(2)}%`]);
    entry.naive = { ...naive, drawsAgreeWithFused: agree };
  }
  const tr = torchOut?.results.find((r) => r.B === B);
  if (tr) {
    rows.push([`torch ${torchOut!.torch}`, B, tr.median_s, tr.min_s, flops / tr.median_s / 1e9,
      tr.extra_bytes === null ? '-' : mib(tr.extra_bytes), mib(matrixBytes), `${(tr.median_s / fused.median).toFixed(2)}x`, '-']);
    entry.torch = tr;
  }
  data.push(entry);
  image.dispose();
  text.dispose();
}

const title = `itm: hard-negative mining, both directions, D = ${D}, float32, temperature ${temperature}, ${threads} thread(s)`;
const columns = ['path', 'B', 'median s', 'min s', 'GFLOP/s', 'extra MiB', 'B x B fp32 MiB', 'time / fused', 'draws = fused'];
printTable(title, columns, rows);
console.log('\nGFLOP/s counts one similarity GEMM (2*B*B*D) per direction; the fused path also recomputes a segment per row.');
console.log('extra MiB: native peak above the inputs, outputs included (PyTorch: peak RSS above the start of the call).');
const big = data.find((d) => d.B === 65536);
if (big) console.log(`goal: B = 65536 with under 32 MiB extra: ${(big.goalMet ? 'met' : 'NOT met')} (${mib((big.fused as Measure).extra)} MiB)`);
writeResult('itm', { tables: [{ title, columns, rows }], results: data, torch: torchOut ? { version: torchOut.torch, threads: torchOut.threads } : null });
