// elementwise family, binding: argument checks and conversion for unary, unaryBackward,
// binary, affine, powScalar(Backward), axpy and scaleInPlace.
#include <cmath>
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/elementwise.h"

namespace vlm::js {
namespace {

const char* kUnaryNames = "one of 'neg', 'exp', 'log', 'sqrt', 'tanh', 'sigmoid', 'relu', 'gelu', 'gelu_tanh', 'quick_gelu', 'silu', 'abs'";
const char* kBinaryNames = "one of 'add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum'";

UnaryOp unary_op(const Args& a, size_t i) {
  Napi::Value v = a[i];
  UnaryOp op;
  if (!v.IsString() || !parse_unary_op(v.As<Napi::String>().Utf8Value(), op)) type_error(a.op(), "op", kUnaryNames, describe(v));
  return op;
}

BinaryOp binary_op(const Args& a, size_t i) {
  Napi::Value v = a[i];
  BinaryOp op;
  if (!v.IsString() || !parse_binary_op(v.As<Napi::String>().Utf8Value(), op)) type_error(a.op(), "op", kBinaryNames, describe(v));
  return op;
}

// A live float32/float64 tensor on the CPU.
const Tensor& float_cpu(const Args& a, size_t i, const char* name) {
  const Tensor& t = a.tensor(i, name);
  expect_float(a.op(), name, t);
  expect_cpu(a.op(), name, t);
  return t;
}

// A tensor like `ref` (same dtype, device and shape).
const Tensor& like(const Args& a, size_t i, const char* name, const Tensor& ref, const char* ref_name) {
  const Tensor& t = a.tensor(i, name);
  expect_same_device(a.op(), name, t, ref, ref_name);
  expect_same_dtype(a.op(), name, t, ref, ref_name);
  expect_shape(a.op(), name, t, ref.shape);
  return t;
}

// unary(op, x) -> op(x)
Napi::Value unary(const Napi::CallbackInfo& info) {
  Args a(info, "unary");
  UnaryOp op = unary_op(a, 0);
  const Tensor& x = float_cpu(a, 1, "x");
  return wrap(info.Env(), cpu::unary(op, x));
}

// unaryBackward(op, x, y, gy) -> gy * op'(x)
Napi::Value unary_backward(const Napi::CallbackInfo& info) {
  Args a(info, "unaryBackward");
  UnaryOp op = unary_op(a, 0);
  const Tensor& x = float_cpu(a, 1, "x");
  const Tensor& y = like(a, 2, "y", x, "x");
  const Tensor& gy = like(a, 3, "gy", x, "x");
  return wrap(info.Env(), cpu::unary_backward(op, x, y, gy));
}

// binary(op, a, b) -> a op b, broadcast
Napi::Value binary(const Napi::CallbackInfo& info) {
  Args a(info, "binary");
  BinaryOp op = binary_op(a, 0);
  const Tensor& x = float_cpu(a, 1, "a");
  const Tensor& y = a.tensor(2, "b");
  expect_same_device("binary", "b", y, x, "a");
  expect_same_dtype("binary", "b", y, x, "a");
  Shape out;
  if (!broadcast_shapes(x.shape, y.shape, out))
    range_error("binary", "b", "a shape that broadcasts with " + shape_str(x.shape) + " (the shape of a)",
                "shape " + shape_str(y.shape));
  double total = 1;
  for (int64_t d : out) total *= static_cast<double>(d);
  if (total > static_cast<double>(kMaxNumel))
    range_error("binary", "b", "a broadcast result of at most 2^40 elements", "shape " + shape_str(y.shape) +
                " against " + shape_str(x.shape));
  return wrap(info.Env(), cpu::binary(op, x, y));
}

// affine(x, alpha, beta) -> alpha * x + beta
Napi::Value affine(const Napi::CallbackInfo& info) {
  Args a(info, "affine");
  const Tensor& x = float_cpu(a, 0, "x");
  double alpha = a.finite(1, "alpha"), beta = a.finite(2, "beta");
  return wrap(info.Env(), cpu::affine(x, alpha, beta));
}

// powScalar(x, p) -> x^p
Napi::Value pow_scalar(const Napi::CallbackInfo& info) {
  Args a(info, "powScalar");
  const Tensor& x = float_cpu(a, 0, "x");
  double p = a.finite(1, "p");
  return wrap(info.Env(), cpu::pow_scalar(x, p));
}

// powScalarBackward(x, p, gy) -> gy * p * x^(p-1)
Napi::Value pow_scalar_backward(const Napi::CallbackInfo& info) {
  Args a(info, "powScalarBackward");
  const Tensor& x = float_cpu(a, 0, "x");
  double p = a.finite(1, "p");
  const Tensor& gy = like(a, 2, "gy", x, "x");
  return wrap(info.Env(), cpu::pow_scalar_backward(x, p, gy));
}

// axpy(dst, src, alpha): dst += alpha * src in place
Napi::Value axpy(const Napi::CallbackInfo& info) {
  Args a(info, "axpy");
  const Tensor& dst = float_cpu(a, 0, "dst");
  expect_contiguous("axpy", "dst", dst);
  const Tensor& src = like(a, 1, "src", dst, "dst");
  double alpha = a.finite(2, "alpha");
  Tensor d = dst;
  cpu::axpy(d, src, alpha);
  return info.Env().Undefined();
}

// scaleInPlace(x, s): x *= s in place
Napi::Value scale_in_place(const Napi::CallbackInfo& info) {
  Args a(info, "scaleInPlace");
  const Tensor& x = float_cpu(a, 0, "x");
  expect_contiguous("scaleInPlace", "x", x);
  double s = a.finite(1, "s");
  Tensor t = x;
  cpu::scale_inplace(t, s);
  return info.Env().Undefined();
}

}  // namespace

VLM_EXPORT("unary", unary);
VLM_EXPORT("unaryBackward", unary_backward);
VLM_EXPORT("binary", binary);
VLM_EXPORT("affine", affine);
VLM_EXPORT("powScalar", pow_scalar);
VLM_EXPORT("powScalarBackward", pow_scalar_backward);
VLM_EXPORT("axpy", axpy);
VLM_EXPORT("scaleInPlace", scale_in_place);

}  // namespace vlm::js
