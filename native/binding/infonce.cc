// infonce family: argument checks and conversion for the fused contrastive loss
// (ops/infonce.h). The three entry points take (image, text, param, options) with
// options = { mode, normalize, labelSmoothing, imageIds, queueImage, queueText,
// queueIds, momentumImage, momentumText, alpha, rowOffset, rowCount }; argument
// names in messages are those of the TypeScript objective (options.queue.image, ...).
#include <cmath>
#include <cstdio>
#include "binding/args.h"
#include "binding/registry.h"
#include "binding/tensor_wrap.h"
#include "ops/copy.h"
#include "ops/infonce.h"

namespace vlm::js {
namespace {

constexpr const char* kOp = "infoNCE";

Napi::Value field(const Napi::Object& o, const char* key) { return o.Get(key); }
bool present(const Napi::Value& v) { return !v.IsUndefined() && !v.IsNull(); }

const Tensor* tensor_field(const Napi::Object& o, const char* key, const char* name) {
  Napi::Value v = field(o, key);
  if (!present(v)) return nullptr;
  JsTensor* t = JsTensor::unwrap_or_null(v);
  if (!t) type_error(kOp, name, "a tensor or null", describe(v));
  if (t->disposed()) type_error(kOp, name, "a live tensor", "a disposed tensor");
  return &t->tensor();
}
bool bool_field(const Napi::Object& o, const char* key, const char* name) {
  Napi::Value v = field(o, key);
  if (!v.IsBoolean()) type_error(kOp, name, "a boolean", describe(v));
  return v.As<Napi::Boolean>().Value();
}
double number_field(const Napi::Object& o, const char* key, const char* name, double lo, double hi) {
  Napi::Value v = field(o, key);
  if (!v.IsNumber()) type_error(kOp, name, "a number", describe(v));
  double x = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x) || x < lo || x > hi) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "a finite number in [%g, %g]", lo, hi);
    range_error(kOp, name, buf, describe(v));
  }
  return x;
}
int64_t int_field(const Napi::Object& o, const char* key, const char* name, int64_t lo, int64_t hi) {
  Napi::Value v = field(o, key);
  if (!v.IsNumber()) type_error(kOp, name, "an integer", describe(v));
  double x = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x) || std::floor(x) != x) type_error(kOp, name, "an integer", describe(v));
  if (x < static_cast<double>(lo) || x > static_cast<double>(hi))
    range_error(kOp, name, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", describe(v));
  return static_cast<int64_t>(x);
}

// Float features on the CPU with the reference dtype; a contiguous copy when strided.
Tensor features(const Tensor& t, const char* name, const Tensor& ref) {
  expect_cpu(kOp, name, t);
  expect_float(kOp, name, t);
  expect_same_dtype(kOp, name, t, ref, "image");
  return contiguous(t);
}
Tensor int_ids(const Tensor& t, const char* name, int64_t n) {
  expect_cpu(kOp, name, t);
  expect_dtype(kOp, name, t, DType::I32);
  expect_shape(kOp, name, t, {n});
  return contiguous(t);
}

