// reduce family, binding: argument checks and conversion for reduce, reduceMaxBackward
// and sumSquares.
#include <algorithm>
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/reduce.h"

namespace vlm::js {
namespace {

const Tensor& float_cpu(const Args& a, size_t i, const char* name) {
  const Tensor& t = a.tensor(i, name);
  expect_float(a.op(), name, t);
  expect_cpu(a.op(), name, t);
  return t;
}

// Normalised, sorted, distinct axes; an empty list means every axis.
std::vector<int64_t> axes_arg(const Args& a, size_t i, const Tensor& x) {
  std::vector<int64_t> raw = a.ints(i, "axes");
  std::vector<int64_t> axes;
  if (raw.empty()) {
    for (int64_t d = 0; d < x.dim(); ++d) axes.push_back(d);
    return axes;
  }
  for (int64_t v : raw) axes.push_back(normalize_axis(a.op(), "axes", v, x.dim()));
  std::sort(axes.begin(), axes.end());
  if (std::adjacent_find(axes.begin(), axes.end()) != axes.end())
    range_error(a.op(), "axes", "distinct axes", "axes " + shape_str(raw) + " for a tensor of rank " + std::to_string(x.dim()));
  return axes;
}

int64_t group_size(const Tensor& x, const std::vector<int64_t>& axes) {
  int64_t r = 1;
  for (int64_t d : axes) r *= x.shape[d];
  return r;
}

// reduce(op, x, axes, keepdim) -> sum / mean / max over axes
Napi::Value reduce(const Napi::CallbackInfo& info) {
  Args a(info, "reduce");
  Napi::Value opv = info[0];
  ReduceOp op;
  if (!opv.IsString() || !parse_reduce_op(opv.As<Napi::String>().Utf8Value(), op))
    type_error("reduce", "op", "one of 'sum', 'mean', 'max'", describe(opv));
  const Tensor& x = float_cpu(a, 1, "x");
  std::vector<int64_t> axes = axes_arg(a, 2, x);
  bool keepdim = a.boolean(3, "keepdim");
  if (op == ReduceOp::Max && group_size(x, axes) == 0 && shape_numel(reduced_shape(x.shape, axes, keepdim)) > 0)
    range_error("reduce", "x", "non-empty reduced axes for 'max'", "shape " + shape_str(x.shape));
  return wrap(info.Env(), cpu::reduce(op, x, axes, keepdim));
}

// reduceMaxBackward(x, axes, keepdim, gy) -> dx with gy at the first arg-max of each group
Napi::Value reduce_max_backward(const Napi::CallbackInfo& info) {
  Args a(info, "reduceMaxBackward");
  const Tensor& x = float_cpu(a, 0, "x");
  std::vector<int64_t> axes = axes_arg(a, 1, x);
  bool keepdim = a.boolean(2, "keepdim");
  const Tensor& gy = a.tensor(3, "gy");
  expect_same_device("reduceMaxBackward", "gy", gy, x, "x");
  expect_same_dtype("reduceMaxBackward", "gy", gy, x, "x");
  expect_shape("reduceMaxBackward", "gy", gy, reduced_shape(x.shape, axes, keepdim));
  if (group_size(x, axes) == 0 && gy.numel() > 0)
    range_error("reduceMaxBackward", "x", "non-empty reduced axes", "shape " + shape_str(x.shape));
  return wrap(info.Env(), cpu::reduce_max_backward(x, axes, gy));
}

// sumSquares(x) -> sum of x^2 (a JS number, float64 accumulation)
Napi::Value sum_squares(const Napi::CallbackInfo& info) {
  Args a(info, "sumSquares");
  const Tensor& x = float_cpu(a, 0, "x");
  return Napi::Number::New(info.Env(), cpu::sum_squares(x));
}

}  // namespace

VLM_EXPORT("reduce", reduce);
VLM_EXPORT("reduceMaxBackward", reduce_max_backward);
VLM_EXPORT("sumSquares", sum_squares);

}  // namespace vlm::js
