// Images: the resampler against Pillow's output (numbers recorded from Pillow 9.4's
// Image.resize(box=...) on a fixed 9×7 image), random-resized-crop determinism and bounds,
// the evaluation center crop, normalisation, decoding through sharp (alpha, grayscale, JPEG,
// shrink on load) and the skip reasons of broken inputs.
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import {
  resampleNormalize, randomResizedCropBox, centerCropBox, imageTransform, decodeImage, imagesToTensor, CLIP_MEAN, CLIP_STD,
} from '../ts/data/images.js';
import { Rng } from '../ts/data/random.js';
import { SkipError, type RawImage } from '../ts/data/source.js';

const dir = mkdtempSync(join(tmpdir(), 'vlmkit-images-test-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function lcgImage(W: number, H: number): RawImage {
  const data = new Uint8Array(W * H * 3);
  let s = 12345;
  for (let i = 0; i < data.length; i++) { s = (Math.imul(s, 1103515245) + 12345) & 0x7fffffff; data[i] = s % 256; }
  return { data, width: W, height: H, channels: 3 };
}
// Identity normalisation: outputs are plain 0..255 values.
const PLAIN = [[0, 0, 0], [1 / 255, 1 / 255, 1 / 255]] as const;

test('resampling agrees with Pillow within one level', (t) => {
  const img = lcgImage(9, 7);
  const pilBicubic = [123, 177, 125, 112, 169, 209, 117, 123, 120, 140, 140, 75, 100, 109, 87, 97, 132, 159, 114, 143, 115, 131, 163, 138,
    78, 111, 144, 148, 142, 116, 94, 162, 162, 148, 118, 199, 142, 152, 97, 136, 69, 102, 113, 145, 129, 146, 118, 107];
  const pilBilinear = [159, 217, 243, 237, 209, 160, 219, 195, 194, 157, 113, 162, 154, 147, 153, 109, 71, 171, 71, 137, 154, 127, 120, 185,
    82, 185, 186, 179, 202, 175, 87, 75, 76, 121, 188, 204, 139, 155, 167, 133, 96, 155, 116, 107, 137, 123, 89, 155, 69, 59, 80, 110, 135,
    155, 76, 139, 121, 123, 150, 95, 237, 208, 172, 126, 77, 58, 79, 134, 125, 134, 148, 75, 59, 99, 109, 111, 99, 54, 105, 83, 123, 111,
    45, 58, 107, 67, 150, 169, 109, 141];
  const a = new Float64Array(3 * 4 * 4);
  resampleNormalize(img, { x0: 0, y0: 0, x1: 9, y1: 7 }, 4, 4, 'bicubic', PLAIN[0], PLAIN[1], a);
  const b = new Float64Array(3 * 6 * 5);
  resampleNormalize(img, { x0: 1, y0: 2, x1: 6, y1: 6 }, 6, 5, 'bilinear', PLAIN[0], PLAIN[1], b);
  for (const [ours, pil] of [[a, pilBicubic], [b, pilBilinear]] as const) {
    t.is(ours.length, pil.length);
    const worst = Math.max(...pil.map((v, i) => Math.abs(Math.round(ours[i]!) - v)));
    t.true(worst <= 1, `max difference ${worst}`);
  }
});

test('downscaling reproduces a linear ramp away from the borders; the identity is exact', (t) => {
  const W = 64, H = 48;
  const data = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) { data[(y * W + x) * 3] = 2 * x + 40; data[(y * W + x) * 3 + 1] = 3 * y + 20; data[(y * W + x) * 3 + 2] = 77; }
  const img: RawImage = { data, width: W, height: H, channels: 3 };
  const out = new Float64Array(3 * 16 * 12);
  resampleNormalize(img, { x0: 0, y0: 0, x1: W, y1: H }, 16, 12, 'bicubic', PLAIN[0], PLAIN[1], out);
  for (let y = 2; y < 10; y++) for (let x = 2; x < 14; x++) {
    // Output pixel x covers source [4x, 4x + 4): its center is 4x + 1.5.
    t.true(Math.abs(out[y * 16 + x]! - (2 * (4 * x + 1.5) + 40)) < 1e-9);
    t.true(Math.abs(out[192 + y * 16 + x]! - (3 * (4 * y + 1.5) + 20)) < 1e-9);
    t.true(Math.abs(out[384 + y * 16 + x]! - 77) < 1e-9);
  }
  const same = new Float64Array(3 * W * H);
  resampleNormalize(img, { x0: 0, y0: 0, x1: W, y1: H }, W, H, 'bicubic', PLAIN[0], PLAIN[1], same);
  t.is(same[5 * W + 7], 2 * 7 + 40);
});

