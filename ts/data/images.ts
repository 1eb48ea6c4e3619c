// Images: decoding (sharp), random-resized-crop for training, resize + center crop for
// evaluation, mean/std normalisation to float32 CHW, and batching into [B, 3, H, W].
//
// sharp decodes (any format libvips reads, EXIF orientation applied, alpha flattened onto a
// background, large images shrunk on load). The crop and resize run here in JS on the
// decoded pixels, one fused pass per sample: a separable resampling with the support
// widened when downscaling (antialiased, as PIL and torchvision's antialias=True do) that
// writes normalised floats straight into the batch buffer. For the 32×32 emoji a sharp call
// per sample would cost more than the resampling itself (~1.8 ms against ~0.05 ms).

import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { tensor } from '../graph/creation.js';
import type { Tensor } from '../graph/tensor.js';
import { Rng } from './random.js';
import { isRawImage, SkipError, type ImageRef, type RawImage } from './source.js';

/** CLIP's (OpenAI) normalisation, open_clip's default. */
export const CLIP_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];
export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];

export type Interpolation = 'bicubic' | 'bilinear';
type RGB = readonly [number, number, number];

function fmt(v: unknown): string {
  if (typeof v === 'string') return `the string '${v}'`;
  if (typeof v === 'number' || typeof v === 'boolean') return `the ${typeof v} ${v}`;
  if (Array.isArray(v)) return `[${v.map(String).join(', ')}]`;
  if (v === null || v === undefined) return String(v);
  return `a value of type ${typeof v}`;
}

// ---- decoding -------------------------------------------------------------------------

export interface DecodeOptions {
  /** Colour under transparent pixels, 0..255 (default white). */
  background?: RGB;
  /**
   * Shrink on load so that the shorter side is at most this (aspect kept; never enlarges).
   * Crops are chosen in relative coordinates, so this only saves memory and time.
   */
  shrinkTo?: number;
  /** Skip images whose shorter side (before shrinking) is below this (ALIGN's filter). */
  minSide?: number;
  /** Skip images whose longer/shorter side ratio exceeds this (ALIGN's filter). */
  maxAspectRatio?: number;
}

/** RGBA -> RGB over a background colour; RGB images are returned as they are. */
export function flattenAlpha(img: RawImage, background: RGB = [255, 255, 255]): RawImage {
  if (img.channels === 3) return img;
  const n = img.width * img.height;
  const out = new Uint8Array(n * 3);
  const src = img.data;
  const [br, bg, bb] = background;
  // Integer blend, rounded: (c·a + bg·(255 - a) + 127) / 255.
  for (let i = 0, j = 0; i < 4 * n; i += 4, j += 3) {
    const a = src[i + 3]!, b = 255 - a;
    out[j] = ((src[i]! * a + br * b + 127) / 255) | 0;
    out[j + 1] = ((src[i + 1]! * a + bg * b + 127) / 255) | 0;
    out[j + 2] = ((src[i + 2]! * a + bb * b + 127) / 255) | 0;
  }
  return { data: out, width: img.width, height: img.height, channels: 3 };
}

function checkSize(img: RawImage, opts: DecodeOptions, w = img.width, h = img.height): void {
  const short = Math.min(w, h), long = Math.max(w, h);
  if (opts.minSide !== undefined && short < opts.minSide) throw new SkipError('image too small', `${w}x${h}`);
  if (opts.maxAspectRatio !== undefined && long / short > opts.maxAspectRatio) throw new SkipError('aspect ratio too large', `${w}x${h}`);
}

/**
 * Decodes an image reference to 8-bit RGB. Failures throw a SkipError whose reason is
 * 'missing image' (no such file), 'unreadable image' (other read errors), 'corrupt image'
 * (sharp cannot decode it), 'image too small' or 'aspect ratio too large'.
 */
