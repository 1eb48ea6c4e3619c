// Manifests (CSV, TSV, JSONL) built in a temporary folder with images written by sharp:
// column names and separators as options, quoting, paths relative to the manifest, and a
// corrupt image, a missing image, an empty caption and a malformed row skipped and counted
// while iteration goes on.
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { ManifestDataset, parseDelimited } from '../ts/data/manifest.js';
import { dataLoader, type Batch } from '../ts/data/loader.js';
import { imageTransform, CLIP_MEAN, CLIP_STD } from '../ts/data/images.js';
import { clipTokenizer } from '../ts/data/tokenizers.js';
import type { Dataset } from '../ts/data/source.js';

const dir = mkdtempSync(join(tmpdir(), 'vlmkit-manifest-test-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const colours: [number, number, number][] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 200, 0], [0, 120, 240]];
const ready = (async () => {
  mkdirSync(join(dir, 'images'));
  for (let i = 0; i < colours.length; i++)
    await sharp({ create: { width: 12 + i, height: 10, channels: 3, background: { r: colours[i]![0], g: colours[i]![1], b: colours[i]![2] } } })
      .png().toFile(join(dir, 'images', `img${i}.png`));
  writeFileSync(join(dir, 'images', 'corrupt.png'), Buffer.from('\x89PNG\r\n\x1a\n garbage'));
})();

async function all(source: Dataset): Promise<{ batches: Batch[]; loader: ReturnType<typeof dataLoader> }> {
  const loader = dataLoader({ source, tokenizer: clipTokenizer({ contextLength: 16 }), transform: imageTransform({ size: 8 }),
    batchSize: 2, shuffle: false, dropLast: false, epochs: 1 });
  const batches: Batch[] = [];
  for await (const b of loader) batches.push(b);
  return { batches, loader };
}

test('delimited parsing: quotes, separators and newlines inside quotes, CRLF, BOM', (t) => {
  const { rows, lines } = parseDelimited('\ufeffa,b\r\n"x, ""y""",2\n"multi\nline",3\n\nlast,4', ',');
  t.deepEqual(rows, [['a', 'b'], ['x, "y"', '2'], ['multi\nline', '3'], ['last', '4']]);
  t.deepEqual(lines, [1, 2, 3, 6]);
  t.deepEqual(parseDelimited('a\tb\nc\t', '\t').rows, [['a', 'b'], ['c', '']]);
});

test('CSV: relative paths, quoted captions; corrupt, missing, empty and malformed rows are skipped and counted', async (t) => {
  await ready;
  const path = join(dir, 'train.csv');
  writeFileSync(path, [
    'filepath,title,extra',
    'images/img0.png,"a red square, bright",x',
    'images/corrupt.png,a broken file,x',
    'images/img1.png,,x',
    'images/nope.png,a missing file,x',
    'images/img2.png,"a ""blue"" square",x',
    'images/img3.png,only two fields',
    `${join(dir, 'images', 'img4.png')},an absolute path,x`,
  ].join('\n'));
  const ds = new ManifestDataset(path);
  t.is(ds.format, 'csv');
  t.is(ds.size, 6);
  t.deepEqual(ds.skipped.report().reasons, { 'malformed row': 1 });
  const { batches, loader } = await all(ds);
  t.deepEqual(batches.flatMap((b) => b.captions), ['a red square, bright', 'a "blue" square', 'an absolute path']);
  t.deepEqual(batches.map((b) => b.images.shape[0]), [2, 1]);
  const r = loader.skipped;
  t.deepEqual(r.reasons, { 'malformed row': 1, 'corrupt image': 1, 'empty caption': 1, 'missing image': 1 });
  t.is(r.total, 4);
  t.true(r.examples.some((e) => e.reason === 'missing image' && e.key.endsWith('train.csv:5')));
  // The decoded pixels: a solid colour, CLIP-normalised.
  const px = batches[0]!.images.toArray();
  for (let c = 0; c < 3; c++) t.true(Math.abs(px[c * 64 + 10]! - (colours[0]![c]! / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!) < 1e-4);
  const second = batches[0]!.images.toArray()[3 * 64 + 10]!; // sample 1 of batch 0 is img2 (blue), red channel
  t.true(Math.abs(second - (0 - CLIP_MEAN[0]) / CLIP_STD[0]) < 1e-4);
  for (const b of batches) b.dispose();
});

test('TSV with named columns and a separator option', async (t) => {
  await ready;
  const path = join(dir, 'data.tsv');
  writeFileSync(path, 'caption\timage\nred one\timages/img0.png\ngreen one\timages/img1.png\n');
  const ds = new ManifestDataset(path, { imageKey: 'image', captionKey: 'caption' });
  t.is(ds.size, 2);
  t.is(ds.imagePath(1), join(dir, 'images', 'img1.png'));
  const { batches } = await all(ds);
  t.deepEqual(batches[0]!.captions, ['red one', 'green one']);
  const semi = join(dir, 'semi.txt');
  writeFileSync(semi, 'filepath;title\nimages/img0.png;x\n');
  t.is(new ManifestDataset(semi, { format: 'csv', separator: ';' }).size, 1);
  t.throws(() => new ManifestDataset(path), { instanceOf: RangeError, message: /manifestDataset: expected columns 'filepath' and 'title' \(options.imageKey, options.captionKey\) in the header of .* but received \[caption, image\]/ });
  t.throws(() => new ManifestDataset(join(dir, 'x.parquet')), { instanceOf: RangeError, message: /expected a .csv, .tsv or .jsonl manifest/ });
  t.throws(() => new ManifestDataset(join(dir, 'absent.csv')), { message: /manifestDataset: cannot read the manifest/ });
});

test('JSONL: several captions per image, malformed lines counted', async (t) => {
  await ready;
  const path = join(dir, 'data.jsonl');
  writeFileSync(path, [
    JSON.stringify({ filepath: 'images/img0.png', title: ['red', 'a red thing'] }),
    '{not json',
    JSON.stringify({ filepath: 'images/img1.png', title: 'green' }),
    JSON.stringify({ title: 'no image' }),
    JSON.stringify({ filepath: 'images/img2.png' }),
    '',
  ].join('\n'));
  const ds = new ManifestDataset(path);
  t.is(ds.size, 3);
  t.deepEqual(ds.skipped.report().reasons, { 'malformed row': 2 });
  const { batches, loader } = await all(ds);
  const caps = batches.flatMap((b) => b.captions);
  t.true(caps[0] === 'red' || caps[0] === 'a red thing');
  t.deepEqual(caps.slice(1), ['green']);
  t.deepEqual(loader.skipped.reasons, { 'malformed row': 2, 'empty caption': 1 });
});
