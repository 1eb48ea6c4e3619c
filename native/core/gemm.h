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

// Float32 matmul precision, as torch.set_float32_matmul_precision: kHighest computes in
// float32; kMedium rounds the operands of large products (bf16_pays) to bfloat16 and
// accumulates in float32 (2x the GEMM rate on CPUs with avx512_bf16; ~3 significant
// digits per product). Process-wide; float64 is never affected. kMedium falls back to
// float32 where bf16 is not native.
enum class MatmulPrecision { kHighest, kMedium };
void set_matmul_precision(MatmulPrecision p);
MatmulPrecision matmul_precision();
// Whether kMedium actually runs bf16 here (oneDNN built in and the CPU has native bf16).
bool matmul_bf16_available();

// Whether float32 GEMMs run in bf16 right now (kMedium and matmul_bf16_available()).
// The fused kernels ask this to convert their inputs once per call (to_bf16) and call
// the bf16 overload of gemm per tile, instead of converting every tile.
bool gemm_uses_bf16();
// Whether a float32 product of these sizes runs in bf16 under kMedium: M, N >= 192 and
// M N K >= 4M (below that, rounding the operands costs more than the bf16 kernel saves).
bool bf16_pays(int64_t M, int64_t N, int64_t K);
// Rounds a rows x cols float32 block (row stride ld) to bf16 into dense dst (row stride
// cols), to nearest even (denormals may flush to zero, as the avx512_bf16 instruction
// does). Splits the rows over the threads when large and outside a parallel region.
void to_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld, uint16_t* dst);
// C = alpha * op(A) op(B) + beta * C with bf16 operands (as from to_bf16), float32 C.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
          const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The library actually used for each dtype, e.g. "onednn" / "openblas" / "builtin".
const char* gemm_library(bool float64);

}  // namespace vlm
