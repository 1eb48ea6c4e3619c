// adamw binding: checks the four tensors (same shape and float dtype, contiguous,
// cpu, distinct storage) and the hyperparameters, then runs the fused update in place.
#include <cmath>
#include <string>
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/adamw.h"

namespace vlm::js {
namespace {

AdamWConfig read_config(const Args& a, const char* op) {
  AdamWConfig c;
  c.lr = a.finite(4, "lr");
  if (c.lr < 0) range_error(op, "lr", "a number >= 0", describe(a[4]));
  c.beta1 = a.finite(5, "beta1");
  if (c.beta1 < 0 || c.beta1 >= 1) range_error(op, "beta1", "a number in [0, 1)", describe(a[5]));
  c.beta2 = a.finite(6, "beta2");
  if (c.beta2 < 0 || c.beta2 >= 1) range_error(op, "beta2", "a number in [0, 1)", describe(a[6]));
  c.eps = a.finite(7, "eps");
  if (c.eps <= 0) range_error(op, "eps", "a number > 0", describe(a[7]));
  c.weight_decay = a.finite(8, "weightDecay");
  if (c.weight_decay < 0) range_error(op, "weightDecay", "a number >= 0", describe(a[8]));
  c.step = a.integer(9, "step", 1, 9007199254740991LL);
  return c;
}

// Validates the tensors; returns mutable copies of the handles (same storage).
void read_tensors(const Args& a, const char* op, Tensor& p, Tensor& g, Tensor& m, Tensor& v) {
  const Tensor& param = a.tensor(0, "param");
  const Tensor& grad = a.tensor(1, "grad");
  const Tensor& mt = a.tensor(2, "m");
  const Tensor& vt = a.tensor(3, "v");
  expect_float(op, "param", param);
  expect_cpu(op, "param", param);
  expect_contiguous(op, "param", param);
  const char* names[3] = {"grad", "m", "v"};
  const Tensor* others[3] = {&grad, &mt, &vt};
  for (int k = 0; k < 3; ++k) {
    expect_same_dtype(op, names[k], *others[k], param, "param");
    expect_cpu(op, names[k], *others[k]);
    expect_contiguous(op, names[k], *others[k]);
    if (others[k]->shape != param.shape)
      range_error(op, names[k], "shape " + shape_str(param.shape) + " (the shape of param)", "shape " + shape_str(others[k]->shape));
  }
  // The update reads and writes in one pass: the four must not share storage.
  const Tensor* all[4] = {&param, &grad, &mt, &vt};
  const char* all_names[4] = {"param", "grad", "m", "v"};
  for (int i = 0; i < 4; ++i)
    for (int j = i + 1; j < 4; ++j)
      if (all[i]->storage == all[j]->storage && param.numel() > 0)
        range_error(op, all_names[j], std::string("a tensor with its own storage"), std::string("a view sharing storage with ") + all_names[i]);
  p = param;
  g = grad;
  m = mt;
  v = vt;
}

// adamwStep(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step): in place on param, m, v.
Napi::Value adamw_step(const Napi::CallbackInfo& info) {
  Args a(info, "adamwStep");
  Tensor p, g, m, v;
  read_tensors(a, "adamwStep", p, g, m, v);
  AdamWConfig c = read_config(a, "adamwStep");
  cpu::adamw_step(p, g, m, v, c);
  return info.Env().Undefined();
}

// adamwStepReference(...): same arguments; the serial float64 reference (tests only).
Napi::Value adamw_step_reference(const Napi::CallbackInfo& info) {
  Args a(info, "adamwStepReference");
  Tensor p, g, m, v;
  read_tensors(a, "adamwStepReference", p, g, m, v);
  AdamWConfig c = read_config(a, "adamwStepReference");
  cpu::adamw_step_reference(p, g, m, v, c);
  return info.Env().Undefined();
}

}  // namespace

VLM_EXPORT("adamwStep", adamw_step);
VLM_EXPORT("adamwStepReference", adamw_step_reference);

}  // namespace vlm::js
