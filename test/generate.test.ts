// generate(): the HF options beyond the decode basics (test/decode.test.ts) — numReturnSequences
// (greedy/sampling expand each input as HF's repeat_interleave; beam search returns the best
// hypotheses, checked against exhaustive search), left-padded prompts with attentionMask (a
// padded batch decodes exactly as each prompt alone: step logits, greedy, beam search, a soft
// prefix, the BERT decoder), and beam sampling (seeded, and equal to beam search as the
// temperature goes to 0, seed-free when top-k leaves nothing to draw). Bad input in a child process.
import test from 'ava';
import { manualSeed, randn, tensor } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { Tensor } from '../ts/graph/tensor.js';
import { tidy } from '../ts/graph/scope.js';
import { select, slice } from '../ts/graph/ops/views.js';
import { CausalLM } from '../ts/models/causal_lm.js';
import { BertModel } from '../ts/models/bert.js';
import { generate, type GenerateOptions, type GenerateOutput } from '../ts/models/generate.js';
import { assertClose } from './helpers/assert.js';
import { errorsInChild } from './helpers/child.js';

const arr = (t: Tensor) => Float64Array.from(t.toArray());
const ids32 = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), [rows.length, rows[0]!.length], { dtype: 'int32' });
const rowsOf = (t: Tensor): number[][] => {
  const a = Array.from(t.toArray() as Int32Array), w = t.shape[1]!;
  return Array.from({ length: t.shape[0]! }, (_, i) => a.slice(i * w, (i + 1) * w));
};
/** Each row cut to its length (the rest is padTokenId). */
const seqs = (out: GenerateOutput) => rowsOf(out.sequences).map((r, n) => r.slice(0, out.lengths[n]));

const tinyLM = (seed = 3, extra: Partial<ConstructorParameters<typeof CausalLM>[0]> = {}) =>
  new CausalLM({ vocabSize: 13, maxPositions: 24, width: 16, layers: 2, heads: 2, initializerRange: 0.4, dtype: 'float64', seed, ...extra }).eval();

const tinyMED = () => new BertModel({
  vocabSize: 11, hidden: 16, layers: 3, heads: 2, intermediate: 32, maxPositions: 16, crossAttentionEvery: 2, crossWidth: 12,
  lmHead: true, pooler: false, initializerRange: 0.3, dtype: 'float64', seed: 5,
}).eval();

/** Left-pads rows of different lengths with `pad`: ids and the 0/1 mask. */
function leftPad(rows: number[][], pad = 0): { ids: Tensor; mask: Tensor; width: number } {
  const width = Math.max(...rows.map((r) => r.length));
  const ids = rows.map((r) => [...new Array<number>(width - r.length).fill(pad), ...r]);
  const mask = rows.map((r) => [...new Array<number>(width - r.length).fill(0), ...r.map(() => 1)]);
  return { ids: ids32(ids), mask: ids32(mask), width };
}

// ---- numReturnSequences -------------------------------------------------------------------------

test('numReturnSequences: greedy and sampling expand each input (rows grouped per input, as repeat_interleave)', (t) => {
  const lm = tinyLM();
  const prompt = [[1, 2], [3, 4]];
  const one = rowsOf(generate(lm, ids32(prompt), { maxLength: 8 }).sequences);
  const three = generate(lm, ids32(prompt), { maxLength: 8, numReturnSequences: 3 });
  t.deepEqual(three.sequences.shape, [6, 8]);
  t.deepEqual(rowsOf(three.sequences), [one[0]!, one[0]!, one[0]!, one[1]!, one[1]!, one[1]!]);
  t.is(three.lengths.length, 6);
  // seeded sampling: the same as sampling the repeated prompts; the copies of an input differ
  const o: GenerateOptions = { maxLength: 10, doSample: true, topK: 0, temperature: 2, seed: 17 };
  const got = rowsOf(generate(lm, ids32(prompt), { ...o, numReturnSequences: 3 }).sequences);
  const repeated = rowsOf(generate(lm, ids32([prompt[0]!, prompt[0]!, prompt[0]!, prompt[1]!, prompt[1]!, prompt[1]!]), o).sequences);
  t.deepEqual(got, repeated);
  t.true(new Set(got.slice(0, 3).map((r) => r.join())).size > 1, 'the three samples of input 0 are not all equal');
  got.forEach((r, n) => t.deepEqual(r.slice(0, 2), prompt[Math.floor(n / 3)]));
});

