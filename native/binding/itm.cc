// itm family: argument checks and conversion for hard-negative mining and the fused
// ITM head (ops/itm.h). Argument names in messages are those of the TypeScript
// functions (ts/objectives/itm.ts): mineHardNegatives(imageFeatures, textFeatures,
// options) and itm(features, weight, bias).
#include <cmath>
#include <string>
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/copy.h"
#include "ops/itm.h"

namespace vlm::js {
namespace {

constexpr const char* kMine = "mineHardNegatives";
constexpr const char* kHead = "itm";
constexpr int64_t kMaxSafe = (int64_t{1} << 53) - 1;

std::string index_str(int64_t flat, const Shape& shape) {
  Shape idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape_str(idx);
}

// A RangeError at the first non-finite value of a contiguous float tensor.
void expect_finite_values(const char* op, const char* arg, const Tensor& t) {
  dispatch_float(t.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* p = t.data<T>();
    const int64_t n = t.numel();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) {
        const char* v = std::isnan(p[i]) ? "NaN" : p[i] > 0 ? "Infinity" : "-Infinity";  // as JavaScript prints them
        range_error(op, arg, "finite values", std::string(v) + " at position " + index_str(i, t.shape));
      }
  });
}

// (imageFeatures, textFeatures, temperature, imageIds, seed, offset, weightFloor) at info[0..6].
ItmMineInputs parse_mine(const Args& a) {
  ItmMineInputs in;
  const Tensor& image = a.tensor(0, "imageFeatures");
  expect_cpu(kMine, "imageFeatures", image);
  expect_float(kMine, "imageFeatures", image);
  if (image.dim() != 2 && image.dim() != 3)
    range_error(kMine, "imageFeatures", "a tensor of rank 2 [B, D] or 3 [B, Q, D]", "shape " + shape_str(image.shape));
  expect_nonempty(kMine, "imageFeatures", image);
  in.B = image.shape[0];
  in.Q = image.dim() == 3 ? image.shape[1] : 1;
  in.D = image.shape[image.dim() - 1];

  const Tensor& text = a.tensor(1, "textFeatures");
  expect_cpu(kMine, "textFeatures", text);
  expect_float(kMine, "textFeatures", text);
  expect_same_dtype(kMine, "textFeatures", text, image, "imageFeatures");
  if (text.dim() != 2)
    range_error(kMine, "textFeatures", "a tensor of rank 2 [B, D] (only imageFeatures may carry query tokens)",
                "shape " + shape_str(text.shape));
  expect_shape(kMine, "textFeatures", text, {in.B, in.D});
  if (in.B < 2)
    range_error(kMine, "imageFeatures", "a batch of at least 2 samples (a negative is another sample of the batch)",
                "shape " + shape_str(image.shape));

  const double temp = a.number(2, "options.temperature");
  if (!std::isfinite(temp) || !(temp >= 1e-30 && temp <= 1e30))
    range_error(kMine, "options.temperature", "a finite positive temperature in [1e-30, 1e30]", describe(a[2]));
  in.temperature = temp;

  if (const Tensor* ids = a.optional_tensor(3, "options.imageIds")) {
    expect_cpu(kMine, "options.imageIds", *ids);
    expect_dtype(kMine, "options.imageIds", *ids, DType::I32);
    expect_shape(kMine, "options.imageIds", *ids, {in.B});
    Tensor c = contiguous(*ids);
    const int32_t* p = c.data<int32_t>();
    bool all_equal = true;
    for (int64_t i = 1; i < in.B && all_equal; ++i) all_equal = p[i] == p[0];
    if (all_equal)
      range_error(kMine, "options.imageIds", "ids that leave every sample a negative (not all the same id)",
                  "every id equal to " + std::to_string(p[0]));
    in.ids = c;
  }
  in.seed = static_cast<uint64_t>(a.integer(4, "options.seed", 0, kMaxSafe));
  in.offset = static_cast<uint64_t>(a.integer(5, "options.offset", 0, kMaxSafe));
  const double floor = a.number(6, "options.weightFloor");
  if (!std::isfinite(floor) || floor < 0 || floor > 1)
    range_error(kMine, "options.weightFloor", "a finite number in [0, 1]", describe(a[6]));
  in.floor = floor;

  in.image = contiguous(image);
  in.text = contiguous(text);
  expect_finite_values(kMine, "imageFeatures", in.image);
  expect_finite_values(kMine, "textFeatures", in.text);
  return in;
}

