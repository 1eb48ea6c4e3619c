// lm_head: the vocabulary projection fused with label-smoothed cross-entropy.
//   z_ij   = h_i . w_j + b_j                                  (logits, never stored whole)
//   lse_i  = log sum_j exp z_ij
//   loss_i = lse_i - (1 - eps) z_{i,t_i} - (eps / V) sum_j z_ij   (= torch's label_smoothing=eps)
//   dloss_i/dz_ij = softmax_ij - (1 - eps) [j = t_i] - eps / V
// Rows whose target is ignore_index count for nothing (loss 0, gradient 0, not in the mean).
// The kernels walk row blocks of the non-ignored rows one after another and, inside a
// block, vocabulary tiles in parallel (each thread owns a slice of the vocabulary, so
// d(weight) and d(bias) have one writer); per-(row, tile) max / sum-exp are combined
// in tile order, so the loss does not depend on the thread count, and the gradients
// are bitwise reproducible for a fixed thread count. What is never materialised: the
// N x V logits. What is: one row block of logits (forward_backward only, rows x V),
// per-thread tiles, and a rows x H partial d(hidden) per thread.
// Also here: a materialised float32/float64 path (the naive baseline for benchmarks)
// and a slow, obvious float64 reference (tests).
#pragma once
#include <cstdint>
#include "core/tensor.h"

namespace vlm {

struct LmHeadConfig {
  int64_t ignore_index = -100;
  double label_smoothing = 0;  // eps in [0, 1)
  bool mean = true;            // gradients of the mean over non-ignored rows (else of the sum)
  int64_t row_chunk = 0;       // rows per block; 0 = automatic
  int64_t vocab_chunk = 0;     // vocabulary entries per tile; 0 = automatic
};

struct LmHeadStats {
  double loss_sum = 0;  // sum of loss_i over non-ignored rows (accumulated in float64, row order)
  int64_t valid = 0;    // non-ignored rows
  int64_t correct = 0;  // non-ignored rows whose first arg-max logit is the target
};

// Gradient outputs; a null pointer means "not wanted" (its GEMM is skipped).
struct LmHeadGrads {
  Tensor* d_hidden = nullptr;  // [N, H], contiguous, same dtype
  Tensor* d_weight = nullptr;  // [V, H], contiguous
  Tensor* d_bias = nullptr;    // [V], contiguous
};

namespace cpu {
// N tokens, H hidden, V vocab. hidden [N, H] any strides; weight [V, H] contiguous;
// bias [V] any stride or null; targets int32 [N] any stride, each in [0, V) or
// ignore_index (checked by the caller). lse [N] contiguous receives lse_i (0 where
// ignored); row_loss [N] contiguous, when given, receives loss_i (0 where ignored).
LmHeadStats lm_head_forward(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets,
                            const LmHeadConfig& c, Tensor& lse, Tensor* row_loss);

// The forward above plus the gradients of grad_scale * (mean or sum of loss_i), in the
// same pass over the logits (each row block's logits are computed once).
LmHeadStats lm_head_forward_backward(const Tensor& hidden, const Tensor& weight, const Tensor* bias,
                                     const Tensor& targets, const LmHeadConfig& c, double grad_scale, Tensor& lse,
                                     Tensor* row_loss, const LmHeadGrads& g);

// Gradients from a saved lse [N], recomputing the logits tile by tile: row i's
// dlogits are scaled by grad_scale * row_grad[i] (row_grad [N] any stride, or null = 1),
// further divided by the number of non-ignored rows when c.mean.
void lm_head_backward(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets,
                      const LmHeadConfig& c, const Tensor& lse, const Tensor* row_grad, double grad_scale,
                      const LmHeadGrads& g);

// The naive path: materialises all N x V logits (dtype of hidden) with whole-matrix
// GEMMs, then softmax, loss and gradients as a framework would. Same outputs as
// lm_head_forward_backward with grad_scale 1; for benchmarks.
LmHeadStats lm_head_naive(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets,
                          const LmHeadConfig& c, Tensor* row_loss, const LmHeadGrads& g);

// The reference: plain float64 loops over materialised logits, serial. Outputs are
// float64 tensors (row_loss [N], grads) whatever the input dtype; for tests only.
LmHeadStats lm_head_reference(const Tensor& hidden, const Tensor& weight, const Tensor* bias, const Tensor& targets,
                              const LmHeadConfig& c, Tensor* row_loss, const LmHeadGrads& g);
}  // namespace cpu

}  // namespace vlm
