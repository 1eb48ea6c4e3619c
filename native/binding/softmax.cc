// softmax family, binding: softmax(x, axis, log), softmaxBackward(y, gy, axis, log).
// Strided inputs are copied contiguous first; results are fresh contiguous tensors.
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/copy.h"
#include "ops/softmax.h"

namespace vlm::js {
namespace {

// Whether argument i is `true`: picks the op name used in error messages.
bool is_log(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].IsBoolean() && info[i].As<Napi::Boolean>().Value();
}

// softmax(x, axis, log) -> y of x's shape
Napi::Value softmax(const Napi::CallbackInfo& info) {
  const char* op = is_log(info, 2) ? "logSoftmax" : "softmax";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_float(op, "x", x);
  expect_cpu(op, "x", x);
  int64_t axis = normalize_axis(op, "axis", a.integer(1, "axis", -kMaxDims, kMaxDims), x.dim());
  bool log = a.boolean(2, "log");
  Tensor xc = contiguous(x);
  Tensor y = Tensor::empty(x.shape, x.dtype, Device::CPU);
  cpu::softmax_forward(xc, y, axis, log);
  return wrap(info.Env(), std::move(y));
}

// softmaxBackward(y, gy, axis, log) -> gx of y's shape
Napi::Value softmax_backward(const Napi::CallbackInfo& info) {
  const char* op = is_log(info, 3) ? "logSoftmaxBackward" : "softmaxBackward";
  Args a(info, op);
  const Tensor& y = a.tensor(0, "y");
  const Tensor& gy = a.tensor(1, "gy");
  expect_float(op, "y", y);
  expect_cpu(op, "y", y);
  expect_same_dtype(op, "gy", gy, y, "y");
  expect_same_device(op, "gy", gy, y, "y");
  expect_shape(op, "gy", gy, y.shape);
  int64_t axis = normalize_axis(op, "axis", a.integer(2, "axis", -kMaxDims, kMaxDims), y.dim());
  bool log = a.boolean(3, "log");
  Tensor yc = contiguous(y), gc = contiguous(gy);
  Tensor gx = Tensor::empty(y.shape, y.dtype, Device::CPU);
  cpu::softmax_backward(yc, gc, gx, axis, log);
  return wrap(info.Env(), std::move(gx));
}

}  // namespace

VLM_EXPORT("softmax", softmax);
VLM_EXPORT("softmaxBackward", softmax_backward);

}  // namespace vlm::js
