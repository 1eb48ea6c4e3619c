// decode family, binding: kvCacheWrite(cacheK, cacheV, k, v, position),
// kvCacheReorder(caches, index, length), decodeAttention(q, k, v, options),
// decodeProcessLogits(logits, options), decodeArgmax(scores), decodeSample(scores, options),
// decodeBeamCandidates(scores, beamScores, beams, count[, sample]) (ops/decode.h). Caches must be
// contiguous (they are written in place); row inputs whose last stride is not 1 are copied
// first; every id that a kernel indexes with is checked here, value by value.
#include <cmath>
#include <string>
#include <vector>
#include "binding/args.h"
#include "binding/registry.h"
#include "binding/tensor_wrap.h"
#include "ops/copy.h"
#include "ops/decode.h"

namespace vlm::js {
namespace {

constexpr int64_t kMaxSafe = 9007199254740991LL;  // 2^53 - 1
constexpr int64_t kMaxInt32 = 2147483647LL;

bool present(const Napi::Value& v) { return !v.IsUndefined() && !v.IsNull(); }
std::string num(int64_t x) { return std::to_string(x); }

// A view with a unit last stride: t itself, or a contiguous copy.
Tensor unit_last(const Tensor& t) {
  const int64_t r = t.dim();
  if (r == 0 || t.shape[r - 1] <= 1 || t.strides[r - 1] == 1) return t;
  return contiguous(t);
}

class Options {
 public:
  Options(const char* op, const Napi::Value& v, const char* name = "options") : op_(op) {
    if (!v.IsObject() || v.IsArray() || v.IsFunction()) type_error(op, name, "an options object", describe(v));
    o_ = v.As<Napi::Object>();
  }
  const Tensor* tensor(const char* key, const char* name) const {
    Napi::Value v = o_.Get(key);
    if (!present(v)) return nullptr;
    JsTensor* t = JsTensor::unwrap_or_null(v);
    if (!t) type_error(op_, name, "a tensor or null", describe(v));
    if (t->disposed()) type_error(op_, name, "a live tensor", "a disposed tensor");
    return &t->tensor();
  }
  bool boolean(const char* key, const char* name) const {
    Napi::Value v = o_.Get(key);
    if (!v.IsBoolean()) type_error(op_, name, "a boolean", describe(v));
    return v.As<Napi::Boolean>().Value();
  }
  double number(const char* key, const char* name) const {
    Napi::Value v = o_.Get(key);
    if (!v.IsNumber()) type_error(op_, name, "a number", describe(v));
    return v.As<Napi::Number>().DoubleValue();
  }
  int64_t integer(const char* key, const char* name, int64_t lo, int64_t hi) const {
    Napi::Value v = o_.Get(key);
    double x = number(key, name);
    if (!std::isfinite(x) || std::floor(x) != x) type_error(op_, name, "an integer", describe(v));
    if (x < static_cast<double>(lo) || x > static_cast<double>(hi))
      range_error(op_, name, "an integer in [" + num(lo) + ", " + num(hi) + "]", describe(v));
    return static_cast<int64_t>(x);
  }
  Napi::Value raw(const char* key) const { return o_.Get(key); }

 private:
  const char* op_;
  Napi::Object o_;
};

// A float CPU tensor of rank `rank`.
void expect_float_cpu(const char* op, const char* arg, const Tensor& t, int64_t rank, const char* layout) {
  expect_float(op, arg, t);
  expect_cpu(op, arg, t);
  if (t.dim() != rank) range_error(op, arg, std::string("a tensor ") + layout, "shape " + shape_str(t.shape));
}

// A contiguous cache [N, H, Lmax, Dh] (written in place).
void expect_cache(const char* op, const char* arg, const Tensor& t) {
  expect_float_cpu(op, arg, t, 4, "[rows, heads, maxLength, headDim]");
  expect_contiguous(op, arg, t);
}

// Scores [N, V] with V >= 1, contiguous (copied when not).
Tensor scores_arg(const Args& a, size_t i, const char* name) {
  const Tensor& s = a.tensor(i, name);
  expect_float_cpu(a.op(), name, s, 2, "[rows, vocab]");
  if (s.shape[1] < 1) range_error(a.op(), name, "a tensor [rows, vocab >= 1]", "shape " + shape_str(s.shape));
  return contiguous(s);
}

bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.storage.get() != b.storage.get()) return false;
  const int64_t a0 = a.offset, a1 = a.offset + a.numel(), b0 = b.offset, b1 = b.offset + b.numel();
  return a0 < b1 && b0 < a1;
}