export async function decodeImage(ref: ImageRef, options: DecodeOptions = {}): Promise<RawImage> {
  const background = options.background ?? [255, 255, 255];
  if (isRawImage(ref)) {
    checkSize(ref, options);
    return flattenAlpha(ref, background);
  }
  let input: Buffer;
  if ('path' in ref) {
    try {
      input = await readFile(ref.path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new SkipError(code === 'ENOENT' ? 'missing image' : 'unreadable image', `${ref.path}: ${(e as Error).message}`);
    }
  } else {
    input = Buffer.from(ref.bytes.buffer, ref.bytes.byteOffset, ref.bytes.byteLength);
  }
  if (input.length === 0) throw new SkipError('corrupt image', 'empty file');
  try {
    let pipeline = sharp(input).rotate();
    if (options.minSide !== undefined || options.maxAspectRatio !== undefined) {
      const m = await sharp(input).metadata();
      if (!m.width || !m.height) throw new SkipError('corrupt image', 'no dimensions');
      checkSize({ data: new Uint8Array(0), width: m.width, height: m.height, channels: 3 }, options);
    }
    if (options.shrinkTo !== undefined)
      pipeline = pipeline.resize({ width: options.shrinkTo, height: options.shrinkTo, fit: 'outside', withoutEnlargement: true, kernel: 'cubic' });
    const { data, info } = await pipeline
      .flatten({ background: { r: background[0], g: background[1], b: background[2] } })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    const img: RawImage = { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: info.channels === 4 ? 4 : 3 };
    if (info.channels !== 3 && info.channels !== 4) throw new SkipError('corrupt image', `${info.channels} channels after conversion`);
    return flattenAlpha(img, background);
  } catch (e) {
    if (e instanceof SkipError) throw e;
    throw new SkipError('corrupt image', (e as Error).message);
  }
}

// ---- crop boxes -----------------------------------------------------------------------

/** A source region in pixel coordinates (may be fractional): [x0, x1) × [y0, y1). */
export interface Box { x0: number; y0: number; x1: number; y1: number }

/**
 * torchvision's RandomResizedCrop.get_params: up to 10 tries of an area fraction in `scale`
 * and a log-uniform aspect ratio in `ratio`; otherwise the central crop with the ratio
 * clamped into range.
 */
export function randomResizedCropBox(width: number, height: number, rng: Rng, scale: readonly [number, number] = [0.9, 1.0],
  ratio: readonly [number, number] = [3 / 4, 4 / 3]): Box {
  const area = width * height;
  const logLo = Math.log(ratio[0]), logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLo, logHi));
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      const y = rng.int(height - h + 1), x = rng.int(width - w + 1);
      return { x0: x, y0: y, x1: x + w, y1: y + h };
    }
  }
  const inRatio = width / height;
  let w: number, h: number;
  if (inRatio < ratio[0]) { w = width; h = Math.round(w / ratio[0]); }
  else if (inRatio > ratio[1]) { h = height; w = Math.round(h * ratio[1]); }
  else { w = width; h = height; }
  const y = Math.floor((height - h) / 2), x = Math.floor((width - w) / 2);
  return { x0: x, y0: y, x1: x + w, y1: y + h };
}

/** The region that resizing the shorter side to the output and center-cropping keeps: the central square. */
export function centerCropBox(width: number, height: number): Box {
  const s = Math.min(width, height);
  const x0 = (width - s) / 2, y0 = (height - s) / 2;
  return { x0, y0, x1: x0 + s, y1: y0 + s };
}

// ---- resampling -----------------------------------------------------------------------

function bicubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}
function bilinear(x: number): number {
  x = Math.abs(x);
  return x < 1 ? 1 - x : 0;
}

interface Coeffs { start: Int32Array; len: Int32Array; w: Float64Array; k: number }

// PIL's precompute_coeffs: output pixel i reads inputs [start, start+len) with weights w.
function coeffs(inSize: number, outSize: number, b0: number, b1: number, interp: Interpolation): Coeffs {
  const filter = interp === 'bicubic' ? bicubic : bilinear;
  const fsupport = interp === 'bicubic' ? 2 : 1;
  const scale = (b1 - b0) / outSize;
  const filterscale = Math.max(scale, 1);
  const support = fsupport * filterscale;
  const k = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize), len = new Int32Array(outSize), w = new Float64Array(outSize * k);
  const ss = 1 / filterscale;
  for (let i = 0; i < outSize; i++) {
    const center = b0 + (i + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(center - support + 0.5));
    const hi = Math.min(inSize, Math.trunc(center + support + 0.5));
    let total = 0;
    const n = Math.max(0, hi - lo);
    for (let j = 0; j < n; j++) {
      const v = filter((j + lo - center + 0.5) * ss);
      w[i * k + j] = v;
      total += v;
    }
    if (total !== 0) for (let j = 0; j < n; j++) w[i * k + j]! /= total;
    start[i] = lo; len[i] = n;
  }
  return { start, len, w, k };
}

