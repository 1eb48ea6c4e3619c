// The embedded default data set: four vendors' 32×32 emoji from emoji-datasource (MIT).
//
// Each vendor's img/<vendor>/sheets/32.png is a 62×62 grid of 34-px cells (a 1-px border
// around each 32×32 image). A sheet is decoded once with sharp, the cells that the vendor
// really drew (has_img_<vendor>; other cells hold another vendor's drawing) are cut out in
// emoji.json order, base emoji then skin-tone variations, and cached as one binary file per
// vendor (RGBA) keyed by the package version, written atomically (temporary file, rename).
//
// Captions come from the names: lowercased ("clapping hands sign"), a variation gets its tone
// ("clapping hands sign: medium skin tone"; "kiss: man, man, light skin tone, dark skin tone").
// Labels for zero-shot classification: category and subcategory.

import { createRequire } from 'node:module';
import { readFileSync, existsSync, mkdirSync, writeFileSync, renameSync, unlinkSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import sharp from 'sharp';
import { flattenAlpha } from './images.js';
import { SkipError, type Dataset, type RawImage, type Sample } from './source.js';

export const EMOJI_VENDORS = ['apple', 'google', 'twitter', 'facebook'] as const;
export type EmojiVendor = (typeof EMOJI_VENDORS)[number];
/** Pixels per side of an emoji image. */
export const EMOJI_SIZE = 32;
const CELL = 34;

/** Caption templates for augmentation; '{}' is the emoji's name. */
export const EMOJI_TEMPLATES: readonly string[] = [
  '{}',
  'an emoji of {}',
  'a {} emoji',
  'an icon of {}',
  'a picture of {}',
  'a small drawing of {}',
];

export const SKIN_TONES: Readonly<Record<string, string>> = {
  '1F3FB': 'light skin tone',
  '1F3FC': 'medium-light skin tone',
  '1F3FD': 'medium skin tone',
  '1F3FE': 'medium-dark skin tone',
  '1F3FF': 'dark skin tone',
};

interface RawEntry {
  name: string; unified: string; short_names: string[]; category: string; subcategory: string;
  sheet_x: number; sheet_y: number; sort_order: number;
  has_img_apple: boolean; has_img_google: boolean; has_img_twitter: boolean; has_img_facebook: boolean;
  skin_variations?: Record<string, { unified: string; sheet_x: number; sheet_y: number } & Record<string, unknown>>;
}

/** One (image, caption) pair of the catalogue, before choosing vendors. */
export interface EmojiEntry {
  /** The caption: lowercased name plus the skin tone(s). */
  name: string;
  /** Code points, e.g. '1F44F-1F3FD'. */
  unified: string;
  shortNames: readonly string[];
  category: string;
  subcategory: string;
  /** '' for the base emoji, else the tone key ('1F3FD', '1F3FB-1F3FF'). */
  skinTone: string;
  sheetX: number;
  sheetY: number;
  hasImage: Readonly<Record<EmojiVendor, boolean>>;
}

const require = createRequire(import.meta.url);

function packageRoot(): string {
  return dirname(require.resolve('emoji-datasource/package.json'));
}

/** emoji-datasource's version (the cache key). */
export function emojiDatasourceVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/** The path of a vendor's 32-px sheet inside emoji-datasource. */
export function emojiSheetPath(vendor: EmojiVendor): string {
  return join(packageRoot(), 'img', vendor, 'sheets', '32.png');
}

function toneName(key: string): string {
  const parts = key.split('-').map((k) => SKIN_TONES[k] ?? k.toLowerCase());
  const unique = parts.every((p) => p === parts[0]) ? [parts[0]!] : parts;
  return unique.join(', ');
}

let catalogue: EmojiEntry[] | null = null;

/** Every emoji and skin-tone variation in emoji.json order (base, then its variations). */
export function emojiCatalogue(): readonly EmojiEntry[] {
  if (catalogue) return catalogue;
  const raw = JSON.parse(readFileSync(join(packageRoot(), 'emoji.json'), 'utf8')) as RawEntry[];
  const out: EmojiEntry[] = [];
  const has = (e: Record<string, unknown>) => Object.fromEntries(EMOJI_VENDORS.map((v) => [v, e[`has_img_${v}`] === true])) as Record<EmojiVendor, boolean>;
  for (const e of raw) {
    const base = e.name.toLowerCase().replace(/\s+/g, ' ').trim();
    out.push({ name: base, unified: e.unified, shortNames: e.short_names, category: e.category, subcategory: e.subcategory,
      skinTone: '', sheetX: e.sheet_x, sheetY: e.sheet_y, hasImage: has(e as unknown as Record<string, unknown>) });
    for (const [tone, v] of Object.entries(e.skin_variations ?? {})) {
      // CLDR style: "clapping hands: medium skin tone", "kiss: man, man, light skin tone".
      const name = base.includes(':') ? `${base}, ${toneName(tone)}` : `${base}: ${toneName(tone)}`;
      out.push({ name, unified: v.unified, shortNames: e.short_names, category: e.category, subcategory: e.subcategory,
        skinTone: tone, sheetX: v.sheet_x, sheetY: v.sheet_y, hasImage: has(v) });
    }
  }
  catalogue = out;
  return out;
}

/** Where the decoded sheets are cached: $VLMKIT_CACHE_DIR, else $XDG_CACHE_HOME/vlmkit, else ~/.cache/vlmkit. */
export function defaultCacheDir(): string {
  if (process.env.VLMKIT_CACHE_DIR) return process.env.VLMKIT_CACHE_DIR;
  const base = process.env.XDG_CACHE_HOME || (homedir() ? join(homedir(), '.cache') : join(tmpdir()));
  return join(base, 'vlmkit');
}

const MAGIC = 'VLMKEMJ1';
const HEADER = 16; // magic (8) + count (4) + reserved (4)

/** Cuts the vendor's own cells out of its decoded sheet: count × 32 × 32 × 4 RGBA. */
async function decodeVendor(vendor: EmojiVendor, entries: readonly EmojiEntry[]): Promise<Uint8Array> {
  const { data, info } = await sharp(emojiSheetPath(vendor)).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  const W = info.width, S = EMOJI_SIZE, row = S * 4;
  const out = new Uint8Array(entries.length * S * S * 4);
  entries.forEach((e, n) => {
    const x0 = e.sheetX * CELL + 1, y0 = e.sheetY * CELL + 1;
    if (x0 + S > W || y0 + S > info.height) throw new Error(`loadEmoji: cell (${e.sheetX}, ${e.sheetY}) of ${e.name} lies outside the ${W}x${info.height} ${vendor} sheet`);
    for (let y = 0; y < S; y++) {
      const src = ((y0 + y) * W + x0) * 4;
      out.set(data.subarray(src, src + row), (n * S + y) * row);
    }
  });
  return out;
}

/** The vendor's cells, from the cache or decoded (and cached). Returns pixels and whether the cache was used. */
async function vendorPixels(vendor: EmojiVendor, entries: readonly EmojiEntry[], cacheDir: string | null): Promise<{ rgba: Uint8Array; cached: boolean }> {
  const bytes = entries.length * EMOJI_SIZE * EMOJI_SIZE * 4;
  const file = cacheDir ? join(cacheDir, `emoji-datasource-${emojiDatasourceVersion()}`, `${vendor}-32.rgba`) : null;
  if (file && existsSync(file)) {
    try {
      const buf = readFileSync(file);
      if (buf.length === HEADER + bytes && buf.toString('latin1', 0, 8) === MAGIC && buf.readUInt32LE(8) === entries.length)
        return { rgba: new Uint8Array(buf.buffer, buf.byteOffset + HEADER, bytes), cached: true };
    } catch { /* unreadable: decode again */ }
  }
  const rgba = await decodeVendor(vendor, entries);
  if (file) {
    // Atomic: a reader sees the old file, no file or the whole new one.
    const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    try {
      mkdirSync(dirname(file), { recursive: true });
      const header = Buffer.alloc(HEADER);
      header.write(MAGIC, 0, 'latin1');
      header.writeUInt32LE(entries.length, 8);
      writeFileSync(tmp, Buffer.concat([header, rgba]));
      renameSync(tmp, file);
    } catch {
      try { unlinkSync(tmp); } catch { /* never written */ }
      // An unwritable cache only costs a decode next time.
    }
  }
  return { rgba, cached: false };
}

export interface LoadEmojiOptions {
  /** Vendors to load, in this order (default all four). */
  vendors?: readonly EmojiVendor[];
  /** Cache directory (default defaultCacheDir()); null disables the cache. */
  cacheDir?: string | null;
  /** 'rgb' flattens alpha onto `background` (default); 'rgba' keeps it. */
  channels?: 'rgb' | 'rgba';
  /** Colour under transparent pixels, default white. */
  background?: readonly [number, number, number];
}

/** The emoji images of some vendors with their captions and labels; arrays are per image. */
export interface EmojiData {
  count: number;
  /** Pixels per side (32). */
  size: number;
  channels: 3 | 4;
  /** count × size × size × channels, HWC per image. */
  images: Uint8Array;
  /** The caption of each image (lowercased name, skin tone). */
  captions: string[];
  /** Same as captions: the emoji's name. */
  names: string[];
  unified: string[];
  vendors: EmojiVendor[];
  shortNames: (readonly string[])[];
  categories: string[];
  subcategories: string[];
  /** Sorted label sets and each image's index into them (zero-shot classification). */
  categoryNames: string[];
  subcategoryNames: string[];
  categoryIds: Int32Array;
  subcategoryIds: Int32Array;
  /** Index into the catalogue (the same emoji has the same id in every vendor). */
  emojiIds: Int32Array;
  /** Per vendor: decode time in ms (0 when read from the cache), and whether the cache served it. */
  timings: Record<string, { ms: number; cached: boolean }>;
}

function checkVendors(op: string, vendors: unknown): EmojiVendor[] {
  if (!Array.isArray(vendors) || vendors.length === 0)
    throw new TypeError(`${op}: expected a non-empty array of vendors (${EMOJI_VENDORS.join(', ')}) for options.vendors but received ${typeof vendors}`);
  for (const v of vendors)
    if (!(EMOJI_VENDORS as readonly unknown[]).includes(v))
      throw new RangeError(`${op}: expected one of ${EMOJI_VENDORS.join(', ')} for each vendor but received ${JSON.stringify(v)}`);
  if (new Set(vendors).size !== vendors.length) throw new RangeError(`${op}: expected distinct vendors but received [${vendors.join(', ')}]`);
  return vendors as EmojiVendor[];
}

/** Loads the emoji of the given vendors (decoding each sheet once, then from the cache). */
export async function loadEmoji(options: LoadEmojiOptions = {}): Promise<EmojiData> {
  const op = 'loadEmoji';
  const vendors = checkVendors(op, options.vendors ?? [...EMOJI_VENDORS]);
  const cacheDir = options.cacheDir === undefined ? defaultCacheDir() : options.cacheDir;
  if (cacheDir !== null && typeof cacheDir !== 'string') throw new TypeError(`${op}: expected a path or null for options.cacheDir but received ${typeof cacheDir}`);
  const channels = options.channels ?? 'rgb';
  if (channels !== 'rgb' && channels !== 'rgba') throw new RangeError(`${op}: expected 'rgb' or 'rgba' for options.channels but received ${JSON.stringify(channels)}`);
  const background = options.background ?? [255, 255, 255];
  const C = channels === 'rgb' ? 3 : 4, S = EMOJI_SIZE, per = S * S * C;
  const cat = emojiCatalogue();

  const perVendor = vendors.map((v) => {
    const ids: number[] = [];
    cat.forEach((e, i) => { if (e.hasImage[v]) ids.push(i); });
    return ids;
  });
  const count = perVendor.reduce((a, ids) => a + ids.length, 0);
  const images = new Uint8Array(count * per);
  const data: EmojiData = {
    count, size: S, channels: C, images, captions: [], names: [], unified: [], vendors: [], shortNames: [], categories: [],
    subcategories: [], categoryNames: [], subcategoryNames: [], categoryIds: new Int32Array(count), subcategoryIds: new Int32Array(count),
    emojiIds: new Int32Array(count), timings: {},
  };
  let n = 0;
  for (let k = 0; k < vendors.length; k++) {
    const v = vendors[k]!, ids = perVendor[k]!;
    const t0 = performance.now();
    const { rgba, cached } = await vendorPixels(v, ids.map((i) => cat[i]!), cacheDir);
    data.timings[v] = { ms: cached ? 0 : performance.now() - t0, cached };
    if (C === 4) images.set(rgba, n * per);
    else images.set(flattenAlpha({ data: rgba, width: S, height: S * ids.length, channels: 4 }, background).data, n * per);
    for (const i of ids) {
      const e = cat[i]!;
      data.captions.push(e.name); data.names.push(e.name); data.unified.push(e.unified); data.vendors.push(v);
      data.shortNames.push(e.shortNames); data.categories.push(e.category); data.subcategories.push(e.subcategory);
      data.emojiIds[n++] = i;
    }
  }
  // Label sets from the whole catalogue, so every split shares the same ids.
  data.categoryNames = [...new Set(cat.map((e) => e.category))].sort();
  data.subcategoryNames = [...new Set(cat.map((e) => e.subcategory))].sort();
  const ci = new Map(data.categoryNames.map((c, i) => [c, i])), si = new Map(data.subcategoryNames.map((c, i) => [c, i]));
  for (let i = 0; i < count; i++) {
    data.categoryIds[i] = ci.get(data.categories[i]!)!;
    data.subcategoryIds[i] = si.get(data.subcategories[i]!)!;
  }
  return data;
}

/** One image of an EmojiData as a RawImage (a view, no copy). */
export function emojiImage(data: EmojiData, index: number): RawImage {
  const per = data.size * data.size * data.channels;
  return { data: data.images.subarray(index * per, (index + 1) * per), width: data.size, height: data.size, channels: data.channels };
}

export interface EmojiDatasetOptions {
  /** Caption templates ('{}' = name): the loader picks one per sample and epoch. null: the plain name. */
  templates?: readonly string[] | null;
}

/** A random-access data source over EmojiData for the loader. */
export class EmojiDataset implements Dataset {
  readonly kind = 'map' as const;
  readonly size: number;
  private readonly templates: readonly string[] | null;
  constructor(readonly data: EmojiData, options: EmojiDatasetOptions = {}) {
    this.size = data.count;
    const t = options.templates ?? null;
    if (t !== null && (!Array.isArray(t) || t.length === 0 || !t.every((s) => typeof s === 'string' && s.includes('{}'))))
      throw new TypeError(`EmojiDataset: expected null or a non-empty array of strings containing '{}' for options.templates but received ${JSON.stringify(t)}`);
    this.templates = t;
  }
  captionAt(index: number): string | readonly string[] {
    const name = this.data.captions[index]!;
    return this.templates === null ? name : this.templates.map((t) => t.replace('{}', name));
  }
  get(index: number): Sample {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) throw new SkipError('index out of range', String(index));
    return { image: emojiImage(this.data, index), caption: this.captionAt(index), key: `${this.data.vendors[index]}/${this.data.unified[index]}` };
  }
}

