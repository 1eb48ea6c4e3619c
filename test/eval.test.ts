// Evaluation (ts/train/eval.ts) and the report (ts/train/report.ts): the tiled top-k retrieval
// against a brute-force float64 reference on random embeddings (tiles of every size give the
// same ranking and recall), groups (identical captions count), zero-shot classification on a
// constructed case, CLIP-style prompt ensembling, bad input, and report.html with PNG images.
import test from 'ava';
import sharp from 'sharp';
import { randn, tensor } from '../ts/graph/creation.js';
import { l2Normalize } from '../ts/graph/ops/normalize.js';
import type { Tensor } from '../ts/graph/tensor.js';
import { topKSimilar, retrievalRecall, zeroShotAccuracy, classEmbeddings, groupsOf, readableClassName, type DualEncoder } from '../ts/train/eval.js';
import { renderReport, imageDataUri } from '../ts/train/report.js';
import { clipTokenizer } from '../ts/data/tokenizers.js';

/** Brute force: every score, sorted by (-score, index). */
function bruteTopK(q: Float64Array, c: Float64Array, D: number, k: number): Int32Array {
  const N = q.length / D, M = c.length / D;
  const out = new Int32Array(N * k).fill(-1);
  for (let i = 0; i < N; i++) {
    const s = Array.from({ length: M }, (_, j) => {
      let v = 0;
      for (let d = 0; d < D; d++) v += q[i * D + d]! * c[j * D + d]!;
      return { j, v };
    });
    s.sort((a, b) => b.v - a.v || a.j - b.j);
    for (let p = 0; p < Math.min(k, M); p++) out[i * k + p] = s[p]!.j;
  }
  return out;
}

function bruteRecall(top: Int32Array, k: number, qg: Int32Array, cg: Int32Array, at: number): number {
  const N = qg.length;
  let hits = 0;
  for (let i = 0; i < N; i++)
    for (let p = 0; p < Math.min(at, k); p++) if (top[i * k + p]! >= 0 && cg[top[i * k + p]!] === qg[i]) { hits++; break; }
  return hits / N;
}

const unit = (n: number, d: number, seed: number, dtype: 'float32' | 'float64' = 'float64') => l2Normalize(randn([n, d], { seed, dtype }), -1);

test('tiled top-k equals the brute-force ranking for every tile size', (t) => {
  const q = unit(37, 8, 1), c = unit(53, 8, 2);
  const want = bruteTopK(q.toArray() as Float64Array, c.toArray() as Float64Array, 8, 10);
  for (const [rowChunk, colChunk] of [[1, 1], [5, 7], [37, 53], [256, 1024], [3, 100]] as const) {
    const got = topKSimilar(q, c, 10, { rowChunk, colChunk });
    t.deepEqual([...got.indices], [...want], `tiles ${rowChunk} x ${colChunk}`);
    // scores are sorted, best first
    for (let i = 0; i < 37; i++) for (let p = 1; p < 10; p++) t.true(got.scores[i * 10 + p - 1]! >= got.scores[i * 10 + p]!);
  }
  // k larger than the number of keys: the rest is -1
  const few = topKSimilar(q, unit(3, 8, 4), 5, { colChunk: 2 });
  t.deepEqual([...few.indices.subarray(3, 5)], [-1, -1]);
});

test('retrieval recall@k (both ways, with groups) equals the brute-force reference', (t) => {
  const N = 120, D = 6;
  const img = unit(N, D, 11), txt = unit(N, D, 12);
  // a few duplicate captions: rows 5 and 9 share a group, 20, 21, 22 another
  const names = Array.from({ length: N }, (_, i) => `caption ${i}`);
  names[9] = names[5]!; names[21] = names[20]!; names[22] = names[20]!;
  const g = groupsOf(names);
  t.is(g[9], g[5]);
  t.is(g[22], g[20]);
  const r = retrievalRecall(img, txt, { imageGroups: g, textGroups: g, rowChunk: 16, colChunk: 25 });
  const iv = img.toArray() as Float64Array, tv = txt.toArray() as Float64Array;
  const i2t = bruteTopK(iv, tv, D, 10), t2i = bruteTopK(tv, iv, D, 10);
  for (const k of [1, 5, 10]) {
    t.is(r.i2t[k], bruteRecall(i2t, 10, g, g, k), `i2t@${k}`);
    t.is(r.t2i[k], bruteRecall(t2i, 10, g, g, k), `t2i@${k}`);
  }
  t.deepEqual([...r.i2tTop], [...i2t]);
  // identical embeddings: perfect recall; and a group match counts even when the twin ranks first
  const perfect = retrievalRecall(img, img, {});
  t.deepEqual(perfect.i2t, { 1: 1, 5: 1, 10: 1 });
  const twins = tensor([[1, 0], [1, 0], [0, 1]], undefined, { dtype: 'float64' });
  const tw = retrievalRecall(twins, twins, { imageGroups: [0, 0, 1], textGroups: [0, 0, 1], ks: [1] });
  t.is(tw.i2t[1], 1);
  const noGroups = retrievalRecall(twins, twins, { ks: [1] });
  t.is(noGroups.i2t[1], 2 / 3, 'without groups the second twin retrieves the first (lower index wins the tie)');
});

