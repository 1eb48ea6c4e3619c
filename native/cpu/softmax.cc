// softmax family, CPU: softmax / log-softmax forward and backward along any axis.
// Each lane (the `n` entries along the axis) is reduced in a fixed order with 16
// partial sums, so results do not depend on the thread count. Lanes with inner > 1
// are transposed through a small per-thread tile so the row kernels see contiguous data.
// float32 uses the polynomial exp of core/vec_math.h (Cephes expf, ~1 ulp; AVX2 lanes).
#include "ops/softmax.h"
#include <omp.h>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>
#include "core/lanes.h"
#include "core/parallel.h"
#include "core/vec_math.h"

namespace vlm {
namespace cpu {
namespace {

using vec::exp_f32;  // the float exp (core/vec_math.h)


// max of x[0..n) (NaN entries are skipped here; they propagate through exp later).
template <typename T>
inline T max_fixed(int64_t n, const T* x) {
  T acc[kAcc];
  for (int j = 0; j < kAcc; ++j) acc[j] = -std::numeric_limits<T>::infinity();
  int64_t i = 0;
  for (; i + kAcc <= n; i += kAcc)
    for (int j = 0; j < kAcc; ++j) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
  for (int j = 0; i < n; ++i, ++j) acc[j] = x[i] > acc[j] ? x[i] : acc[j];
  for (int w = kAcc / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] = acc[j + w] > acc[j] ? acc[j + w] : acc[j];
  return acc[0];
}

inline float exp_t(float x) { return exp_f32(x); }
inline double exp_t(double x) { return std::exp(x); }

// ---- one lane, contiguous ------------------------------------------------------------

template <typename T>
void forward_row(const T* x, T* y, int64_t n, bool log) {
  const T inf = std::numeric_limits<T>::infinity();
  T m = max_fixed(n, x);
  T shift = m == -inf ? T(0) : m;  // an all -inf lane: exp gives zeros, handled below
  if (log) {
    T s = sum_fixed<T>(n, [&](int64_t i) { return exp_t(x[i] - shift); });
    if (s == 0) {
      for (int64_t i = 0; i < n; ++i) y[i] = -inf;
      return;
    }
    T ls = std::log(s);
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - shift) - ls;
  } else {
    T s = sum_fixed<T>(n, [&](int64_t i) {
      T e = exp_t(x[i] - shift);
      y[i] = e;
      return e;
    });
    T inv = s == 0 ? T(0) : T(1) / s;  // NaN sum stays NaN
    for (int64_t i = 0; i < n; ++i) y[i] *= inv;
  }
}

template <typename T>
void backward_row(const T* y, const T* gy, T* gx, int64_t n, bool log) {
  if (log) {
    T s = sum_fixed<T>(n, [&](int64_t i) { return gy[i]; });
    for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] - exp_t(y[i]) * s;
  } else {
    T d = sum_fixed<T>(n, [&](int64_t i) { return gy[i] * y[i]; });
    for (int64_t i = 0; i < n; ++i) gx[i] = y[i] * (gy[i] - d);
  }
}

#if defined(__AVX2__) && defined(__FMA__)
// float32 lanes with AVX2: the compiler does not vectorise exp_f32 (its selects count as
// control flow under trapping math), so the rows use its 8-lane twin exp8 (core/vec_math.h).
using vec::exp8;
using vec::hmax8;
using vec::hsum8;

// sum over i of exp(x[i] - shift), also stored into y when y is non-null.
inline float exp_sum(const float* x, float* y, int64_t n, float shift) {
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
    __m256 e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), sh));
    if (y) {
      _mm256_storeu_ps(y + i, e0);
      _mm256_storeu_ps(y + i + 8, e1);
    }
    a0 = _mm256_add_ps(a0, e0);
    a1 = _mm256_add_ps(a1, e1);
  }
  float s = hsum8(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) {
    float e = exp_f32(x[i] - shift);
    if (y) y[i] = e;
    s += e;
  }
  return s;
}

template <>
void forward_row<float>(const float* x, float* y, int64_t n, bool log) {
  const float inf = std::numeric_limits<float>::infinity();
  __m256 m0 = _mm256_set1_ps(-inf), m1 = m0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + i));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + i + 8));
  }
  float m = hmax8(_mm256_max_ps(m0, m1));
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  const float shift = m == -inf ? 0.f : m;
  if (log) {
    float s = exp_sum(x, nullptr, n, shift);
    if (s == 0) {
      for (int64_t k = 0; k < n; ++k) y[k] = -inf;
      return;
    }
    const float ls = std::log(s);
    for (int64_t k = 0; k < n; ++k) y[k] = (x[k] - shift) - ls;
  } else {
    float s = exp_sum(x, y, n, shift);
    const float inv = s == 0 ? 0.f : 1.f / s;
    for (int64_t k = 0; k < n; ++k) y[k] *= inv;
  }
}

template <>
void backward_row<float>(const float* y, const float* gy, float* gx, int64_t n, bool log) {
  if (!log) {
    float d = sum_fixed<float>(n, [&](int64_t i) { return gy[i] * y[i]; });
    for (int64_t i = 0; i < n; ++i) gx[i] = y[i] * (gy[i] - d);
    return;
  }
  const float s = sum_fixed<float>(n, [&](int64_t i) { return gy[i]; });
  const __m256 sv = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(gx + i, _mm256_fnmadd_ps(exp8(_mm256_loadu_ps(y + i)), sv, _mm256_loadu_ps(gy + i)));
  for (; i < n; ++i) gx[i] = gy[i] - exp_f32(y[i]) * s;
}
#endif

}  // namespace

// x, y: contiguous, shape S; lanes of n = S[axis]
void softmax_forward(const Tensor& x, Tensor& y, int64_t axis, bool log) {
  int64_t outer, n, inner;
  split_axis(x.shape, axis, outer, n, inner);
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    for_each_lane<T, 1, 1>(outer, n, inner, {x.data<T>()}, {y.data<T>()},
                           [&](const std::array<const T*, 1>& i, const std::array<T*, 1>& o) {
                             forward_row(i[0], o[0], n, log);
                           });
  });
}

// y, gy, gx: contiguous, shape S; lanes of n = S[axis]
void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, int64_t axis, bool log) {
  int64_t outer, n, inner;
  split_axis(y.shape, axis, outer, n, inner);
  dispatch_float(y.dtype, [&](auto zero) {
    using T = decltype(zero);
    for_each_lane<T, 2, 1>(outer, n, inner, {y.data<T>(), gy.data<T>()}, {gx.data<T>()},
                           [&](const std::array<const T*, 2>& i, const std::array<T*, 1>& o) {
                             backward_row(i[0], i[1], o[0], n, log);
                           });
  });
}

}  // namespace cpu
}  // namespace vlm
