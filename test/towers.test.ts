// The towers (ts/models): shapes and a forward+backward on the tiny default configs,
// float64 gradient checks end to end on tinier instances, the masks that make them what
// they are (CLIP text causal + EOT pooling, BERT key padding, MED decoder causal and
// cross-attention, LM causal + prefix), init as the references (std checks, parameter
// counts of the reference architectures' formulas), config errors, seeds, and freeze().
import test, { type ExecutionContext } from 'ava';
import type { Tensor } from '../ts/graph/tensor.js';
import { manualSeed, rand, randn, tensor } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { tidy } from '../ts/graph/scope.js';
import { Module } from '../ts/graph/module.js';
import { Linear } from '../ts/graph/nn.js';
import { add, mul, neg } from '../ts/graph/ops/elementwise.js';
import { matmul } from '../ts/graph/ops/matmul.js';
import { mean, sum } from '../ts/graph/ops/reduce.js';
import { logSoftmax } from '../ts/graph/ops/softmax.js';
import { gather } from '../ts/graph/ops/gather.js';
import { reshape, select, slice } from '../ts/graph/ops/views.js';
import { AdamW } from '../ts/graph/optim/adamw.js';
import {
  VisionTransformer, TextTransformer, BertModel, EfficientNet, CausalLM, freeze, unfreeze, isFrozen,
  roundFilters, roundRepeats, selectPositions, EFFICIENTNET_B0_STAGES, VIT_DEFAULTS,
} from '../ts/models/index.js';
import { assertClose, assertGradcheck } from './helpers/assert.js';
import { native } from '../ts/native.js';

// Tiny models: one thread (each op is microseconds of work; OpenMP regions on a loaded
// machine cost far more than that). Multi-threaded kernels are covered by their own tests.
native.setNumThreads(1);

const f64 = { dtype: 'float64' as const };
const ids32 = (rows: number[][]) => tensor(rows, undefined, { dtype: 'int32' });
const u8 = (rows: number[][]) => tensor(rows, undefined, { dtype: 'uint8' });

function std(a: ArrayLike<number>): number {
  let s = 0, s2 = 0;
  for (let i = 0; i < a.length; i++) { s += a[i]!; s2 += a[i]! * a[i]!; }
  const m = s / a.length;
  return Math.sqrt(s2 / a.length - m * m);
}

/** Names of the parameters that did not receive a gradient. */
function missingGrads(m: Module): string[] {
  return m.namedParameters().filter(([, p]) => p.grad === null).map(([n]) => n);
}

function sameArrays(t: ExecutionContext, a: Module, b: Module, equal: boolean): void {
  const sa = a.stateDict(), sb = b.stateDict();
  t.deepEqual(Object.keys(sa), Object.keys(sb));
  const same = Object.keys(sa).every((k) => {
    const x = sa[k]!.toArray(), y = sb[k]!.toArray();
    return x.length === y.length && x.every((v, i) => v === y[i]);
  });
  t.is(same, equal);
}

// ---------------------------------------------------------------------------- ViT

test('ViT: shapes, forward+backward, open_clip init and layout', (t) => {
  manualSeed(1);
  const vit = new VisionTransformer();
  t.deepEqual(vit.config, VIT_DEFAULTS);
  t.is(vit.numParameters(), 109_568);
  const names = vit.namedParameters().map(([n]) => n);
  for (const n of ['conv1.weight', 'class_embedding', 'positional_embedding', 'ln_pre.weight', 'transformer.0.attn.q_proj.weight',
    'transformer.1.mlp.fc2.bias', 'ln_post.bias', 'proj']) t.true(names.includes(n), n);
  t.is(vit.conv1.bias, null);
  t.deepEqual(vit.positionalEmbedding.shape, [65, 64]);
  // open_clip: positions (and class token, proj) ~ N(0, width^-1)
  t.true(Math.abs(std(vit.positionalEmbedding.toArray()) / 0.125 - 1) < 0.05);
  t.true(Math.abs(std(vit.proj!.toArray()) / 0.125 - 1) < 0.08);

  const px = randn([2, 3, 32, 32]);
  const { pooled, tokens } = vit.forward(px);
  t.deepEqual(pooled.shape, [2, 32]);
  t.deepEqual(tokens.shape, [2, 65, 64]);
  // pooled is the projected class token after ln_post
  tidy(() => assertClose(t, pooled.toArray(), matmul(select(tokens, 1, 0), vit.proj!).toArray(), 1e-6, 1e-5));
  add(sum(pooled), mean(tokens)).backward();
  t.deepEqual(missingGrads(vit), []);
  vit.dispose();
});

