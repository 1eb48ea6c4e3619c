// ALIGN's training graph (ts/models/align.ts): config validation, the loss against the
// materialised InfoNCE reference (divisor temperature, label smoothing 0.1), gradients into the
// EfficientNet, the BERT encoder, the projection and the temperature, the temperature clamp,
// ALIGN's caption-frequency filter, and a short run on emoji (BERT WordPiece captions) whose
// loss falls and whose held-out recall rises above chance.
import test from 'ava';
import { native } from '../ts/native.js';
import { randn, tensor, full, manualSeed } from '../ts/graph/creation.js';
import { tidy } from '../ts/graph/scope.js';
import { ALIGN, alignConfig, ALIGN_PRESETS } from '../ts/models/align.js';
import { infoNCEReference } from '../ts/objectives/itc.js';
import { train } from '../ts/train/trainer.js';
import { paramGroups } from '../ts/graph/optim/adamw.js';
import { embedLoader, retrievalRecall, groupsOf } from '../ts/train/eval.js';
import { emojiSplit, emojiCatalogue, EMOJI_TEMPLATES, type EmojiDataset } from '../ts/data/emoji.js';
import { bertTokenizer } from '../ts/data/tokenizers.js';
import { imageTransform } from '../ts/data/images.js';
import { DataLoader } from '../ts/data/loader.js';
import { SubsetDataset, loaderSource, dropFrequentCaptions } from '../ts/cli/data.js';

const tinyVision = {
  stemChannels: 8, headChannels: 16,
  stages: [{ expandRatio: 1, kernelSize: 3, stride: 1, channels: 8, repeats: 1 }, { expandRatio: 2, kernelSize: 3, stride: 2, channels: 16, repeats: 1 }],
};
const tinyText = { vocabSize: 30522, hidden: 16, layers: 1, heads: 2, intermediate: 32, maxPositions: 12, hiddenDropout: 0, attnDropout: 0 };

test('config: defaults, presets, and errors that name the key path', (t) => {
  const c = alignConfig();
  t.is(c.initTemperature, 1);
  t.is(c.labelSmoothing, 0.1);
  t.is(c.text.pooler, false);
  t.is(c.text.vocabSize, 30522);
  t.is(c.vision.embedDim, null);
  t.is(alignConfig(ALIGN_PRESETS['align-base']).vision.widthMultiplier, 2);
  const msg = (cfg: unknown) => { try { alignConfig(cfg); return 'NO ERROR'; } catch (e) { return `${(e as Error).name}: ${(e as Error).message}`; } };
  t.is(msg({ text: { hidden: 30 } }), 'RangeError: ALIGNConfig: expected a multiple of heads (4) for text.hidden but received the number 30');
  t.is(msg({ vision: { stages: [{ expandRatio: 1, kernelSize: 4, stride: 1, channels: 8, repeats: 1 }] } }),
    "TypeError: ALIGNConfig: expected one of 3, 5 for vision.stages[0].kernelSize but received the number 4");
  t.is(msg({ labelSmoothing: 1 }), 'RangeError: ALIGNConfig: expected a number in [0, 1) for labelSmoothing but received the number 1');
  t.is(msg({ initTemperature: 0.0001, minTemperature: 0.001 }),
    'RangeError: ALIGNConfig: expected a number in [minTemperature, maxTemperature] = [0.001, 100] for initTemperature but received the number 0.0001');
  t.is(msg({ text: { crossAttentionEvery: 1 } }), "RangeError: ALIGNConfig: expected 0 (ALIGN's text encoder has no cross-attention) for text.crossAttentionEvery but received the number 1");
  t.true(msg({ vision: { embedDim: 8 } }).startsWith('TypeError: ALIGNConfig: expected embedDim at the top level'));
});

test('forward/backward: loss equals the reference (temperature, label smoothing); every parameter gets a gradient', (t) => {
  const m = new ALIGN({ dtype: 'float64', seed: 2, vision: tinyVision, text: tinyText });
  t.is(m.embedDim, 16);
  const images = randn([4, 3, 16, 16], { seed: 1, dtype: 'float64' });
  const tok = bertTokenizer({ contextLength: 12 });
  const tb = tok.encodeBatch(['a red apple', 'grinning face with big eyes', 'dog', 'flag: japan']);
  const texts = tensor(tb.ids, [4, 12], { dtype: 'int32' }), attentionMask = tensor(tb.attentionMask, [4, 12], { dtype: 'uint8' });
  const r = tidy(() => {
    const out = m.loss({ images, texts, attentionMask });
    out.loss.backward();
    m.eval();   // BatchNorm: the same statistics for the reference (running stats) would differ; compare in eval mode below
    m.train();
    return out.loss.item();
  });
  t.true(Number.isFinite(r));
  for (const [name, p] of m.namedParameters()) t.truthy(p.grad, `${name} has a gradient`);
  // In eval mode (running BN statistics, no dropout) the fused loss equals the materialised reference.
  m.eval();
  const cmp = tidy(() => {
    const f = m.forward(images, texts, { attentionMask });
    const fused = m.contrastiveLoss(f.image, f.text).loss.item();
    const ref = infoNCEReference(f.image, f.text, { temperature: m.temperature, normalize: true, labelSmoothing: 0.1 }).loss;
    return { fused, ref };
  });
  t.true(Math.abs(cmp.fused - cmp.ref) < 1e-12, `${cmp.fused} vs ${cmp.ref}`);
  // padding does not change the text features: the same caption alone (shorter mask) encodes the same
  const one = tok.encodeBatch(['dog']);
  const alone = tidy(() => m.encodeText(tensor(one.ids, [1, 12], { dtype: 'int32' }), { attentionMask: tensor(one.attentionMask, [1, 12], { dtype: 'uint8' }) }).toArray());
  const inBatch = tidy(() => m.encodeText(texts, { attentionMask }).toArray().slice(2 * 16, 3 * 16));
  alone.forEach((v, i) => t.true(Math.abs(v - inBatch[i]!) < 1e-12));
  // the clamp keeps the temperature in [min, max]
  tidy(() => native.copy(m.temperature.handle, full([], -3, { dtype: 'float64' }).handle));
  m.afterStep();
  t.is(m.temperature.item(), 0.001);
});

