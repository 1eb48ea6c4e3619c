// copy: dst[...] = cast(src[...]) over one shape, any strides on either side
// (src may broadcast through stride-0 dims). Also fill and the contiguous helper.
#pragma once
#include "core/tensor.h"

namespace vlm {
namespace cpu {
void copy(const Tensor& src, Tensor& dst);  // shapes equal; dtypes may differ
void fill(Tensor& dst, double value);
}  // namespace cpu
namespace cuda {
void copy(const Tensor& src, Tensor& dst);  // both on the device, dtypes equal
void fill(Tensor& dst, double value);
}  // namespace cuda

// A contiguous tensor with t's values: t itself when already contiguous.
Tensor contiguous(const Tensor& t);

}  // namespace vlm
