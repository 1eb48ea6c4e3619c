// softmax benchmark: float32 softmax along the last axis, forward and forward+backward,
// as memory throughput (GB/s = bytes read + written / time: forward reads x and writes
// y; the backward reads y and gy and writes gx). The reference is the naive softmax
// composed from the plain native ops (max, sub, exp, sum, div and, backward, mul, sum,
// sub, mul), each a full pass with its own output; PyTorch (torch.softmax) runs in the
// same job when Debian's python3-torch is installed.
//   npm run bench -- softmax                      768 and 4096 columns, 4096..65536 rows, 1 and 2 threads
//   npx tsx bench/softmax.ts --rows 4096 --cols 768 --threads 1
import { native, type NativeTensor } from '../ts/native.js';
import { randn } from '../ts/graph/creation.js';
import { mib, printTable, runTorch, timeit, torchAvailable, writeResult, bandwidthTable, PY_MEDIAN, type BandwidthPoint } from './common.js';

function argList(flag: string, dflt: number[]): number[] {
  const i = process.argv.indexOf(flag);
  if (i < 0 || !process.argv[i + 1]) return dflt;
  return process.argv[i + 1]!.split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0);
}

const rowsList = argList('--rows', [4096, 16384, 65536]);
const colsList = argList('--cols', [768, 4096]);
const threads = argList('--threads', [1, 2]);
const repeatsFor = (n: number) => Math.max(3, Math.min(20, Math.floor(2 ** 27 / n)));
const hasPlainOps = ['reduce', 'binary', 'unary'].every((f) => typeof (native as unknown as Record<string, unknown>)[f] === 'function');

/** Disposes every handle in hs (a result and its intermediates). */
function freeAll(hs: NativeTensor[]): void {
  for (const h of hs) h.dispose();
}

const vlm = {
  fwd(x: NativeTensor): void { native.softmax(x, -1, false).dispose(); },
  fwdBwd(x: NativeTensor, gy: NativeTensor): void {
    const y = native.softmax(x, -1, false);
    native.softmaxBackward(y, gy, -1, false).dispose();
    y.dispose();
  },
};

const naive = {
  forward(x: NativeTensor): NativeTensor[] {
    const m = native.reduce('max', x, [-1], true);
    const d = native.binary('sub', x, m);
    const e = native.unary('exp', d);
    const s = native.reduce('sum', e, [-1], true);
    const y = native.binary('div', e, s);
    return [y, m, d, e, s];
  },
  fwd(x: NativeTensor): void { freeAll(naive.forward(x)); },
  fwdBwd(x: NativeTensor, gy: NativeTensor): void {
    const f = naive.forward(x);
    const y = f[0]!;
    const p = native.binary('mul', gy, y);
    const dot = native.reduce('sum', p, [-1], true);
    const c = native.binary('sub', gy, dot);
    const gx = native.binary('mul', y, c);
    freeAll([...f, p, dot, c, gx]);
  },
};

type Point = BandwidthPoint;
const points: Point[] = [];

for (const cols of colsList) {
  for (const rows of rowsList) {
    const n = rows * cols;
    const x = randn([rows, cols], { seed: 1, std: 2 }), gy = randn([rows, cols], { seed: 2 });
    const reps = repeatsFor(n);
    for (const t of threads) {
      const prev = native.getNumThreads();
      native.setNumThreads(t);
      try {
        const f = timeit(() => vlm.fwd(x.handle), { warmup: 1, repeats: reps });
        native.resetPeak();
        const base = native.memory().cpu.liveBytes;
        const fb = timeit(() => vlm.fwdBwd(x.handle, gy.handle), { warmup: 1, repeats: reps });
        const peak = native.memory().cpu.peakBytes - base;
        points.push({ lib: 'vlmkit', rows, cols, threads: t, fwd_s: f.median, fwdbwd_s: fb.median, peak_mib: mib(peak) });
        if (hasPlainOps) {
          const nf = timeit(() => naive.fwd(x.handle), { warmup: 1, repeats: reps });
          native.resetPeak();
          const nfb = timeit(() => naive.fwdBwd(x.handle, gy.handle), { warmup: 1, repeats: reps });
          const npeak = native.memory().cpu.peakBytes - base;
          points.push({ lib: 'naive', rows, cols, threads: t, fwd_s: nf.median, fwdbwd_s: nfb.median, peak_mib: mib(npeak) });
        }
      } finally {
        native.setNumThreads(prev);
      }
      console.log(`rows=${rows} cols=${cols} threads=${t}: done`);
    }
    x.dispose();
    gy.dispose();
  }
}

if (torchAvailable()) {
  const script = `
import json, time, torch
res = []
${PY_MEDIAN}
for cols in ${JSON.stringify(colsList)}:
    for rows in ${JSON.stringify(rowsList)}:
        n = rows * cols
        reps = max(3, min(20, (2**27) // n))
        x = torch.randn(rows, cols) * 2; gy = torch.randn(rows, cols)
        xg = x.clone().requires_grad_()
        for t in ${JSON.stringify(threads)}:
            torch.set_num_threads(t)
            with torch.no_grad():
                f = med(lambda: torch.softmax(x, -1), reps)
            def fb():
                y = torch.softmax(xg, -1); y.backward(gy); xg.grad = None
            res.append({"lib": "torch", "rows": rows, "cols": cols, "threads": t, "fwd_s": f, "fwdbwd_s": med(fb, reps)})
print(json.dumps(res))
`;
  points.push(...((runTorch(script) as Point[] | null) ?? []));
} else {
  console.log('PyTorch: not installed');
}

const { columns, rows } = bandwidthTable(points, colsList, rowsList, threads);
const title = 'float32 softmax over the last axis: GB/s (bytes read + written / median time; fwd 2 passes of 4 B, fwd+bwd 5)'
  + (hasPlainOps ? '' : ' [plain ops missing: no naive reference]');
printTable(title, columns, rows);
writeResult('softmax', { tables: [{ title, columns, rows }], points });
