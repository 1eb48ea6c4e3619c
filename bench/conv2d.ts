// conv2d benchmark: float32 convolutions of the shapes a small EfficientNet meets on
// 32x32 / 64x64 images (the stem 3x3 stride 2, a plain 3x3, 1x1 expand and project
// convs, depthwise 3x3 at stride 1 and 2, a depthwise 5x5 on 8x8), forward and
// forward+backward (dx, dweight, dbias) as GFLOP/s of the convolution arithmetic
// (forward 2*N*O*OH*OW*C/groups*KH*KW; backward twice that), at 1 and 2 threads, with
// torch.nn.functional.conv2d (PyTorch's CPU path: oneDNN/mkldnn or its own kernels) in
// the same job when Debian's python3-torch is installed.
//   npm run bench -- conv2d
//   npx tsx bench/conv2d.ts --batch 16 --threads 1
import { native, type NativeTensor } from '../ts/native.js';
import { randn } from '../ts/graph/creation.js';
import { printTable, runTorch, timeit, torchAvailable, writeResult } from './common.js';

function argList(flag: string, dflt: number[]): number[] {
  const i = process.argv.indexOf(flag);
  if (i < 0 || !process.argv[i + 1]) return dflt;
  return process.argv[i + 1]!.split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0);
}

const batch = argList('--batch', [32])[0]!;
const threads = argList('--threads', [1, 2]);

interface Shape { name: string; C: number; H: number; O: number; k: number; s: number; g: number }
// (C in, H = W input, O out, k kernel, s stride, g groups); padding (k-1)/2 as EfficientNet.
const shapes: Shape[] = [
  { name: 'stem 3x3 s2 (64x64)', C: 3, H: 64, O: 32, k: 3, s: 2, g: 1 },
  { name: '3x3 s1 (32x32)', C: 32, H: 32, O: 32, k: 3, s: 1, g: 1 },
  { name: '1x1 expand (32x32)', C: 16, H: 32, O: 96, k: 1, s: 1, g: 1 },
  { name: 'depthwise 3x3 s1 (32x32)', C: 96, H: 32, O: 96, k: 3, s: 1, g: 96 },
  { name: 'depthwise 3x3 s2 (32x32)', C: 144, H: 32, O: 144, k: 3, s: 2, g: 144 },
  { name: '1x1 project (16x16)', C: 144, H: 16, O: 40, k: 1, s: 1, g: 1 },
  { name: 'depthwise 5x5 s1 (8x8)', C: 480, H: 8, O: 480, k: 5, s: 1, g: 480 },
  { name: '1x1 expand (8x8)', C: 80, H: 8, O: 480, k: 1, s: 1, g: 1 },
];

const outSize = (sh: Shape) => Math.floor((sh.H + 2 * ((sh.k - 1) >> 1) - sh.k) / sh.s) + 1;
const flops = (sh: Shape) => 2 * batch * sh.O * outSize(sh) ** 2 * (sh.C / sh.g) * sh.k * sh.k;

interface Point { lib: string; name: string; threads: number; fwd_s: number; fwdbwd_s: number }
const points: Point[] = [];

for (const sh of shapes) {
  const p = (sh.k - 1) >> 1, OH = outSize(sh);
  const x = randn([batch, sh.C, sh.H, sh.H], { seed: 1 });
  const w = randn([sh.O, sh.C / sh.g, sh.k, sh.k], { seed: 2, std: 0.1 });
  const b = randn([sh.O], { seed: 3 });
  const gy = randn([batch, sh.O, OH, OH], { seed: 4 });
  const geo: [number[], number[], number[], number] = [[sh.s, sh.s], [p, p], [1, 1], sh.g];
  const fwd = () => native.conv2d(x.handle, w.handle, b.handle, ...geo).dispose();
  const fwdBwd = () => {
    const y = native.conv2d(x.handle, w.handle, b.handle, ...geo);
    const r = native.conv2dBackward(x.handle, w.handle, gy.handle, ...geo, true, true, true);
    for (const h of [y, r.dx, r.dweight, r.dbias] as NativeTensor[]) h.dispose();
  };
  for (const t of threads) {
    const prev = native.getNumThreads();
    native.setNumThreads(t);
    try {
      const f = timeit(fwd, { warmup: 2, repeats: 5, minTimeMs: 300 });
      const fb = timeit(fwdBwd, { warmup: 1, repeats: 5, minTimeMs: 300 });
      points.push({ lib: 'vlmkit', name: sh.name, threads: t, fwd_s: f.median, fwdbwd_s: fb.median });
    } finally {
      native.setNumThreads(prev);
    }
    console.log(`${sh.name} threads=${t}: done`);
  }
  for (const h of [x, w, b, gy]) h.dispose();
}

