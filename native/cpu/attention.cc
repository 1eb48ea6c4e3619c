// attention family, CPU: fused scaled-dot-product attention (forward, backward) and the
// materialised float64 reference. Formula, masks and dropout stream: ops/attention.h.
//
// Forward, per (batch, head, tile of query rows): for each tile of keys, one GEMM gives
// the score tile S = scale Q_i K_j^T; the masks and the additive bias are applied to it,
// then an online softmax (running row max m and sum l; the output rows are rescaled by
// exp(m_old - m_new) when the max grows) turns it into exp(S - m) in place, dropout
// multiplies the kept entries by 1/(1-p), and a second GEMM adds P V_j into the output
// rows. At the end O /= l and lse = m + log l. Causal and key-padding limits make every
// row see a prefix of the keys, so key tiles past a query tile's last visible key are
// never computed.
//
// Backward (flash-attention 2), per (batch, head, chunk of key tiles): for each key tile
// j and each query tile i that can see it, S is recomputed by GEMM, P = exp(S - lse),
// dP = dO_i V_j^T, and then dV_j += P~^T dO_i, dS = P (dP - D_i) with D_i = rowsum(dO O)
// precomputed, dQ_i += scale dS K_j, dK_j += scale dS^T Q_i (five GEMMs per tile pair).
// dK_j and dV_j belong to one work item. The key range of a (batch, head) is split into
// more than one chunk only when batch * heads is small (fewer than 16): each chunk then
// adds into its own dQ buffer and the buffers are summed in chunk order afterwards.
//
// Threads: work items are independent and each is computed in a fixed order, and the
// chunking depends on the sizes only; every GEMM runs single-threaded (see run_items),
// so the results do not depend on the thread count. Tile buffers (per thread) and the
// D / dQ-partial buffers are Tensors, so vlm.memory() sees them.
#include "ops/attention.h"
#include <omp.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>
#include "core/gemm.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/vec_math.h"
#include "cpu/attention_avx512.h"

