// Loads the addon and declares the whole raw native surface as one interface.
// Everything here is unchecked on the TypeScript side: the binding validates
// every argument itself (native/binding/args.h) and throws TypeError/RangeError.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export type DType = 'float32' | 'float64' | 'int32' | 'uint8';
export type Device = 'cpu' | 'cuda';

/** The JS handle of a native tensor (native/binding/tensor_wrap.h). */
export interface NativeTensor {
  readonly shape: number[];
  readonly strides: number[];
  readonly offset: number;
  readonly dtype: DType;
  readonly device: Device;
  readonly disposed: boolean;
  readonly storageBytes: number;
  readonly contiguous: boolean;
  /** The only handle onto its storage, which it covers contiguously (it may be taken over). */
  readonly soleOwner: boolean;
  dispose(): void;
}
type NT = NativeTensor;

export interface MemoryStats { liveBytes: number; peakBytes: number }
export interface BuildInfo {
  gemm: string; isa: string; cpuAvx512: boolean; threads: number;
  /** Whether setFloat32MatmulPrecision('medium') runs bf16 here (oneDNN + native bf16 CPU). */
  bf16Matmul: boolean;
  cudaCompiled: boolean; cudaDevices: number; cudaReason?: string; napiVersion: number; compiler: string;
}

export type UnaryOp = 'neg' | 'exp' | 'log' | 'sqrt' | 'tanh' | 'sigmoid' | 'relu' | 'gelu' | 'gelu_tanh' | 'quick_gelu' | 'silu' | 'abs';
export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'maximum' | 'minimum';
export type ReduceOp = 'sum' | 'mean' | 'max';

export interface NativeBinding {
  // ---- core: creation, views, copies (binding/tensor.cc)
  empty(shape: number[], dtype: DType, device: Device): NT;
  full(shape: number[], value: number, dtype: DType, device: Device): NT;
  fromData(data: ArrayBufferView, shape: number[], dtype: DType, device: Device): NT;
  toArray(t: NT): Float32Array | Float64Array | Int32Array | Uint8Array;
  arange(start: number, step: number, count: number, dtype: DType): NT;
  random(kind: 'normal' | 'uniform', shape: number[], dtype: DType, seed: number, offset: number, a: number, b: number): NT;
  view(t: NT, shape: number[], strides: number[], offset: number): NT;
  copy(dst: NT, src: NT): void;
  cast(t: NT, dtype: DType): NT;
  contiguous(t: NT): NT;
  toDevice(t: NT, device: Device): NT;
  memory(): { cpu: MemoryStats & { cachedBytes: number }; cuda: MemoryStats };
  resetPeak(): void;
  /** Returns cached host blocks to the OS. */
  emptyCache(): void;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  buildInfo(): BuildInfo;
  setFloat32MatmulPrecision(p: 'highest' | 'high' | 'medium'): void;
  getFloat32MatmulPrecision(): 'highest' | 'medium';
  /**
   * Few-row products x W^T (decode steps) use a packed copy of each given weight until
   * weightPackingEnd(); tensors that are not dense 2-D float32 CPU tensors are skipped. The
   * weights must not change in between (vlm.generate brackets its loop with these).
   */
  weightPackingBegin(weights: NT[]): void;
  weightPackingEnd(): void;

  // ---- elementwise (binding/elementwise.cc): any strides; binary ops broadcast
  unary(op: UnaryOp, x: NT): NT;
  /** Gradient w.r.t. x of y = op(x), given x, y and dL/dy. */
  unaryBackward(op: UnaryOp, x: NT, y: NT, gy: NT): NT;
  binary(op: BinaryOp, a: NT, b: NT): NT;
  /** alpha * x + beta */
  affine(x: NT, alpha: number, beta: number): NT;
  powScalar(x: NT, p: number): NT;
  powScalarBackward(x: NT, p: number, gy: NT): NT;
  /** dst += alpha * src, in place; same shape, dst contiguous. */
  axpy(dst: NT, src: NT, alpha: number): void;
  /** x *= s in place */
  scaleInPlace(x: NT, s: number): void;

