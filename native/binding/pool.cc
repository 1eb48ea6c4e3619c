// pool family, binding:
//   avgPool2d(x, kernel, stride, padding) / avgPool2dBackward(gy, inputShape, kernel, stride, padding)
//   adaptiveAvgPool2d(x, outputSize) / adaptiveAvgPool2dBackward(gy, inputShape)
//   maskedMeanPool(x, mask) / maskedMeanPoolBackward(gy, mask, length)
//   maskedMaxPool(x, mask) -> {y, index} / maskedMaxPoolBackward(gy, index, length)
// Images are [N, C, H, W] or [C, H, W]; kernel/stride/padding/outputSize are [h, w]
// pairs. Sequences are [B, L, D] with a uint8 mask [B, L] (nonzero = valid) or null.
// A max-pool index is checked value by value before the backward scatters with it.
#include <algorithm>
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/copy.h"
#include "ops/pool.h"

namespace vlm::js {
namespace {

constexpr int64_t kMaxGeom = int64_t{1} << 30;

void pair_arg(const Args& a, size_t i, const char* name, int64_t lo, int64_t& h, int64_t& w) {
  std::vector<int64_t> v = a.ints(i, name);
  if (v.size() != 2) range_error(a.op(), name, "an array of 2 integers [h, w]", "an array of length " + std::to_string(v.size()));
  for (int64_t e : v)
    if (e < lo || e > kMaxGeom)
      range_error(a.op(), name, "integers in [" + std::to_string(lo) + ", " + std::to_string(kMaxGeom) + "]", shape_str(v));
  h = v[0];
  w = v[1];
}

// An image tensor's shape: rank 3 or 4 with H, W >= 1.
void expect_image_shape(const char* op, const char* arg, const Shape& s) {
  if (s.size() != 3 && s.size() != 4) range_error(op, arg, "an [N, C, H, W] or [C, H, W] shape", shape_str(s));
  if (s[s.size() - 1] < 1 || s[s.size() - 2] < 1) range_error(op, arg, "an image shape with H, W >= 1", shape_str(s));
}

void expect_image(const char* op, const char* arg, const Tensor& x) {
  expect_float(op, arg, x);
  expect_cpu(op, arg, x);
  expect_image_shape(op, arg, x.shape);
}

struct AvgGeom {
  int64_t kh, kw, sh, sw, ph, pw;
};

// Checks kernel/stride/padding at i.. against input shape s; returns the output shape.
Shape avg_geometry(const Args& a, size_t i, const Shape& s, AvgGeom& g) {
  const char* op = a.op();
  pair_arg(a, i, "kernel", 1, g.kh, g.kw);
  pair_arg(a, i + 1, "stride", 1, g.sh, g.sw);
  pair_arg(a, i + 2, "padding", 0, g.ph, g.pw);
  if (2 * g.ph > g.kh || 2 * g.pw > g.kw)
    range_error(op, "padding", "at most half the kernel size (kernel [" + std::to_string(g.kh) + ", " + std::to_string(g.kw) + "])",
                "[" + std::to_string(g.ph) + ", " + std::to_string(g.pw) + "]");
  const size_t d = s.size();
  const int64_t H = s[d - 2], W = s[d - 1];
  if (g.kh > H + 2 * g.ph || g.kw > W + 2 * g.pw)
    range_error(op, "kernel", "a kernel no larger than the padded input (" + std::to_string(H + 2 * g.ph) + "x" + std::to_string(W + 2 * g.pw) + ")",
                "[" + std::to_string(g.kh) + ", " + std::to_string(g.kw) + "]");
  Shape out = s;
  out[d - 2] = pool_out_size(H, g.kh, g.sh, g.ph);
  out[d - 1] = pool_out_size(W, g.kw, g.sw, g.pw);
  return out;
}

Napi::Value avg_pool2d(const Napi::CallbackInfo& info) {
  const char* op = "avgPool2d";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_image(op, "x", x);
  AvgGeom g;
  Shape out = avg_geometry(a, 1, x.shape, g);
  Tensor xc = contiguous(x);
  Tensor y = Tensor::empty(out, x.dtype, Device::CPU);
  cpu::avg_pool2d_forward(xc, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, y);
  return wrap(info.Env(), std::move(y));
}

Napi::Value avg_pool2d_backward(const Napi::CallbackInfo& info) {
  const char* op = "avgPool2dBackward";
  Args a(info, op);
  const Tensor& gy = a.tensor(0, "gy");
  expect_float(op, "gy", gy);
  expect_cpu(op, "gy", gy);
  Shape in = a.shape(1, "inputShape");
  expect_image_shape(op, "inputShape", in);
  AvgGeom g;
  Shape out = avg_geometry(a, 2, in, g);
  expect_shape(op, "gy", gy, out);
  Tensor gc = contiguous(gy);
  Tensor dx = Tensor::empty(in, gy.dtype, Device::CPU);
  cpu::avg_pool2d_backward(gc, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, dx);
  return wrap(info.Env(), std::move(dx));
}

Napi::Value adaptive_avg_pool2d(const Napi::CallbackInfo& info) {
  const char* op = "adaptiveAvgPool2d";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_image(op, "x", x);
  int64_t oh, ow;
  pair_arg(a, 1, "outputSize", 1, oh, ow);
  Shape out = x.shape;
  out[out.size() - 2] = oh;
  out[out.size() - 1] = ow;
  const int64_t planes = x.numel() / (x.shape[x.dim() - 2] * x.shape[x.dim() - 1]);
  if (static_cast<double>(planes) * static_cast<double>(oh) * static_cast<double>(ow) > static_cast<double>(kMaxNumel))
    range_error(op, "outputSize", "an output of at most 2^40 elements", "an output of shape " + shape_str(out));
  Tensor xc = contiguous(x);
  Tensor y = Tensor::empty(out, x.dtype, Device::CPU);
  cpu::adaptive_avg_pool2d_forward(xc, y);
  return wrap(info.Env(), std::move(y));
}

Napi::Value adaptive_avg_pool2d_backward(const Napi::CallbackInfo& info) {
  const char* op = "adaptiveAvgPool2dBackward";
  Args a(info, op);
  const Tensor& gy = a.tensor(0, "gy");
  expect_float(op, "gy", gy);
  expect_cpu(op, "gy", gy);
  Shape in = a.shape(1, "inputShape");
  expect_image_shape(op, "inputShape", in);
  const size_t d = in.size();
  if (gy.dim() != static_cast<int64_t>(d) || !std::equal(in.begin(), in.end() - 2, gy.shape.begin()) ||
      gy.shape[d - 2] < 1 || gy.shape[d - 1] < 1)
    range_error(op, "gy", "a gradient whose leading dims match inputShape " + shape_str(in) + " and OH, OW >= 1",
                "shape " + shape_str(gy.shape));
  Tensor gc = contiguous(gy);
  Tensor dx = Tensor::empty(in, gy.dtype, Device::CPU);
  cpu::adaptive_avg_pool2d_backward(gc, dx);
  return wrap(info.Env(), std::move(dx));
}

// ---- masked sequence pooling -------------------------------------------------------------

void expect_sequence(const char* op, const Tensor& x) {
  expect_float(op, "x", x);
  expect_cpu(op, "x", x);
  expect_rank(op, "x", x, 3);
  if (x.shape[1] > 2147483647) range_error(op, "x", "a length (axis 1) below 2^31", "shape " + shape_str(x.shape));
}

// The mask as a contiguous uint8 [B, L] tensor, or null.
const Tensor* mask_arg(const Args& a, size_t i, int64_t B, int64_t L, Tensor& hold) {
  const Tensor* m = a.optional_tensor(i, "mask");
  if (!m) return nullptr;
  expect_dtype(a.op(), "mask", *m, DType::U8);
  expect_cpu(a.op(), "mask", *m);
  expect_shape(a.op(), "mask", *m, {B, L});
  hold = contiguous(*m);
  return &hold;
}

Napi::Value masked_mean_pool(const Napi::CallbackInfo& info) {
  const char* op = "maskedMeanPool";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_sequence(op, x);
  Tensor mh;
  const Tensor* m = mask_arg(a, 1, x.shape[0], x.shape[1], mh);
  Tensor xc = contiguous(x);
  Tensor y = Tensor::empty({x.shape[0], x.shape[2]}, x.dtype, Device::CPU);
  cpu::masked_mean_pool_forward(xc, m, y);
  return wrap(info.Env(), std::move(y));
}

Napi::Value masked_mean_pool_backward(const Napi::CallbackInfo& info) {
  const char* op = "maskedMeanPoolBackward";
  Args a(info, op);
  const Tensor& gy = a.tensor(0, "gy");
  expect_float(op, "gy", gy);
  expect_cpu(op, "gy", gy);
  expect_rank(op, "gy", gy, 2);
  const int64_t L = a.integer(2, "length", 0, 2147483647);
  const int64_t B = gy.shape[0], D = gy.shape[1];
  if (static_cast<double>(B) * static_cast<double>(L) * static_cast<double>(D) > static_cast<double>(kMaxNumel))
    range_error(op, "length", "a gradient of at most 2^40 elements", std::to_string(L));
  Tensor mh;
  const Tensor* m = mask_arg(a, 1, B, L, mh);
  Tensor gc = contiguous(gy);
  Tensor dx = Tensor::empty({B, L, D}, gy.dtype, Device::CPU);
  cpu::masked_mean_pool_backward(gc, m, dx);
  return wrap(info.Env(), std::move(dx));
}

Napi::Value masked_max_pool(const Napi::CallbackInfo& info) {
  const char* op = "maskedMaxPool";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_sequence(op, x);
  Tensor mh;
  const Tensor* m = mask_arg(a, 1, x.shape[0], x.shape[1], mh);
  Tensor xc = contiguous(x);
  Tensor y = Tensor::empty({x.shape[0], x.shape[2]}, x.dtype, Device::CPU);
  Tensor index = Tensor::empty({x.shape[0], x.shape[2]}, DType::I32, Device::CPU);
  cpu::masked_max_pool_forward(xc, m, y, index);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("y", wrap(env, std::move(y)));
  o.Set("index", wrap(env, std::move(index)));
  return o;
}

Napi::Value masked_max_pool_backward(const Napi::CallbackInfo& info) {
  const char* op = "maskedMaxPoolBackward";
  Args a(info, op);
  const Tensor& gy = a.tensor(0, "gy");
  expect_float(op, "gy", gy);
  expect_cpu(op, "gy", gy);
  expect_rank(op, "gy", gy, 2);
  const Tensor& index = a.tensor(1, "index");
  expect_dtype(op, "index", index, DType::I32);
  expect_cpu(op, "index", index);
  expect_shape(op, "index", index, gy.shape);
  const int64_t L = a.integer(2, "length", 0, 2147483647);
  const int64_t B = gy.shape[0], D = gy.shape[1];
  if (static_cast<double>(B) * static_cast<double>(L) * static_cast<double>(D) > static_cast<double>(kMaxNumel))
    range_error(op, "length", "a gradient of at most 2^40 elements", std::to_string(L));
  Tensor ic = contiguous(index);
  const int32_t* ip = ic.data<int32_t>();
  for (int64_t k = 0; k < ic.numel(); ++k)
    if (ip[k] < -1 || ip[k] >= L)
      range_error(op, "index", "positions in [-1, " + std::to_string(L) + ")",
                  std::to_string(ip[k]) + " at [" + std::to_string(k / std::max<int64_t>(D, 1)) + ", " + std::to_string(k % std::max<int64_t>(D, 1)) + "]");
  Tensor gc = contiguous(gy);
  Tensor dx = Tensor::empty({B, L, D}, gy.dtype, Device::CPU);
  cpu::masked_max_pool_backward(gc, ic, dx);
  return wrap(info.Env(), std::move(dx));
}

}  // namespace

VLM_EXPORT("avgPool2d", avg_pool2d);
VLM_EXPORT("avgPool2dBackward", avg_pool2d_backward);
VLM_EXPORT("adaptiveAvgPool2d", adaptive_avg_pool2d);
VLM_EXPORT("adaptiveAvgPool2dBackward", adaptive_avg_pool2d_backward);
VLM_EXPORT("maskedMeanPool", masked_mean_pool);
VLM_EXPORT("maskedMeanPoolBackward", masked_mean_pool_backward);
VLM_EXPORT("maskedMaxPool", masked_max_pool);
VLM_EXPORT("maskedMaxPoolBackward", masked_max_pool_backward);

}  // namespace vlm::js