namespace vlm {
namespace cpu {
namespace {

// Query rows x keys per tile. 64 x 128 float32 tiles (32 KiB each) stay in L2 with the
// K/V tiles and keep the Dh = 64 GEMMs efficient (bench/attention.ts).
std::atomic<int64_t> g_rows{64};
std::atomic<int64_t> g_cols{128};
// The backward splits a (batch, head)'s keys into chunks until there are this many items.
constexpr int64_t kMinItems = 16;
// Whether float32 tile products may use the AVX-512 kernel (attention_avx512.h); tests
// switch it off to run the core-GEMM path.
std::atomic<bool> g_tile_kernel{true};

template <typename T> constexpr DType dtype_of() { return std::is_same_v<T, float> ? DType::F32 : DType::F64; }
Tensor scratch(int64_t n, DType dt) { return Tensor::empty({std::max<int64_t>(n, 1)}, dt, Device::CPU); }

// Below this many multiply-adds a call runs on one thread: waking a second thread costs
// more (and far more when the machine is oversubscribed).
constexpr double kSerialWork = 1 << 22;

// f(thread, begin, end) over items [0, n): contiguous ranges, one per thread. The GEMMs
// inside must always run single-threaded, so that results do not depend on the thread
// count: in a parallel region of several threads they do; a small problem runs in a team
// of one whose nthreads setting is 1 (it does not leak outside the region), which the GEMM
// libraries read as "one thread" too.
template <typename F>
void run_items(int64_t n, double work, F&& f) {
  if (n <= 0) return;
  const int nt = num_threads();
  if (nt <= 1) {
    f(0, int64_t{0}, n);
    return;
  }
  if (n == 1 || work < kSerialWork) {
#pragma omp parallel num_threads(1)
    {
      omp_set_num_threads(1);
      f(0, int64_t{0}, n);
    }
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    const int64_t b = n * t / tn, e = n * (t + 1) / tn;
    if (b < e) f(t, b, e);
  }
}

// ---- tile products -----------------------------------------------------------------------

// Query rows per tile: the set size, or all of Lq when it exceeds that by at most a
// quarter (a 65-token ViT sequence is one tile, not 64 + 1: the one-row tile cost a
// second pass over every dK / dV tile).
int64_t query_rows(int64_t Lq) {
  const int64_t rows = g_rows.load();
  return Lq > rows && Lq <= rows + rows / 4 ? Lq : rows;
}

template <typename T>
bool fast_tiles() {
  if constexpr (std::is_same_v<T, float>) return g_tile_kernel.load(std::memory_order_relaxed) && tile_gemm_avx512_available();
  return false;
}

// C = alpha op(A) B + beta C, B's rows contiguous: the AVX-512 kernel when `fast`, else
// core gemm (single-threaded inside run_items).
template <typename T>
void tile_nn(bool fast, bool ta, int64_t m, int64_t n, int64_t k, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
             T beta, T* C, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>) {
    if (fast) return tile_gemm_avx512(m, n, k, alpha, A, ta ? 1 : lda, ta ? lda : 1, B, ldb, beta, C, ldc);
  }
  gemm(ta, false, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

// dst [cols, rows] (rows apart) = src [rows, cols] (ld apart)^T: a key or value tile
// turned so that Q K^T and dO V^T are plain products for the AVX-512 kernel.
template <typename T>
void transpose_tile(const T* src, int64_t rows, int64_t cols, int64_t ld, T* dst) {
  for (int64_t c = 0; c < cols; ++c)  // contiguous stores (strided ones cost ~3x)
    for (int64_t r = 0; r < rows; ++r) dst[c * rows + r] = src[r * ld + c];
}

// C = alpha A B^T + beta C with B [n, k] (rows ldb apart): through bt (k x n scratch)
// and the kernel when `fast`, else gemm's transposed operand. held remembers which B
// (and width n) bt holds, so consecutive query tiles against the same key tile turn it
// once.
template <typename T>
void tile_nt(bool fast, int64_t m, int64_t n, int64_t k, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb, T beta,
             T* C, int64_t ldc, T* bt, std::pair<const T*, int64_t>& held) {
  if (fast) {
    if (held.first != B || held.second != n) transpose_tile(B, n, k, ldb, bt);
    held = {B, n};
    return tile_nn(true, false, m, n, k, alpha, A, lda, bt, n, beta, C, ldc);
  }
  gemm(false, true, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

// ---- strided views -----------------------------------------------------------------------

// [B, H, L, D] with a unit last stride.
template <typename T>
struct View {
  const T* p;
  int64_t sb, sh, sl;
  const T* row(int64_t b, int64_t h, int64_t l) const { return p + b * sb + h * sh + l * sl; }
};
template <typename T>
View<T> view_of(const Tensor& t) {
  return {t.data<T>(), t.strides[0], t.strides[1], t.strides[2]};
}
// The same for an output: out, dq, dk and dv may be [B, L, H, D] storage seen as
// [B, H, L, D] (the binding picks the layout of q), so that merging heads after the
// forward, and the q / k / v projections' backward, read them without a copy.
template <typename T>
struct OutView {
  T* p;
  int64_t sb, sh, sl;
  T* row(int64_t b, int64_t h, int64_t l) const { return p + b * sb + h * sh + l * sl; }
};
template <typename T>
OutView<T> out_view_of(const Tensor* t) {
  if (!t) return {nullptr, 0, 0, 0};
  return {t->data<T>(), t->strides[0], t->strides[1], t->strides[2]};
}

// Everything a tile needs to know about the masks of one problem.
template <typename T>
struct Masks {
  int64_t Lk = 0;
  bool causal = false;
  int64_t off = 0;
  const int32_t* lens = nullptr;
  const uint8_t* mp = nullptr;
  int64_t ms[4] = {0, 0, 0, 0};
  const T* bp = nullptr;
  int64_t bs[4] = {0, 0, 0, 0};

  Masks(const AttentionOptions& o, int64_t lk) : Lk(lk), causal(o.causal), off(o.causal_offset) {
    if (o.key_padding) lens = o.key_padding->data<int32_t>();
    if (o.mask) {
      mp = o.mask->data<uint8_t>();
      for (int d = 0; d < 4; ++d) ms[d] = o.mask->shape[d] == 1 ? 0 : o.mask->strides[d];
    }
    if (o.bias) {
      bp = o.bias->data<T>();
      for (int d = 0; d < 4; ++d) bs[d] = o.bias->shape[d] == 1 ? 0 : o.bias->strides[d];
    }
  }
  // Keys [0, kv(b)) survive key padding.
  int64_t kv(int64_t b) const { return lens ? static_cast<int64_t>(lens[b]) : Lk; }
  // Row i of sample b sees a prefix [0, limit) of the keys before mask and bias.
  int64_t limit(int64_t b, int64_t i) const {
    int64_t l = kv(b);
    if (causal) l = std::min(l, std::max<int64_t>(0, i + off + 1));
    return l;
  }
  bool elementwise() const { return mp != nullptr || bp != nullptr; }
  // Adds the bias to and masks s[0, n), the keys j0 .. j0 + n of row (b, h, i).
  void apply(T* s, int64_t n, int64_t b, int64_t h, int64_t i, int64_t j0) const {
    constexpr T ninf = -std::numeric_limits<T>::infinity();
    if (bp) {
      const T* x = bp + b * bs[0] + h * bs[1] + i * bs[2] + j0 * bs[3];
      const int64_t st = bs[3];
      if (st == 1)
        for (int64_t j = 0; j < n; ++j) s[j] += x[j];
      else
        for (int64_t j = 0; j < n; ++j) s[j] += x[j * st];
    }
    if (mp) {
      const uint8_t* x = mp + b * ms[0] + h * ms[1] + i * ms[2] + j0 * ms[3];
      const int64_t st = ms[3];
      for (int64_t j = 0; j < n; ++j)
        if (!x[j * st]) s[j] = ninf;
    }
  }
};

// ---- row kernels ---------------------------------------------------------------------------

template <typename T>
inline T row_max(const T* s, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) m = s[j] > m ? s[j] : m;
  return m;
}
// s[j] = exp(s[j] - shift); returns the sum (fixed order).
template <typename T>
inline T exp_sum_inplace(T* s, int64_t n, T shift) {
  T sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    T e = std::exp(s[j] - shift);
    s[j] = e;
    sum += e;
  }
  return sum;
}
template <typename T>
inline void exp_inplace(T* s, int64_t n, T shift) {
  for (int64_t j = 0; j < n; ++j) s[j] = std::exp(s[j] - shift);
}

#if defined(VLM_VEC_AVX2)
inline float row_max(const float* s, int64_t n) {
  const float inf = std::numeric_limits<float>::infinity();
  __m256 m0 = _mm256_set1_ps(-inf), m1 = m0;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(s + j));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(s + j + 8));
  }
  float m = vec::hmax8(_mm256_max_ps(m0, m1));
  for (; j < n; ++j) m = s[j] > m ? s[j] : m;
  return m;
}
inline float exp_sum_inplace(float* s, int64_t n, float shift) {
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m256 e0 = vec::exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), sh));
    __m256 e1 = vec::exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j + 8), sh));
    _mm256_storeu_ps(s + j, e0);
    _mm256_storeu_ps(s + j + 8, e1);
    a0 = _mm256_add_ps(a0, e0);
    a1 = _mm256_add_ps(a1, e1);
  }
  float sum = vec::hsum8(_mm256_add_ps(a0, a1));
  for (; j < n; ++j) {
    float e = vec::exp_f32(s[j] - shift);
    s[j] = e;
    sum += e;
  }
  return sum;
}
inline void exp_inplace(float* s, int64_t n, float shift) {
  const __m256 sh = _mm256_set1_ps(shift);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(s + j, vec::exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), sh)));
  for (; j < n; ++j) s[j] = vec::exp_f32(s[j] - shift);
}
#endif

