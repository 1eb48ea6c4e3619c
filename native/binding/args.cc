#include "binding/args.h"
#include <cmath>
#include <charconv>
#include "binding/tensor_wrap.h"

namespace vlm::js {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::string a_tensor(DType d) {
  return std::string(d == DType::I32 ? "an " : "a ") + dtype_name(d) + " tensor";
}

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBoolean()) return std::string("a boolean ") + (v.As<Napi::Boolean>().Value() ? "true" : "false");
  if (v.IsNumber()) {
    double x = v.As<Napi::Number>().DoubleValue();
    if (std::isnan(x)) return "the number NaN";  // spelled as JavaScript prints it
    if (std::isinf(x)) return x > 0 ? "the number Infinity" : "the number -Infinity";
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, x);  // shortest round-trip form, like JS
    return "the number " + std::string(buf, r.ptr);
  }
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s.size() > 40) s = s.substr(0, 40) + "...";
    return "the string '" + s + "'";
  }
  if (v.IsArray()) return "an array of length " + std::to_string(v.As<Napi::Array>().Length());
  if (v.IsTypedArray()) return "a typed array";
  if (v.IsFunction()) return "a function";
  if (v.IsObject()) {
    JsTensor* t = JsTensor::unwrap_or_null(v);
    if (t) return t->disposed() ? "a disposed tensor" : "a tensor";
    return "an object";
  }
  return "a value of another type";
}

void type_error(const char* op, const char* arg, const std::string& expected, const std::string& got) {
  throw_type(std::string(op) + ": expected " + expected + " for " + arg + " but received " + got);
}
void range_error(const char* op, const char* arg, const std::string& expected, const std::string& got) {
  throw_range(std::string(op) + ": expected " + expected + " for " + arg + " but received " + got);
}

const Tensor& Args::tensor(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : info_.Env().Undefined();
  JsTensor* t = JsTensor::unwrap_or_null(v);
  if (!t) type_error(op_, name, "a tensor", describe(v));
  if (t->disposed()) type_error(op_, name, "a live tensor", "a disposed tensor");
  return t->tensor();
}

const Tensor* Args::optional_tensor(size_t i, const char* name) const {
  if (!has(i)) return nullptr;
  return &tensor(i, name);
}

double Args::number(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : info_.Env().Undefined();
  if (!v.IsNumber()) type_error(op_, name, "a number", describe(v));
  return v.As<Napi::Number>().DoubleValue();
}

double Args::finite(size_t i, const char* name) const {
  double x = number(i, name);
  if (!std::isfinite(x)) range_error(op_, name, "a finite number", describe(info_[i]));
  return x;
}

int64_t Args::integer(size_t i, const char* name, int64_t lo, int64_t hi) const {
  double x = number(i, name);
  if (!std::isfinite(x) || std::floor(x) != x)
    type_error(op_, name, "an integer", describe(info_[i]));
  if (x < static_cast<double>(lo) || x > static_cast<double>(hi))
    range_error(op_, name, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", describe(info_[i]));
  return static_cast<int64_t>(x);
}

bool Args::boolean(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : info_.Env().Undefined();
  if (!v.IsBoolean()) type_error(op_, name, "a boolean", describe(v));
  return v.As<Napi::Boolean>().Value();
}

std::string Args::string(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : info_.Env().Undefined();
  if (!v.IsString()) type_error(op_, name, "a string", describe(v));
  return v.As<Napi::String>().Utf8Value();
}

std::vector<int64_t> Args::ints(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : info_.Env().Undefined();
  if (!v.IsArray()) type_error(op_, name, "an array of integers", describe(v));
  Napi::Array a = v.As<Napi::Array>();
  uint32_t n = a.Length();
  if (n > 64) range_error(op_, name, "at most 64 entries", "an array of length " + std::to_string(n));
  std::vector<int64_t> out(n);
  for (uint32_t k = 0; k < n; ++k) {
    Napi::Value e = a.Get(k);
    if (!e.IsNumber()) type_error(op_, name, "an array of integers", "an array holding " + describe(e));
    double x = e.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(x) || std::floor(x) != x || std::fabs(x) > 9007199254740991.0)
      type_error(op_, name, "an array of integers", "an array holding " + describe(e));
    out[k] = static_cast<int64_t>(x);
  }
  return out;
}