/** Every complete continuation of `prompt` (ending at eos or at maxLength) with HF's hypothesis score. */
function allHypotheses(logprobs: (prefix: number[]) => number[], prompt: number[], V: number, maxLength: number, eos: number, lp: number) {
  const out: { ids: number[]; score: number }[] = [];
  const extend = (prefix: number[], sum: number) => {
    const l = logprobs(prefix);
    for (let tk = 0; tk < V; tk++) {
      const s = sum + l[tk]!;
      if (tk === eos) out.push({ ids: [...prefix, tk], score: s / prefix.length ** lp });
      else if (prefix.length + 1 === maxLength) out.push({ ids: [...prefix, tk], score: s / maxLength ** lp });
      else extend([...prefix, tk], s);
    }
  };
  extend(prompt, 0);
  return out.sort((a, b) => b.score - a.score);
}

function logprobsOf(lm: CausalLM) {
  const memo = new Map<string, number[]>();
  return (prefix: number[]) => {
    const key = prefix.join(',');
    if (!memo.has(key)) {
      const x = noGrad(() => tidy(() => {
        const h = lm.forward(ids32([prefix]));
        return Array.from(arr(lm.logits(select(h, 1, h.shape[1]! - 1))));
      }));
      const m = Math.max(...x), lse = m + Math.log(x.reduce((s, v) => s + Math.exp(v - m), 0));
      memo.set(key, x.map((v) => v - lse));
    }
    return memo.get(key)!;
  };
}

test('numReturnSequences with beams: the best hypotheses per input, best first (exhaustive search); at most numBeams', (t) => {
  const V = 4;
  const lm = new CausalLM({ vocabSize: V, maxPositions: 8, width: 8, layers: 1, heads: 2, initializerRange: 0.8, dtype: 'float64', seed: 11 }).eval();
  const lp = logprobsOf(lm);
  const prompts = [[1], [2]];
  const eos = 0, R = 4;
  const refs = prompts.map((p) => allHypotheses(lp, p, V, 4, eos, 1.5));
  const numBeams = Math.max(...refs.map((r) => r.length));
  const out = generate(lm, ids32(prompts), { maxLength: 4, numBeams, numReturnSequences: R, eosTokenId: eos, lengthPenalty: 1.5 });
  t.deepEqual(out.sequences.shape[0], prompts.length * R);
  const got = seqs(out), scores = arr(out.sequenceScores!);
  refs.forEach((ref, b) => {
    for (let r = 0; r < R; r++) {
      t.deepEqual(got[b * R + r], ref[r]!.ids, `input ${b} rank ${r}`);
      assertClose(t, [scores[b * R + r]!], [ref[r]!.score], 1e-9, 1e-9, `score ${b} ${r}`);
    }
  });
  // the first of each group is what numReturnSequences 1 returns
  const best = generate(lm, ids32(prompts), { maxLength: 4, numBeams: 3, eosTokenId: eos });
  const top = generate(lm, ids32(prompts), { maxLength: 4, numBeams: 3, numReturnSequences: 3, eosTokenId: eos });
  t.deepEqual([seqs(top)[0], seqs(top)[3]], seqs(best));
  const ts = arr(top.sequenceScores!);
  t.true(ts[0]! >= ts[1]! && ts[1]! >= ts[2]! && ts[3]! >= ts[4]! && ts[4]! >= ts[5]!, `sorted: ${ts}`);
});

// ---- attentionMask: left-padded prompts ---------------------------------------------------------

