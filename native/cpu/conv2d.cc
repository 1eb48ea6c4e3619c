// conv2d family, CPU: forward and backward of the grouped, strided, padded, dilated
// 2-D convolution.
// - General groups: per (image, group) an im2col buffer [K = C/G*KH*KW, S = OH*OW] and
//   one GEMM (y_g = W_g col); backward dcol = W_g^T gy_g scattered back by col2im, and
//   dW_g += gy_g col^T (computed transposed when that GEMM is taller). A 1x1 stride-1 unpadded kernel uses the image itself as col.
//   Work runs in parallel over (image, group) items with single-threaded GEMMs when
//   there are at least as many items as threads, else item after item with threaded GEMMs.
// - Depthwise (one input channel per group): direct loops, parallel over planes. Each
//   plane is copied zero-padded and split by stride phase, which turns every kernel tap
//   into one contiguous vectorised loop over the whole plane (no im2col, no row loops).
// - dweight: partial sums per fixed image chunk (bounds depend on N and the weight size
//   only), added in chunk order; depthwise dweight and every dbias are per-channel sums
//   in a fixed order. So every gradient is the same for any thread count.
#include "ops/conv2d.h"
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>
#include "core/gemm.h"
#include "core/parallel.h"

namespace vlm {
namespace cpu {
namespace {

struct Geo {
  int64_t N, C, H, W, O, KH, KW, OH, OW, G, Cg, Og;
  int64_t sh, sw, ph, pw, dh, dw;
  int64_t hw() const { return H * W; }
  int64_t S() const { return OH * OW; }          // output pixels per plane
  int64_t K() const { return Cg * KH * KW; }     // GEMM depth
  int64_t taps() const { return KH * KW; }
  bool pointwise() const { return KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
  bool depthwise() const { return Cg == 1 && G == C; }
};

Geo geometry(const Tensor& x, const Tensor& w, const Conv2dParams& p) {
  Geo d{};
  d.N = x.shape[0]; d.C = x.shape[1]; d.H = x.shape[2]; d.W = x.shape[3];
  d.O = w.shape[0]; d.KH = w.shape[2]; d.KW = w.shape[3];
  d.sh = p.stride_h; d.sw = p.stride_w; d.ph = p.pad_h; d.pw = p.pad_w; d.dh = p.dil_h; d.dw = p.dil_w;
  d.G = p.groups; d.Cg = d.C / d.G; d.Og = d.O / d.G;
  d.OH = conv_out_size(d.H, d.KH, d.sh, d.ph, d.dh);
  d.OW = conv_out_size(d.W, d.KW, d.sw, d.pw, d.dw);
  return d;
}

// Output indices o in [0, out) whose input index o*s + off lies in [0, in), as [lo, hi).
inline void valid_range(int64_t off, int64_t s, int64_t in, int64_t out, int64_t& lo, int64_t& hi) {
  lo = off >= 0 ? 0 : (-off + s - 1) / s;
  hi = in - off <= 0 ? 0 : (in - 1 - off) / s + 1;
  hi = std::min(hi, out);
  lo = std::min(lo, hi);
}

// Items in parallel (single-threaded GEMMs inside) when there are enough to keep every
// thread busy; otherwise one after the other, each GEMM using all threads.
template <typename F>
void for_items(int64_t n, F&& f) {
  if (n >= num_threads()) parallel_for(n, 1, f);
  else if (n > 0) f(int64_t{0}, n);
}

// Per-thread scratch, allocated before the parallel region it serves (an allocation
// failure inside an OpenMP region would terminate the process instead of throwing).
// Slot i belongs to OpenMP thread i; uninitialised unless `zero`.
template <typename T>
struct Scratch {
  std::unique_ptr<T[]> buf;
  int64_t per;
  Scratch(int64_t per_slot, bool zero = false) : per(per_slot) {
    const int64_t n = std::max<int64_t>(1, static_cast<int64_t>(num_threads()) * per_slot);
    buf.reset(zero ? new T[static_cast<size_t>(n)]() : new T[static_cast<size_t>(n)]);
  }
  T* get() const { return buf.get() + static_cast<int64_t>(omp_get_thread_num()) * per; }
};

// 32-byte vectors (GCC vector extensions, as core/gemm.cc): 8 floats or 4 doubles.
template <typename T> struct Vec;
template <> struct Vec<float> { typedef float V __attribute__((vector_size(32))); static constexpr int64_t L = 8; };
template <> struct Vec<double> { typedef double V __attribute__((vector_size(32))); static constexpr int64_t L = 4; };
template <typename T>
inline typename Vec<T>::V loadv(const T* p) {
  typename Vec<T>::V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline void storev(T* p, typename Vec<T>::V v) { std::memcpy(p, &v, sizeof v); }

// dst[0:n] = src[0:n] for short rows: inline vector moves (a libc memcpy call per
// 32-element row costs as much as the row's arithmetic).
template <typename T>
inline void copy_row(T* dst, const T* src, int64_t n) {
  constexpr int64_t L = Vec<T>::L;
  int64_t k = 0;
  for (; k + L <= n; k += L) storev(dst + k, loadv(src + k));
  for (; k < n; ++k) dst[k] = src[k];
}

// One (image, group): x [Cg, H, W] -> col [Cg*KH*KW, OH*OW], zeros where padded.
template <typename T>
void im2col(const T* x, const Geo& d, T* col) {
  const int64_t S = d.S();
  for (int64_t c = 0; c < d.Cg; ++c) {
    const T* xc = x + c * d.hw();
    for (int64_t i = 0; i < d.KH; ++i) {
      const int64_t hoff = i * d.dh - d.ph;
      int64_t oh0, oh1;
      valid_range(hoff, d.sh, d.H, d.OH, oh0, oh1);
      for (int64_t j = 0; j < d.KW; ++j) {
        const int64_t woff = j * d.dw - d.pw;
        int64_t ow0, ow1;
        valid_range(woff, d.sw, d.W, d.OW, ow0, ow1);
        T* dst = col + ((c * d.KH + i) * d.KW + j) * S;
        std::fill(dst, dst + oh0 * d.OW, T(0));
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          T* row = dst + oh * d.OW;
          const T* xr = xc + (oh * d.sh + hoff) * d.W;
          std::fill(row, row + ow0, T(0));
          if (d.sw == 1) {
            copy_row(row + ow0, xr + ow0 + woff, ow1 - ow0);
          } else {
            for (int64_t ow = ow0; ow < ow1; ++ow) row[ow] = xr[ow * d.sw + woff];
          }
          std::fill(row + ow1, row + d.OW, T(0));
        }
        std::fill(dst + oh1 * d.OW, dst + S, T(0));
      }
    }
  }
}

// The adjoint of im2col: dx [Cg, H, W] (zeroed by the caller) += scatter of col.
template <typename T>
void col2im(const T* col, const Geo& d, T* dx) {
  const int64_t S = d.S();
  for (int64_t c = 0; c < d.Cg; ++c) {
    T* dc = dx + c * d.hw();
    for (int64_t i = 0; i < d.KH; ++i) {
      const int64_t hoff = i * d.dh - d.ph;
      int64_t oh0, oh1;
      valid_range(hoff, d.sh, d.H, d.OH, oh0, oh1);
      for (int64_t j = 0; j < d.KW; ++j) {
        const int64_t woff = j * d.dw - d.pw;
        int64_t ow0, ow1;
        valid_range(woff, d.sw, d.W, d.OW, ow0, ow1);
        const T* src = col + ((c * d.KH + i) * d.KW + j) * S;
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          const T* row = src + oh * d.OW;
          T* dr = dc + (oh * d.sh + hoff) * d.W;
          if (d.sw == 1) {
            for (int64_t ow = ow0; ow < ow1; ++ow) dr[ow + woff] += row[ow];
          } else {
            for (int64_t ow = ow0; ow < ow1; ++ow) dr[ow * d.sw + woff] += row[ow];
          }
        }
      }
    }
  }
}

// sum of a[k] * b[k], k < n: 4 independent vector accumulators (FMA latency), then a
// fixed-order reduction.
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  using V = typename Vec<T>::V;
  constexpr int64_t L = Vec<T>::L;
  V acc[4] = {};
  int64_t k = 0;
  for (; k + 4 * L <= n; k += 4 * L)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[v] += loadv(a + k + v * L) * loadv(b + k + v * L);
  V s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
  T lanes[L];
  storev(lanes, s);
  T tail = T(0);
  for (; k < n; ++k) tail += a[k] * b[k];
  T r = T(0);
  for (int64_t l = 0; l < L; ++l) r += lanes[l];
  return r + tail;
}

// ---- general groups: im2col + GEMM ---------------------------------------------------

template <typename T>
void forward_gemm(const T* x, const T* w, const T* b, const Geo& d, T* y) {
  const int64_t S = d.S(), K = d.K();
  const bool direct = d.pointwise();
  Scratch<T> cols(direct ? 0 : K * S);
  for_items(d.N * d.G, [&](int64_t t0, int64_t t1) {
    T* col = cols.get();
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / d.G, g = t % d.G;
      const T* xg = x + (n * d.C + g * d.Cg) * d.hw();
      T* yg = y + (n * d.O + g * d.Og) * S;
      const T* B = xg;
      if (!direct) {
        im2col(xg, d, col);
        B = col;
      }
      T beta = T(0);
      if (b) {  // the bias starts C, so the GEMM adds onto it (beta = 1)
        for (int64_t o = 0; o < d.Og; ++o) std::fill(yg + o * S, yg + (o + 1) * S, b[g * d.Og + o]);
        beta = T(1);
      }
      gemm(false, false, d.Og, S, K, T(1), w + g * d.Og * K, K, B, S, beta, yg, S);
    }
  });
}

// dx of one (image, group): dcol = W_g^T gy_g, then col2im (or straight into dx for 1x1).
template <typename T>
void dx_item(const T* w, const T* gy, const Geo& d, int64_t n, int64_t g, T* dx, T* dcol) {
  const int64_t S = d.S(), K = d.K();
  const T* wg = w + g * d.Og * K;
  const T* gyg = gy + (n * d.O + g * d.Og) * S;
  T* dxg = dx + (n * d.C + g * d.Cg) * d.hw();
  if (d.pointwise()) {
    gemm(true, false, K, S, d.Og, T(1), wg, K, gyg, S, T(0), dxg, S);
    return;
  }
  gemm(true, false, K, S, d.Og, T(1), wg, K, gyg, S, T(0), dcol, S);
  std::fill(dxg, dxg + d.Cg * d.hw(), T(0));
  col2im(dcol, d, dxg);
}

// Image chunks for dweight: min(N, 16), fewer while the partials would pass 64 MiB.
int64_t weight_chunks(int64_t N, int64_t wsize, size_t elem) {
  int64_t k = std::clamp<int64_t>(N, 1, 16);
  while (k > 1 && static_cast<double>(k) * static_cast<double>(wsize) * static_cast<double>(elem) > double(64 << 20)) k /= 2;
  return k;
}

template <typename T>
void backward_gemm(const T* x, const T* w, const T* gy, const Geo& d, T* dx, T* dw) {
  const int64_t S = d.S(), K = d.K();
  const bool direct = d.pointwise();
  if (!dw) {
    Scratch<T> dcols(direct ? 0 : K * S);
    for_items(d.N * d.G, [&](int64_t t0, int64_t t1) {
      T* dcol = dcols.get();
      for (int64_t t = t0; t < t1; ++t) dx_item(w, gy, d, t / d.G, t % d.G, dx, dcol);
    });
    return;
  }
  // Per chunk a partial dW_g [Og][K] += gy_g col^T, or its transpose [K][Og] += col gy_g^T
  // when K >= Og: oneDNN ran the product ~1.6x faster (3x3, K = 288, Og = 32) with the
  // larger side as its rows, in both directions. The final pass adds the chunks in order
  // (transposing back where needed) into dweight [O][K].
  const int64_t wsize = d.O * K;
  const int64_t chunks = weight_chunks(d.N, wsize, sizeof(T));
  const bool tall = K >= d.Og;
  std::vector<T> part(static_cast<size_t>(chunks * wsize), T(0));
  Scratch<T> cols(direct ? 0 : K * S), dcols(direct || !dx ? 0 : K * S);
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    T* col = cols.get();
    T* dcol = dcols.get();
    for (int64_t c = c0; c < c1; ++c) {
      T* acc = part.data() + c * wsize;
      for (int64_t n = d.N * c / chunks; n < d.N * (c + 1) / chunks; ++n) {
        for (int64_t g = 0; g < d.G; ++g) {
          const T* xg = x + (n * d.C + g * d.Cg) * d.hw();
          const T* gyg = gy + (n * d.O + g * d.Og) * S;
          const T* B = xg;
          if (!direct) {
            im2col(xg, d, col);
            B = col;
          }
          if (tall) gemm(false, true, K, d.Og, S, T(1), B, S, gyg, S, T(1), acc + g * K * d.Og, d.Og);
          else gemm(false, true, d.Og, K, S, T(1), gyg, S, B, S, T(1), acc + g * d.Og * K, K);
          if (dx) dx_item(w, gy, d, n, g, dx, dcol);
        }
      }
    }
  });
  parallel_for(wsize, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {  // i indexes dweight [G][Og][K]
      const int64_t g = i / (d.Og * K), o = (i / K) % d.Og, k = i % K;
      const int64_t at = tall ? (g * K + k) * d.Og + o : i;
      double s = 0;
      for (int64_t c = 0; c < chunks; ++c) s += static_cast<double>(part[c * wsize + at]);
      dw[i] = static_cast<T>(s);
    }
  });
}

