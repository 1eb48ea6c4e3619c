// layer_norm family, binding: layerNorm(x, weight, bias, size, eps) -> {y, mean, rstd}
// and layerNormBackward(x, weight, mean, rstd, gy, size, weightGrads) -> {dx, dweight, dbias}.
// `size` must be the product of some trailing dims of x; weight/bias hold `size` elements.
#include <cmath>
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/copy.h"
#include "ops/layer_norm.h"

namespace vlm::js {
namespace {

// Checks that `size` is the product of x's trailing dims; returns the row count.
int64_t rows_of(const char* op, const Tensor& x, int64_t size) {
  int64_t p = 1;
  if (size == 1) return x.numel();
  for (int64_t d = x.dim() - 1; d >= 0; --d) {
    p *= x.shape[d];
    if (p == size) return x.numel() / size;
  }
  range_error(op, "size", "the product of trailing dims of x (shape " + shape_str(x.shape) + ")", std::to_string(size));
}

double eps_arg(const Args& a, size_t i) {
  double eps = a.number(i, "eps");
  if (!std::isfinite(eps) || eps < 0) range_error(a.op(), "eps", "a finite non-negative number", describe(a[i]));
  return eps;
}

// weight/bias: same dtype/device as x, `size` elements; returned contiguous.
const Tensor* param(const char* op, const char* arg, const Tensor* p, const Tensor& x, int64_t size, Tensor& hold) {
  if (!p) return nullptr;
  expect_same_dtype(op, arg, *p, x, "x");
  expect_same_device(op, arg, *p, x, "x");
  if (p->numel() != size)
    range_error(op, arg, "a tensor of " + std::to_string(size) + " elements (the normalized shape)", "shape " + shape_str(p->shape));
  hold = contiguous(*p);
  return &hold;
}

Napi::Value layer_norm(const Napi::CallbackInfo& info) {
  const char* op = "layerNorm";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_float(op, "x", x);
  expect_cpu(op, "x", x);
  const Tensor* w = a.optional_tensor(1, "weight");
  const Tensor* b = a.optional_tensor(2, "bias");
  int64_t size = a.integer(3, "size", 1, kMaxNumel);
  double eps = eps_arg(a, 4);
  int64_t rows = rows_of(op, x, size);
  Tensor wh, bh;
  w = param(op, "weight", w, x, size, wh);
  b = param(op, "bias", b, x, size, bh);
  Tensor xc = contiguous(x);
  Tensor y = Tensor::empty(x.shape, x.dtype, Device::CPU);
  Tensor mean = Tensor::empty({rows}, x.dtype, Device::CPU);
  Tensor rstd = Tensor::empty({rows}, x.dtype, Device::CPU);
  cpu::layer_norm_forward(xc, w, b, size, eps, y, mean, rstd);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("y", wrap(info.Env(), std::move(y)));
  o.Set("mean", wrap(info.Env(), std::move(mean)));
  o.Set("rstd", wrap(info.Env(), std::move(rstd)));
  return o;
}

Napi::Value layer_norm_backward(const Napi::CallbackInfo& info) {
  const char* op = "layerNormBackward";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_float(op, "x", x);
  expect_cpu(op, "x", x);
  const Tensor* w = a.optional_tensor(1, "weight");
  const Tensor& mean = a.tensor(2, "mean");
  const Tensor& rstd = a.tensor(3, "rstd");
  const Tensor& gy = a.tensor(4, "gy");
  int64_t size = a.integer(5, "size", 1, kMaxNumel);
  bool wgrads = a.boolean(6, "weightGrads");
  // dxInto: a gradient to add dx into, in place (contiguous, x's shape and dtype); dx is
  // then returned as null.
  const Tensor* into = a.optional_tensor(7, "dxInto");
  int64_t rows = rows_of(op, x, size);
  Tensor wh;
  w = param(op, "weight", w, x, size, wh);
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&mean, "mean"}, {&rstd, "rstd"}, {&gy, "gy"}}) {
    expect_same_dtype(op, name, *t, x, "x");
    expect_same_device(op, name, *t, x, "x");
  }
  if (mean.numel() != rows) range_error(op, "mean", "a tensor of " + std::to_string(rows) + " elements (one per row)", "shape " + shape_str(mean.shape));
  if (rstd.numel() != rows) range_error(op, "rstd", "a tensor of " + std::to_string(rows) + " elements (one per row)", "shape " + shape_str(rstd.shape));
  expect_shape(op, "gy", gy, x.shape);
  if (into) {
    expect_same_dtype(op, "dxInto", *into, x, "x");
    expect_same_device(op, "dxInto", *into, x, "x");
    expect_shape(op, "dxInto", *into, x.shape);
    if (!into->is_contiguous()) range_error(op, "dxInto", "a contiguous tensor", "a strided view");
  }
  Tensor xc = contiguous(x), mc = contiguous(mean), rc = contiguous(rstd), gc = contiguous(gy);
  Tensor dx = into ? *into : Tensor::empty(x.shape, x.dtype, Device::CPU);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  if (wgrads) {
    Tensor dw = Tensor::empty({size}, x.dtype, Device::CPU);
    Tensor db = Tensor::empty({size}, x.dtype, Device::CPU);
    cpu::layer_norm_backward(xc, w, mc, rc, gc, size, dx, &dw, &db, into != nullptr);
    o.Set("dweight", wrap(env, std::move(dw)));
    o.Set("dbias", wrap(env, std::move(db)));
  } else {
    cpu::layer_norm_backward(xc, w, mc, rc, gc, size, dx, nullptr, nullptr, into != nullptr);
    o.Set("dweight", env.Null());
    o.Set("dbias", env.Null());
  }
  o.Set("dx", into ? env.Null() : wrap(env, std::move(dx)));
  return o;
}

}  // namespace

VLM_EXPORT("layerNorm", layer_norm);
VLM_EXPORT("layerNormBackward", layer_norm_backward);

}  // namespace vlm::js