test('CausalLM.step with a left-padding attentionMask equals the unpadded rows: logits now and at the next step', (t) => {
  const lm = tinyLM();
  const rows = [[4, 5, 6, 7], [8, 9]];
  const { ids, mask } = leftPad(rows, 3);
  const cache = lm.newCache(2, 8);
  const got = arr(lm.step(ids, cache, { attentionMask: mask }));
  const got2 = arr(lm.step(ids32([[1], [2]]), cache));
  rows.forEach((r, n) => {
    const c = lm.newCache(1, 8);
    const want = arr(lm.step(ids32([r]), c));
    const want2 = arr(lm.step(ids32([[n + 1]]), c));
    assertClose(t, got.slice(n * 13, (n + 1) * 13), want, 1e-12, 1e-12, `row ${n} prompt`);
    assertClose(t, got2.slice(n * 13, (n + 1) * 13), want2, 1e-12, 1e-12, `row ${n} next step`);
    c.dispose();
  });
  // the padded row without the mask is a different computation
  const c = lm.newCache(2, 8);
  const plain = arr(lm.step(ids, c));
  t.true(Math.abs(plain[13]! - got[13]!) > 1e-6, 'the mask matters');
  c.dispose();
  // beam reorder carries the padding with the rows
  cache.reorder([1, 1]);
  const got3 = arr(lm.step(ids32([[5], [5]]), cache));
  const c2 = lm.newCache(1, 8);
  lm.step(ids32([rows[1]!]), c2);
  lm.step(ids32([[2]]), c2);
  const want3 = arr(lm.step(ids32([[5]]), c2));
  assertClose(t, got3.slice(0, 13), want3, 1e-12, 1e-12, 'reordered row');
  cache.dispose();
  c2.dispose();
});

test('a left-padded batch generates exactly what each prompt generates alone (greedy, beam search, numReturnSequences)', (t) => {
  const lm = tinyLM();
  const rows = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]];
  const { ids, mask, width } = leftPad(rows, 0);
  const cases: GenerateOptions[] = [
    { maxNewTokens: 6 },
    { maxNewTokens: 6, numBeams: 3, eosTokenId: 11, lengthPenalty: 1.5 },
    { maxNewTokens: 5, numBeams: 3, numReturnSequences: 2, eosTokenId: 12, lengthPenalty: 0.5, earlyStopping: true },
  ];
  for (const o of cases) {
    const R = o.numReturnSequences ?? 1;
    const both = generate(lm, { inputIds: ids, attentionMask: mask }, o);
    const got = seqs(both);
    rows.forEach((r, b) => {
      const one = generate(lm, ids32([r]), o);
      seqs(one).forEach((want, i) => {
        const row = got[b * R + i]!;
        t.deepEqual(row.slice(0, width - r.length), new Array<number>(width - r.length).fill(0), 'pads kept');
        t.deepEqual(row.slice(width - r.length), want, `${JSON.stringify(o)} prompt ${b} seq ${i}`);
      });
      if (one.sequenceScores)
        assertClose(t, arr(both.sequenceScores!).slice(b * R, (b + 1) * R), arr(one.sequenceScores), 1e-9, 1e-9, 'scores');
    });
  }
  // an all-ones mask is no padding at all
  const full = ids32([[1, 2], [3, 4]]);
  t.deepEqual(rowsOf(generate(lm, { inputIds: full, attentionMask: ids32([[1, 1], [1, 1]]) }, { maxLength: 6 }).sequences),
    rowsOf(generate(lm, full, { maxLength: 6 }).sequences));
});

test('left padding after a soft prefix (BLIP-2) and in the BERT decoder with context equals each prompt alone', (t) => {
  const lm = tinyLM();
  const prefix = randn([2, 3, 16], { dtype: 'float64', seed: 4 });
  const rows = [[7, 8, 9], [10]];
  const { ids, mask, width } = leftPad(rows, 0);
  const both = seqs(generate(lm, { inputIds: ids, attentionMask: mask, prefix }, { maxNewTokens: 5 }));
  rows.forEach((r, b) => {
    const one = seqs(generate(lm, { inputIds: ids32([r]), prefix: slice(prefix, 0, b, b + 1) }, { maxNewTokens: 5 }))[0]!;
    t.deepEqual(both[b]!.slice(width - r.length), one, `prefix, prompt ${b}`);
  });
  const med = tinyMED();
  const img = randn([2, 5, 12], { dtype: 'float64', seed: 6, std: 2 });
  const mrows = [[1, 4, 5, 6], [1, 3]];
  const m = leftPad(mrows, 0);
  for (const o of [{ maxNewTokens: 5 }, { maxNewTokens: 5, numBeams: 2, eosTokenId: 2 }] as GenerateOptions[]) {
    const got = seqs(generate(med, { inputIds: m.ids, attentionMask: m.mask, context: img }, o));
    mrows.forEach((r, b) => {
      const one = seqs(generate(med, { inputIds: ids32([r]), context: slice(img, 0, b, b + 1) }, o))[0]!;
      t.deepEqual(got[b]!.slice(m.width - r.length), one, `MED ${JSON.stringify(o)} prompt ${b}`);
    });
  }
});

