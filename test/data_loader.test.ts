// The batch loader: shapes and dtypes, seeded per-epoch shuffling that covers every sample,
// resuming from a saved position gives exactly the batches of the uninterrupted run (across
// an epoch boundary too), prefetch depth does not change batches, skipping refills batches,
// dropLast and epochs, caption noise and filters, and the emoji split end to end.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataLoader, dataLoader, type Batch, type LoaderOptions } from '../ts/data/loader.js';
import { imageTransform, CLIP_MEAN, CLIP_STD } from '../ts/data/images.js';
import { clipTokenizer, bertTokenizer } from '../ts/data/tokenizers.js';
import { emojiSplit, emojiImage } from '../ts/data/emoji.js';
import type { Dataset, RawImage, Sample } from '../ts/data/source.js';

const cacheDir = mkdtempSync(join(tmpdir(), 'vlmkit-loader-test-'));
test.after.always(() => rmSync(cacheDir, { recursive: true, force: true }));

/** N small images whose pixels encode their index; every 7th caption is empty (if asked). */
function synthetic(n: number, withEmpty = true): Dataset {
  const img = (i: number): RawImage => {
    const data = new Uint8Array(10 * 9 * 3);
    for (let p = 0; p < 90; p++) data.set([i * 9 % 256, (p * 3 + i) % 256, 255 - i], p * 3);
    return { data, width: 10, height: 9, channels: 3 };
  };
  const caption = (i: number) => (withEmpty && i % 7 === 3 ? '' : [`item ${i}`, `the number ${i}`]);
  return {
    kind: 'map', size: n,
    get: async (i: number): Promise<Sample> => ({ image: img(i), caption: caption(i), key: `s${i}` }),
    captionAt: caption,
  };
}

const base = (o: Partial<LoaderOptions> = {}): LoaderOptions => ({
  source: synthetic(23), tokenizer: clipTokenizer({ contextLength: 10 }), transform: imageTransform({ size: 8, train: true }),
  batchSize: 4, seed: 5, ...o,
});

interface Snap { indices: number[]; captions: string[]; images: number[]; texts: number[]; eot: number[]; epoch: number; position: { epoch: number; index: number } }
function snap(b: Batch): Snap {
  const s = { indices: [...b.indices], captions: b.captions, images: [...b.images.toArray()], texts: [...b.texts.toArray()], eot: [...b.eot], epoch: b.epoch, position: b.position };
  b.dispose();
  return s;
}
async function take(l: DataLoader, n: number): Promise<Snap[]> {
  const out: Snap[] = [];
  for (let i = 0; i < n; i++) { const b = await l.next(); if (!b) break; out.push(snap(b)); }
  return out;
}

test('batches: shapes, dtypes, EOT positions, positions', async (t) => {
  const l = dataLoader(base());
  const b = (await l.next())!;
  t.deepEqual(b.images.shape, [4, 3, 8, 8]);
  t.is(b.images.dtype, 'float32');
  t.deepEqual(b.texts.shape, [4, 10]);
  t.is(b.texts.dtype, 'int32');
  t.is(b.attentionMask, undefined);
  t.is(b.eot.length, 4);
  const ids = b.texts.toArray();
  for (let r = 0; r < 4; r++) t.is(ids[r * 10 + b.eot[r]!], 50258);
  t.is(b.epoch, 0);
  t.true(b.position.epoch === 0 && b.position.index >= 4);
  t.deepEqual(l.position, b.position);
  t.is(l.batchesPerEpoch, 5);
  b.dispose();
  l.close();
  t.is(await l.next(), null);
});

test('each epoch is a seeded permutation covering every usable sample once', async (t) => {
  const opts = base({ source: synthetic(22), dropLast: false, epochs: 2 });
  const batches = await take(dataLoader(opts), 100);
  const usable = Array.from({ length: 22 }, (_, i) => i).filter((i) => i % 7 !== 3);
  const e0 = batches.filter((b) => b.epoch === 0).flatMap((b) => b.indices);
  const e1 = batches.filter((b) => b.epoch === 1).flatMap((b) => b.indices);
  t.deepEqual([...e0].sort((a, b) => a - b), usable);
  t.deepEqual([...e1].sort((a, b) => a - b), usable);
  t.notDeepEqual(e0, e1);
  t.is(batches.length, 2 * Math.ceil(usable.length / 4));
  t.is(batches.at(-1)!.indices.length, usable.length % 4);
  // Same seed, same batches; another seed, another order.
  t.deepEqual(await take(dataLoader({ ...opts, source: synthetic(22) }), 100), batches);
  t.notDeepEqual((await take(dataLoader(base({ seed: 6 })), 1))[0]!.indices, batches[0]!.indices);
  const noShuffle = await take(dataLoader(base({ shuffle: false })), 2);
  t.deepEqual(noShuffle.flatMap((b) => b.indices), [0, 1, 2, 4, 5, 6, 7, 8]);
});

test('resuming from any saved position gives the next batches of the uninterrupted run', async (t) => {
  const ref = await take(dataLoader(base()), 12); // 5 batches per epoch: crosses two epoch boundaries
  t.deepEqual(ref.map((b) => b.epoch), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2]);
  for (let k = 0; k < ref.length - 2; k++) {
    const resumed = dataLoader(base({ position: ref[k]!.position }));
    t.deepEqual(await take(resumed, 2), ref.slice(k + 1, k + 3), `resumed after batch ${k}`);
    resumed.close();
  }
});

