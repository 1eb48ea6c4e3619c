// itm family, CPU: hard-negative mining from the contrastive similarities, the fused
// 2-way ITM head (forward and backward in one pass), and their naive references.
// Formulas and notation: ops/itm.h.
//
// Mining. One direction at a time (image rows against text columns, then text rows
// against image columns), parallel over row tiles:
//   pass 1: every column tile in index order: GEMM tile (scaled by 1/temperature, max
//           over query tokens), the excluded entries (self / same id) set to -inf, then
//           per row the tile's maximum m_t and S_t = sum exp(s - m_t), folded into the
//           row's (M, Z) by the online logsumexp, and into the (max, sum) of the tile's
//           segment (g consecutive column tiles; g = 1 unless the rows x segments table
//           would grow past g_seg_cells); with a weight floor also the all-column
//           (M, Z) and the allowed counts;
//   draw:   u from Philox element (seed, offset + dir * B + row); the segment masses,
//           in order, locate the segment where the row's CDF passes u * W;
//   pass 2: per segment, the rows that land in it are gathered into one GEMM against
//           the segment's tiles only, and walked element by element to the crossing.
// So pass 2 costs about 1/(number of segments) of pass 1. Never materialised: the B x B
// similarities, weights or CDF; the state is O(rows x segments) per thread. Every sum a
// draw depends on runs over fixed-size tiles in index order, so the negatives do not
// depend on the thread count. Pass 2's gathered GEMM can round differently from pass 1's
// by an ulp; a row whose recomputed CDF then falls short keeps the last allowed column it
// saw (never an out-of-range index).
//
// Head. Rows are split into at most 128 fixed chunks (boundaries depend on N only);
// each chunk keeps float64 partial sums of the loss, dW and db, added in chunk order,
// so the result is the same on any thread count. d(features) is written in the same
// pass as the loss.
#include "ops/itm.h"
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <type_traits>
#include <vector>
#include <omp.h>
#include "core/gemm.h"
#include "core/parallel.h"
#include "core/rng.h"

namespace vlm {
namespace cpu {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Tile in GEMM rows x GEMM columns (entities x tokens). 256 x 256 keeps the GEMM
// efficient and the tile (256 KiB of float32) in L2.
std::atomic<int64_t> g_row_tile{256};
std::atomic<int64_t> g_col_tile{256};
// Below this many multiply-adds (or elements) a thread's share is not worth waking a
// thread for (a parallel region costs ~10 us, and milliseconds on a busy machine).
constexpr double kSerialWork = 1 << 21;

// parallel_for's grain for n items of `work` each: chunks of at least kSerialWork.
inline int64_t grain_for(double work) { return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(kSerialWork / std::max(work, 1.0)))); }

