// normalize family: y = x / max(||x||_2, eps) along one axis (torch.nn.functional.normalize
// with p = 2). A lane with ||x|| <= eps is divided by eps (a zero vector gives zeros and
// the finite gradient gy / eps). Norms accumulate in float64, so float32 inputs near
// FLT_MAX do not overflow.
#pragma once
#include "core/tensor.h"

namespace vlm {
namespace cpu {

// x viewed as [outer, n, inner] around `axis`; x and y contiguous, one shape.
void l2_normalize_forward(const Tensor& x, Tensor& y, int64_t axis, double eps);

// gx = (gy - y * sum(gy * y)) / ||x||  where ||x|| > eps, else gy / eps.
// x, y, gy, gx contiguous, one shape.
void l2_normalize_backward(const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx, int64_t axis, double eps);

}  // namespace cpu
}  // namespace vlm