  // ---- reduce (binding/reduce.cc)
  reduce(op: ReduceOp, x: NT, axes: number[], keepdim: boolean): NT;
  /** Gradient of max over axes: gy goes to the first arg-max of each reduced group. */
  reduceMaxBackward(x: NT, axes: number[], keepdim: boolean, gy: NT): NT;
  /** Sum of squares of all elements, in float64 (gradient-norm clipping). */
  sumSquares(x: NT): number;

  // ---- matmul (binding/matmul.cc): [..., M, K] x [..., K, N], batch dims broadcast
  matmul(a: NT, b: NT, transA: boolean, transB: boolean): NT;
  /** y [..., out] = x [..., in] · weight [out, in]^T + bias [out]: one GEMM, the bias fused in. */
  /** residual + x W^T + bias; residual (the output's shape) optional. */
  linear(x: NT, weight: NT, bias: NT | null, residual?: NT | null): NT;
  /** pre = x W^T + bias, out = act(pre) (gated acts applied per row chunk on the fast path). */
  linearActivation(x: NT, weight: NT, bias: NT | null, act: UnaryOp): { pre: NT; out: NT };
  /**
   * dx = gy·W, dweight = gy^T·x (one GEMM over all rows), dbias = sum of gy over rows; null where
   * not asked. With dxInto (contiguous, x's shape and dtype) dx is added into it in place and null.
   */
  linearBackward(x: NT, weight: NT, gy: NT, needX: boolean, needWeight: boolean, needBias: boolean, dxInto?: NT | null):
    { dx: NT | null; dweight: NT | null; dbias: NT | null };

  // ---- softmax (binding/softmax.cc)
  softmax(x: NT, axis: number, log: boolean): NT;
  softmaxBackward(y: NT, gy: NT, axis: number, log: boolean): NT;

  // ---- layer_norm (binding/layer_norm.cc): normalises the trailing `size` elements
  layerNorm(x: NT, weight: NT | null, bias: NT | null, size: number, eps: number): { y: NT; mean: NT; rstd: NT };
  /** With dxInto (contiguous, x's shape and dtype) dx is added into it in place and returned as null. */
  layerNormBackward(x: NT, weight: NT | null, mean: NT, rstd: NT, gy: NT, size: number, weightGrads: boolean, dxInto?: NT | null):
    { dx: NT | null; dweight: NT | null; dbias: NT | null };

  // ---- dropout (binding/dropout.cc): the mask is regenerated from (seed, offset), never stored
  dropout(x: NT, p: number, seed: number, offset: number): NT;
  dropoutBackward(gy: NT, p: number, seed: number, offset: number): NT;

  // ---- normalize (binding/normalize.cc): y = x / max(||x||_2, eps) along axis
  l2Normalize(x: NT, axis: number, eps: number): NT;
  l2NormalizeBackward(x: NT, y: NT, gy: NT, axis: number, eps: number): NT;

  // ---- gather (binding/gather.cc): int32 indices, checked against the axis size
  indexSelect(x: NT, axis: number, index: NT): NT;
  /** zeros(shape) with out.index_add_(axis, index, src), deterministic order. */
  indexAdd(shape: number[], axis: number, index: NT, src: NT): NT;
  gather(x: NT, axis: number, index: NT): NT;
  /** zeros(shape) with out.scatter_add_(axis, index, src), deterministic order. */
  scatterAdd(shape: number[], axis: number, index: NT, src: NT): NT;