export interface EmojiSplitOptions extends LoadEmojiOptions, EmojiDatasetOptions {
  /** The vendor evaluated on, never trained on (default 'facebook', the fourth). */
  heldOut?: EmojiVendor;
}

/**
 * The default split: train on three vendors, evaluate on the held-out fourth, so evaluation
 * measures generalisation to an unseen drawing style. Training captions use the templates
 * (default EMOJI_TEMPLATES); evaluation captions are the plain names.
 */
export async function emojiSplit(options: EmojiSplitOptions = {}): Promise<{ train: EmojiDataset; eval: EmojiDataset; heldOut: EmojiVendor }> {
  const heldOut = options.heldOut ?? 'facebook';
  const vendors = checkVendors('emojiSplit', options.vendors ?? [...EMOJI_VENDORS]);
  if (!vendors.includes(heldOut)) throw new RangeError(`emojiSplit: expected options.heldOut to be one of the vendors [${vendors.join(', ')}] but received ${JSON.stringify(heldOut)}`);
  if (vendors.length < 2) throw new RangeError(`emojiSplit: expected at least 2 vendors (train and held out) but received [${vendors.join(', ')}]`);
  const common = { cacheDir: options.cacheDir, channels: options.channels, background: options.background };
  const trainData = await loadEmoji({ ...common, vendors: vendors.filter((v) => v !== heldOut) });
  const evalData = await loadEmoji({ ...common, vendors: [heldOut] });
  const templates = options.templates === undefined ? EMOJI_TEMPLATES : options.templates;
  return { train: new EmojiDataset(trainData, { templates }), eval: new EmojiDataset(evalData, { templates: null }), heldOut };
}