// parallel_for over [0, n) with that grain, except that a single chunk runs inside a
// one-thread region whose thread-count setting is 1, so that the tile GEMMs in it run
// single-threaded as they do in the parallel case (a team for a tile-sized product
// costs more than it saves, and the results then match the parallel path bit for bit).
template <typename F>
void tiles_for(int64_t n, int64_t grain, F&& f) {
  const int64_t chunks = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (chunks > 1 || omp_in_parallel()) {
    parallel_for(n, grain, f);
    return;
  }
  std::exception_ptr err;
#pragma omp parallel num_threads(1)
  {
    omp_set_num_threads(1);  // this region's own setting: GEMMs below see one thread
    try {
      f(int64_t{0}, n);
    } catch (...) {
      err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
}

template <typename T> constexpr DType dtype_of() { return std::is_same_v<T, float> ? DType::F32 : DType::F64; }
// Scratch as tensors, so that memory() sees what the kernels allocate.
Tensor scratch(int64_t n, DType dt) { return Tensor::empty({std::max<int64_t>(n, 1)}, dt, Device::CPU); }

// ---- exp ---------------------------------------------------------------------------------
// float32 e^x for x <= 0 (every call here is exp(s - max)): x = n ln2 + r with
// |r| <= ln2/2 (n rounded by adding 1.5 * 2^23; ln2 split in two for an exact
// product), e^r by its degree-7 Taylor polynomial (truncation < 6e-9 relative), 2^n
// built in the exponent bits. No branches, so loops calling it vectorise. Inputs below
// -87 give about 1.6e-38 instead of smaller numbers (negligible against the maximum's 1).
inline float exp_neg(float x) {
  x = x < -87.0f ? -87.0f : x;  // NaN compares false and stays NaN
  x = x > 0.0f ? 0.0f : x;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23
  const float t = std::fma(x, 1.44269504088896341f, kShift);
  const float n = t - kShift;
  float r = std::fma(n, -0.693145751953125f, x);
  r = std::fma(n, -1.428606765330187e-6f, r);
  float p = 1.0f / 5040.0f;
  p = std::fma(p, r, 1.0f / 720.0f);
  p = std::fma(p, r, 1.0f / 120.0f);
  p = std::fma(p, r, 1.0f / 24.0f);
  p = std::fma(p, r, 1.0f / 6.0f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  // the low mantissa bits of t hold n (two's complement): 2^n has exponent n + 127
  const int32_t bits = (__builtin_bit_cast(int32_t, t) - 0x4B400000 + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}
inline double exp_neg(double x) { return std::exp(x); }

// Sum of n values with eight accumulators in a fixed pattern: vectorises without
// reassociation, so every call on the same values gives the same bits.
template <typename T>
inline T sum_fixed(const T* w, int64_t n) {
  T a[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) a[k] += w[j + k];
  for (int k = 0; j < n; ++j, ++k) a[k] += w[j];
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

// Maximum of the entries that are not -inf (excluded), their weights w = exp(s - max)
// (0 where excluded) and, in sum, the weights' sum. Returns -inf when every entry is excluded.
template <typename T>
inline T row_weights(const T* s, T* w, int64_t n, T& sum) {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  T mx = ninf;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, s[j]);
  if (!(mx > ninf)) {
    sum = T(0);
    return ninf;
  }
  // Two loops: fused into one select, GCC keeps the exp behind a branch (it may not
  // speculate trapping float ops) and vectorises neither.
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) w[j] = exp_neg(s[j] - mx);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) w[j] = s[j] == ninf ? T(0) : w[j];
  sum = sum_fixed(w, n);
  return mx;
}

// Online logsumexp: folds a block with maximum m and sum S of exp(v - m) into (M, Z).
// Returns true when m became the new maximum.
inline bool lse_fold(double& M, double& Z, double m, double S) {
  if (m > M) {
    Z = Z * std::exp(M - m) + S;  // exp(-inf) = 0 on the first block
    M = m;
    return true;
  }
  Z += S * std::exp(m - M);
  return false;
}

// ---- mining --------------------------------------------------------------------------------

// One side of the similarity: n entities of q tokens of D values, contiguous.
template <typename T>
struct Side {
  const T* x = nullptr;
  int64_t q = 1;
};

// s[m x n] = max over tokens of alpha * R[r0 + i] . C[c0 + j] (one GEMM of the raw
// features; only one side has tokens).
template <typename T>
void sim_tile(const Side<T>& R, int64_t r0, int64_t m, const Side<T>& C, int64_t c0, int64_t n, int64_t D, T alpha,
              T* raw, T* s) {
  const int64_t Mr = m * R.q, Nc = n * C.q;
  T* out = R.q == 1 && C.q == 1 ? s : raw;
  gemm(false, true, Mr, Nc, D, alpha, R.x + r0 * R.q * D, D, C.x + c0 * C.q * D, D, T(0), out, Nc);
  if (R.q > 1) {
    for (int64_t i = 0; i < m; ++i) {
      T* si = s + i * n;
      std::memcpy(si, raw + i * R.q * n, sizeof(T) * n);
      for (int64_t q = 1; q < R.q; ++q) {
        const T* rq = raw + (i * R.q + q) * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) si[j] = std::max(si[j], rq[j]);
      }
    }
  } else if (C.q > 1) {
    for (int64_t i = 0; i < m; ++i) {
      const T* ri = raw + i * Nc;
      T* si = s + i * n;
      for (int64_t j = 0; j < n; ++j) {
        const T* rj = ri + j * C.q;
        T v = rj[0];
        for (int64_t q = 1; q < C.q; ++q) v = std::max(v, rj[q]);
        si[j] = v;
      }
    }
  }
}

// Sets the excluded entries of a tile to -inf: the sample itself, or every sample with
// the row's id. Row i of the tile is global entity rows[i]; columns are [c0, c0 + n).
template <typename T>
void mask_tile(T* s, const int64_t* rows, int64_t m, int64_t c0, int64_t n, const int32_t* ids) {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  if (ids) {
    const int32_t* cid = ids + c0;
    for (int64_t i = 0; i < m; ++i) {
      const int32_t idr = ids[rows[i]];
      T* si = s + i * n;
      for (int64_t j = 0; j < n; ++j)
        if (cid[j] == idr) si[j] = ninf;
    }
  } else {
    for (int64_t i = 0; i < m; ++i) {
      const int64_t g = rows[i];
      if (g >= c0 && g < c0 + n) s[i * n + (g - c0)] = ninf;
    }
  }
}

template <typename T>
inline bool all_finite(const T* s, int64_t n) {
  constexpr T big = std::numeric_limits<T>::max();
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t j = 0; j < n; ++j) bad |= !(std::fabs(s[j]) <= big);  // NaN fails too
  return bad == 0;
}

