// reduce family, CPU: sum / mean / max over axes, the max gradient, sum of squares.
//
// The axes of x split into a kept group (one per output element, M in all) and a
// reduced group (R elements per output); within each group, dims laid out back to
// back are merged and size-1 dims dropped. Three schedules, each with a fixed order
// per output element that does not depend on the thread count:
//  - rows:    threads split the outputs; each output walks its R elements in
//             row-major order (a contiguous inner run uses two vector accumulators
//             per 2048-element block, lanes combined pairwise, blocks added in float64);
//  - columns: when the innermost kept dim is contiguous in x (sum over a batch axis,
//             bias gradients), threads split blocks of adjacent outputs and each block
//             adds whole reduced rows in row-major order into float64 lanes;
//  - chunks:  one output over a large tensor: fixed 32768-element chunks reduce in
//             parallel and their partials are combined in chunk order.
#pragma GCC optimize("no-trapping-math")  // lets the max selects vectorise (see elementwise.cc)

#include "ops/reduce.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include "core/iter.h"
#include "core/parallel.h"
#include "ops/copy.h"

namespace vlm {

bool parse_reduce_op(const std::string& s, ReduceOp& out) {
  if (s == "sum") out = ReduceOp::Sum;
  else if (s == "mean") out = ReduceOp::Mean;
  else if (s == "max") out = ReduceOp::Max;
  else return false;
  return true;
}

Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& axes, bool keepdim) {
  Shape out;
  for (size_t d = 0; d < shape.size(); ++d) {
    bool red = std::find(axes.begin(), axes.end(), static_cast<int64_t>(d)) != axes.end();
    if (!red) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

namespace {

constexpr int kMaxD = 17;
constexpr int64_t kChunk = 32768;  // elements per chunk in the chunked schedule
constexpr int64_t kBlock = 2048;   // elements per float lane block before a float64 add
constexpr int64_t kCols = 256;     // outputs per block in the column schedule

// A group of merged dims with two stride sets (0: x, 1: a companion such as dx).
struct Dims {
  int n = 0;
  int64_t size[kMaxD];
  int64_t st[2][kMaxD];
  int64_t numel() const {
    int64_t r = 1;
    for (int k = 0; k < n; ++k) r *= size[k];
    return r;
  }
};

Dims group(const std::vector<int64_t>& dims, const Shape& shape, const Shape& s0, const Shape& s1) {
  Dims g;
  for (int64_t d : dims) {
    if (shape[d] == 1) continue;
    if (g.n > 0 && g.st[0][g.n - 1] == s0[d] * shape[d] && g.st[1][g.n - 1] == s1[d] * shape[d]) {
      g.size[g.n - 1] *= shape[d];
      g.st[0][g.n - 1] = s0[d];
      g.st[1][g.n - 1] = s1[d];
    } else {
      g.size[g.n] = shape[d];
      g.st[0][g.n] = s0[d];
      g.st[1][g.n] = s1[d];
      ++g.n;
    }
  }
  if (g.n == 0) {
    g.n = 1;
    g.size[0] = 1;
    g.st[0][0] = g.st[1][0] = 0;
  }
  return g;
}

// Row-major walk over the first `n` dims of a group, tracking both offsets.
struct Cursor {
  const Dims* g;
  int n;
  int64_t idx[kMaxD] = {};
  int64_t off[2] = {0, 0};
  Cursor(const Dims& d, int ndims) : g(&d), n(ndims) {}
  void seek(int64_t lin) {
    off[0] = off[1] = 0;
    for (int k = n - 1; k >= 0; --k) {
      idx[k] = lin % g->size[k];
      lin /= g->size[k];
      off[0] += idx[k] * g->st[0][k];
      off[1] += idx[k] * g->st[1][k];
    }
  }
  void next() {
    for (int k = n - 1; k >= 0; --k) {
      off[0] += g->st[0][k];
      off[1] += g->st[1][k];
      if (++idx[k] < g->size[k]) return;
      off[0] -= g->st[0][k] * g->size[k];
      off[1] -= g->st[1][k] * g->size[k];
      idx[k] = 0;
    }
  }
};

// ---- run kernels: one run of n elements with stride s ------------------------------

// Contiguous runs use GCC vector types (two 32-byte accumulators) so the lane order is
// explicit: the same for every call site and thread count.
template <typename T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(32))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(32))); };
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int kLanes = 32 / sizeof(T);

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
double sum_run(const T* p, int64_t n, int64_t s) {
  double total = 0;
  if (s != 1) {
    for (int64_t i = 0; i < n; ++i) total += static_cast<double>(p[i * s]);
    return total;
  }
  constexpr int W = kLanes<T>;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t m = std::min(kBlock, n - b);
    const T* q = p + b;
    Vec<T> a0 = {}, a1 = {};
    int64_t i = 0;
    for (; i + 2 * W <= m; i += 2 * W) {
      a0 += load(q + i);
      a1 += load(q + i + W);
    }
    a0 += a1;
    for (int w = W / 2; w >= 1; w /= 2)
      for (int j = 0; j < w; ++j) a0[j] += a0[j + w];
    T tail = 0;
    for (; i < m; ++i) tail += q[i];
    total += static_cast<double>(a0[0]) + static_cast<double>(tail);
  }
  return total;
}

