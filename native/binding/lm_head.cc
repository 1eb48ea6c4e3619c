// lm_head binding: checks hidden [N, H], weight [V, H], bias [V], int32 targets [N]
// (every id in [0, V) or the ignore index, else a RangeError naming the position),
// the scalars and chunk sizes, allocates the outputs and runs the fused kernels, the
// naive materialised path or the float64 reference.
#include <climits>
#include <cmath>
#include <string>
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/lm_head.h"

namespace vlm::js {
namespace {

struct Inputs {
  const Tensor* hidden;
  const Tensor* weight;
  const Tensor* bias;  // may be null
  const Tensor* targets;
  int64_t N, H, V;
};

// Arguments 0..3: hidden, weight, bias (null allowed), targets.
Inputs read_inputs(const Args& a) {
  const char* op = a.op();
  Inputs in;
  in.hidden = &a.tensor(0, "hidden");
  in.weight = &a.tensor(1, "weight");
  in.bias = a.optional_tensor(2, "bias");
  in.targets = &a.tensor(3, "targets");
  const Tensor& h = *in.hidden;
  const Tensor& w = *in.weight;
  expect_float(op, "hidden", h);
  expect_cpu(op, "hidden", h);
  expect_rank(op, "hidden", h, 2);
  in.N = h.shape[0];
  in.H = h.shape[1];
  if (in.H == 0) range_error(op, "hidden", "a hidden size of at least 1", "shape " + shape_str(h.shape));
  expect_same_dtype(op, "weight", w, h, "hidden");
  expect_cpu(op, "weight", w);
  expect_rank(op, "weight", w, 2);
  in.V = w.shape[0];
  if (in.V == 0 || in.V > INT32_MAX || w.shape[1] != in.H)
    range_error(op, "weight", "shape [V, " + std::to_string(in.H) + "] with 1 <= V <= 2^31 - 1 (hidden is " +
                shape_str(h.shape) + ")", "shape " + shape_str(w.shape));
  expect_contiguous(op, "weight", w);
  if (in.bias) {
    expect_same_dtype(op, "bias", *in.bias, h, "hidden");
    expect_cpu(op, "bias", *in.bias);
    expect_shape(op, "bias", *in.bias, {in.V});
  }
  const Tensor& t = *in.targets;
  expect_dtype(op, "targets", t, DType::I32);
  expect_cpu(op, "targets", t);
  expect_shape(op, "targets", t, {in.N});
  return in;
}

int64_t read_ignore(const Args& a, size_t i) { return a.integer(i, "ignoreIndex", INT32_MIN, INT32_MAX); }

double read_smoothing(const Args& a, size_t i) {
  double e = a.number(i, "labelSmoothing");
  if (!(e >= 0 && e < 1)) range_error(a.op(), "labelSmoothing", "a number in [0, 1)", describe(a[i]));
  return e;
}

// Every target is a vocabulary id or the ignore index; the kernels index with them.
void check_targets(const Args& a, const Inputs& in, int64_t ignore) {
  const int32_t* t = in.targets->data<int32_t>();
  const int64_t st = in.targets->strides[0];
  for (int64_t i = 0; i < in.N; ++i) {
    const int64_t v = t[i * st];
    if (v != ignore && (v < 0 || v >= in.V))
      range_error(a.op(), "targets", "token ids in [0, " + std::to_string(in.V) + ") or the ignore index " +
                  std::to_string(ignore), std::to_string(v) + " at position " + std::to_string(i));
  }
}

// 'mean' | 'sum' (| 'none' when allowed)
std::string read_reduction(const Args& a, size_t i, bool allow_none) {
  Napi::Value v = a[i];
  std::string r = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (r != "mean" && r != "sum" && !(allow_none && r == "none"))
    type_error(a.op(), "reduction", allow_none ? "'mean', 'sum' or 'none'" : "'mean' or 'sum'", describe(v));
  return r;
}

// [needHidden, needWeight, needBias]
void read_needs(const Args& a, size_t i, bool needs[3]) {
  Napi::Value v = a[i];
  const char* want = "an array of 3 booleans [hidden, weight, bias]";
  if (!v.IsArray() || v.As<Napi::Array>().Length() != 3) type_error(a.op(), "needs", want, describe(v));
  Napi::Array arr = v.As<Napi::Array>();
  for (uint32_t k = 0; k < 3; ++k) {
    Napi::Value e = arr.Get(k);
    if (!e.IsBoolean()) type_error(a.op(), "needs", want, "an array holding " + describe(e));
    needs[k] = e.As<Napi::Boolean>().Value();
  }
}

// A block of rowChunk x V logits must stay a tensor the core accepts (2^40 elements).
LmHeadConfig read_chunks(const Args& a, size_t i, const Inputs& in, LmHeadConfig c) {
  c.row_chunk = a.integer(i, "rowChunk", 0, int64_t{1} << 30);
  c.vocab_chunk = a.integer(i + 1, "vocabChunk", 0, int64_t{1} << 30);
  if (static_cast<double>(c.row_chunk) * static_cast<double>(in.V) > static_cast<double>(kMaxNumel))
    range_error(a.op(), "rowChunk", "rowChunk x V <= 2^40 (V = " + std::to_string(in.V) + ")", describe(a[i]));
  return c;
}

// The materialising paths hold N x V logits.
void check_materialised(const Args& a, const Inputs& in) {
  if (static_cast<double>(in.N) * static_cast<double>(in.V) > static_cast<double>(kMaxNumel))
    range_error(a.op(), "hidden", "N x V <= 2^40 logits (V = " + std::to_string(in.V) + ")", "shape " + shape_str(in.hidden->shape));
}

Napi::Value opt(Napi::Env env, Tensor* t) { return t ? wrap(env, std::move(*t)) : env.Null(); }

// The reduced loss as a 0-d tensor of dtype d: sum, or mean over valid rows (0 when none).
Tensor loss_scalar(const LmHeadStats& st, bool mean, DType d) {
  Tensor l = Tensor::empty({}, d, Device::CPU);
  double v = mean ? (st.valid ? st.loss_sum / static_cast<double>(st.valid) : 0.0) : st.loss_sum;
  if (d == DType::F64) *l.data<double>() = v;
  else *l.data<float>() = static_cast<float>(v);
  return l;
}

// Gradient outputs for the wanted inputs, in dtype d.
struct GradOut {
  Tensor dh, dw, db;
  LmHeadGrads g;
  GradOut(const Inputs& in, const bool needs[3], DType d) {
    if (needs[0]) { dh = Tensor::empty({in.N, in.H}, d, Device::CPU); g.d_hidden = &dh; }
    if (needs[1]) { dw = Tensor::empty({in.V, in.H}, d, Device::CPU); g.d_weight = &dw; }
    if (needs[2] && in.bias) { db = Tensor::empty({in.V}, d, Device::CPU); g.d_bias = &db; }
  }
  void put(Napi::Env env, Napi::Object& o) {
    o.Set("dHidden", opt(env, g.d_hidden));
    o.Set("dWeight", opt(env, g.d_weight));
    o.Set("dBias", opt(env, g.d_bias));
  }
};

void put_stats(Napi::Object& o, const LmHeadStats& st) {
  o.Set("lossSum", st.loss_sum);
  o.Set("valid", static_cast<double>(st.valid));
  o.Set("correct", static_cast<double>(st.correct));
}

// lmHeadForward(hidden, weight, bias, targets, ignoreIndex, labelSmoothing, reduction, rowChunk, vocabChunk)
//   -> { loss, lse, lossSum, valid, correct }; loss is 0-d, or [N] per token for 'none'.
Napi::Value lm_head_forward(const Napi::CallbackInfo& info) {
  Args a(info, "lmHeadForward");
  Inputs in = read_inputs(a);
  LmHeadConfig c;
  c.ignore_index = read_ignore(a, 4);
  c.label_smoothing = read_smoothing(a, 5);
  std::string red = read_reduction(a, 6, true);
  c = read_chunks(a, 7, in, c);
  check_targets(a, in, c.ignore_index);
  DType d = in.hidden->dtype;
  Tensor lse = Tensor::empty({in.N}, d, Device::CPU);
  Tensor rows;
  if (red == "none") rows = Tensor::empty({in.N}, d, Device::CPU);
  LmHeadStats st = cpu::lm_head_forward(*in.hidden, *in.weight, in.bias, *in.targets, c, lse,
                                        red == "none" ? &rows : nullptr);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", wrap(env, red == "none" ? std::move(rows) : loss_scalar(st, red == "mean", d)));
  o.Set("lse", wrap(env, std::move(lse)));
  put_stats(o, st);
  return o;
}

// lmHeadForwardBackward(hidden, weight, bias, targets, ignoreIndex, labelSmoothing, reduction, needs, rowChunk,
//   vocabChunk) -> { loss, lse, lossSum, valid, correct, dHidden, dWeight, dBias }: gradients of the reduced loss.
Napi::Value lm_head_forward_backward(const Napi::CallbackInfo& info) {
  Args a(info, "lmHeadForwardBackward");
  Inputs in = read_inputs(a);
  LmHeadConfig c;
  c.ignore_index = read_ignore(a, 4);
  c.label_smoothing = read_smoothing(a, 5);
  c.mean = read_reduction(a, 6, false) == "mean";
  bool needs[3];
  read_needs(a, 7, needs);
  c = read_chunks(a, 8, in, c);
  check_targets(a, in, c.ignore_index);
  DType d = in.hidden->dtype;
  Tensor lse = Tensor::empty({in.N}, d, Device::CPU);
  GradOut go(in, needs, d);
  LmHeadStats st = cpu::lm_head_forward_backward(*in.hidden, *in.weight, in.bias, *in.targets, c, 1.0, lse, nullptr, go.g);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", wrap(env, loss_scalar(st, c.mean, d)));
  o.Set("lse", wrap(env, std::move(lse)));
  put_stats(o, st);
  go.put(env, o);
  return o;
}

// lmHeadBackward(hidden, weight, bias, targets, lse, rowGrad, gradScale, ignoreIndex, labelSmoothing, reduction,
//   needs, rowChunk, vocabChunk) -> { dHidden, dWeight, dBias }
Napi::Value lm_head_backward(const Napi::CallbackInfo& info) {
  Args a(info, "lmHeadBackward");
  Inputs in = read_inputs(a);
  const Tensor& lse = a.tensor(4, "lse");
  expect_same_dtype(a.op(), "lse", lse, *in.hidden, "hidden");
  expect_cpu(a.op(), "lse", lse);
  expect_shape(a.op(), "lse", lse, {in.N});
  expect_contiguous(a.op(), "lse", lse);
  const Tensor* rg = a.optional_tensor(5, "rowGrad");
  if (rg) {
    expect_same_dtype(a.op(), "rowGrad", *rg, *in.hidden, "hidden");
    expect_cpu(a.op(), "rowGrad", *rg);
    expect_shape(a.op(), "rowGrad", *rg, {in.N});
  }
  double scale = a.finite(6, "gradScale");
  LmHeadConfig c;
  c.ignore_index = read_ignore(a, 7);
  c.label_smoothing = read_smoothing(a, 8);
  c.mean = read_reduction(a, 9, true) == "mean";
  bool needs[3];
  read_needs(a, 10, needs);
  c = read_chunks(a, 11, in, c);
  check_targets(a, in, c.ignore_index);
  GradOut go(in, needs, in.hidden->dtype);
  cpu::lm_head_backward(*in.hidden, *in.weight, in.bias, *in.targets, c, lse, rg, scale, go.g);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  go.put(env, o);
  return o;
}

// lmHeadNaive(hidden, weight, bias, targets, ignoreIndex, labelSmoothing, reduction, needs)
//   -> { loss, lossSum, valid, correct, dHidden, dWeight, dBias }, materialising N x V logits.
Napi::Value lm_head_naive(const Napi::CallbackInfo& info) {
  Args a(info, "lmHeadNaive");
  Inputs in = read_inputs(a);
  LmHeadConfig c;
  c.ignore_index = read_ignore(a, 4);
  c.label_smoothing = read_smoothing(a, 5);
  c.mean = read_reduction(a, 6, false) == "mean";
  bool needs[3];
  read_needs(a, 7, needs);
  check_materialised(a, in);
  check_targets(a, in, c.ignore_index);
  DType d = in.hidden->dtype;
  GradOut go(in, needs, d);
  LmHeadStats st = cpu::lm_head_naive(*in.hidden, *in.weight, in.bias, *in.targets, c, nullptr, go.g);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", wrap(env, loss_scalar(st, c.mean, d)));
  put_stats(o, st);
  go.put(env, o);
  return o;
}

// lmHeadReference(hidden, weight, bias, targets, ignoreIndex, labelSmoothing, reduction, needs)
//   -> { loss, lossSum, valid, correct, dHidden, dWeight, dBias }, all float64; for 'none'
//   loss is [N] and the gradients are those of the sum.
Napi::Value lm_head_reference(const Napi::CallbackInfo& info) {
  Args a(info, "lmHeadReference");
  Inputs in = read_inputs(a);
  LmHeadConfig c;
  c.ignore_index = read_ignore(a, 4);
  c.label_smoothing = read_smoothing(a, 5);
  std::string red = read_reduction(a, 6, true);
  c.mean = red == "mean";
  bool needs[3];
  read_needs(a, 7, needs);
  check_materialised(a, in);
  check_targets(a, in, c.ignore_index);
  GradOut go(in, needs, DType::F64);
  Tensor rows = Tensor::empty({in.N}, DType::F64, Device::CPU);
  LmHeadStats st = cpu::lm_head_reference(*in.hidden, *in.weight, in.bias, *in.targets, c, &rows, go.g);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", wrap(env, red == "none" ? std::move(rows) : loss_scalar(st, c.mean, DType::F64)));
  put_stats(o, st);
  go.put(env, o);
  return o;
}

}  // namespace

VLM_EXPORT("lmHeadForward", lm_head_forward);
VLM_EXPORT("lmHeadForwardBackward", lm_head_forward_backward);
VLM_EXPORT("lmHeadBackward", lm_head_backward);
VLM_EXPORT("lmHeadNaive", lm_head_naive);
VLM_EXPORT("lmHeadReference", lm_head_reference);

}  // namespace vlm::js
