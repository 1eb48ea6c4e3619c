// Branch-free float32 exp shared by the CPU kernels (elementwise, softmax, attention):
// Cephes' polynomial on r = x - n ln2 (n rounded by the 1.5 * 2^23 shifter, Cody-Waite
// reduction with two constants) times 2^n built in the exponent bits; ~1 ulp.
//   exp_f32_full  every input: denormal results, overflow to inf, NaN stays NaN
//                 (elementwise's exp; plain arithmetic, so loops over it vectorise
//                 where the file turns trapping math off)
//   exp_f32       inputs <= 88.37 (softmax / attention pass x - max <= 0): below
//                 -87.34 gives 0, so exp(-inf) = 0; NaN stays NaN
//   exp8          exp_f32 on 8 lanes with AVX2 + FMA intrinsics (GCC does not vectorise
//                 exp_f32's selects under trapping math), the same value lane by lane
// plus fixed-order horizontal sum / max of 8 lanes. Functions have internal linkage
// (static) so each file keeps its own optimisation flags.
#pragma once
#include <cstdint>
#include <cstring>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VLM_VEC_AVX2 1
#endif

#define VLM_VEC_INLINE static inline __attribute__((always_inline))

namespace vlm {
namespace vec {

VLM_VEC_INLINE float bits_to_float(int32_t i) { float f; std::memcpy(&f, &i, 4); return f; }

// exp for every float input; 2^n is applied in two halves so that denormal results and
// overflow to inf come out right. NaN in, NaN out.
VLM_VEC_INLINE float exp_f32_full(float x) {
  float xc = x < -104.f ? -104.f : x;
  xc = xc > 89.f ? 89.f : xc;
  xc = x == x ? xc : 0.f;
  const float magic = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  float n = (xc * 1.44269504088896341f + magic) - magic;
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.f;
  int32_t ni = static_cast<int32_t>(n);
  int32_t n1 = ni >> 1, n2 = ni - n1;
  float y = p * bits_to_float((n1 + 127) << 23) * bits_to_float((n2 + 127) << 23);
  return x == x ? y : x;
}

// exp for x <= 88.37 without a libm call. Below -87.34 gives 0 (so -inf -> 0), NaN stays
// NaN, larger inputs clamp near FLT_MAX.
VLM_VEC_INLINE float exp_f32(float x) {
  const float hi = 88.3762626647949f, lo = -87.3365447504f;
  float xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  float t = xc * 1.44269504088896341f + 12582912.f;  // round(x / ln2) in the low mantissa bits
  float n = t - 12582912.f;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  int32_t ni = __builtin_bit_cast(int32_t, t) - 0x4B400000;
  float scale = __builtin_bit_cast(float, static_cast<int32_t>(static_cast<uint32_t>(ni + 127) << 23));
  float y = p * scale;
  return x < lo ? 0.f : y;
}

#if defined(VLM_VEC_AVX2)
// exp_f32 on 8 lanes.
VLM_VEC_INLINE __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3365447504f), magic = _mm256_set1_ps(12582912.f);
  __m256 xc = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), x);  // NaN stays NaN (2nd operand)
  xc = _mm256_max_ps(lo, xc);
  __m256 t = _mm256_fmadd_ps(xc, _mm256_set1_ps(1.44269504088896341f), magic);
  __m256 n = _mm256_sub_ps(t, magic);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  __m256i ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B400000));
  __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ni, _mm256_set1_epi32(127)), 23));
  __m256 y = _mm256_mul_ps(p, scale);
  return _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
}

// Sum of the 8 lanes in a fixed order.
VLM_VEC_INLINE float hsum8(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}

// Max of the 8 lanes.
VLM_VEC_INLINE float hmax8(__m256 v) {
  __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_max_ps(a, _mm_movehl_ps(a, a));
  a = _mm_max_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}
#endif

}  // namespace vec
}  // namespace vlm
