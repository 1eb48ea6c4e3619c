// Shared helpers for the benchmarks in bench/: timing (medians of repeats, the
// machine is shared and noisy), a plain-text table, JSON results with machine info,
// and the optional PyTorch side-by-side through Debian's /usr/bin/python3.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../ts/native.js';

export const benchDir = dirname(fileURLToPath(import.meta.url));
export const resultsDir = join(benchDir, 'results');

export interface TimeitOptions {
  /** Untimed calls first (default 2). */
  warmup?: number;
  /** Timed calls at least (default 5). */
  repeats?: number;
  /** Keep repeating until this much time was spent timing (default 0). */
  minTimeMs?: number;
}

export interface Timing {
  /** Median seconds per call. */
  median: number;
  /** Fastest call, seconds. */
  min: number;
  /** Every timed call, seconds. */
  times: number[];
}

/** Times fn: `warmup` untimed calls, then at least `repeats` calls (and at least minTimeMs in all). */
export function timeit(fn: () => void, opts: TimeitOptions = {}): Timing {
  const warmup = opts.warmup ?? 2, repeats = Math.max(1, opts.repeats ?? 5), minTime = opts.minTimeMs ?? 0;
  for (let i = 0; i < warmup; i++) fn();
  const times: number[] = [];
  let spent = 0;
  while (times.length < repeats || spent * 1e3 < minTime) {
    const t0 = process.hrtime.bigint();
    fn();
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    times.push(dt);
    spent += dt;
    if (times.length > 100000) break;
  }
  const sorted = [...times].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, times };
}

function cell(v: string | number): string {
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : a >= 0.01 ? v.toFixed(3) : v.toPrecision(3);
}

/** Prints an aligned text table (numbers right-aligned, rounded for reading). */
export function printTable(title: string, columns: string[], rows: (string | number)[][]): void {
  const text = rows.map((r) => r.map(cell));
  const width = columns.map((c, i) => Math.max(c.length, ...text.map((r) => (r[i] ?? '').length)));
  const line = (r: string[], nums: boolean[]) =>
    r.map((s, i) => (nums[i] ? s.padStart(width[i]!) : s.padEnd(width[i]!))).join('  ').trimEnd();
  console.log(`\n${title}`);
  console.log(line(columns, columns.map(() => false)));
  console.log(width.map((w) => '-'.repeat(w)).join('  '));
  for (let k = 0; k < rows.length; k++) console.log(line(text[k]!, rows[k]!.map((v) => typeof v === 'number')));
}

/** What the results say about the machine that produced them. */
export function machineInfo(): Record<string, unknown> {
  const c = cpus();
  let build: unknown = null;
  try { build = native.buildInfo(); } catch (e) { build = { error: String((e as Error).message ?? e) }; }
  return {
    cpu: c[0]?.model ?? 'unknown',
    cores: c.length,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    openblasCoretype: process.env.OPENBLAS_CORETYPE ?? null,
    build,
  };
}

/** Writes bench/results/<name>.json ({ name, date, command, machine, data }); returns the path. */
export function writeResult(name: string, data: unknown): string {
  if (!/^[\w.-]+$/.test(name)) throw new RangeError(`writeResult: expected a file-name-safe name but received '${name}'`);
  mkdirSync(resultsDir, { recursive: true });
  const path = join(resultsDir, `${name}.json`);
  const out = {
    name,
    date: new Date().toISOString(),
    command: process.env.VLMKIT_BENCH_COMMAND ?? ['node', ...process.argv.slice(1).map((a) => a.replace(/^.*\/(bench\/)/, '$1'))].join(' '),
    machine: machineInfo(),
    data,
  };
  writeFileSync(path, JSON.stringify(out, null, 2) + '\n');
  console.log(`\nwrote ${path}`);
  return path;
}

/** Reads a results file written by writeResult (null when missing). */
export function readResult(name: string): any {
  const path = join(resultsDir, `${name}.json`);
  return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : null;
}

const PYTHON = '/usr/bin/python3';
let torchChecked: boolean | null = null;

