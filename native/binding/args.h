// Argument checking for the boundary. Every message reads
//   "<op>: expected <what> for <argument> but received <got>"
// and is raised as a TypeError (wrong kind of value) or RangeError (right kind, bad value).
#pragma once
#include <napi.h>
#include <string>
#include <vector>
#include "core/error.h"
#include "core/tensor.h"

namespace vlm::js {

// Largest tensor the boundary accepts: 2^40 elements (4 TiB of float32).
constexpr int64_t kMaxNumel = int64_t{1} << 40;
constexpr int64_t kMaxDims = 16;

std::string shape_str(const Shape& s);
// "a float32 tensor", "an int32 tensor"
std::string a_tensor(DType d);
std::string describe(const Napi::Value& v);  // e.g. "a string 'abc'", "undefined"

[[noreturn]] void type_error(const char* op, const char* arg, const std::string& expected, const std::string& got);
[[noreturn]] void range_error(const char* op, const char* arg, const std::string& expected, const std::string& got);

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op) : info_(info), op_(op) {}
  const char* op() const { return op_; }
  Napi::Env env() const { return info_.Env(); }
  size_t size() const { return info_.Length(); }
  bool has(size_t i) const { return i < info_.Length() && !info_[i].IsUndefined() && !info_[i].IsNull(); }
  Napi::Value operator[](size_t i) const { return info_[i]; }

  const Tensor& tensor(size_t i, const char* name) const;   // a live vlmkit tensor
  const Tensor* optional_tensor(size_t i, const char* name) const;
  double number(size_t i, const char* name) const;           // any number (NaN allowed)
  double finite(size_t i, const char* name) const;           // a finite number
  int64_t integer(size_t i, const char* name, int64_t lo, int64_t hi) const;
  bool boolean(size_t i, const char* name) const;
  std::string string(size_t i, const char* name) const;
  Shape shape(size_t i, const char* name) const;             // non-negative ints, bounded numel
  std::vector<int64_t> ints(size_t i, const char* name) const;
  DType dtype(size_t i, const char* name) const;
  Device device(size_t i, const char* name) const;

 private:
  const Napi::CallbackInfo& info_;
  const char* op_;
};

// Checks on tensors that kernels rely on.
void expect_float(const char* op, const char* arg, const Tensor& t);
void expect_dtype(const char* op, const char* arg, const Tensor& t, DType d);
void expect_same_dtype(const char* op, const char* arg, const Tensor& t, const Tensor& ref, const char* ref_arg);
void expect_cpu(const char* op, const char* arg, const Tensor& t);
void expect_same_device(const char* op, const char* arg, const Tensor& t, const Tensor& ref, const char* ref_arg);
void expect_contiguous(const char* op, const char* arg, const Tensor& t);
void expect_rank(const char* op, const char* arg, const Tensor& t, int64_t rank);
void expect_min_rank(const char* op, const char* arg, const Tensor& t, int64_t rank);
void expect_shape(const char* op, const char* arg, const Tensor& t, const Shape& s);
void expect_nonempty(const char* op, const char* arg, const Tensor& t);
// Normalises a possibly negative axis against rank; RangeError when out of [-rank, rank).
int64_t normalize_axis(const char* op, const char* arg, int64_t axis, int64_t rank);

Napi::Value wrap(Napi::Env env, Tensor t);  // a new JS tensor handle (tensor_wrap.cc)

}  // namespace vlm::js
