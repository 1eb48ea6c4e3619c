// layer_norm family, CPU: forward (y, mean, rstd) and the one-pass backward
// (dx, dweight, dbias). Row statistics use two passes (mean, then sum of squared
// deviations) in float64 with 16 partial sums in a fixed order, so a constant row gives
// var = 0 exactly and rstd = 1/sqrt(eps). dweight/dbias: each fixed chunk of rows
// accumulates float64 partials, then the chunks are added in chunk order.
#include "ops/layer_norm.h"
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>
#include "core/lanes.h"
#include "core/parallel.h"
#include "cpu/layer_norm_avx512.h"

namespace vlm {
namespace cpu {
namespace {


// Row chunks for the weight gradients: a function of (R, C) only, and at most 64 MiB
// of float64 partials.
int64_t weight_grad_chunks(int64_t rows, int64_t cols) {
  int64_t k = std::clamp<int64_t>(rows / 16, 1, 16);
  while (k > 1 && k * cols * 2 * 8 > (int64_t{64} << 20)) k /= 2;
  return k;
}

}  // namespace

// R rows, C cols: x, y [R, C]; weight, bias [C] or null; mean, rstd [R]
void layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t size, double eps,
                        Tensor& y, Tensor& mean, Tensor& rstd) {
  const int64_t C = size, R = C > 0 ? x.numel() / C : 0;
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    const T* w = weight ? weight->data<T>() : nullptr;
    const T* b = bias ? bias->data<T>() : nullptr;
    T* yp = y.data<T>();
    T* mp = mean.data<T>();
    T* rp = rstd.data<T>();
    if constexpr (std::is_same_v<T, float>) {
      if (layer_norm_avx512_available()) {
        parallel_for(R, std::max<int64_t>(1, 8192 / C), [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) layer_norm_row_forward_avx512(xp + r * C, w, b, C, eps, yp + r * C, mp + r, rp + r);
        });
        return;
      }
    }
    parallel_for(R, std::max<int64_t>(1, 8192 / C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* xr = xp + r * C;
        T* yr = yp + r * C;
        double mu = sum_fixed<double>(C, [&](int64_t i) { return xr[i]; }) / static_cast<double>(C);
        double var = sum_fixed<double>(C, [&](int64_t i) {
          double d = static_cast<double>(xr[i]) - mu;
          return d * d;
        }) / static_cast<double>(C);
        // Backward uses the stored (rounded) values; the forward uses the same ones.
        const T m = static_cast<T>(mu), rs = static_cast<T>(1.0 / std::sqrt(var + eps));
        mp[r] = m;
        rp[r] = rs;
        if (w && b) for (int64_t i = 0; i < C; ++i) yr[i] = (xr[i] - m) * rs * w[i] + b[i];
        else if (w) for (int64_t i = 0; i < C; ++i) yr[i] = (xr[i] - m) * rs * w[i];
        else if (b) for (int64_t i = 0; i < C; ++i) yr[i] = (xr[i] - m) * rs + b[i];
        else for (int64_t i = 0; i < C; ++i) yr[i] = (xr[i] - m) * rs;
      }
    });
  });
}

// R rows, C cols: x, gy, dx [R, C]; weight [C] or null; mean, rstd [R]; dweight, dbias [C]
void layer_norm_backward(const Tensor& x, const Tensor* weight, const Tensor& mean, const Tensor& rstd,
                         const Tensor& gy, int64_t size, Tensor& dx, Tensor* dweight, Tensor* dbias,
                         bool accumulate) {
  const int64_t C = size, R = C > 0 ? x.numel() / C : 0;
  const bool wgrads = dweight && dbias;
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    const T* w = weight ? weight->data<T>() : nullptr;
    const T* mp = mean.data<T>();
    const T* rp = rstd.data<T>();
    const T* gp = gy.data<T>();
    T* dp = dx.data<T>();
    const double inv_c = C > 0 ? 1.0 / static_cast<double>(C) : 0.0;

    // One row: dx, and (when dw) the row's share of dweight/dbias into dw, db.
    auto row = [&](int64_t r, double* dw, double* db) {
      if constexpr (std::is_same_v<T, float>) {
        if (layer_norm_avx512_available())
          return layer_norm_row_backward_avx512(xp + r * C, w, gp + r * C, C, mp[r], rp[r], dp + r * C, dw, db, accumulate);
      }
      const T* xr = xp + r * C;
      const T* gr = gp + r * C;
      T* dr = dp + r * C;
      const T m = mp[r], rs = rp[r];
      double a, bsum;
      if (w) {
        a = sum_fixed<double>(C, [&](int64_t i) { return gr[i] * w[i]; }) * inv_c;
        bsum = sum_fixed<double>(C, [&](int64_t i) { return gr[i] * w[i] * ((xr[i] - m) * rs); }) * inv_c;
      } else {
        a = sum_fixed<double>(C, [&](int64_t i) { return gr[i]; }) * inv_c;
        bsum = sum_fixed<double>(C, [&](int64_t i) { return gr[i] * ((xr[i] - m) * rs); }) * inv_c;
      }
      const T at = static_cast<T>(a), bt = static_cast<T>(bsum);
      for (int64_t i = 0; i < C; ++i) {
        T xhat = (xr[i] - m) * rs;
        T dn = w ? gr[i] * w[i] : gr[i];
        const T v = (dn - at - xhat * bt) * rs;
        dr[i] = accumulate ? dr[i] + v : v;
      }
      if (dw) {
        for (int64_t i = 0; i < C; ++i) {
          T xhat = (xr[i] - m) * rs;
          dw[i] += static_cast<double>(gr[i] * xhat);
          db[i] += static_cast<double>(gr[i]);
        }
      }
    };

    if (!wgrads) {
      parallel_for(R, std::max<int64_t>(1, 8192 / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) row(r, nullptr, nullptr);
      });
      return;
    }
    const int64_t K = weight_grad_chunks(R, C);
    std::vector<double> part(static_cast<size_t>(K * 2 * C), 0.0);  // [K][dw C | db C]
    parallel_for(K, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double* dw = part.data() + c * 2 * C;
        for (int64_t r = R * c / K; r < R * (c + 1) / K; ++r) row(r, dw, dw + C);
      }
    });
    T* ow = dweight->data<T>();
    T* ob = dbias->data<T>();
    parallel_for(C, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        double sw = 0, sb = 0;
        for (int64_t c = 0; c < K; ++c) {
          sw += part[c * 2 * C + i];
          sb += part[c * 2 * C + C + i];
        }
        ow[i] = static_cast<T>(sw);
        ob[i] = static_cast<T>(sb);
      }
    });
  });
}

}  // namespace cpu
}  // namespace vlm