template <typename T>
inline int64_t count_allowed(const T* s, int64_t n) {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  int64_t c = 0;
#pragma omp simd reduction(+ : c)
  for (int64_t j = 0; j < n; ++j) c += s[j] == ninf ? 0 : 1;
  return c;
}

// Keeps the smallest (dir, row) reported as bad.
struct BadRow {
  std::atomic<int64_t> key{std::numeric_limits<int64_t>::max()};
  void report(int dir, int64_t row, int64_t B) {
    const int64_t k = dir * B + row;
    int64_t cur = key.load();
    while (k < cur && !key.compare_exchange_weak(cur, k)) {
    }
  }
};

// One direction: rows R against columns C. Pass 1 walks every column tile of a row tile
// and keeps, besides the row's (M, Z), the (max, sum) of each segment of g consecutive
// column tiles (g = 1 unless the table would pass g_seg_cells). The segment masses locate
// the segment where each row's CDF passes u * W; pass 2 recomputes only that segment,
// for the rows that land in it (gathered into one GEMM per segment). So pass 2 costs
// about 1/(number of segments) of pass 1.
std::atomic<int64_t> g_seg_cells{1 << 16};  // rows x segments per thread (x 24 bytes); settable for tests

template <typename T>
void mine_direction(const ItmMineInputs& in, int dir, int32_t* out, BadRow& bad) {
  constexpr T tinf = std::numeric_limits<T>::infinity();
  const int64_t B = in.B, D = in.D;
  const Side<T> img{in.image.data<T>(), in.Q}, txt{in.text.data<T>(), 1};
  const Side<T>& R = dir == 0 ? img : txt;
  const Side<T>& C = dir == 0 ? txt : img;
  const int32_t* ids = in.ids ? in.ids->data<int32_t>() : nullptr;
  const T alpha = static_cast<T>(1.0 / in.temperature);
  const double floor = in.floor;
  const bool floored = floor > 0;
  const int64_t TM = std::max<int64_t>(1, g_row_tile.load() / R.q);
  const int64_t TN = std::max<int64_t>(1, g_col_tile.load() / C.q);
  const int64_t n_rt = (B + TM - 1) / TM, n_ct = (B + TN - 1) / TN;
  const int64_t cells = g_seg_cells.load();
  const int64_t g = std::max<int64_t>(1, (TM * n_ct + cells - 1) / cells);  // tiles per segment
  const int64_t n_seg = (n_ct + g - 1) / g;
  const bool need_raw = R.q > 1 || C.q > 1;
  const int64_t n_raw = need_raw ? TM * R.q * TN * C.q : 0;
  const double tile_work = 2.0 * static_cast<double>(TM * R.q) * static_cast<double>(B * C.q) * static_cast<double>(D);

  tiles_for(n_rt, grain_for(tile_work), [&](int64_t rt_begin, int64_t rt_end) {
    // per thread: GEMM tile, similarity tile, one weight row, the gathered rows of pass 2
    Tensor tbuf = scratch(n_raw + TM * TN + TN + TM * R.q * D, dtype_of<T>());
    T* raw = tbuf.data<T>();
    T* s = raw + n_raw;
    T* w = s + TM * TN;
    T* gath = w + TN;
    // per row: M, Z, Ma, Za, na, acc, target, cfac; per row and segment: max, sum, count
    Tensor dbuf = scratch(8 * TM + 3 * TM * n_seg, DType::F64);
    double* st = dbuf.data<double>();
    double *M = st, *Z = st + TM, *Ma = st + 2 * TM, *Za = st + 3 * TM, *na = st + 4 * TM, *acc = st + 5 * TM,
           *target = st + 6 * TM, *cfac = st + 7 * TM;
    double *segM = st + 8 * TM, *segS = segM + TM * n_seg, *segC = segS + TM * n_seg;
    std::vector<int64_t> arg(TM), last(TM), seg(TM), rows(TM), order(TM), start(n_seg + 1);
    std::vector<char> done(TM), rbad(TM);

    for (int64_t rt = rt_begin; rt < rt_end; ++rt) {
      const int64_t r0 = rt * TM, m = std::min(TM, B - r0);
      for (int64_t i = 0; i < m; ++i) {
        M[i] = Ma[i] = -kInf;
        Z[i] = Za[i] = na[i] = acc[i] = 0;
        arg[i] = last[i] = seg[i] = -1;
        done[i] = rbad[i] = 0;
        rows[i] = r0 + i;
      }
      std::fill(segM, segM + m * n_seg, -kInf);
      std::fill(segS, segS + m * n_seg, 0.0);
      std::fill(segC, segC + m * n_seg, 0.0);

      // pass 1: row normalisers and segment masses
      for (int64_t ct = 0; ct < n_ct; ++ct) {
        const int64_t c0 = ct * TN, n = std::min(TN, B - c0), k = ct / g;
        sim_tile(R, r0, m, C, c0, n, D, alpha, raw, s);
        for (int64_t i = 0; i < m; ++i) {
          const T* si = s + i * n;
          if (!all_finite(si, n)) rbad[i] = 1;
          if (floored) {  // LAVIS's softmax runs over every column, the positive included
            T sa;
            const T ma = row_weights(si, w, n, sa);
            lse_fold(Ma[i], Za[i], ma, sa);
          }
        }
        mask_tile(s, rows.data(), m, c0, n, ids);
        for (int64_t i = 0; i < m; ++i) {
          const T* si = s + i * n;
          T S;
          const T mt = row_weights(si, w, n, S);
          if (!(mt > -tinf)) continue;  // nothing allowed in this tile
          if (lse_fold(M[i], Z[i], mt, S)) {
            int64_t j = 0;
            while (j < n && !(si[j] == mt)) ++j;
            arg[i] = c0 + std::min(j, n - 1);
          }
          lse_fold(segM[i * n_seg + k], segS[i * n_seg + k], mt, S);
          if (floored) {
            const double cnt = static_cast<double>(count_allowed(si, n));
            na[i] += cnt;
            segC[i * n_seg + k] += cnt;
          }
        }
      }

      // the draw: u * W, and the segment where the CDF passes it
      std::fill(start.begin(), start.end(), 0);
      for (int64_t i = 0; i < m; ++i) {
        const int64_t gr = r0 + i;
        const double c = floored ? std::exp(M[i] - Ma[i]) / Za[i] : 1.0;
        const double W = c * Z[i] + floor * na[i];
        if (rbad[i] || !std::isfinite(M[i]) || !(Z[i] > 0) || !std::isfinite(W) || !(W > 0) || arg[i] < 0) {
          bad.report(dir, gr, B);
          out[gr] = static_cast<int32_t>(gr == 0 ? 1 : 0);  // in range; the binding throws
          done[i] = 1;
          continue;
        }
        cfac[i] = c;
        target[i] = Philox::uniform(in.seed, in.offset + static_cast<uint64_t>(dir * B + gr)) * W;
        double a = 0;
        for (int64_t k = 0; k < n_seg; ++k) {
          const double sm = segM[i * n_seg + k];
          const double mass = (sm > -kInf ? c * segS[i * n_seg + k] * std::exp(sm - M[i]) : 0.0) + floor * segC[i * n_seg + k];
          if (a + mass > target[i]) {
            seg[i] = k;
            break;
          }
          a += mass;
        }
        if (seg[i] < 0) {  // the CDF fell short of u * W by rounding: the largest weight
          out[gr] = static_cast<int32_t>(arg[i]);
          done[i] = 1;
          continue;
        }
        acc[i] = a;
        ++start[seg[i] + 1];
      }
      // rows grouped by segment, in row order within each
      for (int64_t k = 0; k < n_seg; ++k) start[k + 1] += start[k];
      {
        std::vector<int64_t> fill(start.begin(), start.end() - 1);
        for (int64_t i = 0; i < m; ++i)
          if (!done[i]) order[fill[seg[i]]++] = i;
      }

      // pass 2: each segment's tiles again, for its rows only
      for (int64_t k = 0; k < n_seg; ++k) {
        const int64_t* L = order.data() + start[k];
        const int64_t mk = start[k + 1] - start[k];
        if (mk == 0) continue;
        std::vector<int64_t> grow(mk);
        for (int64_t p = 0; p < mk; ++p) {
          grow[p] = r0 + L[p];
          std::memcpy(gath + p * R.q * D, R.x + grow[p] * R.q * D, sizeof(T) * R.q * D);
        }
        const Side<T> G{gath, R.q};
        int64_t left = mk;
        for (int64_t ct = k * g; ct < std::min(n_ct, (k + 1) * g) && left > 0; ++ct) {
          const int64_t c0 = ct * TN, n = std::min(TN, B - c0);
          sim_tile(G, 0, mk, C, c0, n, D, alpha, raw, s);
          mask_tile(s, grow.data(), mk, c0, n, ids);
          for (int64_t p = 0; p < mk; ++p) {
            const int64_t i = L[p];
            if (done[i]) continue;
            const T* si = s + p * n;
            T S;
            const T mt = row_weights(si, w, n, S);
            if (!(mt > -tinf)) continue;
            const double scale = cfac[i] * std::exp(static_cast<double>(mt) - M[i]);
            const double mass = scale * static_cast<double>(S) + (floored ? floor * static_cast<double>(count_allowed(si, n)) : 0.0);
            if (!(acc[i] + mass > target[i])) {
              acc[i] += mass;
              int64_t j = 0;  // fallback candidate: this tile's largest (allowed) entry
              while (j < n && !(si[j] == mt)) ++j;
              last[i] = c0 + std::min(j, n - 1);
              continue;
            }
            double a = acc[i];
            int64_t pick = -1, lastj = -1;
            for (int64_t j = 0; j < n; ++j) {
              if (si[j] == -tinf) continue;
              const double wj = scale * static_cast<double>(w[j]) + floor;
              if (wj > 0) lastj = j;
              a += wj;
              if (a > target[i]) {
                pick = j;
                break;
              }
            }
            if (pick < 0) pick = lastj;  // rounding: the tile's mass said the draw lies here
            out[r0 + i] = static_cast<int32_t>(c0 + pick);
            done[i] = 1;
            --left;
          }
        }
        for (int64_t p = 0; p < mk; ++p) {  // recomputed masses fell short of the stored ones by rounding
          const int64_t i = L[p];
          if (!done[i]) out[r0 + i] = static_cast<int32_t>(last[i] >= 0 ? last[i] : arg[i]);
        }
      }
    }
  });
}

