// N-API call overhead: microseconds per call of tiny native ops, where the work is
// nothing and the crossing is everything (goal: < 2 us). native.getNumThreads() is the
// floor (one call, no arguments, a number back); the others add argument checks and a
// new tensor handle.
//   npm run bench -- overhead
import { native } from '../ts/native.js';
import { tensor } from '../ts/graph/creation.js';
import { matmul } from '../ts/graph/ops/matmul.js';
import { printTable, timeit, writeResult } from './common.js';

const CALLS = 20_000;

const x = tensor([1]), m = tensor([[2]]);
const h = x.handle, mh = m.handle;
const shape = [1], strides = [1];

const cases: [string, () => void][] = [
  ['native.getNumThreads()', () => { for (let i = 0; i < CALLS; i++) native.getNumThreads(); }],
  ['native.view(1-element)', () => { for (let i = 0; i < CALLS; i++) native.view(h, shape, strides, 0).dispose(); }],
  ['native.matmul(1x1, 1x1)', () => { for (let i = 0; i < CALLS; i++) native.matmul(mh, mh, false, false).dispose(); }],
  ['matmul(1x1, 1x1) (TS op)', () => { for (let i = 0; i < CALLS; i++) matmul(m, m).dispose(); }],
];

const columns = ['call', 'us / call (median)', 'us / call (min)'];
const rows: (string | number)[][] = [];
const threads = native.getNumThreads();
for (const [label, fn] of cases) {
  const t = timeit(fn, { warmup: 2, repeats: 7 });
  rows.push([label, (t.median / CALLS) * 1e6, (t.min / CALLS) * 1e6]);
}
const title = `N-API call overhead (${CALLS} calls per repeat, ${threads} threads; each op's handle disposed in the loop)`;
printTable(title, columns, rows);
writeResult('overhead', { calls: CALLS, threads, tables: [{ title, columns, rows }] });