// max that lets NaN win (like torch.max): once m is NaN it stays NaN.
template <typename T>
inline T maxsel(T m, T v) {
  T r = v > m ? v : m;
  return v != v ? v : r;
}

template <typename T>
T max_run(const T* p, int64_t n, int64_t s, T m) {
  if (s != 1) {
    for (int64_t i = 0; i < n; ++i) m = maxsel(m, p[i * s]);
    return m;
  }
  constexpr int W = kLanes<T>;
  Vec<T> a0, a1;
  for (int j = 0; j < W; ++j) a0[j] = a1[j] = -std::numeric_limits<T>::infinity();
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const Vec<T> v0 = load(p + i), v1 = load(p + i + W);
    a0 = v0 > a0 ? v0 : a0;
    a0 = v0 != v0 ? v0 : a0;
    a1 = v1 > a1 ? v1 : a1;
    a1 = v1 != v1 ? v1 : a1;
  }
  for (int j = 0; j < W; ++j) {
    m = maxsel(m, a0[j]);
    m = maxsel(m, a1[j]);
  }
  for (; i < n; ++i) m = maxsel(m, p[i]);
  return m;
}

// Squares summed in float64 lanes.
template <typename T>
double sq_run(const T* p, int64_t n, int64_t s) {
  double total = 0;
  if (s != 1) {
    for (int64_t i = 0; i < n; ++i) {
      double v = static_cast<double>(p[i * s]);
      total += v * v;
    }
    return total;
  }
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      double v = static_cast<double>(p[i + j]);
      acc[j] += v * v;
    }
  for (int w = 4; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  for (; i < n; ++i) {
    double v = static_cast<double>(p[i]);
    total += v * v;
  }
  return acc[0] + total;
}

// ---- schedules ---------------------------------------------------------------------

template <typename T>
T finish(ReduceOp op, double sum, int64_t R) {
  return static_cast<T>(op == ReduceOp::Mean ? sum / static_cast<double>(R) : sum);
}

template <typename T>
void rows(ReduceOp op, const T* x, T* out, const Dims& k, const Dims& r, int64_t M, int64_t R) {
  const int rn = r.n;
  const int64_t L = r.size[rn - 1], s = r.st[0][rn - 1];
  const int64_t outer = R / L;
  const int64_t grain = std::max<int64_t>(1, kChunk / R);
  parallel_for(M, grain, [&](int64_t b, int64_t e) {
    Cursor kc(k, k.n);
    kc.seek(b);
    for (int64_t o = b; o < e; ++o, kc.next()) {
      const T* base = x + kc.off[0];
      Cursor rc(r, rn - 1);
      if (op == ReduceOp::Max) {
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t q = 0; q < outer; ++q, rc.next()) m = max_run(base + rc.off[0], L, s, m);
        out[o] = m;
      } else {
        double t = 0;
        for (int64_t q = 0; q < outer; ++q, rc.next()) t += sum_run(base + rc.off[0], L, s);
        out[o] = finish<T>(op, t, R);
      }
    }
  });
}