template <typename T>
ItmMineResult mine_t(const ItmMineInputs& in) {
  ItmMineResult res;
  res.neg_text = Tensor::empty({in.B}, DType::I32, Device::CPU);
  res.neg_image = Tensor::empty({in.B}, DType::I32, Device::CPU);
  std::fill(res.neg_image.data<int32_t>(), res.neg_image.data<int32_t>() + in.B, 0);
  BadRow bad;
  for (int dir = 0; dir < 2; ++dir) {
    mine_direction<T>(in, dir, (dir == 0 ? res.neg_text : res.neg_image).data<int32_t>(), bad);
    const int64_t k = bad.key.load();
    if (k != std::numeric_limits<int64_t>::max()) {  // no use drawing the other direction
      res.bad_dir = static_cast<int>(k / in.B);
      res.bad_row = k % in.B;
      break;
    }
  }
  return res;
}

// ---- mining reference ----------------------------------------------------------------------

template <typename T>
ItmMineResult reference_t(const ItmMineInputs& in, bool probs) {
  const int64_t B = in.B, Q = in.Q, D = in.D;
  const T alpha = static_cast<T>(1.0 / in.temperature);
  const double floor = in.floor;
  const int32_t* ids = in.ids ? in.ids->data<int32_t>() : nullptr;
  const T* img = in.image.data<T>();
  const T* txt = in.text.data<T>();
  ItmMineResult res;
  res.neg_text = Tensor::empty({B}, DType::I32, Device::CPU);
  res.neg_image = Tensor::empty({B}, DType::I32, Device::CPU);
  if (probs) {
    res.prob_i2t = Tensor::empty({B, B}, DType::F64, Device::CPU);
    res.prob_t2i = Tensor::empty({B, B}, DType::F64, Device::CPU);
  }
  BadRow bad;
  for (int dir = 0; dir < 2; ++dir) {
    // The direction's similarity matrix, as LAVIS: image @ text^T, then text @ image^T.
    Tensor S = scratch(B * B, dtype_of<T>());
    T* sm = S.data<T>();
    {
      Tensor raw = scratch(Q > 1 ? B * Q * B : 0, dtype_of<T>());
      T* dst = Q > 1 ? raw.data<T>() : sm;
      if (dir == 0) gemm(false, true, B * Q, B, D, alpha, img, D, txt, D, T(0), dst, B);
      else gemm(false, true, B, B * Q, D, alpha, txt, D, img, D, T(0), dst, B * Q);
      if (Q > 1) {
        const T* rw = raw.data<T>();
        parallel_for(B, grain_for(static_cast<double>(B * Q)), [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i)
            for (int64_t j = 0; j < B; ++j) {
              T v = dir == 0 ? rw[i * Q * B + j] : rw[i * B * Q + j * Q];
              for (int64_t q = 1; q < Q; ++q) v = std::max(v, dir == 0 ? rw[(i * Q + q) * B + j] : rw[i * B * Q + j * Q + q]);
              sm[i * B + j] = v;
            }
        });
      }
    }
    // The weights: masked softmax (or LAVIS's softmax + floor, masked), one row each.
    Tensor P = scratch(B * B, dtype_of<T>());
    T* pm = P.data<T>();
    int32_t* out = (dir == 0 ? res.neg_text : res.neg_image).data<int32_t>();
    double* prob = probs ? (dir == 0 ? res.prob_i2t : res.prob_t2i)->data<double>() : nullptr;
    parallel_for(B, grain_for(8.0 * static_cast<double>(B)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* sr = sm + r * B;
        T* pr = pm + r * B;
        auto allowed = [&](int64_t k) { return ids ? ids[k] != ids[r] : k != r; };
        bool finite = true;
        T mx = -std::numeric_limits<T>::infinity();
        for (int64_t k = 0; k < B; ++k) {
          finite = finite && std::isfinite(sr[k]);
          if (floor > 0 || allowed(k)) mx = std::max(mx, sr[k]);
        }
        T z = 0;
        for (int64_t k = 0; k < B; ++k)
          if (floor > 0 || allowed(k)) z += std::exp(sr[k] - mx);
        double W = 0;
        for (int64_t k = 0; k < B; ++k) {
          pr[k] = !allowed(k) ? T(0) : floor > 0 ? static_cast<T>(std::exp(sr[k] - mx) / z + floor) : std::exp(sr[k] - mx);
          W += pr[k];
        }
        if (!finite || !std::isfinite(W) || !(W > 0)) {
          bad.report(dir, r, B);
          out[r] = static_cast<int32_t>(r == 0 ? 1 : 0);
          if (prob) std::fill(prob + r * B, prob + (r + 1) * B, 0.0);
          continue;
        }
        const double target = Philox::uniform(in.seed, in.offset + static_cast<uint64_t>(dir * B + r)) * W;
        double acc = 0;
        int64_t pick = -1, last = -1;
        for (int64_t k = 0; k < B; ++k) {
          if (pr[k] > 0) last = k;
          acc += pr[k];
          if (acc > target) {
            pick = k;
            break;
          }
        }
        out[r] = static_cast<int32_t>(pick >= 0 ? pick : last);
        if (prob)
          for (int64_t k = 0; k < B; ++k) prob[r * B + k] = static_cast<double>(pr[k]) / W;
      }
    });
  }
  const int64_t k = bad.key.load();
  if (k != std::numeric_limits<int64_t>::max()) {
    res.bad_dir = static_cast<int>(k / B);
    res.bad_row = k % B;
  }
  return res;
}