// Reads (image, text, param, options) at info[0..3] into checked inputs.
InfonceInputs parse(const Args& a) {
  InfonceInputs in;
  const Tensor& image = a.tensor(0, "image");
  expect_cpu(kOp, "image", image);
  expect_float(kOp, "image", image);
  if (image.dim() != 2 && image.dim() != 3)
    range_error(kOp, "image", "a tensor of rank 2 [B, D] or 3 [B, Q, D]", "shape " + shape_str(image.shape));
  expect_nonempty(kOp, "image", image);
  in.B = image.shape[0];
  in.Q = image.dim() == 3 ? image.shape[1] : 1;
  in.D = image.shape[image.dim() - 1];
  in.image = contiguous(image);

  const Tensor& text = a.tensor(1, "text");
  Tensor tc = features(text, "text", image);
  if (text.dim() != 2) range_error(kOp, "text", "a tensor of rank 2 [B, D] (only image may carry query tokens)", "shape " + shape_str(text.shape));
  expect_shape(kOp, "text", text, {in.B, in.D});
  in.text = tc;

  Napi::Value ov = a[3];
  if (!ov.IsObject() || ov.IsArray()) type_error(kOp, "options", "an options object", describe(ov));
  Napi::Object o = ov.As<Napi::Object>();
  Napi::Value mv = field(o, "mode");
  std::string mode = mv.IsString() ? mv.As<Napi::String>().Utf8Value() : "";
  if (mode == "logit_scale") in.mode = InfonceScaleMode::LogitScale;
  else if (mode == "temperature") in.mode = InfonceScaleMode::Temperature;
  else type_error(kOp, "options.mode", "'logit_scale' or 'temperature'", describe(mv));
  const char* pname = in.mode == InfonceScaleMode::LogitScale ? "options.logitScale" : "options.temperature";

  const Tensor& param = a.tensor(2, pname);
  expect_cpu(kOp, pname, param);
  expect_float(kOp, pname, param);
  expect_same_dtype(kOp, pname, param, image, "image");
  if (param.numel() != 1) range_error(kOp, pname, "a tensor with one element", "shape " + shape_str(param.shape));
  const double p = param.dtype == DType::F64 ? *param.data<double>() : static_cast<double>(*param.data<float>());
  if (!std::isfinite(p)) range_error(kOp, pname, "a finite value", "a tensor holding " + std::to_string(p));
  if (in.mode == InfonceScaleMode::Temperature) {
    if (!(p >= 1e-30 && p <= 1e30))
      range_error(kOp, pname, "a positive temperature in [1e-30, 1e30]", "a tensor holding " + std::to_string(p));
  } else if (!(p >= -69 && p <= 69)) {  // exp(p) in about [1e-30, 1e30]
    range_error(kOp, pname, "a log-scale in [-69, 69]", "a tensor holding " + std::to_string(p));
  }
  in.param = p;

  in.normalize = bool_field(o, "normalize", "options.normalize");
  in.smoothing = number_field(o, "labelSmoothing", "options.labelSmoothing", 0, 1);

  if (const Tensor* ids = tensor_field(o, "imageIds", "options.imageIds")) in.ids = int_ids(*ids, "options.imageIds", in.B);

  const Tensor* qi = tensor_field(o, "queueImage", "options.queue.image");
  const Tensor* qt = tensor_field(o, "queueText", "options.queue.text");
  if ((qi == nullptr) != (qt == nullptr))
    type_error(kOp, qi ? "options.queue.text" : "options.queue.image", "a tensor (a queue needs both modalities)", "null");
  if (qi) {
    Tensor qic = features(*qi, "options.queue.image", image);
    if (qi->dim() != image.dim())
      range_error(kOp, "options.queue.image", "a tensor of rank " + std::to_string(image.dim()) + " (as image)",
                  "shape " + shape_str(qi->shape));
    in.K = qi->shape[0];
    Shape want = image.dim() == 3 ? Shape{in.K, in.Q, in.D} : Shape{in.K, in.D};
    expect_shape(kOp, "options.queue.image", *qi, want);
    Tensor qtc = features(*qt, "options.queue.text", image);
    expect_shape(kOp, "options.queue.text", *qt, {in.K, in.D});
    in.queue_image = qic;
    in.queue_text = qtc;
    if (const Tensor* qids = tensor_field(o, "queueIds", "options.queue.ids")) {
      if (!in.ids) type_error(kOp, "options.imageIds", "an int32 tensor (queue ids need batch ids)", "null");
      in.queue_ids = int_ids(*qids, "options.queue.ids", in.K);
    }
  } else if (tensor_field(o, "queueIds", "options.queue.ids")) {
    type_error(kOp, "options.queue.image", "a tensor (queue ids need a queue)", "null");
  }

  const Tensor* mi = tensor_field(o, "momentumImage", "options.momentum.image");
  const Tensor* mt = tensor_field(o, "momentumText", "options.momentum.text");
  if ((mi == nullptr) != (mt == nullptr))
    type_error(kOp, mi ? "options.momentum.text" : "options.momentum.image", "a tensor (momentum needs both modalities)", "null");
  if (mi) {
    Tensor mic = features(*mi, "options.momentum.image", image);
    expect_shape(kOp, "options.momentum.image", *mi, image.shape);
    Tensor mtc = features(*mt, "options.momentum.text", image);
    expect_shape(kOp, "options.momentum.text", *mt, text.shape);
    in.mom_image = mic;
    in.mom_text = mtc;
    in.alpha = number_field(o, "alpha", "options.momentum.alpha", 0, 1);
  }

  in.row_offset = int_field(o, "rowOffset", "options.localRows.offset", 0, in.B - 1);
  in.row_count = int_field(o, "rowCount", "options.localRows.count", 1, in.B - in.row_offset);
  return in;
}

