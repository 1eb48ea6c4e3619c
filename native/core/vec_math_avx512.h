// exp_f32 (vec_math.h) on 16 AVX-512 lanes, shared by the kernels chosen at run time on
// AVX-512 CPUs (the build targets x86-64-v3). Functions carry the VLM_AVX512 target
// attribute, so only functions compiled with it may call them.
#pragma once
#include <immintrin.h>

#define VLM_AVX512 __attribute__((target("avx512f,avx512dq,fma")))

namespace vlm {
namespace vec {

// exp(x) for x <= 88.37; below -87.34 gives 0 (so -inf -> 0); NaN stays NaN. ~1 ulp.
VLM_AVX512 static inline __m512 exp16(__m512 x) {
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

}  // namespace vec
}  // namespace vlm