test('ViT gradcheck (float64): pixels, class embedding, projection, positions', (t) => {
  manualSeed(2);
  const vit = new VisionTransformer({ imageSize: 8, patchSize: 4, channels: 2, width: 8, layers: 1, heads: 2, mlpRatio: 1, embedDim: 3, dtype: 'float64' });
  const px = randn([1, 2, 8, 8], f64).requiresGrad_();
  assertGradcheck(t, (x) => vit.forward(x!).pooled, [px, vit.classEmbedding, vit.proj!], {}, 'pooled');
  assertGradcheck(t, () => vit.forward(px).tokens, [vit.positionalEmbedding], {}, 'tokens');
  vit.dispose();
});

// ---------------------------------------------------------------------------- CLIP text

test('text tower: shapes, causal mask, EOT pooling (argmax id or given positions)', (t) => {
  manualSeed(3);
  const txt = new TextTransformer();
  t.is(txt.numParameters(), 119_552);
  t.true(Math.abs(std(txt.tokenEmbedding.weight.toArray()) / 0.02 - 1) < 0.05, 'token_embedding std 0.02');
  t.true(Math.abs(std(txt.positionalEmbedding.toArray()) / 0.01 - 1) < 0.1, 'positional_embedding std 0.01');
  const projStd = 64 ** -0.5 * 4 ** -0.5;
  t.true(Math.abs(std(txt.transformer.blocks[0]!.mlp.fc2.weight.toArray()) / projStd - 1) < 0.05, 'c_proj std');
  t.true(Math.abs(std(txt.transformer.blocks[0]!.attn.qProj.weight.toArray()) / 0.125 - 1) < 0.05, 'in_proj std');

  const a = ids32([[5, 9, 255, 0, 0, 0], [7, 8, 11, 12, 255, 0]]);
  const b = ids32([[5, 9, 255, 0, 0, 0], [7, 8, 11, 99, 255, 0]]);  // row 1 differs at position 3
  const oa = txt.forward(a), ob = txt.forward(b);
  t.deepEqual(oa.pooled.shape, [2, 32]);
  t.deepEqual(oa.tokens.shape, [2, 6, 64]);
  tidy(() => {
    // causal: positions before 3 do not see the change, positions from 3 on do
    assertClose(t, slice(oa.tokens, 1, 0, 3).toArray(), slice(ob.tokens, 1, 0, 3).toArray(), 0, 0, 'earlier tokens');
    t.notDeepEqual([...select(slice(oa.tokens, 1, 3, 4), 0, 1).toArray()], [...select(slice(ob.tokens, 1, 3, 4), 0, 1).toArray()]);
    // pooled at the largest id (255 = EOT) = explicit positions; another position differs
    const want = matmul(selectPositions(oa.tokens, [2, 4]), txt.textProjection!);
    assertClose(t, oa.pooled.toArray(), want.toArray(), 1e-6, 1e-5, 'argmax pooling');
    assertClose(t, txt.forward(a, { eotPositions: tensor([2, 4], [2], { dtype: 'int32' }) }).pooled.toArray(), want.toArray(), 0, 0);
    t.notDeepEqual([...txt.forward(a, { eotPositions: [2, 3] }).pooled.toArray()], [...oa.pooled.toArray()]);
  });
  add(sum(oa.pooled), mean(oa.tokens)).backward();
  t.deepEqual(missingGrads(txt), []);
  txt.dispose();
});

test('text tower gradcheck (float64): embeddings and projection through causal blocks', (t) => {
  manualSeed(4);
  const txt = new TextTransformer({ vocabSize: 12, contextLength: 5, width: 8, layers: 1, heads: 2, mlpRatio: 1, embedDim: 3, dtype: 'float64' });
  const ids = ids32([[3, 4, 11, 0], [1, 11, 2, 2]]);
  assertGradcheck(t, () => txt.forward(ids).pooled,
    [txt.positionalEmbedding, txt.textProjection!, txt.tokenEmbedding.weight], {}, 'pooled');
  assertGradcheck(t, () => txt.forward(ids).tokens, [txt.transformer.blocks[0]!.attn.vProj.weight], {}, 'tokens');
  txt.dispose();
});

