// infonce family, CPU: the fused contrastive loss (forward and backward) and the
// materialised reference. Formula and notation: ops/infonce.h.
//
// Fused per tile of rows x columns: one GEMM of the raw features, then in one pass
// over the tile the L2 normalisation (per-row inverse norms applied to the tile, so
// no normalised copy of any feature exists), the scale, the max over query tokens,
// the online logsumexp of every row (and, for the square batch block, of every
// column, which is the other direction's row), the arg-max for top-1 accuracy, and
// the target terms (positives, smoothing sum, momentum-softmax dot, itself an online
// softmax over a second GEMM tile of the momentum rows). The backward recomputes the
// tile, forms dS from the saved logsumexps and adds dS.C into d(rows) and dS^T.R
// into d(columns) by GEMM. Never materialised: logits, probabilities, targets, dS
// beyond one tile, normalised features. Saved for the backward: per row the LSE, the
// momentum LSE and the positives count (O(B)).
//
// Threads: the row tiles are split into one contiguous range per thread; in step k
// thread t works on column tile (k + off_t) mod n_ct, with distinct offsets, and all
// threads meet at a barrier after each step. So at any moment every row tile and
// every column tile has a single owner: the per-row and per-column accumulators
// (statistics, gradients, normalisation terms) need no locks and are summed in an
// order fixed by the thread count, hence reproducible. Blocks with nothing to
// accumulate per column (queue or momentum columns) skip the barriers. GEMMs inside
// run single-threaded.
#include "ops/infonce.h"
#include <omp.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>
#include "core/gemm.h"
#include "core/parallel.h"

namespace vlm {

double InfonceInputs::scale() const { return mode == InfonceScaleMode::LogitScale ? std::exp(param) : 1.0 / param; }

namespace cpu {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNormEps = 1e-12;  // as F.normalize: x / max(||x||, eps)
// GEMM rows and columns per tile (entities per tile = these divided by Q when the
// side carries query tokens). 256 x 256 x D=512 keeps the tile GEMM efficient and
// the tile (256 KiB) in L2. Settable for tests (tiny ragged tiles) and tuning.
std::atomic<int64_t> g_row_tile{256};
std::atomic<int64_t> g_col_tile{256};
// Below this many multiply-adds a block runs on one thread (a parallel region costs more).
constexpr double kSerialWork = 1 << 21;

// ---- exp -------------------------------------------------------------------------------
// float32: x = k ln2 + r with |r| <= ln2/2 (k rounded by the 1.5 * 2^23 shifter,
// Cody-Waite reduction with two constants), e^r by the Cephes polynomial, 2^k through
// the exponent bits. Plain arithmetic without branches or floor(), so GCC vectorises
// the loops that call it (8 lanes with AVX2). Relative error ~1e-7 on [-87, 88];
// inputs below -87 give ~1e-38 (every call here is exp(s - max) <= 1, where such
// terms are negligible); NaN stays NaN.
inline float exp_fast(float x) {
  x = x < -87.0f ? -87.0f : x;  // NaN compares false and passes through
  x = x > 88.0f ? 88.0f : x;
  constexpr float shifter = 12582912.0f;  // adding 1.5 * 2^23 rounds to an integer
  const float t = std::fma(x, 1.44269504088896341f, shifter);
  const float k = t - shifter;
  float r = std::fma(k, -0.693359375f, x);
  r = std::fma(k, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p * r, r, r) + 1.0f;
  // t's low mantissa bits hold k: 2^k has exponent field k + 127.
  const int32_t bits = (__builtin_bit_cast(int32_t, t) - 0x4B400000 + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}
inline double exp_fast(double x) { return std::exp(x); }

// Max of x[0, n) and the first index holding it, 8 (float) or 4 (double) lanes at a
// time with GCC vector extensions (a plain max reduction does not vectorise without
// fast-math). NaN never wins; returns -inf and n when there is no number.
template <typename T> struct Lanes;
template <> struct Lanes<float> {
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(32)));
  static constexpr int L = 8;
};
template <> struct Lanes<double> {
  typedef double V __attribute__((vector_size(32)));
  typedef int64_t I __attribute__((vector_size(32)));
  static constexpr int L = 4;
};

template <typename T>
inline T max_arg(const T* x, int64_t n, int64_t* arg) {
  using V = typename Lanes<T>::V;
  using I = typename Lanes<T>::I;
  constexpr int L = Lanes<T>::L;
  T best = -std::numeric_limits<T>::infinity();
  int64_t bi = n, j = 0;
  if (n >= 2 * L) {
    V vm;
    std::memcpy(&vm, x, sizeof vm);
    I vi, cur;
    for (int l = 0; l < L; ++l) vi[l] = l;
    cur = vi;
    for (j = L; j + L <= n; j += L) {
      V v;
      std::memcpy(&v, x + j, sizeof v);
      cur += L;
      const auto gt = v > vm;
      vm = gt ? v : vm;
      vi = gt ? cur : vi;
    }
    for (int l = 0; l < L; ++l)
      if (vm[l] > best || (vm[l] == best && vi[l] < bi)) { best = vm[l]; bi = vi[l]; }
  }
  for (; j < n; ++j)  // later indices: strictly greater keeps the first
    if (x[j] > best) { best = x[j]; bi = j; }
  if (arg) *arg = bi;
  return best;
}

// A scratch tensor, so that vlm.memory() sees what the kernel allocates.
Tensor scratch(int64_t n, DType dt) { return Tensor::empty({std::max<int64_t>(n, 1)}, dt, Device::CPU); }
template <typename T> constexpr DType dtype_of() { return std::is_same_v<T, float> ? DType::F32 : DType::F64; }

// ---- features ----------------------------------------------------------------------------

// One set of features: n entities of q tokens of D values, contiguous.
template <typename T>
struct Feat {
  const T* x = nullptr;
  const uint16_t* xh = nullptr;  // x rounded to bf16 once per call, when float32 GEMMs run in bf16
  int64_t n = 0, q = 1;
  const T* rn = nullptr;   // [n*q] inverse norms (ones when not normalising)
  const T* rn2 = nullptr;  // [n*q] rn^2 where the norm's derivative applies, else 0
  T* dx = nullptr;         // gradient destination [n, q, D], or null
  double* corr = nullptr;  // [n*q] sum of dS*s over the token's tiles (normalisation term), or null
};

// Inverse norms of `rows` rows of D values into rn (and rn2, see Feat).
template <typename T>
void inv_norms(const T* x, int64_t rows, int64_t D, bool normalize, T* rn, T* rn2) {
  parallel_for(rows, 512, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      if (!normalize) {
        rn[r] = T(1);
        rn2[r] = T(0);
        continue;
      }
      const T* p = x + r * D;
      double ss = 0;
#pragma omp simd reduction(+ : ss)
      for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(p[d]) * p[d];
      const double nrm = std::sqrt(ss);
      if (nrm > kNormEps) {
        rn[r] = static_cast<T>(1.0 / nrm);
        rn2[r] = static_cast<T>(1.0 / ss);
      } else {  // x / eps: linear, no derivative through the norm
        rn[r] = static_cast<T>(1.0 / kNormEps);
        rn2[r] = T(0);
      }
    }
  });
}