/**
 * Resamples the region `box` of `img` to outW × outH and writes (v/255 - mean[c]) / std[c]
 * as planar CHW floats into out[offset ...]. Only the first 3 channels are read.
 */
export function resampleNormalize(img: RawImage, box: Box, outW: number, outH: number, interp: Interpolation,
  mean: RGB, std: RGB, out: Float32Array | Float64Array, offset = 0): void {
  const C = img.channels, W = img.width, src = img.data;
  const plane = outW * outH;
  const sc = [1 / (255 * std[0]), 1 / (255 * std[1]), 1 / (255 * std[2])];
  const sh = [-mean[0] / std[0], -mean[1] / std[1], -mean[2] / std[2]];
  // The identity (same size, whole image): no filtering.
  if (box.x0 === 0 && box.y0 === 0 && box.x1 === W && box.y1 === img.height && outW === W && outH === img.height) {
    for (let p = 0; p < plane; p++)
      for (let c = 0; c < 3; c++) out[offset + c * plane + p] = src[p * C + c]! * sc[c]! + sh[c]!;
    return;
  }
  const cx = coeffs(W, outW, box.x0, box.x1, interp);
  const cy = coeffs(img.height, outH, box.y0, box.y1, interp);
  // Rows of the source that the vertical pass reads.
  let r0 = img.height, r1 = 0;
  for (let i = 0; i < outH; i++) { r0 = Math.min(r0, cy.start[i]!); r1 = Math.max(r1, cy.start[i]! + cy.len[i]!); }
  const rows = Math.max(0, r1 - r0);
  const tmp = new Float64Array(rows * outW * 3);
  for (let r = 0; r < rows; r++) {
    const rowBase = (r0 + r) * W * C;
    for (let i = 0; i < outW; i++) {
      const s = cx.start[i]!, n = cx.len[i]!, wb = i * cx.k;
      let a0 = 0, a1 = 0, a2 = 0;
      for (let j = 0; j < n; j++) {
        const wt = cx.w[wb + j]!, p = rowBase + (s + j) * C;
        a0 += wt * src[p]!; a1 += wt * src[p + 1]!; a2 += wt * src[p + 2]!;
      }
      // Clamped between passes, as PIL does (bicubic overshoots).
      const t = (r * outW + i) * 3;
      tmp[t] = a0 < 0 ? 0 : a0 > 255 ? 255 : a0;
      tmp[t + 1] = a1 < 0 ? 0 : a1 > 255 ? 255 : a1;
      tmp[t + 2] = a2 < 0 ? 0 : a2 > 255 ? 255 : a2;
    }
  }
  for (let y = 0; y < outH; y++) {
    const s = cy.start[y]! - r0, n = cy.len[y]!, wb = y * cy.k;
    for (let x = 0; x < outW; x++) {
      let a0 = 0, a1 = 0, a2 = 0;
      for (let j = 0; j < n; j++) {
        const wt = cy.w[wb + j]!, t = ((s + j) * outW + x) * 3;
        a0 += wt * tmp[t]!; a1 += wt * tmp[t + 1]!; a2 += wt * tmp[t + 2]!;
      }
      const p = offset + y * outW + x;
      out[p] = Math.min(255, Math.max(0, a0)) * sc[0]! + sh[0]!;
      out[p + plane] = Math.min(255, Math.max(0, a1)) * sc[1]! + sh[1]!;
      out[p + 2 * plane] = Math.min(255, Math.max(0, a2)) * sc[2]! + sh[2]!;
    }
  }
}

