// CLIP's training graph (ts/models/clip.ts): config validation with key paths, the loss against
// the materialised InfoNCE reference, gradients into both towers and the log-scale, the clamp
// after a step, contrastive accumulation equal to the big batch (float64), and a short training
// run on a subset of the emoji data that lowers the loss and lifts held-out recall well above
// chance (trainer + data loader + evaluation together).
import test from 'ava';
import { native } from '../ts/native.js';
import { randn, tensor, full, manualSeed } from '../ts/graph/creation.js';
import { tidy } from '../ts/graph/scope.js';
import { slice } from '../ts/graph/ops/views.js';
import { l2Normalize } from '../ts/graph/ops/normalize.js';
import { CLIP, clipConfig, CLIP_PRESETS } from '../ts/models/clip.js';
import { infoNCEReference } from '../ts/objectives/itc.js';
import { accumulateContrastive } from '../ts/train/accumulate.js';
import { train } from '../ts/train/trainer.js';
import { embedLoader, retrievalRecall, groupsOf } from '../ts/train/eval.js';
import { emojiSplit, emojiCatalogue, type EmojiDataset } from '../ts/data/emoji.js';
import { clipTokenizer } from '../ts/data/tokenizers.js';
import { imageTransform } from '../ts/data/images.js';
import { DataLoader } from '../ts/data/loader.js';
import { SubsetDataset, loaderSource } from '../ts/cli/data.js';
import { assertClose } from './helpers/assert.js';

const tiny = (over: Record<string, unknown> = {}) => ({
  embedDim: 16, seed: 3,
  vision: { imageSize: 8, patchSize: 4, width: 16, layers: 1, heads: 2 },
  text: { vocabSize: 40, contextLength: 6, width: 16, layers: 1, heads: 2 },
  ...over,
});

test('config: defaults, presets, and errors that name the key path', (t) => {
  const c = clipConfig();
  t.is(c.embedDim, 128);
  t.is(c.vision.embedDim, 128);
  t.is(c.text.embedDim, 128);
  t.is(c.vision.patchSize, 4);
  t.is(c.text.contextLength, 24);
  t.is(c.initLogitScale, Math.log(1 / 0.07));
  t.is(c.maxLogitScale, Math.log(100));
  t.is(clipConfig({ vision: { layers: 6 } }).vision.width, 128, 'nested keys merge one by one');
  t.is(clipConfig(CLIP_PRESETS['ViT-B/32']).vision.patchSize, 32);
  const msg = (cfg: unknown) => { try { clipConfig(cfg); return 'NO ERROR'; } catch (e) { return `${(e as Error).name}: ${(e as Error).message}`; } };
  t.is(msg({ vision: { patchSize: 0 } }), 'RangeError: CLIPConfig: expected an integer >= 1 for vision.patchSize but received the number 0');
  t.is(msg({ vision: { patchSize: 5 } }), 'RangeError: CLIPConfig: expected a multiple of patchSize (5) for vision.imageSize but received the number 32');
  t.true(msg({ text: { widht: 3 } }).startsWith("TypeError: CLIPConfig: expected one of the keys"));
  t.true(msg({ text: { widht: 3 } }).endsWith("but received the unknown key 'text.widht'"));
  t.is(msg({ embedDim: 0 }), 'RangeError: CLIPConfig: expected an integer >= 1 for embedDim but received the number 0');
  t.is(msg({ vision: { embedDim: 4 } }), 'TypeError: CLIPConfig: expected embedDim at the top level, not in vision (both towers share it) but received the number 4 for vision.embedDim');
  t.is(msg({ initLogitScale: 6 }), 'RangeError: CLIPConfig: expected at most maxLogitScale (4.605170185988092) for initLogitScale but received the number 6');
  t.is(msg({ vision: 3 }), 'TypeError: CLIPConfig: expected a plain object for vision but received the number 3');
});

