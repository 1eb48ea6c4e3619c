// softmax family: softmax and log-softmax along any axis, forward and backward.
// The backward reads the saved output y (never x), so nothing else is kept.
// A lane whose entries are all -inf gives zeros (softmax) or -inf (log-softmax)
// instead of NaN, so fully masked attention rows stay finite; NaN still propagates.
#pragma once
#include "core/tensor.h"

namespace vlm {
namespace cpu {

// x viewed as [outer, n, inner] around `axis`; x and y contiguous, one shape.
void softmax_forward(const Tensor& x, Tensor& y, int64_t axis, bool log);

// gx = y * (gy - sum(gy * y))            (softmax)
// gx = gy - exp(y) * sum(gy)             (log-softmax)
// sums along `axis`; y, gy, gx contiguous, one shape.
void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, int64_t axis, bool log);

}  // namespace cpu
}  // namespace vlm