// ---- head ----------------------------------------------------------------------------------

inline double softplus(double t) { return std::max(t, 0.0) + std::log1p(std::exp(-std::fabs(t))); }
inline double sigmoid(double d) {
  if (d >= 0) return 1.0 / (1.0 + std::exp(-d));
  const double e = std::exp(d);
  return e / (1.0 + e);
}

template <typename T>
ItmHeadResult head_t(const Tensor& X, int64_t Q, const Tensor& Wt, const Tensor& bt, double gs, bool nx, bool nw,
                     bool nb) {
  const int64_t N = X.shape[0], H = X.shape.back(), P = N / 3;
  const T* x = X.data<T>();
  const T* W0 = Wt.data<T>();
  const T* W1 = W0 + H;
  const double b0 = static_cast<double>(bt.data<T>()[0]), b1 = static_cast<double>(bt.data<T>()[1]);
  // Fixed chunks: at least 64 rows, at most 128 chunks.
  const int64_t R = std::max<int64_t>(64, (N + 127) / 128), n_ch = (N + R - 1) / R;
  const int64_t pstride = 4 + (nw ? 2 * H : 0);  // loss, correct, db0, db1, then dW
  Tensor part = scratch(n_ch * pstride, DType::F64);
  double* pt = part.data<double>();
  ItmHeadResult res;
  if (nx) res.d_features = Tensor::empty(X.shape, dtype_of<T>(), Device::CPU);
  T* dx = nx ? res.d_features->data<T>() : nullptr;
  const double inv_n = 1.0 / static_cast<double>(N), inv_q = 1.0 / static_cast<double>(Q);

  parallel_for(n_ch, grain_for(4.0 * static_cast<double>(R * Q * H)), [&](int64_t cb, int64_t ce) {
    Tensor buf = scratch(2 * H, DType::F64);
    double* xbar = buf.data<double>();
    T* drow = reinterpret_cast<T*>(xbar + H);  // H values of T fit in H doubles
    for (int64_t ch = cb; ch < ce; ++ch) {
      double* pp = pt + ch * pstride;
      std::fill(pp, pp + pstride, 0.0);
      double* pw0 = pp + 4;
      double* pw1 = pp + 4 + H;
      for (int64_t n = ch * R, ne = std::min(N, (ch + 1) * R); n < ne; ++n) {
        const T* xn = x + n * Q * H;
        if (Q == 1) {
#pragma omp simd
          for (int64_t h = 0; h < H; ++h) xbar[h] = static_cast<double>(xn[h]);
        } else {
          std::fill(xbar, xbar + H, 0.0);
          for (int64_t q = 0; q < Q; ++q) {
            const T* xq = xn + q * H;
#pragma omp simd
            for (int64_t h = 0; h < H; ++h) xbar[h] += static_cast<double>(xq[h]);
          }
#pragma omp simd
          for (int64_t h = 0; h < H; ++h) xbar[h] *= inv_q;
        }
        double a0 = 0, a1 = 0;
#pragma omp simd reduction(+ : a0, a1)
        for (int64_t h = 0; h < H; ++h) {
          a0 += static_cast<double>(W0[h]) * xbar[h];
          a1 += static_cast<double>(W1[h]) * xbar[h];
        }
        const double z0 = b0 + a0, z1 = b1 + a1, d = z1 - z0;
        const bool y = n < P;
        pp[0] += softplus(y ? -d : d);
        pp[1] += ((z1 > z0) == y) ? 1 : 0;  // arg-max, first on ties
        const double p1 = sigmoid(d), p0 = sigmoid(-d);
        const double g0 = gs * inv_n * (y ? p0 : -p1), g1 = gs * inv_n * (y ? -p0 : p1);
        pp[2] += g0;
        pp[3] += g1;
        if (nx) {
          const double c0 = g0 * inv_q, c1 = g1 * inv_q;
#pragma omp simd
          for (int64_t h = 0; h < H; ++h) drow[h] = static_cast<T>(c0 * W0[h] + c1 * W1[h]);
          T* dxn = dx + n * Q * H;
          for (int64_t q = 0; q < Q; ++q) std::memcpy(dxn + q * H, drow, sizeof(T) * H);
        }
        if (nw) {
#pragma omp simd
          for (int64_t h = 0; h < H; ++h) {
            pw0[h] += g0 * xbar[h];
            pw1[h] += g1 * xbar[h];
          }
        }
      }
    }
  });

  double loss = 0, correct = 0, db0 = 0, db1 = 0;
  std::vector<double> dw(nw ? 2 * H : 0, 0.0);
  for (int64_t ch = 0; ch < n_ch; ++ch) {
    const double* pp = pt + ch * pstride;
    loss += pp[0];
    correct += pp[1];
    db0 += pp[2];
    db1 += pp[3];
    for (int64_t h = 0; h < (nw ? 2 * H : 0); ++h) dw[h] += pp[4 + h];
  }
  res.loss = loss * inv_n;
  res.correct = static_cast<int64_t>(correct);
  if (nw) {
    res.d_weight = Tensor::empty({2, H}, dtype_of<T>(), Device::CPU);
    T* o = res.d_weight->data<T>();
    for (int64_t h = 0; h < 2 * H; ++h) o[h] = static_cast<T>(dw[h]);
  }
  if (nb) {
    res.d_bias = Tensor::empty({2}, dtype_of<T>(), Device::CPU);
    res.d_bias->data<T>()[0] = static_cast<T>(db0);
    res.d_bias->data<T>()[1] = static_cast<T>(db1);
  }
  return res;
}

