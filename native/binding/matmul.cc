// matmul family, binding: checks and converts the arguments of matmul, linear and
// linearBackward, then calls the CPU kernels (native/cpu/matmul.cc).
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/matmul.h"

namespace vlm::js {
namespace {

// Checks dtype (float, same as ref) and device (cpu, same as ref) of an operand.
void expect_float_cpu(const char* op, const char* arg, const Tensor& t, const Tensor* ref, const char* ref_arg) {
  if (ref) expect_same_device(op, arg, t, *ref, ref_arg);
  expect_cpu(op, arg, t);
  if (ref) expect_same_dtype(op, arg, t, *ref, ref_arg);
  else expect_float(op, arg, t);
}

// Product of sizes, refusing results beyond the boundary's element limit.
void expect_output_size(const char* op, const Shape& s) {
  double n = 1;
  for (int64_t d : s) n *= static_cast<double>(d);
  if (n > static_cast<double>(kMaxNumel))
    range_error(op, "inputs", "a result of at most 2^40 elements", "shapes giving a result of shape " + shape_str(s));
}

// matmul(a, b, transA, transB) -> [batch..., M, N]
// a [..., M, K] ([..., K, M] when transA), b [..., K, N] ([..., N, K] when transB)
Napi::Value matmul(const Napi::CallbackInfo& info) {
  Args a(info, "matmul");
  const Tensor& x = a.tensor(0, "a");
  const Tensor& y = a.tensor(1, "b");
  const bool ta = a.boolean(2, "transA"), tb = a.boolean(3, "transB");
  expect_float_cpu("matmul", "a", x, nullptr, nullptr);
  expect_float_cpu("matmul", "b", y, &x, "a");
  expect_min_rank("matmul", "a", x, 2);
  expect_min_rank("matmul", "b", y, 2);
  const int64_t ra = x.dim(), rb = y.dim();
  const int64_t M = ta ? x.shape[ra - 1] : x.shape[ra - 2];
  const int64_t K = ta ? x.shape[ra - 2] : x.shape[ra - 1];
  const int64_t Kb = tb ? y.shape[rb - 1] : y.shape[rb - 2];
  const int64_t N = tb ? y.shape[rb - 2] : y.shape[rb - 1];
  if (K != Kb) {
    std::string want = tb ? "[..., N, " + std::to_string(K) + "]" : "[..., " + std::to_string(K) + ", N]";
    range_error("matmul", "b", "a shape " + want + " (K = " + std::to_string(K) + " from a of shape " + shape_str(x.shape) +
                                   (ta ? ", transposed" : "") + ")",
                "shape " + shape_str(y.shape) + (tb ? " (transposed)" : ""));
  }
  const int64_t na = ra - 2, nb = rb - 2, nd = std::max(na, nb);
  Shape out(nd, 1);
  for (int64_t i = 0; i < nd; ++i) {
    int64_t da = i - (nd - na) >= 0 ? x.shape[i - (nd - na)] : 1;
    int64_t db = i - (nd - nb) >= 0 ? y.shape[i - (nd - nb)] : 1;
    if (da != db && da != 1 && db != 1)
      range_error("matmul", "b", "batch dims broadcastable with a's " + shape_str(Shape(x.shape.begin(), x.shape.end() - 2)),
                  "shape " + shape_str(y.shape));
    out[i] = da == 1 ? db : da;
  }
  out.push_back(M);
  out.push_back(N);
  expect_output_size("matmul", out);
  return wrap(info.Env(), cpu::matmul(x, y, ta, tb));
}

// Checks x [..., I] and weight [O, I]; returns nothing, throws on mismatch.
void check_linear(const char* op, const Tensor& x, const Tensor& w) {
  expect_float_cpu(op, "x", x, nullptr, nullptr);
  expect_float_cpu(op, "weight", w, &x, "x");
  expect_min_rank(op, "x", x, 1);
  expect_rank(op, "weight", w, 2);
  if (w.shape[1] != x.shape.back())
    range_error(op, "weight", "a shape [out, " + std::to_string(x.shape.back()) + "] (in = the last dim of x of shape " +
                                  shape_str(x.shape) + ")",
                "shape " + shape_str(w.shape));
}

// x, weight and bias (or null) of a forward linear; returns the output's shape.
Shape check_linear_forward(const char* op, const Tensor& x, const Tensor& w, const Tensor* b) {
  check_linear(op, x, w);
  if (b) {
    expect_float_cpu(op, "bias", *b, &x, "x");
    expect_shape(op, "bias", *b, {w.shape[0]});
  }
  Shape ys = x.shape;
  ys.back() = w.shape[0];
  expect_output_size(op, ys);
  return ys;
}

// linear(x, weight, bias | null, residual?) -> y [..., O] = residual + x [..., I] W^T + bias
Napi::Value linear(const Napi::CallbackInfo& info) {
  Args a(info, "linear");
  const Tensor& x = a.tensor(0, "x");
  const Tensor& w = a.tensor(1, "weight");
  const Tensor* b = a.optional_tensor(2, "bias");
  const Shape ys = check_linear_forward("linear", x, w, b);
  // residual: added to the output (y = residual + x W^T + b), y's shape
  const Tensor* res = a.optional_tensor(3, "residual");
  if (res) {
    expect_float_cpu("linear", "residual", *res, &x, "x");
    expect_shape("linear", "residual", *res, ys);
  }
  return wrap(info.Env(), cpu::linear(x, w, b, res));
}

// linearActivation(x, weight, bias | null, act) -> { pre: x W^T + bias, out: act(pre) }:
// an MLP's first linear with its activation applied per row chunk where it can be
// (ops/matmul.h); act is a unary op name.
Napi::Value linear_activation(const Napi::CallbackInfo& info) {
  Args a(info, "linearActivation");
  const Tensor& x = a.tensor(0, "x");
  const Tensor& w = a.tensor(1, "weight");
  const Tensor* b = a.optional_tensor(2, "bias");
  check_linear_forward("linearActivation", x, w, b);
  const Napi::Value av = info.Length() > 3 ? info[3] : info.Env().Undefined();
  UnaryOp act;
  if (!av.IsString() || !parse_unary_op(av.As<Napi::String>().Utf8Value(), act))
    type_error("linearActivation", "act", "a unary op name", describe(av));
  cpu::LinearActivation r = cpu::linear_activation(x, w, b, act);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("pre", wrap(env, std::move(r.pre)));
  o.Set("out", wrap(env, std::move(r.out)));
  return o;
}

// linearBackward(x, weight, gy, needX, needWeight, needBias) -> { dx, dweight, dbias } (null where not asked)
Napi::Value linear_backward(const Napi::CallbackInfo& info) {
  Args a(info, "linearBackward");
  const Tensor& x = a.tensor(0, "x");
  const Tensor& w = a.tensor(1, "weight");
  const Tensor& gy = a.tensor(2, "gy");
  const bool nx = a.boolean(3, "needX"), nw = a.boolean(4, "needWeight"), nbias = a.boolean(5, "needBias");
  check_linear("linearBackward", x, w);
  expect_float_cpu("linearBackward", "gy", gy, &x, "x");
  Shape ys = x.shape;
  ys.back() = w.shape[0];
  expect_shape("linearBackward", "gy", gy, ys);
  // dxInto: a gradient to add dx into, in place (contiguous, x's shape and dtype); dx is
  // then returned as null.
  const Tensor* into = a.optional_tensor(6, "dxInto");
  if (into) {
    expect_float_cpu("linearBackward", "dxInto", *into, &x, "x");
    expect_shape("linearBackward", "dxInto", *into, x.shape);
    if (!into->is_contiguous()) range_error("linearBackward", "dxInto", "a contiguous tensor", "a strided view");
  }
  Tensor into_t = into ? *into : Tensor();
  cpu::LinearGrads g = cpu::linear_backward(x, w, gy, nx, nw, nbias, into && nx ? &into_t : nullptr);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("dx", nx && !into ? wrap(env, std::move(g.dx)) : env.Null());
  o.Set("dweight", nw ? wrap(env, std::move(g.dweight)) : env.Null());
  o.Set("dbias", nbias ? wrap(env, std::move(g.dbias)) : env.Null());
  return o;
}

}  // namespace

VLM_EXPORT("matmul", matmul);
VLM_EXPORT("linear", linear);
VLM_EXPORT("linearBackward", linear_backward);
VLM_EXPORT("linearActivation", linear_activation);

}  // namespace vlm::js
