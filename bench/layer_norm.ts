// layer_norm benchmark: float32 layer norm over the last axis (with weight and bias),
// forward and forward+backward (dx, dweight, dbias), as memory throughput (GB/s = bytes
// read + written / time: forward reads x and writes y; the backward reads x and gy and
// writes dx; the per-row statistics and [C] parameters are not counted). The reference
// is the naive layer norm composed from the plain native ops (mean, sub, mul, mean,
// affine, pow, mul, add and the matching backward), each a full pass with its own
// output; PyTorch (torch.nn.functional.layer_norm) runs in the same job when Debian's
// python3-torch is installed.
//   npm run bench -- layer_norm                   768 and 4096 columns, 4096..65536 rows, 1 and 2 threads
//   npx tsx bench/layer_norm.ts --rows 4096 --cols 768 --threads 1
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
const hasPlainOps = ['reduce', 'binary', 'affine', 'powScalar'].every((f) => typeof (native as unknown as Record<string, unknown>)[f] === 'function');

/** Disposes every handle in hs (a result and its intermediates). */
function freeAll(hs: NativeTensor[]): void {
  for (const h of hs) h.dispose();
}

const eps = 1e-5;

const vlm = {
  fwd(x: NativeTensor, w: NativeTensor, b: NativeTensor, C: number): void {
    const r = native.layerNorm(x, w, b, C, eps);
    freeAll([r.y, r.mean, r.rstd]);
  },
  fwdBwd(x: NativeTensor, w: NativeTensor, b: NativeTensor, C: number, gy: NativeTensor): void {
    const r = native.layerNorm(x, w, b, C, eps);
    const g = native.layerNormBackward(x, w, r.mean, r.rstd, gy, C, true);
    freeAll([r.y, r.mean, r.rstd, g.dx!, g.dweight!, g.dbias!]);
  },
};

const naive = {
  forward(x: NativeTensor, w: NativeTensor, b: NativeTensor): NativeTensor[] {
    const mean = native.reduce('mean', x, [-1], true);
    const xc = native.binary('sub', x, mean);
    const sq = native.binary('mul', xc, xc);
    const v = native.reduce('mean', sq, [-1], true);
    const ve = native.affine(v, 1, eps);
    const rstd = native.powScalar(ve, -0.5);
    const xhat = native.binary('mul', xc, rstd);
    const xw = native.binary('mul', xhat, w);
    const y = native.binary('add', xw, b);
    return [y, xhat, rstd, mean, xc, sq, v, ve, xw];
  },
  fwd(x: NativeTensor, w: NativeTensor, b: NativeTensor): void { freeAll(naive.forward(x, w, b)); },
  fwdBwd(x: NativeTensor, w: NativeTensor, b: NativeTensor, _C: number, gy: NativeTensor): void {
    const f = naive.forward(x, w, b);
    const [, xhat, rstd] = f as [NativeTensor, NativeTensor, NativeTensor];
    const dn = native.binary('mul', gy, w);
    const a = native.reduce('mean', dn, [-1], true);
    const dnx = native.binary('mul', dn, xhat);
    const bb = native.reduce('mean', dnx, [-1], true);
    const t1 = native.binary('sub', dn, a);
    const t2 = native.binary('mul', xhat, bb);
    const t3 = native.binary('sub', t1, t2);
    const dx = native.binary('mul', t3, rstd);
    const gx = native.binary('mul', gy, xhat);
    const dw = native.reduce('sum', gx, [0], false);
    const db = native.reduce('sum', gy, [0], false);
    freeAll([...f, dn, a, dnx, bb, t1, t2, t3, dx, gx, dw, db]);
  },
};

type Point = BandwidthPoint;
const points: Point[] = [];

for (const cols of colsList) {
  for (const rows of rowsList) {
    const n = rows * cols;
    const x = randn([rows, cols], { seed: 1, std: 2 }), gy = randn([rows, cols], { seed: 2 });
    const w = randn([cols], { seed: 3 }), b = randn([cols], { seed: 4 });
    const reps = repeatsFor(n);
    for (const t of threads) {
      const prev = native.getNumThreads();
      native.setNumThreads(t);
      try {
        const f = timeit(() => vlm.fwd(x.handle, w.handle, b.handle, cols), { warmup: 1, repeats: reps });
        native.resetPeak();
        const base = native.memory().cpu.liveBytes;
        const fb = timeit(() => vlm.fwdBwd(x.handle, w.handle, b.handle, cols, gy.handle), { warmup: 1, repeats: reps });
        const peak = native.memory().cpu.peakBytes - base;
        points.push({ lib: 'vlmkit', rows, cols, threads: t, fwd_s: f.median, fwdbwd_s: fb.median, peak_mib: mib(peak) });
        if (hasPlainOps) {
          const nf = timeit(() => naive.fwd(x.handle, w.handle, b.handle), { warmup: 1, repeats: reps });
          native.resetPeak();
          const nfb = timeit(() => naive.fwdBwd(x.handle, w.handle, b.handle, cols, gy.handle), { warmup: 1, repeats: reps });
          const npeak = native.memory().cpu.peakBytes - base;
          points.push({ lib: 'naive', rows, cols, threads: t, fwd_s: nf.median, fwdbwd_s: nfb.median, peak_mib: mib(npeak) });
        }
      } finally {
        native.setNumThreads(prev);
      }
      console.log(`rows=${rows} cols=${cols} threads=${t}: done`);
    }
    for (const h of [x, gy, w, b]) h.dispose();
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
        w = torch.randn(cols); b = torch.randn(cols)
        xg = x.clone().requires_grad_(); wg = w.clone().requires_grad_(); bg = b.clone().requires_grad_()
        F = torch.nn.functional
        for t in ${JSON.stringify(threads)}:
            torch.set_num_threads(t)
            with torch.no_grad():
                f = med(lambda: F.layer_norm(x, (cols,), w, b, ${eps}), reps)
            def fb():
                y = F.layer_norm(xg, (cols,), wg, bg, ${eps}); y.backward(gy); xg.grad = None; wg.grad = None; bg.grad = None
            res.append({"lib": "torch", "rows": rows, "cols": cols, "threads": t, "fwd_s": f, "fwdbwd_s": med(fb, reps)})
print(json.dumps(res))
`;
  points.push(...((runTorch(script) as Point[] | null) ?? []));
} else {
  console.log('PyTorch: not installed');
}

const { columns, rows } = bandwidthTable(points, colsList, rowsList, threads);
const title = 'float32 layer norm over the last axis, with weight and bias: GB/s (bytes read + written / median time; fwd 2 passes of 4 B, fwd+bwd 5)'
  + (hasPlainOps ? '' : ' [plain ops missing: no naive reference]');
printTable(title, columns, rows);
writeResult('layer_norm', { tables: [{ title, columns, rows }], points });
