// gather family, CPU. Selects copy elements of any dtype (as raw 1/4/8-byte words);
// the adds (the backward) split work over destinations only, so no two tasks ever
// write the same element and every element sums its sources in ascending order.
#include "ops/gather.h"
#include <algorithm>
#include <cstdint>
#include <vector>
#include "core/parallel.h"

namespace vlm {
namespace cpu {
namespace {

// Calls f(E{}) with E an unsigned word of the dtype's size (copies need no arithmetic).
template <typename F>
void dispatch_word(DType d, F&& f) {
  switch (dtype_size(d)) {
    case 1: f(uint8_t{}); break;
    case 8: f(uint64_t{}); break;
    default: f(uint32_t{}); break;
  }
}

void split_axis(const Shape& s, int64_t axis, int64_t& outer, int64_t& n, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= s[d];
  n = s[axis];
  for (size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
}

// Offsets, under `strides`, of every multi-index of shape[from, to) in row-major order.
std::vector<int64_t> offsets(const Shape& shape, const Shape& strides, size_t from, size_t to) {
  std::vector<int64_t> off{0};
  for (size_t d = from; d < to; ++d) {
    std::vector<int64_t> next;
    next.reserve(off.size() * shape[d]);
    for (int64_t base : off)
      for (int64_t i = 0; i < shape[d]; ++i) next.push_back(base + i * strides[d]);
    off.swap(next);
  }
  return off;
}

// Number of destination-row ranges to split an add into, when the other dims give
// too few tasks for the threads (any value gives the same result).
int64_t dest_ranges(int64_t tasks, int64_t n) {
  int64_t nt = num_threads();
  if (tasks >= 4 * nt) return 1;
  return std::clamp<int64_t>(4 * nt / std::max<int64_t>(tasks, 1), 1, std::max<int64_t>(n, 1));
}

constexpr int64_t kChunk = 512;  // inner columns per add task

}  // namespace

// O outer, N axis, I inner, M indices: x [O, N, I] -> out [O, M, I]
void index_select(const Tensor& x, int64_t axis, const Tensor& index, Tensor& out) {
  int64_t O, N, I;
  split_axis(x.shape, axis, O, N, I);
  const int64_t M = index.numel();
  const int32_t* idx = index.data<int32_t>();
  dispatch_word(x.dtype, [&](auto zero) {
    using E = decltype(zero);
    const E* xp = static_cast<const E*>(x.raw());
    E* op = static_cast<E*>(out.raw());
    parallel_for(O * M, std::max<int64_t>(1, 16384 / std::max<int64_t>(I, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        int64_t o = r / M, j = r % M;
        const E* s = xp + (o * N + idx[j]) * I;
        E* d = op + r * I;
        for (int64_t k = 0; k < I; ++k) d[k] = s[k];
      }
    });
  });
}

// O outer, N axis, I inner, M indices: out [O, N, I] += src [O, M, I] at rows index[j]
void index_add(Tensor& out, int64_t axis, const Tensor& index, const Tensor& src) {
  int64_t O, N, I;
  split_axis(out.shape, axis, O, N, I);
  const int64_t M = index.numel();
  const int32_t* idx = index.data<int32_t>();
  const int64_t kc = (I + kChunk - 1) / kChunk;
  const int64_t R = dest_ranges(O * kc, N);
  dispatch_float(out.dtype, [&](auto zero) {
    using T = decltype(zero);
    T* op = out.data<T>();
    const T* sp = src.data<T>();
    parallel_for(O * kc * R, 1, [&](int64_t b, int64_t e) {
      for (int64_t task = b; task < e; ++task) {
        int64_t o = task / (kc * R), c = (task / R) % kc, rr = task % R;
        int64_t k0 = c * kChunk, w = std::min(kChunk, I - k0);
        int64_t lo = N * rr / R, hi = N * (rr + 1) / R;
        for (int64_t j = 0; j < M; ++j) {
          int64_t dst = idx[j];
          if (dst < lo || dst >= hi) continue;
          T* d = op + (o * N + dst) * I + k0;
          const T* s = sp + (o * M + j) * I + k0;
          for (int64_t k = 0; k < w; ++k) d[k] += s[k];
        }
      }
    });
  });
}

// S = index shape = out shape; O = prod S[:axis], M = S[axis], I = prod S[axis+1:]
void gather(const Tensor& x, int64_t axis, const Tensor& index, Tensor& out) {
  const Shape& S = index.shape;
  int64_t O, M, I;
  split_axis(S, axis, O, M, I);
  if (O * M * I == 0) return;
  std::vector<int64_t> xo = offsets(S, x.strides, 0, axis), xi = offsets(S, x.strides, axis + 1, S.size());
  const int64_t xs = x.strides[axis];
  const int32_t* idx = index.data<int32_t>();
  dispatch_word(x.dtype, [&](auto zero) {
    using E = decltype(zero);
    const E* xp = static_cast<const E*>(x.raw());
    E* op = static_cast<E*>(out.raw());
    parallel_for(O * M, std::max<int64_t>(1, 16384 / I), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const E* base = xp + xo[r / M];
        const int32_t* ir = idx + r * I;
        E* d = op + r * I;
        for (int64_t k = 0; k < I; ++k) d[k] = base[ir[k] * xs + xi[k]];
      }
    });
  });
}

// S = index shape = src shape; out any shape of the same rank (contiguous)
void scatter_add(Tensor& out, int64_t axis, const Tensor& index, const Tensor& src) {
  const Shape& S = index.shape;
  int64_t O, M, I;
  split_axis(S, axis, O, M, I);
  if (O * M * I == 0) return;
  std::vector<int64_t> oo = offsets(S, out.strides, 0, axis), oi = offsets(S, out.strides, axis + 1, S.size());
  const int64_t os = out.strides[axis], N = out.shape[axis];
  const int32_t* idx = index.data<int32_t>();
  const int64_t kc = (I + kChunk - 1) / kChunk;
  const int64_t R = dest_ranges(O * kc, N);
  dispatch_float(out.dtype, [&](auto zero) {
    using T = decltype(zero);
    T* op = out.data<T>();
    const T* sp = src.data<T>();
    parallel_for(O * kc * R, 1, [&](int64_t b, int64_t e) {
      for (int64_t task = b; task < e; ++task) {
        int64_t o = task / (kc * R), c = (task / R) % kc, rr = task % R;
        int64_t k0 = c * kChunk, k1 = std::min(I, k0 + kChunk);
        int64_t lo = N * rr / R, hi = N * (rr + 1) / R;
        T* base = op + oo[o];
        for (int64_t j = 0; j < M; ++j) {
          const int64_t row = (o * M + j) * I;
          for (int64_t k = k0; k < k1; ++k) {
            int64_t dst = idx[row + k];
            if (dst < lo || dst >= hi) continue;
            base[dst * os + oi[k]] += sp[row + k];
          }
        }
      }
    });
  });
}

}  // namespace cpu
}  // namespace vlm
