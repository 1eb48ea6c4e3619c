// WebDataset shards built in a temporary folder (PNGs written by sharp, tars by tar-stream's
// pack, laid out as img2dataset writes them): brace expansion, grouping by key, captions
// from .txt or .json, seeded shard order and shuffle buffer, broken and missing shards,
// data-parallel shard split, and a loader that resumes mid-stream exactly.
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tar from 'tar-stream';
import { WebDataset, expandBraces, splitKey } from '../ts/data/webdataset.js';
import { dataLoader } from '../ts/data/loader.js';
import { imageTransform } from '../ts/data/images.js';
import { clipTokenizer } from '../ts/data/tokenizers.js';
import type { Sample } from '../ts/data/source.js';

const dir = mkdtempSync(join(tmpdir(), 'vlmkit-wds-test-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const PER_SHARD = 6, SHARDS = 3;
// Shard s, sample k: key 's0000k'. Oddities: 000001 has only a json caption, 000004 has no
// image, 001002 has a corrupt image, 002003 has an empty caption.
const ready = (async () => {
  for (let s = 0; s < SHARDS; s++) {
    const pack = tar.pack();
    const done = pipeline(pack, createWriteStream(join(dir, `shard-${String(s).padStart(3, '0')}.tar`)));
    for (let k = 0; k < PER_SHARD; k++) {
      const key = `${String(s).padStart(3, '0')}${String(k).padStart(3, '0')}`;
      const png = await sharp({ create: { width: 10, height: 8, channels: 3, background: { r: 40 * s, g: 30 * k, b: 100 } } }).png().toBuffer();
      if (key === '001002') pack.entry({ name: `${key}.png` }, Buffer.from('not a png'));
      else if (key !== '000004') pack.entry({ name: `${key}.${k % 2 ? 'png' : 'jpg'}` }, k % 2 ? png : await sharp(png).jpeg().toBuffer());
      if (key === '000001') pack.entry({ name: `${key}.json` }, Buffer.from(JSON.stringify({ caption: 'caption from json', key })));
      else pack.entry({ name: `${key}.txt` }, Buffer.from(key === '002003' ? '   ' : `sample ${key}`));
      if (key !== '000001') pack.entry({ name: `${key}.json` }, Buffer.from(JSON.stringify({ url: 'x', key })));
    }
    pack.finalize();
    await done;
  }
  writeFileSync(join(dir, 'broken.tar'), Buffer.alloc(2000, 7));
})();

async function collect(it: AsyncIterable<Sample>): Promise<Sample[]> {
  const out: Sample[] = [];
  for await (const s of it) out.push(s);
  return out;
}

test('brace expansion and keys', (t) => {
  t.deepEqual(expandBraces('shards/{000..003}.tar'), ['shards/000.tar', 'shards/001.tar', 'shards/002.tar', 'shards/003.tar']);
  t.deepEqual(expandBraces('a{1..2}b{x,y}'), ['a1bx', 'a1by', 'a2bx', 'a2by']);
  t.deepEqual(expandBraces('{8..10}'), ['8', '9', '10']);
  t.deepEqual(expandBraces('{a,{b,c}}'), ['a', 'b', 'c']);
  t.deepEqual(expandBraces('plain.tar'), ['plain.tar']);
  t.deepEqual(expandBraces('{x}.tar'), ['{x}.tar']);
  t.throws(() => expandBraces('s/{00..09.tar'), { instanceOf: RangeError, message: /expected a closing '}'/ });
  t.deepEqual(splitKey('dir/000012.seg.png'), { key: 'dir/000012', ext: 'seg.png' });
  t.deepEqual(splitKey('a.b/0001.JPG'), { key: 'a.b/0001', ext: 'jpg' });
});

test('a shard in order: samples grouped by key, captions from txt or json', async (t) => {
  await ready;
  const ds = new WebDataset(join(dir, 'shard-000.tar'), { shuffleBuffer: 0, shuffleShards: false });
  const samples = await collect(ds.stream(0, 0));
  t.deepEqual(samples.map((s) => s.key.split(':').pop()), ['000000', '000001', '000002', '000003', '000004', '000005']);
  t.is(samples[0]!.caption, 'sample 000000');
  t.is(samples[1]!.caption, 'caption from json');
  t.is(samples[4]!.error, 'missing image');
  t.true(samples[2]!.image !== null && 'bytes' in samples[2]!.image);
});

test('several shards: seeded shard order and shuffle buffer, a permutation of every sample', async (t) => {
  await ready;
  const ds = new WebDataset(join(dir, 'shard-{000..002}.tar'), { shuffleBuffer: 5 });
  t.is(ds.shards.length, 3);
  const keys = async (epoch: number, seed: number) => (await collect(ds.stream(epoch, seed))).map((s) => s.key.split(':').pop()!);
  const a = await keys(0, 1), b = await keys(0, 1), c = await keys(1, 1);
  t.deepEqual(a, b);
  t.notDeepEqual(a, c);
  t.is(a.length, SHARDS * PER_SHARD);
  t.deepEqual([...a].sort(), [...c].sort());
  t.is(new Set(a).size, SHARDS * PER_SHARD);
  // Data parallel: the ranks read disjoint shards that together cover all.
  const r0 = new WebDataset(join(dir, 'shard-{000..002}.tar'), { rank: 0, worldSize: 2 }).shardOrder(4, 9);
  const r1 = new WebDataset(join(dir, 'shard-{000..002}.tar'), { rank: 1, worldSize: 2 }).shardOrder(4, 9);
  t.deepEqual([...r0, ...r1].sort(), [...ds.shards].sort());
  t.throws(() => new WebDataset('x.tar', { rank: 2, worldSize: 2 }), { instanceOf: RangeError, message: /webDataset: expected an integer in \[0, 2\) for options.rank but received 2/ });
});

test('missing and corrupt shards are counted and reading goes on', async (t) => {
  await ready;
  const ds = new WebDataset([join(dir, 'shard-000.tar'), join(dir, 'nope.tar'), join(dir, 'broken.tar'), join(dir, 'shard-002.tar')],
    { shuffleShards: false, shuffleBuffer: 0 });
  const samples = await collect(ds.stream(0, 0));
  t.is(samples.length, 2 * PER_SHARD);
  t.deepEqual(ds.skipped.report().reasons, { 'missing shard': 1, 'corrupt shard': 1 });
});

test('loader over shards: skips counted, resuming mid-stream gives the same batches', async (t) => {
  await ready;
  const make = (position?: { epoch: number; index: number }) => dataLoader({
    source: new WebDataset(join(dir, 'shard-{000..002}.tar'), { shuffleBuffer: 4 }), tokenizer: clipTokenizer({ contextLength: 12 }),
    transform: imageTransform({ size: 8, train: true }), batchSize: 4, seed: 11, epochs: 2, ...(position ? { position } : {}),
  });
  const ref = make();
  const batches: { captions: string[]; pixels: number[]; position: { epoch: number; index: number } }[] = [];
  for await (const b of ref) {
    batches.push({ captions: b.captions, pixels: [...b.images.toArray()], position: b.position });
    b.dispose();
  }
  // 18 samples, 3 unusable: 15 per epoch -> 3 full batches per epoch (dropLast), 2 epochs.
  t.is(batches.length, 6);
  t.deepEqual(ref.skipped.reasons, { 'missing image': 2, 'corrupt image': 2, 'empty caption': 2 });
  t.true(batches.slice(0, 3).flatMap((b) => b.captions).includes('caption from json'));
  for (const k of [0, 2, 4]) {
    const resumed = make(batches[k]!.position);
    const b = (await resumed.next())!;
    t.deepEqual(b.captions, batches[k + 1]!.captions, `after batch ${k}`);
    t.deepEqual([...b.images.toArray()], batches[k + 1]!.pixels);
    b.dispose();
    resumed.close();
  }
});