void throw_if_bad(const ItmMineResult& r) {
  if (r.bad_row < 0) return;
  range_error(kMine, r.bad_dir == 0 ? "imageFeatures" : "textFeatures",
              "similarities that stay finite after dividing by options.temperature",
              "a non-finite similarity in the row of " + std::string(r.bad_dir == 0 ? "image " : "text ") +
                  std::to_string(r.bad_row));
}

// itmMine(image, text, temperature, imageIds, seed, offset, weightFloor) -> { negativeText, negativeImage }
Napi::Value mine(const Napi::CallbackInfo& info) {
  Args a(info, kMine);
  ItmMineInputs in = parse_mine(a);
  ItmMineResult r = cpu::itm_mine(in);
  throw_if_bad(r);
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("negativeText", wrap(env, std::move(r.neg_text)));
  out.Set("negativeImage", wrap(env, std::move(r.neg_image)));
  return out;
}

// itmMineReference(..., returnProbs) -> { negativeText, negativeImage, probI2T | null, probT2I | null }
Napi::Value mine_reference(const Napi::CallbackInfo& info) {
  Args a(info, kMine);
  ItmMineInputs in = parse_mine(a);
  const bool probs = a.boolean(7, "returnProbs");
  ItmMineResult r = cpu::itm_mine_reference(in, probs);
  throw_if_bad(r);
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("negativeText", wrap(env, std::move(r.neg_text)));
  out.Set("negativeImage", wrap(env, std::move(r.neg_image)));
  out.Set("probI2T", r.prob_i2t ? wrap(env, std::move(*r.prob_i2t)) : env.Null());
  out.Set("probT2I", r.prob_t2i ? wrap(env, std::move(*r.prob_t2i)) : env.Null());
  return out;
}

// itmTiles(rows?, cols?, segmentCells?) -> [rows, cols, segmentCells]: sets the mining tile
// (GEMM rows x columns) and the per-thread segment table size when given.
Napi::Value tiles(const Napi::CallbackInfo& info) {
  Args a(info, "itmTiles");
  if (a.has(0) || a.has(1) || a.has(2)) {
    const int64_t r = a.integer(0, "rows", 1, 1 << 16), c = a.integer(1, "cols", 1, 1 << 16);
    const int64_t s = a.has(2) ? a.integer(2, "segmentCells", 1, int64_t{1} << 24) : cpu::itm_segment_cells();
    cpu::itm_set_tiles(r, c, s);
  }
  Napi::Array out = Napi::Array::New(info.Env(), 3);
  out.Set(uint32_t{0}, Napi::Number::New(info.Env(), static_cast<double>(cpu::itm_row_tile())));
  out.Set(uint32_t{1}, Napi::Number::New(info.Env(), static_cast<double>(cpu::itm_col_tile())));
  out.Set(uint32_t{2}, Napi::Number::New(info.Env(), static_cast<double>(cpu::itm_segment_cells())));
  return out;
}

struct HeadInputs {
  Tensor features, weight, bias;
  int64_t Q = 1;
};