// ---- depthwise: direct loops over a phase-split padded plane --------------------------
// Each input plane is copied, zero padded, into sh*sw "phase" planes Z[a][b][r][c] =
// xpad[r*sh + a][c*sw + b] of Rz x Cz. Output (oh, ow) of tap (i, j) then reads
// Z[(i*dh)%sh][(j*dw)%sw] at row oh + (i*dh)/sh, column ow + (j*dw)/sw, so over the
// flattened index p = oh*Cz + ow every tap is one contiguous, vectorisable loop over the
// whole plane. Columns ow in [OW, Cz) of that range are "spare": computed and dropped
// in the forward, given a zero gradient in the backward.
struct DwLayout {
  int64_t Rz, Cz, block, L, zsize;
  std::vector<int64_t> base;  // per tap: offset of its first read in Z
  explicit DwLayout(const Geo& d) {
    const int64_t Hp = d.H + 2 * d.ph, Wp = d.W + 2 * d.pw;
    Rz = (Hp + d.sh - 1) / d.sh;
    Cz = (Wp + d.sw - 1) / d.sw;
    block = (Rz + 1) * Cz;  // one spare row: reads past a row's end land inside the block
    zsize = d.sh * d.sw * block;
    L = d.OH * Cz;
    base.resize(static_cast<size_t>(d.taps()));
    for (int64_t i = 0; i < d.KH; ++i)
      for (int64_t j = 0; j < d.KW; ++j) {
        const int64_t a = (i * d.dh) % d.sh, di = (i * d.dh) / d.sh, b = (j * d.dw) % d.sw, dj = (j * d.dw) / d.sw;
        base[i * d.KW + j] = (a * d.sw + b) * block + di * Cz + dj;
      }
  }
};