  // ---- infonce (binding/infonce.cc): fused contrastive loss; image [B, D] or [B, Q, D], text [B, D],
  // param the one-element temperature tensor (same dtype). Never stores the B x B logits.
  infonceForward(image: NT, text: NT, param: NT, options: {
    mode: 'logit_scale' | 'temperature'; normalize: boolean; labelSmoothing: number;
    imageIds: NT | null; queueImage: NT | null; queueText: NT | null; queueIds: NT | null;
    momentumImage: NT | null; momentumText: NT | null; alpha: number; rowOffset: number; rowCount: number;
  }): { loss: NT; accI2T: number; accT2I: number; saved: NT };
  /** saved is the forward's (float64 [2, 3, b]); gradLoss the upstream gradient of the loss. */
  infonceBackward(image: NT, text: NT, param: NT, options: Parameters<NativeBinding['infonceForward']>[3], saved: NT,
    gradLoss: number, needImage: boolean, needText: boolean, needParam: boolean):
    { dImage: NT | null; dText: NT | null; dParam: NT };
  /** The materialised reference (tests, benchmarks): loss and gradients for an upstream gradient of 1. */
  infonceReference(image: NT, text: NT, param: NT, options: Parameters<NativeBinding['infonceForward']>[3]):
    { loss: number; accI2T: number; accT2I: number; dImage: NT; dText: NT; dParam: number };
  /** Max relative error of the kernel's vectorised float32 exp on `count` points of [lo, hi]. */
  infonceExpError(lo: number, hi: number, count: number): number;
  /** GEMM rows x columns per tile (default 256 x 256); sets them when given. Returns the current pair. */
  infonceTiles(rows?: number, cols?: number): [number, number];

  // ---- lm_head (binding/lm_head.cc): vocabulary projection + label-smoothed cross-entropy, never
  // materialising the N x V logits. hidden [N, H], weight [V, H] (contiguous), bias [V] or null,
  // int32 targets [N] (ids in [0, V) or ignoreIndex); chunk sizes 0 = automatic.
  // `needs` = [hidden, weight, bias]: which gradients to compute.
  /** Loss only; lse [N] is what lmHeadBackward needs. loss is 0-d, or [N] per token for 'none'. */
  lmHeadForward(hidden: NT, weight: NT, bias: NT | null, targets: NT, ignoreIndex: number, labelSmoothing: number,
    reduction: 'mean' | 'sum' | 'none', rowChunk: number, vocabChunk: number):
    { loss: NT; lse: NT; lossSum: number; valid: number; correct: number };
  /** Loss and the gradients of the reduced loss in one pass over the logits. */
  lmHeadForwardBackward(hidden: NT, weight: NT, bias: NT | null, targets: NT, ignoreIndex: number,
    labelSmoothing: number, reduction: 'mean' | 'sum', needs: boolean[], rowChunk: number, vocabChunk: number):
    { loss: NT; lse: NT; lossSum: number; valid: number; correct: number; dHidden: NT | null; dWeight: NT | null; dBias: NT | null };
  /** Gradients from a saved lse, recomputing logits by tiles: row i scaled by gradScale * rowGrad[i] (/ valid for 'mean'). */
  lmHeadBackward(hidden: NT, weight: NT, bias: NT | null, targets: NT, lse: NT, rowGrad: NT | null, gradScale: number,
    ignoreIndex: number, labelSmoothing: number, reduction: 'mean' | 'sum' | 'none', needs: boolean[], rowChunk: number,
    vocabChunk: number): { dHidden: NT | null; dWeight: NT | null; dBias: NT | null };
  /** The naive path (benchmarks): materialises all N x V logits; outputs as lmHeadForwardBackward, no lse. */
  lmHeadNaive(hidden: NT, weight: NT, bias: NT | null, targets: NT, ignoreIndex: number, labelSmoothing: number,
    reduction: 'mean' | 'sum', needs: boolean[]):
    { loss: NT; lossSum: number; valid: number; correct: number; dHidden: NT | null; dWeight: NT | null; dBias: NT | null };
  /** The slow float64 reference (tests): float64 outputs; for 'none' loss is [N] and gradients are of the sum. */
  lmHeadReference(hidden: NT, weight: NT, bias: NT | null, targets: NT, ignoreIndex: number, labelSmoothing: number,
    reduction: 'mean' | 'sum' | 'none', needs: boolean[]):
    { loss: NT; lossSum: number; valid: number; correct: number; dHidden: NT | null; dWeight: NT | null; dBias: NT | null };