Napi::Value kv_cache_write(const Napi::CallbackInfo& info) {
  Args a(info, "kvCacheWrite");
  const char* op = a.op();
  Tensor ck = a.tensor(0, "cacheK");
  Tensor cv = a.tensor(1, "cacheV");
  expect_cache(op, "cacheK", ck);
  expect_cache(op, "cacheV", cv);
  expect_same_dtype(op, "cacheV", cv, ck, "cacheK");
  expect_shape(op, "cacheV", cv, ck.shape);
  if (overlaps(ck, cv)) range_error(op, "cacheV", "a tensor that does not share memory with cacheK", "an overlapping view");
  const int64_t N = ck.shape[0], H = ck.shape[1], Lmax = ck.shape[2], Dh = ck.shape[3];
  const std::string rows = "[" + num(N) + ", T, " + num(H * Dh) + "] (rows and heads * headDim of the cache)";
  const Tensor& k = a.tensor(2, "k");
  const Tensor& v = a.tensor(3, "v");
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&k, "k"}, {&v, "v"}}) {
    expect_same_dtype(op, name, *t, ck, "cacheK");
    expect_cpu(op, name, *t);
    if (t->dim() != 3 || t->shape[0] != N || t->shape[2] != H * Dh) range_error(op, name, "a tensor " + rows, "shape " + shape_str(t->shape));
  }
  if (v.shape[1] != k.shape[1]) range_error(op, "v", "a tensor of the length of k (" + num(k.shape[1]) + ")", "shape " + shape_str(v.shape));
  const int64_t T = k.shape[1];
  if (T > Lmax) range_error(op, "k", "at most maxLength (" + num(Lmax) + ") positions", "shape " + shape_str(k.shape));
  const int64_t position = a.integer(4, "position", 0, Lmax - T);
  Tensor ku = unit_last(k), vu = unit_last(v);
  cpu::kv_cache_write(ck, cv, ku, vu, position);
  return info.Env().Undefined();
}

