// batch_norm family, binding:
//   batchNorm(x, runningMean, runningVar, weight, bias, training, momentum, eps) -> {y, mean, rstd}
//     (training: updates runningMean/runningVar in place when given)
//   batchNormBackward(x, weight, mean, rstd, gy, training, needX, needWeight, needBias) -> {dx, dweight, dbias}
// x is [N, C, ...]; every per-channel tensor is [C]. A strided running buffer is updated
// through a contiguous copy written back after the kernel.
#include <cmath>
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/batch_norm.h"
#include "ops/copy.h"

namespace vlm::js {
namespace {

void expect_x(const char* op, const Tensor& x) {
  expect_float(op, "x", x);
  expect_cpu(op, "x", x);
  expect_min_rank(op, "x", x, 2);
}

// A per-channel tensor: same dtype/device as x, shape [C]; returned contiguous in `hold`.
const Tensor* channel_arg(const char* op, const char* name, const Tensor* t, const Tensor& x, Tensor& hold) {
  if (!t) return nullptr;
  expect_same_dtype(op, name, *t, x, "x");
  expect_same_device(op, name, *t, x, "x");
  expect_shape(op, name, *t, {x.shape[1]});
  hold = contiguous(*t);
  return &hold;
}

double ranged(const Args& a, size_t i, const char* name, double lo, double hi, const char* what) {
  double v = a.number(i, name);
  if (!std::isfinite(v) || v < lo || v > hi) range_error(a.op(), name, what, describe(a[i]));
  return v;
}

Napi::Value batch_norm(const Napi::CallbackInfo& info) {
  const char* op = "batchNorm";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_x(op, x);
  const Tensor* rm = a.optional_tensor(1, "runningMean");
  const Tensor* rv = a.optional_tensor(2, "runningVar");
  const Tensor* w = a.optional_tensor(3, "weight");
  const Tensor* b = a.optional_tensor(4, "bias");
  const bool training = a.boolean(5, "training");
  const double momentum = ranged(a, 6, "momentum", 0.0, 1.0, "a finite number in [0, 1]");
  const double eps = ranged(a, 7, "eps", 0.0, HUGE_VAL, "a finite non-negative number");
  if (!training && !rm) type_error(op, "runningMean", "a tensor (eval mode normalises with the running statistics)", describe(a[1]));
  if (!training && !rv) type_error(op, "runningVar", "a tensor (eval mode normalises with the running statistics)", describe(a[2]));
  if (!rm != !rv) type_error(op, rm ? "runningVar" : "runningMean", "a tensor when the other running buffer is given", describe(a[rm ? 2 : 1]));
  const int64_t C = x.shape[1], M = x.shape[1] > 0 ? x.numel() / x.shape[1] : 0;
  if (training && M < 2)
    range_error(op, "x", "more than 1 value per channel in training mode", "shape " + shape_str(x.shape));
  Tensor rmh, rvh, wh, bh;
  rm = channel_arg(op, "runningMean", rm, x, rmh);
  rv = channel_arg(op, "runningVar", rv, x, rvh);
  w = channel_arg(op, "weight", w, x, wh);
  b = channel_arg(op, "bias", b, x, bh);
  Tensor xc = contiguous(x);
  Tensor y = Tensor::empty(x.shape, x.dtype, Device::CPU);
  Tensor mean = Tensor::empty({C}, x.dtype, Device::CPU);
  Tensor rstd = Tensor::empty({C}, x.dtype, Device::CPU);
  cpu::batch_norm_forward(xc, w, b, rm ? &rmh : nullptr, rv ? &rvh : nullptr, training, momentum, eps, y, mean, rstd);
  if (training && rm) {  // write back through strided originals (contiguous ones were updated in place)
    const Tensor* orig_m = a.optional_tensor(1, "runningMean");
    const Tensor* orig_v = a.optional_tensor(2, "runningVar");
    if (orig_m->storage != rmh.storage || orig_m->offset != rmh.offset) {
      Tensor dst = *orig_m;
      cpu::copy(rmh, dst);
    }
    if (orig_v->storage != rvh.storage || orig_v->offset != rvh.offset) {
      Tensor dst = *orig_v;
      cpu::copy(rvh, dst);
    }
  }
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("y", wrap(env, std::move(y)));
  o.Set("mean", wrap(env, std::move(mean)));
  o.Set("rstd", wrap(env, std::move(rstd)));
  return o;
}

Napi::Value batch_norm_backward(const Napi::CallbackInfo& info) {
  const char* op = "batchNormBackward";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_x(op, x);
  const Tensor* w = a.optional_tensor(1, "weight");
  const Tensor& mean = a.tensor(2, "mean");
  const Tensor& rstd = a.tensor(3, "rstd");
  const Tensor& gy = a.tensor(4, "gy");
  const bool training = a.boolean(5, "training");
  const bool need_x = a.boolean(6, "needX");
  const bool need_w = a.boolean(7, "needWeight");
  const bool need_b = a.boolean(8, "needBias");
  Tensor wh, mh, rh;
  w = channel_arg(op, "weight", w, x, wh);
  channel_arg(op, "mean", &mean, x, mh);
  channel_arg(op, "rstd", &rstd, x, rh);
  expect_same_dtype(op, "gy", gy, x, "x");
  expect_same_device(op, "gy", gy, x, "x");
  expect_shape(op, "gy", gy, x.shape);
  Tensor xc = contiguous(x), gc = contiguous(gy);
  const int64_t C = x.shape[1];
  Tensor dx, dw, db;
  if (need_x) dx = Tensor::empty(x.shape, x.dtype, Device::CPU);
  if (need_w) dw = Tensor::empty({C}, x.dtype, Device::CPU);
  if (need_b) db = Tensor::empty({C}, x.dtype, Device::CPU);
  cpu::batch_norm_backward(xc, w, mh, rh, gc, training, need_x ? &dx : nullptr, need_w ? &dw : nullptr, need_b ? &db : nullptr);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("dx", need_x ? wrap(env, std::move(dx)) : env.Null());
  o.Set("dweight", need_w ? wrap(env, std::move(dw)) : env.Null());
  o.Set("dbias", need_b ? wrap(env, std::move(db)) : env.Null());
  return o;
}

}  // namespace

VLM_EXPORT("batchNorm", batch_norm);
VLM_EXPORT("batchNormBackward", batch_norm_backward);

}  // namespace vlm::js