  // ---- conv2d (binding/conv2d.cc): x [N, C, H, W], weight [O, C/groups, KH, KW], bias [O] or null;
  // stride, padding, dilation are [h, w]. im2col + GEMM per (image, group); depthwise by direct loops.
  conv2d(x: NT, weight: NT, bias: NT | null, stride: number[], padding: number[], dilation: number[], groups: number): NT;
  /** Gradients asked for (null elsewhere); dweight/dbias are the same for any thread count. */
  conv2dBackward(x: NT, weight: NT, gy: NT, stride: number[], padding: number[], dilation: number[], groups: number,
    needX: boolean, needWeight: boolean, needBias: boolean): { dx: NT | null; dweight: NT | null; dbias: NT | null };

  // ---- batch_norm (binding/batch_norm.cc): per channel (axis 1) of x [N, C, ...]; [C] buffers.
  /** training: batch statistics, updates runningMean/runningVar in place when given; eval: the running ones.
   * mean/rstd are the statistics used, saved for the backward. */
  batchNorm(x: NT, runningMean: NT | null, runningVar: NT | null, weight: NT | null, bias: NT | null, training: boolean,
    momentum: number, eps: number): { y: NT; mean: NT; rstd: NT };
  batchNormBackward(x: NT, weight: NT | null, mean: NT, rstd: NT, gy: NT, training: boolean, needX: boolean,
    needWeight: boolean, needBias: boolean): { dx: NT | null; dweight: NT | null; dbias: NT | null };

  // ---- pool (binding/pool.cc): images [N, C, H, W] or [C, H, W]; pairs are [h, w]
  /** Average pooling, count_include_pad (torch's default), floor mode; padding at most half the kernel. */
  avgPool2d(x: NT, kernel: number[], stride: number[], padding: number[]): NT;
  avgPool2dBackward(gy: NT, inputShape: number[], kernel: number[], stride: number[], padding: number[]): NT;
  /** Windows [floor(i*H/OH), ceil((i+1)*H/OH)) as torch; [1, 1] is global average pooling. */
  adaptiveAvgPool2d(x: NT, outputSize: number[]): NT;
  adaptiveAvgPool2dBackward(gy: NT, inputShape: number[]): NT;
  /** x [B, L, D], uint8 mask [B, L] (nonzero = valid) or null -> [B, D]; a row with nothing valid gives zeros. */
  maskedMeanPool(x: NT, mask: NT | null): NT;
  maskedMeanPoolBackward(gy: NT, mask: NT | null, length: number): NT;
  /** Max over valid positions; index int32 [B, D] is the position taken (first on ties, -1 for an empty row). */
  maskedMaxPool(x: NT, mask: NT | null): { y: NT; index: NT };
  maskedMaxPoolBackward(gy: NT, index: NT, length: number): NT;