// ---- per-row statistics of one direction -------------------------------------------------

struct Stats {
  double *M, *Z;         // online logsumexp: running max and sum of exp(s - M)
  double *best, *bestJ;  // arg-max value and column (first on ties)
  double *sumS;          // sum of the row's logits (label smoothing)
  double *posS, *cnt;    // sum of logits at positive columns, and their count
  double *mM, *mZ, *mDot;  // momentum row: online softmax, and sum of exp(m - mM) * s
  static constexpr int kFields = 10;
  void bind(double* base, int64_t b) {
    double** f[kFields] = {&M, &Z, &best, &bestJ, &sumS, &posS, &cnt, &mM, &mZ, &mDot};
    for (int i = 0; i < kFields; ++i) *f[i] = base + i * b;
    const double init[kFields] = {-kInf, 0, -kInf, -1, 0, 0, 0, -kInf, 0, 0};
    for (int i = 0; i < kFields; ++i) std::fill(*f[i], *f[i] + b, init[i]);
  }
};

enum class Pos { Diag, Ids, None };

template <typename T>
struct Ctx {
  int64_t B = 0, K = 0, D = 0, o = 0, b = 0;
  double eps = 0, alpha = 0;
  bool momentum = false;     // momentum columns
  bool mom_targets = false;  // momentum and alpha > 0: soft targets need the momentum rows
  const int32_t* ids = nullptr;
  const int32_t* qids = nullptr;
  T scale = T(1);
  double N() const { return static_cast<double>(B + K); }
};

// A block of the loss: rows R[o, o+b) against all columns of C.
template <typename T>
struct Block {
  Feat<T> R;       // row features (the local rows are used)
  Feat<T> Rm;      // momentum rows for soft targets (x == nullptr: none)
  Feat<T> C;       // column features
  int64_t J0 = 0;  // global column index of C's entity 0 in R's direction (0: batch, B: queue)
  int rdir = 0;    // direction of R's rows
  int cdir = -1;   // direction whose rows are C's entities (the square block), or -1
};

template <typename T>
Pos pos_mode(const Ctx<T>& cx, int64_t J0) {
  if (J0 == 0) return cx.ids ? Pos::Ids : Pos::Diag;
  return cx.qids ? Pos::Ids : Pos::None;
}
// Ids of the columns from global column J (of a block segment with the given mode).
template <typename T>
const int32_t* col_ids(const Ctx<T>& cx, int64_t J) {
  return J < cx.B ? cx.ids + J : cx.qids + (J - cx.B);
}

// Per-thread tile buffers.
template <typename T>
struct Work {
  T *raw, *s, *ms, *ds, *v0, *v1, *v2, *v3;
  int32_t *qarg, *carg;
};

// ---- the tile loop -------------------------------------------------------------------------

// f(thread, row tile, column tile) over all pairs. With own_cols, column tiles are
// owned too (the rotation and a barrier per step); without, each thread sweeps the
// columns of its row tiles in order, with no synchronisation at all.
template <typename F>
void run_tiles(int64_t n_rt, int64_t n_ct, int nch, bool own_cols, F&& f) {
  if (nch <= 1) {
    for (int64_t r = 0; r < n_rt; ++r)
      for (int64_t c = 0; c < n_ct; ++c) f(0, r, c);
    return;
  }
#pragma omp parallel num_threads(nch)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t rb = n_rt * t / nt, re = n_rt * (t + 1) / nt;
    if (!own_cols) {
      for (int64_t r = rb; r < re; ++r)
        for (int64_t c = 0; c < n_ct; ++c) f(t, r, c);
    } else {
      const int64_t off = n_ct * t / nt;  // distinct for distinct t because nt <= n_ct
      for (int64_t k = 0; k < n_ct; ++k) {
        const int64_t c = (k + off) % n_ct;
        for (int64_t r = rb; r < re; ++r) f(t, r, c);
#pragma omp barrier
      }
    }
  }
}

// Tiles of a block: rows [o, o+b) in tiles of TM entities, columns in tiles of TN.
// f(work, r0, m, c0, n) with r0 the first row entity (global) and c0 the first column entity.
template <typename T, typename F>
void run_block(const Ctx<T>& cx, const Block<T>& bk, bool own_cols, F&& f) {
  const int64_t TM = std::max<int64_t>(1, g_row_tile.load() / bk.R.q);
  const int64_t TN = std::max<int64_t>(1, g_col_tile.load() / bk.C.q);
  const int64_t n_rt = (cx.b + TM - 1) / TM, n_ct = (bk.C.n + TN - 1) / TN;
  if (n_rt == 0 || n_ct == 0) return;
  const double madds = static_cast<double>(cx.b) * bk.R.q * bk.C.n * bk.C.q * cx.D;
  int nch = omp_in_parallel() || madds < kSerialWork ? 1 : static_cast<int>(std::min<int64_t>({num_threads(), n_rt, n_ct}));
  nch = std::max(nch, 1);
  const int64_t nraw = TM * bk.R.q * TN * bk.C.q, ntile = TM * TN;
  const int64_t per = nraw + 3 * ntile + 4 * TN;
  Tensor buf = scratch(per * nch, dtype_of<T>());
  Tensor ibuf = scratch((ntile + TN) * nch, DType::I32);
  std::vector<Work<T>> work(nch);
  for (int t = 0; t < nch; ++t) {
    T* p = buf.data<T>() + per * t;
    int32_t* q = ibuf.data<int32_t>() + (ntile + TN) * t;
    Work<T>& w = work[t];
    w.raw = p; p += nraw;
    w.s = p; p += ntile;
    w.ms = p; p += ntile;
    w.ds = p; p += ntile;
    w.v0 = p; w.v1 = p + TN; w.v2 = p + 2 * TN; w.v3 = p + 3 * TN;
    w.qarg = q; w.carg = q + ntile;
  }
  run_tiles(n_rt, n_ct, nch, own_cols, [&](int t, int64_t rt, int64_t ct) {
    const int64_t r0 = cx.o + rt * TM, m = std::min(TM, cx.o + cx.b - r0);
    const int64_t c0 = ct * TN, n = std::min(TN, bk.C.n - c0);
    f(work[t], r0, m, c0, n);
  });
}