// A stride larger than the padded extent leaves one output along that axis, whose taps
// all lie in the first stride period: clamping it to the extent reads the same inputs
// and keeps the phase layout within (Hp + sh) * (Wp + sw) elements.
Geo phase_geometry(Geo d) {
  d.sh = std::min(d.sh, d.H + 2 * d.ph);
  d.sw = std::min(d.sw, d.W + 2 * d.pw);
  return d;
}

// x plane [H, W] -> z (zsize elements)
template <typename T>
void to_phases(const T* x, const Geo& d, const DwLayout& l, T* z) {
  std::fill(z, z + l.zsize, T(0));
  for (int64_t h = 0; h < d.H; ++h) {
    const int64_t r = h + d.ph;
    T* zr = z + (r % d.sh) * d.sw * l.block + (r / d.sh) * l.Cz;
    const T* xr = x + h * d.W;
    if (d.sw == 1) {
      copy_row(zr + d.pw, xr, d.W);
    } else {  // column phase by phase: no division per element
      for (int64_t b = 0; b < d.sw; ++b) {
        const int64_t c0 = d.pw + ((b - d.pw % d.sw) % d.sw + d.sw) % d.sw;  // first c >= pw with c % sw == b
        T* dst = zr + b * l.block + c0 / d.sw;
        for (int64_t w = c0 - d.pw; w < d.W; w += d.sw) *dst++ = xr[w];
      }
    }
  }
}

