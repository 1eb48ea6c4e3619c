// bench/decode: KV-cached decoding (decode family) on BLIP's captioner shape — a 6-layer,
// width-256 BERT/MED decoder (4 heads, MLP 1024, BERT's 30,524-token vocabulary) with
// cross-attention to 64 image tokens in every layer; batch 16, one [BOS] then 32 new tokens
// (no EOS, so every sequence runs to the end). Tokens/s with the cache (vlm.generate) against
// full recomputation (the same generate() loop driving a decoder that re-runs the whole
// forward over every position at each step), greedy and beam 3, on 1 and 2 threads; and
// PyTorch's cached greedy decoding of the same decoder (bench/decode_torch.py) side by side.
// Tokens/s counts the batch's generated tokens (16 x 32), for beam search too.
//   node --import tsx bench/decode.ts [--threads 1,2] [--batch 16] [--new 32] [--no-full] [--no-torch]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../ts/native.js';
import { Tensor } from '../ts/graph/tensor.js';
import { randn, tensor } from '../ts/graph/creation.js';
import { noGrad } from '../ts/graph/autograd.js';
import { tidy } from '../ts/graph/scope.js';
import { select } from '../ts/graph/ops/views.js';
import { BertModel } from '../ts/models/bert.js';
import { generate, type DecoderCache, type IncrementalDecoder } from '../ts/models/generate.js';
import type { DecoderStepOptions } from '../ts/graph/kv_cache.js';
import { benchDir, printTable, runTorch, timeit, writeResult } from './common.js';

const argv = process.argv.slice(2);
const flag = (name: string, def: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : def;
};
const threads = flag('threads', '1,2').split(',').map(Number);
const B = Number(flag('batch', '16')), NEW = Number(flag('new', '32'));
const full = !argv.includes('--no-full'), withTorch = !argv.includes('--no-torch');
const CFG = { vocabSize: 30524, hidden: 256, layers: 6, heads: 4, intermediate: 1024, maxPositions: 64, imageTokens: 64 };

const med = new BertModel({
  vocabSize: CFG.vocabSize, hidden: CFG.hidden, layers: CFG.layers, heads: CFG.heads, intermediate: CFG.intermediate,
  maxPositions: CFG.maxPositions, crossAttentionEvery: 1, crossWidth: CFG.hidden, lmHead: true, pooler: false, seed: 0,
}).eval();
const image = randn([B, CFG.imageTokens, CFG.hidden], { seed: 1 });
const bos = tensor(new Int32Array(B).fill(101), [B, 1], { dtype: 'int32' });

/** A cache that keeps only the ids (and the context): each step re-runs the full forward. */
class IdsCache implements DecoderCache {
  ids: Int32Array[];
  context: Tensor | null = null;
  constructor(readonly batch: number) { this.ids = Array.from({ length: batch }, () => new Int32Array(0)); }
  get length(): number { return this.ids[0]!.length; }
  reorder(index: ArrayLike<number> | Tensor): void {
    const idx = index instanceof Tensor ? Array.from(index.toArray()) : Array.from(index);
    this.ids = idx.map((i) => this.ids[i]!);
  }
  dispose(): void { /* nothing native */ }
}
const fullRecompute: IncrementalDecoder<IdsCache> = {
  newCache: (batch) => new IdsCache(batch),
  step(ids: Tensor, cache: IdsCache, o: DecoderStepOptions = {}): Tensor {
    if (o.context) cache.context = o.context;
    const a = ids.toArray() as Int32Array, T = ids.shape[1]!;
    cache.ids = cache.ids.map((row, n) => Int32Array.from([...row, ...a.subarray(n * T, n * T + T)]));
    const L = cache.length;
    const all = tensor(Int32Array.from(cache.ids.flatMap((r) => Array.from(r))), [cache.batch, L], { dtype: 'int32' });
    return noGrad(() => {
      const h = med.forward(all, { mode: 'decoder', encoderHiddenStates: cache.context }).hidden;
      return med.lmHead!.logits(select(h, 1, L - 1));
    });
  },
};

type Row = (string | number)[];
const rows: Row[] = [];
const data: Record<string, unknown>[] = [];
const tokens = B * NEW;

function run(model: IncrementalDecoder<any>, beams: number): void {
  tidy(() => {
    generate(model, { inputIds: bos, context: image }, { maxNewTokens: NEW, numBeams: beams });
    return null;
  });
}

for (const nt of threads) {
  native.setNumThreads(nt);
  for (const beams of [1, 3]) {
    const cached = timeit(() => run(med, beams), { warmup: 1, repeats: 3 });
    const rec = full ? timeit(() => run(fullRecompute, beams), { warmup: 0, repeats: 1 }) : null;
    const mode = beams === 1 ? 'greedy' : `beam ${beams}`;
    const tc = tokens / cached.median, tf = rec ? tokens / rec.median : NaN;
    rows.push([mode, nt, cached.median * 1e3, tc, rec ? rec.median * 1e3 : NaN, tf, rec ? tc / tf : NaN]);
    data.push({ mode, threads: nt, cachedSeconds: cached.median, cachedTokensPerSecond: tc, fullSeconds: rec?.median ?? null, fullTokensPerSecond: rec ? tf : null });
    console.log(`${mode}, ${nt} thread(s): cached ${tc.toFixed(0)} tokens/s${rec ? `, full recomputation ${tf.toFixed(0)} tokens/s` : ''}`);
  }
}

const title = `vlm.generate on a 6-layer width-256 MED decoder (vocab ${CFG.vocabSize}, cross-attention to ${CFG.imageTokens} image tokens), batch ${B}, ${NEW} new tokens`;
const columns = ['mode', 'threads', 'cached ms', 'cached tokens/s', 'full ms', 'full tokens/s', 'speedup'];
printTable(title, columns, rows);
const tables = [{ title, columns, rows }];

let torch: any = null;
if (withTorch) {
  const script = `ARGS = ${JSON.stringify({ ...CFG, batch: B, new: NEW, threads, repeats: 3 })}\n` + readFileSync(join(benchDir, 'decode_torch.py'), 'utf8');
  torch = runTorch(script);
  if (torch) {
    const trows: Row[] = torch.results.map((r: any) => {
      const ours = data.find((d) => d.mode === 'greedy' && d.threads === r.threads)?.cachedTokensPerSecond as number | undefined;
      return [`PyTorch ${torch.torch} cached greedy`, r.threads, r.cached_s * 1e3, tokens / r.cached_s,
        r.full_s === null ? NaN : tokens / r.full_s, ours ?? NaN, ours ? ours / (tokens / r.cached_s) : NaN];
    });
    const ttitle = 'PyTorch (bench/decode_torch.py, same decoder, a concatenating KV cache) vs vlmkit, greedy';
    const tcols = ['path', 'threads', 'torch cached ms', 'torch cached tokens/s', 'torch full tokens/s', 'vlmkit cached tokens/s', 'vlmkit / torch'];
    printTable(ttitle, tcols, trows);
    tables.push({ title: ttitle, columns: tcols, rows: trows });
  }
}

writeResult('decode', { config: { ...CFG, batch: B, newTokens: NEW }, results: data, torch, tables });