inline float log_t(float x) { return std::log(x); }
inline double log_t(double x) { return std::log(x); }

// Index of probability (bh, i, j) in the dropout stream: row-major over [B*H, Lq, Lk]
// (unsigned, so absurd sizes wrap instead of overflowing).
inline uint64_t stream_index(int64_t bh, int64_t i, int64_t j, int64_t Lq, int64_t Lk) {
  return (static_cast<uint64_t>(bh) * static_cast<uint64_t>(Lq) + static_cast<uint64_t>(i)) * static_cast<uint64_t>(Lk) +
         static_cast<uint64_t>(j);
}

// z[j] = 1/(1-p) where element base + j of the (seed) stream is kept (uniform >= p), else 0.
template <typename T>
void dropout_factors(T* z, int64_t n, uint64_t seed, uint64_t base, double p) {
  const T keep = static_cast<T>(1.0 / (1.0 - p));
  int64_t j = 0;
  while (j < n) {
    const uint64_t g = base + static_cast<uint64_t>(j);
    uint32_t r[4];
    Philox::draw(seed, g >> 2, r);
    for (unsigned lane = static_cast<unsigned>(g & 3); lane < 4 && j < n; ++lane, ++j)
      z[j] = Philox::to_unit(r[lane]) >= p ? keep : T(0);
  }
}

// ---- forward ---------------------------------------------------------------------------------