Shape Args::shape(size_t i, const char* name) const {
  Shape s = ints(i, name);
  if (static_cast<int64_t>(s.size()) > kMaxDims)
    range_error(op_, name, "a shape of at most 16 dimensions", shape_str(s));
  double total = 1;
  for (int64_t d : s) {
    if (d < 0) range_error(op_, name, "a shape of non-negative sizes", shape_str(s));
    total *= static_cast<double>(d);
  }
  if (total > static_cast<double>(kMaxNumel))
    range_error(op_, name, "a shape of at most 2^40 elements", shape_str(s));
  return s;
}

DType Args::dtype(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : info_.Env().Undefined();
  DType d;
  if (!v.IsString() || !parse_dtype(v.As<Napi::String>().Utf8Value(), d))
    type_error(op_, name, "one of 'float32', 'float64', 'int32', 'uint8'", describe(v));
  return d;
}

Device Args::device(size_t i, const char* name) const {
  Napi::Value v = i < info_.Length() ? info_[i] : info_.Env().Undefined();
  Device d;
  if (!v.IsString() || !parse_device(v.As<Napi::String>().Utf8Value(), d))
    type_error(op_, name, "'cpu' or 'cuda'", describe(v));
  return d;
}

void expect_float(const char* op, const char* arg, const Tensor& t) {
  if (!is_float(t.dtype)) type_error(op, arg, "a float32 or float64 tensor", a_tensor(t.dtype));
}
void expect_dtype(const char* op, const char* arg, const Tensor& t, DType d) {
  if (t.dtype != d) type_error(op, arg, a_tensor(d), a_tensor(t.dtype));
}
void expect_same_dtype(const char* op, const char* arg, const Tensor& t, const Tensor& ref, const char* ref_arg) {
  if (t.dtype != ref.dtype)
    type_error(op, arg, a_tensor(ref.dtype) + " (the dtype of " + ref_arg + ")",
               a_tensor(t.dtype));
}
void expect_cpu(const char* op, const char* arg, const Tensor& t) {
  if (t.device() != Device::CPU)
    type_error(op, arg, "a cpu tensor (this op has no CUDA kernel yet)", std::string("a ") + device_name(t.device()) + " tensor");
}
void expect_same_device(const char* op, const char* arg, const Tensor& t, const Tensor& ref, const char* ref_arg) {
  if (t.device() != ref.device())
    type_error(op, arg, std::string("a ") + device_name(ref.device()) + " tensor (the device of " + ref_arg + ")",
               std::string("a ") + device_name(t.device()) + " tensor");
}
void expect_contiguous(const char* op, const char* arg, const Tensor& t) {
  if (!t.is_contiguous()) type_error(op, arg, "a contiguous tensor", "a strided view (call .contiguous() first)");
}
void expect_rank(const char* op, const char* arg, const Tensor& t, int64_t rank) {
  if (t.dim() != rank)
    range_error(op, arg, "a tensor of rank " + std::to_string(rank), "shape " + shape_str(t.shape));
}
void expect_min_rank(const char* op, const char* arg, const Tensor& t, int64_t rank) {
  if (t.dim() < rank)
    range_error(op, arg, "a tensor of rank at least " + std::to_string(rank), "shape " + shape_str(t.shape));
}
void expect_shape(const char* op, const char* arg, const Tensor& t, const Shape& s) {
  if (t.shape != s) range_error(op, arg, "shape " + shape_str(s), "shape " + shape_str(t.shape));
}
void expect_nonempty(const char* op, const char* arg, const Tensor& t) {
  if (t.numel() == 0) range_error(op, arg, "a non-empty tensor", "shape " + shape_str(t.shape));
}
int64_t normalize_axis(const char* op, const char* arg, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank || rank == 0)
    range_error(op, arg, "an axis in [" + std::to_string(-rank) + ", " + std::to_string(rank) + ")", std::to_string(axis));
  return axis < 0 ? axis + rank : axis;
}

}  // namespace vlm::js