if (torchAvailable()) {
  const script = `
import json, time, torch
import torch.nn.functional as F
res = []
def med(f, min_time=0.3):
    for _ in range(2): f()
    ts = []
    while len(ts) < 5 or sum(ts) < min_time:
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    ts.sort(); k = len(ts)
    return ts[k//2] if k % 2 else 0.5 * (ts[k//2 - 1] + ts[k//2])
for sh in ${JSON.stringify(shapes)}:
    p = (sh["k"] - 1) // 2
    x = torch.randn(${batch}, sh["C"], sh["H"], sh["H"])
    w = torch.randn(sh["O"], sh["C"] // sh["g"], sh["k"], sh["k"]) * 0.1
    b = torch.randn(sh["O"])
    conv = lambda x, w, b: F.conv2d(x, w, b, sh["s"], p, 1, sh["g"])
    gy = torch.randn_like(conv(x, w, b))
    xg = x.clone().requires_grad_(); wg = w.clone().requires_grad_(); bg = b.clone().requires_grad_()
    for t in ${JSON.stringify(threads)}:
        torch.set_num_threads(t)
        with torch.no_grad():
            f = med(lambda: conv(x, w, b))
        def fb():
            y = conv(xg, wg, bg); y.backward(gy); xg.grad = None; wg.grad = None; bg.grad = None
        res.append({"lib": "torch", "name": sh["name"], "threads": t, "fwd_s": f, "fwdbwd_s": med(fb)})
print(json.dumps(res))
`;
  points.push(...((runTorch(script) as Point[] | null) ?? []));
} else {
  console.log('PyTorch: not installed');
}

const libs = ['vlmkit', 'torch'].filter((l) => points.some((p) => p.lib === l));
const get = (lib: string, name: string, t: number) => points.find((p) => p.lib === lib && p.name === name && p.threads === t);
const gf = (f: number, s: number | undefined) => (s ? f / s / 1e9 : '-');
const columns = ['shape', 'C->O', 'threads', 'MFLOP fwd',
  ...libs.map((l) => `${l} fwd GFLOP/s`), ...libs.map((l) => `${l} fwd+bwd GFLOP/s`), 'vlmkit fwd+bwd ms',
  ...(libs.includes('torch') ? ['vlmkit / torch fwd', 'vlmkit / torch fwd+bwd'] : [])];
const rows: (string | number)[][] = [];
for (const sh of shapes)
  for (const t of threads) {
    const f = flops(sh), v = get('vlmkit', sh.name, t)!, o = get('torch', sh.name, t);
    rows.push([sh.name, `${sh.C}->${sh.O}`, t, f / 1e6,
      ...libs.map((l) => gf(f, get(l, sh.name, t)?.fwd_s)), ...libs.map((l) => gf(3 * f, get(l, sh.name, t)?.fwdbwd_s)), v.fwdbwd_s * 1e3,
      ...(libs.includes('torch') ? [o ? `${(o.fwd_s / v.fwd_s).toFixed(2)}x` : '-', o ? `${(o.fwdbwd_s / v.fwdbwd_s).toFixed(2)}x` : '-'] : [])]);
  }
const title = `float32 conv2d, batch ${batch}, EfficientNet-like shapes (padding (k-1)/2): GFLOP/s of the convolution arithmetic ` +
  '(fwd+bwd counts 3x the forward); ratio > 1 means vlmkit is faster';
printTable(title, columns, rows);
writeResult('conv2d', { batch, tables: [{ title, columns, rows }], points });