// s[m x n] = scale * max over tokens of rn_R * rn_C * (R . C), for R entities [r0, r0+m)
// and C entities [c0, c0+n); qarg (when not null) gets the arg-max token (first on ties).
template <typename T>
void sim_tile(const Ctx<T>& cx, const Feat<T>& R, int64_t r0, int64_t m, const Feat<T>& C, int64_t c0, int64_t n,
              T* raw, T* s, int32_t* qarg) {
  const int64_t Qr = R.q, Qc = C.q, Mq = m * Qr, Nq = n * Qc, D = cx.D;
  if constexpr (std::is_same_v<T, float>) {
    if (R.xh && C.xh) gemm(false, true, Mq, Nq, D, T(1), R.xh + r0 * Qr * D, D, C.xh + c0 * Qc * D, D, T(0), raw, Nq);
    else gemm(false, true, Mq, Nq, D, T(1), R.x + r0 * Qr * D, D, C.x + c0 * Qc * D, D, T(0), raw, Nq);
  } else {
    gemm(false, true, Mq, Nq, D, T(1), R.x + r0 * Qr * D, D, C.x + c0 * Qc * D, D, T(0), raw, Nq);
  }
  const T* rr = R.rn + r0 * Qr;
  const T* rc = C.rn + c0 * Qc;
  const T sc = cx.scale;
  if (Qr == 1 && Qc == 1) {
    for (int64_t i = 0; i < m; ++i) {
      const T a = sc * rr[i];
      const T* ri = raw + i * n;
      T* si = s + i * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) si[j] = a * ri[j] * rc[j];
    }
  } else if (Qr > 1) {
    for (int64_t i = 0; i < m; ++i) {
      T* si = s + i * n;
      int32_t* qi = qarg ? qarg + i * n : nullptr;
      for (int64_t q = 0; q < Qr; ++q) {
        const T a = sc * rr[i * Qr + q];
        const T* ri = raw + (i * Qr + q) * n;
        if (q == 0) {
          for (int64_t j = 0; j < n; ++j) si[j] = a * ri[j] * rc[j];
          if (qi) std::fill(qi, qi + n, 0);
        } else {
          const int32_t qq = static_cast<int32_t>(q);
          for (int64_t j = 0; j < n; ++j) {
            const T v = a * ri[j] * rc[j];
            const bool gt = v > si[j];
            si[j] = gt ? v : si[j];
            if (qi) qi[j] = gt ? qq : qi[j];
          }
        }
      }
    }
  } else {  // Qc > 1: columns carry the tokens
    for (int64_t i = 0; i < m; ++i) {
      const T a = sc * rr[i];
      const T* ri = raw + i * Nq;
      T* si = s + i * n;
      for (int64_t j = 0; j < n; ++j) {
        const T* rj = ri + j * Qc;
        const T* cj = rc + j * Qc;
        T bv = a * rj[0] * cj[0];
        int32_t bq = 0;
        for (int64_t q = 1; q < Qc; ++q) {
          const T v = a * rj[q] * cj[q];
          if (v > bv) { bv = v; bq = static_cast<int32_t>(q); }
        }
        si[j] = bv;
        if (qarg) qarg[i * n + j] = bq;
      }
    }
  }
}

// Online update of a running (max, sum) with a block maximum `mx` and the block's
// sum of exp(v - new max) computed by `sum(newmax)`.
template <typename F>
inline void lse_update(double& M, double& Z, double mx, F&& sum) {
  const double Mn = std::max(M, mx);
  if (!(Mn > -kInf)) {  // every value NaN (or -inf): poison the row
    Z = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  const double keep = M == -kInf ? 0.0 : std::exp(M - Mn);
  Z = Z * keep + sum(Mn);
  M = Mn;
}

inline void best_update(double& best, double& bestJ, double v, double J) {
  if (v > best || (v == best && J < bestJ)) {
    best = v;
    bestJ = J;
  }
}

// ---- forward ---------------------------------------------------------------------------

// The block's rows: statistics of direction bk.rdir.
template <typename T>
void forward_rows(const Ctx<T>& cx, const Block<T>& bk, Stats& S, const Work<T>& w, int64_t r0, int64_t m,
                  int64_t c0, int64_t n) {
  const int64_t Jt = bk.J0 + c0;  // global column of tile column 0
  const Pos pm = pos_mode(cx, bk.J0);
  const int32_t* cid = pm == Pos::Ids ? col_ids(cx, Jt) : nullptr;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t g = r0 + i, k = g - cx.o;
    const T* si = w.s + i * n;
    int64_t jb = n;
    const T mx = max_arg(si, n, &jb);
    if (jb < n) best_update(S.best[k], S.bestJ[k], mx, static_cast<double>(Jt + jb));
    lse_update(S.M[k], S.Z[k], mx, [&](double Mn) {
      const T mt = static_cast<T>(Mn);
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < n; ++j) acc += exp_fast(si[j] - mt);
      return static_cast<double>(acc);
    });
    if (cx.eps > 0) {
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < n; ++j) acc += si[j];
      S.sumS[k] += acc;
    }
    if (pm == Pos::Diag) {
      if (g >= Jt && g < Jt + n) {
        S.posS[k] += si[g - Jt];
        S.cnt[k] += 1;
      }
    } else if (pm == Pos::Ids) {
      const int32_t idg = cx.ids[g];
      T ps = 0;
      int32_t pc = 0;
#pragma omp simd reduction(+ : ps, pc)
      for (int64_t j = 0; j < n; ++j) {
        const bool eq = cid[j] == idg;
        ps += eq ? si[j] : T(0);
        pc += eq ? 1 : 0;
      }
      S.posS[k] += ps;
      S.cnt[k] += pc;
    }
    if (cx.mom_targets) {
      const T* mi = w.ms + i * n;
      const T mmx = max_arg(mi, n, static_cast<int64_t*>(nullptr));
      const double Mn = std::max(S.mM[k], static_cast<double>(mmx));
      if (!(Mn > -kInf)) {
        S.mZ[k] = std::numeric_limits<double>::quiet_NaN();
        continue;
      }
      const double keep = S.mM[k] == -kInf ? 0.0 : std::exp(S.mM[k] - Mn);
      const T mt = static_cast<T>(Mn);
      T az = 0, ad = 0;
#pragma omp simd reduction(+ : az, ad)
      for (int64_t j = 0; j < n; ++j) {
        const T e = exp_fast(mi[j] - mt);
        az += e;
        ad += e * si[j];
      }
      S.mZ[k] = S.mZ[k] * keep + az;
      S.mDot[k] = S.mDot[k] * keep + ad;
      S.mM[k] = Mn;
    }
  }
}