// The innermost kept dim is contiguous in x: blocks of up to kCols adjacent outputs
// add whole reduced rows, in row-major reduced order.
template <typename T>
void columns(ReduceOp op, const T* x, T* out, const Dims& k, const Dims& r, int64_t M, int64_t R) {
  const int64_t Lk = k.size[k.n - 1];
  const int64_t nb = (Lk + kCols - 1) / kCols;
  const int64_t units = (M / Lk) * nb;
  const int64_t grain = std::max<int64_t>(1, kChunk / (std::min(Lk, kCols) * R));
  parallel_for(units, grain, [&](int64_t b, int64_t e) {
    Cursor kc(k, k.n - 1);
    for (int64_t u = b; u < e; ++u) {
      const int64_t ko = u / nb, j0 = (u % nb) * kCols;
      const int64_t len = std::min(kCols, Lk - j0);
      kc.seek(ko);
      const T* base = x + kc.off[0] + j0;
      T* o = out + ko * Lk + j0;
      Cursor rc(r, r.n);
      if (op == ReduceOp::Max) {
        T acc[kCols];
        for (int64_t j = 0; j < len; ++j) acc[j] = -std::numeric_limits<T>::infinity();
        for (int64_t q = 0; q < R; ++q, rc.next()) {
          const T* p = base + rc.off[0];
          for (int64_t j = 0; j < len; ++j) acc[j] = maxsel(acc[j], p[j]);
        }
        for (int64_t j = 0; j < len; ++j) o[j] = acc[j];
      } else {
        double acc[kCols];
        for (int64_t j = 0; j < len; ++j) acc[j] = 0;
        for (int64_t q = 0; q < R; ++q, rc.next()) {
          const T* p = base + rc.off[0];
          for (int64_t j = 0; j < len; ++j) acc[j] += static_cast<double>(p[j]);
        }
        for (int64_t j = 0; j < len; ++j) o[j] = finish<T>(op, acc[j], R);
      }
    }
  });
}

// Fixed chunks of x's row-major order reduced in parallel, partials combined in order.
// f(run pointer, n, stride, partial&) accumulates one run into a chunk's partial.
template <typename T, typename P, typename F>
std::vector<P> chunk_partials(const Tensor& x, P init, F f) {
  StridedLayout<1> lay(x.shape, {&x.strides});
  const int64_t n = x.numel();
  const int64_t nch = (n + kChunk - 1) / kChunk;
  std::vector<P> part(static_cast<size_t>(nch), init);
  const T* base = x.data<T>();
  parallel_for(nch, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      P acc = init;
      lay.runs(c * kChunk, std::min(n, (c + 1) * kChunk),
               [&](const std::array<int64_t, 1>& off, const std::array<int64_t, 1>& in, int64_t len) {
                 f(base + off[0], len, in[0], acc);
               });
      part[static_cast<size_t>(c)] = acc;
    }
  });
  return part;
}

template <typename T>
void reduce_typed(ReduceOp op, const Tensor& x, const std::vector<int64_t>& axes, Tensor& out, int64_t M, int64_t R) {
  T* o = out.data<T>();
  if (R == 0) {  // empty groups: sum 0, mean NaN (max is refused by the binding)
    const T v = op == ReduceOp::Sum ? T(0) : std::numeric_limits<T>::quiet_NaN();
    for (int64_t i = 0; i < M; ++i) o[i] = v;
    return;
  }
  const T* xp = x.data<T>();
  if (M == 1 && R >= 2 * kChunk) {
    if (op == ReduceOp::Max) {
      auto part = chunk_partials<T>(x, -std::numeric_limits<T>::infinity(),
                                    [](const T* p, int64_t n, int64_t s, T& m) { m = max_run(p, n, s, m); });
      T m = -std::numeric_limits<T>::infinity();
      for (T v : part) m = maxsel(m, v);
      o[0] = m;
    } else {
      auto part = chunk_partials<T>(x, 0.0, [](const T* p, int64_t n, int64_t s, double& t) { t += sum_run(p, n, s); });
      double t = 0;
      for (double v : part) t += v;
      o[0] = finish<T>(op, t, R);
    }
    return;
  }
  std::vector<int64_t> kept;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (std::find(axes.begin(), axes.end(), d) == axes.end()) kept.push_back(d);
  Dims k = group(kept, x.shape, x.strides, x.strides);
  Dims r = group(axes, x.shape, x.strides, x.strides);
  if (k.st[0][k.n - 1] == 1 && k.size[k.n - 1] >= 8 && r.st[0][r.n - 1] != 1) columns<T>(op, xp, o, k, r, M, R);
  else rows<T>(op, xp, o, k, r, M, R);
}

