// dropout family: inverted dropout whose keep-mask is a pure function of
// (seed, offset + element index) through Philox, so the backward regenerates it and
// nothing is stored. Element i (row-major) is kept when its uniform draw u_i >= p, and
// then scaled by 1/(1-p); a dropped element is 0 (also when x is NaN or inf).
#pragma once
#include <cstdint>
#include "core/tensor.h"

namespace vlm {
namespace cpu {

// N elements: x, y contiguous [N]; 0 <= p <= 1. Also the backward (apply to gy).
void dropout_apply(const Tensor& x, Tensor& y, double p, uint64_t seed, uint64_t offset);

}  // namespace cpu
}  // namespace vlm