// The square block's columns: statistics of direction bk.cdir (text row j sees image
// column i). Only used when rows are the whole batch (o = 0, b = B) and no momentum.
template <typename T>
void forward_cols(const Ctx<T>& cx, const Block<T>& bk, Stats& S, const Work<T>& w, int64_t r0, int64_t m,
                  int64_t c0, int64_t n) {
  const T* s = w.s;
  T* cmax = w.v0;
  T* mnew = w.v1;
  T* csum = w.v2;
  T* caux = w.v3;
  int32_t* carg = w.carg;
  for (int64_t j = 0; j < n; ++j) { cmax[j] = s[j]; carg[j] = 0; }
  for (int64_t i = 1; i < m; ++i) {
    const T* si = s + i * n;
    const int32_t ii = static_cast<int32_t>(i);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const bool gt = si[j] > cmax[j];
      cmax[j] = gt ? si[j] : cmax[j];
      carg[j] = gt ? ii : carg[j];
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    const int64_t k = c0 + j;
    const double v = cmax[j];
    if (v == v) best_update(S.best[k], S.bestJ[k], v, static_cast<double>(r0 + carg[j]));
    const double Mn = std::max(S.M[k], v);
    if (!(Mn > -kInf)) {
      S.Z[k] = std::numeric_limits<double>::quiet_NaN();
      mnew[j] = T(0);
      csum[j] = T(0);
      continue;
    }
    S.Z[k] *= S.M[k] == -kInf ? 0.0 : std::exp(S.M[k] - Mn);
    S.M[k] = Mn;
    mnew[j] = static_cast<T>(Mn);
    csum[j] = T(0);
  }
  for (int64_t i = 0; i < m; ++i) {
    const T* si = s + i * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) csum[j] += exp_fast(si[j] - mnew[j]);
  }
  for (int64_t j = 0; j < n; ++j) S.Z[c0 + j] += csum[j];
  if (cx.eps > 0) {
    std::fill(caux, caux + n, T(0));
    for (int64_t i = 0; i < m; ++i) {
      const T* si = s + i * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) caux[j] += si[j];
    }
    for (int64_t j = 0; j < n; ++j) S.sumS[c0 + j] += caux[j];
  }
  if (!cx.ids) {
    for (int64_t j = 0; j < n; ++j) {
      const int64_t g = c0 + j;
      if (g >= r0 && g < r0 + m) {
        S.posS[g] += s[(g - r0) * n + j];
        S.cnt[g] += 1;
      }
    }
  } else {
    const int32_t* cid = cx.ids + c0;
    std::fill(caux, caux + n, T(0));
    std::fill(carg, carg + n, 0);
    for (int64_t i = 0; i < m; ++i) {
      const T* si = s + i * n;
      const int32_t idr = cx.ids[r0 + i];
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const bool eq = cid[j] == idr;
        caux[j] += eq ? si[j] : T(0);
        carg[j] += eq ? 1 : 0;
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      S.posS[c0 + j] += caux[j];
      S.cnt[c0 + j] += carg[j];
    }
  }
}

// ---- backward --------------------------------------------------------------------------

struct Saved {  // views into the saved float64 [2, 3, b]
  const double* lse[2];
  const double* mlse[2];
  const double* cnt[2];
};

