// normalize family, CPU: L2 normalisation along any axis, forward and backward. Lanes
// with inner > 1 are transposed through a per-thread tile so the row kernels read
// contiguous data; sums use 16 float64 partials in a fixed order (thread-count independent).
#include "ops/normalize.h"
#include <omp.h>
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>
#include "core/parallel.h"

namespace vlm {
namespace cpu {
namespace {

constexpr int kAcc = 16;

template <typename A, typename F>
inline A sum_fixed(int64_t n, F&& f) {
  A acc[kAcc] = {};
  int64_t i = 0;
  for (; i + kAcc <= n; i += kAcc)
    for (int j = 0; j < kAcc; ++j) acc[j] += static_cast<A>(f(i + j));
  for (int j = 0; i < n; ++i, ++j) acc[j] += static_cast<A>(f(i));
  for (int w = kAcc / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

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

void split_axis(const Shape& s, int64_t axis, int64_t& outer, int64_t& n, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= s[d];
  n = s[axis];
  for (size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
}

// Calls row(in_ptrs, out_ptrs) on every lane of [outer, n, inner] with contiguous
// pointers; for inner > 1 lanes go through per-thread scratch tiles.
template <typename T, size_t NI, size_t NO, typename F>
void for_each_lane(int64_t outer, int64_t n, int64_t inner, std::array<const T*, NI> in,
                   std::array<T*, NO> out, F&& row) {
  if (outer == 0 || n == 0 || inner == 0) return;
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, 16384 / n), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        std::array<const T*, NI> ip;
        std::array<T*, NO> op;
        for (size_t q = 0; q < NI; ++q) ip[q] = in[q] + r * n;
        for (size_t q = 0; q < NO; ++q) op[q] = out[q] + r * n;
        row(ip, op);
      }
    });
    return;
  }
  const int64_t tile = std::clamp<int64_t>(16384 / n, 1, 16);
  const int64_t tiles = (inner + tile - 1) / tile;
  const int nt = std::max(num_threads(), omp_get_max_threads());
  std::vector<std::vector<T>> scratch(nt, std::vector<T>(static_cast<size_t>((NI + NO) * tile * n)));
  parallel_for(outer * tiles, std::max<int64_t>(1, 16384 / (n * tile)), [&](int64_t b, int64_t e) {
    T* buf = scratch[omp_get_thread_num() % nt].data();
    for (int64_t task = b; task < e; ++task) {
      int64_t o = task / tiles, k0 = (task % tiles) * tile, w = std::min(tile, inner - k0);
      int64_t base = o * n * inner + k0;
      for (size_t q = 0; q < NI; ++q) {
        T* d = buf + q * tile * n;
        const T* s = in[q] + base;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t t = 0; t < w; ++t) d[t * n + i] = s[i * inner + t];
      }
      for (int64_t t = 0; t < w; ++t) {
        std::array<const T*, NI> ip;
        std::array<T*, NO> op;
        for (size_t q = 0; q < NI; ++q) ip[q] = buf + q * tile * n + t * n;
        for (size_t q = 0; q < NO; ++q) op[q] = buf + (NI + q) * tile * n + t * n;
        row(ip, op);
      }
      for (size_t q = 0; q < NO; ++q) {
        const T* s = buf + (NI + q) * tile * n;
        T* d = out[q] + base;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t t = 0; t < w; ++t) d[i * inner + t] = s[t * n + i];
      }
    }
  });
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