// dz (phase layout) -> dx plane [H, W]: the adjoint of to_phases on the unpadded part.
template <typename T>
void from_phases(const T* dz, const Geo& d, const DwLayout& l, T* dx) {
  for (int64_t h = 0; h < d.H; ++h) {
    const int64_t r = h + d.ph;
    const T* zr = dz + (r % d.sh) * d.sw * l.block + (r / d.sh) * l.Cz;
    T* xr = dx + h * d.W;
    if (d.sw == 1) {
      copy_row(xr, zr + d.pw, d.W);
    } else {
      for (int64_t b = 0; b < d.sw; ++b) {
        const int64_t c0 = d.pw + ((b - d.pw % d.sw) % d.sw + d.sw) % d.sw;
        const T* src = zr + b * l.block + c0 / d.sw;
        for (int64_t w = c0 - d.pw; w < d.W; w += d.sw) xr[w] = *src++;
      }
    }
  }
}

// gy plane [OH, OW] -> g [L] with the spare columns zero.
template <typename T>
void spread_rows(const T* gy, const Geo& d, const DwLayout& l, T* g) {
  for (int64_t oh = 0; oh < d.OH; ++oh) {
    T* gr = g + oh * l.Cz;
    copy_row(gr, gy + oh * d.OW, d.OW);
    std::fill(gr + d.OW, gr + l.Cz, T(0));
  }
}

