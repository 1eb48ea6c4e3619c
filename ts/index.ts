// vlmkit: train vision-language models from TypeScript on a fused native core.
//   import * as vlm from 'vlmkit'
import { native } from './native.js';

export type { DType, Device, BuildInfo, MemoryStats } from './native.js';
export { Tensor, type TypedArray, type BackwardOptions } from './graph/tensor.js';
export { tidy, keep } from './graph/scope.js';
export { noGrad, enableGrad, isGradEnabled } from './graph/autograd.js';
export {
  tensor, zeros, ones, full, zerosLike, onesLike, arange, randn, rand, manualSeed,
  type CreateOptions, type RandomOptions,
} from './graph/creation.js';
export { gradcheck, type GradcheckOptions, type GradcheckReport } from './graph/gradcheck.js';
export * from './graph/ops/views.js';
export * from './graph/ops/elementwise.js';
export * from './graph/ops/reduce.js';
export * from './graph/ops/matmul.js';
export * from './graph/ops/softmax.js';
export * from './graph/ops/layer_norm.js';
export * from './graph/ops/dropout.js';
export * from './graph/ops/normalize.js';
export * from './graph/ops/gather.js';
export * from './graph/ops/device.js';
export * from './graph/ops/attention.js';
export * from './graph/attention_layers.js';
export * from './graph/ops/conv2d.js';
export * from './graph/ops/batch_norm.js';
export * from './graph/ops/pool.js';
export * from './graph/conv_layers.js';
import './graph/methods.js';

export { Module, type StateDict, type LoadStateDictOptions, type LoadStateDictResult } from './graph/module.js';
export * from './graph/nn.js';
export * from './graph/optim/adamw.js';
export * from './graph/optim/schedule.js';
export * from './graph/optim/clip.js';
export * as objectives from './objectives/index.js';
export * as data from './data/index.js';
export * from './graph/transformer.js';
export * as models from './models/index.js';
export * as train from './train/index.js';
export { KVCache, transformerBlockStep, decodeAttentionStep, type KVCacheConfig, type DecoderStepOptions } from './graph/kv_cache.js';
export * from './models/generate.js';

/** Live and peak bytes held by native tensors, per device. */
export function memory(): { cpu: { liveBytes: number; peakBytes: number; cachedBytes: number };
  cuda: { liveBytes: number; peakBytes: number }; liveBytes: number; peakBytes: number } {
  const m = native.memory();
  return { ...m, liveBytes: m.cpu.liveBytes, peakBytes: m.cpu.peakBytes };
}
/** Returns the host memory kept for reuse (freed blocks of 1 MiB and more) to the OS. */
export function emptyCache(): void { native.emptyCache(); }
/** Starts peak tracking afresh from the current live bytes. */
export function resetPeak(): void { native.resetPeak(); }
/** Threads used by the CPU kernels and GEMM. */
export function setNumThreads(n: number): void { native.setNumThreads(n); }
export function getNumThreads(): number { return native.getNumThreads(); }
/**
 * Float32 matmul precision, as torch.set_float32_matmul_precision. 'highest' (default)
 * computes every float32 GEMM in float32. 'medium' rounds to bfloat16 the operands of
 * the fused infoNCE and LM-loss kernels and of large float32 products (matmul, linear,
 * conv2d, ITM with both output dims >= 192 and >= 4M multiply-adds) and accumulates in
 * float32: about 2x the GEMM rate on CPUs with avx512_bf16, at ~3 significant digits per
 * product (what mixed-precision training on GPUs uses). Smaller products (attention's
 * per-tile GEMMs, decode steps, width-128 towers) stay float32: rounding their operands
 * would cost more than the bf16 kernel saves.
 * Everything outside the GEMMs (softmax, normalisation, losses, optimizer) stays float32;
 * float64 is never affected. 'high' means TF32 on GPUs and keeps float32 on the CPU.
 * Where bf16 is not native (buildInfo().bf16Matmul false), 'medium' computes in float32.
 */
export function setFloat32MatmulPrecision(p: 'highest' | 'high' | 'medium'): void { native.setFloat32MatmulPrecision(p); }
export function getFloat32MatmulPrecision(): 'highest' | 'medium' { return native.getFloat32MatmulPrecision(); }
/** Which GEMM library, ISA, thread count and CUDA state this build uses. */
export function buildInfo() { return native.buildInfo(); }