template <typename T>
std::vector<double> as_double(const Tensor& t) {
  const T* p = t.data<T>();
  return std::vector<double>(p, p + t.numel());
}

template <typename T>
ItmHeadResult head_reference_t(const Tensor& X, int64_t Q, const Tensor& Wt, const Tensor& bt) {
  const int64_t N = X.shape[0], H = X.shape.back(), P = N / 3;
  const std::vector<double> x = as_double<T>(X), W = as_double<T>(Wt), b = as_double<T>(bt);
  // per-query logits [N, Q, 2], then their mean over the queries
  std::vector<double> L(N * Q * 2), z(N * 2, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t q = 0; q < Q; ++q)
      for (int64_t k = 0; k < 2; ++k) {
        double v = b[k];
        for (int64_t h = 0; h < H; ++h) v += W[k * H + h] * x[(n * Q + q) * H + h];
        L[(n * Q + q) * 2 + k] = v;
        z[n * 2 + k] += v / static_cast<double>(Q);
      }
  ItmHeadResult res;
  std::vector<double> dL(N * 2);  // dLoss / d(per-query logit), the same for every query
  double loss = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t y = n < P ? 1 : 0;
    const double mx = std::max(z[n * 2], z[n * 2 + 1]);
    const double lse = mx + std::log(std::exp(z[n * 2] - mx) + std::exp(z[n * 2 + 1] - mx));
    loss += (lse - z[n * 2 + y]) / static_cast<double>(N);
    const int64_t pred = z[n * 2 + 1] > z[n * 2] ? 1 : 0;
    res.correct += pred == y ? 1 : 0;
    for (int64_t k = 0; k < 2; ++k)
      dL[n * 2 + k] = (std::exp(z[n * 2 + k] - lse) - (k == y ? 1.0 : 0.0)) / static_cast<double>(N) / static_cast<double>(Q);
  }
  res.loss = loss;
  res.d_features = Tensor::empty(X.shape, DType::F64, Device::CPU);
  res.d_weight = Tensor::empty({2, H}, DType::F64, Device::CPU);
  res.d_bias = Tensor::empty({2}, DType::F64, Device::CPU);
  double* dx = res.d_features->data<double>();
  double* dw = res.d_weight->data<double>();
  double* db = res.d_bias->data<double>();
  std::fill(dw, dw + 2 * H, 0.0);
  db[0] = db[1] = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t q = 0; q < Q; ++q)
      for (int64_t h = 0; h < H; ++h) {
        const double xv = x[(n * Q + q) * H + h];
        dx[(n * Q + q) * H + h] = dL[n * 2] * W[h] + dL[n * 2 + 1] * W[H + h];
        dw[h] += dL[n * 2] * xv;
        dw[H + h] += dL[n * 2 + 1] * xv;
      }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t q = 0; q < Q; ++q) {
      db[0] += dL[n * 2];
      db[1] += dL[n * 2 + 1];
    }
  (void)L;
  return res;
}

}  // namespace