template <typename T>
void forward_impl(const Tensor& qt, const Tensor& kt, const Tensor& vt, const AttentionOptions& o, Tensor& out,
                  Tensor& lse_t) {
  const int64_t B = qt.shape[0], H = qt.shape[1], Lq = qt.shape[2], Dh = qt.shape[3];
  const int64_t Lk = kt.shape[2], Dv = vt.shape[3];
  if (B * H * Lq == 0) return;
  const int64_t BQ = query_rows(Lq), BK = g_cols.load();
  const int64_t nqt = (Lq + BQ - 1) / BQ;
  const View<T> q = view_of<T>(qt), k = view_of<T>(kt), v = view_of<T>(vt);
  const OutView<T> ov = out_view_of<T>(&out);
  const int64_t osl = ov.sl;
  T* lp = lse_t.data<T>();
  const Masks<T> mk(o, Lk);
  const T scale = static_cast<T>(o.scale);
  const bool drop = o.dropout > 0;
  constexpr T ninf = -std::numeric_limits<T>::infinity();

  // Per thread: the score tile, dropout factors, row max and row sum, a turned key tile.
  const bool fast = fast_tiles<T>();
  const int nt = std::max(1, num_threads());
  const int64_t per = BQ * BK + BK + 2 * BQ + (fast ? BK * Dh : 0);
  Tensor buf = scratch(nt * per, dtype_of<T>());

  const double work = static_cast<double>(B * H) * static_cast<double>(Lq) * static_cast<double>(Lk) * static_cast<double>(Dh + Dv);
  run_items(B * H * nqt, work, [&](int t, int64_t ib, int64_t ie) {
    T* S = buf.data<T>() + t * per;
    T* z = S + BQ * BK;
    T* mrow = z + BK;
    T* lrow = mrow + BQ;
    T* kt = lrow + BQ;
    std::pair<const T*, int64_t> kt_of{nullptr, 0};  // the key tile kt holds, and its width
    for (int64_t item = ib; item < ie; ++item) {
      const int64_t bh = item / nqt, i0 = (item % nqt) * BQ, b = bh / H, h = bh % H;
      const int64_t m = std::min(BQ, Lq - i0);
      const T* Q = q.row(b, h, i0);
      const T* K = k.row(b, h, 0);
      const T* V = v.row(b, h, 0);
      T* O = ov.row(b, h, i0);  // written by the first key tile's GEMM (beta 0)
      std::fill(mrow, mrow + m, ninf);
      std::fill(lrow, lrow + m, T(0));
      const int64_t kend = mk.limit(b, i0 + m - 1);  // the last row sees the most keys
      for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int64_t w = std::min(BK, kend - j0);
        tile_nt(fast, m, w, Dh, scale, Q, q.sl, K + j0 * k.sl, k.sl, T(0), S, BK, kt, kt_of);
        for (int64_t r = 0; r < m; ++r) {
          const int64_t i = i0 + r;
          const int64_t we = std::clamp<int64_t>(mk.limit(b, i) - j0, 0, w);
          T* s = S + r * BK;
          if (we > 0 && mk.elementwise()) mk.apply(s, we, b, h, i, j0);
          T mnew = std::max(mrow[r], we > 0 ? row_max(s, we) : ninf);
          if (mnew == ninf) {  // nothing visible so far: unless NaN is in the tile, P = 0
            bool nan = false;
            for (int64_t j = 0; j < we; ++j) nan |= s[j] != s[j];
            if (!nan) {
              std::fill(s, s + w, T(0));
              continue;
            }
            mnew = std::numeric_limits<T>::quiet_NaN();
          }
          // 0 when mrow was -inf (every row's first key tile: no exp call)
          const T alpha = mrow[r] == ninf ? T(0) : std::exp(mrow[r] - mnew);
          T sum;
          if constexpr (std::is_same_v<T, float>) sum = fast ? exp_sum_avx512(s, we, mnew) : exp_sum_inplace(s, we, mnew);
          else sum = exp_sum_inplace(s, we, mnew);
          std::fill(s + we, s + w, T(0));
          lrow[r] = lrow[r] * alpha + sum;
          mrow[r] = mnew;
          if (j0 > 0 && alpha != T(1)) {
            T* orow = O + r * osl;
            for (int64_t d = 0; d < Dv; ++d) orow[d] *= alpha;
          }
          if (drop) {
            dropout_factors(z, we, o.seed, o.offset + stream_index(bh, i, j0, Lq, Lk), o.dropout);
            for (int64_t j = 0; j < we; ++j) s[j] *= z[j];
          }
        }
        tile_nn(fast, false, m, Dv, w, T(1), S, BK, V + j0 * v.sl, v.sl, T(j0 > 0), O, osl);
      }
      if (kend == 0)
        for (int64_t r = 0; r < m; ++r) std::fill(O + r * osl, O + r * osl + Dv, T(0));
      for (int64_t r = 0; r < m; ++r) {
        const T l = lrow[r];
        const T inv = l == T(0) ? T(0) : T(1) / l;  // NaN stays NaN
        T* orow = O + r * osl;
        for (int64_t d = 0; d < Dv; ++d) orow[d] *= inv;
        lp[bh * Lq + i0 + r] = l == T(0) ? ninf : mrow[r] + log_t(l);
      }
    }
  });
}