template <typename T>
void backward_tile(const Ctx<T>& cx, const Block<T>& bk, const Saved& sv, const Work<T>& w, int64_t r0, int64_t m,
                   int64_t c0, int64_t n, T a, double* arow) {
  sim_tile(cx, bk.R, r0, m, bk.C, c0, n, w.raw, w.s, w.qarg);
  if (cx.mom_targets) sim_tile(cx, bk.Rm, r0, m, bk.C, c0, n, w.raw, w.ms, nullptr);
  const T* s = w.s;
  T* ds = w.ds;
  const int64_t Jt = bk.J0 + c0;
  const T base = static_cast<T>(a * cx.eps / cx.N());
  const T am = static_cast<T>(a * (1 - cx.eps) * cx.alpha);
  // Rows: a * (p - y).
  {
    const int rd = bk.rdir;
    const Pos pm = pos_mode(cx, bk.J0);
    const int32_t* cid = pm == Pos::Ids ? col_ids(cx, Jt) : nullptr;
    for (int64_t i = 0; i < m; ++i) {
      const int64_t g = r0 + i, k = g - cx.o;
      const T l = static_cast<T>(sv.lse[rd][k]);
      const T* si = s + i * n;
      T* di = ds + i * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) di[j] = a * exp_fast(si[j] - l) - base;
      if (cx.mom_targets) {
        const T ml = static_cast<T>(sv.mlse[rd][k]);
        const T* mi = w.ms + i * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) di[j] -= am * exp_fast(mi[j] - ml);
      }
      const T h = static_cast<T>(a * (1 - cx.eps) * (1 - cx.alpha) / sv.cnt[rd][k]);
      if (pm == Pos::Diag) {
        if (g >= Jt && g < Jt + n) di[g - Jt] -= h;
      } else if (pm == Pos::Ids) {
        const int32_t idg = cx.ids[g];
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) di[j] -= cid[j] == idg ? h : T(0);
      }
    }
  }
  // Columns of the square block: a * (p - y) of the other direction.
  if (bk.cdir >= 0) {
    const int cd = bk.cdir;
    T* lc = w.v0;
    T* hc = w.v1;
    for (int64_t j = 0; j < n; ++j) {
      lc[j] = static_cast<T>(sv.lse[cd][c0 + j]);
      hc[j] = static_cast<T>(a * (1 - cx.eps) / sv.cnt[cd][c0 + j]);
    }
    for (int64_t i = 0; i < m; ++i) {
      const T* si = s + i * n;
      T* di = ds + i * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) di[j] += a * exp_fast(si[j] - lc[j]) - base;
    }
    if (!cx.ids) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t g = c0 + j;
        if (g >= r0 && g < r0 + m) ds[(g - r0) * n + j] -= hc[j];
      }
    } else {
      const int32_t* cid = cx.ids + c0;
      for (int64_t i = 0; i < m; ++i) {
        T* di = ds + i * n;
        const int32_t idr = cx.ids[r0 + i];
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) di[j] -= cid[j] == idr ? hc[j] : T(0);
      }
    }
  }
  // Sum of dS*s: the temperature's gradient, and the normalisation terms.
  const Feat<T>& R = bk.R;
  const Feat<T>& C = bk.C;
  for (int64_t i = 0; i < m; ++i) {
    const T* si = s + i * n;
    const T* di = ds + i * n;
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < n; ++j) acc += di[j] * si[j];
    arow[r0 + i - cx.o] += acc;
    if (R.corr) {
      if (R.q == 1) {
        R.corr[r0 + i] += acc;
      } else {
        const int32_t* qi = w.qarg + i * n;
        for (int64_t j = 0; j < n; ++j) R.corr[(r0 + i) * R.q + qi[j]] += di[j] * si[j];
      }
    }
  }
  if (C.corr) {
    if (C.q == 1) {
      T* cc = w.v2;
      std::fill(cc, cc + n, T(0));
      for (int64_t i = 0; i < m; ++i) {
        const T* si = s + i * n;
        const T* di = ds + i * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) cc[j] += di[j] * si[j];
      }
      for (int64_t j = 0; j < n; ++j) C.corr[c0 + j] += cc[j];
    } else {
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) C.corr[(c0 + j) * C.q + w.qarg[i * n + j]] += ds[i * n + j] * s[i * n + j];
    }
  }
  if (!R.dx && !C.dx) return;
  // G = d(loss)/d(raw dot products) = scale * dS * rn_R * rn_C, at the arg-max token.
  const int64_t Qr = R.q, Qc = C.q, Mq = m * Qr, Nq = n * Qc, D = cx.D;
  const T* rr = R.rn + r0 * Qr;
  const T* rc = C.rn + c0 * Qc;
  T* G = w.raw;
  if (Qr == 1 && Qc == 1) {
    for (int64_t i = 0; i < m; ++i) {
      const T f = cx.scale * rr[i];
      const T* di = ds + i * n;
      T* gi = G + i * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) gi[j] = f * di[j] * rc[j];
    }
  } else {
    std::fill(G, G + Mq * Nq, T(0));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const int32_t q = w.qarg[i * n + j];
        if (Qr > 1) G[(i * Qr + q) * Nq + j] = cx.scale * rr[i * Qr + q] * rc[j] * ds[i * n + j];
        else G[i * Nq + j * Qc + q] = cx.scale * rr[i] * rc[j * Qc + q] * ds[i * n + j];
      }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (R.xh && C.xh) {  // bf16 GEMMs: G is rounded once and used for both products
      thread_local std::vector<uint16_t> gh;
      if (gh.size() < static_cast<size_t>(Mq * Nq)) gh.resize(static_cast<size_t>(Mq * Nq));
      to_bf16(G, Mq, Nq, Nq, gh.data());
      if (R.dx) gemm(false, false, Mq, D, Nq, T(1), gh.data(), Nq, C.xh + c0 * Qc * D, D, T(1), R.dx + r0 * Qr * D, D);
      if (C.dx) gemm(true, false, Nq, D, Mq, T(1), gh.data(), Nq, R.xh + r0 * Qr * D, D, T(1), C.dx + c0 * Qc * D, D);
      return;
    }
  }
  if (R.dx) gemm(false, false, Mq, D, Nq, T(1), G, Nq, C.x + c0 * Qc * D, D, T(1), R.dx + r0 * Qr * D, D);
  if (C.dx) gemm(true, false, Nq, D, Mq, T(1), G, Nq, R.x + r0 * Qr * D, D, T(1), C.dx + c0 * Qc * D, D);
}

// ---- driver ----------------------------------------------------------------------------

// Features of one call with their inverse norms.
template <typename T>
struct Prepared {
  Ctx<T> cx;
  Feat<T> img, txt, qimg, qtxt, mimg, mtxt;
  std::vector<Tensor> hold;  // norm buffers
  std::vector<std::vector<uint16_t>> hold_bf16;  // bf16 copies of the features (O(B D))

  Feat<T> feat(const Tensor& t, int64_t n, int64_t q, bool normalize) {
    Feat<T> f;
    f.x = t.data<T>();
    f.n = n;
    f.q = q;
    Tensor nb = scratch(2 * n * q, dtype_of<T>());
    T* p = nb.data<T>();
    inv_norms(f.x, n * q, cx.D, normalize, p, p + n * q);
    f.rn = p;
    f.rn2 = p + n * q;
    hold.push_back(std::move(nb));
    if constexpr (std::is_same_v<T, float>) {
      if (gemm_uses_bf16() && n * q > 0) {
        std::vector<uint16_t> h(static_cast<size_t>(n * q * cx.D));
        to_bf16(f.x, n * q, cx.D, cx.D, h.data());
        f.xh = h.data();
        hold_bf16.push_back(std::move(h));
      }
    }
    return f;
  }