  // ---- attention (binding/attention.cc): fused scaled-dot-product attention that never stores the
  // [B, H, Lq, Lk] scores. q [B, H, Lq, Dh], k [B, H, Lk, Dh], v [B, H, Lk, Dv] (strided views with a
  // unit last stride are read in place); out [B, H, Lq, Dv], lse [B, H, Lq] (row logsumexp, -inf for a
  // row that sees no key). Masks AND together: causal (query i sees keys j <= i + causalOffset),
  // keyPadding (int32 [B], keys j < len[b]), mask (uint8, 1 = may attend) and bias (additive, q's dtype),
  // both rank 4 with each dim 1 or full. Dropout keeps probability (b, h, i, j) when the Philox
  // uniform at offset + ((b*H + h)*Lq + i)*Lk + j is >= dropout.
  attentionForward(q: NT, k: NT, v: NT, options: {
    scale: number; causal: boolean; causalOffset: number; mask: NT | null; bias: NT | null; keyPadding: NT | null;
    dropout: number; seed: number; offset: number;
  }): { out: NT; lse: NT };
  /** needs = [q, k, v]: which gradients to compute (null where not). */
  attentionBackward(q: NT, k: NT, v: NT, out: NT, lse: NT, gradOut: NT, options: Parameters<NativeBinding['attentionForward']>[3],
    needs: boolean[]): { dq: NT | null; dk: NT | null; dv: NT | null };
  /** The materialised float64 reference (tests): outputs, and gradients for gradOut when given. */
  attentionReference(q: NT, k: NT, v: NT, options: Parameters<NativeBinding['attentionForward']>[3], gradOut?: NT | null):
    { out: NT; lse: NT; dq: NT | null; dk: NT | null; dv: NT | null };
  /** Query rows x keys per tile (default 64 x 128); sets them when given. Returns the current pair. */
  attentionTiles(rows?: number, cols?: number): [number, number];
  /** 'avx512' (default where the CPU has it) or 'gemm': what float32 attention tiles multiply with. */
  attentionTileKernel(name?: 'avx512' | 'gemm'): 'avx512' | 'gemm';

  // ---- itm (binding/itm.cc): hard-negative mining and the fused 2-way ITM head (ops/itm.h).
  // image [B, D] or [B, Q, D] (max over queries), text [B, D], same float dtype; temperature divides the
  // similarity; imageIds int32 [B] or null; uniforms from Philox elements (seed, offset .. offset + 2B).
  /** One negative text per image and one negative image per text (int32 [B]), sampled by tiles (no B x B buffer). */
  itmMine(image: NT, text: NT, temperature: number, imageIds: NT | null, seed: number, offset: number,
    weightFloor: number): { negativeText: NT; negativeImage: NT };
  /** The naive path (tests, benchmarks): B x B similarities and weights, the same uniforms; float64 probabilities when asked. */
  itmMineReference(image: NT, text: NT, temperature: number, imageIds: NT | null, seed: number, offset: number,
    weightFloor: number, returnProbs: boolean): { negativeText: NT; negativeImage: NT; probI2T: NT | null; probT2I: NT | null };
  /** Mining tile in GEMM rows x columns (default 256 x 256) and rows x segments per thread table (default 65536); sets them when given. */
  itmTiles(rows?: number, cols?: number, segmentCells?: number): [number, number, number];
  /** features [3B, H] or [3B, Q, H], weight [2, H], bias [2]: loss (0-d) and gradients of gradScale * loss where `needs`. */
  itmHead(features: NT, weight: NT, bias: NT, gradScale: number, needs: boolean[]):
    { loss: NT; correct: number; dFeatures: NT | null; dWeight: NT | null; dBias: NT | null };
  /** The float64 reference head (per-query logits materialised): loss and every gradient. */
  itmHeadReference(features: NT, weight: NT, bias: NT):
    { loss: number; correct: number; dFeatures: NT; dWeight: NT; dBias: NT };

