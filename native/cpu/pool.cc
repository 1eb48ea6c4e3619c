// pool family, CPU: avg_pool2d, adaptive_avg_pool2d and masked mean/max sequence
// pooling, forward and backward. Image pooling runs one plane per task (window sums in
// float64); sequence pooling one batch row per task. Backward passes zero the owned
// plane/row and scatter into it in a fixed order.
#include "ops/pool.h"
#include <algorithm>
#include <cmath>
#include <vector>
#include "core/parallel.h"

namespace vlm {
namespace cpu {
namespace {

int64_t plane_grain(int64_t work) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(work, 1)); }

// torch's adaptive window: [floor(i*in/out), ceil((i+1)*in/out))
inline int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
inline int64_t adaptive_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

// The window of output (oh, ow) for avg pooling: clipped bounds and torch's divisor
// (the window clipped to the padded input, padding counted).
struct Window {
  int64_t h0, h1, w0, w1, count;
};
inline Window avg_window(int64_t oh, int64_t ow, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                         int64_t ph, int64_t pw) {
  int64_t h0 = oh * sh - ph, w0 = ow * sw - pw;
  int64_t h1 = std::min(h0 + kh, H + ph), w1 = std::min(w0 + kw, W + pw);
  const int64_t count = (h1 - h0) * (w1 - w0);
  return {std::max<int64_t>(h0, 0), std::min(h1, H), std::max<int64_t>(w0, 0), std::min(w1, W), count};
}

inline bool valid(const uint8_t* m, int64_t l) { return m == nullptr || m[l] != 0; }

}  // namespace

// P planes: x [P, H, W] -> y [P, OH, OW]
void avg_pool2d_forward(const Tensor& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, Tensor& y) {
  const int64_t d = x.dim(), H = x.shape[d - 2], W = x.shape[d - 1], OH = y.shape[d - 2], OW = y.shape[d - 1];
  const int64_t P = H * W > 0 ? x.numel() / (H * W) : 0;
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    parallel_for(P, plane_grain(OH * OW * kh * kw), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const T* xs = xp + p * H * W;
        T* ys = yp + p * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            const Window w = avg_window(oh, ow, H, W, kh, kw, sh, sw, ph, pw);
            double s = 0;
            for (int64_t h = w.h0; h < w.h1; ++h)
              for (int64_t c = w.w0; c < w.w1; ++c) s += static_cast<double>(xs[h * W + c]);
            ys[oh * OW + ow] = static_cast<T>(s / static_cast<double>(w.count));
          }
      }
    });
  });
}

// gy [P, OH, OW] -> dx [P, H, W]
void avg_pool2d_backward(const Tensor& gy, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, Tensor& dx) {
  const int64_t d = dx.dim(), H = dx.shape[d - 2], W = dx.shape[d - 1], OH = gy.shape[d - 2], OW = gy.shape[d - 1];
  const int64_t P = H * W > 0 ? dx.numel() / (H * W) : 0;
  dispatch_float(gy.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* gp = gy.data<T>();
    T* dp = dx.data<T>();
    parallel_for(P, plane_grain(OH * OW * kh * kw), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const T* gs = gp + p * OH * OW;
        T* ds = dp + p * H * W;
        std::fill(ds, ds + H * W, T(0));
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            const Window w = avg_window(oh, ow, H, W, kh, kw, sh, sw, ph, pw);
            const T g = static_cast<T>(static_cast<double>(gs[oh * OW + ow]) / static_cast<double>(w.count));
            for (int64_t h = w.h0; h < w.h1; ++h)
              for (int64_t c = w.w0; c < w.w1; ++c) ds[h * W + c] += g;
          }
      }
    });
  });
}

// x [P, H, W] -> y [P, OH, OW]
void adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) {
  const int64_t d = x.dim(), H = x.shape[d - 2], W = x.shape[d - 1], OH = y.shape[d - 2], OW = y.shape[d - 1];
  const int64_t P = H * W > 0 ? x.numel() / (H * W) : 0;
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    parallel_for(P, plane_grain(std::max(H * W, OH * OW)), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const T* xs = xp + p * H * W;
        T* ys = yp + p * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t h0 = adaptive_start(oh, H, OH), h1 = adaptive_end(oh, H, OH);
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t w0 = adaptive_start(ow, W, OW), w1 = adaptive_end(ow, W, OW);
            double s = 0;
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t c = w0; c < w1; ++c) s += static_cast<double>(xs[h * W + c]);
            ys[oh * OW + ow] = static_cast<T>(s / static_cast<double>((h1 - h0) * (w1 - w0)));
          }
        }
      }
    });
  });
}

