// conv2d family: 2-D convolution (cross-correlation, as torch) over NCHW images with
// stride, zero padding, dilation and groups, forward and backward together.
// General path: im2col of one (image, group) into a [C/G*KH*KW, OH*OW] buffer and one
// GEMM per (image, group); a 1x1 stride-1 unpadded kernel reads the image in place.
// Depthwise (groups == C, one input channel per group): direct loops, no im2col.
// dweight is reduced deterministically: partial sums over image chunks whose bounds
// depend only on the shapes, added in chunk order (the same result on any thread count).
#pragma once
#include "core/tensor.h"

namespace vlm {

struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dil_h = 1, dil_w = 1;
  int64_t groups = 1;
};

// Output size of one spatial axis (the caller checks that it is >= 1).
inline int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

namespace cpu {

// N batch, C in channels, H W input, O out channels, KH KW kernel, OH OW output, G groups.
// x [N, C, H, W], weight [O, C/G, KH, KW], bias [O] or null (all contiguous)
// -> y [N, O, OH, OW] (contiguous, preallocated).
void conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor* bias, const Conv2dParams& p, Tensor& y);

// x [N, C, H, W], weight [O, C/G, KH, KW], gy [N, O, OH, OW] (contiguous). Each output
// that is non-null is written: dx [N, C, H, W], dweight [O, C/G, KH, KW], dbias [O].
void conv2d_backward(const Tensor& x, const Tensor& weight, const Tensor& gy, const Conv2dParams& p, Tensor* dx,
                     Tensor* dweight, Tensor* dbias);

}  // namespace cpu
}  // namespace vlm
