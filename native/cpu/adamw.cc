// adamw family, CPU: the fused AdamW update (one pass over p, g, m, v) and its
// float64 serial reference. Elementwise and independent, so any partition gives the
// same bits; parallel over contiguous chunks.
#include "ops/adamw.h"
#include <cmath>
#include "core/parallel.h"

namespace vlm {
namespace cpu {
namespace {

// N elements. Scalars folded once in double, applied in T (as torch's fused/foreach path).
template <typename T>
void adamw_typed(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& c) {
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  T* mm = m.data<T>();
  T* vv = v.data<T>();
  const double t = static_cast<double>(c.step);
  const double bc1 = 1.0 - std::pow(c.beta1, t);
  const double bc2 = 1.0 - std::pow(c.beta2, t);
  const T decay = static_cast<T>(1.0 - c.lr * c.weight_decay);
  const T b1 = static_cast<T>(c.beta1), b2 = static_cast<T>(c.beta2);
  const T omb1 = static_cast<T>(1.0 - c.beta1), omb2 = static_cast<T>(1.0 - c.beta2);
  const T step_size = static_cast<T>(c.lr / bc1);
  const T inv_sqrt_bc2 = static_cast<T>(1.0 / std::sqrt(bc2));
  const T eps = static_cast<T>(c.eps);
  parallel_for(param.numel(), 32768, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const T gi = g[i];
      const T mi = b1 * mm[i] + omb1 * gi;
      const T vi = b2 * vv[i] + omb2 * gi * gi;
      mm[i] = mi;
      vv[i] = vi;
      const T denom = std::sqrt(vi) * inv_sqrt_bc2 + eps;
      p[i] = p[i] * decay - step_size * mi / denom;
    }
  });
}

template <typename T>
void adamw_ref_typed(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& c) {
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  T* mm = m.data<T>();
  T* vv = v.data<T>();
  const double t = static_cast<double>(c.step);
  for (int64_t i = 0, n = param.numel(); i < n; ++i) {
    double pi = p[i], gi = g[i];
    pi -= c.lr * c.weight_decay * pi;
    double mi = c.beta1 * static_cast<double>(mm[i]) + (1 - c.beta1) * gi;
    double vi = c.beta2 * static_cast<double>(vv[i]) + (1 - c.beta2) * gi * gi;
    double mhat = mi / (1 - std::pow(c.beta1, t));
    double vhat = vi / (1 - std::pow(c.beta2, t));
    pi -= c.lr * mhat / (std::sqrt(vhat) + c.eps);
    p[i] = static_cast<T>(pi);
    mm[i] = static_cast<T>(mi);
    vv[i] = static_cast<T>(vi);
  }
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& c) {
  dispatch_float(param.dtype, [&](auto zero) { adamw_typed<decltype(zero)>(param, grad, m, v, c); });
}

void adamw_step_reference(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& c) {
  dispatch_float(param.dtype, [&](auto zero) { adamw_ref_typed<decltype(zero)>(param, grad, m, v, c); });
}

}  // namespace cpu
}  // namespace vlm