test('loss equals the materialised InfoNCE reference; gradients reach both towers and the log-scale', (t) => {
  const m = new CLIP(tiny({ dtype: 'float64' }));
  const images = randn([5, 3, 8, 8], { seed: 1, dtype: 'float64' });
  const texts = tensor(Int32Array.from({ length: 30 }, (_, i) => (i * 7) % 39), [5, 6], { dtype: 'int32' });
  const eot = [5, 4, 3, 2, 5];
  const r = tidy(() => {
    const out = m.loss({ images, texts, eot });
    out.loss.backward();
    const f = m.forward(images, texts, { eot });
    const ref = infoNCEReference(f.image, f.text, { logitScale: m.logitScale, normalize: true });
    return { loss: out.loss.item(), ref: ref.loss, dParam: ref.dParam, acc: out.accI2T };
  });
  t.true(Math.abs(r.loss - r.ref) < 1e-12, `${r.loss} vs ${r.ref}`);
  t.true(Math.abs(m.logitScale.grad!.item() - r.dParam) < 1e-10);
  for (const [name, p] of m.namedParameters()) t.truthy(p.grad, `${name} has a gradient`);
  // encodeText pools at the given positions: the normalised features match
  const f = tidy(() => ({ a: m.encodeText(texts, { eot, normalize: true }).toArray(), b: l2Normalize(m.encodeText(texts, { eot }), -1).toArray() }));
  assertClose(t, f.a, f.b, 1e-14, 0, "normalised text features");
  // after a step the log-scale is clamped to ln 100
  tidy(() => native.copy(m.logitScale.handle, full([], 7, { dtype: 'float64' }).handle));
  m.afterStep();
  t.is(m.logitScale.item(), Math.log(100));
  t.true(Math.abs(m.scale - 100) < 1e-9);
  const frozen = new CLIP(tiny({ learnLogitScale: false }));
  t.false(frozen.logitScale.requiresGrad);
  t.deepEqual(frozen.sharedParameters, []);
});

test('contrastive accumulation over 2 micro-batches gives the big-batch gradients (float64)', (t) => {
  const m = new CLIP(tiny({ dtype: 'float64' }));
  const images = randn([6, 3, 8, 8], { seed: 2, dtype: 'float64' });
  const texts = tensor(Int32Array.from({ length: 36 }, (_, i) => (i * 5 + 1) % 39), [6, 6], { dtype: 'int32' });
  const eot = Int32Array.from([5, 5, 4, 3, 2, 5]);
  const grads = () => m.parameters().map((p) => Array.from(p.grad!.toArray()));
  tidy(() => m.loss({ images, texts, eot }).loss.backward());
  const big = grads();
  for (const p of m.parameters()) p.grad = null;
  const mb = [[0, 3], [3, 6]] as const;
  accumulateContrastive({
    microBatches: mb,
    features: ([a, b]) => ({ image: m.encodeImage(slice(images, 0, a, b)), text: m.encodeText(slice(texts, 0, a, b), { eot: eot.subarray(a, b) }) }),
    loss: (i, x) => m.contrastiveLoss(i, x), shared: m.sharedParameters,
  });
  const acc = grads();
  big.forEach((g, i) => assertClose(t, acc[i]!, g, 1e-12, 1e-9, `parameter ${i}`));
});

/** The emoji with a drawing by every vendor, no skin-tone variants, `n` of them spread over the catalogue. */
async function emojiSubset(n: number): Promise<{ train: SubsetDataset; eval: SubsetDataset }> {
  const split = await emojiSplit({ templates: null });
  const cat = emojiCatalogue();
  const ok = cat.map((e, i) => ({ e, i })).filter(({ e }) => e.skinTone === '' && e.hasImage.apple && e.hasImage.google && e.hasImage.twitter && e.hasImage.facebook);
  const chosen = new Set(Array.from({ length: n }, (_, k) => ok[Math.floor((k * ok.length) / n)]!.i));
  const pick = (d: EmojiDataset) => Int32Array.from([...d.data.emojiIds.keys()].filter((r) => chosen.has(d.data.emojiIds[r]!)));
  return { train: new SubsetDataset(split.train, pick(split.train)), eval: new SubsetDataset(split.eval, pick(split.eval)) };
}