// (features, weight, bias) at info[0..2].
HeadInputs parse_head(const Args& a) {
  HeadInputs in;
  const Tensor& x = a.tensor(0, "features");
  expect_cpu(kHead, "features", x);
  expect_float(kHead, "features", x);
  if (x.dim() != 2 && x.dim() != 3)
    range_error(kHead, "features", "a tensor of rank 2 [3B, H] or 3 [3B, Q, H]", "shape " + shape_str(x.shape));
  expect_nonempty(kHead, "features", x);
  if (x.shape[0] % 3 != 0)
    range_error(kHead, "features", "3B rows (B positives, then B text negatives and B image negatives)",
                "shape " + shape_str(x.shape));
  const int64_t H = x.shape[x.dim() - 1];
  in.Q = x.dim() == 3 ? x.shape[1] : 1;
  const Tensor& w = a.tensor(1, "weight");
  expect_cpu(kHead, "weight", w);
  expect_same_dtype(kHead, "weight", w, x, "features");
  expect_shape(kHead, "weight", w, {2, H});
  const Tensor& b = a.tensor(2, "bias");
  expect_cpu(kHead, "bias", b);
  expect_same_dtype(kHead, "bias", b, x, "features");
  expect_shape(kHead, "bias", b, {2});
  in.features = contiguous(x);
  in.weight = contiguous(w);
  in.bias = contiguous(b);
  return in;
}

// itmHead(features, weight, bias, gradScale, needs[3]) -> { loss, correct, dFeatures, dWeight, dBias }
Napi::Value head(const Napi::CallbackInfo& info) {
  Args a(info, kHead);
  HeadInputs in = parse_head(a);
  const double gs = a.number(3, "gradScale");
  Napi::Value nv = a[4];
  if (!nv.IsArray() || nv.As<Napi::Array>().Length() != 3)
    type_error(kHead, "needs", "an array of 3 booleans [features, weight, bias]", describe(nv));
  bool needs[3];
  for (uint32_t i = 0; i < 3; ++i) {
    Napi::Value v = nv.As<Napi::Array>().Get(i);
    if (!v.IsBoolean()) type_error(kHead, "needs", "an array of 3 booleans [features, weight, bias]", describe(v) + " at index " + std::to_string(i));
    needs[i] = v.As<Napi::Boolean>().Value();
  }
  ItmHeadResult r = cpu::itm_head(in.features, in.Q, in.weight, in.bias, gs, needs[0], needs[1], needs[2]);
  Napi::Env env = info.Env();
  Tensor loss = Tensor::empty({}, in.features.dtype, Device::CPU);
  if (loss.dtype == DType::F64) *loss.data<double>() = r.loss;
  else *loss.data<float>() = static_cast<float>(r.loss);
  Napi::Object out = Napi::Object::New(env);
  out.Set("loss", wrap(env, std::move(loss)));
  out.Set("correct", Napi::Number::New(env, static_cast<double>(r.correct)));
  out.Set("dFeatures", r.d_features ? wrap(env, std::move(*r.d_features)) : env.Null());
  out.Set("dWeight", r.d_weight ? wrap(env, std::move(*r.d_weight)) : env.Null());
  out.Set("dBias", r.d_bias ? wrap(env, std::move(*r.d_bias)) : env.Null());
  return out;
}

// itmHeadReference(features, weight, bias) -> { loss, correct, dFeatures, dWeight, dBias } in float64
Napi::Value head_reference(const Napi::CallbackInfo& info) {
  Args a(info, kHead);
  HeadInputs in = parse_head(a);
  ItmHeadResult r = cpu::itm_head_reference(in.features, in.Q, in.weight, in.bias);
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("loss", Napi::Number::New(env, r.loss));
  out.Set("correct", Napi::Number::New(env, static_cast<double>(r.correct)));
  out.Set("dFeatures", wrap(env, std::move(*r.d_features)));
  out.Set("dWeight", wrap(env, std::move(*r.d_weight)));
  out.Set("dBias", wrap(env, std::move(*r.d_bias)));
  return out;
}

}  // namespace

VLM_EXPORT("itmMine", mine);
VLM_EXPORT("itmMineReference", mine_reference);
VLM_EXPORT("itmTiles", tiles);
VLM_EXPORT("itmHead", head);
VLM_EXPORT("itmHeadReference", head_reference);

}  // namespace vlm::js