test('random-resized-crop boxes: deterministic for a key, within the scale and ratio ranges', (t) => {
  const boxes = (seed: number) => Array.from({ length: 50 }, (_, i) => randomResizedCropBox(200, 150, new Rng(seed, 0, i, 2), [0.3, 1], [3 / 4, 4 / 3]));
  t.deepEqual(boxes(7), boxes(7));
  t.notDeepEqual(boxes(7), boxes(8));
  for (const b of boxes(3)) {
    const w = b.x1 - b.x0, h = b.y1 - b.y0;
    t.true(b.x0 >= 0 && b.y0 >= 0 && b.x1 <= 200 && b.y1 <= 150);
    t.true(Number.isInteger(b.x0) && Number.isInteger(w));
    t.true(w * h >= 0.3 * 200 * 150 * 0.97 && w * h <= 200 * 150);
    t.true(w / h >= 0.75 * 0.97 && w / h <= (4 / 3) * 1.03);
  }
  // The default scale (0.9, 1) on a square emoji keeps most of it.
  for (let i = 0; i < 20; i++) {
    const b = randomResizedCropBox(32, 32, new Rng(1, 0, i));
    t.true((b.x1 - b.x0) * (b.y1 - b.y0) >= 0.85 * 1024);
  }
  // Impossible ratios fall back to the central crop with the ratio clamped.
  t.deepEqual(randomResizedCropBox(400, 10, new Rng(0), [0.99, 1], [1, 1]), { x0: 195, y0: 0, x1: 205, y1: 10 });
});

test('training transforms are deterministic for a seed; evaluation ignores the generator', (t) => {
  const img = lcgImage(40, 30);
  const tr = imageTransform({ size: 16, train: true });
  const run = (key: number) => { const o = new Float32Array(3 * 256); tr.apply(img, new Rng(5, 0, key), o); return o; };
  t.deepEqual(run(1), run(1));
  t.notDeepEqual(run(1), run(2));
  t.throws(() => tr.apply(img, undefined, new Float32Array(768)), { instanceOf: TypeError, message: /expected a generator/ });
  const ev = imageTransform({ size: 16 });
  const a = new Float32Array(768), b = new Float32Array(768);
  ev.apply(img, new Rng(1), a); ev.apply(img, undefined, b);
  t.deepEqual(a, b);
});

test('applyAsync: sharp downscales large images like the JS resampler; small ones stay in JS', async (t) => {
  const W = 300, H = 240, data = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < 3; c++)
    data[(y * W + x) * 3 + c] = Math.round(127.5 + 127.5 * Math.sin(x / (7 + c) + y / (11 - c)) * Math.cos(y / 13));
  const img: RawImage = { data, width: W, height: H, channels: 3 };
  for (const [train, size, exact] of [[false, 64, false], [true, 64, false], [false, 256, true]] as const) {
    const tr = imageTransform({ size, train, mean: PLAIN[0], std: PLAIN[1] });
    const a = new Float32Array(3 * size * size), b = new Float32Array(3 * size * size);
    tr.apply(img, new Rng(3), a);
    await tr.applyAsync(img, new Rng(3), b);
    let worst = 0, mean = 0;
    for (let i = 0; i < a.length; i++) { const d = Math.abs(a[i]! - b[i]!); worst = Math.max(worst, d); mean += d / a.length; }
    if (exact) t.is(worst, 0);
    else t.true(worst <= 6 && mean < 1, `train=${train}: max ${worst}, mean ${mean}`);
  }
});

test('evaluation: resize the shorter side and center crop; CLIP normalisation', (t) => {
  // 64×32: red | green (the central 32 columns) | blue.
  const W = 64, H = 32, data = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) data.set(x < 16 ? [255, 0, 0] : x < 48 ? [10, 200, 30] : [0, 0, 255], (y * W + x) * 3);
  t.deepEqual(centerCropBox(64, 32), { x0: 16, y0: 0, x1: 48, y1: 32 });
  const out = new Float32Array(3 * 32 * 32);
  imageTransform({ size: 32 }).apply({ data, width: W, height: H, channels: 3 }, undefined, out);
  const want = [10, 200, 30].map((v, c) => (v / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!);
  for (let c = 0; c < 3; c++) for (const p of [0, 31, 500, 1023]) t.true(Math.abs(out[c * 1024 + p]! - want[c]!) < 1e-5);
  // 'squash' keeps the whole width: the left column is red.
  imageTransform({ size: 32, resizeMode: 'squash' }).apply({ data, width: W, height: H, channels: 3 }, undefined, out);
  t.true(Math.abs(out[0]! - (1 - CLIP_MEAN[0]) / CLIP_STD[0]) < 1e-5);
});