// ---------------------------------------------------------------------------- BERT / MED

test('BERT: shapes, HF init, padding tokens do not change [CLS] (mask or lengths)', (t) => {
  manualSeed(5);
  const bert = new BertModel();
  t.is(bert.numParameters(), 139_200);
  t.deepEqual(bert.crossAttentionLayers, []);
  t.true(Math.abs(std(bert.encoder.blocks[0]!.mlp.fc1.weight.toArray()) / 0.02 - 1) < 0.05, 'Linear std 0.02');
  t.deepEqual([...bert.encoder.blocks[0]!.mlp.fc1.bias!.toArray()].filter((v) => v !== 0), []);
  t.deepEqual([...slice(bert.wordEmbeddings.weight, 0, 0, 1).toArray()].filter((v) => v !== 0), [], 'padding row zero');
  bert.eval();
  const a = ids32([[101, 7, 8, 102, 0, 0], [101, 9, 102, 0, 0, 0]]);
  const b = ids32([[101, 7, 8, 102, 44, 45], [101, 9, 102, 3, 4, 5]]);  // same tokens, different padding
  const mask = u8([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]]);
  tidy(() => {
    const oa = bert.forward(a, { attentionMask: mask }), ob = bert.forward(b, { attentionMask: mask });
    t.deepEqual(oa.hidden.shape, [2, 6, 64]);
    t.deepEqual(oa.cls.shape, [2, 64]);
    t.deepEqual(oa.pooled!.shape, [2, 64]);
    assertClose(t, oa.cls.toArray(), ob.cls.toArray(), 1e-6, 1e-6, 'cls with attentionMask');
    assertClose(t, oa.pooled!.toArray(), ob.pooled!.toArray(), 1e-6, 1e-6, 'pooler');
    const la = bert.forward(a, { lengths: [4, 3] });
    assertClose(t, la.cls.toArray(), oa.cls.toArray(), 1e-6, 1e-6, 'lengths = attentionMask');
    // without the mask the padding does leak into [CLS]
    t.notDeepEqual([...bert.forward(a).cls.toArray()], [...bert.forward(b).cls.toArray()]);
  });
  bert.train();
  const o = bert.forward(a, { attentionMask: mask, tokenTypeIds: ids32([[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]]) });
  sum(o.pooled!).backward();
  t.deepEqual(missingGrads(bert), []);
  bert.dispose();
});

