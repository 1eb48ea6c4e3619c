// decode family, the user-facing loop: generate(model, inputs, options) for any decoder that
// runs one step over a KV cache (CausalLM, BertModel with its LM head, or your own tower
// implementing IncrementalDecoder), with Hugging Face's option names and defaults
// (transformers' GenerationConfig / generate() of the BLIP and BLIP-2 era).
//
// Per step: the model's logits [N, V] of the last position (N = batch * numBeams, or batch *
// numReturnSequences without beams) go through the HF logits processors natively
// (decodeProcessLogits: log_softmax first for beam search, repetition penalty, end-of-sequence
// ids suppressed below minLength; for beam sampling also the temperature / top-k / top-p
// warpers), then selection natively (decodeArgmax; decodeSample with temperature, top-k, top-p
// and the seeded Philox stream; decodeBeamCandidates: the 2 * numBeams best accumulated scores
// per sample, or for beam sampling 2 * numBeams drawn from their softmax without replacement).
// The control flow — finished samples, beam hypotheses with their length penalty and early
// stopping (HF's BeamSearchScorer / BeamHypotheses), sequences — stays here, in TypeScript.
//
// Speed: when the model is a Module, its 2-D float32 weights are registered for packing
// (native weightPackingBegin/End) for the duration of the call: a decode step's few-row
// products x W^T then use a copy of W reordered once into oneDNN's own layout instead of
// repacking W on every step. The copies (as large as those weights) are freed on return.
//
// Lengths count token ids (prompt included, soft prefix not), as HF for decoder-only models:
// maxLength bounds the returned sequence, minLength suppresses the end of sequence until the
// sequence has that many ids. A beam hypothesis ending in EOS is scored sum(logprobs) /
// len ** lengthPenalty with len its ids before the EOS (HF 4.x's BeamHypotheses.add).
//
// Left-padded prompts (inputs.attentionMask, HF's attention_mask, 0 = pad): the model's step
// gets the mask, so pads are never attended to and real tokens take positions from 0 after
// the pads (HF's cumsum(mask) - 1). Pads count in maxLength, minLength, the returned rows and
// the repetition penalty's history, as in HF; the beam length penalty counts ids without a
// sample's pads, so a padded batch ranks hypotheses as each prompt alone would.
//
// Beam sampling (doSample with numBeams > 1) is HF's sampled beam search (transformers >= 4.42,
// where beam_sample became beam search with do_sample): per beam the log-probabilities go
// through the processors and the warpers (divided by temperature, top-k, top-p with at least
// max(2, EOS ids + 1) tokens kept), the beam score is added, and the 2 * numBeams candidates of
// a sample are drawn from the softmax over its numBeams * V values without replacement
// (Gumbel-top-k on the Philox stream), then ranked by score. Beam scores, hypotheses and
// sequenceScores are sums of these warped (temperature-scaled) log-probabilities.
import { native } from '../native.js';
import { Tensor, wrap } from '../graph/tensor.js';
import { tidy } from '../graph/scope.js';
import { noGrad } from '../graph/autograd.js';
import { aTensor, describe, nextRandom, tensor } from '../graph/creation.js';
import { Module } from '../graph/module.js';
import { indexSelect } from '../graph/ops/gather.js';
import type { DecoderStepOptions } from '../graph/kv_cache.js';

/** What generate() needs from a cache: its filled length, an in-place row reorder, and dispose. */
export interface DecoderCache {
  readonly length: number;
  /** Row i becomes the old row index[i]; `cross: false` may skip the per-sample context states. */
  reorder(index: Tensor | ArrayLike<number>, options?: { cross?: boolean }): void;
  dispose(): void;
}

/** A decoder that runs one step over a cache (CausalLM, BertModel with lmHead). */
export interface IncrementalDecoder<C extends DecoderCache = DecoderCache> {
  /** A cache for `batch` rows and `maxLength` positions (soft prefix included). */
  newCache(batch: number, maxLength: number): C;
  /** The new ids int32 [B, T] (and, first step, prefix/context) -> logits [B, V] of the last new position. */
  step(ids: Tensor, cache: C, options?: DecoderStepOptions): Tensor;
}

