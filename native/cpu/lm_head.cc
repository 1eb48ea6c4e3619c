// lm_head family, CPU (see ops/lm_head.h for the formulas). One driver serves the
// three fused entry points:
//   forward           phase A only: logits tile by tile, online max / sum-exp -> lse, loss
//   forward_backward  phase A keeps the block's exp(z - tile max) tiles (one row block of
//                     logits, rows x V), then phase B turns them into dlogits in place
//                     and runs the two gradient GEMMs: 3 GEMMs per logit in all
//   backward          phase B only, recomputing each tile from the saved lse: 3 GEMMs
// Row blocks (of non-ignored rows, gathered contiguous) run one after another; inside a
// block the vocabulary is cut into tiles and the tiles into one contiguous slice per
// thread. A slice owns its rows of d(weight) and d(bias) (no races, no reduction) and a
// private rows x H partial of d(hidden); the partials are summed in slice order.
// Per-(row, tile) statistics are combined in tile order, so lse and the loss do not
// depend on the thread count. GEMMs inside the slices run single-threaded (gemm.h).
// The naive (materialised) path and the float64 reference live at the end.
#include "ops/lm_head.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>
#include "core/gemm.h"
#include "core/parallel.h"

namespace vlm {
namespace cpu {
namespace {

// exp for the softmax tiles. float: Cephes-style range reduction and degree-6
// polynomial (about 1 ulp), written so that `omp simd` loops vectorise it (glibc's
// vector expf needs -ffast-math). Inputs below -87 give 0; NaN stays NaN.
inline float exp_tile(float x) {
  const float xc = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::nearbyint(xc * 1.44269504088896341f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < -87.0f ? 0.0f : y * scale;
}
inline double exp_tile(double x) { return std::exp(x); }

// Scratch memory, counted by memory() like any tensor (benchmarks read the peak).
template <typename X>
X* scratch(std::vector<Tensor>& hold, int64_t n) {
  hold.push_back(Tensor::empty({std::max<int64_t>(n, 1) * static_cast<int64_t>(sizeof(X))}, DType::U8, Device::CPU));
  return static_cast<X*>(hold.back().storage->data);
}

// Max, sum and first arg-max of one tile row, and what phase B needs of it.
struct TileStat {
  double m;     // max logit in the tile
  double s;     // sum of exp(z - m) over the tile
  double sumz;  // sum of logits over the tile (label smoothing)
  int64_t arg;  // vocabulary index of the first max
};

enum class Mode { Forward, ForwardBackward, Backward };

// The inputs as raw pointers and strides.
template <typename T>
struct Problem {
  int64_t N, H, V;
  const T* h;
  int64_t hs0, hs1;
  const T* w;  // [V, H] contiguous
  const T* b;  // null when no bias
  int64_t bs;
  const int32_t* t;
  int64_t ts;

  Problem(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets)
      : N(hidden.shape[0]), H(hidden.shape[1]), V(weight.shape[0]), h(hidden.data<T>()), hs0(hidden.strides[0]),
        hs1(hidden.strides[1]), w(weight.data<T>()), b(bias ? bias->data<T>() : nullptr),
        bs(bias ? bias->strides[0] : 0), t(targets.data<int32_t>()), ts(targets.strides[0]) {}

  int64_t target(int64_t i) const { return t[i * ts]; }
  T bias(int64_t j) const { return b[j * bs]; }
  // Copies rows R[0..n) into out [n, H] (contiguous).
  void gather(const int64_t* R, int64_t n, T* out) const {
    parallel_for(n, 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const T* src = h + R[i] * hs0;
        T* dst = out + i * H;
        if (hs1 == 1) std::memcpy(dst, src, static_cast<size_t>(H) * sizeof(T));
        else for (int64_t k = 0; k < H; ++k) dst[k] = src[k * hs1];
      }
    });
  }
};

template <typename T>
void fill(Tensor* t, T v) {
  if (!t) return;
  T* p = t->data<T>();
  parallel_for(t->numel(), 1 << 16, [&](int64_t b, int64_t e) { std::fill(p + b, p + e, v); });
}

constexpr int64_t kTile = 512;                      // vocabulary entries per tile
constexpr int64_t kRowsStreaming = 256;             // rows per block when nothing is kept
constexpr int64_t kBlockBytes = int64_t{32} << 20;  // cap of the kept row block of logits

// N tokens, H hidden, V vocab; see the file header. lse is an output except in
// Backward mode, where it is the saved input.
template <typename T>
LmHeadStats run(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets,
                const LmHeadConfig& c, Mode mode, double grad_scale, Tensor* lse_t, Tensor* row_loss_t,
                const Tensor* row_grad_t, const LmHeadGrads& g) {
  const Problem<T> P(hidden, weight, bias, targets);
  const int64_t N = P.N, H = P.H, V = P.V;
  const double eps = c.label_smoothing;
  const bool grads = mode != Mode::Forward && (g.d_hidden || g.d_weight || g.d_bias);
  const bool keep = mode == Mode::ForwardBackward && grads;  // phase B reuses phase A's tiles

  std::vector<int64_t> rows;
  rows.reserve(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i)
    if (P.target(i) != c.ignore_index) rows.push_back(i);
  const int64_t nvalid = static_cast<int64_t>(rows.size());
  LmHeadStats st;
  st.valid = nvalid;

  // Ignored rows read 0 everywhere; d(weight) is written (beta = 0) by the first block.
  if (mode != Mode::Backward) fill<T>(lse_t, T(0));
  fill<T>(row_loss_t, T(0));
  fill<T>(g.d_hidden, T(0));
  fill<T>(g.d_bias, T(0));
  if (nvalid == 0) {
    fill<T>(g.d_weight, T(0));
    return st;
  }
  T* lse = lse_t ? lse_t->data<T>() : nullptr;
  T* row_loss = row_loss_t ? row_loss_t->data<T>() : nullptr;
  T* dH = g.d_hidden ? g.d_hidden->data<T>() : nullptr;
  T* dW = g.d_weight ? g.d_weight->data<T>() : nullptr;
  T* dB = g.d_bias ? g.d_bias->data<T>() : nullptr;
  const T* rg = row_grad_t ? row_grad_t->data<T>() : nullptr;
  const int64_t rgs = row_grad_t ? row_grad_t->strides[0] : 0;

  const int64_t Vb = std::min(V, c.vocab_chunk > 0 ? c.vocab_chunk : kTile);
  const int64_t ntiles = (V + Vb - 1) / Vb;
  int64_t Nc = c.row_chunk;
  if (Nc <= 0) {
    if (keep) Nc = std::clamp<int64_t>(kBlockBytes / (V * static_cast<int64_t>(sizeof(T))) / 8 * 8, 16, 128);
    else Nc = kRowsStreaming;
  }
  Nc = std::min(Nc, nvalid);
  const int64_t S = std::min<int64_t>(num_threads(), ntiles);  // slices of tiles, one per thread
  auto tile_begin = [&](int64_t s) { return ntiles * s / S; };

  std::vector<Tensor> hold;
  T* hc = scratch<T>(hold, Nc * H);
  T* block = keep ? scratch<T>(hold, Nc * V) : nullptr;          // tile t at block + nc * t * Vb
  T* tiles = keep ? nullptr : scratch<T>(hold, S * Nc * Vb);      // one private tile per slice
  TileStat* stats = mode != Mode::Backward ? scratch<TileStat>(hold, Nc * ntiles) : nullptr;
  double* zt = scratch<double>(hold, Nc);    // target logit of each block row
  double* lse_b = scratch<double>(hold, Nc);  // lse of each block row
  double* coef = scratch<double>(hold, Nc);   // d(objective)/d(loss_i)
  T* dh_part = dH ? scratch<T>(hold, S * Nc * H) : nullptr;
  const double base = grad_scale / (c.mean ? static_cast<double>(nvalid) : 1.0);

  // float32 GEMMs in bf16 (matmul precision medium): W is rounded once per call, each
  // block's rows once per block, each dz tile once for both of its products.
  bool bf = false;
  if constexpr (std::is_same_v<T, float>) bf = gemm_uses_bf16();
  std::vector<uint16_t> wh, hch;
  if constexpr (std::is_same_v<T, float>) {
    if (bf) {
      wh.resize(static_cast<size_t>(V * H));
      hch.resize(static_cast<size_t>(Nc * H));
      to_bf16(P.w, V, H, H, wh.data());
    }
  }
  // Z [nc, vb] = h W[j0 : j0 + vb]^T
  auto logits_tile = [&](int64_t nc, int64_t j0, int64_t vb, T* Z) {
    if constexpr (std::is_same_v<T, float>) {
      if (bf) return gemm(false, true, nc, vb, H, 1.f, hch.data(), H, wh.data() + j0 * H, H, 0.f, Z, vb);
    }
    gemm(false, true, nc, vb, H, T(1), hc, H, P.w + j0 * H, H, T(0), Z, vb);
  };
  // dW[j0 : j0 + vb] (+)= dz^T h and dh_part (+)= dz W[j0 : j0 + vb]
  auto grad_tiles = [&](int64_t nc, int64_t j0, int64_t vb, const T* Z, T beta_w, T* dhp, T beta_h) {
    if constexpr (std::is_same_v<T, float>) {
      if (bf) {
        thread_local std::vector<uint16_t> zh;
        if (zh.size() < static_cast<size_t>(nc * vb)) zh.resize(static_cast<size_t>(nc * vb));
        to_bf16(Z, nc, vb, vb, zh.data());
        if (dW) gemm(true, false, vb, H, nc, 1.f, zh.data(), vb, hch.data(), H, beta_w, dW + j0 * H, H);
        if (dhp) gemm(false, false, nc, H, vb, 1.f, zh.data(), vb, wh.data() + j0 * H, H, beta_h, dhp, H);
        return;
      }
    }
    if (dW) gemm(true, false, vb, H, nc, T(1), Z, vb, hc, H, beta_w, dW + j0 * H, H);
    if (dhp) gemm(false, false, nc, H, vb, T(1), Z, vb, P.w + j0 * H, H, beta_h, dhp, H);
  };

  for (int64_t r0 = 0, blk = 0; r0 < nvalid; r0 += Nc, ++blk) {
    const int64_t nc = std::min(Nc, nvalid - r0);
    const int64_t* R = rows.data() + r0;
    P.gather(R, nc, hc);
    if constexpr (std::is_same_v<T, float>) {
      if (bf) to_bf16(hc, nc, H, H, hch.data());
    }

    if (mode != Mode::Backward) {
      // Phase A: z = h W^T + b per tile; per row: max, sum z, first arg-max, target
      // logit, then z <- exp(z - max) in place and its sum.
      parallel_for(S, 1, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) {
          for (int64_t tt = tile_begin(s); tt < tile_begin(s + 1); ++tt) {
            const int64_t j0 = tt * Vb, vb = std::min(Vb, V - j0);
            T* Z = keep ? block + nc * j0 : tiles + s * Nc * Vb;
            logits_tile(nc, j0, vb, Z);
            for (int64_t i = 0; i < nc; ++i) {
              T* z = Z + i * vb;
              if (P.b)
                for (int64_t j = 0; j < vb; ++j) z[j] += P.bias(j0 + j);
              T m = -std::numeric_limits<T>::infinity(), sz = 0;
#pragma omp simd reduction(max : m) reduction(+ : sz)
              for (int64_t j = 0; j < vb; ++j) {
                m = std::max(m, z[j]);
                sz += z[j];
              }
              int64_t arg = 0;
              while (arg < vb && !(z[arg] == m)) ++arg;
              if (arg == vb) arg = 0;  // NaN row: no element equals the max
              const int64_t tj = P.target(R[i]) - j0;
              if (tj >= 0 && tj < vb) zt[i] = static_cast<double>(z[tj]);
              T se = 0;
#pragma omp simd reduction(+ : se)
              for (int64_t j = 0; j < vb; ++j) {
                const T e = exp_tile(z[j] - m);
                z[j] = e;
                se += e;
              }
              stats[i * ntiles + tt] = {static_cast<double>(m), static_cast<double>(se), static_cast<double>(sz), j0 + arg};
            }
          }
        }
      });
      // Combine the tiles of each row in tile order.
      parallel_for(nc, 32, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const TileStat* ts = stats + i * ntiles;
          double M = ts[0].m;
          int64_t arg = ts[0].arg;
          for (int64_t tt = 1; tt < ntiles; ++tt)
            if (ts[tt].m > M) { M = ts[tt].m; arg = ts[tt].arg; }
          double s = 0, sumz = 0;
          for (int64_t tt = 0; tt < ntiles; ++tt) {
            s += ts[tt].s * std::exp(ts[tt].m - M);
            sumz += ts[tt].sumz;
          }
          const double l = M + std::log(s);
          lse_b[i] = l;
          // The loss reuses coef[] as scratch until phase B needs it.
          coef[i] = l - (1 - eps) * zt[i] - eps * sumz / static_cast<double>(V);
          zt[i] = arg == P.target(R[i]) ? 1.0 : 0.0;
          if (lse) lse[R[i]] = static_cast<T>(l);
          if (row_loss) row_loss[R[i]] = static_cast<T>(coef[i]);
        }
      });
      for (int64_t i = 0; i < nc; ++i) {  // row order: the same sum on any thread count
        st.loss_sum += coef[i];
        st.correct += zt[i] != 0.0;
      }
    } else {
      for (int64_t i = 0; i < nc; ++i) lse_b[i] = static_cast<double>(lse[R[i]]);
    }
    if (!grads) continue;

    for (int64_t i = 0; i < nc; ++i) coef[i] = base * (rg ? static_cast<double>(rg[R[i] * rgs]) : 1.0);
    // Phase B: dlogits = coef * (softmax - (1 - eps) onehot - eps / V), then
    // dW[tile] (+)= dz^T h, db[tile] += colsum dz, dh_part[slice] (+)= dz W[tile].
    parallel_for(S, 1, [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        T* dhp = dh_part ? dh_part + s * Nc * H : nullptr;
        bool first = true;
        for (int64_t tt = tile_begin(s); tt < tile_begin(s + 1); ++tt) {
          const int64_t j0 = tt * Vb, vb = std::min(Vb, V - j0);
          T* Z;
          if (keep) {
            Z = block + nc * j0;
            for (int64_t i = 0; i < nc; ++i) {
              T* z = Z + i * vb;
              const T f = static_cast<T>(coef[i] * std::exp(stats[i * ntiles + tt].m - lse_b[i]));
              const T sub = static_cast<T>(coef[i] * eps / static_cast<double>(V));
#pragma omp simd
              for (int64_t j = 0; j < vb; ++j) z[j] = f * z[j] - sub;
            }
          } else {
            Z = tiles + s * Nc * Vb;
            logits_tile(nc, j0, vb, Z);
            for (int64_t i = 0; i < nc; ++i) {
              T* z = Z + i * vb;
              if (P.b)
                for (int64_t j = 0; j < vb; ++j) z[j] += P.bias(j0 + j);
              const T f = static_cast<T>(coef[i]), l = static_cast<T>(lse_b[i]);
              const T sub = static_cast<T>(coef[i] * eps / static_cast<double>(V));
#pragma omp simd
              for (int64_t j = 0; j < vb; ++j) z[j] = f * exp_tile(z[j] - l) - sub;
            }
          }
          for (int64_t i = 0; i < nc; ++i) {
            const int64_t tj = P.target(R[i]) - j0;
            if (tj >= 0 && tj < vb) Z[i * vb + tj] -= static_cast<T>(coef[i] * (1 - eps));
          }
          if (dB)
            for (int64_t i = 0; i < nc; ++i) {
              const T* z = Z + i * vb;
              T* db = dB + j0;
#pragma omp simd
              for (int64_t j = 0; j < vb; ++j) db[j] += z[j];
            }
          grad_tiles(nc, j0, vb, Z, blk == 0 ? T(0) : T(1), dhp, first ? T(0) : T(1));
          first = false;
        }
      }
    });
    if (dH)
      parallel_for(nc, 8, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          T* dst = dH + R[i] * H;
          std::memcpy(dst, dh_part + i * H, static_cast<size_t>(H) * sizeof(T));
          for (int64_t s = 1; s < S; ++s) {
            const T* src = dh_part + (s * Nc + i) * H;
#pragma omp simd
            for (int64_t k = 0; k < H; ++k) dst[k] += src[k];
          }
        }
      });
  }
  return st;
}

