// attention family, CPU: the AVX-512 float32 tile product used by the fused kernel for
// its small per-(batch, head) GEMMs (64 x 128 tiles, head dims up to ~128). oneDNN's
// sgemm spends ~1 us per call on these and runs Q K^T with K = 32 at ~60 GFLOP/s; this
// kernel has no per-call set-up and keeps an 8 x 32 block of C in registers.
#pragma once
#include <cstdint>

namespace vlm {
namespace cpu {

// Whether this CPU runs tile_gemm_avx512 (AVX-512 F).
bool tile_gemm_avx512_available();

// C[m, n] = alpha * sum_p A(r, p) B[p, :] + beta * C, with A(r, p) = a[r * ars + p * acs]
// (so op(A) may be a transpose: ars = 1, acs = lda), B's rows contiguous (ldb) and C's
// rows ldc apart. beta = 0 never reads C.
void tile_gemm_avx512(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t ars, int64_t acs,
                      const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The softmax rows of a tile: s[j] = exp(s[j] - shift) for j < n (vec_math's exp_f32 on
// 16 lanes, masked tail); the _sum form returns the row's sum (a fixed-order reduction).
float exp_sum_avx512(float* s, int64_t n, float shift);
void exp_avx512(float* s, int64_t n, float shift);

}  // namespace cpu
}  // namespace vlm