export interface GenerateInputs {
  /** Prompt ids int32 [B, T] (HF's input_ids); without them each sequence starts with bosTokenId. */
  inputIds?: Tensor | null;
  /** Soft-prompt embeddings [B, P, width] before the prompt (BLIP-2 stage 2: projected queries). */
  prefix?: Tensor | null;
  /** Cross-attention context [B, Lc, crossWidth] (BLIP: image tokens; HF's encoder_hidden_states). */
  context?: Tensor | null;
  /** uint8 [B, Lc], 1 = attend (HF's encoder_attention_mask). */
  contextMask?: Tensor | null;
  /**
   * Left padding of inputIds: [B, T] of 0/1 (int32, uint8 or float), 0 = pad, only before a row's
   * first 1 (HF's attention_mask for batched prompts of different lengths). Pads are never attended
   * to and position ids start at 0 after them; default: no padding.
   */
  attentionMask?: Tensor | null;
  /** The batch size when nothing else gives it (only bosTokenId). */
  batchSize?: number;
}

export interface GenerateOptions {
  /** Longest sequence in ids, prompt included (default 20). */
  maxLength?: number;
  /** New ids at most (overrides maxLength: prompt length + maxNewTokens). */
  maxNewTokens?: number | null;
  /** The EOS ids are suppressed until the sequence has this many ids (default 0). */
  minLength?: number;
  /** Beam search with this many beams when > 1 (default 1). */
  numBeams?: number;
  /**
   * Sequences returned per input (default 1), grouped per input (rows b * n + i). Greedy and
   * sampling run each input that many times; beam search returns the best that many hypotheses
   * of each input, best first (at most numBeams).
   */
  numReturnSequences?: number;
  /** Sample instead of taking the arg-max (default false); with numBeams > 1, beam sampling. */
  doSample?: boolean;
  /** Sampling (and beam sampling): keep the k most likely tokens (default 50, as HF; 0 = all). */
  topK?: number;
  /** Sampling: keep the smallest top set of mass >= topP (default 1 = all). */
  topP?: number;
  /** Sampling: logits are divided by it (default 1). */
  temperature?: number;
  /** HF's repetition penalty on every id already in the sequence (default 1 = off). */
  repetitionPenalty?: number;
  /** Beam search: hypothesis score = sum(logprobs) / length ** lengthPenalty (default 1). */
  lengthPenalty?: number;
  /** Beam search: stop a sample once numBeams hypotheses are finished (true), HF's heuristic (false, default), or 'never'. */
  earlyStopping?: boolean | 'never';
  /** End-of-sequence id(s) (default none). */
  eosTokenId?: number | readonly number[] | null;
  /** Fills finished sequences (default: the first EOS id, else 0). */
  padTokenId?: number | null;
  /** Starts sequences when there is no prompt. */
  bosTokenId?: number | null;
  /** Sampling seed: the same seed gives the same samples; default: the global generator (manualSeed). */
  seed?: number | null;
}

export interface GenerateOutput {
  /** int32 [B * numReturnSequences, L]: prompt then generated ids, padded with padTokenId. */
  sequences: Tensor;
  /** Ids per sequence up to and including its EOS (the rest is padding; a prompt's left pads count). */
  lengths: number[];
  /** Beam search: each returned hypothesis' length-penalised score (float64 [B * numReturnSequences]); null otherwise. */
  sequenceScores: Tensor | null;
}

const OP = 'generate';

interface Parsed {
  maxLength: number | null;
  maxNewTokens: number | null;
  minLength: number;
  numBeams: number;
  numReturnSequences: number;
  doSample: boolean;
  topK: number;
  topP: number;
  temperature: number;
  repetitionPenalty: number;
  lengthPenalty: number;
  earlyStopping: boolean | 'never';
  eos: number[];
  pad: number;
  bos: number | null;
  seed: number | null;
}

function int(name: string, v: unknown, min: number, max = 2 ** 31 - 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw new TypeError(`${OP}: expected an integer for options.${name} but received ${describe(v)}`);
  if (v < min || v > max) throw new RangeError(`${OP}: expected an integer in [${min}, ${max}] for options.${name} but received ${describe(v)}`);
  return v;
}

function positive(name: string, v: unknown): number {
  if (typeof v !== 'number') throw new TypeError(`${OP}: expected a number for options.${name} but received ${describe(v)}`);
  if (!(Number.isFinite(v) && v > 0)) throw new RangeError(`${OP}: expected a finite number > 0 for options.${name} but received ${describe(v)}`);
  return v;
}

