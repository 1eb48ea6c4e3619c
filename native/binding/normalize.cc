// normalize family, binding: l2Normalize(x, axis, eps) and
// l2NormalizeBackward(x, y, gy, axis, eps). Any strides in; contiguous results.
#include <cmath>
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/copy.h"
#include "ops/normalize.h"

namespace vlm::js {
namespace {

double eps_arg(const Args& a, size_t i) {
  double eps = a.number(i, "eps");
  if (!std::isfinite(eps) || eps < 0) range_error(a.op(), "eps", "a finite non-negative number", describe(a[i]));
  return eps;
}

Napi::Value l2_normalize(const Napi::CallbackInfo& info) {
  const char* op = "l2Normalize";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_float(op, "x", x);
  expect_cpu(op, "x", x);
  int64_t axis = normalize_axis(op, "axis", a.integer(1, "axis", -kMaxDims, kMaxDims), x.dim());
  double eps = eps_arg(a, 2);
  Tensor xc = contiguous(x);
  Tensor y = Tensor::empty(x.shape, x.dtype, Device::CPU);
  cpu::l2_normalize_forward(xc, y, axis, eps);
  return wrap(info.Env(), std::move(y));
}

Napi::Value l2_normalize_backward(const Napi::CallbackInfo& info) {
  const char* op = "l2NormalizeBackward";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  const Tensor& y = a.tensor(1, "y");
  const Tensor& gy = a.tensor(2, "gy");
  expect_float(op, "x", x);
  expect_cpu(op, "x", x);
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&y, "y"}, {&gy, "gy"}}) {
    expect_same_dtype(op, name, *t, x, "x");
    expect_same_device(op, name, *t, x, "x");
    expect_shape(op, name, *t, x.shape);
  }
  int64_t axis = normalize_axis(op, "axis", a.integer(3, "axis", -kMaxDims, kMaxDims), x.dim());
  double eps = eps_arg(a, 4);
  Tensor xc = contiguous(x), yc = contiguous(y), gc = contiguous(gy);
  Tensor gx = Tensor::empty(x.shape, x.dtype, Device::CPU);
  cpu::l2_normalize_backward(xc, yc, gc, gx, axis, eps);
  return wrap(info.Env(), std::move(gx));
}

}  // namespace

VLM_EXPORT("l2Normalize", l2_normalize);
VLM_EXPORT("l2NormalizeBackward", l2_normalize_backward);

}  // namespace vlm::js