test("ALIGN's caption-frequency filter drops captions shared by more than k images", async (t) => {
  const split = await emojiSplit({ templates: EMOJI_TEMPLATES });
  // every name is drawn by up to 3 training vendors: k = 2 drops those shared by all three
  const r = dropFrequentCaptions(split.train, 2);
  const counts = new Map<string, number>();
  for (const c of split.train.data.captions) counts.set(c, (counts.get(c) ?? 0) + 1);
  const expectKept = split.train.data.captions.filter((c) => counts.get(c)! <= 2).length;
  t.is(r.dataset.size, expectKept);
  t.is(r.dropped, split.train.size - expectKept);
  t.true(r.dropped > 0 && expectKept > 0);
  for (let i = 0; i < r.dataset.size; i++) t.true(counts.get(split.train.data.captions[r.dataset.indices[i]!]!)! <= 2);
  // k = 3 keeps every name but the few drawn twice under one name ("man in tuxedo": two emoji x 3 vendors)
  const dup = split.train.data.captions.filter((c) => counts.get(c)! > 3).length;
  t.is(dropFrequentCaptions(split.train, 3).dropped, dup);
  t.true(dup > 0 && dup < 100);
  t.throws(() => dropFrequentCaptions(split.train, 0), { message: 'dropFrequentCaptions: expected a positive integer for maxCount but received the number 0' });
});

test('a short ALIGN run on emoji lowers the loss and lifts held-out recall above chance', async (t) => {
  const N = 100;
  const split = await emojiSplit({ templates: null });
  const cat = emojiCatalogue();
  const ok = cat.map((e, i) => ({ e, i })).filter(({ e }) => e.skinTone === '' && e.hasImage.apple && e.hasImage.google && e.hasImage.twitter && e.hasImage.facebook);
  const chosen = new Set(Array.from({ length: N }, (_, k) => ok[Math.floor((k * ok.length) / N)]!.i));
  const pick = (d: EmojiDataset) => Int32Array.from([...d.data.emojiIds.keys()].filter((r) => chosen.has(d.data.emojiIds[r]!)));
  const trainSet = new SubsetDataset(split.train, pick(split.train)), evalSet = new SubsetDataset(split.eval, pick(split.eval));
  manualSeed(0);
  // BN running statistics at PyTorch's momentum 0.1: a 60-step run's eval mode needs them settled
  const model = new ALIGN({ seed: 1, vision: { bnMomentum: 0.1 }, text: { hidden: 64, layers: 1, heads: 4, intermediate: 128, maxPositions: 16 } });
  const tokenizer = bertTokenizer({ contextLength: 16 });
  const trainT = imageTransform({ size: 32, train: true, scale: [0.8, 1] }), evalT = imageTransform({ size: 32 });
  const recall = async () => {
    const s = await embedLoader(model, new DataLoader({ source: evalSet, tokenizer, transform: evalT, batchSize: 50, shuffle: false, dropLast: false, epochs: 1 }));
    const g = groupsOf(s.captions);
    const r = retrievalRecall(s.image, s.text, { imageGroups: g, textGroups: g });
    s.image.dispose(); s.text.dispose();
    return r;
  };
  const before = await recall();
  const source = loaderSource((position) => new DataLoader({ source: trainSet, tokenizer, transform: trainT, batchSize: 50, seed: 1, ...(position ? { position } : {}) }));
  const losses: number[] = [];
  await train({
    model, data: source, steps: 60, seed: 0, logger: false, outDir: null,
    // the temperature starts at 1.0 (ALIGN): a short run gives it a larger step to fall quickly
    optimizer: {
      lr: 3e-3, weightDecay: 0.1,
      paramGroups: (m) => [
        ...paramGroups(m, { weightDecay: 0.1 }).map((g) => ({ params: g.params.filter((p) => p !== model.temperature), weightDecay: g.weightDecay })),
        { params: [model.temperature], weightDecay: 0, lr: 3e-2 },
      ],
    },
    schedule: { warmupSteps: 4, minLr: 1e-4 }, afterStep: () => model.afterStep(),
    loss: (b) => {
      const r = model.loss({ images: b.images, texts: b.texts, attentionMask: b.attentionMask ?? null });
      losses.push(r.loss.item());
      return r.loss;
    },
  });
  source.close();
  const after = await recall();
  const head = losses.slice(0, 4).reduce((a, b) => a + b) / 4, tail = losses.slice(-4).reduce((a, b) => a + b) / 4;
  t.log(`loss ${head.toFixed(3)} -> ${tail.toFixed(3)}, temperature ${model.temperature.item().toFixed(3)}; held-out i2t R@10 ${before.i2t[10]} -> ${after.i2t[10]}, t2i R@10 -> ${after.t2i[10]}`);
  t.true(tail < head - 0.3, `loss ${head} -> ${tail}`);
  t.true(model.temperature.item() < 1, 'the temperature is learned (falls from 1)');
  t.true(after.i2t[10]! >= 2 * (10 / N), `held-out image->text R@10 ${after.i2t[10]} (chance ${10 / N})`);
});