  explicit Prepared(const InfonceInputs& in) {
    cx.B = in.B;
    cx.K = in.K;
    cx.D = in.D;
    cx.o = in.row_offset;
    cx.b = in.row_count;
    cx.eps = in.smoothing;
    cx.momentum = in.mom_image.has_value();
    cx.alpha = cx.momentum ? in.alpha : 0.0;
    cx.mom_targets = cx.momentum && in.alpha > 0;
    cx.ids = in.ids ? in.ids->data<int32_t>() : nullptr;
    cx.qids = in.queue_ids ? in.queue_ids->data<int32_t>() : nullptr;
    cx.scale = static_cast<T>(in.scale());
    img = feat(in.image, in.B, in.Q, in.normalize);
    txt = feat(in.text, in.B, 1, in.normalize);
    if (in.K > 0) {
      qimg = feat(*in.queue_image, in.K, in.Q, in.normalize);
      qtxt = feat(*in.queue_text, in.K, 1, in.normalize);
    }
    if (cx.momentum) {
      mimg = feat(*in.mom_image, in.B, in.Q, in.normalize);
      mtxt = feat(*in.mom_text, in.B, 1, in.normalize);
    }
  }

  // The blocks of the loss, in a fixed order. The square block serves both
  // directions when the rows are the whole batch and the columns are the online features.
  std::vector<Block<T>> blocks() const {
    std::vector<Block<T>> out;
    const bool square = !cx.momentum && cx.o == 0 && cx.b == cx.B;
    auto add = [&](const Feat<T>& R, const Feat<T>& Rm, const Feat<T>& C, int64_t J0, int rdir, int cdir) {
      Block<T> bk;
      bk.R = R;
      bk.Rm = cx.mom_targets ? Rm : Feat<T>{};
      bk.C = C;
      bk.J0 = J0;
      bk.rdir = rdir;
      bk.cdir = cdir;
      out.push_back(bk);
    };
    if (square) {
      add(img, mimg, txt, 0, 0, 1);
    } else {
      add(img, mimg, cx.momentum ? mtxt : txt, 0, 0, -1);
      add(txt, mtxt, cx.momentum ? mimg : img, 0, 1, -1);
    }
    if (cx.K > 0) {
      add(img, mimg, qtxt, cx.B, 0, -1);
      add(txt, mtxt, qimg, cx.B, 1, -1);
    }
    return out;
  }
};

// Whether global column J is a positive of global row g (hard targets).
template <typename T>
bool is_positive(const Ctx<T>& cx, int64_t g, int64_t J) {
  if (J < 0) return false;
  if (J < cx.B) return cx.ids ? cx.ids[J] == cx.ids[g] : J == g;
  return cx.qids ? cx.qids[J - cx.B] == cx.ids[g] : false;
}

template <typename T>
InfonceForwardResult forward_t(const InfonceInputs& in) {
  Prepared<T> P(in);
  const Ctx<T>& cx = P.cx;
  const int64_t b = cx.b;
  Tensor stbuf = scratch(2 * Stats::kFields * b, DType::F64);
  Stats st[2];
  st[0].bind(stbuf.data<double>(), b);
  st[1].bind(stbuf.data<double>() + Stats::kFields * b, b);
  for (const Block<T>& bk : P.blocks()) {
    run_block(cx, bk, bk.cdir >= 0, [&](const Work<T>& w, int64_t r0, int64_t m, int64_t c0, int64_t n) {
      sim_tile(cx, bk.R, r0, m, bk.C, c0, n, w.raw, w.s, nullptr);
      if (cx.mom_targets) sim_tile(cx, bk.Rm, r0, m, bk.C, c0, n, w.raw, w.ms, nullptr);
      forward_rows(cx, bk, st[bk.rdir], w, r0, m, c0, n);
      if (bk.cdir >= 0) forward_cols(cx, bk, st[bk.cdir], w, r0, m, c0, n);
    });
  }
  InfonceForwardResult res;
  res.saved = Tensor::empty({2, 3, b}, DType::F64, Device::CPU);
  double* sv = res.saved.data<double>();
  const double N = cx.N(), eps = cx.eps, alpha = cx.alpha;
  double loss = 0;
  for (int d = 0; d < 2; ++d) {
    const Stats& S = st[d];
    double sum = 0, correct = 0;
    for (int64_t k = 0; k < b; ++k) {
      const int64_t g = cx.o + k;
      const double lse = S.M[k] + std::log(S.Z[k]);
      double ydot = (1 - eps) * (1 - alpha) * S.posS[k] / S.cnt[k] + eps * S.sumS[k] / N;
      double mlse = 0;
      if (cx.mom_targets) {
        ydot += (1 - eps) * alpha * S.mDot[k] / S.mZ[k];
        mlse = S.mM[k] + std::log(S.mZ[k]);
      }
      sum += lse - ydot;
      correct += is_positive(cx, g, static_cast<int64_t>(S.bestJ[k])) ? 1 : 0;
      sv[(d * 3 + 0) * b + k] = lse;
      sv[(d * 3 + 1) * b + k] = mlse;
      sv[(d * 3 + 2) * b + k] = S.cnt[k];
    }
    loss += 0.5 * sum / static_cast<double>(b);
    (d == 0 ? res.acc_i2t : res.acc_t2i) = correct / static_cast<double>(b);
  }
  res.loss = loss;
  return res;
}

// dx -= rn^2 * corr * x for every token whose norm had a derivative.
template <typename T>
void finish_norm_grad(const Feat<T>& f, int64_t D) {
  if (!f.dx || !f.corr) return;
  parallel_for(f.n * f.q, 256, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T c = static_cast<T>(f.rn2[r] * f.corr[r]);
      if (c == T(0)) continue;
      const T* x = f.x + r * D;
      T* dx = f.dx + r * D;
      for (int64_t d = 0; d < D; ++d) dx[d] -= c * x[d];
    }
  });
}