test('MED: cross-attention every k-th layer, decoder mode causal with the same weights, tied LM head', (t) => {
  manualSeed(6);
  const med = new BertModel({ layers: 4, crossAttentionEvery: 2, crossWidth: 48, lmHead: true, pooler: false });
  t.deepEqual(med.crossAttentionLayers, [0, 2]);
  t.is(med.poolerDense, null);
  t.is(med.lmHead!.weight, med.wordEmbeddings.weight, 'LM head tied to the word embeddings');
  med.eval();
  const img = randn([2, 5, 48]);
  const img2 = noGrad(() => add(img, mul(rand([2, 5, 48]), u8mask5())));  // changes image token 4 only
  const imask = u8([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]);
  const a = ids32([[101, 7, 8, 9, 102], [101, 5, 6, 102, 0]]);
  const b = ids32([[101, 7, 8, 30, 102], [101, 5, 6, 102, 0]]);  // row 0 differs at position 3
  tidy(() => {
    const enc = (ids: Tensor, mode: 'encoder' | 'decoder', ctx: Tensor | null = img) =>
      med.forward(ids, { mode, encoderHiddenStates: ctx, encoderAttentionMask: imask }).hidden;
    // decoder: earlier positions never see later tokens; encoder: they do
    assertClose(t, slice(enc(a, 'decoder'), 1, 0, 3).toArray(), slice(enc(b, 'decoder'), 1, 0, 3).toArray(), 1e-6, 1e-6, 'decoder causal');
    t.notDeepEqual([...select(enc(a, 'encoder'), 1, 0).toArray()], [...select(enc(b, 'encoder'), 1, 0).toArray()]);
    t.notDeepEqual([...enc(a, 'encoder').toArray()], [...enc(a, 'decoder').toArray()]);
    // the image matters, but not a masked-out image token; no image: the unimodal text encoder
    t.notDeepEqual([...enc(a, 'encoder').toArray()], [...enc(a, 'encoder', null).toArray()]);
    assertClose(t, enc(a, 'encoder', img2).toArray(), enc(a, 'encoder').toArray(), 1e-6, 1e-6, 'masked image token');
    // the LM head's fused loss is the cross-entropy of its logits
    const h = enc(a, 'decoder');
    const targets = ids32([[7, 8, 9, 102, -100], [5, 6, 102, -100, -100]]);
    const { loss, tokens } = med.lmHead!.loss(h, targets);
    t.is(tokens, 7);
    const logp = logSoftmax(med.lmHead!.logits(h));
    const picked = gather(logp, 2, reshape(ids32([[7, 8, 9, 102, 0], [5, 6, 102, 0, 0]]), [2, 5, 1])).toArray();
    const valid = [0, 1, 2, 3, 5, 6, 7];
    const ce = -valid.reduce((s, i) => s + picked[i]!, 0) / valid.length;
    t.true(Math.abs(loss.item() - ce) < 1e-4, `${loss.item()} vs ${ce}`);
  });
  med.train();
  const h = med.forward(a, { mode: 'decoder', encoderHiddenStates: img }).hidden;
  med.lmHead!.loss(h, a).loss.backward();
  t.deepEqual(missingGrads(med), []);
  med.dispose();
});

function u8mask5(): Tensor {  // [1, 5, 1] float: 1 at image token 4
  return tensor([0, 0, 0, 0, 1], [1, 5, 1]);
}

test('BERT gradcheck (float64): encoder with padding and cross-attention; decoder through the tied LM head', (t) => {
  manualSeed(7);
  const bert = new BertModel({ vocabSize: 6, hidden: 8, layers: 2, heads: 2, intermediate: 8, maxPositions: 4,
    crossAttentionEvery: 2, crossWidth: 5, lmHead: true, dtype: 'float64' }).eval();
  const ids = ids32([[1, 4, 5, 2], [1, 3, 0, 0]]);
  const img = randn([2, 3, 5], f64).requiresGrad_();
  assertGradcheck(t, (c) => bert.forward(ids, { lengths: [4, 2], encoderHiddenStates: c }).hidden,
    [img, bert.wordEmbeddings.weight], {}, 'encoder');
  assertGradcheck(t, () => bert.forward(ids, { lengths: [4, 2] }).pooled!, [bert.poolerDense!.bias!, bert.tokenTypeEmbeddings!.weight], {}, 'pooler');
  const targets = ids32([[4, 5, 2, -100], [3, -100, -100, -100]]);
  assertGradcheck(t, (c) => bert.lmHead!.loss(bert.forward(ids, { mode: 'decoder', encoderHiddenStates: c }).hidden, targets).loss,
    [img, bert.wordEmbeddings.weight, bert.lmHead!.bias], {}, 'decoder + LM head');
  bert.dispose();
});

// ---------------------------------------------------------------------------- EfficientNet