// ---- beam sampling ------------------------------------------------------------------------------

test('beam sampling: seeded (same seed, same output); manualSeed drives unseeded runs; numReturnSequences', (t) => {
  const lm = tinyLM();
  const prompt = ids32([[1], [2]]);
  const o: GenerateOptions = { maxLength: 9, numBeams: 3, doSample: true, topK: 0, temperature: 3, eosTokenId: 5 };
  const run = (x: GenerateOptions) => generate(lm, prompt, { ...o, ...x });
  const a = run({ seed: 4 });
  t.deepEqual(rowsOf(run({ seed: 4 }).sequences), rowsOf(a.sequences));
  t.deepEqual(arr(run({ seed: 4 }).sequenceScores!), arr(a.sequenceScores!));
  const others = [5, 6, 7].map((s) => rowsOf(run({ seed: s }).sequences).join('|'));
  t.true(others.some((x) => x !== rowsOf(a.sequences).join('|')), 'another seed gives another output');
  t.notDeepEqual(rowsOf(a.sequences), rowsOf(generate(lm, prompt, { ...o, doSample: false }).sequences), 'differs from beam search at temperature 3');
  manualSeed(99);
  const u = rowsOf(run({}).sequences);
  manualSeed(99);
  t.deepEqual(rowsOf(run({}).sequences), u);
  const r = run({ seed: 4, numReturnSequences: 3 });
  t.is(r.sequences.shape[0], 6);
  const sc = arr(r.sequenceScores!);
  t.true(sc[0]! >= sc[1]! && sc[1]! >= sc[2]! && sc[3]! >= sc[4]! && sc[4]! >= sc[5]!, 'best first');
  t.deepEqual(seqs(r)[0], seqs(a)[0], 'the first of each group is the numReturnSequences 1 result');
});

test('beam sampling as the temperature goes to 0 is beam search (scores scaled by 1 / temperature); topK 1 keeps the best 2 per beam', (t) => {
  const lm = tinyLM(7);
  const prompt = ids32([[1, 2], [3, 4], [5, 6]]);
  for (const o of [{ numBeams: 3, eosTokenId: 4, lengthPenalty: 1 }, { numBeams: 2, eosTokenId: 0, lengthPenalty: 2, earlyStopping: true }] as GenerateOptions[]) {
    const beam = generate(lm, prompt, { ...o, maxLength: 10 });
    const temp = 1e-9;
    const cold = generate(lm, prompt, { ...o, maxLength: 10, doSample: true, topK: 0, temperature: temp, seed: 1 });
    t.deepEqual(seqs(cold), seqs(beam), JSON.stringify(o));
    assertClose(t, arr(cold.sequenceScores!).map((s) => s * temp), arr(beam.sequenceScores!), 1e-6, 1e-9, 'scores');
  }
  // topK 1 with beams keeps 2 tokens per beam (HF's min_tokens_to_keep): every token is one of the two
  // most likely after its prefix, the second one too; and as 2 * numBeams candidates are drawn from
  // the 2 * numBeams kept, the seed cannot matter
  const lp = logprobsOf(lm);
  let second = 0;
  const k1 = (seed: number) => rowsOf(generate(lm, prompt, { maxLength: 7, numBeams: 2, numReturnSequences: 2, doSample: true, topK: 1, seed }).sequences);
  t.deepEqual(k1(2), k1(1));
  t.deepEqual(k1(3), k1(1));
  for (const row of k1(1)) {
    for (let at = 2; at < row.length; at++) {
      const l = lp(row.slice(0, at));
      const rank = l.filter((v) => v > l[row[at]!]!).length;
      t.true(rank <= 1, `token ${row[at]} after ${row.slice(0, at)} has rank ${rank}`);
      if (rank === 1) second++;
    }
  }
  t.true(second > 0, 'some second-best tokens');
});

// ---- bad input ----------------------------------------------------------------------------------

