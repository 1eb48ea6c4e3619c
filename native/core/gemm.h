// Row-major GEMM through the library chosen at build time (oneDNN sgemm, OpenBLAS,
// or the built-in blocked kernel): C = alpha * op(A) * op(B) + beta * C, with
// op(A) [M, K], op(B) [K, N], C [M, N]; lda/ldb/ldc are row strides in elements.
// Called inside a parallel region it runs single-threaded (no oversubscription);
// outside, it uses vlm::num_threads() threads.
#pragma once
#include <cstdint>

namespace vlm {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

// The library actually used for each dtype, e.g. "onednn" / "openblas" / "builtin".
const char* gemm_library(bool float64);

}  // namespace vlm
