// Lifetimes: tidy frees what it does not return, memory() counts live and peak bytes.
import test from 'ava';
import { native } from '../ts/native.js';
import { tidy, keep } from '../ts/graph/scope.js';
import { tensor, zeros, randn } from '../ts/graph/creation.js';
import { reshape, transpose, concat } from '../ts/graph/ops/views.js';

const live = () => native.memory().cpu.liveBytes;

test.serial('tidy frees every tensor made inside except the returned ones', (t) => {
  const before = live();
  let inner: ReturnType<typeof zeros> | null = null;
  const out = tidy(() => {
    inner = zeros([1000]);
    const a = randn([10, 10]);
    return { a, list: [reshape(a, [100])] };
  });
  t.true(inner!.disposed);
  t.false(out.a.disposed);
  t.false(out.list[0]!.disposed);
  t.is(live() - before, 400);  // one 10x10 float32 storage shared by both handles
  out.a.dispose();
  out.list[0]!.dispose();
  t.is(live(), before);
});

test.serial('nested tidy moves survivors to the parent scope', (t) => {
  const before = live();
  tidy(() => {
    const x = tidy(() => zeros([10]));
    t.false(x.disposed);
  });
  t.is(live(), before);
});

test.serial('keep() saves a tensor from its scope; errors still free the scope', (t) => {
  const before = live();
  const k = tidy(() => {
    keep(zeros([5]));
    zeros([5]);
    return null;
  }) ?? null;
  t.is(k, null);
  t.is(live() - before, 20);
  t.throws(() => tidy(() => {
    zeros([100]);
    throw new Error('boom');
  }), { message: 'boom' });
  t.is(live() - before, 20);
});

test.serial('tidy refuses async functions', (t) => {
  t.throws(() => tidy(() => Promise.resolve(1) as unknown as number), { instanceOf: TypeError, message: /synchronous/ });
});

test.serial('a 10,000-step loop inside tidy keeps live bytes flat', (t) => {
  const w = keep(randn([64, 64]));
  const before = live();
  for (let i = 0; i < 10000; i++) {
    tidy(() => {
      const x = randn([64, 64]);
      const y = concat([transpose(x), w], 0);
      return reshape(y, [-1]).size;
    });
  }
  t.is(live(), before);
  w.dispose();
});

test.serial('peak bytes track the high-water mark and resetPeak restarts it', (t) => {
  native.resetPeak();
  const base = native.memory().cpu;
  t.is(base.peakBytes, base.liveBytes);
  tidy(() => { zeros([1 << 20]); });
  const after = native.memory().cpu;
  t.true(after.peakBytes - base.liveBytes >= 4 << 20);
  t.is(after.liveBytes, base.liveBytes);
  const tensorCount = tensor([1]);
  tensorCount.dispose();
});

test.serial('freed large host blocks are cached for reuse and emptyCache returns them', (t) => {
  native.emptyCache();
  t.is(native.memory().cpu.cachedBytes, 0);
  const a = zeros([1 << 20]);  // 4 MiB
  a.dispose();
  const cached = native.memory().cpu.cachedBytes;
  t.true(cached >= 4 << 20, `cached ${cached}`);
  const b = zeros([1 << 20]);  // same size class: taken from the cache
  t.is(native.memory().cpu.cachedBytes, cached - (4 << 20));
  t.deepEqual([...b.toArray().subarray(0, 4)], [0, 0, 0, 0]);
  b.dispose();
  zeros([100]).dispose();  // small blocks are not cached
  t.is(native.memory().cpu.cachedBytes, cached);
  native.emptyCache();
  t.is(native.memory().cpu.cachedBytes, 0);
});
