// pool family: 2-D average pooling (count_include_pad, as torch's default), adaptive
// average pooling (torch's window bounds floor(i*H/OH) .. ceil((i+1)*H/OH); [1, 1] is
// global pooling), and mean / max pooling over a sequence under a validity mask.
// Forward and backward together; backward scatters into planes owned by one task, so
// every result is the same for any thread count.
#pragma once
#include "core/tensor.h"

namespace vlm {

// Output size of an average-pooling axis (the caller checks it is >= 1).
inline int64_t pool_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad) { return (in + 2 * pad - k) / stride + 1; }

namespace cpu {

// P planes (the leading dims flattened), H W input, OH OW output. x [P, H, W] -> y [P, OH, OW]
// (both contiguous). Each window's sum is divided by its size clipped to the padded input.
void avg_pool2d_forward(const Tensor& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, Tensor& y);
// gy [P, OH, OW] -> dx [P, H, W]
void avg_pool2d_backward(const Tensor& gy, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, Tensor& dx);

// x [P, H, W] -> y [P, OH, OW]; window rows floor(i*H/OH) .. ceil((i+1)*H/OH), likewise columns.
void adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y);
// gy [P, OH, OW] -> dx [P, H, W]
void adaptive_avg_pool2d_backward(const Tensor& gy, Tensor& dx);

// B batch, L length, D features. x [B, L, D], mask uint8 [B, L] (nonzero = valid) or null
// (all valid) -> y [B, D], the mean over valid positions; a row with none gives zeros.
void masked_mean_pool_forward(const Tensor& x, const Tensor* mask, Tensor& y);
// gy [B, D] -> dx [B, L, D] = mask * gy / count
void masked_mean_pool_backward(const Tensor& gy, const Tensor* mask, Tensor& dx);

// x [B, L, D], mask [B, L] or null -> y [B, D] max over valid positions (NaN wins, ties go
// to the first), index int32 [B, D] the position taken (-1 and y = 0 for a row with none).
void masked_max_pool_forward(const Tensor& x, const Tensor* mask, Tensor& y, Tensor& index);
// gy [B, D], index [B, D] (values in [-1, L)) -> dx [B, L, D]: gy at the taken position, else 0.
void masked_max_pool_backward(const Tensor& gy, const Tensor& index, Tensor& dx);

}  // namespace cpu
}  // namespace vlm