// ---- backward --------------------------------------------------------------------------------

template <typename T>
void backward_impl(const Tensor& qt, const Tensor& kt, const Tensor& vt, const Tensor& outt, const Tensor& lset,
                   const Tensor& doutt, const AttentionOptions& o, Tensor* dqt, Tensor* dkt, Tensor* dvt) {
  const int64_t B = qt.shape[0], H = qt.shape[1], Lq = qt.shape[2], Dh = qt.shape[3];
  const int64_t Lk = kt.shape[2], Dv = vt.shape[3];
  const int64_t BH = B * H;
  // Each gradient is a permutation of dense storage (see OutView): numel elements from data().
  T* dq = dqt ? dqt->data<T>() : nullptr;
  T* dk = dkt ? dkt->data<T>() : nullptr;
  T* dv = dvt ? dvt->data<T>() : nullptr;
  const OutView<T> dqv = out_view_of<T>(dqt), dkv = out_view_of<T>(dkt), dvv = out_view_of<T>(dvt);
  if (BH == 0) return;
  if (Lq == 0 || Lk == 0) {  // no pairs: all gradients are zero
    if (dq) std::fill(dq, dq + dqt->numel(), T(0));
    if (dk) std::fill(dk, dk + dkt->numel(), T(0));
    if (dv) std::fill(dv, dv + dvt->numel(), T(0));
    return;
  }
  const int64_t BQ = query_rows(Lq), BK = g_cols.load();
  const int64_t nkt = (Lk + BK - 1) / BK;
  const View<T> q = view_of<T>(qt), k = view_of<T>(kt), v = view_of<T>(vt), O = view_of<T>(outt),
                dO = view_of<T>(doutt);
  const T* lse = lset.data<T>();
  const Masks<T> mk(o, Lk);
  const T scale = static_cast<T>(o.scale);
  const bool drop = o.dropout > 0;
  const bool need_ds = dq || dk;
  constexpr T ninf = -std::numeric_limits<T>::infinity();

  // D_i = rowsum(dO * O) for every query row.
  Tensor Dbuf = scratch(BH * Lq, dtype_of<T>());
  T* D = Dbuf.data<T>();
  parallel_for(BH * Lq, std::max<int64_t>(1, 8192 / std::max<int64_t>(Dv, 1)), [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const int64_t bh = r / Lq, i = r % Lq;
      const T* a = O.row(bh / H, bh % H, i);
      const T* g = dO.row(bh / H, bh % H, i);
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < Dv; ++d) s += static_cast<double>(a[d]) * static_cast<double>(g[d]);
      D[r] = static_cast<T>(s);
    }
  });

  const int64_t chunks = std::clamp<int64_t>((kMinItems + BH - 1) / BH, 1, nkt);
  Tensor part;  // per (bh, chunk) dQ when chunks > 1
  if (dq && chunks > 1) part = scratch(BH * chunks * Lq * Dh, dtype_of<T>());

  // Per thread: scores / P, dP / dS, P~, dropout factors, and the key and value tiles
  // turned once per key tile (AVX-512 path).
  const bool fast = fast_tiles<T>();
  const int nt = std::max(1, num_threads());
  const int64_t per = 3 * BQ * BK + BK + (fast ? BK * (Dh + Dv) : 0);
  Tensor buf = scratch(nt * per, dtype_of<T>());
  const int64_t nqt = (Lq + BQ - 1) / BQ;
  std::vector<std::vector<int64_t>> wes(nt, std::vector<int64_t>(BQ));
  std::vector<std::vector<char>> qdones(nt, std::vector<char>(nqt));

  const double work = static_cast<double>(BH) * static_cast<double>(Lq) * static_cast<double>(Lk) * static_cast<double>(2 * Dh + 3 * Dv);
  run_items(BH * chunks, work, [&](int t, int64_t ib, int64_t ie) {
    T* S = buf.data<T>() + t * per;  // scores, then P
    T* dP = S + BQ * BK;             // dP~, then dP, then dS
    T* Pt = dP + BQ * BK;            // P~ (dropout)
    T* z = Pt + BQ * BK;
    T* kT = z + BK;          // K tile^T [Dh, w]
    T* vT = kT + BK * Dh;    // V tile^T [Dv, w]
    int64_t* we = wes[t].data();
    char* qdone = qdones[t].data();
    for (int64_t item = ib; item < ie; ++item) {
      const int64_t bh = item / chunks, c = item % chunks, b = bh / H, h = bh % H;
      const int64_t kt0 = nkt * c / chunks, kt1 = nkt * (c + 1) / chunks;
      const int64_t k0 = kt0 * BK, k1 = std::min(kt1 * BK, Lk);
      // Each dQ / dK / dV tile is written (beta 0) by the first GEMM that reaches it and
      // zeroed at the end when none did.
      T* dQ = dq ? (chunks == 1 ? dqv.row(b, h, 0) : part.data<T>() + item * Lq * Dh) : nullptr;
      const int64_t ldq = chunks == 1 ? dqv.sl : Dh;
      std::fill(qdone, qdone + nqt, char(0));
      const int64_t kv = mk.kv(b);
      const T* Kb = k.row(b, h, 0);
      const T* Vb = v.row(b, h, 0);
      for (int64_t kt = kt0; kt < kt1; ++kt) {
        const int64_t j0 = kt * BK;
        if (j0 >= kv) break;
        const int64_t w = std::min(BK, kv - j0);
        const T* Kj = Kb + j0 * k.sl;
        const T* Vj = Vb + j0 * v.sl;
        T* dKj = dk ? dkv.row(b, h, j0) : nullptr;
        T* dVj = dv ? dvv.row(b, h, j0) : nullptr;
        bool kdone = false;
        if (fast) {
          transpose_tile(Kj, w, Dh, k.sl, kT);
          if (need_ds) transpose_tile(Vj, w, Dv, v.sl, vT);
        }
        // Causal: the first query row that sees key j0 is j0 - off.
        const int64_t first = mk.causal ? std::clamp<int64_t>(j0 - mk.off, 0, Lq) : 0;
        for (int64_t i0 = first / BQ * BQ; i0 < Lq; i0 += BQ) {
          const int64_t m = std::min(BQ, Lq - i0);
          bool any = false;
          for (int64_t r = 0; r < m; ++r) {
            we[r] = std::clamp<int64_t>(mk.limit(b, i0 + r) - j0, 0, w);
            any |= we[r] > 0 && lse[bh * Lq + i0 + r] != ninf;
          }
          if (!any) continue;
          const T* Qi = q.row(b, h, i0);
          const T* dOi = dO.row(b, h, i0);
          const T* Li = lse + bh * Lq + i0;
          const T* Di = D + bh * Lq + i0;
          if (fast) tile_nn(true, false, m, w, Dh, scale, Qi, q.sl, kT, w, T(0), S, BK);
          else gemm(false, true, m, w, Dh, scale, Qi, q.sl, Kj, k.sl, T(0), S, BK);
          for (int64_t r = 0; r < m; ++r) {
            T* s = S + r * BK;
            const int64_t n = Li[r] == ninf ? 0 : we[r];  // a row that sees nothing has P = 0
            if (n > 0 && mk.elementwise()) mk.apply(s, n, b, h, i0 + r, j0);
            if constexpr (std::is_same_v<T, float>) {
              if (fast) exp_avx512(s, n, Li[r]);
              else exp_inplace(s, n, Li[r]);
            } else {
              exp_inplace(s, n, Li[r]);
            }
            std::fill(s + n, s + w, T(0));
            we[r] = n;
          }
          if (need_ds) {
            if (fast) tile_nn(true, false, m, w, Dv, T(1), dOi, dO.sl, vT, w, T(0), dP, BK);
            else gemm(false, true, m, w, Dv, T(1), dOi, dO.sl, Vj, v.sl, T(0), dP, BK);
          }
          const T* Pv = S;  // the probabilities that multiplied V
          if (drop) {
            for (int64_t r = 0; r < m; ++r) {
              T* s = S + r * BK;
              T* pt = Pt + r * BK;
              T* dp = dP + r * BK;
              dropout_factors(z, we[r], o.seed, o.offset + stream_index(bh, i0 + r, j0, Lq, Lk), o.dropout);
              for (int64_t j = 0; j < we[r]; ++j) pt[j] = s[j] * z[j];
              std::fill(pt + we[r], pt + w, T(0));
              if (need_ds)
                for (int64_t j = 0; j < we[r]; ++j) dp[j] *= z[j];
            }
            Pv = Pt;
          }
          const T kbeta = kdone ? T(1) : T(0), qbeta = qdone[i0 / BQ] ? T(1) : T(0);
          kdone = true;
          qdone[i0 / BQ] = 1;
          if (dVj) tile_nn(fast, true, w, Dv, m, T(1), Pv, BK, dOi, dO.sl, kbeta, dVj, dvv.sl);
          if (!need_ds) continue;
          for (int64_t r = 0; r < m; ++r) {  // dS = P (dP - D), in dP
            const T* s = S + r * BK;
            T* dp = dP + r * BK;
            const T di = Di[r];
            const int64_t n = we[r];
            for (int64_t j = 0; j < n; ++j) dp[j] = s[j] * (dp[j] - di);
            std::fill(dp + n, dp + w, T(0));
          }
          if (dQ) tile_nn(fast, false, m, Dh, w, scale, dP, BK, Kj, k.sl, qbeta, dQ + i0 * ldq, ldq);
          if (dKj) tile_nn(fast, true, w, Dh, m, scale, dP, BK, Qi, q.sl, kbeta, dKj, dkv.sl);
        }
        if (!kdone) {  // no query saw this key tile
          for (int64_t r = 0; r < w; ++r) {
            if (dKj) std::fill(dKj + r * dkv.sl, dKj + r * dkv.sl + Dh, T(0));
            if (dVj) std::fill(dVj + r * dvv.sl, dVj + r * dvv.sl + Dv, T(0));
          }
        }
      }
      // Keys past the sample's length, and query tiles no key reached, get zeros.
      const int64_t kz = std::clamp<int64_t>(kv, k0, k1);
      for (int64_t j = kz; j < k1; ++j) {
        if (dk) std::fill(dkv.row(b, h, j), dkv.row(b, h, j) + Dh, T(0));
        if (dv) std::fill(dvv.row(b, h, j), dvv.row(b, h, j) + Dv, T(0));
      }
      if (dQ)
        for (int64_t qt = 0; qt < nqt; ++qt)
          if (!qdone[qt])
            for (int64_t i = qt * BQ; i < std::min(Lq, (qt + 1) * BQ); ++i) std::fill(dQ + i * ldq, dQ + i * ldq + Dh, T(0));
    }
  });

  if (dq && chunks > 1) {  // dQ = sum of the chunks' buffers, in chunk order
    const T* pp = part.data<T>();
    parallel_for(BH * Lq, std::max<int64_t>(1, 4096 / std::max<int64_t>(Dh, 1)), [&](int64_t rb, int64_t re) {
      for (int64_t r = rb; r < re; ++r) {
        const int64_t bh = r / Lq, i = r % Lq;
        T* dst = dqv.row(bh / H, bh % H, i);
        const T* src = pp + (bh * chunks * Lq + i) * Dh;
        for (int64_t d = 0; d < Dh; ++d) dst[d] = src[d];
        for (int64_t c = 1; c < chunks; ++c) {
          const T* sc = src + c * Lq * Dh;
          for (int64_t d = 0; d < Dh; ++d) dst[d] += sc[d];
        }
      }
    });
  }
}