template <typename T>
InfonceGradients backward_t(const InfonceInputs& in, const Tensor& saved, double grad_loss, bool need_image,
                            bool need_text, bool need_param) {
  Prepared<T> P(in);
  const Ctx<T>& cx = P.cx;
  const int64_t b = cx.b, D = cx.D;
  InfonceGradients out;
  Tensor corr = scratch(in.B * in.Q + in.B, DType::F64);
  std::fill(corr.data<double>(), corr.data<double>() + in.B * in.Q + in.B, 0.0);
  if (need_image) {
    out.d_image = Tensor::empty(in.image.shape, dtype_of<T>(), Device::CPU);
    std::fill(out.d_image->data<T>(), out.d_image->data<T>() + in.image.numel(), T(0));
    P.img.dx = out.d_image->data<T>();
    if (in.normalize) P.img.corr = corr.data<double>();
  }
  if (need_text) {
    out.d_text = Tensor::empty(in.text.shape, dtype_of<T>(), Device::CPU);
    std::fill(out.d_text->data<T>(), out.d_text->data<T>() + in.text.numel(), T(0));
    P.txt.dx = out.d_text->data<T>();
    if (in.normalize) P.txt.corr = corr.data<double>() + in.B * in.Q;
  }
  const double* sd = saved.data<double>();
  Saved sv;
  for (int d = 0; d < 2; ++d) {
    sv.lse[d] = sd + (d * 3 + 0) * b;
    sv.mlse[d] = sd + (d * 3 + 1) * b;
    sv.cnt[d] = sd + (d * 3 + 2) * b;
  }
  const T a = static_cast<T>(grad_loss * 0.5 / static_cast<double>(b));
  Tensor abuf = scratch(b, DType::F64);
  double* arow = abuf.data<double>();
  double A = 0;
  for (const Block<T>& bk : P.blocks()) {
    if (!bk.R.dx && !bk.C.dx && !need_param) continue;  // nothing asked of this block
    std::fill(arow, arow + b, 0.0);
    run_block(cx, bk, bk.C.dx != nullptr, [&](const Work<T>& w, int64_t r0, int64_t m, int64_t c0, int64_t n) {
      backward_tile(cx, bk, sv, w, r0, m, c0, n, a, arow);
    });
    for (int64_t k = 0; k < b; ++k) A += arow[k];
  }
  finish_norm_grad(P.img, D);
  finish_norm_grad(P.txt, D);
  // A = sum dS * s = scale * dL/dscale.
  out.d_param = in.mode == InfonceScaleMode::LogitScale ? A : -A * in.scale();
  return out;
}

// ---- reference ---------------------------------------------------------------------------

// Normalised copy (or plain copy) of rows x D values, and the norms.
template <typename T>
std::vector<T> hat_of(const T* x, int64_t rows, int64_t D, bool normalize, std::vector<double>* norms) {
  std::vector<T> h(x, x + rows * D);
  if (norms) norms->assign(rows, 1.0);
  if (!normalize) return h;
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(x[r * D + d]) * x[r * D + d];
    const double nrm = std::sqrt(ss);
    if (norms) (*norms)[r] = nrm;
    const double div = std::max(nrm, kNormEps);
    for (int64_t d = 0; d < D; ++d) h[r * D + d] = static_cast<T>(x[r * D + d] / div);
  }
  return h;
}

// dL/dx from dL/dx_hat through x_hat = x / max(||x||, eps).
template <typename T>
void norm_backward(const std::vector<T>& h, const std::vector<double>& norms, const std::vector<T>& dh,
                   int64_t rows, int64_t D, bool normalize, T* dx) {
  for (int64_t r = 0; r < rows; ++r) {
    if (!normalize) {
      for (int64_t d = 0; d < D; ++d) dx[r * D + d] = dh[r * D + d];
      continue;
    }
    const double nrm = norms[r];
    if (nrm > kNormEps) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(h[r * D + d]) * dh[r * D + d];
      for (int64_t d = 0; d < D; ++d) dx[r * D + d] = static_cast<T>((dh[r * D + d] - h[r * D + d] * dot) / nrm);
    } else {
      for (int64_t d = 0; d < D; ++d) dx[r * D + d] = static_cast<T>(dh[r * D + d] / kNormEps);
    }
  }
}