// ---- transforms -----------------------------------------------------------------------

export interface TransformOptions {
  /** Output side in pixels (square). Default 224. */
  size?: number;
  /** Training (random-resized-crop) or evaluation (resize + center crop). Default false. */
  train?: boolean;
  /** Area fraction range of the random crop (open_clip: (0.9, 1.0)). */
  scale?: readonly [number, number];
  /** Aspect ratio range of the random crop (torchvision: (3/4, 4/3)). */
  ratio?: readonly [number, number];
  /** Default 'bicubic', as open_clip. */
  interpolation?: Interpolation;
  /** Evaluation: 'shortest' resizes the shorter side then center-crops (open_clip); 'squash' resizes the whole image. */
  resizeMode?: 'shortest' | 'squash';
  mean?: RGB;
  std?: RGB;
  /** Colour under transparent pixels (default white). */
  background?: RGB;
  /** Decoded images are shrunk on load to this shorter side; default 2 × size. 0 disables. */
  shrinkTo?: number;
  /** applyAsync hands images with more pixels than this to sharp (off the JS thread). Default 16384 (128×128). */
  offloadPixels?: number;
}

/** A resolved transform: options plus `apply`, which writes one sample's [3, size, size] floats. */
export interface ImageTransform {
  readonly size: number;
  readonly train: boolean;
  readonly options: Required<TransformOptions>;
  /** What decodeImage should be told (background, shrink on load). */
  readonly decode: DecodeOptions;
  /** The source region for this image; train mode draws from rng (required then). */
  box(img: RawImage, rng?: Rng): Box;
  /** Writes the normalised CHW pixels of img into out at offset (3·size·size values). */
  apply(img: RawImage, rng: Rng | undefined, out: Float32Array | Float64Array, offset?: number): void;
  /**
   * The same, with the crop and downscale of images larger than `offloadPixels` done by sharp
   * on its own threads (the box is rounded to whole pixels; sharp's cubic kernel is the same
   * Catmull-Rom filter: results differ from apply's by about one level of 255). The loader uses this.
   */
  applyAsync(img: RawImage, rng: Rng | undefined, out: Float32Array | Float64Array, offset?: number): Promise<void>;
}

function checkPair(op: string, name: string, v: unknown, positive = true): readonly [number, number] {
  if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0)) || v[0] > v[1])
    throw new RangeError(`${op}: expected a pair [low, high] of finite${positive ? ' positive' : ''} numbers with low <= high for ${name} but received ${fmt(v)}`);
  return [v[0], v[1]];
}
function checkRGB(op: string, name: string, v: unknown, positive: boolean): RGB {
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0)))
    throw new RangeError(`${op}: expected 3 finite${positive ? ' positive' : ''} numbers for ${name} but received ${fmt(v)}`);
  return [v[0], v[1], v[2]];
}

