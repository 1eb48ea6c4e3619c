// matmul family: batched matrix products with numpy broadcasting over the batch
// dims, and linear (x W^T + b, the bias fused into the GEMM's C initialisation) with
// its backward. Inputs may be strided: a matrix whose last two dims are a transposed
// contiguous layout is read through the opposite transpose flag, other layouts are
// copied once. Outputs are fresh contiguous tensors. Shapes are checked by the binding.
#pragma once
#include "core/tensor.h"
#include "ops/elementwise.h"

namespace vlm {
namespace cpu {

// a [..., M, K] ([..., K, M] when trans_a), b [..., K, N] ([..., N, K] when trans_b)
// -> [batch..., M, N] with batch = broadcast(a.shape[:-2], b.shape[:-2]).
// Many small matrices run in parallel over the batch (single-threaded GEMMs); a
// single matrix, or a batched a against one shared b, is one multithreaded GEMM.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b);

// x [..., I], weight [O, I], bias [O] or null, residual [..., O] or null ->
// y [..., O] = residual + x W^T + bias (C starts as residual + bias: no separate add).
// R = prod(x.shape[:-1]) rows go through one GEMM (or fixed row chunks, matmul.cc).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor* bias, const Tensor* residual = nullptr);

// pre = x W^T + bias and out = act(pre) (an MLP's first linear and its activation). On the
// row-chunked float32 path a sigmoid-gated act (SiLU, QuickGELU) is applied to each chunk
// while it is in L2; otherwise out is the elementwise family's unary(act, pre).
struct LinearActivation {
  Tensor pre, out;
};
LinearActivation linear_activation(const Tensor& x, const Tensor& weight, const Tensor* bias, UnaryOp act);

struct LinearGrads {
  Tensor dx;       // [..., I] = gy W            (empty when not asked for)
  Tensor dweight;  // [O, I]   = gy^T x, one GEMM over all R rows
  Tensor dbias;    // [O]      = sum of gy over rows, fixed order
};
// x [..., I], weight [O, I], gy [..., O]. With dx_into (contiguous, x's shape and
// dtype) dx is added into it (the GEMM's beta = 1; autograd passes a gradient already
// pending for x) and the returned dx is empty.
LinearGrads linear_backward(const Tensor& x, const Tensor& weight, const Tensor& gy, bool need_x, bool need_weight,
                            bool need_bias, Tensor* dx_into = nullptr);

}  // namespace cpu
}  // namespace vlm
