// gather family, binding: indexSelect, indexAdd, gather, scatterAdd. Every index is
// checked against its axis before any kernel runs; a bad one is a RangeError naming
// its position ("... but received 1000 at position 17", or "[1, 2]" for N-d indices).
#include "binding/args.h"
#include "binding/registry.h"
#include "ops/copy.h"
#include "ops/gather.h"

namespace vlm::js {
namespace {

std::string position(int64_t flat, const Shape& shape) {
  if (shape.size() <= 1) return std::to_string(flat);
  Shape at(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    at[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape_str(at);
}

// A contiguous int32 index on the CPU whose values lie in [0, bound).
Tensor checked_index(const char* op, const Tensor& index, int64_t bound) {
  expect_dtype(op, "index", index, DType::I32);
  expect_cpu(op, "index", index);
  Tensor c = contiguous(index);
  const int32_t* p = c.data<int32_t>();
  const int64_t n = c.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] < 0 || p[i] >= bound)
      range_error(op, "index", "indices in [0, " + std::to_string(bound) + ")",
                  std::to_string(p[i]) + " at position " + position(i, c.shape));
  }
  return c;
}

Tensor zeros(const Shape& s, DType d) {
  Tensor t = Tensor::empty(s, d, Device::CPU);
  cpu::fill(t, 0.0);
  return t;
}

// indexSelect(x, axis, index) -> x with axis `axis` replaced by index's entries
Napi::Value index_select(const Napi::CallbackInfo& info) {
  const char* op = "indexSelect";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_cpu(op, "x", x);
  int64_t axis = normalize_axis(op, "axis", a.integer(1, "axis", -kMaxDims, kMaxDims), x.dim());
  const Tensor& index = a.tensor(2, "index");
  expect_rank(op, "index", index, 1);
  Tensor ic = checked_index(op, index, x.shape[axis]);
  Shape s = x.shape;
  s[axis] = ic.numel();
  Tensor xc = contiguous(x);
  Tensor out = Tensor::empty(s, x.dtype, Device::CPU);
  cpu::index_select(xc, axis, ic, out);
  return wrap(info.Env(), std::move(out));
}

// indexAdd(shape, axis, index, src) -> zeros(shape).index_add_(axis, index, src)
Napi::Value index_add(const Napi::CallbackInfo& info) {
  const char* op = "indexAdd";
  Args a(info, op);
  Shape shape = a.shape(0, "shape");
  int64_t axis = normalize_axis(op, "axis", a.integer(1, "axis", -kMaxDims, kMaxDims), static_cast<int64_t>(shape.size()));
  const Tensor& index = a.tensor(2, "index");
  const Tensor& src = a.tensor(3, "src");
  expect_rank(op, "index", index, 1);
  expect_float(op, "src", src);
  expect_cpu(op, "src", src);
  Shape want = shape;
  want[axis] = index.numel();
  expect_shape(op, "src", src, want);
  Tensor ic = checked_index(op, index, shape[axis]);
  Tensor sc = contiguous(src);
  Tensor out = zeros(shape, src.dtype);
  cpu::index_add(out, axis, ic, sc);
  return wrap(info.Env(), std::move(out));
}

// index of x's rank, no larger than `limit` outside `axis`
void check_gather_shape(const char* op, const char* what, const Tensor& index, const Shape& limit, int64_t axis) {
  expect_rank(op, "index", index, static_cast<int64_t>(limit.size()));
  for (size_t d = 0; d < limit.size(); ++d) {
    if (static_cast<int64_t>(d) != axis && index.shape[d] > limit[d])
      range_error(op, "index", std::string("a shape no larger than ") + what + " " + shape_str(limit) +
                  " outside axis " + std::to_string(axis), "shape " + shape_str(index.shape));
  }
}

// gather(x, axis, index) -> out of index's shape, out[p] = x[p with axis := index[p]]
Napi::Value gather(const Napi::CallbackInfo& info) {
  const char* op = "gather";
  Args a(info, op);
  const Tensor& x = a.tensor(0, "x");
  expect_cpu(op, "x", x);
  int64_t axis = normalize_axis(op, "axis", a.integer(1, "axis", -kMaxDims, kMaxDims), x.dim());
  const Tensor& index = a.tensor(2, "index");
  check_gather_shape(op, "x's shape", index, x.shape, axis);
  Tensor ic = checked_index(op, index, x.shape[axis]);
  Tensor out = Tensor::empty(index.shape, x.dtype, Device::CPU);
  cpu::gather(x, axis, ic, out);
  return wrap(info.Env(), std::move(out));
}

// scatterAdd(shape, axis, index, src) -> zeros(shape).scatter_add_(axis, index, src)
Napi::Value scatter_add(const Napi::CallbackInfo& info) {
  const char* op = "scatterAdd";
  Args a(info, op);
  Shape shape = a.shape(0, "shape");
  int64_t axis = normalize_axis(op, "axis", a.integer(1, "axis", -kMaxDims, kMaxDims), static_cast<int64_t>(shape.size()));
  const Tensor& index = a.tensor(2, "index");
  const Tensor& src = a.tensor(3, "src");
  check_gather_shape(op, "shape", index, shape, axis);
  expect_float(op, "src", src);
  expect_cpu(op, "src", src);
  bool fits = src.dim() == index.dim();
  for (int64_t d = 0; fits && d < src.dim(); ++d) fits = src.shape[d] >= index.shape[d];
  if (!fits)
    range_error(op, "src", "a tensor at least as large as index " + shape_str(index.shape) + " in every dim",
                "shape " + shape_str(src.shape));
  Tensor ic = checked_index(op, index, shape[axis]);
  Tensor part = src;  // the leading index.shape block of src (torch semantics)
  part.shape = index.shape;
  Tensor sc = contiguous(part);
  Tensor out = zeros(shape, src.dtype);
  cpu::scatter_add(out, axis, ic, sc);
  return wrap(info.Env(), std::move(out));
}

}  // namespace

VLM_EXPORT("indexSelect", index_select);
VLM_EXPORT("indexAdd", index_add);
VLM_EXPORT("gather", gather);
VLM_EXPORT("scatterAdd", scatter_add);

}  // namespace vlm::js