template <typename T>
void max_backward_typed(const Tensor& x, const std::vector<int64_t>& axes, const Tensor& gy, Tensor& dx, int64_t M, int64_t R) {
  std::vector<int64_t> kept;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (std::find(axes.begin(), axes.end(), d) == axes.end()) kept.push_back(d);
  Dims k = group(kept, x.shape, x.strides, dx.strides);
  Dims r = group(axes, x.shape, x.strides, dx.strides);
  Tensor g = contiguous(gy);
  const T* gp = g.data<T>();
  const T* xp = x.data<T>();
  T* dp = dx.data<T>();
  const int rn = r.n;
  const int64_t L = r.size[rn - 1], s = r.st[0][rn - 1], ds = r.st[1][rn - 1];
  const int64_t outer = R / L;
  parallel_for(M, std::max<int64_t>(1, kChunk / R), [&](int64_t b, int64_t e) {
    Cursor kc(k, k.n);
    kc.seek(b);
    for (int64_t o = b; o < e; ++o, kc.next()) {
      Cursor rc(r, rn - 1);
      bool have = false;
      T m = 0;
      int64_t at = 0;
      for (int64_t q = 0; q < outer; ++q, rc.next()) {
        const T* p = xp + kc.off[0] + rc.off[0];
        const int64_t d0 = kc.off[1] + rc.off[1];
        for (int64_t i = 0; i < L; ++i) {
          const T v = p[i * s];
          // strictly greater keeps the first arg-max; the first NaN wins and stays
          if (!have || v > m || (v != v && m == m)) {
            have = true;
            m = v;
            at = d0 + i * ds;
          }
        }
      }
      dp[at] = gp[o];
    }
  });
}

}  // namespace

namespace cpu {

Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  Tensor out = Tensor::empty(reduced_shape(x.shape, axes, keepdim), x.dtype, Device::CPU);
  const int64_t M = out.numel();
  int64_t R = 1;
  for (int64_t a : axes) R *= x.shape[a];
  if (M == 0) return out;
  dispatch_float(x.dtype, [&](auto zero) { reduce_typed<decltype(zero)>(op, x, axes, out, M, R); });
  return out;
}

Tensor reduce_max_backward(const Tensor& x, const std::vector<int64_t>& axes, const Tensor& gy) {
  Tensor dx = Tensor::empty(x.shape, x.dtype, Device::CPU);
  const int64_t n = dx.numel();
  if (n == 0) return dx;
  std::memset(dx.raw(), 0, static_cast<size_t>(n) * dtype_size(dx.dtype));
  int64_t R = 1;
  for (int64_t a : axes) R *= x.shape[a];
  const int64_t M = n / R;
  dispatch_float(x.dtype, [&](auto zero) { max_backward_typed<decltype(zero)>(x, axes, gy, dx, M, R); });
  return dx;
}

double sum_squares(const Tensor& x) {
  double total = 0;
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    auto part = chunk_partials<T>(x, 0.0, [](const T* p, int64_t n, int64_t s, double& t) { t += sq_run(p, n, s); });
    for (double v : part) total += v;
  });
  return total;
}

}  // namespace cpu
}  // namespace vlm