test('decoding: PNG with alpha over the background, grayscale, JPEG, shrink on load', async (t) => {
  const rgba = Buffer.alloc(4 * 4 * 4);
  for (let i = 0; i < 16; i++) rgba.set([200, 100, 50, i < 8 ? 255 : 0], i * 4);
  const png = await sharp(rgba, { raw: { width: 4, height: 4, channels: 4 } }).png().toBuffer();
  const img = await decodeImage({ bytes: png });
  t.is(img.channels, 3);
  t.deepEqual([...img.data.subarray(0, 3)], [200, 100, 50]);
  t.deepEqual([...img.data.subarray(45, 48)], [255, 255, 255]);
  const black = await decodeImage({ bytes: png }, { background: [0, 0, 0] });
  t.deepEqual([...black.data.subarray(45, 48)], [0, 0, 0]);
  const grayPath = join(dir, 'gray.png');
  await sharp(Buffer.alloc(6 * 5, 90), { raw: { width: 6, height: 5, channels: 1 } }).png().toFile(grayPath);
  const gray = await decodeImage({ path: grayPath });
  t.deepEqual([gray.width, gray.height, gray.channels], [6, 5, 3]);
  t.deepEqual([...gray.data.subarray(0, 3)], [90, 90, 90]);
  const jpg = await sharp(Buffer.alloc(300 * 200 * 3, 128), { raw: { width: 300, height: 200, channels: 3 } }).jpeg().toBuffer();
  const small = await decodeImage({ bytes: jpg }, { shrinkTo: 50 });
  t.deepEqual([small.width, small.height], [75, 50]);
  t.true(Math.abs(small.data[0]! - 128) <= 2);
  const t4 = await imagesToTensor([{ bytes: jpg }, img], imageTransform({ size: 8, train: true }), { seed: 3, dtype: 'float64' });
  t.deepEqual(t4.shape, [2, 3, 8, 8]);
  t.is(t4.dtype, 'float64');
  t4.dispose();
});

test('broken inputs are skips with a reason', async (t) => {
  const reason = async (p: Promise<unknown>) => { const e = await t.throwsAsync(p, { instanceOf: SkipError }); return e?.reason; };
  t.is(await reason(decodeImage({ path: join(dir, 'nope.png') })), 'missing image');
  writeFileSync(join(dir, 'bad.jpg'), 'this is not an image');
  t.is(await reason(decodeImage({ path: join(dir, 'bad.jpg') })), 'corrupt image');
  t.is(await reason(decodeImage({ bytes: new Uint8Array(0) })), 'corrupt image');
  const png = await sharp(Buffer.alloc(40 * 10 * 3), { raw: { width: 40, height: 10, channels: 3 } }).png().toBuffer();
  const truncated = png.subarray(0, png.length - 30);
  t.is(await reason(decodeImage({ bytes: truncated })), 'corrupt image');
  t.is(await reason(decodeImage({ bytes: png }, { minSide: 20 })), 'image too small');
  t.is(await reason(decodeImage({ bytes: png }, { maxAspectRatio: 3 })), 'aspect ratio too large');
  t.is((await decodeImage({ bytes: png }, { minSide: 10, maxAspectRatio: 4 })).width, 40);
});

test('imageTransform: bad options are clear errors', (t) => {
  t.throws(() => imageTransform({ size: 0 }), { instanceOf: RangeError, message: 'imageTransform: expected an integer in [1, 4096] for options.size but received the number 0' });
  t.throws(() => imageTransform({ scale: [0.5, 1.5] }), { instanceOf: RangeError, message: /options.scale/ });
  t.throws(() => imageTransform({ ratio: [2, 1] }), { instanceOf: RangeError, message: /expected a pair \[low, high\] of finite positive numbers with low <= high for options.ratio but received \[2, 1\]/ });
  t.throws(() => imageTransform({ std: [1, 0, 1] }), { instanceOf: RangeError, message: /options.std/ });
  t.throws(() => imageTransform({ interpolation: 'lanczos' as never }), { instanceOf: RangeError, message: /'bicubic' or 'bilinear' for options.interpolation/ });
});