test('EfficientNet: shapes, round_filters / round_repeats, B0 parameter count as torchvision', (t) => {
  // the paper's rounding, with torchvision's efficientnet_b3 widths (1.2) and B7's depths (3.1)
  t.deepEqual([32, 16, 24, 40, 80, 112, 192, 320, 1280].map((c) => roundFilters(c, 1.2)), [40, 24, 32, 48, 96, 136, 232, 384, 1536]);
  t.deepEqual([32, 16, 24, 40, 80, 112, 192, 320, 1280].map((c) => roundFilters(c, 2.0)), [64, 32, 48, 80, 160, 224, 384, 640, 2560]);
  t.deepEqual(EFFICIENTNET_B0_STAGES.map((s) => roundRepeats(s.repeats, 3.1)), [4, 7, 7, 10, 10, 13, 4]);
  t.is(roundFilters(4, 1, 8), 8, 'never below the divisor');

  manualSeed(8);
  const net = new EfficientNet();
  t.is(net.numParameters(), 23_140);
  t.is(net.blocks.length, 5);
  t.is(net.blocks[4]!.stochasticDepthProb, 0.2 * 4 / 5);
  // torchvision init: conv ~ kaiming_normal(fan_out)
  const w = net.blocks[1]!.expand!.conv.weight;  // [32, 8, 1, 1]: fan_out 32
  t.true(Math.abs(std(w.toArray()) / Math.sqrt(2 / 32) - 1) < 0.12, `std ${std(w.toArray())}`);
  const px = randn([2, 3, 32, 32]);
  const { pooled, features } = net.forward(px);
  t.deepEqual(pooled.shape, [2, 128]);
  t.deepEqual(features.shape, [2, 128, 2, 2]);
  sum(pooled).backward();
  t.deepEqual(missingGrads(net), []);
  // BN running statistics moved in training mode (momentum 0.01)
  t.notDeepEqual([...net.stem.bn.runningMean!.toArray()].filter((v) => v !== 0), []);
  net.dispose();
  // the full B0 feature extractor has torchvision's efficientnet_b0 count minus its classifier
  // (5,288,548 - 1,281,000); float32, 16 MB
  const b0 = new EfficientNet({ stemChannels: 32, headChannels: 1280, stages: EFFICIENTNET_B0_STAGES, seed: 0 });
  t.is(b0.numParameters(), 4_007_548);
  t.is(b0.blocks.length, 16);
  b0.dispose();
});

test('EfficientNet gradcheck (float64, batch statistics): pixels and projection', (t) => {
  manualSeed(9);
  const net = new EfficientNet({
    stemChannels: 8, headChannels: 16, dropPathRate: 0, embedDim: 4, dtype: 'float64',
    stages: [
      { expandRatio: 1, kernelSize: 3, stride: 1, channels: 8, repeats: 1 },
      { expandRatio: 2, kernelSize: 5, stride: 2, channels: 8, repeats: 2 },
    ],
  });
  t.true(net.blocks[2]!.useResidual);
  const px = randn([2, 3, 4, 4], f64).requiresGrad_();
  assertGradcheck(t, (x) => net.forward(x!).pooled, [px, net.proj!.weight], {}, 'train mode');
  net.eval();
  assertGradcheck(t, () => net.forward(px).pooled, [net.blocks[1]!.se!.fc1.weight], {}, 'eval mode');
  net.dispose();
});

// ---------------------------------------------------------------------------- causal LM

test('causal LM: shapes, GPT-2 init, causal, soft-prompt prefix, tied head and the fused loss', (t) => {
  manualSeed(10);
  const lm = new CausalLM();
  t.is(lm.numParameters(), 119_552);
  t.is(lm.lmWeight, lm.wte.weight);
  t.true(Math.abs(std(lm.blocks.blocks[0]!.mlp.fc1.weight.toArray()) / 0.02 - 1) < 0.05);
  t.true(Math.abs(std(lm.blocks.blocks[0]!.mlp.fc2.weight.toArray()) / (0.02 / 2) - 1) < 0.05, 'residual projections 0.02/sqrt(2 layers)');
  lm.eval();
  const a = ids32([[3, 4, 5, 6, 7], [8, 9, 10, 11, 12]]);
  const b = ids32([[3, 4, 5, 60, 7], [8, 9, 10, 11, 12]]);
  const prefix = randn([2, 3, 64]);
  tidy(() => {
    const ha = lm.forward(a, { prefix }), hb = lm.forward(b, { prefix });
    t.deepEqual(ha.shape, [2, 8, 64]);
    assertClose(t, slice(ha, 1, 0, 6).toArray(), slice(hb, 1, 0, 6).toArray(), 0, 0, 'positions before the change');
    t.notDeepEqual([...slice(ha, 1, 6).toArray()], [...slice(hb, 1, 6).toArray()]);
    // the prefix conditions every token; without it the hidden states are those of the tokens alone
    const plain = lm.forward(a);
    t.deepEqual(plain.shape, [2, 5, 64]);
    t.notDeepEqual([...slice(ha, 1, 3).toArray()], [...plain.toArray()]);
    // loss = mean CE of the logits over the non-ignored positions (prefix positions ignored)
    const targets = ids32([[-100, -100, 3, 4, 5, 6, 7, -100], [-100, -100, 8, 9, 10, 11, 12, -100]]);
    const { loss, tokens } = lm.loss(ha, targets);
    t.is(tokens, 10);
    const logp = logSoftmax(lm.logits(ha)).toArray();
    let ce = 0;
    const tv = targets.toArray();
    for (let i = 0; i < 16; i++) if (tv[i]! >= 0) ce -= logp[i * 256 + tv[i]!]!;
    t.true(Math.abs(loss.item() - ce / 10) < 1e-4);
  });
  lm.train();
  const h = lm.forward(a);
  lm.loss(h, a).loss.backward();
  t.deepEqual(missingGrads(lm), []);
  t.throws(() => lm.forward(ids32([[1, 2]]), { prefix: randn([1, 47, 64]) }), { instanceOf: RangeError, message: /expected a tensor \[batch, length <= 1\] for ids but received shape \[1, 2\]/ });
  lm.dispose();
});

