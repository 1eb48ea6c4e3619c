// batch_norm family: y = (x - mean) * rstd * weight + bias per channel (axis 1 of
// [N, C, ...]). Training mode normalises with the batch statistics (biased variance),
// writes them as the saved mean/rstd and updates the running buffers in place
// (running = (1 - momentum) * running + momentum * batch, unbiased variance, as torch);
// eval mode normalises with the running statistics. The forward's mean/rstd are what
// the backward reads, so later running-buffer updates do not change a pending backward.
// Statistics and gradient sums accumulate in float64, one channel per task in a fixed
// order: the same result on any thread count.
#pragma once
#include "core/tensor.h"

namespace vlm {
namespace cpu {

// N batch, C channels, S = product of the dims after axis 1. x, y contiguous [N, C, S];
// weight, bias [C] or null; running_mean, running_var [C] contiguous, or null (training
// only: then nothing is updated); mean, rstd [C] outputs. Training needs N*S >= 2.
void batch_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, Tensor* running_mean,
                        Tensor* running_var, bool training, double momentum, double eps, Tensor& y, Tensor& mean,
                        Tensor& rstd);

// x, gy [N, C, S] contiguous; weight [C] or null; mean, rstd [C] from the forward.
// training: dx includes the terms through the batch statistics; eval: dx = gy * weight * rstd.
// Writes the non-null outputs: dx [N, C, S], dweight [C], dbias [C].
void batch_norm_backward(const Tensor& x, const Tensor* weight, const Tensor& mean, const Tensor& rstd, const Tensor& gy,
                         bool training, Tensor* dx, Tensor* dweight, Tensor* dbias);

}  // namespace cpu
}  // namespace vlm