template <typename T>
InfonceReferenceResult reference_t(const InfonceInputs& in) {
  const int64_t B = in.B, Q = in.Q, D = in.D, K = in.K, o = in.row_offset, b = in.row_count, N = B + K;
  const double scale = in.scale(), eps = in.smoothing;
  const bool mom = in.mom_image.has_value();
  const double alpha = mom ? in.alpha : 0.0;
  const int32_t* ids = in.ids ? in.ids->data<int32_t>() : nullptr;
  const int32_t* qids = in.queue_ids ? in.queue_ids->data<int32_t>() : nullptr;
  std::vector<double> nimg, ntxt;
  std::vector<T> himg = hat_of(in.image.data<T>(), B * Q, D, in.normalize, &nimg);
  std::vector<T> htxt = hat_of(in.text.data<T>(), B, D, in.normalize, &ntxt);
  std::vector<T> hqimg, hqtxt, hmimg, hmtxt;
  if (K > 0) {
    hqimg = hat_of(in.queue_image->data<T>(), K * Q, D, in.normalize, nullptr);
    hqtxt = hat_of(in.queue_text->data<T>(), K, D, in.normalize, nullptr);
  }
  if (mom) {
    hmimg = hat_of(in.mom_image->data<T>(), B * Q, D, in.normalize, nullptr);
    hmtxt = hat_of(in.mom_text->data<T>(), B, D, in.normalize, nullptr);
  }
  std::vector<T> dhimg(B * Q * D, T(0)), dhtxt(B * D, T(0));
  auto positive = [&](int64_t g, int64_t J) {
    if (J < B) return ids ? ids[J] == ids[g] : J == g;
    return qids ? qids[J - B] == ids[g] : false;
  };
  InfonceReferenceResult res;
  double loss = 0, dscale = 0;
  for (int d = 0; d < 2; ++d) {
    // Rows, and the columns [batch; queue] materialised as one matrix.
    const int64_t Qr = d == 0 ? Q : 1, Qc = d == 0 ? 1 : Q;
    const std::vector<T>& R = d == 0 ? himg : htxt;
    const std::vector<T>& Rm = d == 0 ? hmimg : hmtxt;
    const std::vector<T>& Cb = d == 0 ? (mom ? hmtxt : htxt) : (mom ? hmimg : himg);
    const std::vector<T>& Cq = d == 0 ? hqtxt : hqimg;
    std::vector<T> Call(Cb);
    Call.insert(Call.end(), Cq.begin(), Cq.end());
    // logits[b, N] = scale * max over tokens of the dot products, and the arg-max token
    auto logits = [&](const std::vector<T>& rows, std::vector<double>& L, std::vector<int64_t>* arg) {
      std::vector<T> raw(b * Qr * N * Qc);
      gemm(false, true, b * Qr, N * Qc, D, T(1), rows.data() + o * Qr * D, D, Call.data(), D, T(0), raw.data(), N * Qc);
      L.assign(b * N, 0.0);
      if (arg) arg->assign(b * N, 0);
      for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double best = -kInf;
          int64_t bq = 0;
          for (int64_t q = 0; q < Qr * Qc; ++q) {
            const int64_t qr = Qr > 1 ? q : 0, qc = Qc > 1 ? q : 0;
            const double v = raw[(i * Qr + qr) * N * Qc + j * Qc + qc];
            if (q == 0 || v > best) { best = v; bq = q; }
          }
          L[i * N + j] = scale * best;
          if (arg) (*arg)[i * N + j] = bq;
        }
    };
    std::vector<double> L, Lm;
    std::vector<int64_t> arg;
    logits(R, L, &arg);
    if (mom && alpha > 0) logits(Rm, Lm, nullptr);
    std::vector<double> dL(b * N);
    double correct = 0;
    for (int64_t i = 0; i < b; ++i) {
      const int64_t g = o + i;
      const double* Li = L.data() + i * N;
      // targets
      std::vector<double> y(N, eps / static_cast<double>(N));
      double cnt = 0;
      for (int64_t j = 0; j < N; ++j) cnt += positive(g, j) ? 1 : 0;
      for (int64_t j = 0; j < N; ++j)
        if (positive(g, j)) y[j] += (1 - eps) * (1 - alpha) / cnt;
      if (mom && alpha > 0) {
        const double* Mi = Lm.data() + i * N;
        double mx = -kInf, z = 0;
        for (int64_t j = 0; j < N; ++j) mx = std::max(mx, Mi[j]);
        for (int64_t j = 0; j < N; ++j) z += std::exp(Mi[j] - mx);
        for (int64_t j = 0; j < N; ++j) y[j] += (1 - eps) * alpha * std::exp(Mi[j] - mx) / z;
      }
      // log-softmax and cross-entropy
      double mx = -kInf, z = 0;
      int64_t am = 0;
      for (int64_t j = 0; j < N; ++j)
        if (Li[j] > mx) { mx = Li[j]; am = j; }
      for (int64_t j = 0; j < N; ++j) z += std::exp(Li[j] - mx);
      const double lse = mx + std::log(z);
      double ce = 0;
      for (int64_t j = 0; j < N; ++j) ce -= y[j] * (Li[j] - lse);
      loss += 0.5 * ce / static_cast<double>(b);
      correct += positive(g, am) ? 1 : 0;
      for (int64_t j = 0; j < N; ++j) {
        dL[i * N + j] = 0.5 / static_cast<double>(b) * (std::exp(Li[j] - lse) - y[j]);
        dscale += dL[i * N + j] * Li[j] / scale;
      }
    }
    (d == 0 ? res.acc_i2t : res.acc_t2i) = correct / static_cast<double>(b);
    // d(raw) at the arg-max token, then the two products.
    std::vector<T> draw(b * Qr * N * Qc, T(0));
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < N; ++j) {
        const int64_t q = arg[i * N + j], qr = Qr > 1 ? q : 0, qc = Qc > 1 ? q : 0;
        draw[(i * Qr + qr) * N * Qc + j * Qc + qc] = static_cast<T>(scale * dL[i * N + j]);
      }
    std::vector<T>& dR = d == 0 ? dhimg : dhtxt;
    gemm(false, false, b * Qr, D, N * Qc, T(1), draw.data(), N * Qc, Call.data(), D, T(1), dR.data() + o * Qr * D, D);
    if (!mom) {  // the batch columns are the online features of the other modality
      std::vector<T>& dC = d == 0 ? dhtxt : dhimg;
      gemm(true, false, B * Qc, D, b * Qr, T(1), draw.data(), N * Qc, R.data() + o * Qr * D, D, T(1), dC.data(), D);
    }
  }
  res.loss = loss;
  res.d_image = Tensor::empty(in.image.shape, dtype_of<T>(), Device::CPU);
  res.d_text = Tensor::empty(in.text.shape, dtype_of<T>(), Device::CPU);
  norm_backward(himg, nimg, dhimg, B * Q, D, in.normalize, res.d_image.data<T>());
  norm_backward(htxt, ntxt, dhtxt, B, D, in.normalize, res.d_text.data<T>());
  res.d_param = in.mode == InfonceScaleMode::LogitScale ? dscale * scale : -dscale * scale * scale;
  return res;
}

}  // namespace

InfonceForwardResult infonce_forward(const InfonceInputs& in) {
  InfonceForwardResult r;
  dispatch_float(in.image.dtype, [&](auto zero) { r = forward_t<decltype(zero)>(in); });
  return r;
}

InfonceGradients infonce_backward(const InfonceInputs& in, const Tensor& saved, double grad_loss, bool need_image,
                                  bool need_text, bool need_param) {
  InfonceGradients g;
  dispatch_float(in.image.dtype, [&](auto zero) {
    g = backward_t<decltype(zero)>(in, saved, grad_loss, need_image, need_text, need_param);
  });
  return g;
}

InfonceReferenceResult infonce_reference(const InfonceInputs& in) {
  InfonceReferenceResult r;
  dispatch_float(in.image.dtype, [&](auto zero) { r = reference_t<decltype(zero)>(in); });
  return r;
}

void infonce_set_tiles(int64_t rows, int64_t cols) {
  g_row_tile.store(rows);
  g_col_tile.store(cols);
}
int64_t infonce_row_tile() { return g_row_tile.load(); }
int64_t infonce_col_tile() { return g_col_tile.load(); }

double infonce_exp_max_rel_error(double lo, double hi, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = n > 1 ? lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(n - 1) : lo;
    const float xf = static_cast<float>(x);
    const double want = std::exp(static_cast<double>(xf));
    const double got = exp_fast(xf);
    worst = std::max(worst, std::fabs(got - want) / want);
  }
  return worst;
}

}  // namespace cpu
}  // namespace vlm
