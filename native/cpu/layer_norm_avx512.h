// layer_norm family, CPU: AVX-512 float32 row kernels, chosen at run time (the build
// targets x86-64-v3). For rows of ~128 the generic loops spent most of their time on
// per-row set-up (zeroing 16 partial sums, scalar reductions): a [8320, 128] forward
// took 0.64 ms on 2 threads, 4.5x a memory-bound pass. Statistics stay float64 sums
// (two 8-lane partials, combined in a fixed order), so a constant row has var = 0.
#pragma once
#include <cstdint>

namespace vlm {
namespace cpu {

bool layer_norm_avx512_available();

// One row of C floats: mean, rstd (rounded to float as stored) and y; w, b may be null.
void layer_norm_row_forward_avx512(const float* x, const float* w, const float* b, int64_t C, double eps, float* y,
                                   float* mean, float* rstd);

// One row's dx from x, gy, the stored mean / rstd (added into dx when accumulate); w may
// be null. When dw is not null, the row's gy * xhat and gy are added into dw and db
// (float64, C each).
void layer_norm_row_backward_avx512(const float* x, const float* w, const float* gy, int64_t C, float mean, float rstd,
                                    float* dx, double* dw, double* db, bool accumulate);

}  // namespace cpu
}  // namespace vlm
