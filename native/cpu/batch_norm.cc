// batch_norm family, CPU: forward (y, saved mean/rstd, running-buffer update) and
// backward (dx, dweight, dbias) for training and eval modes. One channel per task:
// a channel's N planes of S elements are summed plane by plane (16 float64 partial sums
// per plane, planes in order), two passes for the variance (mean first), so a constant
// channel gives var = 0 exactly.
#include "ops/batch_norm.h"
#include <algorithm>
#include <cmath>
#include "core/lanes.h"
#include "core/parallel.h"

namespace vlm {
namespace cpu {
namespace {


// Channels per task: enough elements per task to pay for the thread start.
int64_t channel_grain(int64_t per_channel) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(per_channel, 1)); }

}  // namespace

// N batch, C channels, S spatial: x, y [N, C, S]; weight, bias, running_*, mean, rstd [C]
void batch_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, Tensor* running_mean,
                        Tensor* running_var, bool training, double momentum, double eps, Tensor& y, Tensor& mean,
                        Tensor& rstd) {
  const int64_t N = x.shape[0], C = x.shape[1], S = C > 0 && N > 0 ? x.numel() / (N * C) : 0;
  const int64_t M = N * S;  // elements per channel
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    const T* w = weight ? weight->data<T>() : nullptr;
    const T* b = bias ? bias->data<T>() : nullptr;
    T* rm = running_mean ? running_mean->data<T>() : nullptr;
    T* rv = running_var ? running_var->data<T>() : nullptr;
    T* yp = y.data<T>();
    T* mp = mean.data<T>();
    T* rp = rstd.data<T>();
    parallel_for(C, channel_grain(M), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double mu, var;
        if (training) {
          double s = 0;
          for (int64_t n = 0; n < N; ++n) {
            const T* xc = xp + (n * C + c) * S;
            s += sum_fixed<double>(S, [&](int64_t i) { return xc[i]; });
          }
          mu = M > 0 ? s / static_cast<double>(M) : 0.0;
          double q = 0;
          for (int64_t n = 0; n < N; ++n) {
            const T* xc = xp + (n * C + c) * S;
            q += sum_fixed<double>(S, [&](int64_t i) {
              double dd = static_cast<double>(xc[i]) - mu;
              return dd * dd;
            });
          }
          var = M > 0 ? q / static_cast<double>(M) : 0.0;
          if (rm) rm[c] = static_cast<T>((1 - momentum) * static_cast<double>(rm[c]) + momentum * mu);
          if (rv && M > 1)
            rv[c] = static_cast<T>((1 - momentum) * static_cast<double>(rv[c]) + momentum * var * M / (M - 1.0));
        } else {
          mu = static_cast<double>(rm[c]);
          var = static_cast<double>(rv[c]);
        }
        // The backward uses the stored (rounded) values; the forward uses the same ones.
        const T m = static_cast<T>(mu), rs = static_cast<T>(1.0 / std::sqrt(var + eps));
        mp[c] = m;
        rp[c] = rs;
        const T scale = w ? rs * w[c] : rs, shift = b ? b[c] : T(0);
        for (int64_t n = 0; n < N; ++n) {
          const T* xc = xp + (n * C + c) * S;
          T* yc = yp + (n * C + c) * S;
          for (int64_t i = 0; i < S; ++i) yc[i] = (xc[i] - m) * scale + shift;
        }
      }
    });
  });
}

// x, gy, dx [N, C, S]; weight, mean, rstd, dweight, dbias [C]
void batch_norm_backward(const Tensor& x, const Tensor* weight, const Tensor& mean, const Tensor& rstd, const Tensor& gy,
                         bool training, Tensor* dx, Tensor* dweight, Tensor* dbias) {
  const int64_t N = x.shape[0], C = x.shape[1], S = C > 0 && N > 0 ? x.numel() / (N * C) : 0;
  const int64_t M = N * S;
  dispatch_float(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    const T* w = weight ? weight->data<T>() : nullptr;
    const T* mp = mean.data<T>();
    const T* rp = rstd.data<T>();
    const T* gp = gy.data<T>();
    T* dxp = dx ? dx->data<T>() : nullptr;
    T* dwp = dweight ? dweight->data<T>() : nullptr;
    T* dbp = dbias ? dbias->data<T>() : nullptr;
    // The sums are needed for dweight/dbias, and for dx in training mode.
    const bool sums = dwp || dbp || (dxp && training);
    parallel_for(C, channel_grain(M), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const T m = mp[c], rs = rp[c];
        double sg = 0, sgx = 0;  // sum gy, sum gy * xhat
        if (sums) {
          for (int64_t n = 0; n < N; ++n) {
            const T* xc = xp + (n * C + c) * S;
            const T* gc = gp + (n * C + c) * S;
            sg += sum_fixed<double>(S, [&](int64_t i) { return gc[i]; });
            sgx += sum_fixed<double>(S, [&](int64_t i) { return gc[i] * ((xc[i] - m) * rs); });
          }
        }
        if (dwp) dwp[c] = static_cast<T>(sgx);
        if (dbp) dbp[c] = static_cast<T>(sg);
        if (!dxp) continue;
        const T scale = w ? rs * w[c] : rs;
        if (training) {
          const T a = static_cast<T>(M > 0 ? sg / static_cast<double>(M) : 0.0);
          const T bb = static_cast<T>(M > 0 ? sgx / static_cast<double>(M) : 0.0);
          for (int64_t n = 0; n < N; ++n) {
            const T* xc = xp + (n * C + c) * S;
            const T* gc = gp + (n * C + c) * S;
            T* dc = dxp + (n * C + c) * S;
            for (int64_t i = 0; i < S; ++i) dc[i] = (gc[i] - a - (xc[i] - m) * rs * bb) * scale;
          }
        } else {
          for (int64_t n = 0; n < N; ++n) {
            const T* gc = gp + (n * C + c) * S;
            T* dc = dxp + (n * C + c) * S;
            for (int64_t i = 0; i < S; ++i) dc[i] = gc[i] * scale;
          }
        }
      }
    });
  });
}

}  // namespace cpu
}  // namespace vlm
