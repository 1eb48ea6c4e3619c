// attention family, binding: attentionForward(q, k, v, options) -> { out, lse },
// attentionBackward(q, k, v, out, lse, gradOut, options, needs) -> { dq, dk, dv },
// attentionReference(q, k, v, options, gradOut) -> float64 { out, lse, dq, dk, dv } and
// attentionTiles(rows?, cols?), attentionTileKernel(name?). options = { scale, causal, causalOffset, mask, bias,
// keyPadding, dropout, seed, offset } (ops/attention.h). q, k, v, out and gradOut may be
// strided views; one whose last stride is not 1 is copied contiguous first. mask and bias
// are read through their (broadcast) strides; keyPadding is checked value by value.
#include <cmath>
#include <string>
#include "binding/args.h"
#include "binding/registry.h"
#include "binding/tensor_wrap.h"
#include "ops/attention.h"
#include "ops/copy.h"

namespace vlm::js {
namespace {

constexpr int64_t kMaxSafe = 9007199254740991LL;  // 2^53 - 1

bool present(const Napi::Value& v) { return !v.IsUndefined() && !v.IsNull(); }

// A view with a unit last stride: t itself, or a contiguous copy.
Tensor unit_last(const Tensor& t) {
  if (t.shape[3] <= 1 || t.strides[3] == 1) return t;
  return contiguous(t);
}

// Parsed inputs; the Tensors keep any copies alive for the kernels.
// Not copyable: o points into the struct.
struct Parsed {
  Tensor q, k, v, mask, bias, lens;
  AttentionOptions o;
  int64_t B = 0, H = 0, Lq = 0, Lk = 0, Dh = 0, Dv = 0;
  Parsed() = default;
  Parsed(const Parsed&) = delete;
  Parsed& operator=(const Parsed&) = delete;
};

class OptionReader {
 public:
  OptionReader(const char* op, const Napi::Value& v) : op_(op) {
    if (!v.IsObject() || v.IsArray() || v.IsFunction()) type_error(op, "options", "an options object", describe(v));
    o_ = v.As<Napi::Object>();
  }
  const Tensor* tensor(const char* key, const std::string& name) const {
    Napi::Value v = o_.Get(key);
    if (!present(v)) return nullptr;
    JsTensor* t = JsTensor::unwrap_or_null(v);
    if (!t) type_error(op_, name.c_str(), "a tensor or null", describe(v));
    if (t->disposed()) type_error(op_, name.c_str(), "a live tensor", "a disposed tensor");
    return &t->tensor();
  }
  bool boolean(const char* key, const std::string& name) const {
    Napi::Value v = o_.Get(key);
    if (!v.IsBoolean()) type_error(op_, name.c_str(), "a boolean", describe(v));
    return v.As<Napi::Boolean>().Value();
  }
  double number(const char* key, const std::string& name) const {
    Napi::Value v = o_.Get(key);
    if (!v.IsNumber()) type_error(op_, name.c_str(), "a number", describe(v));
    return v.As<Napi::Number>().DoubleValue();
  }
  int64_t integer(const char* key, const std::string& name, int64_t lo, int64_t hi) const {
    Napi::Value v = o_.Get(key);
    double x = number(key, name);
    if (!std::isfinite(x) || std::floor(x) != x) type_error(op_, name.c_str(), "an integer", describe(v));
    if (x < static_cast<double>(lo) || x > static_cast<double>(hi))
      range_error(op_, name.c_str(), "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
                  describe(v));
    return static_cast<int64_t>(x);
  }
  Napi::Value raw(const char* key) const { return o_.Get(key); }

