// dropout family, binding: dropout(x, p, seed, offset) and dropoutBackward(gy, p, seed, offset).
// Both apply the same regenerated mask; inputs of any strides, results contiguous.
#include <cmath>
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/copy.h"
#include "ops/dropout.h"

namespace vlm::js {
namespace {

constexpr int64_t kMaxSafe = 9007199254740991LL;  // 2^53 - 1

Napi::Value apply(const Napi::CallbackInfo& info, const char* op, const char* xname) {
  Args a(info, op);
  const Tensor& x = a.tensor(0, xname);
  expect_float(op, xname, x);
  expect_cpu(op, xname, x);
  double p = a.number(1, "p");
  if (!(p >= 0.0 && p <= 1.0)) range_error(op, "p", "a probability in [0, 1]", describe(info[1]));
  uint64_t seed = static_cast<uint64_t>(a.integer(2, "seed", 0, kMaxSafe));
  uint64_t offset = static_cast<uint64_t>(a.integer(3, "offset", 0, kMaxSafe));
  Tensor xc = contiguous(x);
  Tensor y = Tensor::empty(x.shape, x.dtype, Device::CPU);
  cpu::dropout_apply(xc, y, p, seed, offset);
  return wrap(info.Env(), std::move(y));
}

Napi::Value dropout(const Napi::CallbackInfo& info) { return apply(info, "dropout", "x"); }
Napi::Value dropout_backward(const Napi::CallbackInfo& info) { return apply(info, "dropoutBackward", "gy"); }

}  // namespace

VLM_EXPORT("dropout", dropout);
VLM_EXPORT("dropoutBackward", dropout_backward);

}  // namespace vlm::js