// gy [P, OH, OW] -> dx [P, H, W]
void adaptive_avg_pool2d_backward(const Tensor& gy, Tensor& dx) {
  const int64_t d = dx.dim(), H = dx.shape[d - 2], W = dx.shape[d - 1], OH = gy.shape[d - 2], OW = gy.shape[d - 1];
  const int64_t P = H * W > 0 ? dx.numel() / (H * W) : 0;
  dispatch_float(gy.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* gp = gy.data<T>();
    T* dp = dx.data<T>();
    parallel_for(P, plane_grain(std::max(H * W, OH * OW)), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const T* gs = gp + p * OH * OW;
        T* ds = dp + p * H * W;
        std::fill(ds, ds + H * W, T(0));
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t h0 = adaptive_start(oh, H, OH), h1 = adaptive_end(oh, H, OH);
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t w0 = adaptive_start(ow, W, OW), w1 = adaptive_end(ow, W, OW);
            const T g = static_cast<T>(static_cast<double>(gs[oh * OW + ow]) / static_cast<double>((h1 - h0) * (w1 - w0)));
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t c = w0; c < w1; ++c) ds[h * W + c] += g;
          }
        }
      }
    });
  });
}

// B batch, L length, D features: x [B, L, D], mask [B, L] -> y [B, D]
void masked_mean_pool_forward(const Tensor& x, const Tensor* mask, Tensor& y) {
  const int64_t B = x.shape[0], L = x.shape[1], D = x.shape[2];
  const uint8_t* mp = mask ? mask->data<uint8_t>() : nullptr;
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    parallel_for(B, plane_grain(L * D), [&](int64_t b0, int64_t b1) {
      std::vector<double> acc(static_cast<size_t>(D));
      for (int64_t b = b0; b < b1; ++b) {
        const uint8_t* m = mp ? mp + b * L : nullptr;
        std::fill(acc.begin(), acc.end(), 0.0);
        int64_t count = 0;
        for (int64_t l = 0; l < L; ++l) {
          if (!valid(m, l)) continue;
          ++count;
          const T* xr = xp + (b * L + l) * D;
          for (int64_t k = 0; k < D; ++k) acc[k] += static_cast<double>(xr[k]);
        }
        T* yr = yp + b * D;
        const double inv = count > 0 ? 1.0 / static_cast<double>(count) : 0.0;
        for (int64_t k = 0; k < D; ++k) yr[k] = static_cast<T>(acc[k] * inv);
      }
    });
  });
}

// gy [B, D], mask [B, L] -> dx [B, L, D]
void masked_mean_pool_backward(const Tensor& gy, const Tensor* mask, Tensor& dx) {
  const int64_t B = dx.shape[0], L = dx.shape[1], D = dx.shape[2];
  const uint8_t* mp = mask ? mask->data<uint8_t>() : nullptr;
  dispatch_float(gy.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* gp = gy.data<T>();
    T* dp = dx.data<T>();
    parallel_for(B, plane_grain(L * D), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const uint8_t* m = mp ? mp + b * L : nullptr;
        int64_t count = 0;
        for (int64_t l = 0; l < L; ++l) count += valid(m, l) ? 1 : 0;
        const T inv = static_cast<T>(count > 0 ? 1.0 / static_cast<double>(count) : 0.0);
        const T* gr = gp + b * D;
        for (int64_t l = 0; l < L; ++l) {
          T* dr = dp + (b * L + l) * D;
          if (valid(m, l)) for (int64_t k = 0; k < D; ++k) dr[k] = gr[k] * inv;
          else std::fill(dr, dr + D, T(0));
        }
      }
    });
  });
}

// x [B, L, D], mask [B, L] -> y [B, D], index int32 [B, D]
void masked_max_pool_forward(const Tensor& x, const Tensor* mask, Tensor& y, Tensor& index) {
  const int64_t B = x.shape[0], L = x.shape[1], D = x.shape[2];
  const uint8_t* mp = mask ? mask->data<uint8_t>() : nullptr;
  int32_t* ip = index.data<int32_t>();
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    parallel_for(B, plane_grain(L * D), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const uint8_t* m = mp ? mp + b * L : nullptr;
        T* yr = yp + b * D;
        int32_t* ir = ip + b * D;
        std::fill(yr, yr + D, T(0));
        std::fill(ir, ir + D, int32_t{-1});
        for (int64_t l = 0; l < L; ++l) {
          if (!valid(m, l)) continue;
          const T* xr = xp + (b * L + l) * D;
          for (int64_t k = 0; k < D; ++k) {
            const T v = xr[k];
            // first valid position, a strictly larger value, or the first NaN (which then stays)
            if (ir[k] < 0 || v > yr[k] || (std::isnan(v) && !std::isnan(yr[k]))) {
              yr[k] = v;
              ir[k] = static_cast<int32_t>(l);
            }
          }
        }
      }
    });
  });
}

// gy [B, D], index [B, D] -> dx [B, L, D]
void masked_max_pool_backward(const Tensor& gy, const Tensor& index, Tensor& dx) {
  const int64_t B = dx.shape[0], L = dx.shape[1], D = dx.shape[2];
  const int32_t* ip = index.data<int32_t>();
  dispatch_float(gy.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* gp = gy.data<T>();
    T* dp = dx.data<T>();
    parallel_for(B, plane_grain(L * D), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T* db = dp + b * L * D;
        std::fill(db, db + L * D, T(0));
        for (int64_t k = 0; k < D; ++k) {
          const int32_t l = ip[b * D + k];
          if (l >= 0) db[l * D + k] = gp[b * D + k];
        }
      }
    });
  });
}

}  // namespace cpu
}  // namespace vlm