/** Whether Debian's python3 can import torch (python3-torch). Checked once. */
export function torchAvailable(): boolean {
  if (torchChecked === null) {
    if (!existsSync(PYTHON)) torchChecked = false;
    else {
      const r = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, PYTHONPATH: '' } });
      torchChecked = r.status === 0;
    }
  }
  return torchChecked;
}

/**
 * Runs `script` with /usr/bin/python3 (which must import torch itself) and parses the
 * JSON of the last line it prints. Returns null, printing "PyTorch: not installed",
 * when python3-torch is missing; throws when the script fails.
 */
export function runTorch(script: string): any {
  if (!torchAvailable()) {
    console.log('PyTorch: not installed');
    return null;
  }
  const r = spawnSync(PYTHON, ['-c', script], { encoding: 'utf8', timeout: 600_000, maxBuffer: 64 << 20, env: { ...process.env, PYTHONPATH: '' } });
  if (r.status !== 0) throw new Error(`runTorch: python3 exited with ${r.status ?? r.signal}: ${r.stderr.trim().slice(-2000)}`);
  const last = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(last);
  } catch {
    throw new Error(`runTorch: expected JSON on the last line of output but received '${last.slice(0, 200)}'`);
  }
}

/** Formats bytes for tables. */
export function mib(bytes: number): number {
  return Math.round((bytes / 1048576) * 100) / 100;
}

// ---- row-kernel bandwidth tables (softmax, layer_norm) --------------------------------

/** One timing of a row kernel: `lib` is 'vlmkit', 'naive' or 'torch'. */
export interface BandwidthPoint { lib: string; rows: number; cols: number; threads: number; fwd_s: number; fwdbwd_s: number; peak_mib?: number }

/** A Python `med(f, reps)`: one warm-up call, then the median of reps timed calls. */
export const PY_MEDIAN = `def med(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    ts.sort(); k = len(ts)
    return ts[k//2] if k % 2 else 0.5 * (ts[k//2 - 1] + ts[k//2])`;

/**
 * GB/s table of a float32 row kernel (forward reads + writes 2 passes of 4 B per element,
 * forward+backward 5), one row per (cols, rows, threads), with vlmkit's ratio to the others.
 */
export function bandwidthTable(points: BandwidthPoint[], colsList: number[], rowsList: number[], threads: number[]):
  { columns: string[]; rows: (string | number)[][] } {
  const libs = ['vlmkit', 'naive', 'torch'].filter((l) => points.some((p) => p.lib === l));
  const get = (lib: string, rows: number, cols: number, t: number) => points.find((p) => p.lib === lib && p.rows === rows && p.cols === cols && p.threads === t);
  const gbs = (bytes: number, s: number | undefined) => (s ? bytes / s / 1e9 : '-');
  const columns = ['cols', 'rows', 'threads',
    ...libs.map((l) => `${l} fwd GB/s`), ...libs.map((l) => `${l} fwd+bwd GB/s`),
    'vlmkit fwd+bwd ms', 'vlmkit peak MiB', ...libs.filter((l) => l !== 'vlmkit').map((l) => `vlmkit / ${l} (fwd+bwd)`)];
  const rows: (string | number)[][] = [];
  for (const cols of colsList)
    for (const r of rowsList)
      for (const t of threads) {
        const n = r * cols, v = get('vlmkit', r, cols, t)!;
        rows.push([cols, r, t,
          ...libs.map((l) => gbs(2 * 4 * n, get(l, r, cols, t)?.fwd_s)),
          ...libs.map((l) => gbs(5 * 4 * n, get(l, r, cols, t)?.fwdbwd_s)),
          v.fwdbwd_s * 1e3, v.peak_mib ?? '-',
          ...libs.filter((l) => l !== 'vlmkit').map((l) => {
            const o = get(l, r, cols, t);
            return o ? `${(o.fwdbwd_s / v.fwdbwd_s).toFixed(2)}x` : '-';
          })]);
      }
  return { columns, rows };
}