test('float32 embeddings give the same recall as float64 on well-separated data', (t) => {
  const a64 = unit(64, 16, 21), b64 = unit(64, 16, 22);
  const a32 = tensor(Float32Array.from(a64.toArray()), [64, 16]), b32 = tensor(Float32Array.from(b64.toArray()), [64, 16]);
  const r64 = retrievalRecall(a64, b64, {}), r32 = retrievalRecall(a32, b32, { rowChunk: 10, colChunk: 9 });
  t.deepEqual(r32.i2t, r64.i2t);
  t.deepEqual(r32.t2i, r64.t2i);
});

test('zero-shot accuracy on a constructed case', (t) => {
  // 4 classes along the axes; images near their class axis, except two mislabelled ones
  const classes = tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], undefined, { dtype: 'float64' });
  const img = tensor([[0.9, 0.1, 0, 0], [0, 1, 0.2, 0], [0, 0.1, 1, 0], [0.1, 0, 0, 1], [0, 0.6, 0.5, 0], [1, 0, 0, 0.9]], undefined, { dtype: 'float64' });
  const labels = [0, 1, 2, 3, 2, 3];
  const r = zeroShotAccuracy(l2Normalize(img, -1), classes, labels);
  t.deepEqual([...r.predictions], [0, 1, 2, 3, 1, 0]);
  t.is(r.top1, 4 / 6);
  t.is(r.top5, 1);   // 4 classes: every label is in the top 5
  t.is(r.classes, 4);
  const e = t.throws(() => zeroShotAccuracy(img, classes, [0, 1, 2, 3, 4, 0]));
  t.is(e?.message, 'zeroShotAccuracy: expected labels in [0, 4) but received 4 at [4]');
});

test('classEmbeddings averages the normalised template embeddings and normalises again (CLIP)', (t) => {
  const tok = clipTokenizer({ contextLength: 16 });
  // A fake text encoder: a fixed vector per token id sum, so each text has its own embedding.
  const table = randn([64, 5], { seed: 5, dtype: 'float64' }).toArray() as Float64Array;
  const enc = (ids: Int32Array, L: number, n: number) => {
    const out = new Float64Array(n * 5);
    for (let b = 0; b < n; b++) {
      let h = 0;
      for (let j = 0; j < L; j++) h = (h * 31 + ids[b * L + j]!) % 64;
      for (let d = 0; d < 5; d++) out[b * 5 + d] = table[h * 5 + d]!;
    }
    return out;
  };
  const model: DualEncoder = {
    encodeImage: (x) => x,
    encodeText: (ids, o = {}) => {
      const v = enc(ids.toArray() as Int32Array, ids.shape[1]!, ids.shape[0]!);
      const x = tensor(v, [ids.shape[0]!, 5], { dtype: 'float64' });
      return o.normalize ? l2Normalize(x, -1) : x;
    },
  };
  const names = ['cat', 'dog face', 'red apple'], templates = ['{}', 'a photo of {}', 'an emoji of {}'];
  const got = classEmbeddings(model, tok, names, templates, { batchSize: 2 }).toArray() as Float64Array;
  for (let c = 0; c < names.length; c++) {
    const mean = new Float64Array(5);
    for (const tpl of templates) {
      const tb = tok.encodeBatch([tpl.replace('{}', names[c]!)]);
      const v = enc(tb.ids, tb.contextLength, 1);
      const n = Math.hypot(...v);
      for (let d = 0; d < 5; d++) mean[d]! += v[d]! / n;
    }
    const n = Math.hypot(...mean);
    for (let d = 0; d < 5; d++) t.true(Math.abs(got[c * 5 + d]! - mean[d]! / n) < 1e-12, `class ${c} dim ${d}`);
  }
  t.is(readableClassName('face-smiling'), 'face smiling');
  t.is(readableClassName('food-fruit'), 'food fruit');
});