// ---- the naive materialised path ----------------------------------------------------

// N tokens, H hidden, V vocab. All N x V logits in one buffer, whole-matrix GEMMs.
template <typename T>
LmHeadStats naive(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets,
                  const LmHeadConfig& c, Tensor* row_loss_t, const LmHeadGrads& g) {
  const Problem<T> P(hidden, weight, bias, targets);
  const int64_t N = P.N, H = P.H, V = P.V;
  const double eps = c.label_smoothing;
  std::vector<Tensor> hold;
  std::vector<int64_t> all(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) all[i] = i;
  T* h = scratch<T>(hold, N * H);
  P.gather(all.data(), N, h);
  T* L = scratch<T>(hold, N * V);
  gemm(false, true, N, V, H, T(1), h, H, P.w, H, T(0), L, V);

  LmHeadStats st;
  for (int64_t i = 0; i < N; ++i) st.valid += P.target(i) != c.ignore_index;
  const double scale = c.mean ? (st.valid ? 1.0 / static_cast<double>(st.valid) : 0.0) : 1.0;
  std::vector<double> loss(static_cast<size_t>(N), 0.0);
  std::vector<char> hit(static_cast<size_t>(N), 0);
  parallel_for(N, 8, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T* z = L + i * V;
      if (P.b)
        for (int64_t j = 0; j < V; ++j) z[j] += P.bias(j);
      const int64_t t = P.target(i);
      if (t == c.ignore_index) {
        std::fill(z, z + V, T(0));
        continue;
      }
      T m = z[0];
      int64_t arg = 0;
      double sumz = 0;
      for (int64_t j = 0; j < V; ++j) {
        if (z[j] > m) { m = z[j]; arg = j; }
        sumz += z[j];
      }
      T se = 0;
#pragma omp simd reduction(+ : se)
      for (int64_t j = 0; j < V; ++j) se += exp_tile(z[j] - m);
      const double l = static_cast<double>(m) + std::log(static_cast<double>(se));
      loss[i] = l - (1 - eps) * static_cast<double>(z[t]) - eps * sumz / static_cast<double>(V);
      hit[i] = arg == t;
      const T f = static_cast<T>(scale), lt = static_cast<T>(l), sub = static_cast<T>(scale * eps / V);
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) z[j] = f * exp_tile(z[j] - lt) - sub;
      z[t] -= static_cast<T>(scale * (1 - eps));
    }
  });
  for (int64_t i = 0; i < N; ++i) {
    st.loss_sum += loss[i];
    st.correct += hit[i];
    if (row_loss_t) row_loss_t->data<T>()[i] = static_cast<T>(loss[i]);
  }
  if (g.d_hidden) gemm(false, false, N, H, V, T(1), L, V, P.w, H, T(0), g.d_hidden->data<T>(), H);
  if (g.d_weight) gemm(true, false, V, H, N, T(1), L, V, h, H, T(0), g.d_weight->data<T>(), H);
  if (g.d_bias) {
    T* db = g.d_bias->data<T>();
    parallel_for(V, 1024, [&](int64_t j0, int64_t j1) {
      std::fill(db + j0, db + j1, T(0));
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = j0; j < j1; ++j) db[j] += L[i * V + j];
    });
  }
  return st;
}