Napi::Value kv_cache_reorder(const Napi::CallbackInfo& info) {
  Args a(info, "kvCacheReorder");
  const char* op = a.op();
  Napi::Value cv = info.Length() > 0 ? info[0] : info.Env().Undefined();
  if (!cv.IsArray()) type_error(op, "caches", "an array of tensors", describe(cv));
  Napi::Array arr = cv.As<Napi::Array>();
  std::vector<Tensor> caches;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    const std::string name = "caches[" + std::to_string(i) + "]";
    Napi::Value e = arr.Get(i);
    JsTensor* t = JsTensor::unwrap_or_null(e);
    if (!t) type_error(op, name.c_str(), "a tensor", describe(e));
    if (t->disposed()) type_error(op, name.c_str(), "a live tensor", "a disposed tensor");
    expect_cache(op, name.c_str(), t->tensor());
    if (!caches.empty() && t->tensor().shape[0] != caches[0].shape[0])
      range_error(op, name.c_str(), "a cache of " + num(caches[0].shape[0]) + " rows (that of caches[0])",
                  "shape " + shape_str(t->tensor().shape));
    for (size_t j = 0; j < caches.size(); ++j)
      if (overlaps(caches[j], t->tensor()))
        range_error(op, name.c_str(), "a tensor that shares no memory with the other caches",
                    "a view overlapping caches[" + std::to_string(j) + "]");
    caches.push_back(t->tensor());
  }
  const Tensor& index = a.tensor(1, "index");
  expect_dtype(op, "index", index, DType::I32);
  expect_cpu(op, "index", index);
  if (index.dim() != 1 || (!caches.empty() && index.shape[0] != caches[0].shape[0]))
    range_error(op, "index", "an int32 tensor [" + (caches.empty() ? std::string("rows") : num(caches[0].shape[0])) + "]",
                "shape " + shape_str(index.shape));
  const int64_t N = index.shape[0];
  Tensor idx = contiguous(index);
  const int32_t* ip = idx.data<int32_t>();
  for (int64_t i = 0; i < N; ++i)
    if (ip[i] < 0 || ip[i] >= N)
      range_error(op, "index", "row indices in [0, " + num(N) + ")", std::to_string(ip[i]) + " at index " + num(i));
  int64_t cap = kMaxSafe;
  for (const Tensor& c : caches) cap = std::min(cap, c.shape[2]);
  const int64_t length = a.integer(2, "length", 0, caches.empty() ? 0 : cap);
  for (Tensor& c : caches) cpu::kv_cache_reorder(c, ip, length);
  return info.Env().Undefined();
}

Napi::Value decode_attention(const Napi::CallbackInfo& info) {
  Args a(info, "decodeAttention");
  const char* op = a.op();
  const Tensor& q = a.tensor(0, "q");
  expect_float_cpu(op, "q", q, 3, "[rows, T, heads * headDim]");
  const int64_t N = q.shape[0], T = q.shape[1], E = q.shape[2];
  const Tensor& k = a.tensor(1, "k");
  expect_same_dtype(op, "k", k, q, "q");
  expect_cpu(op, "k", k);
  if (k.dim() != 4 || k.shape[0] != N || k.shape[3] < 1 || k.shape[1] * k.shape[3] != E)
    range_error(op, "k", "a tensor [" + num(N) + ", heads, Lk, headDim] with heads * headDim = " + num(E) + " (rows and features of q)",
                "shape " + shape_str(k.shape));
  const Tensor& v = a.tensor(2, "v");
  expect_same_dtype(op, "v", v, q, "q");
  expect_cpu(op, "v", v);
  expect_shape(op, "v", v, k.shape);
  const int64_t Lk = k.shape[2];
  Options r(op, a[3]);
  DecodeAttentionOptions o;
  o.length = r.integer("length", "options.length", 0, Lk);
  o.causal = r.boolean("causal", "options.causal");
  if (o.causal && T > o.length)
    range_error(op, "options.length", "at least the " + num(T) + " new positions of q when causal", describe(r.raw("length")));
  o.scale = r.number("scale", "options.scale");
  if (!std::isfinite(o.scale)) range_error(op, "options.scale", "a finite number", describe(r.raw("scale")));
  Tensor mask;
  if (const Tensor* m = r.tensor("keyMask", "options.keyMask")) {
    if (m->dtype != DType::U8) type_error(op, "options.keyMask", "a uint8 tensor (1 = may attend)", a_tensor(m->dtype));
    expect_cpu(op, "options.keyMask", *m);
    if (m->dim() != 2 || (m->shape[0] != N && m->shape[0] != 1) || m->shape[1] != Lk)
      range_error(op, "options.keyMask", "a uint8 tensor [" + num(N) + " or 1, " + num(Lk) + "]", "shape " + shape_str(m->shape));
    mask = *m;
    o.key_mask = &mask;
  }
  Tensor qu = unit_last(q), ku = unit_last(k), vu = unit_last(v);
  Tensor out = Tensor::empty({N, T, E}, q.dtype, Device::CPU);
  cpu::decode_attention(qu, ku, vu, o, out);
  return wrap(info.Env(), std::move(out));
}

