// elementwise family, CPU: AVX-512 float32 kernels for the sigmoid-gated activations
// (sigmoid, SiLU, QuickGELU), chosen at run time on CPUs that have AVX-512 (the build
// targets x86-64-v3). With 32 vector registers the exp polynomial's constants stay in
// registers, and 16 lanes halve the instruction count: a QuickGELU over [8320, 512] ran
// at ~3.5 cycles per element through the compiler-vectorised AVX2 loop.
#pragma once
#include <cstdint>

namespace vlm {
namespace cpu {

// Whether this CPU runs the kernels below.
bool gate_avx512_available();

// y = sigmoid(a x), or x sigmoid(a x) when times_x (a = 1: SiLU; 1.702: QuickGELU);
// n contiguous floats. Values and special cases as the scalar kernels in elementwise.cc.
void gate_forward_avx512(const float* x, float* y, int64_t n, float a, bool times_x);

// dx = g d/dx [x sigmoid(a x)] over n contiguous floats.
void gate_backward_avx512(const float* x, const float* g, float* dx, int64_t n, float a);

}  // namespace cpu
}  // namespace vlm