constexpr int kDwVecs = 8;  // output vectors accumulated in registers per step

template <typename T>
void forward_depthwise(const T* x, const T* w, const T* b, const Geo& d, T* y) {
  using V = typename Vec<T>::V;
  constexpr int64_t Lanes = Vec<T>::L, kBlk = kDwVecs * Lanes;
  const int64_t S = d.S(), m = d.O / d.C, taps = d.taps();
  const DwLayout l(d);
  // z has Lanes zeros of slack past zsize: the last vector step may read up to there
  Scratch<T> zs(l.zsize + Lanes, true), fulls(l.L + Lanes);
  parallel_for(d.N * d.C, 1, [&](int64_t p0, int64_t p1) {
    T* z = zs.get();
    T* full = fulls.get();
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / d.C, c = p % d.C;
      to_phases(x + p * d.hw(), d, l, z);
      for (int64_t o = c * m; o < (c + 1) * m; ++o) {
        const T* wo = w + o * taps;
        const T bias = b ? b[o] : T(0);
        // kDwVecs vectors of outputs stay in registers across the taps
        int64_t q0 = 0;
        for (; q0 + kBlk <= l.L; q0 += kBlk) {
          V acc[kDwVecs];
#pragma GCC unroll 8
          for (int v = 0; v < kDwVecs; ++v) acc[v] = V{} + bias;
          for (int64_t t = 0; t < taps; ++t) {
            const V wv = V{} + wo[t];
            const T* zt = z + l.base[t] + q0;
#pragma GCC unroll 8
            for (int v = 0; v < kDwVecs; ++v) acc[v] += wv * loadv(zt + v * Lanes);
          }
#pragma GCC unroll 8
          for (int v = 0; v < kDwVecs; ++v) storev(full + q0 + v * Lanes, acc[v]);
        }
        // the rest one vector at a time (reads up to Lanes - 1 past L: z and full have slack)
        for (; q0 < l.L; q0 += Lanes) {
          V acc = V{} + bias;
          for (int64_t t = 0; t < taps; ++t) acc += (V{} + wo[t]) * loadv(z + l.base[t] + q0);
          storev(full + q0, acc);
        }
        T* yp = y + (n * d.O + o) * S;
        for (int64_t oh = 0; oh < d.OH; ++oh)
          copy_row(yp + oh * d.OW, full + oh * l.Cz, d.OW);
      }
    }
  });
}