test('bad input is a clear error', (t) => {
  const a = unit(4, 3, 1), b = unit(5, 2, 2);
  t.is(t.throws(() => topKSimilar(a, b, 2))?.message, 'topKSimilar: expected keys with 3 features (as queries) but received shape [5, 2]');
  t.is(t.throws(() => topKSimilar(a, a, 0))?.message, 'topKSimilar: expected a positive integer for k but received the number 0');
  t.is(t.throws(() => topKSimilar(a, a, 1, { rowChunk: 0 }))?.message, 'topKSimilar: expected a positive integer for options.rowChunk but received the number 0');
  t.is(t.throws(() => retrievalRecall(a, a, { imageGroups: [0, 1] }))?.message, 'retrievalRecall: expected 4 entries (one per row) for options.imageGroups but received 2');
  t.is(t.throws(() => retrievalRecall(a, a, { ks: [0] }))?.message, 'retrievalRecall: expected a non-empty array of positive integers for options.ks but received an array of length 1');
  t.is(t.throws(() => retrievalRecall(tensor([1, 2, 3]) as Tensor, a))?.message, 'retrievalRecall: expected a tensor [N >= 1, D] for image but received shape [3]');
  t.is(t.throws(() => retrievalRecall(a, tensor(Int32Array.from([1, 2, 3, 4]), [2, 2], { dtype: 'int32' })))?.message,
    'retrievalRecall: expected a float32 or float64 tensor for text but received an int32 tensor');
});

test('report.html: self-contained, recall table, images as PNG data URIs, correct captions marked', async (t) => {
  // a 2x2 image, normalised as the loader would
  const mean = [0.5, 0.4, 0.3], std = [0.2, 0.25, 0.3];
  const rgb = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]];
  const px = new Float32Array(12);
  rgb.forEach((c, p) => c.forEach((v, ch) => { px[ch * 4 + p] = (v / 255 - mean[ch]!) / std[ch]!; }));
  const uri = await imageDataUri(px, 2, 2, mean, std);
  t.true(uri.startsWith('data:image/png;base64,'));
  const { data, info } = await sharp(Buffer.from(uri.slice(22), 'base64')).raw().toBuffer({ resolveWithObject: true });
  t.deepEqual([info.width, info.height, info.channels], [2, 2, 3]);
  t.deepEqual([...data], rgb.flat());
  const html = renderReport({
    title: 'run <x>', summary: [['model', 'CLIP']],
    recall: { i2t: { 1: 0.25, 5: 0.5, 10: 0.75 }, t2i: { 1: 0.125, 5: 0.5, 10: 1 }, images: 8, texts: 8 },
    zeroShot: { top1: 0.1, top5: 0.3, classes: 99 },
    curvesSvg: '<svg xmlns="http://www.w3.org/2000/svg"><text>curves</text></svg>',
    samples: [{ image: uri, caption: 'red & green', top: [{ caption: 'blue', correct: false }, { caption: 'red & green', correct: true, score: 0.5 }] }],
  });
  t.true(html.startsWith('<!DOCTYPE html>'));
  t.true(html.includes('<title>run &lt;x&gt;</title>'));
  t.true(html.includes('25.00%') && html.includes('12.50%') && html.includes('100.00%'));
  t.true(html.includes(`<img src="${uri}"`));
  t.true(html.includes('<li class="ok">red &amp; green'));
  t.true(html.includes('<li class="no">blue'));
  t.true(html.includes('<text>curves</text>'));
  t.false(/<script|<link|src="http/i.test(html), 'no script, stylesheet or remote resource');
  await t.throwsAsync(() => imageDataUri(px, 3, 2, mean, std), { message: 'imageDataUri: expected 3 * width * height = 18 values for pixels but received 12' });
});
