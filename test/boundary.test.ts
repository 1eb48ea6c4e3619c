// The boundary of the core entry points: wrong types, shapes, sizes, NaN, disposed
// handles. Runs in a child process so that a native crash is a failure, not a hang.
import test from 'ava';
import { errorsInChild } from './helpers/child.js';

const setup = `const n = (await import(${JSON.stringify(new URL('../ts/native.ts', import.meta.url).href)})).native;
const f = n.fromData(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3], 'float32', 'cpu');
const d = n.fromData(new Float32Array([1]), [1], 'float32', 'cpu'); d.dispose();`;

const cases: [string, string, string, RegExp][] = [
  ['empty: shape not an array', `n.empty(3, 'float32', 'cpu')`, 'TypeError', /^empty: expected an array of integers for shape but received the number 3$/],
  ['empty: negative size', `n.empty([2, -1], 'float32', 'cpu')`, 'RangeError', /^empty: expected a shape of non-negative sizes for shape but received \[2, -1\]$/],
  ['empty: huge size', `n.empty([1 << 30, 1 << 30], 'float32', 'cpu')`, 'RangeError', /at most 2\^40 elements/],
  ['empty: too large to allocate', `n.empty([1 << 20, 1 << 19], 'float64', 'cpu')`, 'RangeError', /out of (host )?memory/],
  ['empty: fractional size', `n.empty([2.5], 'float32', 'cpu')`, 'TypeError', /expected an array of integers for shape but received an array holding the number 2.5/],
  ['empty: unknown dtype', `n.empty([2], 'float16', 'cpu')`, 'TypeError', /^empty: expected one of 'float32', 'float64', 'int32', 'uint8' for dtype but received the string 'float16'$/],
  ['empty: unknown device', `n.empty([2], 'float32', 'tpu')`, 'TypeError', /expected 'cpu' or 'cuda' for device/],
  ['empty: cuda without a GPU', `n.empty([2], 'float32', 'cuda')`, 'Error', /cannot use device 'cuda'/],
  ['full: NaN into int32', `n.full([2], NaN, 'int32', 'cpu')`, 'RangeError', /finite number for an integer dtype/],
  ['fromData: not a typed array', `n.fromData([1, 2], [2], 'float32', 'cpu')`, 'TypeError', /expected a typed array for data but received an array of length 2/],
  ['fromData: wrong array type', `n.fromData(new Float64Array(2), [2], 'float32', 'cpu')`, 'TypeError', /typed array of float32/],
  ['fromData: wrong length', `n.fromData(new Float32Array(3), [2], 'float32', 'cpu')`, 'RangeError', /2 elements for shape \[2\]/],
  ['toArray: not a tensor', `n.toArray({ shape: [1] })`, 'TypeError', /^toArray: expected a tensor for tensor but received an object$/],
  ['toArray: disposed', `n.toArray(d)`, 'TypeError', /^toArray: expected a live tensor for tensor but received a disposed tensor$/],
  ['toArray: missing', `n.toArray()`, 'TypeError', /received undefined/],
  ['view: out of bounds', `n.view(f, [3, 3], [3, 1], 0)`, 'RangeError', /inside the storage of 6 elements/],
  ['view: negative offset', `n.view(f, [1], [1], -1)`, 'RangeError', /offset/],
  ['view: stride count', `n.view(f, [2, 3], [1], 0)`, 'RangeError', /2 strides/],
  ['copy: not broadcastable', `n.copy(f, n.empty([4], 'float32', 'cpu'))`, 'RangeError', /broadcastable to \[2, 3\]/],
  ['random: NaN std', `n.random('normal', [2], 'float32', 1, 0, 0, NaN)`, 'RangeError', /finite number for std/],
  ['random: int dtype', `n.random('uniform', [2], 'int32', 1, 0, 0, 1)`, 'TypeError', /'float32' or 'float64' for dtype/],
  ['random: negative seed', `n.random('uniform', [2], 'float32', -1, 0, 0, 1)`, 'RangeError', /seed/],
  ['arange: Infinity step', `n.arange(0, Infinity, 3, 'float32')`, 'RangeError', /finite number for step/],
  ['setNumThreads: zero', `n.setNumThreads(0)`, 'RangeError', /^setNumThreads: expected an integer in \[1, 1024\] for threads but received the number 0$/],
  ['NativeTensor: new from JS', `new n.NativeTensor()`, 'TypeError', /made by vlmkit functions/],
  ['shape getter on disposed', `d.shape`, 'TypeError', /disposed/],
  ['toDevice: cuda without a GPU', `n.toDevice(f, 'cuda')`, 'Error', /cannot use device 'cuda'/],
];

test('core entry points reject bad input with specific errors and never crash', (t) => {
  const { result, errors } = errorsInChild(cases.map(([label, expr]) => [label, expr]), setup);
  t.is(result.status, 0, `child exited with ${result.status} ${result.signal ?? ''}: ${result.stderr.slice(-2000)}`);
  for (const [label, , name, message] of cases) {
    const e = errors[label];
    t.truthy(e, `${label}: no result`);
    if (!e) continue;
    t.is(e.name, name, `${label}: ${e.message}`);
    t.regex(e.message, message, label);
  }
});