// int32 ids checked against [lo, V); returns the contiguous tensor.
Tensor ids_arg(const char* op, const char* name, const Tensor& t, int64_t rank, const std::string& layout, int64_t lo,
               int64_t V) {
  expect_dtype(op, name, t, DType::I32);
  expect_cpu(op, name, t);
  if (t.dim() != rank) range_error(op, name, "an int32 tensor " + layout, "shape " + shape_str(t.shape));
  Tensor c = contiguous(t);
  const int32_t* p = c.data<int32_t>();
  for (int64_t i = 0; i < c.numel(); ++i)
    if (p[i] < lo || p[i] >= V) {
      std::string at = rank == 2 ? "[" + num(i / c.shape[1]) + ", " + num(i % c.shape[1]) + "]" : num(i);
      range_error(op, name, "ids in [" + num(lo) + ", " + num(V) + ")" + (lo < 0 ? " (negative ids are skipped)" : ""),
                  std::to_string(p[i]) + " at index " + at);
    }
  return c;
}

// HF's temperature, top-k and top-p settings of a sampling options object (names under `prefix`).
SampleOptions filters_arg(const char* op, const Options& r, const std::string& prefix) {
  SampleOptions o;
  const std::string t = prefix + "temperature", k = prefix + "topK", p = prefix + "topP", m = prefix + "minKeep";
  o.temperature = r.number("temperature", t.c_str());
  if (!(std::isfinite(o.temperature) && o.temperature > 0))
    range_error(op, t.c_str(), "a finite number > 0", describe(r.raw("temperature")));
  o.top_k = r.integer("topK", k.c_str(), 0, kMaxInt32);
  o.top_p = r.number("topP", p.c_str());
  if (!(o.top_p > 0 && o.top_p <= 1)) range_error(op, p.c_str(), "a number in (0, 1]", describe(r.raw("topP")));
  o.min_keep = r.integer("minKeep", m.c_str(), 1, kMaxInt32);
  return o;
}

Napi::Value decode_process_logits(const Napi::CallbackInfo& info) {
  Args a(info, "decodeProcessLogits");
  const char* op = a.op();
  const Tensor& logits = a.tensor(0, "logits");
  expect_float_cpu(op, "logits", logits, 2, "[rows, vocab]");
  const int64_t N = logits.shape[0], V = logits.shape[1];
  Options r(op, a[1]);
  const bool log_softmax = r.boolean("logSoftmax", "options.logSoftmax");
  const double penalty = r.number("repetitionPenalty", "options.repetitionPenalty");
  if (!(std::isfinite(penalty) && penalty > 0))
    range_error(op, "options.repetitionPenalty", "a finite number > 0", describe(r.raw("repetitionPenalty")));
  Tensor hist, sup;
  if (const Tensor* h = r.tensor("history", "options.history")) {
    hist = ids_arg(op, "options.history", *h, 2, "[" + num(N) + ", length]", -kMaxInt32 - 1, V);
    if (hist.shape[0] != N) range_error(op, "options.history", "an int32 tensor [" + num(N) + ", length]", "shape " + shape_str(h->shape));
  }
  if (const Tensor* s = r.tensor("suppress", "options.suppress")) sup = ids_arg(op, "options.suppress", *s, 1, "[count]", 0, V);
  SampleOptions warp;
  const Napi::Value w = r.raw("warp");
  const bool warping = present(w);
  if (warping) warp = filters_arg(op, Options(op, w, "options.warp"), "options.warp.");
  Tensor out = Tensor::empty({N, V}, logits.dtype, Device::CPU);
  cpu::copy(logits, out);
  cpu::decode_process_logits(out, log_softmax, hist.storage ? hist.data<int32_t>() : nullptr, hist.storage ? hist.shape[1] : 0,
                             penalty, sup.storage ? sup.data<int32_t>() : nullptr, sup.storage ? sup.shape[0] : 0,
                             warping ? &warp : nullptr);
  return wrap(info.Env(), std::move(out));
}