const KNOWN = new Set(['maxLength', 'maxNewTokens', 'minLength', 'numBeams', 'numReturnSequences', 'doSample', 'topK', 'topP', 'temperature',
  'repetitionPenalty', 'lengthPenalty', 'earlyStopping', 'eosTokenId', 'padTokenId', 'bosTokenId', 'seed']);

function parseOptions(options: unknown): Parsed {
  if (options === null || typeof options !== 'object' || Array.isArray(options))
    throw new TypeError(`${OP}: expected an options object for options but received ${describe(options)}`);
  const o = options as GenerateOptions;
  for (const k of Object.keys(o))
    if (!KNOWN.has(k)) throw new TypeError(`${OP}: expected one of ${[...KNOWN].join(', ')} for an option name but received '${k}'`);
  const has = (k: keyof GenerateOptions) => o[k] !== undefined && o[k] !== null;
  let eos: number[] = [];
  if (has('eosTokenId')) {
    const e = o.eosTokenId!;
    eos = (typeof e === 'number' ? [e] : Array.isArray(e) ? [...e] : null) ?? (() => {
      throw new TypeError(`${OP}: expected an id or an array of ids for options.eosTokenId but received ${describe(e)}`);
    })();
    eos.forEach((x, i) => int(`eosTokenId${typeof e === 'number' ? '' : `[${i}]`}`, x, 0));
  }
  const doSample = o.doSample ?? false;
  if (typeof doSample !== 'boolean') throw new TypeError(`${OP}: expected a boolean for options.doSample but received ${describe(doSample)}`);
  const es = o.earlyStopping ?? false;
  if (es !== true && es !== false && es !== 'never')
    throw new TypeError(`${OP}: expected true, false or 'never' for options.earlyStopping but received ${describe(es)}`);
  const topP = o.topP ?? 1;
  if (typeof topP !== 'number') throw new TypeError(`${OP}: expected a number for options.topP but received ${describe(topP)}`);
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`${OP}: expected a number in (0, 1] for options.topP but received ${describe(topP)}`);
  const lp = o.lengthPenalty ?? 1;
  if (typeof lp !== 'number') throw new TypeError(`${OP}: expected a number for options.lengthPenalty but received ${describe(lp)}`);
  if (!Number.isFinite(lp)) throw new RangeError(`${OP}: expected a finite number for options.lengthPenalty but received ${describe(lp)}`);
  const p: Parsed = {
    maxLength: has('maxLength') ? int('maxLength', o.maxLength, 1) : null,
    maxNewTokens: has('maxNewTokens') ? int('maxNewTokens', o.maxNewTokens, 1) : null,
    minLength: has('minLength') ? int('minLength', o.minLength, 0) : 0,
    numBeams: has('numBeams') ? int('numBeams', o.numBeams, 1, 4096) : 1,
    numReturnSequences: has('numReturnSequences') ? int('numReturnSequences', o.numReturnSequences, 1, 4096) : 1,
    doSample,
    topK: has('topK') ? int('topK', o.topK, 0) : 50,
    topP,
    temperature: has('temperature') ? positive('temperature', o.temperature) : 1,
    repetitionPenalty: has('repetitionPenalty') ? positive('repetitionPenalty', o.repetitionPenalty) : 1,
    lengthPenalty: lp,
    earlyStopping: es,
    eos,
    pad: has('padTokenId') ? int('padTokenId', o.padTokenId, 0) : eos[0] ?? 0,
    bos: has('bosTokenId') ? int('bosTokenId', o.bosTokenId, 0) : null,
    seed: has('seed') ? int('seed', o.seed, 0, Number.MAX_SAFE_INTEGER) : null,
  };
  if (p.numBeams > 1 && p.numReturnSequences > p.numBeams)
    throw new RangeError(`${OP}: expected at most numBeams (${p.numBeams}) for options.numReturnSequences (beam search returns its best hypotheses) but received ${p.numReturnSequences}`);
  return p;
}

interface Inputs {
  ids: Tensor | null;
  prefix: Tensor | null;
  context: Tensor | null;
  contextMask: Tensor | null;
  attentionMask: Tensor | null;
  B: number;
}

