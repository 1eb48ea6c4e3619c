// Row helpers shared by the normalisation-style kernels (softmax, normalize,
// layer_norm, batch_norm): a fixed-order sum, and iteration over the lanes of an
// axis. Both are independent of the thread count, which keeps results reproducible.
#pragma once
#include <omp.h>
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>
#include "core/parallel.h"
#include "core/tensor.h"

namespace vlm {

constexpr int kAcc = 16;

// sum of f(i) for i in [0, n) with kAcc partial sums combined pairwise: a fixed order.
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

// ---- lanes of [outer, n, inner] ------------------------------------------------------

inline void split_axis(const Shape& s, int64_t axis, int64_t& outer, int64_t& n, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= s[d];
  n = s[axis];
  for (size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
}

// Calls row(in_ptrs, out_ptrs) on every lane with contiguous pointers. For inner > 1
// up to `tile` lanes are gathered into per-thread scratch (reads of `tile` adjacent
// elements), processed, and scattered back.
template <typename T, size_t NI, size_t NO, typename F>
void for_each_lane(int64_t outer, int64_t n, int64_t inner, std::array<const T*, NI> in,
                   std::array<T*, NO> out, F&& row) {
  if (outer == 0 || n == 0 || inner == 0) return;
  if (inner == 1) {
    int64_t grain = std::max<int64_t>(1, 16384 / n);
    parallel_for(outer, grain, [&](int64_t b, int64_t e) {
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
  // Allocated here, outside the parallel region (an allocation failure must not throw inside it).
  std::vector<std::vector<T>> scratch(nt, std::vector<T>(static_cast<size_t>((NI + NO) * tile * n)));
  int64_t grain = std::max<int64_t>(1, 16384 / (n * tile));
  parallel_for(outer * tiles, grain, [&](int64_t b, int64_t e) {
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

}  // namespace vlm