 private:
  const char* op_;
  Napi::Object o_;
};

// "[B, H, Lq, Lk] with each dim 1 or full" check for mask and bias.
void expect_broadcastable(const char* op, const char* arg, const Tensor& t, const Shape& full) {
  bool ok = t.dim() == 4;
  for (int d = 0; ok && d < 4; ++d) ok = t.shape[d] == 1 || t.shape[d] == full[d];
  if (!ok)
    range_error(op, arg, "a tensor of rank 4 broadcastable to " + shape_str(full) + " (each dim 1 or full)",
                "shape " + shape_str(t.shape));
}

// q, k, v at info[0..2] and the options object at info[opt].
void parse(const Args& a, size_t opt, Parsed& p) {
  const char* op = a.op();
  const Tensor& q = a.tensor(0, "q");
  const Tensor& k = a.tensor(1, "k");
  const Tensor& v = a.tensor(2, "v");
  expect_float(op, "q", q);
  expect_cpu(op, "q", q);
  if (q.dim() != 4 || q.shape[3] < 1)
    range_error(op, "q", "a tensor [batch, heads, Lq, headDim] with headDim >= 1", "shape " + shape_str(q.shape));
  p.B = q.shape[0];
  p.H = q.shape[1];
  p.Lq = q.shape[2];
  p.Dh = q.shape[3];
  expect_same_dtype(op, "k", k, q, "q");
  expect_same_device(op, "k", k, q, "q");
  if (k.dim() != 4 || k.shape[0] != p.B || k.shape[1] != p.H || k.shape[3] != p.Dh)
    range_error(op, "k",
                "a tensor [" + std::to_string(p.B) + ", " + std::to_string(p.H) + ", Lk, " + std::to_string(p.Dh) +
                    "] (batch, heads and headDim of q)",
                "shape " + shape_str(k.shape));
  p.Lk = k.shape[2];
  expect_same_dtype(op, "v", v, q, "q");
  expect_same_device(op, "v", v, q, "q");
  if (v.dim() != 4 || v.shape[0] != p.B || v.shape[1] != p.H || v.shape[2] != p.Lk)
    range_error(op, "v",
                "a tensor [" + std::to_string(p.B) + ", " + std::to_string(p.H) + ", " + std::to_string(p.Lk) +
                    ", Dv] (batch, heads and length of k)",
                "shape " + shape_str(v.shape));
  p.Dv = v.shape[3];
  p.q = unit_last(q);
  p.k = unit_last(k);
  p.v = unit_last(v);

  OptionReader r(op, a[opt]);
  const Shape full{p.B, p.H, p.Lq, p.Lk};
  double scale = r.number("scale", "options.scale");
  if (!std::isfinite(scale)) range_error(op, "options.scale", "a finite number", describe(r.raw("scale")));
  p.o.scale = scale;
  p.o.causal = r.boolean("causal", "options.causal");
  p.o.causal_offset = r.integer("causalOffset", "options.causalOffset", -kMaxSafe, kMaxSafe);
  if (const Tensor* m = r.tensor("mask", "options.mask")) {
    if (m->dtype != DType::U8)
      type_error(op, "options.mask", "a uint8 tensor (1 = may attend)", a_tensor(m->dtype));
    expect_cpu(op, "options.mask", *m);
    expect_broadcastable(op, "options.mask", *m, full);
    p.mask = *m;
    p.o.mask = &p.mask;
  }
  if (const Tensor* b = r.tensor("bias", "options.bias")) {
    if (b->dtype != q.dtype)
      type_error(op, "options.bias", std::string("a ") + dtype_name(q.dtype) + " tensor (the dtype of q)",
                 a_tensor(b->dtype));
    expect_cpu(op, "options.bias", *b);
    expect_broadcastable(op, "options.bias", *b, full);
    p.bias = *b;
    p.o.bias = &p.bias;
  }
  if (const Tensor* l = r.tensor("keyPadding", "options.keyPadding")) {
    if (l->dtype != DType::I32)
      type_error(op, "options.keyPadding", "an int32 tensor", a_tensor(l->dtype));
    expect_cpu(op, "options.keyPadding", *l);
    expect_shape(op, "options.keyPadding", *l, {p.B});
    p.lens = contiguous(*l);
    const int32_t* lp = p.lens.data<int32_t>();
    for (int64_t b = 0; b < p.B; ++b)
      if (lp[b] < 0 || lp[b] > p.Lk)
        range_error(op, "options.keyPadding",
                    "key lengths in [0, " + std::to_string(p.Lk) + "] (the length of k)",
                    std::to_string(lp[b]) + " at index " + std::to_string(b));
    p.o.key_padding = &p.lens;
  }
  double drop = r.number("dropout", "options.dropout");
  if (!(drop >= 0.0 && drop < 1.0)) range_error(op, "options.dropout", "a probability in [0, 1)", describe(r.raw("dropout")));
  p.o.dropout = drop;
  p.o.seed = static_cast<uint64_t>(r.integer("seed", "options.seed", 0, kMaxSafe));
  p.o.offset = static_cast<uint64_t>(r.integer("offset", "options.offset", 0, kMaxSafe));
}

// An uninitialised [B, H, L, D] result laid out like `like`: over [B, L, H, D] storage
// when like's heads are interleaved (a split projection, strides[1] < strides[2]), so
// that the result permuted back to [B, L, H, D] is contiguous; else contiguous.
Tensor empty_like_heads(const Tensor& like, int64_t L, int64_t D) {
  const int64_t B = like.shape[0], H = like.shape[1];
  if (!(like.strides[1] < like.strides[2] && H > 1 && L > 1)) return Tensor::empty({B, H, L, D}, like.dtype, Device::CPU);
  Tensor t = Tensor::empty({B, L, H, D}, like.dtype, Device::CPU);
  t.shape = {B, H, L, D};
  t.strides = {L * H * D, D, H * D, 1};
  return t;
}

Napi::Value attention_forward(const Napi::CallbackInfo& info) {
  Args a(info, "attention");
  Parsed p;
  parse(a, 3, p);
  Tensor out = empty_like_heads(p.q, p.Lq, p.Dv);
  Tensor lse = Tensor::empty({p.B, p.H, p.Lq}, p.q.dtype, Device::CPU);
  cpu::attention_forward(p.q, p.k, p.v, p.o, out, lse);
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("out", wrap(info.Env(), std::move(out)));
  r.Set("lse", wrap(info.Env(), std::move(lse)));
  return r;
}

// A tensor argument of q's dtype and an exact shape, with a unit last stride.
Tensor same_kind(const Args& a, size_t i, const char* name, const Parsed& p, const Shape& shape) {
  const Tensor& t = a.tensor(i, name);
  expect_same_dtype(a.op(), name, t, p.q, "q");
  expect_same_device(a.op(), name, t, p.q, "q");
  expect_shape(a.op(), name, t, shape);
  return shape.size() == 4 ? unit_last(t) : contiguous(t);
}

Napi::Value attention_backward(const Napi::CallbackInfo& info) {
  Args a(info, "attentionBackward");
  Parsed p;
  parse(a, 6, p);
  Tensor out = same_kind(a, 3, "out", p, {p.B, p.H, p.Lq, p.Dv});
  Tensor lse = same_kind(a, 4, "lse", p, {p.B, p.H, p.Lq});
  Tensor gout = same_kind(a, 5, "gradOut", p, {p.B, p.H, p.Lq, p.Dv});
  Napi::Value nv = info.Length() > 7 ? info[7] : info.Env().Undefined();
  if (!nv.IsArray() || nv.As<Napi::Array>().Length() != 3)
    type_error(a.op(), "needs", "an array of 3 booleans [q, k, v]", describe(nv));
  bool need[3];
  for (uint32_t i = 0; i < 3; ++i) {
    Napi::Value e = nv.As<Napi::Array>().Get(i);
    if (!e.IsBoolean()) type_error(a.op(), "needs", "an array of 3 booleans [q, k, v]", "an array holding " + describe(e));
    need[i] = e.As<Napi::Boolean>().Value();
  }
  Tensor dq, dk, dv;
  if (need[0]) dq = empty_like_heads(p.q, p.Lq, p.Dh);
  if (need[1]) dk = empty_like_heads(p.k, p.Lk, p.Dh);
  if (need[2]) dv = empty_like_heads(p.v, p.Lk, p.Dv);
  cpu::attention_backward(p.q, p.k, p.v, out, lse, gout, p.o, need[0] ? &dq : nullptr, need[1] ? &dk : nullptr,
                          need[2] ? &dv : nullptr);
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
  r.Set("dq", need[0] ? wrap(env, std::move(dq)) : env.Null());
  r.Set("dk", need[1] ? wrap(env, std::move(dk)) : env.Null());
  r.Set("dv", need[2] ? wrap(env, std::move(dv)) : env.Null());
  return r;
}

Napi::Value attention_reference(const Napi::CallbackInfo& info) {
  Args a(info, "attentionReference");
  Parsed p;
  parse(a, 3, p);
  Tensor gout;
  const bool grads = a.has(4);
  if (grads) gout = same_kind(a, 4, "gradOut", p, {p.B, p.H, p.Lq, p.Dv});
  Tensor out = Tensor::empty({p.B, p.H, p.Lq, p.Dv}, DType::F64, Device::CPU);
  Tensor lse = Tensor::empty({p.B, p.H, p.Lq}, DType::F64, Device::CPU);
  Tensor dq, dk, dv;
  if (grads) {
    dq = Tensor::empty(p.q.shape, DType::F64, Device::CPU);
    dk = Tensor::empty(p.k.shape, DType::F64, Device::CPU);
    dv = Tensor::empty(p.v.shape, DType::F64, Device::CPU);
  }
  cpu::attention_reference(p.q, p.k, p.v, p.o, out, lse, grads ? &gout : nullptr, grads ? &dq : nullptr,
                           grads ? &dk : nullptr, grads ? &dv : nullptr);
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
  r.Set("out", wrap(env, std::move(out)));
  r.Set("lse", wrap(env, std::move(lse)));
  r.Set("dq", grads ? wrap(env, std::move(dq)) : env.Null());
  r.Set("dk", grads ? wrap(env, std::move(dk)) : env.Null());
  r.Set("dv", grads ? wrap(env, std::move(dv)) : env.Null());
  return r;
}

Napi::Value attention_tiles(const Napi::CallbackInfo& info) {
  Args a(info, "attentionTiles");
  if (a.has(0) || a.has(1)) {
    int64_t rows = a.integer(0, "rows", 1, 4096);
    int64_t cols = a.integer(1, "cols", 1, 4096);
    cpu::attention_set_tiles(rows, cols);
  }
  int64_t rows, cols;
  cpu::attention_get_tiles(rows, cols);
  Napi::Array r = Napi::Array::New(info.Env(), 2);
  r.Set(uint32_t{0}, Napi::Number::New(info.Env(), static_cast<double>(rows)));
  r.Set(uint32_t{1}, Napi::Number::New(info.Env(), static_cast<double>(cols)));
  return r;
}

// attentionTileKernel(name?): 'avx512' (the default where the CPU has it) or 'gemm'
// (core GEMM for the tile products); returns the kernel float32 tiles now use.
Napi::Value attention_tile_kernel(const Napi::CallbackInfo& info) {
  Args a(info, "attentionTileKernel");
  if (a.has(0)) {
    const Napi::Value v = info[0];
    const std::string name = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
    if (name != "avx512" && name != "gemm") type_error(a.op(), "name", "'avx512' or 'gemm'", describe(v));
    cpu::attention_set_tile_kernel(name == "avx512");
  }
  return Napi::String::New(info.Env(), cpu::attention_tile_kernel_avx512() ? "avx512" : "gemm");
}

}  // namespace

VLM_EXPORT("attentionForward", attention_forward);
VLM_EXPORT("attentionBackward", attention_backward);
VLM_EXPORT("attentionReference", attention_reference);
VLM_EXPORT("attentionTiles", attention_tiles);
VLM_EXPORT("attentionTileKernel", attention_tile_kernel);

}  // namespace vlm::js