function parseInputs(inputs: unknown): Inputs {
  if (inputs instanceof Tensor) inputs = { inputIds: inputs };
  if (inputs === null || inputs === undefined) inputs = {};
  if (typeof inputs !== 'object' || Array.isArray(inputs))
    throw new TypeError(`${OP}: expected a tensor of prompt ids or an inputs object for inputs but received ${describe(inputs)}`);
  const i = inputs as GenerateInputs;
  const opt = (name: keyof GenerateInputs): Tensor | null => {
    const v = i[name];
    if (v === undefined || v === null) return null;
    if (!(v instanceof Tensor)) throw new TypeError(`${OP}: expected a tensor or null for inputs.${name} but received ${describe(v)}`);
    if (v.disposed) throw new TypeError(`${OP}: expected a live tensor for inputs.${name} but received a disposed tensor`);
    return v;
  };
  const ids = opt('inputIds'), prefix = opt('prefix'), context = opt('context'), contextMask = opt('contextMask');
  const attentionMask = opt('attentionMask');
  if (ids && (ids.dtype !== 'int32' || ids.ndim !== 2))
    throw new TypeError(`${OP}: expected an int32 tensor [batch, length] for inputs.inputIds but received ${aTensor(ids.dtype)} of shape [${ids.shape.join(', ')}]`);
  if (prefix && prefix.ndim !== 3) throw new RangeError(`${OP}: expected a tensor [batch, length, width] for inputs.prefix but received shape [${prefix.shape.join(', ')}]`);
  if (context && context.ndim !== 3) throw new RangeError(`${OP}: expected a tensor [batch, length, width] for inputs.context but received shape [${context.shape.join(', ')}]`);
  if (contextMask && !context) throw new TypeError(`${OP}: expected inputs.context with inputs.contextMask but received no context`);
  if (attentionMask && !ids) throw new TypeError(`${OP}: expected inputs.inputIds with inputs.attentionMask but received no inputIds`);
  if (attentionMask && ids && (attentionMask.ndim !== 2 || attentionMask.shape[0] !== ids.shape[0] || attentionMask.shape[1] !== ids.shape[1]))
    throw new RangeError(`${OP}: expected a tensor [${ids.shape.join(', ')}] (the shape of inputs.inputIds) for inputs.attentionMask but received shape [${attentionMask.shape.join(', ')}]`);
  let B: number | null = null;
  const from: [string, number][] = [];
  for (const [name, t] of [['inputIds', ids], ['prefix', prefix], ['context', context], ['contextMask', contextMask]] as const)
    if (t) from.push([name, t.shape[0]!]);
  if (i.batchSize !== undefined && i.batchSize !== null) {
    if (typeof i.batchSize !== 'number' || !Number.isInteger(i.batchSize) || i.batchSize < 1)
      throw new RangeError(`${OP}: expected an integer >= 1 for inputs.batchSize but received ${describe(i.batchSize)}`);
    from.push(['batchSize', i.batchSize]);
  }
  for (const [name, b] of from) {
    if (B === null) B = b;
    else if (b !== B) throw new RangeError(`${OP}: expected a batch of ${B} (that of inputs.${from[0]![0]}) for inputs.${name} but received ${b}`);
  }
  if (B === null) B = 1;
  if (B < 1) throw new RangeError(`${OP}: expected a batch of at least 1 but received ${B}`);
  return { ids, prefix, context, contextMask, attentionMask, B };
}

/** The 0/1 left padding of the prompt [B, T] (null when nothing is padding) and each row's pad count. */
function parsePadding(mask: Tensor | null, B: number, T: number): { mask: Uint8Array | null; pads: Int32Array } {
  const pads = new Int32Array(B);
  if (mask === null) return { mask: null, pads };
  const a = mask.toArray();
  const out = new Uint8Array(B * T);
  for (let b = 0; b < B; b++) {
    let seen = false;
    for (let t = 0; t < T; t++) {
      const x = a[b * T + t]!;
      if (x !== 0 && x !== 1)
        throw new RangeError(`${OP}: expected 0s and 1s for inputs.attentionMask but received ${x} at [${b}, ${t}]`);
      if (x === 1) seen = true;
      else if (seen)
        throw new RangeError(`${OP}: expected left padding (0s only before a row's first 1) for inputs.attentionMask but received a 0 after a 1 at [${b}, ${t}] (right padding is not supported)`);
      else pads[b]!++;
      out[b * T + t] = x;
    }
    if (!seen) throw new RangeError(`${OP}: expected at least one 1 per row for inputs.attentionMask but received a row of 0s at row ${b}`);
  }
  return { mask: pads.some((p) => p > 0) ? out : null, pads };
}

