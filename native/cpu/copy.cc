// copy family, CPU: strided copy with dtype cast, and fill.
#include "ops/copy.h"
#include <cstring>
#include "core/iter.h"
#include "core/error.h"

namespace vlm {
namespace cpu {
namespace {

template <typename S, typename D>
void copy_typed(const Tensor& src, Tensor& dst) {
  StridedLayout<2> lay(dst.shape, {&dst.strides, &src.strides});
  D* d = dst.data<D>();
  const S* s = src.data<S>();
  lay.parallel_runs([&](const std::array<int64_t, 2>& off, const std::array<int64_t, 2>& in, int64_t n) {
    D* dp = d + off[0];
    const S* sp = s + off[1];
    if (in[0] == 1 && in[1] == 1) {
      if constexpr (std::is_same_v<S, D>) std::memcpy(dp, sp, n * sizeof(D));
      else for (int64_t i = 0; i < n; ++i) dp[i] = static_cast<D>(sp[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) dp[i * in[0]] = static_cast<D>(sp[i * in[1]]);
    }
  });
}

template <typename S>
void copy_from(const Tensor& src, Tensor& dst) {
  switch (dst.dtype) {
    case DType::F32: copy_typed<S, float>(src, dst); break;
    case DType::F64: copy_typed<S, double>(src, dst); break;
    case DType::I32: copy_typed<S, int32_t>(src, dst); break;
    case DType::U8: copy_typed<S, uint8_t>(src, dst); break;
  }
}

template <typename D>
void fill_typed(Tensor& dst, double value) {
  StridedLayout<1> lay(dst.shape, {&dst.strides});
  D v = static_cast<D>(value);
  D* d = dst.data<D>();
  lay.parallel_runs([&](const std::array<int64_t, 1>& off, const std::array<int64_t, 1>& in, int64_t n) {
    D* p = d + off[0];
    for (int64_t i = 0; i < n; ++i) p[i * in[0]] = v;
  });
}

}  // namespace

void copy(const Tensor& src, Tensor& dst) {
  switch (src.dtype) {
    case DType::F32: copy_from<float>(src, dst); break;
    case DType::F64: copy_from<double>(src, dst); break;
    case DType::I32: copy_from<int32_t>(src, dst); break;
    case DType::U8: copy_from<uint8_t>(src, dst); break;
  }
}

void fill(Tensor& dst, double value) {
  switch (dst.dtype) {
    case DType::F32: fill_typed<float>(dst, value); break;
    case DType::F64: fill_typed<double>(dst, value); break;
    case DType::I32: fill_typed<int32_t>(dst, value); break;
    case DType::U8: fill_typed<uint8_t>(dst, value); break;
  }
}

}  // namespace cpu

Tensor contiguous(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor out = Tensor::empty(t.shape, t.dtype, t.device());
  if (t.device() == Device::CPU) cpu::copy(t, out);
  else cuda::copy(t, out);
  return out;
}

}  // namespace vlm
