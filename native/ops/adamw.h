// adamw: one fused in-place AdamW update per parameter tensor (torch.optim.AdamW
// semantics: decoupled weight decay, bias-corrected moments). Reads p, g, m, v once
// and writes p, m, v once; no temporaries. Also a slow float64 reference for tests.
#pragma once
#include <cstdint>
#include "core/tensor.h"

namespace vlm {

struct AdamWConfig {
  double lr;            // >= 0
  double beta1, beta2;  // in [0, 1)
  double eps;           // > 0
  double weight_decay;  // >= 0
  int64_t step;         // 1-based: the step being taken
};

namespace cpu {
// N elements: param, grad, m, v all contiguous, same shape and float dtype.
//   p -= lr*wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& c);
// Same update computed in float64 element by element, serially (the reference).
void adamw_step_reference(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& c);
}  // namespace cpu

}  // namespace vlm