/** Builds a training or evaluation transform, validating every option. */
export function imageTransform(options: TransformOptions = {}): ImageTransform {
  const op = 'imageTransform';
  const size = options.size ?? 224;
  if (!Number.isInteger(size) || size < 1 || size > 4096) throw new RangeError(`${op}: expected an integer in [1, 4096] for options.size but received ${fmt(size)}`);
  const train = options.train ?? false;
  if (typeof train !== 'boolean') throw new TypeError(`${op}: expected a boolean for options.train but received ${fmt(train)}`);
  const scale = checkPair(op, 'options.scale', options.scale ?? [0.9, 1.0]);
  if (scale[1] > 1) throw new RangeError(`${op}: expected an area fraction range within (0, 1] for options.scale but received ${fmt(options.scale)}`);
  const ratio = checkPair(op, 'options.ratio', options.ratio ?? [3 / 4, 4 / 3]);
  const interpolation = options.interpolation ?? 'bicubic';
  if (interpolation !== 'bicubic' && interpolation !== 'bilinear') throw new RangeError(`${op}: expected 'bicubic' or 'bilinear' for options.interpolation but received ${fmt(interpolation)}`);
  const resizeMode = options.resizeMode ?? 'shortest';
  if (resizeMode !== 'shortest' && resizeMode !== 'squash') throw new RangeError(`${op}: expected 'shortest' or 'squash' for options.resizeMode but received ${fmt(resizeMode)}`);
  const mean = checkRGB(op, 'options.mean', options.mean ?? CLIP_MEAN, false);
  const std = checkRGB(op, 'options.std', options.std ?? CLIP_STD, true);
  const background = checkRGB(op, 'options.background', options.background ?? [255, 255, 255], false);
  if (!background.every((x) => x >= 0 && x <= 255)) throw new RangeError(`${op}: expected values in [0, 255] for options.background but received ${fmt(options.background)}`);
  const shrinkTo = options.shrinkTo ?? 2 * size;
  if (!Number.isInteger(shrinkTo) || shrinkTo < 0) throw new RangeError(`${op}: expected a non-negative integer for options.shrinkTo but received ${fmt(shrinkTo)}`);
  const offloadPixels = options.offloadPixels ?? 16384;
  if (typeof offloadPixels !== 'number' || !(offloadPixels >= 0)) throw new RangeError(`${op}: expected a non-negative number for options.offloadPixels but received ${fmt(offloadPixels)}`);
  const resolved: Required<TransformOptions> = { size, train, scale, ratio, interpolation, resizeMode, mean, std, background, shrinkTo, offloadPixels };
  const decode: DecodeOptions = shrinkTo > 0 ? { background, shrinkTo: Math.max(shrinkTo, size) } : { background };
  const box = (img: RawImage, rng?: Rng): Box => {
    if (train) {
      if (!rng) throw new TypeError(`${op}: expected a generator (Rng) for a training transform but received undefined`);
      return randomResizedCropBox(img.width, img.height, rng, scale, ratio);
    }
    return resizeMode === 'squash' ? { x0: 0, y0: 0, x1: img.width, y1: img.height } : centerCropBox(img.width, img.height);
  };
  return {
    size, train, options: resolved, decode, box,
    apply(img, rng, out, offset = 0) {
      resampleNormalize(img, box(img, rng), size, size, interpolation, mean, std, out, offset);
    },
    async applyAsync(img, rng, out, offset = 0) {
      const b = box(img, rng);
      // Downscaling only: libvips upsamples with another pixel-centre convention.
      if (img.width * img.height <= offloadPixels || b.x1 - b.x0 < size || b.y1 - b.y0 < size)
        return resampleNormalize(img, b, size, size, interpolation, mean, std, out, offset);
      const left = Math.min(img.width - 1, Math.max(0, Math.round(b.x0))), top = Math.min(img.height - 1, Math.max(0, Math.round(b.y0)));
      const width = Math.max(1, Math.min(img.width - left, Math.round(b.x1 - b.x0))), height = Math.max(1, Math.min(img.height - top, Math.round(b.y1 - b.y0)));
      const data = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } })
        .extract({ left, top, width, height })
        .resize(size, size, { fit: 'fill', kernel: interpolation === 'bicubic' ? 'cubic' : 'linear' })
        .removeAlpha().raw().toBuffer();
      resampleNormalize({ data, width: size, height: size, channels: 3 }, { x0: 0, y0: 0, x1: size, y1: size }, size, size, interpolation, mean, std, out, offset);
    },
  };
}

/**
 * Decodes (if needed) and transforms images into one [B, 3, size, size] tensor.
 * Training transforms draw crop boxes from `seed` (sample i uses Rng(seed, i, crop)).
 */
export async function imagesToTensor(images: readonly ImageRef[], transform: ImageTransform,
  options: { seed?: number; dtype?: 'float32' | 'float64' } = {}): Promise<Tensor> {
  const s = transform.size, per = 3 * s * s;
  const dtype = options.dtype ?? 'float32';
  const out = dtype === 'float64' ? new Float64Array(images.length * per) : new Float32Array(images.length * per);
  const decoded = await Promise.all(images.map((r) => decodeImage(r, transform.decode)));
  decoded.forEach((img, i) => transform.apply(img, transform.train ? new Rng(options.seed ?? 0, i, 2) : undefined, out, i * per));
  return tensor(out, [images.length, 3, s, s], { dtype });
}
