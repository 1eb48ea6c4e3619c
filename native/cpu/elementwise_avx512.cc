// elementwise family, CPU: the AVX-512 sigmoid-gate kernels (elementwise_avx512.h).
// exp is vec_math.h's exp_f32 on 16 lanes (Cephes polynomial, ~1 ulp; below -87.34
// gives 0; NaN stays NaN); the sigmoid is the stable form e = exp(-|z|),
// s = 1 / (1 + e), sigmoid = z >= 0 ? s : e s.
#include "cpu/elementwise_avx512.h"
// GCC 12's AVX-512 headers start some intrinsics from an "undefined" register, which
// -Wmaybe-uninitialized reports at every use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace vlm {
namespace cpu {
namespace {

#define VLM_AVX512 __attribute__((target("avx512f,avx512dq,fma")))

VLM_AVX512 inline __m512 exp16(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.3365447504f), magic = _mm512_set1_ps(12582912.f);
  __m512 xc = _mm512_min_ps(_mm512_set1_ps(88.3762626647949f), x);  // NaN stays NaN (2nd operand)
  xc = _mm512_max_ps(lo, xc);
  __m512 t = _mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504088896341f), magic);
  __m512 n = _mm512_sub_ps(t, magic);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  __m512i ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000));
  __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(ni, _mm512_set1_epi32(127)), 23));
  __m512 y = _mm512_mul_ps(p, scale);
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), _mm512_setzero_ps());
}

// sigmoid(z), stable for large |z|.
VLM_AVX512 inline __m512 sigmoid16(__m512 z) {
  const __m512 e = exp16(_mm512_or_ps(z, _mm512_set1_ps(-0.f)));  // exp(-|z|)
  const __m512 s = _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_add_ps(_mm512_set1_ps(1.f), e));
  return _mm512_mask_mul_ps(s, _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_NGE_UQ), e, s);  // z < 0 or NaN: e s
}

}  // namespace

bool gate_avx512_available() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return ok;
}

VLM_AVX512 void gate_forward_avx512(const float* x, float* y, int64_t n, float a, bool times_x) {
  const __m512 av = _mm512_set1_ps(a), nz = _mm512_set1_ps(-0.f), zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    __m512 s = sigmoid16(_mm512_mul_ps(av, v));
    if (times_x) {
      // where the gate is exactly 0 the result is -0 (-inf * 0 would be NaN), as the scalar kernel
      s = _mm512_mask_mov_ps(_mm512_mul_ps(v, s), _mm512_cmp_ps_mask(s, zero, _CMP_EQ_OQ), nz);
    }
    _mm512_mask_storeu_ps(y + i, m, s);
  }
}

VLM_AVX512 void gate_backward_avx512(const float* x, const float* g, float* dx, int64_t n, float a) {
  const __m512 av = _mm512_set1_ps(a), one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i), gv = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 s = sigmoid16(_mm512_mul_ps(av, v));
    // s + a x s (1 - s)
    const __m512 d = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(av, v), s), _mm512_sub_ps(one, s), s);
    _mm512_mask_storeu_ps(dx + i, m, _mm512_mul_ps(gv, d));
  }
}

}  // namespace cpu
}  // namespace vlm