// ---- the float64 reference -------------------------------------------------------------

// N tokens, H hidden, V vocab. Obvious loops, one row at a time, all in double.
template <typename T>
LmHeadStats reference(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets,
                      const LmHeadConfig& c, Tensor* row_loss_t, const LmHeadGrads& g) {
  const Problem<T> P(hidden, weight, bias, targets);
  const int64_t N = P.N, H = P.H, V = P.V;
  const double eps = c.label_smoothing;
  double* rl = row_loss_t ? row_loss_t->data<double>() : nullptr;
  double* dH = g.d_hidden ? g.d_hidden->data<double>() : nullptr;
  double* dW = g.d_weight ? g.d_weight->data<double>() : nullptr;
  double* dB = g.d_bias ? g.d_bias->data<double>() : nullptr;
  if (rl) std::fill(rl, rl + N, 0.0);
  if (dH) std::fill(dH, dH + N * H, 0.0);
  if (dW) std::fill(dW, dW + V * H, 0.0);
  if (dB) std::fill(dB, dB + V, 0.0);
  LmHeadStats st;
  for (int64_t i = 0; i < N; ++i) st.valid += P.target(i) != c.ignore_index;
  std::vector<double> z(static_cast<size_t>(V));
  auto hid = [&](int64_t i, int64_t k) { return static_cast<double>(P.h[i * P.hs0 + k * P.hs1]); };
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = P.target(i);
    if (t == c.ignore_index) continue;
    for (int64_t j = 0; j < V; ++j) {
      double acc = P.b ? static_cast<double>(P.bias(j)) : 0.0;
      for (int64_t k = 0; k < H; ++k) acc += hid(i, k) * static_cast<double>(P.w[j * H + k]);
      z[j] = acc;
    }
    double m = z[0];
    int64_t arg = 0;
    for (int64_t j = 1; j < V; ++j)
      if (z[j] > m) { m = z[j]; arg = j; }
    double s = 0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(z[j] - m);
    const double lse = m + std::log(s);
    // (1 - eps) * (-log p_t) + eps * mean_j (-log p_j), as torch's label_smoothing
    double smooth = 0;
    for (int64_t j = 0; j < V; ++j) smooth += lse - z[j];
    const double loss = (1 - eps) * (lse - z[t]) + eps * smooth / static_cast<double>(V);
    st.loss_sum += loss;
    st.correct += arg == t;
    if (rl) rl[i] = loss;
    const double coef = c.mean ? 1.0 / static_cast<double>(st.valid) : 1.0;
    for (int64_t j = 0; j < V; ++j) {
      const double dz = coef * (std::exp(z[j] - lse) - (j == t ? 1 - eps : 0.0) - eps / static_cast<double>(V));
      if (dB) dB[j] += dz;
      for (int64_t k = 0; k < H; ++k) {
        if (dH) dH[i * H + k] += dz * static_cast<double>(P.w[j * H + k]);
        if (dW) dW[j * H + k] += dz * hid(i, k);
      }
    }
  }
  return st;
}

}  // namespace

