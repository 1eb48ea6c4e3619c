// layer_norm family: y = (x - mean) * rstd * weight + bias over the trailing `size`
// elements of each row. The forward writes mean and rstd per row (llm.c style) so the
// backward needs no second statistics pass; the backward gives dx, dweight and dbias
// in one pass over the rows. Statistics accumulate in float64.
#pragma once
#include "core/tensor.h"

namespace vlm {
namespace cpu {

// R rows, C = size. x, y contiguous [R*C]; weight, bias [C] or null; mean, rstd [R].
void layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t size, double eps,
                        Tensor& y, Tensor& mean, Tensor& rstd);

// R rows, C = size. x, gy, dx contiguous [R*C]; weight [C] or null; mean, rstd [R].
// dweight, dbias [C] are written only when both are non-null. Row chunks are fixed by
// (R, C) alone and combined in order, so dweight/dbias are the same for any thread count.
// accumulate: dx += the gradient instead of dx = (autograd's pending gradient for x).
void layer_norm_backward(const Tensor& x, const Tensor* weight, const Tensor& mean, const Tensor& rstd,
                         const Tensor& gy, int64_t size, Tensor& dx, Tensor* dweight, Tensor* dbias,
                         bool accumulate = false);

}  // namespace cpu
}  // namespace vlm
