// conv2d family, binding: conv2d(x, weight, bias, stride, padding, dilation, groups) -> y
// and conv2dBackward(x, weight, gy, stride, padding, dilation, groups, needX, needWeight,
// needBias) -> {dx, dweight, dbias}. stride/padding/dilation are [h, w] pairs. Checks
// shapes, groups, sizes and that the dilated kernel fits the padded input; strided
// inputs are copied to contiguous ones before the kernels run.
#include <cmath>
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/conv2d.h"
#include "ops/copy.h"

namespace vlm::js {
namespace {

constexpr int64_t kMaxGeom = int64_t{1} << 30;  // bound on stride, padding, dilation

void pair_arg(const Args& a, size_t i, const char* name, int64_t lo, int64_t& h, int64_t& w) {
  std::vector<int64_t> v = a.ints(i, name);
  if (v.size() != 2) range_error(a.op(), name, "an array of 2 integers [h, w]", "an array of length " + std::to_string(v.size()));
  for (int64_t e : v)
    if (e < lo || e > kMaxGeom)
      range_error(a.op(), name, "integers in [" + std::to_string(lo) + ", " + std::to_string(kMaxGeom) + "]", shape_str(v));
  h = v[0];
  w = v[1];
}

struct Checked {
  Conv2dParams p;
  Shape out;  // [N, O, OH, OW]
};

// Checks x, weight and the geometry arguments at positions i.. (stride, padding, dilation, groups).
Checked check_conv(const Args& a, const Tensor& x, const Tensor& w, size_t i) {
  const char* op = a.op();
  expect_float(op, "x", x);
  expect_cpu(op, "x", x);
  expect_rank(op, "x", x, 4);
  if (x.shape[1] < 1 || x.shape[2] < 1 || x.shape[3] < 1)
    range_error(op, "x", "an [N, C, H, W] tensor with C, H, W >= 1", "shape " + shape_str(x.shape));
  expect_same_dtype(op, "weight", w, x, "x");
  expect_same_device(op, "weight", w, x, "x");
  expect_rank(op, "weight", w, 4);
  if (w.shape[0] < 1 || w.shape[2] < 1 || w.shape[3] < 1)
    range_error(op, "weight", "an [O, C/groups, KH, KW] tensor with O, KH, KW >= 1", "shape " + shape_str(w.shape));
  Checked c;
  pair_arg(a, i, "stride", 1, c.p.stride_h, c.p.stride_w);
  pair_arg(a, i + 1, "padding", 0, c.p.pad_h, c.p.pad_w);
  pair_arg(a, i + 2, "dilation", 1, c.p.dil_h, c.p.dil_w);
  c.p.groups = a.integer(i + 3, "groups", 1, kMaxNumel);
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t O = w.shape[0], KH = w.shape[2], KW = w.shape[3], G = c.p.groups;
  if (C % G != 0) range_error(op, "groups", "a divisor of the input channels (" + std::to_string(C) + ")", describe(a[i + 3]));
  if (O % G != 0) range_error(op, "groups", "a divisor of the output channels (" + std::to_string(O) + ", weight.shape[0])", describe(a[i + 3]));
  if (w.shape[1] * G != C)
    range_error(op, "weight", "shape [" + std::to_string(O) + ", " + std::to_string(C / G) + ", KH, KW] (x has " + std::to_string(C) +
                " channels, groups " + std::to_string(G) + ")", "shape " + shape_str(w.shape));
  // Dilated kernel extent against the padded input, in double (the product may exceed int64).
  const double eh = static_cast<double>(c.p.dil_h) * static_cast<double>(KH - 1) + 1;
  const double ew = static_cast<double>(c.p.dil_w) * static_cast<double>(KW - 1) + 1;
  const int64_t PH = H + 2 * c.p.pad_h, PW = W + 2 * c.p.pad_w;
  if (eh > static_cast<double>(PH) || ew > static_cast<double>(PW)) {
    auto num = [](double v) { return std::to_string(static_cast<long long>(v)); };
    range_error(op, "weight", "a dilated kernel no larger than the padded input (" + std::to_string(PH) + "x" + std::to_string(PW) + ")",
                "a dilated kernel of " + num(eh) + "x" + num(ew));
  }
  const int64_t OH = conv_out_size(H, KH, c.p.stride_h, c.p.pad_h, c.p.dil_h);
  const int64_t OW = conv_out_size(W, KW, c.p.stride_w, c.p.pad_w, c.p.dil_w);
  c.out = {N, O, OH, OW};
  const double cells = static_cast<double>(OH) * static_cast<double>(OW);
  if (static_cast<double>(N) * static_cast<double>(O) * cells > static_cast<double>(kMaxNumel) ||
      static_cast<double>(C / G) * static_cast<double>(KH) * static_cast<double>(KW) * cells > static_cast<double>(kMaxNumel))
    range_error(op, "padding", "an output of at most 2^40 elements", "an output of shape " + shape_str(c.out));
  return c;
}

Napi::Value conv2d(const Napi::CallbackInfo& info) {
  const char* op = "conv2d";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  const Tensor& w = a.tensor(1, "weight");
  const Tensor* b = a.optional_tensor(2, "bias");
  Checked c = check_conv(a, x, w, 3);
  Tensor bc;
  if (b) {
    expect_same_dtype(op, "bias", *b, x, "x");
    expect_same_device(op, "bias", *b, x, "x");
    expect_shape(op, "bias", *b, {w.shape[0]});
    bc = contiguous(*b);
  }
  Tensor xc = contiguous(x), wc = contiguous(w);
  Tensor y = Tensor::empty(c.out, x.dtype, Device::CPU);
  cpu::conv2d_forward(xc, wc, b ? &bc : nullptr, c.p, y);
  return wrap(info.Env(), std::move(y));
}

Napi::Value conv2d_backward(const Napi::CallbackInfo& info) {
  const char* op = "conv2dBackward";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  const Tensor& w = a.tensor(1, "weight");
  const Tensor& gy = a.tensor(2, "gy");
  Checked c = check_conv(a, x, w, 3);
  bool need_x = a.boolean(7, "needX");
  bool need_w = a.boolean(8, "needWeight");
  bool need_b = a.boolean(9, "needBias");
  expect_same_dtype(op, "gy", gy, x, "x");
  expect_same_device(op, "gy", gy, x, "x");
  expect_shape(op, "gy", gy, c.out);
  Tensor xc = contiguous(x), wc = contiguous(w), gc = contiguous(gy);
  Napi::Env env = info.Env();
  Tensor dx, dw, db;
  if (need_x) dx = Tensor::empty(x.shape, x.dtype, Device::CPU);
  if (need_w) dw = Tensor::empty(w.shape, x.dtype, Device::CPU);
  if (need_b) db = Tensor::empty({w.shape[0]}, x.dtype, Device::CPU);
  cpu::conv2d_backward(xc, wc, gc, c.p, need_x ? &dx : nullptr, need_w ? &dw : nullptr, need_b ? &db : nullptr);
  Napi::Object o = Napi::Object::New(env);
  o.Set("dx", need_x ? wrap(env, std::move(dx)) : env.Null());
  o.Set("dweight", need_w ? wrap(env, std::move(dw)) : env.Null());
  o.Set("dbias", need_b ? wrap(env, std::move(db)) : env.Null());
  return o;
}

}  // namespace

VLM_EXPORT("conv2d", conv2d);
VLM_EXPORT("conv2dBackward", conv2d_backward);

}  // namespace vlm::js