test('attentionMask and numReturnSequences: bad input is a clear TypeError/RangeError', (t) => {
  const setup = `const i32 = (a, sh) => vlm.tensor(Int32Array.from(a), sh, { dtype: 'int32' });
const lm = new vlm.models.CausalLM({ vocabSize: 9, maxPositions: 12, width: 8, layers: 1, heads: 2 });
const ids = i32([1, 2, 3, 4, 5, 6], [2, 3]);`;
  const { result, errors } = errorsInChild([
    ['right padding', 'vlm.generate(lm, { inputIds: ids, attentionMask: i32([1, 1, 0, 1, 1, 1], [2, 3]) })'],
    ['middle padding', 'vlm.generate(lm, { inputIds: ids, attentionMask: i32([0, 1, 0, 1, 1, 1], [2, 3]) })'],
    ['not 0/1', 'vlm.generate(lm, { inputIds: ids, attentionMask: i32([0, 1, 1, 1, 2, 1], [2, 3]) })'],
    ['all zeros', 'vlm.generate(lm, { inputIds: ids, attentionMask: i32([0, 1, 1, 0, 0, 0], [2, 3]) })'],
    ['mask shape', 'vlm.generate(lm, { inputIds: ids, attentionMask: i32([1, 1, 1, 1], [2, 2]) })'],
    ['mask no ids', 'vlm.generate(lm, { attentionMask: i32([1, 1], [2, 1]) }, { bosTokenId: 1 })'],
    ['mask type', 'vlm.generate(lm, { inputIds: ids, attentionMask: [[1, 1, 1], [1, 1, 1]] })'],
    ['return too many', 'vlm.generate(lm, ids, { numBeams: 3, numReturnSequences: 4 })'],
    ['return zero', 'vlm.generate(lm, ids, { numReturnSequences: 0 })'],
    ['return type', 'vlm.generate(lm, ids, { numReturnSequences: "2" })'],
    ['step mask dtype', 'lm.step(ids, lm.newCache(2, 4), { attentionMask: vlm.ones([2, 3]) })'],
    ['step mask values', 'lm.step(ids, lm.newCache(2, 4), { attentionMask: i32([1, 1, 1, 1, 3, 1], [2, 3]) })'],
    ['step mask shape', 'lm.step(ids, lm.newCache(2, 4), { attentionMask: i32([1, 1], [2, 1]) })'],
  ], setup);
  t.is(result.status, 0, result.stderr);
  const is = (label: string, name: string, message: string) => {
    t.is(errors[label]?.name, name, `${label}: ${errors[label]?.message}`);
    t.is(errors[label]?.message, message, label);
  };
  is('right padding', 'RangeError', "generate: expected left padding (0s only before a row's first 1) for inputs.attentionMask but received a 0 after a 1 at [0, 2] (right padding is not supported)");
  is('middle padding', 'RangeError', "generate: expected left padding (0s only before a row's first 1) for inputs.attentionMask but received a 0 after a 1 at [0, 2] (right padding is not supported)");
  is('not 0/1', 'RangeError', 'generate: expected 0s and 1s for inputs.attentionMask but received 2 at [1, 1]');
  is('all zeros', 'RangeError', 'generate: expected at least one 1 per row for inputs.attentionMask but received a row of 0s at row 1');
  is('mask shape', 'RangeError', 'generate: expected a tensor [2, 3] (the shape of inputs.inputIds) for inputs.attentionMask but received shape [2, 2]');
  is('mask no ids', 'TypeError', 'generate: expected inputs.inputIds with inputs.attentionMask but received no inputIds');
  is('mask type', 'TypeError', 'generate: expected a tensor or null for inputs.attentionMask but received an array of length 2');
  is('return too many', 'RangeError', 'generate: expected at most numBeams (3) for options.numReturnSequences (beam search returns its best hypotheses) but received 4');
  is('return zero', 'RangeError', 'generate: expected an integer in [1, 4096] for options.numReturnSequences but received the number 0');
  is('return type', 'TypeError', "generate: expected an integer for options.numReturnSequences but received the string '2'");
  is('step mask dtype', 'TypeError', 'CausalLM.step: expected a uint8 or int32 tensor [2, 3] of 0/1 (0 = padding) for options.attentionMask but received a float32 tensor');
  is('step mask values', 'RangeError', 'CausalLM.step: expected a uint8 or int32 tensor [2, 3] of 0/1 (0 = padding) for options.attentionMask but received 3 at [1, 1]');
  is('step mask shape', 'RangeError', 'CausalLM.step: expected a uint8 or int32 tensor [2, 3] of 0/1 (0 = padding) for options.attentionMask but received shape [2, 1]');
});