// ---- reference ---------------------------------------------------------------------------------

// Materialises the (b, h) score matrix in float64; inputs of type T.
template <typename T>
void reference_impl(const Tensor& qt, const Tensor& kt, const Tensor& vt, const AttentionOptions& o, Tensor& out,
                    Tensor& lse, const Tensor* doutt, Tensor* dq, Tensor* dk, Tensor* dv) {
  const int64_t B = qt.shape[0], H = qt.shape[1], Lq = qt.shape[2], Dh = qt.shape[3];
  const int64_t Lk = kt.shape[2], Dv = vt.shape[3];
  const View<T> q = view_of<T>(qt), k = view_of<T>(kt), v = view_of<T>(vt);
  View<T> dO{nullptr, 0, 0, 0};
  if (doutt) dO = view_of<T>(*doutt);
  const Masks<T> mk(o, Lk);
  const double inf = std::numeric_limits<double>::infinity();
  double* op = out.data<double>();
  double* lp = lse.data<double>();
  parallel_for(B * H, 1, [&](int64_t bb, int64_t be) {
    std::vector<double> S(Lq * Lk), P(Lq * Lk), Z(Lq * Lk, 1.0), dP(Lq * Lk);
    for (int64_t bh = bb; bh < be; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t i = 0; i < Lq; ++i) {
        const T* qi = q.row(b, h, i);
        for (int64_t j = 0; j < Lk; ++j) {
          const T* kj = k.row(b, h, j);
          double s = 0;
          for (int64_t d = 0; d < Dh; ++d) s += static_cast<double>(qi[d]) * static_cast<double>(kj[d]);
          s *= o.scale;
          if (mk.bp) s += static_cast<double>(mk.bp[b * mk.bs[0] + h * mk.bs[1] + i * mk.bs[2] + j * mk.bs[3]]);
          bool visible = j < mk.kv(b) && (!o.causal || j <= i + o.causal_offset);
          if (mk.mp && !mk.mp[b * mk.ms[0] + h * mk.ms[1] + i * mk.ms[2] + j * mk.ms[3]]) visible = false;
          S[i * Lk + j] = visible ? s : -inf;
          if (o.dropout > 0) {
            const uint64_t idx = o.offset + stream_index(bh, i, j, Lq, Lk);
            Z[i * Lk + j] = Philox::uniform(o.seed, idx) >= o.dropout ? 1.0 / (1.0 - o.dropout) : 0.0;
          }
        }
        double m = -inf;
        for (int64_t j = 0; j < Lk; ++j) m = std::max(m, S[i * Lk + j]);
        double sum = 0;
        for (int64_t j = 0; j < Lk; ++j) sum += m == -inf ? 0.0 : std::exp(S[i * Lk + j] - m);
        for (int64_t j = 0; j < Lk; ++j) P[i * Lk + j] = sum == 0 ? 0.0 : std::exp(S[i * Lk + j] - m) / sum;
        lp[bh * Lq + i] = sum == 0 ? -inf : m + std::log(sum);
        double* orow = op + (bh * Lq + i) * Dv;
        for (int64_t d = 0; d < Dv; ++d) orow[d] = 0;
        for (int64_t j = 0; j < Lk; ++j) {
          const double pz = P[i * Lk + j] * Z[i * Lk + j];
          const T* vj = v.row(b, h, j);
          for (int64_t d = 0; d < Dv; ++d) orow[d] += pz * static_cast<double>(vj[d]);
        }
      }
      if (!doutt) continue;
      double* dqp = dq->data<double>() + bh * Lq * Dh;
      double* dkp = dk->data<double>() + bh * Lk * Dh;
      double* dvp = dv->data<double>() + bh * Lk * Dv;
      std::fill(dqp, dqp + Lq * Dh, 0.0);
      std::fill(dkp, dkp + Lk * Dh, 0.0);
      std::fill(dvp, dvp + Lk * Dv, 0.0);
      for (int64_t i = 0; i < Lq; ++i) {
        const T* gi = dO.row(b, h, i);
        double Di = 0;
        for (int64_t j = 0; j < Lk; ++j) {
          const T* vj = v.row(b, h, j);
          double g = 0;  // d loss / d P[i, j] through the dropout factor
          for (int64_t d = 0; d < Dv; ++d) g += static_cast<double>(gi[d]) * static_cast<double>(vj[d]);
          dP[i * Lk + j] = g * Z[i * Lk + j];
          Di += P[i * Lk + j] * dP[i * Lk + j];
          const double pz = P[i * Lk + j] * Z[i * Lk + j];
          for (int64_t d = 0; d < Dv; ++d) dvp[j * Dv + d] += pz * static_cast<double>(gi[d]);
        }
        for (int64_t j = 0; j < Lk; ++j) {
          const double ds = P[i * Lk + j] * (dP[i * Lk + j] - Di) * o.scale;
          if (ds == 0) continue;
          const T* qi = q.row(b, h, i);
          const T* kj = k.row(b, h, j);
          for (int64_t d = 0; d < Dh; ++d) {
            dqp[i * Dh + d] += ds * static_cast<double>(kj[d]);
            dkp[j * Dh + d] += ds * static_cast<double>(qi[d]);
          }
        }
      }
    }
  });
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o, Tensor& out,
                       Tensor& lse) {
  dispatch_float(q.dtype, [&](auto zero) {
    using T = decltype(zero);
    forward_impl<T>(q, k, v, o, out, lse);
  });
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const AttentionOptions& o, Tensor* dq, Tensor* dk, Tensor* dv) {
  dispatch_float(q.dtype, [&](auto zero) {
    using T = decltype(zero);
    backward_impl<T>(q, k, v, out, lse, dout, o, dq, dk, dv);
  });
}

void attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o, Tensor& out,
                         Tensor& lse, const Tensor* dout, Tensor* dq, Tensor* dk, Tensor* dv) {
  dispatch_float(q.dtype, [&](auto zero) {
    using T = decltype(zero);
    reference_impl<T>(q, k, v, o, out, lse, dout, dq, dk, dv);
  });
}

void attention_set_tiles(int64_t rows, int64_t cols) {
  g_rows.store(std::max<int64_t>(rows, 1));
  g_cols.store(std::max<int64_t>(cols, 1));
}
void attention_get_tiles(int64_t& rows, int64_t& cols) {
  rows = g_rows.load();
  cols = g_cols.load();
}
void attention_set_tile_kernel(bool avx512) { g_tile_kernel.store(avx512); }
bool attention_tile_kernel_avx512() { return fast_tiles<float>(); }

}  // namespace cpu
}  // namespace vlm