template <typename T>
void backward_depthwise(const T* x, const T* w, const T* gy, const Geo& d, T* dx, T* dw) {
  const int64_t S = d.S(), m = d.O / d.C, taps = d.taps();
  const DwLayout l(d);
  if (dx) {
    // Each (image, channel) plane: dz = sum over its outputs and taps of w * g shifted,
    // then the unpadded part back to dx. One owner per plane: no races.
    Scratch<T> dzs(l.zsize), gs(l.L);
    parallel_for(d.N * d.C, 1, [&](int64_t p0, int64_t p1) {
      T* dz = dzs.get();
      T* g = gs.get();
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t n = p / d.C, c = p % d.C;
        std::fill(dz, dz + l.zsize, T(0));
        for (int64_t o = c * m; o < (c + 1) * m; ++o) {
          spread_rows(gy + (n * d.O + o) * S, d, l, g);
          const T* wo = w + o * taps;
          for (int64_t t = 0; t < taps; ++t) {
            const T wv = wo[t];
            T* zt = dz + l.base[t];
            for (int64_t q = 0; q < l.L; ++q) zt[q] += wv * g[q];
          }
        }
        from_phases(dz, d, l, dx + p * d.hw());
      }
    });
  }
  if (dw) {
    // One output channel per task, images in order: the same sums on any thread count.
    Scratch<T> zs(l.zsize), gs(l.L);
    Scratch<double> accs(taps);
    parallel_for(d.O, 1, [&](int64_t o0, int64_t o1) {
      T* z = zs.get();
      T* g = gs.get();
      double* acc = accs.get();
      for (int64_t o = o0; o < o1; ++o) {
        const int64_t c = o / m;
        std::fill(acc, acc + taps, 0.0);
        for (int64_t n = 0; n < d.N; ++n) {
          to_phases(x + (n * d.C + c) * d.hw(), d, l, z);
          spread_rows(gy + (n * d.O + o) * S, d, l, g);
          for (int64_t t = 0; t < taps; ++t) acc[t] += static_cast<double>(dot(g, z + l.base[t], l.L));
        }
        for (int64_t t = 0; t < taps; ++t) dw[o * taps + t] = static_cast<T>(acc[t]);
      }
    });
  }
}

// dbias[o] = sum over images and pixels of gy[n, o], in a fixed order per channel.
template <typename T>
void bias_grad(const T* gy, const Geo& d, T* db) {
  const int64_t S = d.S();
  parallel_for(d.O, std::max<int64_t>(1, 4096 / std::max<int64_t>(S * d.N, 1)), [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      double s = 0;
      for (int64_t n = 0; n < d.N; ++n) {
        const T* gp = gy + (n * d.O + o) * S;
        double acc[8] = {};
        int64_t k = 0;
        for (; k + 8 <= S; k += 8)
          for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(gp[k + l]);
        for (int l = 0; k < S; ++k, ++l) acc[l] += static_cast<double>(gp[k]);
        s += ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
      }
      db[o] = static_cast<T>(s);
    }
  });
}

}  // namespace

// N batch, C in channels, H W input, O out channels, KH KW kernel, OH OW output, G groups
void conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor* bias, const Conv2dParams& p, Tensor& y) {
  const Geo d = geometry(x, weight, p);
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* b = bias ? bias->data<T>() : nullptr;
    if (d.depthwise()) forward_depthwise<T>(x.data<T>(), weight.data<T>(), b, phase_geometry(d), y.data<T>());
    else forward_gemm<T>(x.data<T>(), weight.data<T>(), b, d, y.data<T>());
  });
}

// x [N, C, H, W], weight [O, C/G, KH, KW], gy [N, O, OH, OW]
void conv2d_backward(const Tensor& x, const Tensor& weight, const Tensor& gy, const Conv2dParams& p, Tensor* dx,
                     Tensor* dweight, Tensor* dbias) {
  const Geo d = geometry(x, weight, p);
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    T* dxp = dx ? dx->data<T>() : nullptr;
    T* dwp = dweight ? dweight->data<T>() : nullptr;
    if (dxp || dwp) {
      if (d.depthwise()) backward_depthwise<T>(x.data<T>(), weight.data<T>(), gy.data<T>(), phase_geometry(d), dxp, dwp);
      else backward_gemm<T>(x.data<T>(), weight.data<T>(), gy.data<T>(), d, dxp, dwp);
    }
    if (dbias) bias_grad<T>(gy.data<T>(), d, dbias->data<T>());
  });
}

}  // namespace cpu
}  // namespace vlm