Napi::Value decode_argmax(const Napi::CallbackInfo& info) {
  Args a(info, "decodeArgmax");
  Tensor s = scores_arg(a, 0, "scores");
  Tensor out = Tensor::empty({s.shape[0]}, DType::I32, Device::CPU);
  cpu::decode_argmax(s, out.data<int32_t>());
  return wrap(info.Env(), std::move(out));
}

Napi::Value decode_sample(const Napi::CallbackInfo& info) {
  Args a(info, "decodeSample");
  const char* op = a.op();
  Tensor s = scores_arg(a, 0, "scores");
  Options r(op, a[1]);
  SampleOptions o = filters_arg(op, r, "options.");
  o.seed = static_cast<uint64_t>(r.integer("seed", "options.seed", 0, kMaxSafe));
  o.offset = static_cast<uint64_t>(r.integer("offset", "options.offset", 0, kMaxSafe));
  Tensor out = Tensor::empty({s.shape[0]}, DType::I32, Device::CPU);
  cpu::decode_sample(s, o, out.data<int32_t>());
  return wrap(info.Env(), std::move(out));
}

Napi::Value decode_beam_candidates(const Napi::CallbackInfo& info) {
  Args a(info, "decodeBeamCandidates");
  const char* op = a.op();
  Tensor s = scores_arg(a, 0, "scores");
  const int64_t N = s.shape[0], V = s.shape[1];
  const Tensor& bs = a.tensor(1, "beamScores");
  expect_dtype(op, "beamScores", bs, DType::F64);
  expect_cpu(op, "beamScores", bs);
  expect_shape(op, "beamScores", bs, {N});
  const int64_t beams = a.integer(2, "beams", 1, std::max<int64_t>(N, 1));
  if (N % beams != 0) range_error(op, "beams", "a divisor of the " + num(N) + " rows of scores", describe(a[2]));
  const int64_t count = a.integer(3, "count", 1, std::min<int64_t>(beams * V, kMaxInt32));
  const int64_t B = N / beams;
  BeamSampleOptions so;
  const bool sampling = a.has(4);
  if (sampling) {
    Options r(op, a[4], "sample");
    so.seed = static_cast<uint64_t>(r.integer("seed", "sample.seed", 0, kMaxSafe));
    so.offset = static_cast<uint64_t>(r.integer("offset", "sample.offset", 0, kMaxSafe));
  }
  Tensor bsc = contiguous(bs);
  Tensor sc = Tensor::empty({B, count}, DType::F64, Device::CPU);
  Tensor tok = Tensor::empty({B, count}, DType::I32, Device::CPU);
  Tensor beam = Tensor::empty({B, count}, DType::I32, Device::CPU);
  cpu::decode_beam_candidates(s, bsc.data<double>(), beams, count, sc.data<double>(), tok.data<int32_t>(), beam.data<int32_t>(),
                              sampling ? &so : nullptr);
  Napi::Env env = info.Env();
  Napi::Object res = Napi::Object::New(env);
  res.Set("scores", wrap(env, std::move(sc)));
  res.Set("tokens", wrap(env, std::move(tok)));
  res.Set("beams", wrap(env, std::move(beam)));
  return res;
}

}  // namespace

VLM_EXPORT("kvCacheWrite", kv_cache_write);
VLM_EXPORT("kvCacheReorder", kv_cache_reorder);
VLM_EXPORT("decodeAttention", decode_attention);
VLM_EXPORT("decodeProcessLogits", decode_process_logits);
VLM_EXPORT("decodeArgmax", decode_argmax);
VLM_EXPORT("decodeSample", decode_sample);
VLM_EXPORT("decodeBeamCandidates", decode_beam_candidates);

}  // namespace vlm::js
