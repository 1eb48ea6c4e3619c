// reduce: sum / mean / max over a set of axes (any strides), the gradient of max, and
// the float64 sum of squares used for gradient-norm clipping. Every output element is
// reduced in a fixed order that does not depend on the thread count, so results are
// bitwise reproducible.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "core/tensor.h"

namespace vlm {

enum class ReduceOp : uint8_t { Sum, Mean, Max };
bool parse_reduce_op(const std::string& s, ReduceOp& out);

// x's shape with the reduced axes dropped, or kept as size 1 with keepdim.
Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& axes, bool keepdim);

namespace cpu {
// M outputs, R reduced elements each. axes: sorted, unique, in [0, rank).
// Sum of an empty group is 0, mean is NaN; max needs R > 0 (the binding checks).
// max propagates NaN. Float32 sums accumulate in float64 across blocks.
Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<int64_t>& axes, bool keepdim);
// dx (x's shape, contiguous) is zero except at the first arg-max (row-major over the
// reduced axes) of each group, which gets gy; gy holds M elements (either keepdim form).
Tensor reduce_max_backward(const Tensor& x, const std::vector<int64_t>& axes, const Tensor& gy);
// sum of x^2 over all elements, accumulated in float64 in fixed chunks.
double sum_squares(const Tensor& x);
}  // namespace cpu

}  // namespace vlm