test('a short training run on emoji lowers the loss and lifts held-out recall well above chance', async (t) => {
  const N = 120;
  const { train: trainSet, eval: evalSet } = await emojiSubset(N);
  t.is(trainSet.size, 3 * N);
  t.is(evalSet.size, N);
  manualSeed(0);
  const model = new CLIP({
    embedDim: 64, seed: 1,
    vision: { imageSize: 16, patchSize: 4, width: 64, layers: 2, heads: 4 },
    text: { contextLength: 16, width: 64, layers: 1, heads: 4 },
  });
  const tokenizer = clipTokenizer({ contextLength: 16 });
  const trainT = imageTransform({ size: 16, train: true, scale: [0.8, 1] }), evalT = imageTransform({ size: 16 });
  const recall = async () => {
    const loader = new DataLoader({ source: evalSet, tokenizer, transform: evalT, batchSize: 64, shuffle: false, dropLast: false, epochs: 1 });
    const s = await embedLoader(model, loader);
    const g = groupsOf(s.captions);
    const r = retrievalRecall(s.image, s.text, { imageGroups: g, textGroups: g });
    s.image.dispose(); s.text.dispose();
    return r;
  };
  const before = await recall();
  const source = loaderSource((position) => new DataLoader({ source: trainSet, tokenizer, transform: trainT, batchSize: 60, seed: 1, ...(position ? { position } : {}) }));
  const losses: number[] = [];
  const steps = 60;
  await train({
    model, data: source, steps, seed: 0, logger: false, outDir: null,
    optimizer: { lr: 2e-3, weightDecay: 0.1, betas: [0.9, 0.98], eps: 1e-6 }, schedule: { warmupSteps: 5, minLr: 1e-4 },
    afterStep: () => model.afterStep(),
    loss: (b) => {
      const r = model.loss({ images: b.images, texts: b.texts, eot: b.eot });
      losses.push(r.loss.item());
      return { loss: r.loss, metrics: { accI2T: r.accI2T } };
    },
  });
  source.close();
  const after = await recall();
  const head = losses.slice(0, 5).reduce((a, b) => a + b) / 5, tail = losses.slice(-5).reduce((a, b) => a + b) / 5;
  t.log(`loss ${head.toFixed(3)} -> ${tail.toFixed(3)}; held-out i2t R@1 ${before.i2t[1]} -> ${after.i2t[1]}, R@10 ${before.i2t[10]} -> ${after.i2t[10]}; t2i R@10 -> ${after.t2i[10]}`);
  t.true(tail < head - 1.0, `loss ${head} -> ${tail}`);
  // chance: R@1 = 1/120, R@10 = 10/120
  t.true(after.i2t[10]! >= 3 * (10 / N), `held-out image->text R@10 ${after.i2t[10]} (chance ${10 / N})`);
  t.true(after.t2i[10]! >= 3 * (10 / N), `held-out text->image R@10 ${after.t2i[10]} (chance ${10 / N})`);
  t.true(after.i2t[1]! >= 3 * (1 / N), `held-out image->text R@1 ${after.i2t[1]} (chance ${1 / N})`);
});

test('resuming through loaderSource continues bit for bit (data position, augmentation, weights)', async (t) => {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { readMetrics } = await import('../ts/train/plots.js');
  const { train: trainSet } = await emojiSubset(40);
  const tokenizer = clipTokenizer({ contextLength: 12 });
  const transform = imageTransform({ size: 16, train: true, scale: [0.5, 1] });
  const dirs = [mkdtempSync(join(tmpdir(), 'vlmkit-clip-a-')), mkdtempSync(join(tmpdir(), 'vlmkit-clip-b-'))];
  t.teardown(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const run = async (dir: string, resume: boolean, throwAt: number | null) => {
    const model = new CLIP({
      embedDim: 16, seed: 5, vision: { imageSize: 16, patchSize: 8, width: 16, layers: 1, heads: 2 },
      text: { contextLength: 12, width: 16, layers: 1, heads: 2, dropout: 0.1 },
    });
    // batches of 48 over 120 samples: the run crosses an epoch boundary (drop-last) before step 5
    const source = loaderSource((position) => new DataLoader({ source: trainSet, tokenizer, transform, batchSize: 48, seed: 9, ...(position ? { position } : {}) }));
    try {
      await train({
        model, data: source, steps: 6, seed: 1, logger: false, outDir: dir, resume, checkpointEvery: 1, keepCheckpoints: 2,
        optimizer: { lr: 1e-2 }, afterStep: ({ step }) => { model.afterStep(); if (step + 1 === throwAt) throw new Error('simulated kill'); },
        loss: (b) => { const r = model.loss({ images: b.images, texts: b.texts, eot: b.eot }); return { loss: r.loss, metrics: { accI2T: r.accI2T } }; },
      });
    } finally {
      source.close();
    }
  };
  await run(dirs[0]!, false, null);
  await t.throwsAsync(() => run(dirs[1]!, false, 3), { message: 'simulated kill' });
  await run(dirs[1]!, true, null);
  const curve = (d: string) => readMetrics(join(d, 'metrics.jsonl')).map((r) => [r.step, r.loss, r.accI2T]);
  t.is(curve(dirs[0]!).length, 6);
  t.deepEqual(curve(dirs[1]!), curve(dirs[0]!));
});
