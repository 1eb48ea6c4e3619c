// CUDA storage and copies. On a machine without a GPU the build still loads and says
// why CUDA is unavailable; the device tests run where a GPU exists.
import test from 'ava';
import { native } from '../ts/native.js';
import { tensor } from '../ts/graph/creation.js';
import { to, cudaAvailable } from '../ts/graph/ops/device.js';
import { transpose, contiguous, slice } from '../ts/graph/ops/views.js';

const info = native.buildInfo();

test('the addon loads and reports its CUDA state', (t) => {
  t.is(typeof info.cudaCompiled, 'boolean');
  t.is(cudaAvailable(), info.cudaDevices > 0);
  if (info.cudaDevices === 0) t.regex(info.cudaReason ?? '', /CUDA|cuda/);
});

test('without a GPU, CUDA requests fail with a clear error and the CPU keeps working', (t) => {
  if (cudaAvailable()) return t.pass();
  t.throws(() => to(tensor([1, 2]), 'cuda'), { message: /cannot use device 'cuda'/ });
  t.deepEqual([...tensor([1, 2]).toArray()], [1, 2]);
});

const gpu = cudaAvailable() ? test : test.skip;

gpu('host -> device -> host round trip keeps the values of every dtype', (t) => {
  for (const dtype of ['float32', 'float64', 'int32', 'uint8'] as const) {
    const x = tensor([1, 2, 3, 4, 5, 6], [2, 3], { dtype });
    const d = to(x, 'cuda');
    t.is(d.device, 'cuda');
    t.deepEqual([...to(d, 'cpu').toArray()], [1, 2, 3, 4, 5, 6]);
  }
});

gpu('the strided copy kernel makes device views contiguous', (t) => {
  const x = to(tensor([[1, 2, 3], [4, 5, 6]]), 'cuda');
  t.deepEqual([...contiguous(transpose(x)).toArray()], [1, 4, 2, 5, 3, 6]);
  t.deepEqual([...slice(x, 1, 0, 3, 2).toArray()], [1, 3, 4, 6]);
  const m = native.memory().cuda;
  t.true(m.liveBytes > 0);
});
