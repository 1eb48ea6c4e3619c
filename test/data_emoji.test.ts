// The embedded emoji data set: counts per vendor, captions of known emoji, a cell's pixels
// against the sheet decoded directly by sharp, the binary cache (written once, atomically,
// read back identical), the default split, labels and templates. The sheets are decoded
// once into a cache folder made for this run.
import test from 'ava';
import { mkdtempSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import {
  loadEmoji, emojiSplit, emojiCatalogue, emojiImage, emojiSheetPath, emojiDatasourceVersion, EmojiDataset,
  EMOJI_TEMPLATES, type EmojiData,
} from '../ts/data/emoji.js';

const cacheDir = mkdtempSync(join(tmpdir(), 'vlmkit-emoji-test-'));
test.after.always(() => rmSync(cacheDir, { recursive: true, force: true }));

let first: Promise<EmojiData> | null = null;
const rgba = () => (first ??= loadEmoji({ cacheDir, channels: 'rgba' }));

test.serial('decodes each sheet once, caches it, and reads back the same pixels', async (t) => {
  const a = await rgba();
  for (const v of ['apple', 'google', 'twitter', 'facebook']) {
    t.false(a.timings[v]!.cached, `${v} decoded on the first load`);
    t.log(`${v}: decoded and cut in ${a.timings[v]!.ms.toFixed(0)} ms`);
  }
  const files = readdirSync(join(cacheDir, `emoji-datasource-${emojiDatasourceVersion()}`)).sort();
  t.deepEqual(files, ['apple-32.rgba', 'facebook-32.rgba', 'google-32.rgba', 'twitter-32.rgba']);
  const b = await loadEmoji({ cacheDir, channels: 'rgba' });
  for (const v of ['apple', 'google', 'twitter', 'facebook']) t.true(b.timings[v]!.cached);
  t.is(Buffer.compare(Buffer.from(a.images), Buffer.from(b.images)), 0);
  t.deepEqual(b.captions, a.captions);
});

test.serial('counts per vendor, skin-tone variations included', async (t) => {
  const d = await rgba();
  const count = (v: string) => d.vendors.filter((x) => x === v).length;
  t.is(count('apple'), 3783);
  t.is(count('google'), 3786);
  t.is(count('twitter'), 3786);
  t.is(count('facebook'), 3645);
  t.is(d.count, 3783 + 3786 + 3786 + 3645);
  t.is(d.images.length, d.count * 32 * 32 * 4);
  // The catalogue: 1911 emoji and 1690 variations; 14 has_img flags off for apple, ...
  const cat = emojiCatalogue();
  t.is(cat.filter((e) => e.skinTone === '').length, 1911);
  t.is(cat.length, 1911 + 5 * 316 + 13 * 20 + 7 * 5);
});

test.serial('captions of known emoji, with skin tones', async (t) => {
  const d = await rgba();
  const find = (caption: string, vendor = 'apple') => d.captions.findIndex((c, i) => c === caption && d.vendors[i] === vendor);
  const clap = find('clapping hands sign');
  t.true(clap >= 0);
  t.is(d.unified[clap], '1F44F');
  t.is(d.categories[clap], 'People & Body');
  t.is(d.subcategories[clap], 'hands');
  const medium = find('clapping hands sign: medium skin tone');
  t.is(d.unified[medium], '1F44F-1F3FD');
  t.is(d.subcategories[medium], 'hands');
  const twoTone = find('kiss: woman, woman, dark skin tone, light skin tone');
  t.is(d.unified[twoTone], '1F469-1F3FF-200D-2764-FE0F-200D-1F48B-200D-1F469-1F3FB');
  t.true(find('grinning face', 'facebook') >= 0);
  t.true(find('afghanistan flag', 'twitter') >= 0);
  // Labels index the sorted label sets shared by every split.
  t.is(d.subcategoryNames.length, 99);
  t.is(d.categoryNames.length, 10);
  t.is(d.subcategoryNames[d.subcategoryIds[clap]!], 'hands');
  t.is(d.categoryNames[d.categoryIds[clap]!], 'People & Body');
  // The same emoji has the same catalogue id in every vendor.
  t.is(d.emojiIds[medium], d.emojiIds[find('clapping hands sign: medium skin tone', 'google')]);
});

test.serial("a cell's pixels equal the sheet's region decoded directly by sharp", async (t) => {
  const d = await rgba();
  for (const [vendor, caption] of [['apple', 'clapping hands sign: medium skin tone'], ['twitter', 'teapot'], ['facebook', 'grinning face']] as const) {
    const i = d.captions.findIndex((c, k) => c === caption && d.vendors[k] === vendor);
    const e = emojiCatalogue()[d.emojiIds[i]!]!;
    const direct = await sharp(emojiSheetPath(vendor)).extract({ left: e.sheetX * 34 + 1, top: e.sheetY * 34 + 1, width: 32, height: 32 })
      .ensureAlpha().raw().toBuffer();
    const img = emojiImage(d, i);
    t.is(img.channels, 4);
    t.is(Buffer.compare(Buffer.from(img.data), direct), 0, `${vendor} ${caption}`);
    // Not an empty cell: some opaque pixels.
    let opaque = 0;
    for (let p = 3; p < direct.length; p += 4) if (direct[p]! > 200) opaque++;
    t.true(opaque > 100);
  }
});

test.serial('rgb flattens alpha onto the background', async (t) => {
  const a = await rgba();
  const white = await loadEmoji({ cacheDir, vendors: ['google'] });
  const black = await loadEmoji({ cacheDir, vendors: ['google'], background: [0, 0, 0] });
  t.is(white.channels, 3);
  const off = a.vendors.indexOf('google');
  for (const p of [0, 517, 1023]) {
    const alpha = a.images[(off * 1024 + p) * 4 + 3]!;
    const c = a.images[(off * 1024 + p) * 4]!;
    t.is(white.images[p * 3], Math.floor((c * alpha + 255 * (255 - alpha) + 127) / 255));
    t.is(black.images[p * 3], Math.floor((c * alpha + 127) / 255));
  }
});

test.serial('the default split trains on three vendors and holds out the fourth', async (t) => {
  const { train, eval: ev, heldOut } = await emojiSplit({ cacheDir });
  t.is(heldOut, 'facebook');
  t.is(train.size, 3783 + 3786 + 3786);
  t.is(ev.size, 3645);
  t.deepEqual([...new Set(train.data.vendors)], ['apple', 'google', 'twitter']);
  t.deepEqual([...new Set(ev.data.vendors)], ['facebook']);
  // Training captions are the templates, evaluation captions the plain name.
  const s = train.get(0);
  t.deepEqual(s.caption, EMOJI_TEMPLATES.map((x) => x.replace('{}', train.data.captions[0]!)));
  t.is(ev.get(0).caption, ev.data.captions[0]);
  const other = await emojiSplit({ cacheDir, heldOut: 'apple', templates: null });
  t.is(other.eval.size, 3783);
  t.is(other.train.get(5).caption, other.train.data.captions[5]);
  await t.throwsAsync(emojiSplit({ cacheDir, heldOut: 'msn' as never }), { instanceOf: RangeError, message: /emojiSplit: expected options.heldOut to be one of the vendors/ });
});

test('bad options are clear errors', async (t) => {
  await t.throwsAsync(loadEmoji({ vendors: ['apple', 'myspace' as never], cacheDir: null }), { instanceOf: RangeError, message: /loadEmoji: expected one of apple, google, twitter, facebook for each vendor but received "myspace"/ });
  await t.throwsAsync(loadEmoji({ vendors: [] }), { instanceOf: TypeError, message: /loadEmoji: expected a non-empty array of vendors/ });
  await t.throwsAsync(loadEmoji({ channels: 'bgr' as never }), { instanceOf: RangeError, message: /options.channels/ });
  t.throws(() => new EmojiDataset({ count: 0 } as EmojiData, { templates: ['no placeholder'] }), { instanceOf: TypeError, message: /EmojiDataset: expected null or a non-empty array of strings containing '\{\}'/ });
});

test.serial('an unwritable cache folder only costs a decode', async (t) => {
  const file = join(cacheDir, 'not-a-folder');
  await (await import('node:fs/promises')).writeFile(file, 'x');
  const d = await loadEmoji({ cacheDir: file, vendors: ['twitter'] });
  t.is(d.count, 3786);
  t.false(d.timings.twitter!.cached);
  t.true(existsSync(file));
});