test('causal LM gradcheck (float64): prefix, tied embedding through the fused loss; untied head', (t) => {
  manualSeed(11);
  const lm = new CausalLM({ vocabSize: 7, maxPositions: 6, width: 8, layers: 1, heads: 2, mlpRatio: 1, dtype: 'float64' }).eval();
  const ids = ids32([[1, 2, 3], [4, 5, 6]]);
  const prefix = randn([2, 2, 8], f64).requiresGrad_();
  const targets = ids32([[-100, 1, 2, 3, 4], [-100, 4, 5, 6, -100]]);
  assertGradcheck(t, (p) => lm.loss(lm.forward(ids, { prefix: p }), targets).loss, [prefix, lm.wte.weight], {}, 'tied');
  assertGradcheck(t, () => lm.forward(ids, { prefix }), [lm.wpe.weight, lm.lnF.weight!], {}, 'hidden');
  const untied = new CausalLM({ vocabSize: 7, maxPositions: 4, width: 4, layers: 1, heads: 1, mlpRatio: 1, tieWordEmbeddings: false, dtype: 'float64' }).eval();
  t.not(untied.lmWeight, untied.wte.weight);
  assertGradcheck(t, () => untied.logits(untied.forward(ids32([[1, 2, 3]]))), [untied.lmHeadWeight!], {}, 'untied');
  lm.dispose(); untied.dispose();
});

// ---------------------------------------------------------------------------- config, seeds, freeze