// infonceForward(image, text, param, options) -> { loss, accI2T, accT2I, saved }
Napi::Value forward(const Napi::CallbackInfo& info) {
  Args a(info, kOp);
  InfonceInputs in = parse(a);
  InfonceForwardResult r = cpu::infonce_forward(in);
  Napi::Env env = info.Env();
  Tensor loss = Tensor::empty({}, in.image.dtype, Device::CPU);
  if (loss.dtype == DType::F64) *loss.data<double>() = r.loss;
  else *loss.data<float>() = static_cast<float>(r.loss);
  Napi::Object out = Napi::Object::New(env);
  out.Set("loss", wrap(env, std::move(loss)));
  out.Set("accI2T", r.acc_i2t);
  out.Set("accT2I", r.acc_t2i);
  out.Set("saved", wrap(env, std::move(r.saved)));
  return out;
}

// infonceBackward(image, text, param, options, saved, gradLoss, needImage, needText, needParam)
//   -> { dImage | null, dText | null, dParam }
Napi::Value backward(const Napi::CallbackInfo& info) {
  Args a(info, kOp);
  InfonceInputs in = parse(a);
  const Tensor& saved = a.tensor(4, "saved");
  expect_cpu(kOp, "saved", saved);
  expect_dtype(kOp, "saved", saved, DType::F64);
  expect_shape(kOp, "saved", saved, {2, 3, in.row_count});
  Tensor sc = contiguous(saved);
  const double g = a.number(5, "gradLoss");
  const bool ni = a.boolean(6, "needImage"), nt = a.boolean(7, "needText"), np = a.boolean(8, "needParam");
  InfonceGradients r = cpu::infonce_backward(in, sc, g, ni, nt, np);
  Napi::Env env = info.Env();
  const Tensor& param = a.tensor(2, "param");
  Tensor dp = Tensor::empty(param.shape, param.dtype, Device::CPU);
  if (dp.dtype == DType::F64) *dp.data<double>() = r.d_param;
  else *dp.data<float>() = static_cast<float>(r.d_param);
  Napi::Object out = Napi::Object::New(env);
  out.Set("dImage", r.d_image ? wrap(env, std::move(*r.d_image)) : env.Null());
  out.Set("dText", r.d_text ? wrap(env, std::move(*r.d_text)) : env.Null());
  out.Set("dParam", wrap(env, std::move(dp)));
  return out;
}

// infonceReference(image, text, param, options) -> { loss, accI2T, accT2I, dImage, dText, dParam }
Napi::Value reference(const Napi::CallbackInfo& info) {
  Args a(info, kOp);
  InfonceInputs in = parse(a);
  InfonceReferenceResult r = cpu::infonce_reference(in);
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("loss", r.loss);
  out.Set("accI2T", r.acc_i2t);
  out.Set("accT2I", r.acc_t2i);
  out.Set("dImage", wrap(env, std::move(r.d_image)));
  out.Set("dText", wrap(env, std::move(r.d_text)));
  out.Set("dParam", r.d_param);
  return out;
}

// infonceExpError(lo, hi, count) -> max relative error of the kernel's float32 exp
Napi::Value exp_error(const Napi::CallbackInfo& info) {
  Args a(info, "infonceExpError");
  double lo = a.finite(0, "lo"), hi = a.finite(1, "hi");
  int64_t n = a.integer(2, "count", 1, int64_t{1} << 26);
  return Napi::Number::New(info.Env(), cpu::infonce_exp_max_rel_error(lo, hi, n));
}

// infonceTiles(rows?, cols?) -> [rows, cols]: sets the tile size when given, returns it.
Napi::Value tiles(const Napi::CallbackInfo& info) {
  Args a(info, "infonceTiles");
  if (a.has(0) || a.has(1)) {
    int64_t r = a.integer(0, "rows", 1, 1 << 16), c = a.integer(1, "cols", 1, 1 << 16);
    cpu::infonce_set_tiles(r, c);
  }
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(uint32_t{0}, Napi::Number::New(info.Env(), static_cast<double>(cpu::infonce_row_tile())));
  out.Set(uint32_t{1}, Napi::Number::New(info.Env(), static_cast<double>(cpu::infonce_col_tile())));
  return out;
}

}  // namespace

VLM_EXPORT("infonceTiles", tiles);
VLM_EXPORT("infonceForward", forward);
VLM_EXPORT("infonceBackward", backward);
VLM_EXPORT("infonceReference", reference);
VLM_EXPORT("infonceExpError", exp_error);

}  // namespace vlm::js