ItmMineResult itm_mine(const ItmMineInputs& in) {
  ItmMineResult r;
  dispatch_float(in.image.dtype, [&](auto zero) { r = mine_t<decltype(zero)>(in); });
  return r;
}

ItmMineResult itm_mine_reference(const ItmMineInputs& in, bool probs) {
  ItmMineResult r;
  dispatch_float(in.image.dtype, [&](auto zero) { r = reference_t<decltype(zero)>(in, probs); });
  return r;
}

void itm_set_tiles(int64_t rows, int64_t cols, int64_t segment_cells) {
  g_row_tile.store(rows);
  g_col_tile.store(cols);
  g_seg_cells.store(segment_cells);
}
int64_t itm_row_tile() { return g_row_tile.load(); }
int64_t itm_col_tile() { return g_col_tile.load(); }
int64_t itm_segment_cells() { return g_seg_cells.load(); }

ItmHeadResult itm_head(const Tensor& features, int64_t Q, const Tensor& weight, const Tensor& bias, double grad_scale,
                       bool need_features, bool need_weight, bool need_bias) {
  ItmHeadResult r;
  dispatch_float(features.dtype, [&](auto zero) {
    r = head_t<decltype(zero)>(features, Q, weight, bias, grad_scale, need_features, need_weight, need_bias);
  });
  return r;
}

ItmHeadResult itm_head_reference(const Tensor& features, int64_t Q, const Tensor& weight, const Tensor& bias) {
  ItmHeadResult r;
  dispatch_float(features.dtype, [&](auto zero) { r = head_reference_t<decltype(zero)>(features, Q, weight, bias); });
  return r;
}

}  // namespace cpu
}  // namespace vlm
