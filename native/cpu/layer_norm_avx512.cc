// layer_norm family, CPU: the AVX-512 float32 row kernels (layer_norm_avx512.h).
#include "cpu/layer_norm_avx512.h"
#include <cmath>
// GCC 12's AVX-512 headers start some intrinsics from an "undefined" register, which
// -Wmaybe-uninitialized reports at every use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

namespace vlm {
namespace cpu {
namespace {

#define VLM_AVX512 __attribute__((target("avx512f,avx512dq,fma")))

inline __mmask16 mask16(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// Adds the 16 floats v (masked lanes are 0) into two float64 accumulators.
VLM_AVX512 inline void add_pd(__m512 v, __m512d& lo, __m512d& hi) {
  lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
  hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}
VLM_AVX512 inline double total(__m512d lo, __m512d hi) { return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi)); }

}  // namespace

bool layer_norm_avx512_available() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return ok;
}

VLM_AVX512 void layer_norm_row_forward_avx512(const float* x, const float* w, const float* b, int64_t C, double eps,
                                              float* y, float* mean, float* rstd) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int64_t i = 0; i < C; i += 16) add_pd(_mm512_maskz_loadu_ps(mask16(C - i), x + i), s0, s1);
  const double mu = total(s0, s1) / static_cast<double>(C);
  // Squared deviations in float64 (x - mu exactly as the scalar kernel computes it).
  const __m512d mud = _mm512_set1_pd(mu);
  __m512d q0 = _mm512_setzero_pd(), q1 = _mm512_setzero_pd();
  for (int64_t i = 0; i < C; i += 16) {
    const __mmask16 m = mask16(C - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __m512d d0 = _mm512_maskz_sub_pd(__mmask8(m), _mm512_cvtps_pd(_mm512_castps512_ps256(v)), mud);
    const __m512d d1 = _mm512_maskz_sub_pd(__mmask8(m >> 8),
        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))), mud);
    q0 = _mm512_fmadd_pd(d0, d0, q0);
    q1 = _mm512_fmadd_pd(d1, d1, q1);
  }
  const double var = total(q0, q1) / static_cast<double>(C);
  const float m = static_cast<float>(mu), rs = static_cast<float>(1.0 / std::sqrt(var + eps));
  *mean = m;
  *rstd = rs;
  const __m512 mv = _mm512_set1_ps(m), rv = _mm512_set1_ps(rs);
  for (int64_t i = 0; i < C; i += 16) {
    const __mmask16 k = mask16(C - i);
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv), rv);
    if (w) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, w + i));
    if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b + i));
    _mm512_mask_storeu_ps(y + i, k, v);
  }
}

VLM_AVX512 void layer_norm_row_backward_avx512(const float* x, const float* w, const float* gy, int64_t C, float mean,
                                               float rstd, float* dx, double* dw, double* db, bool accumulate) {
  const __m512 mv = _mm512_set1_ps(mean), rv = _mm512_set1_ps(rstd);
  __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd(), b0 = _mm512_setzero_pd(), b1 = _mm512_setzero_pd();
  for (int64_t i = 0; i < C; i += 16) {
    const __mmask16 k = mask16(C - i);
    const __m512 g = _mm512_maskz_loadu_ps(k, gy + i);
    const __m512 dn = w ? _mm512_mul_ps(g, _mm512_maskz_loadu_ps(k, w + i)) : g;
    const __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv), rv);
    add_pd(dn, a0, a1);
    add_pd(_mm512_mul_ps(dn, xhat), b0, b1);
  }
  const double inv_c = 1.0 / static_cast<double>(C);
  const __m512 at = _mm512_set1_ps(static_cast<float>(total(a0, a1) * inv_c));
  const __m512 bt = _mm512_set1_ps(static_cast<float>(total(b0, b1) * inv_c));
  for (int64_t i = 0; i < C; i += 16) {
    const __mmask16 k = mask16(C - i);
    const __m512 g = _mm512_maskz_loadu_ps(k, gy + i);
    const __m512 dn = w ? _mm512_mul_ps(g, _mm512_maskz_loadu_ps(k, w + i)) : g;
    const __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv), rv);
    // (dn - a - xhat b) rstd
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(dn, at), _mm512_mul_ps(xhat, bt)), rv);
    if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, dx + i), v);
    _mm512_mask_storeu_ps(dx + i, k, v);
    if (dw) {
      const __m512 gx = _mm512_mul_ps(g, xhat);
      const __mmask8 lo = __mmask8(k), hi = __mmask8(k >> 8);
      _mm512_mask_storeu_pd(dw + i, lo, _mm512_add_pd(_mm512_maskz_loadu_pd(lo, dw + i), _mm512_cvtps_pd(_mm512_castps512_ps256(gx))));
      _mm512_mask_storeu_pd(dw + i + 8, hi, _mm512_add_pd(_mm512_maskz_loadu_pd(hi, dw + i + 8),
          _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(gx), 1)))));
      _mm512_mask_storeu_pd(db + i, lo, _mm512_add_pd(_mm512_maskz_loadu_pd(lo, db + i), _mm512_cvtps_pd(_mm512_castps512_ps256(g))));
      _mm512_mask_storeu_pd(db + i + 8, hi, _mm512_add_pd(_mm512_maskz_loadu_pd(hi, db + i + 8),
          _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(g), 1)))));
    }
  }
}

}  // namespace cpu
}  // namespace vlm