  // ---- decode (binding/decode.cc): KV-cached incremental attention and token selection (ops/decode.h).
  // A cache is a contiguous float tensor [N, heads, maxLength, headDim] written in place; rows
  // [N, T, heads * headDim] may be views (a unit last stride is read in place). Scores are [N, V].
  /** Writes k and v [N, T, H*Dh] into cacheK / cacheV at positions [position, position + T). */
  kvCacheWrite(cacheK: NT, cacheV: NT, k: NT, v: NT, position: number): void;
  /** In place in every cache: row i over positions [0, length) becomes the old row index[i] (int32 [N]). */
  kvCacheReorder(caches: NT[], index: NT, length: number): void;
  /**
   * q [N, T, H*Dh] attends to keys/values [0, length) of k, v [N, H, Lk, Dh] -> [N, T, H*Dh]. causal:
   * query t sees keys j <= length - T + t; keyMask uint8 [N or 1, Lk] (1 = may attend).
   */
  decodeAttention(q: NT, k: NT, v: NT, options: { length: number; causal: boolean; scale: number; keyMask: NT | null }): NT;
  /**
   * A new [N, V] tensor: log_softmax per row first when logSoftmax, then HF's repetition penalty over the
   * ids of history int32 [N, L] (negative ids skipped), then the suppressed ids (int32 [S]) set to -inf;
   * last, with warp, HF's warpers: divided by temperature, tokens that top-k / top-p drop set to -inf.
   */
  decodeProcessLogits(logits: NT, options: {
    logSoftmax: boolean; history: NT | null; repetitionPenalty: number; suppress: NT | null;
    warp?: { temperature: number; topK: number; topP: number; minKeep: number } | null;
  }): NT;
  /** int32 [N]: the first index of each row's maximum. */
  decodeArgmax(scores: NT): NT;
  /** int32 [N]: a token per row from softmax(scores / temperature) after top-k then top-p; row n uses Philox(seed, offset + n). */
  decodeSample(scores: NT, options: { temperature: number; topK: number; topP: number; minKeep: number; seed: number; offset: number }): NT;
  /**
   * Per batch of `beams` rows: the `count` best beamScores[n] + scores[n, t] (float64 [N]), best first -> [B, count] each.
   * With sample: `count` candidates drawn without replacement from the softmax of those values (Philox(seed,
   * offset + n * V + t) per candidate), sorted best first.
   */
  decodeBeamCandidates(scores: NT, beamScores: NT, beams: number, count: number,
    sample?: { seed: number; offset: number } | null): { scores: NT; tokens: NT; beams: NT };

  // ---- adamw (binding/adamw.cc): one fused in-place update per parameter tensor
  adamwStep(param: NT, grad: NT, m: NT, v: NT, lr: number, beta1: number, beta2: number, eps: number,
    weightDecay: number, step: number): void;
  /** The same update, serial and in float64 per element: the reference for tests and benches. */
  adamwStepReference(param: NT, grad: NT, m: NT, v: NT, lr: number, beta1: number, beta2: number, eps: number,
    weightDecay: number, step: number): void;
}

const here = dirname(fileURLToPath(import.meta.url));

// OpenMP threads wait for work by sleeping rather than spinning, unless the user chose
// otherwise; libgomp reads this once, when the addon loads it. On a machine shared with
// other work, spinning threads fight other processes for the cores: a CLIP training step
// measured here under a load average of ~5 on 2 cores took 1.7-4.0 s with the default
// policy and 0.8-1.1 s with 'passive'; on an idle machine the difference is a few
// microseconds per parallel region.
process.env.OMP_WAIT_POLICY ??= 'PASSIVE';

function loadBinding(): NativeBinding {
  const require = createRequire(import.meta.url);
  const root = resolve(here, '..');
  const candidates = [
    process.env.VLMKIT_BINARY,
    join(root, 'build', 'Release', 'vlmkit.node'),
    join(root, 'build', 'Debug', 'vlmkit.node'),
  ].filter((p): p is string => !!p);
  const tried: string[] = [];
  for (const p of candidates) {
    if (!existsSync(p)) {
      tried.push(`${p}: not found`);
      continue;
    }
    try {
      return require(p) as NativeBinding;
    } catch (e) {
      tried.push(`${p}: ${(e as Error).message}`);
    }
  }
  throw new Error(
    `vlmkit: could not load the native addon. Tried:\n  ${tried.join('\n  ')}\n` +
      'Build it with `npx cmake-js compile --out build` in the package folder (needs cmake, g++, and ' +
      'libdnnl-dev or libopenblas-dev for fast GEMM), or set VLMKIT_BINARY to a built vlmkit.node.',
  );
}

export const native: NativeBinding = loadBinding();
