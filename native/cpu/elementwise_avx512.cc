// elementwise family, CPU: the AVX-512 sigmoid-gate kernels (elementwise_avx512.h).
// exp is vec_math.h's exp_f32 on 16 lanes (Cephes polynomial, ~1 ulp; below -87.34
// gives 0; NaN stays NaN); the sigmoid is the stable form e = exp(-|z|),
// s = 1 / (1 + e), sigmoid = z >= 0 ? s : e s.
#include "cpu/elementwise_avx512.h"
// GCC 12's AVX-512 headers start some intrinsics from an "undefined" register, which
// -Wmaybe-uninitialized reports at every use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include "core/vec_math_avx512.h"

namespace vlm {
namespace cpu {
namespace {

// sigmoid(z), stable for large |z|.
VLM_AVX512 inline __m512 sigmoid16(__m512 z) {
  const __m512 e = vec::exp16(_mm512_or_ps(z, _mm512_set1_ps(-0.f)));  // exp(-|z|)
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
