// Strided N-d iteration shared by the elementwise kernels: operands are views of one
// broadcast shape (a broadcast dimension has stride 0). Dimensions that are laid out
// back to back in every operand are merged first, so contiguous tensors become one
// flat run.
#pragma once
#include <array>
#include <cstdint>
#include <vector>
#include "core/parallel.h"
#include "core/tensor.h"

namespace vlm {

template <size_t K>
struct StridedLayout {
  Shape shape;                        // merged shape
  std::array<Shape, K> strides;       // per operand, merged

  StridedLayout(const Shape& s, const std::array<const Shape*, K>& st) {
    for (size_t d = 0; d < s.size(); ++d) {
      if (s[d] == 1) continue;  // size-1 dims never move an offset
      bool merge = !shape.empty();
      for (size_t k = 0; k < K && merge; ++k)
        merge = strides[k].back() == (*st[k])[d] * s[d];
      if (merge) {
        shape.back() *= s[d];
        for (size_t k = 0; k < K; ++k) strides[k].back() = (*st[k])[d];
      } else {
        shape.push_back(s[d]);
        for (size_t k = 0; k < K; ++k) strides[k].push_back((*st[k])[d]);
      }
    }
    if (shape.empty()) {
      shape.push_back(1);
      for (size_t k = 0; k < K; ++k) strides[k].push_back(0);
    }
  }
  int64_t numel() const { return shape_numel(shape); }

  // Calls f(offsets, inner_strides, n) for each run of n elements along the last
  // merged dim within the linear range [begin, end).
  template <typename F>
  void runs(int64_t begin, int64_t end, F&& f) const {
    const int64_t nd = static_cast<int64_t>(shape.size());
    std::vector<int64_t> idx(nd);
    int64_t rem = begin;
    for (int64_t d = nd - 1; d >= 0; --d) {
      idx[d] = rem % shape[d];
      rem /= shape[d];
    }
    std::array<int64_t, K> off{}, inner{};
    for (size_t k = 0; k < K; ++k) {
      inner[k] = strides[k][nd - 1];
      for (int64_t d = 0; d < nd; ++d) off[k] += idx[d] * strides[k][d];
    }
    int64_t pos = begin;
    const int64_t last = shape[nd - 1];
    while (pos < end) {
      int64_t n = std::min(last - idx[nd - 1], end - pos);
      f(off, inner, n);
      pos += n;
      // advance the multi-index by n along the last dim, carrying into outer dims
      idx[nd - 1] += n;
      for (size_t k = 0; k < K; ++k) off[k] += n * inner[k];
      for (int64_t d = nd - 1; d > 0 && idx[d] == shape[d]; --d) {
        idx[d] = 0;
        idx[d - 1] += 1;
        for (size_t k = 0; k < K; ++k) off[k] += strides[k][d - 1] - shape[d] * strides[k][d];
      }
    }
  }

  // Parallel over the whole range; grain in elements.
  template <typename F>
  void parallel_runs(F&& f, int64_t grain = 32768) const {
    parallel_for(numel(), grain, [&](int64_t b, int64_t e) { runs(b, e, f); });
  }
};

}  // namespace vlm
