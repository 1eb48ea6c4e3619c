// oneDNN's matmul primitive behind core/gemm: the brgemm kernels that beat dnnl_sgemm on
// thin products (a decode step's [16, 256] x [256, V] runs ~1.8x faster) and the only
// route to the CPU's bf16 dot-product instructions (2x the float32 rate on avx512_bf16).
// Primitives are created once per shape and kept in a small cache.
#pragma once
#include <cstdint>
#include <vector>

namespace vlm {

// C = alpha * op(A) op(B) + beta * C in float32 through a cached matmul primitive;
// with bf16 true, A and B are rounded to bfloat16 first (float32 accumulation and C).
// Returns false when oneDNN has no fast kernel for the request (the caller falls back).
bool gemm_dnnl(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc, bool bf16);

// The same with operands already rounded to bf16 (to_bf16), strided as given: the fused
// kernels convert their inputs once per call instead of once per tile.
bool gemm_dnnl_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                    int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);

// A weight W [rows, cols] (dense, row-major) that few-row products x W^T may use in a
// packed copy between weight_packing_begin and weight_packing_end (see gemm_dnnl.cc).
struct WeightRef {
  const float* data;
  int64_t rows, cols;
};
// Registers the weights (replacing any earlier set); the caller promises that they do
// not change before weight_packing_end, which frees the packed copies.
void weight_packing_begin(const std::vector<WeightRef>& weights);
void weight_packing_end();

// Whether this CPU runs oneDNN's bf16 matmul natively (avx512_bf16 or AMX); when it does
// not, 'medium' matmul precision keeps float32 (emulated bf16 would be slower).
bool dnnl_bf16_native();

}  // namespace vlm