test('prefetch depth does not change the batches; skipped samples are counted', async (t) => {
  const a = dataLoader(base({ prefetch: 0 }));
  const b = dataLoader(base({ prefetch: 5 }));
  t.deepEqual(await take(a, 7), await take(b, 7));
  t.deepEqual(a.skipped.reasons, { 'empty caption': a.skipped.total });
  t.true(a.skipped.total >= 3);
  a.close(); b.close();
});

test('epochs and dropLast; an epoch without usable samples is an error', async (t) => {
  const l = dataLoader(base({ epochs: 1 }));
  const got = await take(l, 100);
  t.is(got.length, 5); // 20 usable, dropLast
  t.is(await l.next(), null);
  const broken: Dataset = { kind: 'map', size: 3, get: () => ({ image: null, caption: 'x', key: 'k' }) };
  await t.throwsAsync(dataLoader(base({ source: broken })).next(), { message: /dataLoader: epoch 0 produced no usable sample \(skipped 3: \{"missing image":3\}\)/ });
});

test('caption noise replaces a seeded fraction of captions; filters skip and count', async (t) => {
  const opts = () => base({ source: synthetic(23, false), transform: imageTransform({ size: 8 }) });
  const clean = await take(dataLoader(opts()), 5);
  const noisy = await take(dataLoader({ ...opts(), captionNoise: 0.5 }), 5);
  t.deepEqual(await take(dataLoader({ ...opts(), captionNoise: 0.5 }), 5), noisy);
  let changed = 0;
  for (let k = 0; k < 5; k++) {
    t.deepEqual(noisy[k]!.images, clean[k]!.images);
    t.deepEqual(noisy[k]!.indices, clean[k]!.indices);
    noisy[k]!.captions.forEach((c, i) => { if (!/ (\d+)$/.test(c) || Number(/ (\d+)$/.exec(c)![1]) !== noisy[k]!.indices[i]) changed++; });
  }
  t.true(changed >= 4 && changed <= 16, `${changed} of 20 captions replaced`);
  const l = dataLoader(base({ filters: { minCaptionTokens: 4 } })); // 'item N' is 2 tokens, 'the number N' 3
  await t.throwsAsync(l.next(), { message: /no usable sample/ });
  t.true(l.skipped.reasons['caption too short']! > 0);
});

test('options: float64 images, WordPiece masks, clear errors', async (t) => {
  const b = (await dataLoader(base({ dtype: 'float64', tokenizer: bertTokenizer({ contextLength: 8 }) })).next())!;
  t.is(b.images.dtype, 'float64');
  t.is(b.attentionMask!.dtype, 'uint8');
  t.deepEqual(b.attentionMask!.shape, [4, 8]);
  t.deepEqual([...b.attentionMask!.toArray()].slice(0, 8), Array.from({ length: 8 }, (_, i) => (i < b.lengths[0]! ? 1 : 0)));
  t.is(b.texts.toArray()[0], 101);
  b.dispose();
  t.throws(() => dataLoader(base({ batchSize: 0 })), { instanceOf: RangeError, message: 'dataLoader: expected an integer >= 1 for options.batchSize but received the number 0' });
  t.throws(() => dataLoader(base({ captionNoise: 2 })), { instanceOf: RangeError, message: /options.captionNoise/ });
  t.throws(() => dataLoader(base({ position: { epoch: -1, index: 0 } })), { instanceOf: RangeError, message: /options.position/ });
  t.throws(() => dataLoader(base({ source: {} as Dataset })), { instanceOf: TypeError, message: /expected a Dataset or StreamDataset for options.source/ });
  t.throws(() => dataLoader(base({ filters: { maxPixels: 3 } as never })), { instanceOf: RangeError, message: /options.filters/ });
});

test('emoji end to end: templated training captions, exact evaluation pixels, resume', async (t) => {
  const { train, eval: ev } = await emojiSplit({ cacheDir, vendors: ['google', 'twitter'], heldOut: 'twitter' });
  const tok = clipTokenizer();
  const make = (position?: { epoch: number; index: number }) => dataLoader({ source: train, tokenizer: tok,
    transform: imageTransform({ size: 32, train: true }), batchSize: 64, seed: 1, ...(position ? { position } : {}) });
  const ref = await take(make(), 3);
  t.is(ref[0]!.images.length, 64 * 3 * 32 * 32);
  t.true(ref[0]!.captions.some((c) => c.includes(' emoji') || c.startsWith('a picture of') || c.startsWith('an icon of')));
  t.deepEqual(await take(make(ref[0]!.position), 2), ref.slice(1));
  // Evaluation at the native size is the identity: normalised sheet pixels.
  const l = dataLoader({ source: ev, tokenizer: tok, transform: imageTransform({ size: 32 }), batchSize: 8, shuffle: false });
  const b = (await l.next())!;
  t.deepEqual(b.captions, ev.data.captions.slice(0, 8));
  const img = emojiImage(ev.data, 5), px = b.images.toArray();
  for (const p of [0, 300, 777]) for (let c = 0; c < 3; c++)
    t.true(Math.abs(px[5 * 3072 + c * 1024 + p]! - (img.data[p * 3 + c]! / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!) < 1e-5);
  b.dispose();
  l.close();
});
