// normalize family, CPU: L2 normalisation along any axis, forward and backward. Lanes
// with inner > 1 are transposed through a per-thread tile so the row kernels read
// contiguous data; sums use 16 float64 partials in a fixed order (thread-count independent).
#include "ops/normalize.h"
#include <omp.h>
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>
#include "core/lanes.h"
#include "core/parallel.h"

namespace vlm {
namespace cpu {
namespace {


template <typename T>
double norm_of(const T* x, int64_t n) {
  return std::sqrt(sum_fixed<double>(n, [&](int64_t i) {
    double v = static_cast<double>(x[i]);
    return v * v;
  }));
}

template <typename T>
void forward_row(const T* x, T* y, int64_t n, double eps) {
  const T inv = static_cast<T>(1.0 / std::max(norm_of(x, n), eps));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv;
}

template <typename T>
void backward_row(const T* x, const T* y, const T* gy, T* gx, int64_t n, double eps) {
  const double nrm = norm_of(x, n);
  if (nrm > eps) {
    const T d = static_cast<T>(sum_fixed<double>(n, [&](int64_t i) { return static_cast<double>(gy[i]) * y[i]; }));
    const T inv = static_cast<T>(1.0 / nrm);
    for (int64_t i = 0; i < n; ++i) gx[i] = (gy[i] - y[i] * d) * inv;
  } else {  // the clamp is active: y = x / eps is linear in x
    const T inv = static_cast<T>(1.0 / eps);
    for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * inv;
  }
}

}  // namespace

// x, y: contiguous, shape S; lanes of n = S[axis]
void l2_normalize_forward(const Tensor& x, Tensor& y, int64_t axis, double eps) {
  int64_t outer, n, inner;
  split_axis(x.shape, axis, outer, n, inner);
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    for_each_lane<T, 1, 1>(outer, n, inner, {x.data<T>()}, {y.data<T>()},
                           [&](const std::array<const T*, 1>& i, const std::array<T*, 1>& o) {
                             forward_row(i[0], o[0], n, eps);
                           });
  });
}

// x, y, gy, gx: contiguous, shape S; lanes of n = S[axis]
void l2_normalize_backward(const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx, int64_t axis, double eps) {
  int64_t outer, n, inner;
  split_axis(x.shape, axis, outer, n, inner);
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    for_each_lane<T, 3, 1>(outer, n, inner, {x.data<T>(), y.data<T>(), gy.data<T>()}, {gx.data<T>()},
                           [&](const std::array<const T*, 3>& i, const std::array<T*, 1>& o) {
                             backward_row(i[0], i[1], i[2], o[0], n, eps);
                           });
  });
}

}  // namespace cpu
}  // namespace vlm