test('configs are validated plain data: errors name the key, the expectation and the value', (t) => {
  const bad: [() => unknown, new (...a: never[]) => Error, string | RegExp][] = [
    [() => new VisionTransformer({ patchSize: 5 }), RangeError, 'ViTConfig: expected a multiple of patchSize (5) for imageSize but received the number 32'],
    [() => new VisionTransformer({ widht: 64 } as never), TypeError, /^ViTConfig: expected one of the keys 'imageSize', .* but received the unknown key 'widht'$/],
    [() => new VisionTransformer(null as never), TypeError, 'ViTConfig: expected a plain object for config but received null'],
    [() => new TextTransformer({ layers: 1.5 }), RangeError, 'TextTransformerConfig: expected an integer >= 0 for layers but received the number 1.5'],
    [() => new TextTransformer({ activation: 'swish' as never }), TypeError, "TextTransformerConfig: expected one of 'gelu', 'gelu_tanh', 'quick_gelu', 'silu', 'relu' for activation but received the string 'swish'"],
    [() => new BertModel({ hidden: '64' as never }), TypeError, "BertConfig: expected an integer >= 1 for hidden but received the string '64'"],
    [() => new BertModel({ padTokenId: 512 }), RangeError, 'BertConfig: expected an id below vocabSize (512) or null for padTokenId but received the number 512'],
    [() => new EfficientNet({ stages: [{ expandRatio: 6, kernelSize: 7, stride: 1, channels: 8, repeats: 1 }] }), TypeError,
      'EfficientNetConfig: expected one of 3, 5 for stages[0].kernelSize but received the number 7'],
    [() => new EfficientNet({ stages: [{ expandRatio: 6, kernelSize: 3, stride: 1, channels: 8 } as never] }), TypeError,
      "EfficientNetConfig: expected a value for the required key 'stages[0].repeats' but received undefined"],
    [() => new EfficientNet({ stages: [] }), RangeError, 'EfficientNetConfig: expected an array of at least 1 item(s) for stages but received an array of length 0'],
    [() => new CausalLM({ dropout: 1 }), RangeError, 'CausalLMConfig: expected a number in [0, 1) for dropout but received the number 1'],
    [() => new CausalLM({ seed: -1 }), RangeError, /for seed but received the number -1$/],
  ];
  for (const [f, cls, message] of bad) t.throws(f, { instanceOf: cls, message });

  // the resolved config is frozen plain data that round-trips through JSON
  const vit = new VisionTransformer({ width: 32, heads: 2, layers: 1 });
  t.true(Object.isFrozen(vit.config));
  t.deepEqual(JSON.parse(JSON.stringify(vit.config)), { ...VIT_DEFAULTS, width: 32, heads: 2, layers: 1 });
  const net = new EfficientNet({ seed: 1 });
  t.true(Object.isFrozen(net.config.stages[0]));
  t.deepEqual(new EfficientNet(JSON.parse(JSON.stringify(net.config))).config, net.config);

  // bad inputs at forward time
  const txt = new TextTransformer(), bert = new BertModel(), lm = new CausalLM();
  t.throws(() => vit.forward(randn([1, 3, 16, 16])), { instanceOf: RangeError, message: 'VisionTransformer: expected a tensor [batch, 3, 32, 32] for pixels but received shape [1, 3, 16, 16]' });
  t.throws(() => vit.forward(randn([1, 3, 32, 32], f64)), { instanceOf: TypeError, message: /expected a float32 tensor \(the tower's dtype\)/ });
  t.throws(() => txt.forward(ids32([[1, 256]])), { instanceOf: RangeError, message: 'TextTransformer: expected ids in [0, 256) for ids but received 256 at [0, 1]' });
  t.throws(() => txt.forward(ids32([[1, 2]]), { eotPositions: [2] }), { instanceOf: RangeError, message: /positions in \[0, 2\) for options.eotPositions but received the number 2 at \[0\]/ });
  t.throws(() => txt.forward(tensor([[1, 2]])), { instanceOf: TypeError, message: /expected an int32 tensor for ids but received a float32 tensor/ });
  t.throws(() => bert.forward(ids32([[1, 2]]), { attentionMask: tensor([[1, 1]]) }), { instanceOf: TypeError, message: /expected a uint8 tensor \[1, 2\] for options.attentionMask but received a float32 tensor/ });
  t.throws(() => bert.forward(ids32([[1, 2]]), { encoderHiddenStates: randn([1, 3, 64]) }), { instanceOf: TypeError, message: /no cross-attention layers/ });
  t.throws(() => bert.forward(ids32([[1, 2]]), { mode: 'causal' as never }), { instanceOf: TypeError, message: /expected one of 'encoder', 'decoder' for options.mode/ });
  t.throws(() => lm.forward(ids32([[1, 2]]), { prefix: randn([1, 2, 32]) }), { instanceOf: RangeError, message: /expected a tensor \[1, length, 64\] for options.prefix/ });
  for (const m of [vit, net, txt, bert, lm]) m.dispose();
});

test('seeds make the init reproducible without touching the global generator', (t) => {
  manualSeed(123);
  const ref = randn([8]).toArray();
  const make = [
    (seed: number | null) => new VisionTransformer({ seed, width: 16, heads: 2, layers: 1 }),
    (seed: number | null) => new TextTransformer({ seed, width: 16, heads: 2, layers: 1 }),
    (seed: number | null) => new BertModel({ seed, hidden: 16, heads: 2, layers: 1, intermediate: 32, crossAttentionEvery: 1, lmHead: true }),
    (seed: number | null) => new EfficientNet({ seed }),
    (seed: number | null) => new CausalLM({ seed, width: 16, heads: 2, layers: 1 }),
  ];
  for (const f of make) {
    manualSeed(123);
    const a = f(7);
    t.deepEqual([...randn([8]).toArray()], [...ref], 'the global stream is untouched by a seeded build');
    const b = f(7), c = f(8);
    sameArrays(t, a, b, true);
    sameArrays(t, a, c, false);
    // without a seed: the global generator decides
    manualSeed(5);
    const d = f(null);
    manualSeed(5);
    const e = f(null);
    sameArrays(t, d, e, true);
    for (const m of [a, b, c, d, e]) m.dispose();
  }
});

class TwoTowers extends Module {
  constructor(readonly visual: Module, readonly text: Module) {
    super();
    this.module('visual', visual);
    this.module('text', text);
  }
}

test('freeze: no gradients, no AdamW state, eval-mode BN/Dropout under a training parent; unfreeze undoes it', (t) => {
  manualSeed(12);
  const cnn = new EfficientNet({ embedDim: 16 });
  const txt = new BertModel({ hidden: 32, heads: 2, layers: 1, intermediate: 64, pooler: false });
  const pair = new TwoTowers(cnn, txt);
  const proj = pair.module('proj', new Linear(32, 16));
  freeze(cnn);
  pair.train();
  t.true(isFrozen(cnn) && isFrozen(cnn.stem.bn));
  t.false(cnn.training);
  t.false(cnn.stem.bn.training, 'BatchNorm stays in eval mode');
  t.true(txt.training && proj.training);
  t.is(cnn.numParameters(true), 0);

  const opt = new AdamW(pair.parameters(), { lr: 1e-2 });
  const before = cnn.parameters().map((p) => [...p.toArray()]);
  const rm = [...cnn.stem.bn.runningMean!.toArray()];
  const px = randn([2, 3, 32, 32]);
  const ids = ids32([[101, 5, 6, 102], [101, 7, 102, 0]]);
  const fwd = () => {
    const img = cnn.forward(px).pooled;
    const txtEmb = proj.forward(txt.forward(ids, { lengths: [4, 3] }).cls);
    return neg(mean(mul(img, txtEmb)));
  };
  const l1 = fwd();
  l1.backward();
  opt.step();
  for (const [n, p] of cnn.namedParameters()) {
    t.is(p.grad, null, `${n} has no gradient`);
    t.is(opt.stateOf(p), undefined, `${n} has no optimizer state`);
  }
  t.deepEqual(cnn.parameters().map((p) => [...p.toArray()]), before, 'frozen weights unchanged');
  t.deepEqual([...cnn.stem.bn.runningMean!.toArray()], rm, 'running statistics unchanged (eval-mode BN)');
  for (const [n, p] of [...txt.namedParameters(), ...proj.namedParameters()]) {
    t.not(p.grad, null, n);
    t.is(opt.stateOf(p)?.step, 1, n);
  }
  // a frozen tower still passes gradients to its inputs (BLIP-2's soft prompt through the frozen LLM)
  const lm = freeze(new CausalLM({ width: 32, heads: 2, layers: 1 }));
  lm.train();
  t.false(lm.blocks.blocks[0]!.drop.training, 'Dropout stays off');
  const prompt = randn([2, 3, 32]).requiresGrad_();
  lm.loss(lm.forward(ids32([[1, 2], [3, 4]]), { prefix: prompt }), ids32([[-100, -100, 1, 2, 3], [-100, -100, 3, 4, 5]])).loss.backward();
  t.not(prompt.grad, null);
  t.deepEqual(lm.parameters().filter((p) => p.grad !== null), []);
  // frozen evaluation is deterministic even in a "training" parent: dropout is off
  tidy(() => t.deepEqual([...lm.forward(ids32([[1, 2]])).toArray()], [...lm.forward(ids32([[1, 2]])).toArray()]));

  unfreeze(cnn);
  t.false(isFrozen(cnn));
  t.true(cnn.training && cnn.stem.bn.training);
  pair.eval();
  t.false(cnn.stem.bn.training, 'train()/eval() reach it again');
  t.is(cnn.numParameters(true), cnn.numParameters());
  t.throws(() => freeze({} as Module), { instanceOf: TypeError, message: 'freeze: expected a Module for module but received a value of type object' });
  opt.dispose();
  pair.dispose(); lm.dispose();
});