LmHeadStats lm_head_forward(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets,
                            const LmHeadConfig& c, Tensor& lse, Tensor* row_loss) {
  LmHeadStats st;
  dispatch_float(hidden.dtype, [&](auto zero) {
    st = run<decltype(zero)>(hidden, weight, bias, targets, c, Mode::Forward, 0.0, &lse, row_loss, nullptr, {});
  });
  return st;
}

LmHeadStats lm_head_forward_backward(const Tensor& hidden, const Tensor& weight, const Tensor* bias,
                                     const Tensor& targets, const LmHeadConfig& c, double grad_scale, Tensor& lse,
                                     Tensor* row_loss, const LmHeadGrads& g) {
  LmHeadStats st;
  dispatch_float(hidden.dtype, [&](auto zero) {
    st = run<decltype(zero)>(hidden, weight, bias, targets, c, Mode::ForwardBackward, grad_scale, &lse, row_loss,
                             nullptr, g);
  });
  return st;
}

void lm_head_backward(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets,
                      const LmHeadConfig& c, const Tensor& lse, const Tensor* row_grad, double grad_scale,
                      const LmHeadGrads& g) {
  Tensor l = lse;  // read only in Backward mode
  dispatch_float(hidden.dtype, [&](auto zero) {
    run<decltype(zero)>(hidden, weight, bias, targets, c, Mode::Backward, grad_scale, &l, nullptr, row_grad, g);
  });
}

LmHeadStats lm_head_naive(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets,
                          const LmHeadConfig& c, Tensor* row_loss, const LmHeadGrads& g) {
  LmHeadStats st;
  dispatch_float(hidden.dtype, [&](auto zero) {
    st = naive<decltype(zero)>(hidden, weight, bias, targets, c, row_loss, g);
  });
  return st;
}

LmHeadStats lm_head_reference(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets,
                              const LmHeadConfig& c, Tensor* row_loss, const LmHeadGrads& g) {
  LmHeadStats st;
  dispatch_float(hidden.dtype, [&](auto zero) {
    st = reference<decltype(zero)>(hidden, weight, bias, targets, c, row_loss, g);
  });
  return st;
}

}  // namespace cpu
}  // namespace vlm
