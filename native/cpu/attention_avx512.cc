// attention family, CPU: the AVX-512 tile product (attention_avx512.h). Blocks of R rows
// x NV vectors of 16 columns: per step p, NV loads of B's row p, R broadcasts of A(r, p)
// and R x NV fused multiply-adds into registers; column tails use masked loads/stores.
#include "cpu/attention_avx512.h"
// GCC 12's AVX-512 headers start some intrinsics from an "undefined" register, which
// -Wmaybe-uninitialized reports at every use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#include "core/vec_math_avx512.h"

namespace vlm {
namespace cpu {
namespace {

inline __mmask16 tail_mask(int64_t cols) { return cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1); }

template <int R, int NV>
VLM_AVX512 inline void block(int64_t k, float alpha, const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb,
                             float beta, float* c, int64_t ldc, int64_t cols) {
  // Every loop over r and v is unrolled, so that acc lives in registers (GCC otherwise
  // keeps the array in memory and stores it on every step).
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  const __mmask16 m0 = tail_mask(cols), m1 = tail_mask(cols - 16);
  for (int64_t p = 0; p < k; ++p) {
    __m512 bv[NV];
    bv[0] = _mm512_maskz_loadu_ps(m0, b + p * ldb);
    if (NV > 1) bv[NV - 1] = _mm512_maskz_loadu_ps(m1, b + p * ldb + 16);
    const float* ap = a + p * acs;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(ap[r * ars]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  const __m512 al = _mm512_set1_ps(alpha), be = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mv = v == 0 ? m0 : m1;
      float* cp = c + r * ldc + 16 * v;
      __m512 out = _mm512_mul_ps(al, acc[r][v]);
      if (beta != 0.f) out = _mm512_fmadd_ps(be, _mm512_maskz_loadu_ps(mv, cp), out);
      _mm512_mask_storeu_ps(cp, mv, out);
    }
}

template <int NV>
VLM_AVX512 inline void rows(int64_t m, int64_t k, float alpha, const float* a, int64_t ars, int64_t acs, const float* b,
                            int64_t ldb, float beta, float* c, int64_t ldc, int64_t cols) {
  int64_t i = 0;
  for (; i + 8 <= m; i += 8) block<8, NV>(k, alpha, a + i * ars, ars, acs, b, ldb, beta, c + i * ldc, ldc, cols);
  switch (m - i) {
    case 7: block<7, NV>(k, alpha, a + i * ars, ars, acs, b, ldb, beta, c + i * ldc, ldc, cols); break;
    case 6: block<6, NV>(k, alpha, a + i * ars, ars, acs, b, ldb, beta, c + i * ldc, ldc, cols); break;
    case 5: block<5, NV>(k, alpha, a + i * ars, ars, acs, b, ldb, beta, c + i * ldc, ldc, cols); break;
    case 4: block<4, NV>(k, alpha, a + i * ars, ars, acs, b, ldb, beta, c + i * ldc, ldc, cols); break;
    case 3: block<3, NV>(k, alpha, a + i * ars, ars, acs, b, ldb, beta, c + i * ldc, ldc, cols); break;
    case 2: block<2, NV>(k, alpha, a + i * ars, ars, acs, b, ldb, beta, c + i * ldc, ldc, cols); break;
    case 1: block<1, NV>(k, alpha, a + i * ars, ars, acs, b, ldb, beta, c + i * ldc, ldc, cols); break;
    default: break;
  }
}

}  // namespace

bool tile_gemm_avx512_available() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}

VLM_AVX512 void tile_gemm_avx512(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t ars,
                                 int64_t acs, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  // Columns in chunks of 32 (two vectors); a last chunk of up to 16 uses one.
  for (int64_t j = 0; j < n; j += 32) {
    const int64_t cols = n - j < 32 ? n - j : 32;
    if (cols > 16) rows<2>(m, k, alpha, a, ars, acs, b + j, ldb, beta, c + j, ldc, cols);
    else rows<1>(m, k, alpha, a, ars, acs, b + j, ldb, beta, c + j, ldc, cols);
  }
}

VLM_AVX512 float exp_sum_avx512(float* s, int64_t n, float shift) {
  const __m512 sh = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    const __m512 e = vec::exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), sh));
    _mm512_mask_storeu_ps(s + j, m, e);
    acc = _mm512_mask_add_ps(acc, m, acc, e);
  }
  return _mm512_reduce_add_ps(acc);
}

VLM_AVX512 void exp_avx512(float* s, int64_t n, float shift) {
  const __m512 sh = _mm512_set1_ps(shift);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    _mm512_mask_storeu_ps(s + j, m, vec::exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), sh)));
  }
}

}  // namespace cpu
}  // namespace vlm