/** One sample's finished beam hypotheses (HF BeamHypotheses). */
class Hypotheses {
  readonly beams: { score: number; ids: Int32Array }[] = [];
  worst = 1e9;
  /** `pads`: the sample's left padding, not counted in lengths. */
  constructor(readonly numBeams: number, readonly lengthPenalty: number, readonly earlyStopping: boolean | 'never', readonly maxLength: number,
    readonly pads = 0) {}

  add(ids: Int32Array, sumLogprobs: number): void {
    const score = sumLogprobs / (ids.length - this.pads) ** this.lengthPenalty;
    if (this.beams.length < this.numBeams || score > this.worst) {
      this.beams.push({ score, ids });
      if (this.beams.length > this.numBeams) {
        const order = this.beams.map((b, i) => [b.score, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        this.beams.splice(order[0]![1], 1);
        this.worst = order[1]![0];
      } else this.worst = Math.min(score, this.worst);
    }
  }

  isDone(bestSumLogprobs: number, curLen: number): boolean {
    if (this.beams.length < this.numBeams) return false;
    if (this.earlyStopping === true) return true;
    const len = (this.earlyStopping === 'never' && this.lengthPenalty > 0 ? this.maxLength : curLen) - this.pads;
    return this.worst >= bestSumLogprobs / len ** this.lengthPenalty;
  }

  /** The best `count` hypotheses (or fewer), best first; of equal scores the last added first (HF's sort then pop). */
  best(count: number): { score: number; ids: Int32Array }[] {
    const order = this.beams.map((b, i) => [b.score, i] as const).sort((a, b) => b[0] - a[0] || b[1] - a[1]);
    return order.slice(0, count).map(([, i]) => this.beams[i]!);
  }
}

/** Rows b * K + k <- b: each sample repeated for its beams (torch.repeat_interleave on dim 0). */
function expandRows(t: Tensor | null, K: number): Tensor | null {
  if (t === null || K === 1) return t;
  const B = t.shape[0]!;
  const idx = tensor(Int32Array.from({ length: B * K }, (_, n) => Math.floor(n / K)), [B * K], { dtype: 'int32' });
  const out = indexSelect(t, 0, idx);
  idx.dispose();
  return out;
}

/**
 * Generates sequences from `model` (greedy, sampling, beam search or beam sampling as HF's generate()).
 * inputs: the prompt ids int32 [B, T] or { inputIds, attentionMask, prefix, context, contextMask, batchSize }.
 * Runs without gradients and in eval mode (the model's training flags are restored after).
 */
export function generate(model: IncrementalDecoder, inputs: GenerateInputs | Tensor | null = null, options: GenerateOptions = {}): GenerateOutput {
  if (model === null || typeof model !== 'object' || typeof (model as IncrementalDecoder).newCache !== 'function' || typeof (model as IncrementalDecoder).step !== 'function')
    throw new TypeError(`${OP}: expected a decoder with newCache() and step() (e.g. CausalLM, BertModel) for model but received ${describe(model)}`);
  const o = parseOptions(options);
  const inp = parseInputs(inputs);
  const { B } = inp;
  const P = inp.prefix ? inp.prefix.shape[1]! : 0;
  let T = inp.ids ? inp.ids.shape[1]! : 0;
  let prompt: Int32Array;
  if (inp.ids && T > 0) prompt = inp.ids.toArray() as Int32Array;
  else if (o.bos !== null) {
    T = 1;
    prompt = new Int32Array(B).fill(o.bos);
  } else if (P > 0) {
    T = 0;
    prompt = new Int32Array(0);
  } else throw new TypeError(`${OP}: expected inputs.inputIds, inputs.prefix or options.bosTokenId to start from but received none`);
  const maxLength = o.maxNewTokens !== null ? T + o.maxNewTokens : o.maxLength ?? 20;
  if (T >= maxLength)
    throw new RangeError(`${OP}: expected options.maxLength above the prompt length (${T}) but received ${maxLength}`);
  const padding = parsePadding(inp.attentionMask, B, T);

  const saved = model instanceof Module ? [...model.namedModules()].map(([, m]) => [m, m.training] as const) : [];
  if (model instanceof Module) model.eval();
  const made: Tensor[] = [];
  const K = o.numBeams > 1 ? o.numBeams : o.numReturnSequences;  // rows per input
  try {
    // The model's weights do not change while it generates: few-row products reuse a
    // packed copy of each (half the time of a decode step's vocabulary projection).
    if (model instanceof Module) native.weightPackingBegin(model.parameters().map((p) => p.handle));
    return noGrad(() => {
      const expand = (t: Tensor | null) => {
        const e = expandRows(t, K);
        if (e && e !== t) made.push(e);
        return e;
      };
      const first: DecoderStepOptions = {
        prefix: expand(inp.prefix), context: expand(inp.context), contextMask: expand(inp.contextMask),
      };
      if (padding.mask) {
        const m = padding.mask, rows = new Uint8Array(B * K * T);
        for (let n = 0; n < B * K; n++) rows.set(m.subarray(Math.floor(n / K) * T, Math.floor(n / K) * T + T), n * T);
        made.push(first.attentionMask = tensor(rows, [B * K, T], { dtype: 'uint8' }));
      }
      const start: Start = { B, K, T, P, prompt, pads: padding.pads, maxLength };
      return o.numBeams > 1 ? beamSearch(model, o, start, first) : greedyOrSample(model, o, start, first);
    });
  } finally {
    if (model instanceof Module) native.weightPackingEnd();
    for (const t of made) t.dispose();
    for (const [m, training] of saved) m.training = training;
  }
}

/** Where a generation starts: B inputs of T prompt ids (after P soft-prefix positions), K rows each. */
interface Start {
  B: number;
  K: number;
  T: number;
  P: number;
  prompt: Int32Array;  // [B, T]
  pads: Int32Array;    // [B]: left pads of each prompt
  maxLength: number;
}

interface Loop {
  N: number;
  ML: number;
  seq: Int32Array;  // [N, ML]
  curLen: number;
}

/** Repeats each prompt row K times into seq [N, ML]. */
function initSeq({ prompt, B, K, T, maxLength: ML }: Start): Loop {
  const N = B * K, seq = new Int32Array(N * ML);
  for (let n = 0; n < N; n++) seq.set(prompt.subarray(Math.floor(n / K) * T, Math.floor(n / K) * T + T), n * ML);
  return { N, ML, seq, curLen: T };
}

/** The ids fed at the first step [N, T] or later [N, 1]. */
function stepIds(l: Loop, first: boolean, T: number): Tensor {
  const len = first ? T : 1, from = first ? 0 : l.curLen - 1;
  const a = new Int32Array(l.N * len);
  for (let n = 0; n < l.N; n++) a.set(l.seq.subarray(n * l.ML + from, n * l.ML + from + len), n * len);
  return tensor(a, [l.N, len], { dtype: 'int32' });
}

/** The model's logits of one step, checked, then HF's logits processors (native). */
function stepScores(model: IncrementalDecoder, cache: DecoderCache, l: Loop, o: Parsed, ids: Tensor,
  stepOpts: DecoderStepOptions, logSoftmax: boolean, warp = false): Tensor {
  const logits = model.step(ids, cache, stepOpts);
  if (!(logits instanceof Tensor) || logits.ndim !== 2 || logits.shape[0] !== l.N || (logits.dtype !== 'float32' && logits.dtype !== 'float64'))
    throw new TypeError(`${OP}: expected model.step to return float logits [${l.N}, vocab] but received ${logits instanceof Tensor ? `${aTensor(logits.dtype)} of shape [${logits.shape.join(', ')}]` : describe(logits)}`);
  const V = logits.shape[1]!;
  for (const [name, id] of [...o.eos.map((e) => ['eosTokenId', e] as const), ['padTokenId', o.pad] as const])
    if (id >= V) throw new RangeError(`${OP}: expected ids below the vocabulary size (${V}) for options.${name} but received ${id}`);
  let history: Tensor | null = null;
  if (o.repetitionPenalty !== 1 && l.curLen > 0) {
    const h = new Int32Array(l.N * l.curLen);
    for (let n = 0; n < l.N; n++) h.set(l.seq.subarray(n * l.ML, n * l.ML + l.curLen), n * l.curLen);
    history = tensor(h, [l.N, l.curLen], { dtype: 'int32' });
  }
  const suppress = l.curLen < o.minLength && o.eos.length ? tensor(Int32Array.from(o.eos), [o.eos.length], { dtype: 'int32' }) : null;
  if (!logSoftmax && history === null && suppress === null && !warp) return logits;
  return wrap(native.decodeProcessLogits(logits.handle, {
    logSoftmax, history: history?.handle ?? null, repetitionPenalty: o.repetitionPenalty, suppress: suppress?.handle ?? null,
    // HF keeps at least one token more than there are EOS ids (2 at least) when sampling beams
    warp: warp ? { temperature: o.temperature, topK: o.topK, topP: o.topP, minKeep: Math.max(2, o.eos.length + 1) } : null,
  }));
}

function greedyOrSample(model: IncrementalDecoder, o: Parsed, start: Start, first: DecoderStepOptions): GenerateOutput {
  const { T, P, maxLength } = start;
  const l = initSeq(start);
  const cache = model.newCache(l.N, P + maxLength - 1);
  const eos = new Set(o.eos);
  const unfinished = new Uint8Array(l.N).fill(1);
  try {
    for (let step = 0; ; step++) {
      const tokens = tidy(() => {
        const scores = stepScores(model, cache, l, o, stepIds(l, step === 0, T), step === 0 ? first : {}, false);
        let picked: Tensor;
        if (o.doSample) {
          const [seed, offset] = o.seed !== null ? [o.seed, step * l.N] : nextRandom(l.N);
          picked = wrap(native.decodeSample(scores.handle, { temperature: o.temperature, topK: o.topK, topP: o.topP, minKeep: 1, seed, offset }));
        } else picked = wrap(native.decodeArgmax(scores.handle));
        return picked.toArray() as Int32Array;
      });
      let alive = 0;
      for (let n = 0; n < l.N; n++) {
        const tok = unfinished[n] ? tokens[n]! : o.pad;
        l.seq[n * l.ML + l.curLen] = tok;
        if (unfinished[n] && eos.has(tok)) unfinished[n] = 0;
        alive += unfinished[n]!;
      }
      l.curLen++;
      if (alive === 0 || l.curLen >= maxLength) break;
    }
  } finally {
    cache.dispose();
  }
  const lengths = Array.from({ length: l.N }, (_, n) => {
    for (let t = T; t < l.curLen; t++) if (eos.has(l.seq[n * l.ML + t]!)) return t + 1;
    return l.curLen;
  });
  return { sequences: compact(l, l.curLen, o.pad, lengths), lengths, sequenceScores: null };
}

/** seq rows cut to `width` columns, positions past each length set to pad. */
function compact(l: Loop, width: number, pad: number, lengths: number[]): Tensor {
  const out = new Int32Array(l.N * width).fill(pad);
  for (let n = 0; n < l.N; n++) out.set(l.seq.subarray(n * l.ML, n * l.ML + lengths[n]!), n * width);
  return tensor(out, [l.N, width], { dtype: 'int32' });
}

function beamSearch(model: IncrementalDecoder, o: Parsed, start: Start, first: DecoderStepOptions): GenerateOutput {
  const { B, T, P, maxLength } = start;
  const K = o.numBeams, C = 2 * K, R = o.numReturnSequences;
  const l = initSeq(start);
  const N = l.N;
  const cache = model.newCache(N, P + maxLength - 1);
  const eos = new Set(o.eos);
  const hyps = Array.from({ length: B }, (_, b) => new Hypotheses(K, o.lengthPenalty, o.earlyStopping, maxLength, start.pads[b]));
  const done = new Array<boolean>(B).fill(false);
  // only the first beam of each sample is live at the start (HF uses -1e9; -inf keeps the others out for good)
  let beamScores = Float64Array.from({ length: N }, (_, n) => (n % K === 0 ? 0 : -Infinity));
  try {
    for (let step = 0; ; step++) {
      const cand = tidy(() => {
        const scores = stepScores(model, cache, l, o, stepIds(l, step === 0, T), step === 0 ? first : {}, true, o.doSample);
        const bs = tensor(beamScores, [N], { dtype: 'float64' });
        const V = scores.shape[1]!, count = Math.min(C, K * V);
        let sample: { seed: number; offset: number } | null = null;
        if (o.doSample) {  // N * V Philox elements per step: one per (row, token)
          const [seed, offset] = o.seed !== null ? [o.seed, step * N * V] : nextRandom(N * V);
          sample = { seed, offset };
        }
        const r = native.decodeBeamCandidates(scores.handle, bs.handle, K, count, sample);
        const [s, t, b] = [wrap(r.scores), wrap(r.tokens), wrap(r.beams)];
        return { count, scores: s.toArray() as Float64Array, tokens: t.toArray() as Int32Array, beams: b.toArray() as Int32Array };
      });
      const nextScores = new Float64Array(N), nextTokens = new Int32Array(N), nextIndex = new Int32Array(N);
      for (let b = 0; b < B; b++) {
        if (done[b]) {  // a finished sample keeps padding its beams
          for (let k = 0; k < K; k++) {
            nextScores[b * K + k] = 0;
            nextTokens[b * K + k] = o.pad;
            nextIndex[b * K + k] = b * K + k;
          }
          continue;
        }
        let filled = 0;
        for (let r = 0; r < cand.count && filled < K; r++) {
          const s = cand.scores[b * cand.count + r]!;
          if (s === -Infinity) break;  // sorted: only dead candidates follow
          const tok = cand.tokens[b * cand.count + r]!, row = b * K + cand.beams[b * cand.count + r]!;
          if (eos.has(tok)) {
            if (r >= K) continue;  // an EOS outside the top numBeams is not a hypothesis (HF)
            hyps[b]!.add(l.seq.slice(row * l.ML, row * l.ML + l.curLen), s);
          } else {
            nextScores[b * K + filled] = s;
            nextTokens[b * K + filled] = tok;
            nextIndex[b * K + filled] = row;
            filled++;
          }
        }
        for (; filled < K; filled++) {  // no live candidate left: a dead beam
          nextScores[b * K + filled] = -Infinity;
          nextTokens[b * K + filled] = o.pad;
          nextIndex[b * K + filled] = b * K;
        }
        done[b] = hyps[b]!.isDone(cand.scores[b * cand.count]!, l.curLen);
      }
      // reorder the sequences and the cache to the chosen beams, then append their tokens
      let identity = true;
      for (let n = 0; n < N; n++) if (nextIndex[n] !== n) identity = false;
      if (!identity) {
        const seq = new Int32Array(N * l.ML);
        for (let n = 0; n < N; n++) seq.set(l.seq.subarray(nextIndex[n]! * l.ML, nextIndex[n]! * l.ML + l.curLen), n * l.ML);
        l.seq = seq;
        cache.reorder(nextIndex, { cross: false });  // beams of a sample share its context rows
      }
      for (let n = 0; n < N; n++) l.seq[n * l.ML + l.curLen] = nextTokens[n]!;
      beamScores = nextScores;
      l.curLen++;
      if (done.every(Boolean) || l.curLen >= maxLength) break;
    }
  } finally {
    cache.dispose();
  }
  // finalize: open beams of unfinished samples become hypotheses; the best R per sample are returned
  const best: { score: number; ids: Int32Array }[] = [];
  for (let b = 0; b < B; b++) {
    if (!done[b])
      for (let k = 0; k < K; k++) {
        const n = b * K + k;
        if (beamScores[n] !== -Infinity) hyps[b]!.add(l.seq.slice(n * l.ML, n * l.ML + l.curLen), beamScores[n]!);
      }
    const top = hyps[b]!.best(R);
    while (top.length < R) top.push({ score: -Infinity, ids: l.seq.slice(b * K * l.ML, b * K * l.ML + l.curLen) });  // no live beam left
    best.push(...top);
  }
  const lengths = best.map((h) => h.ids.length + (h.ids.length < maxLength && o.eos.length ? 1 : 0));
  const width = Math.max(...lengths);
  const out = new Int32Array(best.length * width).fill(o.pad);
  best.forEach((h, n) => {
    out.set(h.ids, n * width);
    if (h.ids.length < lengths[n]!) out[n * width + h.ids.length] = o.eos[0]!;
  });
  return {
    sequences: tensor(out, [best.length, width], { dtype: 'int32' }),
    lengths,
    sequenceScores: tensor(Float64Array.from(best, (h) => h.score), [best.length], { dtype: 'float64' }),
  };
}
