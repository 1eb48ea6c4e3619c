// elementwise: unary activations and their gradients, broadcasting binary arithmetic,
// and the scalar helpers (affine, scalar power, axpy, in-place scale). Inputs may have
// any strides (stride-0 broadcast dims included); results are fresh contiguous tensors.
#pragma once
#include <cstdint>
#include <string>
#include "core/tensor.h"

namespace vlm {

enum class UnaryOp : uint8_t { Neg, Exp, Log, Sqrt, Tanh, Sigmoid, Relu, Gelu, GeluTanh, QuickGelu, Silu, Abs };
enum class BinaryOp : uint8_t { Add, Sub, Mul, Div, Pow, Maximum, Minimum };

// Names as the binding spells them ('neg', 'gelu_tanh', 'maximum', ...); false when unknown.
bool parse_unary_op(const std::string& s, UnaryOp& out);
bool parse_binary_op(const std::string& s, BinaryOp& out);

// The numpy broadcast of two shapes (aligned at the right); false when they do not broadcast.
bool broadcast_shapes(const Shape& a, const Shape& b, Shape& out);
// A stride-0 view of t with the broadcast shape `shape` (t's shape must broadcast to it).
Tensor broadcast_view(const Tensor& t, const Shape& shape);

namespace cpu {
// N elements: y = op(x).
Tensor unary(UnaryOp op, const Tensor& x);
// N elements: dx = gy * op'(x); y = op(x) is passed so exp/tanh/sigmoid/sqrt reuse it.
// x, y, gy share one shape and dtype.
Tensor unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy);
// out = a op b over the broadcast shape of a and b (same dtype).
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
// N elements: y = alpha * x + beta.
Tensor affine(const Tensor& x, double alpha, double beta);
// N elements: y = x^p (exact paths for p in {0, 1, 2, 3, 0.5, -0.5, -1}).
Tensor pow_scalar(const Tensor& x, double p);
// N elements: dx = gy * p * x^(p-1) (zero for p = 0); gy has x's shape.
Tensor pow_scalar_backward(const Tensor& x, double p, const Tensor& gy);
// N elements: dst += alpha * src; dst contiguous, src any strides, same shape and dtype.
void axpy(Tensor& dst, const Tensor& src, double alpha);
// N elements: x *= s; x contiguous.
void scale_inplace(Tensor& x, double s);
}  // namespace cpu

}  // namespace vlm
